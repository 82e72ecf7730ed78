//! The model's chat: opening a conversation, paging and scrolling it, the
//! message cursor and its actions, the draft editor, and what the engine
//! says about messages.

use crossterm::event::{KeyCode, KeyEvent, MouseEvent, MouseEventKind};
use ratatui_textarea::{TextArea, WrapMode};

use super::{Effect, LogLine, Model, Pane};
use crate::client::engine::{ChatCommand, Command};
use crate::client::event::Event;
use crate::client::records::StoredMessage;
use crate::ids::UserId;
use crate::tui::conversation::{self, Conversation, Delivery, Older, Shown};
use crate::tui::keymap::Action;
use crate::tui::text;

/// At most one typing notice per this long (docs/chat.md).
const TYPING_EVERY_MS: u64 = 3_000;
/// Rows one turn of the mouse wheel scrolls.
const WHEEL_ROWS: usize = 3;

impl Model {
    /// Shows the conversation with `peer`, reading its newest page; its
    /// unread messages are read now (on every device of this user).
    pub(super) fn open(&mut self, peer: UserId) -> Vec<Effect> {
        self.focus = Pane::Conversation;
        let unread = self.unread.get(&peer).copied().unwrap_or(0);
        if self.open_peer() != Some(&peer) {
            self.conversation = Some(Conversation::new(peer.clone(), unread));
        }
        // The conversation list says how far the peer has read.
        let mut effects = vec![
            Effect::LoadMessages(peer.clone()),
            Effect::LoadConversations,
        ];
        if unread > 0 {
            effects.push(Effect::Engine(Command::Chat(ChatCommand::MarkRead {
                peer,
            })));
        }
        effects
    }

    /// Focus came to the conversation pane: what arrived in it while the
    /// focus was elsewhere is read now (it stayed unread on every device,
    /// the sender never saw it read, though it was on screen and answered).
    pub(super) fn read_on_focus(&mut self) -> Vec<Effect> {
        let peer = match self.open_peer() {
            Some(peer) if self.focus == Pane::Conversation => peer.clone(),
            _ => return Vec::new(),
        };
        if self.unread.get(&peer).copied().unwrap_or(0) == 0 {
            return Vec::new();
        }
        vec![
            Effect::Engine(Command::Chat(ChatCommand::MarkRead { peer })),
            Effect::LoadConversations,
        ]
    }

    /// The local store's newest page of a conversation.
    pub fn on_messages(&mut self, peer: &UserId, messages: Vec<StoredMessage>) {
        let (me, width) = (self.me.clone(), self.text_width());
        if let Some(c) = self.open_mut(peer) {
            if c.newer_dropped {
                c.reload(messages, &me, width);
            } else {
                c.merge(messages, &me, width);
            }
        }
    }

    /// The local store's page before the oldest shown. A short one means
    /// the relay was asked for the rest (its answer comes as `MESSAGES`).
    pub fn on_older(&mut self, peer: &UserId, messages: Vec<StoredMessage>) {
        let (me, width) = (self.me.clone(), self.text_width());
        if let Some(c) = self.open_mut(peer) {
            let full = messages.len() >= conversation::PAGE;
            c.merge(messages, &me, width);
            if full {
                c.older = Older::Maybe;
            }
        }
    }

    /// Where the conversation's message area was drawn: scrolling pages by
    /// its height and wraps at its width.
    pub fn on_viewport(&mut self, width: u16, height: u16) {
        self.viewport = (width, height);
    }

    fn text_width(&self) -> usize {
        usize::from(self.viewport.0)
    }

    fn page_rows(&self) -> usize {
        usize::from(self.viewport.1).saturating_sub(1).max(1)
    }

    fn open_mut(&mut self, peer: &UserId) -> Option<&mut Conversation> {
        self.conversation.as_mut().filter(|c| &c.peer == peer)
    }

