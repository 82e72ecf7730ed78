//! `termphone flow FILE`: runs a call-flow scenario against the bundled
//! relay (or a given one) and says, step by step, what passed.
//!
//! Every device of the scenario is a real `termphone headless` process, so
//! a flow exercises exactly the interface QA scripts use (docs/headless.md).
//! The file format is documented in docs/flows.md. [`suite`] runs a
//! directory of them and writes JUnit and JSON reports.

pub mod audio;
pub mod names;
pub mod suite;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use self::audio::{Ear, ExpectAudio, ExpectSilence};
pub use self::names::Names;
use crate::cli::{DeviceArgs, Dirs};
use crate::client::event::{EVENT_NAMES, MEDIA_EVENT_NAMES};
use crate::client::{ClientSettings, StoreChoice, queue};
use crate::config::RelayConfig;
use crate::headless::{self, COMMANDS, MEDIA_COMMANDS};
use crate::ids::{DeviceId, Platform, UserId};
use crate::media::io::{Sink, Source};
use crate::media::spec::AudioSpec;
use crate::relay::media::Impairment;
use crate::relay::{self, RelayHandle};

/// A scenario, as written in its TOML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The file it was read from.
    #[serde(skip)]
    pub file: std::path::PathBuf,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Settings of the bundled relay's development app.
    #[serde(default)]
    pub relay: RelayOverrides,
    #[serde(rename = "device")]
    pub devices: Vec<DeviceSpec>,
    /// The `[[step]]` tables as written, each read on its own
    /// ([`Flow::parse`]), so that one that does not parse is named with
    /// the others that cannot run.
    #[serde(rename = "step")]
    written_steps: Vec<toml::Table>,
    #[serde(skip)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayOverrides {
    pub multi_device_sync: Option<bool>,
    pub compensation_window_days: Option<u32>,
    pub recall_window_secs: Option<u64>,
    pub max_devices_per_platform: Option<u32>,
    pub max_call_participants: Option<usize>,
    pub max_call_audience: Option<usize>,
    /// Media frames the relay drops at random, in percent, per receiver.
    pub media_loss: Option<f64>,
    /// The mean length of a burst of `media_loss` (frames; default 1:
    /// each frame lost on its own).
    pub media_loss_burst: Option<f64>,
    /// Users whose voice the relay drops: one direction of a call cut.
    #[serde(default)]
    pub media_drop_from: Vec<crate::ids::UserId>,
    /// Added to every media frame's delivery.
    pub media_delay_ms: Option<u64>,
    /// Up to this much more per frame, at random (frames may reorder).
    pub media_jitter_ms: Option<u64>,
    /// The most media a sender-to-receiver path carries (kbit/s).
    pub media_bandwidth_kbps: Option<u64>,
}

impl RelayOverrides {
    /// What to say when a flow with these settings runs against a relay of
    /// its own (`--relay`): they are for the bundled relay, and a flow that
    /// counts on a lossy network or a setting of the app would run on a
    /// relay that has neither without a word.
    pub(crate) fn ignored_by(&self, flow: &str, url: &str) -> Option<String> {
        (*self != RelayOverrides::default()).then(|| {
            format!(
                "flow \"{flow}\": its [relay] settings are for the bundled relay, and do not \
                 reach {url}; run without --relay to have them"
            )
        })
    }

    fn check(&self) -> Result<(), String> {
        self.impairment().check_named(&|key| match key {
            "loss_percent" => "media_loss".into(),
            "loss_burst" => "media_loss_burst".into(),
            other => format!("media_{other}"),
        })
    }

    /// The bundled relay's settings, as the flow wants them.
    pub fn apply(&self, config: &mut RelayConfig) {
        let app = &mut config.apps[0];
        if let Some(v) = self.multi_device_sync {
            app.multi_device_sync = v;
        }
        if let Some(v) = self.compensation_window_days {
            app.compensation_window_days = v;
        }
        if let Some(v) = self.recall_window_secs {
            app.recall_window_secs = v;
        }
        if let Some(v) = self.max_devices_per_platform {
            app.max_devices_per_platform = v;
        }
        if let Some(v) = self.max_call_participants {
            config.max_call_participants = v;
        }
        if let Some(v) = self.max_call_audience {
            config.max_call_audience = v;
        }
        config.impairment = self.impairment();
    }

    /// The network the bundled relay simulates for the flow's media.
    fn impairment(&self) -> Impairment {
        Impairment {
            loss_percent: self.media_loss.unwrap_or(0.0),
            loss_burst: self.media_loss_burst.unwrap_or(0.0),
            delay_ms: self.media_delay_ms.unwrap_or(0),
            jitter_ms: self.media_jitter_ms.unwrap_or(0),
            drop_from: self.media_drop_from.clone(),
            bandwidth_kbps: self.media_bandwidth_kbps.unwrap_or(0),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// How steps name this device.
    pub name: String,
    pub user: String,
    /// Device id (default: the name).
    pub device: Option<String>,
    #[serde(default = "terminal")]
    pub platform: String,
    #[serde(default)]
    pub multi_device: bool,
    /// Log in at start (and wait until caught up) before the first step.
    #[serde(default = "yes")]
    pub login: bool,
    /// Where its calls' audio comes from and goes to (default: null, so a
    /// flow needs no sound card); a relative `wav:` path is taken from the
    /// flow file's directory.
    #[serde(default = "null_audio")]
    pub audio_in: AudioSpec,
    #[serde(default = "null_audio")]
    pub audio_out: AudioSpec,
    /// `ERROR` codes this device may get without failing the flow where
    /// no step expects them: the loser's refusal when two devices race.
    #[serde(default)]
    pub ignore_errors: Vec<i64>,
}

fn null_audio() -> AudioSpec {
    AudioSpec::Null
}

fn terminal() -> String {
    "terminal".into()
}

fn yes() -> bool {
    true
}

/// One step: exactly one of `send`, `expect`, `expect_none`,
/// `expect_audio`, `expect_silence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub device: String,
    /// A headless command, e.g. `{ cmd = "call", userID = "alice" }`.
    /// Strings `$name` are replaced by values saved by earlier steps.
    pub send: Option<toml::Table>,
    /// An event name the device must see next (skipping others).
    pub expect: Option<String>,
    /// An event the device must not see for `for_ms`.
    pub expect_none: Option<String>,
    /// A tone or a recording the device must play (flow::audio).
    pub expect_audio: Option<ExpectAudio>,
    /// Silence the device must play.
    pub expect_silence: Option<ExpectSilence>,
    /// Fields the expected event must have (a subset).
    #[serde(default)]
    pub fields: toml::Table,
    /// How long `expect` may wait (default 5000).
    pub within_ms: Option<u64>,
    /// How long `expect_none` watches (default 500).
    pub for_ms: Option<u64>,
    /// Keep fields of the matched event for later `send`s: `{ room = "roomID" }`.
    #[serde(default)]
    pub save: BTreeMap<String, String>,
    /// Numeric fields the event must hold to a bound: `{ mos = ">= 4.0" }`.
    #[serde(default)]
    pub compare: BTreeMap<String, String>,
    /// `compare`, checked at load.
    #[serde(skip)]
    comparisons: Vec<(String, Comparison)>,
}

/// One `compare` entry: `OP NUMBER`, OP one of `<`, `<=`, `>`, `>=`, `==`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Comparison {
    op: Op,
    bound: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Less,
    AtMost,
    More,
    AtLeast,
    Equal,
}

impl Comparison {
    fn parse(text: &str) -> Result<Comparison, String> {
        let text = text.trim();
        // Two-character operators first: "<=" is not "<" then "=1".
        let ops = [
            ("<=", Op::AtMost),
            (">=", Op::AtLeast),
            ("==", Op::Equal),
            ("<", Op::Less),
            (">", Op::More),
        ];
        let (op, rest) = (ops.iter())
            .find_map(|(sign, op)| text.strip_prefix(sign).map(|rest| (*op, rest)))
            .ok_or_else(|| format!("{text:?} is not OP NUMBER; OP is one of <, <=, >, >=, =="))?;
        // NaN holds no comparison and infinity every `<`: neither bounds a
        // figure.
        let bound = (rest.trim().parse::<f64>().ok())
            .filter(|bound| bound.is_finite())
            .ok_or_else(|| format!("{text:?}: {:?} is not a number", rest.trim()))?;
        Ok(Comparison { op, bound })
    }

    fn holds(self, value: f64) -> bool {
        match self.op {
            Op::Less => value < self.bound,
            Op::AtMost => value <= self.bound,
            Op::More => value > self.bound,
            Op::AtLeast => value >= self.bound,
            Op::Equal => value == self.bound,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}: {1}")]
    Read(String, String),
    /// Every step that cannot run, each on a line of its own.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<StepMistake>),
    #[error("cannot start the bundled relay: {0}")]
    Relay(String),
    #[error("cannot start device {0}: {1}")]
    Device(String, String),
}

/// A step that cannot run, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: step {step}: {message}")]
pub struct StepMistake {
    file: String,
    line: usize,
    step: usize,
    message: String,
}

impl Flow {
    /// Whether its calls need media: a device plays or records something
    /// other than null audio, or a step asks the media thread or waits for
    /// what it reports (a tone, DTMF, `MEDIA_STATS`, ...). `termphone load`
    /// runs a flow that does not without media, as SIPp runs a scenario
    /// without RTP: calls connect and end, nothing is encoded.
    pub fn uses_media(&self) -> bool {
        let audio = |spec: &AudioSpec| *spec != AudioSpec::Null;
        let media_event = |name: &Option<String>| {
            name.as_deref()
                .is_some_and(|n| MEDIA_EVENT_NAMES.contains(&n))
        };
        let media_command = |send: &Option<toml::Table>| {
            send.as_ref()
                .and_then(|s| s.get("cmd")?.as_str())
                .is_some_and(|cmd| MEDIA_COMMANDS.contains(&cmd))
        };
        self.devices
            .iter()
            .any(|d| audio(&d.audio_in) || audio(&d.audio_out))
            || self.steps.iter().any(|s| {
                media_command(&s.send)
                    || media_event(&s.expect)
                    || media_event(&s.expect_none)
                    || s.expect_audio.is_some()
                    || s.expect_silence.is_some()
            })
    }

