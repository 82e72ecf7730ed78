//! The client side of chat: sending with a client id (resent after a
//! reconnection until acknowledged), applying timeline entries past this
//! device's high-water mark exactly once and in order, and syncing after
//! every login and whenever a gap shows.
//!
//! The invariant (docs/chat.md): the high-water mark only ever moves to the
//! seq of an entry this device applied (and reported in an event), with
//! every earlier entry of its timeline applied before it, or to what a
//! `synced` from the relay says. An `entries` frame that does not follow the
//! mark is never applied: it means something was lost on the way, and a
//! sync fetches it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use strum::IntoStaticStr;

use super::{ClientEngine, Millis, SYNC_RETRY_MS};
use crate::client::event::Event;
use crate::client::records::StoredMessage;
use crate::error::{Error, ErrorCode};
use crate::ids::{DeviceId, UserId};
use crate::protocol::{ChatMessage, ClientMsg, Entry, EntryKind, ServerMsg, check_message_text};

/// Chat commands. Each variant's name, in camelCase, is the headless
/// command it carries out (`Command::name`).
#[derive(Clone, Debug, PartialEq, IntoStaticStr)]
#[strum(serialize_all = "camelCase")]
pub enum ChatCommand {
    SendMessage {
        to: UserId,
        text: String,
        client_msg_id: Option<String>,
    },
    RecallMessage {
        msg_id: String,
    },
    MarkRead {
        peer: UserId,
    },
    Typing {
        to: UserId,
    },
    /// Older messages from the relay, past what the local store holds.
    GetMessages {
        peer: UserId,
        before: Option<u64>,
        count: u32,
    },
}

#[derive(Default)]
pub(super) struct ChatState {
    /// The last timeline seq this device applied.
    high_water: u64,
    /// A sync was asked for and its `synced` has not come back.
    syncing: bool,
    /// When to ask again after the relay could not read a sync.
    retry_sync_at: Option<Millis>,
    /// Sent, not yet acknowledged: resent on every new connection, in the
    /// order they were written (the relay stores them in that order).
    unacked: Unacked,
    /// Acknowledged, and still to come back in this device's own timeline,
    /// where its MESSAGE_SENT goes out in timeline order (sync on).
    acked: HashSet<String>,
    next_client_id: u64,
    /// `getMessages` asked of the relay, in the order asked (the relay
    /// answers in that order): each gathers the relay's pages until it has
    /// its count or the conversation's start.
    pages: VecDeque<PageWanted>,
}

/// A `getMessages` the relay is answering.
struct PageWanted {
    count: u32,
    /// Oldest first, as the relay's pages came (newest page first).
    got: Vec<StoredMessage>,
}

/// Messages on their way at once, per device. Like TCP's window: a long
/// queue written offline, or a script that writes thousands of messages in
/// one go, never floods the relay or outgrows its queue for this device
/// (`relay.max_queue_bytes`); the rest follow as acknowledgements come back.
const SEND_WINDOW: usize = 64;

/// Messages waiting for their acknowledgement, by client id and in the
/// order they were written.
#[derive(Default)]
struct Unacked {
    by_id: HashMap<String, (u64, (UserId, String))>,
    order: BTreeMap<u64, String>,
    next: u64,
    /// Every message up to this one in `order` went out on the current link.
    sent_upto: u64,
}

impl Unacked {
    fn push(&mut self, id: String, message: (UserId, String)) {
        self.next += 1;
        self.order.insert(self.next, id.clone());
        self.by_id.insert(id, (self.next, message));
    }

    fn get(&self, id: &str) -> Option<&(UserId, String)> {
        self.by_id.get(id).map(|(_, m)| m)
    }

    fn remove(&mut self, id: &str) -> Option<(UserId, String)> {
        let (n, message) = self.by_id.remove(id)?;
        self.order.remove(&n);
        Some(message)
    }

    /// A new link: nothing is on its way on it yet.
    fn restart(&mut self) {
        self.sent_upto = 0;
    }

    /// The messages that may go out now, in order, and marks them sent.
    fn next_to_send(&mut self) -> Vec<ClientMsg> {
        let on_the_way = self.order.range(..=self.sent_upto).count();
        let next: Vec<(u64, String)> = (self.order.range(self.sent_upto + 1..))
            .take(SEND_WINDOW.saturating_sub(on_the_way))
            .map(|(&n, id)| (n, id.clone()))
            .collect();
        if let Some(&(last, _)) = next.last() {
            self.sent_upto = last;
        }
        next.into_iter()
            .map(|(_, id)| {
                let (to, text) = &self.by_id[&id].1;
                ClientMsg::SendMessage {
                    to: to.to_string(),
                    text: text.clone(),
                    client_msg_id: id,
                }
            })
            .collect()
    }
}

impl ChatState {
    pub(super) fn starting_at(high_water: u64) -> ChatState {
        ChatState {
            high_water,
            ..ChatState::default()
        }
    }

