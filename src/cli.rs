//! Command-line interface: clap definitions, and merging flags over the config.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};

use crate::client::{ClientSettings, StoreChoice};
use crate::config::{Config, DEFAULT_RELAY_ADDR, check_relay_url, resolve_listen_addr};
use crate::ids::{AppId, DeviceId, Platform, UserId};
use crate::media::control::VoiceProcessing;
use crate::media::pipeline::MediaSettings;
use crate::media::spec::AudioSpec;
use crate::tls::Fingerprint;
use crate::usersig::MIN_SECRET_BYTES;

#[derive(Debug, Parser)]
#[command(
    name = "termphone",
    version,
    about = "A terminal softphone: calls that ring every device, chat in sync, over a bundled relay",
    after_help = "Without a subcommand, termphone opens the TUI: termphone --user alice \
                  (a relay is started on 127.0.0.1:7787 if none runs there). \
                  Try termphone demo for a tour."
)]
pub struct Cli {
    /// Config file (default: termphone/config.toml in the platform's config directory).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one device without the TUI: JSON-lines commands on stdin, events on stdout.
    Headless(DeviceArgs),
    /// Run the relay in the foreground.
    Relay(RelayArgs),
    /// Print a UserSig (login ticket) for a user.
    Usersig(UsersigArgs),
    /// A demo in this terminal: a bundled relay and scripted contacts.
    Demo(DemoArgs),
    /// Run a call-flow scenario (docs/flows.md); exit status 1 if a step fails.
    Flow(FlowArgs),
    /// Run a call flow as a load test: again and again at a rate, every device
    /// in this process (docs/load.md); exit status 1 past --max-failures.
    Load(LoadArgs),
    /// The relay's admin API.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// List the audio devices --audio-in and --audio-out can name.
    Devices,
    /// Print a shell completion script, e.g. termphone completions bash > ~/.local/share/bash-completion/completions/termphone
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. termphone man > termphone.1 && man ./termphone.1
    Man,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's relay serves wss:// with a fresh self-signed certificate,
    /// which every device of the demo pins.
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, Args)]
pub struct FlowArgs {
    /// The scenario, a TOML file, or a directory: every *.toml in it, one
    /// after another (exit status 0 all passed, 1 a step failed, 2 unusable input).
    pub file: PathBuf,
    /// Run against this relay (ws://HOST:PORT or wss://HOST:PORT) instead of
    /// a bundled one started for the flow.
    #[arg(long, value_name = "URL", value_parser = parse_relay_url)]
    pub relay: Option<String>,
    /// SHA-256 of the certificate the wss:// relay must present (see termphone relay --print-fingerprint).
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint, requires = "relay")]
    pub relay_fingerprint: Option<Fingerprint>,
    /// Write what every device sent and received to this file: the whole
    /// timeline as HTML if it ends in .html, else side by side as text.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write JUnit XML: a testcase per flow, a failure with the failed step and the timeline.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write every flow's result and each step's timing as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The flow to repeat (a TOML file as `termphone flow` reads it).
    #[arg(required_unless_present = "merge")]
    pub flow: Option<PathBuf>,
    /// Iterations started per second (after --ramp).
    #[arg(long, value_name = "N", default_value_t = 10.0, value_parser = parse_positive)]
    pub rate: f64,
    /// Climb to --rate linearly over this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub ramp: f64,
    /// At most this many iterations at once; the next waits for one to end.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = parse_at_least_one)]
    pub max_concurrent: usize,
    /// Start this many iterations, then wait for them to end.
    #[arg(long, value_name = "N", value_parser = parse_at_least_one_u64)]
    pub iterations: Option<u64>,
    /// Start iterations for this many seconds, then wait for them to end.
    #[arg(long, value_name = "SECS", value_parser = parse_positive)]
    pub duration: Option<f64>,
    /// Load this relay (ws://HOST:PORT or wss://HOST:PORT) instead of a bundled one.
    #[arg(long, value_name = "URL", value_parser = parse_relay_url)]
    pub relay: Option<String>,
    /// SHA-256 of the certificate the wss:// relay must present.
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint, requires = "relay")]
    pub relay_fingerprint: Option<Fingerprint>,
    /// Put this before every user name (alice → PREFIXalice-17), so that
    /// several load processes can share one relay.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Exit status 1 when more than this share of iterations failed.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0, value_parser = parse_percent)]
    pub max_failures: f64,
    /// Write the totals, failures and per-step percentiles as JSON.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a row of figures every 2 s as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Merge these JSON reports (of load processes run side by side) into one:
    /// printed, and written to --report. What would run a load is refused
    /// beside it rather than ignored.
    #[arg(
        long,
        value_name = "REPORT",
        num_args = 2..,
        conflicts_with_all = [
            "flow", "rate", "ramp", "max_concurrent", "iterations", "duration", "relay",
            "relay_fingerprint", "prefix", "csv",
        ]
    )]
    pub merge: Vec<PathBuf>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

