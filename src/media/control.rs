//! What a device's call asks of its media: the client engine says it, the
//! media thread carries it out. Plain data, so the engine can name it
//! without depending on the thread.

use crate::ids::UserId;
use crate::protocol::{MediaPeer, RoomId};

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
    /// Who sends voice in the room, and on which source numbers.
    Peers {
        room: RoomId,
        peers: Vec<MediaPeer>,
    },
}
