//! The client engine: a device's login state, its link to the relay and the
//! rules for both, as a plain state machine.
//!
//! Like the relay core it never reads a clock or touches a socket: the
//! connection task feeds it `Input`s with the time and carries out its
//! `Output`s (connect, send, close, report an event). Reconnection with
//! backoff, session resume and heartbeats are decided here, so tests play
//! them on virtual time.

mod calls;
mod chat;

use std::collections::{HashMap, VecDeque};

use strum::IntoStaticStr;

use crate::client::event::{Event, LinkState, LoginStatus};
use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, DeviceId, Platform, UserId};
pub use crate::media::control::{DeviceKind, MediaCommand, VoiceProcessingChange};
pub use crate::media::spec::AudioSpec;
use crate::protocol::{ClientMsg, ServerMsg, WireError};
pub use calls::CallCommand;
pub use chat::ChatCommand;

pub type Millis = u64;

/// Longest wait for the relay to acknowledge a logout before closing anyway.
const LOGOUT_LINGER_MS: Millis = 2_000;

/// A logout waits this long for the device's own messages on their way to
/// be acknowledged (through a reconnection, if the link drops meanwhile).
const LOGOUT_SENDS_MS: Millis = 10_000;

/// The longest a logout takes: the device's messages, then the relay's
/// acknowledgement. A front end waiting for it to end waits this long.
pub const LOGOUT_MAX_MS: Millis = LOGOUT_SENDS_MS + LOGOUT_LINGER_MS;

/// A link up this long was a working one: the reconnection backoff starts
/// over when it drops. One that drops sooner (a relay that closes it right
/// after the login, a flapping network) backs off further each time.
const STABLE_LINK_MS: Millis = 10_000;

/// After a failed catch-up read on the relay, how long before asking again.
const SYNC_RETRY_MS: Millis = 1_000;

/// What a front end asks of the engine. Each variant's name, in camelCase,
/// is the headless command it carries out (`Command::name`).
#[derive(Clone, Debug, PartialEq, IntoStaticStr)]
#[strum(serialize_all = "camelCase")]
pub enum Command {
    Login {
        user: UserId,
        device: DeviceId,
        user_sig: String,
        /// The last timeline seq this device applied (from its local store).
        sync_after: u64,
    },
    Logout,
    /// The app's users and their online devices; with `subscribe`, later
    /// changes follow as `USER_STATUS_CHANGED`.
    GetUsers {
        subscribe: bool,
    },
    /// Ring on this device too when the user has several online.
    EnableMultiDeviceAbility {
        enable: bool,
    },
    /// Call waiting: while this device is in a connected call, a new call
    /// rings here (`waiting`) instead of finding the user busy.
    EnableCallWaiting {
        enable: bool,
    },
    /// Accept every call that rings here after `delay_ms` (`None`: off),
    /// exactly as `accept` would. Local to the device: allowed at any time.
    SetAutoAnswer {
        delay_ms: Option<Millis>,
    },
    Call(CallCommand),
    Chat(ChatCommand),
    /// The system's sound devices and this device's (`DEVICED_UPDATED`).
    GetDeviceList,
    /// Another microphone or speaker, in the call in progress too.
    SwitchDevice {
        kind: DeviceKind,
        spec: AudioSpec,
    },
    /// Voice processing stages on or off, in the call in progress too.
    /// Local to the device: allowed at any time.
    SetAudioProcessing(VoiceProcessingChange),
}

impl Command {
    /// The headless command name, for `ERROR` events.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Call(c) => c.into(),
            Command::Chat(c) => c.into(),
            other => <&'static str>::from(other),
        }
    }
}

#[derive(Debug)]
pub enum Input {
    Command(Command),
    /// The transport connected.
    Connected,
    /// A connection attempt failed; `reason` says why, for the user.
    ConnectFailed {
        reason: String,
    },
    /// The relay answered but must not be used (a certificate other than
    /// the trusted one): report `error` and stop, without retrying.
    ConnectRefused {
        error: Error,
    },
    /// The transport dropped (not at the engine's request).
    Disconnected,
    Frame(ServerMsg),
}

