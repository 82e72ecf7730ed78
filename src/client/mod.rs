//! A device: the sans-IO engine, its connection task, and what both front
//! ends (TUI and headless) need to start one.

pub mod connection;
pub mod engine;
pub mod event;
pub mod launcher;
pub mod local_store;
mod media_link;
pub mod queue;
pub mod records;

use std::path::PathBuf;

use crate::ids::{AppId, DeviceId, Platform, UserId};
use crate::media::pipeline::MediaSettings;
use crate::profile::{Profile, ProfileError};
use crate::usersig::{self, Ticket};
use engine::{Command, EngineConfig};
use local_store::{LocalStore, Recorder};

/// Everything a front end needs to run a device, after config and flags
/// are merged.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub relay_url: String,
    /// The certificate a `wss://` relay must present; unset, one no public
    /// root vouches for is trusted on first use (remembered in
    /// `known_relays` in `data_dir`).
    pub relay_fingerprint: Option<crate::tls::Fingerprint>,
    /// Start the bundled relay if nothing answers at `relay_url` (a
    /// loopback address only).
    pub autostart_relay: bool,
    pub app: AppId,
    pub platform: Platform,
    /// Secret for minting a UserSig when none is given.
    pub secret: String,
    pub usersig_lifetime_secs: u64,
    /// Multi-device ability from the start.
    pub multi_device: bool,
    /// Call waiting from the start.
    pub call_waiting: bool,
    /// Auto-answer from the start: accept ringing calls after this many ms.
    pub auto_answer_ms: Option<u64>,
    pub data_dir: PathBuf,
    /// Where a logged-in user's calls and chat are kept on this device.
    pub store: StoreChoice,
    /// Audio of this device's calls.
    pub media: MediaSettings,
    /// Calls with no media at all: no media thread, nothing encoded, sent
    /// or played (`termphone load` for a flow that uses none).
    pub without_media: bool,
}

/// Where a device keeps its local store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreChoice {
    /// In the user's profile in `data_dir` (which also picks and keeps the
    /// device id): history that outlives the process.
    #[default]
    Profile,
    /// In memory, gone with the device, nothing written to `data_dir`:
    /// `termphone load`'s devices, thousands in one process, need no
    /// history of their own across runs.
    Memory,
}

impl ClientSettings {
    /// The relay to connect to, with the bundled one to start when needed.
    pub fn relay_target(&self) -> connection::RelayTarget {
        // A relay of one's own, without TLS, on this machine: `localhost`
        // is 127.0.0.1 here, as the relay started for it listens.
        let autostart = self
            .autostart_relay
            .then(|| crate::tls::RelayUrl::parse(&self.relay_url).ok())
            .flatten()
            .filter(|url| !url.tls)
            .and_then(|url| {
                let ip = match url.host.as_str() {
                    "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
                    host => host.parse().ok()?,
                };
                ip.is_loopback().then(|| {
                    (
                        std::net::SocketAddr::new(ip, url.port),
                        self.data_dir.clone(),
                    )
                })
            });
        let known = crate::tls::KnownRelays::in_file(self.data_dir.join(crate::tls::KNOWN_RELAYS));
        connection::RelayTarget {
            url: self.relay_url.clone(),
            autostart,
            trust: crate::tls::Trust::new(self.relay_fingerprint, known),
        }
    }

    /// Starts this device's connection task (it connects once logged in).
    pub fn connect(&self) -> connection::ClientHandle {
        connection::spawn(
            self.relay_target(),
            engine::ClientEngine::new(self.engine_config()),
            (!self.without_media).then(|| self.media.clone()),
        )
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            multi_device: self.multi_device,
            call_waiting: self.call_waiting,
            auto_answer_ms: self.auto_answer_ms,
            ..EngineConfig::new(self.app, self.platform.clone())
        }
    }

    /// A fresh ticket for `user` from the configured secret.
    pub fn mint(&self, user: &UserId, now_secs: u64) -> String {
        usersig::mint(
            &self.secret,
            &Ticket {
                app: self.app,
                user: user.clone(),
                issued_at: now_secs,
                lifetime: self.usersig_lifetime_secs,
            },
        )
    }

    /// Logs `user` in on a device started with `connect`: opens the user's
    /// profile (which picks the device id) and its local store, or a store
    /// in memory, and sends the login, with a ticket minted now when
    /// `user_sig` is `None`.
    pub fn login(
        &self,
        user: UserId,
        device: Option<&DeviceId>,
        user_sig: Option<String>,
        now_secs: u64,
        commands: &queue::Sender<Command>,
    ) -> Result<DeviceLogin, OpenError> {
        let (device, profile, store, place) = match self.store {
            StoreChoice::Profile => {
                let profile = Profile::open(&self.data_dir, self.app, &user, device)?;
                let place = profile.dir.display().to_string();
                let store = LocalStore::open(&profile.dir, &user);
                (profile.device.clone(), Some(profile), store, place)
            }
            StoreChoice::Memory => {
                let device = device
                    .cloned()
                    .unwrap_or_else(crate::profile::new_device_id);
                let store = Ok(LocalStore::in_memory(&user));
                (device, None, store, "memory".to_owned())
            }
        };
        let (store, sync_after) = store
            .and_then(|store| store.high_water().map(|hw| (store, hw)))
            .map_err(|e| OpenError::Store(place, e))?;
        let user_sig = user_sig.unwrap_or_else(|| self.mint(&user, now_secs));
        let command = Command::Login {
            user,
            device: device.clone(),
            user_sig,
            sync_after,
        };
        let _ = commands.send(command);
        Ok(DeviceLogin {
            device,
            profile,
            recorder: Recorder::new(store),
        })
    }
}

/// What a front end holds for a logged-in user on this device.
pub struct DeviceLogin {
    pub device: DeviceId,
    /// The profile this login holds (none for a store in memory): keep it
    /// for as long as the user is logged in.
    pub profile: Option<Profile>,
    /// Feed it every event: it keeps the device's calls and chat.
    pub recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("local store in {0}: {1}")]
    Store(String, rusqlite::Error),
}
