//! What a device's call asks of its media: the client engine says it, the
//! media thread carries it out. Plain data, so the engine can name it
//! without depending on the thread.

use serde::{Deserialize, Serialize, Serializer};

use super::spec::AudioSpec;
use crate::error::{Error, ErrorCode};
use crate::ids::UserId;
use crate::protocol::{MediaPeer, RoomId};

/// Most digits one `sendDTMF` takes: a long dial string, not a flood.
pub const MAX_DTMF_DIGITS: usize = 32;

/// One DTMF key: `0`-`9`, `*`, `#` or `A`-`D` (SPEC 8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digit(char);

impl Digit {
    /// The keys in RFC 4733's event order: `0`-`9` are events 0 to 9,
    /// `*` 10, `#` 11, `A`-`D` 12 to 15.
    const KEYS: [char; 16] = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
    ];

    pub fn new(key: char) -> Option<Digit> {
        Self::KEYS.contains(&key).then_some(Digit(key))
    }

    /// Every digit of `keys`, in order: 1 to [`MAX_DTMF_DIGITS`] keys.
    pub fn parse_all(keys: &str) -> Result<Vec<Digit>, Error> {
        let invalid = |why: String| Error::new(ErrorCode::InvalidDtmf, why);
        let digits = (keys.chars())
            .map(|c| {
                Digit::new(c).ok_or_else(|| {
                    invalid(format!("{c:?} is not a DTMF key; keys are 0-9, *, #, A-D"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if digits.is_empty() || digits.len() > MAX_DTMF_DIGITS {
            return Err(invalid(format!(
                "sendDTMF takes 1 to {MAX_DTMF_DIGITS} digits, not {}",
                digits.len()
            )));
        }
        Ok(digits)
    }

    /// The RFC 4733 event code.
    pub fn event(self) -> u8 {
        Self::KEYS.iter().position(|&k| k == self.0).expect("a key") as u8
    }

    pub fn from_event(event: u8) -> Option<Digit> {
        Self::KEYS.get(usize::from(event)).map(|&k| Digit(k))
    }

    pub fn key(self) -> char {
        self.0
    }
}

/// A digit is its key in JSON: `"5"`, `"#"`.
impl Serialize for Digit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_char(self.0)
    }
}

/// Which side of this device's audio a `switchDevice` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Microphone,
    Speaker,
}

/// What this device's call asks of its media.
#[derive(Debug, PartialEq)]
pub enum MediaCommand {
    /// This device entered call `call_id`, in `room`.
    Start {
        me: UserId,
        call_id: String,
        room: RoomId,
    },
    /// The call ended for this device.
    Stop,
    Mute(bool),
    /// Report the call's figures so far (`MEDIA_STATS`).
    Stats,
    /// The link to the relay went down (`false`) or is back (`true`): the
    /// others' voice cannot come meanwhile, and the call's figures count
    /// that time as lost.
    Link(bool),
    /// This device only listens (an audience member): it sends nothing,
    /// not even silence, until it speaks again.
    Listen(bool),
    /// Send these digits as telephone events, after any still going out.
    SendDtmf(Vec<Digit>),
    /// This device holds the call, so nobody would hear digits still
    /// waiting to go out: drop them, and say which (`ERROR` 6107).
    StopDtmf,
    /// Who sends voice in the room, and on which source numbers.
    Peers {
        room: RoomId,
        peers: Vec<MediaPeer>,
    },
    /// Report the system's sound devices and this device's
    /// (`DEVICED_UPDATED`).
    ListDevices,
    /// Use `spec` for the microphone or the speaker from now on, in the
    /// call in progress too; then report the devices.
    SwitchDevice {
        kind: DeviceKind,
        spec: AudioSpec,
    },
    /// Turn stages of voice processing on or off (`setAudioProcessing`),
    /// in the call in progress too; a stage not named stays as it is.
    SetVoiceProcessing(VoiceProcessingChange),
}

/// Which stages process a sound card's capture (`[audio]` in the config).
/// Files, tones and `echo` are clean already and never processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoiceProcessing {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub auto_gain: bool,
}

impl VoiceProcessing {
    pub const ON: VoiceProcessing = VoiceProcessing {
        echo_cancellation: true,
        noise_suppression: true,
        auto_gain: true,
    };
    pub const OFF: VoiceProcessing = VoiceProcessing {
        echo_cancellation: false,
        noise_suppression: false,
        auto_gain: false,
    };

    /// Whether any stage is on.
    pub fn any(self) -> bool {
        self.echo_cancellation || self.noise_suppression || self.auto_gain
    }

    pub fn apply(self, change: VoiceProcessingChange) -> VoiceProcessing {
        VoiceProcessing {
            echo_cancellation: change.echo_cancellation.unwrap_or(self.echo_cancellation),
            noise_suppression: change.noise_suppression.unwrap_or(self.noise_suppression),
            auto_gain: change.auto_gain.unwrap_or(self.auto_gain),
        }
    }
}

/// Stages to turn on (`true`) or off; `None` leaves a stage as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoiceProcessingChange {
    pub echo_cancellation: Option<bool>,
    pub noise_suppression: Option<bool>,
    pub auto_gain: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_sixteen_keys_in_event_order() {
        let digits = Digit::parse_all("1234567890*#ABCD").unwrap();
        let events: Vec<u8> = digits.iter().map(|d| d.event()).collect();
        assert_eq!(
            events,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 10, 11, 12, 13, 14, 15]
        );
        for d in digits {
            assert_eq!(Digit::from_event(d.event()), Some(d));
        }
        assert_eq!(Digit::from_event(16), None);
        assert_eq!(
            serde_json::to_string(&Digit::new('#').unwrap()).unwrap(),
            r##""#""##
        );
    }

    #[test]
    fn bad_digit_strings_are_refused_with_the_rule() {
        for bad in ["", "12e", "a", " 1", &"1".repeat(MAX_DTMF_DIGITS + 1)] {
            let e = Digit::parse_all(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidDtmf, "{bad:?}");
        }
        assert!(
            Digit::parse_all("e")
                .unwrap_err()
                .message
                .contains("0-9, *, #, A-D")
        );
        assert_eq!(
            Digit::parse_all(&"#".repeat(MAX_DTMF_DIGITS))
                .unwrap()
                .len(),
            32
        );
    }
}
