//! The reference the relay's media forwarding is measured against (issue
//! 21): a bare tokio-tungstenite forwarder, with the relay's crate versions,
//! WebSocket settings and runtime, and no protocol. The two connections
//! that open the same path are a pair; each forwards the binary frames it
//! reads to the other as they come. The media benchmark runs it as its own
//! process (its binary with [`ARG`]), so that its CPU is counted alone, as
//! the relay's is; the product does not ship it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use termphone::relay::media::MEDIA_QUEUE_FRAMES;
use termphone::relay::server::ws_config;

/// The argument that makes the benchmark's binary this forwarder.
pub const ARG: &str = "--bare-forwarder";

/// The first connection of a pair, waiting on its path for the second: its
/// queue, and where to send the second's.
type Waiting =
    Arc<Mutex<HashMap<String, (mpsc::Sender<Bytes>, oneshot::Sender<mpsc::Sender<Bytes>>)>>>;

/// Serves on 127.0.0.1:0 until killed; the first line on stdout is
/// `listening on ws://ADDR`, as the relay's is.
pub fn run() {
    // The runtime `termphone relay` builds: one worker per core it may use.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on ws://{}", listener.local_addr().unwrap());
        let waiting = Waiting::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(forward(stream, waiting.clone()));
        }
    });
}

async fn forward(stream: TcpStream, waiting: Waiting) {
    let mut path = String::new();
    // The error type is tungstenite's, for the callback it takes.
    #[allow(clippy::result_large_err)]
    let read_path = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, read_path, Some(ws_config())).await
    else {
        return;
    };
    // As many frames queued per receiver as the relay queues.
    let (tx, mut rx) = mpsc::channel::<Bytes>(MEDIA_QUEUE_FRAMES);
    let first = {
        let mut waiting = waiting.lock().unwrap();
        match waiting.remove(&path) {
            Some((peer, reply)) => {
                let _ = reply.send(tx);
                Err(peer)
            }
            None => {
                let (reply, peer) = oneshot::channel();
                waiting.insert(path, (tx, reply));
                Ok(peer)
            }
        }
    };
    let peer = match first {
        Ok(second) => match second.await {
            Ok(peer) => peer,
            Err(_) => return,
        },
        Err(peer) => peer,
    };
    loop {
        tokio::select! {
            read = ws.next() => match read {
                // A full queue drops the frame: forwarding never waits.
                Some(Ok(Message::Binary(frame))) => {
                    let _ = peer.try_send(frame);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(frame) = rx.recv() => {
                if ws.send(Message::Binary(frame)).await.is_err() {
                    break;
                }
            }
        }
    }
}
