//! Sound cards on a real clock (issue 13): prints figures, asserts nothing.
//!
//! `cargo bench --bench sound` starts a private PulseAudio server whose null
//! sink `a` is both the default speaker and, through its monitor, the
//! default microphone (tests/common/pulse.rs), and measures on it:
//!
//! 1. The floor: `arecord | aplay` with 20 ms buffers, the capture-to-
//!    playback loop through the same ALSA `pulse` plugin termphone uses. A
//!    click played into the sink comes back once per trip round the loop.
//! 2. A call: alice on the default devices (microphone `a.monitor`, speaker
//!    `a`... as the test has it, she would hear herself and every click would
//!    go round for ever; here her speaker is a second sink `ear`). bob is an
//!    `echo` device (0.5 s). Every 3 s a click is played into a combined
//!    sink over `a` and `ear`: alice captures it from `a`, it goes to bob and
//!    back and alice plays it into `ear`, whose recording holds the click and
//!    its return: one-way mouth-to-ear = (return - click - 500 ms) / 2.
//!    Then alice's MEDIA_STATS: over- and underruns per minute.
//! 3. Hot-plug: a sink loaded while a device runs, to its DEVICED_UPDATED.
//!
//! `cargo test` runs it in its quick mode (see `common::mode`); without
//! PulseAudio it says so and measures nothing.

mod common;
#[path = "../tests/common/pulse.rs"]
mod pulse;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use common::{Mode, start_relay};
use pulse::{Pulse, RATE, click, onsets};

const CONFIG: &str = "[[relay.apps]]\nid = 1400000000\nsecret = \"termphone-development-secret-not-for-deployment\"\n";

/// A headless device on the private sound server.
struct Device {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Device {
    fn spawn(pulse: &Pulse, home: &std::path::Path, args: &[&str]) -> Device {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_termphone"));
        common::die_with_bench(&mut command);
        let mut child = command
            .envs(pulse.env())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("TERMPHONE_LOG", "warn")
            .arg("headless")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start termphone headless");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Device {
            _child: child,
            stdin,
            lines,
        }
    }

    async fn send(&mut self, cmd: Value) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn expect(&mut self, name: &str) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {name} within 20 s"))
                .unwrap()
                .unwrap_or_else(|| panic!("the device exited before {name}"));
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == name {
                return v;
            }
        }
    }
}

/// Round trips (ms) between successive clicks of a recording; a click is
/// heard once per `gap_ms` at most.
fn round_trips(recording: &[f32], gap_ms: usize, min_ms: f64, max_ms: f64) -> Vec<f64> {
    let at = onsets(recording, 0.1, gap_ms);
    at.windows(2)
        .map(|w| (w[1] - w[0]) as f64 * 1000.0 / RATE as f64)
        .filter(|ms| (min_ms..=max_ms).contains(ms))
        .collect()
}

fn summary(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "no click came back".into();
    }
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms, min {:.1}, max {:.1} ({} samples)",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

/// `arecord | aplay` on the default devices, 20 ms buffers.
fn floor(pulse: &Pulse, mode: Mode) {
    let mut lp = pulse
        .command("sh")
        .arg("-c")
        .arg(
            "arecord -q -D default -f S16_LE -r 48000 -c 1 --buffer-time=20000 \
             | aplay -q -D default -f S16_LE -r 48000 -c 1 --buffer-time=20000",
        )
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("arecord | aplay (alsa-utils)");
    // An ALSA stream on PulseAudio can take 2 s to flow.
    std::thread::sleep(Duration::from_millis(2500));
    let recording = pulse.record("a.monitor");
    let mut player = pulse.play("a", &click(50));
    std::thread::sleep(mode.pick(Duration::from_secs(4), Duration::from_millis(1500)));
    let heard = recording.stop();
    let _ = player.wait();
    // SAFETY: a signal to the process group this function started.
    unsafe { libc::kill(-(lp.id() as i32), libc::SIGTERM) };
    let _ = lp.wait();
    println!(
        "floor, arecord | aplay with 20 ms buffers, capture to playback: {}",
        summary(round_trips(&heard, 20, 20.0, 290.0))
    );
}

