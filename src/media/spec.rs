//! `--audio-in` / `--audio-out` values (SPEC section 6): `default`, a cpal
//! device name, `null`, `wav:PATH`, `tone:HZ`; and, as a source, `echo`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, ErrorCode};

#[derive(Clone, Debug, PartialEq)]
pub enum AudioSpec {
    /// The system's default device.
    Default,
    /// A device by the name `termphone devices` lists.
    Device(String),
    /// Silence in, discard out.
    Null,
    /// A WAV file: read once (then silence) as a source, written as a sink.
    Wav(PathBuf),
    /// A sine at this frequency; a source only.
    Tone(f32),
    /// What this device hears, sent back half a second later: an echo-test
    /// device (the demo's echo contact is one). A source only.
    Echo,
}

impl AudioSpec {
    /// A sound card (the default one or one by name), not a file, a tone,
    /// `echo` or null audio.
    pub fn is_card(&self) -> bool {
        matches!(self, AudioSpec::Default | AudioSpec::Device(_))
    }

    /// Refuses the specs that can only be a source (`tone:`, `echo`).
    pub fn check_sink(&self) -> Result<(), Error> {
        match self {
            AudioSpec::Tone(_) | AudioSpec::Echo => Err(Error::new(
                ErrorCode::InvalidAudioSpec,
                format!(
                    "{self} is a source; audio out is default, null, wav:PATH or a device name"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl FromStr for AudioSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::new(
                ErrorCode::InvalidAudioSpec,
                format!(
                    "audio {s:?}: {why}; use default, null, wav:PATH, tone:HZ or a device name from `termphone devices`"
                ),
            )
        };
        match s {
            "" => Err(bad("empty")),
            "default" => Ok(AudioSpec::Default),
            "null" => Ok(AudioSpec::Null),
            "echo" => Ok(AudioSpec::Echo),
            _ => {
                if let Some(path) = s.strip_prefix("wav:") {
                    if path.is_empty() {
                        return Err(bad("wav: needs a file path"));
                    }
                    Ok(AudioSpec::Wav(path.into()))
                } else if let Some(hz) = s.strip_prefix("tone:") {
                    match hz.parse::<f32>() {
                        Ok(hz) if (20.0..=20_000.0).contains(&hz) => Ok(AudioSpec::Tone(hz)),
                        _ => Err(bad("a tone is 20 to 20000 Hz")),
                    }
                } else {
                    Ok(AudioSpec::Device(s.into()))
                }
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for AudioSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for AudioSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioSpec::Default => f.write_str("default"),
            AudioSpec::Device(name) => f.write_str(name),
            AudioSpec::Null => f.write_str("null"),
            AudioSpec::Wav(path) => write!(f, "wav:{}", path.display()),
            AudioSpec::Tone(hz) => write!(f, "tone:{hz}"),
            AudioSpec::Echo => f.write_str("echo"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_bad_ones_say_why() {
        assert_eq!("default".parse::<AudioSpec>().unwrap(), AudioSpec::Default);
        assert_eq!("null".parse::<AudioSpec>().unwrap(), AudioSpec::Null);
        assert_eq!(
            "wav:/tmp/a.wav".parse::<AudioSpec>().unwrap(),
            AudioSpec::Wav("/tmp/a.wav".into())
        );
        assert_eq!(
            "tone:440".parse::<AudioSpec>().unwrap(),
            AudioSpec::Tone(440.0)
        );
        assert_eq!("echo".parse::<AudioSpec>().unwrap(), AudioSpec::Echo);
        assert_eq!(
            "hw:0".parse::<AudioSpec>().unwrap(),
            AudioSpec::Device("hw:0".into())
        );
        for bad in ["", "wav:", "tone:abc", "tone:5", "tone:30000"] {
            let e = bad.parse::<AudioSpec>().unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAudioSpec);
            assert!(e.message.contains("tone:HZ"), "{}", e.message);
        }
    }
}