    pub fn load(path: &Path) -> Result<Flow, FlowError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FlowError::Read(path.display().to_string(), e.to_string()))?;
        Flow::parse(&text, path)
    }

    /// A flow from its file's text; `path` names it in errors and places
    /// the files it refers to.
    pub fn parse(text: &str, path: &Path) -> Result<Flow, FlowError> {
        let file = path.display().to_string();
        let read = |e: toml::de::Error| FlowError::Read(file.clone(), e.to_string());
        let mut flow: Flow = toml::from_str(text).map_err(read)?;
        flow.file = path.to_owned();
        let steps = std::mem::take(&mut flow.written_steps);
        if steps.is_empty() {
            return Err(FlowError::Read(
                file.clone(),
                "has no steps: a flow checks something in at least one [[step]]".into(),
            ));
        }
        if let Err(e) = flow.relay.check() {
            return Err(FlowError::Read(file.clone(), format!("[relay] {e}")));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = BTreeSet::new();
        for d in &mut flow.devices {
            let refused =
                |why: String| FlowError::Read(file.clone(), format!("device {:?}: {why}", d.name));
            if !names.insert(d.name.clone()) {
                return Err(refused(
                    "named twice; each [[device]] needs a name of its own for steps to pick it by"
                        .into(),
                ));
            }
            // What the runner itself passes to each device is checked
            // here, as its user is: a device refused at start-up would
            // fail the run before its first step.
            if let Err(e) = UserId::parse(&d.user) {
                return Err(refused(format!("user {:?}: {}", d.user, e.message)));
            }
            // Without `device`, the name is the device id, and must be one.
            match (
                &d.device,
                DeviceId::parse(d.device.as_deref().unwrap_or(&d.name)),
            ) {
                (_, Ok(_)) => {}
                (Some(_), Err(e)) => return Err(refused(format!("device: {}", e.message))),
                (None, Err(e)) => {
                    return Err(refused(format!(
                        "the name is also its device id unless device = \"ID\" gives one: {}",
                        e.message
                    )));
                }
            }
            if let Err(e) = Platform::parse(&d.platform) {
                return Err(refused(format!("platform: {}", e.message)));
            }
            for spec in [&mut d.audio_in, &mut d.audio_out] {
                if let AudioSpec::Wav(p) = spec
                    && p.is_relative()
                {
                    *p = base.join(&*p);
                }
            }
            let checked = [
                ("audio_in", Source::check(&d.audio_in)),
                ("audio_out", Sink::check(&d.audio_out)),
            ];
            for (key, check) in checked {
                if let Err(e) = check {
                    return Err(refused(format!("{key}: {}", e.message)));
                }
            }
        }
        let lines = step_lines(text);
        let names: Vec<&str> = flow.devices.iter().map(|d| d.name.as_str()).collect();
        let mut saved = BTreeSet::new();
        let mut mistakes = Vec::new();
        // The step at which each device was sent `quit`: it hears nothing
        // after, and a send to it would be lost without a word.
        let mut quit_at: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in steps.into_iter().enumerate() {
            // What a step saves counts even when it cannot run, so that
            // the steps after it are not blamed for its mistake.
            let saves = raw.get("save").and_then(toml::Value::as_table);
            let saves: Vec<String> = saves
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            let checked = toml::Value::Table(raw.clone())
                .try_into::<Step>()
                .map_err(|e| unreadable(&raw, e.message()))
                .and_then(|mut step| {
                    step.check(&names, &saved, base)?;
                    if let (Some(_), Some(quit)) = (&step.send, quit_at.get(&step.device)) {
                        return Err(format!(
                            "device {} quit at step {quit}, and a device that has quit \
                             takes no command",
                            step.device
                        ));
                    }
                    if step.sends("quit") {
                        quit_at.insert(step.device.clone(), i + 1);
                    }
                    Ok(step)
                });
            match checked {
                Ok(step) => flow.steps.push(step),
                Err(message) => mistakes.push(StepMistake {
                    file: file.clone(),
                    line: lines.get(i).copied().unwrap_or(0),
                    step: i + 1,
                    message,
                }),
            }
            saved.extend(saves);
        }
        if !mistakes.is_empty() {
            return Err(FlowError::Invalid(mistakes));
        }
        Ok(flow)
    }
}

impl Step {
    /// Whether the step sends the command `cmd`.
    fn sends(&self, cmd: &str) -> bool {
        (self.send.as_ref())
            .is_some_and(|send| send.get("cmd").and_then(|c| c.as_str()) == Some(cmd))
    }

    /// Whether the step can run, given the flow's device names and what the
    /// steps before it save; reads its audio reference and comparisons.
    fn check(
        &mut self,
        devices: &[&str],
        saved: &BTreeSet<String>,
        base: &Path,
    ) -> Result<(), String> {
        let kinds = [
            self.send.is_some(),
            self.expect.is_some(),
            self.expect_none.is_some(),
            self.expect_audio.is_some(),
            self.expect_silence.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            let names = [
                "send",
                "expect",
                "expect_none",
                "expect_audio",
                "expect_silence",
            ];
            let has: Vec<&str> = names
                .iter()
                .zip(kinds)
                .filter(|(_, k)| *k)
                .map(|(n, _)| *n)
                .collect();
            let has = match has.as_slice() {
                [] => "this one has none".to_owned(),
                has => format!("this one has {}", has.join(" and ")),
            };
            return Err(format!(
                "a step has exactly one of send, expect, expect_none, expect_audio, \
                 expect_silence; {has}"
            ));
        }
        // A key that would do nothing on this kind of step is refused: who
        // wrote it believes something is checked.
        if !self.save.is_empty() && self.expect.is_none() {
            return Err(
                "save belongs on an expect step: it keeps fields of the event the step matched"
                    .into(),
            );
        }
        if self.send.is_some() && !self.fields.is_empty() {
            return Err(
                "fields belong on an expect or expect_none step: a send step checks nothing".into(),
            );
        }
        if (self.send.is_some() || self.expect_none.is_some()) && self.within_ms.is_some() {
            return Err(
                "within_ms is how long an expect or audio step waits (a send step \
                 does not wait; an expect_none step watches for for_ms)"
                    .into(),
            );
        }
        if self.for_ms.is_some() && self.expect_none.is_none() {
            return Err(
                "for_ms is how long an expect_none step watches; it belongs on one \
                 (expect_silence takes its own: expect_silence = { for_ms = ... })"
                    .into(),
            );
        }
        let listens = self.expect_audio.is_some() || self.expect_silence.is_some();
        if listens && (!self.fields.is_empty() || !self.compare.is_empty() || !self.save.is_empty())
        {
            return Err(
                "fields, compare and save belong on an expect step; an audio step listens".into(),
            );
        }
        if let Some(audio) = &mut self.expect_audio {
            audio.load(base)?;
        }
        if let (Some(silence), Some(within)) = (&self.expect_silence, self.within_ms)
            && within < silence.for_ms
        {
            return Err(format!(
                "expect_silence: for_ms = {} cannot fit in within_ms = {within}",
                silence.for_ms
            ));
        }
        if !devices.contains(&self.device.as_str()) {
            return Err(format!(
                "no device named {:?}; the flow's devices are {}",
                self.device,
                devices.join(", ")
            ));
        }
        if let Some(send) = &self.send {
            check_send(send, saved)?;
        }
        for (key, value) in &self.fields {
            if let Some(name) = value.as_str().and_then(|s| s.strip_prefix('$'))
                && !saved.contains(name)
            {
                return Err(format!(
                    "fields: {key} = \"${name}\", but no earlier step saves {name} \
                     (save = {{ {name} = \"FIELD\" }} on an expect step)"
                ));
            }
        }
        if self.send.is_some() && !self.compare.is_empty() {
            return Err("compare belongs on an expect or expect_none step".into());
        }
        for (key, name) in [("expect", &self.expect), ("expect_none", &self.expect_none)] {
            if let Some(name) = name
                && !EVENT_NAMES.contains(&name.as_str())
            {
                return Err(format!(
                    "{key}: unknown event {name:?}; events are {}",
                    EVENT_NAMES.join(", ")
                ));
            }
        }
        for (field, text) in &self.compare {
            let comparison = Comparison::parse(text)
                .map_err(|message| format!("compare: {field} = {message}"))?;
            self.comparisons.push((field.clone(), comparison));
        }
        Ok(())
    }
}

/// serde's words for a step it could not read, with the key they are about
/// (`within_ms: invalid type: ...`): a value's error names none, so the step
/// is read again from text, where the error points at its line.
fn unreadable(step: &toml::Table, message: &str) -> String {
    let key = || {
        let text = toml::to_string(step).ok()?;
        let at = toml::from_str::<Step>(&text).err()?.span()?.start;
        let line = text[..at].rsplit('\n').next()?;
        let key = line.split_once('=')?.0.trim();
        // Under a table of its own (`[expect_audio]`), the key is in it.
        let table = text[..at]
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix('[')?.strip_suffix(']'));
        Some(match table {
            Some(table) => format!("{table}.{key}"),
            None => key.to_owned(),
        })
    };
    match key() {
        Some(key) if message.starts_with("invalid") => format!("{key}: {message}"),
        _ => message.to_owned(),
    }
}

/// The line each `[[step]]` starts on, for errors that point into the file.
fn step_lines(text: &str) -> Vec<usize> {
    #[derive(Deserialize)]
    struct Spans {
        #[serde(default)]
        step: Vec<toml::Spanned<toml::Table>>,
    }
    let Ok(spans) = toml::from_str::<Spans>(text) else {
        return Vec::new();
    };
    spans
        .step
        .iter()
        .map(|s| {
            let start = s.span().start.min(text.len());
            text[..start].matches('\n').count() + 1
        })
        .collect()
}

