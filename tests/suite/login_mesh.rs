//! Login, kick-out, reconnection and expiry on virtual time (SPEC section 2).

use termphone::client::engine::Command;
use termphone::client::event::{Event, LinkState, LoginStatus};
use termphone::config::{AppConfig, RelayConfig};
use termphone::ids::{DEV_APP_ID, UserId};
use termphone::protocol::KickReason;

use crate::common::mesh::{Mesh, PEER};

#[test]
fn login_reports_logining_then_logined_then_ready() {
    let mut m = Mesh::dev();
    let a = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    m.login(a);
    assert_eq!(
        m.take(a),
        vec![
            Event::status(LoginStatus::Logining),
            Event::ConnectionChanged {
                state: LinkState::Connected
            },
            Event::status(LoginStatus::Logined),
            Event::SdkReady,
            // A new device has nothing to catch up on.
            Event::Synced { seq: 0 },
        ]
    );
    assert_eq!(m.relay.session_count(), 1);
}

#[test]
fn commands_before_login_are_refused() {
    let mut m = Mesh::dev();
    let a = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    m.command(a, Command::GetUsers { subscribe: false });
    let events = m.take(a);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].error_code().map(|c| c.code()), Some(6014));
}

#[test]
fn fourth_device_on_a_platform_kicks_the_earliest_which_stays_out() {
    let mut m = Mesh::dev();
    let devices: Vec<usize> = (1..=4)
        .map(|k| m.add(DEV_APP_ID, "terminal", "alice", &format!("d{k}")))
        .collect();
    for &d in &devices[..3] {
        m.login(d);
        m.advance(10);
    }
    for &d in &devices {
        m.take(d);
    }
    m.login(devices[3]);
    let kicked = m.take(devices[0]);
    assert_eq!(kicked.len(), 2, "{kicked:?}");
    assert!(
        matches!(&kicked[0], Event::KickedOut { reason, .. } if *reason == KickReason::DeviceLimit)
    );
    assert_eq!(kicked[1], Event::status(LoginStatus::Logout));
    for &d in &devices[1..3] {
        assert!(m.take(d).is_empty(), "later devices are untouched");
    }
    assert_eq!(m.take_names(devices[3])[3..], ["SDK_READY", "SYNCED"]);

    // It does not come back by itself, however long we wait.
    let connects = m.nodes[devices[0]].connects;
    m.advance(300_000);
    assert_eq!(m.nodes[devices[0]].connects, connects);
    assert!(m.take(devices[0]).is_empty());
    assert_eq!(m.relay.session_count(), 3);
}

#[test]
fn other_platforms_do_not_count_against_the_limit() {
    let mut m = Mesh::dev();
    let mut all = Vec::new();
    for k in 0..3 {
        all.push(m.add(DEV_APP_ID, "terminal", "alice", &format!("t{k}")));
    }
    for k in 0..10 {
        all.push(m.add(DEV_APP_ID, "web", "alice", &format!("w{k}")));
    }
    for &d in &all {
        m.login(d);
    }
    assert_eq!(m.relay.session_count(), 13);
    for &d in &all {
        assert!(!m.take_names(d).contains(&"KICKED_OUT"));
    }
    let w11 = m.add(DEV_APP_ID, "web", "alice", "w10");
    m.login(w11);
    assert_eq!(
        m.take_names(all[3]),
        vec!["KICKED_OUT", "LOGIN_STATUS_CHANGED"]
    );
}

#[test]
fn the_limit_is_a_relay_setting_per_app() {
    let mut config = RelayConfig::default();
    config.apps[0].max_devices_per_platform = 1;
    let mut m = Mesh::new(&config);
    let a = m.add(DEV_APP_ID, "android", "alice", "phone1");
    let b = m.add(DEV_APP_ID, "android", "alice", "phone2");
    m.login(a);
    m.login(b);
    assert!(m.take_names(a).contains(&"KICKED_OUT"));
}

