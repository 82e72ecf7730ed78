//! Where a call's audio comes from and goes to: a device, a file, a tone or
//! nothing. Each source gives one 20 ms frame per tick, each sink takes one.

use std::collections::VecDeque;
use std::f32::consts::TAU;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use super::device::{Capture, Playback};
use super::resample::Resampler;
use super::spec::AudioSpec;
use super::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use crate::error::{Error, ErrorCode};

/// Amplitude of `tone:HZ` (-9 dBFS RMS): loud, with room to spare.
const TONE_AMPLITUDE: f32 = 0.5;

/// How far behind `echo` plays back what it heard: 25 frames, 0.5 s.
const ECHO_FRAMES: usize = 25;

pub enum Source {
    Null,
    Tone { step: f32, phase: f32 },
    Wav { samples: Vec<f32>, pos: usize },
    Echo(VecDeque<Frame>),
    Device(Box<Capture>),
}

impl Source {
    pub fn open(spec: &AudioSpec) -> Result<Source, Error> {
        Ok(match spec {
            AudioSpec::Null => Source::Null,
            AudioSpec::Tone(hz) => Source::Tone {
                step: TAU * hz / SAMPLE_RATE as f32,
                phase: 0.0,
            },
            AudioSpec::Wav(path) => Source::Wav {
                samples: read_wav(path)?,
                pos: 0,
            },
            AudioSpec::Echo => Source::Echo(VecDeque::with_capacity(ECHO_FRAMES + 1)),
            AudioSpec::Default => Source::Device(Box::new(Capture::open(None)?)),
            AudioSpec::Device(name) => Source::Device(Box::new(Capture::open(Some(name))?)),
        })
    }

    /// Refuses a source that cannot open, so that a front end says so at
    /// start rather than when a call connects: a WAV file that is missing,
    /// not WAV, or shorter than its header says (read through, not kept).
    /// Sound cards are not opened here: a call without one goes on with
    /// null audio and says so, and a card may be plugged in by then.
    pub fn check(spec: &AudioSpec) -> Result<(), Error> {
        let AudioSpec::Wav(path) = spec else {
            return Ok(());
        };
        let mut reader = hound::WavReader::open(path).map_err(|e| wav_error(path, e))?;
        let read = match reader.spec().sample_format {
            hound::SampleFormat::Float => reader.samples::<f32>().try_for_each(|s| s.map(drop)),
            hound::SampleFormat::Int => reader.samples::<i32>().try_for_each(|s| s.map(drop)),
        };
        read.map_err(|e| wav_error(path, e))
    }

    /// The next 20 ms.
    pub fn read(&mut self, out: &mut Frame) {
        match self {
            Source::Null => out.fill(0.0),
            Source::Tone { step, phase } => {
                for s in out.iter_mut() {
                    *s = TONE_AMPLITUDE * phase.sin();
                    *phase = (*phase + *step) % TAU;
                }
            }
            Source::Wav { samples, pos } => {
                let rest = &samples[(*pos).min(samples.len())..];
                let n = rest.len().min(FRAME_SAMPLES);
                out[..n].copy_from_slice(&rest[..n]);
                out[n..].fill(0.0);
                *pos += n;
            }
            Source::Echo(heard) => match heard.len() >= ECHO_FRAMES {
                true => *out = heard.pop_front().expect("not empty"),
                false => out.fill(0.0),
            },
            Source::Device(capture) => capture.read(out),
        }
    }

    /// What the device just played, for an `echo` source to send back later.
    pub fn heard(&mut self, frame: &Frame) {
        if let Source::Echo(heard) = self {
            heard.push_back(*frame);
        }
    }
}

pub enum Sink {
    Null,
    Wav(Box<hound::WavWriter<BufWriter<File>>>),
    Device(Box<Playback>),
}

impl Sink {
    /// Opens the sink; a WAV file is created, or with `append` (a later call
    /// of the same run) continued.
    pub fn open(spec: &AudioSpec, append: bool) -> Result<Sink, Error> {
        spec.check_sink()?;
        Ok(match spec {
            // tone: and echo were refused just above.
            AudioSpec::Null | AudioSpec::Tone(_) | AudioSpec::Echo => Sink::Null,
            AudioSpec::Wav(path) => {
                let writer = if append && path.exists() {
                    hound::WavWriter::append(path)
                } else {
                    hound::WavWriter::create(path, wav_spec())
                };
                Sink::Wav(Box::new(writer.map_err(|e| wav_error(path, e))?))
            }
            AudioSpec::Default => Sink::Device(Box::new(Playback::open(None)?)),
            AudioSpec::Device(name) => Sink::Device(Box::new(Playback::open(Some(name))?)),
        })
    }

