//! The client's IO shell: one task that owns the engine and the WebSocket.
//!
//! It connects when the engine says so, feeds frames and timeouts in, and
//! carries out what comes out. Front ends talk to it through two channels.
//! During a call it also carries media: binary frames between the socket
//! and the media thread, and a WebSocket ping every 2 s for the round trip
//! that network quality reports.

use std::future::{Future, pending};
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::client::engine::{ClientEngine, Command, Input, Output};
use crate::client::event::Event;
use crate::client::media_link::{MediaLink, Outgoing};
use crate::client::{launcher, queue};
use crate::error::{Error, ErrorCode};
use crate::media::pipeline::MediaSettings;
use crate::protocol::{self, ServerMsg};
use crate::relay::server::ws_config;
use crate::time::{deadline, unix_millis};
use crate::tls::{self, ConnectError, Connected, HandshakeError, Stream, Trust};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<Stream>;
type Connecting = Pin<Box<dyn Future<Output = Result<Connected<Ws>, ConnectError>> + Send>>;

/// Where the relay is, whether to start the bundled one there when nothing
/// answers, and which certificate a `wss://` relay must present.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    pub url: String,
    /// The loopback address and data directory of the bundled relay.
    pub autostart: Option<(SocketAddr, PathBuf)>,
    pub trust: Trust,
}

impl From<String> for RelayTarget {
    /// No pin, and a certificate trusted on first use is remembered for
    /// this process only.
    fn from(url: String) -> Self {
        RelayTarget {
            url,
            autostart: None,
            trust: Trust::default(),
        }
    }
}

