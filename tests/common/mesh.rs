//! A deterministic harness: one relay core and N client engines wired by an
//! in-memory network on virtual time. No sockets, no sleeps.

use std::collections::{BTreeMap, VecDeque};

use termphone::client::engine::{self, ClientEngine, Command, EngineConfig};
use termphone::client::event::Event;
use termphone::config::RelayConfig;
use termphone::ids::{AppId, DeviceId, Platform, UserId};
use termphone::media::pipeline::Control;
use termphone::protocol::RoomId;
use termphone::relay::core::{self, ChatSnapshot, ConnId, RelayCore, Settings};
use termphone::relay::store::Store;
use termphone::usersig::{self, DEV_SECRET, Ticket};

pub const T0: u64 = 1_800_000_000_000;

pub struct Node {
    pub engine: ClientEngine,
    pub conn: Option<ConnId>,
    pub events: Vec<Event>,
    /// Connection attempts the engine made.
    pub connects: usize,
    pub user: UserId,
    pub device: DeviceId,
    /// What the device's local store would hold: the last seq it applied.
    pub high_water: u64,
    /// What the engine told its media thread.
    pub media: Vec<Control>,
}

pub struct Mesh {
    pub relay: RelayCore,
    /// A real SQLite store (in memory) answering the core's store work.
    pub store: Store,
    pub nodes: Vec<Node>,
    pub now: u64,
    /// While false, connection attempts fail as if the relay were down.
    pub relay_up: bool,
    next_conn: ConnId,
    to_relay: VecDeque<core::Input>,
    /// The media routes the relay published, as its shell would hold them.
    pub media_rooms: BTreeMap<RoomId, Vec<(ConnId, UserId)>>,
}

impl Mesh {
    pub fn new(config: &RelayConfig) -> Mesh {
        Mesh {
            relay: RelayCore::new(Settings::from(config), [], ChatSnapshot::default(), 7),
            store: Store::in_memory().unwrap(),
            nodes: Vec::new(),
            now: T0,
            relay_up: true,
            next_conn: 1,
            to_relay: VecDeque::new(),
            media_rooms: BTreeMap::new(),
        }
    }

    pub fn dev() -> Mesh {
        Mesh::new(&RelayConfig::default())
    }

