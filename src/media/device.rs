//! Sound cards through cpal: capture and playback streams whose callbacks
//! only copy between the device buffer and a lock-free ring (rtrb).
//!
//! The callbacks never allocate, lock, log or wait; what goes wrong in them
//! (a full ring, an empty one) is counted in atomics that the media thread
//! reads. Streams are not `Send`: the media thread opens, owns and drops
//! them. Devices are asked for 48 kHz first; another rate is converted on the
//! media thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

use super::resample::Resampler;
use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{Error, ErrorCode};

/// Ring capacity in device samples (mono): 200 ms at 48 kHz.
const RING_SAMPLES: usize = 9_600;

/// Captured audio held back beyond this is dropped (counted as overrun):
/// a device that delivers in bursts must not make the call lag behind.
const MAX_CAPTURE_BACKLOG: usize = 4 * FRAME_SAMPLES;

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
    let host = cpal::default_host();
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
    let host = cpal::default_host();
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
    let devices = host.devices().map_err(|e| failed("listing devices", e))?;
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
fn pick_config(device: &cpal::Device, input: bool) -> Result<(StreamConfig, SampleFormat), Error> {
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
    Ok((chosen.config(), chosen.sample_format()))
}

/// Opens the device called `name` (or the default) for capture (`input`) or
/// playback, builds its stream with `build` for the config picked, and
/// starts it.
fn start(
    name: Option<&str>,
    input: bool,
    build: impl FnOnce(&cpal::Device, &StreamConfig, SampleFormat) -> Result<cpal::Stream, Error>,
) -> Result<(cpal::Stream, StreamConfig), Error> {
    let what = if input { "capture" } else { "playback" };
    let device = find(name, input)?;
    let (config, format) = pick_config(&device, input)?;
    let stream = build(&device, &config, format)?;
    stream
        .play()
        .map_err(|e| failed(&format!("starting {what}"), e))?;
    tracing::info!(
        rate = config.sample_rate,
        channels = config.channels,
        ?format,
        "{what} open"
    );
    Ok((stream, config))
}

/// Microphone side: the callback downmixes into the ring; `read` takes 20 ms.
pub struct Capture {
    _stream: cpal::Stream,
    ring: rtrb::Consumer<f32>,
    resampler: Resampler,
    pending: Vec<f32>,
    chunk: Vec<f32>,
    pub counters: Arc<Counters>,
}

impl Capture {
    pub fn open(name: Option<&str>) -> Result<Capture, Error> {
        let (producer, ring) = rtrb::RingBuffer::new(RING_SAMPLES);
        let counters = Arc::new(Counters::default());
        let (stream, config) = start(name, true, |device, config, format| match format {
            SampleFormat::F32 => capture_stream::<f32>(device, config, producer, &counters),
            SampleFormat::I16 => capture_stream::<i16>(device, config, producer, &counters),
            _ => capture_stream::<i32>(device, config, producer, &counters),
        })?;
        Ok(Capture {
            _stream: stream,
            ring,
            resampler: Resampler::new(config.sample_rate, SAMPLE_RATE),
            pending: Vec::with_capacity(RING_SAMPLES),
            chunk: Vec::with_capacity(RING_SAMPLES),
            counters,
        })
    }

    /// The oldest 20 ms captured; silence (counted) when the device is behind.
    pub fn read(&mut self, out: &mut Frame) {
        let available = self.ring.slots();
        if available > 0
            && let Ok(chunk) = self.ring.read_chunk(available)
        {
            self.chunk.clear();
            let (a, b) = chunk.as_slices();
            self.chunk.extend_from_slice(a);
            self.chunk.extend_from_slice(b);
            chunk.commit_all();
            self.resampler.process(&self.chunk, &mut self.pending);
        }
        if self.pending.len() > MAX_CAPTURE_BACKLOG {
            let excess = self.pending.len() - MAX_CAPTURE_BACKLOG;
            self.pending.drain(..excess);
            self.counters
                .overruns
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
        if self.pending.len() < FRAME_SAMPLES {
            out.fill(0.0);
            self.counters.underruns.fetch_add(1, Ordering::Relaxed);
            return;
        }
        out.copy_from_slice(&self.pending[..FRAME_SAMPLES]);
        self.pending.drain(..FRAME_SAMPLES);
    }
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
            move |data: &[T], _| {
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

/// Speaker side: `write` queues 20 ms; the callback plays it on every channel.
pub struct Playback {
    _stream: cpal::Stream,
    ring: rtrb::Producer<f32>,
    resampler: Resampler,
    converted: Vec<f32>,
    pub counters: Arc<Counters>,
}

impl Playback {
    pub fn open(name: Option<&str>) -> Result<Playback, Error> {
        let (ring, consumer) = rtrb::RingBuffer::new(RING_SAMPLES);
        let counters = Arc::new(Counters::default());
        let (stream, config) = start(name, false, |device, config, format| match format {
            SampleFormat::F32 => playback_stream::<f32>(device, config, consumer, &counters),
            SampleFormat::I16 => playback_stream::<i16>(device, config, consumer, &counters),
            _ => playback_stream::<i32>(device, config, consumer, &counters),
        })?;
        Ok(Playback {
            _stream: stream,
            ring,
            resampler: Resampler::new(SAMPLE_RATE, config.sample_rate),
            converted: Vec::with_capacity(RING_SAMPLES),
            counters,
        })
    }

    pub fn write(&mut self, frame: &Frame) {
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
    mut ring: rtrb::Consumer<f32>,
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
            move |data: &mut [T], _| {
                for frame in data.chunks_mut(channels) {
                    let sample = match ring.pop() {
                        Ok(s) => s,
                        Err(_) => {
                            data_counters.underruns.fetch_add(1, Ordering::Relaxed);
                            0.0
                        }
                    };
                    frame.fill(T::from_sample(sample));
                }
            },
            move |_| {
                error_counters.errors.fetch_add(1, Ordering::Relaxed);
            },
            None,
        )
        .map_err(|e| failed("opening playback", e))
}
