//! Random interleavings of call actions across up to 6 devices of 3 users,
//! checked against the invariants of SPEC sections 3, 8.2 and 8.3 after
//! every step: one connected call per device (a second one only while the
//! device holds the other, call waiting), one device per user in a call,
//! a held participant's voice routed to nobody, an audience member's voice
//! routed to nobody, a transferred call over on the transferor.

use std::collections::{BTreeSet, HashMap, HashSet};

use proptest::prelude::*;

use termphone::client::engine::{CallCommand, Command};
use termphone::client::event::{Digit, Event};
use termphone::ids::UserId;
use termphone::protocol::Role;

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
    /// Call waiting on or off on a device.
    Waiting(usize, bool),
    /// Answer a waiting call, hanging up the current one.
    AcceptEnd(usize),
    /// Take back the k-th call the device is in (the one set aside: a swap).
    UnholdNth(usize, usize),
    /// Join the k-th call seen so far by its room, speaking or listening.
    Join(usize, usize, bool),
    SwitchRole(usize, bool),
    Dtmf(usize),
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    let d = 0..devices;
    prop_oneof![
        6 => (d.clone(), prop::collection::vec(0..USERS.len(), 1..3), 1u32..40)
            .prop_map(|(from, to, timeout)| Op::Call { from, to, timeout }),
        6 => d.clone().prop_map(Op::Accept),
        2 => prop::collection::vec(0..devices, 2..4).prop_map(Op::AcceptTogether),
        2 => d.clone().prop_map(Op::Reject),
        1 => d.clone().prop_map(Op::Ignore),
        2 => d.clone().prop_map(Op::Hangup),
        3 => (0u64..45_000).prop_map(Op::Advance),
        1 => d.clone().prop_map(Op::Blip),
        1 => d.clone().prop_map(Op::Outage),
        2 => d.clone().prop_map(Op::Hold),
        2 => d.clone().prop_map(Op::Unhold),
        2 => (d.clone(), 0..USERS.len()).prop_map(|(d, u)| Op::Transfer(d, u)),
        2 => (d.clone(), any::<bool>()).prop_map(|(d, on)| Op::Waiting(d, on)),
        1 => d.clone().prop_map(Op::AcceptEnd),
        2 => (d.clone(), 0usize..2).prop_map(|(d, k)| Op::UnholdNth(d, k)),
        1 => (d.clone(), 0usize..4, any::<bool>()).prop_map(|(d, k, a)| Op::Join(d, k, a)),
        2 => (d.clone(), any::<bool>()).prop_map(|(d, a)| Op::SwitchRole(d, a)),
        1 => d.prop_map(Op::Dtmf),
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
    /// Group calls (joinable by room), from the events that say so.
    groups: HashSet<String>,
    /// Who listens only in each call, as each device heard it.
    audience: HashMap<(usize, String), BTreeSet<String>>,
    /// Every call seen, in order, for ops that name one.
    seen: Vec<String>,
}

