//! `termphone flow`: every example flow passes; a wrong one fails and says
//! which step, on which device, expected what, and what arrived instead.

use std::process::Stdio;

use crate::common::headless::{sigterm_and_read_the_rest, termphone};
use crate::common::net::{relay_at, test_config};

/// A JUnit report, read as a CI system reads it.
fn read_junit(xml: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"))
}

fn testsuite<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> roxmltree::Node<'a, 'i> {
    (doc.descendants())
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite")
}

/// `termphone flow DIR --junit` over every example, as a CI job runs it:
/// each flow passes and the JUnit file reads as JUnit. Four directories
/// at once (each flow starts its own relay and devices).
#[tokio::test]
async fn every_example_flow_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir("examples/flows")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 31, "{files:?}");
    let shares = 4;
    let runs = (0..shares).map(|k| {
        let share = dir.path().join(format!("share{k}"));
        std::fs::create_dir(&share).unwrap();
        // Recordings the flows speak or compare with go along.
        for wav in std::fs::read_dir("examples/flows").unwrap() {
            let wav = wav.unwrap().path();
            if wav.extension().is_some_and(|e| e == "wav") {
                std::fs::copy(&wav, share.join(wav.file_name().unwrap())).unwrap();
            }
        }
        let mine: Vec<_> = files.iter().skip(k).step_by(shares).collect();
        for file in &mine {
            std::fs::copy(file, share.join(file.file_name().unwrap())).unwrap();
        }
        let junit = dir.path().join(format!("share{k}.xml"));
        let mut cmd = termphone(dir.path());
        cmd.arg("flow")
            .arg(&share)
            .arg("--junit")
            .arg(&junit)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move { (mine.len(), junit, cmd.output().await.unwrap()) }
    });
    for (count, junit, out) in futures_util::future::join_all(runs).await {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("{count} flows: {count} passed, 0 failed")),
            "{stdout}"
        );
        let xml = std::fs::read_to_string(&junit).unwrap();
        let doc = read_junit(&xml);
        let suite = testsuite(&doc);
        assert_eq!(
            (suite.attribute("tests"), suite.attribute("failures")),
            (Some(count.to_string().as_str()), Some("0")),
            "{xml}"
        );
    }
}

#[tokio::test]
async fn a_wrong_flow_names_the_step_the_device_and_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.txt");
    let out = termphone(dir.path())
        .args(["flow", "tests/fixtures/wrong_flow.toml", "--report"])
        .arg(&report)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failure = stdout
        .lines()
        .find(|l| l.contains('✗'))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(failure.contains("  5 [a2]"), "step and device: {failure}");
    assert!(
        failure.contains(r#"expected ON_CALL_CANCELED {"reason":"declined_elsewhere"}"#),
        "{failure}"
    );
    assert!(
        failure.contains(r#"arrived: ON_CALL_CANCELED reason="answered_elsewhere""#),
        "{failure}"
    );
    let report = std::fs::read_to_string(report).unwrap();
    assert!(
        report.contains("result: FAIL") && report.contains("a2 (alice)"),
        "{report}"
    );
    assert!(
        report.contains(r#"ON_CALL_CANCELED reason="answered_elsewhere" userID="#),
        "a value cut short:\n{report}"
    );
}

#[tokio::test]
async fn the_html_report_is_the_whole_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let out = termphone(dir.path())
        .args(["flow", "tests/fixtures/wrong_flow.toml", "--report"])
        .arg(&report)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let html = std::fs::read_to_string(report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    let at = |needle: &str| {
        html.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{html}"))
    };
    // Every field of the event the failed step saw, values whole.
    at("<code>reason = &quot;answered_elsewhere&quot;</code>");
    at("<code>callRole = &quot;called&quot;</code>");
    // The accept comes before the call it connected; the devices' goodbye,
    // which no step waited for, is there too.
    assert!(at("&gt; accept") < at("<td>ON_CALL_BEGIN</td>"), "{html}");
    assert!(at("&gt; quit") < html.rfind("LOGOUT").unwrap(), "{html}");
}

#[tokio::test]
async fn a_misspelt_command_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[[device]]\nname = \"a\"\nuser = \"alice\"\n[[step]]\ndevice = \"a\"\nsend = { cmd = \"decline\" }\n",
    )
    .unwrap();
    let out = termphone(dir.path())
        .arg("flow")
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("bad.toml:5: step 1: send: unknown command \"decline\"; commands are login,"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_malformed_flow_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[[device]]\nname = \"a\"\nuser = \"alice\"\n[[step]]\ndevice = \"b\"\nexpect = \"SDK_READY\"\n").unwrap();
    let out = termphone(dir.path())
        .arg("flow")
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("step 1: no device named \"b\""));
}

