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
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::client::engine::{ClientEngine, Command, Input, Output};
use crate::client::event::Event;
use crate::client::launcher;
use crate::client::media_link::{MediaLink, Outgoing};
use crate::media::pipeline::MediaSettings;
use crate::protocol::{self, ServerMsg};
use crate::relay::server::ws_config;
use crate::time::{deadline, unix_millis};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Ws, String>> + Send>>;

/// Where the relay is, and whether to start the bundled one there when
/// nothing answers.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    pub url: String,
    /// The loopback address and data directory of the bundled relay.
    pub autostart: Option<(SocketAddr, PathBuf)>,
}

impl From<String> for RelayTarget {
    fn from(url: String) -> Self {
        RelayTarget {
            url,
            autostart: None,
        }
    }
}

/// The front end's side of a running client.
pub struct ClientHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// Starts the connection task. It ends when `events` is dropped, or when
/// `commands` is dropped and a logout sent before that has been acknowledged.
pub fn spawn(
    relay: impl Into<RelayTarget>,
    engine: ClientEngine,
    media: MediaSettings,
) -> ClientHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
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
            return Err(e);
        }
        let url = relay.url;
        let attempt = tokio_tungstenite::connect_async_with_config(&url, Some(ws_config()), true);
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok((ws, _response))) => Ok(ws),
            Ok(Err(e)) => Err(format!("{url}: {e}")),
            Err(_) => Err(format!("{url}: no answer within {CONNECT_TIMEOUT:?}")),
        }
    })
}

async fn run(
    relay: RelayTarget,
    mut engine: ClientEngine,
    media_settings: MediaSettings,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut ws: Option<Ws> = None;
    let mut connecting: Option<Connecting> = None;
    let mut front_end_gone = false;
    let mut media = MediaLink::new(media_settings, events.clone());
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
                    Ok(w) => {
                        ws = Some(w);
                        engine.handle(unix_millis(), Input::Connected);
                    }
                    Err(reason) => engine.handle(unix_millis(), Input::ConnectFailed { reason }),
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