/// Checks a `send` step the way headless mode will take its command, so a
/// misspelt command or argument stops the flow before any device starts.
fn check_send(send: &toml::Table, saved: &BTreeSet<String>) -> Result<(), String> {
    let mut command = json_of(send);
    if !matches!(command.get("cmd"), Some(Value::String(_))) {
        return Err(format!(
            "send needs cmd = \"NAME\"; commands are {}",
            COMMANDS.join(", ")
        ));
    }
    let mut saved_keys = Vec::new();
    for (key, value) in &command {
        if let Some(name) = value.as_str().and_then(|s| s.strip_prefix('$')) {
            if !saved.contains(name) {
                return Err(format!(
                    "send: {key} = \"${name}\", but no earlier step saves {name} \
                     (save = {{ {name} = \"FIELD\" }} on an expect step)"
                ));
            }
            saved_keys.push(key.clone());
        }
    }
    // A `$name` is a value an earlier step saves from an event: its type is
    // only known when the flow runs, so it passes as whichever of a text, a
    // number, a flag or a list the argument needs.
    let placeholders = placeholders();
    let mut first_error = None;
    for mut pick in 0..placeholders.len().pow(saved_keys.len() as u32) {
        for key in &saved_keys {
            command.insert(key.clone(), placeholders[pick % placeholders.len()].clone());
            pick /= placeholders.len();
        }
        match headless::check_command(&Value::Object(command.clone())) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(format!("send: {}", first_error.unwrap_or_default()))
}

/// What a saved value may stand for at load time: a text (a valid UserID,
/// so arguments checked as one pass), a number, a flag or a list.
fn placeholders() -> [Value; 4] {
    let text = Value::from("saved");
    [
        text.clone(),
        Value::from(1),
        Value::from(true),
        Value::from(vec![text]),
    ]
}

/// How a flow's devices run: each a `termphone headless` process (`flow`),
/// or all in this process, each the same headless loop, its events handed
/// over as values (`load`: thousands of devices, no process each).
#[derive(Clone)]
pub enum Launch {
    Process,
    /// `stop` signalled makes every device log out and end; `media`
    /// false runs its calls without media ([`Flow::uses_media`]).
    InProcess {
        stop: Interrupt,
        media: bool,
    },
}

struct Device {
    name: String,
    input: Input,
    events: queue::Receiver<(Value, Instant)>,
    /// Where it copies what it plays (`--audio-tap`), for audio steps.
    tap: std::path::PathBuf,
    running: Running,
    /// A process's last lines on stderr, once it ends: why it could not
    /// start, in its own words.
    stderr: Option<tokio::task::JoinHandle<String>>,
    /// The flow's `ignore_errors` for it.
    ignore_errors: Vec<i64>,
    /// What its `MEDIA_STATS` said of each call (by room), the latest.
    media: Vec<(u64, MediaFigures)>,
}

/// Where a device's command lines go.
enum Input {
    Pipe(Box<dyn AsyncWrite + Unpin + Send>),
    Lines(mpsc::Sender<headless::Line>),
}

enum Running {
    Process(Child),
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
}

/// Everything each device was sent and saw, and each step's verdict, for
/// the report.
pub(crate) struct Timeline {
    start: Instant,
    /// Off, it stays empty.
    keep: bool,
    rows: Vec<Row>,
    steps: Vec<String>,
}

impl Timeline {
    fn new(keep: bool) -> Timeline {
        Timeline {
            start: Instant::now(),
            keep,
            rows: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// What `device` was sent or saw at `at`.
    fn push(&mut self, at: Instant, device: usize, entry: impl FnOnce() -> Entry) {
        if self.keep {
            self.rows.push(Row {
                at: at - self.start,
                device,
                entry: entry(),
            });
        }
    }

    /// A step's verdict line.
    fn step(&mut self, line: String) {
        if self.keep {
            self.steps.push(line);
        }
    }
}

struct Row {
    at: Duration,
    device: usize,
    entry: Entry,
}

enum Entry {
    Sent(Map<String, Value>),
    Seen(Value),
}

impl Device {
    /// The next event, or `None` after `until`.
    async fn next(
        &mut self,
        until: tokio::time::Instant,
        timeline: &mut Timeline,
        index: usize,
    ) -> Option<Value> {
        match tokio::time::timeout_at(until, self.events.recv()).await {
            Ok(Some((event, at))) => {
                if let Some((room, figures)) = MediaFigures::of(&event) {
                    // A call's figures at its end replace those asked for
                    // mid-call: one stream, counted once.
                    match self.media.iter_mut().find(|(r, _)| *r == room) {
                        Some(latest) => latest.1 = figures,
                        None => self.media.push((room, figures)),
                    }
                }
                timeline.push(at, index, || Entry::Seen(event.clone()));
                Some(event)
            }
            _ => None,
        }
    }

    /// Writes a command, on the timeline as of before the write: the device
    /// may answer before the write returns, and its answer must not look
    /// older than the command that caused it.
    async fn send(
        &mut self,
        command: &Map<String, Value>,
        timeline: &mut Timeline,
        index: usize,
    ) -> std::io::Result<()> {
        let at = Instant::now();
        let line = Value::Object(command.clone()).to_string();
        let written = match &mut self.input {
            Input::Pipe(stdin) => stdin.write_all(format!("{line}\n").as_bytes()).await,
            Input::Lines(lines) => (lines.send(Ok(line)).await)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "device ended")),
        };
        timeline.push(at, index, || Entry::Sent(command.clone()));
        written
    }

    /// What a device process that has ended said last, or `None` while it
    /// runs (after up to a second for one whose events have ended).
    async fn last_words(&mut self, events_ended: bool) -> Option<String> {
        let Running::Process(child) = &mut self.running else {
            return None;
        };
        let wait = Duration::from_secs(u64::from(events_ended));
        tokio::time::timeout(wait, child.wait()).await.ok()?.ok()?;
        let words = tokio::time::timeout(Duration::from_secs(1), self.stderr.take()?);
        let words = words.await.ok()?.ok()?;
        Some(match words.is_empty() {
            true => "nothing on stderr".to_owned(),
            false => words,
        })
    }

    /// Waits (up to 3 s) for the device to end after `quit`.
    async fn ended(&mut self) {
        let wait = async {
            match &mut self.running {
                Running::Process(child) => drop(child.wait().await),
                Running::Task(task) => drop(task.await),
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), wait).await;
    }
}

/// Runs a flow; prints each step; returns whether every step passed.
/// How a flow went.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub file: std::path::PathBuf,
    pub passed: bool,
    /// Each step run, in order (the failed one last).
    pub steps: Vec<StepOutcome>,
    /// Why it failed, in a line.
    pub failure: Option<String>,
    pub duration: Duration,
    /// Every device's events side by side, when the flow failed.
    pub timeline: Option<String>,
    /// Each call's media figures as each device last reported them
    /// (`MEDIA_STATS` at the call's end; a mid-call answer where none came
    /// after), for `termphone load` to add up.
    pub media: Vec<MediaFigures>,
}

/// What one `MEDIA_STATS` said of a call's voice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MediaFigures {
    pub mos: f64,
    pub loss_percent: f64,
    /// `None`: nothing audible was played in the call.
    pub time_to_first_audio_ms: Option<u64>,
}

impl MediaFigures {
    /// The call's room and its figures, from a `MEDIA_STATS`.
    fn of(event: &Value) -> Option<(u64, MediaFigures)> {
        (event["event"] == "MEDIA_STATS").then_some(())?;
        let figures = MediaFigures {
            mos: event["mos"].as_f64()?,
            loss_percent: event["lossPercent"].as_f64()?,
            time_to_first_audio_ms: event["timeToFirstAudioMs"].as_u64(),
        };
        Some((event["roomID"].as_u64()?, figures))
    }
}

impl Outcome {
    /// A run that failed before its first device started.
    pub fn not_started(flow: &Flow, why: String) -> Outcome {
        Outcome {
            name: flow.name.clone(),
            file: flow.file.clone(),
            passed: false,
            steps: Vec::new(),
            failure: Some(why),
            duration: Duration::ZERO,
            timeline: None,
            media: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StepOutcome {
    /// 1-based, as the report and the step errors count.
    pub step: usize,
    pub device: String,
    pub passed: bool,
    /// What it did or expected, and for a failure what arrived instead.
    pub what: String,
    pub ms: u64,
    /// When it ended, from the flow's start.
    pub at_ms: u64,
    /// How long it took, to the microsecond (`termphone load`'s histograms).
    pub elapsed: Duration,
}

/// Runs `flow` and prints it step by step. An error is a flow that could
/// not be run at all (its bundled relay would not start).
pub async fn run(
    flow: &Flow,
    relay_url: Option<String>,
    relay_fingerprint: Option<crate::tls::Fingerprint>,
    tenant: &Tenant,
    report: Option<&Path>,
    interrupt: Interrupt,
) -> Result<Outcome, FlowError> {
    let started = Instant::now();
    let data = tempfile::tempdir().map_err(|e| FlowError::Relay(e.to_string()))?;
    let (url, fingerprint, relay) = match relay_url {
        Some(url) => {
            if let Some(warning) = flow.relay.ignored_by(&flow.name, &url) {
                eprintln!("termphone: {warning}");
            }
            (url, relay_fingerprint, None)
        }
        None => {
            let handle = start_relay(&flow.relay, data.path()).await?;
            (handle.url(), handle.fingerprint(), Some(handle))
        }
    };
    println!("flow: {}", flow.name);
    if !flow.description.is_empty() {
        println!("      {}", flow.description);
    }
    let place = Place {
        url,
        fingerprint,
        data: data.path(),
        launch: Launch::Process,
        names: &Names::default(),
        verbose: true,
        tenant,
        interrupt: Some(interrupt),
    };
    let keep = match report {
        Some(_) => Keep::Everything,
        None => Keep::ToLastStep,
    };
    let (mut outcome, timeline) = execute(flow, &place, keep).await;
    let passed = outcome.passed;
    println!("{}", if passed { "PASS" } else { "FAIL" });
    if let Some(path) = report {
        let text = if is_html(path) {
            render_html(flow, &timeline, passed)
        } else {
            render_text(flow, &timeline, passed)
        };
        std::fs::write(path, text)
            .map_err(|e| FlowError::Read(path.display().to_string(), e.to_string()))?;
    }
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    outcome.duration = started.elapsed();
    Ok(outcome)
}

/// The app a flow's devices log in to, and the secret their tickets are
/// minted with: the development app, which a bundled relay hosts, unless
/// the flow runs against a relay of its own (`--relay`), where the
/// config's `[client] app` and `secret` are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub app: crate::ids::AppId,
    pub secret: String,
}

impl Default for Tenant {
    fn default() -> Self {
        let client = crate::config::ClientConfig::default();
        Tenant {
            app: client.app,
            secret: client.secret,
        }
    }
}

/// Where and how a flow's devices run.
pub struct Place<'a> {
    pub url: String,
    pub fingerprint: Option<crate::tls::Fingerprint>,
    /// A scratch directory: the devices' data and audio taps.
    pub data: &'a Path,
    pub launch: Launch,
    /// The users the devices log in as (a load iteration's own).
    pub names: &'a Names,
    /// Print each step as it ends.
    pub verbose: bool,
    /// The app the devices log in to, with its secret.
    pub tenant: &'a Tenant,
    /// A stop signal the flow gets: the step under way fails with its
    /// name.
    pub interrupt: Option<Interrupt>,
}

/// The name of the signal that asked a run to stop, once one has.
pub type Interrupt = watch::Receiver<Option<&'static str>>;

/// Waits for `interrupt`'s signal (forever without one).
async fn interrupted(interrupt: &Option<Interrupt>) -> &'static str {
    let Some(mut interrupt) = interrupt.clone() else {
        return std::future::pending().await;
    };
    let by = interrupt
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|by| *by);
    match by {
        Some(by) => by,
        None => std::future::pending().await,
    }
}

/// Why a flow stopped where it did, stopped by signal `by`.
fn stopped_by(by: &str) -> String {
    format!("interrupted by {by}: the flow stopped here")
}

/// How much of what the devices were sent and saw `execute` keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Nothing: `termphone load` reports a failed step by its reason, and
    /// its thousands of devices would each hold everything they saw.
    Nothing,
    /// To the last step, and to the end when a step failed (the failure's
    /// timeline in the outcome).
    ToLastStep,
    /// Everything, to the end (the `--report`).
    Everything,
}

