//! Faults on real sockets (issue 10): a link cut and refused through a TCP
//! proxy, a half-open link, the relay killed with SIGKILL in the middle of a
//! stream, a device process killed in a call, a relay or a device whose disk
//! is full.
//! Every device here is a `termphone headless` process unless it needs a
//! setting of the engine's.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use termphone::client::engine::{ChatCommand, Command, EngineConfig};
use termphone::client::event::{Event, LinkState};
use termphone::config::RelayConfig;
use termphone::ids::{DEV_APP_ID, Platform, UserId};
use termphone::protocol::{ClientMsg, ServerMsg};
use termphone::relay::store::Store;

use crate::common::headless::{Headless, termphone};
use crate::common::net::{Device, Proxy, RawPeer, relay_at, test_config, ticket};

const MESSAGES: usize = 1000;

/// Sends `count` numbered messages from `from` to `to`, all at once.
async fn send_numbered(from: &mut Headless, to: &str, count: usize) {
    let mut lines = String::new();
    for k in 0..count {
        let cmd = json!({"cmd": "sendMessage", "userID": to, "text": format!("m{k}")});
        lines.push_str(&format!("{cmd}\n"));
    }
    from.write(lines.as_bytes()).await;
}

/// The texts of the next `count` events named `name`, skipping the others.
async fn texts_of(h: &mut Headless, name: &str, count: usize) -> Vec<String> {
    let mut texts = Vec::with_capacity(count);
    while texts.len() < count {
        let e = h.expect(name).await;
        texts.push(e["text"].as_str().unwrap().to_owned());
    }
    texts
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("m{k}")).collect()
}

/// Asserts that `texts` are `m0`, `m1`, ... `m{n-1}`; on failure, says
/// where they part.
fn assert_numbered(what: &str, texts: &[String], n: usize) {
    let expected = numbered(n);
    if let Some(at) = (0..texts.len().max(n)).find(|&i| texts.get(i) != expected.get(i)) {
        let around = |v: &[String]| v[at.saturating_sub(3)..(at + 4).min(v.len())].join(" ");
        let later = texts.iter().position(|t| Some(t) == expected.get(at));
        panic!(
            "{what}: {} texts; they part at {at}: got [{}], expected [{}]; the expected one is at {later:?}",
            texts.len(),
            around(texts),
            around(&expected)
        );
    }
}

/// Asserts that no further MESSAGE_RECEIVED comes: everything up to an
/// answer to a request sent now arrives first. A device that is still
/// reconnecting refuses the request; it is asked again once it has synced.
async fn no_more_messages(h: &mut Headless) {
    h.send(json!({"cmd": "getUsers"})).await;
    loop {
        let e = h.next().await.unwrap();
        match e["event"].as_str().unwrap() {
            "USERS" => return,
            "ERROR" if e["cmd"] == "getUsers" => {
                h.expect("SYNCED").await;
                h.send(json!({"cmd": "getUsers"})).await;
            }
            "MESSAGE_RECEIVED" => panic!("received again: {e}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_device_cut_off_for_4_s_gets_every_acknowledged_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let purl = proxy.url();
    let url = relay.url();
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &purl, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let mut alice = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "a1"],
    );
    alice.expect("SYNCED").await;

    // The link resets, and the network refuses bob for 4 s.
    proxy.refuse(Duration::from_secs(4));
    proxy.cut();
    assert_eq!(
        bob.expect("CONNECTION_CHANGED").await["state"],
        "reconnecting"
    );
    send_numbered(&mut alice, "bob", MESSAGES).await;
    assert_eq!(
        texts_of(&mut alice, "MESSAGE_SENT", MESSAGES).await,
        numbered(MESSAGES)
    );

    assert_eq!(bob.expect("CONNECTION_CHANGED").await["state"], "connected");
    assert_eq!(
        texts_of(&mut bob, "MESSAGE_RECEIVED", MESSAGES).await,
        numbered(MESSAGES)
    );
    no_more_messages(&mut bob).await;
    relay.shutdown().await;
}

/// A relay as its own process, so that it can be killed.
struct RelayProcess {
    child: tokio::process::Child,
    port: u16,
}

impl RelayProcess {
    async fn start(home: &std::path::Path, port: u16) -> RelayProcess {
        let db = home.join("relay.sqlite3");
        let child = termphone(home)
            .args(["relay", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return RelayProcess { child, port };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the relay never listened on {port}");
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    async fn kill_9(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_relay_killed_in_the_middle_of_a_stream_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = RelayProcess::start(dir.path(), port).await;
    let url = relay.url();
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let mut alice = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "a1"],
    );
    alice.expect("SYNCED").await;

    send_numbered(&mut alice, "bob", MESSAGES).await;
    let before = texts_of(&mut alice, "MESSAGE_SENT", 300).await;
    relay.kill_9().await;
    let relay = RelayProcess::start(dir.path(), port).await;
    let after = texts_of(&mut alice, "MESSAGE_SENT", MESSAGES - 300).await;
    assert_numbered("alice's MESSAGE_SENT", &[before, after].concat(), MESSAGES);

    let received = texts_of(&mut bob, "MESSAGE_RECEIVED", MESSAGES).await;
    assert_numbered("bob's MESSAGE_RECEIVED", &received, MESSAGES);
    no_more_messages(&mut bob).await;
    relay.kill_9().await;
}

#[tokio::test]
async fn a_device_killed_in_a_call_is_back_in_it_when_it_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let bob_args = ["--relay", &url, "--user", "bob", "--device", "b1"];
    let mut alice = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "a1"],
    );
    alice.expect("SYNCED").await;
    let mut bob = Headless::spawn(dir.path(), &bob_args);
    bob.expect("SYNCED").await;
    bob.send(json!({"cmd": "call", "userID": "alice"})).await;
    alice.expect("ON_CALL_RECEIVED").await;
    alice.send(json!({"cmd": "accept"})).await;
    alice.expect("ON_CALL_BEGIN").await;
    bob.expect("ON_CALL_BEGIN").await;

    // kill -9, then the same device again.
    bob.child.kill().await.unwrap();
    let mut bob = Headless::spawn(dir.path(), &bob_args);
    let back = tokio::time::timeout(Duration::from_secs(5), bob.expect("ON_CALL_BEGIN"))
        .await
        .expect("back in the call within 5 s");
    assert_eq!(back["callRole"], "caller");
    bob.send(json!({"cmd": "hangup"})).await;
    bob.expect("CALLING_END").await;
    // alice was in the call all along, and sees it end now.
    let end = alice.expect("CALLING_END").await;
    assert!(end["totalTime"].as_u64().is_some());
    relay.shutdown().await;
}

