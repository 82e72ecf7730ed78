//! Configuration: one TOML file, every key documented in `config.example.toml`.
//!
//! Unknown keys are an error that names the key (a typo must not silently
//! fall back to a default). Command-line flags override the file.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ids::{AppId, DEV_APP_ID, DeviceId, Platform, UserId};
use crate::media::codec::CodecSettings;
use crate::media::control::VoiceProcessing;
use crate::media::spec::AudioSpec;
use crate::protocol::MAX_TRANSPORT_MESSAGE_BYTES;
use crate::relay::core::Settings;
pub use crate::relay::core::{AppConfig, RateLimits};
use crate::relay::media::Impairment;
use crate::tls::{Fingerprint, RelayUrl};
use crate::usersig::{DEFAULT_LIFETIME_SECS, DEV_SECRET, MIN_SECRET_BYTES};

/// The loopback address a client tries first, and where it starts the
/// bundled relay when nothing answers there.
pub const DEFAULT_RELAY_ADDR: &str = "127.0.0.1:7787";

/// The shortest `relay.heartbeat_timeout_secs`: clients send a heartbeat
/// every 10 s, so a shorter one drops an idle device between two.
const MIN_HEARTBEAT_TIMEOUT_SECS: u64 = 15;

/// The longest of the relay's timeouts: beyond it a dead link holds its
/// connection for no purpose (and the clock's sums would overflow).
const MAX_TIMEOUT_SECS: u64 = 3_600;

/// The longest `relay.session_grace_secs`: a day.
const MAX_SESSION_GRACE_SECS: u64 = 86_400;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub client: ClientConfig,
    pub relay: RelayConfig,
    pub tui: TuiConfig,
    pub media: MediaConfig,
    pub audio: AudioConfig,
}

/// Voice processing of a sound card's capture (`--no-voice-processing`
/// turns every stage off); files, tones and `echo` are never processed.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub auto_gain: bool,
}

impl Default for AudioConfig {
    fn default() -> Self {
        let on = VoiceProcessing::ON;
        AudioConfig {
            echo_cancellation: on.echo_cancellation,
            noise_suppression: on.noise_suppression,
            auto_gain: on.auto_gain,
        }
    }
}

impl AudioConfig {
    pub fn voice(&self) -> VoiceProcessing {
        VoiceProcessing {
            echo_cancellation: self.echo_cancellation,
            noise_suppression: self.noise_suppression,
            auto_gain: self.auto_gain,
        }
    }
}

/// Audio of a device's calls (flags `--audio-in`/`--audio-out` override).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Unset: the TUI uses the sound card, headless mode `null`.
    pub input: Option<AudioSpec>,
    pub output: Option<AudioSpec>,
    pub bitrate_bps: i32,
    pub complexity: i32,
    pub expected_loss_percent: i32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let codec = CodecSettings::default();
        MediaConfig {
            input: None,
            output: None,
            bitrate_bps: codec.bitrate_bps,
            complexity: codec.complexity,
            expected_loss_percent: codec.expected_loss_percent,
        }
    }
}

impl MediaConfig {
    pub fn codec(&self) -> CodecSettings {
        CodecSettings {
            bitrate_bps: self.bitrate_bps,
            complexity: self.complexity,
            expected_loss_percent: self.expected_loss_percent,
        }
    }
}

/// Settings of the terminal UI.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuiConfig {
    /// Ring the terminal bell on an incoming call.
    pub bell: bool,
    /// Play the ringtone on the output device while a call rings (when
    /// `media.output` is a sound card).
    pub ringtone: bool,
    /// Every TUI of a user rings (multi-device ability on): a person who
    /// opens two terminals as two devices expects both to ring. Headless
    /// mode keeps the contract's default, off.
    pub multi_device: bool,
    /// Scroll the conversation with the mouse wheel. Mouse capture keeps
    /// the terminal from selecting text by dragging (Shift-drag still does).
    pub mouse: bool,
    /// The copy key (`y`) puts the selected message on the terminal's
    /// clipboard with OSC 52 (off: some terminals let any program read or
    /// write the clipboard that way, and some users do not want that).
    pub osc52_copy: bool,
    /// Key overrides: action name = key (see docs/configuration.md).
    pub keys: BTreeMap<String, String>,
}