#[derive(Debug, PartialEq)]
pub enum Output {
    Connect,
    /// Close the transport after sending what is queued; do not report it.
    Disconnect,
    Send(ClientMsg),
    Event(Event),
    /// For the media thread: a call's media starts or stops, its
    /// participants change, the microphone opens or closes.
    Media(MediaCommand),
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub app: AppId,
    pub platform: Platform,
    pub heartbeat_interval_ms: Millis,
    /// A heartbeat unanswered for this long (nothing at all heard from the
    /// relay) means the link is dead, even if the socket still looks open.
    pub heartbeat_ack_timeout_ms: Millis,
    pub backoff_min_ms: Millis,
    pub backoff_max_ms: Millis,
    /// Multi-device ability from the start (`--multi-device`).
    pub multi_device: bool,
    /// Call waiting from the start (`--call-waiting`).
    pub call_waiting: bool,
    /// Auto-answer from the start (`--auto-answer[=MS]`): the delay.
    pub auto_answer_ms: Option<Millis>,
    /// Part of every client message id this engine makes up, so that a
    /// process started again (in the same millisecond, even) never reuses
    /// an id of an earlier run: a fresh random value per engine.
    pub id_nonce: u32,
}

impl EngineConfig {
    pub fn new(app: AppId, platform: Platform) -> Self {
        EngineConfig {
            app,
            platform,
            heartbeat_interval_ms: 10_000,
            heartbeat_ack_timeout_ms: 5_000,
            backoff_min_ms: 250,
            backoff_max_ms: 5_000,
            multi_device: false,
            call_waiting: false,
            auto_answer_ms: None,
            id_nonce: rand::random(),
        }
    }
}

#[derive(Clone, Debug)]
struct Credentials {
    user: UserId,
    device: DeviceId,
    user_sig: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Down,
    Connecting,
    /// The transport is open; the session is being resumed or logged in.
    Open,
    /// The session is live: commands reach the relay.
    Ready,
}

pub struct ClientEngine {
    config: EngineConfig,
    /// The command that last sent each relay request type (`ClientMsg::kind`).
    requested_by: HashMap<&'static str, &'static str>,
    status: LoginStatus,
    credentials: Option<Credentials>,
    /// Resume token of the relay session, once logged in.
    session: Option<String>,
    link: Link,
    retry_at: Option<Millis>,
    attempt: u32,
    /// When the current link came up.
    connected_at: Option<Millis>,
    next_heartbeat: Option<Millis>,
    /// A heartbeat went out and nothing has been heard since: the link is
    /// dead if this passes.
    heard_by: Option<Millis>,
    /// RELAY_UNREACHABLE was reported for the current outage.
    reported_unreachable: bool,
    /// The front end asked for presence updates; a new connection (resumed
    /// or logged in again) must ask the relay again and refresh the list.
    presence_subscribed: bool,
    /// After a logout, the link stays up until the relay acknowledges it
    /// (so replies already on their way still arrive), or until this time.
    closing_until: Option<Millis>,
    /// A logout was asked for and waits, until then at most, for this
    /// device's messages on their way: a script that writes messages and
    /// quits sees each one `MESSAGE_SENT`, or refused.
    logout_at: Option<Millis>,
    /// Multi-device ability: re-announced to the relay after every login.
    multi_device: bool,
    /// Call waiting: re-announced to the relay after every login.
    call_waiting: bool,
    /// Auto-answer's delay, while it is on.
    auto_answer: Option<Millis>,
    /// Pages of the user list received so far; USERS goes out with the last.
    users_so_far: Vec<crate::protocol::UserPresence>,
    calls: calls::CallState,
    chat: chat::ChatState,
    out: VecDeque<Output>,
}

impl ClientEngine {
    pub fn new(config: EngineConfig) -> Self {
        ClientEngine {
            multi_device: config.multi_device,
            call_waiting: config.call_waiting,
            auto_answer: config.auto_answer_ms,
            calls: calls::CallState::default(),
            chat: chat::ChatState::default(),
            config,
            status: LoginStatus::Logout,
            credentials: None,
            session: None,
            link: Link::Down,
            retry_at: None,
            attempt: 0,
            connected_at: None,
            next_heartbeat: None,
            heard_by: None,
            reported_unreachable: false,
            presence_subscribed: false,
            closing_until: None,
            logout_at: None,
            requested_by: HashMap::new(),
            users_so_far: Vec::new(),
            out: VecDeque::new(),
        }
    }

