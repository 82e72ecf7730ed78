//! `termphone load`: iterations counted as run, failures grouped with their
//! step and reason, reports of two processes merged, exit status by
//! `--max-failures`.

use std::path::Path;

use serde_json::{Value, json};
use termphone::config::{AppConfig, RelayConfig};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::common::headless::{refused_with_status_2, sigterm_and_read_the_rest, termphone};
use crate::common::net::{relay_at, test_config};

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `termphone load FLOW ARGS --report REPORT`, run to its end, which must
/// be a success: what it printed, and the report.
async fn load_passing(home: &Path, flow: &str, args: &[&str], report: &Path) -> (String, Value) {
    let out = termphone(home)
        .args(["load", flow])
        .args(args)
        .arg("--report")
        .arg(report)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    (stdout, read(report))
}

#[tokio::test]
async fn a_step_reads_as_the_flow_wrote_it_and_one_iteration_has_no_rate() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let flow = "examples/flows/call_waiting.toml";
    let (stdout, r) = load_passing(
        dir.path(),
        flow,
        &["--rate", "5", "--iterations", "1"],
        &report,
    )
    .await;
    assert!(stdout.contains(", 1 iteration\n"), "{stdout}");
    assert!(
        stdout.contains(": 1 iteration in ") && !stdout.contains("/s):"),
        "{stdout}"
    );
    let steps = r["steps"].as_array().unwrap().clone();
    let accept = steps.iter().find(|s| s["step"] == 10).unwrap();
    // The saved call's name, not the id one iteration happened to get.
    assert_eq!(
        accept["what"], r#"send {"callId":"$second","cmd":"accept"}"#,
        "{accept}"
    );
}

/// Calls with voice report what their devices heard: one stream per
/// device and call, their MOS, loss and time to first audio; a flow
/// without media reports none.
#[tokio::test]
async fn calls_with_voice_report_their_media_figures() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let flow = "examples/flows/two_way_audio.toml";
    let (stdout, r) = load_passing(
        dir.path(),
        flow,
        &["--rate", "5", "--iterations", "2"],
        &report,
    )
    .await;
    let media = &r["media"];
    // Two devices a call, two calls; both sides heard the other's tone.
    assert_eq!(
        (&media["streams"], &media["silent"]),
        (&json!(4), &json!(0)),
        "{r}"
    );
    assert!(media["mos"]["min"].as_f64().unwrap() > 3.5, "{media}");
    assert!(
        media["lossPercent"]["max"].as_f64().unwrap() < 5.0,
        "{media}"
    );
    assert!(
        media["timeToFirstAudioMs"]["p50"].as_f64().unwrap() > 0.0,
        "{media}"
    );
    assert!(
        stdout.contains("  media: 4 streams (0 silent): MOS p50 "),
        "{stdout}"
    );
    let busy = "examples/flows/busy.toml";
    let (_, r) = load_passing(dir.path(), busy, &["--iterations", "1"], &report).await;
    assert!(r.get("media").is_none());
}

#[tokio::test]
async fn a_short_load_counts_every_iteration_and_times_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (report, csv) = (dir.path().join("r.json"), dir.path().join("r.csv"));
    let out = termphone(dir.path())
        .args(["load", "examples/flows/answered_elsewhere.toml"])
        .args(["--rate", "20", "--iterations", "24", "--report"])
        .arg(&report)
        .arg("--csv")
        .arg(&csv)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("24 iterations in ") && stdout.contains(": 24 passed, 0 failed"),
        "{stdout}"
    );
    let r = read(&report);
    assert_eq!(
        (
            r["iterations"].as_u64(),
            r["passed"].as_u64(),
            r["failed"].as_u64()
        ),
        (Some(24), Some(24), Some(0))
    );
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10, "every step of the flow");
    for s in steps {
        assert_eq!(s["count"], 24, "{s}");
        let q: Vec<f64> = ["p50Ms", "p90Ms", "p99Ms", "maxMs"]
            .iter()
            .map(|k| s[k].as_f64().unwrap())
            .collect();
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{s}");
        // Steps read in the flow's own names, whatever an iteration's were.
        assert!(!s["what"].as_str().unwrap().contains("alice-"), "{s}");
    }
    let trace = std::fs::read_to_string(&csv).unwrap();
    let last = trace.lines().last().unwrap();
    assert!(
        trace.starts_with("elapsedSecs,started,inFlight,passed,failed"),
        "{trace}"
    );
    assert_eq!(last.split(',').nth(1), Some("24"), "{trace}");
}

