//! The relay's IO shell: a WebSocket listener, one task per connection, one
//! task that owns the sans-IO core, one thread that owns the SQLite store.
//!
//! Connection tasks decode frames and forward them to the core task; the
//! core task runs the core and routes its outputs back through per-connection
//! queues. Binary media frames skip the core: the connection task hands them
//! to the [`MediaRouter`], which the core keeps up to date. Nothing here
//! decides anything about logins or calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::config::{RateLimits, RelayConfig};
use crate::error::{Error, ErrorCode};
use crate::protocol::{self, ClientMsg, MAX_TRANSPORT_MESSAGE_BYTES, ServerMsg};
use crate::relay::core::{Audit, CloseReason, ConnId, Input, Output, RelayCore, Settings, StoreOp};
use crate::relay::gate::{Gate, Unauthenticated};
use crate::relay::media::{MediaPort, MediaRouter, Outgoing, PortWaker};
use crate::relay::store::Store;
use crate::time::{deadline, unix_millis};
use crate::tls::{Fingerprint, ServerTls, Stream, TlsError};
use crate::usersig::DEV_SECRET;

/// Frames queued for one connection before it counts as too slow and is
/// dropped (besides `relay.max_queue_bytes`, which bounds their size).
const CONN_QUEUE: usize = 1024;

/// The kernel's send buffer per connection. Left to autotuning it grows to
/// megabytes, which hides a peer that stopped reading from the write
/// deadline (and costs that much kernel memory per stalled peer); this is
/// still ample for chat and voice at any round-trip time a call survives.
const SOCKET_SEND_BUFFER: libc::c_int = 256 * 1024;

/// How often freed memory is handed back to the system, besides right after
/// a large queue is dropped: a burst of big messages leaves freed memory in
/// every worker thread's heap.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Refusals being written at once: each costs a handshake, so past this a
/// connection over a cap is closed without a word.
const MAX_REFUSING: usize = 256;

/// WebSocket settings for every connection of this crate, client or relay.
///
/// The small read buffer is what keeps an idle connection cheap: the
/// library's default of 128 KiB per connection would dominate the relay's
/// memory (see docs/benchmarks.md).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_TRANSPORT_MESSAGE_BYTES)
        .max_message_size(Some(MAX_TRANSPORT_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_TRANSPORT_MESSAGE_BYTES))
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "refusing to listen on {0}: app {1} uses the built-in development secret, which is public. \
         Listen on a loopback address (127.0.0.1), or give every app its own secret in [[relay.apps]] of the config"
    )]
    DevSecretExposed(SocketAddr, u32),
    #[error(
        "refusing to listen on {0} without TLS: tickets, messages and voice would cross the network in clear. \
         Start the relay with --tls (or tls = true under [relay] in the config) for wss://, \
         listen on a loopback address (127.0.0.1), or, on a network you trust entirely, pass --insecure-plaintext"
    )]
    PlaintextExposed(SocketAddr),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "relay.tls is on but the relay has no directory for its self-signed certificate \
         (an in-memory database): give relay.tls_cert and relay.tls_key"
    )]
    NoCertificateDir,
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::relay::store::StoreError),
    #[error("relay database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot listen for the signals that stop the relay: {0}")]
    Signals(std::io::Error),
}

/// Queued for a connection task by the core task.
enum Outbound {
    Text(String),
    /// The connection logged in: it no longer counts as waiting at the gate.
    Authenticated,
    Close(CloseReason),
}

/// The core task's end of a connection's queue.
struct ConnQueue {
    tx: mpsc::Sender<Outbound>,
    backlog: Arc<Backlog>,
    /// Wakes the connection's task for what was queued: it waits on its
    /// media port, not on this queue.
    port: PortWaker,
}

impl ConnQueue {
    fn send(&self, outbound: Outbound) -> bool {
        let sent = self.tx.try_send(outbound).is_ok();
        self.port.wake();
        sent
    }

    /// Lets the connection go: its queue closes, then its task is woken to
    /// find out (in this order: woken first, it could look too early and
    /// sleep on).
    fn close(self) {
        let ConnQueue { tx, port, .. } = self;
        drop(tx);
        port.wake();
    }
}

