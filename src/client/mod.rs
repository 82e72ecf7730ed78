//! A device: the sans-IO engine, its connection task, and what both front
//! ends (TUI and headless) need to start one.

pub mod connection;
pub mod engine;
pub mod event;
pub mod history;
pub mod launcher;

use std::path::PathBuf;

use crate::ids::{AppId, DeviceId, Platform, UserId};
use crate::profile::{Profile, ProfileError};
use crate::usersig::{self, Ticket};
use engine::{Command, EngineConfig};

/// Everything a front end needs to run a device, after config and flags
/// are merged.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub relay_url: String,
    /// Start the bundled relay if nothing answers at `relay_url`.
    pub autostart_relay: bool,
    pub app: AppId,
    pub platform: Platform,
    /// Secret for minting a UserSig when none is given.
    pub secret: String,
    pub usersig_lifetime_secs: u64,
    /// Multi-device ability from the start.
    pub multi_device: bool,
    pub data_dir: PathBuf,
}

impl ClientSettings {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            multi_device: self.multi_device,
            ..EngineConfig::new(self.app, self.platform.clone())
        }
    }

    /// Opens the user's profile (which picks the device id) and builds the
    /// login command, minting a ticket when `user_sig` is `None`.
    pub fn login(
        &self,
        user: UserId,
        device: Option<&DeviceId>,
        user_sig: Option<String>,
        now_secs: u64,
    ) -> Result<(Command, Profile), ProfileError> {
        let profile = Profile::open(&self.data_dir, self.app, &user, device)?;
        let user_sig = user_sig.unwrap_or_else(|| {
            usersig::mint(
                &self.secret,
                &Ticket {
                    app: self.app,
                    user: user.clone(),
                    issued_at: now_secs,
                    lifetime: self.usersig_lifetime_secs,
                },
            )
        });
        let command = Command::Login {
            user,
            device: profile.device.clone(),
            user_sig,
        };
        Ok((command, profile))
    }
}
