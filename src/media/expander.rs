//! A downward expander for the noise RNNoise leaves: other people talking.
//!
//! RNNoise takes babble for speech (its voice activity is 0.89 in the
//! pauses of a babble mix) and leaves it all. But the speaker at the
//! microphone is louder than the room's other voices, so what is not well
//! above the level those voices keep up is turned down: fully open from
//! [`THRESHOLD_DB`] over that level, [`RATIO`] dB down for each dB below
//! it, at most [`DEPTH_DB`]. It opens within [`ATTACK`] of the block a
//! word starts in, so that the word is heard whole; it stays open
//! [`HOLD_BLOCKS`] after, so that the quiet moments inside words are not
//! turned down, then closes at [`RELEASE_DB`] a block, so that the ends of
//! words fade rather than stop.
//!
//! Where RNNoise takes the room's noise out itself (a fan, a microphone's
//! hiss), the expander has nothing to add and would only clip the soft
//! ends of words RNNoise had cleaned: it is engaged only as much as RNNoise
//! leaves the noise, measured on the blocks that are the room's noise
//! alone (docs/benchmarks.md, *Babble: a downward expander on what RNNoise
//! leaves*).
//!
//! It fades in and out with the level of that noise as the suppressor does
//! with the room's floor (none under -70 dBFS, all of it over -55), but on
//! the level the voices keep up: babble's floor dips whenever all its
//! voices pause at once.

use super::noise_floor::{NoiseFloor, STEADY_BLOCKS, power_dbfs};
use super::noise_suppressor::{BLOCK, NOISY_DBFS, QUIET_DBFS, SHARE_STEP};

/// Fully open this far above the level of the room's noise...
const THRESHOLD_DB: f32 = 16.0;

/// ... and below it, this many dB down for each dB under it...
const RATIO: f32 = 4.0;

/// ... down to at most this much.
const DEPTH_DB: f32 = 20.0;

/// Blocks it stays open once open (100 ms).
const HOLD_BLOCKS: usize = 10;

/// How far the gain may fall in a block (100 dB a second, all the way
/// down in a fifth of a second)...
const RELEASE_DB: f32 = 1.0;

/// ... and the samples it takes to rise (2 ms): at once, but without a
/// click.
const ATTACK: usize = 96;

/// A block at most this far above the level of the room's noise is that
/// noise alone, for telling how much of it RNNoise takes out.
const NOISE_ALONE_DB: f32 = 3.0;

/// RNNoise takes this little or less out of the noise (2.6 dB of babble,
/// as a median): it leaves it, and the expander is fully engaged...
const LEFT_ALL_DB: f32 = 6.0;

/// ... and this much or more (26 dB of a fan's noise): it takes the noise
/// out, and the expander stays out of it. Until it is measured, this.
const LEFT_NONE_DB: f32 = 14.0;

/// What RNNoise takes out of a block of noise counts for this much of the
/// measure: about the last 20 such blocks.
const LEFT_SMOOTHING: f32 = 0.05;

/// What RNNoise takes out of one block counts up to this much (a block it
/// silences would otherwise outweigh all the others).
const MOST_REMOVED_DB: f32 = 40.0;

/// The expander of one capture, on 10 ms blocks.
pub struct Expander {
    /// Full scale of the samples, squared.
    full_scale_squared: f32,
    /// The level the room's noise keeps up, on what RNNoise is given.
    noise: NoiseFloor,
    /// How much RNNoise takes out of the room's noise alone, dB.
    removed_db: f32,
    /// The block before (the one heard): its level, dBFS, and how far it
    /// was above the noise, dB; none before the first block.
    before: Option<(f32, f32)>,
    /// Blocks it still stays open for.
    held: usize,
    /// The gain being headed for, dB.
    gain_db: f32,
    /// How much of that gain is heard (0 to 1), by the noise's level.
    share: f32,
    /// The gain at the end of the last block heard.
    applied: f32,
}

impl Expander {
    /// Full scale of the samples it is given.
    pub fn new(full_scale: f32) -> Expander {
        Expander {
            full_scale_squared: full_scale * full_scale,
            noise: NoiseFloor::smoothed_over(full_scale, STEADY_BLOCKS),
            removed_db: LEFT_NONE_DB,
            before: None,
            held: 0,
            gain_db: 0.0,
            share: 0.0,
            applied: 1.0,
        }
    }