async fn call(pulse: &Pulse, mode: Mode) {
    let (_relay, url, _relay_dir) = start_relay(CONFIG).await;
    let home = tempfile::tempdir().unwrap();
    let args = |user, audio_in, audio_out| {
        [
            "--relay",
            &url,
            "--user",
            user,
            "--audio-in",
            audio_in,
            "--audio-out",
            audio_out,
        ]
        .map(str::to_owned)
    };
    let spawn = |a: [String; 8]| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        Device::spawn(pulse, home.path(), &refs)
    };
    pulse.pactl(&[
        "load-module",
        "module-null-sink",
        "sink_name=ear",
        "rate=48000",
    ]);
    pulse.pactl(&[
        "load-module",
        "module-combine-sink",
        "sink_name=both",
        "slaves=a,ear",
    ]);
    let mut alice = spawn(args("alice", "default", "ear"));
    let mut bob = spawn(args("bob", "echo", "null"));
    alice.expect("SDK_READY").await;
    bob.expect("SDK_READY").await;
    alice.send(json!({"cmd": "call", "userID": "bob"})).await;
    bob.expect("ON_CALL_RECEIVED").await;
    bob.send(json!({"cmd": "accept"})).await;
    alice.expect("ON_CALL_BEGIN").await;
    let begun = Instant::now();
    // Past the devices' start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recording = pulse.record("ear.monitor");
    let length = mode.pick(Duration::from_secs(60), Duration::from_secs(7));
    let mut players = Vec::new();
    while begun.elapsed() + Duration::from_secs(3) < length {
        players.push(pulse.play("both", &click(50)));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let heard = recording.stop();
    for mut p in players {
        let _ = p.wait();
    }

    // Hot-plug, while the call runs: a sink loaded, to DEVICED_UPDATED.
    let plugged = Instant::now();
    let module = pulse.pactl(&["load-module", "module-null-sink", "sink_name=b"]);
    alice.expect("DEVICED_UPDATED").await;
    let hot_plug = plugged.elapsed();
    pulse.pactl(&["unload-module", module.trim()]);

    alice.send(json!({"cmd": "hangup"})).await;
    alice.expect("CALLING_END").await;
    let stats = alice.expect("MEDIA_STATS").await;
    let minutes = begun.elapsed().as_secs_f64() / 60.0;
    // Onsets come in pairs: a click, then its return.
    let one_way: Vec<f64> = round_trips(&heard, 300, 500.0, 1200.0)
        .into_iter()
        .map(|rt| (rt - 500.0) / 2.0)
        .collect();
    println!(
        "termphone call, alice on the default devices, bob an echo (0.5 s), {:.0} s: one-way mouth-to-ear {}",
        begun.elapsed().as_secs_f64(),
        summary(one_way)
    );
    let per_minute = |name: &str| stats[name].as_f64().unwrap_or(f64::NAN) / minutes;
    println!(
        " | per minute (samples; ticks for capture underruns), after each card's first 200 ms: playback overruns {:.0}, playback underruns {:.0}, capture overruns {:.0}, capture underruns {:.1}",
        per_minute("playbackOverruns"),
        per_minute("playbackUnderruns"),
        per_minute("captureOverruns"),
        per_minute("captureUnderruns"),
    );
    println!(
        " | the cards' own latency: capture {} ms, playback {} ms; frames sent {}, received {}, lost {}",
        stats["captureLatencyMs"],
        stats["playbackLatencyMs"],
        stats["framesSent"],
        stats["framesReceived"],
        stats["framesLost"]
    );
    println!(
        "hot-plug: a sink loaded -> DEVICED_UPDATED after {:.0} ms",
        hot_plug.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    let Some(mode) = common::mode("sound") else {
        return;
    };
    println!(
        "sound benchmark ({}, this machine: {} cores)",
        mode.build(),
        common::cores()
    );
    let Some(pulse) = Pulse::start() else {
        return;
    };
    floor(&pulse, mode);
    call(&pulse, mode).await;
}
