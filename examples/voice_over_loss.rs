//! One call's voice on virtual time over a lossy network, beside bare
//! libopus over the same losses: the recordings `scripts/voice_quality.py`
//! scores with PESQ-WB (issue 14).
//!
//!     cargo run --release --example voice_over_loss -- SPEECH.wav OUT_DIR \
//!         [--loss PERCENT] [--burst FRAMES] [--jitter MS] [--seed N] [--bitrate BPS]
//!         [--cap-kbps KBPS]
//!
//! Alice speaks the WAV file through her call media (`CallMedia`: encoder,
//! FEC plan and redundancy from bob's receiver reports); the network loses
//! frames as the relay's impairment does (random, or Gilbert-Elliott bursts,
//! and with `--cap-kbps` what exceeds its bandwidth cap on each path) and
//! delays them by 10 ms plus up to `--jitter`; bob plays what arrives
//! through his jitter buffer and decoder. `OUT_DIR/termphone.wav` is what
//! he played. `OUT_DIR/libopus.wav` is the reference: the same speech
//! through a bare libopus encoder and decoder at the same bitrate, FEC
//! planned for the loss, the same frames lost at random (and, under a cap,
//! those of its own that the same cap loses: a sender that does not
//! adapt), each missing frame rebuilt from the next one's FEC when it
//! came, else concealed, and no delay.
//! One JSON line of figures goes to stdout. The same seed loses the same
//! frames, so runs compare like with like, whatever the machine's load.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use termphone::ids::UserId;
use termphone::media::codec::CodecSettings;
use termphone::media::io::read_wav;
use termphone::media::session::CallMedia;
use termphone::media::{FRAME_MS, FRAME_SAMPLES, Frame, SAMPLE_RATE};
use termphone::protocol::MEDIA_HEADER_BYTES;
use termphone::protocol::{MediaHeader, MediaPeer, MediaSource};
use termphone::relay::media::{BandwidthCap, Impairment};

/// The network's one-way delay before jitter.
const NET_MS: u64 = 10;
/// Bob's playout clock ticks half a frame after alice's capture clock.
const PLAYOUT_PHASE_MS: u64 = 10;
/// Bob reports every second, as the pipeline does.
const REPORT_EVERY_TICKS: u64 = 50;
const ALICE: MediaSource = 1;
const BOB: MediaSource = 2;

struct Args {
    speech: PathBuf,
    out: PathBuf,
    impairment: Impairment,
    codec: CodecSettings,
    seed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse(std::env::args().skip(1).collect())?;
    args.impairment.check()?;
    let speech = read_wav(&args.speech)?;
    std::fs::create_dir_all(&args.out)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let call = call(&speech, &args.impairment, args.codec, &mut rng)?;
    let reference = bare_libopus(&speech, &call.arrived, &args.impairment, args.codec)?;
    write(&args.out.join("termphone.wav"), &call.played)?;
    write(&args.out.join("libopus.wav"), &reference.played)?;
    let seconds = speech.len() as f64 / f64::from(SAMPLE_RATE);
    let lost = call.arrived.iter().filter(|a| !**a).count();
    let stats = call.jitter;
    let kbps = |bps: f64| (bps / 100.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds,
            "framesSent": call.arrived.len(),
            "networkLost": lost,
            "capLost": call.capped,
            "kbps": call.voice_bytes as f64 * 8.0 / seconds / 1000.0,
            "lastKbps": call.last_kbps,
            "budgetKbps": call.budget_bps.map(kbps),
            "bitrateKbps": kbps(f64::from(call.bitrate_bps)),
            "libopusKbps": reference.bytes as f64 * 8.0 / seconds / 1000.0,
            "fecPlan": call.fec_plan,
            "redundancy": call.redundancy,
            "lost": stats.lost,
            "fecRecovered": stats.fec_recovered,
            "redRecovered": stats.red_recovered,
            "underruns": stats.underruns,
            "droppedToShrink": stats.dropped_to_shrink,
            "acceleratedMs": stats.accelerated_samples / 48,
            "heldInPauses": stats.held_in_pauses,
            "jitterDepth": call.depth.0,
            "jitterTarget": call.depth.1,
            "libopusConcealed": reference.concealed,
            "libopusCapLost": reference.capped,
        })
    );
    Ok(())
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let usage = "usage: voice_over_loss SPEECH.wav OUT_DIR [--loss PERCENT] [--burst FRAMES] \
                 [--jitter MS] [--seed N] [--bitrate BPS] [--cap-kbps KBPS]";
    let mut args = args.into_iter();
    let (Some(speech), Some(out)) = (args.next(), args.next()) else {
        return Err(usage.into());
    };
    let mut parsed = Args {
        speech: speech.into(),
        out: out.into(),
        impairment: Impairment::default(),
        codec: CodecSettings::default(),
        seed: 1,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {usage}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        let i = &mut parsed.impairment;
        match flag.as_str() {
            "--loss" => i.loss_percent = value.parse().map_err(|e| bad(&e))?,
            "--burst" => i.loss_burst = value.parse().map_err(|e| bad(&e))?,
            "--jitter" => i.jitter_ms = value.parse().map_err(|e| bad(&e))?,
            "--seed" => parsed.seed = value.parse().map_err(|e| bad(&e))?,
            "--bitrate" => parsed.codec.bitrate_bps = value.parse().map_err(|e| bad(&e))?,
            "--cap-kbps" => i.bandwidth_kbps = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}; {usage}")),
        }
    }
    Ok(parsed)
}

