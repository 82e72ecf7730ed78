//! The client side of calls: which calls ring here, which one this device
//! is in, and the seed's events for each relay message.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClientEngine, MediaCommand, Millis, Output};
use crate::media::control::Digit;
use strum::IntoStaticStr;

use crate::client::event::{AUDIO_CALL, Event};
use crate::client::records::{CallOutcome, CallRecord, CallRole, DeviceView};
use crate::error::{Error, ErrorCode, quoted};
use crate::ids::UserId;
use crate::protocol::{
    CallInfo, CancelReason, ClientMsg, CurrentCall, PeerAction, Role, RoomId, ServerMsg,
    check_ring_secs, check_user_data,
};

/// A call this device knows about: the one model of it, from which the
/// events and the history record are both made.
#[derive(Clone, Debug)]
pub(super) struct CallView {
    id: String,
    room: RoomId,
    role: CallRole,
    sponsor: UserId,
    /// The other party: the caller of an incoming call, the callees of an
    /// outgoing one (none for a call joined by room).
    peers: Vec<UserId>,
    /// When it rang or was dialed here (or was joined).
    started_at: Millis,
    /// When this device entered the call, once it has.
    began_at: Option<Millis>,
    /// A group call (a 1:1 call becomes one with `inviteUser`).
    group: bool,
    /// The participants holding the call, as this device last heard.
    held: BTreeSet<UserId>,
    /// The other party transferred the call to this user, who rings: this
    /// device stays in the call, without voice, until it answers.
    transfer_to: Option<UserId>,
    /// This device only listens (a group call's audience).
    audience: bool,
    /// Who else is in the call, as this device last heard: the relay's
    /// list when it entered, then who entered and left.
    with: Vec<UserId>,
}

impl CallView {
    /// In the call with someone to talk to: begun, and not waiting for a
    /// transfer's target to answer.
    fn connected(&self) -> bool {
        self.began_at.is_some() && self.transfer_to.is_none()
    }

    /// Its media runs: begun, through a transfer's ring too. The room
    /// stays the call's, with nobody in it to hear until the target
    /// answers, and the call's figures stay one `MEDIA_STATS`, after its
    /// end, however the transfer goes.
    fn media_runs(&self) -> bool {
        self.began_at.is_some()
    }
}

impl CallView {
    fn record(&self, outcome: CallOutcome, missed: bool, total_time: u64) -> Box<CallRecord> {
        Box::new(CallRecord {
            call_id: self.id.clone(),
            room_id: self.room,
            call_role: self.role,
            peers: self.peers.clone(),
            started_at: self.started_at,
            outcome,
            missed,
            total_time,
            elsewhere: None,
        })
    }

    /// What the history says of a call that stopped here before it
    /// connected: missed when nobody of this user answered or declined;
    /// `elsewhere`, the device that did, if another one did.
    fn stopped(&self, reason: CancelReason, elsewhere: Option<DeviceView>) -> Box<CallRecord> {
        use CancelReason::*;
        let (outcome, missed) = match (self.role, reason) {
            (CallRole::Called, CallerCanceled | Timeout | CallEnded | SignedOut) => {
                (CallOutcome::Missed, true)
            }
            (CallRole::Caller, Timeout) => (CallOutcome::NoAnswer, false),
            (_, other) => (CallOutcome::Stopped(other), false),
        };
        let mut record = self.record(outcome, missed, 0);
        record.elsewhere = elsewhere;
        record
    }
}

#[derive(Default)]
pub(super) struct CallState {
    /// Incoming calls ringing here, by call id.
    ringing: BTreeMap<String, CallView>,
    /// The call this device placed or is in.
    current: Option<CallView>,
    /// The call this device holds aside to take a waiting one (call
    /// waiting): its user holds it until `unhold` swaps the two.
    parked: Option<CallView>,
    /// The room whose media runs here: the current call, once it began.
    media_room: Option<RoomId>,
    /// Whether that media only listens (the media thread was told so).
    media_listens: bool,
    /// Auto-answer: when each ringing call is to be accepted here.
    auto_answer_at: BTreeMap<String, Millis>,
    /// Answers and hang-ups sent whose effect has not been seen yet. A
    /// link that dies with one in it (a relay that stalled) loses it, and
    /// the relay drops a connection it replaces, so each goes again after
    /// the next resume or login if its call still calls for it.
    asked: Vec<Asked>,
    /// Calls hung up here while the relay was out of reach: ended on this
    /// device, and hung up on the relay once its `call_state` says this
    /// device is still in them.
    hung_up_unreachable: Vec<String>,
    /// A login or resume is done and its `call_state` not yet here: what
    /// the relay held for this device while it was away comes first, and
    /// a call this device does not know yet is the call state's to tell.
    before_call_state: bool,
}

impl CallState {
    pub(super) fn awaiting_call_state(&mut self) {
        self.before_call_state = true;
    }
}

/// An answer or a hang-up, until its effect is seen.
#[derive(Clone, Debug)]
enum Asked {
    Accept { call_id: String, end_current: bool },
    Reject { call_id: String },
    Hangup { call_id: String },
}

impl Asked {
    fn call_id(&self) -> &str {
        match self {
            Asked::Accept { call_id, .. }
            | Asked::Reject { call_id }
            | Asked::Hangup { call_id } => call_id,
        }
    }

