//! The binary as users and scripts run it: headless over stdin/stdout, the
//! relay in the foreground, usersig, config errors.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use termphone::ids::{DEV_APP_ID, UserId};
use termphone::usersig::{self, DEV_SECRET};

use crate::common::headless::{Headless, refused_with_status_2, termphone};
use crate::common::net::{Device, RawPeer, WAIT, relay_at, test_config};

#[tokio::test]
async fn headless_speaks_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut h = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "d1"],
    );
    let status = h.expect("LOGIN_STATUS_CHANGED").await;
    assert_eq!(
        (status["status"].clone(), status["statusCode"].clone()),
        (json!("LOGINING"), json!(2))
    );
    let status = h.expect("LOGIN_STATUS_CHANGED").await;
    assert_eq!(status["status"], "LOGINED");
    h.expect("SDK_READY").await;

    h.send(json!({"cmd": "getUsers"})).await;
    let users = h.expect("USERS").await;
    assert_eq!(
        users["users"],
        json!([{"userID": "alice", "devices": [{"deviceID": "d1", "platform": "terminal"}], "inCall": false}])
    );

    h.send(json!({"cmd": "dance"})).await;
    let e = h.expect("ERROR").await;
    assert_eq!(
        (e["code"].clone(), e["cmd"].clone()),
        (json!(6001), json!("dance"))
    );
    assert!(
        e["message"].as_str().unwrap().contains("login, logout"),
        "{e}"
    );

    h.write(b"this is not json\n").await;
    assert_eq!(h.expect("ERROR").await["code"], 6002);
    // Bytes that are not UTF-8 are one bad line, not the end of the session.
    h.write(b"{\"cmd\":\"getUsers\",\"x\":\"\xff\"}\n").await;
    let e = h.expect("ERROR").await;
    assert_eq!(e["code"], 6002, "{e}");
    assert!(e["message"].as_str().unwrap().contains("not UTF-8"), "{e}");
    h.send(json!({"cmd": "getUsers"})).await;
    h.expect("USERS").await;

    // Answers of the local store count for `wait` as the engine's events
    // do: this one already came, so the wait ends at once (it timed out).
    h.send(json!({"cmd": "getConversations"})).await;
    h.send(json!({"cmd": "wait", "event": "CONVERSATIONS", "timeout_ms": 5000}))
        .await;
    h.send(json!({"cmd": "dance"})).await;
    assert_eq!(
        h.expect("ERROR").await["code"],
        6001,
        "the wait ended at once"
    );

    h.send(json!({"cmd": "wait", "event": "KICKED_OUT", "timeout_ms": 100}))
        .await;
    let e = h.expect("ERROR").await;
    assert_eq!(
        (e["code"].clone(), e["cmd"].clone()),
        (json!(6012), json!("wait"))
    );

    h.send(json!({"cmd": "login", "userID": "no spaces allowed"}))
        .await;
    let e = h.expect("ERROR").await;
    assert_eq!(e["code"], 70400);
    assert!(e["message"].as_str().unwrap().contains("1 to 32 bytes"));

    // A second device sees alice online, then gone once she quits.
    let mut bob = Device::online(&url, "bob", "b1").await;
    assert_eq!(
        bob.users().await,
        vec![("alice".into(), 1), ("bob".into(), 1)]
    );
    h.send(json!({"cmd": "quit"})).await;
    h.exits_cleanly().await;
    assert_eq!(
        bob.users().await,
        vec![("alice".into(), 0), ("bob".into(), 1)]
    );
    relay.shutdown().await;
}

