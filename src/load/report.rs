//! What a load run found, as it goes and at the end: totals, failures
//! grouped by step and reason, and each step's latency as an HDR histogram.
//! The JSON report carries the histograms themselves (V2, base64), so that
//! reports of several load processes merge exactly (`--merge`).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use super::media::{MediaReport, MediaStats};
use crate::flow::{Names, Outcome};

/// Iterations named as examples of a failure.
const EXAMPLES: usize = 5;
/// Latencies are recorded in microseconds, up to an hour, to 3 digits.
const MAX_MICROS: u64 = 3_600_000_000;

/// One step's latencies.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub step: usize,
    pub device: String,
    pub what: String,
    pub histogram: Histogram<u64>,
}

/// A failure, as many iterations had it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The failed step (0: before the first, a device that did not start).
    pub step: usize,
    pub device: String,
    /// One iteration's words for it, with the flow's own user names.
    pub reason: String,
    pub count: u64,
    /// The first few iterations that failed so.
    pub iterations: Vec<u64>,
}

impl Failure {
    /// Where it failed, as the summary and the dashboard say it: a step
    /// on its device, or before the first step (its reason names the
    /// device that did not start or log in).
    pub fn place(&self) -> String {
        match self.step {
            0 => "before the first step".into(),
            step => format!("step {step} [{}]", self.device),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub flow: String,
    pub iterations: u64,
    pub passed: u64,
    pub failed: u64,
    /// Stopped by Ctrl-C before they ended: neither passed nor failed.
    pub aborted: u64,
    pub duration: Duration,
    /// How long iterations were being started: the rate is over this, not
    /// over the wait for the last ones to end (zero: not known, the
    /// duration stands in).
    pub starting: Duration,
    pub target_rate: f64,
    pub steps: Vec<StepStats>,
    /// By step, and by the reason with its numbers taken out.
    failures: BTreeMap<(usize, String), Failure>,
    /// What the calls' devices said of their voice.
    pub media: MediaStats,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds")
}

impl Stats {
    pub fn new(flow: &str, target_rate: f64) -> Stats {
        Stats {
            flow: flow.to_owned(),
            target_rate,
            ..Stats::default()
        }
    }

    /// Iteration `n` ended so (`names`: its users, to read its failure in
    /// the flow's own names).
    pub fn add(&mut self, n: u64, outcome: &Outcome, names: &Names) {
        self.iterations += 1;
        for figures in &outcome.media {
            self.media.add(figures);
        }
        for step in outcome.steps.iter().filter(|s| s.passed) {
            let what = names.restore(&step.what);
            let stats = self.step(step.step, &step.device, &what);
            let micros = (step.elapsed.as_micros() as u64).clamp(1, MAX_MICROS);
            stats.histogram.saturating_record(micros);
        }
        if outcome.passed {
            self.passed += 1;
            return;
        }
        self.failed += 1;
        let failed = outcome.steps.iter().find(|s| !s.passed);
        let (step, device, what) = match failed {
            Some(s) => (s.step, s.device.clone(), names.restore(&s.what)),
            None => (
                0,
                String::new(),
                names.restore(outcome.failure.as_deref().unwrap_or("failed")),
            ),
        };
        let key = (step, without_numbers(&what));
        let failure = self.failures.entry(key).or_insert_with(|| Failure {
            step,
            device,
            reason: what,
            count: 0,
            iterations: Vec::new(),
        });
        failure.count += 1;
        if failure.iterations.len() < EXAMPLES {
            failure.iterations.push(n);
        }
    }

    fn step(&mut self, step: usize, device: &str, what: &str) -> &mut StepStats {
        let at = match self.steps.binary_search_by_key(&step, |s| s.step) {
            Ok(at) => at,
            Err(at) => {
                self.steps.insert(
                    at,
                    StepStats {
                        step,
                        device: device.to_owned(),
                        what: what.to_owned(),
                        histogram: histogram(),
                    },
                );
                at
            }
        };
        &mut self.steps[at]
    }

    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.failures.values()
    }

    pub fn failed_percent(&self) -> f64 {
        match self.iterations {
            0 => 0.0,
            n => 100.0 * self.failed as f64 / n as f64,
        }
    }

    /// Every step's latencies together, for the progress line.
    pub fn all_steps(&self) -> Histogram<u64> {
        let mut all = histogram();
        for s in &self.steps {
            let _ = all.add(&s.histogram);
        }
        all
    }

    /// Adds another run's figures (`--merge`): the sums of counts, the
    /// union of histograms, the longer duration, the rates added.
    /// Adds the report of another process that ran the same flow; a
    /// report of another flow (by its name, or by what one of its steps
    /// does) is refused: its steps' numbers name other steps.
    pub fn merge(&mut self, other: Stats) -> Result<(), String> {
        if !self.iterations_seen() {
            self.flow = other.flow.clone();
        } else if self.flow != other.flow {
            return Err(format!(
                "a report of flow {:?} does not merge with one of flow {:?}: merge the reports \
                 of one flow's load processes",
                other.flow, self.flow
            ));
        }
        for s in &other.steps {
            if let Ok(at) = self.steps.binary_search_by_key(&s.step, |m| m.step)
                && (self.steps[at].device != s.device || self.steps[at].what != s.what)
            {
                let mine = &self.steps[at];
                return Err(format!(
                    "step {} is [{}] {} in one report and [{}] {} in another: \
                     merge the reports of one flow, run with the same file",
                    s.step, mine.device, mine.what, s.device, s.what
                ));
            }
        }
        self.iterations += other.iterations;
        self.passed += other.passed;
        self.failed += other.failed;
        self.aborted += other.aborted;
        self.duration = self.duration.max(other.duration);
        self.starting = self.starting.max(other.starting);
        self.media.merge(&other.media);
        self.target_rate += other.target_rate;
        for s in other.steps {
            let mine = self.step(s.step, &s.device, &s.what);
            let _ = mine.histogram.add(&s.histogram);
        }
        for (key, f) in other.failures {
            let mine = self.failures.entry(key).or_insert_with(|| Failure {
                count: 0,
                iterations: Vec::new(),
                ..f.clone()
            });
            mine.count += f.count;
            let room = EXAMPLES.saturating_sub(mine.iterations.len());
            mine.iterations.extend(f.iterations.into_iter().take(room));
        }
        Ok(())
    }

    /// Whether any report went into this one yet.
    fn iterations_seen(&self) -> bool {
        !self.flow.is_empty() || self.iterations > 0
    }

    pub fn to_json(&self) -> Report {
        let ms = |h: &Histogram<u64>, q: f64| {
            let v = if q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(q)
            };
            (v as f64 / 10.0).round() / 100.0
        };
        Report {
            flow: self.flow.clone(),
            iterations: self.iterations,
            passed: self.passed,
            failed: self.failed,
            aborted: self.aborted,
            duration_secs: (self.duration.as_secs_f64() * 100.0).round() / 100.0,
            starting_secs: (self.starting.as_secs_f64() * 100.0).round() / 100.0,
            target_rate: self.target_rate,
            actual_rate: match self.starting_or_duration().as_secs_f64() {
                0.0 => 0.0,
                secs => ((self.iterations + self.aborted) as f64 / secs * 100.0).round() / 100.0,
            },
            failures: self.failures.values().cloned().collect(),
            media: self.media.to_json(),
            steps: (self.steps.iter())
                .map(|s| StepReport {
                    step: s.step,
                    device: s.device.clone(),
                    what: s.what.clone(),
                    count: s.histogram.len(),
                    p50_ms: ms(&s.histogram, 0.5),
                    p90_ms: ms(&s.histogram, 0.9),
                    p99_ms: ms(&s.histogram, 0.99),
                    max_ms: ms(&s.histogram, 1.0),
                    histogram: encode(&s.histogram),
                })
                .collect(),
        }
    }