    /// Refuses a sink that cannot open, as [`Source::check`] does, without
    /// creating anything: a WAV file in a directory that does not exist, a
    /// directory, or a file that is there and is not a WAV file (a
    /// recording replaces a WAV file it is named after, and nothing else).
    pub fn check(spec: &AudioSpec) -> Result<(), Error> {
        spec.check_sink()?;
        let AudioSpec::Wav(path) = spec else {
            return Ok(());
        };
        let refused = |why: String| {
            Err(Error::new(
                ErrorCode::InvalidAudioSpec,
                format!("wav:{}: {why}", path.display()),
            ))
        };
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                return refused(format!("no directory {}", dir.display()));
            }
            _ => {}
        }
        if path.is_dir() {
            return refused("a directory; name a file in it to record to".into());
        }
        if path.exists() && hound::WavReader::open(path).is_err() {
            return refused(
                "there is a file by that name and it is not a WAV file; termphone records \
                 over a WAV file only, so name a new file"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn write(&mut self, frame: &Frame) -> Result<(), Error> {
        match self {
            Sink::Null => Ok(()),
            Sink::Wav(writer) => {
                for s in frame {
                    let sample = (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
                    writer
                        .write_sample(sample)
                        .map_err(|e| Error::new(ErrorCode::AudioDeviceFailed, e.to_string()))?;
                }
                Ok(())
            }
            Sink::Device(playback) => {
                playback.write(frame);
                Ok(())
            }
        }
    }

    /// Completes a WAV file's header, so that it is readable.
    pub fn finish(self) -> Result<(), Error> {
        if let Sink::Wav(writer) = self {
            writer
                .finalize()
                .map_err(|e| Error::new(ErrorCode::AudioDeviceFailed, e.to_string()))?;
        }
        Ok(())
    }
}

/// What `wav:PATH` sinks write: 48 kHz mono 16-bit.
fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

fn wav_error(path: &Path, e: hound::Error) -> Error {
    Error::new(
        ErrorCode::InvalidAudioSpec,
        format!("wav:{}: {e}", path.display()),
    )
}

/// A whole WAV file as 48 kHz mono: channels averaged, rate converted.
pub fn read_wav(path: &Path) -> Result<Vec<f32>, Error> {
    let reader = hound::WavReader::open(path).map_err(|e| wav_error(path, e))?;
    decode_wav(reader).map_err(|e| wav_error(path, e))
}

/// WAV data from any reader, as 48 kHz mono.
pub fn decode_wav<R: std::io::Read>(mut reader: hound::WavReader<R>) -> hound::Result<Vec<f32>> {
    let spec = reader.spec();
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()?
        }
    };
    let channels = usize::from(spec.channels.max(1));
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    let mut out = Vec::with_capacity(mono.len());
    Resampler::new(spec.sample_rate, SAMPLE_RATE).process(&mono, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_sink_and_source_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wav");
        let spec = AudioSpec::Wav(path.clone());
        let mut tone = Source::open(&AudioSpec::Tone(1000.0)).unwrap();
        let mut frame = [0.0; FRAME_SAMPLES];
        let mut sink = Sink::open(&spec, false).unwrap();
        tone.read(&mut frame);
        sink.write(&frame).unwrap();
        sink.finish().unwrap();
        // A later call appends.
        let mut sink = Sink::open(&spec, true).unwrap();
        sink.write(&frame).unwrap();
        sink.finish().unwrap();

        let mut source = Source::open(&spec).unwrap();
        let mut back = [0.0; FRAME_SAMPLES];
        source.read(&mut back);
        assert!(back.iter().zip(&frame).all(|(a, b)| (a - b).abs() < 1e-3));
        source.read(&mut back);
        source.read(&mut back);
        assert!(back.iter().all(|s| *s == 0.0), "silence after the end");
    }

    #[test]
    fn missing_files_and_tone_sinks_are_refused_clearly() {
        let e = Source::open(&AudioSpec::Wav("/nonexistent/x.wav".into()))
            .err()
            .unwrap();
        assert!(e.message.contains("/nonexistent/x.wav"), "{}", e.message);
        let e = Sink::open(&AudioSpec::Tone(440.0), false).err().unwrap();
        assert!(e.message.contains("tone:440 is a source"), "{}", e.message);
    }

    #[test]
    fn a_check_refuses_what_would_not_open_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wav");
        let e = Source::check(&AudioSpec::Wav(missing.clone())).unwrap_err();
        assert!(e.message.contains("missing.wav"), "{}", e.message);
        let text = dir.path().join("notes.wav");
        std::fs::write(&text, "not a wav").unwrap();
        assert!(Source::check(&AudioSpec::Wav(text)).is_err());
        let nowhere = dir.path().join("no/such/dir/out.wav");
        let e = Sink::check(&AudioSpec::Wav(nowhere)).unwrap_err();
        assert!(e.message.contains("no directory"), "{}", e.message);
        assert!(Sink::check(&AudioSpec::Tone(440.0)).is_err());
        Sink::check(&AudioSpec::Wav(missing.clone())).unwrap();
        assert!(!missing.exists(), "a check creates nothing");
        Sink::check(&AudioSpec::Wav("out.wav".into())).unwrap();
        Source::check(&AudioSpec::Default).unwrap();
        // A recording never replaces what is not a recording, nor a folder.
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "[client]\n").unwrap();
        let e = Sink::check(&AudioSpec::Wav(config.clone())).unwrap_err();
        assert!(e.message.contains("not a WAV file"), "{}", e.message);
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "[client]\n");
        let e = Sink::check(&AudioSpec::Wav(dir.path().into())).unwrap_err();
        assert!(e.message.contains("a directory"), "{}", e.message);
        // An earlier recording is a WAV file: recorded over.
        let earlier = dir.path().join("earlier.wav");
        hound::WavWriter::create(&earlier, wav_spec())
            .unwrap()
            .finalize()
            .unwrap();
        Sink::check(&AudioSpec::Wav(earlier.clone())).unwrap();
        // A file cut short of what its header promises is refused at start.
        let mut whole = hound::WavWriter::create(&earlier, wav_spec()).unwrap();
        (0..4_800).for_each(|_| whole.write_sample(1_000i16).unwrap());
        whole.finalize().unwrap();
        let bytes = std::fs::read(&earlier).unwrap();
        let cut = dir.path().join("cut.wav");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = Source::check(&AudioSpec::Wav(cut)).unwrap_err();
        assert!(e.message.contains("cut.wav"), "{}", e.message);
        Source::check(&AudioSpec::Wav(earlier)).unwrap();
    }
}