    /// Takes the block given to RNNoise, about to be heard, and what
    /// RNNoise made of the block before.
    pub fn update(&mut self, input: &[f32; BLOCK], denoised: &[f32; BLOCK]) {
        self.noise.block(input);
        let level = self.dbfs(input);
        let over = level - self.noise.dbfs();
        let mut ahead = over;
        if let Some((level_before, over_before)) = self.before {
            ahead = ahead.max(over_before);
            if over_before <= NOISE_ALONE_DB {
                let removed = (level_before - self.dbfs(denoised)).clamp(0.0, MOST_REMOVED_DB);
                self.removed_db += (removed - self.removed_db) * LEFT_SMOOTHING;
            }
        }
        self.before = Some((level, over));
        let engaged =
            ((LEFT_NONE_DB - self.removed_db) / (LEFT_NONE_DB - LEFT_ALL_DB)).clamp(0.0, 1.0);
        let mut target = ((ahead - THRESHOLD_DB) * (RATIO - 1.0)).clamp(-DEPTH_DB, 0.0) * engaged;
        if target >= 0.0 {
            self.held = HOLD_BLOCKS;
        } else if self.held > 0 {
            self.held -= 1;
            target = 0.0;
        }
        self.gain_db = target.max(self.gain_db - RELEASE_DB);
        let noisy = (self.noise.dbfs() - QUIET_DBFS) / (NOISY_DBFS - QUIET_DBFS);
        self.share += (noisy.clamp(0.0, 1.0) - self.share).clamp(-SHARE_STEP, SHARE_STEP);
    }

    /// Turns the block heard down, the gain moving smoothly across it.
    pub fn apply(&mut self, heard: &mut [f32; BLOCK]) {
        let from = self.applied;
        let to = 10f32.powf(self.share * self.gain_db / 20.0);
        let span = if to > from { ATTACK } else { BLOCK };
        for (i, s) in heard.iter_mut().enumerate() {
            *s *= from + (to - from) * ((i + 1) as f32 / span as f32).min(1.0);
        }
        self.applied = to;
    }

    fn dbfs(&self, block: &[f32; BLOCK]) -> f32 {
        power_dbfs(
            block.iter().map(|s| s * s).sum::<f32>() / (BLOCK as f32 * self.full_scale_squared),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_speech::talker_noise;

    /// Blocks of white noise at -40 dBFS (full scale 1.0), then of the
    /// same noise under a loud tone (a word, -15 dBFS) from block `word`.
    fn room(blocks: usize, word: usize) -> Vec<[f32; BLOCK]> {
        let mut hiss = talker_noise(9);
        let amplitude = 0.01 * 12f32.sqrt();
        (0..blocks)
            .map(|b| {
                std::array::from_fn(|i| {
                    let tone = if b >= word {
                        0.25 * ((b * BLOCK + i) as f32 * 0.06).sin()
                    } else {
                        0.0
                    };
                    amplitude * hiss() + tone
                })
            })
            .collect()
    }

    fn dbfs(block: &[f32]) -> f32 {
        10.0 * (block.iter().map(|s| s * s).sum::<f32>() / block.len() as f32).log10()
    }

    /// `input` through the expander as the suppressor drives it: what is
    /// heard is the block given, and RNNoise's output is the block before
    /// scaled by `left` (1: it left the noise; 0.001: it took 60 dB out).
    fn heard(input: &[[f32; BLOCK]], left: f32) -> Vec<[f32; BLOCK]> {
        let mut expander = Expander::new(1.0);
        let mut before = [0.0; BLOCK];
        let mut out = Vec::with_capacity(input.len());
        for block in input {
            let denoised = before.map(|s| s * left);
            expander.update(block, &denoised);
            let mut heard = *block;
            expander.apply(&mut heard);
            out.push(heard);
            before = *block;
        }
        out
    }

    /// Noise RNNoise leaves is turned down between words, and a word opens
    /// the expander as it starts: its first 10 ms keep their level, less
    /// the 2 ms it takes to open.
    #[test]
    fn noise_rnnoise_leaves_is_turned_down_and_a_word_heard_whole() {
        let word = 450;
        let input = room(500, word);
        let out = heard(&input, 1.0);
        let pause = |blocks: &[[f32; BLOCK]]| dbfs(blocks[350..word].as_flattened());
        let down = pause(&input) - pause(&out);
        assert!(down >= 15.0, "the noise only {down:.1} dB down");
        let onset = dbfs(&input[word]) - dbfs(&out[word]);
        assert!(onset.abs() <= 1.0, "the word's first 10 ms {onset:+.1} dB");
    }

    /// Noise RNNoise takes out itself (a fan, a microphone's hiss) is left
    /// to it: what is heard is untouched.
    #[test]
    fn noise_rnnoise_takes_out_is_left_to_it() {
        let input = room(500, 450);
        let out = heard(&input, 0.001);
        assert_eq!(out, input);
    }
}