/// What a connection has not written yet, shared by both ends of its queue.
#[derive(Default)]
struct Backlog {
    /// Bytes of text queued and not yet written (the connection task
    /// subtracts what it writes).
    bytes: AtomicUsize,
    /// Frames read and handed to the core, not yet handled by it: their
    /// answers are still to come to the queue.
    unanswered: AtomicUsize,
    /// The core gave up on the connection: what is still queued would only
    /// keep the socket alive.
    abandoned: AtomicBool,
}

enum CoreEvent {
    Connected {
        conn: ConnId,
        peer: SocketAddr,
        queue: ConnQueue,
    },
    Input(Input),
}

/// The limits the IO shell enforces itself.
#[derive(Clone, Copy, Debug)]
struct Limits {
    login_timeout: Duration,
    write_timeout: Duration,
    max_queue_bytes: usize,
    rates: RateLimits,
}

/// A running relay.
pub struct RelayHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    tls: Option<Fingerprint>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://` (or, with TLS, `wss://`) address clients connect to.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    /// The SHA-256 of the certificate the relay presents, with TLS on.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.tls
    }

    pub fn active_connections(&self) -> usize {
        self.max_connections - self.permits.available_permits()
    }

    /// Stops accepting, closes every connection with "going away", flushes
    /// the store and waits for all of it.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// The certificate a relay with `relay.tls` presents: the configured one,
/// or the self-signed one in `dir` (made there on first use).
pub fn server_tls(config: &RelayConfig, dir: Option<&Path>) -> Result<ServerTls, RelayError> {
    let given = config.tls_cert.as_deref().zip(config.tls_key.as_deref());
    let dir = match (given, dir) {
        (Some(_), _) => Path::new("."),
        (None, Some(dir)) => dir,
        (None, None) => return Err(RelayError::NoCertificateDir),
    };
    Ok(ServerTls::load(given, dir, config.listen)?)
}

/// Binds the listener and starts the relay's tasks. With `relay.tls` the
/// self-signed certificate (unless one is configured) lives beside the
/// store's database.
pub async fn start(config: &RelayConfig, store: Store) -> Result<RelayHandle, RelayError> {
    let tls = match config.tls {
        true => {
            let dir = store.path().and_then(|p| p.parent().map(Path::to_path_buf));
            Some(server_tls(config, dir.as_deref())?)
        }
        false => None,
    };
    start_with(config, store, tls).await
}

/// Whether the relay may listen where it is told to: off loopback, only
/// with secrets of its own, and with TLS unless told it is insecure.
pub fn check_exposure(config: &RelayConfig, tls: bool) -> Result<(), RelayError> {
    if config.listen.ip().is_loopback() {
        return Ok(());
    }
    if let Some(app) = config.apps.iter().find(|a| a.secret == DEV_SECRET) {
        return Err(RelayError::DevSecretExposed(config.listen, app.id));
    }
    if !tls && !config.insecure_plaintext {
        return Err(RelayError::PlaintextExposed(config.listen));
    }
    Ok(())
}

