//! Chat benchmark over real WebSockets on loopback: prints figures, asserts nothing.
//!
//! `cargo bench --bench chat`: 100 users with 3 devices each. Every message
//! reaches 6 devices: the recipient's 3, the sender's 2 others, and the
//! acknowledgement on the sending device. Then the p99 delivery latency at
//! half the measured rate, and how long a device that missed 10,000
//! messages takes to catch up. All of it over `ws://`, then over `wss://`
//! (a self-signed certificate, TLS 1.3), so the cost of TLS shows beside
//! it. `cargo test` runs it in its quick mode (see `common::mode`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use common::{Mode, Transport, Ws, cores, login, percentile, recv, send, start_relay_over, us};
use termphone::protocol::{self, ClientMsg, EntryKind, ServerMsg};

const DEVICES: usize = 3;
const WINDOW: usize = 64;

/// How much of each measurement a run does.
#[derive(Clone, Copy)]
struct Sizes {
    users: usize,
    messages_per_sender: usize,
    /// Per sender, at half load.
    paced_per_sender: usize,
    catch_up: usize,
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Waits for the end of a catch-up, asking for each further page.
async fn synced(ws: &mut Ws) {
    loop {
        match recv(ws).await {
            ServerMsg::Synced { more: false, .. } => return,
            ServerMsg::Synced { upto, more: true } => {
                send(ws, &ClientMsg::Sync { after: upto }).await;
            }
            _ => {}
        }
    }
}

async fn device(url: &str, user: &str, dev: &str) -> Ws {
    let mut ws = login(url, user, dev).await;
    send(
        &mut ws,
        &ClientMsg::Sync {
            after: u64::MAX >> 1,
        },
    )
    .await;
    synced(&mut ws).await;
    ws
}

/// Counts every message and acknowledgement a connection receives; with
/// `latencies`, records how long each message took from its sender's clock.
fn reader(
    mut stream: futures_util::stream::SplitStream<Ws>,
    delivered: Arc<AtomicU64>,
    latencies: Option<Arc<Mutex<Vec<Duration>>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(Message::Text(text))) = stream.next().await {
            match protocol::decode::<ServerMsg>(&text) {
                Ok(ServerMsg::Entries { entries, .. }) => {
                    for e in entries {
                        if let EntryKind::Message { message } = e.kind {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            if let (Some(lat), Some(sent)) =
                                (&latencies, message.text.strip_prefix("t="))
                            {
                                let sent: u128 = sent.parse().unwrap();
                                let took = Duration::from_nanos((unix_nanos() - sent) as u64);
                                lat.lock().await.push(took);
                            }
                        }
                    }
                }
                Ok(ServerMsg::MessageSent { .. }) => {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    })
}

/// Every user's first device sends to the next user, `per_sender` messages
/// each, at most `gap` apart (zero: as fast as the window allows).
async fn run_load(
    senders: Vec<futures_util::stream::SplitSink<Ws, Message>>,
    acked: Arc<AtomicU64>,
    per_sender: usize,
    gap: Duration,
    tag: &str,
) -> Vec<futures_util::stream::SplitSink<Ws, Message>> {
    let users = senders.len();
    let mut tasks = Vec::new();
    for (i, mut sink) in senders.into_iter().enumerate() {
        let acked = acked.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let to = format!("u{}", (i + 1) % users);
            let mut next = Instant::now();
            for k in 0..per_sender {
                // Keep at most WINDOW messages of all senders unacknowledged per sender.
                while k as u64 > acked.load(Ordering::Relaxed) / users as u64 + WINDOW as u64 {
                    tokio::task::yield_now().await;
                }
                if !gap.is_zero() {
                    tokio::time::sleep_until(next.into()).await;
                    next += gap;
                }
                let msg = ClientMsg::SendMessage {
                    to: to.clone(),
                    text: format!("t={}", unix_nanos()),
                    client_msg_id: format!("{tag}-{i}-{k}"),
                };
                sink.send(Message::text(protocol::encode(&msg)))
                    .await
                    .unwrap();
            }
            sink
        }));
    }
    let mut sinks = Vec::new();
    for t in tasks {
        sinks.push(t.await.unwrap());
    }
    sinks
}

#[tokio::main]
async fn main() {
    let Some(mode) = common::mode("chat") else {
        return;
    };
    for transport in Transport::BOTH {
        run(mode, transport).await;
    }
}