/// Starts the devices, runs the steps, and quits the devices: how it went,
/// and as much of what happened as `keep` says.
pub(crate) async fn execute(flow: &Flow, place: &Place<'_>, keep: Keep) -> (Outcome, Timeline) {
    let started = Instant::now();
    let mut outcome = Outcome {
        name: flow.name.clone(),
        file: flow.file.clone(),
        passed: false,
        steps: Vec::new(),
        failure: None,
        duration: Duration::ZERO,
        timeline: None,
        media: Vec::new(),
    };
    let mut timeline = Timeline::new(keep != Keep::Nothing);
    // One after another, in the order declared, each logged in and caught
    // up before the next starts: "the latest login" is the last declared.
    // Room for the flow's devices only: grown by a push, the Vec would
    // hold four (a KiB in each of a load's thousands of iterations).
    let mut devices = Vec::with_capacity(flow.devices.len());
    let mut started_all = true;
    let mut interrupted_by = None;
    for (i, spec) in flow.devices.iter().enumerate() {
        match spawn(spec, i, place).await {
            Ok(device) => devices.push(device),
            Err(e) => {
                outcome.failure = Some(e.to_string());
                started_all = false;
                break;
            }
        };
        if spec.login {
            let until = tokio::time::Instant::now() + Duration::from_secs(10);
            // Why not, as the device said: a relay that does not answer,
            // or a login refused (which no waiting mends).
            let mut error = None;
            loop {
                let next = match error {
                    Some((_, true)) => None,
                    _ => tokio::select! {
                        next = devices[i].next(until, &mut timeline, i) => next,
                        by = interrupted(&place.interrupt) => {
                            interrupted_by = Some(by);
                            None
                        }
                    },
                };
                match next {
                    Some(e) if e["event"] == "SYNCED" => break,
                    Some(e) if e["event"] == "ERROR" => {
                        let message = e["message"].as_str().unwrap_or_default().to_owned();
                        error = Some((message, e["cmd"] == "login"));
                    }
                    Some(_) => {}
                    None => {
                        let why = match (interrupted_by, &error) {
                            (Some(by), _) => {
                                format!("device {} was logging in, {}", spec.name, stopped_by(by))
                            }
                            (None, Some((message, true))) => {
                                format!("device {} could not log in: {message}", spec.name)
                            }
                            (None, Some((message, false))) => format!(
                                "device {} did not log in within 10 s: {message}",
                                spec.name
                            ),
                            (None, None) => {
                                let early = tokio::time::Instant::now() < until;
                                match devices[i].last_words(early).await {
                                    Some(words) => format!(
                                        "device {} ended before it logged in: {words}",
                                        spec.name
                                    ),
                                    None => {
                                        format!("device {} did not log in within 10 s", spec.name)
                                    }
                                }
                            }
                        };
                        if place.verbose {
                            println!("  ✗ {why}");
                        }
                        outcome.failure = Some(why);
                        started_all = false;
                        break;
                    }
                }
            }
        }
        if !started_all {
            break;
        }
    }
    let mut saved: BTreeMap<String, Value> = BTreeMap::new();
    let mut passed = started_all;
    let steps = if started_all { &flow.steps[..] } else { &[] };
    for (n, step) in steps.iter().enumerate() {
        let i = flow
            .devices
            .iter()
            .position(|d| d.name == step.device)
            .expect("checked at load");
        let t = Instant::now();
        let outcome_of_step = tokio::select! {
            outcome = run_step(
                step,
                &mut devices[i],
                &mut saved,
                &mut timeline,
                i,
                place.names,
            ) => outcome,
            by = interrupted(&place.interrupt) => Err(stopped_by(by)),
        };
        let elapsed = t.elapsed();
        let ms = elapsed.as_millis();
        let at = timeline.start.elapsed().as_millis();
        let (line, ok, what) = match outcome_of_step {
            Ok(what) => (
                format!(
                    "  ✓ {:>3} [{}] {what}  ({ms} ms, at {at} ms)",
                    n + 1,
                    step.device
                ),
                true,
                what,
            ),
            Err(why) => {
                passed = false;
                (
                    format!("  ✗ {:>3} [{}] {why}", n + 1, step.device),
                    false,
                    why,
                )
            }
        };
        if !ok {
            outcome.failure = Some(format!("step {} [{}]: {what}", n + 1, step.device));
        }
        outcome.steps.push(StepOutcome {
            step: n + 1,
            device: step.device.clone(),
            passed: ok,
            what,
            ms: ms as u64,
            at_ms: at as u64,
            elapsed,
        });
        if place.verbose {
            println!("{line}");
        }
        timeline.step(line);
        if !passed {
            break;
        }
    }
    if passed && let Some((i, fault)) = unread_fault(&mut devices, &mut timeline).await {
        passed = false;
        let what = format!("after the last step: {fault}");
        let line = format!(
            "  ✗ {:>3} [{}] {what}",
            steps.len() + 1,
            flow.devices[i].name
        );
        outcome.failure = Some(format!("{}: {what}", flow.devices[i].name));
        outcome.steps.push(StepOutcome {
            step: steps.len() + 1,
            device: flow.devices[i].name.clone(),
            passed: false,
            what,
            ms: 0,
            at_ms: timeline.start.elapsed().as_millis() as u64,
            elapsed: Duration::ZERO,
        });
        if place.verbose {
            println!("{line}");
        }
        timeline.step(line);
    }
    let quit: Map<String, Value> = [("cmd".to_owned(), Value::from("quit"))]
        .into_iter()
        .collect();
    for (i, d) in devices.iter_mut().enumerate() {
        let _ = d.send(&quit, &mut timeline, i).await;
    }
    for device in &mut devices {
        device.ended().await;
    }
    // What no step waited for: each device's goodbye and a call's last
    // media figures, in its queue by now (its media stopped with its quit);
    // a timeline that keeps events after the last step waits a second more.
    let after = match keep == Keep::Everything || (keep == Keep::ToLastStep && !passed) {
        true => Duration::from_secs(1),
        false => Duration::ZERO,
    };
    let until = tokio::time::Instant::now() + after;
    for (i, d) in devices.iter_mut().enumerate() {
        while d.next(until, &mut timeline, i).await.is_some() {}
        outcome
            .media
            .extend(d.media.drain(..).map(|(_, figures)| figures));
    }
    if !passed && keep != Keep::Nothing {
        outcome.timeline = Some(render_text(flow, &timeline, passed));
    }
    outcome.passed = passed;
    outcome.duration = started.elapsed();
    (outcome, timeline)
}

/// What no step read and a flow cannot pass with: the first `ERROR` or
/// lost connection among the events each device has had since its last
/// step read them (those already here: nothing is waited for).
async fn unread_fault(devices: &mut [Device], timeline: &mut Timeline) -> Option<(usize, String)> {
    for (i, device) in devices.iter_mut().enumerate() {
        let now = tokio::time::Instant::now();
        while let Some(event) = device.next(now, timeline, i).await {
            if let Some(fault) = fault(&event, &device.ignore_errors) {
                return Some((i, fault));
            }
        }
    }
    None
}

/// Why an event that no step expects fails the flow: a command or the
/// device failed (`ERROR`, but for the device's `ignore_errors`), or it
/// lost the relay (`CONNECTION_CHANGED` to `reconnecting` or
/// `disconnected`). `None` for any other event.
fn fault(event: &Value, ignore_errors: &[i64]) -> Option<String> {
    match event["event"].as_str()? {
        "ERROR" => {
            let code = event["code"].as_i64()?;
            if ignore_errors.contains(&code) {
                return None;
            }
            let cmd = match event["cmd"].as_str() {
                Some(cmd) => format!(" ({cmd})"),
                None => String::new(),
            };
            Some(format!(
                "unexpected ERROR {code}{cmd}: {} (a flow that counts on it expects it \
                 in a step, or lists {code} in the device's ignore_errors)",
                event["message"].as_str().unwrap_or_default()
            ))
        }
        "CONNECTION_CHANGED" if event["state"] != "connected" => Some(format!(
            "the device lost its connection to the relay (CONNECTION_CHANGED {})",
            event["state"]
        )),
        _ => None,
    }
}

fn is_html(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
}

async fn start_relay(overrides: &RelayOverrides, dir: &Path) -> Result<RelayHandle, FlowError> {
    let mut config = RelayConfig {
        listen: "127.0.0.1:0".parse().expect("valid"),
        ..RelayConfig::default()
    };
    overrides.apply(&mut config);
    let store = relay::store::Store::open(&dir.join("relay.sqlite3"))
        .map_err(|e| FlowError::Relay(e.to_string()))?;
    relay::start(&config, store)
        .await
        .map_err(|e| FlowError::Relay(e.to_string()))
}

async fn spawn(spec: &DeviceSpec, index: usize, place: &Place<'_>) -> Result<Device, FlowError> {
    let failed = |e: String| FlowError::Device(spec.name.clone(), e);
    let device = spec.device.clone().unwrap_or_else(|| spec.name.clone());
    let user = place.names.user(&spec.user);
    let tap = place
        .data
        .join(format!("{}-device-{index}.tap", place.names.tag()));
    let (tx, events) = queue::unbounded();
    let mut stderr = None;
    let (input, running) = match &place.launch {
        Launch::Process => {
            let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
            let config = place.data.join("config");
            if *place.tenant != Tenant::default() {
                // The devices read it as their config: a `login` step mints
                // its ticket with the secret too.
                let file = config.join("termphone/config.toml");
                let text = toml::to_string(&toml::toml! {
                    [client]
                    app = (place.tenant.app)
                    secret = (place.tenant.secret.clone())
                })
                .expect("plain data");
                std::fs::create_dir_all(config.join("termphone"))
                    .and_then(|()| std::fs::write(&file, text))
                    .map_err(|e| failed(format!("{}: {e}", file.display())))?;
            }
            let mut command = tokio::process::Command::new(exe);
            command
                .args(["headless", "--relay", &place.url, "--device", &device])
                .args(["--platform", &spec.platform])
                .env("XDG_DATA_HOME", place.data.join("devices"))
                .env("XDG_CONFIG_HOME", &config)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if spec.login {
                command.args(["--user", &user]);
            }
            if spec.multi_device {
                command.arg("--multi-device");
            }
            if let Some(fingerprint) = place.fingerprint {
                command
                    .arg("--relay-fingerprint")
                    .arg(fingerprint.to_string());
            }
            command
                .arg("--audio-in")
                .arg(spec.audio_in.to_string())
                .arg("--audio-out")
                .arg(spec.audio_out.to_string())
                .arg("--audio-tap")
                .arg(&tap);
            let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            tokio::spawn(read_events(stdout, tx));
            stderr = Some(tokio::spawn(last_lines(
                child.stderr.take().expect("piped"),
            )));
            (Input::Pipe(Box::new(stdin)), Running::Process(child))
        }
        Launch::InProcess { stop, media } => {
            let parse = |e: crate::error::Error| failed(e.message);
            let args = DeviceArgs {
                relay: Some(place.url.clone()),
                relay_fingerprint: place.fingerprint,
                device: Some(DeviceId::parse(&device).map_err(parse)?),
                platform: Some(Platform::parse(&spec.platform).map_err(parse)?),
                multi_device: spec.multi_device,
                audio_in: Some(spec.audio_in.clone()),
                audio_out: Some(spec.audio_out.clone()),
                audio_tap: Some(tap.clone()),
                ..DeviceArgs::default()
            };
            let dirs = Dirs {
                config_file: place.data.join("none.toml"),
                data_dir: place
                    .data
                    .join(format!("{}-device-{index}", place.names.tag())),
            };
            let mut config = crate::config::Config::default();
            config.client.app = place.tenant.app;
            config.client.secret = place.tenant.secret.clone();
            let mut settings = ClientSettings {
                store: StoreChoice::Memory,
                without_media: !media,
                ..args.settings(&config, &dirs, &AudioSpec::Null)
            };
            settings.media.raise_priority = false;
            let options = headless::HeadlessOptions {
                settings,
                user: Ok(match spec.login {
                    true => Some(UserId::parse(&user).map_err(parse)?),
                    false => None,
                }),
                device: args.device_id(&config),
                user_sig: None,
            };
            let (lines_tx, lines) = mpsc::channel(16);
            let mut stop = stop.clone();
            let stop = Box::pin(async move {
                let _ = stop.wait_for(Option::is_some).await;
            });
            // Its events come as values, with no text in between.
            let task = tokio::spawn(headless::serve(options, lines, tx, stop));
            (Input::Lines(lines_tx), Running::Task(task))
        }
    };
    Ok(Device {
        name: spec.name.clone(),
        input,
        events,
        tap,
        running,
        stderr,
        ignore_errors: spec.ignore_errors.clone(),
        media: Vec::new(),
    })
}

/// The last lines a device process writes to stderr, read as it writes
/// them so that it never blocks on a full pipe.
async fn last_lines(stderr: impl AsyncRead + Unpin) -> String {
    const KEPT: usize = 4;
    let mut lines = BufReader::new(stderr).lines();
    let mut last = std::collections::VecDeque::with_capacity(KEPT);
    while let Ok(Some(line)) = lines.next_line().await {
        if last.len() == KEPT {
            last.pop_front();
        }
        last.push_back(line);
    }
    Vec::from(last).join(" ")
}

