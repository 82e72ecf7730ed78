//! Sound cards through cpal: capture and playback streams whose callbacks
//! only copy between the device buffer and a lock-free ring (rtrb).
//!
//! The callbacks never allocate, lock, log or wait; what goes wrong in them
//! (a full ring, an empty one) is counted in atomics that the media thread
//! reads. Streams are not `Send`: the media thread opens, owns and drops
//! them. Devices are asked for 48 kHz first; another rate is converted on the
//! media thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    BufferSize, FromSample, Sample, SampleFormat, SizedSample, StreamConfig, SupportedBufferSize,
};

use super::report::SoundDevice;
use super::resample::Resampler;
use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{Error, ErrorCode};

/// The playback ring holds at most 100 ms (at 48 kHz; scaled to the
/// device's rate). The pipeline keeps it far emptier than that: it is a
/// bound, not a buffer (it is refilled at `PLAYBACK_TARGET`).
const RING_MS: usize = 100;

/// The capture ring, and the ring of what was played, hold 500 ms: they are
/// emptied as soon as a frame is in, so they only fill while the media
/// thread stalls, and every sample they lost would move the echo against
/// the canceller's reference (a loaded 2-core machine stalls it for 100 ms
/// and more now and then).
const CAPTURE_RING_MS: usize = 500;

/// What a device is asked to buffer per callback: 20 ms (a double buffer,
/// so 40 ms of playback). 10 ms would be less delay, but ALSA's `pulse`
/// plugin then misses the server's deadlines whenever the machine is busy:
/// the server plays silence and holds the stream back, which measured worse
/// (docs/benchmarks.md, *Sound cards on a real clock*).
pub const DEVICE_PERIOD_MS: u32 = 20;

/// The playback ring is refilled (the speaker side of the call ticks) once
/// it holds no more than this, in 48 kHz samples: half a frame. The sound
/// card drains it at its own pace, so playout follows the card's clock and
/// the ring never fills up (issue 13).
pub const PLAYBACK_TARGET: usize = FRAME_SAMPLES / 2;

/// The most the playback ring is let hold (48 kHz samples): two frames
/// beyond its target. Only a card that stopped draining gets it there.
pub const MAX_PLAYBACK_QUEUE: usize = PLAYBACK_TARGET + 2 * FRAME_SAMPLES;

/// Until this many frames have been read, surplus capture backlog is dropped
/// outright (a device's start-up burst); after it, only beyond `MAX_CAPTURE_BACKLOG`.
const WARM_UP_FRAMES: u32 = 10;

/// Captured audio held back beyond this (80 ms) is dropped, counted as
/// overrun, and cut from the echo canceller's reference as well: the media
/// thread reads a frame as soon as one is in, so only a machine that has
/// stopped it gets there, and a burst sent on would raise the far end's
/// jitter buffer, and the delay with it, for the rest of the call.
const MAX_CAPTURE_BACKLOG: usize = 4 * FRAME_SAMPLES;

/// Silence put in for a stalled microphone is taken back out of what the
/// card brings in its next reads (the audio it held while stalled), so that
/// the capture keeps in step with the card's clock. A card that lost that
/// audio brings nothing extra: after this many reads the debt is forgotten.
const DEBT_READS: u32 = 10;

/// When the callbacks ran: µs since this instant, which is taken when the
/// first stream opens.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// What the device callbacks count.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples the callback could not hand over (capture: ring full) or that
    /// the media thread could not queue (playback: ring full).
    pub overruns: AtomicU64,
    /// Samples the device wanted and did not get (playback: ring empty),
    /// or ticks that found too little captured audio.
    pub underruns: AtomicU64,
    /// Errors the device reported while running.
    pub errors: AtomicU64,
    /// What the device itself holds between the callback and the air, in
    /// µs plus one, from the callback's timestamps: 0 until the host says,
    /// so that a device that holds nothing still reports a latency of 0.
    latency_us_plus_one: AtomicU64,
    /// Frames (device samples per channel) in the last callback.
    pub period: AtomicU64,
    /// Frames the callbacks have moved, in all.
    pub moved: AtomicU64,
    /// When the last callback ran, µs after `EPOCH` (0: none has).
    pub last_callback_us: AtomicU64,
    /// Playback: samples played that the media thread did not collect
    /// before the ring of what was played filled (the echo canceller's
    /// reference missed them).
    pub unheard: AtomicU64,
}

