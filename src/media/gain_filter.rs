//! RNNoise's gains, heard with no block of delay.
//!
//! RNNoise hands back each 10 ms block one block late: it turns the bands
//! of 20 ms windows down and overlap-adds them, 10 ms apart. That would be
//! 10 ms added to everything said in a noisy room. But what it decides is
//! a gain for each of its 22 bands, and the gains are what matter, not its
//! output's samples: so each band's gain is measured from what RNNoise was
//! given and what it gave back for the block before, and applied to the
//! block just captured through a minimum-phase filter designed from it,
//! which responds as early as the gains allow (within a millisecond).
//! What that costs is measured in docs/benchmarks.md (*Noise suppression
//! with no block of delay*): the gains are a block old, which
//! [`GainFilter::update`] makes up for where a word starts, and RNNoise's
//! comb filter between a voice's harmonics is not a gain per band and is
//! lost.
//!
//! A new filter every block would click where it changes, so each block is
//! filtered with the block before's filter and the new one, faded from one
//! to the other across it.

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::noise_suppressor::BLOCK;

/// RNNoise's bands: the frequencies its gains are decided at, in 200 Hz
/// steps (0 to 20 kHz), each band's gain falling off linearly to the next.
const BAND_EDGES: [usize; BANDS] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 34, 40, 48, 60, 78, 100,
];
const BANDS: usize = 22;
const BAND_STEP_HZ: f32 = 200.0;

/// The frequency resolution of a block's spectrum: 100 Hz.
const BLOCK_BIN_HZ: f32 = 48_000.0 / BLOCK as f32;

/// The points of the filter's design, in time and frequency: 47 Hz apart,
/// fine enough for RNNoise's narrowest bands (200 Hz).
const DESIGN: usize = 1024;

/// The filter's length (5.3 ms), long enough for a band 200 Hz wide.
const TAPS: usize = 256;

/// The taps its end fades over, so that the cut does not ring.
const TAPER: usize = 32;

/// The lowest gain a band is given (-60 dB): below it the logarithm the
/// design takes would run away, and nothing is heard anyway.
const LOWEST_GAIN: f32 = 1e-3;

/// A band that grows more than this in a block (9 dB) has something new
/// in it: RNNoise's gains, a block old, do not apply to the growth.
const ONSET: f32 = 8.0;

/// A band with less than this in a block (16-bit scale, energy) has no
/// gain to measure: it is left as it is.
const NOTHING: f32 = 1.0;

/// Measures RNNoise's gains and applies them, block by block.
pub struct GainFilter {
    block_spectrum: Arc<dyn RealToComplex<f32>>,
    design_forward: Arc<dyn RealToComplex<f32>>,
    design_inverse: Arc<dyn ComplexToReal<f32>>,
    /// A Hann window, for the blocks' spectra.
    window: [f32; BLOCK],
    samples: Vec<f32>,
    spectrum: Vec<Complex32>,
    cepstrum: Vec<f32>,
    design: Vec<Complex32>,
    scratch: Vec<Complex32>,
    /// The filter of the block before, and the new one, their taps in
    /// reverse (the last one meets the newest sample); `None` for no
    /// filter at all (every gain 1): the audio passes exactly as it is.
    before: Option<Box<[f32; TAPS]>>,
    now: Option<Box<[f32; TAPS]>>,
    /// The last `TAPS - 1` samples given, then the block being filtered.
    history: Box<[f32; TAPS - 1 + BLOCK]>,
}

impl Default for GainFilter {
    fn default() -> Self {
        GainFilter::new()
    }
}