struct Call {
    played: Vec<f32>,
    /// For each of alice's voice frames, in order: did the network's random
    /// loss spare it (the cap may still have lost it: `capped`).
    arrived: Vec<bool>,
    capped: usize,
    voice_bytes: usize,
    /// Sent over the last `LAST_SECONDS` of the call (or all of a shorter
    /// one): where the rate settled.
    last_kbps: f64,
    /// alice's budget and Opus bitrate at the end.
    budget_bps: Option<f64>,
    bitrate_bps: i32,
    jitter: termphone::media::jitter::JitterStats,
    fec_plan: i32,
    redundancy: usize,
    /// Bob's jitter buffer at the end: frames waiting, its target, jitter.
    depth: (usize, usize, u64),
}

/// The end of a call over which its settled rate is measured.
const LAST_SECONDS: u64 = 5;

/// A frame on the wire: when it is due, in what order it was sent, to whom.
type InFlight = Reverse<(u64, u64, MediaSource, Vec<u8>)>;

fn call(
    speech: &[f32],
    net: &Impairment,
    codec: CodecSettings,
    rng: &mut StdRng,
) -> Result<Call, Box<dyn std::error::Error>> {
    let user = |name: &str| UserId::parse(name).expect("a valid name");
    let mut alice = CallMedia::new(user("alice"), 1, codec)?;
    let mut bob = CallMedia::new(user("bob"), 1, CodecSettings::default())?;
    alice.set_peers(&[MediaPeer {
        source: BOB,
        user: user("bob"),
    }]);
    bob.set_peers(&[MediaPeer {
        source: ALICE,
        user: user("alice"),
    }]);
    // A second of the jitter buffer's tail after the speech.
    let frames = speech.len().div_ceil(FRAME_SAMPLES) + 50;
    let mut wire: BinaryHeap<InFlight> = BinaryHeap::new();
    let mut bad_paths = [false, false];
    let mut caps = [0, 1].map(|_| (net.bandwidth_kbps > 0).then(|| cap(net)));
    let mut sent = 0u64;
    // Whether the network's random loss spares the frame, and then the cap.
    let mut send = |wire: &mut BinaryHeap<InFlight>,
                    now: u64,
                    from: MediaSource,
                    mut frame: Vec<u8>,
                    rng: &mut StdRng| {
        sent += 1;
        let path = usize::from(from == BOB);
        if net.loses(&mut bad_paths[path], rng) {
            return (false, false);
        }
        let fits = caps[path]
            .as_mut()
            .is_none_or(|cap| cap.fits(Duration::from_millis(now), frame.len()));
        if !fits {
            return (true, false);
        }
        MediaHeader::stamp_source(&mut frame, from);
        let due = now + NET_MS + rng.random_range(0..=net.jitter_ms);
        wire.push(Reverse((due, sent, from, frame)));
        (true, true)
    };
    let mut call = Call {
        played: Vec::with_capacity(frames * FRAME_SAMPLES),
        arrived: Vec::with_capacity(frames),
        capped: 0,
        voice_bytes: 0,
        last_kbps: 0.0,
        budget_bps: None,
        bitrate_bps: 0,
        jitter: Default::default(),
        fec_plan: 0,
        redundancy: 0,
        depth: (0, 0, 0),
    };
    let last_frames = frames.min((LAST_SECONDS * 1000 / FRAME_MS) as usize);
    let mut last_bytes = 0;
    let mut out: Frame = [0.0; FRAME_SAMPLES];
    for now in 0..frames as u64 * FRAME_MS {
        if now % FRAME_MS == 0 {
            let k = (now / FRAME_MS) as usize;
            let mut pcm: Frame = [0.0; FRAME_SAMPLES];
            let chunk = speech.get(k * FRAME_SAMPLES..).unwrap_or_default();
            let n = chunk.len().min(FRAME_SAMPLES);
            pcm[..n].copy_from_slice(&chunk[..n]);
            let frame = alice.capture(&pcm)?;
            call.voice_bytes += frame.len();
            if k + last_frames >= frames {
                last_bytes += frame.len();
            }
            let (spared, arrived) = send(&mut wire, now, ALICE, frame, rng);
            call.arrived.push(spared);
            call.capped += usize::from(spared && !arrived);
        }
        while wire.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Reverse((_, _, from, frame)) = wire.pop().expect("peeked");
            match from {
                ALICE => bob.receive(now, &frame)?,
                _ => alice.receive(now, &frame)?,
            }
        }
        if now % FRAME_MS == PLAYOUT_PHASE_MS {
            bob.playout(&mut out);
            call.played.extend_from_slice(&out);
            let tick = now / FRAME_MS + 1;
            if tick.is_multiple_of(REPORT_EVERY_TICKS)
                && let Some(report) = bob.receiver_report()
            {
                send(&mut wire, now, BOB, report, rng);
            }
        }
    }
    call.last_kbps = last_bytes as f64 * 8.0 / (last_frames as u64 * FRAME_MS) as f64;
    call.jitter = bob.stats();
    call.depth = bob.jitter_depth();
    (call.fec_plan, _) = alice.feedback(frames as u64 * FRAME_MS);
    call.redundancy = alice.redundancy();
    (call.budget_bps, call.bitrate_bps, _) = alice.rate();
    Ok(call)
}

