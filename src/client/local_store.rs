//! A device's local store: `local.sqlite3` in its profile directory. It
//! holds the device's call history, its copy of the conversations (with
//! this user's and the other users' read marks), and the last timeline seq
//! it applied, so history shows without asking the relay; deleting it is a
//! reinstall. A `termphone load` device keeps the same store in memory
//! instead (`LocalStore::in_memory`): it writes no files, the store goes
//! with the device, and its database opens only with its first row.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};

use crate::client::engine::{ChatCommand, Command};
use crate::client::event::Event;
use crate::client::records::{
    CallOutcome, CallRecord, CallRole, Conversation, DeviceView, StoredMessage,
};
use crate::ids::{DeviceId, Platform, UserId};
use crate::protocol::KickReason;
use rusqlite::{Connection, OptionalExtension, params};

const MIGRATIONS: &[&str] = &[
    // 1: call history.
    "CREATE TABLE calls (
        call_id TEXT PRIMARY KEY,
        room INTEGER NOT NULL,
        role TEXT NOT NULL,
        peers TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        missed INTEGER NOT NULL,
        total_time INTEGER NOT NULL
     );
     CREATE INDEX calls_by_time ON calls (started_at);",
    // 2: messages, read marks and the sync position.
    "CREATE TABLE messages (
        msg_id TEXT PRIMARY KEY,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        text TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        recalled INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX messages_by_peer ON messages (peer, timestamp);
     CREATE TABLE read_marks (peer TEXT PRIMARY KEY, at INTEGER NOT NULL);
     CREATE TABLE sync (id INTEGER PRIMARY KEY CHECK (id = 1), high_water INTEGER NOT NULL);",
    // 3: how far the other user of each conversation has read (its latest
    // read receipt), so sent messages show as read after a restart.
    "CREATE TABLE peer_read_marks (peer TEXT PRIMARY KEY, at INTEGER NOT NULL);",
    // 4: the other device of this user that answered or declined a call.
    "ALTER TABLE calls ADD COLUMN elsewhere_device TEXT;
     ALTER TABLE calls ADD COLUMN elsewhere_platform TEXT;",
];

pub struct LocalStore {
    rows: Rows,
    me: UserId,
    /// Made by `in_memory`: served on the thread all such stores share.
    in_memory: bool,
    /// The first timeline position an event could not be kept at (a full
    /// disk): the sync position stays below it, so that the device, started
    /// again, is sent it again rather than never.
    unkept: Option<u64>,
}

/// Where a store's rows are.
enum Rows {
    Db(Connection),
    /// An in-memory store that has kept nothing but its sync position: its
    /// database (~28 KiB even empty) opens with the first row, so that an
    /// idle `termphone load` device, which only ever keeps where its sync
    /// stands, costs none (docs/benchmarks.md, *Load*).
    NotYet {
        high_water: u64,
    },
}

