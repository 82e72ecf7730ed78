//! Speech and noise for the voice processing tests: the spoken words of
//! alsa-utils (installed by .ci/run) and generated pink noise.

use super::SAMPLE_RATE;

/// The spoken `words` of alsa-utils (installed by .ci/run), each
/// followed by `gap_ms` of silence, repeated to `secs` seconds; `None`
/// where they are missing.
pub fn words(words: &[&str], secs: f32, gap_ms: usize) -> Option<Vec<f32>> {
    let n = (secs * SAMPLE_RATE as f32) as usize;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        for w in words {
            let path = format!("/usr/share/sounds/alsa/{w}.wav");
            out.extend(crate::media::io::read_wav(std::path::Path::new(&path)).ok()?);
            out.resize(out.len() + gap_ms * SAMPLE_RATE as usize / 1000, 0.0);
        }
    }
    out.truncate(n);
    Some(out)
}

pub const WORDS: [&str; 6] = [
    "Front_Center",
    "Front_Left",
    "Front_Right",
    "Side_Left",
    "Rear_Center",
    "Rear_Left",
];

/// Pink noise (Paul Kellet's filter over white noise), from `seed`.
pub fn pink(seed: u32, n: usize) -> Vec<f32> {
    let mut white = talker_noise(seed);
    let mut b = [0.0f32; 7];
    (0..n)
        .map(|_| {
            let w = white();
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.153_852;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let out = b[..6].iter().sum::<f32>() + b[6] + w * 0.5362;
            b[6] = w * 0.115926;
            out
        })
        .collect()
}

/// White noise, -0.5 to 0.5, from `seed` (a linear congruential generator:
/// the same samples on every machine).
pub fn talker_noise(seed: u32) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }
}