    /// Whether its call still calls for it: an answer while the call rings
    /// here, a hang-up while this device is in it.
    fn pending(&self, rings: impl Fn(&str) -> bool, joined: impl Fn(&str) -> bool) -> bool {
        match self {
            Asked::Accept { call_id, .. } | Asked::Reject { call_id } => rings(call_id),
            Asked::Hangup { call_id } => joined(call_id),
        }
    }

    fn message(&self) -> ClientMsg {
        match self.clone() {
            Asked::Accept {
                call_id,
                end_current,
            } => ClientMsg::Accept {
                call_id,
                end_current,
            },
            Asked::Reject { call_id } => ClientMsg::Reject { call_id },
            Asked::Hangup { call_id } => ClientMsg::Hangup { call_id },
        }
    }
}

/// Call commands, checked against the device's state before they reach the
/// relay. Each variant's name, in camelCase, is the headless command it
/// carries out (`Command::name`).
#[derive(Clone, Debug, PartialEq, IntoStaticStr)]
#[strum(serialize_all = "camelCase")]
pub enum CallCommand {
    Call {
        users: Vec<UserId>,
        timeout_secs: Option<u32>,
        /// Carried to the callees' `ON_CALL_RECEIVED` (at most 1 KiB).
        user_data: Option<String>,
    },
    GroupCall {
        users: Vec<UserId>,
        timeout_secs: Option<u32>,
        user_data: Option<String>,
    },
    Accept {
        call_id: Option<String>,
        /// A waiting call: hang up the current call instead of holding it.
        end_current: bool,
    },
    Reject {
        call_id: Option<String>,
    },
    Ignore {
        call_id: Option<String>,
    },
    Hangup {
        call_id: Option<String>,
    },
    InviteUser {
        users: Vec<UserId>,
    },
    JoinInGroupCall {
        room: RoomId,
        /// Speak (anchor, the default) or only listen (audience).
        role: Role,
    },
    /// Speak (anchor) or only listen (audience) in the group call.
    SwitchRole {
        role: Role,
    },
    /// The microphone in the current call.
    OpenMicrophone,
    CloseMicrophone,
    /// The call's media figures so far (`MEDIA_STATS`).
    GetMediaStats,
    /// Put the call (default: the current one) on hold, or take it back.
    Hold {
        call_id: Option<String>,
    },
    Unhold {
        call_id: Option<String>,
    },
    /// Blind transfer of the connected 1:1 call to `user`.
    TransferCall {
        user: UserId,
    },
    /// DTMF digits to the others in the connected call, as telephone
    /// events on the media path.
    #[strum(serialize = "sendDTMF")]
    SendDtmf {
        digits: Vec<Digit>,
    },
}

impl CallCommand {
    /// A call to `users`: a group call when `group`, else one-to-one.
    pub fn place(users: Vec<UserId>, group: bool, timeout_secs: Option<u32>) -> CallCommand {
        if group {
            CallCommand::GroupCall {
                users,
                timeout_secs,
                user_data: None,
            }
        } else {
            CallCommand::Call {
                users,
                timeout_secs,
                user_data: None,
            }
        }
    }
}

fn already_in_call() -> Error {
    Error::new(
        ErrorCode::AlreadyInCall,
        "this device is already in a call; hang up first",
    )
}

impl ClientEngine {
    /// `getMediaStats`: the media thread's own figures, so asked for even
    /// while the link to the relay is down (what an outage did to the call
    /// is what one wants to see then).
    pub(super) fn media_stats(&mut self) -> Result<(), Error> {
        if self.calls.media_room.is_none() {
            return Err(self.no_media_call(
                "getMediaStats reports on a connected call",
                " (each call's figures also come by themselves, after CALLING_END)",
            ));
        }
        self.out.push_back(Output::Media(MediaCommand::Stats));
        Ok(())
    }

