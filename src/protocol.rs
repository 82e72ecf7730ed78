//! The wire protocol between clients and the relay: every message, in one place.
//!
//! Control messages are JSON objects in WebSocket text frames, tagged by
//! `type` and stamped with the protocol version `v`. Voice travels in binary
//! frames: a fixed header ([`MediaHeader`]) and one Opus packet.
//! `docs/protocol.md` documents the same set as tables.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, DeviceId, Platform, UserId};

/// The protocol version this build speaks; a frame with another `v` is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest control frame either side accepts, in bytes of JSON.
pub const MAX_CONTROL_FRAME_BYTES: usize = 128 * 1024;

/// Largest WebSocket message the transport reads at all. Above the control
/// limit so that an oversized control frame still reaches the decoder and is
/// answered with `FRAME_TOO_LARGE` instead of a dropped connection.
pub const MAX_TRANSPORT_MESSAGE_BYTES: usize = 2 * MAX_CONTROL_FRAME_BYTES;

/// Messages a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, IntoStaticStr)]
#[serde(tag = "type", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ClientMsg {
    /// Log in (or switch accounts on this connection). The identifiers stay
    /// raw text here so that the relay can answer a bad one with its own code
    /// (`INVALID_USER_ID`, ...) rather than `MALFORMED_FRAME`.
    Login {
        app: AppId,
        user: String,
        device: String,
        platform: String,
        user_sig: String,
    },
    /// Reattach a session after a dropped connection, within the grace period.
    Resume {
        session: String,
    },
    Logout,
    Heartbeat,
    /// The app's known users with their online devices, a page at a time
    /// in UserID order, from after `after`; with `subscribe`, later changes
    /// follow as `presence` messages.
    ListUsers {
        #[serde(default)]
        subscribe: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Ring on this device too when the user has several online.
    MultiDevice {
        enable: bool,
    },
    /// Call waiting: while this device is in a connected call, a new call
    /// rings here as a waiting call instead of finding the user busy.
    CallWaiting {
        enable: bool,
    },
    /// Start a call; `group` marks a group call even with one invitee.
    Call {
        invitees: Vec<String>,
        #[serde(default)]
        group: bool,
        /// Ring timeout in seconds (default 30).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u32>,
        /// The caller's own data for the callees (`userData`), at most
        /// [`MAX_USER_DATA_BYTES`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_data: Option<String>,
    },
    Accept {
        call_id: String,
        /// Call waiting: hang up the call this device is in before taking
        /// this one (instead of holding it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        end_current: bool,
    },
    Reject {
        call_id: String,
    },
    /// Stop ringing on this device only.
    Ignore {
        call_id: String,
    },
    /// Leave the call, or cancel it while it still rings.
    Hangup {
        call_id: String,
    },
    Invite {
        call_id: String,
        users: Vec<String>,
    },
    Join {
        room: RoomId,
        /// How this device takes part: speaking (anchor) or listening.
        #[serde(default, skip_serializing_if = "Role::is_anchor")]
        role: Role,
    },
    /// This participant speaks (anchor) or only listens (audience) from now on.
    SwitchRole {
        call_id: String,
        role: Role,
    },
    /// The device opened (`on`) or closed its microphone in its current call.
    Microphone {
        on: bool,
    },
    /// This participant puts the call on hold (`on_hold`) or takes it back.
    Hold {
        call_id: String,
        on_hold: bool,
    },
    /// Blind transfer: this participant leaves its connected 1:1 call and
    /// the other party is rung through to `to`.
    Transfer {
        call_id: String,
        to: String,
    },
    /// A one-to-one text message; `client_msg_id` makes a resend idempotent.
    SendMessage {
        to: String,
        text: String,
        client_msg_id: String,
    },
    RecallMessage {
        msg_id: String,
    },
    /// The user read its conversation with `peer` up to now.
    MarkRead {
        peer: String,
    },
    /// A status message: only devices online now hear it.
    Typing {
        to: String,
    },
    /// Timeline entries after `after` (this device's high-water mark),
    /// within the compensation window.
    Sync {
        after: u64,
    },
    /// Older messages of the conversation with `peer`, before `before`
    /// (unix ms; `None`: the latest), newest `count` of them.
    History {
        peer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        count: u32,
    },
    /// Server-side send (admin API): as `from`, authorized by the relay's
    /// `admin_token`; needs no login.
    AdminSend {
        token: String,
        app: AppId,
        from: String,
        to: String,
        text: String,
        #[serde(default)]
        include_sender: bool,
    },
}

