//! Relay benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench relay` starts the release `termphone relay` as its
//! own process on loopback (so its memory is measured alone), then measures
//! the raw WebSocket round trip, logins per second, and the relay's resident
//! memory per idle logged-in device at 1,000 devices.

mod common;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use common::{cores, login, login_msg, p50_p99, recv, start_relay};
use termphone::protocol::{self, ClientMsg, ServerMsg};

const IDLE_DEVICES: usize = 1_000;
const ROUND_TRIPS: usize = 5_000;
const RELOGINS: usize = 5_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc")
}

#[tokio::main]
async fn main() {
    let (mut relay, url, _dir) = start_relay("").await;
    let pid = relay.id().unwrap();
    println!(
        "relay: {url} (pid {pid}, release build, this machine: {} cores)",
        cores()
    );

    // Raw WebSocket round trip: a heartbeat and its ack on one logged-in connection.
    let mut ws = login(&url, "probe", "p1").await;
    let heartbeat = protocol::encode(&ClientMsg::Heartbeat);
    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        ws.send(Message::text(heartbeat.clone())).await.unwrap();
        assert_eq!(recv(&mut ws).await, ServerMsg::HeartbeatAck);
        rtts.push(t.elapsed());
    }
    println!(
        "websocket round trip (heartbeat -> ack, {ROUND_TRIPS} samples): {}",
        p50_p99(&mut rtts)
    );

    // Logins on an established connection: ticket check + session, back to back.
    let t = Instant::now();
    for k in 0..RELOGINS {
        let user = format!("relogin{}", k % 100);
        ws.send(Message::text(login_msg(&user, "r1")))
            .await
            .unwrap();
        assert!(matches!(recv(&mut ws).await, ServerMsg::LoginOk { .. }));
    }
    let elapsed = t.elapsed();
    println!(
        "logins on one connection, sequential: {RELOGINS} in {:.2?} = {:.0} logins/s",
        elapsed,
        RELOGINS as f64 / elapsed.as_secs_f64()
    );
    drop(ws);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib(pid);

    // Fresh devices, 50 at a time: TCP connect + WebSocket handshake + login.
    let t = Instant::now();
    let mut idle = Vec::with_capacity(IDLE_DEVICES);
    for chunk in 0..IDLE_DEVICES / 50 {
        let batch = (0..50).map(|k| {
            let url = url.clone();
            let n = chunk * 50 + k;
            tokio::spawn(async move { login(&url, &format!("user{n}"), "d1").await })
        });
        for task in batch.collect::<Vec<_>>() {
            idle.push(task.await.unwrap());
        }
    }
    let elapsed = t.elapsed();
    println!(
        "fresh devices (connect + handshake + login, 50 concurrent): {IDLE_DEVICES} in {:.2?} = {:.0} logins/s",
        elapsed,
        IDLE_DEVICES as f64 / elapsed.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(pid);
    println!(
        "relay resident memory: {base} KiB before, {loaded} KiB with {IDLE_DEVICES} idle logged-in devices \
         = {:.1} KiB per idle device (goal: under 16 KiB)",
        (loaded.saturating_sub(base)) as f64 / IDLE_DEVICES as f64
    );
    drop(idle);
    let _ = relay.kill().await;
}
