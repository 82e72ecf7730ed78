//! Chat on the relay: idempotent send, per-user timelines, delivery to every
//! device of both users, recall, read marks and receipts, typing, and sync.
//!
//! Every message, recall, read mark and read receipt is an entry in the
//! timeline of each user it concerns, numbered by a per-user `seq`. A device remembers the
//! last `seq` it applied; `sync` hands it exactly the entries after that,
//! within the compensation window, in order. Nothing is acknowledged or
//! delivered before the store has committed it: the core emits the write,
//! the shell reports `Committed`, and only then do frames go out.
//!
//! Each session has one stream of entries ([`Stream`]): nothing while it has
//! not synced since it connected, the sync's read and then live entries once
//! it has. Every `entries` frame says which entry it follows (`after`), so a
//! device can tell a gap from a repeat; the relay never sends a session an
//! entry out of order or skips one it should have had.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use super::{Millis, Output, RelayCore, SessionId, StoreOp, StoreReply};
use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, UserId};
use crate::protocol::{
    ChatMessage, Entry, EntryKind, SentBy, ServerMsg, WireError, check_message_text,
};
use crate::relay::rate::{Bucket, Rate};

/// What a timeline row holds, as the store writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineRow {
    pub user: UserId,
    pub entry: Entry,
    /// With sync off, whether a device already received it.
    pub delivered: bool,
}

/// What the store knows at start: timelines' last seqs and recent messages.
#[derive(Debug, Default)]
pub struct ChatSnapshot {
    pub last_seq: Vec<(AppId, UserId, u64)>,
    /// Messages young enough to be recalled or resent.
    pub recent: Vec<RecentMessage>,
}

/// A message the relay still answers resends and recalls of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentMessage {
    pub app: AppId,
    pub message: ChatMessage,
    pub client_msg_id: String,
    pub recalled: bool,
    /// Its seq in the sender's timeline (sync on), which the answer to a
    /// resend carries.
    pub sender_seq: Option<u64>,
}

struct Sent {
    app: AppId,
    from: UserId,
    to: UserId,
    server_time: Millis,
    client_msg_id: String,
    /// Tells a resend of this message from a new message that reuses its
    /// client id (only the hash is kept: texts can be large).
    text_hash: u64,
    /// Its seq in the sender's timeline, for the acknowledgement of a resend.
    sender_seq: Option<u64>,
    recalled: bool,
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Where a session's stream of timeline entries stands.
#[derive(Debug, Default)]
pub(super) enum Stream {
    /// Nothing goes out: the device has not synced on this connection (or
    /// has none). Its sync will read whatever is committed meanwhile.
    #[default]
    Unsynced,
    /// The store is reading what the device missed after `after`; live
    /// entries wait in `held` until that read has gone out.
    Syncing {
        token: u64,
        after: u64,
        held: Vec<Entry>,
    },
    /// Caught up: live entries go out as they commit, each frame chained
    /// after `upto`, the last seq this session was sent.
    Live { upto: u64 },
}

/// What to do once the store has done its part (or failed to).
enum AfterCommit {
    Message {
        app: AppId,
        sender: SessionId,
        msg_id: String,
        client_msg_id: String,
        server_time: Millis,
        rows: Vec<TimelineRow>,
    },
    /// A server-side send: answer the admin connection, then deliver.
    Admin {
        app: AppId,
        conn: super::ConnId,
        msg_id: String,
        rows: Vec<TimelineRow>,
    },
    /// Deliver rows (a recall, or a read mark and its receipt) that `by` asked for.
    Rows {
        app: AppId,
        rows: Vec<TimelineRow>,
        by: SessionId,
        request: &'static str,
        /// A recall to undo if the write fails.
        recall: Option<String>,
    },
    /// Send a syncing device what the store read for it.
    Sync { sid: SessionId },
    /// Send a device the page of history it asked for.
    History { sid: SessionId, peer: UserId },
}

#[derive(Default)]
pub(super) struct Chat {
    next_seq: HashMap<(AppId, UserId), u64>,
    /// Messages still inside the longer of the recall and resend windows, oldest first.
    recent: VecDeque<String>,
    messages: HashMap<String, Sent>,
    by_client_id: HashMap<(AppId, UserId, String), String>,
    /// Senders waiting for a message that is still being written.
    waiting_acks: HashMap<String, Vec<SessionId>>,
    /// Each session's messages still being written.
    in_flight: HashMap<SessionId, usize>,
    pending: HashMap<u64, AfterCommit>,
    next_token: u64,
    next_msg: u64,
    /// Each user's daily allowance of message bytes.
    quotas: HashMap<(AppId, UserId), Bucket>,
}

impl Chat {
    pub(super) fn from_snapshot(snapshot: ChatSnapshot) -> Chat {
        let mut chat = Chat::default();
        for (app, user, seq) in snapshot.last_seq {
            chat.next_seq.insert((app, user), seq + 1);
        }
        let mut recent = snapshot.recent;
        recent.sort_by_key(|r| r.message.server_time);
        for r in recent {
            chat.remember(r.app, &r.message, r.client_msg_id, r.recalled);
            if let Some(sent) = chat.messages.get_mut(&r.message.msg_id) {
                sent.sender_seq = r.sender_seq;
            }
        }
        chat
    }

