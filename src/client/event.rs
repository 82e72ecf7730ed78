//! Engine events: what a device reports to its front end (TUI or headless).
//!
//! Names and field names are the public interface of headless mode (SPEC
//! section 6, docs/headless.md); serde attributes here are that contract.

use serde::Serialize;

use crate::error::{Error, ErrorCode};
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event")]
pub enum Event {
    #[serde(rename = "SDK_READY")]
    SdkReady,
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
    },
}

impl Event {
    /// The `event` name, as `wait` matches it.
    pub fn name(&self) -> &'static str {
        match self {
            Event::SdkReady => "SDK_READY",
            Event::LoginStatusChanged { .. } => "LOGIN_STATUS_CHANGED",
            Event::KickedOut { .. } => "KICKED_OUT",
            Event::UserSigExpired => "USER_SIG_EXPIRED",
            Event::ConnectionChanged { .. } => "CONNECTION_CHANGED",
            Event::Users { .. } => "USERS",
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
    "SDK_READY",
    "LOGIN_STATUS_CHANGED",
    "KICKED_OUT",
    "USER_SIG_EXPIRED",
    "CONNECTION_CHANGED",
    "USERS",
    "USER_STATUS_CHANGED",
    "ERROR",
];
