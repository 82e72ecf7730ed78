//! Engine events: what a device reports to its front end (TUI or headless).
//!
//! Names and field names are the public interface of headless mode (SPEC
//! section 6, docs/headless.md); serde attributes here are that contract.

use serde::Serialize;

use crate::client::history::CallRecord;
use crate::client::local_store::{Conversation, StoredMessage};
use crate::error::{Error, ErrorCode};
pub use crate::media::quality::Quality;
use crate::protocol::UserPresence;

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

/// A device of a user, as events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    #[serde(rename = "deviceID")]
    pub device: String,
    pub platform: String,
}

/// A user and its online devices, as events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserView {
    #[serde(rename = "userID")]
    pub user: String,
    pub devices: Vec<DeviceView>,
    /// In a call on one of its devices.
    #[serde(rename = "inCall")]
    pub in_call: bool,
}

impl From<UserPresence> for UserView {
    fn from(p: UserPresence) -> Self {
        UserView {
            user: p.user.to_string(),
            devices: p
                .devices
                .into_iter()
                .map(|d| DeviceView {
                    device: d.device.to_string(),
                    platform: d.platform.to_string(),
                })
                .collect(),
            in_call: p.in_call,
        }
    }
}

/// One entry of `USER_VOICE_VOLUME`'s `volumeMap`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoiceVolume {
    #[serde(rename = "userID")]
    pub user_id: String,
    pub volume: u8,
}

/// One entry of `ON_USER_NETWORK_QUALITY_CHANGED`'s `networkQualityList`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkQuality {
    #[serde(rename = "userID")]
    pub user_id: String,
    /// 0 unknown, 1 excellent, 2 good, 3 poor, 4 bad, 5 very bad, 6 down.
    pub quality: Quality,
    pub loss_percent: f64,
    pub jitter_ms: u64,
    /// This device's round trip to the relay, once measured.
    pub rtt_ms: Option<u64>,
}

/// A device's part in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallRole {
    Caller,
    Called,
}

