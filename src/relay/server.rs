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
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::config::RelayConfig;
use crate::error::{Error, ErrorCode};
use crate::protocol::{self, ClientMsg, MAX_TRANSPORT_MESSAGE_BYTES, ServerMsg};
use crate::relay::core::{CloseReason, ConnId, Input, Output, RelayCore, Settings, StoreOp};
use crate::relay::media::{MediaQueue, MediaRouter};
use crate::relay::store::Store;
use crate::time::{deadline, unix_millis};
use crate::usersig::DEV_SECRET;

/// Frames queued for one connection before it counts as too slow and is dropped.
const CONN_QUEUE: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::relay::store::StoreError),
    #[error("relay database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Queued for a connection task by the core task.
enum Outbound {
    Text(String),
    Close(CloseReason),
}

enum CoreEvent {
    Connected {
        conn: ConnId,
        tx: mpsc::Sender<Outbound>,
    },
    Input(Input),
}

/// A running relay.
pub struct RelayHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    task: JoinHandle<()>,
}

impl RelayHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://` address clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
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

/// Binds the listener and starts the relay's tasks.
pub async fn start(config: &RelayConfig, store: Store) -> Result<RelayHandle, RelayError> {
    if !config.listen.ip().is_loopback()
        && let Some(app) = config.apps.iter().find(|a| a.secret == DEV_SECRET)
    {
        return Err(RelayError::DevSecretExposed(config.listen, app.id));
    }
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
    let media = Arc::new(MediaRouter::new(config.impairment));
    let core_task = tokio::spawn(run_core(core, events_rx, store_tx, media.clone()));
    let accept = tokio::spawn(accept_loop(
        listener,
        events_tx,
        permits.clone(),
        shutdown_rx,
        media.clone(),
    ));
    let media_log = tokio::spawn(log_media(media.clone()));
    let task = tokio::spawn(async move {
        let _ = accept.await;
        let _ = core_task.await;
        media_log.abort();
        let _ = tokio::task::spawn_blocking(move || store_thread.join()).await;
    });
    tracing::info!(%addr, "relay listening");
    Ok(RelayHandle {
        addr,
        shutdown,
        permits,
        max_connections: config.max_connections,
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
                "media frames"
            );
            last = Some(now);
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

async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<CoreEvent>,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    media: Arc<MediaRouter>,
) {
    let mut next_conn: ConnId = 1;
    let mut conns = tokio::task::JoinSet::new();
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
                let conn = next_conn;
                next_conn += 1;
                let permit = permits.clone().try_acquire_owned().ok();
                let events = events.clone();
                let shutdown = shutdown.clone();
                let media = media.clone();
                conns.spawn(async move {
                    let Some(ws) = handshake(stream, peer).await else { return };
                    match permit {
                        Some(_permit) => {
                            let queue = media.register(conn);
                            serve_conn(conn, ws, events, shutdown, &media, &queue).await;
                            media.unregister(conn);
                        }
                        None => refuse(ws).await,
                    }
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(events);
    while conns.join_next().await.is_some() {}
}

async fn handshake(stream: TcpStream, peer: SocketAddr) -> Option<WebSocketStream<TcpStream>> {
    let accept = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "websocket handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "websocket handshake timed out");
            None
        }
    }
}

async fn refuse(mut ws: WebSocketStream<TcpStream>) {
    let error = Error::new(
        ErrorCode::TooManyConnections,
        "the relay is at its connection cap (relay.max_connections); try again later",
    );
    let msg = ServerMsg::Error {
        error: error.into(),
        request: None,
        client_msg_id: None,
    };
    let _ = ws.send(Message::text(protocol::encode(&msg))).await;
    let _ = ws
        .close(Some(close_frame(CloseCode::Again, "too many connections")))
        .await;
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

async fn serve_conn(
    conn: ConnId,
    mut ws: WebSocketStream<TcpStream>,
    events: mpsc::Sender<CoreEvent>,
    mut shutdown: watch::Receiver<bool>,
    media: &MediaRouter,
    media_out: &MediaQueue,
) {
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    // A client that sends bad media hears about it once, not fifty times a second.
    let mut told_bad_media = false;
    if events
        .send(CoreEvent::Connected { conn, tx })
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let input = match incoming {
                    Some(Ok(Message::Text(text))) => match protocol::decode::<ClientMsg>(&text) {
                        Ok(msg) => Input::Frame { conn, msg },
                        Err(error) => Input::BadFrame { conn, error },
                    },
                    Some(Ok(Message::Binary(frame))) => match media.forward(conn, frame) {
                        Err(error) if !told_bad_media => {
                            told_bad_media = true;
                            Input::BadFrame { conn, error }
                        }
                        _ => continue,
                    },
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(conn, error = %e, "connection read failed");
                        break;
                    }
                };
                if events.send(CoreEvent::Input(input)).await.is_err() {
                    break;
                }
            }
            frame = media_out.next() => {
                if ws.send(Message::Binary(frame)).await.is_err() {
                    break;
                }
            }
            outbound = rx.recv() => match outbound {
                Some(Outbound::Text(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close(reason)) => {
                    let frame = match reason {
                        CloseReason::Kicked => close_frame(CloseCode::Policy, "kicked out"),
                        CloseReason::Superseded => close_frame(CloseCode::Normal, "superseded by a new connection"),
                        CloseReason::HeartbeatTimeout => close_frame(CloseCode::Away, "heartbeat timeout"),
                    };
                    let _ = ws.close(Some(frame)).await;
                    break;
                }
                // The core dropped this connection (its queue overflowed).
                None => {
                    let _ = ws.close(Some(close_frame(CloseCode::Policy, "too slow to read"))).await;
                    break;
                }
            },
            _ = shutdown.changed() => {
                let _ = ws.close(Some(close_frame(CloseCode::Away, "relay shutting down"))).await;
                break;
            }
        }
    }
    let _ = events
        .send(CoreEvent::Input(Input::Disconnected { conn }))
        .await;
}

async fn run_core(
    mut core: RelayCore,
    mut events: mpsc::Receiver<CoreEvent>,
    store: std::sync::mpsc::Sender<Vec<StoreOp>>,
    media: Arc<MediaRouter>,
) {
    let mut conns: HashMap<ConnId, mpsc::Sender<Outbound>> = HashMap::new();
    let mut batch = Vec::new();
    loop {
        let timeout = core.poll_timeout();
        tokio::select! {
            event = events.recv() => match event {
                Some(CoreEvent::Connected { conn, tx }) => {
                    conns.insert(conn, tx);
                    core.handle(unix_millis(), Input::Connected { conn });
                }
                Some(CoreEvent::Input(input)) => {
                    if let Input::Disconnected { conn } = input {
                        conns.remove(&conn);
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
                    let Some(tx) = conns.get(&conn) else { continue };
                    if tx.try_send(Outbound::Text(protocol::encode(&msg))).is_err() {
                        tracing::warn!(conn, "connection queue full; dropping the connection");
                        conns.remove(&conn);
                        core.handle(unix_millis(), Input::Disconnected { conn });
                    }
                }
                Output::Close { conn, reason } => {
                    if let Some(tx) = conns.remove(&conn) {
                        let _ = tx.try_send(Outbound::Close(reason));
                    }
                }
                Output::Store(op) => batch.push(op),
                Output::MediaRoom { room, members } => media.set_room(room, &members),
            }
        }
        if !batch.is_empty() && store.send(std::mem::take(&mut batch)).is_err() {
            tracing::error!("relay store thread is gone");
        }
    }
}