/// [`start`] with the TLS settings already loaded (`None`: plaintext).
pub async fn start_with(
    config: &RelayConfig,
    store: Store,
    tls: Option<ServerTls>,
) -> Result<RelayHandle, RelayError> {
    check_exposure(config, tls.is_some())?;
    if !config.listen.ip().is_loopback() && tls.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "--insecure-plaintext: listening off loopback without TLS; tickets, messages and voice \
             cross the network in clear, and clients say so in their event log"
        );
    }
    let fingerprint = tls.as_ref().map(|t| t.fingerprint);
    raise_open_file_limit(config.max_connections);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| RelayError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| RelayError::Bind(config.listen, e))?;
    let snapshot = store.chat_snapshot(unix_millis().saturating_sub(chat_horizon(config)))?;
    let core = RelayCore::new(
        Settings::from(config),
        store.users()?,
        snapshot,
        rand::random(),
    );

    let (events_tx, events_rx) = mpsc::channel(4096);
    let (store_tx, store_rx) = std::sync::mpsc::channel::<Vec<StoreOp>>();
    let replies = events_tx.downgrade();
    let store_thread = std::thread::Builder::new()
        .name("relay-store".into())
        .spawn(move || run_store(store, store_rx, replies))
        .expect("spawn store thread");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let media = Arc::new(MediaRouter::new(config.impairment.clone()));
    let limits = Limits {
        login_timeout: Duration::from_secs(config.login_timeout_secs),
        write_timeout: Duration::from_secs(config.write_timeout_secs),
        max_queue_bytes: config.max_queue_bytes,
        rates: config.rate_limits,
    };
    let retention = tokio::spawn(prune_hourly(store_tx.clone(), config.retention_days));
    let core_task = tokio::spawn(run_core(core, events_rx, store_tx, media.clone(), limits));
    let accept = tokio::spawn(accept_loop(
        listener,
        Doors {
            permits: permits.clone(),
            gate: Gate::new(
                config.max_unauthenticated,
                config.max_unauthenticated_per_address,
            ),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        },
        events_tx,
        shutdown_rx,
        media.clone(),
        limits,
        tls,
    ));
    let media_log = tokio::spawn(log_media(media.clone()));
    let trim = tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        loop {
            every.tick().await;
            return_freed_memory();
        }
    });
    let task = tokio::spawn(async move {
        let _ = accept.await;
        let _ = core_task.await;
        media_log.abort();
        trim.abort();
        retention.abort();
        // Its handle on the store goes with it, so the store thread can end.
        let _ = retention.await;
        let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    });
    tracing::info!(%addr, tls = fingerprint.is_some(), "relay listening");
    Ok(RelayHandle {
        addr,
        shutdown,
        permits,
        max_connections: config.max_connections,
        tls: fingerprint,
        task,
    })
}

/// Logs the media counters once a minute while they move: dropped frames
/// are counted, and this is where an operator sees them.
async fn log_media(media: Arc<MediaRouter>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    let mut last = None;
    loop {
        every.tick().await;
        let now = media.stats.snapshot();
        if last.as_ref() != Some(&now) {
            tracing::info!(
                forwarded = now.forwarded,
                dropped_full = now.dropped_full,
                dropped_impaired = now.dropped_impaired,
                unrouted = now.unrouted,
                malformed = now.malformed,
                rate_limited = now.rate_limited,
                "media frames"
            );
            last = Some(now);
        }
    }
}

/// Deletes what is older than `relay.retention_days`, at start and hourly.
async fn prune_hourly(store: std::sync::mpsc::Sender<Vec<StoreOp>>, retention_days: u32) {
    let retention_ms = u64::from(retention_days) * 24 * 3600 * 1000;
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let before = unix_millis().saturating_sub(retention_ms);
        if store.send(vec![StoreOp::Prune { before }]).is_err() {
            return;
        }
    }
}

/// How far back the chat core needs the messages at start: as long as a
/// message can be recalled or resent.
fn chat_horizon(config: &RelayConfig) -> u64 {
    let recall = config
        .apps
        .iter()
        .map(|a| a.recall_window_secs * 1000)
        .max();
    recall
        .unwrap_or(0)
        .max(crate::relay::core::RESEND_WINDOW_MS)
}

/// Owns the database. Batches whatever is waiting into one transaction (one
/// fsync for many messages), then tells the core what is now durable, and
/// what failed. Only a weak handle on the core's channel, so shutdown can
/// drain it.
fn run_store(
    mut store: Store,
    rx: std::sync::mpsc::Receiver<Vec<StoreOp>>,
    replies: mpsc::WeakSender<CoreEvent>,
) {
    while let Ok(mut batch) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let done = store.apply(&batch);
        let Some(tx) = replies.upgrade() else {
            continue;
        };
        for (token, reply) in done {
            if tx
                .blocking_send(CoreEvent::Input(Input::Committed { token, reply }))
                .is_err()
            {
                break;
            }
        }
    }
}

