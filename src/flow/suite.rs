//! `termphone flow DIR`: every flow of a directory, one after another (each
//! with its own bundled relay unless `--relay`), a summary line each and the
//! totals, and the reports a CI system reads: JUnit XML and JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use tokio::sync::watch;

use super::{Flow, FlowError, Outcome, html as escape, run};
use crate::signals::Signals;
use crate::tls::Fingerprint;

/// The flow files `path` names: itself, or the `.toml` files of a
/// directory in name order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, FlowError> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let read = |e: std::io::Error| FlowError::Read(path.display().to_string(), e.to_string());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read)? {
        let file = entry.map_err(read)?.path();
        if file.extension().is_some_and(|e| e == "toml") {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(FlowError::Read(
            path.display().to_string(),
            "holds no flow (*.toml)".into(),
        ));
    }
    Ok(files)
}

/// Runs every flow; one that cannot start its relay fails with why. A
/// stop signal (Ctrl-C, a CI job's timeout) fails the step under way with
/// its name, logs the devices out, and counts the flows after it as not
/// run: the reports are still written, with every flow in them.
pub async fn run_all(
    flows: &[Flow],
    relay: Option<String>,
    fingerprint: Option<Fingerprint>,
    tenant: &super::Tenant,
    report: Option<&Path>,
) -> Vec<Outcome> {
    let (stop, interrupt) = watch::channel(None);
    if let Ok(mut signals) = Signals::new() {
        tokio::spawn(async move {
            let _ = stop.send(Some(signals.recv().await));
        });
    }
    let mut outcomes = Vec::with_capacity(flows.len());
    for flow in flows {
        let failed = |failure: String| Outcome {
            name: flow.name.clone(),
            file: flow.file.clone(),
            passed: false,
            steps: Vec::new(),
            failure: Some(failure),
            duration: Duration::ZERO,
            timeline: None,
            media: Vec::new(),
        };
        if let Some(by) = *interrupt.borrow() {
            outcomes.push(failed(format!("not run: interrupted by {by}")));
            continue;
        }
        let outcome = match run(
            flow,
            relay.clone(),
            fingerprint,
            tenant,
            report,
            interrupt.clone(),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                println!("  ✗ {e}");
                println!("FAIL");
                failed(e.to_string())
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// One line per flow and the totals.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut out = String::from("\nsummary\n");
    for o in outcomes {
        let verdict = if o.passed { "PASS" } else { "FAIL" };
        let _ = write!(
            out,
            "  {verdict}  {}  ({}, {:.1} s)",
            o.name,
            o.file.display(),
            o.duration.as_secs_f64()
        );
        if let Some(why) = &o.failure {
            let _ = write!(out, "\n        {why}");
        }
        out.push('\n');
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let _ = writeln!(
        out,
        "{} flows: {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - failed
    );
    out
}

/// JUnit XML: one testsuite for the run, one testcase per flow; a failed
/// flow's failure names its step and carries the devices' timeline.
pub fn junit(outcomes: &[Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let time: f64 = outcomes.iter().map(|o| o.duration.as_secs_f64()).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"termphone flows\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{time:.3}\">",
        outcomes.len()
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"termphone flows\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">",
        outcomes.len()
    );
    for o in outcomes {
        let _ = write!(
            xml,
            "    <testcase classname=\"flows\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
            escape(&o.name),
            escape(&o.file.display().to_string()),
            o.duration.as_secs_f64()
        );
        match &o.failure {
            None => xml.push_str("/>\n"),
            Some(why) => {
                let _ = writeln!(
                    xml,
                    ">\n      <failure message=\"{}\" type=\"step\">{}</failure>\n    </testcase>",
                    escape(why),
                    escape(&failure_text(o))
                );
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// The steps as run, then the side-by-side timeline.
fn failure_text(o: &Outcome) -> String {
    let mut text = String::new();
    for s in &o.steps {
        let mark = if s.passed { '✓' } else { '✗' };
        let _ = writeln!(text, "{mark} {:>3} [{}] {}", s.step, s.device, s.what);
    }
    if let Some(timeline) = &o.timeline {
        text.push('\n');
        text.push_str(timeline);
    }
    text
}

/// Every flow and every step with its timing, for scripts.
pub fn json_report(outcomes: &[Outcome]) -> Value {
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let flows: Vec<Value> = (outcomes.iter())
        .map(|o| {
            let steps: Vec<Value> = (o.steps.iter())
                .map(|s| {
                    json!({
                        "step": s.step,
                        "device": s.device,
                        "passed": s.passed,
                        "what": s.what,
                        "ms": s.ms,
                        "atMs": s.at_ms,
                    })
                })
                .collect();
            json!({
                "name": o.name,
                "file": o.file.display().to_string(),
                "passed": o.passed,
                "durationMs": o.duration.as_millis() as u64,
                "failure": o.failure,
                "steps": steps,
            })
        })
        .collect();
    json!({
        "flows": flows,
        "total": outcomes.len(),
        "passed": outcomes.len() - failed,
        "failed": failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::StepOutcome;

    fn outcome(name: &str, failure: Option<&str>) -> Outcome {
        Outcome {
            name: name.into(),
            file: PathBuf::from(format!("flows/{name}.toml")),
            passed: failure.is_none(),
            steps: vec![StepOutcome {
                step: 1,
                device: "bob".into(),
                passed: failure.is_none(),
                what: failure.unwrap_or("got SDK_READY").into(),
                ms: 12,
                at_ms: 40,
                elapsed: Duration::from_millis(12),
            }],
            failure: failure.map(|f| format!("step 1 [bob]: {f}")),
            duration: Duration::from_millis(1_250),
            timeline: failure.map(|_| "a1 | b1\n<ERROR> & \"quoted\"\x07".into()),
            media: Vec::new(),
        }
    }

    #[test]
    fn junit_escapes_what_xml_cannot_hold_and_counts_failures() {
        let xml = junit(&[
            outcome("ok", None),
            outcome("bad <one>", Some("expected X")),
        ]);
        assert!(xml.contains(r#"tests="2" failures="1""#), "{xml}");
        assert!(xml.contains(r#"name="bad &lt;one&gt;""#), "{xml}");
        assert!(
            xml.contains("&lt;ERROR&gt; &amp; &quot;quoted&quot;\\u{7}"),
            "{xml}"
        );
        assert!(!xml.contains('\x07'));
        assert_eq!(xml.matches("<testcase").count(), 2);
        assert_eq!(xml.matches("<failure").count(), 1);
    }

    #[test]
    fn the_json_report_has_every_step_and_the_totals() {
        let v = json_report(&[outcome("ok", None), outcome("bad", Some("expected X"))]);
        assert_eq!(
            (v["total"].clone(), v["failed"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(v["flows"][1]["steps"][0]["what"], "expected X");
        assert_eq!(v["flows"][0]["durationMs"], 1_250);
    }
}
