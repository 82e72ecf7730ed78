//! The TUI's model and its update function: pure, so tests feed it keys,
//! engine events and store answers, and check what it asks for. No call or
//! chat rule lives here: the engine decides, the model only shows.

mod chat;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind};
use ratatui_textarea::TextArea;

use crate::client::engine::{CallCommand, Command, VoiceProcessingChange};
use crate::client::event::DeviceState;
use crate::client::event::{CallRole, DeviceView, Event, LinkState, LoginStatus, UserView};
use crate::client::records::{CallRecord, Conversation as Summary};
use crate::error::ErrorCode;
use crate::ids::{DeviceId, Platform, UserId};
use crate::media::control::Digit;
use crate::media::control::VoiceProcessing;
use crate::media::quality::Quality;
use crate::media::spec::AudioSpec;
use crate::protocol::{CancelReason, Role};
use crate::tui::conversation::{Conversation, Delivery};
use crate::tui::devices::{self, Picker};
use crate::tui::keymap::{Action, Context, Key, Keymap};

/// Engine events kept for the event log.
const LOG_CAPACITY: usize = 1000;
/// How long a notice ("answered on another device") stays up.
pub const NOTICE_MS: u64 = 6_000;
/// How long "typing…" shows after the last typing event.
const TYPING_MS: u64 = 4_000;

/// What an update asks the shell to do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    Engine(Command),
    LoadConversations,
    /// The newest page of a conversation.
    LoadMessages(UserId),
    /// The page before `before` (unix ms), as the reader scrolls back.
    LoadOlder {
        peer: UserId,
        before: u64,
    },
    LoadHistory,
    /// Put this text on the terminal's clipboard (OSC 52), if allowed.
    Copy(String),
    /// Ring the terminal bell.
    Bell,
    /// Log this device in again (after a kick-out, an expired ticket or a
    /// refused login), with a fresh ticket.
    Login,
    Quit,
}

/// The panes that take focus, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Contacts,
    Conversation,
    History,
    Log,
}

const PANES: [Pane; 4] = [Pane::Contacts, Pane::Conversation, Pane::History, Pane::Log];

#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub at: u64,
    /// The event's name and fields on one line, cut to fit the pane.
    pub text: String,
    /// The whole event, for the detail view.
    pub full: String,
    /// What the detail view is titled: for an event of the log, `None`,
    /// its time since start (as the log shows it).
    pub title: Option<String>,
}

/// A call ringing on this device.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub call_id: String,
    pub sponsor: UserId,
    /// The others invited with this device's user (a group call).
    pub others: Vec<UserId>,
    pub group: bool,
    pub since: u64,
    /// Who handed this call over (a blind transfer), when someone did.
    pub transferred_by: Option<UserId>,
    /// It rings while this device is in another call (call waiting).
    pub waiting: bool,
}

/// The notice of `l`, until the login it asked for is through.
pub const LOGGING_IN_AGAIN: &str = "logging in again…";

/// How long a second quit has, in a call, to quit.
const QUIT_AGAIN_MS: u64 = 3_000;

/// The call this device placed or is in.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveCall {
    pub call_id: String,
    pub room: u32,
    pub role: CallRole,
    /// Who else is in the call now.
    pub participants: Vec<UserId>,
    /// Invited and not answered yet.
    pub ringing: Vec<UserId>,
    /// Invited and gone without answering (declined, busy, no answer): who
    /// an outgoing call that stops before it connects is named after.
    pub refused: Vec<UserId>,
    /// When this device entered the call; `None` while dialing.
    pub began_at: Option<u64>,
    /// When this device placed it (for how long it has rung), if it did.
    pub dialed_at: Option<u64>,
    /// This device's microphone is closed.
    pub muted: bool,
    /// This device's own voice level, 0 to 100.
    pub my_volume: u8,
    /// What the media reports of each other participant.
    pub audio: BTreeMap<UserId, PeerAudio>,
    /// Who holds the call now (this device's user among them when it does).
    pub held_by: BTreeSet<UserId>,
    /// A group call (roles can be switched in it).
    pub group: bool,
    /// Who only listens (the audience), this device's user among them when
    /// it does; everyone else speaks.
    pub audience: BTreeSet<UserId>,
    /// DTMF keys heard from the others, the latest last.
    pub keys_heard: String,
}

/// A participant's voice as this device hears it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerAudio {
    pub volume: u8,
    pub quality: Option<Quality>,
    pub muted: bool,
}

impl ActiveCall {
    fn new(call_id: String, room: u32, role: CallRole) -> Self {
        ActiveCall {
            call_id,
            room,
            role,
            participants: Vec::new(),
            ringing: Vec::new(),
            refused: Vec::new(),
            began_at: None,
            dialed_at: None,
            muted: false,
            my_volume: 0,
            audio: BTreeMap::new(),
            held_by: BTreeSet::new(),
            group: false,
            audience: BTreeSet::new(),
            keys_heard: String::new(),
        }
    }

    /// Connected: no longer dialing.
    fn connected(&self) -> bool {
        self.began_at.is_some()
    }

    /// `users` stopped ringing without answering.
    fn refuse(&mut self, users: &[UserId]) {
        self.ringing.retain(|u| !users.contains(u));
        self.refused.extend(users.iter().cloned());
    }
}

/// DTMF keys heard in a call, at most: the call pane shows the latest.
const KEYS_HEARD: usize = 24;

