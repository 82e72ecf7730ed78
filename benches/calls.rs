//! Call benchmark over real WebSockets on loopback: prints figures, asserts nothing.
//!
//! `cargo bench --bench calls`: for 1, 3 and 10 devices of the callee (all
//! with multi-device ability), the time from the caller's `call` to the last
//! device's invitation, and from an accept to the last other device's
//! cancel, over 1,000 calls each, beside the raw WebSocket round trip of the
//! same run; then call setups per second with many pairs at once, and
//! logins and logouts per second, with no calls up and with 1,000.
//! `cargo test` runs it in its quick mode (see `common::mode`).

mod common;

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use common::{Ws, cores, expect, login, login_msg, p50_p99, send, start_relay};
use termphone::protocol::{CallInfo, ClientMsg, ServerMsg};

/// How much of each measurement a run does.
#[derive(Clone, Copy)]
struct Sizes {
    calls: usize,
    pairs: usize,
    window: Duration,
    /// Calls kept up while the setups are measured again.
    held: usize,
}

async fn invited(ws: &mut Ws) -> (Instant, CallInfo) {
    match expect(ws, "call_invite", |m| {
        matches!(m, ServerMsg::CallInvite { .. })
    })
    .await
    {
        ServerMsg::CallInvite { call } => (Instant::now(), call),
        _ => unreachable!(),
    }
}

async fn canceled(ws: &mut Ws) -> Instant {
    expect(ws, "call_canceled", |m| {
        matches!(m, ServerMsg::CallCanceled { .. })
    })
    .await;
    Instant::now()
}

async fn begun(ws: &mut Ws) {
    expect(ws, "call_begin", |m| {
        matches!(m, ServerMsg::CallBegin { .. })
    })
    .await;
}

async fn ended(ws: &mut Ws) {
    expect(ws, "call_end", |m| matches!(m, ServerMsg::CallEnd { .. })).await;
}

fn call_msg(callee: &str) -> ClientMsg {
    ClientMsg::Call {
        invitees: vec![callee.to_owned()],
        group: false,
        timeout_secs: None,
        user_data: None,
    }
}

async fn round_trips(ws: &mut Ws, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        send(ws, &ClientMsg::Heartbeat).await;
        expect(ws, "heartbeat_ack", |m| *m == ServerMsg::HeartbeatAck).await;
        out.push(t.elapsed());
    }
    out
}

async fn fan_out(url: &str, devices: usize, calls: usize) {
    let callee = format!("callee{devices}");
    let caller_name = format!("caller{devices}");
    let mut caller = login(url, &caller_name, "c").await;
    let mut phones = Vec::new();
    for d in 0..devices {
        let mut ws = login(url, &callee, &format!("d{d}")).await;
        send(&mut ws, &ClientMsg::MultiDevice { enable: true }).await;
        phones.push(ws);
    }
    // Let the multi-device flags land before the first call.
    let _ = round_trips(&mut phones[devices - 1], 1).await;
    let mut ring = Vec::with_capacity(calls);
    let mut cancel = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        send(&mut caller, &call_msg(&callee)).await;
        let arrivals = join_all(phones.iter_mut().map(invited)).await;
        ring.push(arrivals.iter().map(|(t, _)| *t).max().unwrap() - t0);
        let call_id = arrivals[0].1.call_id.clone();
        expect(&mut caller, "call_dialing", |m| {
            matches!(m, ServerMsg::CallDialing { .. })
        })
        .await;

        let (winner, others) = phones.split_first_mut().unwrap();
        let t1 = Instant::now();
        send(
            winner,
            &ClientMsg::Accept {
                call_id: call_id.clone(),
                end_current: false,
            },
        )
        .await;
        if !others.is_empty() {
            let stops = join_all(others.iter_mut().map(canceled)).await;
            cancel.push(stops.into_iter().max().unwrap() - t1);
        }
        begun(winner).await;
        begun(&mut caller).await;
        send(&mut caller, &ClientMsg::Hangup { call_id }).await;
        ended(&mut caller).await;
        ended(winner).await;
    }
    let mut rtt = round_trips(&mut caller, calls).await;
    print!(
        "callee devices {devices:>2}: call -> last ON_CALL_RECEIVED {}",
        p50_p99(&mut ring)
    );
    if devices > 1 {
        print!(
            " | accept -> last ON_CALL_CANCELED {}",
            p50_p99(&mut cancel)
        );
    }
    println!(" | websocket round trip {}", p50_p99(&mut rtt));
}

/// Completes call -> ring -> accept -> both begin -> hangup -> both end,
/// until `until`; at least once, so that even a short run exercises it.
async fn pair_loop(url: String, k: usize, until: Instant) -> usize {
    let callee = format!("pc{k}");
    let mut caller = login(&url, &format!("pr{k}"), "c").await;
    let mut phone = login(&url, &callee, "d").await;
    let mut setups = 0;
    loop {
        send(&mut caller, &call_msg(&callee)).await;
        let (_, call) = invited(&mut phone).await;
        send(
            &mut phone,
            &ClientMsg::Accept {
                call_id: call.call_id.clone(),
                end_current: false,
            },
        )
        .await;
        begun(&mut phone).await;
        begun(&mut caller).await;
        setups += 1;
        send(
            &mut caller,
            &ClientMsg::Hangup {
                call_id: call.call_id,
            },
        )
        .await;
        ended(&mut caller).await;
        ended(&mut phone).await;
        if Instant::now() >= until {
            return setups;
        }
    }
}

