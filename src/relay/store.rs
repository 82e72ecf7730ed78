//! The relay's durable state in SQLite: users and their devices.
//!
//! Schema changes are numbered migrations recorded in `PRAGMA user_version`,
//! applied in order when the database is opened.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::ids::{AppId, DeviceId, UserId};
use crate::protocol::{ChatMessage, Entry, EntryKind, SentBy};
use crate::relay::core::{ChatSnapshot, RecentMessage, StoreOp, StoreReply, TimelineRow};

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
    // 2: messages, and each user's timeline of messages, recalls and read
    // marks (and, with no change of schema, read receipts: kind
    // 'read_receipt', `peer` the user who read).
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
    // 3: the device that sent each message, so it knows its own on sync.
    "ALTER TABLE messages ADD COLUMN sender_device TEXT;",
    // 4: retention prunes the timeline by age.
    "CREATE INDEX timeline_by_time ON timeline (at);",
    // 5: the start-up snapshot finds each recent message's place in its
    // sender's timeline; without this it read the sender's whole timeline
    // for each, and one user's 30,000 messages kept the relay from serving
    // for 88 s (docs/benchmarks.md, *Chat*, the restart).
    // msg_id first: with (app, user_id) first SQLite's planner kept to the
    // primary key, which has the same prefix.
    "CREATE INDEX timeline_by_message ON timeline (msg_id);",
];

/// The messages sent since ?1, each with its place in its sender's
/// timeline: read at start, so it must stay an index lookup per message.
const RECENT_MESSAGES: &str = "
    SELECT m.app, m.msg_id, m.sender, m.recipient, m.text, m.server_time,
           m.client_msg_id, m.sender_device, t.seq
    FROM messages m
    LEFT JOIN timeline t ON t.app = m.app AND t.user_id = m.sender
                        AND t.msg_id = m.msg_id AND t.kind = 'message'
    WHERE m.server_time >= ?1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("relay database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("relay database {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "relay database {path} is in use by another relay: two relays on one database \
         number messages over each other and lose them; stop the other one, or give this \
         one a --db of its own"
    )]
    InUse { path: String },
}

pub struct Store {
    conn: Connection,
    /// Held for as long as the store is open: the database is this
    /// relay's alone (`None` in memory).
    _lock: Option<std::fs::File>,
}