pub struct Model {
    pub me: UserId,
    pub device: DeviceId,
    pub platform: Platform,
    pub relay_url: String,
    pub started_at: u64,
    pub keymap: Keymap,
    pub status: LoginStatus,
    pub link: Option<LinkState>,
    /// The last problem worth showing in the status line.
    pub alert: Option<String>,
    /// Why this device is signed out and waits for `l` (kicked out, ticket
    /// expired, login refused); short, for the header.
    pub signed_out: Option<&'static str>,
    /// A passing notice, and when it was raised.
    pub notice: Option<(String, u64)>,
    /// When quitting in a call was asked once: a second ask within
    /// [`QUIT_AGAIN_MS`] quits, so that a stray `q` hangs up nobody.
    quit_asked: Option<u64>,
    pub users: Vec<UserView>,
    pub unread: HashMap<UserId, u64>,
    pub focus: Pane,
    pub selected: usize,
    /// The conversation shown.
    pub conversation: Option<Conversation>,
    pub typing: Option<(UserId, u64)>,
    /// The keys go to the open conversation's draft.
    pub composing: bool,
    /// A draft per conversation, kept when switching.
    pub drafts: HashMap<UserId, TextArea<'static>>,
    /// Texts sent from here, newest last, for Up on an empty draft.
    pub sent_texts: Vec<String>,
    /// Messages sent from here and not yet stored by the relay, by client
    /// id, in any conversation: what a logout that gives up on one names,
    /// text and all, whichever conversation is open by then.
    pub on_their_way: HashMap<String, (UserId, String)>,
    /// When this device last told the peer it is typing.
    pub typing_sent_at: Option<u64>,
    /// Messages sent from here so far, for their client ids.
    pub sends: u64,
    /// The conversation's message area as last drawn (columns, rows).
    pub viewport: (u16, u16),
    pub incoming: Vec<Incoming>,
    pub call: Option<ActiveCall>,
    /// The call set aside to take a waiting one (this device holds it).
    pub held_call: Option<ActiveCall>,
    /// The DTMF keypad, while open: the keys dialed since it opened.
    pub keypad: Option<String>,
    /// Auto-answer's delay while it is on, and the delay it comes back
    /// with when turned on again.
    pub auto_answer: Option<u64>,
    pub auto_answer_delay: u64,
    /// Call waiting is on.
    pub call_waiting: bool,
    pub history: Vec<CallRecord>,
    pub history_selected: usize,
    pub log: VecDeque<LogLine>,
    /// Lines scrolled back from the newest.
    pub log_scroll: usize,
    pub help: bool,
    /// The event-log line shown whole, over everything.
    pub detail: Option<LogLine>,
    /// Rows the open overlay (help, detail) is scrolled down by.
    pub overlay_scroll: u16,
    /// The open overlay's rows as last drawn: (shown at once, in all).
    pub overlay_rows: (u16, u16),
    /// Shown in the conversation pane until a conversation is opened.
    pub banner: Vec<String>,
    /// The sound devices, as the last DEVICED_UPDATED gave them.
    pub devices: Option<DeviceState>,
    /// The device picker, while open (over the panes).
    pub picker: Option<Picker>,
    /// The voice processing stages on for a sound card's microphone.
    pub voice: VoiceProcessing,
    /// The microphone in use is a sound card: only its capture is
    /// processed (files, tones, `echo` and null audio are clean already).
    /// False after a call fell back to null audio for want of one.
    pub card_mic: bool,
    /// The copy key puts a message on the terminal's clipboard (`[tui]
    /// osc52_copy`); off, it says how to turn it on.
    pub copy: bool,
}

impl Model {
    pub fn new(
        me: UserId,
        device: DeviceId,
        platform: Platform,
        relay_url: String,
        keymap: Keymap,
        now: u64,
    ) -> Self {
        Model {
            me,
            device,
            platform,
            relay_url,
            started_at: now,
            keymap,
            status: LoginStatus::Logout,
            link: None,
            alert: None,
            signed_out: None,
            notice: None,
            users: Vec::new(),
            unread: HashMap::new(),
            focus: Pane::Contacts,
            selected: 0,
            conversation: None,
            typing: None,
            composing: false,
            drafts: HashMap::new(),
            sent_texts: Vec::new(),
            on_their_way: HashMap::new(),
            typing_sent_at: None,
            sends: 0,
            viewport: (60, 10),
            incoming: Vec::new(),
            call: None,
            held_call: None,
            keypad: None,
            auto_answer: None,
            auto_answer_delay: 0,
            call_waiting: false,
            history: Vec::new(),
            history_selected: 0,
            log: VecDeque::new(),
            log_scroll: 0,
            help: false,
            quit_asked: None,
            detail: None,
            overlay_scroll: 0,
            overlay_rows: (0, 0),
            banner: Vec::new(),
            devices: None,
            picker: None,
            voice: VoiceProcessing::ON,
            card_mic: false,
            copy: false,
        }
    }

    /// The other users, as the contacts pane lists them.
    pub fn contacts(&self) -> impl Iterator<Item = &UserView> {
        self.users.iter().filter(|u| u.user != self.me)
    }

    fn selected_contact(&self) -> Option<UserId> {
        self.contacts().nth(self.selected).map(|u| u.user.clone())
    }

    /// The layer that sees keys first.
    pub fn context(&self) -> Context {
        if !self.incoming.is_empty() {
            Context::Incoming
        } else if self.keypad.is_some() {
            Context::Keypad
        } else if self.signed_out.is_some() {
            Context::SignedOut
        } else if self.composing && self.conversation.is_some() {
            Context::Compose
        } else {
            match self.focus {
                Pane::Contacts => Context::Contacts,
                Pane::Conversation => Context::Conversation,
                Pane::History => Context::History,
                Pane::Log => Context::Log,
            }
        }
    }

