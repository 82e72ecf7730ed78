//! Noise suppression as a sound card's capture gets it: RNNoise, heard
//! only as much as the room's noise asks for (docs/benchmarks.md, *Noise
//! suppression only where there is noise*).
//!
//! On clean speech RNNoise takes nothing out and costs about 0.4 PESQ-WB,
//! so its output is blended with the untouched audio by the room's noise
//! floor ([`NoiseFloor`]): none of it below -70 dBFS, all of it above -55.
//! RNNoise's output is one 10 ms block late (its overlap-add), and so is
//! the untouched audio it is blended with, so that the fade cannot comb.
//! But a silent room needs no suppressor and no delay for it: there the
//! audio passes with no delay at all, the block of delay taken on when
//! noise appears (a block said twice, faded into, under the noise that
//! called for it) and given back after [`CATCH_UP_MS`] of quiet, at a
//! silent block, where dropping 10 ms is unheard.
//!
//! What RNNoise takes for speech and leaves, other people talking, goes
//! through an [`Expander`] after it.

use nnnoiseless::DenoiseState;

use super::expander::Expander;
use super::noise_floor::NoiseFloor;

/// Samples in a 10 ms block at 48 kHz: RNNoise's frame.
pub const BLOCK: usize = DenoiseState::FRAME_SIZE;

/// A block's length.
const BLOCK_MS: usize = 10;

/// Suppression is left out below this noise floor (dBFS), where there is
/// no noise to take out...
pub(super) const QUIET_DBFS: f32 = -70.0;

/// ... and applied in full above this one, blended in between.
pub(super) const NOISY_DBFS: f32 = -55.0;

/// How far the suppressor's share moves in a 10 ms block: half a second
/// from none to all, so that it fades in and out unheard.
pub(super) const SHARE_STEP: f32 = 0.02;

/// Quiet this long, with no suppression heard, before the block of delay
/// is given back: a room that was noisy a moment ago may be again.
const CATCH_UP_MS: usize = 3_000;

/// Samples over which a block said twice is faded into (2 ms).
const FADE: usize = 96;

/// The noise suppression stage of one capture, on 10 ms blocks in the
/// 16-bit scale (as RNNoise and the other stages take them).
pub struct NoiseSuppressor {
    /// What is quiet enough to drop unheard, in the samples' scale (a
    /// mean square).
    silence: f32,
    rnnoise: Box<DenoiseState<'static>>,
    /// RNNoise's output.
    denoised: [f32; BLOCK],
    /// The room's noise, measured on what RNNoise is given.
    floor: NoiseFloor,
    /// Turns down the noise RNNoise leaves.
    expander: Expander,
    /// The last block given: what is heard, untouched, while late.
    previous: [f32; BLOCK],
    /// How much of RNNoise's output is heard (0 to 1).
    share: f32,
    /// Whether what is heard is one block late, as RNNoise's output is.
    late: bool,
    /// Blocks in a row, while late, with no suppression heard or called for.
    quiet_blocks: usize,
}

impl NoiseSuppressor {
    /// Full scale of the samples it is given.
    pub fn new(full_scale: f32) -> NoiseSuppressor {
        NoiseSuppressor {
            silence: full_scale * full_scale * 10f32.powf(QUIET_DBFS / 10.0),
            rnnoise: DenoiseState::new(),
            denoised: [0.0; BLOCK],
            floor: NoiseFloor::new(full_scale),
            expander: Expander::new(full_scale),
            previous: [0.0; BLOCK],
            share: 0.0,
            late: false,
            quiet_blocks: 0,
        }
    }

    /// Processes a 10 ms block in place.
    pub fn process(&mut self, block: &mut [f32; BLOCK]) {
        self.floor.block(block);
        self.rnnoise.process_frame(&mut self.denoised, block);
        self.expander.update(block, &self.denoised);
        let target = ((self.floor.dbfs() - QUIET_DBFS) / (NOISY_DBFS - QUIET_DBFS)).clamp(0.0, 1.0);
        if !self.late {
            if target > 0.0 {
                self.fall_behind(block);
            } else {
                self.previous = *block;
            }
            return;
        }
        let from = self.share;
        let to = from + (target - from).clamp(-SHARE_STEP, SHARE_STEP);
        self.share = to;
        self.quiet_blocks = if to == 0.0 { self.quiet_blocks + 1 } else { 0 };
        if self.quiet_blocks * BLOCK_MS >= CATCH_UP_MS
            && self.silent(&self.previous)
            && self.silent(block)
        {
            self.late = false;
            self.quiet_blocks = 0;
            self.previous = *block;
            return;
        }
        for (i, ((s, clean), dry)) in block
            .iter_mut()
            .zip(&self.denoised)
            .zip(self.previous.iter_mut())
            .enumerate()
        {
            let share = from + (to - from) * (i + 1) as f32 / BLOCK as f32;
            let heard = *dry + share * (clean - *dry);
            *dry = *s;
            *s = heard;
        }
        self.expander.apply(block);
    }