impl GainFilter {
    pub fn new() -> GainFilter {
        let mut planner = RealFftPlanner::<f32>::new();
        let block_spectrum = planner.plan_fft_forward(BLOCK);
        let design_forward = planner.plan_fft_forward(DESIGN);
        let design_inverse = planner.plan_fft_inverse(DESIGN);
        let scratch = [
            block_spectrum.get_scratch_len(),
            design_forward.get_scratch_len(),
            design_inverse.get_scratch_len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        GainFilter {
            window: std::array::from_fn(|i| {
                let phase = std::f32::consts::PI * (i as f32 + 0.5) / BLOCK as f32;
                phase.sin().powi(2)
            }),
            samples: block_spectrum.make_input_vec(),
            spectrum: block_spectrum.make_output_vec(),
            cepstrum: design_inverse.make_output_vec(),
            design: design_inverse.make_input_vec(),
            scratch: vec![Complex32::default(); scratch],
            block_spectrum,
            design_forward,
            design_inverse,
            before: None,
            now: None,
            history: Box::new([0.0; TAPS - 1 + BLOCK]),
        }
    }

    /// Takes what RNNoise was given (`dry`) and gave back (`denoised`) for
    /// the block before, and the block about to be heard (`next`), and
    /// makes the filter for `next` of RNNoise's gains, heard as much as
    /// `share` says (0: not at all, 1: all of it).
    ///
    /// The gains are those of the block before, RNNoise's newest: at the
    /// start of a word they are still the gains of the noise before it, and
    /// would cut the word's first 10 ms. So where a band of `next` holds
    /// more than [`ONSET`] times what it held in the block before, what it
    /// gained is taken for something new said and let through, the rest
    /// turned down as before.
    pub fn update(
        &mut self,
        dry: &[f32; BLOCK],
        denoised: &[f32; BLOCK],
        next: &[f32; BLOCK],
        share: f32,
    ) {
        self.before = self.now.take();
        if share <= 0.0 {
            return;
        }
        let given = self.band_energies(dry);
        let back = self.band_energies(denoised);
        let coming = self.band_energies(next);
        let gains: [f32; BANDS] = std::array::from_fn(|b| {
            let mut power = if given[b] < NOTHING {
                1.0
            } else {
                (back[b] / given[b]).min(1.0)
            };
            let held = ONSET * given[b];
            if coming[b] > held && coming[b] >= NOTHING {
                power = (power * held + coming[b] - held) / coming[b];
            }
            1.0 - share.min(1.0) * (1.0 - power.sqrt())
        });
        let mut taps = self.minimum_phase(&gains);
        // Oldest first, as the samples it meets are.
        taps.reverse();
        self.now = Some(taps);
    }

    /// Filters the block just captured, in place.
    pub fn apply(&mut self, block: &mut [f32; BLOCK]) {
        self.history.copy_within(BLOCK.., 0);
        self.history[TAPS - 1..].copy_from_slice(block);
        if self.before.is_none() && self.now.is_none() {
            return;
        }
        for (n, s) in block.iter_mut().enumerate() {
            let input = &self.history[n..n + TAPS];
            let from = self
                .before
                .as_deref()
                .map_or(*s, |taps| convolve(taps, input));
            let to = self.now.as_deref().map_or(*s, |taps| convolve(taps, input));
            let w = (n + 1) as f32 / BLOCK as f32;
            *s = from + w * (to - from);
        }
    }

    /// Energy in each of RNNoise's bands, each bin shared by the two
    /// bands it lies between as RNNoise shares it.
    fn band_energies(&mut self, block: &[f32; BLOCK]) -> [f32; BANDS] {
        for ((x, s), w) in self.samples.iter_mut().zip(block).zip(&self.window) {
            *x = s * w;
        }
        self.block_spectrum
            .process_with_scratch(&mut self.samples, &mut self.spectrum, &mut self.scratch)
            .expect("buffers made by the plan");
        let mut energies = [0.0; BANDS];
        for (bin, x) in self.spectrum.iter().enumerate() {
            let (band, frac) = band_at(bin as f32 * BLOCK_BIN_HZ);
            energies[band] += (1.0 - frac) * x.norm_sqr();
            if band + 1 < BANDS {
                energies[band + 1] += frac * x.norm_sqr();
            }
        }
        energies
    }

    /// The minimum-phase filter whose response is `gains`, each band's
    /// gain falling off linearly to the next as RNNoise's do (by the real
    /// cepstrum: the log of the response, folded onto positive times).
    fn minimum_phase(&mut self, gains: &[f32; BANDS]) -> Box<[f32; TAPS]> {
        let bin_hz = 48_000.0 / DESIGN as f32;
        for (bin, d) in self.design.iter_mut().enumerate() {
            let (band, frac) = band_at(bin as f32 * bin_hz);
            let next = gains[(band + 1).min(BANDS - 1)];
            let gain = (1.0 - frac) * gains[band] + frac * next;
            *d = Complex32::new(gain.max(LOWEST_GAIN).ln(), 0.0);
        }
        self.inverse();
        let scale = 1.0 / DESIGN as f32;
        for (n, c) in self.cepstrum.iter_mut().enumerate() {
            *c *= match n {
                0 => scale,
                n if n < DESIGN / 2 => 2.0 * scale,
                n if n == DESIGN / 2 => scale,
                _ => 0.0,
            };
        }
        self.design_forward
            .process_with_scratch(&mut self.cepstrum, &mut self.design, &mut self.scratch)
            .expect("buffers made by the plan");
        for d in self.design.iter_mut() {
            *d = d.exp();
        }
        self.inverse();
        let mut taps = Box::new([0.0; TAPS]);
        for (n, (t, h)) in taps.iter_mut().zip(&self.cepstrum).enumerate() {
            let fade = (TAPS - n).min(TAPER) as f32 / TAPER as f32;
            *t = h * scale * fade;
        }
        taps
    }

    /// `design` (a spectrum) to `cepstrum` (its samples), unscaled.
    fn inverse(&mut self) {
        // The first and last bins of a real signal's spectrum are real;
        // rounding leaves them a trace the inverse refuses.
        self.design[0].im = 0.0;
        self.design[DESIGN / 2].im = 0.0;
        self.design_inverse
            .process_with_scratch(&mut self.design, &mut self.cepstrum, &mut self.scratch)
            .expect("buffers made by the plan");
    }
}

/// The band a frequency is in and how far across it (0 to 1); the last
/// band holds up to the top.
fn band_at(hz: f32) -> (usize, f32) {
    let at = hz / BAND_STEP_HZ;
    match BAND_EDGES.windows(2).position(|e| at < e[1] as f32) {
        Some(band) => {
            let (low, high) = (BAND_EDGES[band] as f32, BAND_EDGES[band + 1] as f32);
            (band, (at - low) / (high - low))
        }
        None => (BANDS - 1, 0.0),
    }
}

/// One output sample: `reversed` taps over the `TAPS` samples up to it,
/// both oldest first.
fn convolve(reversed: &[f32; TAPS], input: &[f32]) -> f32 {
    // Eight running sums, so that the compiler can keep them in vector
    // registers (one sum would fix the order of the additions).
    let mut sums = [0.0f32; 8];
    for (t, x) in reversed.chunks_exact(8).zip(input.chunks_exact(8)) {
        for i in 0..8 {
            sums[i] += t[i] * x[i];
        }
    }
    sums.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter's response at `hz`, dB.
    fn response_db(taps: &[f32; TAPS], hz: f32) -> f32 {
        let w = 2.0 * std::f32::consts::PI * hz / 48_000.0;
        let (re, im) = taps
            .iter()
            .enumerate()
            .fold((0.0, 0.0), |(re, im), (n, t)| {
                (re + t * (w * n as f32).cos(), im - t * (w * n as f32).sin())
            });
        10.0 * (re * re + im * im).log10()
    }

    /// The filter turns each band down by its gain, the bands between
    /// falling off from one to the next, and responds at once.
    #[test]
    fn the_filter_has_the_bands_gains_and_no_delay() {
        let mut filter = GainFilter::new();
        let mut gains = [1.0; BANDS];
        gains[5..12].fill(0.1);
        let taps = filter.minimum_phase(&gains);
        assert!(
            response_db(&taps, 400.0).abs() < 0.5,
            "400 Hz left as it was"
        );
        assert!(
            (response_db(&taps, 1_600.0) + 20.0).abs() < 1.0,
            "1.6 kHz 20 dB down"
        );
        assert!(
            response_db(&taps, 6_000.0).abs() < 0.5,
            "6 kHz left as it was"
        );
        let energy = |taps: &[f32]| taps.iter().map(|t| t * t).sum::<f32>();
        let early = energy(&taps[..48]) / energy(&taps[..]);
        assert!(
            early > 0.9,
            "{:.0}% of the response in its first ms",
            early * 100.0
        );
    }

    /// What RNNoise did to a block, measured: a band it took 20 dB out of
    /// comes out 20 dB down, the others as they were.
    #[test]
    fn a_band_turned_down_is_measured_and_heard_turned_down() {
        let tone = |hz: f32, level: f32| -> [f32; BLOCK] {
            std::array::from_fn(|i| {
                level * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin()
            })
        };
        let (low, high) = (tone(600.0, 3_000.0), tone(3_200.0, 3_000.0));
        let dry: [f32; BLOCK] = std::array::from_fn(|i| low[i] + high[i]);
        let denoised: [f32; BLOCK] = std::array::from_fn(|i| low[i] + 0.1 * high[i]);
        let mut filter = GainFilter::new();
        filter.update(&dry, &denoised, &dry, 1.0);
        let taps = filter.now.as_deref().expect("a filter");
        assert!(response_db(taps, 600.0).abs() < 1.0);
        assert!((response_db(taps, 3_200.0) + 20.0).abs() < 1.5);
    }

    /// Where none of the gains is to be heard, the audio passes exactly.
    #[test]
    fn no_share_no_filter() {
        let mut filter = GainFilter::new();
        let block: [f32; BLOCK] = std::array::from_fn(|i| (i as f32 * 0.3).sin() * 1_000.0);
        filter.update(&block, &[0.0; BLOCK], &block, 0.0);
        let mut heard = block;
        filter.apply(&mut heard);
        assert_eq!(heard, block);
    }
}
