//! Login and kick-out over real WebSockets: a relay on 127.0.0.1:0 and
//! devices through the real connection task.

use std::time::Duration;

use termphone::client::engine::Command;
use termphone::client::event::{Event, LinkState, LoginStatus};
use termphone::config::AppConfig;
use termphone::ids::DEV_APP_ID;
use termphone::protocol::{ClientMsg, KickReason, MAX_CONTROL_FRAME_BYTES, ServerMsg};
use termphone::usersig::{self, Ticket};

use crate::common::net::{Device, Proxy, RawPeer, relay_at, test_config, ticket};

#[tokio::test]
async fn login_emits_logined_and_sdk_ready() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut alice = Device::new(&relay.url(), DEV_APP_ID, "terminal");
    alice.login_with("alice", "d1", ticket(DEV_APP_ID, "alice", 3600));
    assert_eq!(
        alice.expect("LOGIN_STATUS_CHANGED").await,
        Event::status(LoginStatus::Logining)
    );
    assert_eq!(
        alice.expect("LOGIN_STATUS_CHANGED").await,
        Event::status(LoginStatus::Logined)
    );
    alice.expect("SDK_READY").await;
    assert_eq!(alice.users().await, vec![("alice".into(), 1)]);
    relay.shutdown().await;
}

/// Logs in with `sig` and returns the ERROR it must produce, after checking
/// that the status went back to LOGOUT and the relay kept no session.
async fn refused(url: &str, user: &str, sig: String) -> Event {
    let mut d = Device::new(url, DEV_APP_ID, "terminal");
    d.login_with(user, "d1", sig);
    let error = d.expect("ERROR").await;
    assert_eq!(
        d.expect("LOGIN_STATUS_CHANGED").await,
        Event::status(LoginStatus::Logout)
    );
    let mut watcher = Device::online(url, "watcher", "w1").await;
    assert!(
        watcher.users().await.iter().all(|(u, _)| u != user),
        "a refused login leaves no session and no user"
    );
    error
}

