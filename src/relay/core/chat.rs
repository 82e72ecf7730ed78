//! Chat on the relay: idempotent send, per-user timelines, delivery to every
//! device of both users, recall, read marks, typing, and sync.
//!
//! Every message, recall and read mark is an entry in the timeline of each
//! user it concerns, numbered by a per-user `seq`. A device remembers the
//! last `seq` it applied; `sync` hands it exactly the entries after that,
//! within the compensation window, in order. Nothing is acknowledged or
//! delivered before the store has committed it: the core emits the write,
//! the shell reports `Committed`, and only then do frames go out.

use std::collections::{HashMap, VecDeque};

use super::{Millis, Output, RelayCore, SessionId, StoreOp, StoreReply};
use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, UserId};
use crate::protocol::{ChatMessage, Entry, EntryKind, ServerMsg, check_message_text};

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
    /// Messages young enough to be recalled or resent: (app, message, client id, recalled).
    pub recent: Vec<(AppId, ChatMessage, String, bool)>,
}

struct Sent {
    app: AppId,
    from: UserId,
    to: UserId,
    server_time: Millis,
    client_msg_id: String,
    recalled: bool,
}

/// What to do once the store has done its part.
enum AfterCommit {
    Message {
        app: AppId,
        sender: SessionId,
        msg_id: String,
        client_msg_id: String,
        server_time: Millis,
        rows: Vec<TimelineRow>,
    },
    /// Deliver rows; `except` is the device that caused them (it knows).
    Rows {
        app: AppId,
        rows: Vec<TimelineRow>,
        except: Option<SessionId>,
    },
    /// Send a syncing device what the store read for it.
    Sync { sid: SessionId, after: u64 },
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
    pending: HashMap<u64, AfterCommit>,
    next_token: u64,
    next_msg: u64,
}