    /// Noise appeared: from now on what is heard is a block late. The
    /// block before is said again, faded into from where this one starts
    /// (its natural continuation), under the noise that called for it.
    fn fall_behind(&mut self, block: &mut [f32; BLOCK]) {
        let now = *block;
        for (i, (s, again)) in block.iter_mut().zip(&self.previous).enumerate() {
            let w = (i as f32 / FADE as f32).min(1.0);
            *s = (1.0 - w) * *s + w * again;
        }
        self.previous = now;
        self.late = true;
        self.quiet_blocks = 0;
    }

    /// A block below the quiet floor: dropping it is unheard.
    fn silent(&self, block: &[f32; BLOCK]) -> bool {
        block.iter().map(|s| s * s).sum::<f32>() / (BLOCK as f32) < self.silence
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::SAMPLE_RATE;
    use crate::media::test_speech::{WORDS, pink, words};

    /// Full scale as RNNoise takes samples: that of 16-bit ones.
    const S16: f32 = 32_768.0;

    /// `input` (full scale 1.0) through the noise suppression stage alone,
    /// block by block, in the stages' scale.
    fn suppressed(input: &[f32]) -> Vec<f32> {
        let mut noise = NoiseSuppressor::new(S16);
        let mut out = Vec::with_capacity(input.len());
        for chunk in input.chunks_exact(BLOCK) {
            let mut block = [0.0; BLOCK];
            for (s, x) in block.iter_mut().zip(chunk) {
                *s = x * S16;
            }
            noise.process(&mut block);
            out.extend(block.iter().map(|s| s / S16));
        }
        out
    }

    /// Where `heard` lines up best with `said` (a lag of up to 30 ms), and
    /// how alike they are there (normalised correlation).
    fn alignment(said: &[f32], heard: &[f32]) -> (usize, f64) {
        (0..1440)
            .map(|lag| {
                let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
                for (x, y) in said.iter().zip(&heard[lag..]) {
                    let (x, y) = (f64::from(*x), f64::from(*y));
                    (xy, xx, yy) = (xy + x * y, xx + x * x, yy + y * y);
                }
                (lag, xy / (xx * yy).sqrt().max(1e-12))
            })
            .fold(
                (0, f64::MIN),
                |best, at| if at.1 > best.1 { at } else { best },
            )
    }

    /// Speech with digital silence between its words (a file, a clean
    /// source) has no noise to take out: it comes through exactly as it
    /// went in, and with no delay.
    #[test]
    fn clean_speech_passes_the_suppressor_untouched() {
        let Some(speech) = words(&WORDS, 6.0, 300) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let heard = suppressed(&speech);
        let changed = speech
            .iter()
            .zip(&heard)
            .filter(|(s, h)| (*s - *h).abs() > 1e-6);
        assert_eq!(changed.count(), 0, "clean speech changed");
    }

    /// A room that turns noisy takes on RNNoise's block of delay, and gives
    /// it back once quiet again for 3 s: speech before the noise and after
    /// it comes through untouched, with no delay. (Speech, 5 s of a fan,
    /// 5 s of silence, speech.)
    #[test]
    fn the_delay_suppression_needs_is_taken_on_in_noise_and_given_back() {
        let Some(speech) = words(&WORDS[..2], 2.0, 300) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let second = SAMPLE_RATE as usize;
        let noise: Vec<f32> = pink(7, 5 * second).iter().map(|x| 0.05 * x).collect();
        let input = [speech.clone(), noise, vec![0.0; 5 * second], speech.clone()].concat();
        let mut stage = NoiseSuppressor::new(S16);
        let mut heard = Vec::with_capacity(input.len());
        let mut late = Vec::new();
        for chunk in input.chunks_exact(BLOCK) {
            let mut block: [f32; BLOCK] = std::array::from_fn(|i| chunk[i] * S16);
            stage.process(&mut block);
            heard.extend(block.iter().map(|s| s / S16));
            late.push(stage.late);
        }
        let blocks = |secs: usize| secs * second / BLOCK;
        assert!(
            late[..blocks(2)].iter().all(|l| !l),
            "no delay before the noise"
        );
        // The noise is the floor once the 3 s window has forgotten the quiet.
        let noisy = blocks(2) + blocks(3) + 20..blocks(7);
        assert!(late[noisy].iter().all(|l| *l), "a block late in noise");
        assert!(!late[blocks(12) - 1], "the block given back in the quiet");
        let after = input.len() - speech.len();
        assert_eq!(&heard[..speech.len()], &speech[..]);
        assert_eq!(&heard[after..], &speech[..], "the speech after, untouched");
    }

    /// In noise, what is heard is RNNoise's output, lined up to the sample
    /// with the untouched audio it fades from (else the fade would comb).
    #[test]
    fn the_suppressor_fades_in_on_noise_in_step_with_the_speech() {
        let Some(speech) = words(&WORDS, 6.0, 300) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let noise = pink(5, speech.len());
        let noisy: Vec<f32> = speech
            .iter()
            .zip(&noise)
            .map(|(s, n)| s + 0.02 * n)
            .collect();
        let from = 2 * SAMPLE_RATE as usize;
        let (lag, alike) = alignment(&speech[from..], &suppressed(&noisy)[from..]);
        assert_eq!(lag, BLOCK, "RNNoise's output is {lag} samples late");
        let (_, before) = alignment(&speech[from..], &noisy[from..]);
        assert!(
            alike > before,
            "cleaned {alike:.3} alike, noisy {before:.3}"
        );
    }
}
