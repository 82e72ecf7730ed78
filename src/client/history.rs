//! Call history of one device: a pure tracker that turns call events into
//! finished records, and the device's local SQLite store that keeps them.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::client::event::{CallRole, Event};

/// One finished call, as this device saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub call_id: String,
    #[serde(rename = "roomID")]
    pub room_id: u32,
    pub call_role: CallRole,
    /// The other party: the caller of an incoming call, the callees of an outgoing one.
    #[serde(rename = "userIDList")]
    pub peers: Vec<String>,
    /// Unix milliseconds when it rang or was dialed.
    pub started_at: u64,
    /// `answered`, `answered_elsewhere`, `declined`, `no_answer`, `missed`, ...
    pub outcome: String,
    /// An incoming call that nobody of this user answered or declined.
    pub missed: bool,
    /// Seconds in the call on this device.
    pub total_time: u64,
}

struct Open {
    room_id: u32,
    role: CallRole,
    peers: Vec<String>,
    started_at: u64,
}

/// Follows call events; yields a record when a call is over for this device.
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
                self.open.insert(
                    call_id.clone(),
                    Open {
                        room_id: *room_id,
                        role: CallRole::Called,
                        peers: vec![sponsor.clone()],
                        started_at: now,
                    },
                );
                None
            }
            Event::CallDialing {
                call_id,
                room_id,
                user_id_list,
                ..
            } => {
                self.open.insert(
                    call_id.clone(),
                    Open {
                        room_id: *room_id,
                        role: CallRole::Caller,
                        peers: user_id_list.clone(),
                        started_at: now,
                    },
                );
                None
            }
            Event::OnCallCanceled {
                call_id, reason, ..
            } => {
                let open = self.open.remove(call_id)?;
                let (outcome, missed) = match (open.role, reason.as_str()) {
                    (
                        CallRole::Called,
                        "caller_canceled" | "timeout" | "call_ended" | "signed_out",
                    ) => ("missed", true),
                    (CallRole::Caller, "timeout" | "declined" | "busy") => ("no_answer", false),
                    (_, other) => (other, false),
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
                Some(open.finish(call_id, "answered", false, *total_time))
            }
            _ => None,
        }
    }
}

impl Open {
    fn finish(self, call_id: &str, outcome: &str, missed: bool, total_time: u64) -> CallRecord {
        CallRecord {
            call_id: call_id.to_owned(),
            room_id: self.room_id,
            call_role: self.role,
            peers: self.peers,
            started_at: self.started_at,
            outcome: outcome.to_owned(),
            missed,
            total_time,
        }
    }
}

const MIGRATIONS: &[&str] = &["CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        room INTEGER NOT NULL,
        role TEXT NOT NULL,
        peers TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        missed INTEGER NOT NULL,
        total_time INTEGER NOT NULL
     );
     CREATE INDEX calls_by_time ON calls (started_at);"];

/// The device's local store (`local.sqlite3` in its profile directory).
pub struct LocalStore {
    conn: Connection,
}

impl LocalStore {
    pub fn open(profile_dir: &Path) -> rusqlite::Result<LocalStore> {
        let conn = Connection::open(profile_dir.join("local.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let mut store = LocalStore { conn };
        let version: usize = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = store.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(store)
    }

    pub fn record_call(&self, r: &CallRecord) -> rusqlite::Result<()> {
        let role = match r.call_role {
            CallRole::Caller => "caller",
            CallRole::Called => "called",
        };
        self.conn.execute(
            "INSERT OR REPLACE INTO calls
             (call_id, room, role, peers, started_at, outcome, missed, total_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                r.call_id,
                r.room_id,
                role,
                r.peers.join(","),
                r.started_at as i64,
                r.outcome,
                r.missed,
                r.total_time as i64
            ],
        )?;
        Ok(())
    }

    /// The latest `count` calls, newest first.
    pub fn recent_calls(&self, count: usize) -> rusqlite::Result<Vec<CallRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT call_id, room, role, peers, started_at, outcome, missed, total_time
             FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([count as i64], |row| {
            let peers: String = row.get(3)?;
            Ok(CallRecord {
                call_id: row.get(0)?,
                room_id: row.get(1)?,
                call_role: if row.get::<_, String>(2)? == "caller" {
                    CallRole::Caller
                } else {
                    CallRole::Called
                },
                peers: peers
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
                started_at: row.get::<_, i64>(4)? as u64,
                outcome: row.get(5)?,
                missed: row.get(6)?,
                total_time: row.get::<_, i64>(7)? as u64,
            })
        })?;
        rows.collect()
    }
}

/// The local store on a thread of its own: writes and reads are served in
/// the order they were asked, and never on the async runtime.
#[derive(Clone)]
pub struct StoreHandle {
    tx: std::sync::mpsc::Sender<StoreRequest>,
}

enum StoreRequest {
    Record(CallRecord),
    Recent(
        usize,
        tokio::sync::oneshot::Sender<rusqlite::Result<Vec<CallRecord>>>,
    ),
}

impl StoreHandle {
    pub fn spawn(store: LocalStore) -> StoreHandle {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("local-store".into())
            .spawn(move || {
                for request in rx {
                    match request {
                        StoreRequest::Record(r) => {
                            if let Err(e) = store.record_call(&r) {
                                tracing::error!(error = %e, "cannot record a call in the local store");
                            }
                        }
                        StoreRequest::Recent(count, reply) => {
                            let _ = reply.send(store.recent_calls(count));
                        }
                    }
                }
            })
            .expect("spawn the local store thread");
        StoreHandle { tx }
    }

    pub fn record(&self, r: CallRecord) {
        let _ = self.tx.send(StoreRequest::Record(r));
    }

    pub async fn recent(&self, count: usize) -> rusqlite::Result<Vec<CallRecord>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(StoreRequest::Recent(count, reply));
        answer.await.unwrap_or(Ok(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::event::AUDIO_CALL;

    fn received(id: &str) -> Event {
        Event::OnCallReceived {
            call_id: id.into(),
            room_id: 7,
            sponsor: "bob".into(),
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
            user_id: "alice".into(),
            reason: reason.into(),
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
            assert!(t.on_event(1, &received("c")).is_none());
            let r = t
                .on_event(2, &canceled("c", reason, CallRole::Called))
                .unwrap();
            assert_eq!(
                (r.missed, r.outcome.as_str()),
                (missed, outcome),
                "{reason}"
            );
            assert_eq!((r.peers, r.started_at), (vec!["bob".to_string()], 1));
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
            user_id: "alice".into(),
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
            let store = LocalStore::open(dir.path()).unwrap();
            store.record_call(&answered).unwrap();
            store.record_call(&missed).unwrap();
        }
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(
            store.recent_calls(10).unwrap(),
            vec![missed, answered.clone()]
        );
        assert_eq!(store.recent_calls(1).unwrap().len(), 1);
        assert_eq!(answered.total_time, 42);
    }
}