impl Default for TuiConfig {
    fn default() -> Self {
        TuiConfig {
            bell: true,
            ringtone: true,
            multi_device: true,
            mouse: true,
            osc52_copy: false,
            keys: BTreeMap::new(),
        }
    }
}

/// Settings of a device (TUI and headless).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// `ws://HOST:PORT` or `wss://HOST:PORT` of the relay. Unset means the
    /// default loopback address, where the bundled relay is started when
    /// nothing answers.
    pub relay_url: Option<String>,
    /// SHA-256 of the certificate a `wss://` relay must present (like
    /// `--relay-fingerprint`); unset, a certificate no public root vouches
    /// for is trusted on first use and remembered.
    pub relay_fingerprint: Option<Fingerprint>,
    pub app: AppId,
    /// Secret used to mint a UserSig when none is given.
    pub secret: String,
    pub user: Option<UserId>,
    pub device: Option<DeviceId>,
    pub platform: Platform,
    /// Ring on this device too when the user has several online (like --multi-device).
    pub multi_device: bool,
    /// Take a new call as a waiting one while in a call (like --call-waiting).
    pub call_waiting: bool,
    /// Accept every call that rings here after this many ms (like
    /// --auto-answer=MS); unset, calls ring until answered.
    pub auto_answer_ms: Option<u64>,
    /// Start the bundled relay when nothing answers: unset, only on the
    /// default loopback address; `true`, also on a loopback `relay_url`;
    /// `false`, never.
    pub autostart_relay: Option<bool>,
    /// Lifetime of the tickets the client mints.
    pub usersig_lifetime_secs: u64,
}

impl ClientConfig {
    /// The pinned certificate for the relay at `relay` (a `--relay` flag,
    /// or none): `relay_fingerprint` is `relay_url`'s, so a relay named on
    /// the command line that is another one is not held to it.
    pub fn pin_for(&self, relay: Option<&str>) -> Option<crate::tls::Fingerprint> {
        let same = relay.is_none_or(|r| Some(r) == self.relay_url.as_deref());
        self.relay_fingerprint.filter(|_| same)
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            relay_url: None,
            relay_fingerprint: None,
            app: DEV_APP_ID,
            secret: DEV_SECRET.into(),
            user: None,
            device: None,
            platform: Platform::terminal(),
            multi_device: false,
            call_waiting: false,
            auto_answer_ms: None,
            autostart_relay: None,
            usersig_lifetime_secs: DEFAULT_LIFETIME_SECS,
        }
    }
}

/// Settings of `termphone relay`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// SQLite database; defaults to `relay.sqlite3` in the data directory.
    pub db: Option<PathBuf>,
    pub max_connections: usize,
    /// Connections that have not logged in yet, in total and from one
    /// address: a flood of idle sockets must not lock real devices out.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_address: usize,
    /// A connection that has not logged in this long after its handshake
    /// (or not finished the handshake in this time) is closed.
    pub login_timeout_secs: u64,
    /// Frames waiting for one connection, in bytes: a device that does not
    /// read is disconnected past this, and catches up from the store later.
    pub max_queue_bytes: usize,
    /// A write to a connection that has not completed in this time closes it.
    pub write_timeout_secs: u64,
    /// How often one device may do each thing (docs/limits.md).
    pub rate_limits: RateLimits,
    /// Messages and timeline entries older than this are deleted (checked
    /// hourly); at least every app's compensation window.
    pub retention_days: u32,
    /// How long a dropped device's session is kept for it to resume.
    pub session_grace_secs: u64,
    /// A connection that sends nothing (not even a heartbeat) for this long is dropped.
    pub heartbeat_timeout_secs: u64,
    /// Participants of one call, caller included (the vendor's limit is 9).
    pub max_call_participants: usize,
    /// Audience members of one group call (`joinInGroupCall` with role
    /// audience), who do not count among its participants.
    pub max_call_audience: usize,
    /// Bearer token of the admin API (`termphone admin`); unset, it is off.
    pub admin_token: Option<String>,
    /// Simulated loss, delay and jitter on forwarded media (off by default).
    pub impairment: Impairment,
    /// Serve `wss://` (like `--tls`).
    pub tls: bool,
    /// PEM certificate (chain) and private key for TLS; unset, the relay
    /// makes a self-signed certificate beside its database and reuses it.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Listen off loopback without TLS (like `--insecure-plaintext`):
    /// everything on the link can be read on the way.
    pub insecure_plaintext: bool,
    pub apps: Vec<AppConfig>,
}