impl ClientMsg {
    /// The `type` tag, for error replies that name the failed request.
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

/// An error as carried on the wire: the stable code and a readable message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: u32,
    pub message: String,
}

impl From<Error> for WireError {
    fn from(e: Error) -> Self {
        WireError {
            code: e.code.code(),
            message: e.message,
        }
    }
}

/// One online device of a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device: DeviceId,
    pub platform: Platform,
}

/// A user of the app and the devices it has online now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    pub user: UserId,
    pub devices: Vec<DeviceInfo>,
    /// In a call on one of its devices.
    #[serde(default)]
    pub in_call: bool,
}

/// Why the relay ended a session from its side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KickReason {
    /// A newer login of the same user on the same platform went over the
    /// app's per-platform device limit; this was the earliest device.
    DeviceLimit,
    /// The same device id logged in on another connection.
    SameDevice,
}

impl std::fmt::Display for KickReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KickReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KickReason::DeviceLimit => "device_limit",
            KickReason::SameDevice => "same_device",
        }
    }
}

/// A call's room: every call runs in one, 1..=4294967295.
pub type RoomId = u32;

/// What a call looks like to a device that is told about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    pub room: RoomId,
    pub sponsor: UserId,
    /// Everyone invited (for the callee: the others invited with it).
    pub invitees: Vec<UserId>,
    pub group: bool,
    /// The caller's `userData`, as given to `call` / `groupCall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Who transferred the call here (a blind transfer rings its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_by: Option<UserId>,
    /// It rings on a device that is in another call (call waiting).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
}

/// How a participant takes part in a group call (SPEC 8.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Speaks and hears: a participant, counted against
    /// `relay.max_call_participants`.
    #[default]
    Anchor,
    /// Hears the anchors and sends nothing, counted against
    /// `relay.max_call_audience` instead.
    Audience,
}

impl Role {
    pub fn is_anchor(&self) -> bool {
        *self == Role::Anchor
    }
}

/// Largest `userData` of a call, in bytes of UTF-8.
pub const MAX_USER_DATA_BYTES: usize = 1024;