impl LocalStore {
    /// Opens (or creates) the store of user `me` in `profile_dir`.
    pub fn open(profile_dir: &Path, me: &UserId) -> rusqlite::Result<LocalStore> {
        let mut conn = Connection::open(profile_dir.join("local.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Durable across a crash of termphone, not of the machine: the last
        // commits may go with a power cut, and what they held (events, the
        // sync position) the relay gives again on the next catch-up. Saves
        // an fsync per event, which a load run of thousands of devices
        // paid ~50 times an iteration (docs/load.md).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A device reads a page of a conversation at a time: SQLite's
        // default 2 MB page cache would otherwise fill with a long
        // history's pages and stay, and the TUI's memory would grow with
        // how much was ever said (docs/benchmarks.md).
        conn.pragma_update(None, "cache_size", -256)?;
        migrate(&mut conn)?;
        Ok(LocalStore {
            rows: Rows::Db(conn),
            me: me.clone(),
            in_memory: false,
            unkept: None,
        })
    }

    /// A new, empty store of user `me` that lives in memory and goes with
    /// it: a `termphone load` device's, thousands in one process. Its
    /// database opens when it first has a row to keep.
    pub fn in_memory(me: &UserId) -> LocalStore {
        LocalStore {
            rows: Rows::NotYet { high_water: 0 },
            me: me.clone(),
            in_memory: true,
            unkept: None,
        }
    }

    /// The database, if this store has one yet.
    fn db(&self) -> Option<&Connection> {
        match &self.rows {
            Rows::Db(conn) => Some(conn),
            Rows::NotYet { .. } => None,
        }
    }

    /// The database, opened now if this store had none yet.
    fn db_for_rows(&mut self) -> rusqlite::Result<&Connection> {
        if let Rows::NotYet { high_water } = self.rows {
            let conn = open_in_memory()?;
            if high_water > 0 {
                set_high_water(&conn, high_water)?;
            }
            self.rows = Rows::Db(conn);
        }
        match &self.rows {
            Rows::Db(conn) => Ok(conn),
            Rows::NotYet { .. } => unreachable!("opened above"),
        }
    }

    /// The last timeline seq this device applied (0 for a new device).
    pub fn high_water(&self) -> rusqlite::Result<u64> {
        let conn = match &self.rows {
            Rows::Db(conn) => conn,
            Rows::NotYet { high_water } => return Ok(*high_water),
        };
        let hw: Option<i64> = conn
            .query_row("SELECT high_water FROM sync WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        Ok(hw.unwrap_or(0) as u64)
    }

    /// The relay's word after a sync (lower only when its database is not
    /// the one this device synced with before).
    fn set_high_water(&mut self, seq: u64) -> rusqlite::Result<()> {
        let seq = self.below_unkept(seq);
        match &mut self.rows {
            Rows::Db(conn) => set_high_water(conn, seq),
            Rows::NotYet { high_water } => {
                *high_water = seq;
                Ok(())
            }
        }
    }

    fn advance(&mut self, seq: u64) -> rusqlite::Result<()> {
        let seq = self.below_unkept(seq);
        self.db_for_rows()?.execute(
            "INSERT INTO sync (id, high_water) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET high_water = MAX(high_water, excluded.high_water)",
            [seq as i64],
        )?;
        Ok(())
    }

    #[cfg(test)]
    fn has_db(&self) -> bool {
        self.db().is_some()
    }

    /// Keeps what a chat event says; other events are ignored.
    /// Keeps what a chat event says; what could not be kept holds the sync
    /// position back from then on.
    pub fn apply(&mut self, event: &Event) -> rusqlite::Result<()> {
        let kept = self.write(event);
        if kept.is_err()
            && let Some(seq) = timeline_position(event)
        {
            self.unkept = Some(self.unkept.map_or(seq, |u| u.min(seq)));
        }
        kept
    }

    /// `seq`, or the last position before what could not be kept.
    fn below_unkept(&self, seq: u64) -> u64 {
        self.unkept.map_or(seq, |u| seq.min(u.saturating_sub(1)))
    }

    fn write(&mut self, event: &Event) -> rusqlite::Result<()> {
        match event {
            Event::MessageSent {
                msg_id,
                to,
                text,
                timestamp,
                seq,
                ..
            } => {
                let me = self.me.clone();
                self.insert_message(msg_id, &me, to, text, *timestamp)?;
                if let Some(seq) = seq {
                    self.advance(*seq)?;
                }
            }
            Event::MessageReceived {
                msg_id,
                from,
                to,
                text,
                timestamp,
                seq,
                ..
            } => {
                self.insert_message(msg_id, from, to, text, *timestamp)?;
                self.advance(*seq)?;
            }
            Event::MessageRecalled { msg_id, seq, .. } => {
                self.db_for_rows()?.execute(
                    "UPDATE messages SET recalled = 1, text = '' WHERE msg_id = ?1",
                    [msg_id],
                )?;
                self.advance(*seq)?;
            }
            // This user's read mark, and the peer's receipt.
            Event::ConversationRead {
                user_id,
                timestamp,
                seq,
            } => self.mark("read_marks", user_id, *timestamp, *seq)?,
            Event::C2cReadReceipt {
                user_id,
                timestamp,
                seq,
            } => self.mark("peer_read_marks", user_id, *timestamp, *seq)?,
            Event::Synced { seq } => self.set_high_water(*seq)?,
            // A page fetched from the relay: kept, so it is local next time.
            Event::Messages { messages, .. } => {
                for m in messages {
                    self.insert_message(&m.msg_id, &m.from, &m.to, &m.text, m.timestamp)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Moves a conversation's read mark in `table` forward (an older one
    /// never takes it back), at timeline position `seq`.
    fn mark(
        &mut self,
        table: &'static str,
        peer: &UserId,
        at: u64,
        seq: u64,
    ) -> rusqlite::Result<()> {
        self.db_for_rows()?.execute(
            &format!(
                "INSERT INTO {table} (peer, at) VALUES (?1, ?2)
                 ON CONFLICT (peer) DO UPDATE SET at = MAX(at, excluded.at)"
            ),
            params![peer.as_str(), at as i64],
        )?;
        self.advance(seq)
    }

    fn insert_message(
        &mut self,
        msg_id: &str,
        from: &UserId,
        to: &UserId,
        text: &str,
        timestamp: u64,
    ) -> rusqlite::Result<()> {
        let peer = if from == &self.me { to } else { from };
        // A message recalled before this device saw it arrives without text.
        let recalled = text.is_empty();
        self.db_for_rows()?.execute(
            "INSERT OR IGNORE INTO messages (msg_id, peer, sender, recipient, text, timestamp, recalled)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                msg_id,
                peer.as_str(),
                from.as_str(),
                to.as_str(),
                text,
                timestamp as i64,
                recalled
            ],
        )?;
        Ok(())
    }

    /// How far `peer` has read the conversation with this user (unix ms),
    /// by its latest read receipt; `None` before any came.
    pub fn peer_read(&self, peer: &UserId) -> rusqlite::Result<Option<u64>> {
        let Some(db) = self.db() else {
            return Ok(None);
        };
        let at: Option<i64> = db
            .query_row(
                "SELECT at FROM peer_read_marks WHERE peer = ?1",
                [peer.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(at.map(|at| at as u64))
    }

    /// The conversations, most recent first, with their unread counts and
    /// how far the other user has read.
    pub fn conversations(&self) -> rusqlite::Result<Vec<Conversation>> {
        let Some(db) = self.db() else {
            return Ok(Vec::new());
        };
        let mut stmt = db.prepare(
            "SELECT m.peer, m.msg_id, m.sender, m.recipient, m.text, m.timestamp, m.recalled,
                    (SELECT COUNT(*) FROM messages u
                      WHERE u.peer = m.peer AND u.sender = m.peer AND u.recalled = 0
                        AND u.timestamp > COALESCE((SELECT at FROM read_marks r WHERE r.peer = m.peer), 0)),
                    (SELECT at FROM peer_read_marks p WHERE p.peer = m.peer)
             FROM messages m
             WHERE m.rowid = (SELECT rowid FROM messages l WHERE l.peer = m.peer
                              ORDER BY l.timestamp DESC, l.rowid DESC LIMIT 1)
             ORDER BY m.timestamp DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Conversation {
                user_id: user_at(r, 0)?,
                last_message: message_from(r, 1)?,
                unread_count: r.get::<_, i64>(7)? as u64,
                peer_read: r.get::<_, Option<i64>>(8)?.map(|at| at as u64),
            })
        })?;
        rows.collect()
    }

    /// Up to `count` messages with `peer` before `before` (unix ms; `None`:
    /// the latest), oldest first.
    pub fn messages(
        &self,
        peer: &UserId,
        count: usize,
        before: Option<u64>,
    ) -> rusqlite::Result<Vec<StoredMessage>> {
        Ok(self.messages_page(peer, count, before)?.0)
    }

    /// [`LocalStore::messages`], and whether the store holds older ones.
    ///
    /// The next page is asked for before the oldest message's millisecond,
    /// and a burst puts many messages in one: so a page never ends inside
    /// one. Where the `count`th message shares its millisecond with an
    /// older one, the page ends after that millisecond, with fewer; where
    /// all of the page is one millisecond, it holds all of that millisecond,
    /// with more.
    fn messages_page(
        &self,
        peer: &UserId,
        count: usize,
        before: Option<u64>,
    ) -> rusqlite::Result<(Vec<StoredMessage>, bool)> {
        let Some(db) = self.db() else {
            return Ok((Vec::new(), false));
        };
        let mut stmt = db.prepare(
            "SELECT msg_id, sender, recipient, text, timestamp, recalled FROM messages
             WHERE peer = ?1 AND timestamp < ?2
             ORDER BY timestamp DESC, rowid DESC LIMIT ?3",
        )?;
        let before = before.map_or(i64::MAX, |b| b as i64);
        // One more than the page: whether there are older ones, and which
        // millisecond the next one is in.
        let rows = stmt.query_map(params![peer.as_str(), before, count as i64 + 1], |r| {
            message_from(r, 0)
        })?;
        let mut out: Vec<StoredMessage> = rows.collect::<rusqlite::Result<_>>()?;
        let older = out.len() > count;
        if let Some(next) = out.pop_if(|_| older) {
            let cut = next.timestamp;
            let whole = out.iter().take_while(|m| m.timestamp != cut).count();
            if whole > 0 {
                out.truncate(whole);
            } else {
                let mut stmt = db.prepare(
                    "SELECT msg_id, sender, recipient, text, timestamp, recalled FROM messages
                     WHERE peer = ?1 AND timestamp = ?2 ORDER BY rowid DESC",
                )?;
                let rows =
                    stmt.query_map(params![peer.as_str(), cut as i64], |r| message_from(r, 0))?;
                out = rows.collect::<rusqlite::Result<_>>()?;
            }
        }
        out.reverse();
        Ok((out, older))
    }

    pub fn record_call(&mut self, r: &CallRecord) -> rusqlite::Result<()> {
        // A later record of the same call (its end, or a restart taking it
        // up again without knowing who rang) keeps what the first one knew.
        self.db_for_rows()?.execute(
            "INSERT INTO calls
             (call_id, room, role, peers, started_at, outcome, missed, total_time,
              elsewhere_device, elsewhere_platform)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (call_id) DO UPDATE SET
                outcome = excluded.outcome, missed = excluded.missed,
                total_time = excluded.total_time,
                elsewhere_device = excluded.elsewhere_device,
                elsewhere_platform = excluded.elsewhere_platform,
                peers = CASE WHEN excluded.peers = '' THEN peers ELSE excluded.peers END,
                role = CASE WHEN excluded.peers = '' THEN role ELSE excluded.role END,
                started_at = MIN(started_at, excluded.started_at)",
            params![
                r.call_id,
                r.room_id,
                r.call_role.as_str(),
                peers_text(&r.peers),
                r.started_at as i64,
                r.outcome.as_str(),
                r.missed,
                r.total_time as i64,
                r.elsewhere.as_ref().map(|d| d.device.as_str()),
                r.elsewhere.as_ref().map(|d| d.platform.as_str()),
            ],
        )?;
        Ok(())
    }

    /// The latest `count` calls, newest first.
    pub fn recent_calls(&self, count: usize) -> rusqlite::Result<Vec<CallRecord>> {
        let Some(db) = self.db() else {
            return Ok(Vec::new());
        };
        let mut stmt = db.prepare(
            "SELECT call_id, room, role, peers, started_at, outcome, missed, total_time,
                    elsewhere_device, elsewhere_platform
             FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([count as i64], |row| {
            let peers: String = row.get(3)?;
            let outcome: String = row.get(5)?;
            Ok(CallRecord {
                call_id: row.get(0)?,
                room_id: row.get(1)?,
                call_role: if row.get::<_, String>(2)? == "caller" {
                    CallRole::Caller
                } else {
                    CallRole::Called
                },
                peers: (peers.split(',').filter(|p| !p.is_empty()))
                    .map(|p| UserId::parse(p).map_err(|e| bad_column(3, e.message)))
                    .collect::<Result<_, _>>()?,
                started_at: row.get::<_, i64>(4)? as u64,
                outcome: CallOutcome::parse(&outcome)
                    .ok_or_else(|| bad_column(5, format!("unknown call outcome {outcome:?}")))?,
                missed: row.get(6)?,
                total_time: row.get::<_, i64>(7)? as u64,
                elsewhere: device_at(row, 8)?,
            })
        })?;
        rows.collect()
    }
}

/// Brings the schema of `conn` up to date.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    // Calls still running when the last process of this profile ended
    // (it died, or its machine did): only one process holds a profile.
    conn.execute(
        "UPDATE calls SET outcome = 'interrupted' WHERE outcome IN ('ringing', 'dialing', 'in_call')",
        [],
    )?;
    Ok(())
}

/// A new in-memory database with the store's schema, made as small as
/// SQLite allows: a load process holds thousands.
fn open_in_memory() -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_in_memory()?;
    // SQLite gives every connection 120 KB of lookaside memory for its
    // small allocations, set up at open: 2,000 idle load devices held
    // 249 MiB with it, 158 MiB without. A store this small does as
    // well on plain malloc.
    // SAFETY: the handle is this open connection's, nothing has been
    // allocated from its lookaside yet, and the op takes a buffer (none:
    // SQLite's own), a slot size and a slot count.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0 as std::ffi::c_int,
            0 as std::ffi::c_int,
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            None,
        ));
    }
    // Every table and index takes at least a page, all of them held
    // (an in-memory database has nowhere to evict them to): 512-byte
    // pages make an empty store ~6 KiB of pages instead of ~48 KiB.
    conn.pragma_update(None, "page_size", 512)?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn set_high_water(conn: &Connection, seq: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sync (id, high_water) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET high_water = excluded.high_water",
        [seq as i64],
    )?;
    Ok(())
}

/// A message from columns `first..first + 6` (msg_id, sender, recipient,
/// text, timestamp, recalled).
fn message_from(r: &rusqlite::Row, first: usize) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        msg_id: r.get(first)?,
        from: user_at(r, first + 1)?,
        to: user_at(r, first + 2)?,
        text: r.get(first + 3)?,
        timestamp: r.get::<_, i64>(first + 4)? as u64,
        recalled: r.get(first + 5)?,
    })
}