/// A headless process's stdout, each line the event it holds, stamped
/// when it was read.
async fn read_events(stdout: impl AsyncRead + Unpin, events: queue::Sender<(Value, Instant)>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && events.send((v, Instant::now())).is_err()
        {
            break;
        }
    }
}

async fn run_step(
    step: &Step,
    device: &mut Device,
    saved: &mut BTreeMap<String, Value>,
    timeline: &mut Timeline,
    index: usize,
    names: &Names,
) -> Result<String, String> {
    let mut fields = json_of(&step.fields);
    names.rename(&mut fields);
    // What the event must hold, saved values in place of their `$name`s
    // (said as the flow says it, as a send is).
    let mut expected = fields.clone();
    substitute(&mut expected, saved).map_err(|e| format!("fields: {e}"))?;
    if let Some(send) = &step.send {
        let mut command = json_of(send);
        names.rename(&mut command);
        // Said as the flow says it (`$name`, not this run's value, which the
        // timeline has): so `termphone load` reads one step the same in
        // every iteration.
        let written = format!("send {}", Value::Object(command.clone()));
        substitute(&mut command, saved).map_err(|e| format!("send: {e}"))?;
        device
            .send(&command, timeline, index)
            .await
            .map_err(|e| format!("send to {}: {e}", device.name))?;
        return Ok(written);
    }
    if let Some(name) = &step.expect {
        let within = Duration::from_millis(step.within_ms.unwrap_or(5_000));
        let until = tokio::time::Instant::now() + within;
        let mut arrived = Arrived::default();
        while let Some(event) = device.next(until, timeline, index).await {
            if event["event"] == name.as_str() && matches(&event, &expected, &step.comparisons) {
                for (key, field) in &step.save {
                    let Some(value) = event.get(field) else {
                        let has: Vec<&str> = event
                            .as_object()
                            .map(|o| o.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Err(format!(
                            "got {name}, which has no field {field:?} to save as {key} (its \
                             fields: {})",
                            has.join(", ")
                        ));
                    };
                    saved.insert(key.clone(), value.clone());
                }
                return Ok(format!("got {}", describe(name, &fields, step)));
            }
            if event["event"] != name.as_str()
                && let Some(fault) = fault(&event, &device.ignore_errors)
            {
                return Err(format!(
                    "{fault}, while expecting {}",
                    describe(name, &fields, step)
                ));
            }
            arrived.push(brief(&event, fields.keys().chain(step.compare.keys())));
        }
        return Err(format!(
            "expected {} within {} ms; arrived: {arrived}",
            describe(name, &fields, step),
            within.as_millis(),
        ));
    }
    if let Some(audio) = &step.expect_audio {
        let within = step
            .within_ms
            .map_or_else(|| audio.default_within(), Duration::from_millis);
        return (Ear::new(&device.tap))
            .expect_audio(&device.name, audio, within)
            .await;
    }
    if let Some(silence) = &step.expect_silence {
        let within = step
            .within_ms
            .map_or_else(|| silence.default_within(), Duration::from_millis);
        return (Ear::new(&device.tap))
            .expect_silence(&device.name, silence, within)
            .await;
    }
    let name = step.expect_none.as_ref().expect("checked at load");
    let window = Duration::from_millis(step.for_ms.unwrap_or(500));
    let until = tokio::time::Instant::now() + window;
    while let Some(event) = device.next(until, timeline, index).await {
        if event["event"] == name.as_str() && matches(&event, &expected, &step.comparisons) {
            return Err(format!(
                "expected no {} for {} ms; arrived: {}",
                describe(name, &fields, step),
                window.as_millis(),
                brief(&event, fields.keys().chain(step.compare.keys()))
            ));
        }
        if event["event"] != name.as_str()
            && let Some(fault) = fault(&event, &device.ignore_errors)
        {
            return Err(format!(
                "{fault}, while watching for no {}",
                describe(name, &fields, step)
            ));
        }
    }
    Ok(format!(
        "no {} for {} ms",
        describe(name, &fields, step),
        window.as_millis()
    ))
}

fn json_of(table: &toml::Table) -> Map<String, Value> {
    match serde_json::to_value(table) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Replaces string values `$name` by what an earlier step saved.
fn substitute(
    command: &mut Map<String, Value>,
    saved: &BTreeMap<String, Value>,
) -> Result<(), String> {
    for value in command.values_mut() {
        if let Value::String(s) = value
            && let Some(name) = s.strip_prefix('$')
        {
            *value = saved
                .get(name)
                .cloned()
                .ok_or_else(|| format!("${name} was not saved by an earlier step"))?;
        }
    }
    Ok(())
}

/// The event has every field of `fields` and holds every comparison (a
/// field that is missing or not a number holds none).
fn matches(
    event: &Value,
    fields: &Map<String, Value>,
    comparisons: &[(String, Comparison)],
) -> bool {
    fields.iter().all(|(k, v)| &event[k] == v)
        && (comparisons.iter()).all(|(k, c)| event[k].as_f64().is_some_and(|v| c.holds(v)))
}

fn describe(name: &str, fields: &Map<String, Value>, step: &Step) -> String {
    let mut out = name.to_owned();
    if !fields.is_empty() {
        let _ = write!(out, " {}", Value::Object(fields.clone()));
    }
    for (field, text) in &step.compare {
        let _ = write!(out, " {field} {}", text.trim());
    }
    out
}

/// What came instead of an expected event, each in brief; a run of the
/// same (five voice levels a second) once, with its count.
#[derive(Default)]
struct Arrived(Vec<(String, u32)>);

impl Arrived {
    fn push(&mut self, seen: String) {
        match self.0.last_mut() {
            Some((last, n)) if *last == seen => *n += 1,
            _ => self.0.push((seen, 1)),
        }
    }
}

impl std::fmt::Display for Arrived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        for (i, (seen, n)) in self.0.iter().enumerate() {
            let comma = if i > 0 { ", " } else { "" };
            match n {
                1 => write!(f, "{comma}{seen}")?,
                n => write!(f, "{comma}{seen} ×{n}")?,
            }
        }
        Ok(())
    }
}

/// An event in a line: its name, the fields that usually tell events
/// apart, and `asked` (those a step names), each once.
fn brief<'a>(event: &Value, asked: impl Iterator<Item = &'a String>) -> String {
    let name = event["event"].as_str().unwrap_or("?");
    let mut out = name.to_owned();
    let mut keys: Vec<&str> = vec![
        "reason", "userID", "from", "text", "code", "status", "state", "message",
    ];
    for key in asked {
        if !keys.contains(&key.as_str()) {
            keys.push(key);
        }
    }
    for key in keys {
        if let Some(v) = event.get(key).filter(|v| !v.is_null()) {
            let _ = write!(out, " {key}={v}");
        }
    }
    out
}

/// The rows in the order things happened; a command before what it caused
/// (`Device::send` stamps it before writing it).
fn in_order(timeline: &Timeline) -> Vec<&Row> {
    let mut rows: Vec<&Row> = timeline.rows.iter().collect();
    rows.sort_by_key(|r| r.at);
    rows
}

fn is_voice_level(row: &Row) -> bool {
    matches!(&row.entry, Entry::Seen(e) if e["event"] == "USER_VOICE_VOLUME")
}

