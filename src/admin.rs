//! `termphone admin`: a client of the relay's admin API.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::error::{Error, ErrorCode};
use crate::ids::{AppId, UserId};
use crate::protocol::{self, ClientMsg, ServerMsg};
use crate::tls::{ConnectError, Trust};

/// A server-side send: as `from` to `to`; returns the new message's id.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    relay_url: &str,
    trust: &Trust,
    token: &str,
    app: AppId,
    from: &UserId,
    to: &UserId,
    text: &str,
    include_sender: bool,
) -> Result<String, Error> {
    let unreachable = |e: String| {
        Error::new(
            ErrorCode::RelayUnreachable,
            format!("cannot reach the relay at {relay_url}: {e}"),
        )
    };
    let mut ws = match crate::client::connection::open(relay_url, trust).await {
        Ok(connected) => {
            // The token is the relay's master key: said, as a device says
            // its own link is plain (warned, not refused: a LAN relay run
            // with --insecure-plaintext is the user's choice).
            if let Some(peer) = connected.plaintext_off_loopback {
                eprintln!(
                    "termphone: warning: the admin token goes to {relay_url} ({peer}) unencrypted: \
                     anyone on the way can read it and send as any user; use a wss:// relay \
                     (termphone relay --tls)"
                );
            }
            connected.ws
        }
        Err(ConnectError::Unreachable(e)) => return Err(unreachable(e)),
        Err(ConnectError::Mismatch(m)) => {
            return Err(Error::new(ErrorCode::RelayCertificateMismatch, m.message()));
        }
        Err(ConnectError::Untrusted(why)) => {
            return Err(Error::new(ErrorCode::RelayCertificateMismatch, why));
        }
    };
    let request = ClientMsg::AdminSend {
        token: token.to_owned(),
        app,
        from: from.to_string(),
        to: to.to_string(),
        text: text.to_owned(),
        include_sender,
    };
    ws.send(Message::text(protocol::encode(&request)))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    while let Some(frame) = ws.next().await {
        let Ok(Message::Text(text)) = frame else {
            continue;
        };
        match protocol::decode::<ServerMsg>(&text)? {
            ServerMsg::AdminSent { msg_id } => {
                let _ = ws.close(None).await;
                return Ok(msg_id);
            }
            ServerMsg::Error { error, .. } => {
                let code = ErrorCode::from_code(error.code).unwrap_or(ErrorCode::MalformedFrame);
                return Err(Error::new(code, error.message));
            }
            _ => {}
        }
    }
    Err(unreachable("the relay closed the connection".into()))
}
