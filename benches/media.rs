//! Media benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench media`:
//! 1. Opus: termphone's encoder per 20 ms frame beside a bare libopus
//!    encoder with the same settings, and the decoder.
//! 2. A loopback call through the release relay on real 20 ms clocks: the
//!    delay from capture buffer to playback buffer, found by
//!    cross-correlating what went in with what came out, with its parts;
//!    and each side's busy time per call.
//! 3. Relay forwarding: N concurrent 1:1 calls, each side sending a frame
//!    every 20 ms; frames per second, forwarding delay p50/p99, loss, and
//!    the relay process's CPU.
//! 4. Voice processing of a sound card's capture (issue 22): the cost of
//!    each stage per call, as a share of one core (one 20 ms frame of
//!    capture and of its echo reference every 20 ms), and the delay the
//!    chain adds, found by cross-correlating its input and output.
//!
//! `cargo test` runs it in its quick mode (see `common::mode`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use common::{Mode, Ws, cores, expect, login, percentile, send, start_relay, us};
use termphone::ids::UserId;
use termphone::media::codec::{CodecSettings, Decoder, Encoder};
use termphone::media::control::VoiceProcessing;
use termphone::media::processing::VoiceProcessor;
use termphone::media::session::CallMedia;
use termphone::media::{FRAME_SAMPLES, Frame};
use termphone::protocol::{ClientMsg, MediaHeader, MediaKind, RoomId, ServerMsg};

/// Every call of the forwarding part logs in from this one address: the
/// limits on sockets not yet logged in must not stop it at 300 calls.
const CONFIG: &str = "[relay]\nmax_connections = 20000\nmax_unauthenticated = 20000\nmax_unauthenticated_per_address = 20000\n[[relay.apps]]\nid = 1400000000\nsecret = \"termphone-development-secret-not-for-deployment\"\n";

/// Speech-like test signal: noise in bursts of random length.
struct Signal {
    state: u64,
    on: bool,
    left: usize,
}

impl Signal {
    fn new() -> Self {
        Signal {
            state: 0x2545_F491_4F6C_DD1D,
            on: true,
            left: 0,
        }
    }

    fn next_u32(&mut self) -> u32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 32) as u32
    }

    fn frame(&mut self) -> Frame {
        std::array::from_fn(|_| {
            if self.left == 0 {
                self.on = !self.on;
                self.left = 2_400 + (self.next_u32() % 12_000) as usize;
            }
            self.left -= 1;
            let noise = (self.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0;
            if self.on { 0.3 * noise } else { 0.0 }
        })
    }
}

fn codec(mode: Mode) {
    let settings = CodecSettings::default();
    let mut ours = Encoder::new(settings).unwrap();
    let mut bare =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    bare.set_bitrate(opus::Bitrate::Bits(settings.bitrate_bps))
        .unwrap();
    bare.set_complexity(settings.complexity).unwrap();
    bare.set_inband_fec(true).unwrap();
    bare.set_packet_loss_perc(settings.expected_loss_percent)
        .unwrap();
    let mut decoder = Decoder::new().unwrap();
    let mut signal = Signal::new();
    let frames: Vec<Frame> = (0..mode.pick(2_000, 50)).map(|_| signal.frame()).collect();
    let mut packet = [0u8; 1275];
    let mut packets = Vec::with_capacity(frames.len());

    let t = Instant::now();
    for f in &frames {
        packets.push(ours.encode(f).unwrap().to_vec());
    }
    let ours_time = t.elapsed() / frames.len() as u32;
    let t = Instant::now();
    for f in &frames {
        std::hint::black_box(bare.encode_float(f, &mut packet).unwrap());
    }
    let bare_time = t.elapsed() / frames.len() as u32;
    let mut out = [0.0; FRAME_SAMPLES];
    let t = Instant::now();
    for p in &packets {
        decoder.decode(p, &mut out);
    }
    let decode_time = t.elapsed() / frames.len() as u32;
    let bytes: usize = packets.iter().map(Vec::len).sum();
    println!(
        "opus, 20 ms frames at {} kbps, complexity {}: encode {} (bare libopus {}), decode {}; {:.0} bytes a frame",
        settings.bitrate_bps / 1000,
        settings.complexity,
        us(ours_time),
        us(bare_time),
        us(decode_time),
        bytes as f64 / packets.len() as f64
    );
}