impl Store {
    /// Opens (or creates, readable by its owner alone: it holds every
    /// message) the database at `path`, which no other relay may have open.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = || path.display().to_string();
        let file = |source| StoreError::File {
            path: name(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options.open(path).map_err(file)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse { path: name() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(file(e)),
        }
        let sqlite = |source| StoreError::Sqlite {
            path: name(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        let mut store = Store {
            conn,
            _lock: Some(lock),
        };
        store.migrate().map_err(sqlite)?;
        Ok(store)
    }

    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<std::path::PathBuf> {
        (self.conn.path())
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
    }

    /// An in-memory database, for tests of the shell.
    pub fn in_memory() -> Result<Store, rusqlite::Error> {
        let mut store = Store {
            conn: Connection::open_in_memory()?,
            _lock: None,
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
        let mut stmt = self.conn.prepare(RECENT_MESSAGES)?;
        let rows = stmt.query_map([since as i64], |r| {
            let Some(message) = message_of(r, 1)? else {
                return Ok(None);
            };
            Ok(Some(RecentMessage {
                app: r.get(0)?,
                client_msg_id: r.get(6)?,
                recalled: r.get::<_, Option<String>>(4)?.is_none(),
                sender_seq: r.get::<_, Option<i64>>(8)?.map(|s| s as u64),
                message,
            }))
        })?;
        for row in rows {
            if let Some(recent) = row? {
                snapshot.recent.push(recent);
            }
        }
        Ok(snapshot)
    }

    /// Applies a batch of operations in one transaction (one fsync for all
    /// of them), each in a savepoint of its own: an operation that fails is
    /// undone and answered with `Failed`, and the others go on. Returns, for
    /// each operation with a token, that token and its answer; if the commit
    /// itself fails, every one of them is `Failed`.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Vec<(u64, StoreReply)> {
        let failed_all = |why: &rusqlite::Error| {
            ops.iter()
                .filter_map(StoreOp::token)
                .map(|t| (t, StoreReply::Failed(why.to_string())))
                .collect()
        };
        let mut tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return failed_all(&e),
        };
        let mut replies = Vec::new();
        for op in ops {
            let reply = tx.savepoint().and_then(|mut sp| {
                let reply = apply_op(&mut sp, op)?;
                sp.commit()?;
                Ok(reply)
            });
            let reply = reply.unwrap_or_else(|e| {
                tracing::error!(error = %e, op = op.kind(), "relay store operation failed");
                StoreReply::Failed(e.to_string())
            });
            if let Some(token) = op.token() {
                replies.push((token, reply));
            }
        }
        match tx.commit() {
            Ok(()) => replies,
            Err(e) => {
                tracing::error!(error = %e, ops = ops.len(), "relay store commit failed");
                failed_all(&e)
            }
        }
    }

    /// Caps the database file's size: writes beyond it fail as on a full
    /// disk (and are answered as failed; nothing is acknowledged).
    pub fn limit_size(&self, max_bytes: u64) -> rusqlite::Result<()> {
        let page: u64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        self.conn
            .pragma_update(None, "max_page_count", (max_bytes / page).max(1))?;
        Ok(())
    }
}

fn apply_op(tx: &mut rusqlite::Savepoint, op: &StoreOp) -> rusqlite::Result<StoreReply> {
    match op {
        StoreOp::Prune { before } => {
            let before = *before as i64;
            let messages = tx.execute("DELETE FROM messages WHERE server_time < ?1", [before])?;
            // Each timeline keeps its newest row, whatever its age: its seq
            // is where the timeline goes on after a restart.
            let entries = tx.execute(
                "DELETE FROM timeline WHERE at < ?1 AND seq < (
                    SELECT MAX(seq) FROM timeline newest
                    WHERE newest.app = timeline.app AND newest.user_id = timeline.user_id)",
                [before],
            )?;
            let size: i64 = tx.query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )?;
            tracing::info!(
                messages,
                entries,
                size_bytes = size,
                "relay database pruned"
            );
        }
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
            app,
            message: m,
            rows,
            ..
        } => {
            let (device, client_msg_id) = match &m.sent_by {
                Some(by) => (Some(by.device.as_str()), by.client_msg_id.as_str()),
                None => (None, ""),
            };
            tx.execute(
                "INSERT INTO messages (app, msg_id, sender, recipient, text, client_msg_id, server_time, sender_device)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![app, m.msg_id, m.from.as_str(), m.to.as_str(), m.text, client_msg_id, m.server_time as i64, device],
            )?;
            for user in [&m.from, &m.to] {
                tx.execute(
                    "INSERT OR IGNORE INTO users (app, user_id, created_at) VALUES (?1, ?2, ?3)",
                    params![app, user.as_str(), m.server_time as i64],
                )?;
            }
            append_rows(tx, *app, rows)?;
        }
        StoreOp::Recall {
            app, msg_id, rows, ..
        } => {
            tx.execute(
                "UPDATE messages SET text = NULL WHERE app = ?1 AND msg_id = ?2",
                params![app, msg_id],
            )?;
            append_rows(tx, *app, rows)?;
        }
        StoreOp::AppendRows { app, rows, .. } => append_rows(tx, *app, rows)?,
        StoreOp::MarkDelivered { app, user, seqs } => {
            let mut stmt = tx.prepare_cached(
                "UPDATE timeline SET delivered = 1 WHERE app = ?1 AND user_id = ?2 AND seq = ?3",
            )?;
            for seq in seqs {
                stmt.execute(params![app, user.as_str(), *seq as i64])?;
            }
        }
        StoreOp::ReadTimeline {
            app,
            user,
            after,
            since,
            undelivered_only,
            limit,
            ..
        } => {
            let entries = read_timeline(tx, *app, user, *after, *since, *undelivered_only, *limit)?;
            return Ok(StoreReply::Entries(entries));
        }
        StoreOp::ReadHistory {
            app,
            user,
            peer,
            before,
            count,
            max_bytes,
            ..
        } => {
            let mut stmt = tx.prepare_cached(
                "SELECT msg_id, sender, recipient, text, server_time, client_msg_id, sender_device FROM messages
                 WHERE app = ?1 AND server_time < ?4
                   AND ((sender = ?2 AND recipient = ?3) OR (sender = ?3 AND recipient = ?2))
                 ORDER BY server_time DESC, msg_id DESC LIMIT ?5",
            )?;
            let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
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
            let (mut page, mut used) = (Vec::<ChatMessage>::new(), 0);
            for message in rows.filter_map(Result::transpose) {
                let message = message?;
                let size = serde_json::to_string(&message).map_or(0, |s| s.len());
                if page.len() == *count as usize || (used + size > *max_bytes && !page.is_empty()) {
                    return Ok(StoreReply::Messages(
                        whole_milliseconds(page, &message),
                        true,
                    ));
                }
                used += size;
                page.push(message);
            }
            return Ok(StoreReply::Messages(page, false));
        }
    }
    Ok(StoreReply::Done)
}

