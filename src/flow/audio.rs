//! A flow's audio steps: what a device actually played, checked as it
//! plays. Each device of a flow copies its playout to a tap file
//! (`--audio-tap`, media::tap); an [`Ear`] follows that file from the
//! step's start and judges it with media::analysis.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::media::analysis::{self, Peak, Spectrum, level_dbfs};
use crate::media::io::read_wav;
use crate::media::{FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, tap};

/// A tone counts from this level up.
const TONE_MIN_DBFS: f64 = -40.0;
/// Silence is nothing above this level.
const SILENCE_MAX_DBFS: f64 = -50.0;
/// Below this, "the loudest" is nothing worth naming.
const NOTHING_DBFS: f64 = -60.0;
/// How often the tap file is read.
const POLL: Duration = Duration::from_millis(FRAME_MS);
/// How often a `like` step correlates what it has.
const CORRELATE_EVERY: usize = 10;

/// `expect_audio`: a tone (`tone_hz`, `min_ms`) or a recording (`like`,
/// `min_correlation`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectAudio {
    pub tone_hz: Option<f64>,
    /// How much of the tone must be played (default 1000).
    pub min_ms: Option<u64>,
    /// A WAV file (48 kHz mono; relative to the flow file).
    pub like: Option<PathBuf>,
    /// Envelope correlation required (default 0.8).
    pub min_correlation: Option<f64>,
    /// `like`'s samples, read at load.
    #[serde(skip)]
    reference: Vec<f32>,
}

/// `expect_silence`: nothing above -50 dBFS for `for_ms` in a row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSilence {
    pub for_ms: u64,
}

impl ExpectSilence {
    /// How long the step waits by default: the silence, and 5 s for it to begin.
    pub fn default_within(&self) -> Duration {
        Duration::from_millis(5_000 + self.for_ms)
    }
}

impl ExpectAudio {
    /// Checks the step at load, and reads its reference recording.
    pub fn load(&mut self, base: &Path) -> Result<(), String> {
        match (self.tone_hz, &self.like) {
            (Some(hz), None) => {
                if self.min_correlation.is_some() {
                    return Err("expect_audio: min_correlation goes with like, not tone_hz".into());
                }
                if !(20.0..=20_000.0).contains(&hz) {
                    return Err(format!(
                        "expect_audio: tone_hz = {hz}; a tone is 20 to 20000 Hz"
                    ));
                }
                Ok(())
            }
            (None, Some(like)) => {
                if self.min_ms.is_some() {
                    return Err("expect_audio: min_ms goes with tone_hz, not like".into());
                }
                if let Some(c) = self.min_correlation
                    && !(-1.0..=1.0).contains(&c)
                {
                    return Err(format!(
                        "expect_audio: min_correlation = {c}; a correlation is -1 to 1"
                    ));
                }
                let path = base.join(like);
                self.reference = read_wav(&path).map_err(|e| format!("expect_audio: {e}"))?;
                if self.reference.len() < SAMPLE_RATE as usize / 2 {
                    return Err(format!(
                        "expect_audio: {} is shorter than half a second; give it a phrase",
                        path.display()
                    ));
                }
                Ok(())
            }
            _ => Err(
                "expect_audio has either tone_hz (and min_ms) or like (and min_correlation)".into(),
            ),
        }
    }

    /// How long the step waits by default: 5 s, and the recording's length.
    pub fn default_within(&self) -> Duration {
        let reference = self.reference.len() as u64 * 1000 / u64::from(SAMPLE_RATE);
        Duration::from_millis(5_000 + reference)
    }

    pub fn describe(&self) -> String {
        match (self.tone_hz, &self.like) {
            (Some(hz), _) => format!("{hz} Hz for {} ms", self.min_ms.unwrap_or(1_000)),
            (_, Some(like)) => format!(
                "audio like {} (correlation >= {})",
                like.display(),
                self.min_correlation.unwrap_or(0.8)
            ),
            _ => unreachable!("checked at load"),
        }
    }
}

/// Follows one device's tap file.
pub struct Ear {
    path: PathBuf,
    offset: u64,
}

/// What was played since the step started, frame by frame.
#[derive(Default)]
struct Heard {
    frames: usize,
    /// The loudest frame, to say what was heard instead.
    loudest: Option<(f64, Vec<f32>)>,
}

impl Heard {
    fn note(&mut self, frame: &[f32]) {
        self.frames += 1;
        let level = level_dbfs(frame);
        if self.loudest.as_ref().is_none_or(|(l, _)| level > *l) {
            self.loudest = Some((level, frame.to_vec()));
        }
    }

    /// "880 Hz at -12 dBFS", or what else there was.
    fn loudest(&self) -> String {
        match &self.loudest {
            None => "nothing played; is the device in a call?".into(),
            Some((level, _)) if *level < NOTHING_DBFS => {
                format!("nothing above {NOTHING_DBFS} dBFS")
            }
            Some((_, frame)) => {
                let Peak { hz, dbfs } = Spectrum::new(frame).loudest();
                format!("{hz:.0} Hz at {dbfs:.0} dBFS")
            }
        }
    }

    fn ms(&self) -> u64 {
        self.frames as u64 * FRAME_MS
    }
}