/// A call whose link to the relay was down a while says so in its figures:
/// the time (`outageMs`), and the others' voice that could not come counted
/// as lost, in `lossPercent` and the MOS. The other side's link never was.
#[tokio::test]
async fn a_calls_figures_count_the_time_its_link_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let device = |url: &str, user: &str| {
        let args = ["--relay", url, "--user", user, "--device", user];
        let audio = ["--audio-in", "tone:440", "--audio-out", "null"];
        Headless::spawn(dir.path(), &[&args[..], &audio[..]].concat())
    };
    let mut alice = device(&relay.url(), "alice");
    let mut bob = device(&proxy.url(), "bob");
    alice.expect("SYNCED").await;
    bob.expect("SYNCED").await;
    alice.send(json!({"cmd": "call", "userID": "bob"})).await;
    bob.expect("ON_CALL_RECEIVED").await;
    bob.send(json!({"cmd": "accept"})).await;
    bob.expect("ON_CALL_BEGIN").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.refuse(Duration::from_secs(3));
    proxy.cut();
    let state = |e: serde_json::Value| e["state"].as_str().unwrap().to_owned();
    assert_eq!(
        state(bob.expect("CONNECTION_CHANGED").await),
        "reconnecting"
    );
    assert_eq!(state(bob.expect("CONNECTION_CHANGED").await), "connected");
    tokio::time::sleep(Duration::from_secs(1)).await;
    async fn figures(device: &mut Headless) -> serde_json::Value {
        device.send(json!({"cmd": "getMediaStats"})).await;
        device.expect("MEDIA_STATS").await
    }
    let seen = figures(&mut bob).await;
    let outage = seen["outageMs"].as_u64().unwrap();
    assert!((2_500..15_000).contains(&outage), "{seen}");
    assert!(seen["lossPercent"].as_f64().unwrap() >= 30.0, "{seen}");
    assert!(seen["mos"].as_f64().unwrap() < 3.5, "{seen}");
    let seen = figures(&mut alice).await;
    assert_eq!(seen["outageMs"], 0, "{seen}");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_half_open_link_is_noticed_by_the_heartbeat_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let config = EngineConfig {
        heartbeat_interval_ms: 300,
        heartbeat_ack_timeout_ms: 300,
        ..EngineConfig::new(DEV_APP_ID, Platform::terminal())
    };
    let mut bob = Device::with_config(&proxy.url(), config);
    bob.login_with("bob", "b1", ticket(DEV_APP_ID, "bob", 3600));
    bob.expect("SYNCED").await;
    let alice = Device::online(&relay.url(), "alice", "a1").await;

    // The network stops carrying bob's link; nobody closes anything.
    proxy.stall(true);
    for k in 0..5 {
        alice.send(Command::Chat(ChatCommand::SendMessage {
            to: UserId::parse("bob").unwrap(),
            text: format!("m{k}"),
            client_msg_id: None,
        }));
    }
    match bob.expect("CONNECTION_CHANGED").await {
        Event::ConnectionChanged { state } => assert_eq!(state, LinkState::Reconnecting),
        _ => unreachable!(),
    }
    proxy.stall(false);
    bob.expect("CONNECTION_CHANGED").await;
    let mut texts = Vec::new();
    while texts.len() < 5 {
        if let Event::MessageReceived { text, .. } = bob.expect("MESSAGE_RECEIVED").await {
            texts.push(text);
        }
    }
    assert_eq!(texts, numbered(5));
    relay.shutdown().await;
}

