//! Time-compression of decoded voice, for a jitter buffer that has grown
//! deeper than it needs: one pitch period at a time is taken out where the
//! voice repeats itself, or a stretch of a quiet one, and the seam is
//! cross-faded (the overlap-add of WSOLA, as WebRTC's NetEq accelerates).
//! Playing 20 ms of voice in 12 to 18 ms is not heard; dropping a whole
//! 20 ms frame of speech is (a cut, and a click).

/// The shortest pitch period looked for: 2.5 ms (400 Hz) at 48 kHz.
const MIN_PERIOD: usize = 120;
/// The longest: 10 ms (100 Hz), two of which fit in one 20 ms frame.
const MAX_PERIOD: usize = 480;
/// Two periods must look this much alike (normalised correlation) for one
/// of them to go unheard.
const MIN_LIKENESS: f32 = 0.8;
/// Below this nothing repeats at any period: noise, or a fricative, whose
/// stretch goes as unheard as a pitch period of a vowel (there is no pitch
/// to break). Between the two (a voice starting or fading) nothing goes.
const NOISE_LIKENESS: f32 = 0.3;
/// Below this mean square (about -40 dBFS) there is no voice to harm: the
/// longest period goes whatever its likeness.
const QUIET: f32 = 1e-4;

/// Takes at most one pitch period out of the end of `samples`, where the
/// last `MAX_PERIOD * 2` samples are looked at, the period before the cut
/// cross-faded into the one after. Returns how many samples went (0 when
/// the voice there does not repeat well enough to shorten unheard).
pub fn accelerate(samples: &mut Vec<f32>) -> usize {
    let window = 2 * MAX_PERIOD;
    let Some(start) = samples.len().checked_sub(window) else {
        return 0;
    };
    let x = &samples[start..];
    let Some(period) = best_period(x) else {
        return 0;
    };
    // x[..period] fades out while x[period..2 * period] fades in; the
    // result takes the place of both, and the rest moves up.
    for i in 0..period {
        let w = (i as f32 + 0.5) / period as f32;
        let (a, b) = (samples[start + i], samples[start + period + i]);
        samples[start + i] = a * (1.0 - w) + b * w;
    }
    samples.drain(start + period..start + 2 * period);
    period
}

/// The pitch period to take out of `x` (two periods or more long), the
/// longest one where nothing repeats (noise), or `None` for a voice that
/// half repeats.
fn best_period(x: &[f32]) -> Option<usize> {
    let energy: f32 = x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32;
    if energy < QUIET {
        return Some(MAX_PERIOD.min(x.len() / 2));
    }
    let mut best = (0.0, 0);
    for period in MIN_PERIOD..=MAX_PERIOD.min(x.len() / 2) {
        let (a, b) = (&x[..period], &x[period..2 * period]);
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for (p, q) in a.iter().zip(b) {
            ab += p * q;
            aa += p * p;
            bb += q * q;
        }
        let likeness = ab / (aa * bb).sqrt().max(f32::MIN_POSITIVE);
        if likeness > best.0 {
            best = (likeness, period);
        }
    }
    match best.0 {
        l if l >= MIN_LIKENESS => Some(best.1),
        l if l < NOISE_LIKENESS => Some(MAX_PERIOD.min(x.len() / 2)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin())
            .collect()
    }

    /// The largest jump between neighbouring samples: a cut is a click.
    fn largest_step(x: &[f32]) -> f32 {
        x.windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn a_voiced_frame_loses_whole_periods_without_a_click() {
        // 200 Hz: a period of 240 samples, and its multiple 480.
        let mut x = tone(200.0, 1_920);
        let before = largest_step(&x);
        let removed = accelerate(&mut x);
        assert!(removed == 240 || removed == 480, "{removed}");
        assert_eq!(x.len(), 1_920 - removed);
        assert!(
            largest_step(&x) <= before * 1.05,
            "a seam: {}",
            largest_step(&x)
        );
    }

    fn noise(n: usize) -> Vec<f32> {
        let mut state = 1u32;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn noise_and_quiet_lose_the_longest_period_a_half_voice_nothing() {
        let mut x = noise(1_920);
        assert_eq!(
            accelerate(&mut x),
            MAX_PERIOD,
            "nothing repeats: nothing to break"
        );
        // A vowel half buried in noise: neither repeats well nor is noise.
        let mut half: Vec<f32> = (tone(200.0, 1_920).iter().zip(noise(1_920)))
            .map(|(t, n)| t + 1.2 * n)
            .collect();
        assert_eq!(accelerate(&mut half), 0);
        assert_eq!(half.len(), 1_920);
        let mut quiet = vec![0.001; 1_920];
        assert_eq!(accelerate(&mut quiet), MAX_PERIOD);
        let mut short = tone(200.0, 500);
        assert_eq!(
            accelerate(&mut short),
            0,
            "less than two periods to look at"
        );
    }
}
