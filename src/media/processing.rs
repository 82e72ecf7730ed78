//! Voice processing of a sound card's capture (issue 22): echo
//! cancellation, noise suppression and automatic gain control, on the media
//! thread, never in the cpal callback.
//!
//! Echo cancellation and gain control are WebRTC's, as the `aec3` crate
//! ports them to Rust (AEC3 and AGC2, with a high-pass filter in front and
//! AGC2's fullband post filter behind): measured on the same simulated
//! room against WebRTC's C++ canceller, it converged faster and costs about
//! as much, with nothing to build or install (docs/benchmarks.md, *Voice
//! processing*). In double talk AEC3 cuts the near voice with the echo;
//! there a second, linear canceller that keeps what it learnt through
//! double talk is heard instead, where it has converged
//! ([`super::echo_filter`]). Noise suppression is RNNoise (the
//! `nnnoiseless` port, its model built in): on speech in pink noise and in
//! babble it did better
//! than WebRTC's suppressor, on both (docs/benchmarks.md, *Noise suppression
//! on noisy speech*), and its gains are heard with no delay
//! ([`super::gain_filter`]). It is heard only as much as the
//! room's noise floor asks for ([`super::noise_floor`]): on clean speech
//! it would cost about 0.4 PESQ-WB and take nothing out. Other people
//! talking, which RNNoise takes for speech and leaves, are turned down
//! behind it by level ([`super::expander`]).
//!
//! The stages are driven here one by one, as WebRTC's own audio processing
//! module drives them, rather than through the crate's graph pipeline, for
//! the delay (docs/benchmarks.md, *Cost per call and added delay*): the
//! pipeline split the capture into three bands and merged it back in each
//! of its nodes (1 ms of filter delay each time), and fed AEC3 10 ms frames
//! that it cut into its 4 ms blocks, holding each block's output back 4 ms
//! to put frames together again. Here the capture is split and merged once
//! for every stage, and a 20 ms media frame is exactly five AEC3 blocks, so
//! AEC3 processes them as they are and nothing waits for the next frame.
//!
//! The echo canceller's far-end reference is exactly what the sound card
//! played ([`VoiceProcessor::render`]): the playback callback copies every
//! sample it hands the card, the silence of an underrun included, so the
//! reference stays aligned with the echo when the machine stalls (fed what
//! the media thread *wrote*, the alignment slipped by every underrun and
//! AEC3 never converged on a loaded machine). The delay between reference
//! and capture starts from the devices' own latencies
//! ([`VoiceProcessor::set_device_delay`]), and the canceller starts over
//! when they move by more than its estimator would find; AEC3's delay
//! estimator follows what the room adds.

use std::collections::VecDeque;

use aec3::api::config::EchoCanceller3Config;
use aec3::audio_processing::aec3::aec3_common::BLOCK_SIZE;
use aec3::audio_processing::aec3::block::Block;
use aec3::audio_processing::aec3::block_processor::BlockProcessor;
use aec3::audio_processing::agc2::input_volume_controller::Config as InputVolumeConfig;
use aec3::audio_processing::audio_buffer::AudioBuffer;
use aec3::audio_processing::audio_util::{float_s16_to_float, float_to_float_s16};
use aec3::audio_processing::gain_controller2::{
    AdaptiveDigitalControllerConfig, GainController2, GainController2Config,
};
use aec3::audio_processing::high_pass_filter::HighPassFilter;
use aec3::audio_processing::post_filter::PostFilter;

use super::control::VoiceProcessing;
use super::echo_filter::{self, EchoFilter, Verdict};
use super::noise_suppressor::{self, NoiseSuppressor};
use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// The band splitter, RNNoise and AGC2 work on 10 ms blocks.
const BLOCK: usize = SAMPLE_RATE as usize / 100;

/// 48 kHz is split into three bands of 16 kHz.
const BANDS: usize = 3;

/// One band's samples in 10 ms.
const SPLIT: usize = AudioBuffer::SPLIT_BAND_SIZE;

/// One band's samples in a 20 ms frame.
const FRAME_SPLIT: usize = FRAME_SAMPLES / BANDS;

/// A device delay this far from the one the canceller was last given is
/// passed on: AEC3 tracks small changes by itself.
const DELAY_STEP_MS: i32 = 10;

/// A device delay this far from the one the canceller started with, read
/// steadily, starts the canceller over from it. AEC3 aligns its reference
/// by the device delay only when it starts, and its own estimator finds
/// tens of ms by itself, not hundreds: a capture on PulseAudio reads 600 ms
/// late for its first second or two, then drains to 10 ms, and a canceller
/// that started in the 600 kept a stale estimate for a second after
/// (docs/benchmarks.md, *The room's first seconds*).
const RESTART_MS: i32 = 100;

/// Readings (frames) that must agree, within [`RESTART_SPREAD_MS`], before
/// a move restarts the canceller: a device draining a backlog reads a
/// different delay every frame, and restarting on the way down would
/// anchor the canceller at a delay already gone.
const RESTART_READINGS: usize = 5;