    /// What the rate is over: the time iterations were being started, or,
    /// where that is not known (a report from before it was kept), the
    /// whole run.
    fn starting_or_duration(&self) -> Duration {
        match self.starting.is_zero() {
            true => self.duration,
            false => self.starting,
        }
    }

    pub fn from_json(report: Report) -> Result<Stats, String> {
        let mut stats = Stats {
            flow: report.flow,
            iterations: report.iterations,
            passed: report.passed,
            failed: report.failed,
            aborted: report.aborted,
            duration: Duration::from_secs_f64(report.duration_secs.max(0.0)),
            starting: Duration::from_secs_f64(report.starting_secs.max(0.0)),
            target_rate: report.target_rate,
            media: match &report.media {
                Some(media) => MediaStats::from_json(media)?,
                None => MediaStats::default(),
            },
            ..Stats::default()
        };
        for s in report.steps {
            let histogram =
                decode(&s.histogram).map_err(|e| format!("step {}: histogram: {e}", s.step))?;
            stats.steps.push(StepStats {
                step: s.step,
                device: s.device,
                what: s.what,
                histogram,
            });
        }
        stats.steps.sort_by_key(|s| s.step);
        for f in report.failures {
            stats
                .failures
                .insert((f.step, without_numbers(&f.reason)), f);
        }
        Ok(stats)
    }
}

