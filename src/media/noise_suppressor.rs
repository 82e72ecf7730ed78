//! Noise suppression as a sound card's capture gets it: RNNoise, heard
//! only as much as the room's noise asks for (docs/benchmarks.md, *Noise
//! suppression only where there is noise*), and with no delay.
//!
//! On clean speech RNNoise takes nothing out and costs about 0.4 PESQ-WB,
//! so its gains are heard by the room's noise floor ([`NoiseFloor`]): none
//! of them below -70 dBFS, where the audio passes exactly as it came, all
//! of them above -55, blended in between. RNNoise's output is one 10 ms
//! block late (its overlap-add), so what is heard is not that output but
//! its gains, applied to the block just captured ([`GainFilter`]).
//!
//! What RNNoise takes for speech and leaves, other people talking, goes
//! through an [`Expander`] after it.

use nnnoiseless::DenoiseState;

use super::expander::Expander;
use super::gain_filter::GainFilter;
use super::noise_floor::NoiseFloor;

/// Samples in a 10 ms block at 48 kHz: RNNoise's frame.
pub const BLOCK: usize = DenoiseState::FRAME_SIZE;

/// Suppression is left out below this noise floor (dBFS), where there is
/// no noise to take out...
pub(super) const QUIET_DBFS: f32 = -70.0;

/// ... and applied in full above this one, blended in between.
pub(super) const NOISY_DBFS: f32 = -55.0;

/// How far the suppressor's share moves in a 10 ms block: half a second
/// from none to all, so that it fades in and out unheard.
pub(super) const SHARE_STEP: f32 = 0.02;

/// The noise suppression stage of one capture, on 10 ms blocks in the
/// 16-bit scale (as RNNoise and the other stages take them).
pub struct NoiseSuppressor {
    rnnoise: Box<DenoiseState<'static>>,
    /// RNNoise's output: the block before, denoised.
    denoised: [f32; BLOCK],
    /// The block before, as it was given.
    previous: [f32; BLOCK],
    /// RNNoise's gains, applied to the block just given.
    filter: GainFilter,
    /// The room's noise, measured on what RNNoise is given.
    floor: NoiseFloor,
    /// Turns down the noise RNNoise leaves.
    expander: Expander,
    /// How much of RNNoise's gains is heard (0 to 1).
    share: f32,
}

impl NoiseSuppressor {
    /// Full scale of the samples it is given.
    pub fn new(full_scale: f32) -> NoiseSuppressor {
        NoiseSuppressor {
            rnnoise: DenoiseState::new(),
            denoised: [0.0; BLOCK],
            previous: [0.0; BLOCK],
            filter: GainFilter::new(),
            floor: NoiseFloor::new(full_scale),
            expander: Expander::new(full_scale),
            share: 0.0,
        }
    }

    /// Processes a 10 ms block in place.
    pub fn process(&mut self, block: &mut [f32; BLOCK]) {
        self.floor.block(block);
        self.rnnoise.process_frame(&mut self.denoised, block);
        self.expander.update(block, &self.denoised);
        let target = ((self.floor.dbfs() - QUIET_DBFS) / (NOISY_DBFS - QUIET_DBFS)).clamp(0.0, 1.0);
        self.share += (target - self.share).clamp(-SHARE_STEP, SHARE_STEP);
        self.filter
            .update(&self.previous, &self.denoised, block, self.share);
        self.previous = *block;
        self.filter.apply(block);
        // The expander, like the gains, is heard only in a noisy room:
        // speech's own level would close it between words in a quiet one.
        if self.share > 0.0 {
            self.expander.apply(block);
        }
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

    /// A room that turns noisy hears RNNoise's gains, and once quiet again
    /// no longer: speech before the noise and after it comes through
    /// exactly as it went in. (Speech, 5 s of a fan, 5 s of silence,
    /// speech.)
    #[test]
    fn speech_before_and_after_a_noisy_spell_passes_untouched() {
        let Some(speech) = words(&WORDS[..2], 2.0, 300) else {
            eprintln!("skipped: no spoken words in /usr/share/sounds/alsa (alsa-utils)");
            return;
        };
        let second = SAMPLE_RATE as usize;
        let noise: Vec<f32> = pink(7, 5 * second).iter().map(|x| 0.05 * x).collect();
        let input = [speech.clone(), noise, vec![0.0; 5 * second], speech.clone()].concat();
        let heard = suppressed(&input);
        let during = 2 * second + 4 * second..7 * second;
        let level = |x: &[f32]| x.iter().map(|s| s * s).sum::<f32>();
        let down = 10.0 * (level(&input[during.clone()]) / level(&heard[during])).log10();
        assert!(down > 10.0, "the fan only {down:.1} dB down");
        let after = input.len() - speech.len();
        assert_eq!(&heard[..speech.len()], &speech[..]);
        assert_eq!(&heard[after..], &speech[..], "the speech after, untouched");
    }

    /// In noise, what is heard is what was said, no later than it by more
    /// than a millisecond. (How much cleaner, the voice processor's tests
    /// measure: a filter's phase moves the samples, so likeness of samples
    /// would not tell.)
    #[test]
    fn in_noise_what_is_heard_is_in_step_with_what_was_said() {
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
        assert!(lag <= 48, "heard {lag} samples late");
        assert!(alike > 0.9, "heard only {alike:.3} alike");
    }
}
