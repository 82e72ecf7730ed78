//! What the relay core is told to enforce: its apps, timers and limits.
//!
//! The core's own types: `config` reads them from `[relay]` (the apps and
//! rate limits are deserialized as they are) and builds [`Settings`], so
//! the core never sees the TOML file's shape.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::Millis;
use crate::ids::{AppId, DEV_APP_ID, Platform};
use crate::protocol::MAX_MESSAGE_TEXT_BYTES;
use crate::relay::rate::Rate;
use crate::usersig::DEV_SECRET;

/// The relay's settings, as the core needs them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub apps: HashMap<AppId, AppConfig>,
    pub session_grace_ms: Millis,
    pub heartbeat_timeout_ms: Millis,
    pub login_timeout_ms: Millis,
    pub rate_limits: RateLimits,
    /// Encoded entries sent per page of a catch-up (a fraction of what a
    /// connection may have queued, so that a page never overflows it).
    pub sync_page_bytes: usize,
    pub max_call_participants: usize,
    /// Audience members of one call (SPEC 8.3), beside its participants.
    pub max_call_audience: usize,
    pub admin_token: Option<String>,
}

/// One app (SDKAppID) hosted by the relay.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    pub id: AppId,
    pub secret: String,
    /// Devices of one user that may be online at once on one platform.
    pub max_devices_per_platform: u32,
    /// Per-platform exceptions to `max_devices_per_platform`.
    pub platform_limits: BTreeMap<Platform, u32>,
    /// Devices of one user online at once, whatever platforms they name
    /// (platform labels are free text: without this, inventing labels
    /// would give one user any number of devices).
    pub max_devices_per_user: u32,
    /// The longest a ticket may live, whatever lifetime it was minted with:
    /// a ticket outlives this only to be refused as expired.
    pub max_ticket_lifetime_secs: u64,
    /// Mirror messages to the sender's other devices and deliver to every
    /// device of the recipient; off, each message reaches one device.
    pub multi_device_sync: bool,
    /// How far back a reconnecting or new device catches up, 1 to 7 days.
    pub compensation_window_days: u32,
    /// How long after sending a message its sender may recall it.
    pub recall_window_secs: u64,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            id: DEV_APP_ID,
            secret: DEV_SECRET.into(),
            max_devices_per_platform: 3,
            platform_limits: BTreeMap::from([(Platform::parse("web").expect("valid"), 10)]),
            max_devices_per_user: 20,
            max_ticket_lifetime_secs: 30 * 24 * 3600,
            multi_device_sync: true,
            compensation_window_days: 1,
            recall_window_secs: 120,
        }
    }
}

impl AppConfig {
    pub fn device_limit(&self, platform: &Platform) -> u32 {
        self.platform_limits
            .get(platform)
            .copied()
            .unwrap_or(self.max_devices_per_platform)
    }
}

/// Token buckets per connection or device.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Every control frame of a connection: beyond it the relay reads that
    /// connection more slowly (nothing is refused, the order is kept).
    pub frames: Rate,
    /// `typing` notices; beyond it, RATE_LIMITED.
    pub typing: Rate,
    /// `markRead`; beyond it, RATE_LIMITED.
    pub read_marks: Rate,
    /// `call`, `groupCall`, `inviteUser`, `joinInGroupCall`; beyond it, RATE_LIMITED.
    pub calls: Rate,
    /// `login` and `resume` on one connection (a device logs in once a
    /// connection; an account switch again): beyond it, the login is
    /// refused with RATE_LIMITED. Each login is a ticket to check, a
    /// store write and a presence change to every subscriber.
    pub logins: Rate,
    /// Binary media frames (a call sends 50 a second); beyond it they are
    /// dropped, and the first drop is answered with RATE_LIMITED.
    pub media_frames: Rate,
    /// Bytes of message text one user may send in a day (all devices),
    /// refilled continuously; beyond it, RATE_LIMITED.
    pub message_bytes_per_day: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            frames: Rate::new(200.0, 1_000),
            typing: Rate::new(2.0, 5),
            read_marks: Rate::new(5.0, 20),
            calls: Rate::new(1.0, 10),
            logins: Rate::new(2.0, 10),
            media_frames: Rate::new(100.0, 200),
            message_bytes_per_day: 256 << 20,
        }
    }
}

impl RateLimits {
    pub fn check(&self) -> Result<(), String> {
        self.frames.check("frames")?;
        self.typing.check("typing")?;
        self.read_marks.check("read_marks")?;
        self.calls.check("calls")?;
        self.logins.check("logins")?;
        self.media_frames.check("media_frames")?;
        if (self.message_bytes_per_day as usize) < MAX_MESSAGE_TEXT_BYTES {
            return Err(format!(
                "relay.rate_limits.message_bytes_per_day must allow one message of the longest text ({} bytes)",
                MAX_MESSAGE_TEXT_BYTES
            ));
        }
        Ok(())
    }
}
