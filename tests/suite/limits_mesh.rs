//! The relay's rate limits and the validation that replaces storage, on
//! virtual time: what a flooding or careless device is told, and that the
//! relay does nothing for nothing (docs/limits.md).

use termphone::client::engine::{CallCommand, ChatCommand, Command};
use termphone::client::event::Event;
use termphone::config::{AppConfig, RelayConfig};
use termphone::ids::{DEV_APP_ID, UserId};
use termphone::protocol::{ClientMsg, MAX_RING_SECS, MAX_RINGING_CALLS};
use termphone::relay::core;

use crate::common::mesh::{Mesh, PEER};

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn call(users: &[&str], timeout_secs: Option<u32>) -> Command {
    let users: Vec<UserId> = users.iter().map(|u| user(u)).collect();
    let group = users.len() > 1;
    Command::Call(CallCommand::place(users, group, timeout_secs))
}

fn hangup() -> Command {
    Command::Call(CallCommand::Hangup { call_id: None })
}

fn typing(to: &str) -> Command {
    Command::Chat(ChatCommand::Typing { to: user(to) })
}

#[test]
fn typing_past_its_burst_is_refused_until_the_bucket_refills() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    for _ in 0..5 {
        m.command(alice, typing("bob"));
    }
    assert_eq!(m.log(bob), ["TYPING alice"; 5]);
    m.command(alice, typing("bob"));
    assert_eq!(m.log(alice), ["ERROR 90010 typing"]);
    assert!(m.log(bob).is_empty());
    // Two a second: half a second later there is room for one.
    m.advance(500);
    m.command(alice, typing("bob"));
    assert_eq!(m.log(bob), ["TYPING alice"]);
    assert!(m.log(alice).is_empty());
}

