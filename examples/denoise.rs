//! Runs a WAV file through the noise suppressor a sound card's capture gets
//! (with its high-pass filter; no echo canceller, no gain control), for
//! `scripts/noise_pesq.py`, which scores the result with PESQ-WB.
//!
//!     cargo run --release --example denoise -- IN.wav OUT.wav

use std::path::Path;

use termphone::media::FRAME_SAMPLES;
use termphone::media::control::VoiceProcessing;
use termphone::media::io::{Sink, read_wav};
use termphone::media::processing::VoiceProcessor;
use termphone::media::spec::AudioSpec;

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
    let mut out = Sink::open(&AudioSpec::Wav(output.into()), false)?;
    for chunk in samples.chunks(FRAME_SAMPLES) {
        let mut frame = [0.0; FRAME_SAMPLES];
        frame[..chunk.len()].copy_from_slice(chunk);
        voice.capture(&mut frame);
        out.write(&frame)?;
    }
    out.finish()?;
    Ok(())
}
