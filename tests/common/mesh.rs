//! A deterministic harness: one relay core and N client engines wired by an
//! in-memory network on virtual time. No sockets, no sleeps.
//!
//! Faults are inputs: every frame crosses a link with the mesh's latency
//! (in order per link, interleaved across links by arrival time), and a test
//! can cut a link so that both sides see it drop, or silently (a half-open
//! link: frames vanish and nobody is told), refuse a device's connections
//! for a while, kill a device's process and start it again from what its
//! local store kept, or restart the relay from its store.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use termphone::client::engine::{self, ClientEngine, Command, EngineConfig, MediaCommand};
use termphone::client::event::Event;
use termphone::config::RelayConfig;
use termphone::ids::{AppId, DeviceId, Platform, UserId};
use termphone::media::codec::CodecSettings;
use termphone::media::report::MediaReport;
use termphone::media::session::CallMedia;
use termphone::media::{FRAME_MS, FRAME_SAMPLES};
use termphone::protocol::{ClientMsg, MediaHeader, Role, RoomId, ServerMsg, media_source};
use termphone::relay::core::{
    self, ChatSnapshot, ConnId, RESEND_WINDOW_MS, RelayCore, Settings, StoreReply,
};
use termphone::relay::store::Store;
use termphone::usersig::{self, DEV_SECRET, Ticket};

/// Where the relay is told a mesh connection comes from: it has no socket.
pub const PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

pub const T0: u64 = 1_800_000_000_000;

pub struct Node {
    pub engine: ClientEngine,
    pub conn: Option<ConnId>,
    pub events: Vec<Event>,
    /// Connection attempts the engine made.
    pub connects: usize,
    pub user: UserId,
    pub device: DeviceId,
    pub app: AppId,
    pub platform: String,
    pub multi_device: bool,
    /// What the device's local store would hold: the last seq it applied
    /// (kept from its events exactly as the local store keeps it).
    pub high_water: u64,
    /// What the engine told its media thread.
    pub media: Vec<MediaCommand>,
    /// Connection attempts fail until this time (a network that refuses).
    pub blocked_until: u64,
}

/// Something on its way across a link, or back from the store.
#[derive(Debug)]
enum Transit {
    /// Client to relay.
    Up(ConnId, ClientMsg),
    /// The client closed its end; the relay hears of it.
    UpClosed(ConnId),
    /// Relay to client.
    Down(ConnId, ServerMsg),
    /// The relay closed its end; the client hears of it.
    DownClosed(ConnId),
    /// The store answers the core.
    Committed(u64, StoreReply),
}

impl Transit {
    fn conn(&self) -> Option<ConnId> {
        match self {
            Transit::Up(c, _)
            | Transit::UpClosed(c)
            | Transit::Down(c, _)
            | Transit::DownClosed(c) => Some(*c),
            Transit::Committed(..) => None,
        }
    }
}

pub struct Mesh {
    pub relay: RelayCore,
    /// A real SQLite store (in memory) answering the core's store work; it
    /// outlives relay restarts, as a database file does.
    pub store: Store,
    config: RelayConfig,
    pub nodes: Vec<Node>,
    pub now: u64,
    /// While false, connection attempts fail as if the relay were down.
    pub relay_up: bool,
    /// One-way delay of every link, in ms.
    pub latency_ms: u64,
    /// While true, every store operation fails (a broken disk).
    pub store_down: bool,
    next_conn: ConnId,
    /// In flight, by (arrival time, order sent).
    transit: BTreeMap<(u64, u64), Transit>,
    next_transit: u64,
    /// Links cut silently: whatever is sent on them is lost.
    dead: HashSet<ConnId>,
    relay_restarts: u64,
    /// The media routes the relay published, as its shell would hold them.
    pub media_rooms: BTreeMap<RoomId, Vec<(ConnId, UserId)>>,
    /// The connections of each room that only listen (the audience).
    pub media_audience: BTreeMap<RoomId, Vec<ConnId>>,
    /// The media path, when a test asks for it (`with_media`).
    pub media: Option<MeshMedia>,
}

/// The media path on virtual time: each device's `CallMedia` (the media
/// thread's sans-IO core), clocked every 20 ms while its engine says its
/// call's media runs; each frame it sends is forwarded by the relay's
/// media routes, as the relay's media router does, losing `loss_percent`
/// of them at random per receiver. What the media reports (DTMF digits)
/// becomes the device's events, as on a real device.
pub struct MeshMedia {
    loss_percent: f64,
    rng: StdRng,
    /// Each device's call media and its call, while it runs.
    calls: BTreeMap<usize, (String, CallMedia)>,
    next_tick: u64,
    /// Frames the network carried and lost.
    pub forwarded: u64,
    pub lost: u64,
    /// Frames each device sent.
    pub sent: BTreeMap<usize, u64>,
}