/// Iteration 3's caller is `bob-3`: a step that must not see a call from
/// `bob-3` fails there, and only there.
const ONE_IN_TEN: &str = r#"name = "fails in iteration 3"

[[device]]
name = "bob"
user = "bob"

[[device]]
name = "alice"
user = "alice"

[[step]]
device = "bob"
send = { cmd = "call", userID = "alice" }

[[step]]
device = "alice"
expect_none = "ON_CALL_RECEIVED"
fields = { sponsor = "bob-3" }
for_ms = 300

[[step]]
device = "bob"
send = { cmd = "hangup" }
"#;

#[tokio::test]
async fn one_failing_iteration_in_ten_is_ten_percent_with_its_step_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("one_in_ten.toml");
    std::fs::write(&flow, ONE_IN_TEN).unwrap();
    let run = |max_failures: &'static str, report: &'static str| {
        let mut cmd = termphone(dir.path());
        cmd.arg("load")
            .arg(&flow)
            .args([
                "--rate",
                "20",
                "--iterations",
                "10",
                "--max-failures",
                max_failures,
            ])
            .arg("--report")
            .arg(dir.path().join(report));
        cmd
    };
    let (strict, lenient) = tokio::join!(
        run("5", "strict.json").output(),
        run("10", "lenient.json").output()
    );
    let (strict, lenient) = (strict.unwrap(), lenient.unwrap());
    assert_eq!(
        strict.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&strict.stdout)
    );
    assert_eq!(
        lenient.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&lenient.stdout)
    );
    let stdout = String::from_utf8_lossy(&strict.stdout);
    assert!(stdout.contains("9 passed, 1 failed (10.0%)"), "{stdout}");
    let r = read(&dir.path().join("strict.json"));
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{r}");
    let f = &failures[0];
    assert_eq!(
        (
            f["step"].as_u64(),
            f["device"].as_str(),
            f["count"].as_u64()
        ),
        (Some(2), Some("alice"), Some(1))
    );
    assert_eq!(f["iterations"], serde_json::json!([3]));
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .starts_with("expected no ON_CALL_RECEIVED"),
        "{f}"
    );
}