async fn run(mode: Mode, transport: Transport) {
    let Sizes {
        users,
        messages_per_sender,
        paced_per_sender,
        catch_up,
    } = mode.pick(
        Sizes {
            users: 100,
            messages_per_sender: 300,
            paced_per_sender: 200,
            catch_up: 10_000,
        },
        Sizes {
            users: 4,
            messages_per_sender: 10,
            paced_per_sender: 5,
            catch_up: 200,
        },
    );
    let config = "[[relay.apps]]\nid = 1400000000\nsecret = \"termphone-development-secret-not-for-deployment\"\ncompensation_window_days = 1\n";
    let (mut relay, url, dir) = start_relay_over(config, transport).await;
    println!(
        "\n[{}] relay: {url} ({}, this machine: {} cores); {users} users x {DEVICES} devices",
        transport.label(),
        mode.build(),
        cores()
    );

    // Everybody online and caught up; first devices send, all devices count.
    let mut sinks = Vec::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut keep = Vec::new();
    for u in 0..users {
        for d in 0..DEVICES {
            let ws = device(&url, &format!("u{u}"), &format!("d{d}")).await;
            let (sink, stream) = ws.split();
            let counter = if d == 0 {
                acked.clone()
            } else {
                delivered.clone()
            };
            readers.push(reader(stream, counter, None));
            if d == 0 {
                sinks.push(sink);
            } else {
                keep.push(sink);
            }
        }
    }
    // Acks count as deliveries too, on the sending device.
    let total_messages = (users * messages_per_sender) as u64;
    let t = Instant::now();
    let _sinks = run_load(
        sinks,
        acked.clone(),
        messages_per_sender,
        Duration::ZERO,
        "full",
    )
    .await;
    let expected = total_messages * 6;
    common::until("every delivery at full load", || {
        delivered.load(Ordering::Relaxed) + acked.load(Ordering::Relaxed) >= expected
    })
    .await;
    let elapsed = t.elapsed();
    let rate = expected as f64 / elapsed.as_secs_f64();
    println!(
        "full load: {total_messages} messages, {expected} deliveries in {:.2?} = {:.0} delivered messages/s ({:.0} messages/s sent)",
        elapsed,
        rate,
        total_messages as f64 / elapsed.as_secs_f64()
    );
    drop(readers);
    drop(keep);
    let _ = relay.kill().await;

    // Half that load, paced, on a fresh relay: delivery latency.
    let (mut relay, url, _dir2) = start_relay_over(config, transport).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut sinks = Vec::new();
    let mut keep = Vec::new();
    let mut readers = Vec::new();
    for u in 0..users {
        for d in 0..DEVICES {
            let ws = device(&url, &format!("u{u}"), &format!("d{d}")).await;
            let (sink, stream) = ws.split();
            if d == 0 {
                readers.push(reader(stream, acked.clone(), None));
                sinks.push(sink);
            } else {
                readers.push(reader(stream, delivered.clone(), Some(latencies.clone())));
                keep.push(sink);
            }
        }
    }
    let half_msgs_per_sec = rate / 6.0 / 2.0;
    let gap = Duration::from_secs_f64(users as f64 / half_msgs_per_sec);
    let _sinks = run_load(sinks, acked.clone(), paced_per_sender, gap, "half").await;
    // Counted on second and third devices: the recipient's 2 and the sender's 2.
    let expected_deliveries = (users * paced_per_sender * 4) as u64;
    common::until("every delivery at half load", || {
        delivered.load(Ordering::Relaxed) >= expected_deliveries
    })
    .await;
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    println!(
        "half load ({:.0} delivered messages/s): delivery latency over {} deliveries p50 {}  p99 {}",
        half_msgs_per_sec * 6.0,
        lat.len(),
        us(percentile(&lat, 0.5)),
        us(percentile(&lat, 0.99))
    );
    drop(readers);
    drop(keep);

    // Catch-up: many messages to a user whose only device is away.
    let sender = device(&url, "catchup-sender", "d").await;
    drop(device(&url, "catchup", "d").await);
    // The sender reads everything it is sent (acknowledgements, and its own
    // timeline's copies): a client that does not read is dropped.
    let (mut sink, stream) = sender.split();
    let acked = Arc::new(AtomicU64::new(0));
    let counting = reader(stream, acked.clone(), None);
    for k in 0..catch_up {
        while k as u64 >= acked.load(Ordering::Relaxed) / 2 + WINDOW as u64 {
            tokio::task::yield_now().await;
        }
        let msg = ClientMsg::SendMessage {
            to: "catchup".into(),
            text: format!("missed {k}"),
            client_msg_id: format!("cu-{k}"),
        };
        sink.send(Message::text(protocol::encode(&msg)))
            .await
            .unwrap();
    }
    // Each message counts twice: its acknowledgement, and its copy in the
    // sender's own timeline.
    common::until("the catch-up messages acknowledged", || {
        acked.load(Ordering::Relaxed) >= 2 * catch_up as u64
    })
    .await;
    counting.abort();
    let mut ws = login(&url, "catchup", "fresh").await;
    let t = Instant::now();
    send(&mut ws, &ClientMsg::Sync { after: 0 }).await;
    let mut got = 0;
    let mut pages = 0;
    loop {
        match recv(&mut ws).await {
            ServerMsg::Entries { entries, .. } => got += entries.len(),
            // A long catch-up comes in pages, each asked for in turn.
            ServerMsg::Synced { upto, more: true } => {
                pages += 1;
                send(&mut ws, &ClientMsg::Sync { after: upto }).await;
            }
            ServerMsg::Synced { more: false, .. } => break,
            _ => {}
        }
    }
    println!(
        "catch-up: a device that missed {got} messages has all of them after {:.1} ms (sync request to SYNCED, {} pages)",
        t.elapsed().as_secs_f64() * 1000.0,
        pages + 1
    );

    // Killed and started again on the same database: how long before it
    // serves, with all of that in it (the start reads every message still
    // recallable).
    let _ = relay.kill().await;
    let t = Instant::now();
    let (mut relay, url) = common::restart_relay(dir.path(), config, transport).await;
    drop(login(&url, "catchup", "after-restart").await);
    println!(
        "restart: killed with {catch_up} messages from one user (and the others') in its database, serving again (a login answered) after {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let _ = relay.kill().await;
}
