//! What a stretch of played audio holds: its level, whether a tone is in
//! it, and how well it follows a reference recording. Pure functions over
//! 48 kHz mono samples, for the flow runner's audio steps (docs/flows.md)
//! and the call's own figures (`timeToFirstAudioMs`).
//!
//! Levels are in dBFS as AES17 defines them: a full-scale sine reads 0, so
//! a tone's level is `20·log10(amplitude)` whichever way it is measured.

use std::f64::consts::{PI, SQRT_2};

use super::SAMPLE_RATE;

/// What "nothing" reads: the level of digital silence.
pub const SILENT_DBFS: f64 = -120.0;

/// A tone counts as "at" a frequency within this fraction of it.
pub const TONE_TOLERANCE: f64 = 0.03;

/// A tone is at most this much quieter than its whole frame.
const TONE_SHARE_DB: f64 = 10.0;

/// The envelope's resolution: one RMS value per 10 ms.
pub const ENVELOPE_BLOCK: usize = SAMPLE_RATE as usize / 100;

/// The envelope's floor: quieter is a pause, however quiet (digital
/// silence and a codec's faint noise would otherwise weigh as much as the
/// difference between a syllable and a pause).
const ENVELOPE_FLOOR_DBFS: f64 = -60.0;

fn to_db(amplitude: f64) -> f64 {
    if amplitude <= 0.0 {
        SILENT_DBFS
    } else {
        (20.0 * amplitude.log10()).max(SILENT_DBFS)
    }
}

/// The level of `pcm` (RMS, a full-scale sine reading 0 dBFS).
pub fn level_dbfs(pcm: &[f32]) -> f64 {
    if pcm.is_empty() {
        return SILENT_DBFS;
    }
    let mean_square = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64;
    to_db(mean_square.sqrt() * SQRT_2)
}

/// A frame prepared for frequency measurements: Hann-windowed, so that a
/// tone's energy stays near its own frequency instead of leaking across
/// the spectrum (a 20 ms frame resolves 50 Hz; the window trades width of
/// the peak for depth of the skirts).
pub struct Spectrum {
    windowed: Vec<f64>,
    gain: f64,
}

/// A tone found in a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    pub hz: f64,
    pub dbfs: f64,
}

impl Spectrum {
    pub fn new(pcm: &[f32]) -> Self {
        let n = pcm.len();
        let window = |i: usize| 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos();
        let windowed: Vec<f64> = (pcm.iter().enumerate())
            .map(|(i, &s)| f64::from(s) * window(i))
            .collect();
        let gain = (0..n).map(window).sum::<f64>();
        Spectrum { windowed, gain }
    }

    /// The level of the component at `hz` (Goertzel's algorithm: one
    /// frequency for the price of one pass, no FFT).
    pub fn at(&self, hz: f64) -> f64 {
        if self.gain <= 0.0 {
            return SILENT_DBFS;
        }
        let w = 2.0 * PI * hz / f64::from(SAMPLE_RATE);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in &self.windowed {
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        to_db(2.0 * power.max(0.0).sqrt() / self.gain)
    }

    /// The strongest component between `low` and `high` Hz, scanning
    /// `steps` frequencies spaced evenly in pitch.
    pub fn peak(&self, low: f64, high: f64, steps: usize) -> Peak {
        let ratio = (high / low).powf(1.0 / (steps.max(2) - 1) as f64);
        (0..steps.max(2))
            .map(|k| low * ratio.powi(k as i32))
            .map(|hz| Peak {
                hz,
                dbfs: self.at(hz),
            })
            .fold(
                Peak {
                    hz: low,
                    dbfs: f64::NEG_INFINITY,
                },
                |best, p| if p.dbfs > best.dbfs { p } else { best },
            )
    }

    /// The strongest tone near `hz`, to a quarter of a percent: scanned
    /// over ±10% (so that a neighbouring tone shows as off-pitch rather
    /// than as `hz`) at 1% steps, then around the best at 0.25% steps.
    pub fn near(&self, hz: f64) -> Peak {
        let coarse = self.peak(hz * 0.9, hz * 1.1, 21);
        self.peak(coarse.hz * 0.99, coarse.hz * 1.01, 9)
    }

    /// The loudest tone of the voice band (60 Hz to 8 kHz), to a quarter
    /// tone, then refined to a quarter of a percent.
    pub fn loudest(&self) -> Peak {
        let coarse = self.peak(60.0, 8_000.0, 170);
        self.peak(coarse.hz * 0.97, coarse.hz * 1.03, 25)
    }
}

/// Whether `pcm` holds a tone within ±3% of `hz` at `min_dbfs` or louder,
/// and as a tone: carrying a good share of the frame's energy (a click or
/// a burst of noise is loud at every frequency, a tone at one; three
/// voices' tones at once still each carry a third).
pub fn has_tone(pcm: &[f32], hz: f64, min_dbfs: f64) -> bool {
    let peak = Spectrum::new(pcm).near(hz);
    peak.dbfs >= min_dbfs
        && peak.dbfs >= level_dbfs(pcm) - TONE_SHARE_DB
        && (peak.hz - hz).abs() <= hz * TONE_TOLERANCE
}

/// The level of each 10 ms block, in dBFS: what the ear follows of speech
/// (syllables, pauses), and what survives a codec when the waveform does not.
pub fn envelope(pcm: &[f32]) -> Vec<f64> {
    (pcm.chunks_exact(ENVELOPE_BLOCK))
        .map(|block| level_dbfs(block).max(ENVELOPE_FLOOR_DBFS))
        .collect()
}

/// How well `played` follows `reference`, both envelopes: the lag (in
/// blocks, `played` being later) where they correlate best, and that
/// correlation (Pearson, -1 to 1). `None` until `played` is as long as
/// `reference`.
pub fn align(reference: &[f64], played: &[f64]) -> Option<(usize, f64)> {
    if reference.len() < 2 || played.len() < reference.len() {
        return None;
    }
    (0..=played.len() - reference.len())
        .map(|lag| (lag, pearson(reference, &played[lag..lag + reference.len()])))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    if va <= 0.0 || vb <= 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::FRAME_SAMPLES;

    fn tone(hz: f64, amplitude: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (amplitude * (2.0 * PI * hz * i as f64 / 48_000.0).sin()) as f32)
            .collect()
    }