    pub fn status(&self) -> LoginStatus {
        self.status
    }

    pub fn user(&self) -> Option<&UserId> {
        self.credentials.as_ref().map(|c| &c.user)
    }

    /// A logout is under way: waiting for this device's messages on their
    /// way, or for the relay's acknowledgement.
    pub fn is_closing(&self) -> bool {
        self.closing_until.is_some() || self.logout_at.is_some()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Millis> {
        [
            self.retry_at,
            self.next_heartbeat,
            self.heard_by,
            self.closing_until,
            self.logout_at,
            self.chat.sync_retry_at(),
            self.auto_answer_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        if self.closing_until.is_some_and(|at| at <= now) {
            self.close_link();
        }
        if self.heard_by.is_some_and(|at| at <= now) {
            self.link_dead(now);
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.connect();
        }
        if let Some(at) = self.next_heartbeat.filter(|&at| at <= now) {
            self.send(ClientMsg::Heartbeat);
            self.heard_by
                .get_or_insert(now + self.config.heartbeat_ack_timeout_ms);
            self.next_heartbeat = Some(at.max(now) + self.config.heartbeat_interval_ms);
        }
        self.chat_timeout(now);
        self.auto_answer_timeout(now);
        self.logout_when_sent(now);
    }

    /// Nothing came back in time: the socket may look open, but the link is
    /// gone (a half-open connection). Close it and reconnect.
    fn link_dead(&mut self, now: Millis) {
        tracing::info!("no answer to a heartbeat; reconnecting");
        self.close_link();
        self.link_lost(now);
    }

    pub fn handle(&mut self, now: Millis, input: Input) {
        match input {
            Input::Command(cmd) => self.command(now, cmd),
            Input::Connected => {
                self.link = Link::Open;
                self.connected_at = Some(now);
                self.reported_unreachable = false;
                self.next_heartbeat = Some(now + self.config.heartbeat_interval_ms);
                // `connected` is announced once the session is back (Resumed
                // or LoginOk), so that a command sent after it is answered.
                match (&self.session, &self.credentials) {
                    (Some(token), _) => self.send(ClientMsg::Resume {
                        session: token.clone(),
                    }),
                    (None, Some(_)) => self.send_login(),
                    (None, None) => self.session_ready(),
                }
            }
            Input::ConnectFailed { reason } => {
                self.link = Link::Down;
                if !self.reported_unreachable {
                    self.reported_unreachable = true;
                    self.event(Event::error(
                        Error::new(
                            ErrorCode::RelayUnreachable,
                            format!("cannot reach the relay: {reason}; retrying with backoff"),
                        ),
                        None,
                    ));
                }
                self.schedule_retry(now);
            }
            Input::ConnectRefused { error } => {
                self.link = Link::Down;
                // The login cannot complete: said as a refused login, which
                // front ends show as why the device is signed out.
                self.event(Event::error(error, Some("login")));
                self.sign_out(now);
            }
            // Already down: the engine closed the link itself (kick, logout).
            Input::Disconnected if self.link == Link::Down => {}
            Input::Disconnected => {
                self.link = Link::Down;
                self.link_lost(now);
            }
            Input::Frame(msg) => {
                self.heard_by = None;
                self.frame(now, msg);
                self.logout_when_sent(now);
            }
        }
    }

    /// A logout waiting for this device's messages goes ahead once none is
    /// on its way any more, or when it has waited long enough: then each
    /// message still unacknowledged is reported, and not sent again.
    fn logout_when_sent(&mut self, now: Millis) {
        let Some(at) = self.logout_at else { return };
        if self.chat.sending() && at > now {
            return;
        }
        self.logout_at = None;
        let waited = format!("within {} s of the logout", LOGOUT_SENDS_MS / 1000);
        self.give_up_sends(&waited);
        self.logout(now);
    }

    /// No more waiting for this device's messages on their way: each one
    /// not acknowledged (`when`) is reported, and never sent again.
    fn give_up_sends(&mut self, when: &str) {
        for client_msg_id in self.chat.give_up() {
            self.event(Event::Error {
                code: ErrorCode::RelayUnreachable.code(),
                message: format!(
                    "message {client_msg_id:?} was not acknowledged {when}, so it may not be \
                     stored: send it again with the same clientMsgID once logged in \
                     (a message sent twice under one id is stored once)"
                ),
                cmd: Some("sendMessage".into()),
                relay_code: None,
                client_msg_id: Some(client_msg_id),
            });
        }
    }

    /// The link is down (the engine already said so to the shell).
    fn link_lost(&mut self, now: Millis) {
        self.next_heartbeat = None;
        self.heard_by = None;
        self.closing_until = None;
        self.chat_offline();
        if self.media_room().is_some() {
            self.out.push_back(Output::Media(MediaCommand::Link(false)));
        }
        if self.credentials.is_some() {
            self.event(Event::ConnectionChanged {
                state: LinkState::Reconnecting,
            });
            self.schedule_retry(now);
        } else {
            self.event(Event::ConnectionChanged {
                state: LinkState::Disconnected,
            });
        }
    }

    fn command(&mut self, now: Millis, cmd: Command) {
        let name = cmd.name();
        let before = self.out.len();
        self.run_command(now, name, cmd);
        // The relay names a failed request by its wire type: remember which
        // command sent each, so that the ERROR names the command.
        for output in self.out.range(before..) {
            if let Output::Send(msg) = output {
                self.requested_by.insert(msg.kind(), name);
            }
        }
    }

    fn run_command(&mut self, now: Millis, name: &'static str, cmd: Command) {
        match cmd {
            Command::Login {
                user,
                device,
                user_sig,
                sync_after,
            } => {
                if self.user() != Some(&user) {
                    // Another account: the last one's messages on their way
                    // are not this one's to send.
                    self.give_up_sends("before the device logged in as another user");
                    self.chat = chat::ChatState::starting_at(sync_after);
                }
                self.credentials = Some(Credentials {
                    user,
                    device,
                    user_sig,
                });
                // A new login replaces the session (and, for another user,
                // switches accounts on the relay).
                self.session = None;
                self.closing_until = None;
                self.logout_at = None;
                self.presence_subscribed = false;
                self.set_status(LoginStatus::Logining);
                match self.link {
                    Link::Open | Link::Ready => self.send_login(),
                    Link::Down => {
                        self.retry_at = None;
                        self.connect();
                    }
                    Link::Connecting => {}
                }
            }
            Command::Logout => {
                if self.status == LoginStatus::Logout && self.credentials.is_none() {
                    return self.not_logged_in(name);
                }
                if self.credentials.is_some() && self.chat.sending() {
                    self.logout_at.get_or_insert(now + LOGOUT_SENDS_MS);
                } else {
                    self.logout(now);
                }
            }
            Command::GetUsers { subscribe } => {
                if self.online(name).is_none() {
                    return;
                }
                self.presence_subscribed |= subscribe;
                self.users_so_far.clear();
                self.send(ClientMsg::ListUsers {
                    subscribe,
                    after: None,
                });
            }
            Command::EnableMultiDeviceAbility { enable } => {
                if self.status != LoginStatus::Logined {
                    return self.not_logged_in(name);
                }
                self.multi_device = enable;
                if self.transport_up() {
                    self.send(ClientMsg::MultiDevice { enable });
                }
            }
            Command::EnableCallWaiting { enable } => {
                if self.status != LoginStatus::Logined {
                    return self.not_logged_in(name);
                }
                self.call_waiting = enable;
                if self.transport_up() {
                    self.send(ClientMsg::CallWaiting { enable });
                }
            }
            // Local to this device, but like every command but login they
            // wait for it (SPEC section 2).
            Command::GetDeviceList => {
                if self.status != LoginStatus::Logined {
                    return self.not_logged_in(name);
                }
                self.out.push_back(Output::Media(MediaCommand::ListDevices));
            }
            Command::SwitchDevice { kind, spec } => {
                if self.status != LoginStatus::Logined {
                    return self.not_logged_in(name);
                }
                let spec = match kind {
                    DeviceKind::Speaker => spec.check_sink().map(|()| spec),
                    DeviceKind::Microphone => Ok(spec),
                };
                match spec {
                    Ok(spec) => (self.out)
                        .push_back(Output::Media(MediaCommand::SwitchDevice { kind, spec })),
                    Err(e) => self.event(Event::error(e, Some(name))),
                }
            }
            Command::SetAutoAnswer { delay_ms } => self.set_auto_answer(now, delay_ms),
            Command::SetAudioProcessing(change) => {
                (self.out).push_back(Output::Media(MediaCommand::SetVoiceProcessing(change)))
            }
            Command::Call(CallCommand::GetMediaStats) => {
                if let Err(e) = self.media_stats() {
                    self.event(Event::error(e, Some(name)));
                }
            }
            // Hanging up needs no relay: the call ends here, the relay hears
            // of it when it can.
            Command::Call(CallCommand::Hangup { call_id })
                if self.status == LoginStatus::Logined && self.link != Link::Ready =>
            {
                let Some(me) = self.user().cloned() else {
                    return;
                };
                if let Err(e) = self.hang_up_unreachable(now, &me, call_id) {
                    self.event(Event::error(e, Some(name)));
                }
            }
            Command::Call(cmd) => {
                let Some(me) = self.online(name) else {
                    return;
                };
                if let Err(e) = self.call_command(me, cmd) {
                    self.event(Event::error(e, Some(name)));
                }
            }
            Command::Chat(cmd) => {
                let client_msg_id = match &cmd {
                    ChatCommand::SendMessage { client_msg_id, .. } => client_msg_id.clone(),
                    _ => None,
                };
                // A message written while the link is down waits for it
                // (it is resent on every new connection until acknowledged);
                // everything else needs the relay now.
                let queued = matches!(cmd, ChatCommand::SendMessage { .. })
                    && self.status == LoginStatus::Logined
                    && self.link != Link::Ready;
                let result = match queued {
                    true => Ok(()),
                    false => self.check_online(name).map(drop),
                };
                if let Err(e) = result.and_then(|()| self.chat_command(now, cmd)) {
                    let mut event = Event::error(e, Some(name));
                    if let Event::Error {
                        client_msg_id: id, ..
                    } = &mut event
                    {
                        *id = client_msg_id;
                    }
                    self.event(event);
                }
            }
        }
    }

    fn frame(&mut self, now: Millis, msg: ServerMsg) {
        match msg {
            ServerMsg::LoginOk { session, .. } => {
                self.session = Some(session);
                self.calls.awaiting_call_state();
                self.session_ready();
                if self.multi_device {
                    self.send(ClientMsg::MultiDevice { enable: true });
                }
                if self.call_waiting {
                    self.send(ClientMsg::CallWaiting { enable: true });
                }
                self.chat_online();
                // After a silent re-login (resume failed) the user saw no
                // change, so there is nothing to announce.
                if self.status != LoginStatus::Logined {
                    self.set_status(LoginStatus::Logined);
                    self.event(Event::SdkReady);
                } else {
                    self.resubscribe();
                }
            }
            ServerMsg::LoginFailed { error } => {
                let expired = error.code == ErrorCode::UserSigExpiredRelay.code();
                if expired && self.status == LoginStatus::Logined {
                    self.event(Event::UserSigExpired);
                } else {
                    self.event(login_error(error));
                }
                self.sign_out(now);
            }
            ServerMsg::Resumed { .. } => {
                self.calls.awaiting_call_state();
                self.session_ready();
                self.resubscribe();
                self.chat_online();
            }
            ServerMsg::ResumeFailed { error } => {
                self.session = None;
                // The relay dropped the session and its calls with it.
                if let Some(me) = self.user().cloned() {
                    self.drop_calls(now, &me, true);
                }
                if error.code == ErrorCode::UserSigExpiredRelay.code() {
                    self.event(Event::UserSigExpired);
                    self.sign_out(now);
                } else {
                    self.send_login();
                }
            }
            ServerMsg::LoggedOut => {
                if self.closing_until.is_some() {
                    self.close_link();
                }
            }
            // Answers to other kinds of peer (heartbeats, the admin tool).
            ServerMsg::HeartbeatAck | ServerMsg::AdminSent { .. } => {}
            ServerMsg::KickedOut { reason, message } => {
                self.event(Event::KickedOut { reason, message });
                self.sign_out(now);
            }
            ServerMsg::UserSigExpired => {
                self.event(Event::UserSigExpired);
                self.sign_out(now);
            }
            ServerMsg::Users { users, more } => {
                self.users_so_far.extend(users);
                if more {
                    let after = self.users_so_far.last().map(|u| u.user.to_string());
                    self.send(ClientMsg::ListUsers {
                        subscribe: false,
                        after,
                    });
                } else {
                    let users = std::mem::take(&mut self.users_so_far);
                    self.event(Event::Users {
                        users: users.into_iter().map(Into::into).collect(),
                    });
                }
            }
            ServerMsg::Presence { user } => {
                self.event(Event::UserStatusChanged { user: user.into() })
            }
            msg @ (ServerMsg::CallDialing { .. }
            | ServerMsg::CallInvite { .. }
            | ServerMsg::CallBegin { .. }
            | ServerMsg::CallCanceled { .. }
            | ServerMsg::CallEnd { .. }
            | ServerMsg::CallPeer { .. }
            | ServerMsg::CallHold { .. }
            | ServerMsg::RoleChanged { .. }
            | ServerMsg::CallTransferred { .. }) => {
                if let Some(me) = self.user().cloned() {
                    self.call_frame(now, &me, msg);
                    self.sync_media(&me);
                }
            }
            ServerMsg::MediaPeers { room, peers } => {
                if self.media_room() == Some(room) {
                    let peers = MediaCommand::Peers { room, peers };
                    self.out.push_back(Output::Media(peers));
                }
            }
            ServerMsg::AudioAvailable { user, available } => {
                self.event(Event::UserAudioAvailable {
                    user_id: user,
                    is_audio_available: available,
                })
            }
            ServerMsg::CallState {
                ringing,
                current,
                parked,
            } => {
                if let Some(me) = self.user().cloned() {
                    self.reconcile_calls(now, &me, ringing, current, parked);
                    self.sync_media(&me);
                }
            }
            msg @ (ServerMsg::MessageSent { .. }
            | ServerMsg::Entries { .. }
            | ServerMsg::Synced { .. }
            | ServerMsg::Typing { .. }
            | ServerMsg::History { .. }) => self.chat_frame(now, msg),
            ServerMsg::Error {
                error,
                request,
                client_msg_id,
            } => {
                if request.as_deref() == Some("sync") {
                    // The catch-up read failed on the relay: ask again soon.
                    self.chat_sync_failed(now);
                }
                if request.as_deref() == Some("history") {
                    self.history_refused();
                }
                if error.code == ErrorCode::NoSuchCall.code()
                    && request.as_deref().is_some_and(|r| self.crossed_the_end(r))
                {
                    return;
                }
                if let Some(id) = &client_msg_id {
                    self.chat_refused(id);
                }
                // The catch-up is the engine's own request, not a command.
                let cmd = (request.as_deref())
                    .filter(|r| *r != "sync")
                    .map(|r| self.requested_by.get(r).copied().unwrap_or(r).to_owned());
                self.event(Event::Error {
                    code: error.code,
                    message: error.message,
                    cmd,
                    relay_code: None,
                    client_msg_id,
                });
            }
        }
    }

    fn resubscribe(&mut self) {
        if self.presence_subscribed {
            self.users_so_far.clear();
            self.send(ClientMsg::ListUsers {
                subscribe: true,
                after: None,
            });
        }
    }

    /// Logs out: through the relay while the link is up, so that replies
    /// on their way still arrive; at once otherwise.
    fn logout(&mut self, now: Millis) {
        if self.transport_up() {
            self.forget_login(now);
            // Replies already on their way still arrive.
            self.send(ClientMsg::Logout);
            self.closing_until = Some(now + LOGOUT_LINGER_MS);
            self.set_status(LoginStatus::Logout);
        } else {
            self.sign_out(now);
        }
    }

    /// Ends this device's calls and forgets who it is logged in as.
    fn forget_login(&mut self, now: Millis) {
        self.logout_at = None;
        if let Some(me) = self.user().cloned() {
            self.drop_calls(now, &me, false);
        }
        self.presence_subscribed = false;
        self.credentials = None;
        self.session = None;
        self.retry_at = None;
        self.next_heartbeat = None;
        self.heard_by = None;
    }

    /// Forgets the login and closes the link: nothing reconnects by itself.
    fn sign_out(&mut self, now: Millis) {
        // Signed out (kicked, a ticket expired, a relay refused): what was
        // on its way will not go, under this login or another one.
        self.give_up_sends("before the device was signed out");
        self.forget_login(now);
        self.chat_offline();
        self.close_link();
        self.set_status(LoginStatus::Logout);
    }

    fn transport_up(&self) -> bool {
        matches!(self.link, Link::Open | Link::Ready)
    }

    /// Announces `connected` when the session comes back, not again when an
    /// account switch logs in on a link that is already live.
    fn session_ready(&mut self) {
        if self.link != Link::Ready {
            self.link = Link::Ready;
            if self.media_room().is_some() {
                self.out.push_back(Output::Media(MediaCommand::Link(true)));
            }
            self.event(Event::ConnectionChanged {
                state: LinkState::Connected,
            });
        }
    }

    fn close_link(&mut self) {
        self.closing_until = None;
        if self.link != Link::Down {
            self.link = Link::Down;
            self.out.push_back(Output::Disconnect);
        }
    }

    fn send_login(&mut self) {
        let Some(c) = &self.credentials else { return };
        let msg = ClientMsg::Login {
            app: self.config.app,
            user: c.user.to_string(),
            device: c.device.to_string(),
            platform: self.config.platform.to_string(),
            user_sig: c.user_sig.clone(),
        };
        self.send(msg);
    }

    fn connect(&mut self) {
        self.link = Link::Connecting;
        self.out.push_back(Output::Connect);
    }

    fn schedule_retry(&mut self, now: Millis) {
        if self.credentials.is_none() {
            return;
        }
        if self
            .connected_at
            .take()
            .is_some_and(|at| now.saturating_sub(at) >= STABLE_LINK_MS)
        {
            self.attempt = 0;
        }
        let backoff = self
            .config
            .backoff_min_ms
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.config.backoff_max_ms);
        self.attempt += 1;
        self.retry_at = Some(now + backoff);
    }

    fn set_status(&mut self, status: LoginStatus) {
        if self.status != status {
            self.status = status;
            self.event(Event::status(status));
        }
    }

    /// The logged-in user, if `cmd` can reach the relay now; otherwise
    /// reports why not and returns `None`.
    fn online(&mut self, cmd: &str) -> Option<UserId> {
        match self.check_online(cmd) {
            Ok(me) => Some(me),
            Err(e) => {
                self.event(Event::error(e, Some(cmd)));
                None
            }
        }
    }

    /// The logged-in user, if `cmd` can reach the relay now.
    fn check_online(&self, cmd: &str) -> Result<UserId, Error> {
        let me = match (self.status, self.user()) {
            (LoginStatus::Logined, Some(me)) => me.clone(),
            _ => return Err(not_logged_in_error(cmd)),
        };
        if self.link != Link::Ready {
            return Err(Error::new(
                ErrorCode::RelayUnreachable,
                "reconnecting to the relay; try again in a moment",
            ));
        }
        Ok(me)
    }

    fn not_logged_in(&mut self, cmd: &str) {
        self.event(Event::error(not_logged_in_error(cmd), Some(cmd)));
    }

    fn send(&mut self, msg: ClientMsg) {
        self.out.push_back(Output::Send(msg));
    }

    fn event(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }
}

fn not_logged_in_error(cmd: &str) -> Error {
    Error::new(
        ErrorCode::NotLoggedIn,
        format!("`{cmd}` needs a completed login: send `login` and wait for SDK_READY"),
    )
}

/// A refused login, reported under the client's code where the vendor has one.
fn login_error(error: WireError) -> Event {
    if error.code == ErrorCode::UserSigExpiredRelay.code() {
        return Event::Error {
            code: ErrorCode::UserSigExpired.code(),
            message: error.message,
            cmd: Some("login".into()),
            relay_code: Some(error.code),
            client_msg_id: None,
        };
    }
    Event::Error {
        code: error.code,
        message: error.message,
        cmd: Some("login".into()),
        relay_code: None,
        client_msg_id: None,
    }
}