/// A UserID column: written from a validated id, so one that does not
/// parse is a damaged store.
fn user_at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<UserId> {
    let text: String = r.get(i)?;
    UserId::parse(&text).map_err(|e| bad_column(i, e.message))
}

/// A device from columns `first` (its id) and `first + 1` (its platform),
/// both NULL for none.
fn device_at(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Option<DeviceView>> {
    let (Some(device), Some(platform)) = (
        r.get::<_, Option<String>>(first)?,
        r.get::<_, Option<String>>(first + 1)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(DeviceView {
        device: DeviceId::parse(&device).map_err(|e| bad_column(first, e.message))?,
        platform: Platform::parse(&platform).map_err(|e| bad_column(first + 1, e.message))?,
    }))
}

fn bad_column(i: usize, why: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, why.into())
}

fn peers_text(peers: &[UserId]) -> String {
    let names: Vec<&str> = peers.iter().map(UserId::as_str).collect();
    names.join(",")
}

/// A local store used on a thread of its own, never on the async runtime:
/// writes and reads are served in the order they were asked. A store in a
/// profile has a thread to itself (its file work must not hold up another
/// device's); in-memory stores share one, as thousands of threads would
/// cost a load process most of its memory (docs/benchmarks.md).
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<Served>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A store and the thread that serves it.
struct Served {
    store: Mutex<Option<LocalStore>>,
    jobs: mpsc::Sender<Job>,
}