impl Counters {
    /// Overruns and underruns so far.
    pub fn runs(&self) -> (u64, u64) {
        (
            self.overruns.load(Ordering::Relaxed),
            self.underruns.load(Ordering::Relaxed),
        )
    }

    /// Frames moved so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Whether the device has moved `ms` worth of audio at `rate`: it runs.
    pub fn flowing(&self, rate: u32, ms: u64) -> bool {
        self.moved.load(Ordering::Relaxed) >= u64::from(rate) * ms / 1000
    }

    /// The device's own latency in ms, once known.
    pub fn latency_ms(&self) -> Option<u64> {
        let us = self
            .latency_us_plus_one
            .load(Ordering::Relaxed)
            .checked_sub(1)?;
        Some(us.div_ceil(1000))
    }

    /// In a callback: the host says the device holds `latency`.
    fn held(&self, latency: Duration) {
        let us = latency.as_micros() as u64;
        self.latency_us_plus_one
            .store(us.saturating_add(1), Ordering::Relaxed);
    }

    /// How long before `now` the last callback ran; `None` before the first.
    pub fn since_callback(&self, now: Instant) -> Option<Duration> {
        let us = self.last_callback_us.load(Ordering::Relaxed);
        (us > 0).then(|| now.saturating_duration_since(*EPOCH + Duration::from_micros(us)))
    }

    /// In a callback: it ran now (a clock read, nothing that can block).
    pub(super) fn called_back(&self) {
        let us = EPOCH.elapsed().as_micros() as u64;
        self.last_callback_us.store(us.max(1), Ordering::Relaxed);
    }
}

/// One line of `termphone devices`.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub id: String,
    pub input: bool,
    pub output: bool,
    pub default_input: bool,
    pub default_output: bool,
}

/// Every device of the default host that can carry a call: ALSA also lists
/// plugins (rate converters, JACK or OSS bridges with nothing behind them)
/// that cannot open a stream, and offering those only leads to a failed call.
pub fn list() -> Result<Vec<DeviceInfo>, Error> {
    let host = host();
    let default_in = host.default_input_device().and_then(|d| d.id().ok());
    let default_out = host.default_output_device().and_then(|d| d.id().ok());
    let devices = host.devices().map_err(|e| failed("listing devices", e))?;
    Ok(devices
        .filter_map(|d| {
            let id = d.id().ok()?;
            let input = d.supports_input() && usable(d.supported_input_configs());
            let output = d.supports_output() && usable(d.supported_output_configs());
            (input || output).then(|| DeviceInfo {
                name: d
                    .description()
                    .map_or_else(|_| id.to_string(), |x| x.name().to_owned()),
                input,
                output,
                default_input: default_in.as_ref() == Some(&id),
                default_output: default_out.as_ref() == Some(&id),
                id: id.id().to_owned(),
            })
        })
        .collect())
}

/// The host streams are opened on: `TERMPHONE_AUDIO_HOST` (`alsa`,
/// `pulseaudio`) when set and available; else ALSA on Linux (which reaches
/// a PulseAudio or PipeWire server through its `pulse` plugin), cpal's
/// default elsewhere. cpal 0.18's native PulseAudio host was measured to
/// fall behind real time on a loaded machine (docs/benchmarks.md, *Sound
/// cards on a real clock*), so it opens only the server's named devices
/// that ALSA cannot name (see [`find`]).
pub fn host() -> cpal::Host {
    if let Ok(name) = std::env::var("TERMPHONE_AUDIO_HOST")
        && !name.is_empty()
    {
        let wanted = cpal::available_hosts()
            .into_iter()
            .find(|id| id.name().eq_ignore_ascii_case(&name));
        match wanted.map(cpal::host_from_id) {
            Some(Ok(host)) => return host,
            _ => tracing::warn!(host = %name, "TERMPHONE_AUDIO_HOST is not available here"),
        }
    }
    #[cfg(target_os = "linux")]
    if let Ok(host) = cpal::host_from_id(cpal::HostId::Alsa) {
        return host;
    }
    cpal::default_host()
}

/// The host of a PulseAudio (or PipeWire-pulse) server that answers here,
/// if one does.
pub fn pulse_host() -> Option<cpal::Host> {
    #[cfg(target_os = "linux")]
    {
        let id = cpal::HostId::PulseAudio;
        if cpal::available_hosts().contains(&id)
            && pulseaudio_socket()
            && let Ok(host) = cpal::host_from_id(id)
        {
            return Some(host);
        }
    }
    None
}