/// How far apart steady readings may be: PulseAudio's alternate a period
/// apart, 46 and 56 ms.
const RESTART_SPREAD_MS: i32 = RESTART_MS / 2;

/// Device delay readings averaged before one is passed on: half a second
/// of frames. A device's latency reads a period apart from one callback to
/// the next (46 and 56 ms, alternating, on PulseAudio), so a single reading
/// would cross the step at every other frame.
const DELAY_READINGS: usize = 25;

/// The gain control's gain before it has heard any speech: none. WebRTC
/// starts at +15 dB, for the quiet microphones its analog input volume
/// control works with; here nothing sets the microphone's volume, and a
/// voice that is loud enough already came out 15 dB too loud, limited,
/// for the 2.5 s the gain takes to come down at 6 dB/s (0.1 PESQ-WB
/// through a real-clock microphone, docs/benchmarks.md). A quiet voice is
/// brought up from its first 120 ms of speech at the same 6 dB/s.
const INITIAL_GAIN_DB: f32 = 0.0;

/// Full scale in the stages' scale, that of 16-bit samples.
const FULL_SCALE_S16: f32 = 32_768.0;

/// A sample this close to full scale (in 16-bit units) tells AEC3 that the
/// microphone clipped, as WebRTC's own wrapper does.
const SATURATED: f32 = 32_700.0;

const _: () = assert!(
    FRAME_SAMPLES.is_multiple_of(BLOCK) && FRAME_SPLIT.is_multiple_of(BLOCK_SIZE),
    "a frame is whole 10 ms blocks, and whole AEC3 blocks once split"
);
const _: () = assert!(noise_suppressor::BLOCK == BLOCK, "RNNoise takes 10 ms");
const _: () = assert!(
    echo_filter::BLOCK == BLOCK,
    "the linear canceller takes 10 ms of the whole band"
);

/// AEC3's output comes a block of its own (4 ms) late: the linear
/// canceller's is held back as much, before it is split, so that the two
/// line up.
const LINEAR_HOLD: usize = BANDS * BLOCK_SIZE;

/// What the echo canceller reports (`MEDIA_STATS`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EchoMetrics {
    /// Echo return loss enhancement, dB: how much quieter the echo is after
    /// the canceller than before it.
    pub erle_db: f64,
    /// The delay AEC3 estimates between what is played and its echo, ms.
    pub delay_ms: i32,
}

/// The stages of one call's capture.
pub struct VoiceProcessor {
    settings: VoiceProcessing,
    /// Splits the capture into bands and merges it back, once for all
    /// stages.
    capture: AudioBuffer,
    /// The current frame's capture, split.
    bands: [[f32; FRAME_SPLIT]; BANDS],
    /// Takes out DC and rumble first, on the lowest band as WebRTC does,
    /// with the crate's 48 kHz coefficients as its pipeline ran it: that
    /// cuts at 35 Hz, and AEC3 converged faster than with the 100 Hz of
    /// the 16 kHz ones (docs/benchmarks.md, *Cost per call and added
    /// delay*).
    high_pass: HighPassFilter,
    /// The lowest band, as the high-pass filters take it (one channel).
    low_band: Vec<Vec<f32>>,
    /// AEC3 itself, fed whole blocks.
    echo: BlockProcessor,
    /// The linear canceller heard instead of AEC3 in double talk.
    linear: EchoFilter,
    /// Its output for the current frame, and whose output each of the
    /// frame's blocks takes.
    linear_out: [f32; FRAME_SAMPLES],
    verdicts: Vec<Verdict>,
    /// Whose output the last block took: a change is faded across a block.
    heard: Verdict,
    /// The end of its output for the frame before ([`LINEAR_HOLD`]).
    linear_held: [f32; LINEAR_HOLD],
    /// Its output split into bands, with a splitter and a high-pass filter
    /// of its own, to stand in for AEC3's bands.
    linear_split: AudioBuffer,
    linear_bands: [[f32; FRAME_SPLIT]; BANDS],
    linear_high_pass: HighPassFilter,
    block: Block,
    /// Splits the reference into bands.
    reference: AudioBuffer,
    /// Played audio short of 10 ms.
    rendered: Vec<f32>,
    /// The split reference short of an AEC3 block, per band.
    rendered_bands: [Vec<f32>; BANDS],
    render_block: Block,
    /// Reference samples still to skip: the capture lost as many.
    skip: usize,
    /// RNNoise, heard as much as the room's noise asks for.
    noise: NoiseSuppressor,
    gain: GainController2,
    post_filter: Option<PostFilter>,
    /// The frame in the stages' scale (that of 16-bit samples), as the
    /// filters take it.
    audio: Vec<Vec<f32>>,
    metrics: Option<EchoMetrics>,
    /// The echo path's delay as the canceller was last told it.
    delay_ms: i32,
    /// The latest device delay readings, oldest first.
    delay_readings: VecDeque<i32>,
    /// The delay the canceller started with: what AEC3 aligned by.
    started_at_ms: i32,
}

