//! Validated identifiers: UserID, device id, platform label.
//!
//! Each is checked once, where it enters (flag, config, command, frame), so
//! the rest of the code can hold a value that is known to be well formed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, ErrorCode, quoted};

/// SDKAppID: one tenant of a relay.
pub type AppId = u32;

/// The development app every relay hosts unless its config says otherwise.
pub const DEV_APP_ID: AppId = 1_400_000_000;

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $max:literal, $allowed:expr, $code:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const RULE: &'static str = $rule;

            pub fn parse(s: &str) -> Result<Self, Error> {
                let ok = !s.is_empty() && s.len() <= $max && s.bytes().all($allowed);
                if ok {
                    Ok($name(s.to_owned()))
                } else {
                    Err(Error::new($code, format!("{} is not valid: {}", quoted(s), $rule)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $name::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    };
}

validated_id!(
    /// A user of one app: 1 to 32 bytes of `A-Z a-z 0-9 _ -`.
    UserId,
    32,
    |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
    ErrorCode::InvalidUserId,
    "a UserID is 1 to 32 bytes of A-Z a-z 0-9 _ -"
);

validated_id!(
    /// One running client of a user.
    DeviceId,
    64,
    |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.',
    ErrorCode::InvalidDeviceId,
    "a device id is 1 to 64 bytes of A-Z a-z 0-9 _ - ."
);

validated_id!(
    /// The platform a device reports (`terminal`, `android`, `web`, ...);
    /// the relay's per-platform device limits are keyed by it.
    Platform,
    16,
    |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit(),
    ErrorCode::InvalidPlatform,
    "a platform is 1 to 16 bytes of a-z 0-9, e.g. terminal, android, ios, web, desktop"
);

impl Platform {
    pub fn terminal() -> Self {
        Platform("terminal".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rule() {
        for ok in ["a", "alice", "A_b-9", &"x".repeat(32)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "al ice", "alice!", "é", &"x".repeat(33), "a.b"] {
            let err = UserId::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidUserId);
            assert!(err.message.contains("1 to 32 bytes"), "{}", err.message);
        }
    }

    #[test]
    fn device_and_platform_rules() {
        assert!(DeviceId::parse("term-01.a").is_ok());
        assert_eq!(
            DeviceId::parse("a b").unwrap_err().code,
            ErrorCode::InvalidDeviceId
        );
        assert!(Platform::parse("android").is_ok());
        assert_eq!(
            Platform::parse("Android").unwrap_err().code,
            ErrorCode::InvalidPlatform
        );
    }
}
