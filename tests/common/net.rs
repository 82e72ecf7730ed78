//! Helpers for tests over real sockets: a relay on 127.0.0.1:0, devices
//! driven through the real connection task, a TCP proxy that can cut links.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use termphone::client::connection::{self, ClientHandle};
use termphone::client::engine::{ClientEngine, Command, EngineConfig};
use termphone::client::event::Event;
use termphone::config::{RateLimits, RelayConfig};
use termphone::ids::{AppId, DEV_APP_ID, DeviceId, Platform, UserId};
use termphone::media::pipeline::MediaSettings;
use termphone::media::spec::AudioSpec;
use termphone::protocol::{self, ClientMsg, ServerMsg};
use termphone::relay::rate::Rate;
use termphone::relay::store::Store;
use termphone::relay::{RelayHandle, start};
use termphone::time::unix_millis;
use termphone::usersig::{self, DEV_SECRET, Ticket};

pub const WAIT: Duration = Duration::from_secs(10);

/// A relay on an ephemeral port whose rate limits stay out of the way (the
/// tests of those limits set their own).
pub fn test_config() -> RelayConfig {
    let unlimited = Rate::new(1e9, u32::MAX);
    RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        rate_limits: RateLimits {
            frames: unlimited,
            typing: unlimited,
            read_marks: unlimited,
            calls: unlimited,
            logins: unlimited,
            media_frames: unlimited,
            message_bytes_per_day: u32::MAX,
        },
        ..RelayConfig::default()
    }
}

/// A relay on an ephemeral port with its database at `db`.
pub async fn relay_at(config: &RelayConfig, db: &Path) -> RelayHandle {
    start(config, Store::open(db).unwrap()).await.unwrap()
}

pub fn ticket(app: AppId, user: &str, lifetime: u64) -> String {
    usersig::mint(
        DEV_SECRET,
        &Ticket {
            app,
            user: UserId::parse(user).unwrap(),
            issued_at: unix_millis() / 1000,
            lifetime,
        },
    )
}

/// Calls of test devices play and record nothing, unless a test says so.
pub fn null_audio() -> MediaSettings {
    MediaSettings {
        input: AudioSpec::Null,
        output: AudioSpec::Null,
        ..MediaSettings::default()
    }
}

/// A device over the real connection task, with the events it saw.
pub struct Device {
    pub handle: ClientHandle,
    pub seen: Vec<Event>,
}

impl Device {
    pub fn new(url: &str, app: AppId, platform: &str) -> Device {
        Device::with_config(
            url,
            EngineConfig::new(app, Platform::parse(platform).unwrap()),
        )
    }

    pub fn with_config(url: &str, config: EngineConfig) -> Device {
        Device {
            handle: connection::spawn(
                url.to_owned(),
                ClientEngine::new(config),
                Some(null_audio()),
            ),
            seen: Vec::new(),
        }
    }

    pub fn send(&self, cmd: Command) {
        self.handle.commands.send(cmd).unwrap();
    }

    pub fn login_with(&self, user: &str, device: &str, user_sig: String) {
        self.send(Command::Login {
            user: UserId::parse(user).unwrap(),
            device: DeviceId::parse(device).unwrap(),
            user_sig,
            sync_after: 0,
        });
    }

    /// Logs in to the development app and waits for SDK_READY.
    pub async fn online(url: &str, user: &str, device: &str) -> Device {
        let mut d = Device::new(url, DEV_APP_ID, "terminal");
        d.login_with(user, device, ticket(DEV_APP_ID, user, 3600));
        d.expect("SDK_READY").await;
        // Ready means caught up, too.
        d.expect("SYNCED").await;
        d
    }

    /// Waits for the next event named `name`, keeping what came before in `seen`.
    pub async fn expect(&mut self, name: &str) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.handle.events.recv()).await;
            match next {
                Ok(Some(e)) if e.name() == name => return e,
                Ok(Some(e)) => self.seen.push(e),
                Ok(None) => panic!(
                    "device stopped while waiting for {name}; saw {:?}",
                    self.seen
                ),
                Err(_) => panic!("no {name} within {WAIT:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Asserts that no event arrives for `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Ok(Some(e)) = tokio::time::timeout(window, self.handle.events.recv()).await {
            panic!("expected no event, got {e:?}");
        }
    }

    /// The app's users and how many devices each has online.
    pub async fn users(&mut self) -> Vec<(String, usize)> {
        self.send(Command::GetUsers { subscribe: false });
        match self.expect("USERS").await {
            Event::Users { users } => users
                .into_iter()
                .map(|u| (u.user.to_string(), u.devices.len()))
                .collect(),
            _ => unreachable!(),
        }
    }
}