impl RelayConfig {
    /// `tls_cert` and `tls_key` come together.
    pub fn check_tls(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => Err(
                "relay.tls_cert and relay.tls_key go together: give both (PEM files), \
                 or neither for a self-signed certificate"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// A certificate is given only for TLS: checked once `--tls` has had
    /// its say, as the relay starts.
    pub fn check_tls_on(&self) -> Result<(), String> {
        if let Some(cert) = self.tls_cert.as_ref().filter(|_| !self.tls) {
            return Err(format!(
                "relay.tls_cert is set ({}) but TLS is off: set relay.tls = true (or pass --tls)",
                cert.display()
            ));
        }
        Ok(())
    }
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_listen_addr(&text).map_err(serde::de::Error::custom)
}

/// A listen address: an IP address or a host name (the first address it
/// resolves to), with a port.
pub fn resolve_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let resolved: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "{s:?}: {e}; give HOST:PORT, e.g. 127.0.0.1:7787, localhost:7787 or 0.0.0.0:7787"
            )
        })?
        .collect();
    // IPv4 first: `localhost` names ::1 first on some systems, and the
    // default relay URL is ws://127.0.0.1.
    (resolved.iter().find(|a| a.is_ipv4()))
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: DEFAULT_RELAY_ADDR.parse().expect("valid default address"),
            db: None,
            max_connections: 10_000,
            max_unauthenticated: 1_024,
            max_unauthenticated_per_address: 256,
            login_timeout_secs: 5,
            max_queue_bytes: 4 << 20,
            write_timeout_secs: 10,
            rate_limits: RateLimits::default(),
            retention_days: 90,
            session_grace_secs: 90,
            heartbeat_timeout_secs: 30,
            max_call_participants: 9,
            max_call_audience: 100,
            admin_token: None,
            impairment: Impairment::default(),
            tls: false,
            tls_cert: None,
            tls_key: None,
            insecure_plaintext: false,
            apps: vec![AppConfig::default()],
        }
    }
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