    fn remember(&mut self, app: AppId, m: &ChatMessage, client_msg_id: String, recalled: bool) {
        self.by_client_id.insert(
            (app, m.from.clone(), client_msg_id.clone()),
            m.msg_id.clone(),
        );
        self.recent.push_back(m.msg_id.clone());
        self.messages.insert(
            m.msg_id.clone(),
            Sent {
                app,
                from: m.from.clone(),
                to: m.to.clone(),
                server_time: m.server_time,
                client_msg_id,
                text_hash: text_hash(&m.text),
                sender_seq: None,
                recalled,
            },
        );
    }

    /// A message whose write failed: as if it had never been sent, so that
    /// a resend under the same client id is a new attempt.
    fn forget(&mut self, msg_id: &str) {
        if let Some(m) = self.messages.remove(msg_id) {
            self.by_client_id.remove(&(m.app, m.from, m.client_msg_id));
        }
        self.recent.retain(|id| id != msg_id);
    }

    /// The last seq handed out in `user`'s timeline (0 for none yet).
    fn head(&self, app: AppId, user: &UserId) -> u64 {
        self.next_seq
            .get(&(app, user.clone()))
            .map_or(0, |next| next - 1)
    }

    /// Forgets messages older than `horizon`: past recall, and past resend.
    fn prune(&mut self, horizon: Millis) {
        while let Some(id) = self.recent.front() {
            match self.messages.get(id) {
                Some(m) if m.server_time >= horizon => break,
                Some(m) => {
                    self.by_client_id
                        .remove(&(m.app, m.from.clone(), m.client_msg_id.clone()));
                    self.messages.remove(id);
                }
                None => {}
            }
            self.recent.pop_front();
        }
    }

    /// A new message with a relay-wide unique id.
    fn new_message(
        &mut self,
        now: Millis,
        from: &UserId,
        to: &UserId,
        text: &str,
        sent_by: Option<SentBy>,
    ) -> ChatMessage {
        self.next_msg += 1;
        ChatMessage {
            msg_id: format!("{:x}-{:x}", now, self.next_msg),
            from: from.clone(),
            to: to.clone(),
            text: text.to_owned(),
            server_time: now,
            sent_by,
        }
    }

    /// The next entry of `user`'s timeline.
    fn row(&mut self, app: AppId, user: UserId, kind: EntryKind) -> TimelineRow {
        let seq = self.seq(app, &user);
        TimelineRow {
            user,
            entry: Entry { seq, kind },
            delivered: false,
        }
    }