/// A full page of history (newest first), cut where `next` would have
/// come: the next page is asked for by time alone (`before` the oldest
/// here), so a page that ended inside a millisecond would lose the rest of
/// it. Its messages of `next`'s millisecond go to the next page, unless they
/// are the whole page: a millisecond of more than a page (a flood) is cut
/// where it is.
fn whole_milliseconds(mut page: Vec<ChatMessage>, next: &ChatMessage) -> Vec<ChatMessage> {
    let split = page.partition_point(|m| m.server_time > next.server_time);
    if split > 0 {
        page.truncate(split);
    }
    page
}

fn append_rows(
    tx: &rusqlite::Connection,
    app: AppId,
    rows: &[TimelineRow],
) -> rusqlite::Result<()> {
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
            EntryKind::ReadReceipt { peer, at } => ("read_receipt", None, Some(peer.as_str()), *at),
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
    tx: &rusqlite::Connection,
    app: AppId,
    user: &UserId,
    after: u64,
    since: u64,
    undelivered_only: bool,
    limit: usize,
) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = tx.prepare_cached(
        "SELECT t.seq, t.kind, t.peer, t.at,
                m.msg_id, m.sender, m.recipient, m.text, m.server_time, m.client_msg_id,
                m.sender_device, t.msg_id
         FROM timeline t LEFT JOIN messages m ON m.msg_id = t.msg_id AND t.kind = 'message'
         WHERE t.app = ?1 AND t.user_id = ?2 AND t.seq > ?3
           AND (t.at >= ?4 OR t.kind = 'recall')
           AND (?5 = 0 OR t.delivered = 0)
         ORDER BY t.seq
         LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![
            app,
            user.as_str(),
            after as i64,
            since as i64,
            undelivered_only,
            limit as i64
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
                    msg_id: r.get(11)?,
                    peer,
                }),
                ("read", Some(peer)) => Some(EntryKind::Read {
                    peer,
                    at: r.get::<_, i64>(3)? as u64,
                }),
                ("read_receipt", Some(peer)) => Some(EntryKind::ReadReceipt {
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

/// A message from columns `first..first + 7` (msg_id, sender, recipient,
/// text, server_time, client_msg_id, sender_device); a recalled message has
/// no text.
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
        sent_by: sent_by(
            r.get::<_, Option<String>>(first + 6)?,
            r.get::<_, String>(first + 5)?,
        ),
    }))
}

