//! The chat rules over real WebSockets: a relay on 127.0.0.1:0, devices
//! in-process or as `termphone headless` processes with their real local
//! stores, and one relay killed with SIGKILL.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use termphone::client::engine::{ChatCommand, Command};
use termphone::client::event::Event;
use termphone::config::RelayConfig;
use termphone::ids::UserId;
use termphone::protocol::{
    self, ClientMsg, MAX_MESSAGE_TEXT_BYTES, MAX_TRANSPORT_MESSAGE_BYTES, ServerMsg,
};
use tokio_tungstenite::tungstenite::Message;

use crate::common::headless::{Headless, termphone};
use crate::common::net::{Device, RawPeer, WAIT, relay_at, test_config, ticket};

fn send(to: &str, text: &str) -> Command {
    Command::Chat(ChatCommand::SendMessage {
        to: UserId::parse(to).unwrap(),
        text: text.into(),
        client_msg_id: None,
    })
}

fn text_of(e: &Event) -> (String, String, bool) {
    match e {
        Event::MessageReceived {
            from,
            text,
            offline,
            ..
        } => (from.to_string(), text.clone(), *offline),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_message_reaches_the_recipients_devices_and_the_senders_others() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut a1 = Device::online(&url, "alice", "a1").await;
    let mut a2 = Device::online(&url, "alice", "a2").await;
    let mut b1 = Device::online(&url, "bob", "b1").await;
    let mut b2 = Device::online(&url, "bob", "b2").await;
    a1.send(send("bob", "hello over the wire"));
    match a1.expect("MESSAGE_SENT").await {
        Event::MessageSent { text, to, .. } => {
            assert_eq!((to.as_str(), text.as_str()), ("bob", "hello over the wire"))
        }
        _ => unreachable!(),
    }
    for d in [&mut a2, &mut b1, &mut b2] {
        let e = d.expect("MESSAGE_RECEIVED").await;
        assert_eq!(
            text_of(&e),
            ("alice".into(), "hello over the wire".into(), false)
        );
    }
    // Typing reaches the connected devices of the other user.
    a2.send(Command::Chat(ChatCommand::Typing {
        to: UserId::parse("bob").unwrap(),
    }));
    b1.expect("TYPING").await;
    b2.expect("TYPING").await;
    // Reading on one of bob's devices tells the other.
    b1.send(Command::Chat(ChatCommand::MarkRead {
        peer: UserId::parse("alice").unwrap(),
    }));
    b2.expect("CONVERSATION_READ").await;
    relay.shutdown().await;
}

#[tokio::test]
async fn the_relay_refuses_bad_messages_with_codes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let _bob = Device::online(&relay.url(), "bob", "b1").await;
    let mut raw = RawPeer::connect(&relay.url()).await;
    raw.send(&ClientMsg::Login {
        app: termphone::ids::DEV_APP_ID,
        user: "alice".into(),
        device: "raw".into(),
        platform: "terminal".into(),
        user_sig: ticket(termphone::ids::DEV_APP_ID, "alice", 3600),
    })
    .await;
    assert!(matches!(raw.recv().await, ServerMsg::LoginOk { .. }));
    let mut code_for = async |to: &str, text: String| {
        raw.send(&ClientMsg::SendMessage {
            to: to.into(),
            text,
            client_msg_id: "c".into(),
        })
        .await;
        loop {
            match raw.recv().await {
                ServerMsg::Error {
                    error,
                    request,
                    client_msg_id,
                } => {
                    assert_eq!(request.as_deref(), Some("send_message"));
                    assert_eq!(client_msg_id.as_deref(), Some("c"));
                    return error.code;
                }
                ServerMsg::Entries { .. }
                | ServerMsg::Synced { .. }
                | ServerMsg::CallState { .. } => continue,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(
        code_for("bob", "x".repeat(MAX_MESSAGE_TEXT_BYTES + 1)).await,
        6403
    );
    assert_eq!(code_for("bob", String::new()).await, 6402);
    assert_eq!(code_for("ghost", "hi".into()).await, 6401);
    relay.shutdown().await;
}

/// Text within the byte limit whose JSON would not fit in a frame (control
/// characters take 6 bytes there) is refused with its `clientMsgID` before
/// it leaves, and the next message goes as usual: the relay never sees a
/// frame it would have to refuse, or a device one it would cut.
#[tokio::test]
async fn text_that_escapes_past_a_frame_is_refused_and_the_next_sent() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut alice = Headless::spawn(dir.path(), &["--relay", &url, "--user", "alice"]);
    wait_for_ready(&mut alice).await;
    for count in [30_000, 65_536] {
        alice
            .send(json!({"cmd": "sendMessage", "userID": "alice", "text": "\u{1}".repeat(count), "clientMsgID": format!("big{count}")}))
            .await;
        let e = alice.expect("ERROR").await;
        assert_eq!(e["code"], 6403, "{e}");
        assert_eq!(e["clientMsgID"], format!("big{count}"), "{e}");
    }
    alice
        .send(
            json!({"cmd": "sendMessage", "userID": "alice", "text": "next", "clientMsgID": "next"}),
        )
        .await;
    assert_eq!(alice.expect("MESSAGE_SENT").await["clientMsgID"], "next");
    alice.send(json!({"cmd": "quit"})).await;
    alice.exits_cleanly().await;
    relay.shutdown().await;
}

/// A script that writes its messages and ends its input sees every one of
/// them `MESSAGE_SENT` before the device logs out: none is dropped with the
/// ones still waiting for the send window, and the peer gets them all.
#[tokio::test]
async fn messages_written_before_the_end_of_input_are_all_sent() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut bob = Headless::spawn(dir.path(), &["--relay", &url, "--user", "bob"]);
    wait_for_ready(&mut bob).await;
    let mut alice = Headless::spawn(dir.path(), &["--relay", &url, "--user", "alice"]);
    alice
        .send(json!({"cmd": "wait", "event": "SDK_READY"}))
        .await;
    const COUNT: usize = 200;
    for k in 0..COUNT {
        alice
            .send(json!({"cmd": "sendMessage", "userID": "bob", "text": format!("m{k}"), "clientMsgID": format!("c{k}")}))
            .await;
    }
    alice.close_stdin();
    let mut sent = Vec::new();
    let mut logged_out = false;
    while let Some(e) = alice.next().await {
        match e["event"].as_str().unwrap() {
            "MESSAGE_SENT" => {
                assert!(!logged_out, "MESSAGE_SENT after the logout");
                sent.push(e["clientMsgID"].as_str().unwrap().to_owned());
            }
            "LOGIN_STATUS_CHANGED" if e["status"] == "LOGOUT" => logged_out = true,
            _ => {}
        }
    }
    let written: Vec<String> = (0..COUNT).map(|k| format!("c{k}")).collect();
    assert_eq!(sent, written, "every message MESSAGE_SENT, in order");
    assert!(logged_out, "then the logout");
    alice.exits_cleanly().await;
    for k in 0..COUNT {
        let e = bob.expect("MESSAGE_RECEIVED").await;
        assert_eq!(e["text"], format!("m{k}"));
    }
    relay.shutdown().await;
}

/// A device killed (`kill -9`) right after it printed `MESSAGE_SENT` for a
/// burst of its messages finds them in its local store when it starts
/// again, its sync position past them: none comes back to it as a message
/// received from its own user.
#[tokio::test]
async fn messages_said_sent_before_a_kill_are_not_received_back() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut bob = Headless::spawn(dir.path(), &["--relay", &url, "--user", "bob"]);
    wait_for_ready(&mut bob).await;
    let device = || {
        Headless::spawn(
            dir.path(),
            &["--relay", &url, "--user", "alice", "--device", "a1"],
        )
    };
    let mut alice = device();
    wait_for_ready(&mut alice).await;
    const COUNT: usize = 50;
    for k in 0..COUNT {
        alice
            .send(json!({"cmd": "sendMessage", "userID": "bob", "text": format!("m{k}")}))
            .await;
    }
    for _ in 0..COUNT {
        alice.expect("MESSAGE_SENT").await;
    }
    alice.kill().await;
    let mut alice = device();
    loop {
        let e = alice.next().await.unwrap();
        assert_ne!(e["event"], "MESSAGE_RECEIVED", "{e}");
        if e["event"] == "SYNCED" {
            break;
        }
    }
    alice
        .send(json!({"cmd": "getMessages", "userID": "bob", "count": 100}))
        .await;
    let page = alice.expect("MESSAGES").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), COUNT);
    alice.send(json!({"cmd": "quit"})).await;
    while let Some(e) = alice.next().await {
        assert_ne!(e["event"], "MESSAGE_RECEIVED", "{e}");
    }
    relay.shutdown().await;
}