fn code_and_relay_code(e: &Event) -> (u32, Option<u32>) {
    match e {
        Event::Error {
            code, relay_code, ..
        } => (*code, *relay_code),
        _ => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn bad_tickets_are_refused_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();

    let forged = usersig::mint(
        "someone-elses-secret-entirely",
        &Ticket {
            app: DEV_APP_ID,
            user: "mallory".parse().unwrap(),
            issued_at: termphone::time::unix_millis() / 1000,
            lifetime: 3600,
        },
    );
    assert_eq!(
        code_and_relay_code(&refused(&url, "mallory", forged).await),
        (70009, None)
    );

    let expired = ticket(DEV_APP_ID, "ed", 0);
    let e = refused(&url, "ed", expired).await;
    assert_eq!(code_and_relay_code(&e), (6206, Some(70001)));
    assert!(matches!(&e, Event::Error { cmd: Some(c), .. } if c == "login"));

    let other_app = ticket(DEV_APP_ID + 1, "olga", 3600);
    assert_eq!(
        code_and_relay_code(&refused(&url, "olga", other_app).await),
        (70014, None)
    );

    let bobs = ticket(DEV_APP_ID, "bob", 3600);
    assert_eq!(
        code_and_relay_code(&refused(&url, "eve", bobs).await),
        (70013, None)
    );

    assert_eq!(
        code_and_relay_code(&refused(&url, "ivan", "garbage".into()).await),
        (70003, None)
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn the_relay_answers_bad_frames_with_codes_and_keeps_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut raw = RawPeer::connect(&relay.url()).await;
    let code = |m: ServerMsg| match m {
        ServerMsg::Error { error, .. } | ServerMsg::LoginFailed { error } => error.code,
        other => panic!("{other:?}"),
    };
    raw.send_text("{not json".into()).await;
    assert_eq!(code(raw.recv().await), 90001);
    raw.send_text(r#"{"v":9,"type":"logout"}"#.into()).await;
    assert_eq!(code(raw.recv().await), 90003);
    raw.send_text(format!(
        r#"{{"v":1,"type":"heartbeat","pad":"{}"}}"#,
        "x".repeat(MAX_CONTROL_FRAME_BYTES)
    ))
    .await;
    assert_eq!(code(raw.recv().await), 90002);
    raw.send(&ClientMsg::ListUsers {
        subscribe: false,
        after: None,
    })
    .await;
    assert_eq!(code(raw.recv().await), 6014);
    for (user, device, platform, expect) in [
        ("al ice", "d1", "terminal", 70400),
        ("alice", "d 1", "terminal", 70401),
        ("alice", "d1", "Web", 70402),
    ] {
        raw.send(&ClientMsg::Login {
            app: DEV_APP_ID,
            user: user.into(),
            device: device.into(),
            platform: platform.into(),
            user_sig: ticket(DEV_APP_ID, "alice", 3600),
        })
        .await;
        assert_eq!(code(raw.recv().await), expect, "{user} {device} {platform}");
    }
    raw.send(&ClientMsg::Login {
        app: 5,
        user: "alice".into(),
        device: "d1".into(),
        platform: "terminal".into(),
        user_sig: ticket(5, "alice", 3600),
    })
    .await;
    assert_eq!(code(raw.recv().await), 70020);
    // Still usable after all of that.
    raw.send(&ClientMsg::Heartbeat).await;
    assert_eq!(raw.recv().await, ServerMsg::HeartbeatAck);
    relay.shutdown().await;
}

#[tokio::test]
async fn users_of_two_apps_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.apps.push(AppConfig {
        id: 77,
        secret: "the-secret-of-app-seventy-seven".into(),
        ..AppConfig::default()
    });
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let mut alice = Device::online(&relay.url(), "alice", "a1").await;
    let mut carol = Device::new(&relay.url(), 77, "terminal");
    let sig = usersig::mint(
        "the-secret-of-app-seventy-seven",
        &Ticket {
            app: 77,
            user: "carol".parse().unwrap(),
            issued_at: termphone::time::unix_millis() / 1000,
            lifetime: 3600,
        },
    );
    carol.login_with("carol", "c1", sig);
    carol.expect("SDK_READY").await;
    // The dev app's ticket for carol does not open app 77.
    let mut intruder = Device::new(&relay.url(), 77, "terminal");
    intruder.login_with("dave", "x1", ticket(77, "dave", 3600));
    assert_eq!(
        code_and_relay_code(&intruder.expect("ERROR").await),
        (70009, None)
    );

    assert_eq!(alice.users().await, vec![("alice".into(), 1)]);
    assert_eq!(carol.users().await, vec![("carol".into(), 1)]);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_fourth_terminal_kicks_the_earliest_which_does_not_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let url = relay.url();
    let mut d1 = Device::online(&url, "alice", "d1").await;
    let _d2 = Device::online(&url, "alice", "d2").await;
    let _d3 = Device::online(&url, "alice", "d3").await;
    let _d4 = Device::online(&url, "alice", "d4").await;
    match d1.expect("KICKED_OUT").await {
        Event::KickedOut { reason, message } => {
            assert_eq!(reason, KickReason::DeviceLimit);
            assert!(message.contains("at most 3"), "{message}");
        }
        _ => unreachable!(),
    }
    assert_eq!(
        d1.expect("LOGIN_STATUS_CHANGED").await,
        Event::status(LoginStatus::Logout)
    );
    // Well past the first reconnection attempts (250 ms, 500 ms, ...): nothing.
    d1.expect_silence(Duration::from_millis(1500)).await;
    let mut watcher = Device::online(&url, "bob", "b1").await;
    assert_eq!(
        watcher.users().await,
        vec![("alice".into(), 3), ("bob".into(), 1)]
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn account_switch_logs_the_first_user_out() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut d = Device::online(&relay.url(), "alice", "d1").await;
    d.login_with("bob", "d1", ticket(DEV_APP_ID, "bob", 3600));
    d.expect("SDK_READY").await;
    assert_eq!(
        d.users().await,
        vec![("alice".into(), 0), ("bob".into(), 1)]
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_cut_connection_comes_back_without_a_new_login() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let proxy = Proxy::start(relay.local_addr()).await;
    let mut alice = Device::online(&proxy.url(), "alice", "d1").await;
    alice.seen.clear();
    proxy.cut();
    assert_eq!(
        alice.expect("CONNECTION_CHANGED").await,
        Event::ConnectionChanged {
            state: LinkState::Reconnecting
        }
    );
    assert_eq!(
        alice.expect("CONNECTION_CHANGED").await,
        Event::ConnectionChanged {
            state: LinkState::Connected
        }
    );
    assert_eq!(alice.users().await, vec![("alice".into(), 1)]);
    assert!(
        alice
            .seen
            .iter()
            .all(|e| !matches!(e, Event::SdkReady | Event::LoginStatusChanged { .. })),
        "{:?}",
        alice.seen
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_restarted_relay_still_knows_its_users() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let relay = relay_at(&test_config(), &db).await;
    let alice = Device::online(&relay.url(), "alice", "d1").await;
    alice.send(Command::Logout);
    relay.shutdown().await;

    let relay = relay_at(&test_config(), &db).await;
    let mut bob = Device::online(&relay.url(), "bob", "b1").await;
    assert_eq!(
        bob.users().await,
        vec![("alice".into(), 0), ("bob".into(), 1)]
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.max_connections = 1;
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let _first = Device::online(&relay.url(), "alice", "d1").await;
    let mut second = RawPeer::connect(&relay.url()).await;
    match second.recv().await {
        ServerMsg::Error { error, .. } => assert_eq!(error.code, 90005),
        other => panic!("{other:?}"),
    }
    relay.shutdown().await;
}
