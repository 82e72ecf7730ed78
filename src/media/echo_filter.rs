//! A linear echo canceller that keeps what it learnt through double talk.
//!
//! AEC3 takes the echo out of a room well while only the far end speaks,
//! but when both ends speak at once its linear filter loses most of what it
//! had learnt (9 to 14 dB of echo taken out, where it had 40 and more), and
//! its suppressor then turns down every bin the echo shares with the near
//! voice: the near voice comes out in pieces (PESQ-WB 1.2, docs/benchmarks.md,
//! *Double talk, measured again*). This filter is the classic answer, two
//! paths (Ochiai's, as Speex's canceller has it): a background filter that
//! adapts on every block, near voice or not, and a foreground filter that
//! cancels, which takes the background's weights only when they have done
//! clearly better for several blocks running. Near speech throws the
//! background off, never the foreground, so in double talk the echo stays
//! about 40 dB down and the near voice whole.
//!
//! It runs on the whole band at 48 kHz, in 10 ms blocks, as a
//! partitioned-block frequency-domain adaptive filter (overlap-save, 15
//! partitions: 150 ms of echo path). Not on the 16 kHz low band, where
//! AEC3's own linear filter runs: the band splitter's aliasing makes a band
//! of a delayed signal something other than the same band delayed, unless
//! the delay is a whole number of the band's samples, and a room's delays
//! are not: in PulseAudio's room no filter on the band could predict the
//! echo better than 25 to 30 dB down, on the whole band 42 dB and more,
//! and a simulated room one 48 kHz sample longer than a whole number of the
//! band's took double talk from PESQ-WB 3.9 to 2.1 (docs/benchmarks.md,
//! *Double talk in a room of any delay*). [`super::processing`] hears its output only where it has
//! converged and the near end is speaking; everywhere else AEC3's.
//!
//! The reference and the capture are matched by sample count, not by when
//! they arrive: the sound card's clock keeps them a fixed number of samples
//! apart (the playback side copies even the silence of an underrun, the
//! capture side cuts the reference where it lost samples), so the filter
//! learns a path that does not jitter with the media thread's wake-ups.
//! Where in the reference the echo path starts is measured over the first
//! half second: how far ahead of the capture the reference runs, plus the
//! devices' latency, less a margin.

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::SAMPLE_RATE;

/// Samples in a millisecond.
const PER_MS: usize = SAMPLE_RATE as usize / 1000;

/// A block: 10 ms.
pub const BLOCK: usize = 10 * PER_MS;

/// The transform's length: two blocks (overlap-save).
const FFT: usize = 2 * BLOCK;

const BINS: usize = BLOCK + 1;

/// Blocks of echo path the filter spans: 150 ms from where it starts.
const PARTITIONS: usize = 15;

/// Its step size, normalised by each bin's reference power over the
/// filter's span: large, for a
/// background filter that a foreground one stands behind.
const STEP: f32 = 1.0;

/// The echo path is taken to start this much before the devices'
/// latency says: the latency is read, not measured.
const MARGIN: usize = 20 * PER_MS;

/// The most reference kept (2 s), whatever the capture does.
const MAX_REFERENCE: usize = 2 * SAMPLE_RATE as usize;

/// Capture frames whose lead on the reference is averaged before the
/// filter starts (0.5 s of 20 ms frames).
const SETTLING_FRAMES: usize = 25;

/// Smoothing of the two paths' error energies, per block.
const ERROR_SMOOTHING: f32 = 0.9;

/// The background must do this much better (3 dB), smoothed and in the
/// block itself, for this many blocks running before the foreground
/// takes its weights.
const BETTER: f32 = 0.5;
const BETTER_BLOCKS: u32 = 3;

/// Blocks the near end is taken to go on speaking for after it was last
/// heard (50 ms): the quiet ends of its words and the gaps between them,
/// which AEC3 would cut.
const HANGOVER: u32 = 5;

/// A background this much worse (9 dB) than the foreground has been
/// thrown off (by double talk): it starts again from the foreground.
const DIVERGED: f32 = 8.0;

/// Echo return loss enhancement (of energy) from which the foreground is
/// trusted with the near voice: 25 dB. Below it, what it leaves of a new
/// sound of the far voice, taken for the near end, would be heard.
const CONVERGED: f32 = 316.0;

