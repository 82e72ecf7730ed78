//! The chat rules of SPEC section 4 on virtual time, with a real (in-memory)
//! SQLite store behind the relay core.

use termphone::client::engine::{ChatCommand, Command};
use termphone::client::event::Event;
use termphone::config::{AppConfig, RelayConfig};
use termphone::ids::{DEV_APP_ID, UserId};

use crate::common::mesh::Mesh;

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn send(to: &str, text: &str) -> Command {
    Command::Chat(ChatCommand::SendMessage {
        to: user(to),
        text: text.into(),
        client_msg_id: None,
    })
}

const DAY: u64 = 24 * 3600 * 1000;

/// alice on a1, a2 and bob on b1, b2, all online.
fn two_by_two(config: &RelayConfig) -> (Mesh, [usize; 2], [usize; 2]) {
    let mut m = Mesh::new(config);
    let a = [m.online("alice", "a1"), m.online("alice", "a2")];
    let b = [m.online("bob", "b1"), m.online("bob", "b2")];
    (m, a, b)
}

#[test]
fn a_message_reaches_every_device_of_both_users() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[0], send("bob", "hi"));
    assert_eq!(m.log(a[0]), ["MESSAGE_SENT >bob hi"]);
    assert_eq!(m.log(a[1]), ["MESSAGE_RECEIVED alice>bob hi"]);
    assert_eq!(m.log(b[0]), ["MESSAGE_RECEIVED alice>bob hi"]);
    assert_eq!(m.log(b[1]), ["MESSAGE_RECEIVED alice>bob hi"]);
}

#[test]
fn a_device_that_was_away_gets_what_it_missed_once_in_order() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(b[1], Command::Logout);
    m.take(b[1]);
    for k in 1..=5 {
        m.command(a[k % 2], send("bob", &format!("m{k}")));
        m.advance(1_000);
    }
    m.command(b[0], send("alice", "reply"));
    m.login(b[1]);
    let log = m.log(b[1]);
    let chat: Vec<&str> = log
        .iter()
        .filter(|l| l.starts_with("MESSAGE"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        chat,
        [
            "MESSAGE_RECEIVED alice>bob m1 (offline)",
            "MESSAGE_RECEIVED alice>bob m2 (offline)",
            "MESSAGE_RECEIVED alice>bob m3 (offline)",
            "MESSAGE_RECEIVED alice>bob m4 (offline)",
            "MESSAGE_RECEIVED alice>bob m5 (offline)",
            "MESSAGE_RECEIVED bob>alice reply (offline)",
        ]
    );
    assert_eq!(log.last().unwrap(), "SYNCED");
    // Logging in again brings nothing twice.
    m.command(b[1], Command::Logout);
    m.login(b[1]);
    assert!(!m.log(b[1]).iter().any(|l| l.starts_with("MESSAGE")));
}

#[test]
fn a_new_or_wiped_device_gets_the_window_and_nothing_older() {
    let mut m = Mesh::dev();
    let a = m.online("alice", "a1");
    let _b = m.online("bob", "b1");
    m.command(a, send("bob", "old"));
    m.advance(2 * DAY);
    m.command(a, send("bob", "recent"));
    let fresh = m.add(DEV_APP_ID, "terminal", "bob", "b2");
    m.login(fresh);
    let chat: Vec<String> = m
        .log(fresh)
        .into_iter()
        .filter(|l| l.starts_with("MESSAGE"))
        .collect();
    assert_eq!(chat, ["MESSAGE_RECEIVED alice>bob recent (offline)"]);
}

#[test]
fn the_compensation_window_is_a_relay_setting() {
    let config = RelayConfig {
        apps: vec![AppConfig {
            compensation_window_days: 3,
            ..AppConfig::default()
        }],
        ..RelayConfig::default()
    };
    let mut m = Mesh::new(&config);
    let a = m.online("alice", "a1");
    let _b = m.online("bob", "b1");
    m.command(a, send("bob", "two days ago"));
    m.advance(2 * DAY);
    let fresh = m.add(DEV_APP_ID, "terminal", "bob", "b2");
    m.login(fresh);
    assert!(
        m.log(fresh)
            .contains(&"MESSAGE_RECEIVED alice>bob two days ago (offline)".to_string())
    );
}