/// An answered call between two new users that stays up: what a busy
/// relay holds while others set up theirs.
async fn held_call(url: String, k: usize) -> [Ws; 2] {
    let callee = format!("hc{k}");
    let mut caller = login(&url, &format!("hr{k}"), "c").await;
    let mut phone = login(&url, &callee, "d").await;
    send(&mut caller, &call_msg(&callee)).await;
    let (_, call) = invited(&mut phone).await;
    send(
        &mut phone,
        &ClientMsg::Accept {
            call_id: call.call_id,
            end_current: false,
        },
    )
    .await;
    begun(&mut phone).await;
    begun(&mut caller).await;
    [caller, phone]
}

/// Runs `job` as `n` tasks at once (the k-th gets `k`) until `window` has
/// passed: how many times they completed it, and how long that took.
async fn at_once<F, Fut>(url: &str, n: usize, window: Duration, job: F) -> (usize, Duration)
where
    F: Fn(String, usize, Instant) -> Fut,
    Fut: Future<Output = usize> + Send + 'static,
{
    let until = Instant::now() + window;
    let t = Instant::now();
    let counts = join_all((0..n).map(|k| tokio::spawn(job(url.to_owned(), k, until)))).await;
    let total = counts.into_iter().map(|c| c.unwrap()).sum();
    (total, t.elapsed())
}

/// Call setups per second from `pairs` caller/callee pairs at once, for
/// `window`. A setup is a call until both sides have ON_CALL_BEGIN; each
/// loop also hangs up.
async fn setups(url: &str, pairs: usize, window: Duration, held: usize) {
    let (total, took) = at_once(url, pairs, window, pair_loop).await;
    println!(
        "call setups with {held} other calls up: {total} in {took:.2?} with {pairs} pairs at once = {:.0} setups/s (each with its hangup)",
        total as f64 / took.as_secs_f64()
    );
}

/// Logs one device out and in again on its connection until `until`. A
/// login tells the device of the calls ringing for it and rings it for any
/// still inviting its user; a logout ends its session and the invitations
/// ringing on it: each must look at its own user's calls, not at every call
/// the relay holds (issue 21).
async fn session_loop(url: String, k: usize, until: Instant) -> usize {
    let user = format!("s{k}");
    let mut ws = login(&url, &user, "d").await;
    let mut cycles = 0;
    loop {
        send(&mut ws, &ClientMsg::Logout).await;
        expect(&mut ws, "logged_out", |m| matches!(m, ServerMsg::LoggedOut)).await;
        cycles += 1;
        if Instant::now() >= until {
            return cycles;
        }
        ws.send(Message::text(login_msg(&user, "d"))).await.unwrap();
        expect(&mut ws, "login_ok", |m| {
            matches!(m, ServerMsg::LoginOk { .. })
        })
        .await;
    }
}

/// Logouts, each followed by a login, per second from `devices` at once.
async fn sessions(url: &str, devices: usize, window: Duration, held: usize) {
    let (total, took) = at_once(url, devices, window, session_loop).await;
    println!(
        "logouts and logins with {held} calls up: {total} of each in {took:.2?} from {devices} devices at once = {:.0} a second",
        total as f64 / took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let Some(mode) = common::mode("calls") else {
        return;
    };
    let sizes = mode.pick(
        Sizes {
            calls: 1_000,
            pairs: 100,
            window: Duration::from_secs(3),
            held: 1_000,
        },
        Sizes {
            calls: 5,
            pairs: 4,
            window: Duration::from_millis(300),
            held: 4,
        },
    );
    let config = "[[relay.apps]]\nid = 1400000000\nsecret = \"termphone-development-secret-not-for-deployment\"\nmax_devices_per_platform = 16\n";
    let (mut relay, url, _dir) = start_relay(config).await;
    println!(
        "relay: {url} ({}, this machine: {} cores); {} calls per row",
        mode.build(),
        cores(),
        sizes.calls
    );
    for devices in [1, 3, 10] {
        fan_out(&url, devices, sizes.calls).await;
    }
    setups(&url, sizes.pairs, sizes.window, 0).await;
    sessions(&url, sizes.pairs, sizes.window, 0).await;
    // The same with many calls in progress: a setup's cost must not grow
    // with the calls the relay holds (issue 21).
    common::raise_open_files();
    let mut held = Vec::with_capacity(sizes.held);
    // A hundred at a time: the relay lets 256 sockets from one address wait
    // to log in.
    for chunk in (0..sizes.held).collect::<Vec<_>>().chunks(100) {
        let calls = join_all(
            chunk
                .iter()
                .map(|&k| tokio::spawn(held_call(url.clone(), k))),
        )
        .await;
        held.extend(calls.into_iter().map(|c| c.unwrap()));
    }
    setups(&url, sizes.pairs, sizes.window, held.len()).await;
    sessions(&url, sizes.pairs, sizes.window, held.len()).await;
    let _ = relay.kill().await;
}