fn parse_at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a count of at least 1")),
    }
}

fn parse_at_least_one_u64(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a count of at least 1")),
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Send a message as a user (server-side send); prints its msgID.
    Send(AdminSendArgs),
}

#[derive(Debug, Args)]
pub struct AdminSendArgs {
    /// Relay address, ws:// or wss:// (default: client.relay_url of the config, else ws://127.0.0.1:7787).
    #[arg(long, value_name = "URL", value_parser = parse_relay_url)]
    pub relay: Option<String>,
    /// SHA-256 of the certificate the wss:// relay must present (default: client.relay_fingerprint).
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
    pub relay_fingerprint: Option<Fingerprint>,
    /// Admin token (default: relay.admin_token of the config). From the
    /// environment, it stays out of `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TERMPHONE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// SDKAppID (default: client.app of the config).
    #[arg(long, value_name = "SDKAPPID", value_parser = clap::value_parser!(AppId).range(1..))]
    pub app: Option<AppId>,
    /// The sender, as if this user had sent it.
    #[arg(long, value_name = "USERID")]
    pub from: UserId,
    /// The recipient: every device of this user receives it.
    #[arg(long, value_name = "USERID")]
    pub to: UserId,
    /// The message text.
    #[arg(long)]
    pub text: String,
    /// Deliver it to the sender's own devices as well (isIncludeSender).
    #[arg(long)]
    pub include_sender: bool,
}

/// Flags of a device, shared by the TUI and headless mode.
#[derive(Debug, Args, Default)]
pub struct DeviceArgs {
    /// Relay address, ws://HOST:PORT or wss://HOST:PORT (default: ws://127.0.0.1:7787, started if absent).
    #[arg(long, value_name = "URL", value_parser = parse_relay_url)]
    pub relay: Option<String>,
    /// SHA-256 of the certificate the wss:// relay must present, as termphone relay
    /// --print-fingerprint prints it (default: client.relay_fingerprint; unset, a
    /// self-signed certificate is trusted on first use and remembered).
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
    pub relay_fingerprint: Option<Fingerprint>,
    /// SDKAppID to log in to.
    #[arg(long, value_name = "SDKAPPID", value_parser = clap::value_parser!(AppId).range(1..))]
    pub app: Option<AppId>,
    /// Log in as this user at start.
    // Read as text: headless mode answers a bad one as any refused login
    // (an ERROR, the process staying up), the TUI stops with the reason.
    #[arg(long, value_name = "USERID")]
    pub user: Option<String>,
    /// Device id (default: a generated id kept in the user's profile).
    #[arg(long, value_name = "DEVICEID")]
    pub device: Option<DeviceId>,
    /// Platform label for the relay's per-platform limits (terminal, android, ios, web, ...).
    #[arg(long, value_name = "NAME")]
    pub platform: Option<Platform>,
    /// Login ticket (default: minted from the configured secret). From the
    /// environment, it stays out of `ps`.
    #[arg(
        long,
        value_name = "TICKET",
        env = "TERMPHONE_USERSIG",
        hide_env_values = true
    )]
    pub usersig: Option<String>,
    /// Ring on this device even when it is not the user's latest login
    /// (same as enableMultiDeviceAbility after login).
    #[arg(long)]
    pub multi_device: bool,
    /// Take a new call as a waiting call while in a connected one, instead
    /// of being busy (same as enableCallWaiting; client.call_waiting).
    #[arg(long)]
    pub call_waiting: bool,
    /// Where call audio comes from: default, a device name, null, wav:PATH, tone:HZ, echo.
    #[arg(long, value_name = "SPEC", value_parser = parse_audio_spec)]
    pub audio_in: Option<AudioSpec>,
    /// Where call audio goes: default, a device name, null, wav:PATH.
    #[arg(long, value_name = "SPEC", value_parser = parse_audio_sink)]
    pub audio_out: Option<AudioSpec>,
    /// Send the microphone unprocessed: no echo cancellation, noise
    /// suppression or gain control (the [audio] settings).
    #[arg(long)]
    pub no_voice_processing: bool,
    /// Accept every call that rings on this device, after MS milliseconds
    /// (default 0; same as setAutoAnswer; client.auto_answer_ms).
    #[arg(
        long,
        value_name = "MS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "0"
    )]
    pub auto_answer: Option<u64>,
    /// Copy everything this device plays to FILE as raw 16-bit 48 kHz mono
    /// PCM, for the flow runner's audio steps (docs/flows.md).
    #[arg(long, value_name = "FILE", hide = true)]
    pub audio_tap: Option<PathBuf>,
}

