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

use nnnoiseless::DenoiseState;

use super::noise_floor::NoiseFloor;

/// Samples in a 10 ms block at 48 kHz: RNNoise's frame.
pub const BLOCK: usize = DenoiseState::FRAME_SIZE;

/// Suppression is left out below this noise floor (dBFS), where there is
/// no noise to take out...
const QUIET_DBFS: f32 = -70.0;

/// ... and applied in full above this one, blended in between.
const NOISY_DBFS: f32 = -55.0;

/// How far the suppressor's share moves in a 10 ms block: half a second
/// from none to all, so that it fades in and out unheard.
const SHARE_STEP: f32 = 0.02;

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
            previous: [0.0; BLOCK],
            share: 0.0,
            late: false,
            quiet_blocks: 0,
        }
    }

    /// Whether it delays the capture by a block now (a noisy room, or
    /// one that was lately).
    pub fn late(&self) -> bool {
        self.late
    }

    /// Processes a 10 ms block in place.
    pub fn process(&mut self, block: &mut [f32; BLOCK]) {
        self.floor.block(block);
        self.rnnoise.process_frame(&mut self.denoised, block);
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
        if self.quiet_blocks * 10 >= CATCH_UP_MS
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