    fn seq(&mut self, app: AppId, user: &UserId) -> u64 {
        let next = self.next_seq.entry((app, user.clone())).or_insert(1);
        let seq = *next;
        *next += 1;
        seq
    }
}

/// How long a client id keeps a resend idempotent (and stays used): a day,
/// the compensation window's default (a client retries within seconds, not
/// days).
pub const RESEND_WINDOW_MS: Millis = 24 * 3600 * 1000;

/// Messages one session may have on their way to the store: what a client
/// keeps in flight (`client::engine`'s window). The relay read a pipelining
/// client's messages as fast as it sent them, and 4 of them sending 1,000
/// messages of 64 KiB took it to 711 MB while the store caught up.
const MAX_IN_FLIGHT: usize = 64;

/// Entries one catch-up read takes from the store (a page is then cut to
/// `Settings::sync_page_bytes`).
const SYNC_READ_ENTRIES: usize = 512;

/// Encoded entries per `entries` frame: well inside the frame limit every
/// client enforces (`MAX_TRANSPORT_MESSAGE_BYTES`).
const FRAME_ENTRY_BYTES: usize = 48 * 1024;

/// The most messages one `history` page holds; fewer when they pass
/// `FRAME_ENTRY_BYTES` (a page of long messages ran to 32 MB, past what a
/// client accepts and held in the relay's memory until sent).
const MAX_HISTORY_COUNT: u32 = 500;

/// What one entry costs on the wire, near enough to cut pages and frames.
fn wire_size(entry: &Entry) -> usize {
    serde_json::to_string(entry).map_or(0, |s| s.len()) + 1
}

/// How many of `entries` fit in a page of `budget` bytes (at least one, so
/// that a catch-up always moves).
fn page_of(entries: &[Entry], budget: usize) -> usize {
    let mut used = 0;
    for (k, entry) in entries.iter().enumerate() {
        used += wire_size(entry);
        if used > budget && k > 0 {
            return k;
        }
    }
    entries.len()
}

/// `entries` cut into frames of about `FRAME_ENTRY_BYTES` each.
fn frames_of(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut frames = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (k, entry) in entries.iter().enumerate() {
        let size = wire_size(entry);
        if used + size > FRAME_ENTRY_BYTES && k > start {
            frames.push(&entries[start..k]);
            (start, used) = (k, 0);
        }
        used += size;
    }
    if start < entries.len() {
        frames.push(&entries[start..]);
    }
    frames
}

fn store_failed(what: &str, why: &str) -> WireError {
    Error::new(
        ErrorCode::RelayStoreFailed,
        format!("the relay could not store {what} ({why}); nothing was kept, try again"),
    )
    .into()
}

impl RelayCore {
    pub(super) fn send_message(
        &mut self,
        now: Millis,
        sid: SessionId,
        to: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Result<(), Error> {
        let (app, from) = self.identity(sid);
        let to = UserId::parse(to)?;
        self.check_known(app, &to)?;
        check_message_text(text)?;
        if client_msg_id.is_empty() || client_msg_id.len() > 64 {
            return Err(Error::new(
                ErrorCode::InvalidParameters,
                "clientMsgID must be 1 to 64 bytes",
            ));
        }
        // A resend after a lost acknowledgement: the same message, once.
        let key = (app, from.clone(), client_msg_id.to_owned());
        if let Some(msg_id) = self.chat.by_client_id.get(&key).cloned() {
            let sent = &self.chat.messages[&msg_id];
            if sent.to != to || sent.text_hash != text_hash(text) {
                return Err(Error::new(
                    ErrorCode::ClientMsgIdReused,
                    format!(
                        "clientMsgID {client_msg_id:?} already names another message (msgID {msg_id}, to {}); \
                         an id stays used for {} h: give this message a new one",
                        sent.to,
                        RESEND_WINDOW_MS / 3_600_000
                    ),
                ));
            }
            match self.chat.waiting_acks.get_mut(&msg_id) {
                Some(waiting) => waiting.push(sid),
                None => {
                    let (server_time, seq) = (sent.server_time, sent.sender_seq);
                    self.send_if_attached(
                        sid,
                        ServerMsg::MessageSent {
                            msg_id,
                            client_msg_id: client_msg_id.to_owned(),
                            server_time,
                            seq,
                        },
                    );
                }
            }
            return Ok(());
        }
        let in_flight = self.chat.in_flight.get(&sid).copied().unwrap_or(0);
        if in_flight >= MAX_IN_FLIGHT {
            return Err(Error::new(
                ErrorCode::RateLimited,
                format!(
                    "{MAX_IN_FLIGHT} messages of this device are still being stored; \
                     wait for their acknowledgements before sending more"
                ),
            ));
        }
        self.charge_quota(now, app, &from, text.len())?;
        *self.chat.in_flight.entry(sid).or_default() += 1;
        let sync = self.app_config(app).multi_device_sync;
        let device = self.sessions[&sid].device.clone();
        let sent_by = SentBy {
            device,
            client_msg_id: client_msg_id.to_owned(),
        };
        let message = self.chat.new_message(now, &from, &to, text, Some(sent_by));
        let msg_id = message.msg_id.clone();
        // With sync on, the sender's timeline carries the message to all its
        // devices, the sending one too (which knows it by its client id);
        // with it off, only the recipient's timeline gets it.
        let rows = self.append_message(app, message, client_msg_id.to_owned(), sync, |rows| {
            AfterCommit::Message {
                app,
                sender: sid,
                msg_id: msg_id.clone(),
                client_msg_id: client_msg_id.to_owned(),
                server_time: now,
                rows,
            }
        });
        let sender_seq = rows.iter().find(|r| r.user == from).map(|r| r.entry.seq);
        self.chat
            .messages
            .get_mut(&msg_id)
            .expect("remembered")
            .sender_seq = sender_seq;
        self.chat.waiting_acks.insert(msg_id, Vec::new());
        self.chat
            .prune(now.saturating_sub(RESEND_WINDOW_MS.max(self.max_recall_ms())));
        Ok(())
    }

    pub(super) fn recall_message(
        &mut self,
        now: Millis,
        sid: SessionId,
        msg_id: &str,
    ) -> Result<(), Error> {
        let (app, user) = self.identity(sid);
        let window = self.app_config(app).recall_window_secs * 1000;
        let Some(m) = self.chat.messages.get(msg_id).filter(|m| m.app == app) else {
            return Err(Error::new(
                ErrorCode::NoSuchMessage,
                format!(
                    "no message {msg_id:?} can be recalled (unknown, or past the recall window)"
                ),
            ));
        };
        if m.from != user {
            return Err(Error::new(
                ErrorCode::NotYourMessage,
                "only the sender of a message can recall it",
            ));
        }
        if now.saturating_sub(m.server_time) > window {
            return Err(Error::new(
                ErrorCode::RecallWindowPassed,
                format!(
                    "a message can be recalled within {} s of sending",
                    window / 1000
                ),
            ));
        }
        if m.recalled {
            // Said, so that a script waiting for an answer gets one.
            return Err(Error::new(
                ErrorCode::NoSuchMessage,
                format!("message {msg_id:?} is recalled already"),
            ));
        }
        let (from, to) = (m.from.clone(), m.to.clone());
        self.chat.messages.get_mut(msg_id).expect("exists").recalled = true;
        let mut rows = Vec::new();
        for (owner, peer) in [(to.clone(), from.clone()), (from.clone(), to.clone())] {
            if owner == peer && !rows.is_empty() {
                break;
            }
            rows.push(self.chat.row(
                app,
                owner,
                EntryKind::Recall {
                    msg_id: msg_id.to_owned(),
                    peer,
                },
            ));
        }
        let msg_id = msg_id.to_owned();
        self.commit_rows(
            sid,
            app,
            rows,
            "recall_message",
            Some(msg_id.clone()),
            |token, rows| StoreOp::Recall {
                token,
                app,
                msg_id,
                rows,
            },
        );
        Ok(())
    }

    pub(super) fn mark_read(
        &mut self,
        now: Millis,
        sid: SessionId,
        peer: &str,
    ) -> Result<(), Error> {
        let (app, user) = self.identity(sid);
        let peer = UserId::parse(peer)?;
        // A mark is replayed to every new device: none for a conversation
        // with someone who was never here.
        self.check_known(app, &peer)?;
        // The reader's devices learn it is read; the peer's devices (the
        // sender of what was read) get a receipt, in the same write, so one
        // never goes without the other. None for a conversation with oneself.
        let read = EntryKind::Read {
            peer: peer.clone(),
            at: now,
        };
        let mut rows = vec![self.chat.row(app, user.clone(), read)];
        if peer != user {
            let receipt = EntryKind::ReadReceipt {
                peer: user,
                at: now,
            };
            rows.push(self.chat.row(app, peer, receipt));
        }
        self.commit_rows(sid, app, rows, "mark_read", None, |token, rows| {
            StoreOp::AppendRows { token, app, rows }
        });
        Ok(())
    }

    /// Counts `bytes` of text against the user's daily quota (all devices).
    fn charge_quota(
        &mut self,
        now: Millis,
        app: AppId,
        user: &UserId,
        bytes: usize,
    ) -> Result<(), Error> {
        let per_day = self.settings.rate_limits.message_bytes_per_day;
        let rate = Rate::new(f64::from(per_day) / 86_400.0, per_day);
        let bucket = (self.chat.quotas)
            .entry((app, user.clone()))
            .or_insert_with(|| rate.bucket(now));
        if bucket.take_n(now, bytes as u32) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::RateLimited,
            format!(
                "{user} has sent {per_day} bytes of messages in the last day \
                 (relay.rate_limits.message_bytes_per_day); this one fits again in {} s",
                bucket.wait_n_ms(now, bytes as u32).div_ceil(1000)
            ),
        ))
    }

