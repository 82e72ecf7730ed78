//! The relay's logic as a plain state machine: sessions, login, resume,
//! presence, device limits and kick-out, heartbeats, grace periods.
//!
//! It never reads a clock, touches a socket or spawns a task: the shell feeds
//! it `Input`s stamped with the time, drains `Output`s, and calls
//! `handle_timeout` when `poll_timeout` comes due. Tests drive it on virtual
//! time.

mod calls;
mod chat;
pub mod settings;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use chat::{ChatSnapshot, RESEND_WINDOW_MS, RecentMessage, TimelineRow};
pub use settings::{AppConfig, RateLimits, Settings};

use crate::error::{Error, ErrorCode, quoted};
use crate::ids::{AppId, DeviceId, Platform, UserId};
use crate::protocol::{
    ChatMessage, ClientMsg, DeviceInfo, Entry, KickReason, MediaPeer, RoomId, ServerMsg,
    UserPresence, media_source,
};
use crate::relay::rate::Bucket;
use crate::usersig;

/// One page of the user list on the wire: well inside the frame limit, and
/// a small share of a connection's queue.
const USERS_PAGE_BYTES: usize = 48 * 1024;

/// Messages kept for a detached session during its grace period.
const HELD_PER_SESSION: usize = 256;

/// Unix time in milliseconds: the only clock the core knows.
pub type Millis = u64;

/// A connection, numbered by the shell.
pub type ConnId = u64;

type SessionId = u64;

/// What the shell tells the core.
#[derive(Debug)]
pub enum Input {
    Connected {
        conn: ConnId,
        /// Where it comes from, for the log.
        peer: SocketAddr,
    },
    Frame {
        conn: ConnId,
        msg: ClientMsg,
    },
    /// A frame that failed to decode; the core answers it.
    BadFrame {
        conn: ConnId,
        error: Error,
    },
    Disconnected {
        conn: ConnId,
    },
    /// The store did what `token` asked.
    Committed {
        token: u64,
        reply: StoreReply,
    },
}

/// Why the core asks the shell to close a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Kicked,
    /// The same client came back on another connection (resume).
    Superseded,
    HeartbeatTimeout,
    /// Connected, and no login in time.
    LoginTimeout,
}

/// What the core asks of the shell, in order.
#[derive(Debug, PartialEq)]
pub enum Output {
    Send {
        conn: ConnId,
        msg: ServerMsg,
    },
    /// Close after the frames already queued for it.
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    Store(StoreOp),
    /// The connections whose media meet in `room` now (none: the room is
    /// closed), and those of them that only listen (the audience). The
    /// shell forwards binary frames by it.
    MediaRoom {
        room: RoomId,
        members: Vec<(ConnId, UserId)>,
        audience: Vec<ConnId>,
    },
}

/// What the store answers to work with a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreReply {
    /// Written durably.
    Done,
    /// A timeline read.
    Entries(Vec<Entry>),
    /// A page of a conversation, newest first, and whether older ones remain.
    Messages(Vec<ChatMessage>, bool),
    /// It could not be done (a full disk, a broken database): nothing of it
    /// was written.
    Failed(String),
}

/// Work for the store. Those with a `token` are answered with
/// `Input::Committed` once done (written durably, or read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    AppendMessage {
        token: u64,
        app: AppId,
        message: ChatMessage,
        client_msg_id: String,
        rows: Vec<TimelineRow>,
    },
    /// Forgets the message's text and appends the recall rows.
    Recall {
        token: u64,
        app: AppId,
        msg_id: String,
        rows: Vec<TimelineRow>,
    },
    AppendRows {
        token: u64,
        app: AppId,
        rows: Vec<TimelineRow>,
    },
    /// Sync off: these entries reached a device and go to no other.
    MarkDelivered {
        app: AppId,
        user: UserId,
        seqs: Vec<u64>,
    },
    /// Reads up to `limit` of a user's entries after `after`, written at
    /// or after `since`.
    ReadTimeline {
        token: u64,
        app: AppId,
        user: UserId,
        after: u64,
        since: Millis,
        undelivered_only: bool,
        limit: usize,
    },
    /// Reads up to `count` messages between two users before `before`.
    ReadHistory {
        token: u64,
        app: AppId,
        user: UserId,
        peer: UserId,
        before: Option<Millis>,
        count: u32,
        /// The page stops at this many bytes of encoded messages (at least
        /// one message), however many `count` asks for.
        max_bytes: usize,
    },
    RecordLogin {
        app: AppId,
        user: UserId,
        device: DeviceId,
        platform: Platform,
        at: Millis,
    },
    /// Forgets messages and timeline entries written before `before`
    /// (`relay.retention_days`), and logs the database's size.
    Prune { before: Millis },
}

impl StoreOp {
    /// The token its answer carries, for work that is answered.
    pub fn token(&self) -> Option<u64> {
        match self {
            StoreOp::AppendMessage { token, .. }
            | StoreOp::Recall { token, .. }
            | StoreOp::AppendRows { token, .. }
            | StoreOp::ReadTimeline { token, .. }
            | StoreOp::ReadHistory { token, .. } => Some(*token),
            StoreOp::MarkDelivered { .. } | StoreOp::RecordLogin { .. } | StoreOp::Prune { .. } => {
                None
            }
        }
    }

    /// A name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreOp::AppendMessage { .. } => "append_message",
            StoreOp::Recall { .. } => "recall",
            StoreOp::AppendRows { .. } => "append_rows",
            StoreOp::MarkDelivered { .. } => "mark_delivered",
            StoreOp::ReadTimeline { .. } => "read_timeline",
            StoreOp::ReadHistory { .. } => "read_history",
            StoreOp::RecordLogin { .. } => "record_login",
            StoreOp::Prune { .. } => "prune",
        }
    }
}

/// Who a verified login is for.
struct Login {
    app: AppId,
    user: UserId,
    device: DeviceId,
    platform: Platform,
    ticket_expires_at: Millis,
}