/// Opens a WebSocket to the relay at `url`, over TLS for `wss://`, checking
/// its certificate against `trust`; within the connect timeout.
pub async fn open(url: &str, trust: &Trust) -> Result<Connected<Ws>, ConnectError> {
    let attempt = tls::connect(url, trust, |stream| async move {
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .map(|(ws, _response)| ws)
            .map_err(|e| match &e {
                WsError::Io(io) if tls::closed_early(io) => HandshakeError::Closed(e.to_string()),
                WsError::ConnectionClosed
                | WsError::AlreadyClosed
                | WsError::Protocol(ProtocolError::HandshakeIncomplete) => {
                    HandshakeError::Closed(e.to_string())
                }
                _ => HandshakeError::Answered(e.to_string()),
            })
    });
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Unreachable(format!(
            "{url}: no answer within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// The front end's side of a running client.
pub struct ClientHandle {
    pub commands: queue::Sender<Command>,
    pub events: queue::Receiver<Event>,
}

/// Starts the connection task. It ends when `events` is dropped, or when
/// `commands` is dropped and a logout sent before that has been acknowledged.
pub fn spawn(
    relay: impl Into<RelayTarget>,
    engine: ClientEngine,
    media: Option<MediaSettings>,
) -> ClientHandle {
    let (cmd_tx, cmd_rx) = queue::unbounded();
    let (ev_tx, ev_rx) = queue::unbounded();
    tokio::spawn(run(relay.into(), engine, media, cmd_rx, ev_tx));
    ClientHandle {
        commands: cmd_tx,
        events: ev_rx,
    }
}

fn connect(relay: RelayTarget) -> Connecting {
    Box::pin(async move {
        // Every attempt, not only the first: a bundled relay that stopped
        // while idle must come back when a device wants it again.
        if let Some((addr, data_dir)) = &relay.autostart
            && let Err(e) = launcher::ensure_relay(*addr, data_dir).await
        {
            return Err(ConnectError::Unreachable(e));
        }
        open(&relay.url, &relay.trust).await
    })
}

async fn run(
    relay: RelayTarget,
    mut engine: ClientEngine,
    media_settings: Option<MediaSettings>,
    mut commands: queue::Receiver<Command>,
    events: queue::Sender<Event>,
) {
    let mut ws: Option<Ws> = None;
    let mut connecting: Option<Connecting> = None;
    let mut front_end_gone = false;
    let mut media = MediaLink::new(media_settings, events.clone());
    // Said once: every reconnection would say it again.
    let mut warned_plaintext = false;
    loop {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Media(control) => media.control(control),
                Output::Connect => connecting = Some(connect(relay.clone())),
                Output::Disconnect => {
                    connecting = None;
                    if let Some(mut w) = ws.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), w.close(None)).await;
                    }
                }
                Output::Send(msg) => {
                    let Some(w) = ws.as_mut() else { continue };
                    if let Err(e) = w.send(Message::text(protocol::encode(&msg))).await {
                        tracing::debug!(error = %e, "send failed");
                        ws = None;
                        engine.handle(unix_millis(), Input::Disconnected);
                    }
                }
                Output::Event(event) => {
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
        }
        if front_end_gone && !engine.is_closing() {
            break;
        }
        let timeout = engine.poll_timeout();
        tokio::select! {
            cmd = commands.recv(), if !front_end_gone => match cmd {
                Some(cmd) => engine.handle(unix_millis(), Input::Command(cmd)),
                None => front_end_gone = true,
            },
            result = async { match connecting.as_mut() { Some(c) => c.await, None => pending().await } } => {
                connecting = None;
                match result {
                    Ok(Connected { ws: w, plaintext_off_loopback }) => {
                        if let Some(peer) = plaintext_off_loopback.filter(|_| !warned_plaintext) {
                            warned_plaintext = true;
                            tracing::warn!(%peer, "the link to the relay is not encrypted");
                            let warning = Error::new(
                                ErrorCode::PlaintextRelay,
                                format!(
                                    "the link to the relay at {} ({peer}) is not encrypted: tickets, \
                                     messages and voice can be read on the way; ask for a wss:// \
                                     relay (termphone relay --tls)",
                                    relay.url
                                ),
                            );
                            if events.send(Event::error(warning, None)).is_err() {
                                return;
                            }
                        }
                        ws = Some(w);
                        engine.handle(unix_millis(), Input::Connected);
                    }
                    Err(ConnectError::Unreachable(reason)) => {
                        engine.handle(unix_millis(), Input::ConnectFailed { reason })
                    }
                    Err(ConnectError::Mismatch(mismatch)) => {
                        tracing::warn!(
                            address = %mismatch.address,
                            trusted = %mismatch.trusted,
                            presented = %mismatch.presented,
                            "the relay presented another certificate; not connecting"
                        );
                        let error = Error::new(ErrorCode::RelayCertificateMismatch, mismatch.message());
                        engine.handle(unix_millis(), Input::ConnectRefused { error });
                    }
                    Err(ConnectError::Untrusted(why)) => {
                        let error = Error::new(ErrorCode::RelayCertificateMismatch, why);
                        engine.handle(unix_millis(), Input::ConnectRefused { error });
                    }
                }
            }
            outgoing = media.next() => {
                // Without a link a frame is stale before one is back: drop it.
                let message = match outgoing {
                    Outgoing::Frame(frame) => Message::binary(frame),
                    Outgoing::Ping => Message::Ping(Default::default()),
                };
                if let Some(w) = ws.as_mut()
                    && let Err(e) = w.send(message).await
                {
                    tracing::debug!(error = %e, "media send failed");
                }
            }
            frame = async { match ws.as_mut() { Some(w) => w.next().await, None => pending().await } } => {
                match frame {
                    Some(Ok(Message::Binary(data))) => media.received(data.into()),
                    Some(Ok(Message::Pong(_))) => media.pong(),
                    Some(Ok(Message::Text(text))) => match protocol::decode::<ServerMsg>(&text) {
                        Ok(msg) => engine.handle(unix_millis(), Input::Frame(msg)),
                        Err(e) => tracing::warn!(error = %e, "undecodable frame from the relay"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        tracing::info!(?frame, "relay closed the connection");
                        ws = None;
                        engine.handle(unix_millis(), Input::Disconnected);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "connection to the relay lost");
                        ws = None;
                        engine.handle(unix_millis(), Input::Disconnected);
                    }
                    None => {
                        ws = None;
                        engine.handle(unix_millis(), Input::Disconnected);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline(timeout.unwrap_or(u64::MAX))), if timeout.is_some() => {
                engine.handle_timeout(unix_millis());
            }
        }
    }
    while let Some(output) = engine.poll_output() {
        if let (Output::Send(msg), Some(w)) = (output, ws.as_mut()) {
            let _ = w.send(Message::text(protocol::encode(&msg))).await;
        }
    }
    if let Some(mut w) = ws {
        let _ = tokio::time::timeout(Duration::from_secs(1), w.close(None)).await;
    }
}
