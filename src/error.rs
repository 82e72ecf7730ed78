//! Stable error codes shared by the relay, the client and the headless events.
//!
//! One table, one meaning per code, whoever detects the condition. The numbers
//! the vendor documents (6206, 70001, ...) are kept; the rest live in ranges
//! of their own. `docs/errors.md` lists the same table, and a test keeps the
//! two in step.

use std::fmt;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $name:literal, $summary:literal;)+) => {
        /// A stable, documented error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The number carried on the wire and in `ERROR` events.
            pub const fn code(self) -> u32 {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The constant-style name shown beside the number.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)+
                }
            }

            /// One line on what the code means.
            pub const fn summary(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $summary,)+
                }
            }

            pub fn from_code(code: u32) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    UnknownCommand = 6001, "UNKNOWN_COMMAND", "headless: the `cmd` is not one of the documented commands";
    InvalidJson = 6002, "INVALID_JSON", "headless: the line is not a JSON object with a string `cmd`";
    WaitTimeout = 6012, "WAIT_TIMEOUT", "headless: the awaited event did not arrive within `timeout_ms`";
    NotLoggedIn = 6014, "NOT_LOGGED_IN", "the request needs a completed login (wait for SDK_READY)";
    InvalidParameters = 6017, "INVALID_PARAMETERS", "a command argument is missing or has the wrong type";
    CallSelf = 6101, "CALL_SELF", "a user cannot call itself";
    AlreadyInCall = 6102, "ALREADY_IN_CALL", "this user is already in a call; hang up first";
    NoSuchCall = 6103, "NO_SUCH_CALL", "no call matches (nothing rings here, or the callId or roomID is unknown)";
    CallFull = 6104, "CALL_FULL", "the call would exceed the relay's participant limit (relay.max_call_participants)";
    NotAGroupCall = 6105, "NOT_A_GROUP_CALL", "only a group call can be joined by room id";
    UserDataTooLong = 6106, "USER_DATA_TOO_LONG", "a call's userData is limited to 1024 bytes";
    CallNotConnected = 6107, "CALL_NOT_CONNECTED", "hold, unhold, transferCall, sendDTMF and switchRole need a connected call; this one still rings (or, for sendDTMF, this device holds it)";
    TransferGroupCall = 6108, "TRANSFER_GROUP_CALL", "only a one-to-one call can be transferred, not a group call";
    InvalidTransferTarget = 6109, "INVALID_TRANSFER_TARGET", "a call is transferred to a third user, not to oneself or the other party";
    InvalidDtmf = 6110, "INVALID_DTMF", "sendDTMF takes 1 to 32 digits of 0-9, *, #, A-D";
    AudienceSendsNothing = 6111, "AUDIENCE_SENDS_NOTHING", "an audience member only listens: switchRole to anchor to send DTMF";
    RelayUnreachable = 6200, "RELAY_UNREACHABLE", "the relay did not answer; the client keeps retrying with backoff";
    RelayCertificateMismatch = 6201, "RELAY_CERTIFICATE_MISMATCH", "the wss:// relay presented a certificate other than the one this device pinned or trusted on first use; the device does not connect (the message names both fingerprints)";
    PlaintextRelay = 6202, "PLAINTEXT_RELAY", "warning: the link to the relay is ws:// and leaves this machine, so tickets, messages and voice can be read on the way; use wss://";
    LocalStoreFailed = 6300, "LOCAL_STORE_FAILED", "the device's local store (in its profile directory) cannot be read or written";
    UnknownUser = 6401, "UNKNOWN_USER", "the recipient has never logged in to this app";
    EmptyMessage = 6402, "EMPTY_MESSAGE", "a message needs some text";
    MessageTooLong = 6403, "MESSAGE_TOO_LONG", "message text is limited to 65536 bytes, and 122880 as JSON";
    NoSuchMessage = 6404, "NO_SUCH_MESSAGE", "no such message can be recalled (unknown, older than the recall window, or recalled already)";
    NotYourMessage = 6405, "NOT_YOUR_MESSAGE", "only the sender of a message can recall it";
    RecallWindowPassed = 6406, "RECALL_WINDOW_PASSED", "the recall window (relay setting, 120 s by default) is over";
    ClientMsgIdReused = 6407, "CLIENT_MSG_ID_REUSED", "the clientMsgID already names another message (an id stays used for 24 h)";
    AdminDenied = 6410, "ADMIN_DENIED", "the admin API is off (no relay.admin_token) or the token is wrong";
    InvalidAudioSpec = 6500, "INVALID_AUDIO_SPEC", "an --audio-in/--audio-out value is not default, null, wav:PATH, tone:HZ, echo or a device name";
    AudioDeviceFailed = 6501, "AUDIO_DEVICE_FAILED", "the audio device cannot be opened or stopped working; the call goes on with null audio";
    AudioDeviceGone = 6502, "AUDIO_DEVICE_GONE", "a sound device in use disappeared (unplugged); this device goes on with the default device, or null audio (the message names both)";
    UserSigExpired = 6206, "USER_SIG_EXPIRED", "client: the UserSig has expired; log in again with a fresh ticket";
    UserSigExpiredRelay = 70001, "USER_SIG_EXPIRED_RELAY", "relay: the UserSig has expired (the client reports 6206)";
    UserSigInvalid = 70003, "USER_SIG_INVALID", "the UserSig cannot be decoded (not a termphone ticket), or was issued more than 10 minutes ahead of the relay's clock";
    UserSigForged = 70009, "USER_SIG_FORGED", "the UserSig signature does not match the app's secret";
    UserSigWrongUser = 70013, "USER_SIG_WRONG_USER", "the UserSig was issued to another UserID";
    UserSigWrongApp = 70014, "USER_SIG_WRONG_APP", "the UserSig was issued for another SDKAppID";
    UnknownApp = 70020, "UNKNOWN_APP", "the relay hosts no app with this SDKAppID";
    InvalidUserId = 70400, "INVALID_USER_ID", "UserID must be 1 to 32 bytes of A-Z a-z 0-9 _ -";
    InvalidDeviceId = 70401, "INVALID_DEVICE_ID", "device id must be 1 to 64 bytes of A-Z a-z 0-9 _ - .";
    InvalidPlatform = 70402, "INVALID_PLATFORM", "platform must be 1 to 16 bytes of a-z 0-9";
    MalformedFrame = 90001, "MALFORMED_FRAME", "the relay could not decode a frame as a protocol message";
    FrameTooLarge = 90002, "FRAME_TOO_LARGE", "a control frame is larger than the protocol allows";
    UnsupportedVersion = 90003, "UNSUPPORTED_VERSION", "the frame's protocol version `v` is not spoken by this peer";
    TooManyConnections = 90005, "TOO_MANY_CONNECTIONS", "the relay is at its connection cap; try again later";
    MalformedMedia = 90007, "MALFORMED_MEDIA", "a binary media frame has a bad header or payload size (the relay drops it)";
    SessionExpired = 90006, "SESSION_EXPIRED", "the session to resume is gone (grace period over); a fresh login follows";
    RelayStoreFailed = 90008, "RELAY_STORE_FAILED", "the relay could not write or read its database (full disk?); nothing was kept, try again";
    LoginTimeout = 90009, "LOGIN_TIMEOUT", "the connection did not log in within relay.login_timeout_secs of connecting; the relay closed it";
    RateLimited = 90010, "RATE_LIMITED", "this device does that too often (relay.rate_limits); slow down and try again";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// An error with its stable code and a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
}

