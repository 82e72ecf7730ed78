//! `termphone flow FILE`: runs a call-flow scenario against the bundled
//! relay (or a given one) and says, step by step, what passed.
//!
//! Every device of the scenario is a real `termphone headless` process, so
//! a flow exercises exactly the interface QA scripts use (docs/headless.md).
//! The file format is documented in docs/flows.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::config::RelayConfig;
use crate::media::spec::AudioSpec;
use crate::relay::{self, RelayHandle};

/// A scenario, as written in its TOML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Settings of the bundled relay's development app.
    #[serde(default)]
    pub relay: RelayOverrides,
    #[serde(rename = "device")]
    pub devices: Vec<DeviceSpec>,
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayOverrides {
    pub multi_device_sync: Option<bool>,
    pub compensation_window_days: Option<u32>,
    pub recall_window_secs: Option<u64>,
    pub max_devices_per_platform: Option<u32>,
    pub max_call_participants: Option<usize>,
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

/// One step: exactly one of `send`, `expect`, `expect_none`.
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
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}: {1}")]
    Read(String, String),
    #[error("{file}: step {step}: {message}")]
    Invalid {
        file: String,
        step: usize,
        message: String,
    },
    #[error("cannot start the bundled relay: {0}")]
    Relay(String),
    #[error("cannot start device {0}: {1}")]
    Device(String, String),
}

impl Flow {
    pub fn load(path: &Path) -> Result<Flow, FlowError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| FlowError::Read(file.clone(), e.to_string()))?;
        let mut flow: Flow =
            toml::from_str(&text).map_err(|e| FlowError::Read(file.clone(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for d in &mut flow.devices {
            if let Err(e) = d.audio_out.check_sink() {
                return Err(FlowError::Read(
                    file.clone(),
                    format!("device {:?}: audio_out: {}", d.name, e.message),
                ));
            }
            for spec in [&mut d.audio_in, &mut d.audio_out] {
                if let AudioSpec::Wav(p) = spec
                    && p.is_relative()
                {
                    *p = base.join(&*p);
                }
            }
        }
        for (i, step) in flow.steps.iter().enumerate() {
            let kinds = [
                step.send.is_some(),
                step.expect.is_some(),
                step.expect_none.is_some(),
            ];
            let invalid = |message: String| FlowError::Invalid {
                file: file.clone(),
                step: i + 1,
                message,
            };
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(invalid(
                    "a step has exactly one of send, expect, expect_none".into(),
                ));
            }
            if !flow.devices.iter().any(|d| d.name == step.device) {
                return Err(invalid(format!("no device named {:?}", step.device)));
            }
        }
        Ok(flow)
    }
}

struct Device {
    name: String,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<(Value, Instant)>,
    child: Child,
}

/// Every event each device saw, for the report.
struct Timeline {
    start: Instant,
    rows: Vec<(Duration, usize, String)>,
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
                // Five a second per device in a call would bury the flow.
                if event["event"] != "USER_VOICE_VOLUME" {
                    timeline
                        .rows
                        .push((at - timeline.start, index, brief(&event)));
                }
                Some(event)
            }
            _ => None,
        }
    }
}