    /// What an action's key does now, for the footer: a switch says which
    /// way it goes (mute / unmute, hold / resume, speak / listen).
    pub fn hint(&self, action: Action) -> &'static str {
        let call = self.call.as_ref();
        match action {
            Action::Mute if call.is_some_and(|c| c.muted) => "unmute",
            Action::Hold if call.is_some_and(|c| c.held_by.contains(&self.me)) => "resume",
            Action::SwitchRole if call.is_some_and(|c| c.audience.contains(&self.me)) => "speak",
            Action::SwitchRole if call.is_some() => "listen",
            other => other.hint(),
        }
    }

    /// What the footer offers: the keys that do something now, each action
    /// once, the most specific first.
    pub fn hints(&self) -> Vec<(Key, Action)> {
        let context = self.context();
        let mut contexts = vec![context];
        let over_panes = !matches!(
            context,
            Context::Incoming | Context::Compose | Context::Keypad | Context::SignedOut
        );
        if self.call.is_some() && over_panes {
            contexts.insert(0, Context::Call);
        }
        let call = self.call.as_ref().filter(|c| c.connected());
        let connected = call.is_some();
        let speaking = call.is_some_and(|c| !c.audience.contains(&self.me));
        let waiting = self.incoming.first().is_some_and(|c| c.waiting);
        let mut out: Vec<(Key, Action)> = Vec::new();
        for context in contexts {
            for (key, action) in self.keymap.hints(context) {
                let conversation = self.conversation.as_ref();
                let works = match action {
                    Action::Invite | Action::Mute | Action::Hold => connected,
                    Action::Transfer => call.is_some_and(|c| !c.group),
                    Action::Swap => connected && self.held_call.is_some(),
                    Action::Keypad => speaking,
                    Action::SwitchRole => call.is_some_and(|c| c.group),
                    Action::AcceptEnd => waiting,
                    // Switches: in the help, and the status line says when on.
                    Action::AutoAnswer | Action::CallWaiting => false,
                    Action::VoiceProcessing => self.card_mic,
                    Action::Call => self.call.is_none(),
                    Action::Compose => self.signed_out.is_none(),
                    Action::Details => !self.log.is_empty(),
                    // In the help, not the footer: it has no room to spare.
                    Action::Devices => false,
                    Action::Newest if context == Context::Log => self.log_scroll > 0,
                    Action::Newer | Action::Newest => conversation.is_some_and(|c| c.scroll > 0),
                    // In a call its keys come first; scrolling stays in the help.
                    Action::Older => self.call.is_none(),
                    Action::Resend => conversation.is_some_and(|c| {
                        (c.shown.iter()).any(|s| matches!(s.delivery, Delivery::Failed(_)))
                    }),
                    Action::Copy => self.copy && conversation.is_some_and(|c| c.selected.is_some()),
                    Action::Recall | Action::MessageDetails => {
                        conversation.is_some_and(|c| c.selected.is_some())
                    }
                    _ => true,
                };
                if works && !out.iter().any(|(_, a)| *a == action) {
                    out.push((key, action));
                }
            }
        }
        // What this place offers first; what works everywhere after it.
        out.sort_by_key(|(_, a)| {
            matches!(
                a,
                Action::NextPane | Action::PrevPane | Action::Help | Action::Quit
            )
        });
        out
    }

    /// The event-log line the log pane has selected (the newest by default).
    pub fn log_selected(&self) -> Option<usize> {
        self.log.len().checked_sub(1 + self.log_scroll)
    }

    /// The user of the open conversation.
    pub fn open_peer(&self) -> Option<&UserId> {
        self.conversation.as_ref().map(|c| &c.peer)
    }

    /// Whether someone is typing in the open conversation now.
    pub fn typing_now(&self, now: u64) -> Option<&str> {
        match (&self.typing, self.open_peer()) {
            (Some((who, at)), Some(peer)) if who == peer && now.saturating_sub(*at) < TYPING_MS => {
                Some(who.as_str())
            }
            _ => None,
        }
    }

    pub fn notice_now(&self, now: u64) -> Option<&str> {
        self.notice
            .as_ref()
            .filter(|(_, at)| now.saturating_sub(*at) < NOTICE_MS)
            .map(|(text, _)| text.as_str())
    }

    pub fn on_terminal(&mut self, event: TermEvent, now: u64) -> Vec<Effect> {
        match event {
            TermEvent::Key(key) if key.kind == KeyEventKind::Press => self.on_key(key, now),
            TermEvent::Paste(text) => self.paste(&text, now),
            TermEvent::Mouse(mouse) => self.on_mouse(mouse),
            _ => Vec::new(),
        }
    }

    /// The help or an event in full, taller than the screen, scrolls
    /// with the keys that scroll the panes.
    fn scroll_overlay(&mut self, code: KeyCode) {
        let (shown, all) = self.overlay_rows;
        let last = all.saturating_sub(shown);
        let page = shown.saturating_sub(1).max(1);
        let at = self.overlay_scroll.min(last);
        self.overlay_scroll = match code {
            KeyCode::Down | KeyCode::Char('j') => at.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => at.saturating_sub(1),
            KeyCode::PageDown | KeyCode::Char(' ') => at.saturating_add(page),
            KeyCode::PageUp => at.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => 0,
            KeyCode::End | KeyCode::Char('G') => last,
            _ => at,
        }
        .min(last);
    }

    /// Where the view drew the open overlay (see [`Self::overlay_rows`]).
    pub fn on_overlay(&mut self, rows: (u16, u16)) {
        self.overlay_rows = rows;
    }

    fn on_key(&mut self, event: KeyEvent, now: u64) -> Vec<Effect> {
        let key = Key::from_event(&event);
        if self.picker.is_some() {
            let command = devices::on_key(&mut self.picker, self.devices.as_ref(), key.code);
            return command.map(Effect::Engine).into_iter().collect();
        }
        if self.detail.is_some() {
            if matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                self.detail = None;
            }
            self.scroll_overlay(key.code);
            return Vec::new();
        }
        if self.help {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            ) {
                self.help = false;
            }
            self.scroll_overlay(key.code);
            return Vec::new();
        }
        let context = self.context();
        // In a call, its keys work from every pane (below the incoming pane).
        let action = match (&self.call, context) {
            (
                Some(_),
                Context::Contacts | Context::Conversation | Context::History | Context::Log,
            ) => self
                .keymap
                .lookup(Context::Call, key)
                .filter(|a| {
                    matches!(
                        a,
                        Action::Hangup
                            | Action::Invite
                            | Action::Mute
                            | Action::VoiceProcessing
                            | Action::Hold
                            | Action::Transfer
                            | Action::Swap
                            | Action::Keypad
                            | Action::SwitchRole
                            | Action::Devices
                    )
                })
                .or_else(|| self.keymap.lookup(context, key)),
            _ => self.keymap.lookup(context, key),
        };
        match (context, action) {
            (Context::Compose, None) => self.edit(event, now),
            (Context::Keypad, Some(Action::Dial)) => match key.code {
                KeyCode::Char(c) => self.dial(c),
                _ => Vec::new(),
            },
            (_, Some(action)) => self.act(action, now),
            _ => Vec::new(),
        }
    }

    /// Quits, but in a call (or while one rings here) only when asked
    /// twice: quitting logs out, which ends the call for everyone in it.
    fn quit(&mut self, now: u64) -> Vec<Effect> {
        let asked = self.quit_asked.take();
        let calls = self.call.is_some() || !self.incoming.is_empty();
        if !calls || asked.is_some_and(|at| now.saturating_sub(at) <= QUIT_AGAIN_MS) {
            return vec![Effect::Quit];
        }
        self.quit_asked = Some(now);
        let what = match self.call.is_some() {
            true => "hang up and quit",
            false => "quit (the call stops ringing here)",
        };
        // Said with the key that quits here (the keymap may rebind it).
        let key = (self.keymap.hints(self.context()).into_iter())
            .find(|(_, action)| *action == Action::Quit)
            .map_or_else(|| "quit".to_owned(), |(key, _)| key.to_string());
        self.notice = Some((format!("{key} again within 3 s to {what}"), now));
        Vec::new()
    }

    fn act(&mut self, action: Action, now: u64) -> Vec<Effect> {
        match action {
            Action::Quit => self.quit(now),
            Action::VoiceProcessing => self.toggle_voice(now),
            Action::Devices => {
                self.picker = Some(Picker::new());
                vec![Effect::Engine(Command::GetDeviceList)]
            }
            Action::Help => {
                self.help = true;
                self.overlay_scroll = 0;
                Vec::new()
            }
            Action::Login => {
                self.signed_out = None;
                self.alert = None;
                self.notice = Some((LOGGING_IN_AGAIN.into(), now));
                vec![Effect::Login]
            }
            Action::Details => {
                self.detail = self.log_selected().map(|i| self.log[i].clone());
                self.overlay_scroll = 0;
                Vec::new()
            }
            Action::NextPane | Action::PrevPane => {
                let i = PANES.iter().position(|p| *p == self.focus).unwrap_or(0);
                let step = if action == Action::NextPane {
                    1
                } else {
                    PANES.len() - 1
                };
                self.focus = PANES[(i + step) % PANES.len()];
                self.read_on_focus()
            }
            Action::Up | Action::Down => {
                let down = action == Action::Down;
                match self.focus {
                    Pane::Contacts => {
                        let n = self.contacts().count();
                        self.selected = step(self.selected, n, down);
                    }
                    Pane::History => {
                        self.history_selected =
                            step(self.history_selected, self.history.len(), down);
                    }
                    Pane::Log => {
                        self.log_scroll = if down {
                            self.log_scroll.saturating_sub(1)
                        } else {
                            (self.log_scroll + 1).min(self.log.len().saturating_sub(1))
                        };
                    }
                    Pane::Conversation => self.move_cursor(down),
                }
                Vec::new()
            }
            // Opened to write, as in any chat client: letters typed at once
            // are the message, not commands (`c` would place a call).
            Action::Open => match self.selected_contact() {
                Some(peer) => {
                    let effects = self.open(peer);
                    self.composing = true;
                    effects
                }
                None => Vec::new(),
            },
            Action::Cancel if self.keypad.is_some() => {
                self.keypad = None;
                Vec::new()
            }
            // The event log follows new events again.
            Action::Newest if self.focus == Pane::Log => {
                self.log_scroll = 0;
                Vec::new()
            }
            Action::Compose
            | Action::Send
            | Action::Newline
            | Action::Cancel
            | Action::Older
            | Action::Newer
            | Action::Newest
            | Action::Resend
            | Action::Recall
            | Action::Copy
            | Action::MessageDetails => self.chat_action(action, now),
            Action::AutoAnswer => {
                self.auto_answer = match self.auto_answer {
                    Some(_) => None,
                    None => Some(self.auto_answer_delay),
                };
                let state = if self.auto_answer.is_some() {
                    "on"
                } else {
                    "off"
                };
                self.notice = Some((format!("auto-answer {state}"), now));
                vec![Effect::Engine(Command::SetAutoAnswer {
                    delay_ms: self.auto_answer,
                })]
            }
            Action::CallWaiting => {
                self.call_waiting = !self.call_waiting;
                let state = if self.call_waiting { "on" } else { "off" };
                self.notice = Some((format!("call waiting {state}"), now));
                vec![Effect::Engine(Command::EnableCallWaiting {
                    enable: self.call_waiting,
                })]
            }
            Action::Dial => Vec::new(),
            Action::Call
            | Action::Accept
            | Action::AcceptEnd
            | Action::Decline
            | Action::Ignore
            | Action::Invite
            | Action::Mute
            | Action::Hold
            | Action::Transfer
            | Action::Swap
            | Action::Keypad
            | Action::SwitchRole
            | Action::Hangup => self.call_action(action, now),
        }
    }

    /// A key of the keypad: the digit goes out at once (a tone as it goes).
    fn dial(&mut self, key: char) -> Vec<Effect> {
        let (Some(digit), Some(dialed)) = (Digit::new(key), self.keypad.as_mut()) else {
            return Vec::new();
        };
        dialed.push(key);
        vec![Effect::Engine(Command::Call(CallCommand::SendDtmf {
            digits: vec![digit],
        }))]
    }

    /// Every stage of voice processing off when any is on, else every one
    /// on; for this call and the next ones, as `setAudioProcessing`.
    fn toggle_voice(&mut self, now: u64) -> Vec<Effect> {
        if !self.card_mic {
            self.notice = Some((
                "the microphone is not a sound card: nothing to process".into(),
                now,
            ));
            return Vec::new();
        }
        let on = !self.voice.any();
        self.voice = if on {
            VoiceProcessing::ON
        } else {
            VoiceProcessing::OFF
        };
        let state = if on { "on" } else { "off" };
        self.notice = Some((format!("voice processing {state}"), now));
        let change = VoiceProcessingChange {
            echo_cancellation: Some(on),
            noise_suppression: Some(on),
            auto_gain: Some(on),
        };
        vec![Effect::Engine(Command::SetAudioProcessing(change))]
    }

    fn call_action(&mut self, action: Action, now: u64) -> Vec<Effect> {
        let ringing = self.incoming.first().map(|c| Some(c.call_id.clone()));
        match action {
            Action::Call => {
                let peer = match self.focus {
                    Pane::History => self
                        .history
                        .get(self.history_selected)
                        .and_then(|r| r.peers.first().cloned()),
                    Pane::Conversation => self.open_peer().cloned(),
                    _ => self.selected_contact(),
                };
                match peer {
                    _ if self.status != LoginStatus::Logined => {
                        self.notice = Some(("not logged in yet: no calls".into(), now));
                        Vec::new()
                    }
                    Some(user) => vec![Effect::Engine(Command::Call(CallCommand::Call {
                        users: vec![user],
                        timeout_secs: None,
                        user_data: None,
                    }))],
                    None => {
                        self.notice = Some(("select a contact to call".into(), now));
                        Vec::new()
                    }
                }
            }
            Action::Accept | Action::AcceptEnd => {
                // Attention moves to the call: its keys (h, m, ...) work at
                // once, and the draft waits for `w`.
                self.composing = false;
                vec![Effect::Engine(Command::Call(CallCommand::Accept {
                    call_id: ringing.flatten(),
                    end_current: action == Action::AcceptEnd,
                }))]
            }
            Action::Decline => vec![Effect::Engine(Command::Call(CallCommand::Reject {
                call_id: ringing.flatten(),
            }))],
            Action::Ignore => vec![Effect::Engine(Command::Call(CallCommand::Ignore {
                call_id: ringing.flatten(),
            }))],
            Action::Invite => match (&self.call, self.selected_contact()) {
                (Some(call), Some(peer)) if call.began_at.is_some() => {
                    vec![Effect::Engine(Command::Call(CallCommand::InviteUser {
                        users: vec![peer],
                    }))]
                }
                _ => {
                    self.notice = Some((
                        "select a contact to invite once the call is connected".into(),
                        now,
                    ));
                    Vec::new()
                }
            },
            Action::Hold => match self.call.as_ref().filter(|c| c.began_at.is_some()) {
                Some(call) => {
                    let call_id = Some(call.call_id.clone());
                    let command = if call.held_by.contains(&self.me) {
                        CallCommand::Unhold { call_id }
                    } else {
                        CallCommand::Hold { call_id }
                    };
                    vec![Effect::Engine(Command::Call(command))]
                }
                None => Vec::new(),
            },
            Action::Transfer => match (&self.call, self.selected_contact()) {
                (Some(call), Some(user)) if call.began_at.is_some() => {
                    vec![Effect::Engine(Command::Call(CallCommand::TransferCall {
                        user,
                    }))]
                }
                _ => {
                    self.notice = Some((
                        "select the contact to transfer the connected call to".into(),
                        now,
                    ));
                    Vec::new()
                }
            },
            Action::Swap => match (&self.call, &self.held_call) {
                (Some(call), Some(held)) if call.connected() => {
                    vec![Effect::Engine(Command::Call(CallCommand::Unhold {
                        call_id: Some(held.call_id.clone()),
                    }))]
                }
                _ => Vec::new(),
            },
            Action::Keypad => match &self.call {
                Some(call) if call.connected() => {
                    self.keypad = Some(String::new());
                    Vec::new()
                }
                _ => Vec::new(),
            },
            Action::SwitchRole => match self.call.as_ref().filter(|c| c.connected()) {
                Some(call) => {
                    let role = if call.audience.contains(&self.me) {
                        Role::Anchor
                    } else {
                        Role::Audience
                    };
                    vec![Effect::Engine(Command::Call(CallCommand::SwitchRole {
                        role,
                    }))]
                }
                None => Vec::new(),
            },
            Action::Mute => match self.call.as_mut().filter(|c| c.began_at.is_some()) {
                Some(call) => {
                    call.muted = !call.muted;
                    let mic = if call.muted {
                        CallCommand::CloseMicrophone
                    } else {
                        CallCommand::OpenMicrophone
                    };
                    vec![Effect::Engine(Command::Call(mic))]
                }
                None => Vec::new(),
            },
            Action::Hangup => match &self.call {
                Some(call) => vec![Effect::Engine(Command::Call(CallCommand::Hangup {
                    call_id: Some(call.call_id.clone()),
                }))],
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// What the local store answered.
    pub fn on_conversations(&mut self, conversations: Vec<Summary>) {
        if let Some(open) = &mut self.conversation
            && let Some(read) = (conversations.iter())
                .find(|c| c.user_id == open.peer)
                .and_then(|c| c.peer_read)
        {
            open.peer_read = open.peer_read.max(Some(read));
        }
        self.unread = conversations
            .into_iter()
            .map(|c| (c.user_id, c.unread_count))
            .collect();
    }

    pub fn on_history(&mut self, history: Vec<CallRecord>) {
        self.history = history;
        self.history_selected = self
            .history_selected
            .min(self.history.len().saturating_sub(1));
    }

    pub fn on_engine(&mut self, event: Event, now: u64) -> Vec<Effect> {
        self.log_event(&event, now);
        match event {
            Event::OnCallReceived { .. }
            | Event::CallDialing { .. }
            | Event::OnCallBegin { .. }
            | Event::OnCallCanceled { .. }
            | Event::CallingEnd { .. }
            | Event::UserAccept { .. }
            | Event::UserEnter { .. }
            | Event::UserLeave { .. }
            | Event::Reject { .. }
            | Event::LineBusy { .. }
            | Event::NoResp { .. }
            | Event::GroupCallInviteeListUpdate { .. }
            | Event::UserVoiceVolume { .. }
            | Event::UserAudioAvailable { .. }
            | Event::OnUserNetworkQualityChanged { .. }
            | Event::CallHoldChanged { .. }
            | Event::RoleChanged { .. }
            | Event::DtmfReceived { .. }
            | Event::CallTransferred { .. } => {
                let effects = self.on_call_event(event, now);
                // The keypad belongs to a connected call.
                if !self.call.as_ref().is_some_and(|c| c.connected()) {
                    self.keypad = None;
                }
                effects
            }
            Event::MessageReceived { .. }
            | Event::MessageSent { .. }
            | Event::MessageRecalled { .. }
            | Event::ConversationRead { .. }
            | Event::Messages { .. }
            | Event::C2cReadReceipt { .. }
            | Event::Typing { .. } => self.on_chat_event(event, now),
            _ => self.on_session_event(event, now),
        }
    }

    /// Login, the link, users and errors.
    fn on_session_event(&mut self, event: Event, now: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::SdkReady => {
                self.alert = None;
                // "logging in again…" is over.
                if self
                    .notice
                    .as_ref()
                    .is_some_and(|(n, _)| n == LOGGING_IN_AGAIN)
                {
                    self.notice = None;
                }
                effects.extend([
                    Effect::Engine(Command::GetUsers { subscribe: true }),
                    Effect::LoadConversations,
                    Effect::LoadHistory,
                    // For the call pane's devices line and the picker.
                    Effect::Engine(Command::GetDeviceList),
                ]);
            }
            Event::LoginStatusChanged { status, .. } => {
                self.status = status;
                if status == LoginStatus::Logining {
                    self.signed_out = None;
                }
            }
            Event::ConnectionChanged { state } => {
                self.link = Some(state);
                if state == LinkState::Connected {
                    self.alert = None;
                }
            }
            Event::KickedOut { message, .. } => {
                self.sign_out("kicked out", format!("Kicked out: {message}."));
            }
            Event::UserSigExpired => {
                self.sign_out("ticket expired", "Your UserSig expired.".into());
            }
            Event::Error { message, cmd, .. } if cmd.as_deref() == Some("login") => {
                self.sign_out("login refused", format!("Login refused: {message}."));
            }
            Event::Users { users } => self.users = users,
            Event::UserStatusChanged { user } => {
                match self.users.binary_search_by(|u| u.user.cmp(&user.user)) {
                    Ok(i) => self.users[i] = user,
                    Err(i) => self.users.insert(i, user),
                }
            }
            // A missing sound card is news for this call, not a standing problem.
            Event::DevicedUpdated { devices } => {
                self.card_mic = (devices.current_microphone_id.parse())
                    .is_ok_and(|spec: AudioSpec| spec.is_card());
                self.devices = Some(devices);
            }
            // The typing notices the editor sends by itself are passing
            // news: one refused (the relay out of reach) is no error of
            // the user's, and the message being written is queued anyway.
            Event::Error { cmd: Some(cmd), .. } if cmd == "typing" => {}
            Event::Error { code, message, .. }
                if code == ErrorCode::AudioDeviceFailed.code()
                    || code == ErrorCode::AudioDeviceGone.code() =>
            {
                self.notice = Some((message, now));
            }
            // A relay that never answered gets no CONNECTION_CHANGED; the
            // engine retries all the same, and the screen must say so.
            Event::Error { code, message, .. } if code == ErrorCode::RelayUnreachable.code() => {
                self.link.get_or_insert(LinkState::Reconnecting);
                self.alert = Some(message);
            }
            // A message that could not be sent is marked where it shows.
            Event::Error {
                client_msg_id: Some(id),
                message,
                ..
            } => self.send_failed(&id, message, now),
            // The answer to something the user just did is news, not a
            // standing problem: it goes when the next notice comes.
            Event::Error {
                message,
                cmd: Some(_),
                ..
            } => self.notice = Some((message, now)),
            Event::Error { message, .. } => self.alert = Some(message),
            _ => {}
        }
        effects
    }

    /// Calls ringing, placed and connected, and their media.
    fn on_call_event(&mut self, event: Event, now: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::OnCallReceived {
                call_id,
                sponsor,
                user_id_list,
                is_from_group,
                transferred_by,
                waiting,
                ..
            } => {
                // What the last call's end said is old news now.
                self.notice = None;
                self.incoming.push(Incoming {
                    call_id,
                    sponsor,
                    others: user_id_list,
                    group: is_from_group,
                    since: now,
                    transferred_by: transferred_by.map(|u| *u),
                    waiting,
                });
                // A ringing call comes before reading: the help or an event
                // in full would hide it and take the keys that answer it.
                self.help = false;
                self.detail = None;
                effects.push(Effect::Bell);
            }
            Event::CallDialing {
                call_id,
                room_id,
                user_id_list,
                is_from_group,
                ..
            } => {
                self.notice = None;
                self.call = Some(ActiveCall {
                    ringing: user_id_list,
                    group: is_from_group,
                    dialed_at: Some(now),
                    ..ActiveCall::new(call_id, room_id, CallRole::Caller)
                });
            }
            Event::OnCallBegin {
                call_id,
                room_id,
                call_role,
                user_id_list,
                record,
                ..
            } => {
                let ringing = self.incoming.iter().position(|c| c.call_id == call_id);
                let from = ringing.map(|i| self.incoming.remove(i));
                match (&mut self.call, &mut self.held_call) {
                    (Some(call), _) | (_, Some(call)) if call.call_id == call_id => {
                        call.began_at.get_or_insert(now);
                        for user in user_id_list {
                            call.ringing.retain(|u| *u != user);
                            if !call.participants.contains(&user) {
                                call.participants.push(user);
                            }
                        }
                    }
                    _ => {
                        let group = from.as_ref().is_some_and(|c| c.group);
                        // Not rung here first: a device that came back into
                        // its call after a restart knows who with, and for
                        // how long already, from the engine's record of it.
                        // Who is in it, as the relay said; else who rang.
                        let participants = match user_id_list.is_empty() {
                            false => user_id_list,
                            true => from.map_or(record.peers, |c| vec![c.sponsor]),
                        };
                        let begun = ActiveCall {
                            began_at: Some(now.saturating_sub(record.total_time * 1000)),
                            participants,
                            group,
                            ..ActiveCall::new(call_id, room_id, call_role)
                        };
                        // Call waiting: the call this device was in is held aside.
                        if let Some(previous) = self.call.replace(begun) {
                            self.held_call = Some(previous);
                        }
                    }
                }
            }
            Event::OnCallCanceled {
                call_id,
                reason,
                elsewhere,
                ..
            } => {
                let from = self
                    .incoming
                    .iter()
                    .position(|c| c.call_id == call_id)
                    .map(|i| self.incoming.remove(i));
                let text = match from {
                    Some(c) => Some(incoming_stopped(reason, &c.sponsor, elsewhere.as_ref())),
                    None => (self.leave_call(&call_id)).and_then(|c| {
                        let who = match c.ringing.is_empty() {
                            true => &c.refused,
                            false => &c.ringing,
                        };
                        outgoing_stopped(reason, &names(who))
                    }),
                };
                if let Some(text) = text {
                    self.notice = Some((text, now));
                }
                effects.push(Effect::LoadHistory);
            }
            Event::CallingEnd {
                call_id,
                total_time,
                unheard,
                ..
            } => {
                if let Some(ended) = self.leave_call(&call_id) {
                    let mut time = clock_secs(total_time);
                    if unheard {
                        time.push_str(" while this device was cut off from the relay");
                    }
                    // With another call left, say which one ended.
                    let with = names(&ended.participants);
                    let text = match &self.call {
                        Some(other) if other.held_by.contains(&self.me) => format!(
                            "call with {with} ended after {time}; {} is still on hold",
                            names(&other.participants)
                        ),
                        Some(_) => format!("call with {with} ended after {time}"),
                        None => format!("call ended after {time}"),
                    };
                    self.notice = Some((text, now));
                }
                effects.push(Effect::LoadHistory);
            }
            Event::UserAccept { call_id, user_id } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.ringing.retain(|u| *u != user_id);
                    if !call.participants.contains(&user_id) {
                        call.participants.push(user_id);
                    }
                }
            }
            Event::UserEnter {
                call_id,
                user_id,
                role,
            } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.ringing.retain(|u| *u != user_id);
                    if role == Role::Audience {
                        call.audience.insert(user_id.clone());
                    }
                    if !call.participants.contains(&user_id) {
                        call.participants.push(user_id);
                    }
                }
            }
            Event::RoleChanged {
                call_id,
                user_id,
                role,
            } => {
                let me = user_id == self.me;
                if let Some(call) = self.call_mut(&call_id) {
                    match role {
                        Role::Audience => {
                            // A listener's voice is gone: no level will follow.
                            call.audience.insert(user_id.clone());
                            if me {
                                call.my_volume = 0;
                            } else if let Some(audio) = call.audio.get_mut(&user_id) {
                                audio.volume = 0;
                            }
                        }
                        Role::Anchor => {
                            call.audience.remove(&user_id);
                        }
                    }
                    let text = match (me, role) {
                        (true, Role::Audience) => "you only listen now".to_owned(),
                        (true, Role::Anchor) => "you speak now".to_owned(),
                        (false, Role::Audience) => format!("{user_id} only listens now"),
                        (false, Role::Anchor) => format!("{user_id} speaks now"),
                    };
                    self.notice = Some((text, now));
                }
                if me && role == Role::Audience {
                    self.keypad = None;
                }
            }
            Event::DtmfReceived {
                call_id,
                user_id,
                digit,
            } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.keys_heard.push(digit.key());
                    let over = call.keys_heard.len().saturating_sub(KEYS_HEARD);
                    call.keys_heard.drain(..over);
                    self.notice = Some((format!("{user_id} pressed {}", digit.key()), now));
                }
            }
            Event::UserLeave { call_id, user_id } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.ringing.retain(|u| *u != user_id);
                    call.participants.retain(|u| *u != user_id);
                    call.audience.remove(&user_id);
                }
            }
            Event::Reject { call_id, user_id } | Event::LineBusy { call_id, user_id } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.refuse(&[user_id]);
                }
            }
            Event::NoResp {
                call_id,
                user_id_list,
                ..
            } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.refuse(&user_id_list);
                }
            }
            Event::GroupCallInviteeListUpdate {
                call_id,
                user_id_list,
            } => {
                if let Some(call) = self.call_mut(&call_id) {
                    call.ringing = user_id_list;
                    call.group = true;
                }
            }
            Event::UserVoiceVolume { volume_map } => {
                if let Some(call) = self.call.as_mut() {
                    for v in volume_map {
                        if v.user_id == self.me {
                            call.my_volume = v.volume;
                        } else {
                            call.audio.entry(v.user_id).or_default().volume = v.volume;
                        }
                    }
                }
            }
            Event::CallHoldChanged {
                call_id,
                user_id,
                on_hold,
            } => {
                let me = user_id == self.me;
                let who = if me {
                    "you".to_owned()
                } else {
                    user_id.to_string()
                };
                if let Some(call) = self.call_mut(&call_id) {
                    if on_hold {
                        call.held_by.insert(user_id);
                    } else {
                        call.held_by.remove(&user_id);
                    }
                    // This device's own holds say which call (it may have two).
                    let with = match names(&call.participants) {
                        n if n.is_empty() || !me => String::new(),
                        n => format!(" with {n}"),
                    };
                    let what = if on_hold {
                        format!("put the call{with} on hold")
                    } else {
                        format!("resumed the call{with}")
                    };
                    self.notice = Some((format!("{who} {what}"), now));
                }
                // This device took back the call it held aside: the other
                // one, held just before, is set aside in its place.
                let back = self
                    .held_call
                    .as_ref()
                    .is_some_and(|c| c.call_id == call_id);
                if back && me && !on_hold {
                    let held = self.held_call.take();
                    self.held_call = std::mem::replace(&mut self.call, held);
                    self.keypad = None;
                }
            }
            Event::CallTransferred { by, to, .. } => {
                self.notice = Some((
                    format!("{by} transferred the call to {to}; it rings there"),
                    now,
                ));
            }
            Event::UserAudioAvailable {
                user_id,
                is_audio_available,
            } => {
                if let Some(call) = self.call.as_mut() {
                    call.audio.entry(user_id).or_default().muted = !is_audio_available;
                }
            }
            Event::OnUserNetworkQualityChanged {
                network_quality_list,
            } => {
                if let Some(call) = self.call.as_mut() {
                    for q in network_quality_list {
                        call.audio.entry(q.user_id).or_default().quality = Some(q.quality);
                    }
                }
            }
            _ => {}
        }
        effects
    }

    /// The call `call_id`, whether this device is in it or holds it aside.
    fn call_mut(&mut self, call_id: &str) -> Option<&mut ActiveCall> {
        [&mut self.call, &mut self.held_call]
            .into_iter()
            .flatten()
            .find(|c| c.call_id == call_id)
    }

    /// Call `call_id` ends here; when it was this device's call, the one
    /// held aside (if any) is its call again, still on hold.
    fn leave_call(&mut self, call_id: &str) -> Option<ActiveCall> {
        if let Some(held) = self.held_call.take_if(|c| c.call_id == call_id) {
            return Some(held);
        }
        let ended = self.call.take_if(|c| c.call_id == call_id)?;
        self.call = self.held_call.take();
        Some(ended)
    }

    /// Nothing works until a new login: say why, and offer `l` alone.
    fn sign_out(&mut self, label: &'static str, why: String) {
        self.signed_out = Some(label);
        self.alert = Some(why);
        self.composing = false;
    }

    fn log_event(&mut self, event: &Event, now: u64) {
        // Five a second would drown the log; the call pane shows them as meters.
        if matches!(event, Event::UserVoiceVolume { .. }) {
            return;
        }
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            at: now,
            text: summary(event),
            full: serde_json::to_string_pretty(event).unwrap_or_else(|_| summary(event)),
            title: None,
        });
    }
}

