//! Runs what a speaker played and what the microphone in the same room
//! captured through the voice processing a sound card's capture gets, for
//! `scripts/echo_pesq.py`, which builds the room and scores the result.
//!
//!     cargo run --release --example echo_room -- PLAYED.wav CAPTURED.wav OUT.wav [--echo-only]
//!
//! `--echo-only` leaves noise suppression and gain control out.

use std::path::Path;

use termphone::media::FRAME_SAMPLES;
use termphone::media::control::VoiceProcessing;
use termphone::media::io::{Sink, read_wav};
use termphone::media::processing::VoiceProcessor;
use termphone::media::spec::AudioSpec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (files, echo_only) = match args.as_slice() {
        [files @ .., flag] if flag == "--echo-only" => (files, true),
        files => (files, false),
    };
    let [played, captured, output] = files else {
        return Err("usage: echo_room PLAYED.wav CAPTURED.wav OUT.wav [--echo-only]".into());
    };
    let played = read_wav(Path::new(played))?;
    let captured = read_wav(Path::new(captured))?;
    let settings = match echo_only {
        true => VoiceProcessing {
            echo_cancellation: true,
            ..VoiceProcessing::OFF
        },
        false => VoiceProcessing::ON,
    };
    // No device delay: the room's own 40 ms is for the canceller to find.
    let mut voice = VoiceProcessor::new(settings, 0);
    let mut out = Sink::open(&AudioSpec::Wav(output.into()), false)?;
    for (far, near) in played
        .chunks(FRAME_SAMPLES)
        .zip(captured.chunks(FRAME_SAMPLES))
    {
        let mut frame = [0.0; FRAME_SAMPLES];
        frame[..far.len()].copy_from_slice(far);
        voice.render(&frame);
        let mut frame = [0.0; FRAME_SAMPLES];
        frame[..near.len()].copy_from_slice(near);
        voice.capture(&mut frame);
        out.write(&frame)?;
    }
    out.finish()?;
    Ok(())
}