impl Drop for Served {
    /// The store closes on its thread too: closing a profile's store
    /// checkpoints its write-ahead log, disk work.
    fn drop(&mut self) {
        let store = self.store.get_mut().map(Option::take);
        if let Ok(Some(store)) = store {
            let _ = self.jobs.send(Box::new(move || drop(store)));
        }
    }
}

/// A thread that runs the jobs sent to it until every sender is gone.
fn serving_thread(name: &str) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rx.into_iter().for_each(|job| job()))
        .expect("spawn a local store thread");
    tx
}

impl StoreHandle {
    pub fn spawn(store: LocalStore) -> StoreHandle {
        static IN_MEMORY: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
        let jobs = match store.in_memory {
            true => (IN_MEMORY.get_or_init(|| serving_thread("memory-stores"))).clone(),
            false => serving_thread("local-store"),
        };
        StoreHandle {
            store: Arc::new(Served {
                store: Mutex::new(Some(store)),
                jobs,
            }),
        }
    }

    /// Runs `f` on the store's thread, after everything asked before.
    fn run(&self, f: impl FnOnce(&mut LocalStore) + Send + 'static) {
        let served = self.store.clone();
        let _ = self.store.jobs.send(Box::new(move || {
            let mut store = served.store.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(store) = store.as_mut() {
                f(store);
            }
        }));
    }