async fn wait_for_ready(h: &mut Headless) {
    h.expect("SDK_READY").await;
    h.expect("SYNCED").await;
}

#[tokio::test]
async fn away_back_wiped_and_recalled_with_real_local_stores() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let device = |user: &str, dev: &str| {
        Headless::spawn(
            dir.path(),
            &["--relay", &url, "--user", user, "--device", dev],
        )
    };
    let mut alice = device("alice", "a1");
    wait_for_ready(&mut alice).await;
    let mut bob = device("bob", "b1");
    wait_for_ready(&mut bob).await;
    bob.send(json!({"cmd": "quit"})).await;
    bob.exits_cleanly().await;

    let mut sent = Vec::new();
    for k in 1..=3 {
        alice
            .send(json!({"cmd": "sendMessage", "userID": "bob", "text": format!("m{k}")}))
            .await;
        sent.push(
            alice.expect("MESSAGE_SENT").await["msgID"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    alice
        .send(json!({"cmd": "recallMessage", "msgID": sent[1]}))
        .await;
    assert_eq!(alice.expect("MESSAGE_RECALLED").await["msgID"], sent[1]);

    // Back: what it missed, once, in order; the recalled one without its text.
    let mut bob = device("bob", "b1");
    let mut got = Vec::new();
    loop {
        let e = bob.next().await.unwrap();
        match e["event"].as_str().unwrap() {
            "MESSAGE_RECEIVED" => {
                assert_eq!(e["offline"], true);
                got.push(e["text"].as_str().unwrap().to_owned());
            }
            "MESSAGE_RECALLED" => got.push(format!("recalled {}", e["msgID"] == sent[1])),
            "SYNCED" => break,
            _ => {}
        }
    }
    assert_eq!(got, ["m1", "", "m3", "recalled true"]);
    bob.send(json!({"cmd": "getConversations"})).await;
    let convs = bob.expect("CONVERSATIONS").await;
    assert_eq!(convs["conversations"][0]["userID"], "alice");
    assert_eq!(convs["conversations"][0]["unreadCount"], 2);
    bob.send(json!({"cmd": "getMessages", "userID": "alice"}))
        .await;
    let msgs = bob.expect("MESSAGES").await;
    let shown: Vec<(Value, Value)> = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["text"].clone(), m["recalled"].clone()))
        .collect();
    assert_eq!(
        shown,
        [
            (json!("m1"), json!(false)),
            (json!(""), json!(true)),
            (json!("m3"), json!(false))
        ]
    );
    bob.send(json!({"cmd": "quit"})).await;
    bob.exits_cleanly().await;

    // Back again: nothing twice.
    let mut bob = device("bob", "b1");
    bob.expect("SDK_READY").await;
    let mut repeated = 0;
    loop {
        let e = bob.next().await.unwrap();
        match e["event"].as_str().unwrap() {
            "MESSAGE_RECEIVED" | "MESSAGE_RECALLED" => repeated += 1,
            "SYNCED" => break,
            _ => {}
        }
    }
    assert_eq!(repeated, 0);
    bob.send(json!({"cmd": "quit"})).await;
    bob.exits_cleanly().await;

    // Wiped (a reinstall): the window again, from scratch.
    let profile = dir
        .path()
        .join("data/termphone/profiles/1400000000/bob/b1/local.sqlite3");
    assert!(profile.exists(), "{}", profile.display());
    std::fs::remove_file(&profile).unwrap();
    let mut bob = device("bob", "b1");
    let mut count = 0;
    loop {
        let e = bob.next().await.unwrap();
        match e["event"].as_str().unwrap() {
            "MESSAGE_RECEIVED" => count += 1,
            "SYNCED" => break,
            _ => {}
        }
    }
    assert_eq!(count, 3);
    relay.shutdown().await;
}