    fn check_known(&self, app: AppId, user: &UserId) -> Result<(), Error> {
        if self
            .known
            .get(&app)
            .is_some_and(|users| users.contains(user))
        {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::UnknownUser,
            format!("{user} has never logged in to this app; check the UserID"),
        ))
    }

    pub(super) fn typing(&mut self, sid: SessionId, to: &str) -> Result<(), Error> {
        let (app, from) = self.identity(sid);
        let to = UserId::parse(to)?;
        // Only devices connected right now: never held, stored or synced.
        let conns: Vec<_> = self
            .sessions_of(app, &to)
            .into_iter()
            .filter_map(|s| self.sessions[&s].conn)
            .collect();
        for conn in conns {
            self.send(conn, ServerMsg::Typing { from: from.clone() });
        }
        Ok(())
    }

    /// A device asks for what it missed after `after`: the store reads it,
    /// and live entries wait until that batch has gone out. An `after`
    /// beyond the timeline's head (a device that knew a relay whose database
    /// is gone) counts from the head.
    pub(super) fn start_sync(
        &mut self,
        now: Millis,
        sid: SessionId,
        after: u64,
    ) -> Result<(), Error> {
        let (app, user) = self.identity(sid);
        let window = u64::from(self.app_config(app).compensation_window_days) * 24 * 3600 * 1000;
        let sync = self.app_config(app).multi_device_sync;
        let after = after.min(self.chat.head(app, &user));
        if matches!(self.sessions[&sid].stream, Stream::Syncing { .. }) {
            // The read under way answers this one too.
            return Ok(());
        }
        let token = self.commit_token();
        self.sessions.get_mut(&sid).expect("exists").stream = Stream::Syncing {
            token,
            after,
            held: Vec::new(),
        };
        self.out.push_back(Output::Store(StoreOp::ReadTimeline {
            token,
            app,
            user,
            after,
            since: now.saturating_sub(window),
            undelivered_only: !sync,
            limit: SYNC_READ_ENTRIES,
        }));
        self.chat.pending.insert(token, AfterCommit::Sync { sid });
        Ok(())
    }

    /// A page of older messages, read by the store (beyond the compensation
    /// window: the relay keeps messages for `relay.retention_days`).
    pub(super) fn history(
        &mut self,
        sid: SessionId,
        peer: &str,
        before: Option<Millis>,
        count: u32,
    ) -> Result<(), Error> {
        let (app, user) = self.identity(sid);
        let peer = UserId::parse(peer)?;
        let token = self.commit_token();
        self.out.push_back(Output::Store(StoreOp::ReadHistory {
            token,
            app,
            user,
            peer: peer.clone(),
            before,
            count: count.clamp(1, MAX_HISTORY_COUNT),
            max_bytes: FRAME_ENTRY_BYTES,
        }));
        self.chat
            .pending
            .insert(token, AfterCommit::History { sid, peer });
        Ok(())
    }

    /// The store has done what `token` asked, or failed to: acknowledge and
    /// deliver, or tell whoever asked.
    pub(super) fn committed(&mut self, token: u64, reply: StoreReply) {
        let Some(after) = self.chat.pending.remove(&token) else {
            return;
        };
        let failed = match &reply {
            StoreReply::Failed(why) => Some(why.clone()),
            _ => None,
        };
        match after {
            AfterCommit::Message {
                app,
                sender,
                msg_id,
                client_msg_id,
                server_time,
                rows,
            } => {
                if let Some(n) = self.chat.in_flight.get_mut(&sender) {
                    *n -= 1;
                    if *n == 0 {
                        self.chat.in_flight.remove(&sender);
                    }
                }
                let waiting = self.chat.waiting_acks.remove(&msg_id).unwrap_or_default();
                let senders = std::iter::once(sender).chain(waiting);
                if let Some(why) = failed {
                    self.chat.forget(&msg_id);
                    for s in senders.collect::<Vec<_>>() {
                        self.send_if_attached(
                            s,
                            ServerMsg::Error {
                                error: store_failed("the message", &why),
                                request: Some("send_message".into()),
                                client_msg_id: Some(client_msg_id.clone()),
                            },
                        );
                    }
                    return;
                }
                let seq = self.chat.messages.get(&msg_id).and_then(|m| m.sender_seq);
                for s in senders.collect::<Vec<_>>() {
                    self.send_if_attached(
                        s,
                        ServerMsg::MessageSent {
                            msg_id: msg_id.clone(),
                            client_msg_id: client_msg_id.clone(),
                            server_time,
                            seq,
                        },
                    );
                }
                self.deliver(app, rows);
            }
            AfterCommit::Admin {
                app,
                conn,
                msg_id,
                rows,
            } => {
                if let Some(why) = failed {
                    self.chat.forget(&msg_id);
                    self.send(
                        conn,
                        ServerMsg::Error {
                            error: store_failed("the message", &why),
                            request: Some("admin_send".into()),
                            client_msg_id: None,
                        },
                    );
                    return;
                }
                self.send(conn, ServerMsg::AdminSent { msg_id });
                self.deliver(app, rows);
            }
            AfterCommit::Rows {
                app,
                rows,
                by,
                request,
                recall,
            } => {
                if let Some(why) = failed {
                    if let Some(m) = recall.and_then(|id| self.chat.messages.get_mut(&id)) {
                        m.recalled = false;
                    }
                    self.send_if_attached(
                        by,
                        ServerMsg::Error {
                            error: store_failed(request, &why),
                            request: Some(request.into()),
                            client_msg_id: None,
                        },
                    );
                    return;
                }
                self.deliver(app, rows);
            }
            AfterCommit::Sync { sid } => match reply {
                StoreReply::Entries(read) => self.finish_sync(sid, token, read),
                _ => self.fail_sync(sid, token, failed.unwrap_or_default()),
            },
            AfterCommit::History { sid, peer } => match reply {
                StoreReply::Messages(mut messages, more) => {
                    messages.reverse();
                    self.send_if_attached(
                        sid,
                        ServerMsg::History {
                            peer,
                            messages,
                            more,
                        },
                    );
                }
                _ => self.send_if_attached(
                    sid,
                    ServerMsg::Error {
                        error: store_failed("the history read", &failed.unwrap_or_default()),
                        request: Some("history".into()),
                        client_msg_id: None,
                    },
                ),
            },
        }
    }

    /// Takes the session's stream out of `Syncing` for this read's token;
    /// `None` when the session moved on (it reconnected, or is gone).
    fn take_sync(&mut self, sid: SessionId, token: u64) -> Option<(u64, Vec<Entry>)> {
        let session = self.sessions.get_mut(&sid)?;
        match std::mem::take(&mut session.stream) {
            Stream::Syncing {
                token: t,
                after,
                held,
            } if t == token => Some((after, held)),
            other => {
                session.stream = other;
                None
            }
        }
    }

    /// Sends what the store read, one page of it: the rest, if any, when the
    /// device asks for it.
    fn finish_sync(&mut self, sid: SessionId, token: u64, mut entries: Vec<Entry>) {
        let Some((after, held)) = self.take_sync(sid, token) else {
            return;
        };
        let (app, user) = self.identity(sid);
        let sync = self.app_config(app).multi_device_sync;
        let read_all = entries.len() < SYNC_READ_ENTRIES;
        let page = page_of(&entries, self.settings.sync_page_bytes);
        let more = !read_all || page < entries.len();
        entries.truncate(page);
        let mut upto = after;
        for frame in frames_of(&entries) {
            self.send_if_attached(
                sid,
                ServerMsg::Entries {
                    entries: frame.to_vec(),
                    offline: true,
                    after: upto,
                },
            );
            upto = frame.last().map_or(upto, |e| e.seq);
        }
        // Not the last page: what went live meanwhile is in the store, and
        // the next page reads it.
        let live: Vec<Entry> = if more {
            Vec::new()
        } else {
            held.into_iter().filter(|e| e.seq > upto).collect()
        };
        let sent_after = upto;
        upto = live.last().map_or(upto, |e| e.seq);
        if !sync {
            // Delivered once: the other devices will not get these.
            let seqs: Vec<u64> = entries.iter().chain(&live).map(|e| e.seq).collect();
            if !seqs.is_empty() {
                self.out.push_back(Output::Store(StoreOp::MarkDelivered {
                    app,
                    user: user.clone(),
                    seqs,
                }));
            }
        }
        if !live.is_empty() {
            self.send_if_attached(
                sid,
                ServerMsg::Entries {
                    entries: live,
                    offline: false,
                    after: sent_after,
                },
            );
        }
        self.send_if_attached(sid, ServerMsg::Synced { upto, more });
        self.sessions.get_mut(&sid).expect("exists").stream = if more {
            Stream::Unsynced
        } else {
            Stream::Live { upto }
        };
    }

    /// The store could not read: the device hears why and syncs again later.
    fn fail_sync(&mut self, sid: SessionId, token: u64, why: String) {
        if self.take_sync(sid, token).is_none() {
            return;
        }
        self.send_if_attached(
            sid,
            ServerMsg::Error {
                error: store_failed("the catch-up read", &why),
                request: Some("sync".into()),
                client_msg_id: None,
            },
        );
    }

    /// Hands committed rows to the devices of their owners, each on its
    /// stream: sent if it is live, held if it is syncing, left for its next
    /// sync otherwise.
    fn deliver(&mut self, app: AppId, rows: Vec<TimelineRow>) {
        let sync = self.app_config(app).multi_device_sync;
        for row in rows {
            let mut targets = self.sessions_of(app, &row.user);
            let is_message = matches!(row.entry.kind, EntryKind::Message { .. });
            if !sync && is_message {
                // Sync off: once, to the most recent device that can take it
                // now; none can, and it waits for whichever syncs first.
                targets.retain(|s| !matches!(self.sessions[s].stream, Stream::Unsynced));
                targets = targets.last().copied().into_iter().collect();
            }
            for sid in targets {
                let session = self.sessions.get_mut(&sid).expect("exists");
                match &mut session.stream {
                    Stream::Unsynced => {}
                    Stream::Syncing { held, .. } => held.push(row.entry.clone()),
                    Stream::Live { upto } => {
                        let after = std::mem::replace(upto, row.entry.seq);
                        if !sync && is_message {
                            self.out.push_back(Output::Store(StoreOp::MarkDelivered {
                                app,
                                user: row.user.clone(),
                                seqs: vec![row.entry.seq],
                            }));
                        }
                        self.send_if_attached(
                            sid,
                            ServerMsg::Entries {
                                entries: vec![row.entry.clone()],
                                offline: false,
                                after,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Server-side send (admin): as `from`, with `include_sender` mirroring
    /// it to every device of the sender (none of which sent it). `conn` hears
    /// `admin_sent` once the message is durable.
    #[allow(clippy::too_many_arguments)]
    pub fn admin_send(
        &mut self,
        now: Millis,
        conn: super::ConnId,
        app: AppId,
        from: &UserId,
        to: &UserId,
        text: &str,
        include_sender: bool,
    ) -> Result<(), Error> {
        if !self.settings.apps.contains_key(&app) {
            return Err(Error::new(
                ErrorCode::UnknownApp,
                format!("this relay hosts no app {app}"),
            ));
        }
        check_message_text(text)?;
        self.known.entry(app).or_default().insert(from.clone());
        self.known.entry(app).or_default().insert(to.clone());
        let message = self.chat.new_message(now, from, to, text, None);
        let msg_id = message.msg_id.clone();
        let client_msg_id = format!("admin-{msg_id}");
        self.append_message(app, message, client_msg_id, include_sender, |rows| {
            AfterCommit::Admin {
                app,
                conn,
                msg_id,
                rows,
            }
        });
        Ok(())
    }

    /// Stores a new message with its rows in one operation: the recipient's
    /// timeline, and the sender's too when `mirror` (so its devices get it);
    /// `after` is what to do once it is durable. The rows, as written.
    fn append_message(
        &mut self,
        app: AppId,
        message: ChatMessage,
        client_msg_id: String,
        mirror: bool,
        after: impl FnOnce(Vec<TimelineRow>) -> AfterCommit,
    ) -> Vec<TimelineRow> {
        let mut owners = vec![message.to.clone()];
        if mirror && message.from != message.to {
            owners.push(message.from.clone());
        }
        let rows: Vec<TimelineRow> = (owners.into_iter())
            .map(|user| {
                let kind = EntryKind::Message {
                    message: message.clone(),
                };
                self.chat.row(app, user, kind)
            })
            .collect();
        self.chat
            .remember(app, &message, client_msg_id.clone(), false);
        let token = self.commit_token();
        self.out.push_back(Output::Store(StoreOp::AppendMessage {
            token,
            app,
            message,
            client_msg_id,
            rows: rows.clone(),
        }));
        self.chat.pending.insert(token, after(rows.clone()));
        rows
    }

    /// Writes `rows` with the store operation `op` makes of them; once they
    /// are durable they are delivered, or, if the write fails, `sid` hears
    /// which `request` failed (and a `recall` is undone).
    fn commit_rows(
        &mut self,
        sid: SessionId,
        app: AppId,
        rows: Vec<TimelineRow>,
        request: &'static str,
        recall: Option<String>,
        op: impl FnOnce(u64, Vec<TimelineRow>) -> StoreOp,
    ) {
        let token = self.commit_token();
        self.out.push_back(Output::Store(op(token, rows.clone())));
        let after = AfterCommit::Rows {
            app,
            rows,
            by: sid,
            request,
            recall,
        };
        self.chat.pending.insert(token, after);
    }

    fn commit_token(&mut self) -> u64 {
        self.chat.next_token += 1;
        self.chat.next_token
    }

    fn max_recall_ms(&self) -> Millis {
        self.settings
            .apps
            .values()
            .map(|a| a.recall_window_secs * 1000)
            .max()
            .unwrap_or(0)
    }
}