/// A directory of flows: a summary line each, the totals, exit status 1
/// when one failed, and JUnit XML and JSON reports that a reader takes.
#[tokio::test]
async fn a_directory_of_flows_runs_each_and_reports_in_junit_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    for file in ["hangup_duration.toml", "busy.toml"] {
        std::fs::copy(format!("examples/flows/{file}"), flows.join(file)).unwrap();
    }
    // The same call held to a bound it cannot meet: a comparison fails,
    // naming the field and what arrived.
    let held = std::fs::read_to_string("examples/flows/hangup_duration.toml")
        .unwrap()
        .replace(
            "fields = { totalTime = 0 }",
            "compare = { totalTime = \">= 100\" }\nwithin_ms = 1000",
        )
        .replace("either party hangs up", "a call held to 100 s");
    std::fs::write(flows.join("z_held.toml"), held).unwrap();
    let junit = dir.path().join("report.xml");
    let json = dir.path().join("report.json");
    let out = termphone(dir.path())
        .arg("flow")
        .arg(&flows)
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("3 flows: 2 passed, 1 failed"), "{stdout}");
    assert!(
        stdout
            .contains("expected CALLING_END totalTime >= 100 within 1000 ms; arrived: CALLING_END"),
        "{stdout}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = read_junit(&xml);
    let suite = testsuite(&doc);
    assert_eq!(
        (suite.attribute("tests"), suite.attribute("failures")),
        (Some("3"), Some("1"))
    );
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 3);
    let failed: Vec<_> = (cases.iter())
        .filter_map(|c| c.children().find(|n| n.has_tag_name("failure")))
        .collect();
    assert_eq!(failed.len(), 1);
    let message = failed[0].attribute("message").unwrap();
    assert!(
        message.starts_with("step 7 [alice]: expected CALLING_END"),
        "{message}"
    );
    assert!(failed[0].text().unwrap().contains("✗   7 [alice]"), "{xml}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (report["passed"].clone(), report["failed"].clone()),
        (2.into(), 1.into())
    );
    let steps = report["flows"][0]["steps"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .all(|s| s["passed"] == true && s["ms"].is_u64())
    );
}

/// Input that cannot be used is exit status 2, before any device starts.
#[tokio::test]
async fn an_unusable_flow_or_comparison_is_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string("examples/flows/hangup_duration.toml")
        .unwrap()
        .replace(
            "fields = { totalTime = 0 }",
            "compare = { totalTime = \"about 3\" }",
        );
    std::fs::write(&bad, text).unwrap();
    let out = termphone(dir.path())
        .arg("flow")
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "compare: totalTime = \"about 3\" is not OP NUMBER; OP is one of <, <=, >, >=, =="
        ),
        "{stderr}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = termphone(dir.path())
        .arg("flow")
        .arg(&empty)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A report it could not write at the end stops it before it starts,
    // and so does one for a load run.
    let good = "examples/flows/hangup_duration.toml";
    let runs: [(&[&str], &str); 3] = [
        (&["flow", good], "--report"),
        (&["flow", good], "--junit"),
        (&["load", good, "--iterations", "1"], "--report"),
    ];
    for (args, flag) in runs {
        let out = termphone(dir.path())
            .args(args)
            .arg(flag)
            .arg(dir.path().join("no/such/dir/r.txt"))
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {flag}: {stderr}");
        assert!(stderr.contains("no directory"), "{stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).is_empty(),
            "nothing ran"
        );
    }
}