/// A connection that logs in and out in a loop (each turn a ticket to
/// check, a store write and a presence change to every subscriber) is
/// refused past its burst, until the bucket refills.
#[test]
fn a_connection_that_logs_in_in_a_loop_is_slowed_down() {
    use termphone::error::ErrorCode;
    use termphone::protocol::ServerMsg;
    use termphone::relay::core::{Input, Output};
    let mut m = Mesh::dev();
    let user_sig = m.ticket(DEV_APP_ID, &UserId::parse("alice").unwrap(), 3_600);
    let login = || Input::Frame {
        conn: 99,
        msg: ClientMsg::Login {
            app: DEV_APP_ID,
            user: "alice".into(),
            device: "a1".into(),
            platform: "terminal".into(),
            user_sig: user_sig.clone(),
        },
    };
    let logout = || Input::Frame {
        conn: 99,
        msg: ClientMsg::Logout,
    };
    m.relay.handle(
        m.now,
        Input::Connected {
            conn: 99,
            peer: PEER,
        },
    );
    let answers = |m: &mut Mesh| {
        std::iter::from_fn(|| m.relay.poll_output())
            .filter_map(|o| match o {
                Output::Send {
                    msg: ServerMsg::LoginOk { .. },
                    ..
                } => Some("ok".to_owned()),
                Output::Send {
                    msg: ServerMsg::LoginFailed { error },
                    ..
                } => Some(format!("{} {}", error.code, error.message)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..10 {
        m.relay.handle(m.now, login());
        m.relay.handle(m.now, logout());
    }
    assert_eq!(answers(&mut m), ["ok"; 10]);
    m.relay.handle(m.now, login());
    let refused = answers(&mut m);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].starts_with(&format!(
            "{} too many logins",
            ErrorCode::RateLimited.code()
        )) && refused[0].contains("relay.rate_limits.logins"),
        "{refused:?}"
    );
    // Two a second: half a second later there is room for one.
    m.relay.handle(m.now + 500, login());
    assert_eq!(answers(&mut m), ["ok"]);
}

#[test]
fn a_device_that_calls_in_a_loop_is_slowed_down() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let _bob = m.online("bob", "b1");
    for _ in 0..10 {
        m.command(alice, call(&["bob"], None));
        m.command(alice, hangup());
    }
    assert!(m.log(alice).iter().all(|l| !l.starts_with("ERROR")));
    m.command(alice, call(&["bob"], None));
    assert_eq!(m.log(alice), ["ERROR 90010 call"]);
    m.advance(1_000);
    m.command(alice, call(&["bob"], None));
    assert_eq!(m.log(alice), ["CALL_DIALING"]);
}

#[test]
fn a_call_rings_1_to_300_s_as_the_client_and_the_relay_both_hold() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    for secs in [0, MAX_RING_SECS + 1, u32::MAX] {
        m.command(alice, call(&["bob"], Some(secs)));
        match &m.take(alice)[..] {
            [Event::Error { code, message, .. }] => {
                assert_eq!(*code, 6017);
                assert!(message.contains("1 to 300 s (timeout)"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // The relay holds the same rule for a client that does not check.
        let conn = m.nodes[alice].conn.unwrap();
        let msg = ClientMsg::Call {
            invitees: vec!["bob".into()],
            group: false,
            timeout_secs: Some(secs),
            user_data: None,
        };
        m.relay.handle(m.now, core::Input::Frame { conn, msg });
        m.settle();
        assert_eq!(m.log(alice), ["ERROR 6017 call"]);
        assert!(m.log(bob).is_empty());
    }
    m.command(alice, call(&["bob"], Some(MAX_RING_SECS)));
    assert_eq!(m.log(alice), ["CALL_DIALING"]);
}

#[test]
fn a_user_rung_by_the_most_calls_at_once_is_busy_to_one_more() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let callers: Vec<_> = (0..=MAX_RINGING_CALLS)
        .map(|k| m.online(&format!("caller{k}"), "d"))
        .collect();
    for &caller in &callers {
        m.command(caller, call(&["alice"], None));
    }
    let rung = m.log(alice);
    assert_eq!(rung.len(), MAX_RINGING_CALLS, "{rung:?}");
    assert!(
        rung.iter().all(|e| e.starts_with("ON_CALL_RECEIVED")),
        "{rung:?}"
    );
    let last = *callers.last().unwrap();
    assert_eq!(
        m.log(last),
        ["CALL_DIALING", "LINE_BUSY alice", "ON_CALL_CANCELED busy"]
    );
    // One stops ringing: the next call rings again.
    m.command(callers[0], hangup());
    m.take(alice);
    m.command(last, call(&["alice"], None));
    assert_eq!(m.log(alice), ["ON_CALL_RECEIVED from caller8"]);
}

#[test]
fn an_invitee_list_longer_than_a_call_is_refused_before_it_is_read() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let names: Vec<String> = (0..10_000).map(|k| format!("u{k}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    m.command(alice, call(&refs, None));
    assert_eq!(m.log(alice), ["ERROR 6104 groupCall"]);
}

#[test]
fn inviting_those_already_in_the_call_changes_nothing() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    let carol = m.online("carol", "c1");
    m.command(alice, call(&["bob", "carol"], None));
    m.command(
        bob,
        Command::Call(CallCommand::Accept {
            call_id: None,
            end_current: false,
        }),
    );
    m.log(alice);
    m.log(bob);
    m.log(carol);
    for _ in 0..5 {
        m.command(
            alice,
            Command::Call(CallCommand::InviteUser {
                users: vec![user("bob"), user("carol")],
            }),
        );
    }
    // Only the inviter hears of it, once per try.
    assert_eq!(m.log(alice), ["ERROR 6017 inviteUser"; 5]);
    assert!(m.log(bob).is_empty());
    assert!(m.log(carol).is_empty());
}

#[test]
fn invented_platforms_do_not_give_a_user_more_devices() {
    let config = RelayConfig {
        apps: vec![AppConfig {
            max_devices_per_user: 3,
            ..AppConfig::default()
        }],
        ..RelayConfig::default()
    };
    let mut m = Mesh::new(&config);
    let devices: Vec<usize> = (0..4)
        .map(|k| {
            let i = m.add(DEV_APP_ID, &format!("made{k}"), "alice", &format!("d{k}"));
            m.login(i);
            m.take(i);
            i
        })
        .collect();
    m.settle();
    assert!(
        m.take_names(devices[0]).contains(&"KICKED_OUT"),
        "the earliest device makes room"
    );
    for &d in &devices[1..] {
        assert!(!m.take_names(d).contains(&"KICKED_OUT"));
    }
}

#[test]
fn a_ticket_is_honoured_no_longer_than_the_app_allows() {
    let config = RelayConfig {
        apps: vec![AppConfig {
            max_ticket_lifetime_secs: 60,
            ..AppConfig::default()
        }],
        ..RelayConfig::default()
    };
    let mut m = Mesh::new(&config);
    let alice = m.add(DEV_APP_ID, "terminal", "alice", "a1");
    // Minted for a year, two minutes ago.
    let ticket = m.ticket(DEV_APP_ID, &user("alice"), 365 * 86_400);
    m.advance(120_000);
    m.login_with(alice, ticket);
    assert!(m.log(alice).contains(&"ERROR 6206 login".to_owned()));
}

#[test]
fn a_read_mark_for_someone_never_here_is_refused_and_never_replayed() {
    let mut m = Mesh::dev();
    let alice = m.online("alice", "a1");
    m.command(
        alice,
        Command::Chat(ChatCommand::MarkRead {
            peer: user("nobody"),
        }),
    );
    assert_eq!(m.log(alice), ["ERROR 6401 markRead"]);
    // A new device of alice catches up with nothing to replay (a mark for
    // bob, who was here, is: the catch-up is read at all).
    let _bob = m.online("bob", "b1");
    m.command(
        alice,
        Command::Chat(ChatCommand::MarkRead { peer: user("bob") }),
    );
    let later = m.add(DEV_APP_ID, "terminal", "alice", "a2");
    m.login(later);
    m.settle();
    assert_eq!(
        m.log(later)
            .into_iter()
            .filter(|l| l.starts_with("CONVERSATION_READ"))
            .collect::<Vec<_>>(),
        ["CONVERSATION_READ bob"]
    );
}

#[test]
fn a_user_past_its_daily_bytes_is_refused_and_its_earlier_messages_stand() {
    let config = RelayConfig {
        rate_limits: termphone::config::RateLimits {
            message_bytes_per_day: 200_000,
            ..termphone::config::RateLimits::default()
        },
        ..RelayConfig::default()
    };
    let mut m = Mesh::new(&config);
    let alice = m.online("alice", "a1");
    let bob = m.online("bob", "b1");
    let text = "z".repeat(60_000);
    for _ in 0..4 {
        m.command(
            alice,
            Command::Chat(ChatCommand::SendMessage {
                to: user("bob"),
                text: text.clone(),
                client_msg_id: None,
            }),
        );
    }
    let log = m.log(alice);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("MESSAGE_SENT")).count(),
        3
    );
    assert_eq!(
        log.iter()
            .filter(|l| *l == "ERROR 90010 sendMessage")
            .count(),
        1
    );
    assert_eq!(
        m.take_names(bob)
            .iter()
            .filter(|n| **n == "MESSAGE_RECEIVED")
            .count(),
        3
    );
    // The allowance refills over the day: an hour later, a short one fits.
    m.advance(3_600_000);
    m.command(
        alice,
        Command::Chat(ChatCommand::SendMessage {
            to: user("bob"),
            text: "later".into(),
            client_msg_id: None,
        }),
    );
    assert!(m.log(alice).iter().any(|l| l.starts_with("MESSAGE_SENT")));
}