#[test]
fn a_dropped_connection_resumes_without_a_new_login() {
    let mut m = Mesh::dev();
    let a = m.online("alice", "d1");
    m.relay_up = false;
    m.cut(a);
    m.advance(3_000);
    m.relay_up = true;
    m.advance(6_000);
    let events = m.take(a);
    assert_eq!(
        events[0],
        Event::ConnectionChanged {
            state: LinkState::Reconnecting
        }
    );
    assert_eq!(
        events[events.len() - 2..],
        [
            Event::ConnectionChanged {
                state: LinkState::Connected
            },
            Event::Synced { seq: 0 },
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::SdkReady | Event::LoginStatusChanged { .. })),
        "no new login is visible: {events:?}"
    );
    assert_eq!(m.nodes[a].engine.status(), LoginStatus::Logined);
    assert_eq!(m.relay.session_count(), 1);
}

#[test]
fn backoff_grows_and_is_capped() {
    let mut m = Mesh::dev();
    let a = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    m.login(a);
    m.relay_up = false;
    m.cut(a);
    m.advance(60_000);
    // Retries after 250, 500, 1000, 2000, 4000 ms, then every 5000 ms:
    // 5 + 10 attempts in 60 s.
    assert_eq!(m.nodes[a].connects, 1 + 15);
    let unreachable = m
        .take(a)
        .iter()
        .filter(|e| e.error_code().is_some_and(|c| c.code() == 6200))
        .count();
    assert_eq!(
        unreachable, 1,
        "the outage is reported once, not per attempt"
    );
}

#[test]
fn after_the_grace_period_the_session_is_gone_and_the_client_logs_in_again_silently() {
    let mut m = Mesh::dev();
    let a = m.online("alice", "d1");
    m.relay_up = false;
    m.cut(a);
    m.advance(89_000);
    assert_eq!(m.relay.session_count(), 1, "kept for 90 s");
    m.advance(2_000);
    assert_eq!(m.relay.session_count(), 0, "removed after 90 s");
    m.relay_up = true;
    m.advance(6_000);
    assert_eq!(m.relay.session_count(), 1);
    assert_eq!(m.nodes[a].engine.status(), LoginStatus::Logined);
    assert!(!m.take_names(a).contains(&"SDK_READY"));
}

#[test]
fn a_silent_connection_is_dropped_after_the_heartbeat_timeout() {
    use termphone::ids::UserId;
    use termphone::protocol::ClientMsg;
    use termphone::relay::core::{CloseReason, Input, Output};
    let mut m = Mesh::dev();
    let user_sig = m.ticket(DEV_APP_ID, &UserId::parse("alice").unwrap(), 3600);
    m.relay.handle(
        m.now,
        Input::Connected {
            conn: 99,
            peer: PEER,
        },
    );
    let login = ClientMsg::Login {
        app: DEV_APP_ID,
        user: "alice".into(),
        device: "d1".into(),
        platform: "terminal".into(),
        user_sig,
    };
    m.relay.handle(
        m.now,
        Input::Frame {
            conn: 99,
            msg: login,
        },
    );
    while m.relay.poll_output().is_some() {}
    m.advance(29_999);
    assert!(m.relay.poll_output().is_none());
    m.relay.handle_timeout(m.now + 1);
    assert_eq!(
        m.relay.poll_output(),
        Some(Output::Close {
            conn: 99,
            reason: CloseReason::HeartbeatTimeout
        })
    );
}