/// Smoothing of the enhancement's energies, per block where the far end
/// speaks and the near end does not.
const ERLE_SMOOTHING: f32 = 0.98;

/// What is left after the foreground, this many times (10 dB) more than
/// the echo it expects to leave, is the near end speaking.
const NEAR_OVER_RESIDUAL: f32 = 10.0;

/// What is left after the foreground, at most this many times (6 dB) what
/// it expects to leave, is echo alone: the blocks that its figures learn
/// from. Between this and [`NEAR_OVER_RESIDUAL`] a block is left out of
/// both.
const ECHO_ALONE: f32 = 4.0;

/// A block the filter made this much louder (3 dB) is not cancelled but
/// made worse: the filter is not heard on it.
const ADDED: f32 = 2.0;

/// Block energies below this (16-bit scale: about -60 dBFS) are silence.
const SILENCE: f32 = BLOCK as f32 * 1_000.0;

/// A bin's power floor in the step's normalisation, for the same silence.
const POWER_FLOOR: f32 = FFT as f32 * 1_000.0;

/// One block's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The filter has not converged, or the near end is quiet: AEC3's
    /// output is the better one.
    Aec3,
    /// The near end speaks and the filter has converged: its output keeps
    /// the near voice whole.
    Linear,
}

/// The two-path filter of one capture.
pub struct EchoFilter {
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    /// What was played, from sample `reference_at` on.
    reference: VecDeque<f32>,
    reference_at: u64,
    /// Samples of capture seen so far.
    captured: u64,
    /// The reference's lead on the capture, summed over the first frames,
    /// and the devices' latency in samples.
    leads: Vec<i64>,
    latency: usize,
    /// How many samples behind the capture the echo path starts, once
    /// settled.
    start: Option<usize>,
    /// The spectra of the reference's last blocks, newest first.
    spectra: VecDeque<Vec<Complex32>>,
    foreground: Vec<Vec<Complex32>>,
    background: Vec<Vec<Complex32>>,
    /// Each bin's reference power over the filter's span: what a step is
    /// normalised by. Over the span, not smoothed over the last blocks: a
    /// voice's bins come and go, and a step that followed them lagged,
    /// which took the filter 8 s to reach 20 dB of a real room's echo
    /// (docs/benchmarks.md, *Double talk in a room of any delay*).
    power: Vec<f32>,
    foreground_error: f32,
    background_error: f32,
    better_for: u32,
    /// Blocks left until what the filter holds is whole again after a
    /// loss.
    unsure_for: usize,
    /// Blocks the near end is still taken to speak for.
    near_for: u32,
    /// Which partition has its weights cut back to a block this time
    /// (besides the first): one each block, in turn.
    constrain: usize,
    /// Energies of capture and of the foreground's output where the far end
    /// speaks alone, smoothed.
    echo_energy: f32,
    residual_energy: f32,
    /// The same bin by bin: what the foreground leaves of the echo where.
    echo_power: Vec<f32>,
    residual_power: Vec<f32>,
    near_spectrum: Vec<Complex32>,
    residual_spectrum: Vec<Complex32>,
    samples: Vec<f32>,
    spectrum: Vec<Complex32>,
    scratch: Vec<Complex32>,
}

impl EchoFilter {
    /// A filter for a capture whose devices hold `latency_ms` between what
    /// is played and what is captured.
    pub fn new(latency_ms: i32) -> EchoFilter {
        let mut planner = RealFftPlanner::new();
        let forward = planner.plan_fft_forward(FFT);
        let inverse = planner.plan_fft_inverse(FFT);
        let zeros = || vec![Complex32::default(); BINS];
        let scratch = forward.get_scratch_len().max(inverse.get_scratch_len());
        EchoFilter {
            scratch: vec![Complex32::default(); scratch],
            forward,
            inverse,
            reference: VecDeque::new(),
            reference_at: 0,
            captured: 0,
            leads: Vec::with_capacity(SETTLING_FRAMES),
            latency: latency_ms.max(0) as usize * PER_MS,
            start: None,
            spectra: VecDeque::with_capacity(PARTITIONS + 1),
            foreground: (0..PARTITIONS).map(|_| zeros()).collect(),
            background: (0..PARTITIONS).map(|_| zeros()).collect(),
            power: vec![0.0; BINS],
            foreground_error: 0.0,
            background_error: 0.0,
            better_for: 0,
            near_for: 0,
            unsure_for: 0,
            constrain: 1,
            echo_energy: 0.0,
            residual_energy: 0.0,
            // Nothing learnt: each bin's echo is expected whole.
            echo_power: vec![1.0; BINS],
            residual_power: vec![1.0; BINS],
            near_spectrum: zeros(),
            residual_spectrum: zeros(),
            samples: vec![0.0; FFT],
            spectrum: zeros(),
        }
    }

