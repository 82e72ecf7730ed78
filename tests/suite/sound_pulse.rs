//! Real sound cards on a real clock (issue 13): a private PulseAudio server
//! whose null sink `a` is both the default speaker and, through its monitor,
//! the default microphone. alice calls bob through her default devices; bob
//! is an `echo` device (what he hears, sent back 0.5 s later). A click
//! played into the sink is captured by alice, goes to bob and back, and is
//! played by alice into the same sink: the recording of the sink shows the
//! click and its return, `2 × one-way + 500 ms` apart.
//!
//! Skipped, with a message, where PulseAudio is not installed; `.ci/run`
//! installs it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::headless::{Headless, volume_of};
use crate::common::net::{relay_at, test_config};
use crate::common::pulse::{Pulse, RATE, click, onsets};

/// alice (default devices on `pulse`) calls bob (`echo`); both in the call.
async fn echo_call(pulse: &Pulse, dir: &std::path::Path, url: &str) -> (Headless, Headless) {
    let args = |user, audio_in, audio_out| {
        [
            "--relay",
            url,
            "--user",
            user,
            "--audio-in",
            audio_in,
            "--audio-out",
            audio_out,
        ]
        .map(str::to_owned)
    };
    let alice_args = args("alice", "default", "default");
    let bob_args = args("bob", "echo", "null");
    fn refs(a: &[String; 8]) -> Vec<&str> {
        a.iter().map(String::as_str).collect()
    }
    // The click's return is an echo on purpose here, and this test measures
    // the path without voice processing (whose delay docs/benchmarks.md gives).
    let alice_refs = [refs(&alice_args), vec!["--no-voice-processing"]].concat();
    let mut alice = Headless::spawn_with(dir, &alice_refs, pulse.env());
    let mut bob = Headless::spawn_with(dir, &refs(&bob_args), pulse.env());
    alice.expect("SDK_READY").await;
    bob.expect("SDK_READY").await;
    alice.send(json!({"cmd": "call", "userID": "bob"})).await;
    bob.expect("ON_CALL_RECEIVED").await;
    bob.send(json!({"cmd": "accept"})).await;
    bob.expect("ON_CALL_BEGIN").await;
    alice.expect("ON_CALL_BEGIN").await;
    (alice, bob)
}

/// alice hangs up; her MEDIA_STATS.
async fn hang_up(mut alice: Headless, bob: Headless) -> Value {
    alice.send(json!({"cmd": "hangup"})).await;
    alice.expect("CALLING_END").await;
    let stats = alice.expect("MEDIA_STATS").await;
    for mut d in [alice, bob] {
        d.send(json!({"cmd": "quit"})).await;
        d.exits_cleanly().await;
    }
    stats
}

#[tokio::test]
async fn a_call_on_a_real_clock_has_bounded_delay_and_no_dropouts() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let Some(pulse) = Pulse::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("relay.db")).await;
    let (alice, bob) = echo_call(&pulse, dir.path(), &relay.url()).await;
    // Past the devices' start (an ALSA device on PulseAudio can take 2 s to
    // flow); then the click, and time for it to return.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let recording = pulse.record("a.monitor");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut player = pulse.play("a", &click(100));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let heard = recording.stop();
    let _ = player.wait();
    let stats = hang_up(alice, bob).await;
    relay.shutdown().await;

    let at = onsets(&heard, 0.1, 300);
    assert!(at.len() >= 2, "the click and its return: {at:?}");
    let round_trip_ms = (at[1] - at[0]) as f64 * 1000.0 / RATE as f64;
    let one_way_ms = (round_trip_ms - 500.0) / 2.0;
    eprintln!("real clock: round trip {round_trip_ms:.1} ms, one way {one_way_ms:.1} ms; {stats}");
    // The goal is 80 ms, which the benchmark measures on an idle machine
    // (63 to 72 ms); here the rest of the suite runs beside this call on 2
    // cores (it measured over 110 ms once, in a full run), so the bound
    // keeps a margin and still catches the 180 ms the path took before the
    // sound cards owned the clock.
    assert!(
        one_way_ms <= 130.0,
        "one-way mouth-to-ear {one_way_ms:.1} ms"
    );
    assert!(one_way_ms > 0.0, "{at:?}");
    // Counted from 200 ms after each device started to flow. The suite's
    // debug build shares 2 cores with its relay, two devices and the sound
    // server: a stall of a few tens of ms there is the machine, and must
    // cost no more than a frame or two (the benchmark counts exactly, on an
    // idle machine).
    let count = |name: &str| stats[name].as_u64().unwrap_or(u64::MAX);
    assert!(count("playbackOverruns") <= 1920, "{stats}");
    assert!(count("captureUnderruns") <= 2, "{stats}");
    assert!(stats["playbackLatencyMs"].is_u64(), "{stats}");
    assert!(stats["captureLatencyMs"].is_u64(), "{stats}");
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect()
}