#[tokio::test]
async fn server_side_send_through_the_admin_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        admin_token: Some("a-test-admin-token-of-some-length".into()),
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let mut alice = Device::online(&relay.url(), "alice", "a1").await;
    let mut bob = Device::online(&relay.url(), "bob", "b1").await;
    let admin = |extra: &[&str], token: &str| {
        let mut cmd = termphone(dir.path());
        cmd.args([
            "admin",
            "send",
            "--relay",
            &relay.url(),
            "--token",
            token,
            "--from",
            "alice",
            "--to",
            "bob",
            "--text",
            "from the server",
        ])
        .args(extra)
        .stdout(Stdio::piped());
        cmd
    };
    let out = admin(&[], "a-test-admin-token-of-some-length")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    match bob.expect("MESSAGE_RECEIVED").await {
        Event::MessageReceived {
            msg_id: id, text, ..
        } => assert_eq!((id, text.as_str()), (msg_id, "from the server")),
        _ => unreachable!(),
    }
    alice
        .expect_silence(std::time::Duration::from_millis(300))
        .await;

    let out = admin(&["--include-sender"], "a-test-admin-token-of-some-length")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    bob.expect("MESSAGE_RECEIVED").await;
    alice.expect("MESSAGE_RECEIVED").await;

    let out = admin(&[], "the-wrong-token-entirely")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("6410"));

    // The token from the environment, where `ps` does not show it.
    let out = termphone(dir.path())
        .env("TERMPHONE_ADMIN_TOKEN", "a-test-admin-token-of-some-length")
        .args(["admin", "send", "--relay", &relay.url()])
        .args([
            "--from",
            "alice",
            "--to",
            "bob",
            "--text",
            "from the environment",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    match bob.expect("MESSAGE_RECEIVED").await {
        Event::MessageReceived { text, .. } => assert_eq!(text, "from the environment"),
        _ => unreachable!(),
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn an_acknowledged_message_survives_a_sigkill_of_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let start = || {
        termphone(dir.path())
            .args(["relay", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let url_of = async |child: &mut tokio::process::Child| {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        line.strip_prefix("listening on ").unwrap().to_owned()
    };
    let mut relay = start();
    let url = url_of(&mut relay).await;
    drop(Device::online(&url, "bob", "b1").await);
    let mut alice = Device::online(&url, "alice", "a1").await;
    alice.send(send("bob", "must not be lost"));
    alice.expect("MESSAGE_SENT").await;
    relay.start_kill().unwrap();
    relay.wait().await.unwrap();

    let mut relay = start();
    let url = url_of(&mut relay).await;
    // A new device of bob catches up with it while logging in.
    let bob = Device::online(&url, "bob", "b2").await;
    let caught_up: Vec<_> = bob
        .seen
        .iter()
        .filter(|e| e.name() == "MESSAGE_RECEIVED")
        .map(text_of)
        .collect();
    assert_eq!(
        caught_up,
        [("alice".into(), "must not be lost".into(), true)]
    );
    relay.start_kill().unwrap();
}

#[tokio::test]
async fn resend_sync_off_typing_and_recall_refusals_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.apps[0].multi_device_sync = false;
    // A zero-second recall window: any recall by the sender comes too late.
    config.apps[0].recall_window_secs = 0;
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut a2 = Device::online(&url, "alice", "a2").await;
    let mut b1 = Device::online(&url, "bob", "b1").await;
    let mut b2 = Device::online(&url, "bob", "b2").await;

    // Sent twice under one client id (a resend after a lost ack): stored once.
    let mut raw = RawPeer::connect(&url).await;
    raw.send(&ClientMsg::Login {
        app: termphone::ids::DEV_APP_ID,
        user: "alice".into(),
        device: "a1".into(),
        platform: "terminal".into(),
        user_sig: ticket(termphone::ids::DEV_APP_ID, "alice", 3600),
    })
    .await;
    assert!(matches!(raw.recv().await, ServerMsg::LoginOk { .. }));
    let msg = ClientMsg::SendMessage {
        to: "bob".into(),
        text: "once".into(),
        client_msg_id: "same".into(),
    };
    raw.send(&msg).await;
    raw.send(&msg).await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        if let ServerMsg::MessageSent { msg_id, .. } = raw.recv().await {
            ids.push(msg_id);
        }
    }
    assert_eq!(ids[0], ids[1], "the resend gets the first msgID");

    // Sync off: one device of bob (the latest login) gets it, once; alice's
    // other device gets no mirror.
    let e = b2.expect("MESSAGE_RECEIVED").await;
    assert_eq!(text_of(&e).1, "once");
    b1.expect_silence(std::time::Duration::from_millis(300))
        .await;
    a2.expect_silence(std::time::Duration::from_millis(100))
        .await;

    // Typing: only devices connected now.
    b1.send(Command::Logout);
    b1.expect("LOGIN_STATUS_CHANGED").await;
    a2.send(Command::Chat(ChatCommand::Typing {
        to: UserId::parse("bob").unwrap(),
    }));
    b2.expect("TYPING").await;
    let b1 = Device::online(&url, "bob", "b1").await;
    assert!(b1.seen.iter().all(|e| e.name() != "TYPING"));

    // Recall refusals: someone else's message, and after the window.
    b2.send(Command::Chat(ChatCommand::RecallMessage {
        msg_id: ids[0].clone(),
    }));
    match b2.expect("ERROR").await {
        Event::Error { code, .. } => assert_eq!(code, 6405),
        _ => unreachable!(),
    }
    raw.send(&ClientMsg::RecallMessage {
        msg_id: ids[0].clone(),
    })
    .await;
    loop {
        match raw.recv().await {
            ServerMsg::Error { error, .. } => {
                assert_eq!(error.code, 6406);
                break;
            }
            ServerMsg::MessageSent { .. }
            | ServerMsg::Entries { .. }
            | ServerMsg::Synced { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn a_read_receipt_crosses_real_sockets_and_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let device = |user: &str, dev: &str| {
        Headless::spawn(
            dir.path(),
            &["--relay", &url, "--user", user, "--device", dev],
        )
    };
    let mut alice = device("alice", "a1");
    wait_for_ready(&mut alice).await;
    let mut bob = device("bob", "b1");
    wait_for_ready(&mut bob).await;
    alice
        .send(json!({"cmd": "sendMessage", "userID": "bob", "text": "seen it?"}))
        .await;
    let sent_at = alice.expect("MESSAGE_SENT").await["timestamp"]
        .as_u64()
        .unwrap();
    bob.expect("MESSAGE_RECEIVED").await;
    bob.send(json!({"cmd": "markRead", "userID": "alice"}))
        .await;
    bob.expect("CONVERSATION_READ").await;

    let receipt = alice.expect("C2C_READ_RECEIPT").await;
    let mut keys: Vec<&str> = receipt
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["event", "seq", "timestamp", "ts", "userID"],
        "{receipt}"
    );
    assert_eq!(receipt["userID"], "bob");
    let read_at = receipt["timestamp"].as_u64().unwrap();
    assert!(read_at >= sent_at, "{receipt}");
    alice.send(json!({"cmd": "quit"})).await;
    alice.exits_cleanly().await;

    // The same device again: its local store remembers how far bob read,
    // and the receipt does not come twice.
    let mut alice = device("alice", "a1");
    alice.expect("SDK_READY").await;
    loop {
        let e = alice.next().await.unwrap();
        assert_ne!(e["event"], "C2C_READ_RECEIPT", "{e}");
        if e["event"] == "SYNCED" {
            break;
        }
    }
    alice.send(json!({"cmd": "getConversations"})).await;
    let convs = alice.expect("CONVERSATIONS").await;
    assert_eq!(convs["conversations"][0]["userID"], "bob");
    assert_eq!(convs["conversations"][0]["peerRead"], read_at);

    // Another device of alice, new: the receipt comes with its catch-up.
    let mut other = device("alice", "a2");
    let late = other.expect("C2C_READ_RECEIPT").await;
    assert_eq!(
        (&late["userID"], &late["timestamp"]),
        (&json!("bob"), &json!(read_at))
    );
    other.expect("SYNCED").await;
    relay.shutdown().await;
}

/// A conversation of long messages came back as one `history` frame past
/// what any client accepts (394 KB for six), so the device that asked was
/// cut off, and asked again on every reconnect. Pages now stop near 48 KiB.
#[tokio::test]
async fn a_history_of_long_messages_comes_in_pages_a_client_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut bob = RawPeer::logged_in(&relay.url(), "bob", "b1").await;
    let mut alice = RawPeer::logged_in(&relay.url(), "alice", "a1").await;
    for k in 0..6 {
        let text = format!("{k}{}", "x".repeat(MAX_MESSAGE_TEXT_BYTES - 1));
        alice
            .send(&ClientMsg::SendMessage {
                to: "bob".into(),
                text,
                client_msg_id: format!("c{k}"),
            })
            .await;
        while !matches!(alice.recv().await, ServerMsg::MessageSent { .. }) {}
        // Pages are asked for by time: messages of one millisecond stay
        // together, which `relay::store` tests on its own.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        bob.send(&ClientMsg::History {
            peer: "alice".into(),
            before,
            count: 10,
        })
        .await;
        let (size, messages, more) = loop {
            match bob.recv_raw().await {
                Some(Ok(Message::Text(t))) => match protocol::decode(&t).unwrap() {
                    ServerMsg::History { messages, more, .. } => break (t.len(), messages, more),
                    _ => continue,
                },
                Some(Ok(_)) => continue,
                other => panic!("bob was cut off: {other:?}"),
            }
        };
        assert!(
            size < MAX_TRANSPORT_MESSAGE_BYTES / 2,
            "a page of {size} bytes"
        );
        before = messages.first().map(|m| m.server_time);
        pages.push(
            (messages.iter())
                .map(|m| m.text[..1].to_owned())
                .collect::<String>(),
        );
        if !more {
            break;
        }
    }
    // A page each, newest first, none lost; and bob is still connected.
    assert_eq!(pages, ["5", "4", "3", "2", "1", "0"]);
    bob.send(&ClientMsg::Heartbeat).await;
    while bob.recv().await != ServerMsg::HeartbeatAck {}

    // A device asking for more than a page gets them all in one answer (the
    // engine follows the pages), and no more than it asked for.
    let mut device = Device::online(&relay.url(), "bob", "b2").await;
    let alice_id = UserId::parse("alice").unwrap();
    for (count, expected) in [(10, "012345"), (4, "2345")] {
        device.send(Command::Chat(ChatCommand::GetMessages {
            peer: alice_id.clone(),
            before: None,
            count,
        }));
        let Event::Messages { messages, .. } = device.expect("MESSAGES").await else {
            unreachable!()
        };
        let firsts: String = messages.iter().map(|m| &m.text[..1]).collect();
        assert_eq!(firsts, expected, "count {count}");
    }
    relay.shutdown().await;
}