impl Config {
    /// Parses and validates the text of a config file.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, source_name, None)
    }

    /// Parses the text of a config file in `dir`, where its relative paths
    /// (`relay.db`, `relay.tls_cert`, `relay.tls_key`) are taken from: a
    /// file means the same wherever termphone is started.
    fn parse_in(text: &str, source_name: &str, dir: Option<&Path>) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: source_name.to_owned(),
            message,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = dir {
            let r = &mut config.relay;
            for path in [&mut r.db, &mut r.tls_cert, &mut r.tls_key]
                .into_iter()
                .flatten()
            {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        }
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Loads `path` if given (it must exist), else the default file if it
    /// exists, else the built-in defaults.
    pub fn load(path: Option<&Path>, default_path: &Path) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (default_path, false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_in(&text, &path.display().to_string(), path.parent()),
            // No file is the defaults, but a link to a file that is gone is
            // a mistake to say, not to paper over.
            Err(e)
                if !required
                    && e.kind() == std::io::ErrorKind::NotFound
                    && path.symlink_metadata().is_err() =>
            {
                Ok(Config::default())
            }
            Err(e) => Err(ConfigError {
                source_name: path.display().to_string(),
                message: format!("cannot read the config file: {e}"),
            }),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.client;
        if let Some(url) = &c.relay_url {
            check_relay_url(url).map_err(|e| format!("client.relay_url: {e}"))?;
        }
        if c.app == 0 {
            return Err("client.app must be a non-zero SDKAppID".into());
        }
        if c.usersig_lifetime_secs == 0 {
            return Err("client.usersig_lifetime_secs must be at least 1".into());
        }
        if c.secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "client.secret is shorter than {MIN_SECRET_BYTES} bytes: no relay accepts it"
            ));
        }
        let m = &self.media;
        if let Some(output) = &m.output {
            output
                .check_sink()
                .map_err(|e| format!("media.output: {}", e.message))?;
        }
        if !(6_000..=510_000).contains(&m.bitrate_bps) {
            return Err("media.bitrate_bps is 6000 to 510000 (Opus's range)".into());
        }
        if !(0..=10).contains(&m.complexity) {
            return Err("media.complexity is 0 to 10".into());
        }
        if !(0..=100).contains(&m.expected_loss_percent) {
            return Err("media.expected_loss_percent is 0 to 100".into());
        }
        let r = &self.relay;
        r.impairment.check()?;
        r.check_tls()?;
        r.rate_limits.check()?;
        if r.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("relay.admin_token must be at least 16 bytes".into());
        }
        if r.max_call_participants < 2 {
            return Err("relay.max_call_participants must be at least 2".into());
        }
        if r.max_connections == 0
            || r.max_unauthenticated == 0
            || r.max_unauthenticated_per_address == 0
        {
            return Err("relay.max_connections, relay.max_unauthenticated and \
                 relay.max_unauthenticated_per_address must be at least 1"
                .into());
        }
        if r.login_timeout_secs == 0 || r.write_timeout_secs == 0 {
            return Err(
                "relay.login_timeout_secs and relay.write_timeout_secs must be at least 1".into(),
            );
        }
        if r.max_queue_bytes < MAX_TRANSPORT_MESSAGE_BYTES {
            return Err(format!(
                "relay.max_queue_bytes must hold at least one frame ({MAX_TRANSPORT_MESSAGE_BYTES} bytes)"
            ));
        }
        if !(1..=MAX_SESSION_GRACE_SECS).contains(&r.session_grace_secs) {
            return Err(format!(
                "relay.session_grace_secs is {}; it is 1 to {MAX_SESSION_GRACE_SECS} (a day)",
                r.session_grace_secs
            ));
        }
        if !(MIN_HEARTBEAT_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&r.heartbeat_timeout_secs) {
            return Err(format!(
                "relay.heartbeat_timeout_secs is {}; it is {MIN_HEARTBEAT_TIMEOUT_SECS} to \
                 {MAX_TIMEOUT_SECS}: clients send a heartbeat every 10 s, and a shorter timeout \
                 drops an idle device between two",
                r.heartbeat_timeout_secs
            ));
        }
        for (key, secs) in [
            ("login_timeout_secs", r.login_timeout_secs),
            ("write_timeout_secs", r.write_timeout_secs),
        ] {
            if secs > MAX_TIMEOUT_SECS {
                return Err(format!(
                    "relay.{key} is {secs}; it is at most {MAX_TIMEOUT_SECS} (an hour)"
                ));
            }
        }
        if let Some(app) = (r.apps.iter()).find(|a| a.compensation_window_days > r.retention_days) {
            return Err(format!(
                "relay.retention_days ({}) is shorter than the compensation window of app {} ({} days): \
                 a device could not catch up with what was deleted",
                r.retention_days, app.id, app.compensation_window_days
            ));
        }
        if r.apps.is_empty() {
            return Err("relay.apps is empty: the relay must host at least one app".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for app in &r.apps {
            if app.id == 0 {
                return Err("relay.apps: id must be a non-zero SDKAppID".into());
            }
            if !seen.insert(app.id) {
                return Err(format!("relay.apps: app {} is listed twice", app.id));
            }
            if app.secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "relay.apps: the secret of app {} is shorter than {MIN_SECRET_BYTES} bytes",
                    app.id
                ));
            }
            // Left out, the secret is the public one: fine for the app
            // everybody's tickets are for, a surprise for an app of one's own.
            if app.id != DEV_APP_ID && app.secret == DEV_SECRET {
                return Err(format!(
                    "relay.apps: app {} has no secret of its own (the public development secret is \
                     only for app {DEV_APP_ID}); add secret = \"...\", at least {MIN_SECRET_BYTES} \
                     bytes, under its [[relay.apps]]",
                    app.id
                ));
            }
            if !(1..=7).contains(&app.compensation_window_days) {
                return Err(format!(
                    "relay.apps: the compensation window of app {} must be 1 to 7 days",
                    app.id
                ));
            }
            if app.max_devices_per_user == 0 || app.max_ticket_lifetime_secs == 0 {
                return Err(format!(
                    "relay.apps: max_devices_per_user and max_ticket_lifetime_secs of app {} must be at least 1",
                    app.id
                ));
            }
            if app.max_devices_per_platform == 0 || app.platform_limits.values().any(|&n| n == 0) {
                return Err(format!(
                    "relay.apps: device limits of app {} must be at least 1",
                    app.id
                ));
            }
        }
        Ok(())
    }
}

