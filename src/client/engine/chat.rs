//! The client side of chat: sending with a client id (resent after a
//! reconnection until acknowledged), applying timeline entries past this
//! device's high-water mark exactly once, and syncing after every login.

use std::collections::BTreeMap;

use super::{ClientEngine, Millis};
use crate::client::event::Event;
use crate::client::local_store::StoredMessage;
use crate::error::Error;
use crate::ids::UserId;
use crate::protocol::{ClientMsg, EntryKind, ServerMsg, check_message_text};

/// Chat commands.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatCommand {
    Send {
        to: UserId,
        text: String,
        client_msg_id: Option<String>,
    },
    Recall {
        msg_id: String,
    },
    MarkRead {
        peer: UserId,
    },
    Typing {
        to: UserId,
    },
    /// Older messages from the relay, past what the local store holds.
    History {
        peer: UserId,
        before: Option<u64>,
        count: u32,
    },
}

impl ChatCommand {
    pub fn name(&self) -> &'static str {
        match self {
            ChatCommand::Send { .. } => "sendMessage",
            ChatCommand::Recall { .. } => "recallMessage",
            ChatCommand::MarkRead { .. } => "markRead",
            ChatCommand::Typing { .. } => "typing",
            ChatCommand::History { .. } => "getMessages",
        }
    }
}

#[derive(Default)]
pub(super) struct ChatState {
    /// The last timeline seq this device applied.
    high_water: u64,
    /// Sent, not yet acknowledged: resent on every new connection.
    unacked: BTreeMap<String, (UserId, String)>,
    next_client_id: u64,
}

impl ChatState {
    pub(super) fn starting_at(high_water: u64) -> ChatState {
        ChatState {
            high_water,
            ..ChatState::default()
        }
    }
}

impl ClientEngine {
    pub(super) fn chat_command(&mut self, now: Millis, cmd: ChatCommand) -> Result<(), Error> {
        match cmd {
            ChatCommand::Send {
                to,
                text,
                client_msg_id,
            } => {
                check_message_text(&text)?;
                // Unique per device: two devices of one user sending in the
                // same millisecond must not look like one message resent.
                let client_msg_id = client_msg_id.unwrap_or_else(|| {
                    self.chat.next_client_id += 1;
                    let device = self.credentials.as_ref().map_or("", |c| c.device.as_str());
                    format!("{device}-{now:x}-{}", self.chat.next_client_id)
                });
                self.chat
                    .unacked
                    .insert(client_msg_id.clone(), (to.clone(), text.clone()));
                self.send(ClientMsg::SendMessage {
                    to: to.to_string(),
                    text,
                    client_msg_id,
                });
            }
            ChatCommand::Recall { msg_id } => self.send(ClientMsg::RecallMessage { msg_id }),
            ChatCommand::MarkRead { peer } => self.send(ClientMsg::MarkRead {
                peer: peer.to_string(),
            }),
            ChatCommand::Typing { to } => self.send(ClientMsg::Typing { to: to.to_string() }),
            ChatCommand::History {
                peer,
                before,
                count,
            } => self.send(ClientMsg::History {
                peer: peer.to_string(),
                before,
                count,
            }),
        }
        Ok(())
    }

    /// A new connection is logged in: catch up, then resend what was not acknowledged.
    pub(super) fn chat_online(&mut self) {
        self.send(ClientMsg::Sync {
            after: self.chat.high_water,
        });
        let unacked: Vec<_> = self
            .chat
            .unacked
            .iter()
            .map(|(id, (to, text))| ClientMsg::SendMessage {
                to: to.to_string(),
                text: text.clone(),
                client_msg_id: id.clone(),
            })
            .collect();
        for msg in unacked {
            self.send(msg);
        }
    }

    pub(super) fn chat_frame(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::MessageSent {
                msg_id,
                client_msg_id,
                server_time,
                seq,
            } => {
                let Some((to, text)) = self.chat.unacked.remove(&client_msg_id) else {
                    return;
                };
                if let Some(seq) = seq {
                    self.chat.high_water = self.chat.high_water.max(seq);
                }
                self.event(Event::MessageSent {
                    msg_id,
                    client_msg_id,
                    to: to.to_string(),
                    text,
                    timestamp: server_time,
                    seq,
                });
            }
            ServerMsg::Entries { entries, offline } => {
                for entry in entries {
                    if entry.seq <= self.chat.high_water {
                        continue;
                    }
                    self.chat.high_water = entry.seq;
                    let seq = entry.seq;
                    let event = match entry.kind {
                        EntryKind::Message { message } => Event::MessageReceived {
                            msg_id: message.msg_id,
                            from: message.from.to_string(),
                            to: message.to.to_string(),
                            text: message.text,
                            timestamp: message.server_time,
                            offline,
                            seq,
                        },
                        EntryKind::Recall { msg_id, peer } => Event::MessageRecalled {
                            msg_id,
                            user_id: peer.to_string(),
                            seq,
                        },
                        EntryKind::Read { peer, at } => Event::ConversationRead {
                            user_id: peer.to_string(),
                            timestamp: at,
                            seq,
                        },
                    };
                    self.event(event);
                }
            }
            ServerMsg::Synced { upto } => {
                self.chat.high_water = self.chat.high_water.max(upto);
                self.event(Event::Synced {
                    seq: self.chat.high_water,
                });
            }
            ServerMsg::Typing { from } => self.event(Event::Typing {
                user_id: from.to_string(),
            }),
            ServerMsg::History { peer, messages, .. } => self.event(Event::Messages {
                user_id: peer.to_string(),
                messages: messages
                    .into_iter()
                    .map(|m| StoredMessage {
                        recalled: m.text.is_empty(),
                        msg_id: m.msg_id,
                        from: m.from.to_string(),
                        to: m.to.to_string(),
                        text: m.text,
                        timestamp: m.server_time,
                    })
                    .collect(),
            }),
            _ => unreachable!("only chat messages are routed here"),
        }
    }
}