#[test]
fn with_sync_off_a_message_reaches_one_device_once() {
    let config = RelayConfig {
        apps: vec![AppConfig {
            multi_device_sync: false,
            ..AppConfig::default()
        }],
        ..RelayConfig::default()
    };
    let (mut m, a, b) = two_by_two(&config);
    m.command(a[0], send("bob", "hi"));
    assert_eq!(m.log(a[0]), ["MESSAGE_SENT >bob hi"]);
    assert!(
        m.log(a[1]).is_empty(),
        "not mirrored to the sender's other device"
    );
    assert!(m.log(b[0]).is_empty());
    assert_eq!(
        m.log(b[1]),
        ["MESSAGE_RECEIVED alice>bob hi"],
        "the latest login gets it"
    );

    // Offline recipient: the first device back gets it, the next one does not.
    for d in b {
        m.command(d, Command::Logout);
        m.take(d);
    }
    m.command(a[0], send("bob", "while away"));
    m.login(b[0]);
    assert!(
        m.log(b[0])
            .contains(&"MESSAGE_RECEIVED alice>bob while away (offline)".to_string())
    );
    m.login(b[1]);
    assert!(!m.log(b[1]).iter().any(|l| l.starts_with("MESSAGE")));
}

#[test]
fn a_resend_with_the_same_client_id_is_stored_once() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    let again = || {
        Command::Chat(ChatCommand::SendMessage {
            to: user("bob"),
            text: "once".into(),
            client_msg_id: Some("c-1".into()),
        })
    };
    m.command_later(a[0], again());
    m.command_later(a[0], again());
    m.settle();
    m.command(a[0], again());
    // Every resend is acknowledged, always with the first msgID.
    let acks: Vec<String> = m
        .take(a[0])
        .into_iter()
        .map(|e| match e {
            Event::MessageSent { msg_id, .. } => msg_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        !acks.is_empty() && acks.iter().all(|id| *id == acks[0]),
        "{acks:?}"
    );
    assert_eq!(m.log(b[0]), ["MESSAGE_RECEIVED alice>bob once"]);
    assert_eq!(m.log(a[1]), ["MESSAGE_RECEIVED alice>bob once"]);
}

#[test]
fn an_unacknowledged_message_is_resent_after_a_reconnection_and_stored_once() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    // The link drops before the acknowledgement can arrive.
    m.command_later(a[0], send("bob", "lost ack"));
    m.settle();
    let first = m.take(b[0]).len();
    assert_eq!(first, 1);
    m.cut(a[0]);
    m.advance(1_000);
    let log = m.log(a[0]);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("MESSAGE_SENT")).count(),
        1,
        "{log:?}"
    );
    assert!(m.log(b[0]).is_empty(), "not delivered twice");
}

#[test]
fn typing_reaches_only_devices_online_now() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(b[1], Command::Logout);
    m.take(b[1]);
    m.command(a[0], Command::Chat(ChatCommand::Typing { to: user("bob") }));
    assert_eq!(m.log(b[0]), ["TYPING alice"]);
    m.login(b[1]);
    assert!(
        !m.log(b[1]).iter().any(|l| l.starts_with("TYPING")),
        "never stored or compensated"
    );
}

#[test]
fn a_recall_reaches_every_device_now_or_when_it_returns() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[0], send("bob", "oops"));
    let msg_id = m.last_sent(a[0]);
    for d in [a[0], a[1], b[0], b[1]] {
        m.take(d);
    }
    m.command(b[1], Command::Logout);
    m.take(b[1]);
    m.advance(60_000);
    let recall = Command::Chat(ChatCommand::RecallMessage { msg_id });
    m.command(a[0], recall.clone());
    assert_eq!(m.log(a[0]), ["MESSAGE_RECALLED with bob"]);
    assert_eq!(m.log(a[1]), ["MESSAGE_RECALLED with bob"]);
    assert_eq!(m.log(b[0]), ["MESSAGE_RECALLED with alice"]);
    // Twice: answered, so that a script waiting on it does not hang.
    m.command(a[1], recall);
    assert_eq!(m.log(a[1]), ["ERROR 6404 recallMessage"]);
    assert!(m.log(b[0]).is_empty());
    m.login(b[1]);
    assert!(
        m.log(b[1])
            .contains(&"MESSAGE_RECALLED with alice".to_string())
    );
    // A device that never saw the message gets it without its text.
    let fresh = m.add(DEV_APP_ID, "terminal", "bob", "b3");
    m.login(fresh);
    let log = m.log(fresh);
    assert!(
        log.contains(&"MESSAGE_RECEIVED alice>bob  (offline)".to_string()),
        "{log:?}"
    );
}