/// Whether the environment names a PulseAudio socket that exists (what the
/// native host needs; checked first, so that no connection is tried).
#[cfg(target_os = "linux")]
fn pulseaudio_socket() -> bool {
    let from_server = std::env::var("PULSE_SERVER")
        .ok()
        .and_then(|s| s.strip_prefix("unix:").map(std::path::PathBuf::from));
    let from_runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| std::path::PathBuf::from(d).join("pulse/native"));
    from_server.or(from_runtime).is_some_and(|p| p.exists())
}

/// Which host `termphone devices` and `DEVICED_UPDATED` list.
pub fn host_label() -> String {
    let streams = host().id().name().to_owned();
    match pulse_host() {
        Some(_) if streams != "PulseAudio" => {
            format!("{streams} (the PulseAudio server's devices by name on its native host)")
        }
        _ => streams,
    }
}

/// The system's devices by direction, as `DEVICED_UPDATED` lists them:
/// `default` first, then the PulseAudio server's sinks and sources when one
/// answers (cheap to ask, so it can be polled), else every usable device of
/// the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceLists {
    pub microphones: Vec<SoundDevice>,
    pub speakers: Vec<SoundDevice>,
}

impl DeviceLists {
    pub fn has(&self, input: bool, id: &str) -> bool {
        let list = if input {
            &self.microphones
        } else {
            &self.speakers
        };
        list.iter().any(|d| d.device_id == id)
    }
}

/// Lists devices, keeping a connection to the PulseAudio server between
/// calls (a poll every second must not connect every second).
#[derive(Default)]
pub struct Lister {
    pulse: Option<cpal::Host>,
}

impl Lister {
    /// Whether listing is cheap enough to poll (a sound server answers);
    /// ALSA's probing of every plugin is not.
    pub fn pollable(&mut self) -> bool {
        if self.pulse.is_none() {
            self.pulse = pulse_host();
        }
        self.pulse.is_some()
    }

    pub fn lists(&mut self) -> Result<DeviceLists, Error> {
        let default = || SoundDevice {
            device_id: "default".into(),
            label: "the system's default".into(),
        };
        let mut lists = DeviceLists {
            microphones: vec![default()],
            speakers: vec![default()],
        };
        if self.pollable() {
            let pulse = self.pulse.as_ref().expect("pollable");
            match pulse.devices() {
                Ok(devices) => {
                    for d in devices {
                        let Ok(id) = d.id() else { continue };
                        let entry = SoundDevice {
                            device_id: id.id().to_owned(),
                            label: d
                                .description()
                                .map_or_else(|_| id.id().to_owned(), |x| x.name().to_owned()),
                        };
                        if d.supports_input() {
                            lists.microphones.push(entry.clone());
                        }
                        if d.supports_output() {
                            lists.speakers.push(entry);
                        }
                    }
                    return Ok(lists);
                }
                // The server went away: ask again next time, and list ALSA.
                Err(_) => self.pulse = None,
            }
        }
        for d in list()? {
            if d.id == "default" {
                continue;
            }
            let entry = SoundDevice {
                device_id: d.id.clone(),
                label: d.name.clone(),
            };
            if d.input {
                lists.microphones.push(entry.clone());
            }
            if d.output {
                lists.speakers.push(entry);
            }
        }
        Ok(lists)
    }
}

/// A direction is usable when the device can name at least one format for it
/// (asking opens the device, which is what fails for an empty plugin).
fn usable<I: Iterator, E>(configs: Result<I, E>) -> bool {
    configs.is_ok_and(|mut c| c.next().is_some())
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    let e = e.to_string();
    Error::new(
        ErrorCode::AudioDeviceFailed,
        format!(
            "{what}: {}. See `termphone devices`, or run with --audio-in null --audio-out null",
            e.trim_end_matches('.')
        ),
    )
}