/// SPEC 8.1: `getDeviceList`; a sink loaded (a headset plugged in) is
/// announced by itself; `switchDevice` mid-call keeps the call and the other
/// side keeps hearing; the device in use unplugged falls back to the
/// default with a named ERROR, and the call goes on.
#[tokio::test]
async fn devices_are_listed_switched_mid_call_and_unplugged() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let Some(pulse) = Pulse::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("relay.db")).await;
    let url = relay.url();
    let common = ["--relay", url.as_str(), "--audio-out", "null"];
    let alice_args = [&common[..], &["--user", "alice", "--audio-in", "default"]].concat();
    let bob_args = [&common[..], &["--user", "bob", "--audio-in", "null"]].concat();
    let mut alice = Headless::spawn_with(dir.path(), &alice_args, pulse.env());
    let mut bob = Headless::spawn_with(dir.path(), &bob_args, pulse.env());
    alice.expect("SDK_READY").await;
    bob.expect("SDK_READY").await;

    alice.send(json!({"cmd": "getDeviceList"})).await;
    let listed = alice.expect("DEVICED_UPDATED").await;
    assert_eq!(ids(&listed["microphoneList"]), ["default", "a.monitor"]);
    assert_eq!(ids(&listed["speakerList"]), ["default", "a"]);
    assert_eq!(listed["currentMicrophoneID"], "default");
    assert_eq!(listed["currentSpeakerID"], "null");

    // A headset: a second sink, a tone playing into it.
    let module = pulse.pactl(&[
        "load-module",
        "module-null-sink",
        "sink_name=b",
        "rate=48000",
    ]);
    let plugged = alice.expect("DEVICED_UPDATED").await;
    assert!(
        ids(&plugged["microphoneList"]).contains(&"b.monitor"),
        "{plugged}"
    );
    let tone: Vec<f32> = (0..RATE * 30)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / RATE as f32).sin())
        .collect();
    let mut player = pulse.play("b", &tone);

    alice.send(json!({"cmd": "call", "userID": "bob"})).await;
    bob.expect("ON_CALL_RECEIVED").await;
    bob.send(json!({"cmd": "accept"})).await;
    bob.expect("ON_CALL_BEGIN").await;
    alice.expect("ON_CALL_BEGIN").await;

    // Mid-call, alice's microphone becomes the headset: bob hears the tone.
    alice
        .send(json!({"cmd": "switchDevice", "deviceType": "microphone", "deviceId": "b.monitor"}))
        .await;
    let switched = alice.expect("DEVICED_UPDATED").await;
    assert_eq!(switched["currentMicrophoneID"], "b.monitor");
    volume_of(&mut bob, "alice", |level| level >= 50).await;

    // Unplugged: alice falls back to the default, says so, and the call
    // goes on (bob still receives her stream: his levels keep coming).
    let _ = player.kill();
    pulse.pactl(&["unload-module", module.trim()]);
    let error = alice.expect("ERROR").await;
    assert_eq!(error["code"], 6502, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("b.monitor"),
        "{error}"
    );
    let after = alice.expect("DEVICED_UPDATED").await;
    assert_eq!(after["currentMicrophoneID"], "default");
    assert!(!ids(&after["microphoneList"]).contains(&"b.monitor"));
    bob.expect("USER_VOICE_VOLUME").await;

    // A speaker spec that is only a source is refused, naming the command.
    alice
        .send(json!({"cmd": "switchDevice", "deviceType": "speaker", "deviceId": "tone:440"}))
        .await;
    let refused = alice.expect("ERROR").await;
    assert_eq!(refused["cmd"], "switchDevice", "{refused}");

    alice.send(json!({"cmd": "hangup"})).await;
    bob.expect("CALLING_END").await;
    let _ = player.wait();
    for mut d in [alice, bob] {
        d.send(json!({"cmd": "quit"})).await;
        d.exits_cleanly().await;
    }
    relay.shutdown().await;
}