    pub(super) fn call_command(&mut self, me: UserId, cmd: CallCommand) -> Result<(), Error> {
        match cmd {
            CallCommand::Call {
                users,
                timeout_secs,
                user_data,
            } => self.place_call(me, users, false, timeout_secs, user_data)?,
            CallCommand::GroupCall {
                users,
                timeout_secs,
                user_data,
            } => self.place_call(me, users, true, timeout_secs, user_data)?,
            CallCommand::Accept {
                call_id,
                end_current,
            } => {
                let id = self.ringing_id(call_id)?;
                // Call waiting takes a call on top of a connected one.
                let waits =
                    self.call_waiting && self.calls.current.as_ref().is_some_and(|c| c.connected());
                if self.calls.current.is_some() && !waits {
                    return Err(already_in_call());
                }
                self.ask(Asked::Accept {
                    call_id: id,
                    end_current,
                });
            }
            CallCommand::Reject { call_id } => {
                let id = self.ringing_id(call_id)?;
                self.ask(Asked::Reject { call_id: id });
            }
            CallCommand::Ignore { call_id } => {
                let id = self.ringing_id(call_id)?;
                let view = self.calls.ringing.remove(&id).expect("ringing");
                self.send(ClientMsg::Ignore { call_id: id });
                self.event(canceled(&view, &me, CancelReason::Ignored, None));
            }
            CallCommand::Hangup { call_id } => {
                let id = self.hangup_id(call_id)?;
                self.ask(Asked::Hangup { call_id: id });
            }
            CallCommand::InviteUser { users } => {
                let current = self.calls.current.as_ref().filter(|c| c.connected());
                let id = current.map(|c| c.id.clone()).ok_or_else(|| {
                    Error::new(ErrorCode::NoSuchCall, "inviteUser needs a connected call")
                })?;
                self.send(ClientMsg::Invite {
                    call_id: id,
                    users: users.iter().map(ToString::to_string).collect(),
                });
            }
            CallCommand::JoinInGroupCall { room, role } => {
                if self.calls.current.is_some() {
                    return Err(already_in_call());
                }
                self.send(ClientMsg::Join { room, role });
            }
            CallCommand::SwitchRole { role } => {
                let view = self.connected_call(None)?;
                if !view.group {
                    return Err(Error::new(
                        ErrorCode::NotAGroupCall,
                        "switchRole works in a group call; this is a one-to-one call",
                    ));
                }
                let call_id = view.id.clone();
                self.send(ClientMsg::SwitchRole { call_id, role });
            }
            CallCommand::OpenMicrophone => self.microphone(true)?,
            CallCommand::CloseMicrophone => self.microphone(false)?,
            CallCommand::GetMediaStats => self.media_stats()?,
            CallCommand::Hold { call_id } => {
                let call_id = self.connected_call(call_id)?.id.clone();
                // Digits still to go out would go nowhere once the relay
                // holds this device's media: they stop here, and are named.
                if self.calls.current.as_ref().is_some_and(|c| c.id == call_id) {
                    self.out.push_back(Output::Media(MediaCommand::StopDtmf));
                }
                self.send(ClientMsg::Hold {
                    call_id,
                    on_hold: true,
                });
            }
            CallCommand::Unhold { call_id } => {
                let call_id = self.connected_call(call_id)?.id.clone();
                self.send(ClientMsg::Hold {
                    call_id,
                    on_hold: false,
                });
            }
            CallCommand::SendDtmf { digits } => {
                let view = self.connected_call(None)?;
                if view.audience {
                    return Err(Error::new(
                        ErrorCode::AudienceSendsNothing,
                        "this device is in the call's audience and sends nothing; switchRole to anchor first",
                    ));
                }
                // The relay routes no media of a device holding its call.
                if view.held.contains(&me) {
                    return Err(Error::new(
                        ErrorCode::CallNotConnected,
                        "this device holds the call, so nobody would hear the digits; unhold it first",
                    ));
                }
                self.out
                    .push_back(Output::Media(MediaCommand::SendDtmf(digits)));
            }
            CallCommand::TransferCall { user } => {
                let view = self.connected_call(None)?;
                if view.group {
                    return Err(Error::new(
                        ErrorCode::TransferGroupCall,
                        "transferCall works in a one-to-one call; this is a group call",
                    ));
                }
                if user == me || view.peers.contains(&user) {
                    return Err(Error::new(
                        ErrorCode::InvalidTransferTarget,
                        format!("{user} is already in this call; transfer it to a third user"),
                    ));
                }
                let call_id = view.id.clone();
                self.send(ClientMsg::Transfer {
                    call_id,
                    to: user.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The call `call_id` names (default: the current one), if this device
    /// is in it (or holds it aside) and it is connected.
    fn connected_call(&self, call_id: Option<String>) -> Result<&CallView, Error> {
        let view = match call_id {
            None => self.calls.current.as_ref().ok_or_else(no_call)?,
            Some(id) => self.joined_view(&id).ok_or_else(|| not_in_call(&id))?,
        };
        if !view.connected() {
            return Err(Error::new(
                ErrorCode::CallNotConnected,
                "the call has not connected yet: hold, unhold, transferCall, sendDTMF and switchRole need a connected call",
            ));
        }
        Ok(view)
    }

    /// Auto-answer is on (`delay` ms) or off: it applies to calls ringing
    /// now and to every later one.
    pub(super) fn set_auto_answer(&mut self, now: Millis, delay: Option<Millis>) {
        self.auto_answer = delay;
        self.calls.auto_answer_at.clear();
        let ringing: Vec<String> = self.calls.ringing.keys().cloned().collect();
        for id in ringing {
            self.arm_auto_answer(now, id);
        }
    }

    /// A call rings here: with auto-answer on, accept it after the delay
    /// (at once for none).
    fn arm_auto_answer(&mut self, now: Millis, call_id: String) {
        let Some(delay) = self.auto_answer else {
            return;
        };
        if delay == 0 {
            self.auto_accept(now, call_id);
        } else {
            let at = now.saturating_add(delay);
            self.calls.auto_answer_at.insert(call_id, at);
        }
    }

    /// Accepts a ringing call exactly as the `accept` command does, unless
    /// it stopped ringing or this device is in a call by now.
    fn auto_accept(&mut self, now: Millis, call_id: String) {
        if self.calls.current.is_some() || !self.calls.ringing.contains_key(&call_id) {
            return;
        }
        self.command(
            now,
            super::Command::Call(CallCommand::Accept {
                call_id: Some(call_id),
                end_current: false,
            }),
        );
    }

    /// When the next auto-answer is due: only for calls still ringing here.
    pub(super) fn auto_answer_due(&self) -> Option<Millis> {
        (self.calls.auto_answer_at.iter())
            .filter(|(id, _)| self.calls.ringing.contains_key(*id))
            .map(|(_, at)| *at)
            .min()
    }

    pub(super) fn auto_answer_timeout(&mut self, now: Millis) {
        let ringing = &self.calls.ringing;
        self.calls
            .auto_answer_at
            .retain(|id, _| ringing.contains_key(id));
        let due: Vec<String> = (self.calls.auto_answer_at.iter())
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.calls.auto_answer_at.remove(&id);
            self.auto_accept(now, id);
        }
    }

    fn place_call(
        &mut self,
        me: UserId,
        users: Vec<UserId>,
        group: bool,
        timeout_secs: Option<u32>,
        user_data: Option<String>,
    ) -> Result<(), Error> {
        check_user_data(user_data.as_deref())?;
        check_ring_secs(timeout_secs)?;
        if users.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidParameters,
                "name at least one user to call",
            ));
        }
        if users.contains(&me) {
            return Err(Error::new(
                ErrorCode::CallSelf,
                format!("{me} cannot call itself"),
            ));
        }
        if self.calls.current.is_some() {
            return Err(already_in_call());
        }
        self.send(ClientMsg::Call {
            invitees: users.iter().map(ToString::to_string).collect(),
            group,
            timeout_secs,
            user_data,
        });
        Ok(())
    }

    fn microphone(&mut self, on: bool) -> Result<(), Error> {
        if self.calls.media_room.is_none() {
            return Err(
                self.no_media_call("the microphone opens and closes in a connected call", "")
            );
        }
        self.send(ClientMsg::Microphone { on });
        self.out.push_back(Output::Media(MediaCommand::Mute(!on)));
        Ok(())
    }

    /// What needs a call's media says where this device stands: in a call
    /// that has not connected yet, or in none.
    fn no_media_call(&self, needs: &str, more: &str) -> Error {
        let here = match &self.calls.current {
            Some(_) => "this device's call has not connected yet",
            None => "this device is in none",
        };
        Error::new(ErrorCode::NoSuchCall, format!("{needs}; {here}{more}"))
    }

    /// The room whose media runs on this device.
    pub(super) fn media_room(&self) -> Option<RoomId> {
        self.calls.media_room
    }

    /// Starts or stops this device's media when its connected call
    /// changes, and has it listen only while this device is in the audience.
    pub(super) fn sync_media(&mut self, me: &UserId) {
        let connected = self.calls.current.as_ref().filter(|c| c.media_runs());
        let listens = connected.is_some_and(|c| c.audience);
        if connected.map(|c| c.room) != self.calls.media_room {
            let start = connected.map(|c| (c.id.clone(), c.room));
            if self.calls.media_room.take().is_some() {
                self.out.push_back(Output::Media(MediaCommand::Stop));
            }
            // A call's media starts speaking.
            self.calls.media_listens = false;
            if let Some((call_id, room)) = start {
                self.calls.media_room = Some(room);
                self.out.push_back(Output::Media(MediaCommand::Start {
                    me: me.clone(),
                    call_id,
                    room,
                }));
            }
        }
        if self.calls.media_room.is_some() && listens != self.calls.media_listens {
            self.calls.media_listens = listens;
            self.out
                .push_back(Output::Media(MediaCommand::Listen(listens)));
        }
    }

    /// The call a `hangup` is for: the one named, else the current one.
    fn hangup_id(&self, call_id: Option<String>) -> Result<String, Error> {
        match call_id {
            Some(id) if self.knows_call(&id) => Ok(id),
            Some(id) => Err(not_in_call(&id)),
            None => match &self.calls.current {
                Some(current) => Ok(current.id.clone()),
                None if !self.calls.ringing.is_empty() => Err(Error::new(
                    ErrorCode::NoSuchCall,
                    "this device is in no call; a call ringing here is \
                     answered with accept, turned down with reject, or left \
                     to ring on the other devices with ignore",
                )),
                None => Err(no_call()),
            },
        }
    }

    /// `hangup` while the relay is out of reach: the call ends here at once
    /// (its voice stopped with the link, and the relay may be gone for
    /// good), and the relay hears the hang-up when the link is back, if it
    /// still has this device in the call.
    pub(super) fn hang_up_unreachable(
        &mut self,
        now: Millis,
        me: &UserId,
        call_id: Option<String>,
    ) -> Result<(), Error> {
        let id = self.hangup_id(call_id)?;
        let view = self.leave_call(&id).ok_or_else(|| not_in_call(&id))?;
        self.end_locally(now, me, view, CancelReason::CallerCanceled, false);
        self.calls.asked.retain(|a| a.call_id() != id);
        self.calls.hung_up_unreachable.push(id);
        self.sync_media(me);
        Ok(())
    }

    /// Whether the relay's "no such call" for the `accept`, `reject` or
    /// `hangup` it names crossed that call's end on the way: nothing of the
    /// kind is still waiting for its effect, so the call's own event
    /// (`ON_CALL_CANCELED`, `CALLING_END`) has told its end already, and the
    /// late answer is dropped quietly, as the relay drops one for a call
    /// still going (docs/calls.md).
    pub(super) fn crossed_the_end(&self, request: &str) -> bool {
        let kind = |a: &Asked| match a {
            Asked::Accept { .. } => "accept",
            Asked::Reject { .. } => "reject",
            Asked::Hangup { .. } => "hangup",
        };
        matches!(request, "accept" | "reject" | "hangup")
            && !self.calls.asked.iter().any(|a| kind(a) == request)
    }

    /// Sends an answer or a hang-up, and keeps it until its effect is seen.
    fn ask(&mut self, asked: Asked) {
        self.send(asked.message());
        self.calls.asked.retain(|a| a.call_id() != asked.call_id());
        self.calls.asked.push(asked);
    }

    /// Forgets what was asked and has taken effect: the call no longer
    /// rings here (answered, turned down), or, hung up, is gone.
    fn forget_answered(&mut self) {
        let CallState {
            ringing,
            current,
            parked,
            asked,
            ..
        } = &mut self.calls;
        let joined = |id: &str| {
            [&*current, &*parked]
                .into_iter()
                .flatten()
                .any(|c| c.id == id)
        };
        asked.retain(|a| a.pending(|id| ringing.contains_key(id), joined));
    }

    /// Translates a call message from the relay into events.
    pub(super) fn call_frame(&mut self, now: Millis, me: &UserId, msg: ServerMsg) {
        self.apply_call_frame(now, me, msg);
        self.forget_answered();
    }

    fn apply_call_frame(&mut self, now: Millis, me: &UserId, msg: ServerMsg) {
        match msg {
            ServerMsg::CallDialing { call } => {
                let view = self.dial_here(now, &call);
                self.calls.current = Some(view);
            }
            ServerMsg::CallInvite { call } => {
                if !self.calls.ringing.contains_key(&call.call_id) {
                    self.ring_here(now, call);
                }
            }
            ServerMsg::CallBegin {
                call_id,
                room,
                role,
                joined,
                sponsor,
            } => {
                // The call held aside connects again after a transfer in it.
                if let Some(view) = self.calls.parked.as_mut().filter(|p| p.id == call_id) {
                    view.transfer_to = None;
                    view.with = joined;
                    let event = begin_event(view, now);
                    return self.event(event);
                }
                let view = match self.calls.ringing.remove(&call_id) {
                    Some(v) => Some(v),
                    None => self.calls.current.take_if(|c| c.id == call_id),
                };
                // A call joined by room id was never rung or dialed here:
                // the relay names who placed it, and its history lists who
                // was in it then.
                let mut view = view.unwrap_or_else(|| CallView {
                    id: call_id.clone(),
                    room,
                    role: CallRole::Called,
                    sponsor: sponsor.unwrap_or_else(|| me.clone()),
                    peers: joined.clone(),
                    started_at: now,
                    began_at: None,
                    group: true,
                    held: BTreeSet::new(),
                    transfer_to: None,
                    audience: false,
                    with: Vec::new(),
                });
                view.audience = role == Role::Audience;
                view.with = joined;
                // After a transfer the party that stayed keeps its start.
                view.began_at.get_or_insert(now);
                view.transfer_to = None;
                self.event(begin_event(&view, now));
                // Call waiting: the call this device was in is held aside
                // (the relay said so with CALL_HOLD_CHANGED just before).
                if let Some(previous) = self.calls.current.replace(view)
                    && let Some(stale) = self.calls.parked.replace(previous)
                {
                    self.end_locally(now, me, stale, CancelReason::CallEnded, false);
                }
            }
            ServerMsg::CallCanceled {
                call_id,
                reason,
                by,
                ..
            } => {
                let view = match self.calls.ringing.remove(&call_id) {
                    Some(v) => v,
                    None => match self.leave_call(&call_id) {
                        Some(v) => v,
                        None => return,
                    },
                };
                self.event(canceled(&view, me, reason, by.map(DeviceView::from)));
            }
            ServerMsg::CallEnd {
                call_id,
                room,
                total_time,
            } => {
                let Some(view) = self.leave_call(&call_id) else {
                    return;
                };
                self.event(Event::CallingEnd {
                    call_id,
                    room_id: room,
                    user_id: me.clone(),
                    total_time,
                    call_media_type: AUDIO_CALL,
                    call_role: view.role,
                    record: view.record(CallOutcome::Answered, false, total_time),
                    unheard: false,
                });
            }
            ServerMsg::CallPeer {
                call_id,
                action,
                users,
                role,
            } => {
                let sponsor = match self.call_view(&call_id) {
                    Some(v) => v.sponsor.clone(),
                    None => return,
                };
                if let Some(view) = self.joined_view_mut(&call_id) {
                    match action {
                        PeerAction::Entered => {
                            let new: Vec<UserId> = (users.iter())
                                .filter(|u| !view.with.contains(u))
                                .cloned()
                                .collect();
                            // Whoever took part, one who joined by room id
                            // too, is in the call's history.
                            for user in &new {
                                if !view.peers.contains(user) {
                                    view.peers.push(user.clone());
                                }
                            }
                            view.with.extend(new);
                        }
                        PeerAction::Left => view.with.retain(|u| !users.contains(u)),
                        _ => {}
                    }
                }
                let each = |f: fn(String, UserId) -> Event| -> Vec<Event> {
                    users
                        .iter()
                        .map(|u| f(call_id.clone(), u.clone()))
                        .collect()
                };
                let events = match action {
                    PeerAction::Accepted => {
                        each(|call_id, user_id| Event::UserAccept { call_id, user_id })
                    }
                    PeerAction::Rejected => {
                        each(|call_id, user_id| Event::Reject { call_id, user_id })
                    }
                    PeerAction::Busy => {
                        each(|call_id, user_id| Event::LineBusy { call_id, user_id })
                    }
                    PeerAction::Entered => (users.iter())
                        .map(|u| Event::UserEnter {
                            call_id: call_id.clone(),
                            user_id: u.clone(),
                            role: role.unwrap_or_default(),
                        })
                        .collect(),
                    PeerAction::Left => {
                        each(|call_id, user_id| Event::UserLeave { call_id, user_id })
                    }
                    PeerAction::NoResponse => vec![Event::NoResp {
                        call_id: call_id.clone(),
                        sponsor,
                        user_id_list: users.clone(),
                    }],
                    PeerAction::InviteesUpdated => {
                        if let Some(c) = self.joined_view_mut(&call_id) {
                            c.group = true;
                        }
                        vec![Event::GroupCallInviteeListUpdate {
                            call_id: call_id.clone(),
                            user_id_list: users.clone(),
                        }]
                    }
                };
                for e in events {
                    self.event(e);
                }
            }
            // A call this device is in again after a restart: its
            // `call_state`, next, begins it here with its holds and roles;
            // what was held for the device would only come before the
            // begin, and again after it.
            ServerMsg::CallHold { call_id, .. } | ServerMsg::RoleChanged { call_id, .. }
                if self.calls.before_call_state && !self.knows_call(&call_id) => {}
            ServerMsg::CallHold {
                call_id,
                user,
                on_hold,
            } => {
                // Every device of a participant hears it, also one that is
                // not the one in the call.
                if let Some(c) = self.joined_view_mut(&call_id) {
                    if on_hold {
                        c.held.insert(user.clone());
                    } else {
                        c.held.remove(&user);
                    }
                }
                // This user took back the call it held aside: the relay
                // held the other one first, which is set aside now.
                let back = self.calls.parked.as_ref().is_some_and(|p| p.id == call_id);
                if back && !on_hold && user == *me {
                    let parked = self.calls.parked.take();
                    self.calls.parked = std::mem::replace(&mut self.calls.current, parked);
                }
                self.event(Event::CallHoldChanged {
                    call_id,
                    user_id: user,
                    on_hold,
                });
            }
            ServerMsg::RoleChanged {
                call_id,
                user,
                role,
            } => {
                if user == *me
                    && let Some(c) = self.joined_view_mut(&call_id)
                {
                    c.audience = role == Role::Audience;
                }
                self.event(Event::RoleChanged {
                    call_id,
                    user_id: user,
                    role,
                });
            }
            ServerMsg::CallTransferred { call_id, by, to } => {
                let Some(c) = self.joined_view_mut(&call_id) else {
                    return;
                };
                // The call rings the target now: no voice until it answers,
                // and its answer begins the call again.
                c.transfer_to = Some(to.clone());
                c.peers = vec![to.clone()];
                c.sponsor = me.clone();
                c.held.remove(&by);
                self.event(Event::CallTransferred { call_id, by, to });
            }
            _ => unreachable!("only call messages are routed here"),
        }
    }

    /// The device signs out, or its session is gone (`unheard`): whatever
    /// rang or ran here ends, visibly.
    pub(super) fn drop_calls(&mut self, now: Millis, me: &UserId, unheard: bool) {
        self.calls.hung_up_unreachable.clear();
        for view in std::mem::take(&mut self.calls.ringing).into_values() {
            self.event(canceled(&view, me, CancelReason::SignedOut, None));
        }
        for view in [self.calls.current.take(), self.calls.parked.take()]
            .into_iter()
            .flatten()
        {
            self.end_locally(now, me, view, CancelReason::SignedOut, unheard);
        }
        self.sync_media(me);
    }

    /// Call `call_id` ends for this device: out of its calls. When that was
    /// its call and it holds another aside, that one is its call again
    /// (still held, as on the relay).
    fn leave_call(&mut self, call_id: &str) -> Option<CallView> {
        if let Some(view) = self.calls.parked.take_if(|p| p.id == call_id) {
            return Some(view);
        }
        let view = self.calls.current.take_if(|c| c.id == call_id)?;
        self.calls.current = self.calls.parked.take();
        Some(view)
    }

    /// A call ends here without word from the relay: `CALLING_END` if it
    /// had begun (`unheard` when it ended while the link was down),
    /// `ON_CALL_CANCELED` with `reason` if not.
    fn end_locally(
        &mut self,
        now: Millis,
        me: &UserId,
        view: CallView,
        reason: CancelReason,
        unheard: bool,
    ) {
        let event = match view.began_at {
            Some(began) => {
                let total_time = now.saturating_sub(began) / 1000;
                Event::CallingEnd {
                    call_id: view.id.clone(),
                    room_id: view.room,
                    user_id: me.clone(),
                    total_time,
                    call_media_type: AUDIO_CALL,
                    call_role: view.role,
                    record: view.record(CallOutcome::Answered, false, total_time),
                    unheard,
                }
            }
            None => canceled(&view, me, reason, None),
        };
        self.event(event);
    }

    /// Settles this device's calls against the relay's `call_state`, sent
    /// after every login and resume: what the device missed while its link
    /// was down (or before its process restarted) ends or begins here now.
    /// A call that stopped without this device hearing why ends with
    /// `call_ended`.
    pub(super) fn reconcile_calls(
        &mut self,
        now: Millis,
        me: &UserId,
        ringing: Vec<CallInfo>,
        current: Option<CurrentCall>,
        parked: Option<Box<CurrentCall>>,
    ) {
        self.calls.before_call_state = false;
        let parked = parked.map(|p| *p);
        let joined: Vec<String> = [&current, &parked]
            .into_iter()
            .flatten()
            .map(|c| c.call.call_id.clone())
            .collect();
        // What was asked and lost with the link, its call still as it was.
        let again: Vec<Asked> = std::mem::take(&mut self.calls.asked)
            .into_iter()
            .filter(|a| {
                a.pending(
                    |id| ringing.iter().any(|c| c.call_id == id),
                    |id| joined.iter().any(|j| j == id),
                )
            })
            .collect();
        let gone: Vec<String> = self
            .calls
            .ringing
            .keys()
            .filter(|id| !ringing.iter().any(|c| &c.call_id == *id) && !joined.contains(id))
            .cloned()
            .collect();
        for id in gone {
            let view = self.calls.ringing.remove(&id).expect("listed");
            self.event(canceled(&view, me, CancelReason::CallEnded, None));
        }
        for call in ringing {
            if self.call_view(&call.call_id).is_none() {
                self.ring_here(now, call);
            }
        }
        // The calls this device was in: those the relay no longer has it in
        // end first, then the relay's are taken up.
        let mut mine: Vec<CallView> = [self.calls.current.take(), self.calls.parked.take()]
            .into_iter()
            .flatten()
            .collect();
        for view in mine.extract_if(.., |v| !joined.contains(&v.id)) {
            self.end_locally(now, me, view, CancelReason::CallEnded, true);
        }
        // A call hung up here while the relay was out of reach is not taken
        // up again: it is hung up there too.
        let hung_up = std::mem::take(&mut self.calls.hung_up_unreachable);
        let taken_up = |c: &CurrentCall| !hung_up.contains(&c.call.call_id);
        let (current, parked) = match (current.filter(taken_up), parked.filter(taken_up)) {
            (None, parked) => (parked, None),
            both => both,
        };
        // The call set aside first: a script that takes the last
        // ON_CALL_BEGIN for the current call is right.
        self.calls.parked = parked.map(|c| self.take_up(now, me, &mut mine, c));
        self.calls.current = current.map(|c| self.take_up(now, me, &mut mine, c));
        for asked in again {
            self.ask(asked);
        }
        for call_id in hung_up.into_iter().filter(|id| joined.contains(id)) {
            self.ask(Asked::Hangup { call_id });
        }
    }

    /// A call the relay has this device in, as this device sees it now:
    /// its own view brought up to date, or a new one (dialing, or begun
    /// with the begin lost on the way).
    fn take_up(
        &mut self,
        now: Millis,
        me: &UserId,
        mine: &mut Vec<CallView>,
        c: CurrentCall,
    ) -> CallView {
        let mut view = match mine.iter().position(|v| v.id == c.call.call_id) {
            Some(i) => {
                let mut view = mine.remove(i);
                view.with = c.joined.clone();
                if c.connected && !view.connected() {
                    view.began_at.get_or_insert(now);
                    view.transfer_to = None;
                    self.event(begin_event(&view, now));
                }
                view
            }
            // Placed here, and still ringing the others.
            None if !c.connected => return self.dial_here(now, &c.call),
            // Answered here (or joined), and the begin was lost on the way.
            None => {
                let role = if c.call.sponsor == *me {
                    CallRole::Caller
                } else {
                    CallRole::Called
                };
                let mut view = (self.calls.ringing.remove(&c.call.call_id))
                    .unwrap_or_else(|| view_of(&c.call, role, now));
                view.began_at = Some(now.saturating_sub(c.joined_ms_ago));
                view.with = c.joined.clone();
                self.event(begin_event(&view, now));
                // Who the group call invited, the list's updates included,
                // is told to a device that comes back into it as it is now.
                if c.call.group {
                    self.event(Event::GroupCallInviteeListUpdate {
                        call_id: c.call.call_id.clone(),
                        user_id_list: c.call.invitees.clone(),
                    });
                }
                view
            }
        };
        view.audience = c.role == Role::Audience;
        self.settle_holds(&mut view, c.held);
        view
    }

    /// The relay's word on who holds the call: what this device missed
    /// while away is told now, as `CALL_HOLD_CHANGED`.
    fn settle_holds(&mut self, view: &mut CallView, held: Vec<UserId>) {
        let held: BTreeSet<UserId> = held.into_iter().collect();
        let changes: Vec<(UserId, bool)> = (held.difference(&view.held))
            .map(|u| (u.clone(), true))
            .chain(view.held.difference(&held).map(|u| (u.clone(), false)))
            .collect();
        for (user, on_hold) in changes {
            self.event(Event::CallHoldChanged {
                call_id: view.id.clone(),
                user_id: user,
                on_hold,
            });
        }
        view.held = held;
    }

    /// A call starts ringing on this device.
    fn ring_here(&mut self, now: Millis, call: CallInfo) {
        let view = view_of(&call, CallRole::Called, now);
        let call_id = call.call_id.clone();
        self.event(Event::OnCallReceived {
            call_id: call.call_id.clone(),
            room_id: call.room,
            sponsor: call.sponsor,
            user_id_list: call.invitees,
            is_from_group: call.group,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
            user_data: call.user_data.map(String::into_boxed_str),
            transferred_by: call.transferred_by.map(Box::new),
            waiting: call.waiting,
            record: view.record(CallOutcome::Ringing, false, 0),
        });
        self.calls.ringing.insert(call.call_id, view);
        self.arm_auto_answer(now, call_id);
    }

    /// This device's call was placed: its view, for the current call.
    fn dial_here(&mut self, now: Millis, call: &CallInfo) -> CallView {
        let view = view_of(call, CallRole::Caller, now);
        self.event(Event::CallDialing {
            call_id: call.call_id.clone(),
            room_id: call.room,
            user_id_list: call.invitees.clone(),
            is_from_group: call.group,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Caller,
            record: view.record(CallOutcome::Dialing, false, 0),
        });
        view
    }

    /// The call an answer applies to: the one named, or the only one ringing.
    fn ringing_id(&self, call_id: Option<String>) -> Result<String, Error> {
        match call_id {
            Some(id) if self.calls.ringing.contains_key(&id) => Ok(id),
            Some(id) => Err(Error::new(
                ErrorCode::NoSuchCall,
                format!("call {id:?} is not ringing on this device"),
            )),
            None => {
                let mut ids = self.calls.ringing.keys();
                match (ids.next(), ids.next()) {
                    (Some(id), None) => Ok(id.clone()),
                    (None, _) => Err(Error::new(
                        ErrorCode::NoSuchCall,
                        "nothing is ringing on this device",
                    )),
                    (Some(_), Some(_)) => Err(Error::new(
                        ErrorCode::InvalidParameters,
                        "several calls ring on this device; name one with callId",
                    )),
                }
            }
        }
    }

    fn knows_call(&self, id: &str) -> bool {
        self.call_view(id).is_some()
    }

    fn call_view(&self, id: &str) -> Option<&CallView> {
        self.calls.ringing.get(id).or(self.joined_view(id))
    }

    /// The call `id`, if this device is in it or holds it aside.
    fn joined_view(&self, id: &str) -> Option<&CallView> {
        [&self.calls.current, &self.calls.parked]
            .into_iter()
            .flatten()
            .find(|c| c.id == id)
    }

    fn joined_view_mut(&mut self, id: &str) -> Option<&mut CallView> {
        [&mut self.calls.current, &mut self.calls.parked]
            .into_iter()
            .flatten()
            .find(|c| c.id == id)
    }
}

fn no_call() -> Error {
    Error::new(ErrorCode::NoSuchCall, "this device is in no call")
}

fn not_in_call(id: &str) -> Error {
    Error::new(
        ErrorCode::NoSuchCall,
        format!("this device is not in call {}", quoted(id)),
    )
}

fn view_of(call: &CallInfo, role: CallRole, now: Millis) -> CallView {
    let peers = match role {
        CallRole::Caller => call.invitees.clone(),
        CallRole::Called => vec![call.sponsor.clone()],
    };
    CallView {
        id: call.call_id.clone(),
        room: call.room,
        role,
        sponsor: call.sponsor.clone(),
        peers,
        started_at: now,
        began_at: None,
        group: call.group,
        held: BTreeSet::new(),
        transfer_to: None,
        audience: false,
        with: Vec::new(),
    }
}

/// `elsewhere`: the device of this user that answered or declined, kept
/// only with the reasons that say another device did.
fn canceled(
    view: &CallView,
    me: &UserId,
    reason: CancelReason,
    elsewhere: Option<DeviceView>,
) -> Event {
    let elsewhere = elsewhere.filter(|_| {
        matches!(
            reason,
            CancelReason::AnsweredElsewhere | CancelReason::DeclinedElsewhere
        )
    });
    Event::OnCallCanceled {
        call_id: view.id.clone(),
        room_id: view.room,
        user_id: me.clone(),
        reason,
        call_media_type: AUDIO_CALL,
        call_role: view.role,
        record: view.stopped(reason, elsewhere.clone()),
        elsewhere,
    }
}

/// `ON_CALL_BEGIN`, its record holding the time in the call so far: none,
/// unless this device came back into a call that ran without it.
fn begin_event(view: &CallView, now: Millis) -> Event {
    let so_far = now.saturating_sub(view.began_at.unwrap_or(now)) / 1000;
    Event::OnCallBegin {
        call_id: view.id.clone(),
        room_id: view.room,
        call_media_type: AUDIO_CALL,
        call_role: view.role,
        user_id_list: view.with.clone(),
        record: view.record(CallOutcome::InCall, false, so_far),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(role: CallRole) -> CallView {
        CallView {
            id: "c".into(),
            room: 7,
            role,
            sponsor: "bob".parse().unwrap(),
            peers: vec!["bob".parse().unwrap()],
            started_at: 1_000,
            began_at: None,
            group: false,
            held: BTreeSet::new(),
            transfer_to: None,
            audience: false,
            with: Vec::new(),
        }
    }

    #[test]
    fn missed_means_nobody_of_this_user_answered_or_declined() {
        use CancelReason::*;
        let cases = [
            (CallRole::Called, Timeout, CallOutcome::Missed, true),
            (CallRole::Called, CallerCanceled, CallOutcome::Missed, true),
            (CallRole::Called, SignedOut, CallOutcome::Missed, true),
            (
                CallRole::Called,
                AnsweredElsewhere,
                CallOutcome::Stopped(AnsweredElsewhere),
                false,
            ),
            (
                CallRole::Called,
                Declined,
                CallOutcome::Stopped(Declined),
                false,
            ),
            (
                CallRole::Called,
                Ignored,
                CallOutcome::Stopped(Ignored),
                false,
            ),
            (CallRole::Caller, Busy, CallOutcome::Stopped(Busy), false),
            (
                CallRole::Caller,
                Declined,
                CallOutcome::Stopped(Declined),
                false,
            ),
            (CallRole::Caller, Timeout, CallOutcome::NoAnswer, false),
            (
                CallRole::Caller,
                CallerCanceled,
                CallOutcome::Stopped(CallerCanceled),
                false,
            ),
        ];
        for (role, reason, outcome, missed) in cases {
            let record = view(role).stopped(reason, None);
            assert_eq!(
                (record.outcome, record.missed),
                (outcome, missed),
                "{reason}"
            );
            assert_eq!((record.started_at, record.total_time), (1_000, 0));
        }
    }
}