    #[test]
    fn a_full_scale_sine_reads_zero_dbfs_and_silence_the_floor() {
        assert!((level_dbfs(&tone(1000.0, 1.0, 960)) - 0.0).abs() < 0.01);
        assert!((level_dbfs(&tone(440.0, 0.5, 960)) + 6.02).abs() < 0.05);
        assert_eq!(level_dbfs(&[0.0; 960]), SILENT_DBFS);
    }

    #[test]
    fn a_tone_is_found_at_its_pitch_and_level_in_one_frame() {
        let frame = tone(440.0, 0.5, FRAME_SAMPLES);
        let peak = Spectrum::new(&frame).near(440.0);
        assert!((peak.hz - 440.0).abs() < 2.0, "{peak:?}");
        assert!((peak.dbfs + 6.02).abs() < 0.3, "{peak:?}");
        assert!(has_tone(&frame, 440.0, -40.0));
        assert!(!has_tone(&frame, 440.0, -3.0), "quieter than asked");
    }

    #[test]
    fn a_neighbouring_tone_is_not_taken_for_the_one_asked() {
        // 5% off: inside a 20 ms frame's 50 Hz resolution, yet not 440.
        assert!(!has_tone(&tone(462.0, 0.5, FRAME_SAMPLES), 440.0, -40.0));
        assert!(has_tone(&tone(450.0, 0.5, FRAME_SAMPLES), 440.0, -40.0));
        assert!(!has_tone(&tone(880.0, 0.5, FRAME_SAMPLES), 440.0, -40.0));
    }

    #[test]
    fn a_click_is_loud_everywhere_and_not_a_tone() {
        let mut click = vec![0.0f32; FRAME_SAMPLES];
        click[400] = 1.0;
        click[401] = -1.0;
        assert!(!has_tone(&click, 440.0, -60.0));
    }

    #[test]
    fn two_tones_at_once_are_both_heard() {
        let a = tone(440.0, 0.3, FRAME_SAMPLES);
        let b = tone(880.0, 0.3, FRAME_SAMPLES);
        let mix: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(has_tone(&mix, 440.0, -40.0));
        assert!(has_tone(&mix, 880.0, -40.0));
    }

    #[test]
    fn the_loudest_tone_is_named_to_a_percent() {
        let frame = tone(880.0, 0.25, FRAME_SAMPLES);
        let peak = Spectrum::new(&frame).loudest();
        assert!((peak.hz - 880.0).abs() < 9.0, "{peak:?}");
        assert!((peak.dbfs + 12.0).abs() < 0.5, "{peak:?}");
    }

    #[test]
    fn a_delayed_copy_aligns_at_its_delay_and_noise_does_not_correlate() {
        // Syllable-like bursts: a 300 Hz tone switched on and off.
        let pattern = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1];
        let mut speech = Vec::new();
        for on in pattern {
            speech.extend(tone(300.0, if on == 1 { 0.4 } else { 0.001 }, 4_800));
        }
        let mut played = vec![0.0f32; 4_800 * 3 + 480 * 7];
        played.extend(&speech);
        played.extend(vec![0.0; 4_800]);
        let (lag, r) = align(&envelope(&speech), &envelope(&played)).unwrap();
        assert_eq!(lag, 30 + 7, "blocks of 10 ms");
        assert!(r > 0.99, "{r}");
        let noise: Vec<f32> = (0..played.len())
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.2)
            .collect();
        let (_, r) = align(&envelope(&speech), &envelope(&noise)).unwrap();
        assert!(r < 0.5, "{r}");
        assert_eq!(align(&envelope(&speech), &envelope(&speech[..4800])), None);
    }
}