fn step(i: usize, n: usize, down: bool) -> usize {
    match (n, down) {
        (0, _) => 0,
        (_, true) => (i + 1).min(n - 1),
        (_, false) => i.saturating_sub(1),
    }
}

/// What the incoming-call pane says when it closes, by reason.
/// With `answered_elsewhere` and `declined_elsewhere`, the device named.
fn incoming_stopped(reason: CancelReason, sponsor: &UserId, by: Option<&DeviceView>) -> String {
    let device = by.map_or(String::new(), |d| format!(" ({})", d.device));
    match reason {
        CancelReason::AnsweredElsewhere => {
            format!("call from {sponsor} answered on another device{device}")
        }
        CancelReason::DeclinedElsewhere => {
            format!("call from {sponsor} declined on another device{device}")
        }
        CancelReason::Declined => format!("declined the call from {sponsor}"),
        CancelReason::CallerCanceled => format!("{sponsor} hung up before you answered"),
        CancelReason::Timeout => format!("missed call from {sponsor}"),
        CancelReason::CallEnded => format!("the call from {sponsor} ended"),
        CancelReason::SignedOut => format!("signed out while {sponsor} was calling"),
        CancelReason::Ignored => {
            format!("ignored the call from {sponsor}; your other devices may still ring")
        }
        CancelReason::Busy => format!("call from {sponsor}: busy"),
    }
}

