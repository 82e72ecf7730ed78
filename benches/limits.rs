//! What no client can do to the relay, in figures (docs/limits.md):
//!
//! - three devices that stop reading while 72 MB of chat is sent to them:
//!   how much the relay grows, and whether each still gets every message
//!   once when it comes back;
//! - 12,000 sockets that never log in: how long a real device then takes to
//!   log in and place a call;
//! - one device flooding chat, typing, read marks and calls: what it is
//!   refused, and how login and message latency of everyone else compare
//!   with an idle relay.
//!
//! `cargo bench --bench limits` runs the release relay as its own process;
//! `cargo test` runs a few iterations of each (see `common::mode`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use common::{
    Mode, connect, connect_small, cores, expect, login, p50_p99, recv, rss_kib, send, start_relay,
};
use termphone::protocol::{self, ClientMsg, EntryKind, ServerMsg};

const APP: &str = "[[relay.apps]]\nid = 1400000000\nsecret = \"termphone-development-secret-not-for-deployment\"\nmax_devices_per_platform = 8\n";

#[tokio::main]
async fn main() {
    let Some(mode) = common::mode("limits") else {
        return;
    };
    println!(
        "limits benchmark ({}, this machine: {} cores)",
        mode.build(),
        cores()
    );
    common::raise_open_files();
    stalled_readers(mode).await;
    idle_sockets(mode).await;
    flood(mode).await;
}

async fn synced(ws: &mut common::Ws) {
    send(ws, &ClientMsg::Sync { after: 0 }).await;
    expect(ws, "synced", |m| {
        matches!(m, ServerMsg::Synced { more: false, .. })
    })
    .await;
}