/// Lag (in samples, 0..max_lag) at which `output` best matches `input`.
fn best_lag(input: &[f32], output: &[f32], max_lag: usize) -> usize {
    let n = input.len().min(output.len()).saturating_sub(max_lag);
    (0..max_lag)
        .max_by(|&a, &b| {
            let score = |lag: usize| -> f64 {
                (0..n)
                    .step_by(2)
                    .map(|i| f64::from(input[i]) * f64::from(output[i + lag]))
                    .sum()
            };
            score(a).total_cmp(&score(b))
        })
        .unwrap()
}

/// The codec's own delay: encode then decode directly.
fn codec_lag(mode: Mode) -> usize {
    let mut enc = Encoder::new(CodecSettings::default()).unwrap();
    let mut dec = Decoder::new().unwrap();
    let mut signal = Signal::new();
    let (mut input, mut output) = (Vec::new(), Vec::new());
    let mut out = [0.0; FRAME_SAMPLES];
    // Enough for the 100 ms of lags searched; a debug build searches slowly.
    for _ in 0..mode.pick(200, 10) {
        let f = signal.frame();
        dec.decode(enc.encode(&f).unwrap(), &mut out);
        input.extend_from_slice(&f);
        output.extend_from_slice(&out);
    }
    best_lag(&input, &output, 4_800)
}

/// Voice processing: each stage's cost per call and the delay it adds. The
/// capture is the reference 40 ms later (a room that echoes everything)
/// plus a near voice, so the canceller works as it does in a call.
fn voice_processing(mode: Mode) {
    let frames = mode.pick(1_500, 25);
    let (mut far, mut near) = (Signal::new(), Signal::new());
    near.next_u32();
    let played: Vec<Frame> = (0..frames).map(|_| far.frame()).collect();
    let echo_lag: usize = 2; // frames: 40 ms
    let captured: Vec<Frame> = (0..frames)
        .map(|k: usize| {
            let near = near.frame();
            let echo = k
                .checked_sub(echo_lag)
                .map_or([0.0; FRAME_SAMPLES], |e| played[e]);
            std::array::from_fn(|i| 0.5 * echo[i] + 0.5 * near[i])
        })
        .collect();
    let stages = [
        (
            "echo cancellation",
            VoiceProcessing {
                echo_cancellation: true,
                ..VoiceProcessing::OFF
            },
        ),
        (
            "noise suppression",
            VoiceProcessing {
                noise_suppression: true,
                ..VoiceProcessing::OFF
            },
        ),
        (
            "gain control",
            VoiceProcessing {
                auto_gain: true,
                ..VoiceProcessing::OFF
            },
        ),
        ("all three", VoiceProcessing::ON),
    ];
    println!(
        "voice processing of a sound card's capture, per call (a 20 ms frame of capture and of reference every 20 ms):"
    );
    for (name, settings) in stages {
        let mut voice = VoiceProcessor::new(settings, 40);
        let t = Instant::now();
        for (reference, capture) in played.iter().zip(&captured) {
            voice.render(reference);
            let mut frame = *capture;
            voice.capture(&mut frame);
            std::hint::black_box(&frame);
        }
        let per_frame = t.elapsed() / frames as u32;
        let share = per_frame.as_secs_f64() / 0.020 * 100.0;
        let lag = added_delay(settings, mode);
        println!(
            " | {name}: {} a frame, {share:.2}% of one core; adds {lag} samples ({:.1} ms)",
            us(per_frame),
            lag as f64 / 48.0
        );
    }
    println!(" | every stage off: nothing (the chain is skipped)");
}

/// What `settings` add to the delay: a signal through the chain with
/// nothing played (no echo to take out), matched against itself.
fn added_delay(settings: VoiceProcessing, mode: Mode) -> usize {
    let mut voice = VoiceProcessor::new(settings, 40);
    let mut signal = Signal::new();
    let (mut input, mut output) = (Vec::new(), Vec::new());
    for _ in 0..mode.pick(200, 10) {
        let f = signal.frame();
        let mut out = f;
        voice.render(&[0.0; FRAME_SAMPLES]);
        voice.capture(&mut out);
        input.extend_from_slice(&f);
        output.extend_from_slice(&out);
    }
    best_lag(&input, &output, 1_920)
}

