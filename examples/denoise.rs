//! Runs a WAV file through the noise suppressor a sound card's capture gets
//! (with its high-pass filter; no echo canceller, no gain control), for
//! `scripts/noise_pesq.py`, which scores the result with PESQ-WB.
//!
//!     cargo run --release --example denoise -- IN.wav OUT.wav

use std::path::Path;

use termphone::media::control::VoiceProcessing;
use termphone::media::io::read_wav;
use termphone::media::processing::VoiceProcessor;
use termphone::media::{FRAME_SAMPLES, SAMPLE_RATE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: denoise IN.wav OUT.wav".into());
    };
    let samples = read_wav(Path::new(input))?;
    let settings = VoiceProcessing {
        noise_suppression: true,
        ..VoiceProcessing::OFF
    };
    let mut voice = VoiceProcessor::new(settings, 40);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = hound::WavWriter::create(output, spec)?;
    for chunk in samples.chunks(FRAME_SAMPLES) {
        let mut frame = [0.0; FRAME_SAMPLES];
        frame[..chunk.len()].copy_from_slice(chunk);
        voice.capture(&mut frame);
        for s in &frame[..chunk.len()] {
            out.write_sample((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)?;
        }
    }
    out.finalize()?;
    Ok(())
}