/// Two load processes on one relay, told apart by `--prefix`; their
/// reports merge into the totals of both.
#[tokio::test]
async fn two_processes_share_a_relay_and_their_reports_merge() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("relay.db")).await;
    let run = |prefix: &'static str| {
        let mut cmd = termphone(dir.path());
        cmd.args([
            "load",
            "examples/flows/busy.toml",
            "--rate",
            "15",
            "--iterations",
            "12",
        ])
        .args(["--relay", &relay.url(), "--prefix", prefix, "--report"])
        .arg(dir.path().join(format!("{}.json", &prefix[..1])));
        cmd
    };
    let (a, b) = tokio::join!(run("a-").output(), run("b-").output());
    for out in [a.unwrap(), b.unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let merged = dir.path().join("merged.json");
    let out = termphone(dir.path())
        .args(["load", "--merge"])
        .arg(dir.path().join("a.json"))
        .arg(dir.path().join("b.json"))
        .arg("--report")
        .arg(&merged)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b, m) = (
        read(&dir.path().join("a.json")),
        read(&dir.path().join("b.json")),
        read(&merged),
    );
    assert_eq!(m["iterations"], 24);
    assert_eq!(m["passed"], 24);
    assert_eq!(m["targetRate"], 30.0);
    for (i, step) in m["steps"].as_array().unwrap().iter().enumerate() {
        assert_eq!(step["count"], 24, "{step}");
        let most = a["steps"][i]["maxMs"]
            .as_f64()
            .unwrap()
            .max(b["steps"][i]["maxMs"].as_f64().unwrap());
        assert_eq!(step["maxMs"].as_f64().unwrap(), most, "{step}");
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn unusable_input_is_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = termphone(dir.path())
        .args(["load", "examples/flows/busy.toml"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no --iterations nor --duration");
    let not_a_report = dir.path().join("x.json");
    std::fs::write(&not_a_report, "{}").unwrap();
    let out = termphone(dir.path())
        .args(["load", "--merge"])
        .arg(&not_a_report)
        .arg(&not_a_report)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a load report"));
    let out = termphone(dir.path())
        .args([
            "load",
            "examples/flows/busy.toml",
            "--iterations",
            "1",
            "--prefix",
            "a.",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"makes names like "a.bob-999999""#),
        "{stderr}"
    );
    let out = termphone(dir.path())
        .args(["load", "examples/flows/busy.toml", "--iterations", "1"])
        .args(["--max-concurrent", "0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--max-concurrent 0");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
}

/// A load run with no end asks for one, naming both ways to give it.
#[tokio::test]
async fn a_load_without_iterations_or_duration_asks_for_either() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = termphone(dir.path());
    cmd.args(["load", "examples/flows/answered_elsewhere.toml"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("--iterations N or --duration SECS"),
        "{stderr}"
    );
}

/// A relay of one's own hosts its own app: `flow` and `load` against it
/// log their devices in to the config's `[client] app` with its secret
/// (docs/load.md, *Several machines, one relay*).
#[tokio::test]
async fn flows_and_loads_on_a_relay_of_ones_own_use_the_configs_app() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-secret-of-our-own-0123";
    let config = RelayConfig {
        apps: vec![AppConfig {
            id: 7,
            secret: secret.into(),
            ..AppConfig::default()
        }],
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("relay.db")).await;
    let client = dir.path().join("client.toml");
    std::fs::write(
        &client,
        format!("[client]\napp = 7\nsecret = \"{secret}\"\n"),
    )
    .unwrap();
    let flow = ["flow", "examples/flows/busy.toml", "--relay", &relay.url()];
    let load = [
        "load",
        "examples/flows/busy.toml",
        "--rate",
        "10",
        "--iterations",
        "3",
        "--relay",
        &relay.url(),
    ];
    for args in [&flow[..], &load] {
        let out = termphone(dir.path())
            .args(args)
            .arg("--config")
            .arg(&client)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {stdout}");
        // Without it, the development app, which this relay does not host.
        let out = termphone(dir.path()).args(args).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}");
        assert!(stdout.contains("hosts no app"), "{args:?}: {stdout}");
    }
}

/// A run stopped with SIGTERM (a CI job's timeout, `kill`) winds down as
/// one stopped with Ctrl-C: its report written, with what ran, and no
/// process killed by the signal.
#[tokio::test]
async fn sigterm_stops_a_run_with_its_report_written() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let flow = Path::new("examples/flows/answered_elsewhere.toml");
    let (mut child, mut lines) = a_minute_of_load(dir.path(), flow, "5", &report);
    // Stopped once an iteration has passed, as its progress line says.
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("a progress line")
            .unwrap()
            .expect("the run goes on");
        if line.contains(" passed") && !line.contains(" 0 passed") {
            break;
        }
    }
    sigterm_and_read_the_rest(&child, &mut lines).await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), None, "{status}");
    let r = read(&report);
    assert!(r["passed"].as_u64().unwrap() > 0, "{r}");
}

/// `termphone load FLOW` at `rate` for a minute with its report at
/// `report`, and its stdout line by line.
fn a_minute_of_load(
    home: &Path,
    flow: &Path,
    rate: &str,
    report: &Path,
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = termphone(home)
        .arg("load")
        .arg(flow)
        .args(["--rate", rate, "--duration", "60", "--report"])
        .arg(report)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// A stop ends the steps under way at once, audio steps too: iterations in
/// flight count as aborted, none of them as passed after the stop.
#[tokio::test]
async fn a_stop_ends_the_audio_steps_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("quiet.toml");
    std::fs::write(
        &flow,
        "name = \"quiet\"\n\n[[device]]\nname = \"a\"\nuser = \"alice\"\n\n\
         [[step]]\ndevice = \"a\"\nexpect_silence = { for_ms = 4000 }\n",
    )
    .unwrap();
    let report = dir.path().join("r.json");
    let (mut child, mut lines) = a_minute_of_load(dir.path(), &flow, "2", &report);
    // Stopped while the first iterations listen (each for 4 s): none has
    // ended yet, and each would end within the 5 s the wind-down allows.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let out = sigterm_and_read_the_rest(&child, &mut lines).await;
    child.wait().await.unwrap();
    let r = read(&report);
    assert_eq!(r["passed"], 0, "{r}\n{out}");
    assert!(r["aborted"].as_u64().unwrap() > 0, "{r}\n{out}");
}

