//! Call history of one device: a pure tracker that turns call events into
//! records (kept by the local store). A call is written when it starts
//! ringing, dialing or connecting, and again when it ends, so that a process
//! that dies in the middle still leaves it in the history (`interrupted`).

use std::collections::HashMap;

use crate::client::event::Event;
use crate::client::records::{CallOutcome, CallRecord, CallRole};
use crate::ids::UserId;
use crate::protocol::{CancelReason, RoomId};

#[derive(Clone)]
struct Open {
    room_id: RoomId,
    role: CallRole,
    peers: Vec<UserId>,
    started_at: u64,
}

/// Follows call events; yields a record when a call starts, connects, or is
/// over for this device.
#[derive(Default)]
pub struct HistoryTracker {
    open: HashMap<String, Open>,
}

impl HistoryTracker {
    pub fn on_event(&mut self, now: u64, event: &Event) -> Option<CallRecord> {
        match event {
            Event::OnCallReceived {
                call_id,
                room_id,
                sponsor,
                ..
            } => {
                let open = Open {
                    room_id: *room_id,
                    role: CallRole::Called,
                    peers: vec![sponsor.clone()],
                    started_at: now,
                };
                self.open.insert(call_id.clone(), open.clone());
                Some(open.finish(call_id, CallOutcome::Ringing, false, 0))
            }
            Event::CallDialing {
                call_id,
                room_id,
                user_id_list,
                ..
            } => {
                let open = Open {
                    room_id: *room_id,
                    role: CallRole::Caller,
                    peers: user_id_list.clone(),
                    started_at: now,
                };
                self.open.insert(call_id.clone(), open.clone());
                Some(open.finish(call_id, CallOutcome::Dialing, false, 0))
            }
            Event::OnCallBegin {
                call_id,
                room_id,
                call_role,
                ..
            } => {
                // A call joined by room id, or taken up again after a
                // restart, was never rung or dialed here.
                let open = self.open.entry(call_id.clone()).or_insert(Open {
                    room_id: *room_id,
                    role: *call_role,
                    peers: Vec::new(),
                    started_at: now,
                });
                Some(open.clone().finish(call_id, CallOutcome::InCall, false, 0))
            }
            Event::OnCallCanceled {
                call_id, reason, ..
            } => {
                let open = self.open.remove(call_id)?;
                use CancelReason::*;
                let (outcome, missed) = match (open.role, *reason) {
                    (CallRole::Called, CallerCanceled | Timeout | CallEnded | SignedOut) => {
                        (CallOutcome::Missed, true)
                    }
                    (CallRole::Caller, Timeout | Declined | Busy) => (CallOutcome::NoAnswer, false),
                    (_, other) => (CallOutcome::Stopped(other), false),
                };
                Some(open.finish(call_id, outcome, missed, 0))
            }
            Event::CallingEnd {
                call_id,
                room_id,
                total_time,
                call_role,
                ..
            } => {
                // A call joined by room id was never rung or dialed here.
                let open = self.open.remove(call_id).unwrap_or(Open {
                    room_id: *room_id,
                    role: *call_role,
                    peers: Vec::new(),
                    started_at: now.saturating_sub(total_time * 1000),
                });
                Some(open.finish(call_id, CallOutcome::Answered, false, *total_time))
            }
            _ => None,
        }
    }
}

impl Open {
    fn finish(
        self,
        call_id: &str,
        outcome: CallOutcome,
        missed: bool,
        total_time: u64,
    ) -> CallRecord {
        CallRecord {
            call_id: call_id.to_owned(),
            room_id: self.room_id,
            call_role: self.role,
            peers: self.peers,
            started_at: self.started_at,
            outcome,
            missed,
            total_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::event::AUDIO_CALL;
    use crate::client::local_store::LocalStore;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn received(id: &str) -> Event {
        Event::OnCallReceived {
            call_id: id.into(),
            room_id: 7,
            sponsor: "bob".parse().unwrap(),
            user_id_list: vec![],
            is_from_group: false,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
        }
    }

    fn canceled(id: &str, reason: &str, role: CallRole) -> Event {
        Event::OnCallCanceled {
            call_id: id.into(),
            room_id: 7,
            user_id: "alice".parse().unwrap(),
            reason: CancelReason::parse(reason).unwrap(),
            call_media_type: AUDIO_CALL,
            call_role: role,
        }
    }

    #[test]
    fn missed_means_nobody_here_answered_or_declined() {
        let cases = [
            ("timeout", true, "missed"),
            ("caller_canceled", true, "missed"),
            ("answered_elsewhere", false, "answered_elsewhere"),
            ("declined", false, "declined"),
            ("declined_elsewhere", false, "declined_elsewhere"),
            ("ignored", false, "ignored"),
        ];
        for (reason, missed, outcome) in cases {
            let mut t = HistoryTracker::default();
            assert_eq!(
                t.on_event(1, &received("c")).unwrap().outcome,
                CallOutcome::Ringing
            );
            let r = t
                .on_event(2, &canceled("c", reason, CallRole::Called))
                .unwrap();
            assert_eq!(
                (r.missed, r.outcome.as_str()),
                (missed, outcome),
                "{reason}"
            );
            assert_eq!((r.peers, r.started_at), (vec![user("bob")], 1));
        }
    }

    #[test]
    fn answered_calls_keep_their_duration_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = HistoryTracker::default();
        t.on_event(1_000, &received("c1"));
        let end = Event::CallingEnd {
            call_id: "c1".into(),
            room_id: 7,
            user_id: "alice".parse().unwrap(),
            total_time: 42,
            call_media_type: AUDIO_CALL,
            call_role: CallRole::Called,
        };
        let answered = t.on_event(60_000, &end).unwrap();
        t.on_event(70_000, &received("c2"));
        let missed = t
            .on_event(71_000, &canceled("c2", "timeout", CallRole::Called))
            .unwrap();
        {
            let store = LocalStore::open(dir.path(), &user("alice")).unwrap();
            store.record_call(&answered).unwrap();
            store.record_call(&missed).unwrap();
        }
        let store = LocalStore::open(dir.path(), &user("alice")).unwrap();
        assert_eq!(
            store.recent_calls(10).unwrap(),
            vec![missed, answered.clone()]
        );
        assert_eq!(store.recent_calls(1).unwrap().len(), 1);
        assert_eq!(answered.total_time, 42);
    }
}