impl Ear {
    /// An ear on `path` from what is played next.
    pub fn new(path: &Path) -> Ear {
        let frame = (FRAME_SAMPLES * 2) as u64;
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        Ear {
            path: path.to_owned(),
            offset: len / frame * frame,
        }
    }

    /// Frames played since the last read.
    fn read(&mut self) -> Vec<Vec<f32>> {
        let mut bytes = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path)
            && file.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let _ = file.read_to_end(&mut bytes);
        }
        let whole = bytes.len() / (FRAME_SAMPLES * 2) * (FRAME_SAMPLES * 2);
        self.offset += whole as u64;
        (bytes[..whole].chunks_exact(FRAME_SAMPLES * 2))
            .map(|b| tap::samples(b).collect())
            .collect()
    }

    /// Waits until the device has played `expect`, or `within` has passed.
    pub async fn expect_audio(
        &mut self,
        who: &str,
        expect: &ExpectAudio,
        within: Duration,
    ) -> Result<String, String> {
        match expect.tone_hz {
            Some(hz) => {
                self.tone(who, hz, expect.min_ms.unwrap_or(1_000), within)
                    .await
            }
            None => self.like(who, expect, within).await,
        }
    }

    async fn tone(
        &mut self,
        who: &str,
        hz: f64,
        min_ms: u64,
        within: Duration,
    ) -> Result<String, String> {
        let until = tokio::time::Instant::now() + within;
        let (mut heard, mut tone_ms) = (Heard::default(), 0);
        loop {
            for frame in self.read() {
                heard.note(&frame);
                if analysis::has_tone(&frame, hz, TONE_MIN_DBFS) {
                    tone_ms += FRAME_MS;
                }
                if tone_ms >= min_ms {
                    return Ok(format!(
                        "{who} heard {hz} Hz for {min_ms} ms (in {} ms played)",
                        heard.ms()
                    ));
                }
            }
            if tokio::time::Instant::now() >= until {
                let what = match tone_ms {
                    0 => format!("no {hz} Hz tone"),
                    ms => format!("{hz} Hz for only {ms} ms of {min_ms}"),
                };
                return Err(format!(
                    "{who} heard {what} in {} ms (loudest: {})",
                    within.as_millis(),
                    heard.loudest()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn like(
        &mut self,
        who: &str,
        expect: &ExpectAudio,
        within: Duration,
    ) -> Result<String, String> {
        let until = tokio::time::Instant::now() + within;
        let min = expect.min_correlation.unwrap_or(0.8);
        let like = expect.like.as_ref().expect("checked at load").display();
        let reference = analysis::envelope(&expect.reference);
        let (mut heard, mut played) = (Heard::default(), Vec::new());
        let mut best: Option<(usize, f64)> = None;
        let mut polls = 0;
        loop {
            for frame in self.read() {
                heard.note(&frame);
                played.extend(frame);
            }
            let done = tokio::time::Instant::now() >= until;
            polls += 1;
            if done || polls % CORRELATE_EVERY == 0 {
                best = analysis::align(&reference, &analysis::envelope(&played)).or(best);
                if let Some((lag, r)) = best
                    && r >= min
                {
                    return Ok(format!(
                        "{who} played audio like {like}: correlation {r:.2}, {} ms after the step began",
                        lag * 10
                    ));
                }
            }
            if done {
                return Err(match best {
                    Some((lag, r)) => format!(
                        "{who} played nothing like {like} in {} ms: best correlation {r:.2} \
                         (at {} ms), needed {min} (loudest: {})",
                        within.as_millis(),
                        lag * 10,
                        heard.loudest()
                    ),
                    None => format!(
                        "{who} played {} ms in {} ms, less than {like} lasts (loudest: {})",
                        heard.ms(),
                        within.as_millis(),
                        heard.loudest()
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until nothing above -50 dBFS has been played for `for_ms` in
    /// a row (a device that plays nothing at all, in no call, is silent
    /// too), or `within` has passed.
    pub async fn expect_silence(
        &mut self,
        who: &str,
        expect: &ExpectSilence,
        within: Duration,
    ) -> Result<String, String> {
        let start = tokio::time::Instant::now();
        let (until, needed) = (start + within, Duration::from_millis(expect.for_ms));
        let (mut heard, mut quiet_since, mut longest) = (Heard::default(), start, Duration::ZERO);
        loop {
            let now = tokio::time::Instant::now();
            for frame in self.read() {
                heard.note(&frame);
                if level_dbfs(&frame) > SILENCE_MAX_DBFS {
                    longest = longest.max(now - quiet_since);
                    quiet_since = now;
                }
            }
            if now - quiet_since >= needed {
                let played = match heard.frames {
                    0 => "it played nothing: in no call".to_owned(),
                    _ => format!("{} ms played", heard.ms()),
                };
                return Ok(format!(
                    "{who} played nothing above {SILENCE_MAX_DBFS} dBFS for {} ms ({played})",
                    expect.for_ms
                ));
            }
            if now >= until {
                return Err(format!(
                    "{who} heard no {} ms of silence in {} ms: quiet at most {} ms (loudest: {})",
                    expect.for_ms,
                    within.as_millis(),
                    longest.max(now - quiet_since).as_millis(),
                    heard.loudest()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
