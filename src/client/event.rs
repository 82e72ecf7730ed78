//! Engine events: what a device reports to its front end (TUI or headless).
//!
//! Names and field names are the public interface of headless mode (SPEC
//! section 6, docs/headless.md); serde attributes here are that contract.

use serde::Serialize;
use strum::{IntoStaticStr, VariantNames};

pub use crate::client::records::{CallRecord, CallRole, Conversation, DeviceView, StoredMessage};
use crate::error::{Error, ErrorCode};
use crate::ids::UserId;
pub use crate::media::control::Digit;
use crate::media::report::MediaReport;
pub use crate::media::report::{DeviceState, MediaStats, NetworkQuality, SoundDevice, VoiceVolume};
use crate::protocol::{CancelReason, KickReason, Role, RoomId, UserPresence};

/// Login status with the vendor's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoginStatus {
    Logined,
    Logining,
    Logout,
}

impl LoginStatus {
    pub fn code(self) -> u8 {
        match self {
            LoginStatus::Logined => 1,
            LoginStatus::Logining => 2,
            LoginStatus::Logout => 3,
        }
    }
}

/// State of the link to the relay, for "reconnecting..." indicators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connected,
    Reconnecting,
    Disconnected,
}

/// A user and its online devices, as events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserView {
    #[serde(rename = "userID")]
    pub user: UserId,
    pub devices: Vec<DeviceView>,
    /// In a call on one of its devices.
    #[serde(rename = "inCall")]
    pub in_call: bool,
}

impl From<UserPresence> for UserView {
    fn from(p: UserPresence) -> Self {
        UserView {
            user: p.user,
            devices: p.devices.into_iter().map(DeviceView::from).collect(),
            in_call: p.in_call,
        }
    }
}

/// `callMediaType` of every termphone call: audio (the vendor's 1; video is 2).
pub const AUDIO_CALL: u8 = 1;

