//! The relay's limits over real sockets: what a stalled reader, a flood of
//! idle sockets or a slow login costs, and what everyone else still gets.

use std::time::Duration;

use termphone::client::engine::{ChatCommand, Command};
use termphone::client::event::Event;
use termphone::config::{RateLimits, RelayConfig};
use termphone::error::ErrorCode;
use termphone::ids::{DEV_APP_ID, UserId};
use termphone::protocol::{ClientMsg, MAX_TRANSPORT_MESSAGE_BYTES, ServerMsg};
use termphone::relay::RelayHandle;
use termphone::relay::rate::Rate;
use tokio_tungstenite::tungstenite::Message;

use crate::common::net::{Device, RawPeer, WAIT, login, relay_at, test_config};

/// A relay with rate limits of the test's own, and alice logged in on a raw
/// connection to it.
async fn alice_under(
    limit: impl FnOnce(&mut RateLimits),
) -> (RelayHandle, RawPeer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    limit(&mut config.rate_limits);
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let alice = RawPeer::logged_in(&relay.url(), "alice", "a1").await;
    (relay, alice, dir)
}

/// Sends `count` messages of about `size` bytes, numbered in their first
/// four characters, and waits until every one is acknowledged.
async fn send_numbered(from: &mut Device, to: &str, count: usize, size: usize) {
    let padding = "x".repeat(size);
    for k in 0..count {
        from.send(Command::Chat(ChatCommand::SendMessage {
            to: UserId::parse(to).unwrap(),
            text: format!("{k:04}{padding}"),
            client_msg_id: None,
        }));
    }
    for _ in 0..count {
        from.expect("MESSAGE_SENT").await;
    }
}

/// bob, logged in and synced on a socket that buffers little, so that
/// when the test stops reading him the relay soon feels it.
async fn bob_on_a_small_socket(relay: &RelayHandle) -> RawPeer {
    let mut bob = RawPeer::connect_small(relay.local_addr()).await;
    bob.send(&login("bob", "b1")).await;
    assert!(matches!(bob.recv().await, ServerMsg::LoginOk { .. }));
    bob.send(&ClientMsg::Sync { after: 0 }).await;
    while !matches!(bob.recv().await, ServerMsg::Synced { .. }) {}
    bob
}