/// Every device's events side by side, one column per device, each column
/// as wide as its longest entry so that nothing is cut.
fn render_text(flow: &Flow, timeline: &Timeline, passed: bool) -> String {
    let mut out = format!(
        "flow: {}\nresult: {}\n\n",
        flow.name,
        if passed { "PASS" } else { "FAIL" }
    );
    for step in &timeline.steps {
        let _ = writeln!(out, "{step}");
    }
    out.push('\n');
    // Five a second per device in a call would bury the flow; the HTML
    // report keeps them.
    let rows: Vec<(&Row, String)> = in_order(timeline)
        .into_iter()
        .filter(|r| !is_voice_level(r))
        .map(|r| {
            let cell = match &r.entry {
                Entry::Sent(command) => format!("> {}", Value::Object(command.clone())),
                Entry::Seen(event) => brief(event, std::iter::empty()),
            };
            (r, cell)
        })
        .collect();
    let headers: Vec<String> = flow
        .devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.user))
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter(|(r, _)| r.device == i)
                .map(|(_, cell)| cell.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = format!("{:>8}", "ms");
    for (h, width) in headers.iter().zip(&widths) {
        let _ = write!(line, " | {h:<width$}");
    }
    let _ = writeln!(out, "{}", line.trim_end());
    for (row, cell) in rows {
        let mut line = format!("{:>8}", row.at.as_millis());
        for (i, width) in widths.iter().enumerate() {
            let text = if i == row.device { cell.as_str() } else { "" };
            let _ = write!(line, " | {text:<width$}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The whole timeline as one HTML page to attach to a ticket: every event
/// of every device with every field, every command sent, each step's
/// verdict. Voice levels are hidden until asked for, with no script.
fn render_html(flow: &Flow, timeline: &Timeline, passed: bool) -> String {
    let verdict = if passed { "PASS" } else { "FAIL" };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>flow: {name}: {verdict}</title>\n<style>\n\
         body {{ font-family: sans-serif; }}\n\
         table {{ border-collapse: collapse; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }}\n\
         td.ms {{ text-align: right; }}\n\
         tr.sent {{ background: #eef4ff; }}\n\
         tr.ERROR {{ background: #ffecec; }}\n\
         .PASS {{ color: #060; }} .FAIL {{ color: #a00; }}\n\
         code {{ white-space: pre-wrap; word-break: break-all; }}\n\
         body:has(#levels:not(:checked)) tr.USER_VOICE_VOLUME {{ display: none; }}\n\
         </style>\n</head>\n<body>\n<h1>flow: {name}</h1>\n",
        name = html(&flow.name)
    );
    if !flow.description.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", html(&flow.description));
    }
    let _ = writeln!(out, "<p>result: <b class=\"{verdict}\">{verdict}</b></p>");
    out.push_str(
        "<h2>Devices</h2>\n<table>\n<tr><th>name</th><th>user</th><th>device id</th>\
         <th>platform</th><th>multi_device</th><th>login</th><th>audio_in</th><th>audio_out</th></tr>\n",
    );
    for d in &flow.devices {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(&d.name),
            html(&d.user),
            html(d.device.as_deref().unwrap_or(&d.name)),
            html(&d.platform),
            d.multi_device,
            d.login,
            html(&d.audio_in.to_string()),
            html(&d.audio_out.to_string()),
        );
    }
    out.push_str("</table>\n<h2>Steps</h2>\n<pre>\n");
    for step in &timeline.steps {
        let _ = writeln!(out, "{}", html(step));
    }
    let levels = timeline.rows.iter().filter(|r| is_voice_level(r)).count();
    let _ = write!(
        out,
        "</pre>\n<h2>Timeline</h2>\n<p><label><input type=\"checkbox\" id=\"levels\"> \
         show USER_VOICE_VOLUME ({levels} rows)</label></p>\n<table>\n\
         <tr><th>ms</th><th>device</th><th>event</th><th>fields</th></tr>\n"
    );
    for row in in_order(timeline) {
        let d = &flow.devices[row.device];
        let (class, name, fields) = match &row.entry {
            Entry::Sent(command) => {
                let mut fields = command.clone();
                let cmd = fields.remove("cmd").unwrap_or(Value::Null);
                let cmd = cmd.as_str().map_or_else(|| cmd.to_string(), str::to_owned);
                ("sent".to_owned(), format!("&gt; {}", html(&cmd)), fields)
            }
            Entry::Seen(event) => {
                let mut fields = event.as_object().cloned().unwrap_or_default();
                let name = match fields.remove("event") {
                    Some(Value::String(name)) => name,
                    _ => "?".to_owned(),
                };
                (name.clone(), html(&name), fields)
            }
        };
        let fields: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("<code>{} = {}</code>", html(k), html(&v.to_string())))
            .collect();
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td class=\"ms\">{:.1}</td><td>{} ({})</td><td>{name}</td><td>{}</td></tr>",
            html(&class),
            row.at.as_secs_f64() * 1000.0,
            html(&d.name),
            html(&d.user),
            fields.join("<br>")
        );
    }
    out.push_str("</table>\n</body>\n</html>\n");
    out
}

/// Text as HTML or XML character data or attribute value: the markup
/// characters escaped, and the characters XML 1.0 cannot hold at all
/// (controls other than tab and line breaks) written as `\u{..}`.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || matches!(c, '\u{fffe}' | '\u{ffff}') => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    const DEVICES: &str = "name = \"t\"\n\n[[device]]\nname = \"bob\"\nuser = \"bob\"\n\n[[device]]\nname = \"a1\"\nuser = \"alice\"\n";

    /// Loads `DEVICES` followed by `steps`; the error's text.
    fn refused(steps: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, format!("{DEVICES}{steps}")).unwrap();
        match Flow::load(&path) {
            Ok(_) => panic!("loaded:\n{steps}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_network_the_relay_cannot_simulate_is_refused_in_the_flows_words() {
        let e = refused(&format!(
            "[relay]\nmedia_loss = 90\nmedia_loss_burst = 2\n{RING}"
        ));
        assert!(
            e.ends_with("[relay] 90% loss cannot come in bursts of 2 frames on average; lower media_loss or make media_loss_burst longer"),
            "{e}"
        );
        let e = refused(&format!("[relay]\nmedia_jitter_ms = 20000\n{RING}"));
        assert!(
            e.ends_with("media_delay_ms and media_jitter_ms are at most 10000"),
            "{e}"
        );
    }

    /// A failed step shows what came with the fields it asked about, and
    /// a run of voice levels once.
    #[test]
    fn what_arrived_names_the_fields_asked_and_counts_runs() {
        let cancel = serde_json::json!({
            "event": "ON_CALL_CANCELED", "reason": "answered_elsewhere",
            "userID": "alice", "deviceID": "a2"
        });
        let asked = ["deviceID".to_owned(), "userID".to_owned()];
        let mut arrived = Arrived::default();
        assert_eq!(arrived.to_string(), "nothing");
        let volume = serde_json::json!({"event": "USER_VOICE_VOLUME", "volumeMap": []});
        for _ in 0..3 {
            arrived.push(brief(&volume, asked.iter()));
        }
        arrived.push(brief(&cancel, asked.iter()));
        assert_eq!(
            arrived.to_string(),
            "USER_VOICE_VOLUME ×3, ON_CALL_CANCELED reason=\"answered_elsewhere\" userID=\"alice\" deviceID=\"a2\""
        );
    }

    #[test]
    fn a_device_named_twice_or_a_bad_user_device_or_platform_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        let load = |devices: String| {
            std::fs::write(&path, format!("{devices}{RING}")).unwrap();
            Flow::load(&path).err().unwrap().to_string()
        };
        let e = load(DEVICES.replace("name = \"a1\"", "name = \"bob\""));
        assert!(e.contains("device \"bob\": named twice"), "{e}");
        let e = load(DEVICES.replace("user = \"bob\"", "user = \"bob bob\""));
        assert!(e.contains("device \"bob\": user \"bob bob\": "), "{e}");
        let e = load(DEVICES.replace("user = \"bob\"", "user = \"bob\"\nplatform = \"Android!\""));
        assert!(
            e.contains("device \"bob\": platform: \"Android!\" is not valid"),
            "{e}"
        );
        let e = load(DEVICES.replace("user = \"bob\"", "user = \"bob\"\ndevice = \"lap top\""));
        assert!(
            e.contains("device \"bob\": device: \"lap top\" is not valid"),
            "{e}"
        );
        // A name that cannot be a device id needs one given.
        let e = load(DEVICES.replace("name = \"bob\"", "name = \"发送者\""));
        assert!(
            e.contains(
                "device \"发送者\": the name is also its device id unless device = \"ID\" \
                 gives one: \"发送者\" is not valid"
            ),
            "{e}"
        );
        let named = DEVICES.replace("name = \"bob\"", "name = \"发送者\"\ndevice = \"laptop\"");
        assert!(load(named).contains("no device named \"bob\""));
    }

    #[test]
    fn a_sound_file_that_is_not_there_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        let flow = "name = \"t\"\n\n[[device]]\nname = \"bob\"\nuser = \"bob\"\naudio_in = \"wav:gone.wav\"\n";
        std::fs::write(&path, format!("{flow}{RING}")).unwrap();
        let e = Flow::load(&path).err().unwrap().to_string();
        let gone = dir.path().join("gone.wav");
        assert!(
            e.contains(&format!("device \"bob\": audio_in: wav:{}", gone.display())),
            "{e}"
        );
    }

    const RING: &str = "\n[[step]]\ndevice = \"bob\"\nsend = { cmd = \"call\", userID = \"alice\" }\n\n[[step]]\ndevice = \"a1\"\nexpect = \"ON_CALL_RECEIVED\"\n";

    #[test]
    fn an_unknown_command_is_refused_at_load_with_its_step_line_and_the_commands() {
        let e = refused(&format!(
            "{RING}\n[[step]]\ndevice = \"a1\"\nsend = {{ cmd = \"decline\" }}\n"
        ));
        // The third step's `[[step]]` is line 19 of the file.
        assert!(e.contains(":19: step 3: "), "{e}");
        assert!(e.contains("unknown command \"decline\""), "{e}");
        assert!(e.contains(&COMMANDS.join(", ")), "{e}");
    }

    #[test]
    fn every_step_that_cannot_run_is_named_at_once() {
        let e = refused(&format!(
            "{RING}\n[[step]]\ndevice = \"a1\"\nsend = {{ cmd = \"decline\" }}\n\
             \n[[step]]\ndevice = \"a1\"\nexpect = \"ON_CALL_RECEIVED\"\nwithin = 3000\n\
             save = {{ call = \"callID\" }}\n\
             \n[[step]]\ndevice = \"a9\"\nexpect = \"CALLING_END\"\n\
             \n[[step]]\ndevice = \"a1\"\nsend = {{ cmd = \"accept\", callId = \"$call\" }}\n"
        ));
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].contains(":19: step 3: send: unknown command \"decline\""),
            "{e}"
        );
        assert!(
            lines[1].contains(":23: step 4: unknown field `within`, expected one of"),
            "{e}"
        );
        assert!(
            lines[2]
                .ends_with(":29: step 5: no device named \"a9\"; the flow's devices are bob, a1"),
            "{e}"
        );
    }

    #[test]
    fn arguments_are_checked_at_load_as_headless_mode_checks_them() {
        let e =
            refused("[[step]]\ndevice = \"bob\"\nsend = { cmd = \"call\", user = \"alice\" }\n");
        assert!(
            e.contains("step 1: send: call: unknown field `user`, expected one of `userID`, `timeout`, `userData`"),
            "{e}"
        );
        let e = refused("[[step]]\ndevice = \"bob\"\nsend = { cmd = \"call\" }\n");
        assert!(e.contains("call: missing field `userID`"), "{e}");
        let e = refused(
            "[[step]]\ndevice = \"bob\"\nsend = { cmd = \"joinInGroupCall\", roomID = \"12\" }\n",
        );
        assert!(
            e.contains("joinInGroupCall: invalid type: string \"12\""),
            "{e}"
        );
        let e = refused(
            "[[step]]\ndevice = \"bob\"\nsend = { cmd = \"call\", userID = \"no spaces\" }\n",
        );
        assert!(e.contains("1 to 32 bytes"), "{e}");
        // A value refused with a code of its own loads, for a flow to
        // expect that ERROR.
        for send in [
            "{ cmd = \"sendDTMF\", digits = \"\" }",
            "{ cmd = \"sendDTMF\", digits = \"12x\" }",
            "{ cmd = \"login\", userID = \"no spaces\" }",
        ] {
            let step = format!("[[step]]\ndevice = \"bob\"\nsend = {send}\n");
            let (dir, path) = (tempfile::tempdir().unwrap(), "f.toml");
            std::fs::write(dir.path().join(path), format!("{DEVICES}{step}")).unwrap();
            let loaded = Flow::load(&dir.path().join(path));
            assert!(loaded.is_ok(), "{send}: {}", loaded.err().unwrap());
        }
        let e = refused("[[step]]\ndevice = \"bob\"\nsend = { userID = \"alice\" }\n");
        assert!(
            e.contains("send needs cmd = \"NAME\"; commands are login,"),
            "{e}"
        );
    }

    /// A key that would do nothing where it is written, and a flow with
    /// nothing to check, are refused: who wrote them believes something
    /// is checked.
    #[test]
    fn keys_that_would_check_nothing_are_refused() {
        let cases = [
            (
                "send = { cmd = \"logout\" }\nfields = { userID = \"bob\" }",
                "fields belong on an expect or expect_none step",
            ),
            (
                "send = { cmd = \"logout\" }\nwithin_ms = 1000",
                "within_ms is how long an expect or audio step waits",
            ),
            (
                "expect_none = \"ON_CALL_RECEIVED\"\nwithin_ms = 1000",
                "an expect_none step watches for for_ms",
            ),
            (
                "expect = \"ON_CALL_RECEIVED\"\nfor_ms = 1000",
                "for_ms is how long an expect_none step watches",
            ),
            (
                "expect_none = \"ON_CALL_RECEIVED\"\nsave = { call = \"callID\" }",
                "save belongs on an expect step",
            ),
            (
                "expect = \"ON_CALL_RECEIVED\"\nsend = { cmd = \"accept\" }",
                "expect_silence; this one has send and expect",
            ),
        ];
        for (step, why) in cases {
            let e = refused(&format!("[[step]]\ndevice = \"bob\"\n{step}\n"));
            assert!(e.contains(why), "{step}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        let devices = DEVICES.replacen('\n', "\nstep = []\n", 1);
        std::fs::write(&path, devices).unwrap();
        let e = Flow::load(&path).expect_err("refused").to_string();
        assert!(
            e.ends_with("has no steps: a flow checks something in at least one [[step]]"),
            "{e}"
        );
    }

    #[test]
    fn a_saved_value_passes_for_any_type_but_must_be_saved_earlier() {
        let e = refused(
            "[[step]]\ndevice = \"bob\"\nsend = { cmd = \"joinInGroupCall\", roomID = \"$room\" }\n",
        );
        assert!(
            e.contains("roomID = \"$room\", but no earlier step saves room"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        let steps = "[[step]]\ndevice = \"a1\"\nexpect = \"ON_CALL_RECEIVED\"\nsave = { room = \"roomID\", call = \"callId\", who = \"sponsor\", list = \"userIDList\" }\n\n\
                     [[step]]\ndevice = \"bob\"\nsend = { cmd = \"joinInGroupCall\", roomID = \"$room\" }\n\n\
                     [[step]]\ndevice = \"bob\"\nsend = { cmd = \"accept\", callId = \"$call\" }\n\n\
                     [[step]]\ndevice = \"bob\"\nsend = { cmd = \"call\", userID = \"$who\", timeout = \"$room\" }\n\n\
                     [[step]]\ndevice = \"bob\"\nsend = { cmd = \"inviteUser\", userIDList = \"$list\" }\n";
        std::fs::write(&path, format!("{DEVICES}{steps}")).unwrap();
        Flow::load(&path).unwrap();
    }

    /// A value of the wrong type is refused naming its key.
    #[test]
    fn a_value_of_the_wrong_type_is_refused_with_its_key() {
        let e = refused("[[step]]\ndevice = \"bob\"\nexpect = \"SYNCED\"\nwithin_ms = \"5000\"\n");
        assert!(
            e.contains("step 1: within_ms: invalid type: string \"5000\""),
            "{e}"
        );
        let e = refused("[[step]]\ndevice = \"bob\"\nexpect_silence = { for_ms = -1 }\n");
        assert!(
            e.contains("step 1: expect_silence.for_ms: invalid value"),
            "{e}"
        );
    }

    /// A device that has quit takes no command: a send to it after its
    /// `quit` step would be lost without a word.
    #[test]
    fn a_send_to_a_device_that_has_quit_is_refused_at_load() {
        let e = refused(
            "[[step]]\ndevice = \"bob\"\nsend = { cmd = \"quit\" }\n\n[[step]]\ndevice = \"a1\"\nsend = { cmd = \"getConversations\" }\n\n[[step]]\ndevice = \"bob\"\nsend = { cmd = \"getConversations\" }\n",
        );
        assert!(
            e.ends_with(
                "step 3: device bob quit at step 1, and a device that has quit takes no command"
            ),
            "{e}"
        );
    }

    #[test]
    fn comparisons_read_their_operator_and_bound() {
        let holds = |text: &str, value: f64| Comparison::parse(text).unwrap().holds(value);
        assert!(holds("<= 1", 1.0) && !holds("< 1", 1.0));
        assert!(holds(">=4.0", 4.0) && !holds("> 4", 4.0));
        assert!(holds("== 0", 0.0) && !holds("==0", 0.5));
        for bad in [
            "",
            "about 3",
            "=> 3",
            ">= three",
            "3",
            "> NaN",
            "< inf",
            ">= -infinity",
        ] {
            let e = Comparison::parse(bad).unwrap_err();
            assert!(e.contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn an_unknown_event_is_refused_at_load_with_the_events() {
        let e = refused("[[step]]\ndevice = \"a1\"\nexpect = \"ON_CALL_RECIEVED\"\n");
        assert!(
            e.contains("step 1: expect: unknown event \"ON_CALL_RECIEVED\""),
            "{e}"
        );
        assert!(e.contains(&EVENT_NAMES.join(", ")), "{e}");
        let e = refused(&format!(
            "{RING}\n[[step]]\ndevice = \"a1\"\nexpect_none = \"CALL_ENDED\"\n"
        ));
        assert!(
            e.contains("step 3: expect_none: unknown event \"CALL_ENDED\""),
            "{e}"
        );
    }

    #[test]
    fn every_example_flow_loads() {
        let mut n = 0;
        for entry in std::fs::read_dir("examples/flows").unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Flow::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 17, "{n} flows");
    }

    /// The backticked names in the first cell of each row of the table in
    /// docs/flows.md whose header starts with `| {first} |`.
    fn documented(first: &str) -> Vec<String> {
        let doc = include_str!("../docs/flows.md");
        let header = format!("| {first} |");
        let mut lines = doc.lines().skip_while(|l| !l.starts_with(&header));
        assert!(
            lines.next().is_some(),
            "docs/flows.md has no table {header}"
        );
        lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .flat_map(|l| {
                let cell = l.split('|').nth(1).unwrap_or("");
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn assert_same(doc: Vec<String>, code: &[&str], what: &str) {
        let listed: BTreeSet<&str> = doc.iter().map(String::as_str).collect();
        assert_eq!(
            listed.len(),
            doc.len(),
            "docs/flows.md lists a {what} twice"
        );
        let code: BTreeSet<&str> = code.iter().copied().collect();
        assert_eq!(
            listed.difference(&code).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "docs/flows.md lists {what}s that do not exist"
        );
        assert_eq!(
            code.difference(&listed).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "docs/flows.md leaves out these {what}s"
        );
    }

    #[test]
    fn docs_list_exactly_the_commands_and_events_a_flow_can_use() {
        assert_same(documented("command"), COMMANDS, "command");
        assert_same(documented("event"), EVENT_NAMES, "event");
    }

    /// A device process that ends before it logs in is heard in its own
    /// words: its last lines on stderr, not a wait that timed out.
    #[tokio::test]
    async fn a_device_that_ends_at_start_up_says_why() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "for n in 1 2 3 4 5; do echo line $n >&2; done; exit 3",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = tokio::spawn(last_lines(child.stderr.take().unwrap()));
        let mut device = Device {
            name: "bob".into(),
            input: Input::Lines(mpsc::channel(1).0),
            events: queue::unbounded().1,
            tap: "unused.tap".into(),
            running: Running::Process(child),
            stderr: Some(stderr),
            ignore_errors: Vec::new(),
            media: Vec::new(),
        };
        let words = device.last_words(true).await;
        assert_eq!(words.as_deref(), Some("line 2 line 3 line 4 line 5"));
    }

    fn flow_of_two() -> Flow {
        let text = format!("{DEVICES}\n[[step]]\ndevice = \"a1\"\nexpect = \"SDK_READY\"\n");
        Flow::parse(&text, Path::new("t.toml")).unwrap()
    }

    /// A device that answers the moment a command is written, before the
    /// write returns: what a fast device on a busy machine can do.
    struct Prompt(queue::Sender<(Value, Instant)>);

    impl AsyncWrite for Prompt {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let error = serde_json::json!({"event": "ERROR", "code": 6001, "cmd": "decline"});
            let _ = self.0.send((error, Instant::now()));
            std::thread::sleep(Duration::from_millis(2));
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_command_comes_before_the_error_it_caused() {
        let (tx, events) = queue::unbounded();
        let mut device = Device {
            name: "a1".into(),
            input: Input::Pipe(Box::new(Prompt(tx))),
            events,
            tap: "unused.tap".into(),
            running: Running::Task(tokio::spawn(async { Ok(()) })),
            stderr: None,
            ignore_errors: Vec::new(),
            media: Vec::new(),
        };
        let mut timeline = Timeline::new(true);
        let mut saved = BTreeMap::new();
        let send: Step = toml::from_str("device = \"a1\"\nsend = { cmd = \"decline\" }").unwrap();
        let expect: Step = toml::from_str("device = \"a1\"\nexpect = \"ERROR\"").unwrap();
        for step in [&send, &expect] {
            run_step(
                step,
                &mut device,
                &mut saved,
                &mut timeline,
                1,
                &Names::default(),
            )
            .await
            .unwrap();
        }
        let text = render_text(&flow_of_two(), &timeline, true);
        let sent = text.find(r#"> {"cmd":"decline"}"#).expect(&text);
        let error = text.find("ERROR code=6001").expect(&text);
        assert!(sent < error, "{text}");
        let html = render_html(&flow_of_two(), &timeline, true);
        let sent = html.find("&gt; decline").expect(&html);
        let error = html.find("<td>ERROR</td>").expect(&html);
        assert!(sent < error, "{html}");
    }

    /// `flow` run once as `termphone load` runs an iteration, against a
    /// relay of its own.
    async fn in_process(
        flow: &Flow,
        data: &Path,
        media: bool,
        names: &Names,
        keep: Keep,
    ) -> (Outcome, Timeline) {
        in_process_cut(flow, data, media, names, keep, None).await
    }

    /// As [`in_process`]; with `cut`, the relay stops that long into the
    /// run.
    async fn in_process_cut(
        flow: &Flow,
        data: &Path,
        media: bool,
        names: &Names,
        keep: Keep,
        cut: Option<Duration>,
    ) -> (Outcome, Timeline) {
        let relay_dir = tempfile::tempdir().unwrap();
        let relay = start_relay(&RelayOverrides::default(), relay_dir.path())
            .await
            .unwrap();
        let (_stop_tx, stop) = watch::channel(None);
        let place = Place {
            url: relay.url(),
            fingerprint: relay.fingerprint(),
            data,
            launch: Launch::InProcess { stop, media },
            names,
            verbose: false,
            tenant: &Tenant::default(),
            interrupt: None,
        };
        let run = execute(flow, &place, keep);
        match cut {
            None => {
                let run = run.await;
                relay.shutdown().await;
                run
            }
            Some(after) => {
                let cut = async {
                    tokio::time::sleep(after).await;
                    relay.shutdown().await;
                };
                tokio::join!(run, cut).0
            }
        }
    }

    /// An `ERROR` that no step expects fails the flow: at the step that
    /// reads it, or, read by none, after the last step. One a step
    /// expects is that step's; one whose code the device ignores, nobody's.
    #[tokio::test]
    async fn an_error_no_step_expects_fails_the_flow() {
        let call_yourself =
            "[[step]]\ndevice = \"a1\"\nsend = { cmd = \"call\", userID = \"alice\" }\n\n";
        // Read by none: bob's window gives alice's ERROR time to come.
        let unread =
            "[[step]]\ndevice = \"bob\"\nexpect_none = \"ON_CALL_RECEIVED\"\nfor_ms = 500\n";
        // (a1, the last device declared, and what follows the call.)
        let then = [
            // Read by a step that waits for something else.
            (
                "",
                "[[step]]\ndevice = \"a1\"\nexpect = \"CALL_DIALING\"\nwithin_ms = 2000\n",
            ),
            ("", unread),
            (
                "",
                "[[step]]\ndevice = \"a1\"\nexpect = \"ERROR\"\nfields = { code = 6101 }\n",
            ),
            // A code the device is told to ignore.
            ("ignore_errors = [6101]\n", unread),
        ];
        let data = tempfile::tempdir().unwrap();
        let mut failures = Vec::new();
        for (a1, then) in then {
            let flow = Flow::parse(
                &format!("{DEVICES}{a1}\n{call_yourself}{then}"),
                Path::new("t.toml"),
            )
            .unwrap();
            let (outcome, _) =
                in_process(&flow, data.path(), false, &Names::default(), Keep::Nothing).await;
            let last = outcome.steps.last().unwrap();
            failures.push((last.step, last.passed, outcome.failure));
        }
        let unexpected = "unexpected ERROR 6101 (call): ";
        let (step, passed, failure) = &failures[0];
        let failure = failure.as_deref().unwrap();
        assert_eq!((*step, *passed), (2, false));
        assert!(
            failure.starts_with(&format!("step 2 [a1]: {unexpected}")),
            "{failure}"
        );
        assert!(
            failure.ends_with(", while expecting CALL_DIALING"),
            "{failure}"
        );
        let (step, passed, failure) = &failures[1];
        let failure = failure.as_deref().unwrap();
        assert_eq!((*step, *passed), (3, false));
        assert!(
            failure.starts_with(&format!("a1: after the last step: {unexpected}")),
            "{failure}"
        );
        assert_eq!(failures[2], (2, true, None));
        assert_eq!(failures[3], (2, true, None));
    }

    /// A device that loses the relay fails the step under way.
    #[tokio::test]
    async fn a_lost_connection_fails_the_step_under_way() {
        let flow = Flow::parse(
            &format!("{DEVICES}\n[[step]]\ndevice = \"a1\"\nexpect_none = \"ON_CALL_RECEIVED\"\nfor_ms = 20000\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        // Well after both devices logged in (at once, in process), well
        // before the step's 20 s are over.
        let cut = Some(Duration::from_secs(3));
        let (outcome, _) = in_process_cut(
            &flow,
            data.path(),
            false,
            &Names::default(),
            Keep::Nothing,
            cut,
        )
        .await;
        assert_eq!(
            outcome.failure.as_deref(),
            Some(
                "step 1 [a1]: the device lost its connection to the relay \
                 (CONNECTION_CHANGED \"reconnecting\"), while watching for no ON_CALL_RECEIVED"
            )
        );
    }

    /// `termphone load`'s devices: a store that works (the conversation
    /// comes from it) and not one file in their data directory.
    #[tokio::test]
    async fn in_process_devices_keep_their_store_in_memory_and_write_no_files() {
        let chat = "\n[[step]]\ndevice = \"bob\"\nsend = { cmd = \"sendMessage\", userID = \"alice\", text = \"hi\" }\n\n[[step]]\ndevice = \"a1\"\nexpect = \"MESSAGE_RECEIVED\"\n\n[[step]]\ndevice = \"a1\"\nsend = { cmd = \"getConversations\" }\n\n[[step]]\ndevice = \"a1\"\nexpect = \"CONVERSATIONS\"\n";
        let flow = Flow::parse(&format!("{DEVICES}{chat}"), Path::new("t.toml")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let (outcome, timeline) = in_process(
            &flow,
            data.path(),
            true,
            &Names::default(),
            Keep::Everything,
        )
        .await;
        assert!(outcome.passed, "{:?}", outcome.failure);
        let conversations = timeline.rows.iter().find_map(|row| match &row.entry {
            Entry::Seen(e) if e["event"] == "CONVERSATIONS" => Some(e["conversations"].clone()),
            _ => None,
        });
        let conversations = conversations.expect("a CONVERSATIONS event");
        assert_eq!(conversations[0]["userID"], "bob", "{conversations}");
        assert_eq!(
            conversations[0]["lastMessage"]["text"], "hi",
            "{conversations}"
        );
        let files: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
        assert!(files.is_empty(), "{files:?}");
    }

    /// A field to save that the matched event does not have fails the
    /// step, naming it and the fields the event has: saved as null, the
    /// mistake would surface steps later as something else.
    #[tokio::test]
    async fn saving_a_field_the_event_lacks_fails_the_step() {
        let chat = "\n[[step]]\ndevice = \"bob\"\nsend = { cmd = \"sendMessage\", userID = \"alice\", text = \"hi\" }\n\n[[step]]\ndevice = \"bob\"\nexpect = \"MESSAGE_SENT\"\nsave = { m = \"msgId\" }\n";
        let flow = Flow::parse(&format!("{DEVICES}{chat}"), Path::new("t.toml")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let names = Names::default();
        let (outcome, _) = in_process(&flow, data.path(), false, &names, Keep::Nothing).await;
        let failure = outcome.failure.expect("the step fails");
        assert!(
            failure.starts_with(
                "step 2 [bob]: got MESSAGE_SENT, which has no field \"msgId\" to save as m (its \
                 fields: "
            ),
            "{failure}"
        );
        assert!(failure.contains("msgID"), "{failure}");
    }

    /// A `$name` in `fields` stands for the value saved, as in a send: the
    /// message bob sent is the one alice receives, by its id.
    #[tokio::test]
    async fn fields_compare_with_saved_values() {
        let steps = |check: &str| {
            format!(
                "{DEVICES}\n[[step]]\ndevice = \"bob\"\nsend = {{ cmd = \"sendMessage\", userID = \"alice\", text = \"hi\" }}\n\n\
                 [[step]]\ndevice = \"bob\"\nexpect = \"MESSAGE_SENT\"\nsave = {{ m = \"msgID\", c = \"clientMsgID\" }}\n\n\
                 [[step]]\ndevice = \"a1\"\nexpect = \"MESSAGE_RECEIVED\"\nfields = {{ msgID = \"${check}\" }}\nwithin_ms = 2000\n"
            )
        };
        let data = tempfile::tempdir().unwrap();
        let names = Names::default();
        for (check, passes) in [("m", true), ("c", false)] {
            let flow = Flow::parse(&steps(check), Path::new("t.toml")).unwrap();
            let (outcome, _) = in_process(&flow, data.path(), false, &names, Keep::Nothing).await;
            assert_eq!(outcome.passed, passes, "${check}: {:?}", outcome.failure);
        }
        let e = refused(
            "[[step]]\ndevice = \"bob\"\nexpect = \"MESSAGE_RECEIVED\"\nfields = { msgID = \"$m\" }\n",
        );
        assert!(
            e.contains("fields: msgID = \"$m\", but no earlier step saves m"),
            "{e}"
        );
    }

    /// `termphone load` runs a flow whose devices have only null audio and
    /// whose steps neither ask the media thread nor wait for its reports
    /// without media: two thirds of the examples, signalling and chat.
    #[test]
    fn only_flows_with_audio_or_media_steps_use_media() {
        let mut uses = Vec::new();
        for entry in std::fs::read_dir("examples/flows").unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && Flow::load(&path).unwrap().uses_media()
            {
                uses.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        uses.sort();
        assert_eq!(
            uses,
            [
                "answered_on_laptop_heard",
                "dtmf",
                "hold",
                "hold_is_silent",
                "media_lost_on_the_way",
                "mute_is_silent",
                "quality_floor_under_loss",
                "roles",
                "speech_like_recording",
                "two_way_audio",
                "voice_and_mute"
            ]
        );
    }

    /// A call without media connects and ends as any other, and its
    /// devices report no media at its end; with media they do.
    #[tokio::test]
    async fn in_process_devices_without_media_still_call() {
        let steps = [
            ("bob", r#"send = { cmd = "call", userID = "alice" }"#),
            ("a1", r#"expect = "ON_CALL_RECEIVED""#),
            ("a1", r#"send = { cmd = "accept" }"#),
            ("bob", r#"expect = "ON_CALL_BEGIN""#),
            ("bob", r#"send = { cmd = "hangup" }"#),
            ("a1", r#"expect = "CALLING_END""#),
            ("a1", "expect_none = \"MEDIA_STATS\"\nfor_ms = 1000"),
        ]
        .map(|(device, step)| format!("\n[[step]]\ndevice = \"{device}\"\n{step}\n"))
        .concat();
        let flow = Flow::parse(&format!("{DEVICES}{steps}"), Path::new("t.toml")).unwrap();
        for media in [false, true] {
            let data = tempfile::tempdir().unwrap();
            let names = Names::iteration(["bob", "alice"], "", u64::from(media));
            let (outcome, _) = in_process(&flow, data.path(), media, &names, Keep::Nothing).await;
            let failed = (outcome.steps.last())
                .filter(|s| !s.passed)
                .map(|s| (s.step, s.what.contains("MEDIA_STATS")));
            match media {
                false => assert!(outcome.passed, "{:?}", outcome.failure),
                true => assert_eq!(failed, Some((7, true)), "{:?}", outcome.failure),
            }
        }
    }

    /// The nice value of every thread of this process named `media`.
    fn media_thread_nice() -> Vec<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // Fields after the command's closing parenthesis; nice is the 19th field.
                let after = &stat[stat.rfind(')')? + 2..];
                (comm.trim() == "media").then(|| after.split(' ').nth(16)?.parse().ok())?
            })
            .collect()
    }

    /// Issue 21: a load process's media threads at nice -10 took every core
    /// from the runtime that drives their calls once there were more than
    /// the cores could encode, so no call could end: they stay at the
    /// runner's priority.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn in_process_media_threads_keep_the_runners_priority() {
        let flow = Flow::load(Path::new("examples/flows/two_way_audio.toml")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let sampling = tokio::spawn(async {
            let mut seen = Vec::new();
            for _ in 0..60 {
                seen.extend(media_thread_nice());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        });
        let names = Names::default();
        let (outcome, _) = in_process(&flow, data.path(), true, &names, Keep::Nothing).await;
        let seen = sampling.await.unwrap();
        assert!(outcome.passed, "{:?}", outcome.failure);
        assert!(!seen.is_empty(), "no media thread was seen during the call");
        assert!(seen.iter().all(|&nice| nice == 0), "{seen:?}");
    }

    fn seen(at_ms: u64, device: usize, event: Value) -> Row {
        Row {
            at: Duration::from_millis(at_ms),
            device,
            entry: Entry::Seen(event),
        }
    }

    fn canceled_timeline() -> Timeline {
        let canceled = serde_json::json!({
            "event": "ON_CALL_CANCELED", "callId": "c-7f3a9d2e-1b4c-4e8f-9a6d-2c5b8e1f4a7d",
            "roomID": 4242, "userID": "bob", "reason": "answered_elsewhere",
            "callMediaType": 1, "callRole": "called", "ts": 1_795_435_200_123_u64
        });
        let volume = serde_json::json!({
            "event": "USER_VOICE_VOLUME", "volumeMap": [{"userID": "alice", "volume": 12}], "ts": 1
        });
        Timeline {
            start: Instant::now(),
            keep: true,
            rows: vec![
                Row {
                    at: Duration::from_millis(3),
                    device: 0,
                    entry: Entry::Sent(json_of(
                        &toml::from_str("cmd = \"call\"\nuserID = \"alice\"").unwrap(),
                    )),
                },
                seen(9, 1, canceled),
                seen(10, 1, volume),
            ],
            steps: vec!["  ✗   5 [a1] expected ON_CALL_CANCELED <declined_elsewhere>".into()],
        }
    }

    #[test]
    fn the_text_report_cuts_no_value() {
        let text = render_text(&flow_of_two(), &canceled_timeline(), false);
        assert!(
            text.contains(r#"ON_CALL_CANCELED reason="answered_elsewhere" userID="bob""#),
            "{text}"
        );
        assert!(
            text.contains(r#"> {"cmd":"call","userID":"alice"}"#),
            "{text}"
        );
        assert!(text.contains("✗   5 [a1] expected"), "{text}");
        assert!(!text.contains("USER_VOICE_VOLUME"), "{text}");
        assert!(text.contains("result: FAIL"), "{text}");
    }

    #[test]
    fn the_html_report_has_every_field_of_every_event() {
        let timeline = canceled_timeline();
        let html = render_html(&flow_of_two(), &timeline, false);
        for row in &timeline.rows {
            let Entry::Seen(event) = &row.entry else {
                continue;
            };
            for (key, value) in event.as_object().unwrap() {
                if key == "event" {
                    assert!(html.contains(&format!("<td>{}</td>", value.as_str().unwrap())));
                } else {
                    let cell = format!("<code>{key} = {}</code>", super::html(&value.to_string()));
                    assert!(html.contains(&cell), "{cell} missing:\n{html}");
                }
            }
        }
        assert!(
            html.contains("<code>userID = &quot;alice&quot;</code>"),
            "{html}"
        );
        assert!(html.contains("&lt;declined_elsewhere&gt;"), "{html}");
        assert!(html.contains("<b class=\"FAIL\">FAIL</b>"), "{html}");
    }
}
