//! The relay's durable state in SQLite: users and their devices.
//!
//! Schema changes are numbered migrations recorded in `PRAGMA user_version`,
//! applied in order when the database is opened.

use std::path::Path;

use rusqlite::{Connection, Transaction, params};

use crate::ids::{AppId, UserId};
use crate::protocol::{ChatMessage, Entry, EntryKind};
use crate::relay::core::{ChatSnapshot, StoreOp, StoreReply, TimelineRow};

const MIGRATIONS: &[&str] = &[
    // 1: users and the devices they logged in from.
    "CREATE TABLE users (
        app INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (app, user_id)
     ) WITHOUT ROWID;
     CREATE TABLE devices (
        app INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        last_login INTEGER NOT NULL,
        PRIMARY KEY (app, user_id, device_id)
     ) WITHOUT ROWID;",
    // 2: messages, and each user's timeline of messages, recalls and read marks.
    "CREATE TABLE messages (
        app INTEGER NOT NULL,
        msg_id TEXT NOT NULL PRIMARY KEY,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        text TEXT,
        client_msg_id TEXT NOT NULL,
        server_time INTEGER NOT NULL
     );
     CREATE INDEX messages_by_time ON messages (server_time);
     CREATE TABLE timeline (
        app INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        msg_id TEXT,
        peer TEXT,
        at INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app, user_id, seq)
     ) WITHOUT ROWID;",
];

