//! Streaming sample-rate conversion between a device's rate and 48 kHz.
//!
//! Linear interpolation, carried across calls so that chunk edges are
//! seamless. Devices almost always run at 48 kHz (termphone asks for it
//! first); this covers the 44.1 kHz card, where linear interpolation of
//! speech is inaudible next to the codec.

pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output sample, relative to `last`.
    pos: f64,
    last: f32,
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        Resampler {
            step: f64::from(from_hz) / f64::from(to_hz),
            pos: 1.0,
            last: 0.0,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.step == 1.0
    }

    /// Converts `input` and appends the result to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        for &next in input {
            while self.pos <= 1.0 {
                let t = self.pos as f32;
                out.push(self.last + (next - self.last) * t);
                self.pos += self.step;
            }
            self.pos -= 1.0;
            self.last = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_rate_and_keeps_a_ramp_straight() {
        let mut r = Resampler::new(44_100, 48_000);
        let ramp: Vec<f32> = (0..44_100).map(|i| i as f32 / 44_100.0).collect();
        let mut out = Vec::new();
        for chunk in ramp.chunks(441) {
            r.process(chunk, &mut out);
        }
        assert!((out.len() as i64 - 48_000).abs() <= 2, "{}", out.len());
        for pair in out[10..].windows(2) {
            let d = pair[1] - pair[0];
            assert!((d - 1.0 / 48_000.0).abs() < 1e-5, "{d}");
        }
    }

    #[test]
    fn the_same_rate_is_a_copy() {
        let mut r = Resampler::new(48_000, 48_000);
        let mut out = Vec::new();
        r.process(&[0.5, -0.5], &mut out);
        assert_eq!(out, [0.5, -0.5]);
    }
}