/// A wait for a login the relay refuses ends with the refusal, not at
/// its timeout.
#[tokio::test]
async fn a_wait_for_a_refused_login_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut h = Headless::spawn(dir.path(), &["--relay", &relay.url()]);
    let asked = std::time::Instant::now();
    h.send(json!({"cmd": "login", "userID": "alice", "userSig": "not-a-ticket"}))
        .await;
    h.send(json!({"cmd": "wait", "event": "SDK_READY", "timeout_ms": 60000}))
        .await;
    assert_eq!(h.expect("ERROR").await["cmd"], "login");
    let e = h.expect("ERROR").await;
    assert_eq!(
        (&e["code"], &e["cmd"]),
        (&json!(6012), &json!("wait")),
        "{e}"
    );
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    // Quitting now says nothing of a logout the script never asked for.
    h.send(json!({"cmd": "quit"})).await;
    while let Some(e) = h.next().await {
        assert_ne!(e["event"], "ERROR", "{e}");
    }
    // A login refused here, before it reached the relay (a bad UserID):
    // the same, at once.
    let mut h = Headless::spawn(dir.path(), &["--relay", &relay.url()]);
    let asked = std::time::Instant::now();
    h.send(json!({"cmd": "login", "userID": "bad id!"})).await;
    h.send(json!({"cmd": "wait", "event": "SDK_READY", "timeout_ms": 60000}))
        .await;
    assert_eq!(h.expect("ERROR").await["code"], 70400);
    assert_eq!(h.expect("ERROR").await["code"], 6012);
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    // A wait sent after the relay's refusal came: the same.
    let url = relay.url();
    let args = [
        "--relay",
        &url,
        "--user",
        "alice",
        "--usersig",
        "not-a-ticket",
    ];
    let mut h = Headless::spawn(dir.path(), &args);
    assert_eq!(h.expect("ERROR").await["cmd"], "login");
    // The ticket from the environment (where `ps` does not show it) is
    // the one used: the same refusal.
    let env = vec![("TERMPHONE_USERSIG", "not-a-ticket".into())];
    let mut from_env = Headless::spawn_with(dir.path(), &args[..4], env);
    assert_eq!(from_env.expect("ERROR").await["cmd"], "login");
    let asked = std::time::Instant::now();
    h.send(json!({"cmd": "wait", "event": "SDK_READY", "timeout_ms": 60000}))
        .await;
    assert_eq!(h.expect("ERROR").await["code"], 6012);
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    // `--user` that is no UserID: a refused login as any other (SPEC 6),
    // the process up for the script to log in again.
    let mut h = Headless::spawn(dir.path(), &["--relay", &url, "--user", "bad id!"]);
    let e = h.expect("ERROR").await;
    assert_eq!(
        (&e["code"], &e["cmd"]),
        (&json!(70400), &json!("login")),
        "{e}"
    );
    h.send(json!({"cmd": "login", "userID": "alice"})).await;
    h.expect("SDK_READY").await;
    // The TUI stops, naming the flag.
    let mut cmd = termphone(dir.path());
    cmd.args(["--relay", &url, "--user", "bad id!"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(stderr.contains("--user: "), "{stderr}");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_piped_script_runs_in_order_and_ends_with_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut h = Headless::spawn(dir.path(), &["--relay", &relay.url(), "--device", "d1"]);
    let script = [
        json!({"cmd": "getUsers"}),
        json!({"cmd": "login", "userID": "alice"}),
        json!({"cmd": "wait", "event": "SDK_READY", "timeout_ms": 5000}),
        json!({"cmd": "getUsers"}),
    ];
    for cmd in script {
        h.send(cmd).await;
    }
    h.stdin = None;
    let mut names = Vec::new();
    while let Some(v) = h.next().await {
        names.push(v["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        names[..5],
        [
            "ERROR", // getUsers before login: NOT_LOGGED_IN
            "LOGIN_STATUS_CHANGED",
            "CONNECTION_CHANGED",
            "LOGIN_STATUS_CHANGED",
            "SDK_READY",
        ]
    );
    // The reply in flight and the logout on the way out (which waits for
    // that reply) may come in either order; the catch-up's end, too, unless
    // the logout overtook it.
    let mut tail: Vec<String> = names[5..]
        .iter()
        .filter(|n| *n != "SYNCED")
        .cloned()
        .collect();
    tail.sort();
    assert_eq!(tail, ["LOGIN_STATUS_CHANGED", "USERS"]);
    let status = tokio::time::timeout(WAIT, h.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    relay.shutdown().await;
}

/// A fingerprint pins the certificate of a relay with TLS: given for a
/// ws:// relay it would be ignored, the user believing the link pinned.
#[tokio::test]
async fn a_fingerprint_for_a_relay_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprint = ["AB"; 32].join(":");
    let mut cmd = termphone(dir.path());
    cmd.args(["headless", "--relay", "ws://127.0.0.1:9"])
        .args(["--relay-fingerprint", &fingerprint]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(stderr.contains("use wss://127.0.0.1:9"), "{stderr}");
    // So do flow and load, before they run anything.
    for run in [
        vec!["flow", "examples/flows/busy.toml"],
        vec!["load", "examples/flows/busy.toml", "--iterations", "1"],
    ] {
        let mut cmd = termphone(dir.path());
        cmd.args(&run)
            .args(["--relay", "ws://127.0.0.1:9"])
            .args(["--relay-fingerprint", &fingerprint]);
        let stderr = refused_with_status_2(cmd).await;
        assert!(
            stderr.contains("use wss://127.0.0.1:9"),
            "{run:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn headless_with_the_relay_down_reports_it_and_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind, read it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut h = Headless::spawn(dir.path(), &["--relay", &url, "--user", "alice"]);
    let e = h.expect("ERROR").await;
    assert_eq!(e["code"], 6200);
    assert!(e["message"].as_str().unwrap().contains(&url), "{e}");
    h.send(json!({"cmd": "quit"})).await;
    h.exits_cleanly().await;
}

/// `cmd` (the binary and its global flags) running `termphone relay` on a
/// free loopback port with `relay_args`; the process and the URL it says it
/// listens on.
async fn relay_on_a_free_port(
    mut cmd: tokio::process::Command,
    relay_args: &[&std::ffi::OsStr],
) -> (tokio::process::Child, String) {
    let mut child = cmd
        .args(["relay", "--listen", "127.0.0.1:0"])
        .args(relay_args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("listening on ").expect(&line).to_owned();
    (child, url)
}

#[tokio::test]
async fn relay_runs_in_the_foreground_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let mut relay = termphone(dir.path());
    relay.stderr(Stdio::null());
    let (mut child, url) = relay_on_a_free_port(relay, &["--db".as_ref(), db.as_ref()]).await;
    let mut alice = Device::online(&url, "alice", "d1").await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    // The device noticed and is trying to get back.
    alice.expect("CONNECTION_CHANGED").await;
    assert!(db.exists());
}

/// An operator reads in the relay's log who came and went and from where,
/// and what was turned away at the caps.
#[tokio::test]
async fn the_relay_log_says_who_came_from_where_and_who_was_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[relay]\nmax_unauthenticated = 1\nmax_unauthenticated_per_address = 1\n",
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = termphone(dir.path());
    relay
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    let db = dir.path().join("relay.db");
    let (mut child, url) = relay_on_a_free_port(relay, &["--db".as_ref(), db.as_ref()]).await;

    let alice = Device::online(&url, "alice", "d1").await;
    let mut bob = Device::online(&url, "bob", "b1").await;
    bob.send(termphone::client::engine::Command::Logout);
    bob.expect("LOGIN_STATUS_CHANGED").await;
    // One socket that does not log in takes the only place; the next is
    // turned away.
    let _idle = RawPeer::connect(&url).await;
    let mut turned_away = RawPeer::connect(&url).await;
    turned_away.closed().await;
    drop(alice);

    let line_with = |text: &str, with: &[&str]| {
        let log = std::fs::read_to_string(&log).unwrap();
        log.lines()
            .any(|l| l.contains(text) && with.iter().all(|w| l.contains(w)))
    };
    let expected: [(&str, &[&str]); 4] = [
        ("logged in", &["peer=127.0.0.1:", "user=alice", "device=d1"]),
        ("logged out", &["user=bob", "device=b1"]),
        (
            "connection refused",
            &["peer=127.0.0.1:", "max_unauthenticated"],
        ),
        ("disconnected", &["peer=127.0.0.1:", "user=alice"]),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    for (text, with) in expected {
        while !line_with(text, with) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {text:?} line with {with:?} in:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    child.kill().await.unwrap();
}

/// `--media-loss-burst` reaches the relay's impairment: a burst too short
/// for its loss rate is refused before the relay listens.
#[tokio::test]
async fn relay_refuses_bursts_too_short_for_their_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = termphone(dir.path());
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--media-loss", "90"])
        .args(["--media-loss-burst", "2", "--media-drop-from", "alice"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("90% loss cannot come in bursts of 2 frames"),
        "{stderr}"
    );
}

/// `--media-bandwidth-kbps` reaches it too, its bound named as the file names it.
#[tokio::test]
async fn relay_refuses_a_bandwidth_cap_beyond_a_gigabit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = termphone(dir.path());
    cmd.args(["relay", "--listen", "127.0.0.1:0"])
        .args(["--media-bandwidth-kbps", "2000000"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("relay.impairment.bandwidth_kbps is 2000000"),
        "{stderr}"
    );
}

#[tokio::test]
async fn relay_refuses_a_public_address_with_the_development_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = termphone(dir.path());
    cmd.args(["relay", "--tls", "--listen", "0.0.0.0:0"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("development secret") && stderr.contains("loopback"),
        "{stderr}"
    );
    // Refused before anything was made: no certificate, no database.
    let data = dir.path().join("data/termphone");
    let left: Vec<_> = std::fs::read_dir(&data)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn usersig_mints_a_ticket_the_relay_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = termphone(dir.path())
        .args(["usersig", "--user", "alice"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let now = termphone::time::unix_millis() / 1000;
    let alice = UserId::parse("alice").unwrap();
    let t = usersig::verify(DEV_SECRET, token.trim(), DEV_APP_ID, &alice, now).unwrap();
    assert_eq!(t.lifetime, 7 * 24 * 3600);

    let out = termphone(dir.path())
        .args([
            "usersig",
            "--user",
            "alice",
            "--app",
            "9",
            "--secret",
            "sixteen-bytes-or-more",
            "--expire",
            "60",
        ])
        .output()
        .await
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(usersig::verify("sixteen-bytes-or-more", token.trim(), 9, &alice, now).is_ok());

    // From the environment, where `ps` does not show it; not in --help.
    let from_env = || {
        let mut cmd = termphone(dir.path());
        cmd.env("TERMPHONE_SECRET", "a-secret-kept-in-the-environment");
        cmd
    };
    let out = from_env()
        .args(["usersig", "--user", "alice", "--app", "9"])
        .output()
        .await
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap();
    let secret = "a-secret-kept-in-the-environment";
    assert!(usersig::verify(secret, token.trim(), 9, &alice, now).is_ok());
    let out = from_env()
        .args(["usersig", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("TERMPHONE_SECRET") && !help.contains(secret),
        "{help}"
    );
}

#[tokio::test]
async fn a_config_error_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[client]\nrelay = \"ws://127.0.0.1:1\"\n").unwrap();
    let mut cmd = termphone(dir.path());
    cmd.arg("--config")
        .arg(&bad)
        .args(["usersig", "--user", "alice"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("bad.toml") && stderr.contains("unknown field `relay`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn tui_without_a_user_says_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused_with_status_2(termphone(dir.path())).await;
    assert!(stderr.contains("--user"), "{stderr}");
}

#[tokio::test]
async fn stdout_is_only_events_even_when_logging_is_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut child = termphone(dir.path())
        .env("TERMPHONE_LOG", "trace")
        .args(["headless", "--relay", &relay.url(), "--user", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"{\"cmd\":\"wait\",\"event\":\"SDK_READY\",\"timeout_ms\":5000}\n{\"cmd\":\"quit\"}\n",
        )
        .await
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["event"].is_string());
    }
    assert!(stdout.contains("SDK_READY"));
    assert!(!out.stderr.is_empty(), "the logs went to stderr");
    relay.shutdown().await;
}

/// The bundled relay's pid, from the file its launcher writes.
fn bundled_relay_pid(home: &std::path::Path) -> i32 {
    let path = home.join("data/termphone/relay.pid");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.trim().parse().unwrap()
}

/// Stops a process this test started, by pid (never by name: the user's
/// own relay may be running on this machine).
fn kill(pid: i32, signal: i32) {
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

#[tokio::test]
async fn a_loopback_relay_that_is_down_is_started_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    // The same path as the default address, on a port of this test's own so
    // that the user's relay on 7787 is never touched.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config/termphone");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!("[client]\nrelay_url = \"ws://127.0.0.1:{port}\"\nautostart_relay = true\n"),
    )
    .unwrap();
    let mut h = Headless::spawn(dir.path(), &["--user", "alice", "--device", "auto1"]);
    h.expect("SDK_READY").await;
    h.send(json!({"cmd": "getUsers"})).await;
    let users = h.expect("USERS").await;
    assert!(
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["userID"] == "alice")
    );

    // The bundled relay goes away (it stops by itself when idle): the
    // device starts it again on its next attempt and carries on.
    let first = bundled_relay_pid(dir.path());
    kill(first, libc::SIGKILL);
    let state = h.expect("CONNECTION_CHANGED").await;
    assert_eq!(state["state"], "reconnecting");
    let state = h.expect("CONNECTION_CHANGED").await;
    assert_eq!(state["state"], "connected");
    let second = bundled_relay_pid(dir.path());
    assert_ne!(first, second, "a new relay was started");
    h.send(json!({"cmd": "getUsers"})).await;
    h.expect("USERS").await;
    h.send(json!({"cmd": "quit"})).await;
    h.exits_cleanly().await;
    kill(second, libc::SIGTERM);

    // Its log is plain text, for `less` and for bug reports.
    let log = std::fs::read_to_string(dir.path().join("data/termphone/relay.log")).unwrap();
    assert!(log.contains("relay listening"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in relay.log: {log:?}");
}

#[test]
fn a_relay_named_on_the_command_line_or_off_loopback_is_never_started() {
    use termphone::cli::{Cli, Dirs};
    use termphone::config::Config;
    use termphone::media::spec::AudioSpec;
    let dirs = Dirs {
        config_file: "c".into(),
        data_dir: "d".into(),
    };
    let settings = |args: &[&str], toml: &str| {
        let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
        let config = Config::parse(toml, "t.toml").unwrap();
        cli.device
            .settings(&config, &dirs, &AudioSpec::Null)
            .relay_target()
            .autostart
            .map(|(addr, _)| addr.to_string())
    };
    // Nothing configured: the default address is the one started (only
    // computed here; nothing connects).
    assert_eq!(
        settings(&["termphone"], ""),
        Some(termphone::config::DEFAULT_RELAY_ADDR.to_string())
    );
    assert_eq!(
        settings(&["termphone", "--relay", "ws://127.0.0.1:9"], ""),
        None
    );
    let own = "[client]\nrelay_url = \"ws://127.0.0.1:9\"\n";
    assert_eq!(settings(&["termphone"], own), None);
    let started = format!("{own}autostart_relay = true\n");
    assert_eq!(
        settings(&["termphone"], &started),
        Some("127.0.0.1:9".into())
    );
    let remote = "[client]\nrelay_url = \"ws://10.1.2.3:9\"\nautostart_relay = true\n";
    assert_eq!(settings(&["termphone"], remote), None);
    // `localhost` is this machine; a relay with TLS is an operator's.
    let named = "[client]\nrelay_url = \"ws://localhost:9\"\nautostart_relay = true\n";
    assert_eq!(settings(&["termphone"], named), Some("127.0.0.1:9".into()));
    let tls = "[client]\nrelay_url = \"wss://127.0.0.1:9\"\nautostart_relay = true\n";
    assert_eq!(settings(&["termphone"], tls), None);
    let never = "[client]\nautostart_relay = false\n";
    assert_eq!(settings(&["termphone"], never), None);
}

#[tokio::test]
async fn completions_and_a_man_page_come_from_the_cli_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = termphone(dir.path())
        .args(["completions", "bash"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("complete -F _termphone") && script.contains("--multi-device"),
        "{script}"
    );
    let out = termphone(dir.path()).arg("man").output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains(".TH termphone 1") && page.contains("headless"),
        "{page}"
    );
    // A reader that stops early (`termphone man | head`) is no error.
    let mut man = termphone(dir.path())
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(man.stdout.take());
    let out = man.wait_with_output().await.unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    // A closed pipe or a full disk is said, never a panic (exit 101).
    for args in [
        &["completions", "bash"][..],
        &["usersig", "--user", "alice"],
        &["devices"],
    ] {
        let mut closed = termphone(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(closed.stdout.take());
        let out = closed.wait_with_output().await.unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{args:?}: {out:?}"
        );
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = termphone(dir.path())
            .args(args)
            .stdout(full)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("stdout: No space left on device"),
            "{args:?}: {stderr}"
        );
    }
    let mut zero = termphone(dir.path());
    zero.args(["usersig", "--user", "alice", "--app", "0"]);
    let stderr = refused_with_status_2(zero).await;
    assert!(stderr.contains("0 is not in 1..="), "{stderr}");
    let mut unknown = termphone(dir.path());
    unknown.args(["completions", "cmd.exe"]);
    let stderr = refused_with_status_2(unknown).await;
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}

#[tokio::test]
async fn devices_lists_what_audio_flags_can_name_and_bad_specs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // ALSA's null device, named by the asoundrc in the test's home.
    std::fs::write(dir.path().join(".asoundrc"), "pcm.!default { type null }\n").unwrap();
    let out = termphone(dir.path()).arg("devices").output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("null ") && l.contains("input")),
        "{listing}"
    );
    // Probing ALSA's plugins is quiet, and those that cannot open (OSS
    // without /dev/dsp, JACK without a server) are not offered.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    if !std::path::Path::new("/dev/dsp").exists() {
        assert!(!listing.lines().any(|l| l.starts_with("oss ")), "{listing}");
    }
    // One column per field, whatever the lengths of the names.
    let table: Vec<&str> = listing.lines().take_while(|l| !l.is_empty()).collect();
    for heading in ["USE", "DESCRIPTION"] {
        let at = table[0].find(heading).unwrap();
        for row in &table[1..] {
            let (before, after) = row.split_at(at);
            assert!(
                before.ends_with("  ") && !after.starts_with(' '),
                "{heading} column:\n{listing}"
            );
        }
    }
    if table[1..].iter().all(|l| l.starts_with("null ")) {
        assert!(listing.contains("no sound card"), "{listing}");
    }

    let mut bad = termphone(dir.path());
    bad.args(["headless", "--audio-in", "tone:abc"]);
    let stderr = refused_with_status_2(bad).await;
    assert!(stderr.contains("tone:HZ"), "{stderr}");
    let mut bad = termphone(dir.path());
    bad.args(["headless", "--audio-out", "tone:440"]);
    let stderr = refused_with_status_2(bad).await;
    assert!(stderr.contains("is a source"), "{stderr}");
    // A file that is not there is refused at start, not when a call
    // connects (the relay is one nobody listens on: nothing is started).
    let mut bad = termphone(dir.path());
    let missing = dir.path().join("missing.wav");
    bad.args(["headless", "--user", "alice", "--relay", "ws://127.0.0.1:9"])
        .arg("--audio-in")
        .arg(format!("wav:{}", missing.display()));
    let stderr = refused_with_status_2(bad).await;
    assert!(
        stderr.contains("audio input wav:") && stderr.contains("missing.wav"),
        "{stderr}"
    );
}

/// The TUI and the demo run from a script (stdin and stdout no terminal)
/// say what to use instead, before they start anything.
#[tokio::test]
async fn the_tui_without_a_terminal_points_to_headless() {
    let dir = tempfile::tempdir().unwrap();
    // An explicit relay: a TUI that got past the check must not start the
    // bundled one on the default port.
    let tui = ["--user", "alice", "--relay", "ws://127.0.0.1:9"];
    for args in [&tui[..], &["demo"]] {
        let mut cmd = termphone(dir.path());
        cmd.args(args).stdin(Stdio::null());
        let stderr = refused_with_status_2(cmd).await;
        assert!(
            stderr.contains("needs a terminal") && stderr.contains("termphone headless --user"),
            "{args:?}: {stderr}"
        );
    }
}

/// A relay whose terminal closes (SIGHUP) stops as for SIGTERM: cleanly,
/// saying why, exit 0.
#[tokio::test]
async fn a_relay_stops_cleanly_on_sighup() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = termphone(dir.path())
        .args(["relay", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("r.db"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = lines.next_line().await.unwrap().unwrap_or_default();
    assert!(first.starts_with("listening on"), "{first}");
    kill(child.id().unwrap() as i32, libc::SIGHUP);
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the relay stops")
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("relay stopping") && stderr.contains("SIGHUP"),
        "{stderr}"
    );
}