/// What the status says when an outgoing call stops before it connects.
fn outgoing_stopped(reason: CancelReason, who: &str) -> Option<String> {
    Some(match reason {
        CancelReason::Declined => format!("{who} declined"),
        CancelReason::Timeout => format!("no answer from {who}"),
        CancelReason::Busy => format!("{who} is in another call"),
        CancelReason::CallerCanceled => "call canceled".to_owned(),
        other => format!("call stopped: {other}"),
    })
}

/// Users as one line: `bob, carol`.
pub fn names(users: &[UserId]) -> String {
    let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
    names.join(", ")
}

/// `M:SS` or `H:MM:SS`.
pub fn clock_secs(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// One event-log line: the event's name and its fields, shortened where the
/// fields are lists.
fn summary(event: &Event) -> String {
    let detail = match event {
        Event::Users { users } => format!("{} users", users.len()),
        Event::UserStatusChanged { user } => {
            format!("userID={} devices={}", user.user, user.devices.len())
        }
        Event::CallHistory { calls } => format!("{} calls", calls.len()),
        Event::Conversations { conversations } => format!("{} conversations", conversations.len()),
        Event::Messages { user_id, messages } => {
            format!("userID={user_id} {} messages", messages.len())
        }
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .map(|fields| {
                fields
                    .into_iter()
                    .filter(|(k, v)| k != "event" && !v.is_null())
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}={s}"),
                        v => format!("{k}={v}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    };
    if detail.is_empty() {
        event.name().to_owned()
    } else {
        format!("{} {detail}", event.name())
    }
}