    /// What was played, in order. A capture that is not processed (an
    /// audience member's, which sends nothing) still has its reference
    /// kept, only the last [`MAX_REFERENCE`] of it.
    pub fn render(&mut self, played: &[f32]) {
        self.reference.extend(played);
        self.trim_reference(0);
    }

    /// The capture lost samples, and the reference as many: until the filter
    /// has seen its whole span past the gap (and the echo path's delay),
    /// AEC3 is heard.
    pub fn lost(&mut self) {
        let start = self.start.unwrap_or(self.latency);
        self.unsure_for = PARTITIONS + start.div_ceil(BLOCK) + 1;
    }

    /// Whether the filter has taken enough echo out to be heard in double
    /// talk.
    fn converged(&self) -> bool {
        self.residual_energy * CONVERGED < self.echo_energy
    }

    /// Cancels the echo of one captured frame (a whole number
    /// of blocks), writing the foreground's output to `out` and saying,
    /// block by block, whose output to hear.
    pub fn capture(&mut self, captured: &[f32], out: &mut [f32], verdicts: &mut Vec<Verdict>) {
        verdicts.clear();
        out.copy_from_slice(captured);
        let Some(start) = self.start.or_else(|| self.settle(captured.len())) else {
            return verdicts.resize(captured.len() / BLOCK, Verdict::Aec3);
        };
        for (near, out) in captured
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let verdict = match self.next_reference(start) {
                true => self.cancel(near, out),
                false => Verdict::Aec3,
            };
            verdicts.push(verdict);
        }
    }

    /// Measures the reference's lead on a frame of `samples` captured;
    /// after the first half second, where the echo path starts.
    fn settle(&mut self, samples: usize) -> Option<usize> {
        let available = self.reference_at + self.reference.len() as u64;
        self.leads.push(available as i64 - self.captured as i64);
        self.captured += samples as u64;
        if self.leads.len() < SETTLING_FRAMES {
            return None;
        }
        let lead = self.leads.iter().sum::<i64>() / self.leads.len() as i64;
        self.start = Some((lead.max(0) as usize + self.latency).saturating_sub(MARGIN));
        None
    }

    /// Takes the spectrum of the reference whose echo the next captured
    /// block may hold (the block `start` samples before it, and the one
    /// before that for overlap-save); false where the reference has not
    /// all come.
    fn next_reference(&mut self, start: usize) -> bool {
        let newest = self.captured as i64 + BLOCK as i64 - start as i64;
        self.captured += BLOCK as u64;
        let from = newest - FFT as i64;
        let available = self.reference_at as i64 + self.reference.len() as i64;
        let whole = from >= self.reference_at as i64 && newest <= available;
        for (k, s) in self.samples.iter_mut().enumerate() {
            let at = from + k as i64 - self.reference_at as i64;
            *s = usize::try_from(at)
                .ok()
                .and_then(|at| self.reference.get(at).copied())
                .unwrap_or(0.0);
        }
        self.trim_reference((from + BLOCK as i64).max(0) as u64);
        let mut spectrum = match self.spectra.len() {
            PARTITIONS => self.spectra.pop_back().expect("full"),
            _ => vec![Complex32::default(); BINS],
        };
        self.forward
            .process_with_scratch(&mut self.samples, &mut spectrum, &mut self.scratch)
            .expect("sizes fixed at construction");
        self.spectra.push_front(spectrum);
        self.power.fill(0.0);
        for x in &self.spectra {
            for (p, x) in self.power.iter_mut().zip(x) {
                *p += x.norm_sqr();
            }
        }
        whole
    }

    /// Forgets the reference before sample `keep_from`, and whatever is
    /// more than [`MAX_REFERENCE`] behind what came last.
    fn trim_reference(&mut self, keep_from: u64) {
        let excess = self.reference.len().saturating_sub(MAX_REFERENCE) as u64;
        let drop = keep_from
            .saturating_sub(self.reference_at)
            .max(excess)
            .min(self.reference.len() as u64);
        self.reference.drain(..drop as usize);
        self.reference_at += drop;
    }

    /// Both paths on one block: the foreground's output into `out`, the
    /// background a step on, and the block judged.
    fn cancel(&mut self, near: &[f32], out: &mut [f32]) -> Verdict {
        let (mut fore_echo, mut back_echo) = ([0.0; BLOCK], [0.0; BLOCK]);
        self.estimate(Path::Foreground, &mut fore_echo);
        self.estimate(Path::Background, &mut back_echo);
        let (mut e_fore, mut e_back) = ([0.0; BLOCK], [0.0; BLOCK]);
        for k in 0..BLOCK {
            e_fore[k] = near[k] - fore_echo[k];
            e_back[k] = near[k] - back_echo[k];
        }
        self.adapt(&e_back);

        let (fore, back) = (energy(&e_fore), energy(&e_back));
        let a = ERROR_SMOOTHING;
        self.foreground_error = a * self.foreground_error + (1.0 - a) * fore;
        self.background_error = a * self.background_error + (1.0 - a) * back;
        // Not while the near end speaks: a background adapted on a near voice
        // that sounds like the far one can cancel some of it, and be better
        // for it (double talk 1.12 where the near voice came 300 ms into the
        // far one's words, 3.60 without it; docs/benchmarks.md).
        let better = self.near_for == 0
            && self.background_error < BETTER * self.foreground_error
            && back < BETTER * fore;
        self.better_for = if better { self.better_for + 1 } else { 0 };
        let (cancelled, echo) = if self.better_for >= BETTER_BLOCKS {
            self.foreground.clone_from(&self.background);
            self.foreground_error = self.background_error;
            self.better_for = 0;
            (&e_back, &back_echo)
        } else {
            if self.background_error > DIVERGED * self.foreground_error {
                self.background.clone_from(&self.foreground);
                self.background_error = self.foreground_error;
            }
            (&e_fore, &fore_echo)
        };
        out.copy_from_slice(cancelled);
        let verdict = self.judge(near, cancelled, echo);
        // Right after a loss the reference and the capture part at different
        // places, and the filter may add echo rather than take it out: a
        // block it made louder than 3 dB is never heard.
        self.unsure_for = self.unsure_for.saturating_sub(1);
        match self.unsure_for == 0 && energy(cancelled) < ADDED * energy(near) {
            true => verdict,
            false => Verdict::Aec3,
        }
    }

    /// Whether the near end speaks in a block: what the foreground left is
    /// well above the echo it should have left, bin by bin (the capture's
    /// power there times what it left of echo there before). A bin the far
    /// voice has not sounded yet has nothing learnt and counts its echo
    /// whole, so a new sound of the far voice is not taken for the near
    /// end. Blocks clearly of echo alone teach it what it leaves.
    fn judge(&mut self, near: &[f32], cancelled: &[f32], echo: &[f32]) -> Verdict {
        let (residual, estimate) = (energy(cancelled), energy(echo));
        let (mut d, mut e) = (
            std::mem::take(&mut self.near_spectrum),
            std::mem::take(&mut self.residual_spectrum),
        );
        self.spectrum_of(near, &mut d);
        self.spectrum_of(cancelled, &mut e);
        let expected: f32 = d
            .iter()
            .zip(self.echo_power.iter().zip(&self.residual_power))
            .map(|(d, (echo, left))| d.norm_sqr() * left / echo.max(f32::MIN_POSITIVE))
            .sum();
        let left: f32 = e.iter().map(|e| e.norm_sqr()).sum();
        let near_speaks =
            self.converged() && residual > SILENCE && left > NEAR_OVER_RESIDUAL * expected;
        if estimate > SILENCE && left <= ECHO_ALONE * expected {
            let a = ERLE_SMOOTHING;
            self.echo_energy = a * self.echo_energy + (1.0 - a) * energy(near);
            self.residual_energy = a * self.residual_energy + (1.0 - a) * residual;
            let powers = self.echo_power.iter_mut().zip(&mut self.residual_power);
            for ((echo, left), (d, e)) in powers.zip(d.iter().zip(&e)) {
                *echo = a * *echo + (1.0 - a) * d.norm_sqr();
                *left = a * *left + (1.0 - a) * e.norm_sqr();
            }
        }
        (self.near_spectrum, self.residual_spectrum) = (d, e);
        self.near_for = match near_speaks {
            true => HANGOVER,
            false => self.near_for.saturating_sub(1),
        };
        match self.near_for > 0 && self.converged() {
            true => Verdict::Linear,
            false => Verdict::Aec3,
        }
    }

    /// A block's spectrum, as the filter's errors are taken.
    fn spectrum_of(&mut self, block: &[f32], spectrum: &mut [Complex32]) {
        self.samples[..BLOCK].fill(0.0);
        self.samples[BLOCK..].copy_from_slice(block);
        self.forward
            .process_with_scratch(&mut self.samples, spectrum, &mut self.scratch)
            .expect("sizes fixed at construction");
    }

    /// One path's estimate of this block's echo.
    fn estimate(&mut self, path: Path, echo: &mut [f32; BLOCK]) {
        let weights = match path {
            Path::Foreground => &self.foreground,
            Path::Background => &self.background,
        };
        self.spectrum.fill(Complex32::default());
        for (w, x) in weights.iter().zip(&self.spectra) {
            for (s, (w, x)) in self.spectrum.iter_mut().zip(w.iter().zip(x)) {
                *s += w * x;
            }
        }
        inverse(
            &*self.inverse,
            &mut self.spectrum,
            &mut self.samples,
            &mut self.scratch,
        );
        for (y, s) in echo.iter_mut().zip(&self.samples[BLOCK..]) {
            *y = s / FFT as f32;
        }
    }

    /// One normalised step of the background towards `error`, the weights
    /// of the first partition and of one other cut back to a block (the
    /// rest are left unconstrained until their turn, as Speex does).
    fn adapt(&mut self, error: &[f32; BLOCK]) {
        self.samples[..BLOCK].fill(0.0);
        self.samples[BLOCK..].copy_from_slice(error);
        let mut e = std::mem::take(&mut self.spectrum);
        self.forward
            .process_with_scratch(&mut self.samples, &mut e, &mut self.scratch)
            .expect("sizes fixed at construction");
        for (w, x) in self.background.iter_mut().zip(&self.spectra) {
            for ((w, x), (e, power)) in w.iter_mut().zip(x).zip(e.iter().zip(&self.power)) {
                *w += x.conj() * e * (STEP / (power + POWER_FLOOR));
            }
        }
        for p in [0, self.constrain] {
            self.constrain_partition(p);
        }
        self.constrain = 1 + self.constrain % (PARTITIONS - 1);
        self.spectrum = e;
    }

    /// Cuts a partition's weights back to one block of taps: without it,
    /// overlap-save's circular wrap-around creeps into them.
    fn constrain_partition(&mut self, p: usize) {
        let mut w = std::mem::take(&mut self.background[p]);
        inverse(&*self.inverse, &mut w, &mut self.samples, &mut self.scratch);
        for s in &mut self.samples[..BLOCK] {
            *s /= FFT as f32;
        }
        self.samples[BLOCK..].fill(0.0);
        self.forward
            .process_with_scratch(&mut self.samples, &mut w, &mut self.scratch)
            .expect("sizes fixed at construction");
        self.background[p] = w;
    }
}