/// Waits until `what` holds, checking every 50 ms; panics after WAIT.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_device_that_stops_reading_is_dropped_and_later_gets_everything_once() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        max_queue_bytes: 256 * 1024,
        write_timeout_secs: 1,
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    // bob logs in, then stops reading, as a process stopped with SIGSTOP.
    let _stalled = bob_on_a_small_socket(&relay).await;
    let mut alice = Device::online(&relay.url(), "alice", "a1").await;

    // 2 MB of chat for bob: far more than his socket and his queue hold.
    const COUNT: usize = 2000;
    send_numbered(&mut alice, "bob", COUNT, 1000).await;
    // The relay lets go of him (alice's connection is all that is left).
    eventually("the stalled device is disconnected", || {
        relay.active_connections() == 1
    })
    .await;

    // Back (a new process of the same device): every acknowledged message,
    // once, in order.
    let mut bob = Device::online(&relay.url(), "bob", "b1").await;
    let mut received: Vec<String> = bob
        .seen
        .drain(..)
        .filter_map(|e| match e {
            Event::MessageReceived { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    while received.len() < COUNT {
        if let Event::MessageReceived { text, .. } = bob.expect("MESSAGE_RECEIVED").await {
            received.push(text);
        }
    }
    let numbers: Vec<usize> = received.iter().map(|t| t[..4].parse().unwrap()).collect();
    assert_eq!(numbers, (0..COUNT).collect::<Vec<_>>());
    bob.expect_silence(Duration::from_millis(300)).await;
    relay.shutdown().await;
}

/// A device that does not read what it is sent is not read from either:
/// what it asks waits in its socket until it has taken what is queued for
/// it, and is then answered in order, nothing lost.
#[tokio::test]
async fn a_device_behind_on_what_it_is_sent_is_read_again_once_it_catches_up() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Room for the backlog, and time: bob is behind, not gone.
    let config = RelayConfig {
        max_queue_bytes: 2 << 20,
        write_timeout_secs: 60,
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let mut bob = bob_on_a_small_socket(&relay).await;
    let mut alice = Device::online(&relay.url(), "alice", "a1").await;
    let mut carol = Device::online(&relay.url(), "carol", "c1").await;

    // bob stops reading while 800 kB of chat is sent to him: more than
    // his socket and the relay's hold, so the relay's writes to him wait.
    const COUNT: usize = 800;
    send_numbered(&mut alice, "bob", COUNT, 1000).await;
    bob.send(&ClientMsg::SendMessage {
        to: "carol".into(),
        text: "sent while behind".into(),
        client_msg_id: "b-1".into(),
    })
    .await;
    let early = tokio::time::timeout(Duration::from_millis(500), carol.expect("MESSAGE_RECEIVED"));
    assert!(early.await.is_err(), "bob was read while behind");

    // bob reads again: everything sent to him, then his own message's
    // acknowledgement.
    let mut received = 0;
    loop {
        match bob.recv().await {
            ServerMsg::Entries { entries, .. } => received += entries.len(),
            ServerMsg::MessageSent { client_msg_id, .. } if client_msg_id == "b-1" => break,
            _ => {}
        }
    }
    assert_eq!(received, COUNT);
    match carol.expect("MESSAGE_RECEIVED").await {
        Event::MessageReceived { text, .. } => assert_eq!(text, "sent while behind"),
        _ => unreachable!(),
    }
    relay.shutdown().await;
}

/// A message past the transport limit, and a close of the client's own,
/// were met by a bare TCP close (1006): the relay now says why, and
/// answers a close as RFC 6455 asks.
#[tokio::test]
async fn a_message_too_big_and_a_clients_close_get_close_frames() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut big = RawPeer::logged_in(&relay.url(), "alice", "a1").await;
    big.send_text("x".repeat(MAX_TRANSPORT_MESSAGE_BYTES + 1))
        .await;
    assert_eq!(big.closed().await.as_deref(), Some("message too big"));
    let mut leaving = RawPeer::logged_in(&relay.url(), "bob", "b1").await;
    leaving.close().await;
    let answer = loop {
        match leaving.recv_raw().await {
            Some(Ok(Message::Text(_))) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(answer, Some(Ok(Message::Close(_)))),
        "the close is answered: {answer:?}"
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_relay_shutting_down_closes_every_connection_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut waiting = RawPeer::connect(&relay.url()).await;
    let mut device = RawPeer::connect(&relay.url()).await;
    device.send(&login("alice", "a1")).await;
    assert!(matches!(device.recv().await, ServerMsg::LoginOk { .. }));
    let shutdown = tokio::spawn(relay.shutdown());
    for peer in [&mut waiting, &mut device] {
        assert_eq!(peer.closed().await.as_deref(), Some("relay shutting down"));
    }
    shutdown.await.unwrap();
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        login_timeout_secs: 1,
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let mut idle = RawPeer::connect(&relay.url()).await;
    let started = tokio::time::Instant::now();
    match idle.recv().await {
        ServerMsg::Error { error, .. } => assert_eq!(error.code, ErrorCode::LoginTimeout.code()),
        other => panic!("{other:?}"),
    }
    assert_eq!(idle.closed().await.as_deref(), Some("no login in time"));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // One that logs in stays, well past the deadline.
    let mut device = RawPeer::connect(&relay.url()).await;
    device.send(&login("alice", "a1")).await;
    assert!(matches!(device.recv().await, ServerMsg::LoginOk { .. }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    device.send(&ClientMsg::Heartbeat).await;
    loop {
        if let ServerMsg::HeartbeatAck = device.recv().await {
            break;
        }
    }
    relay.shutdown().await;
}

/// The error a refused connection is told, and how it is closed.
async fn refusal(mut peer: RawPeer) -> String {
    let message = match peer.recv().await {
        ServerMsg::Error { error, .. } => {
            assert_eq!(error.code, ErrorCode::TooManyConnections.code());
            error.message
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(peer.closed().await.as_deref(), Some("too many connections"));
    message
}

#[tokio::test]
async fn a_flood_of_idle_sockets_is_refused_and_real_devices_still_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        max_unauthenticated: 100,
        max_unauthenticated_per_address: 60,
        login_timeout_secs: 2,
        ..test_config()
    };
    let relay = relay_at(&config, &dir.path().join("r.db")).await;
    let addr = relay.local_addr();
    let mut alice = Device::online(&relay.url(), "alice", "a1").await;

    // 60 sockets from one address that never log in; the 61st is refused.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(RawPeer::connect(&relay.url()).await);
    }
    let why = refusal(RawPeer::connect(&relay.url()).await).await;
    assert!(why.contains("max_unauthenticated_per_address"), "{why}");

    // Another address still gets in (alice, logged in, never counted).
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut bob = RawPeer::connect_from(addr, other).await;
    bob.send(&login("bob", "b1")).await;
    assert!(matches!(bob.recv().await, ServerMsg::LoginOk { .. }));

    // 40 more idle ones from a third address reach the total cap.
    let third: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    for _ in 0..40 {
        idle.push(RawPeer::connect_from(addr, third).await);
    }
    let why = refusal(RawPeer::connect_from(addr, "127.0.0.4".parse().unwrap()).await).await;
    assert!(why.contains("max_unauthenticated"), "{why}");

    // Meanwhile the logged-in devices talk as before.
    alice.send(Command::Chat(ChatCommand::SendMessage {
        to: UserId::parse("bob").unwrap(),
        text: "still here".into(),
        client_msg_id: None,
    }));
    alice.expect("MESSAGE_SENT").await;

    // The idle ones are closed at their login deadline, and a device from
    // the flooded address gets in.
    for mut peer in idle {
        assert_eq!(peer.closed().await.as_deref(), Some("no login in time"));
    }
    let mut carol = Device::online(&relay.url(), "carol", "c1").await;
    assert_eq!(carol.users().await.len(), 3);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_long_catch_up_comes_in_pages_within_the_frame_limit() {
    let _turn = crate::common::REAL_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let bob = Device::online(&relay.url(), "bob", "b1").await;
    bob.send(Command::Logout);
    drop(bob);
    let mut alice = Device::online(&relay.url(), "alice", "a1").await;
    // 6 MB while bob is away: dozens of frames' worth.
    const COUNT: usize = 200;
    send_numbered(&mut alice, "bob", COUNT, 30_000).await;

    let bob = Device::online(&relay.url(), "bob", "b1").await;
    let received: Vec<usize> = bob
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::MessageReceived { text, .. } => Some(text[..4].parse().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(received, (0..COUNT).collect::<Vec<_>>());
    let synced = bob.seen.iter().filter(|e| e.name() == "SYNCED").count();
    assert_eq!(synced, 0, "one SYNCED, the one Device::online waited for");
    assert!(
        !bob.seen.iter().any(|e| e.name() == "ERROR"),
        "{:?}",
        bob.seen
            .iter()
            .filter(|e| e.name() == "ERROR")
            .collect::<Vec<_>>()
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_device_flooding_frames_is_read_more_slowly_and_loses_nothing() {
    let (relay, mut flood, _dir) = alice_under(|limits| limits.frames = Rate::new(50.0, 10)).await;
    let started = tokio::time::Instant::now();
    for _ in 0..60 {
        flood.send(&ClientMsg::Heartbeat).await;
    }
    let mut acks = 0;
    while acks < 60 {
        if let ServerMsg::HeartbeatAck = flood.recv().await {
            acks += 1;
        }
    }
    // 10 at once, then 50 a second: the last 50 take about a second.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    relay.shutdown().await;
}

/// A burst of requests, each answered (here refused: typing notices past
/// their own rate), is answered whole and the device kept: more answers
/// than a connection's queue holds (1,024) are written as they come, and
/// the device is not dropped as "too slow to read" for them.
#[tokio::test]
async fn a_burst_of_requests_is_answered_whole_and_the_device_kept() {
    // Frames read as fast as they come, typing notices 2 a second after 5.
    let typing = RelayConfig::default().rate_limits.typing;
    let (relay, mut flood, _dir) = alice_under(|limits| limits.typing = typing).await;
    let _bob = RawPeer::logged_in(&relay.url(), "bob", "b1").await;
    const BURST: usize = 5000;
    for _ in 0..BURST {
        flood.send(&ClientMsg::Typing { to: "bob".into() }).await;
    }
    flood.send(&ClientMsg::Heartbeat).await;
    let mut refused = 0;
    loop {
        match flood.recv().await {
            ServerMsg::Error { error, .. } if error.code == ErrorCode::RateLimited.code() => {
                refused += 1;
            }
            ServerMsg::HeartbeatAck => break,
            // What a new connection is told (its calls: none).
            ServerMsg::CallState { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Five pass at once (the notices' own burst), and two a second after.
    assert!(refused >= BURST - 10, "{refused}");
    relay.shutdown().await;
}

/// Requests pipelined by a device that reads nothing meanwhile, each
/// answered with several frames (a login's: `login_ok`, `call_state`,
/// `synced`), are all answered, in order, once it reads: the relay read
/// them as fast as they came, their answers reached the connection's queue
/// of 1,024 frames faster than its socket took them, and it dropped the
/// device as too slow to read.
#[tokio::test]
async fn pipelined_requests_are_answered_once_their_device_reads() {
    let dir = tempfile::tempdir().unwrap();
    let relay = relay_at(&test_config(), &dir.path().join("r.db")).await;
    let mut alice = RawPeer::connect(&relay.url()).await;
    const REQUESTS: usize = 3_000;
    for _ in 0..REQUESTS {
        alice.send(&login("alice", "a1")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut logged_in = 0;
    while logged_in < REQUESTS {
        if let ServerMsg::LoginOk { .. } = alice.recv().await {
            logged_in += 1;
        }
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn the_user_list_works_with_a_hundred_thousand_users() {
    let _turn = crate::common::REAL_TIME.lock().await;
    use termphone::ids::{DeviceId, Platform};
    use termphone::relay::core::StoreOp;
    use termphone::relay::store::Store;
    const USERS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let logins: Vec<StoreOp> = (0..USERS)
        .map(|k| StoreOp::RecordLogin {
            app: DEV_APP_ID,
            user: UserId::parse(&format!("user{k:06}")).unwrap(),
            device: DeviceId::parse("d").unwrap(),
            platform: Platform::terminal(),
            at: 1,
        })
        .collect();
    Store::open(&db).unwrap().apply(&logins);
    let relay = relay_at(&test_config(), &db).await;

    let mut alice = Device::online(&relay.url(), "alice", "a1").await;
    let users = alice.users().await;
    assert_eq!(users.len(), USERS + 1);
    // In UserID order, each once.
    assert!(users.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(users.iter().filter(|(_, devices)| *devices > 0).count(), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_media_flood_is_dropped_and_told_once() {
    let (relay, mut flood, _dir) =
        alice_under(|limits| limits.media_frames = Rate::new(50.0, 20)).await;
    for _ in 0..300 {
        flood.send_binary(vec![0; 60]).await;
    }
    // One error for the whole flood, then the connection carries on.
    let mut rate_limited = 0;
    flood.send(&ClientMsg::Heartbeat).await;
    loop {
        match flood.recv().await {
            ServerMsg::Error { error, .. } if error.code == ErrorCode::RateLimited.code() => {
                assert!(error.message.contains("media_frames"), "{}", error.message);
                rate_limited += 1;
            }
            ServerMsg::HeartbeatAck => break,
            _ => {}
        }
    }
    assert_eq!(rate_limited, 1);
    relay.shutdown().await;
}