/// A relay that does not answer: the failure says so, not only that a
/// device did not log in.
#[tokio::test]
async fn a_relay_that_does_not_answer_is_named_as_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = termphone(dir.path())
        .args([
            "flow",
            "examples/flows/busy.toml",
            "--relay",
            "ws://127.0.0.1:9",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("did not log in within 10 s: cannot reach the relay"),
        "{stdout}"
    );
}

/// A call where alice speaks `alice_tone`, bob `bob_tone`; `middle` goes
/// after bob answers, then the audio steps.
fn tone_flow(relay: &str, alice_tone: u32, middle: &str, checks: &str) -> String {
    format!(
        r#"name = "tones"
{relay}
[[device]]
name = "alice"
user = "alice"
audio_in = "tone:{alice_tone}"

[[device]]
name = "bob"
user = "bob"
audio_in = "tone:880"

[[step]]
device = "alice"
send = {{ cmd = "call", userID = "bob" }}

[[step]]
device = "bob"
expect = "ON_CALL_RECEIVED"

[[step]]
device = "bob"
send = {{ cmd = "accept" }}

[[step]]
device = "alice"
expect = "ON_CALL_BEGIN"
{middle}
{checks}
"#
    )
}

/// A step: `device` plays a second of `hz` within 3 s.
fn hears(device: &str, hz: u32) -> String {
    format!(
        "\n[[step]]\ndevice = \"{device}\"\nexpect_audio = {{ tone_hz = {hz}, min_ms = 1000 }}\nwithin_ms = 3000\n"
    )
}

const MUTED: &str = r#"
[[step]]
device = "alice"
send = { cmd = "closeMicrophone" }
"#;

async fn run_flow(dir: &std::path::Path, name: &str, text: String) -> (Option<i32>, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = termphone(dir)
        .arg("flow")
        .arg(&file)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn failed_step(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.contains('✗'))
        .unwrap_or_else(|| panic!("no failed step:\n{stdout}"))
}

/// What a device played out decides: a muted party is not heard, the
/// wrong tone is named, and a cut direction fails on that direction only.
#[tokio::test]
async fn audio_steps_judge_what_each_device_played() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bob_hears_440, alice_hears_880) = (hears("bob", 440), hears("alice", 880));
    let both = format!("{bob_hears_440}{alice_hears_880}");
    let (unmuted, muted, wrong_tone, cut) = tokio::join!(
        run_flow(d, "unmuted.toml", tone_flow("", 440, "", &both)),
        run_flow(d, "muted.toml", tone_flow("", 440, MUTED, &bob_hears_440)),
        run_flow(d, "wrong.toml", tone_flow("", 660, "", &bob_hears_440)),
        run_flow(
            d,
            "cut.toml",
            tone_flow(
                "[relay]\nmedia_drop_from = [\"alice\"]\n",
                440,
                "",
                &format!("{alice_hears_880}{bob_hears_440}")
            )
        ),
    );

    assert_eq!(unmuted.0, Some(0), "{}", unmuted.1);
    assert!(
        unmuted.1.contains("bob heard 440 Hz for 1000 ms"),
        "{}",
        unmuted.1
    );
    assert!(
        unmuted.1.contains("alice heard 880 Hz for 1000 ms"),
        "{}",
        unmuted.1
    );

    assert_eq!(muted.0, Some(1), "{}", muted.1);
    // A frame or two of tone may be on the way before the microphone closes.
    let failure = failed_step(&muted.1);
    assert!(
        failure.contains("bob heard no 440 Hz tone in 3000 ms (loudest: ")
            || failure.contains("bob heard 440 Hz for only "),
        "{failure}"
    );
    assert!(
        failure.contains(" of 1000 in 3000 ms") || failure.contains("tone in"),
        "{failure}"
    );

    assert_eq!(wrong_tone.0, Some(1), "{}", wrong_tone.1);
    let failure = failed_step(&wrong_tone.1);
    assert!(
        failure.contains("bob heard no 440 Hz tone in 3000 ms (loudest: 66"),
        "{failure}"
    );
    assert!(failure.ends_with(" Hz at -6 dBFS)"), "{failure}");

    assert_eq!(cut.0, Some(1), "{}", cut.1);
    assert!(
        cut.1.contains("✓   5 [alice] alice heard 880 Hz"),
        "{}",
        cut.1
    );
    assert!(
        failed_step(&cut.1).starts_with("  ✗   6 [bob] bob heard no 440 Hz tone"),
        "{}",
        cut.1
    );
}