/// The JSON report (docs/load.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub flow: String,
    pub iterations: u64,
    pub passed: u64,
    pub failed: u64,
    pub aborted: u64,
    pub duration_secs: f64,
    /// How long iterations were being started (`actualRate` is over it).
    #[serde(default)]
    pub starting_secs: f64,
    pub target_rate: f64,
    pub actual_rate: f64,
    pub failures: Vec<Failure>,
    /// The calls' voice, where the flow's calls had media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaReport>,
    pub steps: Vec<StepReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub step: usize,
    pub device: String,
    pub what: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The latencies themselves (µs): HdrHistogram V2, base64.
    pub histogram: String,
}

pub(super) fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialize to memory");
    BASE64.encode(bytes)
}

pub(super) fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64.decode(text).map_err(|e| e.to_string())?;
    Deserializer::new()
        .deserialize(&mut Cursor::new(bytes))
        .map_err(|e| format!("{e:?}"))
}

/// `text` with every run of digits as `#`: one failure's key, whatever
/// times and counts it names.
fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c.is_ascii_digit() {
            true if out.ends_with('#') => {}
            true => out.push('#'),
            false => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::StepOutcome;

    fn outcome(latencies_ms: &[u64], fail_at: Option<(usize, &str)>) -> Outcome {
        let mut steps: Vec<StepOutcome> = (latencies_ms.iter().enumerate())
            .map(|(i, &ms)| StepOutcome {
                step: i + 1,
                device: "bob".into(),
                passed: true,
                what: format!("step {}", i + 1),
                ms,
                at_ms: 0,
                elapsed: Duration::from_millis(ms),
            })
            .collect();
        if let Some((step, why)) = fail_at {
            steps.truncate(step - 1);
            steps.push(StepOutcome {
                step,
                device: "alice".into(),
                passed: false,
                what: why.into(),
                ms: 0,
                at_ms: 0,
                elapsed: Duration::ZERO,
            });
        }
        Outcome {
            name: "f".into(),
            file: "f.toml".into(),
            passed: fail_at.is_none(),
            steps,
            failure: fail_at.map(|(_, w)| w.to_owned()),
            duration: Duration::ZERO,
            timeline: None,
            media: Vec::new(),
        }
    }

    #[test]
    fn failures_group_by_step_and_reason_whatever_their_numbers_and_names() {
        let mut stats = Stats::new("f", 10.0);
        for n in 0..10 {
            let names = Names::iteration(["alice", "bob"], "", n);
            let fail = (n % 5 == 0).then(|| {
                (
                    2,
                    format!(
                        "expected ON_CALL_RECEIVED {{\"sponsor\":\"bob-{n}\"}} within {} ms",
                        1000 + n
                    ),
                )
            });
            let o = outcome(&[3, 5], fail.as_ref().map(|(s, w)| (*s, w.as_str())));
            stats.add(n, &o, &names);
        }
        assert_eq!((stats.iterations, stats.passed, stats.failed), (10, 8, 2));
        let failures: Vec<_> = stats.failures().collect();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].count, 2);
        assert_eq!(failures[0].iterations, [0, 5]);
        assert_eq!(
            failures[0].reason,
            "expected ON_CALL_RECEIVED {\"sponsor\":\"bob\"} within 1000 ms"
        );
        assert_eq!(stats.failed_percent(), 20.0);
    }

    /// Reports of two different flows, or of two versions of one file
    /// whose steps differ, do not merge: their step numbers name other
    /// steps, and the percentiles would mix them.
    #[test]
    fn reports_of_other_flows_or_steps_do_not_merge() {
        let names = Names::default();
        let run = |flow: &str, second: &str| {
            let mut o = outcome(&[5, 6], None);
            o.steps[1].what = second.into();
            let mut stats = Stats::new(flow, 5.0);
            stats.add(0, &o, &names);
            stats
        };
        let mut merged = Stats::default();
        merged.merge(run("f", "expect X")).unwrap();
        merged.merge(run("f", "expect X")).unwrap();
        let other = merged.merge(run("g", "expect X")).unwrap_err();
        assert!(other.contains(r#"flow "g""#), "{other}");
        let edited = merged.merge(run("f", "expect Y")).unwrap_err();
        assert!(edited.contains("step 2"), "{edited}");
        assert_eq!(merged.iterations, 2);
    }

    #[test]
    fn merged_reports_give_the_percentiles_of_one_run_over_both() {
        let (mut a, mut b, mut both) = (
            Stats::new("f", 5.0),
            Stats::new("f", 5.0),
            Stats::new("f", 10.0),
        );
        for n in 0..200u64 {
            let o = outcome(&[n % 37 + 1, (n * 7919) % 500 + 1], None);
            let names = Names::default();
            if n % 3 == 0 {
                a.add(n, &o, &names)
            } else {
                b.add(n, &o, &names)
            }
            both.add(n, &o, &names);
        }
        // Through JSON, as two processes' report files.
        let read = |s: &Stats| {
            let text = serde_json::to_string(&s.to_json()).unwrap();
            Stats::from_json(serde_json::from_str(&text).unwrap()).unwrap()
        };
        let mut merged = read(&a);
        merged.merge(read(&b)).unwrap();
        let (merged, both) = (merged.to_json(), both.to_json());
        assert_eq!(merged.iterations, 200);
        assert_eq!(merged.target_rate, 10.0);
        for (m, o) in merged.steps.iter().zip(&both.steps) {
            assert_eq!(
                (m.count, m.p50_ms, m.p90_ms, m.p99_ms, m.max_ms),
                (o.count, o.p50_ms, o.p90_ms, o.p99_ms, o.max_ms)
            );
        }
        // To HDR's 3 significant digits.
        let longest = (0..200u64).map(|n| (n * 7919) % 500 + 1).max().unwrap() as f64;
        let max = both.steps[1].max_ms;
        assert!(
            (max - longest).abs() <= longest / 1000.0,
            "{max} for {longest}"
        );
    }

    /// The actual rate is over the time iterations were being started, not
    /// the wait for the last ones to end; a report that does not say how
    /// long that was (from before it was kept) is read over its duration.
    #[test]
    fn the_actual_rate_leaves_out_the_wait_for_the_last_iterations() {
        let mut stats = Stats::new("f", 20.0);
        let names = Names::default();
        for n in 0..600 {
            stats.add(n, &outcome(&[1], None), &names);
        }
        stats.duration = Duration::from_millis(32_400);
        stats.starting = Duration::from_secs(30);
        let report = stats.to_json();
        assert_eq!((report.actual_rate, report.starting_secs), (20.0, 30.0));
        let mut old = serde_json::to_value(&report).unwrap();
        old.as_object_mut().unwrap().remove("startingSecs");
        let old = Stats::from_json(serde_json::from_value(old).unwrap()).unwrap();
        assert_eq!(old.to_json().actual_rate, 18.52);
    }
}
