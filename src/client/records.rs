//! The records a device keeps and shows: its calls and its messages.
//!
//! A leaf shared by the engine's events, the call history and the local
//! store, so none of them has to import another for its types. The serde
//! attributes are part of headless mode's contract (docs/headless.md).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::ids::{DeviceId, Platform, UserId};
use crate::protocol::{CancelReason, DeviceInfo, RoomId};

/// A device of a user, as events and records show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    #[serde(rename = "deviceID")]
    pub device: DeviceId,
    pub platform: Platform,
}

impl From<DeviceInfo> for DeviceView {
    fn from(d: DeviceInfo) -> Self {
        DeviceView {
            device: d.device,
            platform: d.platform,
        }
    }
}

/// A device's part in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallRole {
    Caller,
    Called,
}

impl CallRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CallRole::Caller => "caller",
            CallRole::Called => "called",
        }
    }
}

/// How a call went for this device, or where it stands while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Ringing,
    Dialing,
    InCall,
    Answered,
    /// An incoming call that nobody of this user answered or declined.
    Missed,
    /// An outgoing call nobody answered in time (one declined or busy is
    /// `Stopped` with that reason).
    NoAnswer,
    /// This device's process ended before the call did.
    Interrupted,
    /// It stopped for this device for another reason (answered or declined
    /// on another device, ignored here, ...).
    Stopped(CancelReason),
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ringing => "ringing",
            CallOutcome::Dialing => "dialing",
            CallOutcome::InCall => "in_call",
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Interrupted => "interrupted",
            CallOutcome::Stopped(reason) => reason.as_str(),
        }
    }

    /// The outcome a stored name stands for (`as_str`'s inverse).
    pub fn parse(s: &str) -> Option<CallOutcome> {
        let fixed = [
            CallOutcome::Ringing,
            CallOutcome::Dialing,
            CallOutcome::InCall,
            CallOutcome::Answered,
            CallOutcome::Missed,
            CallOutcome::NoAnswer,
            CallOutcome::Interrupted,
        ];
        (fixed.into_iter().find(|o| o.as_str() == s))
            .or_else(|| CancelReason::parse(s).map(CallOutcome::Stopped))
    }

    /// Still ringing, dialing or connected.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            CallOutcome::Ringing | CallOutcome::Dialing | CallOutcome::InCall
        )
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CallOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One call, as this device saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub call_id: String,
    #[serde(rename = "roomID")]
    pub room_id: RoomId,
    pub call_role: CallRole,
    /// The other party: the caller of an incoming call, the callees of an outgoing one.
    #[serde(rename = "userIDList")]
    pub peers: Vec<UserId>,
    /// Unix milliseconds when it rang or was dialed.
    pub started_at: u64,
    pub outcome: CallOutcome,
    /// An incoming call that nobody of this user answered or declined.
    pub missed: bool,
    /// Seconds in the call on this device.
    pub total_time: u64,
    /// With the outcomes `answered_elsewhere` and `declined_elsewhere`: the
    /// device of this user that answered or declined, as `deviceID` and
    /// `platform` (absent otherwise).
    #[serde(flatten)]
    pub elsewhere: Option<DeviceView>,
}

/// A message as the local store keeps it and the front ends show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    #[serde(rename = "msgID")]
    pub msg_id: String,
    pub from: UserId,
    pub to: UserId,
    /// Empty once recalled.
    pub text: String,
    pub timestamp: u64,
    pub recalled: bool,
}

impl StoredMessage {
    /// A message as it arrives: recalled when it comes without its text (it
    /// was recalled before this device saw it).
    pub fn new(msg_id: String, from: UserId, to: UserId, text: String, timestamp: u64) -> Self {
        StoredMessage {
            recalled: text.is_empty(),
            msg_id,
            from,
            to,
            text,
            timestamp,
        }
    }

    /// The other user of the conversation, seen from `me`.
    pub fn peer(&self, me: &UserId) -> &UserId {
        if &self.from == me {
            &self.to
        } else {
            &self.from
        }
    }
}

/// One conversation: the other user, its last message, what is unread, and
/// how far the other user has read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    #[serde(rename = "userID")]
    pub user_id: UserId,
    pub last_message: StoredMessage,
    pub unread_count: u64,
    /// How far the other user has read the conversation (unix ms, from its
    /// latest `C2C_READ_RECEIPT`): this user's messages up to then are read.
    /// Absent before any receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_read: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_what_they_write() {
        let all = [
            CallOutcome::Ringing,
            CallOutcome::InCall,
            CallOutcome::NoAnswer,
            CallOutcome::Interrupted,
            CallOutcome::Stopped(CancelReason::AnsweredElsewhere),
            CallOutcome::Stopped(CancelReason::Ignored),
        ];
        for o in all {
            assert_eq!(CallOutcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(CallOutcome::parse("exploded"), None);
    }
}