/// A device whose disk is full says which messages it could not keep, shows
/// them all the same, and is sent them again when it starts with room: none
/// lost, and a script can tell (msgID) what it saw twice.
#[tokio::test]
async fn a_device_on_a_full_disk_says_what_it_could_not_keep_and_gets_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let bob_args = ["--relay", &url, "--user", "bob", "--device", "b1"];
    let mut bob = Headless::spawn_with_files_up_to(dir.path(), &bob_args, 192 * 1024);
    bob.expect("SYNCED").await;
    let mut alice = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "a1"],
    );
    alice.expect("SYNCED").await;
    let count = 8;
    for k in 0..count {
        let text = format!("{k}{}", "y".repeat(40_000));
        alice
            .send(json!({"cmd": "sendMessage", "userID": "bob", "text": text}))
            .await;
        alice.expect("MESSAGE_SENT").await;
    }
    // Each message is said; one that was not kept is said after an ERROR
    // naming it.
    let (mut said, mut unkept) = (Vec::new(), Vec::new());
    let mut failure = None;
    while said.len() < count {
        let e = bob.next().await.expect("bob goes on");
        match e["event"].as_str().unwrap() {
            "ERROR" => {
                assert_eq!(e["code"], 6300, "{e}");
                failure = Some(e["message"].as_str().unwrap().to_owned());
            }
            "MESSAGE_RECEIVED" => {
                let id = e["msgID"].as_str().unwrap().to_owned();
                if let Some(message) = failure.take() {
                    assert!(message.contains(&format!("message {id}")), "{message}");
                    unkept.push(id.clone());
                }
                said.push(id);
            }
            _ => {}
        }
    }
    assert!(
        !unkept.is_empty(),
        "{count} messages of 40 KB fit in 192 KiB"
    );
    bob.send(json!({"cmd": "quit"})).await;
    bob.exits_cleanly().await;

    // With room again, every message not kept comes again, as offline.
    let mut bob = Headless::spawn(dir.path(), &bob_args);
    let mut again = Vec::new();
    loop {
        let e = bob.next().await.expect("bob starts");
        match e["event"].as_str().unwrap() {
            "MESSAGE_RECEIVED" => {
                assert_eq!(e["offline"], true, "{e}");
                again.push(e["msgID"].as_str().unwrap().to_owned());
            }
            "SYNCED" => break,
            _ => {}
        }
    }
    for id in &unkept {
        assert!(again.contains(id), "{id} not sent again: {again:?}");
    }
    let history = {
        bob.send(json!({"cmd": "getMessages", "userID": "alice", "count": 20}))
            .await;
        bob.expect("MESSAGES").await
    };
    let kept: Vec<&str> = (history["messages"].as_array().unwrap().iter())
        .map(|m| m["msgID"].as_str().unwrap())
        .collect();
    assert_eq!(kept, said, "bob keeps every message, in order");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_is_an_error_for_each_message_and_nothing_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // A disk with room for a few messages: writes beyond fail as full.
    let store = Store::open(&dir.path().join("r.db")).unwrap();
    store.limit_size(256 * 1024).unwrap();
    let config = RelayConfig {
        admin_token: Some("t".into()),
        ..test_config()
    };
    let relay = termphone::relay::start(&config, store).await.unwrap();
    let url = relay.url();
    let mut alice = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "alice", "--device", "a1"],
    );
    alice.expect("SYNCED").await;
    let mut bob = Headless::spawn(
        dir.path(),
        &["--relay", &url, "--user", "bob", "--device", "b1"],
    );
    bob.expect("SYNCED").await;
    let big = "x".repeat(60 * 1024);
    let mut refused = 0;
    for k in 0..20 {
        let id = format!("c{k}");
        alice
            .send(json!({"cmd": "sendMessage", "userID": "bob", "text": big, "clientMsgID": id}))
            .await;
        loop {
            let e = alice.next().await.unwrap();
            match e["event"].as_str().unwrap() {
                "MESSAGE_SENT" => break,
                "ERROR" => {
                    assert_eq!(
                        (e["code"].clone(), e["clientMsgID"].clone()),
                        (json!(90008), json!(id))
                    );
                    refused += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    assert!(refused > 0, "1.2 MB went into a 256 KiB database");

    // The admin API hears the same, and never `admin_sent`.
    let mut admin = RawPeer::connect(&url).await;
    admin
        .send(&ClientMsg::AdminSend {
            token: "t".into(),
            app: DEV_APP_ID,
            from: "alice".into(),
            to: "bob".into(),
            text: big.clone(),
            include_sender: false,
        })
        .await;
    match admin.recv().await {
        ServerMsg::Error { error, request, .. } => {
            assert_eq!(
                (error.code, request.as_deref()),
                (90008, Some("admin_send"))
            );
        }
        other => panic!("{other:?}"),
    }
    drop(bob);
    relay.shutdown().await;
}