/// Sets the soft limit of open files to the hard one: the common default
/// of 1,024 would stop the relay far below `max_connections`, with clients
/// hanging in the handshake while accept fails.
fn raise_open_file_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    // A connection needs one descriptor; keep some for the database and logs.
    let wanted = max_connections as u64 + 64;
    if limit.rlim_cur < wanted {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-file limit is below relay.max_connections: raise it (ulimit -n) or lower the cap"
        );
    }
}

fn limit_send_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on an open socket, with a pointer to a c_int and its size.
    let failed = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SOCKET_SEND_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } != 0;
    if failed {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot set the send buffer");
    }
}

/// What a new connection must get past.
struct Doors {
    /// `max_connections`.
    permits: Arc<Semaphore>,
    /// `max_unauthenticated` and `max_unauthenticated_per_address`.
    gate: Arc<Gate>,
    /// Refusals being answered.
    refusing: Arc<Semaphore>,
}

async fn accept_loop(
    listener: TcpListener,
    doors: Doors,
    events: mpsc::Sender<CoreEvent>,
    mut shutdown: watch::Receiver<bool>,
    media: Arc<MediaRouter>,
    limits: Limits,
    tls: Option<ServerTls>,
) {
    let mut next_conn: ConnId = 1;
    let mut conns = tokio::task::JoinSet::new();
    // Refusals at the caps, for the operator; a flood of them is a few lines.
    let mut audit = Audit::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                limit_send_buffer(&stream);
                let conn = next_conn;
                next_conn += 1;
                let admitted = doors.gate.admit(peer.ip()).map_err(|r| r.message()).and_then(|waiting| {
                    let permit = doors.permits.clone().try_acquire_owned().map_err(|_| {
                        "the relay is at its connection cap (relay.max_connections); try again later"
                    })?;
                    Ok((permit, waiting))
                });
                if let Err(why) = &admitted
                    && let Some(skipped) = audit.admit(unix_millis())
                {
                    tracing::warn!(target: "termphone::audit", conn, %peer, skipped, "connection refused: {why}");
                }
                let refusal = match &admitted {
                    Ok(_) => None,
                    Err(why) => match doors.refusing.clone().try_acquire_owned() {
                        Ok(permit) => Some((permit, *why)),
                        // Too many to answer: closing the socket is the answer.
                        Err(_) => continue,
                    },
                };
                let events = events.clone();
                let media = media.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let Some(ws) = handshake(stream, peer, limits.login_timeout, tls.as_ref()).await else { return };
                    match (admitted, refusal) {
                        (Ok((_permit, waiting)), _) => {
                            let port = media.register(conn);
                            let io = ConnIo { conn, peer, events, media: &media, port, limits };
                            serve_conn(io, ws, Some(waiting)).await;
                            media.unregister(conn);
                        }
                        (Err(_), Some((_refusing, why))) => refuse(ws, why).await,
                        (Err(_), None) => {}
                    }
                });
            }
            _ = shutdown.changed() => {
                // Every connection task learns it from its media port.
                media.shut_down();
                break;
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(events);
    while conns.join_next().await.is_some() {}
}

/// The TLS handshake (with TLS on) and the WebSocket one, within `timeout`
/// together.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    tls: Option<&ServerTls>,
) -> Option<WebSocketStream<Stream>> {
    let accept = async {
        let stream = match tls {
            Some(tls) => tls.accept(stream).await.map_err(|e| format!("TLS: {e}"))?,
            None => Stream::Plain(stream),
        };
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            None
        }
    }
}

async fn refuse(mut ws: WebSocketStream<Stream>, why: &str) {
    let error = Error::new(ErrorCode::TooManyConnections, why);
    let msg = ServerMsg::unprompted(error);
    let _ = ws.send(Message::text(protocol::encode(&msg))).await;
    let _ = ws
        .close(Some(close_frame(CloseCode::Again, "too many connections")))
        .await;
}

