//! What a device's call asks of its media: the client engine says it, the
//! media thread carries it out. Plain data, so the engine can name it
//! without depending on the thread.

use serde::Deserialize;

use super::spec::AudioSpec;
use crate::ids::UserId;
use crate::protocol::{MediaPeer, RoomId};

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
    /// This device entered the call in `room`.
    Start {
        me: UserId,
        room: RoomId,
    },
    /// The call ended for this device.
    Stop,
    Mute(bool),
    /// Report the call's figures so far (`MEDIA_STATS`).
    Stats,
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