fn parse_audio_spec(s: &str) -> Result<AudioSpec, String> {
    s.parse::<AudioSpec>().map_err(|e| e.message)
}

fn parse_audio_sink(s: &str) -> Result<AudioSpec, String> {
    let spec = parse_audio_spec(s)?;
    spec.check_sink().map_err(|e| e.message)?;
    Ok(spec)
}

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on, HOST:PORT (default: relay.listen of the config, 127.0.0.1:7787).
    #[arg(long, value_name = "ADDR", value_parser = resolve_listen_addr)]
    pub listen: Option<SocketAddr>,
    /// SQLite database (default: relay.db of the config, else relay.sqlite3 in the data directory).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Stop after this many seconds without any connection.
    #[arg(long, value_name = "SECS")]
    pub exit_when_idle: Option<u64>,
    /// Lose this share of forwarded media frames, in percent (relay.impairment.loss_percent).
    #[arg(long, value_name = "PERCENT")]
    pub media_loss: Option<f64>,
    /// Lose media in bursts of this many frames on average, at --media-loss's
    /// rate (relay.impairment.loss_burst; Gilbert-Elliott; default 1: at random).
    #[arg(long, value_name = "FRAMES")]
    pub media_loss_burst: Option<f64>,
    /// Drop every media frame this user sends: one direction of its calls cut
    /// (relay.impairment.drop_from; repeat for several users).
    #[arg(long, value_name = "USERID")]
    pub media_drop_from: Vec<UserId>,
    /// Carry at most this many kbit/s of media on each sender-to-receiver
    /// path, losing the frames beyond (relay.impairment.bandwidth_kbps).
    #[arg(long, value_name = "KBPS")]
    pub media_bandwidth_kbps: Option<u64>,
    /// Delay forwarded media frames by this many ms (relay.impairment.delay_ms).
    #[arg(long, value_name = "MS")]
    pub media_delay: Option<u64>,
    /// Add up to this many ms of random delay per frame (relay.impairment.jitter_ms).
    #[arg(long, value_name = "MS")]
    pub media_jitter: Option<u64>,
    /// Serve wss:// (relay.tls): the certificate of relay.tls_cert/tls_key, or a
    /// self-signed one made on first start and kept beside the database.
    #[arg(long)]
    pub tls: bool,
    /// Listen on a non-loopback address without TLS (relay.insecure_plaintext):
    /// everything on the link can be read on the way.
    #[arg(long, conflicts_with = "tls")]
    pub insecure_plaintext: bool,
    /// Print the SHA-256 of the relay's TLS certificate (making the self-signed
    /// one if it is not made yet) and exit.
    #[arg(long)]
    pub print_fingerprint: bool,
}

#[derive(Debug, Args)]
pub struct UsersigArgs {
    /// The user the ticket logs in.
    #[arg(long, value_name = "USERID")]
    pub user: UserId,
    /// SDKAppID (default: client.app of the config, the development app).
    #[arg(long, value_name = "SDKAPPID", value_parser = clap::value_parser!(AppId).range(1..))]
    pub app: Option<AppId>,
    /// Secret of the app (default: client.secret of the config, the development secret).
    #[arg(
        long,
        value_name = "KEY",
        value_parser = parse_secret,
        env = "TERMPHONE_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// Lifetime in seconds (default: client.usersig_lifetime_secs, 7 days; 0 mints an already expired ticket).
    #[arg(long, value_name = "SECONDS")]
    pub expire: Option<u64>,
}

fn parse_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "{} bytes is too short: a secret has at least {MIN_SECRET_BYTES} bytes \
             (the relay refuses shorter ones in relay.apps)",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

fn parse_relay_url(s: &str) -> Result<String, String> {
    check_relay_url(s).map(|()| s.to_owned())
}

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    s.parse()
}

/// Where termphone keeps its files.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
}