/// The rule for a call's `userData`, checked by the client and the relay alike.
pub fn check_user_data(data: Option<&str>) -> Result<(), Error> {
    match data {
        Some(d) if d.len() > MAX_USER_DATA_BYTES => Err(Error::new(
            ErrorCode::UserDataTooLong,
            format!(
                "userData is {} bytes; a call carries at most {MAX_USER_DATA_BYTES}",
                d.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// How long an invitation rings when the caller does not say.
pub const DEFAULT_RING_SECS: u32 = 30;

/// The longest a call may ring (its `timeout`): 5 minutes.
pub const MAX_RING_SECS: u32 = 300;

/// Calls that may ring one user at once; a further one finds the user
/// busy (`LINE_BUSY`).
pub const MAX_RINGING_CALLS: usize = 8;

/// The rule for how long a call rings, checked by the client and the relay
/// alike: the seconds it will ring.
pub fn check_ring_secs(timeout_secs: Option<u32>) -> Result<u32, Error> {
    let secs = timeout_secs.unwrap_or(DEFAULT_RING_SECS);
    if (1..=MAX_RING_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(Error::new(
            ErrorCode::InvalidParameters,
            format!("a call rings for 1 to {MAX_RING_SECS} s (timeout), not {secs}"),
        ))
    }
}

/// Why a call stopped ringing on a device, or never connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Another device of the same user answered.
    AnsweredElsewhere,
    /// Another device of the same user declined.
    DeclinedElsewhere,
    /// This device declined.
    Declined,
    /// The caller hung up before anyone answered.
    CallerCanceled,
    /// Nobody answered within the call's timeout.
    Timeout,
    /// Every callee was already in a call.
    Busy,
    /// This device chose to ignore the call (local to the device).
    Ignored,
    /// The call ended (fewer than two participants left) while this device rang.
    CallEnded,
    /// The device logged out, was kicked out or lost its session.
    SignedOut,
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CancelReason {
    pub const ALL: [CancelReason; 9] = [
        CancelReason::AnsweredElsewhere,
        CancelReason::DeclinedElsewhere,
        CancelReason::Declined,
        CancelReason::CallerCanceled,
        CancelReason::Timeout,
        CancelReason::Busy,
        CancelReason::Ignored,
        CancelReason::CallEnded,
        CancelReason::SignedOut,
    ];

    /// The reason `as_str` names.
    pub fn parse(s: &str) -> Option<CancelReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::AnsweredElsewhere => "answered_elsewhere",
            CancelReason::DeclinedElsewhere => "declined_elsewhere",
            CancelReason::Declined => "declined",
            CancelReason::CallerCanceled => "caller_canceled",
            CancelReason::Timeout => "timeout",
            CancelReason::Busy => "busy",
            CancelReason::Ignored => "ignored",
            CancelReason::CallEnded => "call_ended",
            CancelReason::SignedOut => "signed_out",
        }
    }
}

/// Something another participant did, as the rest of the call hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerAction {
    Accepted,
    Rejected,
    NoResponse,
    Busy,
    Entered,
    Left,
    /// `users` is the whole current invitee list.
    InviteesUpdated,
}

/// Largest message text, in bytes of UTF-8.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 64 * 1024;

/// Largest message text as written in a frame's JSON, where a control
/// character takes 6 bytes and a quote or backslash 2: what leaves room in
/// a control frame for everything else a message carries.
pub const MAX_MESSAGE_JSON_BYTES: usize = MAX_CONTROL_FRAME_BYTES - 8 * 1024;

/// The bytes `text` takes as a JSON string's contents (serde_json's escapes).
fn json_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// The rule for a message's text, checked by the client and the relay alike.
pub fn check_message_text(text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Err(Error::new(
            ErrorCode::EmptyMessage,
            "a message needs some text",
        ));
    }
    if text.len() > MAX_MESSAGE_TEXT_BYTES {
        return Err(Error::new(
            ErrorCode::MessageTooLong,
            format!(
                "the text is {} bytes; a message holds at most {MAX_MESSAGE_TEXT_BYTES}",
                text.len()
            ),
        ));
    }
    let json = json_len(text);
    if json > MAX_MESSAGE_JSON_BYTES {
        return Err(Error::new(
            ErrorCode::MessageTooLong,
            format!(
                "the text is {} bytes but {json} as JSON, where each control character takes 6 bytes and each quote or backslash 2; a message holds at most {MAX_MESSAGE_JSON_BYTES} as JSON: send it in parts",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// A chat message as the relay stores and serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub msg_id: String,
    pub from: UserId,
    pub to: UserId,
    pub text: String,
    /// Unix milliseconds on the relay.
    pub server_time: u64,
    /// The device that sent it, and its id for the message (none for a
    /// server-side send): the sending device recognizes its own message
    /// when its timeline brings it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_by: Option<SentBy>,
}

/// Which device sent a message, under which client id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentBy {
    pub device: DeviceId,
    pub client_msg_id: String,
}

/// One step of a user's timeline, numbered by `seq` per user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// A message to or from the user.
    Message { message: ChatMessage },
    /// A message of the conversation with `peer` was recalled.
    Recall { msg_id: String, peer: UserId },
    /// The user read the conversation with `peer` up to `at`.
    Read { peer: UserId, at: u64 },
    /// The other user of a conversation, `peer`, read it up to `at`: what
    /// this user sent before then has been read (a peer read receipt,
    /// written with `peer`'s `Read`; never for a conversation with oneself).
    ReadReceipt { peer: UserId, at: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// Messages the relay sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    LoginOk {
        user: UserId,
        device: DeviceId,
        /// Secret token that `resume` presents after a dropped connection.
        session: String,
        /// Unix milliseconds on the relay.
        server_time: u64,
    },
    LoginFailed {
        error: WireError,
    },
    Resumed {
        server_time: u64,
    },
    ResumeFailed {
        error: WireError,
    },
    LoggedOut,
    KickedOut {
        reason: KickReason,
        message: String,
    },
    /// The session's ticket expired while online; it has been logged out.
    UserSigExpired,
    HeartbeatAck,
    /// A page of the user list; with `more`, the device asks for the next
    /// one (`list_users {after: the last userID}`) and shows them all as one.
    Users {
        users: Vec<UserPresence>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    Presence {
        user: UserPresence,
    },
    /// This device's call was placed (answer to `call`).
    CallDialing {
        call: CallInfo,
    },
    /// A call rings on this device.
    CallInvite {
        call: CallInfo,
    },
    /// This device is now in the call.
    CallBegin {
        call_id: String,
        room: RoomId,
        /// How this device takes part (anchor unless it joined as audience).
        #[serde(default, skip_serializing_if = "Role::is_anchor")]
        role: Role,
        /// Who else is in the call as this device enters it: one invited
        /// into a running group call learns who it talks to (those who
        /// enter later come as `entered`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joined: Vec<UserId>,
        /// Who placed the call: told to a device that joined it by room id,
        /// which never rang with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sponsor: Option<UserId>,
    },
    /// The call stopped ringing here, or ended before it connected.
    CallCanceled {
        call_id: String,
        room: RoomId,
        reason: CancelReason,
        /// The device of this user that answered or declined, with
        /// `answered_elsewhere` and `declined_elsewhere`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<DeviceInfo>,
    },
    /// This device left a connected call, or the call ended around it.
    CallEnd {
        call_id: String,
        room: RoomId,
        total_time: u64,
    },
    CallPeer {
        call_id: String,
        action: PeerAction,
        users: Vec<UserId>,
        /// With `entered`: how they take part.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    /// `user` of the call speaks (anchor) or listens (audience) now; to
    /// every participant, the one that switched included.
    RoleChanged {
        call_id: String,
        user: UserId,
        role: Role,
    },
    /// Who sends the media of a room: the `source` of each binary frame the
    /// device will receive, with its user. Sent whenever the room changes.
    MediaPeers {
        room: RoomId,
        peers: Vec<MediaPeer>,
    },
    /// A participant of a call put it on hold or took it back; to every
    /// device of every participant, the holder's included.
    CallHold {
        call_id: String,
        user: UserId,
        on_hold: bool,
    },
    /// `by` transferred the call to `to`: sent to the party that stays.
    CallTransferred {
        call_id: String,
        by: UserId,
        to: UserId,
    },
    /// A member of the device's call opened or closed its microphone.
    AudioAvailable {
        user: UserId,
        available: bool,
    },
    /// The acknowledgement of `send_message`, sent once the message is durable.
    MessageSent {
        msg_id: String,
        client_msg_id: String,
        server_time: u64,
        /// The message's seq in the sender's timeline (sync on), so the
        /// sending device counts it as seen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Timeline entries, live or (with `offline`) from a sync. They follow
    /// the entry numbered `after` in what this connection was sent: a device
    /// whose last applied seq is below `after` has missed something and
    /// syncs instead of applying them.
    Entries {
        entries: Vec<Entry>,
        offline: bool,
        after: u64,
    },
    /// The end of a sync's catch-up: the device has now been sent every
    /// entry of its timeline up to `upto` that it will ever get (older ones
    /// are past the compensation window), and live entries follow it. With
    /// `more`, it is the end of one page only: nothing live follows, and the
    /// device asks for the next page with `sync {after: upto}` (a catch-up
    /// comes at the pace the device reads it, never all at once).
    Synced {
        upto: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    /// Where this device stands in calls, sent after every login and resume
    /// (after anything held for it): the calls ringing on it, the call it
    /// is in, and the call it holds aside to take a waiting one. The device
    /// ends what it believed that is not here, and takes up what is.
    CallState {
        ringing: Vec<CallInfo>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<CurrentCall>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parked: Option<Box<CurrentCall>>,
    },
    Typing {
        from: UserId,
    },
    /// Answer to `history`, oldest first; `more` when older ones remain.
    History {
        peer: UserId,
        messages: Vec<ChatMessage>,
        more: bool,
    },
    /// Answer to `admin_send`: the message is stored.
    AdminSent {
        msg_id: String,
    },
    /// A request that failed; `request` names its `type`, and
    /// `client_msg_id` the message when it was a `send_message`.
    Error {
        error: WireError,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
}

impl ServerMsg {
    /// An error that answers no request of the peer's (a bad frame, a cap,
    /// a deadline).
    pub fn unprompted(error: crate::error::Error) -> ServerMsg {
        ServerMsg::Error {
            error: error.into(),
            request: None,
            client_msg_id: None,
        }
    }
}

/// The call a device is in, as `call_state` tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentCall {
    pub call: CallInfo,
    /// Someone answered: the call runs (otherwise this device is the caller
    /// and it still rings).
    pub connected: bool,
    /// The participants holding the call now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<UserId>,
    /// How this device takes part.
    #[serde(default, skip_serializing_if = "Role::is_anchor")]
    pub role: Role,
    /// Who else is in the call now (as `call_begin` has it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<UserId>,
    /// How long ago its user joined the call, by the relay's count: a
    /// device back in its call after a restart counts the call's time from
    /// then, not from its own return.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joined_ms_ago: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaPeer {
    pub source: MediaSource,
    pub user: UserId,
}

/// The relay's number for one connection's media within a room.
pub type MediaSource = u32;

/// The source number of a relay connection: its id, truncated (ids are
/// handed out in order, so two live connections share one only after four
/// billion connections in between).
pub fn media_source(conn: u64) -> MediaSource {
    conn as MediaSource
}

/// What a binary media frame carries: its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// One Opus packet of voice (the first byte of protocol version 1).
    Voice = 1,
    /// A telephone event (RFC 4733: a DTMF digit), 4 bytes.
    TelephoneEvent = 2,
    /// A receiver report: how the sender's voice reaches this device
    /// (media::feedback).
    ReceiverReport = 3,
    /// Voice with redundancy (RFC 2198's idea): this frame's Opus packet
    /// and copies of the one or two before it (media::redundancy).
    VoiceRed = 4,
}

impl MediaKind {
    fn parse(byte: u8) -> Option<MediaKind> {
        match byte {
            1 => Some(MediaKind::Voice),
            2 => Some(MediaKind::TelephoneEvent),
            3 => Some(MediaKind::ReceiverReport),
            4 => Some(MediaKind::VoiceRed),
            _ => None,
        }
    }

    /// The payload sizes a frame of this kind may have.
    fn payload_bytes(self) -> std::ops::RangeInclusive<usize> {
        match self {
            MediaKind::Voice => 1..=MAX_MEDIA_PAYLOAD_BYTES,
            MediaKind::TelephoneEvent => 4..=4,
            MediaKind::ReceiverReport => 1..=MAX_MEDIA_PAYLOAD_BYTES,
            MediaKind::VoiceRed => 4..=3 * (MAX_MEDIA_PAYLOAD_BYTES + 2) + 1,
        }
    }
}

/// Bytes of a media frame's header: kind, room, source, seq, timestamp.
pub const MEDIA_HEADER_BYTES: usize = 15;

/// Largest Opus packet a media frame carries (20 ms at Opus's 510 kbps cap
/// is 1275 bytes).
pub const MAX_MEDIA_PAYLOAD_BYTES: usize = 1275;

/// The fixed header of a binary media frame, all integers big-endian:
/// `kind u8 | room u32 | source u32 | seq u16 | timestamp u32`.
///
/// A client sends `source` 0; the relay stamps the sender's source before it
/// forwards the frame, so a client cannot speak for another. `timestamp`
/// counts 48 kHz samples; `seq` counts each kind's frames on its own, so
/// that telephone events leave no gap in the voice's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaHeader {
    pub kind: MediaKind,
    pub room: RoomId,
    pub source: MediaSource,
    pub seq: u16,
    pub timestamp: u32,
}

impl MediaHeader {
    /// One frame: this header followed by `payload`.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(MEDIA_HEADER_BYTES + payload.len());
        frame.push(self.kind as u8);
        frame.extend_from_slice(&self.room.to_be_bytes());
        frame.extend_from_slice(&self.source.to_be_bytes());
        frame.extend_from_slice(&self.seq.to_be_bytes());
        frame.extend_from_slice(&self.timestamp.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// Splits a frame into its header and payload (Opus, or a telephone event).
    pub fn decode(frame: &[u8]) -> Result<(MediaHeader, &[u8]), Error> {
        let bad = |why: String| Error::new(ErrorCode::MalformedMedia, why);
        let Some((head, payload)) = frame.split_first_chunk::<MEDIA_HEADER_BYTES>() else {
            return Err(bad(format!(
                "a media frame is at least {MEDIA_HEADER_BYTES} bytes, this one {}",
                frame.len()
            )));
        };
        let Some(kind) = MediaKind::parse(head[0]) else {
            return Err(bad(format!(
                "media frame kind {} is not spoken here (1 voice, 2 telephone event, 3 receiver report, 4 voice with redundancy)",
                head[0]
            )));
        };
        let sizes = kind.payload_bytes();
        if !sizes.contains(&payload.len()) {
            return Err(bad(format!(
                "a {kind:?} payload is {} to {} bytes, this one {}",
                sizes.start(),
                sizes.end(),
                payload.len()
            )));
        }
        let header = MediaHeader {
            kind,
            room: u32::from_be_bytes([head[1], head[2], head[3], head[4]]),
            source: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
            seq: u16::from_be_bytes([head[9], head[10]]),
            timestamp: u32::from_be_bytes([head[11], head[12], head[13], head[14]]),
        };
        Ok((header, payload))
    }

    /// Writes `source` into an encoded frame (the relay's stamp).
    pub fn stamp_source(frame: &mut [u8], source: MediaSource) {
        frame[5..9].copy_from_slice(&source.to_be_bytes());
    }
}

#[derive(Serialize)]
struct Stamped<'a, T> {
    v: u16,
    #[serde(flatten)]
    msg: &'a T,
}

#[derive(Deserialize)]
struct Head {
    v: Option<u16>,
}

/// Serializes a message into the text of one frame.
pub fn encode<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(&Stamped {
        v: PROTOCOL_VERSION,
        msg,
    })
    .expect("protocol messages serialize")
}

/// Decodes the text of one frame, checking size and version first.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    if text.len() > MAX_CONTROL_FRAME_BYTES {
        return Err(Error::new(
            ErrorCode::FrameTooLarge,
            format!(
                "control frame of {} bytes is over the limit of {MAX_CONTROL_FRAME_BYTES}",
                text.len()
            ),
        ));
    }
    let head: Head = serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorCode::MalformedFrame,
            format!("frame is not a JSON object: {e}"),
        )
    })?;
    match head.v {
        Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(Error::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported; this peer speaks {PROTOCOL_VERSION}"
                ),
            ));
        }
        None => {
            return Err(Error::new(
                ErrorCode::MalformedFrame,
                "frame has no protocol version field `v`",
            ));
        }
    }
    serde_json::from_str(text)
        .map_err(|e| Error::new(ErrorCode::MalformedFrame, format!("malformed frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_named_by_its_type_tag() {
        let samples = [
            ClientMsg::ListUsers {
                subscribe: false,
                after: None,
            },
            ClientMsg::MultiDevice { enable: true },
            ClientMsg::CallWaiting { enable: true },
            ClientMsg::Accept {
                call_id: "c".into(),
                end_current: true,
            },
            ClientMsg::Call {
                invitees: vec!["bob".into()],
                group: true,
                timeout_secs: None,
                user_data: Some("ticket 42".into()),
            },
            ClientMsg::Hold {
                call_id: "c".into(),
                on_hold: true,
            },
            ClientMsg::Transfer {
                call_id: "c".into(),
                to: "carol".into(),
            },
            ClientMsg::Join {
                room: 7,
                role: Role::Audience,
            },
            ClientMsg::SwitchRole {
                call_id: "c".into(),
                role: Role::Anchor,
            },
            ClientMsg::RecallMessage { msg_id: "m".into() },
        ];
        for msg in samples {
            let json = serde_json::to_value(&msg).unwrap();
            assert_eq!(json["type"], msg.kind());
        }
    }

    /// The length a text is checked by is the length serde_json writes.
    #[test]
    fn a_texts_json_length_is_what_the_frame_carries() {
        for text in [
            "plain",
            "quote \" and back\\slash",
            "\n\r\t\u{8}\u{c}\u{1}\u{1b}[31mred\u{7f}",
            "中文 and emoji 👍🏽",
        ] {
            let written = serde_json::to_string(text).unwrap();
            assert_eq!(json_len(text), written.len() - 2, "{text:?}");
        }
    }

    /// Text within 65,536 bytes that would not fit a frame once escaped
    /// (pasted terminal output full of control characters) is refused
    /// with the reason, not sent to be refused by the relay.
    #[test]
    fn text_that_escapes_past_a_frame_is_too_long() {
        let err = check_message_text(&"\u{1}".repeat(30_000)).unwrap_err();
        assert_eq!(err.code, ErrorCode::MessageTooLong);
        assert!(err.message.contains("180000 as JSON"), "{}", err.message);
        assert!(check_message_text(&"\"".repeat(60_000)).is_ok());
        assert!(check_message_text(&"x".repeat(MAX_MESSAGE_TEXT_BYTES)).is_ok());
        assert!(check_message_text(&"é".repeat(MAX_MESSAGE_TEXT_BYTES / 2)).is_ok());
    }

    #[test]
    fn round_trip_carries_the_version() {
        let msg = ClientMsg::Login {
            app: 1,
            user: "alice".into(),
            device: "d1".into(),
            platform: "terminal".into(),
            user_sig: "t".into(),
        };
        let text = encode(&msg);
        assert!(text.starts_with(r#"{"v":1,"type":"login""#), "{text}");
        assert_eq!(decode::<ClientMsg>(&text).unwrap(), msg);
    }

    #[test]
    fn bad_frames_get_their_codes() {
        let code = |t: &str| decode::<ClientMsg>(t).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::MalformedFrame);
        assert_eq!(code("[1,2]"), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"type":"logout"}"#), ErrorCode::MalformedFrame);
        assert_eq!(
            code(r#"{"v":2,"type":"logout"}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(code(r#"{"v":1,"type":"dance"}"#), ErrorCode::MalformedFrame);
        let huge = format!(
            r#"{{"v":1,"type":"logout","pad":"{}"}}"#,
            "x".repeat(MAX_CONTROL_FRAME_BYTES)
        );
        assert_eq!(code(&huge), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn media_frames_round_trip_and_refuse_garbage() {
        let header = MediaHeader {
            kind: MediaKind::Voice,
            room: 0xDEAD_BEEF,
            source: 7,
            seq: 65_535,
            timestamp: 48_000,
        };
        let mut frame = header.encode(b"opus");
        assert_eq!(frame.len(), MEDIA_HEADER_BYTES + 4);
        assert_eq!(MediaHeader::decode(&frame).unwrap(), (header, &b"opus"[..]));
        MediaHeader::stamp_source(&mut frame, 9);
        assert_eq!(MediaHeader::decode(&frame).unwrap().0.source, 9);

        let code = |f: &[u8]| MediaHeader::decode(f).unwrap_err().code;
        assert_eq!(code(&frame[..10]), ErrorCode::MalformedMedia);
        assert_eq!(code(&header.encode(b"")), ErrorCode::MalformedMedia);
        assert_eq!(code(&header.encode(&[0; 1276])), ErrorCode::MalformedMedia);
        frame[0] = 5;
        let err = MediaHeader::decode(&frame).unwrap_err();
        assert!(err.message.contains("kind 5"), "{}", err.message);
        // A receiver report: a payload of its own, at least its count.
        frame[0] = 3;
        assert_eq!(
            MediaHeader::decode(&frame).unwrap().0.kind,
            MediaKind::ReceiverReport
        );
        // A telephone event is exactly 4 bytes.
        let event = MediaHeader {
            kind: MediaKind::TelephoneEvent,
            ..header
        };
        assert_eq!(
            MediaHeader::decode(&event.encode(b"dtmf")).unwrap().0,
            event
        );
        assert_eq!(code(&event.encode(b"dtmf!")), ErrorCode::MalformedMedia);
    }
}