/// Logs in caller and callee and connects a call; returns both and the room.
async fn call(url: &str, caller: &str, callee: &str) -> (Ws, Ws, RoomId) {
    let mut a = login(url, caller, "d").await;
    let mut b = login(url, callee, "d").await;
    send(
        &mut a,
        &ClientMsg::Call {
            invitees: vec![callee.into()],
            group: false,
            timeout_secs: None,
            user_data: None,
        },
    )
    .await;
    let ServerMsg::CallInvite { call } = expect(&mut b, "call_invite", |m| {
        matches!(m, ServerMsg::CallInvite { .. })
    })
    .await
    else {
        unreachable!()
    };
    send(
        &mut b,
        &ClientMsg::Accept {
            call_id: call.call_id,
            end_current: false,
        },
    )
    .await;
    for ws in [&mut a, &mut b] {
        expect(ws, "media_peers", |m| {
            matches!(m, ServerMsg::MediaPeers { .. })
        })
        .await;
    }
    (a, b, call.room)
}

async fn loopback_delay(url: &str, mode: Mode) {
    let (alice_ws, bob_ws, room) = call(url, "loop-a", "loop-b").await;
    let me = |s: &str| UserId::parse(s).unwrap();
    let mut alice = CallMedia::new(me("loop-a"), room, CodecSettings::default()).unwrap();
    let mut bob = CallMedia::new(me("loop-b"), room, CodecSettings::default()).unwrap();
    let (mut alice_tx, _alice_rx) = alice_ws.split();
    let (_bob_tx, mut bob_rx) = bob_ws.split();
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = bob_rx.next().await {
            if let Message::Binary(frame) = msg {
                let _ = arrivals_tx.send((Instant::now(), frame.to_vec()));
            }
        }
    });

    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut signal = Signal::new();
    let (mut input, mut output) = (Vec::new(), Vec::new());
    let mut sent_at = HashMap::new();
    let (mut relay_times, mut encode_times, mut playout_times) = (vec![], vec![], vec![]);
    let mut out = [0.0; FRAME_SAMPLES];
    let frames = mode.pick(500, 20);
    for half in 0..2 * frames {
        tick.tick().await;
        if half % 2 == 0 {
            // alice's capture buffer holds a new frame.
            let frame = signal.frame();
            input.extend_from_slice(&frame);
            let t = Instant::now();
            let packet = alice.capture(&frame).unwrap();
            encode_times.push(t.elapsed());
            let seq = MediaHeader::decode(&packet).unwrap().0.seq;
            sent_at.insert(seq, Instant::now());
            alice_tx.send(Message::binary(packet)).await.unwrap();
        } else {
            // Half a frame later, bob's playback buffer wants one.
            while let Ok((at, frame)) = arrivals.try_recv() {
                let seq = MediaHeader::decode(&frame).unwrap().0.seq;
                if let Some(sent) = sent_at.remove(&seq) {
                    relay_times.push(at - sent);
                }
                bob.receive(start.elapsed().as_millis() as u64, &frame)
                    .unwrap();
            }
            let t = Instant::now();
            bob.playout(&mut out);
            playout_times.push(t.elapsed());
            output.extend_from_slice(&out);
        }
    }
    let lag = best_lag(&input, &output, 9_600);
    let ms = |samples: usize| samples as f64 / 48.0;
    relay_times.sort();
    let relay_mean = relay_times.iter().sum::<Duration>() / relay_times.len() as u32;
    let codec = codec_lag(mode);
    // Output frame j is played half a frame after input frame j was captured.
    let phase = 10.0;
    let total = ms(lag) + phase;
    let jitter = total - ms(codec) - phase - relay_mean.as_secs_f64() * 1e3;
    println!(
        "loopback call, capture buffer -> playback buffer: {total:.1} ms = codec {:.1} ms + relay and sockets {:.2} ms + playout phase {phase:.0} ms (half a frame, on average) + jitter buffer {jitter:.1} ms",
        ms(codec),
        relay_mean.as_secs_f64() * 1e3,
    );
    let stats = bob.stats();
    println!(
        " | frames {} received, {} lost, {} concealed for underrun; relay one-way p99 {}",
        stats.received,
        stats.lost,
        stats.underruns,
        us(percentile(&relay_times, 0.99))
    );
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let busy = mean(&encode_times) + mean(&playout_times);
    println!(
        " | each side's media work per 20 ms: encode {} + jitter/decode/mix {} = {:.2}% of one core per call",
        us(mean(&encode_times)),
        us(mean(&playout_times)),
        busy.as_secs_f64() / 0.020 * 100.0
    );
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Runs `calls` concurrent calls and prints their figures; returns the p99
/// forwarding delay.
async fn forwarding(url: &str, relay_pid: u32, calls: usize, mode: Mode) -> Duration {
    let base = Instant::now();
    let setups = join_all((0..calls).map(|k| {
        let url = url.to_owned();
        tokio::spawn(
            async move { call(&url, &format!("f{calls}a{k}"), &format!("f{calls}b{k}")).await },
        )
    }))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for setup in setups {
        let (a, b, room) = setup.unwrap();
        for ws in [a, b] {
            let (mut tx, mut rx) = ws.split();
            let stop_w = stop.clone();
            // Real devices tick at unrelated phases: spread them over a frame.
            let phase = Duration::from_micros((writers.len() * 20_000 / (2 * calls)) as u64);
            writers.push(tokio::spawn(async move {
                tokio::time::sleep(phase).await;
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut seq = 0u16;
                let mut sent_frames = 0u64;
                while !stop_w.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let mut payload = [0u8; 80];
                    let sent = base.elapsed().as_micros() as u64;
                    payload[..8].copy_from_slice(&sent.to_be_bytes());
                    let header = MediaHeader {
                        kind: MediaKind::Voice,
                        room,
                        source: 0,
                        seq,
                        timestamp: u32::from(seq) * 960,
                    };
                    seq = seq.wrapping_add(1);
                    if tx
                        .send(Message::binary(header.encode(&payload)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent_frames += 1;
                }
                sent_frames
            }));
            let stop_r = stop.clone();
            readers.push(tokio::spawn(async move {
                let mut delays = Vec::new();
                while !stop_r.load(Ordering::Relaxed) {
                    let next = tokio::time::timeout(Duration::from_millis(200), rx.next()).await;
                    if let Ok(Some(Ok(Message::Binary(frame)))) = next {
                        let (_, payload) = MediaHeader::decode(&frame).unwrap();
                        let sent = u64::from_be_bytes(payload[..8].try_into().unwrap());
                        let now = base.elapsed().as_micros() as u64;
                        delays.push(Duration::from_micros(now.saturating_sub(sent)));
                    }
                }
                delays
            }));
        }
    }
    let sending = Instant::now();
    // Let the clocks settle, then measure a window.
    tokio::time::sleep(mode.pick(Duration::from_secs(1), Duration::from_millis(200))).await;
    let cpu0 = cpu_secs(relay_pid);
    let t0 = Instant::now();
    tokio::time::sleep(mode.pick(Duration::from_secs(5), Duration::from_millis(500))).await;
    let cpu = cpu_secs(relay_pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut delays: Vec<Duration> = Vec::new();
    for r in join_all(readers).await {
        delays.extend(r.unwrap());
    }
    let sent: u64 = join_all(writers)
        .await
        .into_iter()
        .map(|w| w.unwrap())
        .sum();
    delays.sort();
    let window = sending.elapsed().as_secs_f64();
    println!(
        "{calls:>5} calls: {:>7.0} frames/s forwarded; forwarding delay p50 {} p99 {} max {}; {:.1}% of frames missing; relay CPU {:.0}% of one core",
        delays.len() as f64 / window,
        us(percentile(&delays, 0.5)),
        us(percentile(&delays, 0.99)),
        us(*delays.last().unwrap()),
        (100.0 * (1.0 - delays.len() as f64 / sent as f64)).max(0.0),
        100.0 * cpu / wall
    );
    percentile(&delays, 0.99)
}

#[tokio::main]
async fn main() {
    let Some(mode) = common::mode("media") else {
        return;
    };
    println!(
        "media benchmark ({}, this machine: {} cores)",
        mode.build(),
        cores()
    );
    codec(mode);
    voice_processing(mode);
    let (mut relay, url, _dir) = start_relay(CONFIG).await;
    loopback_delay(&url, mode).await;
    let pid = relay.id().unwrap();
    println!(
        "relay forwarding, each side of each call sending 50 frames/s (the bench's clients share the machine):"
    );
    let mut within = None;
    for calls in mode.pick(&[100, 200, 300, 500, 1_000][..], &[4][..]) {
        if forwarding(&url, pid, *calls, mode).await < Duration::from_millis(5) {
            within = Some(calls);
        }
    }
    match within {
        Some(calls) => {
            println!("most concurrent calls tried with p99 forwarding under 5 ms: {calls}")
        }
        None => println!("no tried number of calls kept p99 forwarding under 5 ms"),
    }
    let _ = relay.kill().await;
}