/// The device called `name` (its name or its id, as `termphone devices`
/// shows them), or the default one.
fn find(name: Option<&str>, input: bool) -> Result<cpal::Device, Error> {
    let host = host();
    let direction = if input { "input" } else { "output" };
    let Some(name) = name else {
        let device = if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return device.ok_or_else(|| failed(&format!("no default {direction} device"), "none"));
    };
    let matches = |d: &cpal::Device| {
        d.id().is_ok_and(|id| id.id() == name) || d.description().is_ok_and(|x| x.name() == name)
    };
    // A PulseAudio (or PipeWire) server's own sinks and sources, which
    // ALSA can only reach as its default: opened on the native host.
    let mut devices: Vec<cpal::Device> = pulse_host()
        .and_then(|pulse| pulse.devices().ok())
        .into_iter()
        .flatten()
        .collect();
    if !devices.iter().any(matches) {
        devices = host
            .devices()
            .map_err(|e| failed("listing devices", e))?
            .collect();
    }
    for d in devices {
        if matches(&d)
            && (if input {
                d.supports_input()
            } else {
                d.supports_output()
            })
        {
            return Ok(d);
        }
    }
    Err(failed(
        &format!("no {direction} device called {name:?}"),
        "not found",
    ))
}

/// The config to open: 48 kHz if the device can, else its default; the
/// fewest channels; a sample format the callbacks convert.
fn pick_config(
    device: &cpal::Device,
    input: bool,
) -> Result<(StreamConfig, SampleFormat, SupportedBufferSize), Error> {
    let what = if input { "capture" } else { "playback" };
    let ranges: Vec<_> = if input {
        device.supported_input_configs().map(Iterator::collect)
    } else {
        device.supported_output_configs().map(Iterator::collect)
    }
    .map_err(|e| failed(&format!("{what} configs"), e))?;
    let usable =
        |f: SampleFormat| matches!(f, SampleFormat::F32 | SampleFormat::I16 | SampleFormat::I32);
    let at_48k = ranges
        .iter()
        .filter(|r| usable(r.sample_format()))
        .filter_map(|r| r.try_with_sample_rate(SAMPLE_RATE))
        .min_by_key(|c| (c.channels(), c.sample_format() != SampleFormat::F32));
    let chosen = match at_48k {
        Some(c) => c,
        None => {
            let c = if input {
                device.default_input_config()
            } else {
                device.default_output_config()
            }
            .map_err(|e| failed(&format!("{what} config"), e))?;
            if !usable(c.sample_format()) {
                return Err(failed(
                    &format!("{what} sample format {}", c.sample_format()),
                    "not supported (f32, i16 or i32 are)",
                ));
            }
            c
        }
    };
    Ok((
        chosen.config(),
        chosen.sample_format(),
        *chosen.buffer_size(),
    ))
}

/// Opens the device called `name` (or the default) for capture (`input`) or
/// playback, builds its stream with `build` for the config picked (asking
/// for `DEVICE_PERIOD_MS` buffers where the device allows a fixed size, its
/// default otherwise), and starts it.
fn start(
    name: Option<&str>,
    input: bool,
    mut build: impl FnMut(&cpal::Device, &StreamConfig, SampleFormat) -> Result<cpal::Stream, Error>,
) -> Result<(cpal::Stream, StreamConfig), Error> {
    let what = if input { "capture" } else { "playback" };
    // Taken here, so that no callback is the first to read it.
    LazyLock::force(&EPOCH);
    let device = find(name, input)?;
    let (mut config, format, range) = pick_config(&device, input)?;
    let wanted = config.sample_rate * DEVICE_PERIOD_MS / 1000;
    let fixed = match range {
        SupportedBufferSize::Range { min, max } if min <= max => Some(wanted.clamp(min, max)),
        _ => None,
    };
    let stream = match fixed {
        Some(frames) => {
            config.buffer_size = BufferSize::Fixed(frames);
            build(&device, &config, format).or_else(|e| {
                tracing::info!(error = %e, frames, "{what}: no fixed buffer; the device's default");
                config.buffer_size = BufferSize::Default;
                build(&device, &config, format)
            })?
        }
        None => build(&device, &config, format)?,
    };
    stream
        .play()
        .map_err(|e| failed(&format!("starting {what}"), e))?;
    tracing::info!(
        rate = config.sample_rate,
        channels = config.channels,
        ?format,
        buffer = ?config.buffer_size,
        callback_frames = ?stream.buffer_size().ok(),
        "{what} open"
    );
    Ok((stream, config))
}