#[derive(Debug, thiserror::Error)]
#[error("relay database {path}: {source}")]
pub struct StoreError {
    path: String,
    source: rusqlite::Error,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let wrap = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        let mut store = Store { conn };
        store.migrate().map_err(wrap)?;
        Ok(store)
    }

    /// An in-memory database, for tests of the shell.
    pub fn in_memory() -> Result<Store, rusqlite::Error> {
        let mut store = Store {
            conn: Connection::open_in_memory()?,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> rusqlite::Result<()> {
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        // An acknowledged message must survive a crash of the relay or the machine.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let version: usize = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Every user that ever logged in.
    pub fn users(&self) -> rusqlite::Result<Vec<(AppId, UserId)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT app, user_id FROM users ORDER BY app, user_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, AppId>(0)?, r.get::<_, String>(1)?)))?;
        let mut users = Vec::new();
        for row in rows {
            let (app, user) = row?;
            // Rows were validated on the way in; skip any that a hand edit broke.
            if let Ok(user) = UserId::parse(&user) {
                users.push((app, user));
            }
        }
        Ok(users)
    }

    /// What the chat core needs at start: each timeline's last seq, and the
    /// messages sent since `since` (still recallable or resendable).
    pub fn chat_snapshot(&self, since: u64) -> rusqlite::Result<ChatSnapshot> {
        let mut snapshot = ChatSnapshot::default();
        let mut stmt = self
            .conn
            .prepare("SELECT app, user_id, MAX(seq) FROM timeline GROUP BY app, user_id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, AppId>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (app, user, seq) = row?;
            if let Ok(user) = UserId::parse(&user) {
                snapshot.last_seq.push((app, user, seq as u64));
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT app, msg_id, sender, recipient, text, server_time, client_msg_id
             FROM messages WHERE server_time >= ?1",
        )?;
        let rows = stmt.query_map([since as i64], |r| {
            Ok((
                r.get::<_, AppId>(0)?,
                message_of(r, 1)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(4)?.is_none(),
            ))
        })?;
        for row in rows {
            let (app, message, client_msg_id, recalled) = row?;
            if let Some(message) = message {
                snapshot
                    .recent
                    .push((app, message, client_msg_id, recalled));
            }
        }
        Ok(snapshot)
    }

    /// Applies a batch of operations in one transaction; returns, for each
    /// operation with a token, that token and what it read.
    pub fn apply(&mut self, ops: &[StoreOp]) -> rusqlite::Result<Vec<(u64, StoreReply)>> {
        let tx = self.conn.transaction()?;
        let mut replies = Vec::new();
        for op in ops {
            match op {
                StoreOp::RecordLogin {
                    app,
                    user,
                    device,
                    platform,
                    at,
                } => {
                    let at = *at as i64;
                    tx.execute(
                        "INSERT OR IGNORE INTO users (app, user_id, created_at) VALUES (?1, ?2, ?3)",
                        params![app, user.as_str(), at],
                    )?;
                    tx.execute(
                        "INSERT INTO devices (app, user_id, device_id, platform, last_login)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (app, user_id, device_id)
                         DO UPDATE SET platform = excluded.platform, last_login = excluded.last_login",
                        params![app, user.as_str(), device.as_str(), platform.as_str(), at],
                    )?;
                }
                StoreOp::AppendMessage {
                    token,
                    app,
                    message: m,
                    client_msg_id,
                    rows,
                } => {
                    tx.execute(
                        "INSERT INTO messages (app, msg_id, sender, recipient, text, client_msg_id, server_time)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![app, m.msg_id, m.from.as_str(), m.to.as_str(), m.text, client_msg_id, m.server_time as i64],
                    )?;
                    for user in [&m.from, &m.to] {
                        tx.execute(
                            "INSERT OR IGNORE INTO users (app, user_id, created_at) VALUES (?1, ?2, ?3)",
                            params![app, user.as_str(), m.server_time as i64],
                        )?;
                    }
                    append_rows(&tx, *app, rows)?;
                    replies.push((*token, StoreReply::Done));
                }
                StoreOp::Recall {
                    token,
                    app,
                    msg_id,
                    rows,
                } => {
                    tx.execute(
                        "UPDATE messages SET text = NULL WHERE app = ?1 AND msg_id = ?2",
                        params![app, msg_id],
                    )?;
                    append_rows(&tx, *app, rows)?;
                    replies.push((*token, StoreReply::Done));
                }
                StoreOp::AppendRows { token, app, rows } => {
                    append_rows(&tx, *app, rows)?;
                    replies.push((*token, StoreReply::Done));
                }
                StoreOp::MarkDelivered { app, user, seqs } => {
                    let mut stmt = tx.prepare_cached(
                        "UPDATE timeline SET delivered = 1 WHERE app = ?1 AND user_id = ?2 AND seq = ?3",
                    )?;
                    for seq in seqs {
                        stmt.execute(params![app, user.as_str(), *seq as i64])?;
                    }
                }
                StoreOp::ReadTimeline {
                    token,
                    app,
                    user,
                    after,
                    since,
                    undelivered_only,
                } => {
                    let entries =
                        read_timeline(&tx, *app, user, *after, *since, *undelivered_only)?;
                    replies.push((*token, StoreReply::Entries(entries)));
                }
                StoreOp::ReadHistory {
                    token,
                    app,
                    user,
                    peer,
                    before,
                    count,
                } => {
                    let mut stmt = tx.prepare_cached(
                        "SELECT msg_id, sender, recipient, text, server_time FROM messages
                         WHERE app = ?1 AND server_time < ?4
                           AND ((sender = ?2 AND recipient = ?3) OR (sender = ?3 AND recipient = ?2))
                         ORDER BY server_time DESC, msg_id DESC LIMIT ?5",
                    )?;
                    let before = before.map_or(i64::MAX, |b| b as i64);
                    let rows = stmt.query_map(
                        params![
                            app,
                            user.as_str(),
                            peer.as_str(),
                            before,
                            i64::from(*count) + 1
                        ],
                        |r| message_of(r, 0),
                    )?;
                    let mut page: Vec<ChatMessage> = rows
                        .filter_map(Result::transpose)
                        .collect::<Result<_, _>>()?;
                    let more = page.len() > *count as usize;
                    page.truncate(*count as usize);
                    replies.push((*token, StoreReply::Messages(page, more)));
                }
            }
        }
        tx.commit()?;
        Ok(replies)
    }
}