/// The close frame for a frame the WebSocket layer refused.
fn refused_frame(e: &tokio_tungstenite::tungstenite::Error) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error as Ws;
    match e {
        Ws::Capacity(_) => Some(close_frame(CloseCode::Size, "message too big")),
        Ws::Utf8(_) => Some(close_frame(CloseCode::Invalid, "invalid UTF-8")),
        Ws::Protocol(_) => Some(close_frame(CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// Writes a connection task makes in a row, with more queued, before it
/// reads its socket first.
const WRITES_BEFORE_A_READ: u32 = 8;

/// Requests read and not yet answered, and messages queued, past which a
/// connection is not read until they go down: a burst read as fast as it
/// came, its answers (several a request: a login's are three) coming from
/// the core all at once, overflowed the queue of [`CONN_QUEUE`] and the
/// device was dropped as too slow to read answers it had not been given
/// time to read.
const BEHIND_BEFORE_A_READ: usize = CONN_QUEUE / 4;

/// What a connection task does next.
enum Turn {
    /// Write what its port yields: a frame, or a wake-up for a message.
    Write(Option<Outgoing>),
    /// Handle what its socket read.
    Read(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// What a connection task talks to.
struct ConnIo<'a> {
    conn: ConnId,
    peer: SocketAddr,
    events: mpsc::Sender<CoreEvent>,
    media: &'a MediaRouter,
    port: MediaPort,
    limits: Limits,
}

async fn serve_conn(
    io: ConnIo<'_>,
    mut ws: WebSocketStream<Stream>,
    mut waiting: Option<Unauthenticated>,
) {
    let ConnIo {
        conn,
        peer,
        events,
        media,
        mut port,
        limits,
    } = io;
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    let backlog = Arc::new(Backlog::default());
    let queue = ConnQueue {
        tx,
        backlog: backlog.clone(),
        port: port.waker(),
    };
    let wake = port.waker();
    // A client that sends bad media hears about it once, not fifty times a second.
    let mut told_bad_media = false;
    let mut told_media_rate = false;
    let started = tokio::time::Instant::now();
    let clock = || started.elapsed().as_millis() as u64;
    let mut frames = limits.rates.frames.bucket(0);
    let mut media_frames = limits.rates.media_frames.bucket(0);
    if events
        .send(CoreEvent::Connected { conn, peer, queue })
        .await
        .is_err()
    {
        return;
    }
    // Writes since the socket was last read.
    let mut writes = 0;
    loop {
        // What is queued for the connection goes first: a route the core
        // gave it is taken before the next frame is read, and a peer that
        // does not read what it is sent is not read from either. But after
        // a few writes in a row the socket is read first, so that a device
        // on a link slower than what it is sent (a group call on a weak
        // mobile link) is still heard, unless what waits for it is messages
        // past half of relay.max_queue_bytes: those it must take first.
        let behind = backlog.unanswered.load(Ordering::Relaxed) + rx.len();
        let may_read = behind < BEHIND_BEFORE_A_READ;
        let read_first = may_read
            && writes >= WRITES_BEFORE_A_READ
            && backlog.bytes.load(Ordering::Relaxed) < limits.max_queue_bytes / 2;
        let turn = match (may_read, read_first) {
            // The core wakes the port as it answers.
            (false, _) => Turn::Write(port.next().await),
            (true, false) => tokio::select! {
                biased;
                out = port.next() => Turn::Write(out),
                incoming = ws.next() => Turn::Read(incoming),
            },
            (true, true) => tokio::select! {
                biased;
                incoming = ws.next() => Turn::Read(incoming),
                out = port.next() => Turn::Write(out),
            },
        };
        match turn {
            Turn::Write(out) => {
                writes += 1;
                let outbound = match out {
                    Some(Outgoing::Frame(frame)) => {
                        if !write(&mut ws, Message::Binary(frame), conn, limits).await {
                            break;
                        }
                        continue;
                    }
                    // The core queued something, or let the connection go.
                    // One message per wake-up, so that media flows between
                    // them.
                    Some(Outgoing::Woken) => match rx.try_recv() {
                        Ok(outbound) => {
                            wake.wake();
                            Some(outbound)
                        }
                        Err(TryRecvError::Empty) => continue,
                        Err(TryRecvError::Disconnected) => None,
                    },
                    // The router ends every connection's media when the
                    // relay shuts down.
                    None => {
                        let _ = tokio::time::timeout(
                            limits.write_timeout,
                            ws.close(Some(close_frame(CloseCode::Away, "relay shutting down"))),
                        )
                        .await;
                        break;
                    }
                };
                match outbound {
                    _ if backlog.abandoned.load(Ordering::Relaxed) => {
                        let _ = ws
                            .close(Some(close_frame(CloseCode::Policy, "too slow to read")))
                            .await;
                        break;
                    }
                    Some(Outbound::Text(text)) => {
                        let len = text.len();
                        let sent = write(&mut ws, Message::text(text), conn, limits).await;
                        backlog.bytes.fetch_sub(len, Ordering::Relaxed);
                        if !sent {
                            break;
                        }
                    }
                    Some(Outbound::Authenticated) => waiting = None,
                    Some(Outbound::Close(reason)) => {
                        let frame = match reason {
                            CloseReason::Kicked => close_frame(CloseCode::Policy, "kicked out"),
                            CloseReason::Superseded => {
                                close_frame(CloseCode::Normal, "superseded by a new connection")
                            }
                            CloseReason::HeartbeatTimeout => {
                                close_frame(CloseCode::Away, "heartbeat timeout")
                            }
                            CloseReason::LoginTimeout => {
                                close_frame(CloseCode::Policy, "no login in time")
                            }
                        };
                        let _ =
                            tokio::time::timeout(limits.write_timeout, ws.close(Some(frame))).await;
                        break;
                    }
                    None => break,
                }
            }
            Turn::Read(incoming) => {
                writes = 0;
                if read_first {
                    // The port was not looked at first: a route it holds
                    // is taken before this frame is forwarded.
                    port.take_route();
                }
                let input = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // Faster than relay.rate_limits.frames: read more
                        // slowly. Nothing is refused and the order is kept;
                        // the sender's frames wait in its own socket.
                        let wait = frames.wait_ms(clock());
                        if wait > 0 {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        frames.take(clock());
                        match protocol::decode::<ClientMsg>(&text) {
                            Ok(msg) => Input::Frame { conn, msg },
                            Err(error) => Input::BadFrame { conn, error },
                        }
                    }
                    Some(Ok(Message::Binary(frame))) => {
                        if !media_frames.take(clock()) {
                            media.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                            if told_media_rate {
                                continue;
                            }
                            told_media_rate = true;
                            let error = Error::new(
                                ErrorCode::RateLimited,
                                format!(
                                    "more than {} media frames a second (relay.rate_limits.media_frames): \
                                 the excess is dropped",
                                    limits.rates.media_frames.per_sec
                                ),
                            );
                            Input::BadFrame { conn, error }
                        } else {
                            match media.forward(&port, frame) {
                                Err(error) if !told_bad_media => {
                                    told_bad_media = true;
                                    Input::BadFrame { conn, error }
                                }
                                _ => continue,
                            }
                        }
                    }
                    // The peer's close is answered (tungstenite queued the
                    // answer; a write sends it), as RFC 6455 asks.
                    Some(Ok(Message::Close(_))) => {
                        let _ = tokio::time::timeout(limits.write_timeout, ws.flush()).await;
                        break;
                    }
                    None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(conn, error = %e, "connection read failed");
                        // Said in a close frame where the socket still
                        // carries one: the client sees why, not 1006.
                        if let Some(frame) = refused_frame(&e) {
                            let _ =
                                tokio::time::timeout(limits.write_timeout, ws.close(Some(frame)))
                                    .await;
                        }
                        break;
                    }
                };
                backlog.unanswered.fetch_add(1, Ordering::Relaxed);
                if events.send(CoreEvent::Input(input)).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(waiting);
    let held = backlog.bytes.load(Ordering::Relaxed);
    drop((ws, rx));
    if held > MAX_TRANSPORT_MESSAGE_BYTES {
        return_freed_memory();
    }
    let _ = events
        .send(CoreEvent::Input(Input::Disconnected { conn }))
        .await;
}

/// Writes one frame; false when the connection is done for. Every write has
/// a deadline: a peer that stops reading must not hold its socket and its
/// queue for as long as the kernel keeps trying.
async fn write(
    ws: &mut WebSocketStream<Stream>,
    msg: Message,
    conn: ConnId,
    limits: Limits,
) -> bool {
    let mut send = ws.send(msg);
    // Nearly every write completes at once: only one that waits for the
    // socket is given its deadline, whose timer would cost more than the
    // write itself.
    if let Some(sent) = futures_util::future::poll_immediate(&mut send).await {
        return sent.is_ok();
    }
    match tokio::time::timeout(limits.write_timeout, send).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!(
                conn,
                "a write waited past relay.write_timeout_secs; closing"
            );
            false
        }
    }
}

/// Hands memory freed by a large queue back to the system: glibc keeps it
/// in the process otherwise, and a relay that once held a stalled device's
/// backlog would look that large for good.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn run_core(
    mut core: RelayCore,
    mut events: mpsc::Receiver<CoreEvent>,
    store: std::sync::mpsc::Sender<Vec<StoreOp>>,
    media: Arc<MediaRouter>,
    limits: Limits,
) {
    let mut conns: HashMap<ConnId, ConnQueue> = HashMap::new();
    let mut batch = Vec::new();
    loop {
        let timeout = core.poll_timeout();
        // The connection whose frame this turn handles: once its answers are
        // queued, it may be read again.
        let mut answered = None;
        tokio::select! {
            event = events.recv() => match event {
                Some(CoreEvent::Connected { conn, peer, queue }) => {
                    conns.insert(conn, queue);
                    core.handle(unix_millis(), Input::Connected { conn, peer });
                }
                Some(CoreEvent::Input(input)) => {
                    match input {
                        Input::Disconnected { conn } => drop(conns.remove(&conn)),
                        Input::Frame { conn, .. } | Input::BadFrame { conn, .. } => {
                            answered = Some(conn);
                        }
                        _ => {}
                    }
                    core.handle(unix_millis(), input);
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline(timeout.unwrap_or(u64::MAX))), if timeout.is_some() => {
                core.handle_timeout(unix_millis());
            }
        }
        while let Some(output) = core.poll_output() {
            match output {
                Output::Send { conn, msg } => {
                    let Some(queue) = conns.get(&conn) else {
                        continue;
                    };
                    let logged_in =
                        matches!(msg, ServerMsg::LoginOk { .. } | ServerMsg::Resumed { .. });
                    if !enqueue(
                        queue,
                        protocol::encode(&msg),
                        logged_in,
                        limits.max_queue_bytes,
                    ) {
                        tracing::warn!(
                            conn,
                            max_queue_bytes = limits.max_queue_bytes,
                            "connection does not read its queue; dropping it"
                        );
                        if let Some(queue) = conns.remove(&conn) {
                            queue.backlog.abandoned.store(true, Ordering::Relaxed);
                            queue.close();
                        }
                        core.handle(unix_millis(), Input::Disconnected { conn });
                    }
                }
                Output::Close { conn, reason } => {
                    if let Some(queue) = conns.remove(&conn) {
                        queue.send(Outbound::Close(reason));
                        queue.close();
                    }
                }
                Output::Store(op) => batch.push(op),
                Output::MediaRoom {
                    room,
                    members,
                    audience,
                } => media.set_room(room, &members, &audience),
            }
        }
        if let Some(queue) = answered.and_then(|conn| conns.get(&conn)) {
            queue.backlog.unanswered.fetch_sub(1, Ordering::Relaxed);
            queue.port.wake();
        }
        if !batch.is_empty() && store.send(std::mem::take(&mut batch)).is_err() {
            tracing::error!("relay store thread is gone");
        }
    }
}

/// Queues `text` for a connection; false when the connection is too far
/// behind (by bytes or by frames) and must be dropped.
fn enqueue(queue: &ConnQueue, text: String, logged_in: bool, max_bytes: usize) -> bool {
    let len = text.len();
    if queue.backlog.bytes.load(Ordering::Relaxed) + len > max_bytes {
        return false;
    }
    queue.backlog.bytes.fetch_add(len, Ordering::Relaxed);
    if !queue.send(Outbound::Text(text)) {
        return false;
    }
    // After the answer itself, so the gate's place is freed once the login
    // is certain; a full queue here has already failed above.
    !logged_in || queue.send(Outbound::Authenticated)
}