impl MeshMedia {
    /// Device `i`'s engine told its media thread `command`.
    fn control(&mut self, i: usize, command: &MediaCommand, now: u64) -> Option<Event> {
        match command {
            MediaCommand::Start { me, call_id, room } => {
                let media = CallMedia::new(me.clone(), *room, CodecSettings::default()).unwrap();
                if self.calls.is_empty() {
                    self.next_tick = now + FRAME_MS;
                }
                self.calls.insert(i, (call_id.clone(), media));
            }
            MediaCommand::Stop => {
                self.calls.remove(&i);
            }
            MediaCommand::Mute(muted) => {
                if let Some((_, m)) = self.calls.get_mut(&i) {
                    m.set_muted(*muted);
                }
            }
            MediaCommand::Listen(listening) => {
                if let Some((_, m)) = self.calls.get_mut(&i) {
                    m.set_listening(*listening);
                }
            }
            MediaCommand::Peers { room, peers } => {
                if let Some((_, m)) = self.calls.get_mut(&i).filter(|(_, m)| m.room() == *room) {
                    m.set_peers(peers);
                }
            }
            MediaCommand::SendDtmf(digits) => {
                if let Some((_, m)) = self.calls.get_mut(&i)
                    && let Err(e) = m.send_dtmf(digits)
                {
                    return Some(Event::from(MediaReport::Failed(e, Some("sendDTMF"))));
                }
            }
            MediaCommand::StopDtmf => {
                if let Some((_, m)) = self.calls.get_mut(&i)
                    && let Err(e) = m.stop_dtmf()
                {
                    return Some(Event::from(MediaReport::Failed(e, Some("sendDTMF"))));
                }
            }
            // What a sound card or the figures would answer: nothing on the
            // mesh, whose media has no figures to count an outage in.
            MediaCommand::ListDevices
            | MediaCommand::SwitchDevice { .. }
            | MediaCommand::SetVoiceProcessing(_)
            | MediaCommand::Stats
            | MediaCommand::Link(_) => {}
        }
        None
    }

    fn due(&self) -> Option<u64> {
        (!self.calls.is_empty()).then_some(self.next_tick)
    }
}

impl Mesh {
    pub fn new(config: &RelayConfig) -> Mesh {
        Mesh {
            relay: RelayCore::new(Settings::from(config), [], ChatSnapshot::default(), 7),
            store: Store::in_memory().unwrap(),
            config: config.clone(),
            nodes: Vec::new(),
            now: T0,
            relay_up: true,
            latency_ms: 0,
            store_down: false,
            next_conn: 1,
            transit: BTreeMap::new(),
            next_transit: 0,
            dead: HashSet::new(),
            relay_restarts: 0,
            media_rooms: BTreeMap::new(),
            media_audience: BTreeMap::new(),
            media: None,
        }
    }

    /// Runs the media path too, losing `loss_percent` of the frames on
    /// the way (the same coin flips for the same `seed`).
    pub fn with_media(&mut self, loss_percent: f64, seed: u64) {
        self.media = Some(MeshMedia {
            loss_percent,
            rng: StdRng::seed_from_u64(seed),
            calls: BTreeMap::new(),
            next_tick: 0,
            forwarded: 0,
            lost: 0,
            sent: BTreeMap::new(),
        });
    }

