//! The ringtone: `assets/ringtone.wav`, looped on the output device while a
//! call rings, on a thread of its own (the device's stream is not `Send`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::device::{PLAYBACK_TARGET, Playback};
use super::io::decode_wav;
use super::spec::AudioSpec;
use super::{FRAME_MS, FRAME_SAMPLES};

const RINGTONE_WAV: &[u8] = include_bytes!("../../assets/ringtone.wav");

/// Rings until dropped.
pub struct Ringtone {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ringtone {
    /// Starts ringing when `output` is a sound card. Files and `null` get
    /// no ringtone: a QA recording holds the calls, not the rings.
    pub fn start(output: &AudioSpec) -> Option<Ringtone> {
        let name = match output {
            AudioSpec::Default => None,
            AudioSpec::Device(name) => Some(name.clone()),
            _ => return None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringtone".into())
            .spawn(move || ring(name.as_deref(), &flag))
            .ok()?;
        Some(Ringtone {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ringtone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The ringtone at 48 kHz mono.
pub fn samples() -> Vec<f32> {
    let reader = hound::WavReader::new(RINGTONE_WAV).expect("the bundled ringtone is a WAV file");
    decode_wav(reader).expect("the bundled ringtone decodes")
}

fn ring(device: Option<&str>, stop: &AtomicBool) {
    let mut playback = match Playback::open(device) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "no ringtone");
            return;
        }
    };
    let tone = samples();
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        // The card's clock paces the ringtone, as it does a call.
        if playback.queued() > PLAYBACK_TARGET {
            std::thread::sleep(Duration::from_millis(FRAME_MS / 4));
            continue;
        }
        let mut frame = [0.0; FRAME_SAMPLES];
        for s in &mut frame {
            *s = tone[at];
            at = (at + 1) % tone.len();
        }
        playback.write(&frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::level::level;

    #[test]
    fn the_bundled_ringtone_is_audible_and_pauses() {
        let tone = samples();
        // Three seconds at 48 kHz: rings, then a pause before it repeats.
        assert!((tone.len() as i64 - 144_000).abs() < 10, "{}", tone.len());
        assert!(level(&tone[..24_000]) > 50);
        assert_eq!(level(&tone[tone.len() - 24_000..]), 0);
    }

    #[test]
    fn files_and_null_get_no_ringtone() {
        assert!(Ringtone::start(&AudioSpec::Null).is_none());
        assert!(Ringtone::start(&AudioSpec::Wav("/tmp/x.wav".into())).is_none());
    }
}