#[test]
fn a_connection_that_never_logs_in_is_closed_at_the_login_deadline() {
    use termphone::error::ErrorCode;
    use termphone::protocol::ServerMsg;
    use termphone::relay::core::{CloseReason, Input, Output};
    let mut m = Mesh::dev();
    m.relay.handle(
        m.now,
        Input::Connected {
            conn: 99,
            peer: PEER,
        },
    );
    m.advance(4_999);
    assert!(m.relay.poll_output().is_none());
    m.relay.handle_timeout(m.now + 1);
    match m.relay.poll_output() {
        Some(Output::Send {
            conn: 99,
            msg: ServerMsg::Error { error, .. },
        }) => assert_eq!(error.code, ErrorCode::LoginTimeout.code()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.relay.poll_output(),
        Some(Output::Close {
            conn: 99,
            reason: CloseReason::LoginTimeout
        })
    );
}

/// A connection that logged out has the login deadline again: held open
/// with heartbeats, it would hold a socket without counting against the
/// caps on connections not logged in, as many as one ticket could log in.
#[test]
fn a_connection_that_logged_out_is_closed_at_the_login_deadline() {
    use termphone::error::ErrorCode;
    use termphone::protocol::{ClientMsg, ServerMsg};
    use termphone::relay::core::{CloseReason, Input, Output};
    let mut m = Mesh::dev();
    let user = UserId::parse("alice").unwrap();
    let user_sig = m.ticket(DEV_APP_ID, &user, 3_600);
    let frame = |msg| Input::Frame { conn: 99, msg };
    m.relay.handle(
        m.now,
        Input::Connected {
            conn: 99,
            peer: PEER,
        },
    );
    m.relay.handle(
        m.now,
        frame(ClientMsg::Login {
            app: DEV_APP_ID,
            user: "alice".into(),
            device: "d1".into(),
            platform: "terminal".into(),
            user_sig,
        }),
    );
    m.advance(10_000);
    m.relay.handle(m.now, frame(ClientMsg::Logout));
    let logged_out = m.now;
    let mut outputs = Vec::new();
    for _ in 0..5 {
        m.advance(999);
        m.relay.handle(m.now, frame(ClientMsg::Heartbeat));
        while let Some(o) = m.relay.poll_output() {
            outputs.push(o);
        }
    }
    assert!(
        !outputs.iter().any(|o| matches!(o, Output::Close { .. })),
        "{outputs:?}"
    );
    m.relay.handle_timeout(logged_out + 5_000);
    let closing: Vec<Output> = std::iter::from_fn(|| m.relay.poll_output()).collect();
    assert!(
        closing.iter().any(|o| matches!(
            o,
            Output::Send { conn: 99, msg: ServerMsg::Error { error, .. } }
                if error.code == ErrorCode::LoginTimeout.code()
                    && error.message.contains("of connecting or logging out")
        )),
        "{closing:?}"
    );
    assert!(closing.contains(&Output::Close {
        conn: 99,
        reason: CloseReason::LoginTimeout
    }));
}

#[test]
fn heartbeats_keep_an_idle_device_online() {
    let mut m = Mesh::dev();
    let a = m.online("alice", "d1");
    m.advance(600_000);
    assert!(m.take(a).is_empty());
    assert!(m.nodes[a].conn.is_some());
}

#[test]
fn a_ticket_that_expires_online_logs_the_device_out() {
    let mut m = Mesh::dev();
    let a = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    let user = m.nodes[a].user.clone();
    let sig = m.ticket(DEV_APP_ID, &user, 60);
    m.login_with(a, sig);
    m.take(a);
    m.advance(61_000);
    assert_eq!(
        m.take(a),
        vec![Event::UserSigExpired, Event::status(LoginStatus::Logout)]
    );
    assert_eq!(m.relay.session_count(), 0);
    m.advance(60_000);
    assert_eq!(
        m.nodes[a].connects, 1,
        "no reconnection without a fresh ticket"
    );
}

#[test]
fn logging_in_as_another_user_switches_accounts() {
    let mut m = Mesh::dev();
    let a = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    let watcher = m.add(DEV_APP_ID, "terminal", "carol", "c1");
    m.login(watcher);
    m.login(a);
    m.command(watcher, Command::GetUsers { subscribe: true });
    m.take(watcher);
    m.take(a);
    m.nodes[a].user = termphone::ids::UserId::parse("bob").unwrap();
    m.login(a);
    assert_eq!(
        m.take_names(a),
        vec![
            "LOGIN_STATUS_CHANGED",
            "LOGIN_STATUS_CHANGED",
            "SDK_READY",
            "SYNCED"
        ]
    );
    let seen: Vec<(String, usize)> = m
        .take(watcher)
        .into_iter()
        .filter_map(|e| match e {
            Event::UserStatusChanged { user } => Some((user.user.to_string(), user.devices.len())),
            _ => None,
        })
        .collect();
    assert_eq!(seen, vec![("alice".into(), 0), ("bob".into(), 1)]);
    assert_eq!(m.relay.session_count(), 2);
}

#[test]
fn logout_ends_the_session_and_the_link() {
    let mut m = Mesh::dev();
    let a = m.online("alice", "d1");
    m.command(a, Command::Logout);
    assert_eq!(m.take(a), vec![Event::status(LoginStatus::Logout)]);
    assert_eq!(m.relay.session_count(), 0);
    m.advance(60_000);
    assert_eq!(m.nodes[a].connects, 1);
}

#[test]
fn same_device_on_a_second_connection_takes_the_session_over() {
    let mut m = Mesh::dev();
    let first = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    let second = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    m.login(first);
    m.login(second);
    let events = m.take(first);
    assert!(
        matches!(&events[events.len() - 2], Event::KickedOut { reason, .. } if *reason == KickReason::SameDevice)
    );
    assert_eq!(m.relay.session_count(), 1);
}

#[test]
fn users_of_two_apps_never_see_each_other() {
    let mut config = RelayConfig::default();
    config.apps.push(AppConfig {
        id: 42,
        ..AppConfig::default()
    });
    let mut m = Mesh::new(&config);
    let alice = m.add(DEV_APP_ID, "terminal", "alice", "a1");
    let bob = m.add(DEV_APP_ID, "terminal", "bob", "b1");
    let carol = m.add(42, "terminal", "carol", "c1");
    m.login(alice);
    m.command(alice, Command::GetUsers { subscribe: true });
    m.login(bob);
    let sig = m.ticket(42, &m.nodes[carol].user.clone(), 3600);
    m.login_with(carol, sig);
    m.command(carol, Command::GetUsers { subscribe: true });
    let users_of = |events: Vec<Event>| -> Vec<String> {
        events
            .into_iter()
            .flat_map(|e| match e {
                Event::Users { users } => users.into_iter().map(|u| u.user.to_string()).collect(),
                Event::UserStatusChanged { user } => vec![user.user.to_string()],
                _ => vec![],
            })
            .collect()
    };
    assert_eq!(users_of(m.take(alice)), vec!["alice", "bob"]);
    assert_eq!(users_of(m.take(carol)), vec!["carol"]);
}

#[test]
fn a_presence_subscription_survives_resume_and_relogin() {
    let mut m = Mesh::dev();
    let a = m.add(DEV_APP_ID, "terminal", "alice", "d1");
    let b = m.add(DEV_APP_ID, "terminal", "bob", "b1");
    m.login(a);
    m.command(a, Command::GetUsers { subscribe: true });
    m.take(a);

    // Resumed within the grace period: a fresh snapshot, then live updates.
    m.cut(a);
    m.advance(1_000);
    assert!(m.take_names(a).contains(&"USERS"));
    m.login(b);
    assert!(m.take_names(a).contains(&"USER_STATUS_CHANGED"));

    // Session lost (relay down past the grace period): same after the silent re-login.
    m.relay_up = false;
    m.cut(a);
    m.advance(95_000);
    m.relay_up = true;
    m.advance(6_000);
    assert!(m.take_names(a).contains(&"USERS"));
    m.command(b, Command::Logout);
    assert!(m.take_names(a).contains(&"USER_STATUS_CHANGED"));
}