impl Checker {
    fn feed(&mut self, device: usize, owner: &[usize], events: Vec<Event>) -> Result<(), String> {
        for e in events {
            match &e {
                Event::OnCallReceived {
                    call_id,
                    room_id,
                    is_from_group,
                    ..
                }
                | Event::CallDialing {
                    call_id,
                    room_id,
                    is_from_group,
                    ..
                } => {
                    if self.rooms.insert(call_id.clone(), *room_id).is_none() {
                        self.seen.push(call_id.clone());
                    }
                    if *is_from_group {
                        self.groups.insert(call_id.clone());
                    }
                }
                Event::OnCallBegin {
                    call_id, room_id, ..
                } => {
                    self.rooms.insert(call_id.clone(), *room_id);
                }
                Event::GroupCallInviteeListUpdate { call_id, .. } => {
                    self.groups.insert(call_id.clone());
                }
                Event::UserEnter {
                    call_id,
                    user_id,
                    role,
                } => {
                    let heard = self.audience.entry((device, call_id.clone())).or_default();
                    match role {
                        Role::Audience => heard.insert(user_id.to_string()),
                        Role::Anchor => heard.remove(user_id.as_str()),
                    };
                }
                Event::RoleChanged {
                    call_id,
                    user_id,
                    role,
                } => {
                    let heard = self.audience.entry((device, call_id.clone())).or_default();
                    match role {
                        Role::Audience => heard.insert(user_id.to_string()),
                        Role::Anchor => heard.remove(user_id.as_str()),
                    };
                }
                Event::CallHoldChanged {
                    call_id,
                    user_id,
                    on_hold,
                } => {
                    // Every device of a participant hears holds; what counts
                    // is what a device hears while it is in the call (one
                    // entering hears the holds standing, after its begin).
                    let key = (device, call_id.clone());
                    if !self.legs.get(&key).is_some_and(|l| l.in_call()) {
                        continue;
                    }
                    let held = self.held.entry(key).or_default();
                    if *on_hold {
                        held.insert(user_id.to_string());
                    } else {
                        held.remove(user_id.as_str());
                    }
                }
                // This device's leg is over: a later one (a join, a
                // transfer back) hears who holds and listens afresh.
                Event::CallingEnd { call_id, .. } | Event::OnCallCanceled { call_id, .. } => {
                    let key = (device, call_id.clone());
                    self.held.remove(&key);
                    self.audience.remove(&key);
                }
                // A participant that leaves takes its hold and its role
                // with it (docs/calls.md): it comes back speaking, unheld.
                Event::UserLeave { call_id, user_id } => {
                    let key = (device, call_id.clone());
                    if let Some(held) = self.held.get_mut(&key) {
                        held.remove(user_id.as_str());
                    }
                    if let Some(listeners) = self.audience.get_mut(&key) {
                        listeners.remove(user_id.as_str());
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
                // A group call may be joined by room, also again after
                // leaving it.
                Event::OnCallBegin { call_id, .. } if self.groups.contains(call_id) => (
                    call_id,
                    Leg::InCall,
                    &[
                        None,
                        Some(Leg::Ringing),
                        Some(Leg::Dialing),
                        Some(Leg::Transferring),
                        Some(Leg::Done),
                    ],
                ),
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

    /// No device is in two calls it does not hold: with call waiting, a
    /// device is in at most two, and holds all but one (as it heard).
    fn one_connected_call_per_device(&self, owner: &[usize]) -> Result<(), String> {
        let mut count: HashMap<usize, (Vec<&str>, usize)> = HashMap::new();
        for ((device, call), leg) in &self.legs {
            if !leg.in_call() {
                continue;
            }
            let me = USERS[owner[*device]];
            let holds = (self.held.get(&(*device, call.clone()))).is_some_and(|h| h.contains(me));
            let entry = count.entry(*device).or_default();
            entry.0.push(call);
            entry.1 += usize::from(!holds);
        }
        match count
            .iter()
            .find(|(_, (calls, unheld))| calls.len() > 2 || *unheld > 1)
        {
            Some((device, (calls, _))) => Err(format!(
                "device {device} in calls {calls:?}, more than one of them not held"
            )),
            None => Ok(()),
        }
    }

    /// The relay routes nothing from a participant that listens only, as
    /// every connected device in the call heard the roles.
    fn audience_voice_goes_nowhere(&self, m: &Mesh) -> Result<(), String> {
        for ((device, call), leg) in &self.legs {
            if *leg != Leg::InCall || m.nodes[*device].conn.is_none() {
                continue;
            }
            let Some(listeners) = self.audience.get(&(*device, call.clone())) else {
                continue;
            };
            let Some(room) = self.rooms.get(call) else {
                continue;
            };
            let (Some(members), Some(audience)) =
                (m.media_rooms.get(room), m.media_audience.get(room))
            else {
                continue;
            };
            let speaking = (members.iter())
                .find(|(c, u)| listeners.contains(u.as_str()) && !audience.contains(c));
            if let Some((_, user)) = speaking {
                return Err(format!(
                    "{user} listens only in call {call} (as device {device} heard) but its voice is routed"
                ));
            }
        }
        Ok(())
    }

    /// The calls device `device` is in, in a stable order.
    fn calls_of(&self, device: usize) -> Vec<String> {
        let mut calls: Vec<String> = (self.legs.iter())
            .filter(|((d, _), leg)| *d == device && leg.in_call())
            .map(|((_, c), _)| c.clone())
            .collect();
        calls.sort();
        calls
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

fn run(
    devices_per_user: [usize; 3],
    multi: Vec<bool>,
    waiting: Vec<bool>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
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
            // Some devices take a second call from the start (call waiting).
            if waiting[k % waiting.len()] {
                m.command(d, Command::EnableCallWaiting { enable: true });
            }
            m.take(d);
            owner.push(u);
            k += 1;
        }
    }
    let devices = owner.len();
    let mut checker = Checker::default();
    let check = |checker: &mut Checker, m: &mut Mesh| -> Result<(), TestCaseError> {
        for d in 0..devices {
            let events = m.take(d);
            checker
                .feed(d, &owner, events)
                .map_err(TestCaseError::fail)?;
        }
        checker
            .one_device_per_user(&owner)
            .and_then(|()| checker.one_connected_call_per_device(&owner))
            .and_then(|()| checker.transferred_calls_end_on_the_transferor(&owner))
            .and_then(|()| checker.held_voice_goes_nowhere(m))
            .and_then(|()| checker.audience_voice_goes_nowhere(m))
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
            Op::Waiting(d, enable) => m.command(d % devices, Command::EnableCallWaiting { enable }),
            Op::AcceptEnd(d) => m.command(
                d % devices,
                call_cmd(CallCommand::Accept {
                    call_id: None,
                    end_current: true,
                }),
            ),
            Op::UnholdNth(d, k) => {
                let d = d % devices;
                let calls = checker.calls_of(d);
                if let Some(call_id) = calls.get(k % calls.len().max(1)).cloned() {
                    m.command(
                        d,
                        call_cmd(CallCommand::Unhold {
                            call_id: Some(call_id),
                        }),
                    );
                }
            }
            Op::Join(d, k, audience) => {
                let seen = &checker.seen;
                if let Some(room) = seen.get(k % seen.len().max(1)).map(|c| checker.rooms[c]) {
                    let role = if audience {
                        Role::Audience
                    } else {
                        Role::Anchor
                    };
                    m.command(
                        d % devices,
                        call_cmd(CallCommand::JoinInGroupCall { room, role }),
                    );
                }
            }
            Op::SwitchRole(d, audience) => {
                let role = if audience {
                    Role::Audience
                } else {
                    Role::Anchor
                };
                m.command(d % devices, call_cmd(CallCommand::SwitchRole { role }));
            }
            Op::Dtmf(d) => m.command(
                d % devices,
                call_cmd(CallCommand::SendDtmf {
                    digits: Digit::parse_all("1#").unwrap(),
                }),
            ),
        }
        check(&mut checker, &mut m)?;
    }
    // Long after every timeout, nothing rings or dials anywhere.
    m.advance(200_000);
    check(&mut checker, &mut m)?;
    let ringing = checker.still_ringing();
    prop_assert!(
        ringing.is_empty(),
        "still ringing after the end: {ringing:?}"
    );
    Ok(())
}

proptest! {
    // 512 cases in CI; PROPTEST_CASES=10000 (in release) for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn call_invariants_hold_under_any_interleaving(
        devices_per_user in (1usize..=2, 1usize..=3, 1usize..=2),
        multi in prop::collection::vec(any::<bool>(), 1..6),
        waiting in prop::collection::vec(any::<bool>(), 1..6),
        ops in prop::collection::vec(op(6), 1..40),
    ) {
        let (a, b, c) = devices_per_user;
        run([a, b, c], multi, waiting, ops)?;
    }
}
