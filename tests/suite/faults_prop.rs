//! Random fault schedules over chat and calls, checked against what a user
//! is promised (issue 10):
//!
//! - every device applies its user's whole timeline, each entry once and in
//!   order, across every run of its process (its local store carries the
//!   position from one run to the next);
//! - every message a device sent and did not lose with its process is
//!   acknowledged, and everything acknowledged is in the relay's store;
//! - once the network heals, no call is connected on one side only, and
//!   after everyone hangs up nothing rings, dials or runs anywhere;
//! - every call a device saw is in its local history, finished.
//!
//! Faults: link latency, cuts at any message boundary, half-open links,
//! refused reconnects, devices killed and started again, relay restarts.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use termphone::client::engine::{CallCommand, ChatCommand, Command};
use termphone::client::event::Event;
use termphone::client::local_store::LocalStore;
use termphone::ids::{DEV_APP_ID, UserId};
use termphone::relay::core::{StoreOp, StoreReply};

use crate::common::mesh::Mesh;

const USERS: [&str; 3] = ["u0", "u1", "u2"];

#[derive(Clone, Debug)]
enum Op {
    Send { from: usize, to: usize },
    Call { from: usize, to: usize },
    Accept(usize),
    Reject(usize),
    Hangup(usize),
    Advance(u64),
    Cut(usize),
    CutSilently(usize),
    Block { device: usize, ms: u64 },
    Kill(usize),
    Restart(usize),
    RestartRelay,
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    let d = 0..devices;
    let u = 0..USERS.len();
    prop_oneof![
        6 => (d.clone(), u.clone()).prop_map(|(from, to)| Op::Send { from, to }),
        2 => (d.clone(), u).prop_map(|(from, to)| Op::Call { from, to }),
        2 => d.clone().prop_map(Op::Accept),
        1 => d.clone().prop_map(Op::Reject),
        2 => d.clone().prop_map(Op::Hangup),
        4 => prop_oneof![0u64..50, 0u64..3_000, 0u64..40_000].prop_map(Op::Advance),
        2 => d.clone().prop_map(Op::Cut),
        1 => d.clone().prop_map(Op::CutSilently),
        1 => (d.clone(), 0u64..8_000).prop_map(|(device, ms)| Op::Block { device, ms }),
        1 => d.clone().prop_map(Op::Kill),
        1 => d.prop_map(Op::Restart),
        1 => Just(Op::RestartRelay),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Leg {
    Ringing,
    Dialing,
    InCall,
    Done,
}

/// One device as its user would see it: its process (which may die), and
/// its profile on disk (which survives).
struct Device {
    user: usize,
    alive: bool,
    run: usize,
    store: LocalStore,
    /// Timeline seqs applied, across every run.
    applied: Vec<u64>,
    /// Each call's leg in each run of the process.
    legs: HashMap<(usize, String), Leg>,
    /// Texts it sent, with the run that sent them.
    sends: Vec<(usize, String)>,
    /// Texts it was told are stored.
    acknowledged: Vec<String>,
    /// Texts it was told were refused.
    refused: Vec<String>,
}

struct World {
    mesh: Mesh,
    devices: Vec<Device>,
    dir: tempfile::TempDir,
    next_text: usize,
}

impl World {
    fn profile(&self, d: usize) -> std::path::PathBuf {
        let path = self.dir.path().join(format!("d{d}"));
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Hands what each device saw to its checks and to its local store, as
    /// the front ends' recorder does.
    fn observe(&mut self) -> Result<(), TestCaseError> {
        for d in 0..self.devices.len() {
            let events = self.mesh.take(d);
            let dev = &mut self.devices[d];
            for e in events {
                if let Some(record) = e.call_record() {
                    dev.store.record_call(record).unwrap();
                }
                dev.store.apply(&e).unwrap();
                let seq = match &e {
                    Event::MessageReceived { seq, .. }
                    | Event::MessageRecalled { seq, .. }
                    | Event::ConversationRead { seq, .. }
                    | Event::C2cReadReceipt { seq, .. }
                    | Event::MessageSent { seq: Some(seq), .. } => Some(*seq),
                    _ => None,
                };
                if let Some(seq) = seq {
                    if dev.applied.last().is_some_and(|&last| last >= seq) {
                        return Err(TestCaseError::fail(format!(
                            "device {d} applied seq {seq} after {:?}",
                            dev.applied.last()
                        )));
                    }
                    dev.applied.push(seq);
                }
                match &e {
                    Event::MessageSent { text, seq, .. } => {
                        // Sync is on: its own timeline brings it back, and
                        // that is where it is reported, with its place.
                        prop_assert!(
                            seq.is_some(),
                            "device {}: {} acknowledged out of its timeline",
                            d,
                            text
                        );
                        dev.acknowledged.push(text.clone());
                    }
                    Event::MessageReceived { text, .. } => {
                        let own = dev
                            .sends
                            .iter()
                            .any(|(run, t)| *run == dev.run && t == text);
                        prop_assert!(!own, "device {} received its own {} back", d, text);
                    }
                    Event::Error {
                        client_msg_id: Some(id),
                        ..
                    } => dev.refused.push(id.clone()),
                    _ => {}
                }
                let (call, to, from): (&str, Leg, &[Option<Leg>]) = match &e {
                    Event::OnCallReceived { call_id, .. } => (call_id, Leg::Ringing, &[None]),
                    Event::CallDialing { call_id, .. } => (call_id, Leg::Dialing, &[None]),
                    Event::OnCallBegin { call_id, .. } => (
                        call_id,
                        Leg::InCall,
                        &[None, Some(Leg::Ringing), Some(Leg::Dialing)],
                    ),
                    Event::OnCallCanceled { call_id, .. } => (
                        call_id,
                        Leg::Done,
                        &[Some(Leg::Ringing), Some(Leg::Dialing)],
                    ),
                    Event::CallingEnd { call_id, .. } => (call_id, Leg::Done, &[Some(Leg::InCall)]),
                    _ => continue,
                };
                let key = (dev.run, call.to_owned());
                let was = dev.legs.get(&key).copied();
                if !from.contains(&was) {
                    return Err(TestCaseError::fail(format!(
                        "device {d} run {}: {} while {was:?} in {call}",
                        dev.run,
                        e.name()
                    )));
                }
                dev.legs.insert(key, to);
            }
        }
        Ok(())
    }

    fn kill(&mut self, d: usize) -> Result<(), TestCaseError> {
        self.observe()?;
        self.mesh.kill(d);
        let profile = self.profile(d);
        let dev = &mut self.devices[d];
        dev.alive = false;
        dev.run += 1;
        // The next run opens the profile afresh.
        dev.store = LocalStore::open(&profile, &USERS[dev.user].parse().unwrap()).unwrap();
        prop_assert_eq!(
            dev.store.high_water().unwrap(),
            self.mesh.nodes[d].high_water,
            "device {}'s local store keeps its position",
            d
        );
        Ok(())
    }

    fn restart(&mut self, d: usize) -> Result<(), TestCaseError> {
        if self.devices[d].alive {
            self.kill(d)?;
        }
        self.devices[d].alive = true;
        self.mesh.login(d);
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.devices.len();
        let alive = |w: &World, d: usize| w.devices[d].alive;
        match op {
            Op::Send { from, to } => {
                let from = from % n;
                if !alive(self, from) {
                    return Ok(());
                }
                self.next_text += 1;
                let text = format!("t{}", self.next_text);
                let run = self.devices[from].run;
                self.devices[from].sends.push((run, text.clone()));
                self.mesh.command(
                    from,
                    Command::Chat(ChatCommand::SendMessage {
                        to: UserId::parse(USERS[to]).unwrap(),
                        client_msg_id: Some(text.clone()),
                        text,
                    }),
                );
            }
            Op::Call { from, to } => {
                let from = from % n;
                if alive(self, from) && self.devices[from].user != to {
                    self.mesh.command(
                        from,
                        Command::Call(CallCommand::Call {
                            users: vec![UserId::parse(USERS[to]).unwrap()],
                            timeout_secs: None,
                            user_data: None,
                        }),
                    );
                }
            }
            Op::Accept(d) | Op::Reject(d) | Op::Hangup(d) => {
                let d = d % n;
                if alive(self, d) {
                    let cmd = match op {
                        Op::Accept(_) => CallCommand::Accept {
                            call_id: None,
                            end_current: false,
                        },
                        Op::Reject(_) => CallCommand::Reject { call_id: None },
                        _ => CallCommand::Hangup { call_id: None },
                    };
                    self.mesh.command(d, Command::Call(cmd));
                }
            }
            Op::Advance(ms) => self.mesh.advance(ms),
            Op::Cut(d) => self.mesh.cut(d % n),
            Op::CutSilently(d) => self.mesh.cut_silently(d % n),
            Op::Block { device, ms } => self.mesh.block(device % n, ms),
            Op::Kill(d) => {
                if alive(self, d % n) {
                    self.kill(d % n)?;
                }
            }
            Op::Restart(d) => self.restart(d % n)?,
            Op::RestartRelay => self.mesh.restart_relay(),
        }
        self.observe()
    }

    /// Every device's user's timeline, as the relay's store holds it.
    fn timeline(&mut self, user: usize) -> Vec<u64> {
        let read = StoreOp::ReadTimeline {
            token: 1,
            app: DEV_APP_ID,
            user: UserId::parse(USERS[user]).unwrap(),
            after: 0,
            since: 0,
            undelivered_only: false,
            limit: 1_000_000,
        };
        match &self.mesh.store.apply(&[read])[..] {
            [(_, StoreReply::Entries(entries))] => entries.iter().map(|e| e.seq).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// Calls running on some device, and which devices are in each.
    fn in_call(&self) -> HashMap<String, Vec<usize>> {
        let mut calls: HashMap<String, Vec<usize>> = HashMap::new();
        for (d, dev) in self.devices.iter().enumerate() {
            for ((run, call), leg) in &dev.legs {
                if *run == dev.run && *leg == Leg::InCall {
                    calls.entry(call.clone()).or_default().push(d);
                }
            }
        }
        calls
    }
}

fn run(
    devices_per_user: [usize; 3],
    multi: Vec<bool>,
    latency_ms: u64,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut mesh = Mesh::dev();
    mesh.latency_ms = latency_ms;
    let dir = tempfile::tempdir().unwrap();
    let mut devices = Vec::new();
    let mut k = 0;
    for (u, &count) in devices_per_user.iter().enumerate() {
        for j in 0..count {
            let d = if multi[k % multi.len()] {
                mesh.online_multi(USERS[u], &format!("d{j}"))
            } else {
                mesh.online(USERS[u], &format!("d{j}"))
            };
            let profile = dir.path().join(format!("d{d}"));
            std::fs::create_dir_all(&profile).unwrap();
            devices.push(Device {
                user: u,
                alive: true,
                run: 0,
                store: LocalStore::open(&profile, &USERS[u].parse().unwrap()).unwrap(),
                applied: Vec::new(),
                legs: HashMap::new(),
                sends: Vec::new(),
                acknowledged: Vec::new(),
                refused: Vec::new(),
            });
            k += 1;
        }
    }
    let mut w = World {
        mesh,
        devices,
        dir,
        next_text: 0,
    };
    for op in ops {
        w.apply(op)?;
    }

    // The network heals and every dead process starts again.
    for d in 0..w.devices.len() {
        w.mesh.nodes[d].blocked_until = 0;
        if !w.devices[d].alive {
            w.restart(d)?;
        }
    }
    w.mesh.advance(130_000);
    w.observe()?;

    // No call is connected on one side only.
    for (call, devices) in w.in_call() {
        let users: BTreeSet<usize> = devices.iter().map(|&d| w.devices[d].user).collect();
        prop_assert!(
            devices.len() == 2 && users.len() == 2,
            "call {} is connected on devices {:?} only",
            call,
            devices
        );
    }
    // Chat: each device applied its user's whole timeline, once, in order.
    for d in 0..w.devices.len() {
        let expected = w.timeline(w.devices[d].user);
        prop_assert_eq!(&w.devices[d].applied, &expected, "device {}", d);
        // Every message sent by a run that lived to the end is acknowledged
        // or refused (with its id), once.
        let dev = &w.devices[d];
        for (sent_by, text) in &dev.sends {
            let answers = dev.acknowledged.iter().filter(|t| *t == text).count()
                + dev.refused.iter().filter(|t| *t == text).count();
            if *sent_by == dev.run {
                prop_assert_eq!(answers, 1, "device {}: answers to {}", d, text);
            } else {
                prop_assert!(answers <= 1, "device {}: {} answered twice", d, text);
            }
        }
    }

    // Everyone hangs up; nothing rings, dials or runs anywhere after.
    for d in 0..w.devices.len() {
        w.mesh
            .command(d, Command::Call(CallCommand::Hangup { call_id: None }));
    }
    w.mesh.advance(200_000);
    w.observe()?;
    for (d, dev) in w.devices.iter().enumerate() {
        for ((run, call), leg) in &dev.legs {
            prop_assert!(
                *run < dev.run || *leg == Leg::Done,
                "device {} still {:?} in {}",
                d,
                leg,
                call
            );
        }
    }
    prop_assert_eq!(w.mesh.relay.call_count(), 0);
    prop_assert!(w.mesh.media_rooms.is_empty());
    // Every call each device saw is in its history, finished.
    for (d, dev) in w.devices.iter().enumerate() {
        let history = dev.store.recent_calls(10_000).unwrap();
        for (_, call) in dev.legs.keys() {
            let record = history.iter().find(|r| &r.call_id == call);
            prop_assert!(
                record.is_some(),
                "device {}: call {} not in history",
                d,
                call
            );
            let outcome = &record.unwrap().outcome;
            prop_assert!(
                !["ringing", "dialing", "in_call"].contains(&outcome.as_str()),
                "device {}: call {} still {} in history",
                d,
                call,
                outcome
            );
        }
    }
    Ok(())
}

proptest! {
    // 256 schedules in CI; PROPTEST_CASES=10000 in release for a deep search
    // (docs/benchmarks.md).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn nothing_acknowledged_is_lost_and_no_call_is_half_open_under_any_faults(
        devices_per_user in (1usize..=2, 1usize..=2, 1usize..=2),
        multi in prop::collection::vec(any::<bool>(), 1..6),
        latency_ms in prop_oneof![Just(0u64), 1u64..40],
        ops in prop::collection::vec(op(6), 1..60),
    ) {
        // One schedule at a time, between the real-time tests' turns.
        let _turn = crate::common::REAL_TIME.blocking_lock();
        let (a, b, c) = devices_per_user;
        run([a, b, c], multi, latency_ms, ops)?;
    }
}