/// A `login` for `user` on `device` with a valid ticket.
pub fn login(user: &str, device: &str) -> ClientMsg {
    ClientMsg::Login {
        app: DEV_APP_ID,
        user: user.into(),
        device: device.into(),
        platform: "terminal".into(),
        user_sig: ticket(DEV_APP_ID, user, 3600),
    }
}

/// A raw WebSocket peer speaking the protocol by hand.
pub struct RawPeer {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl RawPeer {
    pub async fn connect(url: &str) -> RawPeer {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        RawPeer { ws }
    }

    /// A peer whose socket buffers little, so that a peer that stops
    /// reading is soon felt by the relay, as a stopped process would be.
    pub async fn connect_small(addr: SocketAddr) -> RawPeer {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        RawPeer::over(socket, addr).await
    }

    /// A peer from another loopback address (127.0.0.2, ...), as another
    /// machine would be.
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> RawPeer {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        RawPeer::over(socket, addr).await
    }

    async fn over(socket: tokio::net::TcpSocket, addr: SocketAddr) -> RawPeer {
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}");
        let (ws, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .unwrap();
        RawPeer { ws }
    }

    /// Whatever the relay sends next (`None` when the connection ended).
    pub async fn recv_raw(
        &mut self,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        self.next("a message").await
    }

    /// What the relay sends next, within [`WAIT`]; panics that `what` did
    /// not come in time otherwise.
    async fn next(
        &mut self,
        what: &str,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        match tokio::time::timeout(WAIT, self.ws.next()).await {
            Ok(msg) => msg,
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }

    /// How the relay ended the connection: its close frame's reason, or
    /// `None` when the socket just ended.
    pub async fn closed(&mut self) -> Option<String> {
        loop {
            match self.next("the relay closing the connection").await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.reason.to_string()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.send_text(protocol::encode(msg)).await;
    }

    /// Starts the closing handshake: sends a close frame.
    pub async fn close(&mut self) {
        self.ws.close(None).await.unwrap();
    }

    pub async fn send_binary(&mut self, frame: Vec<u8>) {
        self.ws.send(Message::binary(frame)).await.unwrap();
    }

    /// Connects and logs in as `user` on `device`.
    pub async fn logged_in(url: &str, user: &str, device: &str) -> RawPeer {
        let mut peer = RawPeer::connect(url).await;
        peer.send(&login(user, device)).await;
        match peer.recv().await {
            ServerMsg::LoginOk { .. } => peer,
            other => panic!("{user} not logged in: {other:?}"),
        }
    }

    /// The next media frame, skipping any text.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        loop {
            match self.next("a media frame").await {
                Some(Ok(Message::Binary(frame))) => return frame.into(),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> ServerMsg {
        loop {
            match self.next("a reply").await {
                Some(Ok(Message::Text(t))) => return protocol::decode(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }
}

/// A TCP proxy in front of the relay whose links can be cut, refused or
/// stalled, as a network fails.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: broadcast::Sender<()>,
    faults: std::sync::Arc<ProxyFaults>,
}

#[derive(Default)]
struct ProxyFaults {
    /// New connections are closed at once until then.
    refuse_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Bytes are dropped in both directions, and nobody is told.
    stalled: std::sync::atomic::AtomicBool,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = broadcast::channel(4);
        let cut_tx = cut.clone();
        let faults = std::sync::Arc::new(ProxyFaults::default());
        let shared = faults.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let refusing = shared
                    .refuse_until
                    .lock()
                    .unwrap()
                    .is_some_and(|until| tokio::time::Instant::now() < until);
                if refusing {
                    drop(client);
                    continue;
                }
                let mut cut = cut_tx.subscribe();
                let faults = shared.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_rx, client_tx) = client.into_split();
                    let (up_rx, up_tx) = upstream.into_split();
                    tokio::select! {
                        _ = pump(client_rx, up_tx, &faults) => {}
                        _ = pump(up_rx, client_tx, &faults) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Proxy { addr, cut, faults }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Drops every link through the proxy, like a network failure.
    pub fn cut(&self) {
        let _ = self.cut.send(());
    }

    /// Closes new connections at once for `for_how_long`.
    pub fn refuse(&self, for_how_long: Duration) {
        *self.faults.refuse_until.lock().unwrap() =
            Some(tokio::time::Instant::now() + for_how_long);
    }

    /// Links stay open but carry nothing (a half-open network), until
    /// `stall(false)`.
    pub fn stall(&self, stalled: bool) {
        self.faults
            .stalled
            .store(stalled, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies one direction of a link, dropping the bytes while it is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &ProxyFaults,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if faults.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