    /// Adds a device (not yet logged in) and returns its index.
    pub fn add(&mut self, app: AppId, platform: &str, user: &str, device: &str) -> usize {
        let config = EngineConfig::new(app, Platform::parse(platform).unwrap());
        self.nodes.push(Node {
            engine: ClientEngine::new(config),
            conn: None,
            events: Vec::new(),
            connects: 0,
            user: UserId::parse(user).unwrap(),
            device: DeviceId::parse(device).unwrap(),
            high_water: 0,
            media: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Adds a terminal device of the development app, logs it in and
    /// forgets the login's events.
    pub fn online(&mut self, user: &str, device: &str) -> usize {
        let i = self.add(termphone::ids::DEV_APP_ID, "terminal", user, device);
        self.login(i);
        self.take(i);
        i
    }

    /// Like `online`, with multi-device ability enabled.
    pub fn online_multi(&mut self, user: &str, device: &str) -> usize {
        let i = self.online(user, device);
        self.command(i, Command::EnableMultiDevice { enable: true });
        i
    }

    /// Hands a command to a device without delivering anything, so several
    /// devices can act "at the same instant".
    pub fn command_later(&mut self, i: usize, cmd: Command) {
        self.nodes[i]
            .engine
            .handle(self.now, engine::Input::Command(cmd));
    }

    /// What device `i` saw since last asked, one line per event with the
    /// fields that tell flows apart, and forgets it.
    pub fn log(&mut self, i: usize) -> Vec<String> {
        self.take(i).iter().map(describe).collect()
    }

    /// The msgID of the last MESSAGE_SENT device `i` saw (its log is kept).
    pub fn last_sent(&self, i: usize) -> String {
        self.nodes[i]
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::MessageSent { msg_id, .. } => Some(msg_id.clone()),
                _ => None,
            })
            .expect("a MESSAGE_SENT")
    }

    pub fn ticket(&self, app: AppId, user: &UserId, lifetime_secs: u64) -> String {
        usersig::mint(
            DEV_SECRET,
            &Ticket {
                app,
                user: user.clone(),
                issued_at: self.now / 1000,
                lifetime: lifetime_secs,
            },
        )
    }

    pub fn login(&mut self, i: usize) {
        let app = termphone::ids::DEV_APP_ID;
        let sig = self.ticket(app, &self.nodes[i].user.clone(), 30 * 86_400);
        self.login_with(i, sig);
    }

    pub fn login_with(&mut self, i: usize, user_sig: String) {
        let n = &self.nodes[i];
        let cmd = Command::Login {
            user: n.user.clone(),
            device: n.device.clone(),
            user_sig,
            sync_after: n.high_water,
        };
        self.command(i, cmd);
    }

    pub fn command(&mut self, i: usize, cmd: Command) {
        self.nodes[i]
            .engine
            .handle(self.now, engine::Input::Command(cmd));
        self.settle();
    }

    /// Delivers everything in flight until nothing moves.
    pub fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].engine.poll_output() {
                    moved = true;
                    self.client_output(i, out);
                }
            }
            while let Some(input) = self.to_relay.pop_front() {
                moved = true;
                self.relay.handle(self.now, input);
            }
            while let Some(out) = self.relay.poll_output() {
                moved = true;
                self.relay_output(out);
            }
            if !moved {
                break;
            }
        }
    }

    fn client_output(&mut self, i: usize, out: engine::Output) {
        match out {
            engine::Output::Connect => {
                self.nodes[i].connects += 1;
                if self.relay_up {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    self.nodes[i].conn = Some(conn);
                    self.relay.handle(self.now, core::Input::Connected { conn });
                    self.nodes[i]
                        .engine
                        .handle(self.now, engine::Input::Connected);
                } else {
                    let reason = "connection refused".into();
                    self.nodes[i]
                        .engine
                        .handle(self.now, engine::Input::ConnectFailed { reason });
                }
            }
            engine::Output::Disconnect => {
                if let Some(conn) = self.nodes[i].conn.take() {
                    self.to_relay.push_back(core::Input::Disconnected { conn });
                }
            }
            engine::Output::Send(msg) => {
                if let Some(conn) = self.nodes[i].conn {
                    self.to_relay.push_back(core::Input::Frame { conn, msg });
                }
            }
            engine::Output::Event(e) => {
                let seq = match &e {
                    Event::MessageReceived { seq, .. }
                    | Event::MessageRecalled { seq, .. }
                    | Event::ConversationRead { seq, .. }
                    | Event::Synced { seq } => Some(*seq),
                    Event::MessageSent { seq, .. } => *seq,
                    _ => None,
                };
                if let Some(seq) = seq {
                    self.nodes[i].high_water = self.nodes[i].high_water.max(seq);
                }
                self.nodes[i].events.push(e);
            }
            engine::Output::Media(control) => self.nodes[i].media.push(control),
        }
    }

    fn relay_output(&mut self, out: core::Output) {
        match out {
            core::Output::Send { conn, msg } => {
                if let Some(i) = self.node_of(conn) {
                    self.nodes[i]
                        .engine
                        .handle(self.now, engine::Input::Frame(msg));
                }
            }
            core::Output::Close { conn, .. } => {
                if let Some(i) = self.node_of(conn) {
                    self.nodes[i].conn = None;
                    self.nodes[i]
                        .engine
                        .handle(self.now, engine::Input::Disconnected);
                }
            }
            core::Output::MediaRoom { room, members } => {
                if members.is_empty() {
                    self.media_rooms.remove(&room);
                } else {
                    self.media_rooms.insert(room, members);
                }
            }
            core::Output::Store(op) => {
                for (token, reply) in self.store.apply(&[op]).unwrap() {
                    self.to_relay
                        .push_back(core::Input::Committed { token, reply });
                }
            }
        }
    }

    fn node_of(&self, conn: ConnId) -> Option<usize> {
        self.nodes.iter().position(|n| n.conn == Some(conn))
    }

    /// The network under device `i` fails: both sides see the connection drop.
    pub fn cut(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn.take() {
            self.relay
                .handle(self.now, core::Input::Disconnected { conn });
            self.nodes[i]
                .engine
                .handle(self.now, engine::Input::Disconnected);
        }
        self.settle();
    }

    /// Moves virtual time forward to `t`, firing every timer on the way.
    pub fn advance_to(&mut self, t: u64) {
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .chain(self.relay.poll_timeout())
                .filter(|&at| at <= t)
                .min();
            let Some(at) = next else { break };
            self.now = self.now.max(at);
            for n in &mut self.nodes {
                n.engine.handle_timeout(self.now);
            }
            self.relay.handle_timeout(self.now);
            self.settle();
        }
        self.now = t;
    }

    pub fn advance(&mut self, ms: u64) {
        self.advance_to(self.now + ms);
    }

    /// Event names device `i` saw, and forgets them.
    pub fn take_names(&mut self, i: usize) -> Vec<&'static str> {
        std::mem::take(&mut self.nodes[i].events)
            .iter()
            .map(Event::name)
            .collect()
    }

    pub fn take(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].events)
    }
}

/// `NAME` plus the fields a call-flow assertion cares about.
pub fn describe(e: &Event) -> String {
    match e {
        Event::OnCallCanceled { reason, .. } => format!("ON_CALL_CANCELED {reason}"),
        Event::CallingEnd { total_time, .. } => format!("CALLING_END {total_time}s"),
        Event::UserAccept { user_id, .. }
        | Event::Reject { user_id, .. }
        | Event::LineBusy { user_id, .. }
        | Event::UserEnter { user_id, .. }
        | Event::UserLeave { user_id, .. } => format!("{} {user_id}", e.name()),
        Event::NoResp { user_id_list, .. }
        | Event::GroupCallInviteeListUpdate { user_id_list, .. } => {
            format!("{} {}", e.name(), user_id_list.join(","))
        }
        Event::OnCallReceived { sponsor, .. } => format!("ON_CALL_RECEIVED from {sponsor}"),
        Event::MessageReceived {
            from,
            to,
            text,
            offline,
            ..
        } => format!(
            "MESSAGE_RECEIVED {from}>{to} {text}{}",
            if *offline { " (offline)" } else { "" }
        ),
        Event::MessageSent { to, text, .. } => format!("MESSAGE_SENT >{to} {text}"),
        Event::MessageRecalled { user_id, .. } => format!("MESSAGE_RECALLED with {user_id}"),
        Event::ConversationRead { user_id, .. } => format!("CONVERSATION_READ {user_id}"),
        Event::Typing { user_id } => format!("TYPING {user_id}"),
        Event::UserAudioAvailable {
            user_id,
            is_audio_available,
        } => format!("USER_AUDIO_AVAILABLE {user_id} {is_audio_available}"),
        Event::Error { code, cmd, .. } => format!("ERROR {code} {}", cmd.as_deref().unwrap_or("-")),
        other => other.name().to_owned(),
    }
}