/// `callMediaType` of every termphone call: audio (the vendor's 1; video is 2).
pub const AUDIO_CALL: u8 = 1;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event")]
pub enum Event {
    #[serde(rename = "ON_CALL_RECEIVED", rename_all = "camelCase")]
    OnCallReceived {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: u32,
        sponsor: String,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<String>,
        is_from_group: bool,
        call_media_type: u8,
        call_role: CallRole,
    },
    /// termphone's own: this device's outgoing call was placed.
    #[serde(rename = "CALL_DIALING", rename_all = "camelCase")]
    CallDialing {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: u32,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<String>,
        is_from_group: bool,
        call_media_type: u8,
        call_role: CallRole,
    },
    #[serde(rename = "ON_CALL_BEGIN", rename_all = "camelCase")]
    OnCallBegin {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: u32,
        call_media_type: u8,
        call_role: CallRole,
    },
    #[serde(rename = "ON_CALL_CANCELED", rename_all = "camelCase")]
    OnCallCanceled {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: u32,
        #[serde(rename = "userID")]
        user_id: String,
        reason: String,
        call_media_type: u8,
        call_role: CallRole,
    },
    #[serde(rename = "CALLING_END", rename_all = "camelCase")]
    CallingEnd {
        call_id: String,
        #[serde(rename = "roomID")]
        room_id: u32,
        #[serde(rename = "userID")]
        user_id: String,
        total_time: u64,
        call_media_type: u8,
        call_role: CallRole,
    },
    #[serde(rename = "USER_ACCEPT", rename_all = "camelCase")]
    UserAccept {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: String,
    },
    #[serde(rename = "REJECT", rename_all = "camelCase")]
    Reject {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: String,
    },
    #[serde(rename = "LINE_BUSY", rename_all = "camelCase")]
    LineBusy {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: String,
    },
    #[serde(rename = "USER_ENTER", rename_all = "camelCase")]
    UserEnter {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: String,
    },
    #[serde(rename = "USER_LEAVE", rename_all = "camelCase")]
    UserLeave {
        call_id: String,
        #[serde(rename = "userID")]
        user_id: String,
    },
    #[serde(rename = "NO_RESP", rename_all = "camelCase")]
    NoResp {
        call_id: String,
        sponsor: String,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<String>,
    },
    #[serde(rename = "GROUP_CALL_INVITEE_LIST_UPDATE", rename_all = "camelCase")]
    GroupCallInviteeListUpdate {
        call_id: String,
        #[serde(rename = "userIDList")]
        user_id_list: Vec<String>,
    },
    /// A member of this device's call opened or closed its microphone.
    #[serde(rename = "USER_AUDIO_AVAILABLE", rename_all = "camelCase")]
    UserAudioAvailable {
        #[serde(rename = "userID")]
        user_id: String,
        is_audio_available: bool,
    },
    /// Every participant's voice level (this device's user first), 0 to 100,
    /// five times a second during a call.
    #[serde(rename = "USER_VOICE_VOLUME", rename_all = "camelCase")]
    UserVoiceVolume { volume_map: Vec<VoiceVolume> },
    /// The other participants' network as this device receives them, every
    /// 2 s when a grade changes.
    #[serde(rename = "ON_USER_NETWORK_QUALITY_CHANGED", rename_all = "camelCase")]
    OnUserNetworkQualityChanged {
        network_quality_list: Vec<NetworkQuality>,
    },
    /// termphone's own: what this device's media did in a call, once its
    /// media has stopped (just after CALLING_END).
    #[serde(rename = "MEDIA_STATS", rename_all = "camelCase")]
    MediaStats {
        #[serde(rename = "roomID")]
        room_id: u32,
        frames_sent: u64,
        frames_received: u64,
        /// Missing at their playout time (rebuilt by FEC or concealed).
        frames_lost: u64,
        fec_recovered: u64,
        late: u64,
        /// Ticks the jitter buffer ran dry and concealed.
        jitter_underruns: u64,
        capture_underruns: u64,
        capture_overruns: u64,
        playback_underruns: u64,
        playback_overruns: u64,
        /// Frames dropped because the connection could not take them.
        send_drops: u64,
    },
    #[serde(rename = "SDK_READY")]
    SdkReady,
    /// Acknowledgement of `sendMessage`: the message is stored on the relay.
    #[serde(rename = "MESSAGE_SENT", rename_all = "camelCase")]
    MessageSent {
        #[serde(rename = "msgID")]
        msg_id: String,
        #[serde(rename = "clientMsgID")]
        client_msg_id: String,
        to: String,
        text: String,
        timestamp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A message to this user, or from it on another of its devices.
    #[serde(rename = "MESSAGE_RECEIVED", rename_all = "camelCase")]
    MessageReceived {
        #[serde(rename = "msgID")]
        msg_id: String,
        from: String,
        to: String,
        text: String,
        timestamp: u64,
        /// Delivered by a catch-up after being away, not live.
        offline: bool,
        seq: u64,
    },
    #[serde(rename = "MESSAGE_RECALLED", rename_all = "camelCase")]
    MessageRecalled {
        #[serde(rename = "msgID")]
        msg_id: String,
        /// The other user of the conversation.
        #[serde(rename = "userID")]
        user_id: String,
        seq: u64,
    },
    /// termphone's own: this user read the conversation with `userID` (on
    /// any of its devices) up to `timestamp`.
    #[serde(rename = "CONVERSATION_READ", rename_all = "camelCase")]
    ConversationRead {
        #[serde(rename = "userID")]
        user_id: String,
        timestamp: u64,
        seq: u64,
    },
    #[serde(rename = "TYPING")]
    Typing {
        #[serde(rename = "userID")]
        user_id: String,
    },
    /// termphone's own: the catch-up after a login is complete, up to `seq`.
    #[serde(rename = "SYNCED")]
    Synced { seq: u64 },
    #[serde(rename = "LOGIN_STATUS_CHANGED")]
    LoginStatusChanged {
        status: LoginStatus,
        #[serde(rename = "statusCode")]
        status_code: u8,
    },
    #[serde(rename = "KICKED_OUT")]
    KickedOut { reason: String, message: String },
    #[serde(rename = "USER_SIG_EXPIRED")]
    UserSigExpired,
    #[serde(rename = "CONNECTION_CHANGED")]
    ConnectionChanged { state: LinkState },
    #[serde(rename = "USERS")]
    Users { users: Vec<UserView> },
    /// termphone's own: this device's recent calls, newest first.
    #[serde(rename = "CALL_HISTORY")]
    CallHistory { calls: Vec<CallRecord> },
    /// Answer to `getConversations`, from the local store.
    #[serde(rename = "CONVERSATIONS")]
    Conversations { conversations: Vec<Conversation> },
    /// Answer to `getMessages`, from the local store, oldest first.
    #[serde(rename = "MESSAGES")]
    Messages {
        #[serde(rename = "userID")]
        user_id: String,
        messages: Vec<StoredMessage>,
    },
    #[serde(rename = "USER_STATUS_CHANGED")]
    UserStatusChanged {
        #[serde(flatten)]
        user: UserView,
    },
    #[serde(rename = "ERROR")]
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
        match self {
            Event::OnCallReceived { .. } => "ON_CALL_RECEIVED",
            Event::CallDialing { .. } => "CALL_DIALING",
            Event::OnCallBegin { .. } => "ON_CALL_BEGIN",
            Event::OnCallCanceled { .. } => "ON_CALL_CANCELED",
            Event::CallingEnd { .. } => "CALLING_END",
            Event::UserAccept { .. } => "USER_ACCEPT",
            Event::Reject { .. } => "REJECT",
            Event::LineBusy { .. } => "LINE_BUSY",
            Event::UserEnter { .. } => "USER_ENTER",
            Event::UserLeave { .. } => "USER_LEAVE",
            Event::NoResp { .. } => "NO_RESP",
            Event::GroupCallInviteeListUpdate { .. } => "GROUP_CALL_INVITEE_LIST_UPDATE",
            Event::UserAudioAvailable { .. } => "USER_AUDIO_AVAILABLE",
            Event::UserVoiceVolume { .. } => "USER_VOICE_VOLUME",
            Event::OnUserNetworkQualityChanged { .. } => "ON_USER_NETWORK_QUALITY_CHANGED",
            Event::MediaStats { .. } => "MEDIA_STATS",
            Event::SdkReady => "SDK_READY",
            Event::MessageSent { .. } => "MESSAGE_SENT",
            Event::MessageReceived { .. } => "MESSAGE_RECEIVED",
            Event::MessageRecalled { .. } => "MESSAGE_RECALLED",
            Event::ConversationRead { .. } => "CONVERSATION_READ",
            Event::Typing { .. } => "TYPING",
            Event::Synced { .. } => "SYNCED",
            Event::LoginStatusChanged { .. } => "LOGIN_STATUS_CHANGED",
            Event::KickedOut { .. } => "KICKED_OUT",
            Event::UserSigExpired => "USER_SIG_EXPIRED",
            Event::ConnectionChanged { .. } => "CONNECTION_CHANGED",
            Event::Users { .. } => "USERS",
            Event::CallHistory { .. } => "CALL_HISTORY",
            Event::Conversations { .. } => "CONVERSATIONS",
            Event::Messages { .. } => "MESSAGES",
            Event::UserStatusChanged { .. } => "USER_STATUS_CHANGED",
            Event::Error { .. } => "ERROR",
        }
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

    /// The code of an `ERROR` event, if it is one this build knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Event::Error { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }
}

/// Every event name, for `wait` to check its argument against.
pub const EVENT_NAMES: &[&str] = &[
    "MESSAGE_SENT",
    "MESSAGE_RECEIVED",
    "MESSAGE_RECALLED",
    "CONVERSATION_READ",
    "TYPING",
    "SYNCED",
    "ON_CALL_RECEIVED",
    "CALL_DIALING",
    "ON_CALL_BEGIN",
    "ON_CALL_CANCELED",
    "CALLING_END",
    "USER_ACCEPT",
    "REJECT",
    "LINE_BUSY",
    "USER_ENTER",
    "USER_LEAVE",
    "NO_RESP",
    "GROUP_CALL_INVITEE_LIST_UPDATE",
    "USER_AUDIO_AVAILABLE",
    "USER_VOICE_VOLUME",
    "ON_USER_NETWORK_QUALITY_CHANGED",
    "MEDIA_STATS",
    "SDK_READY",
    "LOGIN_STATUS_CHANGED",
    "KICKED_OUT",
    "USER_SIG_EXPIRED",
    "CONNECTION_CHANGED",
    "USERS",
    "CALL_HISTORY",
    "CONVERSATIONS",
    "MESSAGES",
    "USER_STATUS_CHANGED",
    "ERROR",
];
