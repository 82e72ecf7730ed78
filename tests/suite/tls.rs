//! A relay on a network (issue 19): TLS on every link, pinned certificates,
//! no secret in clear on the wire or in a log.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use termphone::config::RelayConfig;
use termphone::ids::DEV_APP_ID;
use termphone::relay::RelayHandle;
use termphone::tls::Fingerprint;

use crate::common::headless::{Headless, refused_with_status_2, termphone};
use crate::common::net::{WAIT, relay_at, test_config, ticket};

/// Bytes carried, one buffer per connection.
type Streams = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP proxy that keeps every byte it carries, both ways, and whose
/// target can change (the same address, another relay behind it).
struct Recorder {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    /// What clients sent, and what the relay sent them.
    up: Streams,
    down: Streams,
    accepted: Arc<AtomicUsize>,
}

impl Recorder {
    async fn start(target: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let recorder = Recorder {
            addr: listener.local_addr().unwrap(),
            target: Arc::new(Mutex::new(target)),
            up: Arc::default(),
            down: Arc::default(),
            accepted: Arc::default(),
        };
        let (target, up, down, accepted) = (
            recorder.target.clone(),
            recorder.up.clone(),
            recorder.down.clone(),
            recorder.accepted.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let link = accepted.fetch_add(1, Ordering::SeqCst);
                up.lock().unwrap().push(Vec::new());
                down.lock().unwrap().push(Vec::new());
                let to = *target.lock().unwrap();
                let (up, down) = (up.clone(), down.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::select! {
                        _ = record(cr, uw, up, link) => {}
                        _ = record(ur, cw, down, link) => {}
                    }
                });
            }
        });
        recorder
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn recorded(&self) -> Vec<u8> {
        let up = self.up.lock().unwrap().concat();
        [up, self.down.lock().unwrap().concat()].concat()
    }

    /// Whether an eavesdropper finds `needle`: in the bytes as they are, or
    /// in what clients sent once its WebSocket masking is undone (the mask
    /// travels with every frame).
    fn contains(&self, needle: &str) -> bool {
        let unmasked: Vec<u8> = (self.up.lock().unwrap().iter())
            .flat_map(|s| unmask(s))
            .collect();
        [self.recorded(), unmasked]
            .iter()
            .any(|hay| hay.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

/// The payloads of the client-to-server WebSocket frames in `stream`,
/// unmasked, as anyone on the path can read them.
fn unmask(stream: &[u8]) -> Vec<u8> {
    let Some(start) = stream.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut i = start + 4;
    while i + 2 <= stream.len() {
        let masked = stream[i + 1] & 0x80 != 0;
        let mut len = u64::from(stream[i + 1] & 0x7f);
        i += 2;
        let extended = match len {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if extended > 0 {
            let Some(bytes) = stream.get(i..i + extended) else {
                break;
            };
            len = bytes.iter().fold(0, |n, b| n << 8 | u64::from(*b));
            i += extended;
        }
        let mask = if masked {
            let Some(m) = stream.get(i..i + 4) else { break };
            i += 4;
            [m[0], m[1], m[2], m[3]]
        } else {
            [0; 4]
        };
        let end = (i + len as usize).min(stream.len());
        out.extend(
            stream[i..end]
                .iter()
                .enumerate()
                .map(|(k, b)| b ^ mask[k % 4]),
        );
        i = end;
    }
    out
}

async fn record(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    streams: Streams,
    link: usize,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                streams.lock().unwrap()[link].extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A relay with TLS on, its self-signed certificate beside its database in `dir`.
async fn tls_relay(dir: &Path) -> RelayHandle {
    let config = RelayConfig {
        tls: true,
        ..test_config()
    };
    relay_at(&config, &dir.join("relay.db")).await
}

/// The user ids and text of the chat-and-call scenario: distinctive enough
/// that finding them in ciphertext by chance is out of the question.
const ALICE: &str = "wiretap-alice";
const BOB: &str = "wiretap-bob";
const SECRET_TEXT: &str = "the launch code is 0451-swordfish";

/// Two devices through `url`: a chat message, then a call in which bob
/// hears alice's voice. Returns the tickets they logged in with.
async fn chat_and_call(home: &Path, url: &str, call: bool) -> [String; 2] {
    let tickets = [
        ticket(DEV_APP_ID, ALICE, 3600),
        ticket(DEV_APP_ID, BOB, 3600),
    ];
    let device = |user: &str, sig: &str, audio_in: &str| {
        Headless::spawn(
            home,
            &[
                "--relay",
                url,
                "--user",
                user,
                "--usersig",
                sig,
                "--audio-in",
                audio_in,
                "--audio-out",
                "null",
            ],
        )
    };
    let mut alice = device(ALICE, &tickets[0], "tone:440");
    let mut bob = device(BOB, &tickets[1], "null");
    alice.expect("SDK_READY").await;
    bob.expect("SDK_READY").await;
    alice
        .send(json!({"cmd": "sendMessage", "userID": BOB, "text": SECRET_TEXT}))
        .await;
    let got = bob.expect("MESSAGE_RECEIVED").await;
    assert_eq!(got["text"], SECRET_TEXT);
    if call {
        alice.send(json!({"cmd": "call", "userID": BOB})).await;
        bob.expect("ON_CALL_RECEIVED").await;
        bob.send(json!({"cmd": "accept"})).await;
        bob.expect("ON_CALL_BEGIN").await;
        alice.expect("ON_CALL_BEGIN").await;
        // alice's tone reaches bob: her voice went through the relay.
        loop {
            let v = bob.expect("USER_VOICE_VOLUME").await;
            let level = (v["volumeMap"].as_array().unwrap().iter())
                .find(|e| e["userID"] == ALICE)
                .and_then(|e| e["volume"].as_u64());
            if level.is_some_and(|l| l > 10) {
                break;
            }
        }
        bob.send(json!({"cmd": "hangup"})).await;
        alice.expect("CALLING_END").await;
    }
    for mut d in [alice, bob] {
        d.send(json!({"cmd": "quit"})).await;
        d.exits_cleanly().await;
    }
    tickets
}

#[tokio::test]
async fn an_eavesdropper_on_a_tls_link_sees_no_text_ticket_or_user() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = tls_relay(dir.path()).await;
    assert!(relay.url().starts_with("wss://"), "{}", relay.url());
    let wire = Recorder::start(relay.local_addr()).await;
    let tickets = chat_and_call(dir.path(), &wire.url("wss"), true).await;

    let recorded = wire.recorded();
    assert!(
        recorded.len() > 5_000,
        "a call's worth of bytes: {}",
        recorded.len()
    );
    for secret in [SECRET_TEXT, ALICE, BOB, &tickets[0], &tickets[1]] {
        assert!(
            !wire.contains(secret),
            "{secret:?} crossed the wire in clear"
        );
    }
    // Nor any part of them long enough to mean something, nor even the
    // WebSocket handshake that frames could be read by.
    for clue in ["swordfish", "user_sig", "websocket", "GET /"] {
        assert!(!wire.contains(clue), "{clue:?} crossed the wire in clear");
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn the_same_scenario_in_plaintext_shows_everything() {
    // The recorder's control: over ws:// the same bytes are there to read.
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("relay.db")).await;
    let wire = Recorder::start(relay.local_addr()).await;
    let tickets = chat_and_call(dir.path(), &wire.url("ws"), false).await;
    for secret in [SECRET_TEXT, ALICE, BOB, &tickets[0], &tickets[1]] {
        assert!(wire.contains(secret), "{secret:?} not seen in plaintext");
    }
    relay.shutdown().await;
}

fn fingerprint_in(message: &str) -> Vec<Fingerprint> {
    // Fingerprints are 95 characters of hex pairs and colons.
    message
        .split(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
        .filter(|w| w.len() == 95)
        .map(|w| w.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_changed_certificate_is_refused_until_its_fingerprint_is_given() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["first", "second"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let first = tls_relay(&dir.path().join("first")).await;
    let second = tls_relay(&dir.path().join("second")).await;
    let (old, new) = (first.fingerprint().unwrap(), second.fingerprint().unwrap());
    assert_ne!(old, new);
    let wire = Recorder::start(first.local_addr()).await;
    let url = wire.url("wss");
    let home = dir.path().join("device");
    let device = |extra: &[&str]| {
        let mut args = vec!["--relay", &url, "--user", "pinned", "--device", "d1"];
        args.extend_from_slice(extra);
        Headless::spawn(&home, &args)
    };

    // Trusted on first use, and remembered.
    let mut d = device(&[]);
    d.expect("SDK_READY").await;
    let known = std::fs::read_to_string(home.join("data/termphone/known_relays")).unwrap();
    assert!(known.contains(&format!("{} {old}", wire.addr)), "{known}");

    // The same address, another relay: refused, said once, not retried.
    wire.retarget(second.local_addr());
    first.shutdown().await;
    let e = d.expect("ERROR").await;
    assert_eq!(e["code"], 6201, "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(&url), "{message}");
    let mut named = fingerprint_in(message);
    named.sort_by_key(|f| f.0);
    let mut both = vec![old, new];
    both.sort_by_key(|f| f.0);
    assert_eq!(named, both, "{message}");
    assert!(message.contains("--relay-fingerprint"), "{message}");
    let status = d.expect("LOGIN_STATUS_CHANGED").await;
    assert_eq!(status["status"], "LOGOUT");
    let attempts = wire.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        wire.accepted.load(Ordering::SeqCst),
        attempts,
        "it tried again"
    );
    d.send(json!({"cmd": "quit"})).await;
    d.exits_cleanly().await;

    // Started again, it still refuses: the old certificate is remembered.
    let mut d = device(&[]);
    assert_eq!(d.expect("ERROR").await["code"], 6201);
    d.send(json!({"cmd": "quit"})).await;
    d.exits_cleanly().await;

    // A malformed fingerprint is refused before anything starts.
    let mut cmd = termphone(&home);
    cmd.args(["headless", "--relay", &url, "--relay-fingerprint", "AB:CD"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(stderr.contains("--print-fingerprint"), "{stderr}");

    // With the new fingerprint it connects, and remembers it from then on.
    let new_text = new.to_string();
    let mut d = device(&["--relay-fingerprint", &new_text]);
    d.expect("SDK_READY").await;
    d.send(json!({"cmd": "quit"})).await;
    d.exits_cleanly().await;
    let mut d = device(&[]);
    d.expect("SDK_READY").await;
    d.send(json!({"cmd": "quit"})).await;
    d.exits_cleanly().await;
    second.shutdown().await;
}

/// A config whose app has its own secret, and an admin token.
const REAL_SECRET: &str = "a-real-secret-nobody-else-knows";
const ADMIN_TOKEN: &str = "an-admin-token-kept-out-of-logs";

fn real_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             [[relay.apps]]\nid = {DEV_APP_ID}\nsecret = \"{REAL_SECRET}\"\n"
        ),
    )
    .unwrap();
    path
}

/// `termphone relay` with `args`, and its first stdout lines.
async fn relay_process(
    home: &Path,
    config: &Path,
    args: &[&str],
    lines: usize,
) -> (tokio::process::Child, Vec<String>) {
    let mut child = termphone(home)
        .arg("--config")
        .arg(config)
        .arg("relay")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for _ in 0..lines {
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("the relay says where it listens");
        out.push(line);
    }
    (child, out)
}

#[tokio::test]
async fn off_loopback_the_relay_needs_tls_or_says_it_is_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let config = real_config(dir.path());

    let mut cmd = termphone(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .args(["relay", "--listen", "0.0.0.0:0"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("without TLS") && stderr.contains("--tls") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );

    // With --tls it starts, with a certificate it made and will keep.
    let (mut relay, lines) =
        relay_process(dir.path(), &config, &["--listen", "0.0.0.0:0", "--tls"], 2).await;
    assert!(
        lines[0].starts_with("listening on wss://0.0.0.0:"),
        "{lines:?}"
    );
    let printed = lines[1]
        .split_once("  certificate SHA-256 ")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(printed.0.starts_with("relay: wss://"), "{lines:?}");
    let fingerprint: Fingerprint = printed.1.parse().unwrap();
    relay.kill().await.unwrap();

    let data = dir.path().join("data/termphone");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("relay-key.pem")), 0o600);
    }
    let out = termphone(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["relay", "--print-fingerprint"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.trim_end().ends_with(&fingerprint.to_string()),
        "{line}"
    );

    // --insecure-plaintext starts, and says what it costs.
    let (mut relay, lines) = relay_process(
        dir.path(),
        &config,
        &["--listen", "0.0.0.0:0", "--insecure-plaintext"],
        1,
    )
    .await;
    assert!(lines[0].starts_with("listening on ws://"), "{lines:?}");
    relay.kill().await.unwrap();
    let mut stderr = String::new();
    relay
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("without TLS"), "{stderr}");
}

#[tokio::test]
async fn unusable_certificate_files_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    let missing = dir.path().join("nowhere/cert.pem");
    std::fs::write(
        &config,
        format!(
            "[relay]\ntls = true\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            missing.display(),
            missing.display()
        ),
    )
    .unwrap();
    let mut cmd = termphone(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .args(["relay", "--listen", "127.0.0.1:0"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(
        stderr.contains("nowhere/cert.pem") && stderr.contains("relay.tls_cert"),
        "{stderr}"
    );
    // Without `tls = true` in the file: refused, unless --tls (which the
    // message offers) turns TLS on, and then the files are what is wrong.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("tls = true\n", "")).unwrap();
    let mut cmd = termphone(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .args(["relay", "--listen", "127.0.0.1:0"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(stderr.contains("or pass --tls"), "{stderr}");
    let mut cmd = termphone(dir.path());
    cmd.arg("--config")
        .arg(&config)
        .args(["relay", "--tls", "--listen", "127.0.0.1:0"]);
    let stderr = refused_with_status_2(cmd).await;
    assert!(stderr.contains("nowhere/cert.pem"), "{stderr}");
}

/// Every log line of a relay and its devices at the most verbose level,
/// through logins (one refused), chat, a call and the admin API: no
/// ticket, app secret or admin token in any of them.
#[tokio::test]
async fn no_secret_reaches_a_log() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = real_config(dir.path());
    let relay_log = dir.path().join("relay.log");
    let mut relay = termphone(dir.path())
        .env("TERMPHONE_LOG", "trace")
        .arg("--config")
        .arg(&config)
        .args(["relay", "--tls", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&relay_log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(relay.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("listening on ").unwrap().to_owned();

    let mint = |user: &str, secret: &str| {
        termphone::usersig::mint(
            secret,
            &termphone::usersig::Ticket {
                app: DEV_APP_ID,
                user: termphone::ids::UserId::parse(user).unwrap(),
                issued_at: termphone::time::unix_millis() / 1000,
                lifetime: 3600,
            },
        )
    };
    let tickets = [
        mint("alice", REAL_SECRET),
        mint("bob", REAL_SECRET),
        mint("mallory", "a-wrong-secret-of-some-length"),
    ];
    let mut logs = vec![relay_log];
    let device = |user: &str, sig: &str, n: usize| {
        let log = dir.path().join(format!("device{n}.log"));
        let mut child = termphone(dir.path())
            .env("TERMPHONE_LOG", "trace")
            .args([
                "headless",
                "--relay",
                &url,
                "--user",
                user,
                "--usersig",
                sig,
            ])
            .args(["--audio-in", "tone:440", "--audio-out", "null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let events = BufReader::new(child.stdout.take().unwrap()).lines();
        (log, child, stdin, events)
    };
    async fn expect(
        events: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        name: &str,
    ) -> Value {
        loop {
            let line = tokio::time::timeout(WAIT, events.next_line())
                .await
                .expect("in time")
                .unwrap()
                .expect("an event");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == name {
                return v;
            }
        }
    }
    let (alog, mut achild, mut ain, mut aev) = device("alice", &tickets[0], 0);
    let (blog, mut bchild, mut bin, mut bev) = device("bob", &tickets[1], 1);
    let (mlog, mut mchild, _min, mut mev) = device("mallory", &tickets[2], 2);
    logs.extend([alog, blog, mlog]);
    expect(&mut aev, "SDK_READY").await;
    expect(&mut bev, "SDK_READY").await;
    let refused = expect(&mut mev, "ERROR").await;
    assert_eq!(refused["code"], 70009, "{refused}");
    let say = |text: &str| {
        format!(
            "{}\n",
            json!({"cmd": "sendMessage", "userID": "bob", "text": text})
        )
    };
    ain.write_all(say("hello bob").as_bytes()).await.unwrap();
    expect(&mut bev, "MESSAGE_RECEIVED").await;
    ain.write_all(b"{\"cmd\":\"call\",\"userID\":\"bob\"}\n")
        .await
        .unwrap();
    expect(&mut bev, "ON_CALL_RECEIVED").await;
    bin.write_all(b"{\"cmd\":\"accept\"}\n").await.unwrap();
    expect(&mut aev, "ON_CALL_BEGIN").await;
    expect(&mut bev, "USER_VOICE_VOLUME").await;
    bin.write_all(b"{\"cmd\":\"hangup\"}\n").await.unwrap();
    expect(&mut aev, "CALLING_END").await;

    // The admin API, with the right token and a wrong one.
    let fingerprint = std::fs::read_to_string(dir.path().join("data/termphone/known_relays"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split_once(' '))
        .map(|(_, f)| f.to_owned())
        .unwrap();
    for token in [ADMIN_TOKEN, "a-wrong-admin-token-entirely"] {
        let out = termphone(dir.path())
            .env("TERMPHONE_LOG", "trace")
            .args([
                "admin",
                "send",
                "--relay",
                &url,
                "--relay-fingerprint",
                &fingerprint,
            ])
            .args([
                "--token", token, "--from", "alice", "--to", "bob", "--text", "hi",
            ])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), token == ADMIN_TOKEN, "{stderr}");
        assert!(
            !stderr.contains(token),
            "the admin token in its error: {stderr}"
        );
    }

    for mut stdin in [ain, bin] {
        stdin.write_all(b"{\"cmd\":\"quit\"}\n").await.unwrap();
    }
    for child in [&mut achild, &mut bchild] {
        tokio::time::timeout(WAIT, child.wait())
            .await
            .unwrap()
            .unwrap();
    }
    mchild.kill().await.unwrap();
    relay.kill().await.unwrap();

    let mut total = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        total += text.len();
        for secret in [REAL_SECRET, ADMIN_TOKEN, "a-wrong-admin-token-entirely"]
            .iter()
            .copied()
            .chain(tickets.iter().map(String::as_str))
        {
            assert!(
                !text.contains(secret),
                "{} holds a secret: {secret:?}",
                log.display()
            );
        }
    }
    // The logs were verbose: a secret had every chance to show.
    assert!(total > 4_000, "{total} bytes of logs");
}

/// This machine's address on its network, if it has one (the test is
/// skipped otherwise): what a plaintext link off loopback reaches.
fn network_address() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    probe
        .connect("192.0.2.200:9")
        .or_else(|_| probe.connect("8.8.8.8:53"))
        .ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn a_device_on_a_plaintext_link_off_loopback_is_warned() {
    use termphone::client::event::Event;
    let Some(ip) = network_address() else {
        eprintln!("no network address on this machine: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        listen: SocketAddr::new(ip, 0),
        insecure_plaintext: true,
        apps: vec![termphone::config::AppConfig {
            secret: REAL_SECRET.into(),
            ..Default::default()
        }],
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("relay.db")).await;
    let url = relay.url();
    let sig = termphone::usersig::mint(
        REAL_SECRET,
        &termphone::usersig::Ticket {
            app: DEV_APP_ID,
            user: termphone::ids::UserId::parse("alice").unwrap(),
            issued_at: termphone::time::unix_millis() / 1000,
            lifetime: 3600,
        },
    );
    let mut d = crate::common::net::Device::new(&url, DEV_APP_ID, "terminal");
    d.login_with("alice", "d1", sig);
    match d.expect("ERROR").await {
        Event::Error { code, message, .. } => {
            assert_eq!(code, 6202, "{message}");
            assert!(
                message.contains(&url) && message.contains("wss://"),
                "{message}"
            );
        }
        _ => unreachable!(),
    }
    // A warning: the device goes on.
    d.expect("SDK_READY").await;
    relay.shutdown().await;
}

/// `termphone admin send` over a plaintext link off loopback: the message
/// goes (the relay was run with --insecure-plaintext), and stderr says the
/// admin token crossed the network unencrypted.
#[tokio::test]
async fn an_admin_send_on_a_plaintext_link_off_loopback_is_warned() {
    let Some(ip) = network_address() else {
        eprintln!("no network address on this machine: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    const TOKEN: &str = "an-admin-token-for-this-test";
    let config = RelayConfig {
        listen: SocketAddr::new(ip, 0),
        insecure_plaintext: true,
        admin_token: Some(TOKEN.into()),
        apps: vec![termphone::config::AppConfig {
            secret: REAL_SECRET.into(),
            ..Default::default()
        }],
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("relay.db")).await;
    let out = termphone(dir.path())
        .args(["admin", "send", "--relay", &relay.url(), "--token", TOKEN])
        .args(["--from", "alice", "--to", "bob", "--text", "hi"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the admin token goes to") && stderr.contains("unencrypted"),
        "{stderr}"
    );
    relay.shutdown().await;
}

/// ws:// to a relay with TLS, and wss:// to one without: the device says
/// which scheme the relay there takes, not only what the handshake saw.
#[tokio::test]
async fn ws_and_wss_mixed_up_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    let tls = tls_relay(&dir.path().join("tls")).await;
    let plain = relay_at(&test_config(), &dir.path().join("plain.db")).await;
    let cases = [
        (format!("ws://{}", tls.local_addr()), "wss://"),
        (format!("wss://{}", plain.local_addr()), "ws://"),
    ];
    for (url, hint) in cases {
        let home = dir.path().join(hint.trim_end_matches("://"));
        let mut d = Headless::spawn(&home, &["--relay", &url, "--user", "mixed"]);
        let e = d.expect("ERROR").await;
        assert_eq!(e["code"], 6200, "{e}");
        let message = e["message"].as_str().unwrap();
        let address = url.split("://").nth(1).unwrap();
        assert!(
            message.contains(&format!("reached at {hint}{address}")),
            "{message}"
        );
        // The words the TUI goes by to offer no relay where a server answers.
        assert!(
            termphone::tls::answered_but_not_as_a_relay(message),
            "{message}"
        );
    }
}

/// A server that takes the connection and closes it before a word (a proxy
/// in front of a relay that is down) is not called "not a relay" over
/// ws://: nothing answered. (Over wss:// a relay without TLS does the same
/// to a TLS handshake, so there the hint of ws:// stays.)
#[tokio::test]
async fn a_connection_closed_before_any_answer_is_not_called_a_wrong_server() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let url = format!("ws://{address}");
    let mut d = Headless::spawn(dir.path(), &["--relay", &url, "--user", "x"]);
    let e = d.expect("ERROR").await;
    assert_eq!(e["code"], 6200, "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("closed it before anything answered"),
        "{message}"
    );
    assert!(
        !termphone::tls::answered_but_not_as_a_relay(message),
        "{message}"
    );
}

/// A TLS relay presenting a self-signed certificate made of `params`, its
/// files and database in `dir`; and the certificate's fingerprint.
async fn relay_presenting(
    params: rcgen::CertificateParams,
    dir: &Path,
) -> (RelayHandle, Fingerprint) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&pair).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, pair.serialize_pem()).unwrap();
    let config = RelayConfig {
        tls: true,
        tls_cert: Some(cert_file),
        tls_key: Some(key_file),
        ..test_config()
    };
    let relay = relay_at(&config, &dir.join("relay.db")).await;
    (relay, Fingerprint::of(cert.der()))
}

/// A certificate made the usual openssl way (`req -x509`, marked CA:TRUE)
/// is trusted on first use and known from then on, as the relay's own is.
#[tokio::test]
async fn a_self_signed_certificate_marked_as_a_ca_is_trusted_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let (relay, fingerprint) = relay_presenting(params, dir.path()).await;
    let url = format!("wss://{}", relay.local_addr());
    for time in ["first use", "known"] {
        // Its log (stderr) says when it trusts a certificate, as ssh does.
        let env = vec![("TERMPHONE_LOG", "warn".into())];
        let mut d = Headless::spawn_with(dir.path(), &["--relay", &url, "--user", "x"], env);
        d.expect("SDK_READY").await;
        d.send(json!({"cmd": "quit"})).await;
        d.exits_cleanly().await;
        let known =
            std::fs::read_to_string(dir.path().join("data/termphone/known_relays")).unwrap();
        assert!(known.contains(&fingerprint.to_string()), "{known}");
        let log = std::fs::read_to_string(dir.path().join("x.log")).unwrap();
        let said = log.contains("on first use") && log.contains(&fingerprint.to_string());
        assert_eq!(said, time == "first use", "{time}: {log}");
    }
}

/// A relay whose certificate has expired speaks TLS: the device says the
/// link could not be made safe and what to do, and does not send its user
/// to plaintext ws://.
#[tokio::test]
async fn an_expired_certificate_is_not_called_a_relay_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let (relay, _) = relay_presenting(params, dir.path()).await;
    let url = format!("wss://{}", relay.local_addr());
    let mut d = Headless::spawn(dir.path(), &["--relay", &url, "--user", "x"]);
    let e = d.expect("ERROR").await;
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("speaks TLS"), "{message}");
    assert!(!message.contains("ws://"), "{message}");
    assert!(
        !termphone::tls::answered_but_not_as_a_relay(message),
        "{message}"
    );
}