struct Session {
    app: AppId,
    user: UserId,
    device: DeviceId,
    platform: Platform,
    token: String,
    conn: Option<ConnId>,
    ticket_expires_at: Millis,
    /// Rings for the user's calls even when it is not the latest login.
    multi_device: bool,
    /// Takes a new call as a waiting one while in a connected call.
    call_waiting: bool,
    /// Call messages for the session while it has no connection, delivered
    /// on resume (bounded: the oldest go first; the `call_state` that follows
    /// them is what the device relies on). Chat is never held: the device's
    /// sync reads it from the store.
    held: VecDeque<ServerMsg>,
    /// Its stream of timeline entries.
    stream: chat::Stream,
    /// How often it may do what is rate-limited.
    buckets: Buckets,
}

/// A session's token buckets (`relay.rate_limits`).
struct Buckets {
    typing: Bucket,
    read_marks: Bucket,
    calls: Bucket,
}

impl Buckets {
    fn new(limits: &RateLimits, now: Millis) -> Buckets {
        Buckets {
            typing: limits.typing.bucket(now),
            read_marks: limits.read_marks.bucket(now),
            calls: limits.calls.bucket(now),
        }
    }
}

struct Conn {
    peer: SocketAddr,
    session: Option<SessionId>,
    /// Since when it has been neither logged in nor an admin connection
    /// (from its start, or its logout): past `relay.login_timeout_secs`
    /// so, it is closed. A logged-out connection is no cheaper to hold
    /// than one that never logged in.
    signed_out_since: Option<Millis>,
    last_seen: Millis,
    subscribed: bool,
    /// Its `login`s and `resume`s (`relay.rate_limits.logins`).
    logins: Bucket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Heartbeat(ConnId),
    Login(ConnId),
    Grace(SessionId),
    TicketExpiry(SessionId),
    CallTimeout(u64),
}

pub struct RelayCore {
    settings: Settings,
    /// Time of the input being handled (an input, never read from a clock).
    now: Millis,
    calls: calls::Calls,
    chat: chat::Chat,
    rng: StdRng,
    next_session: SessionId,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<SessionId, Session>,
    /// Sessions of each user, earliest login first.
    by_user: HashMap<(AppId, UserId), Vec<SessionId>>,
    by_token: HashMap<String, SessionId>,
    /// Every user that ever logged in, per app (the store's snapshot plus new ones).
    known: HashMap<AppId, BTreeSet<UserId>>,
    subscribers: HashMap<AppId, HashSet<ConnId>>,
    /// Detached sessions and when their grace ends.
    detached: HashMap<SessionId, Millis>,
    timers: BinaryHeap<Reverse<(Millis, Timer)>>,
    /// The media routes the shell was last told.
    media_routes: BTreeMap<RoomId, calls::MediaRoute>,
    audit: Audit,
    out: VecDeque<Output>,
}

/// Lines of the audit log (failed logins, refused admin tokens) a minute:
/// enough to see an attack, too few for one to flood the log.
const AUDIT_LINES_PER_MINUTE: u32 = 20;

/// The audit log's own rate limit; what it holds back is counted in the
/// next line it lets through (`skipped`).
#[derive(Debug, Default)]
pub(super) struct Audit {
    minute_from: Millis,
    lines: u32,
    skipped: u64,
}

impl Audit {
    /// Whether a line may be written now, with how many were held back
    /// since the last one.
    pub(super) fn admit(&mut self, now: Millis) -> Option<u64> {
        if now >= self.minute_from + 60_000 {
            self.minute_from = now;
            self.lines = 0;
        }
        if self.lines < AUDIT_LINES_PER_MINUTE {
            self.lines += 1;
            Some(std::mem::take(&mut self.skipped))
        } else {
            self.skipped += 1;
            None
        }
    }
}

