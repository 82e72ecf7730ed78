//! Calls on the relay: invitations, fan-out to a user's devices, first
//! answer wins, decline, ignore, cancel, timeout, busy, hangup, group calls.
//!
//! Part of the sans-IO core: every rule here runs inside one `handle` call,
//! so "several devices accept at once" is decided by arrival order alone and
//! exactly one accept wins.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rand::Rng;

use super::{ConnId, Millis, RelayCore, SessionId, Timer};
use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, UserId};
use crate::protocol::{
    CallInfo, CancelReason, CurrentCall, DEFAULT_RING_SECS, DeviceInfo, MAX_RINGING_CALLS,
    PeerAction, Role, RoomId, ServerMsg, check_ring_secs, check_user_data,
};

type CallKey = u64;

/// Who meets in a room's media: every member hears the others' frames;
/// those in `audience` send nothing (their frames go nowhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaRoute {
    pub members: Vec<(ConnId, UserId)>,
    pub audience: Vec<ConnId>,
}

#[derive(Default)]
pub(super) struct Calls {
    next_key: CallKey,
    calls: HashMap<CallKey, Call>,
    by_id: HashMap<String, CallKey>,
    by_room: HashMap<RoomId, CallKey>,
    /// The call each user is in (joined): such a user is busy.
    joined: HashMap<(AppId, UserId), CallKey>,
    /// The call a user holds aside to take a waiting one (call waiting):
    /// it is in that call too, holding it, until it hangs it up or goes
    /// back to it with `unhold` (which sets the other one aside). Only a
    /// user with a `joined` call has one.
    parked: HashMap<(AppId, UserId), CallKey>,
    /// The calls inviting each user, ringing or not yet answered: a
    /// session that logs in, comes back or ends looks up its own user's
    /// invitations here, not in every call the relay holds (issue 21).
    invited: HashMap<(AppId, UserId), BTreeSet<CallKey>>,
    /// Rooms whose media route may have changed since the core last
    /// published them: a member joined, left, held or changed role, a
    /// member's session moved to another connection, or the call ended.
    /// Publishing looks at these alone, so that its cost follows what
    /// changed, not how many calls the relay holds (issue 21).
    moved: BTreeSet<RoomId>,
}

struct Call {
    id: String,
    room: RoomId,
    app: AppId,
    sponsor: UserId,
    group: bool,
    connected: bool,
    members: BTreeMap<UserId, Member>,
    /// Every session this call ever rang, so a late answer from a device
    /// that already got its cancel is dropped quietly instead of erroring.
    rang: HashSet<SessionId>,
    /// The caller's `userData`, carried to every invitation.
    user_data: Option<String>,
    /// Set by a blind transfer: who transferred the call. Until the target
    /// answers the call is not connected, but the party that stays had
    /// been in it, so an end then is a `call_end` (not a cancel) for it.
    transferred_by: Option<UserId>,
    /// Joined participants holding the call: their media leaves the room.
    held: BTreeSet<UserId>,
}

enum Member {
    Invited {
        deadline: Millis,
        ringing: BTreeSet<SessionId>,
    },
    Joined {
        session: SessionId,
        since: Millis,
        role: Role,
    },
}

impl Call {
    fn info(&self) -> CallInfo {
        let invitees = self
            .members
            .iter()
            .filter(|(u, _)| **u != self.sponsor)
            .map(|(u, _)| u.clone())
            .collect();
        CallInfo {
            call_id: self.id.clone(),
            room: self.room,
            sponsor: self.sponsor.clone(),
            invitees,
            group: self.group,
            user_data: self.user_data.clone(),
            transferred_by: self.transferred_by.clone(),
            waiting: false,
        }
    }

    /// The call as `user` is told about it: the others invited with it, not
    /// itself.
    fn info_for(&self, user: &UserId) -> CallInfo {
        let mut info = self.info();
        info.invitees.retain(|u| u != user);
        info
    }

    fn joined_sessions(&self) -> impl Iterator<Item = (&UserId, SessionId)> {
        self.members.iter().filter_map(|(u, m)| match m {
            Member::Joined { session, .. } => Some((u, *session)),
            Member::Invited { .. } => None,
        })
    }

    /// The users in the call besides `user`.
    fn joined_besides(&self, user: &UserId) -> Vec<UserId> {
        (self.joined_sessions())
            .filter(|(u, _)| *u != user)
            .map(|(u, _)| u.clone())
            .collect()
    }

    fn joined_count(&self) -> usize {
        self.joined_sessions().count()
    }

    /// How `user` takes part (anchor unless it joined, or switched, to
    /// the audience).
    fn role_of(&self, user: &UserId) -> Role {
        match self.members.get(user) {
            Some(Member::Joined { role, .. }) => *role,
            _ => Role::Anchor,
        }
    }

    /// Members in the audience.
    fn audience_count(&self) -> usize {
        (self.members.values())
            .filter(|m| {
                matches!(
                    m,
                    Member::Joined {
                        role: Role::Audience,
                        ..
                    }
                )
            })
            .count()
    }

    /// Members counted against the participant limit: everyone invited or
    /// in the call but the audience.
    fn participant_count(&self) -> usize {
        self.members.len() - self.audience_count()
    }

    fn invited(&self) -> impl Iterator<Item = &UserId> {
        self.members.iter().filter_map(|(u, m)| match m {
            Member::Invited { .. } => Some(u),
            Member::Joined { .. } => None,
        })
    }

    /// Everyone who hears about the call except `except`: joined members and
    /// ringing devices of other invitees.
    fn others(&self, except: &UserId) -> Vec<SessionId> {
        self.sessions_where(|u| u != except)
    }

    /// Every joined member and every ringing device.
    fn everyone(&self) -> Vec<SessionId> {
        self.sessions_where(|_| true)
    }

    fn sessions_where(&self, include: impl Fn(&UserId) -> bool) -> Vec<SessionId> {
        let mut out = Vec::new();
        for (u, m) in &self.members {
            if !include(u) {
                continue;
            }
            match m {
                Member::Joined { session, .. } => out.push(*session),
                Member::Invited { ringing, .. } => out.extend(ringing.iter().copied()),
            }
        }
        out
    }
}

fn not_connected() -> Error {
    Error::new(
        ErrorCode::CallNotConnected,
        "the call has not connected yet: hold, unhold and transferCall need a connected call",
    )
}