/// A flow whose `[relay]` settings cannot reach the relay it is run
/// against (`--relay`) says so, for `flow` and for `load`, and runs all
/// the same; a flow without them says nothing.
#[tokio::test]
async fn relay_settings_that_a_given_relay_would_not_have_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("relay.db")).await;
    let url = relay.url();
    let lossy = dir.path().join("lossy.toml");
    let plain = dir.path().join("plain.toml");
    let flow = |relay: &str| {
        format!(
            "name = \"a call\"\n{relay}\n[[device]]\nname = \"alice\"\nuser = \"alice\"\n\n\
             [[device]]\nname = \"bob\"\nuser = \"bob\"\n\n\
             [[step]]\ndevice = \"alice\"\nsend = {{ cmd = \"call\", userID = \"bob\" }}\n\n\
             [[step]]\ndevice = \"bob\"\nexpect = \"ON_CALL_RECEIVED\"\n"
        )
    };
    std::fs::write(&lossy, flow("[relay]\nmedia_loss = 5\n")).unwrap();
    std::fs::write(&plain, flow("")).unwrap();
    let warning = format!(
        "termphone: flow \"a call\": its [relay] settings are for the bundled relay, and do not \
         reach {url}; run without --relay to have them"
    );
    for (file, warned) in [(&lossy, true), (&plain, false)] {
        for command in [
            &["flow"][..],
            &["load", "--iterations", "2", "--rate", "10"],
        ] {
            let out = termphone(dir.path())
                .args(&command[..1])
                .arg(file)
                .args(&command[1..])
                .args(["--relay", &url])
                .output()
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{command:?} {file:?}: {stderr}");
            assert_eq!(
                stderr.contains(&warning),
                warned,
                "{command:?} {file:?}: {stderr}"
            );
        }
    }
    relay.shutdown().await;
}

/// A run stopped by a signal (Ctrl-C, a CI job's timeout): the step under
/// way fails with the signal's name, the flows after it count as not run,
/// the reports are written with every flow in them, and the process exits
/// 1 rather than being killed.
#[tokio::test]
async fn a_run_stopped_by_a_signal_writes_its_reports() {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let flow = |name: &str| {
        format!(
            "name = \"{name}\"\n\n[[device]]\nname = \"alice\"\nuser = \"alice\"\n\n\
             [[step]]\ndevice = \"alice\"\nexpect_none = \"ON_CALL_RECEIVED\"\nfor_ms = 60000\n"
        )
    };
    std::fs::write(flows.join("a.toml"), flow("a long wait")).unwrap();
    std::fs::write(flows.join("b.toml"), flow("after it")).unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let mut child = termphone(dir.path())
        .arg("flow")
        .arg(&flows)
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped once the flow is under way, as its first line says.
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("the flow starts")
        .unwrap();
    assert_eq!(first.as_deref(), Some("flow: a long wait"));
    // Its device logged in (within 10 s) and the step waits.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let out = sigterm_and_read_the_rest(&child, &mut lines).await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), None, "{status}: {out}");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("interrupted by SIGTERM: the flow stopped here"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let failures: Vec<&str> = report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["failure"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(failures.len(), 2, "{report}");
    assert!(failures[0].contains("interrupted by SIGTERM"), "{report}");
    assert_eq!(failures[1], "not run: interrupted by SIGTERM", "{report}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("after it"), "{xml}");
}