    pub fn record(&self, r: CallRecord) {
        self.run(move |store| {
            if let Err(e) = store.record_call(&r) {
                tracing::error!(error = %e, "cannot record a call in the local store");
            }
        });
    }

    /// Keeps what a chat event says, in order with everything else.
    pub fn apply(&self, event: Event) {
        self.run(move |store| {
            if let Err(e) = store.apply(&event) {
                tracing::error!(error = %e, "cannot keep a message in the local store");
            }
        });
    }

    /// [`StoreHandle::apply`], waiting for it to be written: whether it was.
    pub async fn keep(&self, event: Event) -> rusqlite::Result<()> {
        self.ask(move |store| store.apply(&event)).await
    }

    /// Waits until every write asked for so far is done: a front end calls
    /// it before the process exits.
    pub async fn flush(&self) {
        let _ = self.ask(|_| Ok(())).await;
    }

    pub async fn recent(&self, count: usize) -> rusqlite::Result<Vec<CallRecord>> {
        self.ask(move |store| store.recent_calls(count)).await
    }

    pub async fn conversations(&self) -> rusqlite::Result<Vec<Conversation>> {
        self.ask(|store| store.conversations()).await
    }

    pub async fn messages(
        &self,
        peer: UserId,
        count: usize,
        before: Option<u64>,
    ) -> rusqlite::Result<Vec<StoredMessage>> {
        self.ask(move |store| store.messages(&peer, count, before))
            .await
    }

    /// A page of the conversation with `peer`: what the store has, oldest
    /// first, and, when it holds fewer than `count` and nothing older, the
    /// request that asks the relay (whose answer comes as `MESSAGES` and is kept here, so the
    /// page is local the next time).
    pub async fn page(
        &self,
        peer: UserId,
        count: usize,
        before: Option<u64>,
    ) -> rusqlite::Result<Page> {
        let asked = peer.clone();
        let (messages, older) = self
            .ask(move |store| store.messages_page(&asked, count, before))
            .await?;
        let ask_relay =
            (messages.len() < count && !older).then_some(Command::Chat(ChatCommand::GetMessages {
                peer,
                before,
                count: count as u32,
            }));
        Ok(Page {
            messages,
            ask_relay,
        })
    }

    /// How far `peer` has read the conversation with this user (unix ms):
    /// the sent messages up to then show as read. `None` before any receipt.
    pub async fn peer_read(&self, peer: UserId) -> rusqlite::Result<Option<u64>> {
        self.ask(move |store| store.peer_read(&peer)).await
    }

    /// Where a new login of this device resumes its chat sync.
    pub async fn high_water(&self) -> rusqlite::Result<u64> {
        self.ask(|store| store.high_water()).await
    }

    async fn ask<T: Default + Send + 'static>(
        &self,
        f: impl FnOnce(&mut LocalStore) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.run(move |store| {
            let _ = reply.send(f(store));
        });
        answer.await.unwrap_or(Ok(T::default()))
    }
}

/// A page of a conversation, as `StoreHandle::page` finds it.
pub struct Page {
    pub messages: Vec<StoredMessage>,
    /// Sent when the store holds less than the page.
    pub ask_relay: Option<Command>,
}

/// What a front end feeds every event to: it keeps each call's record (as
/// the engine reports it, when it rings, connects and ends) and the chat in
/// the device's local store.
pub struct Recorder {
    store: StoreHandle,
    /// Another process logged in as this device (`same_device`): the store
    /// is its now, and the calls this one ends as it signs out go on there.
    handed_over: AtomicBool,
}

impl Recorder {
    pub fn new(store: LocalStore) -> Recorder {
        Recorder {
            store: StoreHandle::spawn(store),
            handed_over: AtomicBool::new(false),
        }
    }

    /// Whether what `event` says is this process's to keep.
    fn ours(&self, event: &Event) -> bool {
        if let Event::KickedOut {
            reason: KickReason::SameDevice,
            ..
        } = event
        {
            self.handed_over.store(true, Ordering::Relaxed);
        }
        !self.handed_over.load(Ordering::Relaxed)
    }

    /// Keeps what `event` says, in the background.
    pub fn observe(&self, event: &Event) {
        if !self.ours(event) {
            return;
        }
        if let Some(record) = event.call_record() {
            self.store.record(record.clone());
        }
        if is_chat(event) {
            self.store.apply(event.clone());
        }
    }

