//! How loud a microphone's room is when nobody speaks, for the noise
//! suppressor to know whether there is noise to take out.
//!
//! Minimum statistics, as speech enhancement tracks noise: the level of
//! each 10 ms block, smoothed over a few blocks, and the floor the lowest
//! of those over the last few seconds. Speech rises above the floor and
//! never below it, so any pause between words shows the noise; a room with
//! no noise at all (a file, a digital source, a very quiet microphone)
//! shows a floor far below anything audible.
//!
//! Noise that starts (a fan switched on) reaches the floor once the quiet
//! moments before it have left the window, after at most [`WINDOW`]'s
//! length; noise that stops leaves it within a few hundred milliseconds.

/// A block's level is smoothed over about this many blocks, so that the
/// floor is the noise's level, not its quietest dip.
const SMOOTHING_BLOCKS: f32 = 3.0;

/// Smoothed over this many blocks (200 ms), the floor of babble is the
/// level of the voices that fill a speaker's pauses, not of the moments
/// when all of them are between words at once: 30 ms levels find those
/// gaps, 10 to 20 dB under the babble (docs/benchmarks.md, *Babble: a
/// downward expander on what RNNoise leaves*).
pub const STEADY_BLOCKS: f32 = 20.0;

/// Blocks per piece of the window: the window's minimum is kept per piece
/// so that it slides a piece at a time, not block by block.
const PIECE_BLOCKS: usize = 10;

/// Pieces in the window: 30 pieces of 100 ms, 3 s, longer than speech
/// goes without a pause.
const WINDOW: usize = 30;

/// The level reported for digital silence.
const SILENCE_DBFS: f32 = -120.0;

/// The noise floor of one capture.
pub struct NoiseFloor {
    /// Full scale in the capture's samples (1.0, or 32768 in 16-bit
    /// scale).
    full_scale: f32,
    /// Blocks a level is smoothed over.
    smoothing: f32,
    /// The current block level, smoothed (mean square, full scale 1.0),
    /// from the first block on.
    smoothed: Option<f32>,
    /// The lowest smoothed level of each of the last [`WINDOW`] pieces.
    pieces: [f32; WINDOW],
    /// The piece being filled, and how many blocks it holds.
    piece: usize,
    blocks: usize,
}

impl NoiseFloor {
    pub fn new(full_scale: f32) -> NoiseFloor {
        NoiseFloor::smoothed_over(full_scale, SMOOTHING_BLOCKS)
    }

    /// The floor of levels smoothed over `blocks` blocks rather than a few:
    /// the level noise keeps up over pauses rather than its quietest
    /// moments.
    pub fn smoothed_over(full_scale: f32, blocks: f32) -> NoiseFloor {
        NoiseFloor {
            full_scale,
            smoothing: blocks,
            smoothed: None,
            pieces: [f32::INFINITY; WINDOW],
            piece: 0,
            blocks: 0,
        }
    }

    /// Takes the next 10 ms of capture.
    pub fn block(&mut self, samples: &[f32]) {
        let scale = self.full_scale * self.full_scale;
        let power =
            samples.iter().map(|s| s * s / scale).sum::<f32>() / samples.len().max(1) as f32;
        let smoothed = match self.smoothed {
            Some(level) => level + (power - level) / self.smoothing,
            None => power,
        };
        self.smoothed = Some(smoothed);
        if self.blocks == PIECE_BLOCKS {
            self.piece = (self.piece + 1) % WINDOW;
            self.pieces[self.piece] = f32::INFINITY;
            self.blocks = 0;
        }
        let piece = &mut self.pieces[self.piece];
        *piece = piece.min(smoothed);
        self.blocks += 1;
    }

    /// The floor in dB below full scale: the quietest the room has been in
    /// the last three seconds.
    pub fn dbfs(&self) -> f32 {
        power_dbfs(self.pieces.iter().copied().fold(f32::INFINITY, f32::min))
    }
}

/// A mean square (full scale 1.0) in dB below full scale; digital silence,
/// and a window with nothing in it yet, read [`SILENCE_DBFS`].
pub fn power_dbfs(power: f32) -> f32 {
    if !power.is_finite() || power <= 0.0 {
        return SILENCE_DBFS;
    }
    (10.0 * power.log10()).max(SILENCE_DBFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 480;

    fn noise(seed: u32, amplitude: f32) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            amplitude * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        }
    }

    fn feed(floor: &mut NoiseFloor, blocks: usize, mut sample: impl FnMut(usize) -> f32) {
        for b in 0..blocks {
            let block: Vec<f32> = (0..BLOCK).map(|i| sample(b * BLOCK + i)).collect();
            floor.block(&block);
        }
    }

    /// Words (loud bursts) in white noise at -40 dBFS: the floor is the
    /// noise's level, give or take a few dB, not the words'.
    #[test]
    fn the_floor_is_the_noise_between_words() {
        let mut floor = NoiseFloor::new(1.0);
        // Uniform noise of amplitude a has power a²/12: -40 dBFS.
        let mut hiss = noise(1, 0.01 * 12f32.sqrt());
        feed(&mut floor, 300, |n| {
            let word = (n / 24_000) % 2 == 0;
            hiss()
                + if word {
                    0.3 * (n as f32 * 0.05).sin()
                } else {
                    0.0
                }
        });
        let dbfs = floor.dbfs();
        assert!((-44.0..=-38.0).contains(&dbfs), "floor {dbfs:.1} dBFS");
    }

    #[test]
    fn digital_silence_between_words_is_no_noise() {
        let mut floor = NoiseFloor::new(1.0);
        feed(&mut floor, 300, |n| {
            if (n / 24_000) % 2 == 0 {
                0.3 * (n as f32 * 0.05).sin()
            } else {
                0.0
            }
        });
        assert!(floor.dbfs() < -90.0, "floor {:.1} dBFS", floor.dbfs());
    }

    /// Noise that starts is the floor once the window has forgotten the
    /// quiet before it (3 s), and noise that stops leaves it within a
    /// moment.
    #[test]
    fn the_floor_follows_noise_that_starts_and_stops() {
        let mut floor = NoiseFloor::new(1.0);
        feed(&mut floor, 200, |_| 0.0);
        let mut hiss = noise(2, 0.01 * 12f32.sqrt());
        feed(&mut floor, 250, |_| hiss());
        assert!(floor.dbfs() < -90.0, "2.5 s of noise: {:.1}", floor.dbfs());
        feed(&mut floor, 60, |_| hiss());
        assert!(floor.dbfs() > -44.0, "3.1 s of noise: {:.1}", floor.dbfs());
        feed(&mut floor, 30, |_| 0.0);
        assert!(floor.dbfs() < -60.0, "quiet again: {:.1}", floor.dbfs());
    }
}