#[test]
fn recall_refusals() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[0], send("bob", "mine"));
    let msg_id = m.last_sent(a[0]);
    m.command(
        b[0],
        Command::Chat(ChatCommand::RecallMessage {
            msg_id: msg_id.clone(),
        }),
    );
    assert!(
        m.log(b[0])
            .contains(&"ERROR 6405 recallMessage".to_string())
    );
    m.command(
        a[0],
        Command::Chat(ChatCommand::RecallMessage {
            msg_id: "nope".into(),
        }),
    );
    assert!(
        m.log(a[0])
            .contains(&"ERROR 6404 recallMessage".to_string())
    );
    m.advance(120_001);
    m.command(a[0], Command::Chat(ChatCommand::RecallMessage { msg_id }));
    assert_eq!(m.log(a[0]), ["ERROR 6406 recallMessage"]);
}

#[test]
fn reading_on_one_device_clears_unread_on_the_others() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[0], send("bob", "hi"));
    for d in [a[0], a[1], b[0], b[1]] {
        m.take(d);
    }
    m.command(
        b[0],
        Command::Chat(ChatCommand::MarkRead {
            peer: user("alice"),
        }),
    );
    assert_eq!(m.log(b[1]), ["CONVERSATION_READ alice"]);
    assert_eq!(m.log(b[0]), ["CONVERSATION_READ alice"]);
    // The unread count is the reader's own; the sender hears a receipt.
    assert_eq!(m.log(a[0]), ["C2C_READ_RECEIPT bob"]);
}

fn mark_read(peer: &str) -> Command {
    Command::Chat(ChatCommand::MarkRead { peer: user(peer) })
}

/// The (userID, timestamp) of every C2C_READ_RECEIPT device `i` saw since
/// last asked; forgets everything it saw.
fn receipts(m: &mut Mesh, i: usize) -> Vec<(String, u64)> {
    m.take(i)
        .into_iter()
        .filter_map(|e| match e {
            Event::C2cReadReceipt {
                user_id, timestamp, ..
            } => Some((user_id.to_string(), timestamp)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_read_receipt_reaches_every_device_of_the_sender_also_one_that_was_away() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[1], Command::Logout);
    m.command(a[0], send("bob", "did you read this?"));
    for d in [a[0], a[1], b[0], b[1]] {
        m.take(d);
    }
    m.advance(5_000);
    let read_at = m.now;
    m.command(b[0], mark_read("alice"));
    // Every device of the sender, with who read and up to when.
    let receipt = || ("bob".to_string(), read_at);
    assert_eq!(receipts(&mut m, a[0]), [receipt()]);
    // The reader's devices learn it is read, and get no receipt of their own.
    assert_eq!(m.log(b[0]), ["CONVERSATION_READ alice"]);
    assert_eq!(m.log(b[1]), ["CONVERSATION_READ alice"]);
    // A device that was away gets it when it comes back, once.
    m.login(a[1]);
    assert_eq!(receipts(&mut m, a[1]), [receipt()]);
    m.command(a[1], Command::Logout);
    m.login(a[1]);
    assert!(receipts(&mut m, a[1]).is_empty(), "not twice");
    // So does a brand-new device of the sender, within the window.
    let fresh = m.add(DEV_APP_ID, "terminal", "alice", "a3");
    m.login(fresh);
    assert_eq!(receipts(&mut m, fresh), [receipt()]);
}

#[test]
fn each_mark_read_is_one_receipt_and_receipts_move_forward() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[0], send("bob", "one"));
    m.advance(1_000);
    m.command(b[1], mark_read("alice"));
    let first = m.now;
    m.command(a[1], send("bob", "two"));
    m.advance(1_000);
    m.command(b[0], mark_read("alice"));
    let second = m.now;
    for d in a {
        assert_eq!(
            receipts(&mut m, d),
            [("bob".into(), first), ("bob".into(), second)],
            "device {d}"
        );
    }
    // A read mark is about one conversation: carol's devices hear nothing.
    let c = m.online("carol", "c1");
    m.command(b[0], mark_read("carol"));
    assert_eq!(receipts(&mut m, c), [("bob".into(), m.now)]);
    for d in a {
        assert!(m.take(d).is_empty(), "alice is not told of bob and carol");
    }
}