    pub(super) fn chat_action(&mut self, action: Action, now: u64) -> Vec<Effect> {
        match action {
            // Signed out, a message could not go; the keys are for logging in.
            Action::Compose if self.signed_out.is_some() => Vec::new(),
            Action::Compose => {
                let effects = match (self.conversation.is_some(), self.selected_contact()) {
                    (false, Some(peer)) => self.open(peer),
                    _ => Vec::new(),
                };
                self.composing = self.conversation.is_some();
                if self.composing {
                    self.focus = Pane::Conversation;
                }
                effects
            }
            Action::Cancel => {
                self.composing = false;
                Vec::new()
            }
            Action::Newline => {
                if let Some(draft) = self.draft() {
                    draft.insert_newline();
                }
                Vec::new()
            }
            Action::Send => self.send(now),
            Action::Older => self.scroll_older(self.page_rows()),
            Action::Newer => self.scroll_newer(self.page_rows()),
            Action::Newest => self.scroll_newer(usize::MAX),
            Action::Resend => self.resend(now),
            Action::Recall => match self.selected_message() {
                Some(s) if s.message.from == self.me && s.delivery != Delivery::Sending => {
                    let msg_id = s.message.msg_id.clone();
                    vec![Effect::Engine(Command::Chat(ChatCommand::RecallMessage {
                        msg_id,
                    }))]
                }
                _ => {
                    self.notice = Some(("select one of your messages to recall".into(), now));
                    Vec::new()
                }
            },
            Action::Copy if !self.copy => {
                self.notice = Some((
                    "copying is off: set osc52_copy = true under [tui] in the config \
                     (docs/configuration.md; the terminal must allow OSC 52)"
                        .into(),
                    now,
                ));
                Vec::new()
            }
            Action::Copy => match self.selected_message() {
                Some(s) if !s.message.recalled => {
                    let text = s.message.text.clone();
                    self.notice = Some(("copied to the terminal's clipboard".into(), now));
                    vec![Effect::Copy(text)]
                }
                _ => {
                    self.notice = Some(("select a message to copy".into(), now));
                    Vec::new()
                }
            },
            Action::MessageDetails => {
                self.detail = (self.conversation.as_ref()).and_then(|c| {
                    let shown = self.selected_message()?;
                    Some(message_details(shown, c.read(shown, &self.me), now))
                });
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn selected_message(&self) -> Option<&Shown> {
        let c = self.conversation.as_ref()?;
        c.shown.get(c.selected?)
    }

    fn scroll_older(&mut self, rows: usize) -> Vec<Effect> {
        let (me, width, height) = (self.me.clone(), self.text_width(), self.viewport.1);
        let Some(c) = &mut self.conversation else {
            return Vec::new();
        };
        if !c.scroll_up(rows, usize::from(height), &me, width) {
            return Vec::new();
        }
        match c.oldest_timestamp() {
            Some(before) => {
                c.older = Older::Loading;
                vec![Effect::LoadOlder {
                    peer: c.peer.clone(),
                    before,
                }]
            }
            None => Vec::new(),
        }
    }

    fn scroll_newer(&mut self, rows: usize) -> Vec<Effect> {
        let Some(c) = &mut self.conversation else {
            return Vec::new();
        };
        // Past messages dropped to bound the window: read the newest again.
        if c.scroll_down(rows) {
            return vec![Effect::LoadMessages(c.peer.clone())];
        }
        Vec::new()
    }

    pub(super) fn on_mouse(&mut self, mouse: MouseEvent) -> Vec<Effect> {
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scroll_older(WHEEL_ROWS),
            MouseEventKind::ScrollDown => self.scroll_newer(WHEEL_ROWS),
            _ => Vec::new(),
        }
    }

    /// Moves the message cursor (from the newest when none is on) and
    /// scrolls so that the message shows.
    pub(super) fn move_cursor(&mut self, down: bool) {
        let (me, width, height) = (self.me.clone(), self.text_width(), self.viewport.1);
        let Some(c) = &mut self.conversation else {
            return;
        };
        let Some(last) = c.shown.len().checked_sub(1) else {
            return;
        };
        c.selected = Some(match (c.selected, down) {
            (None, _) => last,
            (Some(i), true) => (i + 1).min(last),
            (Some(i), false) => i.saturating_sub(1),
        });
        let rows = conversation::rows(c, &me, width);
        let total = rows.len();
        let height = usize::from(height).max(1);
        let mine: Vec<usize> = (rows.iter().enumerate())
            .filter(|(_, r)| r.message == c.selected)
            .map(|(i, _)| i)
            .collect();
        if let (Some(&first), Some(&last_row)) = (mine.first(), mine.last()) {
            let bottom = total - c.scroll;
            if last_row >= bottom {
                c.scroll = total - (last_row + 1);
            } else if first < bottom.saturating_sub(height) {
                c.scroll = total - (first + height).min(total);
            }
        }
    }

    /// The open conversation's draft, made on first use.
    fn draft(&mut self) -> Option<&mut TextArea<'static>> {
        let peer = self.conversation.as_ref()?.peer.clone();
        Some(self.drafts.entry(peer).or_insert_with(new_draft))
    }

    /// A key while writing that no action took: the editor's.
    pub(super) fn edit(&mut self, event: KeyEvent, now: u64) -> Vec<Effect> {
        // This run's last, else (after a restart) this conversation's.
        let history = self.sent_texts.last().cloned().or_else(|| {
            let shown = &self.conversation.as_ref()?.shown;
            (shown.iter().rev())
                .find(|s| s.message.from == self.me && !s.message.recalled)
                .map(|s| s.message.text.clone())
        });
        let Some(draft) = self.draft() else {
            return Vec::new();
        };
        // Up on an empty draft brings back the last text sent from here.
        if event.code == KeyCode::Up && draft.is_empty() {
            if let Some(text) = history {
                draft.insert_str(text);
            }
            return Vec::new();
        }
        // Ctrl-U deletes back to the line's start, as in a shell (the
        // editor's own binding is undo).
        let ctrl_u = event.code == KeyCode::Char('u')
            && event
                .modifiers
                .contains(crossterm::event::KeyModifiers::CONTROL);
        let changed = if ctrl_u {
            draft.delete_line_by_head()
        } else {
            draft.input(event)
        };
        if changed {
            return self.typed(now);
        }
        Vec::new()
    }

    /// A bracketed paste: one block of text into the draft (opening the
    /// editor if a conversation is open), never sent line by line.
    pub(super) fn paste(&mut self, pasted: &str, now: u64) -> Vec<Effect> {
        if self.conversation.is_none() || self.signed_out.is_some() {
            return Vec::new();
        }
        self.composing = true;
        let pasted = pasted.replace("\r\n", "\n").replace('\r', "\n");
        let changed = self.draft().is_some_and(|draft| draft.insert_str(pasted));
        if changed { self.typed(now) } else { Vec::new() }
    }

    /// The draft changed: tell the peer, at the rate docs/chat.md allows.
    fn typed(&mut self, now: u64) -> Vec<Effect> {
        let due = (self.typing_sent_at).is_none_or(|at| now.saturating_sub(at) >= TYPING_EVERY_MS);
        match self.open_peer() {
            Some(peer) if due => {
                let to = peer.clone();
                self.typing_sent_at = Some(now);
                vec![Effect::Engine(Command::Chat(ChatCommand::Typing { to }))]
            }
            _ => Vec::new(),
        }
    }

    /// Sends the draft: it shows at once as sending, under a client id of
    /// this device's, so the relay's answer (or refusal) finds it.
    fn send(&mut self, now: u64) -> Vec<Effect> {
        let Some(draft) = self.draft() else {
            return Vec::new();
        };
        let text = draft.lines().join("\n");
        if text.trim().is_empty() {
            return Vec::new();
        }
        // The editor stays open for the next message, as in any chat
        // client; Esc makes the keys commands again (a call's among them).
        *draft = new_draft();
        let to = self
            .open_peer()
            .cloned()
            .expect("a draft is a conversation's");
        self.sends += 1;
        let client_msg_id = self.client_msg_id();
        self.sent_texts.push(text.clone());
        let local = Shown {
            message: StoredMessage::new(
                format!("local-{client_msg_id}"),
                self.me.clone(),
                to.clone(),
                text.clone(),
                now,
            ),
            delivery: Delivery::Sending,
            client_msg_id: Some(client_msg_id.clone()),
        };
        let (me, width) = (self.me.clone(), self.text_width());
        let mut effects = Vec::new();
        if let Some(c) = &mut self.conversation {
            // Back to the newest; past a bounded window, it is read again.
            if c.scroll_to_newest() {
                c.reload(Vec::new(), &me, width);
                effects.push(Effect::LoadMessages(c.peer.clone()));
            }
            c.push(local, &me, width);
        }
        (self.on_their_way).insert(client_msg_id.clone(), (to.clone(), text.clone()));
        effects.push(Effect::Engine(Command::Chat(ChatCommand::SendMessage {
            to,
            text,
            client_msg_id: Some(client_msg_id),
        })));
        effects
    }

    /// Unique for this user: the device, when this process started, and a count.
    fn client_msg_id(&self) -> String {
        let device: String = self.device.as_str().chars().take(16).collect();
        format!("{device}-{:x}-{}", self.started_at, self.sends)
    }

    /// Sends the selected failed message again (or the newest failed one),
    /// under the same client id: the relay stores it once however often it
    /// is sent.
    fn resend(&mut self, now: u64) -> Vec<Effect> {
        let Some(c) = &mut self.conversation else {
            return Vec::new();
        };
        let failed = |s: &Shown| matches!(s.delivery, Delivery::Failed(_));
        let index = (c.selected.filter(|&i| c.shown.get(i).is_some_and(failed)))
            .or_else(|| c.shown.iter().rposition(failed));
        let Some(shown) = index.and_then(|i| c.shown.get_mut(i)) else {
            self.notice = Some(("no message here failed to send".into(), now));
            return Vec::new();
        };
        shown.delivery = Delivery::Sending;
        let (to, text) = (shown.message.to.clone(), shown.message.text.clone());
        if let Some(id) = &shown.client_msg_id {
            (self.on_their_way).insert(id.clone(), (to.clone(), text.clone()));
        }
        vec![Effect::Engine(Command::Chat(ChatCommand::SendMessage {
            to,
            text,
            client_msg_id: shown.client_msg_id.clone(),
        }))]
    }

    pub(super) fn send_failed(&mut self, client_msg_id: &str, why: String, now: u64) {
        // Not on its way any more (`r` puts it back).
        self.on_their_way.remove(client_msg_id);
        let found = (self.conversation.as_mut()).and_then(|c| c.find_sent(client_msg_id));
        match found {
            Some(shown) => {
                shown.delivery = Delivery::Failed(why);
                let resend = self.keymap.hints(super::Context::Conversation);
                let key = resend.iter().find(|(_, a)| *a == Action::Resend);
                let hint = key.map_or(String::new(), |(k, _)| format!("; {k} sends it again"));
                self.notice = Some((format!("a message was not sent{hint}"), now));
            }
            None => self.alert = Some(why),
        }
    }

    /// Messages, read marks and typing.
    pub(super) fn on_chat_event(&mut self, event: Event, now: u64) -> Vec<Effect> {
        let (me, width) = (self.me.clone(), self.text_width());
        let mut effects = Vec::new();
        match event {
            Event::MessageReceived {
                msg_id,
                from,
                to,
                text,
                timestamp,
                ..
            } => {
                if self.typing.as_ref().is_some_and(|(who, _)| *who == from) {
                    self.typing = None;
                }
                let message = StoredMessage::new(msg_id, from, to, text, timestamp);
                let peer = message.peer(&me).clone();
                let from_peer = message.from == peer;
                if let Some(c) = self.open_mut(&peer) {
                    c.push(Shown::settled(message), &me, width);
                    // Reading it here, now: the other devices clear it too,
                    // and the sender learns it was read.
                    if self.focus == Pane::Conversation && from_peer {
                        effects.push(Effect::Engine(Command::Chat(ChatCommand::MarkRead {
                            peer,
                        })));
                    }
                }
                effects.push(Effect::LoadConversations);
            }
            Event::MessageSent {
                msg_id,
                client_msg_id,
                to,
                text,
                timestamp,
                ..
            } => {
                self.on_their_way.remove(&client_msg_id);
                if let Some(c) = self.open_mut(&to) {
                    match c.find_sent(&client_msg_id) {
                        Some(shown) => {
                            shown.message.msg_id = msg_id;
                            shown.message.timestamp = timestamp;
                            shown.delivery = Delivery::Sent;
                        }
                        None => {
                            let message =
                                StoredMessage::new(msg_id, me.clone(), to, text, timestamp);
                            let shown = Shown {
                                message,
                                delivery: Delivery::Sent,
                                client_msg_id: Some(client_msg_id),
                            };
                            c.push(shown, &me, width);
                        }
                    }
                }
                effects.push(Effect::LoadConversations);
            }
            Event::MessageRecalled { msg_id, .. } => {
                if let Some(c) = &mut self.conversation
                    && let Some(s) = c.shown.iter_mut().find(|s| s.message.msg_id == msg_id)
                {
                    s.message.recalled = true;
                    s.message.text.clear();
                }
                effects.push(Effect::LoadConversations);
            }
            Event::ConversationRead { .. } => effects.push(Effect::LoadConversations),
            // The relay's page of a conversation the local store lacked: a
            // short one is all there is.
            Event::Messages { user_id, messages } => {
                if let Some(c) = self.open_mut(&user_id) {
                    let last = messages.len() < conversation::PAGE;
                    c.merge(messages, &me, width);
                    c.older = if last { Older::None } else { Older::Maybe };
                }
            }
            // The peer read up to `timestamp`: what we sent before is read.
            Event::C2cReadReceipt {
                user_id, timestamp, ..
            } => {
                if let Some(c) = self.open_mut(&user_id) {
                    c.peer_read = c.peer_read.max(Some(timestamp));
                }
            }
            Event::Typing { user_id } => self.typing = Some((user_id, now)),
            _ => {}
        }
        effects
    }
}

fn new_draft() -> TextArea<'static> {
    let mut draft = TextArea::default();
    draft.set_wrap_mode(WrapMode::WordOrGlyph);
    draft.set_cursor_line_style(ratatui::style::Style::default());
    draft
}