fn energy(x: &[f32]) -> f32 {
    x.iter().map(|s| s * s).sum()
}

/// A spectrum back to samples. A real signal's spectrum has no imaginary
/// part at 0 Hz and at the Nyquist frequency; rounding may leave one,
/// which the transform would refuse.
fn inverse(
    plan: &dyn ComplexToReal<f32>,
    spectrum: &mut [Complex32],
    samples: &mut [f32],
    scratch: &mut [Complex32],
) {
    spectrum[0].im = 0.0;
    spectrum[BINS - 1].im = 0.0;
    plan.process_with_scratch(spectrum, samples, scratch)
        .expect("sizes fixed at construction");
}

#[derive(Clone, Copy)]
enum Path {
    Foreground,
    Background,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16-bit-scale noise, from `seed`, shaped a little like a voice.
    fn noise(seed: u32, n: usize) -> Vec<f32> {
        let mut x = seed.max(1);
        let mut last = 0.0;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                last = 0.7 * last + (x as f32 / u32::MAX as f32 - 0.5) * 6_000.0;
                last
            })
            .collect()
    }

    /// 30 ms to the microphone, unattenuated, and a reflection 5 ms on,
    /// neither a whole number of the 16 kHz bands' samples.
    fn room(far: &[f32]) -> Vec<f32> {
        (0..far.len())
            .map(|n| {
                let at = |d: usize| n.checked_sub(d).map_or(0.0, |k| far[k]);
                at(30 * PER_MS + 1) + 0.3 * at(35 * PER_MS + 2)
            })
            .collect()
    }

    /// A 20 ms media frame.
    const FRAME: usize = 2 * BLOCK;

    fn db(x: &[f32]) -> f32 {
        10.0 * (energy(x) / x.len() as f32 + 1e-9).log10()
    }

    /// Runs `far` and `near` plus the echo of `far` through a filter a
    /// frame at a time: its output, and how many blocks it judged its own.
    fn run(far: &[f32], near: &[f32]) -> (Vec<f32>, Vec<Verdict>) {
        let mut filter = EchoFilter::new(0);
        let echo = room(far);
        let (mut out, mut all) = (vec![0.0; near.len()], Vec::new());
        let mut verdicts = Vec::new();
        for at in (0..near.len() / FRAME).map(|k| k * FRAME) {
            filter.render(&far[at..at + FRAME]);
            let capture: Vec<f32> = (at..at + FRAME).map(|i| near[i] + echo[i]).collect();
            filter.capture(&capture, &mut out[at..at + FRAME], &mut verdicts);
            all.extend_from_slice(&verdicts);
        }
        (out, all)
    }

    /// Near speech throws the background filter off, never the one heard:
    /// with the far end and the near end both loud, what is left of the
    /// echo stays far under it, and the blocks are judged the filter's.
    #[test]
    fn what_was_learnt_survives_double_talk() {
        let n = SAMPLE_RATE as usize * 12;
        let far = noise(7, n);
        let alone = SAMPLE_RATE as usize * 8;
        let near: Vec<f32> = noise(11, n)
            .iter()
            .enumerate()
            .map(|(i, s)| if i < alone { 0.0 } else { *s })
            .collect();
        let (out, verdicts) = run(&far, &near);
        let echo = room(&far);
        let left: Vec<f32> = (alone..n).map(|i| out[i] - near[i]).collect();
        let under = db(&echo[alone..]) - db(&left);
        assert!(
            under >= 30.0,
            "the echo is only {under:.1} dB down in double talk"
        );
        let heard = verdicts[alone / BLOCK + 10..]
            .iter()
            .filter(|v| **v == Verdict::Linear)
            .count();
        let blocks = verdicts.len() - alone / BLOCK - 10;
        assert!(heard * 10 >= blocks * 9, "{heard} of {blocks} blocks");
    }

    /// While only the far end speaks, AEC3's output is heard: its
    /// suppressor takes the echo further down than a linear filter.
    #[test]
    fn the_far_end_alone_is_left_to_aec3() {
        let n = SAMPLE_RATE as usize * 6;
        let (_, verdicts) = run(&noise(3, n), &vec![0.0; n]);
        assert!(verdicts.iter().all(|v| *v == Verdict::Aec3));
    }

    /// A capture whose reference has not come (or a reference with no
    /// capture) is passed as it is, and what is kept of the reference
    /// stays bounded.
    #[test]
    fn no_reference_no_cancelling_and_a_bounded_reference() {
        let mut filter = EchoFilter::new(0);
        let capture = noise(5, FRAME);
        let (mut out, mut verdicts) = (vec![0.0; FRAME], Vec::new());
        for _ in 0..100 {
            filter.capture(&capture, &mut out, &mut verdicts);
            assert_eq!(out, capture);
            assert!(verdicts.iter().all(|v| *v == Verdict::Aec3));
        }
        for _ in 0..1_000 {
            filter.render(&capture);
        }
        assert!(filter.reference.len() <= MAX_REFERENCE);
    }
}