    /// Keeps what `event` says, a chat event written before this returns:
    /// whether it could be.
    pub async fn keep(&self, event: &Event) -> rusqlite::Result<()> {
        if !self.ours(event) {
            return Ok(());
        }
        if let Some(record) = event.call_record() {
            self.store.record(record.clone());
        }
        match is_chat(event) {
            true => self.store.keep(event.clone()).await,
            false => Ok(()),
        }
    }

    pub fn store(&self) -> &StoreHandle {
        &self.store
    }
}

/// Where on the user's timeline a chat event is.
fn timeline_position(event: &Event) -> Option<u64> {
    match event {
        Event::MessageSent { seq, .. } => *seq,
        Event::MessageReceived { seq, .. }
        | Event::MessageRecalled { seq, .. }
        | Event::ConversationRead { seq, .. }
        | Event::C2cReadReceipt { seq, .. }
        | Event::Synced { seq } => Some(*seq),
        _ => None,
    }
}

/// The events the chat tables hold: those on the timeline, a message sent
/// (on it once acknowledged with its seq) and a page fetched from the relay.
fn is_chat(event: &Event) -> bool {
    matches!(event, Event::MessageSent { .. } | Event::Messages { .. })
        || timeline_position(event).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(id: &str, from: &str, to: &str, text: &str, ts: u64, seq: u64) -> Event {
        Event::MessageReceived {
            msg_id: id.into(),
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            text: text.into(),
            timestamp: ts,
            offline: false,
            seq,
        }
    }

    /// A message that could not be kept (a full disk) is never synced past:
    /// the device started again is sent it again, whatever was kept after.
    #[test]
    fn the_sync_position_stays_below_what_could_not_be_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(dir.path(), &"alice".parse().unwrap()).unwrap();
        store
            .apply(&received("m1", "bob", "alice", "hi", 10, 1))
            .unwrap();
        let full = |store: &LocalStore, pages: &str| {
            (store.db().unwrap())
                .pragma_update(None, "max_page_count", pages)
                .unwrap();
        };
        let pages: i64 = (store.db().unwrap())
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        full(&store, &pages.to_string());
        let big = "x".repeat(64 * 1024);
        assert!(
            store
                .apply(&received("m2", "bob", "alice", &big, 20, 2))
                .is_err()
        );
        full(&store, "1073741823");
        store
            .apply(&received("m3", "bob", "alice", "on", 30, 3))
            .unwrap();
        store.apply(&Event::Synced { seq: 3 }).unwrap();
        assert_eq!(store.high_water().unwrap(), 1);
        let bob: UserId = "bob".parse().unwrap();
        let kept: Vec<String> = (store.messages(&bob, 10, None).unwrap().into_iter())
            .map(|m| m.msg_id)
            .collect();
        assert_eq!(kept, ["m1", "m3"]);
    }

    #[test]
    fn conversations_unread_recall_and_high_water() {
        let dir = tempfile::tempdir().unwrap();
        let bob: UserId = "bob".parse().unwrap();
        let mut store = LocalStore::open(dir.path(), &"alice".parse().unwrap()).unwrap();
        assert_eq!(store.high_water().unwrap(), 0);
        store
            .apply(&received("m1", "bob", "alice", "hi", 10, 1))
            .unwrap();
        store
            .apply(&received("m2", "bob", "alice", "there", 20, 2))
            .unwrap();
        store
            .apply(&received("m3", "alice", "carol", "mine", 30, 3))
            .unwrap();
        store
            .apply(&received("m1", "bob", "alice", "hi", 10, 1))
            .unwrap();
        let convs = store.conversations().unwrap();
        let summary: Vec<(&str, u64, &str)> = convs
            .iter()
            .map(|c| {
                (
                    c.user_id.as_str(),
                    c.unread_count,
                    c.last_message.text.as_str(),
                )
            })
            .collect();
        assert_eq!(summary, [("carol", 0, "mine"), ("bob", 2, "there")]);
        store
            .apply(&Event::ConversationRead {
                user_id: "bob".parse().unwrap(),
                timestamp: 15,
                seq: 4,
            })
            .unwrap();
        store
            .apply(&Event::MessageRecalled {
                msg_id: "m2".into(),
                user_id: "bob".parse().unwrap(),
                seq: 5,
            })
            .unwrap();
        assert_eq!(store.conversations().unwrap()[1].unread_count, 0);
        let msgs = store.messages(&bob, 10, None).unwrap();
        assert_eq!(
            msgs.iter()
                .map(|m| (m.msg_id.as_str(), m.recalled))
                .collect::<Vec<_>>(),
            [("m1", false), ("m2", true)]
        );
        assert_eq!(msgs[1].text, "");
        assert_eq!(store.messages(&bob, 1, Some(20)).unwrap()[0].msg_id, "m1");
        assert_eq!(store.high_water().unwrap(), 5);
    }

    /// Bursts put many messages in one millisecond; pages asked for
    /// "before the oldest" one after another reach every message once,
    /// a page never ending inside a millisecond (it did, and the rest of
    /// that millisecond was never shown).
    #[tokio::test]
    async fn pages_before_the_oldest_reach_every_message_of_a_burst() {
        let bob: UserId = "bob".parse().unwrap();
        let mut store = LocalStore::in_memory(&"alice".parse().unwrap());
        // 10 messages in ms 100, 83 in ms 200, 57 in ms 300, 120 in ms 400.
        let mut seq = 0;
        for (ts, n) in [(100, 10), (200, 83), (300, 57), (400, 120)] {
            for _ in 0..n {
                seq += 1;
                let id = format!("m{seq}");
                store
                    .apply(&received(&id, "bob", "alice", "x", ts, seq))
                    .unwrap();
            }
        }
        let store = StoreHandle::spawn(store);
        let (mut seen, mut sizes, mut before) = (Vec::new(), Vec::new(), None);
        loop {
            let page = store.page(bob.clone(), 100, before).await.unwrap();
            if page.messages.is_empty() {
                assert!(
                    page.ask_relay.is_some(),
                    "the relay asked when the store ran out"
                );
                break;
            }
            assert!(page.ask_relay.is_none() || page.messages.len() < 100);
            sizes.push(page.messages.len());
            before = Some(page.messages[0].timestamp);
            seen.splice(0..0, page.messages.into_iter().map(|m| m.msg_id));
        }
        let all: Vec<String> = (1..=seq).map(|k| format!("m{k}")).collect();
        assert_eq!(seen, all);
        // A millisecond of more than a page is one page; a page that would
        // end inside a millisecond ends before it.
        assert_eq!(sizes, [120, 57, 93]);
    }

    #[tokio::test]
    async fn in_memory_stores_share_a_thread_and_nothing_else() {
        let open = |me: &str| StoreHandle::spawn(LocalStore::in_memory(&me.parse().unwrap()));
        let (alice, bob) = (open("alice"), open("bob"));
        alice.apply(received("m1", "carol", "alice", "hi", 10, 1));
        bob.apply(Event::Synced { seq: 7 });
        let peers: Vec<String> = (alice.conversations().await.unwrap().iter())
            .map(|c| c.user_id.to_string())
            .collect();
        assert_eq!(peers, ["carol"]);
        assert!(bob.conversations().await.unwrap().is_empty());
        assert_eq!(alice.high_water().await.unwrap(), 1);
        assert_eq!(bob.high_water().await.unwrap(), 7);
        let thread = |store: StoreHandle| async move {
            (store
                .ask(|_| Ok(format!("{:?}", std::thread::current().id())))
                .await)
                .unwrap()
        };
        assert_eq!(thread(alice.clone()).await, thread(bob.clone()).await);
        // Another device of the same user starts empty: nothing is kept.
        assert_eq!(open("alice").high_water().await.unwrap(), 0);
    }

    /// An idle load device keeps only its sync position: no database
    /// until a row comes, and then the position is in it with the row.
    #[test]
    fn an_in_memory_store_opens_its_database_with_its_first_row() {
        let bob: UserId = "bob".parse().unwrap();
        let mut store = LocalStore::in_memory(&"alice".parse().unwrap());
        store.apply(&Event::Synced { seq: 7 }).unwrap();
        assert_eq!(store.high_water().unwrap(), 7);
        assert!(store.conversations().unwrap().is_empty());
        assert!(store.messages(&bob, 10, None).unwrap().is_empty());
        assert!(store.recent_calls(10).unwrap().is_empty());
        assert_eq!(store.peer_read(&bob).unwrap(), None);
        assert!(!store.has_db());
        store
            .apply(&received("m1", "bob", "alice", "hi", 10, 5))
            .unwrap();
        assert!(store.has_db());
        // The relay's word (7) stands: a message's lower seq never takes it back.
        assert_eq!(store.high_water().unwrap(), 7);
        assert_eq!(store.conversations().unwrap()[0].user_id, bob);
        store.apply(&Event::Synced { seq: 9 }).unwrap();
        assert_eq!(store.high_water().unwrap(), 9);
    }

    #[test]
    fn the_peers_read_mark_is_kept_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob): (UserId, UserId) = ("alice".parse().unwrap(), "bob".parse().unwrap());
        let receipt = |timestamp, seq| Event::C2cReadReceipt {
            user_id: bob.clone(),
            timestamp,
            seq,
        };
        {
            let mut store = LocalStore::open(dir.path(), &alice).unwrap();
            store
                .apply(&received("m1", "alice", "bob", "read me", 10, 1))
                .unwrap();
            assert_eq!(store.peer_read(&bob).unwrap(), None);
            assert_eq!(store.conversations().unwrap()[0].peer_read, None);
            store.apply(&receipt(20, 2)).unwrap();
            // An older receipt (a relay whose clock went back) changes nothing.
            store.apply(&receipt(15, 3)).unwrap();
        }
        let store = LocalStore::open(dir.path(), &alice).unwrap();
        assert_eq!(store.peer_read(&bob).unwrap(), Some(20));
        let conv = &store.conversations().unwrap()[0];
        assert_eq!(conv.peer_read, Some(20));
        assert_eq!(serde_json::to_value(conv).unwrap()["peerRead"], 20);
        assert_eq!(store.high_water().unwrap(), 3);
        assert_eq!(store.peer_read(&"carol".parse().unwrap()).unwrap(), None);
    }

    #[test]
    fn a_calls_last_record_wins_and_keeps_who_rang() {
        let dir = tempfile::tempdir().unwrap();
        let bob: UserId = "bob".parse().unwrap();
        let record = |outcome, peers: Vec<UserId>, started_at, total_time| CallRecord {
            call_id: "c1".into(),
            room_id: 7,
            call_role: CallRole::Called,
            peers,
            started_at,
            outcome,
            missed: false,
            total_time,
            elsewhere: None,
        };
        {
            let mut store = LocalStore::open(dir.path(), &"alice".parse().unwrap()).unwrap();
            store
                .record_call(&record(CallOutcome::Ringing, vec![bob.clone()], 1_000, 0))
                .unwrap();
            // The end knows no more than the call's id and length.
            store
                .record_call(&record(CallOutcome::Answered, Vec::new(), 2_000, 42))
                .unwrap();
        }
        let store = LocalStore::open(dir.path(), &"alice".parse().unwrap()).unwrap();
        assert_eq!(
            store.recent_calls(10).unwrap(),
            [record(CallOutcome::Answered, vec![bob], 1_000, 42)]
        );
    }

    #[test]
    fn a_call_answered_on_another_device_keeps_which_one() {
        let dir = tempfile::tempdir().unwrap();
        let alice: UserId = "alice".parse().unwrap();
        let laptop = DeviceView {
            device: "laptop".parse().unwrap(),
            platform: "desktop".parse().unwrap(),
        };
        let stopped = CallRecord {
            call_id: "c1".into(),
            room_id: 7,
            call_role: CallRole::Called,
            peers: vec!["bob".parse().unwrap()],
            started_at: 1_000,
            outcome: CallOutcome::Stopped(crate::protocol::CancelReason::AnsweredElsewhere),
            missed: false,
            total_time: 0,
            elsewhere: Some(laptop),
        };
        LocalStore::open(dir.path(), &alice)
            .unwrap()
            .record_call(&stopped)
            .unwrap();
        let store = LocalStore::open(dir.path(), &alice).unwrap();
        let back = &store.recent_calls(1).unwrap()[0];
        assert_eq!(back, &stopped);
        let json = serde_json::to_value(back).unwrap();
        assert_eq!(
            (&json["outcome"], &json["deviceID"], &json["platform"]),
            (
                &serde_json::json!("answered_elsewhere"),
                &serde_json::json!("laptop"),
                &serde_json::json!("desktop")
            )
        );
    }

    /// Kicked out by another process logging in as this device, a device
    /// keeps nothing more: the store, and the calls it ends as it signs
    /// out, are the other process's now. Any other kick changes nothing.
    #[tokio::test]
    async fn a_device_taken_over_keeps_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let alice: UserId = "alice".parse().unwrap();
        let recorder = Recorder::new(LocalStore::open(dir.path(), &alice).unwrap());
        let kicked = |reason| Event::KickedOut {
            reason,
            message: String::new(),
        };
        let ended = |id: &str| Event::CallingEnd {
            call_id: id.into(),
            room_id: 7,
            user_id: alice.clone(),
            total_time: 7,
            call_media_type: 1,
            call_role: CallRole::Caller,
            record: Box::new(CallRecord {
                call_id: id.into(),
                room_id: 7,
                call_role: CallRole::Caller,
                peers: vec!["bob".parse().unwrap()],
                started_at: 1_000,
                outcome: CallOutcome::Answered,
                missed: false,
                total_time: 7,
                elsewhere: None,
            }),
            unheard: false,
        };
        for event in [
            received("m1", "bob", "alice", "hi", 10, 1),
            kicked(KickReason::DeviceLimit),
            ended("c1"),
            received("m2", "bob", "alice", "there", 20, 2),
            kicked(KickReason::SameDevice),
            ended("c2"),
            received("m3", "bob", "alice", "gone", 30, 3),
        ] {
            recorder.keep(&event).await.unwrap();
        }
        let store = recorder.store();
        let bob: UserId = "bob".parse().unwrap();
        let texts: Vec<String> = (store.messages(bob, 10, None).await.unwrap().into_iter())
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["hi", "there"]);
        let calls: Vec<String> = (store.recent(10).await.unwrap().into_iter())
            .map(|c| c.call_id)
            .collect();
        assert_eq!(calls, ["c1"]);
    }

    #[test]
    fn a_call_still_running_when_the_process_died_reads_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let alice: UserId = "alice".parse().unwrap();
        let running = CallRecord {
            call_id: "c1".into(),
            room_id: 7,
            call_role: CallRole::Caller,
            peers: vec!["bob".parse().unwrap()],
            started_at: 1_000,
            outcome: CallOutcome::InCall,
            missed: false,
            total_time: 0,
            elsewhere: None,
        };
        LocalStore::open(dir.path(), &alice)
            .unwrap()
            .record_call(&running)
            .unwrap();
        let store = LocalStore::open(dir.path(), &alice).unwrap();
        assert_eq!(
            store.recent_calls(1).unwrap()[0].outcome,
            CallOutcome::Interrupted
        );
    }
}
