//! Relay benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench relay` starts the release `termphone relay` as its
//! own process on loopback (so its memory is measured alone), then measures
//! the raw WebSocket round trip, logins per second, and the relay's resident
//! memory per idle logged-in device at 1,000 devices.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use termphone::ids::{DEV_APP_ID, UserId};
use termphone::protocol::{self, ClientMsg, ServerMsg};
use termphone::relay::server::ws_config;
use termphone::time::unix_millis;
use termphone::usersig::{self, DEV_SECRET, Ticket};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const IDLE_DEVICES: usize = 1_000;
const ROUND_TRIPS: usize = 5_000;
const RELOGINS: usize = 5_000;

fn ticket(user: &str) -> String {
    usersig::mint(
        DEV_SECRET,
        &Ticket {
            app: DEV_APP_ID,
            user: UserId::parse(user).unwrap(),
            issued_at: unix_millis() / 1000,
            lifetime: 3600,
        },
    )
}

fn login_msg(user: &str, device: &str) -> String {
    protocol::encode(&ClientMsg::Login {
        app: DEV_APP_ID,
        user: user.into(),
        device: device.into(),
        platform: "terminal".into(),
        user_sig: ticket(user),
    })
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
        .await
        .expect("connect to the relay");
    ws
}

async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return protocol::decode(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("relay connection ended: {other:?}"),
        }
    }
}

async fn login(url: &str, user: &str, device: &str) -> Ws {
    let mut ws = connect(url).await;
    ws.send(Message::text(login_msg(user, device)))
        .await
        .unwrap();
    match recv(&mut ws).await {
        ServerMsg::LoginOk { .. } => ws,
        other => panic!("login failed: {other:?}"),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_termphone"))
        .args(["relay", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("bench.sqlite3"))
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .env("TERMPHONE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start termphone relay");
    let pid = relay.id().unwrap();
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let url = first
        .strip_prefix("listening on ")
        .expect(&first)
        .to_owned();
    println!(
        "relay: {url} (pid {pid}, release build, this machine: {} cores)",
        num_cpus()
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
    rtts.sort();
    println!(
        "websocket round trip (heartbeat -> ack, {ROUND_TRIPS} samples): p50 {}  p99 {}",
        us(percentile(&rtts, 0.5)),
        us(percentile(&rtts, 0.99))
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

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