/// Microphone side: the callback downmixes into the ring; `read` takes 20 ms.
pub struct Capture {
    _stream: cpal::Stream,
    ring: rtrb::Consumer<f32>,
    rate: u32,
    resampler: Resampler,
    /// 48 kHz samples converted and not yet read.
    pending: Vec<f32>,
    chunk: Vec<f32>,
    reads: u32,
    /// Silence put in for a stalled card, to take back out of what it
    /// brings next (`DEBT_READS`), and the reads left to do so.
    debt: usize,
    debt_reads: u32,
    /// Overruns already reported by [`Capture::take_lost`].
    lost_seen: u64,
    pub counters: Arc<Counters>,
}

impl Capture {
    pub fn open(name: Option<&str>) -> Result<Capture, Error> {
        let counters = Arc::new(Counters::default());
        let mut ring = None;
        let (stream, config) = start(name, true, |device, config, format| {
            let len = capture_ring_len(config.sample_rate);
            let (producer, consumer) = rtrb::RingBuffer::new(len);
            ring = Some(consumer);
            match format {
                SampleFormat::F32 => capture_stream::<f32>(device, config, producer, &counters),
                SampleFormat::I16 => capture_stream::<i16>(device, config, producer, &counters),
                _ => capture_stream::<i32>(device, config, producer, &counters),
            }
        })?;
        Ok(Capture {
            _stream: stream,
            ring: ring.expect("built with a ring"),
            rate: config.sample_rate,
            resampler: Resampler::new(config.sample_rate, SAMPLE_RATE),
            pending: Vec::with_capacity(capture_ring_len(SAMPLE_RATE) * 2),
            chunk: Vec::with_capacity(capture_ring_len(config.sample_rate)),
            reads: 0,
            debt: 0,
            debt_reads: 0,
            lost_seen: 0,
            counters,
        })
    }

    /// Captured 48 kHz samples ready to read (the ring's converted at the
    /// nominal rate).
    pub fn available(&self) -> usize {
        self.pending.len() + self.ring.slots() * SAMPLE_RATE as usize / self.rate as usize
    }

    /// The oldest 20 ms captured; silence (counted) when the device has
    /// nothing, which the media thread asks for only of a stalled card.
    pub fn read(&mut self, out: &mut Frame) {
        let fresh = self.drain_ring();
        if self.counters.moved.load(Ordering::Relaxed) > 0 {
            // Reads since the device started to deliver (a PulseAudio stream
            // takes a few hundred ms).
            self.reads = self.reads.saturating_add(1);
        }
        if self.reads <= WARM_UP_FRAMES {
            // A device's first callbacks can bring a burst: start level.
            let limit = FRAME_SAMPLES + self.target();
            let excess = self.pending.len().saturating_sub(limit);
            self.pending.drain(..excess);
        }
        if fresh && self.debt > 0 {
            self.repay();
        }
        let excess = self.pending.len().saturating_sub(MAX_CAPTURE_BACKLOG);
        if excess > 0 {
            self.pending.drain(..excess);
            (self.counters.overruns).fetch_add(excess as u64, Ordering::Relaxed);
        }
        if self.pending.len() < FRAME_SAMPLES {
            out.fill(0.0);
            self.counters.underruns.fetch_add(1, Ordering::Relaxed);
            self.debt += FRAME_SAMPLES;
            self.debt_reads = DEBT_READS;
            return;
        }
        out.copy_from_slice(&self.pending[..FRAME_SAMPLES]);
        self.pending.drain(..FRAME_SAMPLES);
    }

    /// Captured audio dropped since the last call (48 kHz samples): the
    /// ring was full, or the backlog too old. The capture is that much
    /// short of the card's clock from here on; the echo canceller's
    /// reference is cut to match.
    pub fn take_lost(&mut self) -> usize {
        let overruns = self.counters.overruns.load(Ordering::Relaxed);
        let lost = overruns - self.lost_seen;
        self.lost_seen = overruns;
        lost as usize * SAMPLE_RATE as usize / self.rate as usize
    }

    /// Moves what the callback captured to `pending`; whether there was any.
    fn drain_ring(&mut self) -> bool {
        let available = self.ring.slots();
        if available == 0 {
            return false;
        }
        let Ok(chunk) = self.ring.read_chunk(available) else {
            return false;
        };
        self.chunk.clear();
        let (a, b) = chunk.as_slices();
        self.chunk.extend_from_slice(a);
        self.chunk.extend_from_slice(b);
        chunk.commit_all();
        self.resampler.process(&self.chunk, &mut self.pending);
        true
    }