fn no_such_call() -> Error {
    Error::new(
        ErrorCode::NoSuchCall,
        "no such call rings or runs on this device; it may have ended",
    )
}

impl RelayCore {
    pub(super) fn place_call(
        &mut self,
        now: Millis,
        sid: SessionId,
        invitees: &[String],
        group: bool,
        timeout_secs: Option<u32>,
        user_data: Option<String>,
    ) -> Result<(), Error> {
        let (app, caller) = self.identity(sid);
        check_user_data(user_data.as_deref())?;
        let invitees = parse_users(invitees, self.settings.max_call_participants)?;
        let ring_secs = check_ring_secs(timeout_secs)?;
        if invitees.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidParameters,
                "a call needs at least one invitee",
            ));
        }
        if invitees.contains(&caller) {
            return Err(Error::new(
                ErrorCode::CallSelf,
                format!("{caller} cannot call itself"),
            ));
        }
        if self.calls.joined.contains_key(&(app, caller.clone())) {
            return Err(self.already_in_call(app, &caller));
        }
        self.check_capacity(1 + invitees.len())?;
        let key = self.calls.next_key;
        self.calls.next_key += 1;
        let room = self.free_room();
        let id = format!("{room:x}-{key}");
        let mut call = Call {
            id: id.clone(),
            room,
            app,
            sponsor: caller.clone(),
            group: group || invitees.len() > 1,
            connected: false,
            members: BTreeMap::new(),
            rang: HashSet::new(),
            user_data,
            transferred_by: None,
            held: BTreeSet::new(),
        };
        call.members.insert(
            caller.clone(),
            Member::Joined {
                session: sid,
                since: now,
                role: Role::Anchor,
            },
        );
        self.calls.calls.insert(key, call);
        self.calls.by_id.insert(id, key);
        self.calls.by_room.insert(room, key);
        self.mark_joined(app, &caller, key);
        let mut info = self.calls.calls[&key].info();
        info.invitees = invitees.clone();
        self.send_to_session(sid, ServerMsg::CallDialing { call: info });
        let ring_ms = u64::from(ring_secs) * 1000;
        self.invite(now, key, invitees, ring_ms);
        self.settle_call(key, CancelReason::Busy);
        Ok(())
    }

    /// Adds invitees to a call and rings them; busy ones are reported.
    fn invite(&mut self, now: Millis, key: CallKey, users: Vec<UserId>, ring_ms: Millis) {
        let app = self.calls.calls[&key].app;
        let deadline = now + ring_ms;
        // Add every invitee before ringing anyone, so each invitation lists
        // all the others.
        let mut added = Vec::new();
        // Told once the others ring, so that they hear it too.
        let mut busy = Vec::new();
        for user in users {
            if self.calls.calls[&key].members.contains_key(&user) {
                continue;
            }
            // Every call ringing a user is in each `call_state` its devices
            // get: 280 of them made one past what a client accepts, and
            // knocked all the user's devices offline while they rang.
            let ringing = self.calls.invited.get(&(app, user.clone()));
            if ringing.is_some_and(|calls| calls.len() >= MAX_RINGING_CALLS) {
                busy.push(user);
                continue;
            }
            // A user in a call is busy, unless the device it talks on
            // takes the call as a waiting one (it rings there only).
            let waiting_on = match self.calls.joined.contains_key(&(app, user.clone())) {
                false => None,
                true => match self.waiting_session(app, &user) {
                    Some(sid) => Some(sid),
                    None => {
                        busy.push(user);
                        continue;
                    }
                },
            };
            self.calls
                .calls
                .get_mut(&key)
                .expect("exists")
                .members
                .insert(
                    user.clone(),
                    Member::Invited {
                        deadline,
                        ringing: BTreeSet::new(),
                    },
                );
            self.mark_invited(app, &user, key);
            added.push((user, waiting_on));
        }
        for (user, waiting_on) in &added {
            let targets = match waiting_on {
                Some(sid) => vec![*sid],
                None => self.ring_targets(app, user),
            };
            for sid in targets {
                self.ring(key, user, sid);
            }
        }
        for user in busy {
            self.peer_event(key, &user, PeerAction::Busy, vec![user.clone()], true);
        }
        if !added.is_empty() {
            self.schedule(deadline, Timer::CallTimeout(key));
        }
    }

    /// `user` is in a call already: on which of its devices, and what to do
    /// (the device may be one that lost its link and has not come back, which
    /// this one cannot hang up for it).
    fn already_in_call(&self, app: AppId, user: &UserId) -> Error {
        let on = (self.calls.joined.get(&(app, user.clone())))
            .and_then(|key| match self.calls.calls[key].members.get(user) {
                Some(Member::Joined { session, .. }) => Some(*session),
                _ => None,
            })
            .and_then(|sid| {
                Some((
                    &self.sessions.get(&sid)?.device,
                    self.detached.contains_key(&sid),
                ))
            });
        let message = match on {
            Some((device, true)) => format!(
                "{user} is already in a call on {device}, which lost its link to the relay: \
                 it stays in the call until it comes back, or for {} s; hang up there, or wait",
                self.settings.session_grace_ms / 1000
            ),
            Some((device, false)) => {
                format!("{user} is already in a call on {device}; hang up there first")
            }
            None => format!("{user} is already in a call; hang up first"),
        };
        Error::new(ErrorCode::AlreadyInCall, message)
    }

    /// The devices of `user` that ring: every device that enabled
    /// multi-device ability, and always the most recently logged-in one.
    fn ring_targets(&self, app: AppId, user: &UserId) -> Vec<SessionId> {
        let Some(order) = self.by_user.get(&(app, user.clone())) else {
            return Vec::new();
        };
        let last = order.last().copied();
        order
            .iter()
            .copied()
            .filter(|sid| Some(*sid) == last || self.sessions[sid].multi_device)
            .collect()
    }

    /// The device on which a new call to `user`, who is in a call, waits
    /// (call waiting): the device in that call, if it turned call waiting
    /// on, the call is connected and the user holds no call aside yet.
    fn waiting_session(&self, app: AppId, user: &UserId) -> Option<SessionId> {
        let who = (app, user.clone());
        if self.calls.parked.contains_key(&who) {
            return None;
        }
        let call = &self.calls.calls[self.calls.joined.get(&who)?];
        let Some(Member::Joined { session, .. }) = call.members.get(user) else {
            return None;
        };
        let waits = call.connected && self.sessions.get(session)?.call_waiting;
        waits.then_some(*session)
    }

    fn ring(&mut self, key: CallKey, user: &UserId, sid: SessionId) {
        if self.add_ringing(key, user, sid) {
            let (app, _) = self.identity(sid);
            let info = self.invitation(key, app, user);
            self.send_to_session(sid, ServerMsg::CallInvite { call: info });
        }
    }

    /// Call `key` as it rings for `user`: waiting while the user is in
    /// another call.
    fn invitation(&self, key: CallKey, app: AppId, user: &UserId) -> CallInfo {
        let mut info = self.calls.calls[&key].info_for(user);
        info.waiting = self.calls.joined.contains_key(&(app, user.clone()));
        info
    }

    /// Counts `sid` among the devices ringing for `user` in call `key`.
    fn add_ringing(&mut self, key: CallKey, user: &UserId, sid: SessionId) -> bool {
        let call = self.calls.calls.get_mut(&key).expect("exists");
        let Some(Member::Invited { ringing, .. }) = call.members.get_mut(user) else {
            return false;
        };
        ringing.insert(sid);
        call.rang.insert(sid);
        true
    }

    /// Tells a session that just logged in or resumed where it stands: the
    /// calls ringing on it and the call it is in. Whatever the device missed
    /// (a message lost with a dying connection, a process that restarted)
    /// is settled by this.
    pub(super) fn send_call_state(&mut self, now: Millis, sid: SessionId) {
        let (app, user) = self.identity(sid);
        let mut ringing: Vec<(&String, CallKey)> = (self.invitations(app, &user).into_iter())
            .map(|key| (key, &self.calls.calls[&key]))
            .filter(|(_, c)| {
                matches!(c.members.get(&user), Some(Member::Invited { ringing, .. }) if ringing.contains(&sid))
            })
            .map(|(key, c)| (&c.id, key))
            .collect();
        ringing.sort();
        let ringing = (ringing.into_iter())
            .map(|(_, key)| self.invitation(key, app, &user))
            .collect();
        let here = |calls: &HashMap<(AppId, UserId), CallKey>| {
            calls
                .get(&(app, user.clone()))
                .map(|key| &self.calls.calls[key])
                .filter(|c| {
                    matches!(c.members.get(&user), Some(Member::Joined { session, .. }) if *session == sid)
                })
                .map(|c| CurrentCall {
                    call: c.info_for(&user),
                    connected: c.connected,
                    held: c.held.iter().cloned().collect(),
                    role: c.role_of(&user),
                    joined: c.joined_besides(&user),
                    joined_ms_ago: match c.members.get(&user) {
                        Some(Member::Joined { since, .. }) if c.connected => {
                            now.saturating_sub(*since)
                        }
                        _ => 0,
                    },
                })
        };
        let (current, parked) = (here(&self.calls.joined), here(&self.calls.parked));
        let parked = parked.map(Box::new);
        self.send_to_session(
            sid,
            ServerMsg::CallState {
                ringing,
                current,
                parked,
            },
        );
    }

    /// A session came (back) online: it rings for calls still inviting its
    /// user (its `call_state` tells it so).
    pub(super) fn calls_on_online(&mut self, sid: SessionId) {
        let (app, user) = self.identity(sid);
        let keys = self.invitations(app, &user);
        let targets = self.ring_targets(app, &user);
        let busy = self.in_call(app, &user);
        for key in keys {
            let call = &self.calls.calls[&key];
            let still_ringing = matches!(
                call.members.get(&user),
                Some(Member::Invited { ringing, .. }) if ringing.contains(&sid)
            );
            // A device that stopped ringing for this call (ignored it) is not
            // rung again; one still ringing hears it again, and drops the
            // repeat. A user in a call is busy for a device that comes
            // online (a waiting call rings only on the device in the call).
            let new_here = !call.rang.contains(&sid) && !busy;
            if targets.contains(&sid) && (still_ringing || new_here) {
                self.add_ringing(key, &user, sid);
            }
        }
    }

    pub(super) fn answer(
        &mut self,
        now: Millis,
        sid: SessionId,
        call_id: &str,
        end_current: bool,
    ) -> Result<(), Error> {
        self.answer_as(now, sid, call_id, end_current, Role::Anchor)
    }

    /// Answers a call ringing on `sid`, taking part as `role`.
    fn answer_as(
        &mut self,
        now: Millis,
        sid: SessionId,
        call_id: &str,
        end_current: bool,
        role: Role,
    ) -> Result<(), Error> {
        let Some(key) = self.ringing_call(sid, call_id)? else {
            return Ok(());
        };
        let (app, user) = self.identity(sid);
        if let Some(&current) = self.calls.joined.get(&(app, user.clone())) {
            self.set_aside(now, sid, &user, current, end_current)?;
        }
        let call = self.calls.calls.get_mut(&key).expect("exists");
        self.calls.moved.insert(call.room);
        let Some(Member::Invited { ringing, .. }) = call.members.insert(
            user.clone(),
            Member::Joined {
                session: sid,
                since: now,
                role,
            },
        ) else {
            unreachable!("ringing_call checked the member");
        };
        self.mark_answered(app, &user, key);
        self.mark_joined(app, &user, key);
        let by = self.device_info(sid);
        for other in ringing.into_iter().filter(|&s| s != sid) {
            self.cancel_on(
                key,
                other,
                CancelReason::AnsweredElsewhere,
                Some(by.clone()),
            );
        }
        let call = &self.calls.calls[&key];
        let (room, call_id, joined) = (call.room, call.id.clone(), call.joined_besides(&user));
        self.send_to_session(
            sid,
            ServerMsg::CallBegin {
                call_id: call_id.clone(),
                room,
                role,
                joined,
                sponsor: None,
            },
        );
        self.peer_event(key, &user, PeerAction::Accepted, vec![user.clone()], true);
        self.peer_event(key, &user, PeerAction::Entered, vec![user.clone()], false);
        self.tell_holds(key, app, &user);
        self.connect(now, key, &user);
        Ok(())
    }

    /// Call waiting: `user` answers a waiting call on `sid`, which is in
    /// call `current`. With `end_current` that call is hung up first;
    /// otherwise it is held and set aside. Either way the user's call is
    /// free for the answer, and a call already set aside stays so.
    fn set_aside(
        &mut self,
        now: Millis,
        sid: SessionId,
        user: &UserId,
        current: CallKey,
        end_current: bool,
    ) -> Result<(), Error> {
        let busy = |why: &str| {
            Err(Error::new(
                ErrorCode::AlreadyInCall,
                format!("{user} is already in a call; {why}"),
            ))
        };
        let here = matches!(
            self.calls.calls[&current].members.get(user),
            Some(Member::Joined { session, .. }) if *session == sid
        );
        if !here || !self.sessions[&sid].call_waiting {
            return busy("hang up first (or turn call waiting on with enableCallWaiting)");
        }
        // Call waiting sets aside a call that talks, not one still ringing
        // out (the engine keeps the same rule).
        if !self.calls.calls[&current].connected {
            return busy("its own call still rings out; hang it up first");
        }
        let who = (self.sessions[&sid].app, user.clone());
        if !end_current && self.calls.parked.contains_key(&who) {
            return busy(
                "it holds another call aside already: hang one up, or accept with endCurrent",
            );
        }
        if end_current {
            // The call set aside, if any, becomes the user's call again.
            self.leave(now, current, user, true);
        }
        if let Some(key) = self.calls.joined.remove(&who) {
            self.set_hold(key, user, true);
            self.calls.parked.insert(who, key);
        }
        Ok(())
    }

    pub(super) fn decline(&mut self, sid: SessionId, call_id: &str) -> Result<(), Error> {
        let Some(key) = self.ringing_call(sid, call_id)? else {
            return Ok(());
        };
        let (_, user) = self.identity(sid);
        let ringing = self.remove_invitee(key, &user);
        let by = self.device_info(sid);
        for other in ringing {
            if other == sid {
                self.cancel_on(key, other, CancelReason::Declined, None);
            } else {
                self.cancel_on(
                    key,
                    other,
                    CancelReason::DeclinedElsewhere,
                    Some(by.clone()),
                );
            }
        }
        self.peer_event(key, &user, PeerAction::Rejected, vec![user.clone()], true);
        self.settle_call(key, CancelReason::Declined);
        Ok(())
    }

    pub(super) fn ignore(&mut self, sid: SessionId, call_id: &str) -> Result<(), Error> {
        let Some(key) = self.ringing_call(sid, call_id)? else {
            return Ok(());
        };
        let (_, user) = self.identity(sid);
        if let Some(ringing) = self.ringing_of(key, &user) {
            ringing.remove(&sid);
        }
        Ok(())
    }

    pub(super) fn hangup(
        &mut self,
        now: Millis,
        sid: SessionId,
        call_id: &str,
    ) -> Result<(), Error> {
        let key = *self.calls.by_id.get(call_id).ok_or_else(no_such_call)?;
        let (_, user) = self.identity(sid);
        match self.calls.calls[&key].members.get(&user) {
            Some(Member::Joined { session, .. }) if *session == sid => {
                self.leave(now, key, &user, true);
                Ok(())
            }
            // A callee hanging up while it rings declines.
            Some(Member::Invited { ringing, .. }) if ringing.contains(&sid) => {
                self.decline(sid, call_id)
            }
            _ if self.calls.calls[&key].rang.contains(&sid) => Ok(()),
            _ => Err(no_such_call()),
        }
    }

    /// `sid` opened or closed its microphone: the others in its call hear of it.
    pub(super) fn microphone(&mut self, sid: SessionId, on: bool) -> Result<(), Error> {
        let (app, user) = self.identity(sid);
        let key = *self
            .calls
            .joined
            .get(&(app, user.clone()))
            .ok_or_else(no_such_call)?;
        let call = &self.calls.calls[&key];
        if !matches!(call.members.get(&user), Some(Member::Joined { session, .. }) if *session == sid)
        {
            return Err(no_such_call());
        }
        let others: Vec<SessionId> = call
            .joined_sessions()
            .filter(|(u, _)| **u != user)
            .map(|(_, s)| s)
            .collect();
        for s in others {
            self.send_to_session(
                s,
                ServerMsg::AudioAvailable {
                    user: user.clone(),
                    available: on,
                },
            );
        }
        Ok(())
    }

    /// `sid`'s user puts its call on hold (`on`) or takes it back: every
    /// device of every participant hears it, and the media routes leave the
    /// holder out (`media_routes`). Holding a held call changes nothing.
    /// Taking back the call set aside for a waiting one swaps the two: the
    /// user's other call is held and set aside in its place.
    pub(super) fn hold(&mut self, sid: SessionId, call_id: &str, on: bool) -> Result<(), Error> {
        let key = self.joined_call(sid, call_id)?;
        let (app, user) = self.identity(sid);
        if !self.calls.calls[&key].connected {
            return Err(not_connected());
        }
        let who = (app, user.clone());
        if !on && self.calls.parked.get(&who) == Some(&key) {
            let current = self
                .calls
                .joined
                .insert(who.clone(), key)
                .expect("parked has a current");
            self.calls.parked.insert(who, current);
            self.set_hold(current, &user, true);
        }
        self.set_hold(key, &user, on);
        Ok(())
    }

    /// `user` holds call `key` (`on`) or takes it back; everyone in the
    /// call hears of a change.
    fn set_hold(&mut self, key: CallKey, user: &UserId, on: bool) {
        let call = self.calls.calls.get_mut(&key).expect("exists");
        let app = call.app;
        let changed = if on {
            call.held.insert(user.clone())
        } else {
            call.held.remove(user)
        };
        if !changed {
            return;
        }
        self.calls.moved.insert(call.room);
        let participants: Vec<UserId> = call.joined_sessions().map(|(u, _)| u.clone()).collect();
        let call_id = call.id.clone();
        for participant in participants {
            for s in self.sessions_of(app, &participant) {
                self.send_to_session(
                    s,
                    ServerMsg::CallHold {
                        call_id: call_id.clone(),
                        user: user.clone(),
                        on_hold: on,
                    },
                );
            }
        }
    }

    /// Blind transfer: `sid`'s user leaves its connected 1:1 call, and the
    /// other party, who stays, is rung through to `to`. Until `to` answers
    /// the call is not connected; `to`'s answer connects it again
    /// (`call_begin` to both), a decline, a timeout or busy ends it.
    pub(super) fn transfer(
        &mut self,
        now: Millis,
        sid: SessionId,
        call_id: &str,
        to: &str,
    ) -> Result<(), Error> {
        let key = self.joined_call(sid, call_id)?;
        let (app, user) = self.identity(sid);
        let call = &self.calls.calls[&key];
        if call.group {
            return Err(Error::new(
                ErrorCode::TransferGroupCall,
                "transferCall works in a one-to-one call; this is a group call",
            ));
        }
        if !call.connected {
            return Err(not_connected());
        }
        let to = UserId::parse(to)?;
        let Some((other, other_sid)) = call
            .joined_sessions()
            .find(|(u, _)| **u != user)
            .map(|(u, s)| (u.clone(), s))
        else {
            return Err(not_connected());
        };
        if to == user || to == other {
            return Err(Error::new(
                ErrorCode::InvalidTransferTarget,
                format!("{to} is already in this call; transfer it to a third user"),
            ));
        }
        let call = self.calls.calls.get_mut(&key).expect("exists");
        let Some(Member::Joined { session, since, .. }) = call.members.remove(&user) else {
            unreachable!("joined_call checked the member");
        };
        self.calls.moved.insert(call.room);
        call.held.remove(&user);
        call.connected = false;
        call.transferred_by = Some(user.clone());
        // The party that stays is whom the target talks to.
        call.sponsor = other.clone();
        let (call_id, room) = (call.id.clone(), call.room);
        self.mark_left(app, &user, key);
        self.send_to_session(
            session,
            ServerMsg::CallEnd {
                call_id: call_id.clone(),
                room,
                total_time: now.saturating_sub(since) / 1000,
            },
        );
        self.send_to_session(
            other_sid,
            ServerMsg::CallTransferred {
                call_id,
                by: user.clone(),
                to: to.clone(),
            },
        );
        self.peer_event(key, &user, PeerAction::Left, vec![user.clone()], false);
        self.invite(now, key, vec![to], u64::from(DEFAULT_RING_SECS) * 1000);
        self.settle_call(key, CancelReason::Busy);
        Ok(())
    }

    /// `user` just entered call `key`: its devices hear who holds it already.
    fn tell_holds(&mut self, key: CallKey, app: AppId, user: &UserId) {
        let call = &self.calls.calls[&key];
        let (call_id, held): (String, Vec<UserId>) =
            (call.id.clone(), call.held.iter().cloned().collect());
        for holder in held {
            for s in self.sessions_of(app, user) {
                self.send_to_session(
                    s,
                    ServerMsg::CallHold {
                        call_id: call_id.clone(),
                        user: holder.clone(),
                        on_hold: true,
                    },
                );
            }
        }
    }

    /// The call `call_id` if `sid` is in it.
    fn joined_call(&self, sid: SessionId, call_id: &str) -> Result<CallKey, Error> {
        let key = *self.calls.by_id.get(call_id).ok_or_else(no_such_call)?;
        let (_, user) = self.identity(sid);
        match self.calls.calls[&key].members.get(&user) {
            Some(Member::Joined { session, .. }) if *session == sid => Ok(key),
            _ => Err(no_such_call()),
        }
    }

    pub(super) fn calls_running(&self) -> usize {
        self.calls.calls.len()
    }

    /// The rooms whose routes may have changed since this was last asked,
    /// each with its route now (`None`: no call there any more, or fewer
    /// than two to meet in it).
    pub(super) fn moved_media_routes(&mut self) -> Vec<(RoomId, Option<MediaRoute>)> {
        std::mem::take(&mut self.calls.moved)
            .into_iter()
            .map(|room| {
                let call = (self.calls.by_room.get(&room)).map(|key| &self.calls.calls[key]);
                (room, call.and_then(|call| self.media_route(call)))
            })
            .collect()
    }

    /// The session's connection changed: the rooms of its calls now reach
    /// it elsewhere, or not at all.
    pub(super) fn session_moved(&mut self, sid: SessionId) {
        let (app, user) = self.identity(sid);
        let who = (app, user);
        for key in [self.calls.joined.get(&who), self.calls.parked.get(&who)]
            .into_iter()
            .flatten()
        {
            self.calls.moved.insert(self.calls.calls[key].room);
        }
    }

    #[cfg(test)]
    pub(super) fn moved_rooms(&self) -> Vec<RoomId> {
        self.calls.moved.iter().copied().collect()
    }

    /// Who hears media in a call's room: the connections of the joined
    /// sessions not holding the call, with their users, and which of them
    /// only listen (the audience); `None` below two (a caller alone while
    /// it rings has nobody to talk to).
    fn media_route(&self, call: &Call) -> Option<MediaRoute> {
        // A participant holding the call neither sends to the room nor
        // hears it; the others go on among themselves.
        let members: Vec<(ConnId, UserId)> = call
            .joined_sessions()
            .filter(|(user, _)| !call.held.contains(*user))
            .filter_map(|(user, sid)| Some((self.sessions.get(&sid)?.conn?, user.clone())))
            .collect();
        let audience = (members.iter())
            .filter(|(_, user)| call.role_of(user) == Role::Audience)
            .map(|(conn, _)| *conn)
            .collect();
        (members.len() >= 2).then_some(MediaRoute { members, audience })
    }

    /// Every room's route, built from scratch: what the routes published
    /// room by room must add up to.
    #[cfg(debug_assertions)]
    pub(super) fn all_media_routes(&self) -> BTreeMap<RoomId, MediaRoute> {
        (self.calls.calls.values())
            .filter_map(|call| Some((call.room, self.media_route(call)?)))
            .collect()
    }

    pub(super) fn invite_more(
        &mut self,
        now: Millis,
        sid: SessionId,
        call_id: &str,
        users: &[String],
    ) -> Result<(), Error> {
        let key = *self.calls.by_id.get(call_id).ok_or_else(no_such_call)?;
        let (_, user) = self.identity(sid);
        if !matches!(self.calls.calls[&key].members.get(&user), Some(Member::Joined { session, .. }) if *session == sid)
        {
            return Err(no_such_call());
        }
        let users = parse_users(users, self.settings.max_call_participants)?;
        if users.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidParameters,
                "inviteUser needs at least one user in userIDList",
            ));
        }
        if users.contains(&user) {
            return Err(Error::new(
                ErrorCode::CallSelf,
                format!("{user} cannot invite itself: it is in the call"),
            ));
        }
        let (new, members): (Vec<UserId>, Vec<UserId>) = users
            .into_iter()
            .partition(|u| !self.calls.calls[&key].members.contains_key(u));
        if new.is_empty() {
            // A command that changes nothing still gets an answer.
            let names: Vec<&str> = members.iter().map(UserId::as_str).collect();
            return Err(Error::new(
                ErrorCode::InvalidParameters,
                format!(
                    "nobody to invite: {} already in the call or ringing for it",
                    names.join(", ")
                ),
            ));
        }
        self.check_capacity(self.calls.calls[&key].participant_count() + new.len())?;
        self.calls.calls.get_mut(&key).expect("exists").group = true;
        // Those already in the call or ringing hear the new list; the new
        // invitees learn it from their invitation.
        let told = self.calls.calls[&key].everyone();
        self.invite(now, key, new, u64::from(DEFAULT_RING_SECS) * 1000);
        let invited: Vec<UserId> = self.calls.calls[&key].invited().cloned().collect();
        for s in told {
            self.send_to_session(
                s,
                ServerMsg::CallPeer {
                    call_id: call_id.to_owned(),
                    action: PeerAction::InviteesUpdated,
                    users: invited.clone(),
                    role: None,
                },
            );
        }
        Ok(())
    }

    pub(super) fn join_room(
        &mut self,
        now: Millis,
        sid: SessionId,
        room: RoomId,
        role: Role,
    ) -> Result<(), Error> {
        let key = *self.calls.by_room.get(&room).ok_or_else(|| {
            Error::new(
                ErrorCode::NoSuchCall,
                format!("no call runs in room {room}"),
            )
        })?;
        let (app, user) = self.identity(sid);
        if self.calls.calls[&key].app != app {
            return Err(Error::new(
                ErrorCode::NoSuchCall,
                format!("no call runs in room {room}"),
            ));
        }
        if !self.calls.calls[&key].group {
            return Err(Error::new(
                ErrorCode::NotAGroupCall,
                format!("room {room} holds a one-to-one call"),
            ));
        }
        if let Some(Member::Invited { .. }) = self.calls.calls[&key].members.get(&user) {
            let call_id = self.calls.calls[&key].id.clone();
            if role == Role::Audience {
                self.check_audience(self.calls.calls[&key].audience_count() + 1)?;
            }
            if let Some(ringing) = self.ringing_of(key, &user) {
                ringing.insert(sid);
            }
            return self.answer_as(now, sid, &call_id, false, role);
        }
        if self.calls.joined.contains_key(&(app, user.clone())) {
            return Err(self.already_in_call(app, &user));
        }
        match role {
            Role::Anchor => self.check_capacity(self.calls.calls[&key].participant_count() + 1)?,
            Role::Audience => self.check_audience(self.calls.calls[&key].audience_count() + 1)?,
        }
        let call = self.calls.calls.get_mut(&key).expect("exists");
        self.calls.moved.insert(call.room);
        call.members.insert(
            user.clone(),
            Member::Joined {
                session: sid,
                since: now,
                role,
            },
        );
        let call_id = call.id.clone();
        let was_connected = call.connected;
        let joined = call.joined_besides(&user);
        let sponsor = Some(call.sponsor.clone());
        self.mark_joined(app, &user, key);
        self.send_to_session(
            sid,
            ServerMsg::CallBegin {
                call_id: call_id.clone(),
                room,
                role,
                joined,
                sponsor,
            },
        );
        self.peer_event(key, &user, PeerAction::Entered, vec![user.clone()], false);
        self.tell_holds(key, app, &user);
        if !was_connected {
            self.connect(now, key, &user);
        }
        Ok(())
    }

    /// The first answer connects the call: members who were waiting in it
    /// (the caller) begin too, and their time in the call starts now, not
    /// when it began to ring. After a blind transfer, the party that stayed
    /// keeps the time it has been in the call.
    fn connect(&mut self, now: Millis, key: CallKey, answering: &UserId) {
        let call = self.calls.calls.get_mut(&key).expect("exists");
        if std::mem::replace(&mut call.connected, true) {
            return;
        }
        if call.transferred_by.is_none() {
            for member in call.members.values_mut() {
                if let Member::Joined { since, .. } = member {
                    *since = now;
                }
            }
        }
        let (call_id, room) = (call.id.clone(), call.room);
        let waiting: Vec<(SessionId, Role, Vec<UserId>)> = call
            .joined_sessions()
            .filter(|(u, _)| *u != answering)
            .map(|(u, s)| (s, call.role_of(u), call.joined_besides(u)))
            .collect();
        for (s, role, joined) in waiting {
            let msg = ServerMsg::CallBegin {
                call_id: call_id.clone(),
                room,
                role,
                joined,
                sponsor: None,
            };
            self.send_to_session(s, msg);
        }
    }

    /// `user` is now in call `key`: busy, and shown "in a call" to contacts.
    fn mark_invited(&mut self, app: AppId, user: &UserId, key: CallKey) {
        (self.calls.invited.entry((app, user.clone())))
            .or_default()
            .insert(key);
    }

    /// `user` is no longer invited to call `key`: it answered, declined or
    /// was let go, or the call ended.
    fn mark_answered(&mut self, app: AppId, user: &UserId, key: CallKey) {
        let who = (app, user.clone());
        if let Some(keys) = self.calls.invited.get_mut(&who) {
            keys.remove(&key);
            if keys.is_empty() {
                self.calls.invited.remove(&who);
            }
        }
    }

    /// The calls inviting `user`, oldest first. Debug builds check the
    /// index against every call, so that every call test checks it.
    fn invitations(&self, app: AppId, user: &UserId) -> Vec<CallKey> {
        let keys: Vec<CallKey> = (self.calls.invited.get(&(app, user.clone())))
            .into_iter()
            .flatten()
            .copied()
            .collect();
        #[cfg(debug_assertions)]
        {
            let mut scanned: Vec<CallKey> = (self.calls.calls.iter())
                .filter(|(_, c)| {
                    c.app == app && matches!(c.members.get(user), Some(Member::Invited { .. }))
                })
                .map(|(key, _)| *key)
                .collect();
            scanned.sort_unstable();
            assert_eq!(keys, scanned, "the invitations index of {user}");
        }
        keys
    }

    fn mark_joined(&mut self, app: AppId, user: &UserId, key: CallKey) {
        self.calls.joined.insert((app, user.clone()), key);
        self.broadcast_presence(app, user);
    }

    /// `user` is out of call `key`. When that was its call and it holds
    /// another aside, that one is its call again (still held: the user
    /// takes it back with `unhold`).
    fn mark_left(&mut self, app: AppId, user: &UserId, key: CallKey) {
        let who = (app, user.clone());
        if self.calls.parked.get(&who) == Some(&key) {
            self.calls.parked.remove(&who);
            return;
        }
        if self.calls.joined.get(&who) != Some(&key) {
            return;
        }
        match self.calls.parked.remove(&who) {
            Some(parked) => {
                self.calls.joined.insert(who, parked);
            }
            None => {
                self.calls.joined.remove(&who);
                self.broadcast_presence(app, user);
            }
        }
    }

    /// Whether `user` is in a call (for presence).
    pub(super) fn in_call(&self, app: AppId, user: &UserId) -> bool {
        self.calls.joined.contains_key(&(app, user.clone()))
    }

    /// The devices of `user` ringing for call `key`, while it is invited.
    fn ringing_of(&mut self, key: CallKey, user: &UserId) -> Option<&mut BTreeSet<SessionId>> {
        match self.calls.calls.get_mut(&key)?.members.get_mut(user) {
            Some(Member::Invited { ringing, .. }) => Some(ringing),
            _ => None,
        }
    }

    /// Invitations of the call that ran out end; a call answered in time
    /// leaves its timer nothing to do.
    pub(super) fn call_timeout(&mut self, now: Millis, key: CallKey) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let expired: Vec<UserId> = call
            .members
            .iter()
            .filter(|(_, m)| matches!(m, Member::Invited { deadline, .. } if *deadline <= now))
            .map(|(u, _)| u.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        let sponsor = call.sponsor.clone();
        for user in &expired {
            for s in self.remove_invitee(key, user) {
                self.cancel_on(key, s, CancelReason::Timeout, None);
            }
        }
        // NO_RESP goes to everyone still in the call or ringing.
        let told = self.calls.calls[&key].others(&sponsor);
        let sponsor_session = self.calls.calls[&key]
            .joined_sessions()
            .find(|(u, _)| **u == sponsor)
            .map(|(_, s)| s);
        let call_id = self.calls.calls[&key].id.clone();
        for s in sponsor_session.into_iter().chain(told) {
            self.send_to_session(
                s,
                ServerMsg::CallPeer {
                    call_id: call_id.clone(),
                    action: PeerAction::NoResponse,
                    users: expired.clone(),
                    role: None,
                },
            );
        }
        self.settle_call(key, CancelReason::Timeout);
    }

    /// A session ends (logout, kick, grace over): it leaves its call and
    /// stops ringing anywhere.
    pub(super) fn calls_on_session_end(&mut self, now: Millis, sid: SessionId) {
        let (app, user) = self.identity(sid);
        let who = (app, user.clone());
        let joined: Vec<CallKey> = [self.calls.joined.get(&who), self.calls.parked.get(&who)]
            .into_iter()
            .flatten()
            .copied()
            .filter(|key| {
                matches!(self.calls.calls[key].members.get(&user), Some(Member::Joined { session, .. }) if *session == sid)
            })
            .collect();
        for key in joined {
            if self.calls.calls.contains_key(&key) {
                self.leave(now, key, &user, false);
            }
        }
        let ringing: Vec<CallKey> = (self.invitations(app, &user).into_iter())
            .filter(|key| {
                matches!(self.calls.calls[key].members.get(&user), Some(Member::Invited { ringing, .. }) if ringing.contains(&sid))
            })
            .collect();
        for key in ringing {
            if let Some(ringing) = self.ringing_of(key, &user) {
                ringing.remove(&sid);
            }
            self.cancel_on(key, sid, CancelReason::SignedOut, None);
        }
    }

    /// `user` leaves a call it joined; `tell` says whether its own session
    /// can still hear about it.
    fn leave(&mut self, now: Millis, key: CallKey, user: &UserId, tell: bool) {
        let call = self.calls.calls.get_mut(&key).expect("exists");
        let Some(Member::Joined { session, since, .. }) = call.members.remove(user) else {
            return;
        };
        self.calls.moved.insert(call.room);
        call.held.remove(user);
        let (app, call_id, room, connected) =
            (call.app, call.id.clone(), call.room, call.connected);
        let transferring = call.transferred_by.is_some();
        self.mark_left(app, user, key);
        if !connected && !transferring {
            // The caller hangs up before anyone answered: cancel everywhere.
            if tell {
                self.send_to_session(
                    session,
                    ServerMsg::CallCanceled {
                        call_id,
                        room,
                        reason: CancelReason::CallerCanceled,
                        by: None,
                    },
                );
            }
            self.end_call(key, CancelReason::CallerCanceled);
            return;
        }
        // It was in the call (or, after a transfer, stayed in it while the
        // target rings): it ends for it as a call it was in.
        if tell {
            let total_time = now.saturating_sub(since) / 1000;
            self.send_to_session(
                session,
                ServerMsg::CallEnd {
                    call_id,
                    room,
                    total_time,
                },
            );
        }
        if !connected {
            self.end_call(key, CancelReason::CallerCanceled);
            return;
        }
        self.peer_event(key, user, PeerAction::Left, vec![user.clone()], false);
        self.settle_call(key, CancelReason::CallEnded);
    }

    /// Ends the call if it can no longer go on: connected with fewer than two
    /// participants, or never connected with nobody left to answer.
    fn settle_call(&mut self, key: CallKey, reason: CancelReason) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let inviting = call.invited().count();
        let over = if call.connected {
            call.joined_count() < 2
        } else {
            inviting == 0
        };
        if !over {
            return;
        }
        // After a transfer the party that stayed had been in the call: it
        // ends for it as a call it was in.
        let (connected, app) = (call.connected || call.transferred_by.is_some(), call.app);
        let (call_id, room) = (call.id.clone(), call.room);
        let joined: Vec<(UserId, SessionId, Millis)> = call
            .members
            .iter()
            .filter_map(|(u, m)| match m {
                Member::Joined { session, since, .. } => Some((u.clone(), *session, *since)),
                Member::Invited { .. } => None,
            })
            .collect();
        for (user, s, since) in joined {
            self.mark_left(app, &user, key);
            let msg = if connected {
                ServerMsg::CallEnd {
                    call_id: call_id.clone(),
                    room,
                    total_time: self.now.saturating_sub(since) / 1000,
                }
            } else {
                ServerMsg::CallCanceled {
                    call_id: call_id.clone(),
                    room,
                    reason,
                    by: None,
                }
            };
            self.send_to_session(s, msg);
        }
        self.end_call(key, CancelReason::CallEnded);
    }

    /// Removes the call; devices still ringing for it stop with `reason`.
    fn end_call(&mut self, key: CallKey, reason: CancelReason) {
        let Some(call) = self.calls.calls.remove(&key) else {
            return;
        };
        self.calls.by_id.remove(&call.id);
        self.calls.by_room.remove(&call.room);
        self.calls.moved.insert(call.room);
        for (user, m) in &call.members {
            match m {
                Member::Invited { ringing, .. } => {
                    self.mark_answered(call.app, user, key);
                    for &s in ringing {
                        self.send_to_session(
                            s,
                            ServerMsg::CallCanceled {
                                call_id: call.id.clone(),
                                room: call.room,
                                reason,
                                by: None,
                            },
                        );
                    }
                }
                Member::Joined { .. } => self.mark_left(call.app, user, key),
            }
        }
    }

    /// The call `call_id` if `sid` may answer it now; `None` for a late
    /// answer from a device that already heard the call stop.
    fn ringing_call(&self, sid: SessionId, call_id: &str) -> Result<Option<CallKey>, Error> {
        let (_, user) = self.identity(sid);
        let Some(&key) = self.calls.by_id.get(call_id) else {
            return Err(no_such_call());
        };
        let call = &self.calls.calls[&key];
        match call.members.get(&user) {
            Some(Member::Invited { ringing, .. }) if ringing.contains(&sid) => Ok(Some(key)),
            _ if call.rang.contains(&sid) => Ok(None),
            _ => Err(no_such_call()),
        }
    }

    /// Takes `user` out of the invitees; returns the devices that were ringing.
    fn remove_invitee(&mut self, key: CallKey, user: &UserId) -> BTreeSet<SessionId> {
        let call = self.calls.calls.get_mut(&key).expect("exists");
        let app = call.app;
        match call.members.remove(user) {
            Some(Member::Invited { ringing, .. }) => {
                self.mark_answered(app, user, key);
                ringing
            }
            Some(joined) => {
                call.members.insert(user.clone(), joined);
                BTreeSet::new()
            }
            None => BTreeSet::new(),
        }
    }

    /// Stops the call ringing on `sid` with `reason`; `by` names the
    /// device of the same user that answered or declined it.
    fn cancel_on(
        &mut self,
        key: CallKey,
        sid: SessionId,
        reason: CancelReason,
        by: Option<DeviceInfo>,
    ) {
        let call = &self.calls.calls[&key];
        let msg = ServerMsg::CallCanceled {
            call_id: call.id.clone(),
            room: call.room,
            reason,
            by,
        };
        self.send_to_session(sid, msg);
    }

    /// Tells the call about `subject`'s action: everyone (joined and ringing)
    /// when `ringing_too`, else only joined members.
    fn peer_event(
        &mut self,
        key: CallKey,
        subject: &UserId,
        action: PeerAction,
        users: Vec<UserId>,
        ringing_too: bool,
    ) {
        let call = &self.calls.calls[&key];
        let targets: Vec<SessionId> = if ringing_too {
            call.others(subject)
        } else {
            call.joined_sessions()
                .filter(|(u, _)| *u != subject)
                .map(|(_, s)| s)
                .collect()
        };
        let call_id = call.id.clone();
        // Who enters says how it takes part.
        let role = (action == PeerAction::Entered).then(|| call.role_of(subject));
        for s in targets {
            self.send_to_session(
                s,
                ServerMsg::CallPeer {
                    call_id: call_id.clone(),
                    action,
                    users: users.clone(),
                    role,
                },
            );
        }
    }

    fn check_capacity(&self, members: usize) -> Result<(), Error> {
        let max = self.settings.max_call_participants;
        if members > max {
            return Err(call_full(max));
        }
        Ok(())
    }

    fn check_audience(&self, audience: usize) -> Result<(), Error> {
        let max = self.settings.max_call_audience;
        if audience > max {
            return Err(Error::new(
                ErrorCode::CallFull,
                format!("a call's audience holds at most {max} (relay.max_call_audience)"),
            ));
        }
        Ok(())
    }

    /// `sid`'s user speaks (anchor) or only listens (audience) from now
    /// on, in its group call: everyone in the call hears of it, and the
    /// media routes follow (an audience member's frames go nowhere).
    pub(super) fn switch_role(
        &mut self,
        sid: SessionId,
        call_id: &str,
        role: Role,
    ) -> Result<(), Error> {
        let key = self.joined_call(sid, call_id)?;
        let (_, user) = self.identity(sid);
        let call = &self.calls.calls[&key];
        if !call.group {
            return Err(Error::new(
                ErrorCode::NotAGroupCall,
                "switchRole works in a group call; this is a one-to-one call",
            ));
        }
        if call.role_of(&user) == role {
            return Ok(());
        }
        match role {
            Role::Anchor => self.check_capacity(call.participant_count() + 1)?,
            Role::Audience => self.check_audience(call.audience_count() + 1)?,
        }
        let call = self.calls.calls.get_mut(&key).expect("exists");
        if let Some(Member::Joined { role: r, .. }) = call.members.get_mut(&user) {
            *r = role;
            self.calls.moved.insert(call.room);
        }
        let (call_id, sessions): (String, Vec<SessionId>) = (
            call.id.clone(),
            call.joined_sessions().map(|(_, s)| s).collect(),
        );
        for s in sessions {
            self.send_to_session(
                s,
                ServerMsg::RoleChanged {
                    call_id: call_id.clone(),
                    user: user.clone(),
                    role,
                },
            );
        }
        Ok(())
    }

    fn free_room(&mut self) -> RoomId {
        loop {
            let room = self.rng.random_range(1..=RoomId::MAX);
            if !self.calls.by_room.contains_key(&room) {
                return room;
            }
        }
    }
}

fn call_full(max: usize) -> Error {
    Error::new(
        ErrorCode::CallFull,
        format!("a call holds at most {max} participants (relay.max_call_participants)"),
    )
}

/// The invitees, each once, in the order given; a list longer than any call
/// can hold is refused before any of it is looked at.
fn parse_users(users: &[String], max_participants: usize) -> Result<Vec<UserId>, Error> {
    if users.len() > max_participants {
        return Err(call_full(max_participants));
    }
    let mut seen = HashSet::with_capacity(users.len());
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let u = UserId::parse(u)?;
        if seen.insert(u.clone()) {
            out.push(u);
        }
    }
    Ok(out)
}