/// The detail view of a message (`read`: one of this user's that the other
/// has read, ✓✓ in the list).
fn message_details(shown: &Shown, read: bool, now: u64) -> LogLine {
    let m = &shown.message;
    let state = match &shown.delivery {
        Delivery::Sending => "sending".to_owned(),
        Delivery::Failed(why) => format!("not sent: {why}"),
        Delivery::Sent | Delivery::Settled if read => {
            format!("read by {} (stored by the relay)", m.to)
        }
        Delivery::Settled => "stored".to_owned(),
        Delivery::Sent => "sent (stored by the relay)".to_owned(),
    };
    let mut full = format!(
        "msgID      {}\nfrom       {}\nto         {}\ntime       {} {} UTC\nstate      {state}\n",
        m.msg_id,
        m.from,
        m.to,
        conversation::day_label(m.timestamp),
        conversation::hh_mm(m.timestamp),
    );
    if let Some(id) = &shown.client_msg_id {
        full.push_str(&format!("clientMsgID {id}\n"));
    }
    if m.recalled {
        full.push_str("recalled\n");
    } else {
        full.push('\n');
        full.push_str(&text::clean(&m.text, true));
    }
    LogLine {
        at: now,
        text: format!("message {}", m.msg_id),
        full,
        title: Some(format!("Message from {}", m.from)),
    }
}