impl RelayCore {
    /// `known_users` is the store's list of users; `seed` feeds the session
    /// tokens (random in the shell, fixed in tests).
    pub fn new(
        settings: Settings,
        known_users: impl IntoIterator<Item = (AppId, UserId)>,
        chat: ChatSnapshot,
        seed: u64,
    ) -> Self {
        let mut known: HashMap<AppId, BTreeSet<UserId>> = HashMap::new();
        for (app, user) in known_users {
            known.entry(app).or_default().insert(user);
        }
        RelayCore {
            settings,
            now: 0,
            calls: calls::Calls::default(),
            chat: chat::Chat::from_snapshot(chat),
            rng: StdRng::seed_from_u64(seed),
            next_session: 1,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            by_user: HashMap::new(),
            by_token: HashMap::new(),
            known,
            subscribers: HashMap::new(),
            detached: HashMap::new(),
            timers: BinaryHeap::new(),
            media_routes: BTreeMap::new(),
            audit: Audit::default(),
            out: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Number of sessions, attached or in their grace period.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of calls ringing or running.
    pub fn call_count(&self) -> usize {
        self.calls_running()
    }

    pub fn handle(&mut self, now: Millis, input: Input) {
        self.now = now;
        self.handle_input(now, input);
        self.publish_media_routes();
    }

    fn handle_input(&mut self, now: Millis, input: Input) {
        match input {
            Input::Connected { conn, peer } => {
                self.conns.insert(
                    conn,
                    Conn {
                        peer,
                        session: None,
                        signed_out_since: Some(now),
                        last_seen: now,
                        subscribed: false,
                        logins: self.settings.rate_limits.logins.bucket(now),
                    },
                );
                self.schedule(
                    now + self.settings.heartbeat_timeout_ms,
                    Timer::Heartbeat(conn),
                );
                self.schedule(now + self.settings.login_timeout_ms, Timer::Login(conn));
            }
            Input::Frame { conn, msg } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                c.last_seen = now;
                self.frame(now, conn, msg);
            }
            Input::BadFrame { conn, error } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_seen = now;
                    self.send(conn, ServerMsg::unprompted(error));
                }
            }
            Input::Disconnected { conn } => self.drop_conn(now, conn),
            Input::Committed { token, reply } => self.committed(token, reply),
        }
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = now;
        self.fire_timers(now);
        self.publish_media_routes();
    }

    /// Fires the timers due at `now`.
    fn fire_timers(&mut self, now: Millis) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Heartbeat(conn) => {
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    let due = c.last_seen + self.settings.heartbeat_timeout_ms;
                    if due > now {
                        self.schedule(due, Timer::Heartbeat(conn));
                    } else {
                        self.out.push_back(Output::Close {
                            conn,
                            reason: CloseReason::HeartbeatTimeout,
                        });
                        self.drop_conn(now, conn);
                    }
                }
                Timer::Login(conn) => {
                    let timeout = self.settings.login_timeout_ms;
                    let signed_out = self.conns.get(&conn).and_then(|c| c.signed_out_since);
                    if signed_out.is_some_and(|since| since + timeout <= now) {
                        if let Some(skipped) = self.audit.admit(now) {
                            tracing::warn!(
                                target: "termphone::audit",
                                conn, peer = self.peer(conn), skipped,
                                "closed: no login within relay.login_timeout_secs"
                            );
                        }
                        let error = Error::new(
                            ErrorCode::LoginTimeout,
                            format!(
                                "no login within {} s of connecting or logging out \
                                 (relay.login_timeout_secs); send login right after connecting",
                                timeout / 1000
                            ),
                        );
                        self.send(conn, ServerMsg::unprompted(error));
                        self.out.push_back(Output::Close {
                            conn,
                            reason: CloseReason::LoginTimeout,
                        });
                        self.drop_conn(now, conn);
                    }
                }
                Timer::Grace(sid) => {
                    if self.detached.get(&sid).is_some_and(|&end| end <= now) {
                        if let Some(s) = self.sessions.get(&sid) {
                            tracing::info!(
                                app = s.app, user = %s.user, device = %s.device,
                                "session over: not back within its grace period"
                            );
                        }
                        self.end_session(sid);
                    }
                }
                Timer::CallTimeout(key) => self.call_timeout(now, key),
                Timer::TicketExpiry(sid) => {
                    let Some(s) = self.sessions.get(&sid) else {
                        continue;
                    };
                    if s.ticket_expires_at > now {
                        continue;
                    }
                    let conn = s.conn;
                    if let Some(conn) = conn {
                        self.send(conn, ServerMsg::UserSigExpired);
                    }
                    self.end_session(sid);
                    if let Some(conn) = conn {
                        self.signed_out(now, conn);
                    }
                }
            }
        }
    }

    fn frame(&mut self, now: Millis, conn: ConnId, msg: ClientMsg) {
        let kind = msg.kind();
        // A device sending several messages at once must tell which failed.
        let client_msg_id = match &msg {
            ClientMsg::SendMessage { client_msg_id, .. } => Some(client_msg_id.clone()),
            _ => None,
        };
        let result = self.throttle(now, conn, &msg).and_then(|()| match msg {
            ClientMsg::Heartbeat => {
                self.send(conn, ServerMsg::HeartbeatAck);
                Ok(())
            }
            ClientMsg::Login {
                app,
                user,
                device,
                platform,
                user_sig,
            } => {
                if let Err(error) = self.login(now, conn, app, &user, &device, &platform, &user_sig)
                {
                    if let Some(skipped) = self.audit.admit(now) {
                        // The ids as the client sent them, but cut: 20 lines
                        // a minute of 120 KB ids would still flood the log.
                        let (user, device) = (quoted(&user), quoted(&device));
                        tracing::warn!(
                            target: "termphone::audit",
                            conn, peer = self.peer(conn), app, %user, %device, code = error.code.code(), skipped,
                            "login refused: {}", error.message
                        );
                    }
                    self.send(
                        conn,
                        ServerMsg::LoginFailed {
                            error: error.into(),
                        },
                    );
                }
                Ok(())
            }
            ClientMsg::Resume { session } => {
                if let Err(error) = self.resume(now, conn, &session) {
                    self.send(
                        conn,
                        ServerMsg::ResumeFailed {
                            error: error.into(),
                        },
                    );
                }
                Ok(())
            }
            ClientMsg::AdminSend {
                token,
                app,
                from,
                to,
                text,
                include_sender,
            } => self
                .admin_authorized(&token)
                .inspect(|()| {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.signed_out_since = None;
                    }
                })
                .inspect_err(|_| {
                    if let Some(skipped) = self.audit.admit(now) {
                        tracing::warn!(
                            target: "termphone::audit",
                            conn, peer = self.peer(conn), skipped, "admin token refused"
                        );
                    }
                })
                .and_then(|()| Ok((UserId::parse(&from)?, UserId::parse(&to)?)))
                .and_then(|(from, to)| {
                    self.admin_send(now, conn, app, &from, &to, &text, include_sender)
                }),
            msg => self
                .session_of(conn)
                .and_then(|sid| self.session_frame(now, conn, sid, msg)),
        });
        if let Err(error) = result {
            self.send(
                conn,
                ServerMsg::Error {
                    error: error.into(),
                    request: Some(kind.into()),
                    client_msg_id,
                },
            );
        }
    }

    /// A frame that needs a logged-in session: `sid` is its connection's.
    fn session_frame(
        &mut self,
        now: Millis,
        conn: ConnId,
        sid: SessionId,
        msg: ClientMsg,
    ) -> Result<(), Error> {
        match msg {
            ClientMsg::Logout => {
                let s = &self.sessions[&sid];
                tracing::info!(conn, app = s.app, user = %s.user, device = %s.device, "logged out");
                self.end_session(sid);
                self.send(conn, ServerMsg::LoggedOut);
                self.signed_out(now, conn);
                Ok(())
            }
            ClientMsg::MultiDevice { enable } => {
                self.sessions.get_mut(&sid).expect("exists").multi_device = enable;
                Ok(())
            }
            ClientMsg::CallWaiting { enable } => {
                self.sessions.get_mut(&sid).expect("exists").call_waiting = enable;
                Ok(())
            }
            ClientMsg::Call {
                invitees,
                group,
                timeout_secs,
                user_data,
            } => self.place_call(now, sid, &invitees, group, timeout_secs, user_data),
            ClientMsg::Accept {
                call_id,
                end_current,
            } => self.answer(now, sid, &call_id, end_current),
            ClientMsg::Reject { call_id } => self.decline(sid, &call_id),
            ClientMsg::Ignore { call_id } => self.ignore(sid, &call_id),
            ClientMsg::Microphone { on } => self.microphone(sid, on),
            ClientMsg::Hold { call_id, on_hold } => self.hold(sid, &call_id, on_hold),
            ClientMsg::Transfer { call_id, to } => self.transfer(now, sid, &call_id, &to),
            ClientMsg::Hangup { call_id } => self.hangup(now, sid, &call_id),
            ClientMsg::Invite { call_id, users } => self.invite_more(now, sid, &call_id, &users),
            ClientMsg::Join { room, role } => self.join_room(now, sid, room, role),
            ClientMsg::SwitchRole { call_id, role } => self.switch_role(sid, &call_id, role),
            ClientMsg::SendMessage {
                to,
                text,
                client_msg_id,
            } => self.send_message(now, sid, &to, &text, &client_msg_id),
            ClientMsg::RecallMessage { msg_id } => self.recall_message(now, sid, &msg_id),
            ClientMsg::MarkRead { peer } => self.mark_read(now, sid, &peer),
            ClientMsg::Typing { to } => self.typing(sid, &to),
            ClientMsg::History {
                peer,
                before,
                count,
            } => self.history(sid, &peer, before, count),
            ClientMsg::Sync { after } => self.start_sync(now, sid, after),
            ClientMsg::ListUsers { subscribe, after } => {
                let app = self.sessions[&sid].app;
                let (users, more) = self.users_page(app, after.as_deref());
                self.send(conn, ServerMsg::Users { users, more });
                if subscribe {
                    self.subscribers.entry(app).or_default().insert(conn);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.subscribed = true;
                    }
                }
                Ok(())
            }
            ClientMsg::Heartbeat
            | ClientMsg::Login { .. }
            | ClientMsg::Resume { .. }
            | ClientMsg::AdminSend { .. } => unreachable!("answered without a session"),
        }
    }

    /// Ends the earliest of `sessions` (earliest login first) so that one
    /// more fits under `limit`.
    fn make_room(&mut self, sessions: &[SessionId], limit: usize, message: &str) {
        let excess = (sessions.len() + 1).saturating_sub(limit);
        for &victim in sessions.iter().take(excess) {
            match self.sessions[&victim].conn {
                Some(old) => self.kick_conn(old, KickReason::DeviceLimit, message.to_owned()),
                None => self.end_session(victim),
            }
        }
    }

    /// Refuses what the session does more often than its rate limits allow.
    fn throttle(&mut self, now: Millis, conn: ConnId, msg: &ClientMsg) -> Result<(), Error> {
        let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) else {
            return Ok(());
        };
        let limits = self.settings.rate_limits;
        let buckets = &mut self.sessions.get_mut(&sid).expect("exists").buckets;
        let (bucket, what, rate) = match msg {
            ClientMsg::Typing { .. } => (&mut buckets.typing, "typing notices", limits.typing),
            ClientMsg::MarkRead { .. } => {
                (&mut buckets.read_marks, "read marks", limits.read_marks)
            }
            ClientMsg::Call { .. }
            | ClientMsg::Invite { .. }
            | ClientMsg::Join { .. }
            | ClientMsg::SwitchRole { .. }
            | ClientMsg::Transfer { .. } => {
                (&mut buckets.calls, "calls and invitations", limits.calls)
            }
            _ => return Ok(()),
        };
        if bucket.take(now) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::RateLimited,
            format!(
                "too many {what}: at most {} a second, {} at once (relay.rate_limits); \
                 try again in {} ms",
                rate.per_sec,
                rate.burst,
                bucket.wait_ms(now)
            ),
        ))
    }

    /// One more `login` or `resume` on `conn`, within
    /// `relay.rate_limits.logins`: a connection looping on login and
    /// logout would otherwise cost a store write and a presence change to
    /// every subscriber each turn.
    fn take_login(&mut self, now: Millis, conn: ConnId) -> Result<(), Error> {
        let rate = self.settings.rate_limits.logins;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        if c.logins.take(now) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::RateLimited,
            format!(
                "too many logins on one connection: at most {} a second, {} at once \
                 (relay.rate_limits.logins); try again in {} ms",
                rate.per_sec,
                rate.burst,
                c.logins.wait_ms(now)
            ),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn login(
        &mut self,
        now: Millis,
        conn: ConnId,
        app: AppId,
        user: &str,
        device: &str,
        platform: &str,
        user_sig: &str,
    ) -> Result<(), Error> {
        self.take_login(now, conn)?;
        let user = UserId::parse(user)?;
        let device = DeviceId::parse(device)?;
        let platform = Platform::parse(platform)?;
        let ticket_expires_at = self.check_ticket(now, app, &user, user_sig)?;

        // Logging in as someone else on this connection switches accounts:
        // the first user is logged out implicitly.
        if let Some(sid) = self.conns.get(&conn).and_then(|c| c.session) {
            let s = &self.sessions[&sid];
            if (s.app, &s.user, &s.device) != (app, &user, &device) {
                self.end_session(sid);
            }
        }
        let login = Login {
            app,
            user,
            device,
            platform,
            ticket_expires_at,
        };
        let same_device = (self.sessions_of(app, &login.user).into_iter())
            .find(|sid| self.sessions[sid].device == login.device);
        let sid = match same_device {
            Some(sid) => self.reattach(conn, sid, login),
            None => self.open_session(now, conn, login),
        };
        self.welcome(now, conn, sid);
        Ok(())
    }

    /// When the ticket stops being honoured (unix ms), if it is honoured now.
    fn check_ticket(
        &self,
        now: Millis,
        app: AppId,
        user: &UserId,
        user_sig: &str,
    ) -> Result<Millis, Error> {
        let app_config = self.settings.apps.get(&app).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownApp,
                format!("this relay hosts no app {app}; check the SDKAppID"),
            )
        })?;
        let ticket = usersig::verify(&app_config.secret, user_sig, app, user, now / 1000)?;
        let lifetime = ticket.lifetime.min(app_config.max_ticket_lifetime_secs);
        let expires_at = ticket
            .issued_at
            .saturating_add(lifetime)
            .saturating_mul(1000);
        if expires_at <= now {
            return Err(Error::new(
                ErrorCode::UserSigExpiredRelay,
                format!(
                    "the UserSig has expired: this relay honours a ticket for at most {} s \
                     (max_ticket_lifetime_secs of app {app}); mint a fresh one",
                    app_config.max_ticket_lifetime_secs
                ),
            ));
        }
        Ok(expires_at)
    }

    /// The same device again: it keeps its session (and, later, its calls);
    /// another connection holding it is kicked.
    fn reattach(&mut self, conn: ConnId, sid: SessionId, login: Login) -> SessionId {
        if let Some(old) = self.sessions[&sid].conn.filter(|&c| c != conn) {
            self.evict_conn(
                old,
                KickReason::SameDevice,
                format!(
                    "device {} of {} logged in on another connection",
                    login.device, login.user
                ),
            );
        }
        self.detached.remove(&sid);
        let order = (self.by_user.get_mut(&(login.app, login.user))).expect("indexed");
        order.retain(|&s| s != sid);
        order.push(sid);
        let token = self.token();
        let s = self.sessions.get_mut(&sid).expect("exists");
        self.by_token.remove(&s.token);
        s.token = token.clone();
        s.platform = login.platform;
        s.ticket_expires_at = login.ticket_expires_at;
        self.attach(sid, Some(conn));
        self.by_token.insert(token, sid);
        sid
    }

    /// A new device: the earliest of the user's devices make room for it
    /// when it would go over the app's limits.
    fn open_session(&mut self, now: Millis, conn: ConnId, login: Login) -> SessionId {
        let Login {
            app,
            user,
            device,
            platform,
            ticket_expires_at,
        } = login;
        let app_config = self.app_config(app);
        let limit = app_config.device_limit(&platform) as usize;
        let max_devices = app_config.max_devices_per_user as usize;
        let same_platform: Vec<SessionId> = (self.sessions_of(app, &user).into_iter())
            .filter(|sid| self.sessions[sid].platform == platform)
            .collect();
        self.make_room(
            &same_platform,
            limit,
            &format!(
                "{user} logged in on another {platform} device; at most {limit} may be online at once"
            ),
        );
        // And across platforms, whatever labels they name.
        let all = self.sessions_of(app, &user);
        self.make_room(
            &all,
            max_devices,
            &format!(
                "{user} logged in on another device; at most {max_devices} may be online at once"
            ),
        );
        let sid = self.next_session;
        self.next_session += 1;
        let token = self.token();
        self.by_token.insert(token.clone(), sid);
        self.by_user
            .entry((app, user.clone()))
            .or_default()
            .push(sid);
        self.sessions.insert(
            sid,
            Session {
                app,
                user,
                device,
                platform,
                token,
                conn: Some(conn),
                ticket_expires_at,
                multi_device: false,
                call_waiting: false,
                held: VecDeque::new(),
                stream: chat::Stream::Unsynced,
                buckets: Buckets::new(&self.settings.rate_limits, now),
            },
        );
        sid
    }

    /// `conn` is no longer logged in: it has the login deadline again.
    fn signed_out(&mut self, now: Millis, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.signed_out_since = Some(now);
            self.schedule(now + self.settings.login_timeout_ms, Timer::Login(conn));
        }
    }

    /// A login accepted: the device hears so, then what it missed, and the
    /// others see it online.
    fn welcome(&mut self, now: Millis, conn: ConnId, sid: SessionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid);
            c.signed_out_since = None;
        }
        let s = &self.sessions[&sid];
        let (app, user, device, platform) =
            (s.app, s.user.clone(), s.device.clone(), s.platform.clone());
        let (session, ticket_expires_at) = (s.token.clone(), s.ticket_expires_at);
        self.schedule(ticket_expires_at, Timer::TicketExpiry(sid));
        if self.known.entry(app).or_default().insert(user.clone()) {
            tracing::info!(app, %user, "new user");
        }
        tracing::info!(conn, peer = self.peer(conn), app, %user, %device, %platform, "logged in");
        self.out.push_back(Output::Store(StoreOp::RecordLogin {
            app,
            user: user.clone(),
            device: device.clone(),
            platform,
            at: now,
        }));
        self.send(
            conn,
            ServerMsg::LoginOk {
                user: user.clone(),
                device,
                session,
                server_time: now,
            },
        );
        self.deliver_held(sid);
        self.broadcast_presence(app, &user);
        self.calls_on_online(sid);
        self.send_call_state(now, sid);
    }

    fn resume(&mut self, now: Millis, conn: ConnId, token: &str) -> Result<(), Error> {
        self.take_login(now, conn)?;
        let sid = self.by_token.get(token).copied().ok_or_else(|| {
            Error::new(
                ErrorCode::SessionExpired,
                "the session is gone (its grace period ended or it was replaced); log in again",
            )
        })?;
        if self.sessions[&sid].ticket_expires_at <= now {
            self.end_session(sid);
            return Err(Error::new(
                ErrorCode::UserSigExpiredRelay,
                "the UserSig expired while the device was away; log in with a fresh one",
            ));
        }
        if let Some(old) = self.sessions[&sid].conn.filter(|&c| c != conn) {
            // A half-open connection of the same client: close it quietly.
            if let Some(c) = self.conns.get_mut(&old) {
                c.session = None;
            }
            self.out.push_back(Output::Close {
                conn: old,
                reason: CloseReason::Superseded,
            });
            self.drop_conn(now, old);
        }
        if let Some(other) = self
            .conns
            .get(&conn)
            .and_then(|c| c.session)
            .filter(|&s| s != sid)
        {
            self.end_session(other);
        }
        self.detached.remove(&sid);
        self.attach(sid, Some(conn));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid);
            c.signed_out_since = None;
        }
        let s = &self.sessions[&sid];
        tracing::info!(conn, peer = self.peer(conn), app = s.app, user = %s.user, device = %s.device, "resumed");
        self.send(conn, ServerMsg::Resumed { server_time: now });
        self.deliver_held(sid);
        self.calls_on_online(sid);
        self.send_call_state(now, sid);
        Ok(())
    }

    /// Where a connection comes from, as a log field (none once it is gone).
    fn peer(&self, conn: ConnId) -> Option<tracing::field::DisplayValue<SocketAddr>> {
        self.conns
            .get(&conn)
            .map(|c| tracing::field::display(c.peer))
    }

    fn session_of(&self, conn: ConnId) -> Result<SessionId, Error> {
        self.conns
            .get(&conn)
            .and_then(|c| c.session)
            .ok_or_else(|| Error::new(ErrorCode::NotLoggedIn, "log in first (wait for login_ok)"))
    }

    /// Tells a connection it was kicked and closes it, leaving its session
    /// detached; returns that session.
    fn evict_conn(
        &mut self,
        conn: ConnId,
        reason: KickReason,
        message: String,
    ) -> Option<SessionId> {
        tracing::info!(conn, reason = reason.as_str(), "kick");
        self.send(conn, ServerMsg::KickedOut { reason, message });
        self.out.push_back(Output::Close {
            conn,
            reason: CloseReason::Kicked,
        });
        let sid = self.conns.remove(&conn).and_then(|c| c.session);
        self.unsubscribe(conn);
        if let Some(sid) = sid.filter(|sid| self.sessions.contains_key(sid)) {
            self.attach(sid, None);
        }
        sid
    }

    /// Kicks a connection out and ends its session.
    fn kick_conn(&mut self, conn: ConnId, reason: KickReason, message: String) {
        if let Some(sid) = self.evict_conn(conn, reason, message) {
            self.end_session(sid);
        }
    }

    /// The connection is gone: its session, if any, waits out its grace period.
    fn drop_conn(&mut self, now: Millis, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.unsubscribe(conn);
        if let Some(sid) = c.session
            && self.sessions[&sid].conn == Some(conn)
        {
            let s = &self.sessions[&sid];
            tracing::info!(
                conn, peer = %c.peer, app = s.app, user = %s.user, device = %s.device,
                grace_secs = self.settings.session_grace_ms / 1000,
                "disconnected; the session waits out its grace period"
            );
            self.attach(sid, None);
            let end = now + self.settings.session_grace_ms;
            self.detached.insert(sid, end);
            self.schedule(end, Timer::Grace(sid));
        }
    }

    /// The session has no connection now, or a new one that has not
    /// synced; its calls' media follows it.
    fn attach(&mut self, sid: SessionId, conn: Option<ConnId>) {
        let s = self.sessions.get_mut(&sid).expect("exists");
        s.conn = conn;
        s.stream = chat::Stream::Unsynced;
        self.session_moved(sid);
    }

    fn end_session(&mut self, sid: SessionId) {
        if !self.sessions.contains_key(&sid) {
            return;
        }
        self.calls_on_session_end(self.now, sid);
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.detached.remove(&sid);
        self.by_token.remove(&s.token);
        let key = (s.app, s.user.clone());
        if let Some(order) = self.by_user.get_mut(&key) {
            order.retain(|&x| x != sid);
            if order.is_empty() {
                self.by_user.remove(&key);
            }
        }
        if let Some(conn) = s.conn
            && let Some(c) = self.conns.get_mut(&conn)
        {
            c.session = None;
            if c.subscribed {
                c.subscribed = false;
                self.unsubscribe(conn);
            }
        }
        self.broadcast_presence(s.app, &s.user);
    }

    fn unsubscribe(&mut self, conn: ConnId) {
        for subs in self.subscribers.values_mut() {
            subs.remove(&conn);
        }
    }

    /// A page of the app's users after `after`, in UserID order, within
    /// `USERS_PAGE_BYTES` on the wire; and whether more follow.
    fn users_page(&self, app: AppId, after: Option<&str>) -> (Vec<UserPresence>, bool) {
        use std::ops::Bound;
        let Some(known) = self.known.get(&app) else {
            return (Vec::new(), false);
        };
        let after = after.and_then(|a| UserId::parse(a).ok());
        let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = Vec::new();
        let mut bytes = 0;
        for user in known.range((from, Bound::Unbounded)) {
            let presence = self.presence(app, user);
            bytes += serde_json::to_string(&presence).map_or(0, |s| s.len()) + 1;
            if bytes > USERS_PAGE_BYTES && !page.is_empty() {
                return (page, true);
            }
            page.push(presence);
        }
        (page, false)
    }

    /// A session's device, as other devices are told of it.
    fn device_info(&self, sid: SessionId) -> DeviceInfo {
        let s = &self.sessions[&sid];
        DeviceInfo {
            device: s.device.clone(),
            platform: s.platform.clone(),
        }
    }

    fn presence(&self, app: AppId, user: &UserId) -> UserPresence {
        let devices = self
            .by_user
            .get(&(app, user.clone()))
            .into_iter()
            .flatten()
            .map(|&sid| self.device_info(sid))
            .collect();
        UserPresence {
            user: user.clone(),
            devices,
            in_call: self.in_call(app, user),
        }
    }

    fn broadcast_presence(&mut self, app: AppId, user: &UserId) {
        let Some(subs) = self.subscribers.get(&app) else {
            return;
        };
        let mut subs: Vec<ConnId> = subs.iter().copied().collect();
        subs.sort_unstable();
        let presence = self.presence(app, user);
        for conn in subs {
            self.send(
                conn,
                ServerMsg::Presence {
                    user: presence.clone(),
                },
            );
        }
    }

    /// Checks an admin token in constant time.
    fn admin_authorized(&self, token: &str) -> Result<(), Error> {
        use hmac::Mac;
        let denied = || {
            Error::new(
                ErrorCode::AdminDenied,
                "admin API: set relay.admin_token on the relay and pass the same token",
            )
        };
        let expected = self.settings.admin_token.as_deref().ok_or_else(denied)?;
        // Compare MACs of both under a fixed key: constant time, any length.
        let mac = |s: &str| {
            let mut m =
                hmac::Hmac::<sha2::Sha256>::new_from_slice(b"termphone-admin").expect("any key");
            m.update(s.as_bytes());
            m
        };
        mac(token)
            .verify_slice(&mac(expected).finalize().into_bytes())
            .map_err(|_| denied())
    }

    /// Tells the shell and the members of each room whose media route
    /// changed: a member joined, left, held, or reconnected on another
    /// connection. A connection no longer in the route hears that nobody
    /// sends to it any more (an empty `media_peers`), so that its streams
    /// end there, and a hold's silence is not taken for frames lost.
    fn publish_media_routes(&mut self) {
        for (room, route) in self.moved_media_routes() {
            let before = self.media_routes.get(&room);
            if before == route.as_ref() {
                continue;
            }
            let kept = |conn: &ConnId| {
                (route.as_ref()).is_some_and(|r| r.members.iter().any(|(c, _)| c == conn))
            };
            let left: Vec<ConnId> = (before.iter())
                .flat_map(|b| &b.members)
                .map(|(c, _)| *c)
                .filter(|c| !kept(c))
                .collect();
            for conn in left {
                let peers = Vec::new();
                self.send(conn, ServerMsg::MediaPeers { room, peers });
            }
            let Some(route) = route else {
                self.media_routes.remove(&room);
                self.out.push_back(Output::MediaRoom {
                    room,
                    members: Vec::new(),
                    audience: Vec::new(),
                });
                continue;
            };
            // Each member hears every other one that sends: the audience
            // sends nothing, so it is nobody's peer.
            for (conn, _) in &route.members {
                let peers = (route.members.iter())
                    .filter(|(c, _)| c != conn && !route.audience.contains(c))
                    .map(|(c, user)| MediaPeer {
                        source: media_source(*c),
                        user: user.clone(),
                    })
                    .collect();
                self.send(*conn, ServerMsg::MediaPeers { room, peers });
            }
            self.out.push_back(Output::MediaRoom {
                room,
                members: route.members.clone(),
                audience: route.audience.clone(),
            });
            self.media_routes.insert(room, route);
        }
        // Debug builds (the tests') check every publication against a
        // rebuild from scratch.
        #[cfg(debug_assertions)]
        assert_eq!(
            self.media_routes,
            self.all_media_routes(),
            "the rooms published one by one add up to every call's route"
        );
    }

    fn identity(&self, sid: SessionId) -> (AppId, UserId) {
        let s = &self.sessions[&sid];
        (s.app, s.user.clone())
    }

    fn app_config(&self, app: AppId) -> &AppConfig {
        &self.settings.apps[&app]
    }

    /// Every session of a user, earliest login first.
    fn sessions_of(&self, app: AppId, user: &UserId) -> Vec<SessionId> {
        self.by_user
            .get(&(app, user.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// Sends what was held for a session while it had no connection.
    fn deliver_held(&mut self, sid: SessionId) {
        let held = std::mem::take(&mut self.sessions.get_mut(&sid).expect("exists").held);
        for msg in held {
            self.send_to_session(sid, msg);
        }
    }

    /// Sends to a session's connection if it has one; otherwise the message
    /// is dropped (chat: the device's next sync or resend recovers it).
    fn send_if_attached(&mut self, sid: SessionId, msg: ServerMsg) {
        if let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn) {
            self.send(conn, msg);
        }
    }

    /// Sends to a session's connection, or holds the message for it while
    /// it is detached.
    fn send_to_session(&mut self, sid: SessionId, msg: ServerMsg) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        match s.conn {
            Some(conn) => self.send(conn, msg),
            None => {
                if s.held.len() == HELD_PER_SESSION {
                    s.held.pop_front();
                }
                s.held.push_back(msg);
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.out.push_back(Output::Send { conn, msg });
    }

    fn schedule(&mut self, at: Millis, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    fn token(&mut self) -> String {
        format!("{:032x}", self.rng.random::<u128>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        0,
    ));

    #[test]
    fn the_audit_log_holds_back_a_flood_and_counts_it() {
        let mut audit = Audit::default();
        let written = (0..100).filter(|_| audit.admit(1_000).is_some()).count();
        assert_eq!(written, AUDIT_LINES_PER_MINUTE as usize);
        // The next minute's first line says how many were held back.
        assert_eq!(audit.admit(61_000), Some(80));
        assert_eq!(audit.admit(61_001), Some(0));
    }

    /// A refused login's ids are cut in the audit log as in the error:
    /// a 100 KB UserID does not make a 100 KB line.
    #[test]
    fn the_audit_log_cuts_the_ids_it_quotes() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let config = crate::config::RelayConfig::default();
            let mut core = RelayCore::new(Settings::from(&config), [], ChatSnapshot::default(), 7);
            core.handle(
                0,
                Input::Connected {
                    conn: 1,
                    peer: PEER,
                },
            );
            let long = "u".repeat(100_000);
            let login = ClientMsg::Login {
                app: crate::ids::DEV_APP_ID,
                user: long.clone(),
                device: long,
                platform: "terminal".into(),
                user_sig: "x".into(),
            };
            core.handle(
                0,
                Input::Frame {
                    conn: 1,
                    msg: login,
                },
            );
        });
        let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("login refused"), "{log}");
        assert!(log.contains("… (100000 bytes)"), "{log}");
        assert!(log.len() < 1_000, "{} bytes: {log}", log.len());
    }

    fn log_in(core: &mut RelayCore, now: Millis, conn: ConnId, user: &str) {
        core.handle(now, Input::Connected { conn, peer: PEER });
        let ticket = usersig::Ticket {
            app: crate::ids::DEV_APP_ID,
            user: UserId::parse(user).unwrap(),
            issued_at: now / 1000,
            lifetime: 3600,
        };
        let msg = ClientMsg::Login {
            app: crate::ids::DEV_APP_ID,
            user: user.into(),
            device: "d".into(),
            platform: "terminal".into(),
            user_sig: usersig::mint(usersig::DEV_SECRET, &ticket),
        };
        core.handle(now, Input::Frame { conn, msg });
    }

    /// A client that sends without waiting for acknowledgements has 64
    /// messages on their way to the store, no more: the relay read 1,000
    /// of 64 KiB as fast as they came and held them all (711 MB for four).
    #[test]
    fn a_device_has_at_most_64_messages_on_their_way_to_the_store() {
        let config = crate::config::RelayConfig::default();
        let mut core = RelayCore::new(Settings::from(&config), [], ChatSnapshot::default(), 7);
        let now: Millis = 1_700_000_000_000;
        log_in(&mut core, now, 1, "alice");
        log_in(&mut core, now, 2, "bob");
        while core.poll_output().is_some() {}
        let send = |core: &mut RelayCore, k: usize| {
            let msg = ClientMsg::SendMessage {
                to: "bob".into(),
                text: "hi".into(),
                client_msg_id: format!("c{k}"),
            };
            core.handle(now, Input::Frame { conn: 1, msg });
            std::iter::from_fn(|| core.poll_output()).collect::<Vec<_>>()
        };
        let mut tokens = Vec::new();
        for k in 0..64 {
            for out in send(&mut core, k) {
                if let Output::Store(StoreOp::AppendMessage { token, .. }) = out {
                    tokens.push(token);
                }
            }
        }
        assert_eq!(tokens.len(), 64, "each one goes to the store");
        let refused = |outputs: &[Output]| {
            outputs.iter().any(|o| {
                matches!(o, Output::Send { conn: 1, msg: ServerMsg::Error { error, client_msg_id, .. } }
                    if error.code == 90010 && client_msg_id.as_deref() == Some("c64"))
            })
        };
        assert!(refused(&send(&mut core, 64)), "the 65th waits");
        // One stored and acknowledged: room for one more.
        core.handle(
            now,
            Input::Committed {
                token: tokens[0],
                reply: StoreReply::Done,
            },
        );
        while core.poll_output().is_some() {}
        let outputs = send(&mut core, 64);
        assert!(!refused(&outputs), "{outputs:?}");
    }

    /// `caller` on `conn` calls `callee` on `conn + 1`, who answers; the
    /// call's room and id.
    fn call(
        core: &mut RelayCore,
        now: Millis,
        conn: ConnId,
        caller: &str,
        callee: &str,
    ) -> (RoomId, String) {
        log_in(core, now, conn, caller);
        log_in(core, now, conn + 1, callee);
        let msg = ClientMsg::Call {
            invitees: vec![callee.into()],
            group: false,
            timeout_secs: None,
            user_data: None,
        };
        core.handle(now, Input::Frame { conn, msg });
        let call = std::iter::from_fn(|| core.poll_output())
            .find_map(|o| match o {
                Output::Send {
                    conn: to,
                    msg: ServerMsg::CallInvite { call },
                } if to == conn + 1 => Some(call),
                _ => None,
            })
            .expect("the callee is invited");
        let msg = ClientMsg::Accept {
            call_id: call.call_id.clone(),
            end_current: false,
        };
        core.handle(
            now,
            Input::Frame {
                conn: conn + 1,
                msg,
            },
        );
        while core.poll_output().is_some() {}
        (call.room, call.call_id)
    }

    /// Issue 21: with every call's route rebuilt whenever anything might
    /// have moved media (a timer, a login, a hang-up elsewhere), the core
    /// task, which shares its worker with the connections' forwarding, was
    /// busy for hundreds of milliseconds at a time with thousands of calls
    /// held: forwarding stalls. What changed is looked at, nothing else.
    #[test]
    fn a_change_to_one_call_looks_at_that_room_alone() {
        let config = crate::config::RelayConfig::default();
        let mut core = RelayCore::new(Settings::from(&config), [], ChatSnapshot::default(), 7);
        let t0: Millis = 1_700_000_000_000;
        let rooms: Vec<RoomId> = (0..3)
            .map(|k| {
                call(
                    &mut core,
                    t0,
                    10 * k + 1,
                    &format!("a{k}"),
                    &format!("b{k}"),
                )
                .0
            })
            .collect();
        assert_eq!(core.media_routes.len(), 3, "each call has its room");

        // Heartbeats and every timer for a minute (login and heartbeat
        // checks, the ring timeouts) find nothing to do: no room to look at.
        let mut now = t0;
        while now < t0 + 60_000 {
            now += 1_000;
            for conn in (0..3).flat_map(|k| [10 * k + 1, 10 * k + 2]) {
                let msg = ClientMsg::Heartbeat;
                core.handle_input(now, Input::Frame { conn, msg });
            }
            core.fire_timers(now);
            assert!(
                core.moved_rooms().is_empty(),
                "nothing moved at {}",
                now - t0
            );
        }

        // The second call's callee drops: its room alone is looked at, and
        // published without it.
        core.handle_input(now, Input::Disconnected { conn: 12 });
        assert_eq!(core.moved_rooms(), [rooms[1]], "only the second call moved");
        core.publish_media_routes();
        let published: Vec<_> = std::iter::from_fn(|| core.poll_output())
            .filter_map(|o| match o {
                Output::MediaRoom { room, members, .. } => Some((room, members.len())),
                _ => None,
            })
            .collect();
        assert_eq!(published, [(rooms[1], 0)], "the second call's room closes");
        assert_eq!(core.media_routes.len(), 2);
    }

    /// Who sends media to each connection (`media_peers`), as sent.
    fn media_peers(core: &mut RelayCore) -> Vec<(ConnId, Vec<String>)> {
        std::iter::from_fn(|| core.poll_output())
            .filter_map(|o| match o {
                Output::Send {
                    conn,
                    msg: ServerMsg::MediaPeers { peers, .. },
                } => Some((
                    conn,
                    peers.into_iter().map(|p| p.user.to_string()).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// A hold takes the call's room away: both sides hear that nobody
    /// sends to them any more, so that the silence is not taken for frames
    /// lost, and each other again at unhold.
    #[test]
    fn a_hold_tells_both_sides_nobody_sends_and_unhold_who_does() {
        let config = crate::config::RelayConfig::default();
        let mut core = RelayCore::new(Settings::from(&config), [], ChatSnapshot::default(), 7);
        let now: Millis = 1_700_000_000_000;
        let (_, call_id) = call(&mut core, now, 1, "alice", "bob");
        let hold = |on_hold| ClientMsg::Hold {
            call_id: call_id.clone(),
            on_hold,
        };
        core.handle(
            now,
            Input::Frame {
                conn: 2,
                msg: hold(true),
            },
        );
        let mut told = media_peers(&mut core);
        told.sort();
        assert_eq!(told, [(1, vec![]), (2, vec![])]);
        core.handle(
            now,
            Input::Frame {
                conn: 2,
                msg: hold(false),
            },
        );
        let mut told = media_peers(&mut core);
        told.sort();
        assert_eq!(
            told,
            [(1, vec!["bob".to_owned()]), (2, vec!["alice".to_owned()])]
        );
    }
}
