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
}