/// What a device reports to its front end. Each variant's name, in
/// SCREAMING_SNAKE_CASE, is its `event` name in headless mode: the one table
/// of event names (`Event::name`, `EVENT_NAMES`).
#[derive(Clone, Debug, PartialEq, Serialize, IntoStaticStr, VariantNames)]
#[serde(
    tag = "event",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Event {
    OnCallReceived {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: RoomId,
        sponsor: UserId,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
        is_from_group: bool,
        call_media_type: u8,
        call_role: CallRole,
        /// The caller's `userData` (absent when it gave none).
        #[serde(skip_serializing_if = "Option::is_none")]
        user_data: Option<Box<str>>,
        /// Who transferred the call here (a blind transfer), else absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        transferred_by: Option<Box<UserId>>,
        /// True for a call that waits while this device is in another
        /// (call waiting), else absent.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        waiting: bool,
        /// What the call history keeps of it now (not part of the JSON).
        #[serde(skip)]
        record: Box<CallRecord>,
    },
    /// termphone's own: this device's outgoing call was placed.
    CallDialing {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: RoomId,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
        is_from_group: bool,
        call_media_type: u8,
        call_role: CallRole,
        /// What the call history keeps of it now (not part of the JSON).
        #[serde(skip)]
        record: Box<CallRecord>,
    },
    OnCallBegin {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: RoomId,
        call_media_type: u8,
        call_role: CallRole,
        /// Who else is in the call as this device enters it.
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
        /// What the call history keeps of it now (not part of the JSON).
        #[serde(skip)]
        record: Box<CallRecord>,
    },
    OnCallCanceled {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: RoomId,
        #[serde(rename = "userID")]
        user_id: UserId,
        reason: CancelReason,
        call_media_type: u8,
        call_role: CallRole,
        /// termphone's own: with `answered_elsewhere` and
        /// `declined_elsewhere`, the device of this user that answered or
        /// declined, as `deviceID` and `platform` (absent otherwise).
        #[serde(flatten)]
        elsewhere: Option<DeviceView>,
        /// What the call history keeps of it now (not part of the JSON).
        #[serde(skip)]
        record: Box<CallRecord>,
    },
    CallingEnd {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: RoomId,
        #[serde(rename = "userID")]
        user_id: UserId,
        total_time: u64,
        call_media_type: u8,
        call_role: CallRole,
        /// What the call history keeps of it now (not part of the JSON).
        #[serde(skip)]
        record: Box<CallRecord>,
        /// The call ended without word from the relay: when this device's
        /// link came back the relay no longer had it in the call (a relay
        /// restart, or the others hung up meanwhile). Not part of the JSON.
        #[serde(skip)]
        unheard: bool,
    },
    UserAccept {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    Reject {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    LineBusy {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    UserEnter {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
        /// How it takes part: `anchor` (speaks) or `audience` (listens).
        role: Role,
    },
    /// A participant of this device's group call (this device's user
    /// included) speaks (`anchor`) or only listens (`audience`) now.
    RoleChanged {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
        role: Role,
    },
    UserLeave {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    NoResp {
        call_id: String,
        sponsor: UserId,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
    },
    GroupCallInviteeListUpdate {
        call_id: String,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
    },
    /// A participant of a call (`userID`, this device's user included) put
    /// it on hold or took it back; on every device of every participant.
    CallHoldChanged {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
        on_hold: bool,
    },
    /// `by` transferred this device's call to `to`, who rings now.
    CallTransferred {
        call_id: String,
        by: UserId,
        to: UserId,
    },
    /// Another participant of this device's call sent a DTMF digit
    /// (`sendDTMF`): once per digit, in order.
    DtmfReceived {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: UserId,
        digit: Digit,
    },
    /// A member of this device's call opened or closed its microphone.
    UserAudioAvailable {
        #[serde(rename = "userID")]
        user_id: UserId,
        is_audio_available: bool,
    },
    /// Every participant's voice level (this device's user first), 0 to 100,
    /// five times a second during a call.
    UserVoiceVolume {
        volume_map: Vec<VoiceVolume>,
    },
    /// The other participants' network as this device receives them, every
    /// 2 s when a grade changes.
    OnUserNetworkQualityChanged {
        network_quality_list: Vec<NetworkQuality>,
    },
    /// The system's sound devices and this device's: the answer to
    /// `getDeviceList` and `switchDevice`, and sent by itself when the
    /// system's devices change (SPEC 8.1).
    DevicedUpdated {
        #[serde(flatten)]
        devices: DeviceState,
    },
    /// termphone's own: what this device's media did in a call, once its
    /// media has stopped (just after CALLING_END), or so far when asked
    /// (`getMediaStats`).
    MediaStats {
        #[serde(rename = "roomID")]
        room_id: RoomId,
        /// Boxed: the largest of the events, and one of the rarest.
        #[serde(flatten)]
        stats: Box<MediaStats>,
    },
    SdkReady,
    /// Acknowledgement of `sendMessage`: the message is stored on the relay.
    MessageSent {
        #[serde(rename = "msgID")]
        msg_id: String,
        #[serde(rename = "clientMsgID")]
        client_msg_id: String,
        to: UserId,
        text: String,
        timestamp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A message to this user, or from it on another of its devices.
    MessageReceived {
        #[serde(rename = "msgID")]
        msg_id: String,
        from: UserId,
        to: UserId,
        text: String,
        timestamp: u64,
        /// Delivered by a catch-up after being away, not live.
        offline: bool,
        seq: u64,
    },
    MessageRecalled {
        #[serde(rename = "msgID")]
        msg_id: String,
        /// The other user of the conversation.
        #[serde(rename = "userID")]
        user_id: UserId,
        seq: u64,
    },
    /// termphone's own: this user read the conversation with `userID` (on
    /// any of its devices) up to `timestamp`.
    ConversationRead {
        #[serde(rename = "userID")]
        user_id: UserId,
        timestamp: u64,
        seq: u64,
    },
    /// The other user of a conversation read it (on one of its devices)
    /// up to `timestamp` (unix ms): what this user sent before then is read.
    /// Tencent Chat's name; on every device of this user, also one that
    /// was offline (it comes with the catch-up).
    C2cReadReceipt {
        /// The user who read.
        #[serde(rename = "userID")]
        user_id: UserId,
        timestamp: u64,
        seq: u64,
    },
    Typing {
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    /// termphone's own: the catch-up after a login is complete, up to `seq`.
    Synced {
        seq: u64,
    },
    LoginStatusChanged {
        status: LoginStatus,
        #[serde(rename = "statusCode")]
        status_code: u8,
    },
    KickedOut {
        reason: KickReason,
        message: String,
    },
    UserSigExpired,
    ConnectionChanged {
        state: LinkState,
    },
    Users {
        users: Vec<UserView>,
    },
    /// termphone's own: this device's recent calls, newest first.
    CallHistory {
        calls: Vec<CallRecord>,
    },
    /// Answer to `getConversations`, from the local store.
    Conversations {
        conversations: Vec<Conversation>,
    },
    /// Answer to `getMessages`, from the local store, oldest first.
    Messages {
        #[serde(rename = "userID")]
        user_id: UserId,
        messages: Vec<StoredMessage>,
    },
    UserStatusChanged {
        #[serde(flatten)]
        user: UserView,
    },
    Error {
        code: u32,
        message: String,
        /// The command that failed, when one did.
        cmd: Option<String>,
        /// The relay's code, when the client reports the condition under its own.
        #[serde(rename = "relayCode", skip_serializing_if = "Option::is_none")]
        relay_code: Option<u32>,
        /// The message a failed `sendMessage` was about.
        #[serde(rename = "clientMsgID", skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
}

impl Event {
    /// The `event` name, as `wait` matches it.
    pub fn name(&self) -> &'static str {
        self.into()
    }

    pub fn status(status: LoginStatus) -> Event {
        Event::LoginStatusChanged {
            status,
            status_code: status.code(),
        }
    }

    pub fn error(error: Error, cmd: Option<&str>) -> Event {
        Event::Error {
            code: error.code.code(),
            message: error.message,
            cmd: cmd.map(str::to_owned),
            relay_code: None,
            client_msg_id: None,
        }
    }

    /// The record a call event carries for the history: the engine's
    /// account of the call as it stands after this event.
    pub fn call_record(&self) -> Option<&CallRecord> {
        match self {
            Event::OnCallReceived { record, .. }
            | Event::CallDialing { record, .. }
            | Event::OnCallBegin { record, .. }
            | Event::OnCallCanceled { record, .. }
            | Event::CallingEnd { record, .. } => Some(&**record),
            _ => None,
        }
    }

    /// The code of an `ERROR` event, if it is one this build knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Event::Error { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }
}

/// What the media thread reports, as this device's event.
impl From<MediaReport> for Event {
    fn from(report: MediaReport) -> Event {
        match report {
            MediaReport::Volumes(volume_map) => Event::UserVoiceVolume { volume_map },
            MediaReport::Network(network_quality_list) => Event::OnUserNetworkQualityChanged {
                network_quality_list,
            },
            MediaReport::Stats { room, stats } => Event::MediaStats {
                room_id: room,
                stats,
            },
            MediaReport::Failed(error, cmd) => Event::error(error, cmd),
            MediaReport::Devices(devices) => Event::DevicedUpdated { devices },
            MediaReport::Dtmf {
                call_id,
                user,
                digit,
            } => Event::DtmfReceived {
                call_id,
                user_id: user,
                digit,
            },
        }
    }
}

/// Every event name, for `wait` to check its argument against.
pub const EVENT_NAMES: &[&str] = Event::VARIANTS;

/// The events the media thread reports ([`MediaReport`]; its errors are
/// `ERROR`s as any other): what a device without media never sees.
pub const MEDIA_EVENT_NAMES: &[&str] = &[
    "USER_VOICE_VOLUME",
    "ON_USER_NETWORK_QUALITY_CHANGED",
    "MEDIA_STATS",
    "DEVICED_UPDATED",
    "DTMF_RECEIVED",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde tag and the name table are both the variant's name in
    /// SCREAMING_SNAKE_CASE; these are the names where two case converters
    /// could disagree.
    #[test]
    fn names_are_the_serialized_tags() {
        let samples = [
            Event::SdkReady,
            Event::UserSigExpired,
            Event::OnUserNetworkQualityChanged {
                network_quality_list: Vec::new(),
            },
            Event::Synced { seq: 1 },
            Event::C2cReadReceipt {
                user_id: "bob".parse().unwrap(),
                timestamp: 1,
                seq: 1,
            },
            Event::error(Error::new(ErrorCode::WaitTimeout, "late"), Some("wait")),
            Event::CallHoldChanged {
                call_id: "c".into(),
                user_id: "bob".parse().unwrap(),
                on_hold: true,
            },
            Event::CallTransferred {
                call_id: "c".into(),
                by: "bob".parse().unwrap(),
                to: "carol".parse().unwrap(),
            },
        ];
        for event in samples {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["event"], event.name());
            assert!(EVENT_NAMES.contains(&event.name()));
        }
        let devices = Event::DevicedUpdated {
            devices: DeviceState {
                microphone_list: Vec::new(),
                speaker_list: Vec::new(),
                current_microphone_id: "null".into(),
                current_speaker_id: "default".into(),
            },
        };
        let json = serde_json::to_value(&devices).unwrap();
        assert_eq!(json["event"], "DEVICED_UPDATED");
        assert_eq!(json["currentMicrophoneID"], "null");
        assert!(json["speakerList"].is_array());
        let dtmf = Event::from(MediaReport::Dtmf {
            call_id: "c".into(),
            user: "bob".parse().unwrap(),
            digit: Digit::new('*').unwrap(),
        });
        let json = serde_json::to_value(&dtmf).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "DTMF_RECEIVED", "callId": "c", "userID": "bob", "digit": "*"})
        );
        let role = Event::RoleChanged {
            call_id: "c".into(),
            user_id: "bob".parse().unwrap(),
            role: Role::Audience,
        };
        let json = serde_json::to_value(&role).unwrap();
        assert_eq!(
            (&json["event"], &json["role"]),
            (
                &serde_json::json!("ROLE_CHANGED"),
                &serde_json::json!("audience")
            )
        );
        assert_eq!(EVENT_NAMES.len(), 39);
        assert!(EVENT_NAMES.contains(&"C2C_READ_RECEIPT"));
    }

    /// A device without media sees none of these, and a flow that expects
    /// one needs media (`Flow::uses_media`): every report of the media
    /// thread but its errors must be named there.
    #[test]
    fn every_media_report_is_a_media_event() {
        let devices = crate::media::report::DeviceState {
            microphone_list: Vec::new(),
            speaker_list: Vec::new(),
            current_microphone_id: String::new(),
            current_speaker_id: String::new(),
        };
        let samples = [
            MediaReport::Volumes(Vec::new()),
            MediaReport::Network(Vec::new()),
            MediaReport::Stats {
                room: 1,
                stats: Default::default(),
            },
            MediaReport::Devices(devices),
            MediaReport::Dtmf {
                call_id: "c".into(),
                user: "bob".parse().unwrap(),
                digit: crate::media::control::Digit::new('5').unwrap(),
            },
        ];
        for report in samples {
            // A new kind of report is named here, and in MEDIA_EVENT_NAMES.
            match &report {
                MediaReport::Volumes(_)
                | MediaReport::Network(_)
                | MediaReport::Stats { .. }
                | MediaReport::Devices(_)
                | MediaReport::Dtmf { .. } => {}
                MediaReport::Failed(..) => unreachable!("an ERROR, as any other"),
            }
            let name = Event::from(report).name();
            assert!(MEDIA_EVENT_NAMES.contains(&name), "{name}");
        }
        assert!(MEDIA_EVENT_NAMES.iter().all(|n| EVENT_NAMES.contains(n)));
    }
}
