//! Relay benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench relay` starts the release `termphone relay` as its
//! own process on loopback (so its memory is measured alone), then measures
//! the raw WebSocket round trip, logins per second, and the relay's resident
//! memory per idle logged-in device at 1,000 devices; all of it over
//! `ws://`, then over `wss://` (a self-signed certificate, TLS 1.3), so the
//! cost of TLS shows beside it. `cargo test` runs it in its quick mode (see
//! `common::mode`).

mod common;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use common::{
    Mode, Transport, cores, expect, login, login_msg, p50_p99, rss_kib, start_relay_over,
};
use termphone::protocol::{self, ClientMsg, ServerMsg};

/// Devices connect this many at a time.
const BATCH: usize = 50;

#[tokio::main]
async fn main() {
    let Some(mode) = common::mode("relay") else {
        return;
    };
    for transport in Transport::BOTH {
        run(mode, transport).await;
    }
}

async fn run(mode: Mode, transport: Transport) {
    let round_trips = mode.pick(5_000, 20);
    let relogins = mode.pick(5_000, 20);
    let idle_devices = mode.pick(1_000, BATCH);
    // Memory settles after a burst; a quick run's figure means nothing anyway.
    let settle = mode.pick(Duration::from_millis(500), Duration::ZERO);
    let (mut relay, url, _dir) = start_relay_over("", transport).await;
    let pid = relay.id().unwrap();
    println!(
        "\n[{}] relay: {url} (pid {pid}, {}, this machine: {} cores)",
        transport.label(),
        mode.build(),
        cores()
    );

    // Raw WebSocket round trip: a heartbeat and its ack on one logged-in connection.
    let mut ws = login(&url, "probe", "p1").await;
    let heartbeat = protocol::encode(&ClientMsg::Heartbeat);
    let mut rtts = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let t = Instant::now();
        ws.send(Message::text(heartbeat.clone())).await.unwrap();
        expect(&mut ws, "heartbeat_ack", |m| *m == ServerMsg::HeartbeatAck).await;
        rtts.push(t.elapsed());
    }
    println!(
        "websocket round trip (heartbeat -> ack, {round_trips} samples): {}",
        p50_p99(&mut rtts)
    );

    // Logins on an established connection: ticket check + session, back to back.
    let t = Instant::now();
    for k in 0..relogins {
        let user = format!("relogin{}", k % 100);
        ws.send(Message::text(login_msg(&user, "r1")))
            .await
            .unwrap();
        expect(&mut ws, "login_ok", |m| {
            matches!(m, ServerMsg::LoginOk { .. })
        })
        .await;
    }
    let elapsed = t.elapsed();
    println!(
        "logins on one connection, sequential: {relogins} in {:.2?} = {:.0} logins/s",
        elapsed,
        relogins as f64 / elapsed.as_secs_f64()
    );
    drop(ws);

    tokio::time::sleep(settle).await;
    let base = rss_kib(pid);

    // Fresh devices, 50 at a time: TCP connect + WebSocket handshake + login.
    let t = Instant::now();
    let mut idle = Vec::with_capacity(idle_devices);
    for chunk in 0..idle_devices / BATCH {
        let batch = (0..BATCH).map(|k| {
            let url = url.clone();
            let n = chunk * BATCH + k;
            tokio::spawn(async move { login(&url, &format!("user{n}"), "d1").await })
        });
        for task in batch.collect::<Vec<_>>() {
            idle.push(task.await.unwrap());
        }
    }
    let elapsed = t.elapsed();
    println!(
        "fresh devices (connect + handshake + login, {BATCH} concurrent): {idle_devices} in {:.2?} = {:.0} logins/s",
        elapsed,
        idle_devices as f64 / elapsed.as_secs_f64()
    );

    tokio::time::sleep(settle * 4).await;
    let loaded = rss_kib(pid);
    println!(
        "relay resident memory: {base} KiB before, {loaded} KiB with {idle_devices} idle logged-in devices \
         = {:.1} KiB per idle device (goal: under 16 KiB)",
        (loaded.saturating_sub(base)) as f64 / idle_devices as f64
    );
    drop(idle);
    let _ = relay.kill().await;
}
