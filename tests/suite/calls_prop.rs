//! Random interleavings of call actions across up to 6 devices of 3 users,
//! checked against the invariants of SPEC sections 3 and 8.2 after every
//! step: one call at a time per device, one device per user in a call,
//! a held participant's voice routed to nobody, a transferred call over
//! on the transferor.

use std::collections::{BTreeSet, HashMap, HashSet};

use proptest::prelude::*;

use termphone::client::engine::{CallCommand, Command};
use termphone::client::event::Event;
use termphone::ids::UserId;

use crate::common::mesh::Mesh;

const USERS: [&str; 3] = ["u0", "u1", "u2"];

#[derive(Clone, Debug)]
enum Op {
    Call {
        from: usize,
        to: Vec<usize>,
        timeout: u32,
    },
    Accept(usize),
    AcceptTogether(Vec<usize>),
    Reject(usize),
    Ignore(usize),
    Hangup(usize),
    Advance(u64),
    /// The link drops and comes back within the grace period.
    Blip(usize),
    /// The relay is unreachable for this device past the grace period.
    Outage(usize),
    Hold(usize),
    Unhold(usize),
    /// Blind transfer of the device's call to a user.
    Transfer(usize, usize),
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    let d = 0..devices;
    prop_oneof![
        3 => (d.clone(), prop::collection::vec(0..USERS.len(), 1..3), 1u32..40)
            .prop_map(|(from, to, timeout)| Op::Call { from, to, timeout }),
        3 => d.clone().prop_map(Op::Accept),
        2 => prop::collection::vec(0..devices, 2..4).prop_map(Op::AcceptTogether),
        2 => d.clone().prop_map(Op::Reject),
        1 => d.clone().prop_map(Op::Ignore),
        2 => d.clone().prop_map(Op::Hangup),
        3 => (0u64..45_000).prop_map(Op::Advance),
        1 => d.clone().prop_map(Op::Blip),
        1 => d.clone().prop_map(Op::Outage),
        2 => d.clone().prop_map(Op::Hold),
        2 => d.clone().prop_map(Op::Unhold),
        2 => (d, 0..USERS.len()).prop_map(|(d, u)| Op::Transfer(d, u)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Leg {
    Ringing,
    Dialing,
    InCall,
    /// In the call, the other party transferred it: the target rings.
    Transferring,
    Done,
}

impl Leg {
    fn in_call(self) -> bool {
        matches!(self, Leg::InCall | Leg::Transferring)
    }
}

/// Each device's view of each call, rebuilt from its events alone.
#[derive(Default)]
struct Checker {
    legs: HashMap<(usize, String), Leg>,
    /// Each call's room, from the events that name it.
    rooms: HashMap<String, u32>,
    /// Who holds each call, as each device heard it (`CALL_HOLD_CHANGED`).
    held: HashMap<(usize, String), BTreeSet<String>>,
    /// (call, user) of every transfer: that user is out of that call,
    /// until a later transfer rings it for the call again.
    transferors: HashSet<(String, String)>,
}

impl Checker {
    fn feed(&mut self, device: usize, owner: &[usize], events: Vec<Event>) -> Result<(), String> {
        for e in events {
            match &e {
                Event::OnCallReceived {
                    call_id, room_id, ..
                }
                | Event::CallDialing {
                    call_id, room_id, ..
                }
                | Event::OnCallBegin {
                    call_id, room_id, ..
                } => {
                    self.rooms.insert(call_id.clone(), *room_id);
                }
                Event::CallHoldChanged {
                    call_id,
                    user_id,
                    on_hold,
                } => {
                    let held = self.held.entry((device, call_id.clone())).or_default();
                    if *on_hold {
                        held.insert(user_id.to_string());
                    } else {
                        held.remove(user_id.as_str());
                    }
                }
                Event::CallTransferred { call_id, by, .. } => {
                    self.transferors.insert((call_id.clone(), by.to_string()));
                }
                _ => {}
            }
            let (call, to, allowed_from): (&str, Leg, &[Option<Leg>]) = match &e {
                // A transfer may ring a user that left the call before (a
                // transfer back): a new leg of the same call on its devices.
                Event::OnCallReceived {
                    call_id,
                    transferred_by: Some(_),
                    ..
                } => {
                    let user = USERS[owner[device]].to_owned();
                    self.transferors.remove(&(call_id.clone(), user));
                    (call_id, Leg::Ringing, &[None, Some(Leg::Done)])
                }
                Event::OnCallReceived { call_id, .. } => (call_id, Leg::Ringing, &[None]),
                Event::CallDialing { call_id, .. } => (call_id, Leg::Dialing, &[None]),
                Event::OnCallBegin { call_id, .. } => (
                    call_id,
                    Leg::InCall,
                    &[
                        Some(Leg::Ringing),
                        Some(Leg::Dialing),
                        Some(Leg::Transferring),
                    ],
                ),
                Event::CallTransferred { call_id, .. } => {
                    (call_id, Leg::Transferring, &[Some(Leg::InCall)])
                }
                Event::OnCallCanceled { call_id, .. } => (
                    call_id,
                    Leg::Done,
                    &[Some(Leg::Ringing), Some(Leg::Dialing)],
                ),
                Event::CallingEnd { call_id, .. } => (
                    call_id,
                    Leg::Done,
                    &[Some(Leg::InCall), Some(Leg::Transferring)],
                ),
                _ => continue,
            };
            let key = (device, call.to_owned());
            let from = self.legs.get(&key).copied();
            if !allowed_from.contains(&from) {
                return Err(format!(
                    "device {device}: {} while {from:?} in call {call}",
                    e.name()
                ));
            }
            self.legs.insert(key, to);
        }
        Ok(())
    }

    /// At most one device of a user is in a given call.
    fn one_device_per_user(&self, owner: &[usize]) -> Result<(), String> {
        let mut count: HashMap<(usize, &str), usize> = HashMap::new();
        for ((device, call), leg) in &self.legs {
            if leg.in_call() {
                *count.entry((owner[*device], call)).or_default() += 1;
            }
        }
        match count.iter().find(|(_, n)| **n > 1) {
            Some(((user, call), n)) => Err(format!("{n} devices of user {user} in call {call}")),
            None => Ok(()),
        }
    }

    /// No device is in two calls at once.
    fn one_call_per_device(&self) -> Result<(), String> {
        let mut count: HashMap<usize, Vec<&str>> = HashMap::new();
        for ((device, call), leg) in &self.legs {
            if leg.in_call() {
                count.entry(*device).or_default().push(call);
            }
        }
        match count.iter().find(|(_, calls)| calls.len() > 1) {
            Some((device, calls)) => Err(format!("device {device} in calls {calls:?}")),
            None => Ok(()),
        }
    }

    /// A transferor is out of the call it transferred, on every device.
    fn transferred_calls_end_on_the_transferor(&self, owner: &[usize]) -> Result<(), String> {
        for ((device, call), leg) in &self.legs {
            let user = USERS[owner[*device]].to_owned();
            if leg.in_call() && self.transferors.contains(&(call.clone(), user)) {
                return Err(format!(
                    "device {device} still {leg:?} in call {call} it transferred"
                ));
            }
        }
        Ok(())
    }

    /// The relay routes no voice to or from a participant that holds the
    /// call, as every connected device in the call heard the holds.
    fn held_voice_goes_nowhere(&self, m: &Mesh) -> Result<(), String> {
        for ((device, call), leg) in &self.legs {
            if *leg != Leg::InCall || m.nodes[*device].conn.is_none() {
                continue;
            }
            let Some(held) = self.held.get(&(*device, call.clone())) else {
                continue;
            };
            let Some(members) = self.rooms.get(call).and_then(|r| m.media_rooms.get(r)) else {
                continue;
            };
            if let Some((_, user)) = members.iter().find(|(_, u)| held.contains(u.as_str())) {
                return Err(format!(
                    "{user} holds call {call} (as device {device} heard) but its voice is routed"
                ));
            }
        }
        Ok(())
    }

    fn still_ringing(&self) -> Vec<String> {
        self.legs
            .iter()
            .filter(|(_, l)| matches!(l, Leg::Ringing | Leg::Dialing))
            .map(|((d, c), l)| format!("device {d} {l:?} in {c}"))
            .collect()
    }
}

fn call_cmd(cmd: CallCommand) -> Command {
    Command::Call(cmd)
}

fn run(devices_per_user: [usize; 3], multi: Vec<bool>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Mesh::dev();
    let mut owner = Vec::new();
    let mut k = 0;
    for (u, &n) in devices_per_user.iter().enumerate() {
        for j in 0..n {
            let d = if multi[k % multi.len()] {
                m.online_multi(USERS[u], &format!("d{j}"))
            } else {
                m.online(USERS[u], &format!("d{j}"))
            };
            m.take(d);
            owner.push(u);
            k += 1;
        }
    }
    let devices = owner.len();
    let mut checker = Checker::default();
    let mut check = |m: &mut Mesh| -> Result<(), TestCaseError> {
        for d in 0..devices {
            let events = m.take(d);
            checker
                .feed(d, &owner, events)
                .map_err(TestCaseError::fail)?;
        }
        checker
            .one_device_per_user(&owner)
            .and_then(|()| checker.one_call_per_device())
            .and_then(|()| checker.transferred_calls_end_on_the_transferor(&owner))
            .and_then(|()| checker.held_voice_goes_nowhere(m))
            .map_err(TestCaseError::fail)
    };
    for op in ops {
        match op {
            Op::Call { from, to, timeout } => {
                let from = from % devices;
                let users: Vec<UserId> = to
                    .iter()
                    .map(|&u| UserId::parse(USERS[u]).unwrap())
                    .collect();
                let group = users.len() > 1;
                m.command(
                    from,
                    call_cmd(CallCommand::place(users, group, Some(timeout))),
                );
            }
            Op::Accept(d) => m.command(
                d % devices,
                call_cmd(CallCommand::Accept {
                    call_id: None,
                    end_current: false,
                }),
            ),
            Op::AcceptTogether(ds) => {
                for d in ds {
                    m.command_later(
                        d % devices,
                        call_cmd(CallCommand::Accept {
                            call_id: None,
                            end_current: false,
                        }),
                    );
                }
                m.settle();
            }
            Op::Reject(d) => {
                m.command(d % devices, call_cmd(CallCommand::Reject { call_id: None }))
            }
            Op::Ignore(d) => {
                m.command(d % devices, call_cmd(CallCommand::Ignore { call_id: None }))
            }
            Op::Hangup(d) => {
                m.command(d % devices, call_cmd(CallCommand::Hangup { call_id: None }))
            }
            Op::Advance(ms) => m.advance(ms),
            Op::Blip(d) => {
                m.cut(d % devices);
                m.advance(1_000);
            }
            Op::Hold(d) => m.command(d % devices, call_cmd(CallCommand::Hold { call_id: None })),
            Op::Unhold(d) => {
                m.command(d % devices, call_cmd(CallCommand::Unhold { call_id: None }))
            }
            Op::Transfer(d, u) => m.command(
                d % devices,
                call_cmd(CallCommand::TransferCall {
                    user: UserId::parse(USERS[u]).unwrap(),
                }),
            ),
            Op::Outage(d) => {
                m.relay_up = false;
                m.cut(d % devices);
                m.advance(95_000);
                m.relay_up = true;
                m.advance(6_000);
            }
        }
        check(&mut m)?;
    }
    // Long after every timeout, nothing rings or dials anywhere.
    m.advance(200_000);
    check(&mut m)?;
    let ringing = checker.still_ringing();
    prop_assert!(
        ringing.is_empty(),
        "still ringing after the end: {ringing:?}"
    );
    Ok(())
}

proptest! {
    // 512 cases in CI; PROPTEST_CASES=20000 for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn call_invariants_hold_under_any_interleaving(
        devices_per_user in (1usize..=2, 1usize..=3, 1usize..=2),
        multi in prop::collection::vec(any::<bool>(), 1..6),
        ops in prop::collection::vec(op(6), 1..40),
    ) {
        let (a, b, c) = devices_per_user;
        run([a, b, c], multi, ops)?;
    }
}