/// Checks that `url` is a `ws://HOST:PORT` or `wss://HOST:PORT` address.
pub fn check_relay_url(url: &str) -> Result<(), String> {
    RelayUrl::parse(url).map(drop)
}

impl From<&RelayConfig> for Settings {
    fn from(c: &RelayConfig) -> Self {
        Settings {
            apps: c.apps.iter().map(|a| (a.id, a.clone())).collect(),
            session_grace_ms: c.session_grace_secs * 1000,
            heartbeat_timeout_ms: c.heartbeat_timeout_secs * 1000,
            login_timeout_ms: c.login_timeout_secs * 1000,
            rate_limits: c.rate_limits,
            sync_page_bytes: (c.max_queue_bytes / 4).min(512 * 1024),
            max_call_participants: c.max_call_participants,
            max_call_audience: c.max_call_audience,
            admin_token: c.admin_token.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
    }

    #[test]
    fn the_example_file_is_valid_and_documents_every_key() {
        let text = include_str!("../config.example.toml");
        let config = Config::parse(text, "config.example.toml").unwrap();
        assert_eq!(
            config.relay.apps[0].device_limit(&Platform::parse("web").unwrap()),
            10
        );
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        for key in [
            "relay_url",
            "relay_fingerprint",
            "app",
            "secret",
            "user",
            "device",
            "platform",
            "multi_device",
            "call_waiting",
            "auto_answer_ms",
            "autostart_relay",
            "usersig_lifetime_secs",
            "listen",
            "db",
            "max_connections",
            "max_unauthenticated",
            "max_unauthenticated_per_address",
            "login_timeout_secs",
            "max_queue_bytes",
            "write_timeout_secs",
            "retention_days",
            "frames",
            "typing",
            "read_marks",
            "calls",
            "media_frames",
            "message_bytes_per_day",
            "session_grace_secs",
            "heartbeat_timeout_secs",
            "max_call_participants",
            "max_call_audience",
            "admin_token",
            "bell",
            "ringtone",
            "id",
            "max_devices_per_platform",
            "max_devices_per_user",
            "max_ticket_lifetime_secs",
            "platform_limits",
            "multi_device_sync",
            "compensation_window_days",
            "recall_window_secs",
            "input",
            "output",
            "bitrate_bps",
            "complexity",
            "expected_loss_percent",
            "loss_percent",
            "delay_ms",
            "jitter_ms",
            "tls",
            "tls_cert",
            "tls_key",
            "insecure_plaintext",
            "echo_cancellation",
            "noise_suppression",
            "auto_gain",
            "mouse",
            "osc52_copy",
            "loss_burst",
            "drop_from",
            "bandwidth_kbps",
        ] {
            assert!(
                uncommented.contains(&format!("\n{key} =")),
                "config.example.toml does not document `{key}`"
            );
        }
    }

    #[test]
    fn overrides_apply() {
        let config = Config::parse(
            "[client]\nuser = \"alice\"\nautostart_relay = false\n[relay]\nlisten = \"127.0.0.1:9000\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.client.user.unwrap().as_str(), "alice");
        assert_eq!(config.client.autostart_relay, Some(false));
        assert_eq!(config.relay.listen.port(), 9000);
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = error_of("colour = \"blue\"\n");
        assert!(e.contains("test.toml") && e.contains("colour"), "{e}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let e = error_of("[client]\nrelay = \"ws://x:1\"\n");
        assert!(e.contains("relay") && e.contains("relay_url"), "{e}");
        let e =
            error_of("[[relay.apps]]\nid = 5\nsecret = \"0123456789abcdef\"\nmax_devices = 2\n");
        assert!(e.contains("max_devices"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = error_of("[client]\nautostart_relay = \"yes\"\n");
        assert!(
            e.contains("autostart_relay") || e.contains("boolean"),
            "{e}"
        );
    }

    #[test]
    fn bad_user_id_states_the_rule() {
        let e = error_of("[client]\nuser = \"al ice\"\n");
        assert!(e.contains("1 to 32 bytes"), "{e}");
    }

    #[test]
    fn bad_platform_states_the_rule() {
        let e = error_of("[client]\nplatform = \"Android\"\n");
        assert!(e.contains("a-z 0-9"), "{e}");
    }

    #[test]
    fn relay_url_must_be_websocket() {
        let e = error_of("[client]\nrelay_url = \"http://127.0.0.1:1\"\n");
        assert!(e.contains("ws://HOST:PORT"), "{e}");
        let e = error_of("[client]\nrelay_url = \"ws://127.0.0.1\"\n");
        assert!(e.contains("with the port"), "{e}");
        assert!(check_relay_url("ws://[::1]:7787").is_ok());
        assert!(check_relay_url("wss://relay.example:443").is_ok());
    }

    #[test]
    fn tls_settings_are_checked() {
        let e = error_of("[relay]\ntls = true\ntls_cert = \"c.pem\"\n");
        assert!(e.contains("tls_key") && e.contains("both"), "{e}");
        // Without tls = true the file is read (--tls may turn it on), and
        // the relay refuses to start only if nothing does.
        let c = Config::parse("[relay]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n", "t").unwrap();
        let e = c.relay.check_tls_on().unwrap_err();
        assert!(e.contains("relay.tls = true"), "{e}");
        let e = error_of("[client]\nrelay_fingerprint = \"AB:CD\"\n");
        assert!(
            e.contains("relay_fingerprint") || e.contains("SHA-256"),
            "{e}"
        );
        let fp = crate::tls::Fingerprint::of(b"x");
        let c = Config::parse(&format!("[client]\nrelay_fingerprint = \"{fp}\"\n"), "t").unwrap();
        assert_eq!(c.client.relay_fingerprint, Some(fp));
    }

    /// The config's pin is its own relay's: `--relay` naming another one
    /// is not held to it (it was refused on ws://, and a mismatch on wss://).
    #[test]
    fn the_configs_pin_is_its_relays() {
        let fp = crate::tls::Fingerprint::of(b"x");
        let text = format!("[client]\nrelay_url = \"wss://a:1\"\nrelay_fingerprint = \"{fp}\"\n");
        let c = Config::parse(&text, "t").unwrap().client;
        assert_eq!(c.pin_for(None), Some(fp));
        assert_eq!(c.pin_for(Some("wss://a:1")), Some(fp));
        assert_eq!(c.pin_for(Some("wss://b:2")), None);
        assert_eq!(c.pin_for(Some("ws://b:2")), None);
    }

    #[test]
    fn bad_listen_address() {
        let e = error_of("[relay]\nlisten = \"localhost\"\n");
        assert!(e.contains("listen") && e.contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn retention_covers_every_compensation_window() {
        let e = error_of(
            "[relay]\nretention_days = 2\n[[relay.apps]]\nid = 5\nsecret = \"0123456789abcdef\"\ncompensation_window_days = 3\n",
        );
        assert!(e.contains("retention_days") && e.contains("app 5"), "{e}");
    }

    #[test]
    fn a_short_client_secret_is_refused() {
        let e = error_of("[client]\nsecret = \"short\"\n");
        assert!(e.contains("client.secret") && e.contains("16 bytes"), "{e}");
    }

    #[test]
    fn a_listen_address_may_name_a_host() {
        let c = Config::parse("[relay]\nlisten = \"localhost:9000\"\n", "t").unwrap();
        assert!(c.relay.listen.ip().is_loopback() && c.relay.listen.port() == 9000);
    }

    #[test]
    fn app_rules() {
        assert!(
            error_of("[[relay.apps]]\nid = 0\nsecret = \"0123456789abcdef\"\n")
                .contains("non-zero")
        );
        assert!(
            error_of("[[relay.apps]]\nid = 5\nsecret = \"0123456789abcdef\"\n[[relay.apps]]\nid = 5\nsecret = \"0123456789abcdef\"\n")
                .contains("listed twice")
        );
        assert!(
            error_of("[[relay.apps]]\nid = 5\nsecret = \"short\"\n").contains("shorter than 16")
        );
        let e = error_of("[[relay.apps]]\nid = 5\n");
        assert!(
            e.contains("app 5 has no secret of its own") && e.contains("add secret"),
            "{e}"
        );
        assert!(Config::parse("[[relay.apps]]\nid = 1400000000\n", "t").is_ok());
        assert!(
            error_of("[[relay.apps]]\nid = 5\nsecret = \"0123456789abcdef\"\nplatform_limits = { web = 0 }\n")
                .contains("at least 1")
        );
        assert!(error_of("[relay]\napps = []\n").contains("at least one app"));
    }

    #[test]
    fn zero_durations_are_refused() {
        assert!(error_of("[relay]\nsession_grace_secs = 0\n").contains("1 to 86400"));
        assert!(error_of("[relay]\nmax_connections = 0\n").contains("at least 1"));
    }

    /// A heartbeat timeout under the clients' 10 s dropped every idle
    /// device, and the largest integer overflowed the relay's clock into
    /// dropping every device at once.
    #[test]
    fn timeouts_the_relay_cannot_keep_are_refused() {
        for secs in ["5", "9223372036854775807"] {
            let e = error_of(&format!("[relay]\nheartbeat_timeout_secs = {secs}\n"));
            assert!(e.contains("15 to 3600") && e.contains("every 10 s"), "{e}");
        }
        let e = error_of("[relay]\nsession_grace_secs = 9223372036854775807\n");
        assert!(e.contains("1 to 86400"), "{e}");
        let e = error_of("[relay]\nwrite_timeout_secs = 9223372036854775807\n");
        assert!(e.contains("at most 3600"), "{e}");
    }

    /// A relative path in a config file is taken from the file's own
    /// directory, wherever termphone is started; a default file that is a
    /// link to nothing is an error, not the defaults.
    #[test]
    fn relative_paths_are_the_files_and_a_dangling_link_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, "[relay]\ndb = \"data/relay.sqlite3\"\n").unwrap();
        let config = Config::load(Some(&file), &file).unwrap();
        assert_eq!(config.relay.db, Some(dir.path().join("data/relay.sqlite3")));
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink(dir.path().join("gone.toml"), &link).unwrap();
        let e = Config::load(None, &link).unwrap_err().to_string();
        assert!(
            e.contains("config.toml") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(Config::load(Some(&missing), &missing).is_err());
        assert_eq!(Config::load(None, &missing).unwrap(), Config::default());
    }
}