/// Input quoted in an error message: whole when short, else its start and
/// its length, so that a 5,000-byte mistake does not come back whole.
pub fn quoted(input: &str) -> String {
    const SHOWN: usize = 40;
    match input.char_indices().nth(SHOWN) {
        None => format!("{input:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &input[..end], input.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = HashSet::new();
        let mut names = HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(codes.insert(c.code()), "duplicate code {}", c.code());
            assert!(names.insert(c.name()), "duplicate name {}", c.name());
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::from_code(1), None);
    }

    #[test]
    fn long_input_is_quoted_by_its_start_and_length() {
        assert_eq!(quoted("bob bob"), "\"bob bob\"");
        let long = "長".repeat(1000);
        assert_eq!(
            quoted(&long),
            format!("{:?}… (3000 bytes)", "長".repeat(40))
        );
    }

    #[test]
    fn vendor_numbers_are_kept() {
        assert_eq!(ErrorCode::UserSigExpired.code(), 6206);
        assert_eq!(ErrorCode::UserSigExpiredRelay.code(), 70001);
    }

    #[test]
    fn docs_list_every_code() {
        let doc = include_str!("../docs/errors.md");
        for &c in ErrorCode::ALL {
            let row = format!("| {} | `{}` | {} |", c.code(), c.name(), c.summary());
            assert!(doc.contains(&row), "docs/errors.md lacks the row for {c}");
        }
    }
}