#[test]
fn reading_the_conversation_with_oneself_sends_no_receipt() {
    let (mut m, a, _b) = two_by_two(&RelayConfig::default());
    m.command(a[0], send("alice", "a note to self"));
    for d in a {
        m.take(d);
    }
    m.command(a[0], mark_read("alice"));
    for d in a {
        assert_eq!(m.log(d), ["CONVERSATION_READ alice"], "device {d}");
    }
    let fresh = m.add(DEV_APP_ID, "terminal", "alice", "a3");
    m.login(fresh);
    let log = m.log(fresh);
    assert!(
        !log.iter().any(|l| l.starts_with("C2C_READ_RECEIPT")),
        "{log:?}"
    );
}

/// Each refusal of a message carries its `clientMsgID`, given or made by
/// the engine, whether the relay or the engine refused it.
#[test]
fn refusals_for_bad_messages() {
    let (mut m, a, _b) = two_by_two(&RelayConfig::default());
    let refusal = |m: &mut Mesh| match m.take(a[0]).as_slice() {
        [
            Event::Error {
                code,
                cmd,
                client_msg_id: Some(_),
                ..
            },
        ] => format!("ERROR {code} {}", cmd.as_deref().unwrap_or_default()),
        other => panic!("{other:?}"),
    };
    m.command(a[0], send("nobody", "hi"));
    assert_eq!(refusal(&mut m), "ERROR 6401 sendMessage");
    m.command(a[0], send("bob", ""));
    assert_eq!(refusal(&mut m), "ERROR 6402 sendMessage");
    m.command(a[0], send("bob", &"x".repeat(64 * 1024 + 1)));
    assert_eq!(refusal(&mut m), "ERROR 6403 sendMessage");
    m.command(a[0], send("bob", &"x".repeat(64 * 1024)));
    assert_eq!(m.log(a[0]).len(), 1);
}

#[test]
fn server_side_send_with_and_without_the_sender() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command(a[1], Command::Logout);
    m.take(a[1]);
    let now = m.now;
    m.relay
        .admin_send(
            now,
            0,
            DEV_APP_ID,
            &user("alice"),
            &user("bob"),
            "from the server",
            false,
        )
        .unwrap();
    m.settle();
    assert_eq!(m.log(b[0]), ["MESSAGE_RECEIVED alice>bob from the server"]);
    assert!(m.log(a[0]).is_empty());
    m.relay
        .admin_send(
            now,
            0,
            DEV_APP_ID,
            &user("alice"),
            &user("bob"),
            "and to alice",
            true,
        )
        .unwrap();
    m.settle();
    assert_eq!(m.log(a[0]), ["MESSAGE_RECEIVED alice>bob and to alice"]);
    // The sender's offline device gets it when it connects.
    m.login(a[1]);
    let log = m.log(a[1]);
    assert!(
        log.contains(&"MESSAGE_RECEIVED alice>bob and to alice (offline)".to_string()),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("from the server")));
}

#[test]
fn history_pages_back_past_the_compensation_window() {
    let mut m = Mesh::dev();
    let a = m.online("alice", "a1");
    let _b = m.online("bob", "b1");
    m.command(a, send("bob", "from long ago"));
    m.advance(3 * DAY);
    m.command(a, send("bob", "this week"));
    let fresh = m.add(DEV_APP_ID, "terminal", "bob", "b2");
    m.login(fresh);
    m.take(fresh);
    let page = |m: &mut Mesh, before: Option<u64>| -> Vec<(String, u64)> {
        m.command(
            fresh,
            Command::Chat(ChatCommand::GetMessages {
                peer: user("alice"),
                before,
                count: 1,
            }),
        );
        match &m.take(fresh)[..] {
            [Event::Messages { user_id, messages }] => {
                assert_eq!(user_id, "alice");
                messages
                    .iter()
                    .map(|x| (x.text.clone(), x.timestamp))
                    .collect()
            }
            other => panic!("{other:?}"),
        }
    };
    let newest = page(&mut m, None);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].0, "this week");
    let older = page(&mut m, Some(newest[0].1));
    assert_eq!(older[0].0, "from long ago", "beyond the one-day window");
    assert!(page(&mut m, Some(older[0].1)).is_empty());
}

#[test]
fn two_devices_sending_in_the_same_millisecond_send_two_messages() {
    let (mut m, a, b) = two_by_two(&RelayConfig::default());
    m.command_later(a[0], send("bob", "from the laptop"));
    m.command_later(a[1], send("bob", "from the phone"));
    m.settle();
    let mut got: Vec<String> = m.log(b[0]);
    got.sort();
    assert_eq!(
        got,
        [
            "MESSAGE_RECEIVED alice>bob from the laptop",
            "MESSAGE_RECEIVED alice>bob from the phone"
        ]
    );
}
