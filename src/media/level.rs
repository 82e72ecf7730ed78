//! The voice level of a frame as USER_VOICE_VOLUME reports it: 0 to 100.

/// Levels at or below this many dB under full scale read 0.
const FLOOR_DBFS: f32 = -60.0;

/// 0 (silence, or quieter than -60 dBFS) to 100 (full scale), linear in dB.
pub fn level(pcm: &[f32]) -> u8 {
    if pcm.is_empty() {
        return 0;
    }
    let mean_square = pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len() as f32;
    if mean_square <= 0.0 {
        return 0;
    }
    let dbfs = 10.0 * mean_square.log10();
    let scaled = (dbfs - FLOOR_DBFS) / -FLOOR_DBFS * 100.0;
    scaled.clamp(0.0, 100.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_zero_and_full_scale_is_a_hundred() {
        assert_eq!(level(&[0.0; 960]), 0);
        assert_eq!(level(&[1.0; 960]), 100);
        assert_eq!(level(&[-1.0; 960]), 100);
        // -20 dBFS is two thirds of the way up from -60.
        assert_eq!(level(&[0.1; 960]), 67);
        assert_eq!(level(&[0.0005; 960]), 0);
    }
}