/// Runs a flow; prints each step; returns whether every step passed.
pub async fn run(
    flow: &Flow,
    relay_url: Option<String>,
    report: Option<&Path>,
) -> Result<bool, FlowError> {
    let data = tempfile::tempdir().map_err(|e| FlowError::Relay(e.to_string()))?;
    let (url, relay) = match relay_url {
        Some(url) => (url, None),
        None => {
            let handle = start_relay(&flow.relay, data.path()).await?;
            (handle.url(), Some(handle))
        }
    };
    println!("flow: {}", flow.name);
    if !flow.description.is_empty() {
        println!("      {}", flow.description);
    }
    let mut timeline = Timeline {
        start: Instant::now(),
        rows: Vec::new(),
    };
    // One after another, in the order declared, each logged in and caught
    // up before the next starts: "the latest login" is the last declared.
    let mut devices = Vec::new();
    for (i, spec) in flow.devices.iter().enumerate() {
        devices.push(spawn(spec, &url, data.path()).await?);
        if spec.login {
            let until = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match devices[i].next(until, &mut timeline, i).await {
                    Some(e) if e["event"] == "SYNCED" => break,
                    Some(_) => {}
                    None => {
                        println!("  ✗ device {} did not log in within 10 s", spec.name);
                        return Ok(false);
                    }
                }
            }
        }
    }
    let mut saved: BTreeMap<String, Value> = BTreeMap::new();
    let mut passed = true;
    for (n, step) in flow.steps.iter().enumerate() {
        let i = flow
            .devices
            .iter()
            .position(|d| d.name == step.device)
            .expect("checked at load");
        let t = Instant::now();
        let outcome = run_step(step, &mut devices[i], &mut saved, &mut timeline, i).await;
        let ms = t.elapsed().as_millis();
        let at = timeline.start.elapsed().as_millis();
        match outcome {
            Ok(what) => println!(
                "  ✓ {:>3} [{}] {what}  ({ms} ms, at {at} ms)",
                n + 1,
                step.device
            ),
            Err(why) => {
                println!("  ✗ {:>3} [{}] {why}", n + 1, step.device);
                passed = false;
                break;
            }
        }
    }
    println!("{}", if passed { "PASS" } else { "FAIL" });
    for d in &mut devices {
        let _ = d.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
    }
    for d in &mut devices {
        let _ = tokio::time::timeout(Duration::from_secs(3), d.child.wait()).await;
    }
    if let Some(path) = report {
        let text = render_report(flow, &timeline, passed);
        std::fs::write(path, text)
            .map_err(|e| FlowError::Read(path.display().to_string(), e.to_string()))?;
    }
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    Ok(passed)
}

async fn start_relay(overrides: &RelayOverrides, dir: &Path) -> Result<RelayHandle, FlowError> {
    let mut config = RelayConfig {
        listen: "127.0.0.1:0".parse().expect("valid"),
        ..RelayConfig::default()
    };
    let app = &mut config.apps[0];
    if let Some(v) = overrides.multi_device_sync {
        app.multi_device_sync = v;
    }
    if let Some(v) = overrides.compensation_window_days {
        app.compensation_window_days = v;
    }
    if let Some(v) = overrides.recall_window_secs {
        app.recall_window_secs = v;
    }
    if let Some(v) = overrides.max_devices_per_platform {
        app.max_devices_per_platform = v;
    }
    if let Some(v) = overrides.max_call_participants {
        config.max_call_participants = v;
    }
    let store = relay::store::Store::open(&dir.join("relay.sqlite3"))
        .map_err(|e| FlowError::Relay(e.to_string()))?;
    relay::start(&config, store)
        .await
        .map_err(|e| FlowError::Relay(e.to_string()))
}

async fn spawn(spec: &DeviceSpec, url: &str, data: &Path) -> Result<Device, FlowError> {
    let exe =
        std::env::current_exe().map_err(|e| FlowError::Device(spec.name.clone(), e.to_string()))?;
    let device = spec.device.clone().unwrap_or_else(|| spec.name.clone());
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "headless",
            "--relay",
            url,
            "--device",
            &device,
            "--platform",
            &spec.platform,
        ])
        .env("XDG_DATA_HOME", data.join("devices"))
        .env("XDG_CONFIG_HOME", data.join("config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if spec.login {
        command.args(["--user", &spec.user]);
    }
    if spec.multi_device {
        command.arg("--multi-device");
    }
    command
        .arg("--audio-in")
        .arg(spec.audio_in.to_string())
        .arg("--audio-out")
        .arg(spec.audio_out.to_string());
    let mut child = command
        .spawn()
        .map_err(|e| FlowError::Device(spec.name.clone(), e.to_string()))?;
    let stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send((v, Instant::now())).is_err()
            {
                break;
            }
        }
    });
    Ok(Device {
        name: spec.name.clone(),
        stdin,
        events,
        child,
    })
}