impl Dirs {
    pub fn discover() -> Dirs {
        match directories::ProjectDirs::from("", "", "termphone") {
            Some(p) => Dirs {
                config_file: p.config_dir().join("config.toml"),
                data_dir: p.data_dir().to_path_buf(),
            },
            // No home directory at all: keep everything beside the working directory.
            None => Dirs {
                config_file: PathBuf::from("termphone.toml"),
                data_dir: PathBuf::from("termphone-data"),
            },
        }
    }
}

/// Whether the command line puts device flags before a subcommand (a
/// mistake: they are the subcommand's, `termphone headless --user alice`).
/// Only flags typed count: one from the environment (`TERMPHONE_USERSIG`)
/// is for whichever front end runs.
pub fn device_flags_before_subcommand(matches: &ArgMatches) -> bool {
    let device = DeviceArgs::augment_args(clap::Command::new("device"));
    matches.subcommand().is_some()
        && device.get_arguments().any(|arg| {
            matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
        })
}

impl DeviceArgs {
    /// Flags over config over defaults; `audio` is the front end's own
    /// default for calls' audio (the sound card for the TUI, `null` for
    /// headless mode).
    pub fn settings(&self, config: &Config, dirs: &Dirs, audio: &AudioSpec) -> ClientSettings {
        let c = &config.client;
        // A relay named on the command line never starts anything: a script
        // pointed at a relay that is down must hear RELAY_UNREACHABLE.
        let autostart_relay = match (&self.relay, &c.relay_url) {
            (Some(_), _) => false,
            (None, None) => c.autostart_relay != Some(false),
            (None, Some(_)) => c.autostart_relay == Some(true),
        };
        let explicit = self.relay.clone().or_else(|| c.relay_url.clone());
        ClientSettings {
            autostart_relay,
            relay_url: explicit.unwrap_or_else(|| format!("ws://{DEFAULT_RELAY_ADDR}")),
            relay_fingerprint: (self.relay_fingerprint).or(c.pin_for(self.relay.as_deref())),
            app: self.app.unwrap_or(c.app),
            platform: self.platform.clone().unwrap_or_else(|| c.platform.clone()),
            secret: c.secret.clone(),
            usersig_lifetime_secs: c.usersig_lifetime_secs,
            multi_device: self.multi_device || c.multi_device,
            call_waiting: self.call_waiting || c.call_waiting,
            auto_answer_ms: self.auto_answer.or(c.auto_answer_ms),
            data_dir: dirs.data_dir.clone(),
            store: StoreChoice::Profile,
            media: MediaSettings {
                input: (self.audio_in.as_ref())
                    .or(config.media.input.as_ref())
                    .unwrap_or(audio)
                    .clone(),
                output: (self.audio_out.as_ref())
                    .or(config.media.output.as_ref())
                    .unwrap_or(audio)
                    .clone(),
                codec: config.media.codec(),
                tap: self.audio_tap.clone(),
                voice: match self.no_voice_processing {
                    true => VoiceProcessing::OFF,
                    false => config.audio.voice(),
                },
                raise_priority: true,
            },
            without_media: false,
        }
    }

    /// `--user`, else the config's; an invalid `--user` is the parse error.
    pub fn user(&self, config: &Config) -> Result<Option<UserId>, crate::error::Error> {
        match &self.user {
            Some(user) => UserId::parse(user).map(Some),
            None => Ok(config.client.user.clone()),
        }
    }