    /// The card is back after a stall that was filled with silence: what it
    /// brings beyond this read's frame is the audio it held meanwhile, and
    /// as much of it as was filled in is dropped. Sent as well, it would
    /// stay as delay and move the echo against the canceller's reference.
    fn repay(&mut self) {
        let surplus = self.pending.len().saturating_sub(FRAME_SAMPLES);
        let repaid = surplus.min(self.debt);
        self.pending.drain(..repaid);
        self.debt -= repaid;
        self.debt_reads = self.debt_reads.saturating_sub(1);
        if self.debt_reads == 0 {
            self.debt = 0;
        }
    }

    /// The most a device's start-up burst leaves after a read: one device
    /// period.
    fn target(&self) -> usize {
        self.period_48k()
    }

    fn period_48k(&self) -> usize {
        self.counters.period.load(Ordering::Relaxed) as usize * SAMPLE_RATE as usize
            / self.rate as usize
    }
}

/// Asks for a higher scheduling priority for the calling thread (nice -10),
/// where the system allows it: a call's clock and the threads that talk to
/// the sound server must not wait behind a compiler. Where it is refused (an
/// ordinary user without CAP_SYS_NICE) nothing changes.
pub fn raise_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority on this thread's id
    // changes only this thread's nice value, or fails.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10);
    }
}