async fn run_step(
    step: &Step,
    device: &mut Device,
    saved: &mut BTreeMap<String, Value>,
    timeline: &mut Timeline,
    index: usize,
) -> Result<String, String> {
    let fields = json_of(&step.fields);
    if let Some(send) = &step.send {
        let mut command = json_of(send);
        substitute(&mut command, saved).map_err(|e| format!("send: {e}"))?;
        let line = format!("{}\n", Value::Object(command.clone()));
        device
            .stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("send to {}: {e}", device.name))?;
        timeline.rows.push((
            timeline.start.elapsed(),
            index,
            format!("> {}", brief_command(&command)),
        ));
        return Ok(format!("send {}", brief_command(&command)));
    }
    if let Some(name) = &step.expect {
        let within = Duration::from_millis(step.within_ms.unwrap_or(5_000));
        let until = tokio::time::Instant::now() + within;
        let mut arrived = Vec::new();
        while let Some(event) = device.next(until, timeline, index).await {
            if event["event"] == name.as_str() && matches(&event, &fields) {
                for (key, field) in &step.save {
                    saved.insert(key.clone(), event[field].clone());
                }
                return Ok(format!("got {}", describe(name, &fields)));
            }
            arrived.push(brief(&event));
        }
        return Err(format!(
            "expected {} within {} ms; arrived: {}",
            describe(name, &fields),
            within.as_millis(),
            if arrived.is_empty() {
                "nothing".into()
            } else {
                arrived.join(", ")
            }
        ));
    }
    let name = step.expect_none.as_ref().expect("checked at load");
    let window = Duration::from_millis(step.for_ms.unwrap_or(500));
    let until = tokio::time::Instant::now() + window;
    while let Some(event) = device.next(until, timeline, index).await {
        if event["event"] == name.as_str() && matches(&event, &fields) {
            return Err(format!(
                "expected no {} for {} ms; arrived: {}",
                describe(name, &fields),
                window.as_millis(),
                brief(&event)
            ));
        }
    }
    Ok(format!(
        "no {} for {} ms",
        describe(name, &fields),
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

fn matches(event: &Value, fields: &Map<String, Value>) -> bool {
    fields.iter().all(|(k, v)| &event[k] == v)
}

fn describe(name: &str, fields: &Map<String, Value>) -> String {
    if fields.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", Value::Object(fields.clone()))
    }
}

/// An event in a few words: its name and its telling fields.
fn brief(event: &Value) -> String {
    let name = event["event"].as_str().unwrap_or("?");
    let mut out = name.to_owned();
    for key in ["reason", "userID", "from", "text", "code", "status"] {
        if let Some(v) = event.get(key).filter(|v| !v.is_null()) {
            let _ = write!(out, " {key}={v}");
        }
    }
    out
}

fn brief_command(command: &Map<String, Value>) -> String {
    Value::Object(command.clone()).to_string()
}

/// Every device's events side by side, one column per device.
fn render_report(flow: &Flow, timeline: &Timeline, passed: bool) -> String {
    let width = 34;
    let mut out = format!(
        "flow: {}\nresult: {}\n\n",
        flow.name,
        if passed { "PASS" } else { "FAIL" }
    );
    let _ = write!(out, "{:>8}", "ms");
    for d in &flow.devices {
        let _ = write!(out, " | {:<width$}", format!("{} ({})", d.name, d.user));
    }
    out.push('\n');
    let mut rows = timeline.rows.clone();
    rows.sort_by_key(|(at, _, _)| *at);
    for (at, index, text) in rows {
        let _ = write!(out, "{:>8}", at.as_millis());
        for i in 0..flow.devices.len() {
            let cell: String = if i == index {
                text.chars().take(width).collect()
            } else {
                String::new()
            };
            let _ = write!(out, " | {cell:<width$}");
        }
        out.push('\n');
    }
    out
}