    pub fn device_id(&self, config: &Config) -> Option<DeviceId> {
        self.device.clone().or_else(|| config.client.device.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_count_before_a_subcommand_only() {
        use clap::CommandFactory;
        let before = |args: &[&str]| {
            let matches = Cli::command().try_get_matches_from(args).unwrap();
            device_flags_before_subcommand(&matches)
        };
        assert!(before(&["termphone", "--user", "alice", "headless"]));
        assert!(!before(&["termphone", "headless", "--user", "alice"]));
        assert!(!before(&["termphone", "--user", "alice"]));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flags_are_refused_with_the_rule() {
        let err = Cli::try_parse_from(["termphone", "usersig", "--user", "al ice"]).unwrap_err();
        assert!(err.to_string().contains("1 to 32 bytes"), "{err}");
        // A device's --user is checked where it logs in (headless mode says
        // so as a refused login, SPEC 6), not by the parser.
        let cli = Cli::try_parse_from(["termphone", "--user", "al ice"]).unwrap();
        let e = cli.device.user(&Config::default()).unwrap_err();
        assert!(e.message.contains("1 to 32 bytes"), "{}", e.message);
        let err =
            Cli::try_parse_from(["termphone", "headless", "--relay", "http://x:1"]).unwrap_err();
        assert!(err.to_string().contains("ws://HOST:PORT"), "{err}");
        let err = Cli::try_parse_from(["termphone", "usersig", "--user", "a", "--secret", "short"])
            .unwrap_err();
        assert!(err.to_string().contains("at least 16 bytes"), "{err}");
        let err = Cli::try_parse_from(["termphone", "relay", "--listen", "localhost"]).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        let err = Cli::try_parse_from(["termphone", "headless", "--relay-fingerprint", "AB:CD"])
            .unwrap_err();
        assert!(err.to_string().contains("--print-fingerprint"), "{err}");
        let err = Cli::try_parse_from(["termphone", "relay", "--tls", "--insecure-plaintext"])
            .unwrap_err();
        assert!(err.to_string().contains("--insecure-plaintext"), "{err}");
    }

    #[test]
    fn a_listen_address_may_name_a_host() {
        let cli =
            Cli::try_parse_from(["termphone", "relay", "--listen", "localhost:7787"]).unwrap();
        let Some(Cmd::Relay(args)) = cli.command else {
            panic!("{cli:?}")
        };
        let addr = args.listen.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 7787, "{addr}");
    }

    #[test]
    fn every_flag_and_subcommand_says_what_it_is() {
        use clap::CommandFactory;
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no description");
            }
            for sub in cmd.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no description",
                    sub.get_name()
                );
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "termphone");
    }

    #[test]
    fn flags_override_config() {
        let cli =
            Cli::try_parse_from(["termphone", "--relay", "ws://10.0.0.1:9", "--app", "7"]).unwrap();
        let dirs = Dirs {
            config_file: "c".into(),
            data_dir: "d".into(),
        };
        let s = cli
            .device
            .settings(&Config::default(), &dirs, &AudioSpec::Null);
        assert_eq!(
            (s.relay_url.as_str(), s.app, s.autostart_relay),
            ("ws://10.0.0.1:9", 7, false)
        );
        assert_eq!(s.media.input, AudioSpec::Null);
        let s = DeviceArgs::default().settings(&Config::default(), &dirs, &AudioSpec::Default);
        assert_eq!(s.relay_url, "ws://127.0.0.1:7787");
        assert!(s.autostart_relay);
        assert_eq!(s.media.output, AudioSpec::Default);
        let cli = Cli::try_parse_from(["termphone", "--audio-in", "tone:300"]).unwrap();
        let s = cli
            .device
            .settings(&Config::default(), &dirs, &AudioSpec::Null);
        assert_eq!(s.media.input, AudioSpec::Tone(300.0));
    }

    /// `--auto-answer` alone answers at once, `--auto-answer=MS` after MS;
    /// the TUI and headless mode take it alike, over `client.auto_answer_ms`.
    #[test]
    fn auto_answer_is_a_flag_with_an_optional_delay() {
        let dirs = Dirs {
            config_file: "c".into(),
            data_dir: "d".into(),
        };
        let mut config = Config::default();
        let settings = |args: &[&str], config: &Config| {
            let cli = Cli::try_parse_from(args).unwrap();
            let device = match cli.command {
                Some(Cmd::Headless(device)) => device,
                _ => cli.device,
            };
            device.settings(config, &dirs, &AudioSpec::Null)
        };
        let s = settings(&["termphone", "--auto-answer"], &config);
        assert_eq!(s.auto_answer_ms, Some(0));
        assert_eq!(s.engine_config().auto_answer_ms, Some(0));
        let s = settings(&["termphone", "headless", "--auto-answer=250"], &config);
        assert_eq!(s.auto_answer_ms, Some(250));
        assert_eq!(settings(&["termphone"], &config).auto_answer_ms, None);
        config.client.auto_answer_ms = Some(900);
        assert_eq!(settings(&["termphone"], &config).auto_answer_ms, Some(900));
        let s = settings(&["termphone", "headless", "--auto-answer=5"], &config);
        assert_eq!(s.auto_answer_ms, Some(5));
        assert!(Cli::try_parse_from(["termphone", "--auto-answer=soon"]).is_err());
        let before = ["termphone", "--auto-answer", "headless"];
        let matches = <Cli as clap::CommandFactory>::command().try_get_matches_from(before);
        assert!(device_flags_before_subcommand(&matches.unwrap()));
    }
}
