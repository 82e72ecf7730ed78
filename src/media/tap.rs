//! A copy of everything a device plays out, for whoever checks what was
//! heard (the flow runner's audio steps, docs/flows.md): raw 16-bit
//! little-endian 48 kHz mono PCM, one frame appended per playout tick,
//! across all of the device's calls. Written unbuffered, so a reader
//! following the file sees each frame as it is played.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::Frame;
use crate::error::{Error, ErrorCode};

pub struct Tap {
    file: File,
    bytes: Vec<u8>,
}

impl Tap {
    pub fn create(path: &Path) -> Result<Tap, Error> {
        let file = File::create(path).map_err(|e| {
            Error::new(
                ErrorCode::AudioDeviceFailed,
                format!("cannot write the audio tap {}: {e}", path.display()),
            )
        })?;
        Ok(Tap {
            file,
            bytes: Vec::new(),
        })
    }

    pub fn write(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.bytes.clear();
        for s in frame {
            let sample = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
            self.bytes.extend_from_slice(&sample.to_le_bytes());
        }
        self.file.write_all(&self.bytes)
    }
}

/// Samples of a tap's bytes (whole samples only).
pub fn samples(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    (bytes.chunks_exact(2))
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / f32::from(i16::MAX))
}
