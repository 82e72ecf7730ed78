//! `termphone flow`: every example flow passes; a wrong one fails and says
//! which step, on which device, expected what, and what arrived instead.

use std::process::Stdio;

use crate::common::headless::termphone;

#[tokio::test]
async fn every_example_flow_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir("examples/flows")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 17, "{files:?}");
    // A few at a time: each flow starts its own relay and devices.
    for chunk in files.chunks(4) {
        let runs = chunk.iter().map(|file| {
            let mut cmd = termphone(dir.path());
            cmd.arg("flow")
                .arg(file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            async move { (file.clone(), cmd.output().await.unwrap()) }
        });
        for (file, out) in futures_util::future::join_all(runs).await {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{} failed:\n{stdout}", file.display());
            assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");
        }
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
