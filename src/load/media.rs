//! The voice of a load run's calls, as their devices reported it at each
//! call's end (`MEDIA_STATS`): MOS, loss and time to first audio, each an
//! HDR histogram that merges across load processes exactly as the steps'
//! latencies do.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::report::{decode, encode};
use crate::flow::MediaFigures;

/// MOS and loss are kept in hundredths (4.29 → 429, 1.5% → 150).
const HUNDREDTHS: f64 = 100.0;

#[derive(Clone, Debug)]
pub struct MediaStats {
    mos: Histogram<u64>,
    loss: Histogram<u64>,
    first_audio: Histogram<u64>,
    /// Streams in which nothing audible was played (no time to first audio).
    silent: u64,
}

impl Default for MediaStats {
    fn default() -> Self {
        // MOS up to 5, loss up to 100%, first audio up to an hour.
        let histogram = |high| Histogram::new_with_bounds(1, high, 3).expect("valid bounds");
        MediaStats {
            mos: histogram(500),
            loss: histogram(10_000),
            first_audio: histogram(3_600_000),
            silent: 0,
        }
    }
}

impl MediaStats {
    pub fn add(&mut self, figures: &MediaFigures) {
        let hundredths = |v: f64| (v * HUNDREDTHS).round().max(0.0) as u64;
        self.mos.saturating_record(hundredths(figures.mos));
        self.loss
            .saturating_record(hundredths(figures.loss_percent));
        match figures.time_to_first_audio_ms {
            Some(ms) => self.first_audio.saturating_record(ms),
            None => self.silent += 1,
        }
    }

    pub fn merge(&mut self, other: &MediaStats) {
        let _ = self.mos.add(&other.mos);
        let _ = self.loss.add(&other.loss);
        let _ = self.first_audio.add(&other.first_audio);
        self.silent += other.silent;
    }

    /// The report's `media`, or `None` for a run whose flow made no call
    /// with media.
    pub fn to_json(&self) -> Option<MediaReport> {
        (!self.mos.is_empty()).then(|| MediaReport {
            streams: self.mos.len(),
            silent: self.silent,
            mos: Figure::of(&self.mos, HUNDREDTHS),
            loss_percent: Figure::of(&self.loss, HUNDREDTHS),
            time_to_first_audio_ms: Figure::of(&self.first_audio, 1.0),
        })
    }

    pub fn from_json(report: &MediaReport) -> Result<MediaStats, String> {
        let read = |f: &Figure, what: &str| {
            decode(&f.histogram).map_err(|e| format!("media {what}: histogram: {e}"))
        };
        Ok(MediaStats {
            mos: read(&report.mos, "mos")?,
            loss: read(&report.loss_percent, "lossPercent")?,
            first_audio: read(&report.time_to_first_audio_ms, "timeToFirstAudioMs")?,
            silent: report.silent,
        })
    }
}

/// The JSON report's `media` (docs/load.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaReport {
    /// Calls' figures as devices reported them: one per device and call.
    pub streams: u64,
    /// Of those, the ones that played nothing audible.
    pub silent: u64,
    pub mos: Figure,
    pub loss_percent: Figure,
    pub time_to_first_audio_ms: Figure,
}

impl MediaReport {
    /// What the streams were, and how they sounded: the summary's line, and
    /// the dashboard's two.
    pub fn lines(&self) -> [String; 2] {
        [
            format!(
                "{} streams ({} silent): MOS p50 {:.2}, min {:.2}",
                self.streams, self.silent, self.mos.p50, self.mos.min
            ),
            format!(
                "loss p50 {:.1}%, p99 {:.1}%, max {:.1}%; first audio p50 {} ms, p99 {} ms",
                self.loss_percent.p50,
                self.loss_percent.p99,
                self.loss_percent.max,
                self.time_to_first_audio_ms.p50,
                self.time_to_first_audio_ms.p99,
            ),
        ]
    }
}

/// One figure over every stream: its spread, and its histogram to merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// HdrHistogram V2, base64 (MOS and loss in hundredths).
    pub histogram: String,
}

impl Figure {
    fn of(h: &Histogram<u64>, scale: f64) -> Figure {
        let at = |q: f64| h.value_at_quantile(q) as f64 / scale;
        Figure {
            min: h.min() as f64 / scale,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: h.max() as f64 / scale,
            histogram: encode(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(mos: f64, loss_percent: f64, first: Option<u64>) -> MediaFigures {
        MediaFigures {
            mos,
            loss_percent,
            time_to_first_audio_ms: first,
        }
    }

    /// Two processes' figures merged, through JSON, read as one run over
    /// both: the same spread to the hundredth.
    #[test]
    fn merged_media_figures_are_those_of_one_run_over_both() {
        let (mut a, mut b, mut both) = (
            MediaStats::default(),
            MediaStats::default(),
            MediaStats::default(),
        );
        for n in 0..100u64 {
            let f = figures(
                3.0 + (n % 15) as f64 / 10.0,
                (n % 7) as f64 / 2.0,
                (n % 10 != 0).then_some(100 + n * 3),
            );
            if n % 2 == 0 { &mut a } else { &mut b }.add(&f);
            both.add(&f);
        }
        let through_json = |s: &MediaStats| {
            let text = serde_json::to_string(&s.to_json().unwrap()).unwrap();
            MediaStats::from_json(&serde_json::from_str(&text).unwrap()).unwrap()
        };
        let mut merged = through_json(&a);
        merged.merge(&through_json(&b));
        let (merged, both) = (merged.to_json().unwrap(), both.to_json().unwrap());
        assert_eq!(merged, both);
        assert_eq!((both.streams, both.silent), (100, 10));
        assert_eq!((both.mos.min, both.mos.max), (3.0, 4.4));
        assert_eq!((both.loss_percent.min, both.loss_percent.max), (0.0, 3.0));
        assert_eq!(both.time_to_first_audio_ms.min, 103.0);
        assert_eq!(MediaStats::default().to_json(), None);
    }
}