fn sent_by(device: Option<String>, client_msg_id: String) -> Option<SentBy> {
    let device = DeviceId::parse(&device?).ok()?;
    Some(SentBy {
        device,
        client_msg_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, Platform};

    /// Found by scanning the sender's whole timeline for each message, one
    /// user's 30,000 messages kept a restarted relay from serving for 88 s.
    #[test]
    fn the_start_up_snapshot_finds_each_message_in_its_timeline_by_index() {
        let store = Store::in_memory().unwrap();
        let plan: Vec<String> = (store.conn)
            .prepare(&format!("EXPLAIN QUERY PLAN {RECENT_MESSAGES}"))
            .unwrap()
            .query_map([0], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("SEARCH t USING INDEX timeline_by_message")),
            "{plan:?}"
        );
    }

    /// Pages of long messages stop near `max_bytes`, never inside a
    /// millisecond the next page (asked for by time) would skip the rest of.
    #[test]
    fn history_pages_stop_at_their_bytes_between_milliseconds() {
        let mut store = Store::in_memory().unwrap();
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        // Oldest first: two in ms 10, three in ms 20, one in ms 30.
        let times = [10, 10, 20, 20, 20, 30];
        for (k, server_time) in times.into_iter().enumerate() {
            let message = ChatMessage {
                msg_id: format!("m{k}"),
                from: alice.clone(),
                to: bob.clone(),
                text: format!("{k}{}", "x".repeat(999)),
                server_time,
                sent_by: None,
            };
            let op = StoreOp::AppendMessage {
                token: 1,
                app: 5,
                client_msg_id: format!("c{k}"),
                message,
                rows: Vec::new(),
            };
            assert_eq!(store.apply(&[op]), vec![(1, StoreReply::Done)]);
        }
        let mut page = |before| {
            let op = StoreOp::ReadHistory {
                token: 2,
                app: 5,
                user: bob.clone(),
                peer: alice.clone(),
                before,
                count: 10,
                // Room for about three of them.
                max_bytes: 3_300,
            };
            match &store.apply(&[op])[..] {
                [(2, StoreReply::Messages(page, more))] => (
                    page.iter().map(|m| &m.text[..1]).collect::<String>(),
                    page.last().map(|m| m.server_time),
                    *more,
                ),
                other => panic!("{other:?}"),
            }
        };
        // Newest first: "5" and the three of ms 20 would pass the budget, and
        // cutting inside ms 20 would lose its rest: the page is "5" alone.
        let (first, oldest, more) = page(None);
        assert_eq!((first.as_str(), more), ("5", true));
        let (second, oldest, more) = page(oldest);
        assert_eq!((second.as_str(), more), ("432", true));
        let (third, _, more) = page(oldest);
        assert_eq!((third.as_str(), more), ("10", false));
        // A millisecond holding more than a page (a flood) is cut inside
        // it, or no page could ever move past it.
        for k in 6..10 {
            let message = ChatMessage {
                msg_id: format!("m{k}"),
                from: alice.clone(),
                to: bob.clone(),
                text: format!("{k}{}", "x".repeat(999)),
                server_time: 40,
                sent_by: None,
            };
            let op = StoreOp::AppendMessage {
                token: 1,
                app: 5,
                client_msg_id: format!("c{k}"),
                message,
                rows: Vec::new(),
            };
            store.apply(&[op]);
        }
        let op = StoreOp::ReadHistory {
            token: 2,
            app: 5,
            user: bob.clone(),
            peer: alice.clone(),
            before: None,
            count: 10,
            max_bytes: 3_300,
        };
        match &store.apply(&[op])[..] {
            [(2, StoreReply::Messages(page, true))] => {
                assert_eq!(page.len(), 3, "three of ms 40's four");
                assert!(page.iter().all(|m| m.server_time == 40));
            }
            other => panic!("{other:?}"),
        }
    }

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
            sent_by: Some(SentBy {
                device: DeviceId::parse("laptop").unwrap(),
                client_msg_id: "c1".into(),
            }),
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
            assert_eq!(store.apply(&[op]), vec![(1, StoreReply::Done)]);
        }
        let mut store = Store::open(&path).unwrap();
        let snapshot = store.chat_snapshot(0).unwrap();
        let mut last = snapshot.last_seq.clone();
        last.sort();
        assert_eq!(last, vec![(5, alice.clone(), 7), (5, bob.clone(), 1)]);
        assert_eq!(
            snapshot.recent,
            vec![RecentMessage {
                app: 5,
                message: message.clone(),
                client_msg_id: "c1".into(),
                recalled: false,
                sender_seq: Some(7),
            }]
        );
        let read = StoreOp::ReadTimeline {
            token: 2,
            app: 5,
            user: bob.clone(),
            after: 0,
            since: 0,
            undelivered_only: false,
            limit: 100,
        };
        assert_eq!(
            store.apply(&[read]),
            vec![(2, StoreReply::Entries(vec![row(&bob, 1).entry]))]
        );
        let page = StoreOp::ReadHistory {
            token: 3,
            app: 5,
            user: bob.clone(),
            peer: alice.clone(),
            before: None,
            count: 10,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            store.apply(&[page]),
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
            store.apply(&[login.clone(), login]);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.users().unwrap(), vec![(5, alice)]);
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    use crate::relay::core::TimelineRow;

    fn append(token: u64, msg_id: &str, seq: u64, text: &str) -> StoreOp {
        let alice = UserId::parse("alice").unwrap();
        let message = ChatMessage {
            msg_id: msg_id.into(),
            from: alice.clone(),
            to: UserId::parse("bob").unwrap(),
            text: text.into(),
            server_time: 1_000,
            sent_by: None,
        };
        StoreOp::AppendMessage {
            token,
            app: 5,
            message: message.clone(),
            client_msg_id: format!("c-{msg_id}"),
            rows: vec![TimelineRow {
                user: alice,
                entry: Entry {
                    seq,
                    kind: EntryKind::Message { message },
                },
                delivered: false,
            }],
        }
    }

    fn failed(reply: &StoreReply) -> bool {
        matches!(reply, StoreReply::Failed(_))
    }

    /// The seqs of alice's timeline in app 5, as a sync would read them.
    fn alice_seqs(store: &mut Store) -> Vec<u64> {
        let read = StoreOp::ReadTimeline {
            token: 4,
            app: 5,
            user: UserId::parse("alice").unwrap(),
            after: 0,
            since: 0,
            undelivered_only: false,
            limit: 100,
        };
        match &store.apply(&[read])[..] {
            [(4, StoreReply::Entries(entries))] => entries.iter().map(|e| e.seq).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_bad_operation_fails_alone() {
        let mut store = Store::in_memory().unwrap();
        // The second reuses a msg_id: it breaks a key, the others do not.
        let replies = store.apply(&[
            append(1, "m1", 1, "a"),
            append(2, "m1", 2, "b"),
            append(3, "m3", 3, "c"),
        ]);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0], (1, StoreReply::Done));
        assert!(failed(&replies[1].1), "{replies:?}");
        assert_eq!(replies[2], (3, StoreReply::Done));
        assert_eq!(
            alice_seqs(&mut store),
            [1, 3],
            "the failed write left nothing behind"
        );
    }

    #[test]
    fn retention_forgets_old_messages_and_keeps_each_timeline_going() {
        let mut store = Store::in_memory().unwrap();
        let at = |op: StoreOp, time: u64| match op {
            StoreOp::AppendMessage {
                token,
                app,
                mut message,
                client_msg_id,
                mut rows,
            } => {
                message.server_time = time;
                rows[0].entry.kind = EntryKind::Message {
                    message: message.clone(),
                };
                StoreOp::AppendMessage {
                    token,
                    app,
                    message,
                    client_msg_id,
                    rows,
                }
            }
            other => other,
        };
        store.apply(&[
            at(append(1, "old1", 1, "a"), 1_000),
            at(append(2, "old2", 2, "b"), 2_000),
            at(append(3, "new", 3, "c"), 9_000),
        ]);
        store.apply(&[StoreOp::Prune { before: 5_000 }]);
        assert_eq!(alice_seqs(&mut store), [3]);
        // Everything old gone, the newest row kept even once it is old.
        store.apply(&[StoreOp::Prune { before: 10_000 }]);
        let snapshot = store.chat_snapshot(0).unwrap();
        assert!(snapshot.recent.is_empty());
        assert_eq!(snapshot.last_seq, [(5, UserId::parse("alice").unwrap(), 3)]);
    }

    /// Two relays on one database numbered messages over each other and
    /// lost them: the second is refused while the first has it open, and
    /// nobody else may read the messages in it.
    #[test]
    fn a_database_is_one_relays_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.sqlite3");
        let first = Store::open(&path).unwrap();
        let refused = Store::open(&path).err().expect("a second open is refused");
        assert!(matches!(refused, StoreError::InUse { .. }), "{refused}");
        assert!(refused.to_string().contains("in use by another relay"));
        drop(first);
        Store::open(&path).expect("free again once the first closed it");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_full_disk_fails_writes_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("r.db")).unwrap();
        store.limit_size(64 * 1024).unwrap();
        let big = "x".repeat(16 * 1024);
        let mut failures = 0;
        for i in 1..=20u64 {
            let reply = store.apply(&[append(i, &format!("m{i}"), i, &big)]);
            if failed(&reply[0].1) {
                failures += 1;
            }
        }
        assert!(failures > 0, "a 64 KiB database took 320 KiB");
        // Room again: writes succeed.
        store.limit_size(64 * 1024 * 1024).unwrap();
        let reply = store.apply(&[append(99, "m99", 99, "small")]);
        assert_eq!(reply, vec![(99, StoreReply::Done)]);
    }
}