async fn stalled_readers(mode: Mode) {
    const STALLED: usize = 3;
    let messages = mode.pick(1_200, 40);
    let text = "s".repeat(60_000);
    let (relay, url, _dir) = start_relay(APP).await;
    let pid = relay.id().unwrap();
    let mut stalled = Vec::new();
    for k in 0..STALLED {
        let mut ws = connect_small(&url).await;
        ws.send(Message::text(common::login_msg("bob", &format!("b{k}"))))
            .await
            .unwrap();
        expect(&mut ws, "login_ok", |m| {
            matches!(m, ServerMsg::LoginOk { .. })
        })
        .await;
        synced(&mut ws).await;
        // From here on nobody reads it, as a process stopped with SIGSTOP.
        stalled.push(ws);
    }
    let base = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let alice = login(&url, "alice", "a1").await;
    let (mut sink, mut stream) = alice.split();
    let acked = Arc::new(AtomicU64::new(0));
    let counting = {
        let acked = acked.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = stream.next().await {
                if let Ok(ServerMsg::MessageSent { .. }) = protocol::decode(&t) {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    for k in 0..messages {
        while k as u64 > acked.load(Ordering::Relaxed) + 64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let msg = ClientMsg::SendMessage {
            to: "bob".into(),
            text: format!("{k:05}{text}"),
            client_msg_id: format!("m{k}"),
        };
        sink.send(Message::text(protocol::encode(&msg)))
            .await
            .unwrap();
    }
    common::until("every message acknowledged", || {
        acked.load(Ordering::Relaxed) == messages as u64
    })
    .await;
    let sent_in = started.elapsed();
    // Past the relay's periodic trim (30 s), which hands freed memory back.
    tokio::time::sleep(mode.pick(Duration::from_secs(35), Duration::from_millis(200))).await;
    sampler.abort();
    let after = rss_kib(pid);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "stalled readers: {STALLED} devices stop reading, {:.0} MB of chat sent to them in {sent_in:.1?}: \
         relay RSS {:.1} MiB before, peak +{:.1} MiB, +{:.1} MiB after",
        (messages * text.len()) as f64 / 1e6,
        mib(base),
        mib(peak.load(Ordering::Relaxed).saturating_sub(base)),
        mib(after.saturating_sub(base)),
    );

    // They come back (new processes of the same devices) and catch up.
    drop(stalled);
    let mut complete = 0;
    for k in 0..STALLED {
        let mut ws = login(&url, "bob", &format!("b{k}")).await;
        send(&mut ws, &ClientMsg::Sync { after: 0 }).await;
        let mut seen = Vec::new();
        loop {
            match recv(&mut ws).await {
                ServerMsg::Entries { entries, .. } => {
                    for e in entries {
                        if let EntryKind::Message { message } = e.kind {
                            seen.push(message.text[..5].parse::<usize>().unwrap());
                        }
                    }
                }
                ServerMsg::Synced { upto, more: true } => {
                    send(&mut ws, &ClientMsg::Sync { after: upto }).await;
                }
                ServerMsg::Synced { more: false, .. } => break,
                _ => {}
            }
        }
        if seen == (0..messages).collect::<Vec<_>>() {
            complete += 1;
        }
    }
    println!(
        "stalled readers: back, {complete} of {STALLED} devices got all {messages} messages once, in order"
    );
    drop(counting);
}

async fn idle_sockets(mode: Mode) {
    let sockets = mode.pick(12_000, 300);
    let (_relay, url, _dir) =
        start_relay(&format!("[relay]\nmax_connections = 10000\n{APP}")).await;
    let _callee = login(&url, "callee", "c1").await;
    // From another address than the real device's, as an attacker would be
    // (from the same one, the real device waits for the idle sockets' login
    // deadline: relay.max_unauthenticated_per_address).
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    let flooding = Instant::now();
    let mut idle = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(attacker, 0)).unwrap();
        if let Ok(stream) = socket.connect(addr).await {
            idle.push(stream);
        }
    }
    let flooded_in = flooding.elapsed();
    let started = Instant::now();
    let mut device = loop {
        let mut ws = connect(&url).await;
        ws.send(Message::text(common::login_msg("real", "r1")))
            .await
            .unwrap();
        match recv(&mut ws).await {
            ServerMsg::LoginOk { .. } => break ws,
            // Refused at a cap: a real client retries with backoff.
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let logged_in = started.elapsed();
    send(
        &mut device,
        &ClientMsg::Call {
            invitees: vec!["callee".into()],
            group: false,
            timeout_secs: None,
            user_data: None,
        },
    )
    .await;
    expect(&mut device, "call_dialing", |m| {
        matches!(m, ServerMsg::CallDialing { .. })
    })
    .await;
    println!(
        "idle sockets: {} connections that never log in, opened in {flooded_in:.1?}; \
         a real device then logged in after {logged_in:.1?} and placed a call",
        idle.len()
    );
    drop(idle);
}

/// Login and message latency of other users, idle and while one device floods.
async fn latencies(url: &str, samples: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut logins = Vec::new();
    for k in 0..samples {
        let t = Instant::now();
        let ws = login(url, "probe", &format!("p{}", k % 8)).await;
        logins.push(t.elapsed());
        drop(ws);
    }
    let mut from = login(url, "ann", "a1").await;
    synced(&mut from).await;
    let mut to = login(url, "ben", "b1").await;
    synced(&mut to).await;
    let mut messages = Vec::new();
    for k in 0..samples {
        let t = Instant::now();
        send(
            &mut from,
            &ClientMsg::SendMessage {
                to: "ben".into(),
                text: "hi".into(),
                client_msg_id: format!("lat-{k}-{}", termphone::time::unix_millis()),
            },
        )
        .await;
        expect(&mut to, "entries", |m| {
            matches!(m, ServerMsg::Entries { .. })
        })
        .await;
        messages.push(t.elapsed());
    }
    (logins, messages)
}

async fn flood(mode: Mode) {
    let samples = mode.pick(200, 5);
    // The relay's own limits, as shipped.
    let config = format!("{APP}[relay.rate_limits]\n");
    let (_relay, url, _dir) = start_relay(&config).await;
    let (mut idle_logins, mut idle_messages) = latencies(&url, samples).await;

    let flooder = login(&url, "flood", "f1").await;
    let (mut sink, mut stream) = flooder.split();
    let refused = Arc::new(AtomicU64::new(0));
    let counting = {
        let refused = refused.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = stream.next().await {
                if let Ok(ServerMsg::Error { .. }) = protocol::decode::<ServerMsg>(&t) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sent = Arc::new(AtomicU64::new(0));
    let flooding = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for k in 0u64.. {
                let msg = match k % 4 {
                    0 => ClientMsg::SendMessage {
                        to: "ben".into(),
                        text: "spam".into(),
                        client_msg_id: format!("f{k}"),
                    },
                    1 => ClientMsg::Typing { to: "ben".into() },
                    2 => ClientMsg::MarkRead { peer: "ben".into() },
                    _ => ClientMsg::Call {
                        invitees: vec!["nobody-here".into()],
                        group: false,
                        timeout_secs: None,
                        user_data: None,
                    },
                };
                if sink
                    .send(Message::text(protocol::encode(&msg)))
                    .await
                    .is_err()
                {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut flood_logins, mut flood_messages) = latencies(&url, samples).await;
    flooding.abort();
    counting.abort();
    println!(
        "flood: one device sent {} frames (chat, typing, read marks, calls) as fast as it could; {} were refused",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    println!(
        "flood: login latency idle {}, during the flood {}",
        p50_p99(&mut idle_logins),
        p50_p99(&mut flood_logins)
    );
    println!(
        "flood: message latency idle {}, during the flood {}",
        p50_p99(&mut idle_messages),
        p50_p99(&mut flood_messages)
    );
}