/// [`raise_priority`] once per thread: the host's threads call the
/// callbacks, and the first call on each raises it (a system call, once;
/// no allocation, no lock).
fn raise_callback_priority() {
    thread_local! {
        static RAISED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !RAISED.get() {
        RAISED.set(true);
        raise_priority();
    }
}

/// Playback ring length for a device running at `rate`.
fn ring_len(rate: u32) -> usize {
    rate as usize * RING_MS / 1000
}

/// Capture ring length (also of what was played) at `rate`.
fn capture_ring_len(rate: u32) -> usize {
    rate as usize * CAPTURE_RING_MS / 1000
}

fn capture_stream<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: rtrb::Producer<f32>,
    counters: &Arc<Counters>,
) -> Result<cpal::Stream, Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let data_counters = counters.clone();
    let error_counters = counters.clone();
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], info: &cpal::InputCallbackInfo| {
                raise_callback_priority();
                data_counters.called_back();
                let t = info.timestamp();
                // cpal keeps `capture` from going backwards, so it can pass
                // `callback` after a burst: the card holds nothing then.
                data_counters.held(
                    t.callback
                        .checked_duration_since(t.capture)
                        .unwrap_or_default(),
                );
                let frames = (data.len() / channels) as u64;
                (data_counters.period).store(frames, Ordering::Relaxed);
                data_counters.moved.fetch_add(frames, Ordering::Relaxed);
                for frame in data.chunks(channels) {
                    let sum: f32 = frame.iter().map(|&s| f32::from_sample(s)).sum();
                    if ring.push(sum / frame.len() as f32).is_err() {
                        data_counters.overruns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            move |_| {
                error_counters.errors.fetch_add(1, Ordering::Relaxed);
            },
            None,
        )
        .map_err(|e| failed("opening capture", e))
}

/// Speaker side: `write` queues 20 ms; the callback plays it on every channel,
/// and copies what it played (the echo canceller's reference) into `played`.
pub struct Playback {
    _stream: cpal::Stream,
    ring: rtrb::Producer<f32>,
    played: rtrb::Consumer<f32>,
    played_chunk: Vec<f32>,
    played_resampler: Resampler,
    /// `Counters::unheard` already accounted for by [`Playback::take_played`].
    unheard_seen: u64,
    rate: u32,
    resampler: Resampler,
    converted: Vec<f32>,
    pub counters: Arc<Counters>,
}

impl Playback {
    pub fn open(name: Option<&str>) -> Result<Playback, Error> {
        let counters = Arc::new(Counters::default());
        let mut rings = None;
        let (stream, config) = start(name, false, |device, config, format| {
            let (producer, consumer) = rtrb::RingBuffer::new(ring_len(config.sample_rate));
            // What was played waits here until the media thread's next tick.
            let (played, played_out) = rtrb::RingBuffer::new(capture_ring_len(config.sample_rate));
            rings = Some((producer, played_out));
            let rings = (consumer, played);
            match format {
                SampleFormat::F32 => playback_stream::<f32>(device, config, rings, &counters),
                SampleFormat::I16 => playback_stream::<i16>(device, config, rings, &counters),
                _ => playback_stream::<i32>(device, config, rings, &counters),
            }
        })?;
        let (ring, played) = rings.expect("built with rings");
        Ok(Playback {
            _stream: stream,
            ring,
            played,
            played_chunk: Vec::with_capacity(capture_ring_len(config.sample_rate)),
            played_resampler: Resampler::new(config.sample_rate, SAMPLE_RATE),
            unheard_seen: 0,
            rate: config.sample_rate,
            resampler: Resampler::new(SAMPLE_RATE, config.sample_rate),
            converted: Vec::with_capacity(ring_len(config.sample_rate)),
            counters,
        })
    }

    /// Samples waiting in the ring, as 48 kHz samples.
    pub fn queued(&self) -> usize {
        (self.ring.buffer().capacity() - self.ring.slots()) * SAMPLE_RATE as usize
            / self.rate as usize
    }

    /// Appends what the card has played since the last call (48 kHz) to
    /// `out`: as many samples as it played, silence standing in for any the
    /// ring had no room for, so that the echo canceller's reference keeps
    /// the card's time.
    pub fn take_played(&mut self, out: &mut Vec<f32>) {
        let available = self.played.slots();
        if available > 0
            && let Ok(chunk) = self.played.read_chunk(available)
        {
            self.played_chunk.clear();
            let (a, b) = chunk.as_slices();
            self.played_chunk.extend_from_slice(a);
            self.played_chunk.extend_from_slice(b);
            chunk.commit_all();
            self.played_resampler.process(&self.played_chunk, out);
        }
        let unheard = self.counters.unheard.load(Ordering::Relaxed);
        let missed =
            (unheard - self.unheard_seen) as usize * SAMPLE_RATE as usize / self.rate as usize;
        self.unheard_seen = unheard;
        out.resize(out.len() + missed, 0.0);
    }

    /// Queues a frame; drops it (counted as overrun) when the ring already
    /// holds more than `MAX_PLAYBACK_QUEUE`: the device is not draining it
    /// (stalled, or not started yet), and a queue that only grows is delay.
    pub fn write(&mut self, frame: &Frame) {
        if self.queued() > MAX_PLAYBACK_QUEUE {
            (self.counters.overruns).fetch_add(frame.len() as u64, Ordering::Relaxed);
            return;
        }
        self.converted.clear();
        self.resampler.process(frame, &mut self.converted);
        for &s in &self.converted {
            if self.ring.push(s).is_err() {
                self.counters.overruns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn playback_stream<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    (mut ring, mut played): (rtrb::Consumer<f32>, rtrb::Producer<f32>),
    counters: &Arc<Counters>,
) -> Result<cpal::Stream, Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels.max(1));
    let data_counters = counters.clone();
    let error_counters = counters.clone();
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], info: &cpal::OutputCallbackInfo| {
                raise_callback_priority();
                data_counters.called_back();
                let t = info.timestamp();
                data_counters.held(
                    t.playback
                        .checked_duration_since(t.callback)
                        .unwrap_or_default(),
                );
                let frames = (data.len() / channels) as u64;
                (data_counters.period).store(frames, Ordering::Relaxed);
                data_counters.moved.fetch_add(frames, Ordering::Relaxed);
                for frame in data.chunks_mut(channels) {
                    let sample = match ring.pop() {
                        Ok(s) => s,
                        Err(_) => {
                            data_counters.underruns.fetch_add(1, Ordering::Relaxed);
                            0.0
                        }
                    };
                    frame.fill(T::from_sample(sample));
                    if played.push(sample).is_err() {
                        data_counters.unheard.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            move |_| {
                error_counters.errors.fetch_add(1, Ordering::Relaxed);
            },
            None,
        )
        .map_err(|e| failed("opening playback", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_holds_nothing_reports_a_latency_of_zero() {
        let counters = Counters::default();
        assert_eq!(counters.latency_ms(), None, "unknown until the host says");
        counters.held(Duration::ZERO);
        assert_eq!(counters.latency_ms(), Some(0));
        counters.held(Duration::from_micros(1500));
        assert_eq!(counters.latency_ms(), Some(2), "rounded up");
    }
}