/// Asked to stop again while its devices log out (here they cannot: the
/// network to the relay stalls), load gives them up at once and still
/// writes its report: a second Ctrl-C is not held up by a wind-down.
#[tokio::test]
async fn a_second_stop_gives_up_what_is_winding_down() {
    let dir = tempfile::tempdir().unwrap();
    let relay = crate::common::net::relay_at(
        &crate::common::net::test_config(),
        &dir.path().join("relay.db"),
    )
    .await;
    let proxy = crate::common::net::Proxy::start(relay.local_addr()).await;
    let report = dir.path().join("r.json");
    let mut child = termphone(dir.path())
        .args([
            "load",
            "examples/flows/busy.toml",
            "--rate",
            "5",
            "--duration",
            "60",
        ])
        .args(["--relay", &proxy.url(), "--report"])
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Iterations run (the first progress line says so), then the network
    // stalls under them.
    let mut out = String::new();
    while !out.contains(" started (") {
        let line = lines.next_line().await.unwrap().expect("a line");
        out.push_str(&line);
        out.push('\n');
    }
    proxy.stall(true);
    let pid = child.id().unwrap() as libc::pid_t;
    let signal = |n| {
        // SAFETY: kill(2) on the pid of a child this test spawned and holds.
        assert_eq!(unsafe { libc::kill(pid, n) }, 0);
    };
    signal(libc::SIGTERM);
    while !out.contains("stopping:") {
        let line = lines.next_line().await.unwrap().expect("a line");
        out.push_str(&line);
        out.push('\n');
    }
    let asked = std::time::Instant::now();
    signal(libc::SIGTERM);
    while let Ok(Some(line)) = lines.next_line().await {
        out.push_str(&line);
        out.push('\n');
    }
    child.wait().await.unwrap();
    // Well inside the 5 s the wind-down would have waited.
    assert!(asked.elapsed() < std::time::Duration::from_secs(3), "{out}");
    assert!(out.contains("SIGTERM again: "), "{out}");
    assert!(out.contains("given up without logging out"), "{out}");
    let r = read(&report);
    assert!(r["aborted"].as_u64().unwrap() > 0, "{r}\n{out}");
    relay.shutdown().await;
}

/// Input that would run nothing, or count twice, is refused with what to
/// do: a directory for a flow, no iterations, no time, a report merged
/// twice; a report that is missing is said to be missing.
#[tokio::test]
async fn input_that_would_mislead_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["examples/flows", "--iterations", "1"][..],
            "a directory; load repeats one flow",
        ),
        (
            &["examples/flows/busy.toml", "--iterations", "0"],
            "\"0\" is not a count of at least 1",
        ),
        (
            &["examples/flows/busy.toml", "--duration", "0"],
            "\"0\" is not a positive number",
        ),
    ] {
        let mut cmd = termphone(dir.path());
        cmd.arg("load").args(args);
        let stderr = refused_with_status_2(cmd).await;
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let report = dir.path().join("r.json");
    let busy = "examples/flows/busy.toml";
    load_passing(dir.path(), busy, &["--iterations", "1"], &report).await;
    let missing = dir.path().join("missing.json");
    for (second, says) in [
        (
            &report,
            "named twice; merged twice, its iterations would count twice",
        ),
        (&missing, "No such file"),
    ] {
        let mut cmd = termphone(dir.path());
        cmd.args(["load", "--merge"]).arg(&report).arg(second);
        let stderr = refused_with_status_2(cmd).await;
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("not a load report"), "{stderr}");
    }
    // What would run a load means nothing to a merge: refused, not ignored.
    for extra in [&["--rate", "50"][..], &["--csv", "t.csv"]] {
        let mut cmd = termphone(dir.path());
        cmd.args(["load", "--merge"])
            .arg(&report)
            .arg(&missing)
            .args(extra);
        let stderr = refused_with_status_2(cmd).await;
        assert!(
            stderr.contains("cannot be used with"),
            "{extra:?}: {stderr}"
        );
    }
}