impl Chat {
    pub(super) fn from_snapshot(snapshot: ChatSnapshot) -> Chat {
        let mut chat = Chat::default();
        for (app, user, seq) in snapshot.last_seq {
            chat.next_seq.insert((app, user), seq + 1);
        }
        let mut recent = snapshot.recent;
        recent.sort_by_key(|(_, m, _, _)| m.server_time);
        for (app, m, client_msg_id, recalled) in recent {
            chat.remember(app, &m, client_msg_id, recalled);
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
                recalled,
            },
        );
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
    fn new_message(&mut self, now: Millis, from: &UserId, to: &UserId, text: &str) -> ChatMessage {
        self.next_msg += 1;
        ChatMessage {
            msg_id: format!("{:x}-{:x}", now, self.next_msg),
            from: from.clone(),
            to: to.clone(),
            text: text.to_owned(),
            server_time: now,
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

/// How long a client id keeps a resend idempotent: a day, the compensation
/// window's default (a client retries within seconds, not days).
pub const RESEND_WINDOW_MS: Millis = 24 * 3600 * 1000;

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
        if !self
            .known
            .get(&app)
            .is_some_and(|users| users.contains(&to))
        {
            return Err(Error::new(
                ErrorCode::UnknownUser,
                format!("{to} has never logged in to this app; check the UserID"),
            ));
        }
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
            match self.chat.waiting_acks.get_mut(&msg_id) {
                Some(waiting) => waiting.push(sid),
                None => {
                    let server_time = self.chat.messages[&msg_id].server_time;
                    self.send_to_session(
                        sid,
                        ServerMsg::MessageSent {
                            msg_id,
                            client_msg_id: client_msg_id.to_owned(),
                            server_time,
                            seq: None,
                        },
                    );
                }
            }
            return Ok(());
        }
        let sync = self.app_config(app).multi_device_sync;
        let message = self.chat.new_message(now, &from, &to, text);
        let msg_id = message.msg_id.clone();
        let mut rows = Vec::new();
        // With sync on, the sender's timeline mirrors the message to its
        // other devices; with it off, only the recipient's gets it.
        let mut owners = vec![to.clone()];
        if sync && from != to {
            owners.push(from.clone());
        }
        for user in owners {
            rows.push(self.chat.row(
                app,
                user,
                EntryKind::Message {
                    message: message.clone(),
                },
            ));
        }
        self.chat
            .remember(app, &message, client_msg_id.to_owned(), false);
        self.chat.waiting_acks.insert(msg_id.clone(), Vec::new());
        let token = self.commit_token();
        self.out.push_back(Output::Store(StoreOp::AppendMessage {
            token,
            app,
            message,
            client_msg_id: client_msg_id.to_owned(),
            rows: rows.clone(),
        }));
        self.chat.pending.insert(
            token,
            AfterCommit::Message {
                app,
                sender: sid,
                msg_id,
                client_msg_id: client_msg_id.to_owned(),
                server_time: now,
                rows,
            },
        );
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
            return Ok(());
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
        self.write_rows(app, rows, |token, rows| StoreOp::Recall {
            token,
            app,
            msg_id: msg_id.to_owned(),
            rows,
        });
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
        let rows = vec![self.chat.row(app, user, EntryKind::Read { peer, at: now })];
        self.write_rows(app, rows, |token, rows| StoreOp::AppendRows {
            token,
            app,
            rows,
        });
        Ok(())
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

    /// A device asks for what it missed: the store reads it, and live
    /// entries wait until that batch has gone out.
    pub(super) fn start_sync(
        &mut self,
        now: Millis,
        sid: SessionId,
        after: u64,
    ) -> Result<(), Error> {
        let (app, user) = self.identity(sid);
        let window = u64::from(self.app_config(app).compensation_window_days) * 24 * 3600 * 1000;
        let sync = self.app_config(app).multi_device_sync;
        let session = self.sessions.get_mut(&sid).expect("exists");
        if session.syncing.is_some() {
            return Ok(());
        }
        session.syncing = Some(Vec::new());
        let token = self.commit_token();
        self.out.push_back(Output::Store(StoreOp::ReadTimeline {
            token,
            app,
            user,
            after,
            since: now.saturating_sub(window),
            undelivered_only: !sync,
        }));
        self.chat
            .pending
            .insert(token, AfterCommit::Sync { sid, after });
        Ok(())
    }

    /// A page of older messages, read by the store (beyond the compensation
    /// window: the relay keeps every message).
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
            count: count.clamp(1, 500),
        }));
        self.chat
            .pending
            .insert(token, AfterCommit::History { sid, peer });
        Ok(())
    }

    /// The store has done what `token` asked: acknowledge and deliver.
    pub(super) fn committed(&mut self, token: u64, reply: StoreReply) {
        let Some(after) = self.chat.pending.remove(&token) else {
            return;
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
                let waiting = self.chat.waiting_acks.remove(&msg_id).unwrap_or_default();
                // The sender's own row is not delivered to the sending
                // device; the ack carries its seq instead.
                let sender_user = self.sessions.get(&sender).map(|s| s.user.clone());
                let seq = rows
                    .iter()
                    .find(|r| Some(&r.user) == sender_user.as_ref())
                    .map(|r| r.entry.seq);
                for s in std::iter::once(sender).chain(waiting) {
                    self.send_to_session(
                        s,
                        ServerMsg::MessageSent {
                            msg_id: msg_id.clone(),
                            client_msg_id: client_msg_id.clone(),
                            server_time,
                            seq,
                        },
                    );
                }
                self.deliver(app, rows, Some(sender));
            }
            AfterCommit::Rows { app, rows, except } => self.deliver(app, rows, except),
            AfterCommit::Sync { sid, after } => {
                let StoreReply::Entries(read) = reply else {
                    return;
                };
                self.finish_sync(sid, after, read);
            }
            AfterCommit::History { sid, peer } => {
                let StoreReply::Messages(mut messages, more) = reply else {
                    return;
                };
                messages.reverse();
                self.send_to_session(
                    sid,
                    ServerMsg::History {
                        peer,
                        messages,
                        more,
                    },
                );
            }
        }
    }

    fn finish_sync(&mut self, sid: SessionId, after: u64, entries: Vec<Entry>) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let live = session.syncing.take().unwrap_or_default();
        let (app, user) = (session.app, session.user.clone());

        let sync = self.app_config(app).multi_device_sync;
        let upto = entries.last().map_or(after, |e| e.seq);
        if !sync && !entries.is_empty() {
            // Delivered once: the other devices will not get these.
            self.out.push_back(Output::Store(StoreOp::MarkDelivered {
                app,
                user: user.clone(),
                seqs: entries.iter().map(|e| e.seq).collect(),
            }));
        }
        for chunk in entries.chunks(500) {
            self.send_to_session(
                sid,
                ServerMsg::Entries {
                    entries: chunk.to_vec(),
                    offline: true,
                },
            );
        }
        let live: Vec<Entry> = live.into_iter().filter(|e| e.seq > upto).collect();
        let upto = live.last().map_or(upto, |e| e.seq);
        if !live.is_empty() {
            self.send_to_session(
                sid,
                ServerMsg::Entries {
                    entries: live,
                    offline: false,
                },
            );
        }
        self.send_to_session(sid, ServerMsg::Synced { upto });
    }

    /// Hands committed rows to the devices of their owners.
    fn deliver(&mut self, app: AppId, rows: Vec<TimelineRow>, except: Option<SessionId>) {
        let sync = self.app_config(app).multi_device_sync;
        for row in rows {
            let mut targets: Vec<SessionId> = self
                .sessions_of(app, &row.user)
                .into_iter()
                .filter(|s| Some(*s) != except)
                .collect();
            let is_message = matches!(row.entry.kind, EntryKind::Message { .. });
            if !sync && is_message {
                // Sync off: once, to the most recent device that is connected.
                targets.retain(|s| self.sessions[s].conn.is_some());
                targets = targets.last().copied().into_iter().collect();
                if !targets.is_empty() {
                    self.out.push_back(Output::Store(StoreOp::MarkDelivered {
                        app,
                        user: row.user.clone(),
                        seqs: vec![row.entry.seq],
                    }));
                }
            }
            for sid in targets {
                let session = self.sessions.get_mut(&sid).expect("exists");
                match &mut session.syncing {
                    Some(held) => held.push(row.entry.clone()),
                    None => self.send_to_session(
                        sid,
                        ServerMsg::Entries {
                            entries: vec![row.entry.clone()],
                            offline: false,
                        },
                    ),
                }
            }
        }
    }

    /// Server-side send (admin): as `from`, with `include_sender` mirroring
    /// it to every device of the sender (none of which sent it).
    pub fn admin_send(
        &mut self,
        now: Millis,
        app: AppId,
        from: &UserId,
        to: &UserId,
        text: &str,
        include_sender: bool,
    ) -> Result<String, Error> {
        if !self.settings.apps.contains_key(&app) {
            return Err(Error::new(
                ErrorCode::UnknownApp,
                format!("this relay hosts no app {app}"),
            ));
        }
        check_message_text(text)?;
        self.known.entry(app).or_default().insert(from.clone());
        self.known.entry(app).or_default().insert(to.clone());
        let message = self.chat.new_message(now, from, to, text);
        let msg_id = message.msg_id.clone();
        let mut owners = vec![to.clone()];
        if include_sender && from != to {
            owners.push(from.clone());
        }
        let mut rows = Vec::new();
        for user in owners {
            rows.push(self.chat.row(
                app,
                user,
                EntryKind::Message {
                    message: message.clone(),
                },
            ));
        }
        let client_msg_id = format!("admin-{msg_id}");
        self.chat
            .remember(app, &message, client_msg_id.clone(), false);
        self.write_rows(app, rows, |token, rows| StoreOp::AppendMessage {
            token,
            app,
            message,
            client_msg_id,
            rows,
        });
        Ok(msg_id)
    }

    /// Writes rows; once they are durable, delivers them to every device of
    /// their owners.
    fn write_rows(
        &mut self,
        app: AppId,
        rows: Vec<TimelineRow>,
        op: impl FnOnce(u64, Vec<TimelineRow>) -> StoreOp,
    ) {
        let token = self.commit_token();
        self.out.push_back(Output::Store(op(token, rows.clone())));
        self.chat.pending.insert(
            token,
            AfterCommit::Rows {
                app,
                rows,
                except: None,
            },
        );
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