fn append_rows(tx: &Transaction, app: AppId, rows: &[TimelineRow]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO timeline (app, user_id, seq, kind, msg_id, peer, at, delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for row in rows {
        let (kind, msg_id, peer, at) = match &row.entry.kind {
            EntryKind::Message { message } => (
                "message",
                Some(message.msg_id.as_str()),
                None,
                message.server_time,
            ),
            EntryKind::Recall { msg_id, peer } => {
                ("recall", Some(msg_id.as_str()), Some(peer.as_str()), 0)
            }
            EntryKind::Read { peer, at } => ("read", None, Some(peer.as_str()), *at),
        };
        stmt.execute(params![
            app,
            row.user.as_str(),
            row.entry.seq as i64,
            kind,
            msg_id,
            peer,
            at as i64,
            row.delivered
        ])?;
    }
    Ok(())
}

fn read_timeline(
    tx: &Transaction,
    app: AppId,
    user: &UserId,
    after: u64,
    since: u64,
    undelivered_only: bool,
) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = tx.prepare_cached(
        "SELECT t.seq, t.kind, t.peer, t.at,
                m.msg_id, m.sender, m.recipient, m.text, m.server_time, t.msg_id
         FROM timeline t LEFT JOIN messages m ON m.msg_id = t.msg_id AND t.kind = 'message'
         WHERE t.app = ?1 AND t.user_id = ?2 AND t.seq > ?3
           AND (t.at >= ?4 OR t.kind = 'recall')
           AND (?5 = 0 OR t.delivered = 0)
         ORDER BY t.seq",
    )?;
    let rows = stmt.query_map(
        params![
            app,
            user.as_str(),
            after as i64,
            since as i64,
            undelivered_only
        ],
        |r| {
            let seq = r.get::<_, i64>(0)? as u64;
            let kind: String = r.get(1)?;
            let peer = r
                .get::<_, Option<String>>(2)?
                .and_then(|p| UserId::parse(&p).ok());
            let kind = match (kind.as_str(), peer) {
                ("message", _) => message_of(r, 4)?.map(|message| EntryKind::Message { message }),
                ("recall", Some(peer)) => Some(EntryKind::Recall {
                    msg_id: r.get(9)?,
                    peer,
                }),
                ("read", Some(peer)) => Some(EntryKind::Read {
                    peer,
                    at: r.get::<_, i64>(3)? as u64,
                }),
                _ => None,
            };
            Ok(kind.map(|kind| Entry { seq, kind }))
        },
    )?;
    rows.filter_map(Result::transpose).collect()
}

/// A message from columns `first..first + 5` (msg_id, sender, recipient,
/// text, server_time); a recalled message has no text.
fn message_of(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Option<ChatMessage>> {
    let Some(msg_id) = r.get::<_, Option<String>>(first)? else {
        return Ok(None);
    };
    let from = UserId::parse(&r.get::<_, String>(first + 1)?).ok();
    let to = UserId::parse(&r.get::<_, String>(first + 2)?).ok();
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(None);
    };
    Ok(Some(ChatMessage {
        msg_id,
        from,
        to,
        text: r.get::<_, Option<String>>(first + 3)?.unwrap_or_default(),
        server_time: r.get::<_, i64>(first + 4)? as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, Platform};

    #[test]
    fn messages_and_timelines_come_back_after_reopen() {
        use crate::protocol::{ChatMessage, Entry, EntryKind};
        use crate::relay::core::TimelineRow;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sqlite3");
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let message = ChatMessage {
            msg_id: "m1".into(),
            from: alice.clone(),
            to: bob.clone(),
            text: "kept".into(),
            server_time: 1_000,
        };
        let row = |user: &UserId, seq| TimelineRow {
            user: user.clone(),
            entry: Entry {
                seq,
                kind: EntryKind::Message {
                    message: message.clone(),
                },
            },
            delivered: false,
        };
        {
            let mut store = Store::open(&path).unwrap();
            let op = StoreOp::AppendMessage {
                token: 1,
                app: 5,
                message: message.clone(),
                client_msg_id: "c1".into(),
                rows: vec![row(&bob, 1), row(&alice, 7)],
            };
            assert_eq!(store.apply(&[op]).unwrap(), vec![(1, StoreReply::Done)]);
        }
        let mut store = Store::open(&path).unwrap();
        let snapshot = store.chat_snapshot(0).unwrap();
        let mut last = snapshot.last_seq.clone();
        last.sort();
        assert_eq!(last, vec![(5, alice.clone(), 7), (5, bob.clone(), 1)]);
        assert_eq!(
            snapshot.recent,
            vec![(5, message.clone(), "c1".to_string(), false)]
        );
        let read = StoreOp::ReadTimeline {
            token: 2,
            app: 5,
            user: bob.clone(),
            after: 0,
            since: 0,
            undelivered_only: false,
        };
        assert_eq!(
            store.apply(&[read]).unwrap(),
            vec![(2, StoreReply::Entries(vec![row(&bob, 1).entry]))]
        );
        let page = StoreOp::ReadHistory {
            token: 3,
            app: 5,
            user: bob.clone(),
            peer: alice.clone(),
            before: None,
            count: 10,
        };
        assert_eq!(
            store.apply(&[page]).unwrap(),
            vec![(3, StoreReply::Messages(vec![message.clone()], false))]
        );
    }

    #[test]
    fn logins_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sqlite3");
        let alice = UserId::parse("alice").unwrap();
        {
            let mut store = Store::open(&path).unwrap();
            let login = StoreOp::RecordLogin {
                app: 5,
                user: alice.clone(),
                device: DeviceId::parse("d1").unwrap(),
                platform: Platform::terminal(),
                at: 1,
            };
            store.apply(&[login.clone(), login]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.users().unwrap(), vec![(5, alice)]);
    }
}