impl VoiceProcessor {
    /// The stages for a capture whose echo path is first taken to be
    /// `delay_ms` long.
    pub fn new(settings: VoiceProcessing, delay_ms: i32) -> VoiceProcessor {
        let rate = SAMPLE_RATE as usize;
        let buffer = || AudioBuffer::from_sample_rates(rate, 1, rate, 1, rate);
        VoiceProcessor {
            settings,
            capture: buffer(),
            bands: [[0.0; FRAME_SPLIT]; BANDS],
            high_pass: HighPassFilter::new(SAMPLE_RATE as i32, 1),
            low_band: vec![vec![0.0; FRAME_SPLIT]],
            echo: canceller(delay_ms),
            linear: EchoFilter::new(delay_ms),
            linear_out: [0.0; FRAME_SAMPLES],
            verdicts: Vec::with_capacity(FRAME_SAMPLES / BLOCK),
            heard: Verdict::Aec3,
            linear_held: [0.0; LINEAR_HOLD],
            linear_split: buffer(),
            linear_bands: [[0.0; FRAME_SPLIT]; BANDS],
            linear_high_pass: HighPassFilter::new(SAMPLE_RATE as i32, 1),
            block: Block::new(BANDS, 1),
            reference: buffer(),
            rendered: Vec::with_capacity(4 * FRAME_SAMPLES),
            rendered_bands: std::array::from_fn(|_| Vec::with_capacity(SPLIT + BLOCK_SIZE)),
            render_block: Block::new(BANDS, 1),
            skip: 0,
            noise: NoiseSuppressor::new(FULL_SCALE_S16),
            gain: GainController2::new(
                GainController2Config {
                    adaptive_digital: AdaptiveDigitalControllerConfig {
                        initial_gain_db: INITIAL_GAIN_DB,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                InputVolumeConfig::default(),
                rate,
                1,
                true,
            ),
            post_filter: PostFilter::create_if_needed(SAMPLE_RATE as i32, 1),
            audio: vec![vec![0.0; FRAME_SAMPLES]],
            metrics: None,
            delay_ms,
            delay_readings: VecDeque::with_capacity(DELAY_READINGS),
            started_at_ms: delay_ms,
        }
    }

    /// Turns stages on or off mid-call. The canceller starts afresh when it
    /// comes back on: what it learnt of the room may be stale.
    pub fn set(&mut self, settings: VoiceProcessing) {
        if settings.echo_cancellation && !self.settings.echo_cancellation {
            self.echo = canceller(self.delay_ms);
            self.linear = EchoFilter::new(self.delay_ms);
            self.started_at_ms = self.delay_ms;
        }
        if !settings.echo_cancellation {
            self.metrics = None;
        }
        self.settings = settings;
    }

    pub fn settings(&self) -> VoiceProcessing {
        self.settings
    }

    /// One reading of the devices' latencies (capture and playback, plus
    /// what waits in the playback ring), read once a frame: their mean over
    /// the last half second is the echo path's delay, passed on to the
    /// canceller when it has moved. AEC3 reads it only when it starts
    /// over (its first capture, a render buffer that overran or ran too far
    /// ahead, or the canceller turned back on), to align the reference
    /// before its own estimator has found the echo; so a move of
    /// [`RESTART_MS`] or more, once the readings are steady again, starts
    /// the canceller over from it.
    pub fn set_device_delay(&mut self, delay_ms: i32) {
        if self.delay_readings.len() == DELAY_READINGS {
            self.delay_readings.pop_front();
        }
        self.delay_readings.push_back(delay_ms);
        if let Some(steady) = self.steady_move() {
            self.delay_readings
                .retain(|d| (d - steady).abs() <= RESTART_SPREAD_MS);
            self.delay_ms = steady;
            self.started_at_ms = steady;
            if self.settings.echo_cancellation {
                self.echo = canceller(steady);
                self.linear = EchoFilter::new(steady);
            }
            return;
        }
        let sum: i32 = self.delay_readings.iter().sum();
        let mean = sum / self.delay_readings.len() as i32;
        if (mean - self.delay_ms).abs() >= DELAY_STEP_MS {
            self.delay_ms = mean;
            self.echo.set_audio_buffer_delay(mean);
        }
    }

    /// The mean of the last readings, when they agree with each other and
    /// lie [`RESTART_MS`] or more from the delay the canceller started with.
    fn steady_move(&self) -> Option<i32> {
        let n = self.delay_readings.len();
        let recent = self
            .delay_readings
            .range(n.checked_sub(RESTART_READINGS)?..);
        let (min, max) = (recent.clone().min()?, recent.clone().max()?);
        let mean = recent.sum::<i32>() / RESTART_READINGS as i32;
        (max - min <= RESTART_SPREAD_MS && (mean - self.started_at_ms).abs() >= RESTART_MS)
            .then_some(mean)
    }

    /// What the sound card played (48 kHz, in order, silence it played
    /// for want of audio included), as the far-end reference.
    pub fn render(&mut self, played: &[f32]) {
        if !self.settings.echo_cancellation {
            self.rendered.clear();
            self.rendered_bands.iter_mut().for_each(Vec::clear);
            return;
        }
        let skipped = self.skip.min(played.len());
        self.skip -= skipped;
        self.rendered.extend_from_slice(&played[skipped..]);
        let whole = self.rendered.len() / BLOCK * BLOCK;
        for start in (0..whole).step_by(BLOCK) {
            let samples = &self.rendered[start..start + BLOCK];
            for (s, x) in self.reference.channel_mut(0).iter_mut().zip(samples) {
                *s = float_to_float_s16(*x);
            }
            self.linear.render(self.reference.channel(0));
            self.reference.split_into_frequency_bands();
            for (band, rendered) in self.rendered_bands.iter_mut().enumerate() {
                rendered.extend_from_slice(self.reference.split_band(0, band));
            }
            while self.rendered_bands[0].len() >= BLOCK_SIZE {
                for (band, rendered) in self.rendered_bands.iter_mut().enumerate() {
                    let block = self.render_block.view_mut(band, 0);
                    block.copy_from_slice(&rendered[..BLOCK_SIZE]);
                    rendered.drain(..BLOCK_SIZE);
                }
                self.echo.buffer_render(&self.render_block);
            }
        }
        self.rendered.drain(..whole);
    }

    /// The capture lost `samples` (its ring overflowed, or its backlog was
    /// too old): as many of the reference are skipped, so that the echo
    /// stays where the canceller found it against the reference.
    pub fn drop_reference(&mut self, samples: usize) {
        if samples > 0 {
            self.linear.lost();
        }
        let now = samples.min(self.rendered.len());
        self.rendered.drain(..now);
        self.skip += samples - now;
    }

    /// Processes a captured frame in place.
    pub fn capture(&mut self, frame: &mut Frame) {
        let settings = self.settings;
        if !settings.any() {
            return;
        }
        let audio = &mut self.audio[0];
        for (s, x) in audio.iter_mut().zip(frame.iter()) {
            *s = float_to_float_s16(*x);
        }
        let saturated = audio.iter().any(|s| s.abs() >= SATURATED);
        split(&mut self.capture, &self.audio[0], &mut self.bands);
        high_pass(&mut self.high_pass, &mut self.low_band, &mut self.bands[0]);

        if settings.echo_cancellation {
            self.linear
                .capture(&self.audio[0], &mut self.linear_out, &mut self.verdicts);
            let held = self.linear_held;
            self.linear_held
                .copy_from_slice(&self.linear_out[FRAME_SAMPLES - LINEAR_HOLD..]);
            self.linear_out
                .copy_within(..FRAME_SAMPLES - LINEAR_HOLD, LINEAR_HOLD);
            self.linear_out[..LINEAR_HOLD].copy_from_slice(&held);
            split(
                &mut self.linear_split,
                &self.linear_out,
                &mut self.linear_bands,
            );
            let filter = &mut self.linear_high_pass;
            high_pass(filter, &mut self.low_band, &mut self.linear_bands[0]);
            for at in (0..FRAME_SPLIT).step_by(BLOCK_SIZE) {
                for (band, bands) in self.bands.iter().enumerate() {
                    let block = self.block.view_mut(band, 0);
                    block.copy_from_slice(&bands[at..at + BLOCK_SIZE]);
                }
                self.echo
                    .process_capture(false, saturated, None, &mut self.block);
                for (band, bands) in self.bands.iter_mut().enumerate() {
                    bands[at..at + BLOCK_SIZE].copy_from_slice(self.block.view(band, 0));
                }
            }
            self.hear_linear_in_double_talk();
            let m = self.echo.get_metrics();
            self.metrics = Some(EchoMetrics {
                erle_db: m.echo_return_loss_enhancement,
                delay_ms: m.delay_ms,
            });
        }

        for k in 0..FRAME_SAMPLES / BLOCK {
            for (band, bands) in self.bands.iter().enumerate() {
                let samples = &bands[k * SPLIT..(k + 1) * SPLIT];
                self.capture
                    .split_band_mut(0, band)
                    .copy_from_slice(samples);
            }
            self.capture.merge_frequency_bands();
            if settings.noise_suppression {
                let block = self.capture.channel_mut(0);
                self.noise.process(block.try_into().expect("a 10 ms block"));
            }
            if settings.auto_gain {
                self.gain.process(false, &mut self.capture);
            }
            self.audio[0][k * BLOCK..(k + 1) * BLOCK].copy_from_slice(self.capture.channel(0));
        }
        if let Some(filter) = self.post_filter.as_mut() {
            filter.process(&mut self.audio);
        }
        for (x, s) in frame.iter_mut().zip(&self.audio[0]) {
            *x = float_s16_to_float(*s);
        }
    }

    /// Where the near end speaks and the linear filter has converged, its
    /// output replaces AEC3's, in every band: the near voice keeps its
    /// top as well.
    fn hear_linear_in_double_talk(&mut self) {
        let fade = |i: usize| (i as f32 + 0.5) / SPLIT as f32;
        for (k, verdict) in self.verdicts.iter().enumerate() {
            let block = k * SPLIT..(k + 1) * SPLIT;
            for (aec3, linear) in self.bands.iter_mut().zip(&self.linear_bands) {
                let (aec3, linear) = (&mut aec3[block.clone()], &linear[block.clone()]);
                match (self.heard, *verdict) {
                    (Verdict::Aec3, Verdict::Aec3) => {}
                    (Verdict::Linear, Verdict::Linear) => aec3.copy_from_slice(linear),
                    (Verdict::Aec3, Verdict::Linear) => {
                        for (i, (a, l)) in aec3.iter_mut().zip(linear).enumerate() {
                            *a += fade(i) * (l - *a);
                        }
                    }
                    (Verdict::Linear, Verdict::Aec3) => {
                        for (i, (a, l)) in aec3.iter_mut().zip(linear).enumerate() {
                            *a = l + fade(i) * (*a - l);
                        }
                    }
                }
            }
            self.heard = *verdict;
        }
    }

    /// The canceller's latest figures, while it runs.
    pub fn metrics(&self) -> Option<EchoMetrics> {
        self.metrics
    }
}

/// Splits a frame into bands, 10 ms at a time, through `splitter`.
fn split(splitter: &mut AudioBuffer, frame: &[f32], bands: &mut [[f32; FRAME_SPLIT]; BANDS]) {
    for (k, block) in frame.chunks_exact(BLOCK).enumerate() {
        splitter.channel_mut(0).copy_from_slice(block);
        splitter.split_into_frequency_bands();
        for (band, bands) in bands.iter_mut().enumerate() {
            bands[k * SPLIT..(k + 1) * SPLIT].copy_from_slice(splitter.split_band(0, band));
        }
    }
}

/// Runs a frame's lowest band through `filter` (which takes it as a
/// one-channel buffer, `scratch`).
fn high_pass(filter: &mut HighPassFilter, scratch: &mut [Vec<f32>], band: &mut [f32]) {
    scratch[0].copy_from_slice(band);
    filter.process(scratch);
    band.copy_from_slice(&scratch[0]);
}

/// AEC3 with its default settings (those of WebRTC), the echo path first
/// taken to be `delay_ms` long.
fn canceller(delay_ms: i32) -> BlockProcessor {
    let mut echo = BlockProcessor::new(EchoCanceller3Config::default(), SAMPLE_RATE as i32, 1, 1);
    echo.set_audio_buffer_delay(delay_ms);
    echo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_speech::{WORDS, pink, talker_noise, words};

    /// Speech-like test signal for the canceller: noise through a
    /// resonance, in 150 to 400 ms "syllables" with pauses, from `seed`
    /// (not for the noise suppressor, to which it is noise).
    fn talker(seed: u32, secs: f32) -> Vec<f32> {
        let mut rand = talker_noise(seed);
        let n = (secs * SAMPLE_RATE as f32) as usize;
        let mut out = Vec::with_capacity(n);
        let (mut y1, mut y2) = (0.0f32, 0.0f32);
        while out.len() < n {
            let len = (0.15 + 0.25 * (rand() + 0.5)) * SAMPLE_RATE as f32;
            for i in 0..len as usize {
                let env = (std::f32::consts::PI * i as f32 / len).sin();
                let y = rand() + 1.6 * y1 - 0.8 * y2;
                (y2, y1) = (y1, y);
                out.push(0.05 * env * y);
            }
            out.resize(out.len() + SAMPLE_RATE as usize / 10, 0.0);
        }
        out.truncate(n);
        out
    }

    /// The room: 40 ms to the microphone, unattenuated, and a short tail.
    /// Its delays are not whole samples of the 16 kHz bands (a room's have
    /// no reason to be), which a filter on a band cannot follow.
    fn room(far: &[f32]) -> Vec<f32> {
        let d = 40 * SAMPLE_RATE as usize / 1000 + 1;
        let mut out = vec![0.0; far.len()];
        for (n, o) in out.iter_mut().enumerate().skip(d) {
            let tail = (n - d).checked_sub(241).map_or(0.0, |k| far[k]);
            *o = far[n - d] + 0.3 * tail;
        }
        out
    }

    fn db(x: &[f32]) -> f64 {
        let p = x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len() as f64;
        10.0 * (p + 1e-12).log10()
    }

    /// A simulated room, offline: the far end's voice comes back at least
    /// 30 dB below its level after 2 s, and the near end's own voice gets
    /// through within 3 dB.
    #[test]
    fn the_echo_of_a_room_is_cancelled_and_the_near_voice_kept() {
        let secs = 8.0;
        let (Some(far), Some(near)) = (words(&WORDS[..3], 5.0, 100), words(&WORDS[3..], 3.0, 100))
        else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let far = [far, vec![0.0; 3 * SAMPLE_RATE as usize]].concat();
        let near = [vec![0.0; 5 * SAMPLE_RATE as usize], near].concat();
        let echo = room(&far);
        let settings = VoiceProcessing {
            auto_gain: false,
            ..VoiceProcessing::ON
        };
        let mut voice = VoiceProcessor::new(settings, 40);
        let mut out = Vec::new();
        for k in 0..(secs * 50.0) as usize {
            let at = k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES;
            voice.render(&far[at.clone()]);
            let mut frame = [0.0; FRAME_SAMPLES];
            for (i, s) in frame.iter_mut().enumerate() {
                *s = echo[at.start + i] + near[at.start + i];
            }
            voice.capture(&mut frame);
            out.extend_from_slice(&frame);
        }
        let s =
            |a: f32, b: f32| (a * SAMPLE_RATE as f32) as usize..(b * SAMPLE_RATE as f32) as usize;
        let below = db(&far[s(2.0, 5.0)]) - db(&out[s(2.0, 5.0)]);
        assert!(below >= 30.0, "the echo is {below:.1} dB below the voice");
        let near_change = db(&out[s(5.5, 8.0)]) - db(&near[s(5.5, 8.0)]);
        assert!(
            near_change.abs() <= 3.0,
            "the near voice changed {near_change:.1} dB"
        );
        let m = voice.metrics().expect("the canceller's figures");
        assert!(m.erle_db > 0.0, "{m:?}");
    }

    /// Runs a capture of `near` plus the room's echo of `far` through the
    /// echo canceller alone, one frame of each at a time.
    fn cancelled(far: &[f32], near: &[f32]) -> Vec<f32> {
        let settings = VoiceProcessing {
            echo_cancellation: true,
            ..VoiceProcessing::OFF
        };
        let mut voice = VoiceProcessor::new(settings, 0);
        let echo = room(far);
        let mut out = Vec::with_capacity(near.len());
        for at in (0..near.len() / FRAME_SAMPLES).map(|k| k * FRAME_SAMPLES) {
            voice.render(&far[at..at + FRAME_SAMPLES]);
            let mut frame = [0.0; FRAME_SAMPLES];
            for (i, s) in frame.iter_mut().enumerate() {
                *s = echo[at + i] + near[at + i];
            }
            voice.capture(&mut frame);
            out.extend_from_slice(&frame);
        }
        out
    }

    /// Both ends speak at once, the echo as loud as the near voice: once the
    /// canceller has heard the far voice alone for a while, the near voice
    /// comes through whole. What differs from the same near voice processed
    /// with no echo at all (the echo left, and what the canceller took of
    /// the near voice) stays 30 dB under it (41.7 dB). The linear canceller
    /// on the 16 kHz low band, which cannot follow this room's delays, left
    /// it 20.3 dB under; AEC3 alone, taking the near voice apart in every
    /// bin it shared with the echo, 6.9 dB.
    #[test]
    fn in_double_talk_the_near_voice_comes_through_whole() {
        let (Some(far), Some(near)) = (words(&WORDS[..3], 15.0, 100), words(&WORDS[3..], 5.0, 100))
        else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let alone = 10 * SAMPLE_RATE as usize;
        let near = [vec![0.0; alone], near].concat();
        let both = alone..near.len().min(far.len()) / FRAME_SAMPLES * FRAME_SAMPLES;
        let with_echo = cancelled(&far[..both.end], &near[..both.end]);
        let without = cancelled(&vec![0.0; both.end], &near[..both.end]);
        let difference: Vec<f32> = with_echo[both.clone()]
            .iter()
            .zip(&without[both.clone()])
            .map(|(a, b)| a - b)
            .collect();
        let under = db(&without[both.clone()]) - db(&difference);
        eprintln!("in double talk, what differs is {under:.1} dB under the near voice");
        assert!(
            under >= 30.0,
            "what differs is only {under:.1} dB under the near voice"
        );
    }

    /// The capture loses 30 ms at 3 s (its ring overflowed while the media
    /// thread stalled): with the reference cut to match, the echo stays
    /// cancelled, with no new convergence.
    #[test]
    fn a_capture_that_loses_audio_keeps_the_echo_cancelled() {
        let far = talker(3, 7.0);
        let echo = room(&far);
        let settings = VoiceProcessing {
            auto_gain: false,
            noise_suppression: false,
            ..VoiceProcessing::ON
        };
        let mut voice = VoiceProcessor::new(settings, 40);
        let lost_at = 3 * SAMPLE_RATE as usize;
        let lost = 3 * BLOCK;
        let (mut played, mut captured) = (0, 0);
        let mut out = Vec::new();
        while captured + FRAME_SAMPLES <= echo.len() && played + FRAME_SAMPLES <= far.len() {
            voice.render(&far[played..played + FRAME_SAMPLES]);
            played += FRAME_SAMPLES;
            if captured == lost_at {
                captured += lost;
                voice.drop_reference(lost);
            }
            let mut frame = [0.0; FRAME_SAMPLES];
            frame.copy_from_slice(&echo[captured..captured + FRAME_SAMPLES]);
            captured += FRAME_SAMPLES;
            voice.capture(&mut frame);
            out.extend_from_slice(&frame);
        }
        let after = 3 * SAMPLE_RATE as usize..out.len();
        let below = db(&far[after.clone()]) - db(&out[after]);
        assert!(below >= 30.0, "the echo is {below:.1} dB below the voice");
    }

    /// Six talkers at once: the same words, each talker from its own
    /// word and offset, with no pauses.
    fn babble(n: usize) -> Option<Vec<f32>> {
        let mut out = vec![0.0; n];
        for k in 0..6 {
            let mut order = WORDS;
            order.rotate_left(k);
            let mut voice = words(&order, n as f32 / SAMPLE_RATE as f32, 0)?;
            voice.rotate_left(k * n / 7);
            out.iter_mut().zip(voice).for_each(|(o, v)| *o += v);
        }
        Some(out)
    }

    /// How much quieter the pauses of `speech` mixed with `noise` at 10 dB
    /// SNR are after noise suppression (from 2 s, once it has learnt the
    /// noise), and how the speech's own level changed.
    fn suppression(speech: &[f32], noise: &[f32]) -> (f64, f64) {
        let gain = (db(speech) - 10.0 - db(noise)) / 20.0;
        let noise: Vec<f32> = noise.iter().map(|x| x * 10f32.powf(gain as f32)).collect();
        let settings = VoiceProcessing {
            noise_suppression: true,
            ..VoiceProcessing::OFF
        };
        let mut voice = VoiceProcessor::new(settings, 40);
        let mut out = Vec::new();
        for (s, n) in speech
            .chunks_exact(FRAME_SAMPLES)
            .zip(noise.chunks_exact(FRAME_SAMPLES))
        {
            let mut frame = [0.0; FRAME_SAMPLES];
            for (i, f) in frame.iter_mut().enumerate() {
                *f = s[i] + n[i];
            }
            voice.render(&[0.0; FRAME_SAMPLES]);
            voice.capture(&mut frame);
            out.extend_from_slice(&frame);
        }
        // Pauses: 20 ms of silence in the clean speech, and speech: the rest.
        let from = 2 * SAMPLE_RATE as usize / FRAME_SAMPLES;
        let (mut pause_in, mut pause_out, mut talk_in, mut talk_out) =
            (vec![], vec![], vec![], vec![]);
        for k in from..out.len() / FRAME_SAMPLES {
            let at = k * FRAME_SAMPLES..(k + 1) * FRAME_SAMPLES;
            if speech[at.clone()].iter().all(|x| *x == 0.0) {
                pause_in.extend_from_slice(&noise[at.clone()]);
                pause_out.extend_from_slice(&out[at]);
            } else {
                talk_in.extend_from_slice(&speech[at.clone()]);
                talk_out.extend_from_slice(&out[at]);
            }
        }
        assert!(pause_in.len() > SAMPLE_RATE as usize / 2, "enough pauses");
        (db(&pause_in) - db(&pause_out), db(&talk_out) - db(&talk_in))
    }

    /// Speech, 10 s of spoken words 300 ms apart, with `noise` 10 dB
    /// below it at the microphone: how much quieter the pauses are, and
    /// how the speech changed; `None` without the words.
    fn noisy_speech(noise: impl FnOnce(usize) -> Option<Vec<f32>>) -> Option<(f64, f64)> {
        let speech = words(&WORDS, 10.0, 300)?;
        Some(suppression(&speech, &noise(speech.len())?))
    }

    /// The steady noise (pink noise, as from a fan) 10 dB below the
    /// speech: in the pauses between words it is at least 15 dB quieter,
    /// and the speech keeps its level within 3 dB.
    #[test]
    fn pink_noise_in_speech_pauses_is_turned_down() {
        let Some((down, speech)) = noisy_speech(|n| Some(pink(3, n))) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        eprintln!("pink noise in pauses {down:.1} dB down (speech {speech:+.1} dB)");
        assert!(down >= 15.0, "pink noise only {down:.1} dB down");
        assert!(speech.abs() <= 3.0, "the speech changed {speech:+.1} dB");
    }

    /// The same with the babble of six other talkers, which RNNoise takes
    /// for speech and leaves to the expander behind it: the pauses at
    /// least 15 dB quieter, and the speech within 1 dB of its level.
    #[test]
    fn babble_in_speech_pauses_is_turned_down() {
        let Some((down, speech)) = noisy_speech(babble) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        eprintln!("babble in pauses {down:.1} dB down (speech {speech:+.1} dB)");
        assert!(down >= 15.0, "babble only {down:.1} dB down");
        assert!(speech.abs() <= 1.0, "the speech changed {speech:+.1} dB");
    }

    /// `input` through gain control alone; the level (dB) of its first
    /// and its last second of speech against the input's.
    fn gain_change(input: &[f32]) -> (f64, f64) {
        let settings = VoiceProcessing {
            auto_gain: true,
            ..VoiceProcessing::OFF
        };
        let mut voice = VoiceProcessor::new(settings, 40);
        let mut out = Vec::with_capacity(input.len());
        for chunk in input.chunks_exact(FRAME_SAMPLES) {
            let mut frame = [0.0; FRAME_SAMPLES];
            frame.copy_from_slice(chunk);
            voice.capture(&mut frame);
            out.extend_from_slice(&frame);
        }
        let second = SAMPLE_RATE as usize;
        let end = out.len() - second..out.len();
        (
            db(&out[..second]) - db(&input[..second]),
            db(&out[end.clone()]) - db(&input[end]),
        )
    }

    /// A voice loud enough already keeps its level from its first word
    /// (no gain assumed before any speech is heard); one 30 dB quieter is
    /// brought up by the end of 10 s of speech.
    #[test]
    fn gain_control_leaves_a_good_level_and_raises_a_quiet_one() {
        let Some(speech) = words(&WORDS, 10.0, 100) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let (first, last) = gain_change(&speech);
        assert!(
            first.abs() <= 1.5,
            "a good level changed {first:+.1} dB at first"
        );
        assert!(
            last.abs() <= 1.5,
            "a good level changed {last:+.1} dB at last"
        );
        let quiet: Vec<f32> = speech.iter().map(|x| x * 0.03).collect();
        let (first, last) = gain_change(&quiet);
        eprintln!("a quiet voice: {first:+.1} dB in its first second, {last:+.1} dB in its last");
        assert!(
            last >= 15.0,
            "a quiet voice raised {last:+.1} dB (first second {first:+.1})"
        );
    }

    #[test]
    fn stages_switch_off_to_a_pass_through() {
        let mut voice = VoiceProcessor::new(VoiceProcessing::ON, 40);
        voice.set(VoiceProcessing::OFF);
        let mut frame = [0.25; FRAME_SAMPLES];
        voice.capture(&mut frame);
        assert!(frame.iter().all(|s| *s == 0.25));
        assert_eq!(voice.metrics(), None);
    }

    /// What PulseAudio's latencies read, a period apart from callback to
    /// callback, is one delay to the canceller; a real move is passed on.
    #[test]
    fn the_canceller_hears_of_a_device_delay_that_moved_not_of_its_jitter() {
        let mut voice = VoiceProcessor::new(VoiceProcessing::ON, 70);
        // The delays the canceller is told, each once, as `readings` come.
        let mut told = |readings: &mut dyn Iterator<Item = i32>| {
            let mut told = Vec::new();
            for delay_ms in readings {
                voice.set_device_delay(delay_ms);
                if told.last() != Some(&voice.delay_ms) {
                    told.push(voice.delay_ms);
                }
            }
            told
        };
        let jitter = told(&mut (0..500).map(|k| if k % 2 == 0 { 46 } else { 56 }));
        assert!(
            jitter.len() == 1 && (46..=56).contains(&jitter[0]),
            "alternating 46 and 56 ms: told {jitter:?}"
        );
        let moved = told(&mut std::iter::repeat_n(150, DELAY_READINGS));
        assert!(
            moved
                .last()
                .is_some_and(|d| (150 - d).abs() < DELAY_STEP_MS),
            "a move to 150 ms: told {moved:?}"
        );
    }

    /// A capture on PulseAudio: 600 ms late for its first second, draining
    /// to 10 within a few frames, then steady. The canceller starts over
    /// once at 600 and once where the drain ends, never on the way down.
    #[test]
    fn a_capture_that_drains_its_start_up_backlog_restarts_the_canceller_where_it_settles() {
        let mut voice = VoiceProcessor::new(VoiceProcessing::ON, 70);
        let drain = [540, 420, 300, 163, 90, 40];
        let readings = (std::iter::repeat_n(627, 50))
            .chain(drain)
            .chain((0..100).map(|k| if k % 2 == 0 { 36 } else { 49 }));
        let mut started = vec![voice.started_at_ms];
        for delay_ms in readings {
            voice.set_device_delay(delay_ms);
            if started.last() != Some(&voice.started_at_ms) {
                started.push(voice.started_at_ms);
            }
        }
        assert_eq!(started.len(), 3, "restarted at {started:?}");
        assert_eq!(started[1], 627);
        assert!((36..=49).contains(&started[2]), "{started:?}");
        // A stall that reads late for a frame or two is not a move.
        for delay_ms in [36, 300, 280, 49, 36, 49, 36, 49] {
            voice.set_device_delay(delay_ms);
        }
        assert!((36..=49).contains(&voice.started_at_ms));
    }
}