    /// One 20 ms tick of every running call's media: each device sends
    /// what it captured (silence) and any telephone event, the relay's
    /// routes carry it, and each device plays out and reports its digits.
    fn media_tick(&mut self) {
        let now = self.now;
        let Some(media) = self.media.as_mut() else {
            return;
        };
        media.next_tick += FRAME_MS;
        let senders: Vec<usize> = media.calls.keys().copied().collect();
        for i in senders {
            let Some(conn) = self.nodes[i].conn else {
                continue;
            };
            let (_, m) = media.calls.get_mut(&i).expect("listed");
            if !m.sends() {
                continue;
            }
            let room = m.room();
            let mut frames: Vec<Vec<u8>> = m.telephone_event().into_iter().collect();
            frames.push(m.capture(&[0.0; FRAME_SAMPLES]).unwrap());
            *media.sent.entry(i).or_default() += frames.len() as u64;
            // The relay forwards a frame only within its sender's room, and
            // none of the audience's.
            if self
                .media_audience
                .get(&room)
                .is_some_and(|a| a.contains(&conn))
            {
                continue;
            }
            let Some(members) = self
                .media_rooms
                .get(&room)
                .filter(|m| m.iter().any(|(c, _)| *c == conn))
            else {
                continue;
            };
            for (other, _) in members.iter().filter(|(c, _)| *c != conn) {
                let Some(j) = self.nodes.iter().position(|n| n.conn == Some(*other)) else {
                    continue;
                };
                for frame in &frames {
                    if media.rng.random_bool(media.loss_percent / 100.0) {
                        media.lost += 1;
                        continue;
                    }
                    media.forwarded += 1;
                    let mut frame = frame.clone();
                    MediaHeader::stamp_source(&mut frame, media_source(conn));
                    if let Some((_, receiver)) = media.calls.get_mut(&j) {
                        receiver.receive(now, &frame).unwrap();
                    }
                }
            }
        }
        for (&i, (call_id, m)) in &mut media.calls {
            let mut out = [0.0; FRAME_SAMPLES];
            m.playout(&mut out);
            for (user, digit) in m.take_digits() {
                self.nodes[i].events.push(Event::from(MediaReport::Dtmf {
                    call_id: call_id.clone(),
                    user,
                    digit,
                }));
            }
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
            app,
            platform: platform.to_owned(),
            multi_device: false,
            high_water: 0,
            media: Vec::new(),
            blocked_until: 0,
        });
        self.nodes.len() - 1
    }

    /// Adds a terminal device of the development app, logs it in (waiting
    /// out the links' latency) and forgets the login's events.
    pub fn online(&mut self, user: &str, device: &str) -> usize {
        let i = self.add(termphone::ids::DEV_APP_ID, "terminal", user, device);
        self.login(i);
        self.advance(self.latency_ms * 6);
        self.take(i);
        i
    }

    /// Like `online`, with multi-device ability enabled.
    pub fn online_multi(&mut self, user: &str, device: &str) -> usize {
        let i = self.online(user, device);
        self.command(i, Command::EnableMultiDeviceAbility { enable: true });
        self.advance(self.latency_ms * 2);
        self.nodes[i].multi_device = true;
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
        let app = self.nodes[i].app;
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

    /// Delivers everything due by now, until nothing moves.
    pub fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].engine.poll_output() {
                    moved = true;
                    self.client_output(i, out);
                }
            }
            while let Some(out) = self.relay.poll_output() {
                moved = true;
                self.relay_output(out);
            }
            if let Some(transit) = self.pop_due() {
                moved = true;
                self.arrive(transit);
            }
            if !moved {
                break;
            }
        }
    }

    fn pop_due(&mut self) -> Option<Transit> {
        let (&key, _) = self.transit.first_key_value()?;
        (key.0 <= self.now).then(|| self.transit.remove(&key).expect("present"))
    }

    /// Puts something on a link; it arrives after the latency, behind what
    /// that link already carries.
    fn ship(&mut self, transit: Transit) {
        if transit.conn().is_some_and(|c| self.dead.contains(&c)) {
            return;
        }
        let delay = match transit {
            Transit::Committed(..) => 0,
            _ => self.latency_ms,
        };
        self.next_transit += 1;
        self.transit
            .insert((self.now + delay, self.next_transit), transit);
    }

    fn arrive(&mut self, transit: Transit) {
        let now = self.now;
        match transit {
            Transit::Up(conn, msg) => self.relay.handle(now, core::Input::Frame { conn, msg }),
            Transit::UpClosed(conn) => self.relay.handle(now, core::Input::Disconnected { conn }),
            Transit::Committed(token, reply) => self
                .relay
                .handle(now, core::Input::Committed { token, reply }),
            Transit::Down(conn, msg) => {
                if let Some(i) = self.node_of(conn) {
                    self.nodes[i].engine.handle(now, engine::Input::Frame(msg));
                }
            }
            Transit::DownClosed(conn) => {
                if let Some(i) = self.node_of(conn) {
                    self.nodes[i].conn = None;
                    self.nodes[i]
                        .engine
                        .handle(now, engine::Input::Disconnected);
                }
            }
        }
    }

    fn client_output(&mut self, i: usize, out: engine::Output) {
        match out {
            engine::Output::Connect => {
                self.nodes[i].connects += 1;
                if self.relay_up && self.nodes[i].blocked_until <= self.now {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    self.nodes[i].conn = Some(conn);
                    self.relay
                        .handle(self.now, core::Input::Connected { conn, peer: PEER });
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
                    self.ship(Transit::UpClosed(conn));
                }
            }
            engine::Output::Send(msg) => {
                if let Some(conn) = self.nodes[i].conn {
                    self.ship(Transit::Up(conn, msg));
                }
            }
            engine::Output::Event(e) => {
                // As the local store keeps it (client::local_store).
                let n = &mut self.nodes[i];
                match &e {
                    Event::MessageReceived { seq, .. }
                    | Event::MessageRecalled { seq, .. }
                    | Event::ConversationRead { seq, .. }
                    | Event::C2cReadReceipt { seq, .. }
                    | Event::MessageSent { seq: Some(seq), .. } => {
                        n.high_water = n.high_water.max(*seq)
                    }
                    Event::Synced { seq } => n.high_water = *seq,
                    _ => {}
                }
                n.events.push(e);
            }
            engine::Output::Media(control) => {
                let now = self.now;
                if let Some(event) = (self.media.as_mut()).and_then(|m| m.control(i, &control, now))
                {
                    self.nodes[i].events.push(event);
                }
                self.nodes[i].media.push(control);
            }
        }
    }

    fn relay_output(&mut self, out: core::Output) {
        match out {
            core::Output::Send { conn, msg } => self.ship(Transit::Down(conn, msg)),
            core::Output::Close { conn, .. } => self.ship(Transit::DownClosed(conn)),
            core::Output::MediaRoom {
                room,
                members,
                audience,
            } => {
                if members.is_empty() {
                    self.media_rooms.remove(&room);
                    self.media_audience.remove(&room);
                } else {
                    self.media_rooms.insert(room, members);
                    self.media_audience.insert(room, audience);
                }
            }
            core::Output::Store(op) => {
                let replies = if self.store_down {
                    let why = StoreReply::Failed("disk I/O error".into());
                    op.token().map(|t| (t, why)).into_iter().collect()
                } else {
                    self.store.apply(&[op])
                };
                for (token, reply) in replies {
                    self.ship(Transit::Committed(token, reply));
                }
            }
        }
    }

    fn node_of(&self, conn: ConnId) -> Option<usize> {
        self.nodes.iter().position(|n| n.conn == Some(conn))
    }

    /// Forgets whatever is on its way over `conn`.
    fn drop_in_flight(&mut self, conn: ConnId) {
        self.transit.retain(|_, t| t.conn() != Some(conn));
    }

    /// The network under device `i` fails: what was in flight is lost, and
    /// both sides see the connection drop.
    pub fn cut(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn.take() {
            self.drop_in_flight(conn);
            self.relay
                .handle(self.now, core::Input::Disconnected { conn });
            self.nodes[i]
                .engine
                .handle(self.now, engine::Input::Disconnected);
        }
        self.settle();
    }

    /// The network under device `i` stops carrying anything, and neither
    /// side is told (a half-open connection): only heartbeats can tell.
    pub fn cut_silently(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn {
            self.drop_in_flight(conn);
            self.dead.insert(conn);
        }
        self.settle();
    }

    /// Device `i` cannot connect for `ms`.
    pub fn block(&mut self, i: usize, ms: u64) {
        self.nodes[i].blocked_until = self.now + ms;
    }

    /// Device `i`'s process dies (`kill -9`): its engine is gone, and the
    /// relay sees the connection close. Its local store (the high-water
    /// mark) survives.
    pub fn kill(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn.take() {
            self.drop_in_flight(conn);
            if !self.dead.contains(&conn) {
                self.ship(Transit::UpClosed(conn));
            }
        }
        if let Some(media) = self.media.as_mut() {
            media.calls.remove(&i);
        }
        let n = &mut self.nodes[i];
        let config = EngineConfig {
            multi_device: n.multi_device,
            ..EngineConfig::new(n.app, Platform::parse(&n.platform).unwrap())
        };
        n.engine = ClientEngine::new(config);
        self.settle();
    }

    /// Device `i`'s process starts again on the same profile and logs in.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.login(i);
    }

    /// The relay process restarts from its store: every connection drops,
    /// and whatever was on its way (store answers included) is lost.
    pub fn restart_relay(&mut self) {
        self.transit.clear();
        self.dead.clear();
        self.media_rooms.clear();
        self.media_audience.clear();
        for i in 0..self.nodes.len() {
            if self.nodes[i].conn.take().is_some() {
                self.nodes[i]
                    .engine
                    .handle(self.now, engine::Input::Disconnected);
            }
        }
        let since = self.now.saturating_sub(RESEND_WINDOW_MS);
        self.relay_restarts += 1;
        self.relay = RelayCore::new(
            Settings::from(&self.config),
            self.store.users().unwrap(),
            self.store.chat_snapshot(since).unwrap(),
            7 + self.relay_restarts,
        );
        self.settle();
    }

    /// Moves virtual time forward to `t`, firing every timer and delivering
    /// every frame due on the way.
    pub fn advance_to(&mut self, t: u64) {
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .chain(self.relay.poll_timeout())
                .chain(self.transit.keys().next().map(|k| k.0))
                .chain(self.media.as_ref().and_then(MeshMedia::due))
                .filter(|&at| at <= t)
                .min();
            let Some(at) = next else { break };
            self.now = self.now.max(at);
            for n in &mut self.nodes {
                n.engine.handle_timeout(self.now);
            }
            self.relay.handle_timeout(self.now);
            self.settle();
            if self
                .media
                .as_ref()
                .and_then(MeshMedia::due)
                .is_some_and(|due| due <= self.now)
            {
                self.media_tick();
                self.settle();
            }
        }
        self.now = t;
    }

    pub fn advance(&mut self, ms: u64) {
        self.advance_to(self.now + ms);
    }

    /// The users whose voice the relay routes, room by room (each sorted).
    pub fn voices(&self) -> BTreeMap<RoomId, Vec<String>> {
        (self.media_rooms.iter())
            .map(|(room, members)| {
                let mut users: Vec<String> = members.iter().map(|(_, u)| u.to_string()).collect();
                users.sort();
                (*room, users)
            })
            .collect()
    }

    /// The callId of the last call event device `i` saw (its log is kept).
    pub fn last_call_id(&self, i: usize) -> String {
        (self.nodes[i].events.iter().rev())
            .find_map(|e| match e {
                Event::OnCallReceived { call_id, .. }
                | Event::CallDialing { call_id, .. }
                | Event::OnCallBegin { call_id, .. } => Some(call_id.clone()),
                _ => None,
            })
            .expect("a call event")
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
        Event::OnCallCanceled {
            reason, elsewhere, ..
        } => match elsewhere {
            Some(d) => format!("ON_CALL_CANCELED {reason} on {}", d.device),
            None => format!("ON_CALL_CANCELED {reason}"),
        },
        Event::CallingEnd { total_time, .. } => format!("CALLING_END {total_time}s"),
        Event::UserAccept { user_id, .. }
        | Event::Reject { user_id, .. }
        | Event::LineBusy { user_id, .. }
        | Event::UserLeave { user_id, .. } => format!("{} {user_id}", e.name()),
        Event::NoResp { user_id_list, .. }
        | Event::GroupCallInviteeListUpdate { user_id_list, .. } => {
            let names: Vec<&str> = user_id_list.iter().map(|u| u.as_str()).collect();
            format!("{} {}", e.name(), names.join(","))
        }
        Event::OnCallReceived {
            sponsor, waiting, ..
        } => match waiting {
            true => format!("ON_CALL_RECEIVED from {sponsor} (waiting)"),
            false => format!("ON_CALL_RECEIVED from {sponsor}"),
        },
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
        Event::C2cReadReceipt { user_id, .. } => format!("C2C_READ_RECEIPT {user_id}"),
        Event::Typing { user_id } => format!("TYPING {user_id}"),
        Event::UserAudioAvailable {
            user_id,
            is_audio_available,
        } => format!("USER_AUDIO_AVAILABLE {user_id} {is_audio_available}"),
        Event::CallHoldChanged {
            user_id, on_hold, ..
        } => format!("CALL_HOLD_CHANGED {user_id} {on_hold}"),
        Event::CallTransferred { by, to, .. } => format!("CALL_TRANSFERRED by {by} to {to}"),
        Event::UserEnter { user_id, role, .. } => match role {
            Role::Anchor => format!("USER_ENTER {user_id}"),
            Role::Audience => format!("USER_ENTER {user_id} (audience)"),
        },
        Event::RoleChanged { user_id, role, .. } => format!("ROLE_CHANGED {user_id} {role:?}"),
        Event::DtmfReceived { user_id, digit, .. } => {
            format!("DTMF_RECEIVED {} from {user_id}", digit.key())
        }
        Event::Error { code, cmd, .. } => format!("ERROR {code} {}", cmd.as_deref().unwrap_or("-")),
        other => other.name().to_owned(),
    }
}