    pub(super) fn sync_retry_at(&self) -> Option<Millis> {
        self.retry_sync_at
    }

    /// Messages of this device are on their way: not yet acknowledged, or
    /// acknowledged and their `MESSAGE_SENT` still to come.
    pub(super) fn sending(&self) -> bool {
        !self.unacked.order.is_empty() || !self.acked.is_empty()
    }

    /// Stops waiting for the messages on their way: the client ids of
    /// those not acknowledged, in the order they were written.
    pub(super) fn give_up(&mut self) -> Vec<String> {
        self.acked.clear();
        std::mem::take(&mut self.unacked)
            .order
            .into_values()
            .collect()
    }

    /// This device (`device` of user `me`) sent `message` under a client id
    /// it still waits on.
    fn own(&mut self, message: &ChatMessage, me: &UserId, device: &DeviceId) -> bool {
        let Some(by) = &message.sent_by else {
            return false;
        };
        if message.from != *me || by.device != *device {
            return false;
        }
        let waited = self.unacked.remove(&by.client_msg_id).is_some();
        self.acked.remove(&by.client_msg_id) || waited
    }
}

impl ClientEngine {
    pub(super) fn chat_command(&mut self, now: Millis, cmd: ChatCommand) -> Result<(), Error> {
        match cmd {
            ChatCommand::SendMessage {
                to,
                text,
                client_msg_id,
            } => {
                // Unique per device: two devices of one user sending in the
                // same millisecond must not look like one message resent.
                let client_msg_id = client_msg_id.unwrap_or_else(|| {
                    self.chat.next_client_id += 1;
                    let device = self.credentials.as_ref().map_or("", |c| c.device.as_str());
                    let nonce = self.config.id_nonce;
                    format!("{device}-{now:x}-{nonce:08x}-{}", self.chat.next_client_id)
                });
                // Refused with its id, as every refusal of a message is, so
                // that a script with several in flight knows which.
                if let Err(e) = check_message_text(&text) {
                    self.event(Event::Error {
                        code: e.code.code(),
                        message: e.message,
                        cmd: Some("sendMessage".into()),
                        relay_code: None,
                        client_msg_id: Some(client_msg_id),
                    });
                    return Ok(());
                }
                if let Some(pending) = self.chat.unacked.get(&client_msg_id) {
                    // Already on its way under this id.
                    if *pending == (to, text) {
                        return Ok(());
                    }
                    return Err(Error::new(
                        ErrorCode::ClientMsgIdReused,
                        format!(
                            "clientMsgID {client_msg_id:?} already names a message still being sent; \
                             give this one a new id"
                        ),
                    ));
                }
                self.chat.unacked.push(client_msg_id, (to, text));
                self.send_unacked();
            }
            ChatCommand::RecallMessage { msg_id } => self.send(ClientMsg::RecallMessage { msg_id }),
            ChatCommand::MarkRead { peer } => self.send(ClientMsg::MarkRead {
                peer: peer.to_string(),
            }),
            ChatCommand::Typing { to } => self.send(ClientMsg::Typing { to: to.to_string() }),
            ChatCommand::GetMessages {
                peer,
                before,
                count,
            } => {
                self.send(ClientMsg::History {
                    peer: peer.to_string(),
                    before,
                    count,
                });
                self.chat.pages.push_back(PageWanted {
                    count,
                    got: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// A new connection is logged in: catch up, then resend what was not acknowledged.
    pub(super) fn chat_online(&mut self) {
        self.request_sync();
        self.chat.unacked.restart();
        self.send_unacked();
    }

    /// Sends what the window allows, once the link is logged in.
    fn send_unacked(&mut self) {
        if self.link != super::Link::Ready {
            return;
        }
        for msg in self.chat.unacked.next_to_send() {
            self.send(msg);
        }
    }

    /// The link is gone: whatever sync was under way ends with it.
    pub(super) fn chat_offline(&mut self) {
        self.chat.syncing = false;
        self.chat.retry_sync_at = None;
        // Their answers went with the link: said, not waited for forever.
        for _ in std::mem::take(&mut self.chat.pages) {
            self.event(Event::error(
                Error::new(
                    ErrorCode::RelayUnreachable,
                    "the link to the relay was lost before the messages came; ask again",
                ),
                Some("getMessages"),
            ));
        }
    }

    /// The relay refused a `getMessages`: it is answered.
    pub(super) fn history_refused(&mut self) {
        self.chat.pages.pop_front();
    }

    pub(super) fn chat_sync_failed(&mut self, now: Millis) {
        self.chat.syncing = false;
        self.chat.retry_sync_at = Some(now + SYNC_RETRY_MS);
    }

    pub(super) fn chat_timeout(&mut self, now: Millis) {
        if self.chat.retry_sync_at.is_some_and(|at| at <= now) {
            self.chat.retry_sync_at = None;
            if self.link == super::Link::Ready {
                self.request_sync();
            }
        }
    }

    /// The relay refused a message: it is not resent. (What is already
    /// acknowledged under the same id is another message, and stays.)
    pub(super) fn chat_refused(&mut self, client_msg_id: &str) {
        self.chat.unacked.remove(client_msg_id);
        self.send_unacked();
    }

    fn request_sync(&mut self) {
        if !self.chat.syncing {
            self.chat.syncing = true;
            self.chat.retry_sync_at = None;
            self.send(ClientMsg::Sync {
                after: self.chat.high_water,
            });
        }
    }

    pub(super) fn chat_frame(&mut self, now: Millis, msg: ServerMsg) {
        self.apply_chat_frame(now, msg);
        // Acknowledgements (or own entries) open the window for the next ones.
        self.send_unacked();
    }

    fn apply_chat_frame(&mut self, _now: Millis, msg: ServerMsg) {
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
                if seq.is_some_and(|seq| seq > self.chat.high_water) {
                    // Its own timeline brings it back: MESSAGE_SENT goes out
                    // there, in order with everything else.
                    self.chat.acked.insert(client_msg_id);
                    return;
                }
                // Sync off (no timeline of the sender's), or a resend of a
                // message this device has already seen come back.
                self.event(Event::MessageSent {
                    msg_id,
                    client_msg_id,
                    to,
                    text,
                    timestamp: server_time,
                    seq,
                });
            }
            ServerMsg::Entries {
                entries,
                offline,
                after,
            } => {
                if after > self.chat.high_water {
                    // Entries between the mark and `after` never arrived.
                    tracing::info!(
                        high_water = self.chat.high_water,
                        after,
                        "gap in the timeline; syncing"
                    );
                    self.request_sync();
                    return;
                }
                for entry in entries {
                    if entry.seq > self.chat.high_water {
                        self.chat.high_water = entry.seq;
                        self.apply_entry(entry, offline);
                    }
                }
            }
            ServerMsg::Synced { upto, more } => {
                self.chat.syncing = false;
                // The relay's word: below the mark only when its database
                // is not the one this device synced with before.
                self.chat.high_water = upto;
                if more {
                    // One page of a long catch-up: SYNCED still means caught up.
                    self.request_sync();
                } else {
                    self.event(Event::Synced { seq: upto });
                }
            }
            ServerMsg::Typing { from } => self.event(Event::Typing { user_id: from }),
            ServerMsg::History {
                peer,
                messages,
                more,
            } => {
                let page = messages
                    .into_iter()
                    .map(|m| StoredMessage::new(m.msg_id, m.from, m.to, m.text, m.server_time));
                let Some(mut wanted) = self.chat.pages.pop_front() else {
                    return;
                };
                wanted.got.splice(0..0, page);
                let oldest = wanted.got.first().map(|m| m.timestamp);
                let short = wanted.count as usize - wanted.got.len().min(wanted.count as usize);
                // A page the relay cut at its frame size: the rest follows,
                // from before the oldest (pages end between milliseconds).
                if more && short > 0 {
                    self.send(ClientMsg::History {
                        peer: peer.to_string(),
                        before: oldest,
                        count: short as u32,
                    });
                    self.chat.pages.push_front(wanted);
                    return;
                }
                self.event(Event::Messages {
                    user_id: peer,
                    messages: wanted.got,
                });
            }
            _ => unreachable!("only chat messages are routed here"),
        }
    }

    fn apply_entry(&mut self, entry: Entry, offline: bool) {
        let seq = entry.seq;
        let event = match entry.kind {
            EntryKind::Message { message } => {
                let own = self
                    .credentials
                    .as_ref()
                    .is_some_and(|c| self.chat.own(&message, &c.user, &c.device));
                if own {
                    let client_msg_id = message
                        .sent_by
                        .map(|by| by.client_msg_id)
                        .unwrap_or_default();
                    Event::MessageSent {
                        msg_id: message.msg_id,
                        client_msg_id,
                        to: message.to,
                        text: message.text,
                        timestamp: message.server_time,
                        seq: Some(seq),
                    }
                } else {
                    Event::MessageReceived {
                        msg_id: message.msg_id,
                        from: message.from,
                        to: message.to,
                        text: message.text,
                        timestamp: message.server_time,
                        offline,
                        seq,
                    }
                }
            }
            EntryKind::Recall { msg_id, peer } => Event::MessageRecalled {
                msg_id,
                user_id: peer,
                seq,
            },
            EntryKind::Read { peer, at } => Event::ConversationRead {
                user_id: peer,
                timestamp: at,
                seq,
            },
            EntryKind::ReadReceipt { peer, at } => Event::C2cReadReceipt {
                user_id: peer,
                timestamp: at,
                seq,
            },
        };
        self.event(event);
    }
}