/// A path's bandwidth cap, as the relay's impairment has it.
fn cap(net: &Impairment) -> BandwidthCap {
    BandwidthCap::new(net.bandwidth_kbps)
}

struct Reference {
    played: Vec<f32>,
    bytes: usize,
    concealed: usize,
    capped: usize,
}

/// The speech through libopus alone, losing the frames `spared` does not
/// say, and those of its own that the network's cap loses.
fn bare_libopus(
    speech: &[f32],
    spared: &[bool],
    net: &Impairment,
    settings: CodecSettings,
) -> Result<Reference, opus::Error> {
    let loss_percent = net.loss_percent;
    let mut encoder =
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    encoder.set_bitrate(opus::Bitrate::Bits(settings.bitrate_bps))?;
    encoder.set_complexity(settings.complexity)?;
    encoder.set_inband_fec(true)?;
    encoder.set_packet_loss_perc(loss_percent.ceil() as i32)?;
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?;
    let mut packets = Vec::with_capacity(spared.len());
    for k in 0..spared.len() {
        let mut pcm: Frame = [0.0; FRAME_SAMPLES];
        let chunk = speech.get(k * FRAME_SAMPLES..).unwrap_or_default();
        let n = chunk.len().min(FRAME_SAMPLES);
        pcm[..n].copy_from_slice(&chunk[..n]);
        packets.push(encoder.encode_vec_float(&pcm, 1500)?);
    }
    let mut cap = (net.bandwidth_kbps > 0).then(|| cap(net));
    let arrived: Vec<bool> = (packets.iter().zip(spared).enumerate())
        .map(|(k, (packet, spared))| {
            let now = Duration::from_millis(k as u64 * FRAME_MS);
            let len = MEDIA_HEADER_BYTES + packet.len();
            *spared && cap.as_mut().is_none_or(|cap| cap.fits(now, len))
        })
        .collect();
    let mut reference = Reference {
        played: Vec::with_capacity(arrived.len() * FRAME_SAMPLES),
        bytes: packets.iter().map(Vec::len).sum(),
        concealed: 0,
        capped: (spared.iter().zip(&arrived))
            .filter(|(s, a)| **s && !**a)
            .count(),
    };
    let mut out: Frame = [0.0; FRAME_SAMPLES];
    for (k, packet) in packets.iter().enumerate() {
        if arrived[k] {
            decoder.decode_float(packet, &mut out, false)?;
        } else if arrived.get(k + 1) == Some(&true) {
            decoder.decode_float(&packets[k + 1], &mut out, true)?;
        } else {
            reference.concealed += 1;
            decoder.decode_float(&[], &mut out, false)?;
        }
        reference.played.extend_from_slice(&out);
    }
    Ok(reference)
}

fn write(path: &Path, samples: &[f32]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = hound::WavWriter::create(path, spec)?;
    for s in samples {
        out.write_sample((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)?;
    }
    out.finalize()
}
