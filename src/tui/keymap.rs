//! Keys: one table that both handles key presses and writes the footer's
//! hints, so the two never disagree. Bindings can be changed in the
//! config's `[tui.keys]` section (action name = key).

use std::collections::BTreeMap;
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where the key was pressed: the top layer decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Context {
    /// A call rings here: the incoming-call pane is on top.
    Incoming,
    /// Writing a message.
    Compose,
    /// The DTMF keypad, open over a connected call.
    Keypad,
    /// Kicked out, a ticket that expired, a refused login: nothing but a
    /// new login works.
    SignedOut,
    /// In (or dialing) a call.
    Call,
    Contacts,
    Conversation,
    History,
    Log,
    /// Everywhere not taken by a layer above.
    Global,
}

impl Context {
    /// Where a binding works, as an error message or the help says it.
    pub fn describe(self) -> &'static str {
        match self {
            Context::Incoming => "while a call rings",
            Context::Compose => "while writing a message",
            Context::Keypad => "in the keypad",
            Context::SignedOut => "when signed out",
            Context::Call => "in a call",
            Context::Contacts => "in contacts",
            Context::Conversation => "in the conversation",
            Context::History => "in the call list",
            Context::Log => "in the event log",
            Context::Global => "anywhere",
        }
    }
}

/// Whether keys of the two contexts can be pressed in the same moment (and
/// so must not share a key for different actions). The incoming-call pane,
/// a call's keys and the global keys sit over every pane; writing and the
/// keypad take every key for themselves; a signed-out device has only its
/// own and the global keys; two panes never have focus at once.
fn overlap(a: Context, b: Context) -> bool {
    use Context as C;
    let over_panes = |c| matches!(c, C::Incoming | C::Call | C::Global);
    match (a, b) {
        _ if a == b => true,
        (C::Compose | C::Keypad, _) | (_, C::Compose | C::Keypad) => false,
        (C::SignedOut, other) | (other, C::SignedOut) => other == C::Global,
        _ => over_panes(a) || over_panes(b),
    }
}

macro_rules! actions {
    ($($variant:ident = $name:literal, $hint:literal;)+) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Action {
            $($variant,)+
        }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant,)+];

            /// The name used in the config's `[keys]` section.
            pub fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)+
                }
            }

            /// What the footer says it does.
            pub fn hint(self) -> &'static str {
                match self {
                    $(Action::$variant => $hint,)+
                }
            }
        }
    };
}

impl Action {
    /// The actions `[tui.keys]` may bind: all but the keypad's digits.
    pub fn rebindable() -> impl Iterator<Item = Action> {
        Action::ALL.iter().copied().filter(|a| *a != Action::Dial)
    }
}

actions! {
    Accept = "accept", "answer";
    AcceptEnd = "accept_end", "answer, end current";
    Decline = "decline", "decline";
    Ignore = "ignore", "ignore";
    Hangup = "hangup", "hang up";
    Login = "login", "log in again";
    Details = "details", "show event";
    Invite = "invite", "invite selected";
    Mute = "mute", "mute";
    VoiceProcessing = "voice_processing", "voice processing";
    Hold = "hold", "hold";
    Transfer = "transfer", "transfer";
    Swap = "swap", "swap calls";
    Keypad = "keypad", "keypad";
    Dial = "dial", "dial (0-9 * # A-D)";
    SwitchRole = "role", "speak/listen";
    AutoAnswer = "auto_answer", "auto-answer on/off";
    CallWaiting = "call_waiting", "call waiting on/off";
    Devices = "devices", "sound devices";
    Call = "call", "call";
    Open = "open", "open";
    Compose = "compose", "write";
    Send = "send", "send";
    Newline = "newline", "new line";
    Cancel = "cancel", "back";
    Older = "older", "older";
    Newer = "newer", "newer";
    Newest = "newest", "newest";
    Resend = "resend", "resend";
    Recall = "recall", "recall";
    Copy = "copy", "copy";
    MessageDetails = "message_details", "details";
    Up = "up", "up";
    Down = "down", "down";
    NextPane = "next_pane", "next pane";
    PrevPane = "prev_pane", "previous pane";
    Help = "help", "help";
    Quit = "quit", "quit";
}

/// A key, as written in the config and shown in hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
    pub alt: bool,
}

impl Key {
    pub const fn plain(code: KeyCode) -> Key {
        Key {
            code,
            ctrl: false,
            alt: false,
        }
    }

    pub const fn ctrl(code: KeyCode) -> Key {
        Key {
            code,
            ctrl: true,
            alt: false,
        }
    }

    pub const fn alt(code: KeyCode) -> Key {
        Key {
            code,
            ctrl: false,
            alt: true,
        }
    }

    pub const fn ch(c: char) -> Key {
        Key::plain(KeyCode::Char(c))
    }

    /// A key that writes a character into a message being written.
    pub fn typed(self) -> bool {
        matches!(self.code, KeyCode::Char(_)) && !self.ctrl && !self.alt
    }

    pub fn from_event(e: &KeyEvent) -> Key {
        let ctrl = e.modifiers.contains(KeyModifiers::CONTROL);
        let alt = e.modifiers.contains(KeyModifiers::ALT);
        // Shift-Tab arrives as BackTab; letters carry their case already.
        Key {
            code: e.code,
            ctrl,
            alt,
        }
    }

    /// Parses `c`, `ctrl-c`, `alt-enter`, `enter`, `esc`, `tab`, `backtab`,
    /// `up`, `down`, `pageup`, `end`, `?`. A refusal quotes the whole text
    /// as written: `ctrl-shift-p`, not `shift-p`.
    pub fn parse(s: &str) -> Result<Key, String> {
        let (ctrl, rest) = match s.strip_prefix("ctrl-") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (alt, rest) = match rest.strip_prefix("alt-") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let code = match rest {
            "enter" => KeyCode::Enter,
            "esc" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pageup" => KeyCode::PageUp,
            "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "space" => KeyCode::Char(' '),
            one if one.chars().count() == 1 => KeyCode::Char(one.chars().next().expect("one char")),
            _ => {
                return Err(format!(
                    "{s:?} is not a key: use a single character, ctrl-X, alt-X, enter, esc, tab, backtab, up, down, left, right, pageup, pagedown, home, end or space"
                ));
            }
        };
        Ok(Key { code, ctrl, alt })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("C-")?;
        }
        if self.alt {
            f.write_str("M-")?;
        }
        match self.code {
            KeyCode::Enter => f.write_str("Enter"),
            KeyCode::Esc => f.write_str("Esc"),
            KeyCode::Tab => f.write_str("Tab"),
            KeyCode::BackTab => f.write_str("S-Tab"),
            KeyCode::Up => f.write_str("↑"),
            KeyCode::Down => f.write_str("↓"),
            KeyCode::Left => f.write_str("←"),
            KeyCode::Right => f.write_str("→"),
            KeyCode::PageUp => f.write_str("PgUp"),
            KeyCode::PageDown => f.write_str("PgDn"),
            KeyCode::Home => f.write_str("Home"),
            KeyCode::End => f.write_str("End"),
            KeyCode::Char(' ') => f.write_str("Space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Which action each key does in each context; the first binding of an
/// action in a context is the one its hint shows.
#[derive(Clone, Debug)]
pub struct Keymap {
    bindings: Vec<(Context, Key, Action)>,
}

impl Default for Keymap {
    fn default() -> Self {
        use Action as A;
        use Context as C;
        let k = Key::ch;
        let p = Key::plain;
        let mut bindings = vec![
            (C::Incoming, k('a'), A::Accept),
            (C::Incoming, k('d'), A::Decline),
            (C::Incoming, k('i'), A::Ignore),
            (C::Incoming, k('e'), A::AcceptEnd),
            (C::Compose, p(KeyCode::Enter), A::Send),
            (C::Compose, Key::alt(KeyCode::Enter), A::Newline),
            (C::Compose, p(KeyCode::Esc), A::Cancel),
            (C::Compose, p(KeyCode::PageUp), A::Older),
            (C::Compose, p(KeyCode::PageDown), A::Newer),
            // The footer keeps the first when it is narrow: hanging up,
            // muting and holding matter more than inviting.
            (C::Call, k('h'), A::Hangup),
            (C::Call, k('m'), A::Mute),
            (C::Call, k('o'), A::Hold),
            (C::Call, k('+'), A::Invite),
            (C::Call, k('n'), A::VoiceProcessing),
            (C::Call, k('t'), A::Transfer),
            (C::Call, k('x'), A::Swap),
            (C::Call, k('p'), A::Keypad),
            (C::Call, k('l'), A::SwitchRole),
            (C::Keypad, p(KeyCode::Esc), A::Cancel),
            (C::Global, k('A'), A::AutoAnswer),
            (C::Global, k('W'), A::CallWaiting),
            // From any pane: in a call a user tabbed to another pane and
            // typed, and the letters were call keys (t transfers, p opens
            // the keypad and dialled the digits).
            (C::Global, k('w'), A::Compose),
            (C::Call, k('s'), A::Devices),
            (C::Contacts, k('s'), A::Devices),
            (C::Contacts, k('c'), A::Call),
            (C::Contacts, p(KeyCode::Enter), A::Open),
            (C::Contacts, p(KeyCode::Down), A::Down),
            (C::Contacts, k('j'), A::Down),
            (C::Contacts, p(KeyCode::Up), A::Up),
            (C::Contacts, k('k'), A::Up),
            (C::Conversation, k('w'), A::Compose),
            (C::Conversation, p(KeyCode::Enter), A::Compose),
            (C::Conversation, p(KeyCode::PageUp), A::Older),
            (C::Conversation, p(KeyCode::PageDown), A::Newer),
            (C::Conversation, p(KeyCode::End), A::Newest),
            (C::Conversation, k('G'), A::Newest),
            (C::Conversation, k('r'), A::Resend),
            (C::Conversation, k('X'), A::Recall),
            (C::Conversation, k('y'), A::Copy),
            (C::Conversation, k('v'), A::MessageDetails),
            (C::Conversation, p(KeyCode::Up), A::Up),
            (C::Conversation, k('k'), A::Up),
            (C::Conversation, p(KeyCode::Down), A::Down),
            (C::Conversation, k('j'), A::Down),
            (C::Conversation, k('c'), A::Call),
            (C::History, p(KeyCode::Down), A::Down),
            (C::History, k('j'), A::Down),
            (C::History, p(KeyCode::Up), A::Up),
            (C::History, k('k'), A::Up),
            (C::History, k('c'), A::Call),
            (C::Log, p(KeyCode::Enter), A::Details),
            (C::Log, p(KeyCode::End), A::Newest),
            (C::Log, k('G'), A::Newest),
            (C::Log, p(KeyCode::Up), A::Up),
            (C::Log, k('k'), A::Up),
            (C::Log, p(KeyCode::Down), A::Down),
            (C::Log, k('j'), A::Down),
            (C::SignedOut, k('l'), A::Login),
        ];
        // The keypad's keys, in a phone's order.
        bindings.extend(
            "1234567890*#ABCD"
                .chars()
                .map(|c| (C::Keypad, k(c), A::Dial)),
        );
        for context in [
            C::SignedOut,
            C::Call,
            C::Contacts,
            C::Conversation,
            C::History,
            C::Log,
            C::Global,
        ] {
            bindings.extend([
                (context, p(KeyCode::Tab), A::NextPane),
                (context, p(KeyCode::BackTab), A::PrevPane),
                (context, k('?'), A::Help),
                (context, k('q'), A::Quit),
            ]);
        }
        for context in [
            C::Incoming,
            C::Compose,
            C::Keypad,
            C::SignedOut,
            C::Call,
            C::Contacts,
            C::Conversation,
            C::History,
            C::Log,
            C::Global,
        ] {
            bindings.push((context, Key::ctrl(KeyCode::Char('c')), A::Quit));
        }
        Keymap { bindings }
    }
}

impl Keymap {
    /// The default keymap with the config's `[tui.keys]` overrides: each
    /// named action gets the given key wherever it was bound. A key that
    /// would then mean two things at once is refused, naming both actions.
    pub fn with_overrides(overrides: &BTreeMap<String, String>) -> Result<Keymap, String> {
        let mut map = Keymap::default();
        for (name, text) in overrides {
            let action = Action::ALL
                .iter()
                .copied()
                .find(|a| a.name() == name)
                .ok_or_else(|| {
                    let names: Vec<_> = Action::rebindable().map(Action::name).collect();
                    format!(
                        "{name} = {text:?}: there is no action {name:?}; actions are {}",
                        names.join(", ")
                    )
                })?;
            if action == Action::Dial {
                return Err(format!(
                    "{name} = {text:?}: dial is the keypad's own keys, its digits (0-9 * # A-D), \
                     which cannot be rebound; to open the keypad with another key, bind keypad"
                ));
            }
            let key = Key::parse(text).map_err(|e| format!("{name} = {text:?}: {e}"))?;
            // A letter would be text while writing; an action that also
            // works elsewhere (quit) keeps its writing key there.
            let keep_compose = key.typed()
                && map
                    .bindings
                    .iter()
                    .any(|b| b.2 == action && b.0 == Context::Compose)
                && map
                    .bindings
                    .iter()
                    .any(|b| b.2 == action && b.0 != Context::Compose);
            let mut contexts: Vec<Context> = map
                .bindings
                .iter()
                .filter(|(c, _, a)| *a == action && !(keep_compose && *c == Context::Compose))
                .map(|(c, _, _)| *c)
                .collect();
            contexts.sort();
            contexts.dedup();
            map.bindings
                .retain(|(c, _, a)| *a != action || (keep_compose && *c == Context::Compose));
            for c in contexts {
                map.bindings.insert(0, (c, key, action));
            }
        }
        for (name, text) in overrides {
            map.check(name, text)?;
        }
        Ok(map)
    }

    /// Refuses a rebound action whose key clashes with another action where
    /// both can be pressed, or that a message being written would swallow.
    fn check(&self, name: &str, text: &str) -> Result<(), String> {
        for &(context, key, action) in self.bindings.iter().filter(|b| b.2.name() == name) {
            if context == Context::Compose && key.typed() {
                return Err(format!(
                    "{name} = {text:?}: {key} is typed as text while writing a message, \
                     so it could never {}; use a ctrl- key (e.g. \"ctrl-{key}\"), enter, esc or tab",
                    action.hint()
                ));
            }
            let clash = self
                .bindings
                .iter()
                .find(|&&(c, k, a)| k == key && a != action && overlap(c, context));
            if let Some(&(c, _, other)) = clash {
                return Err(format!(
                    "{name} = {text:?}: {key} already means {:?} ({}) {}; \
                     bind {name} or {} to another key",
                    other.hint(),
                    other.name(),
                    c.describe(),
                    other.name(),
                ));
            }
        }
        Ok(())
    }

    /// The action of `key` in `context` (falling back to global keys).
    pub fn lookup(&self, context: Context, key: Key) -> Option<Action> {
        let find = |ctx: Context| {
            self.bindings
                .iter()
                .find(|(c, k, _)| *c == ctx && *k == key)
                .map(|(_, _, a)| *a)
        };
        find(context).or_else(|| match context {
            Context::Incoming | Context::Compose | Context::Keypad => None,
            _ => find(Context::Global),
        })
    }

    /// The footer for `context`: each action once, with its first key.
    pub fn hints(&self, context: Context) -> Vec<(Key, Action)> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for &(c, key, action) in &self.bindings {
            if c == context
                && !seen.contains(&action)
                && !matches!(action, Action::Up | Action::Down)
            {
                seen.push(action);
                out.push((key, action));
            }
        }
        out
    }

    /// Every binding, for the help popup.
    pub fn all(&self) -> &[(Context, Key, Action)] {
        &self.bindings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// config.example.toml names every action `[tui.keys]` may bind.
    #[test]
    fn the_example_config_names_every_action() {
        let example = include_str!("../../config.example.toml");
        let comment: String = example
            .split("[tui.keys]")
            .next()
            .unwrap()
            .rsplit("# Keys, by action:")
            .next()
            .unwrap()
            .replace("\n# ", " ");
        for action in Action::rebindable() {
            let name = action.name();
            assert!(
                comment.contains(&format!(" {name},")) || comment.contains(&format!(" {name} (")),
                "config.example.toml's [tui.keys] does not name {name}"
            );
        }
    }

    #[test]
    fn the_incoming_pane_sees_keys_first() {
        let map = Keymap::default();
        assert_eq!(
            map.lookup(Context::Incoming, Key::ch('a')),
            Some(Action::Accept)
        );
        assert_eq!(
            map.lookup(Context::Incoming, Key::ch('q')),
            None,
            "q does not quit under a ringing call"
        );
        assert_eq!(
            map.lookup(Context::Contacts, Key::ch('q')),
            Some(Action::Quit)
        );
        assert_eq!(
            map.lookup(Context::Compose, Key::ch('q')),
            None,
            "q is a letter while writing"
        );
    }

    /// As the README says: in every list, the arrows and `j` `k` move.
    #[test]
    fn j_and_k_move_in_every_list_as_the_arrows_do() {
        let map = Keymap::default();
        for list in [
            Context::Contacts,
            Context::Conversation,
            Context::History,
            Context::Log,
        ] {
            for (arrow, letter, action) in [
                (KeyCode::Up, 'k', Action::Up),
                (KeyCode::Down, 'j', Action::Down),
            ] {
                assert_eq!(
                    map.lookup(list, Key::plain(arrow)),
                    Some(action),
                    "{list:?}"
                );
                assert_eq!(map.lookup(list, Key::ch(letter)), Some(action), "{list:?}");
            }
        }
    }

    #[test]
    fn hints_come_from_the_same_table() {
        let map = Keymap::default();
        let hints: Vec<String> = map
            .hints(Context::Incoming)
            .iter()
            .map(|(k, a)| format!("{k} {}", a.hint()))
            .collect();
        assert_eq!(
            hints,
            [
                "a answer",
                "d decline",
                "i ignore",
                "e answer, end current",
                "C-c quit"
            ]
        );
    }

    #[test]
    fn overrides_rebind_and_bad_ones_say_why() {
        let overrides = BTreeMap::from([("call".to_string(), "ctrl-p".to_string())]);
        let map = Keymap::with_overrides(&overrides).unwrap();
        let ctrl_p = Key::ctrl(KeyCode::Char('p'));
        assert_eq!(map.lookup(Context::Contacts, ctrl_p), Some(Action::Call));
        assert_eq!(map.lookup(Context::Contacts, Key::ch('c')), None);
        let bad = BTreeMap::from([("dance".to_string(), "x".to_string())]);
        assert!(
            Keymap::with_overrides(&bad)
                .unwrap_err()
                .contains("there is no action \"dance\"")
        );
        let dial = BTreeMap::from([("dial".to_string(), "x".to_string())]);
        assert!(
            Keymap::with_overrides(&dial)
                .unwrap_err()
                .contains("dial is the keypad's own keys")
        );
        let bad = BTreeMap::from([("call".to_string(), "hyper-x".to_string())]);
        assert!(
            Keymap::with_overrides(&bad)
                .unwrap_err()
                .contains("not a key")
        );
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        let overrides = pairs
            .iter()
            .map(|(a, k)| (a.to_string(), k.to_string()))
            .collect();
        Keymap::with_overrides(&overrides).unwrap_err()
    }

    #[test]
    fn a_bad_key_is_quoted_whole() {
        assert_eq!(
            refusal(&[("call", "ctrl-shift-p")]),
            "call = \"ctrl-shift-p\": \"ctrl-shift-p\" is not a key: use a single character, \
             ctrl-X, alt-X, enter, esc, tab, backtab, up, down, left, right, pageup, pagedown, \
             home, end or space"
        );
    }

    #[test]
    fn a_key_for_two_actions_is_refused_naming_both() {
        assert_eq!(
            refusal(&[("call", "a")]),
            "call = \"a\": a already means \"answer\" (accept) while a call rings; \
             bind call or accept to another key"
        );
        assert!(refusal(&[("mute", "tab")]).contains("(next_pane) in a call"));
        // Swapping two keys leaves no clash.
        let swap = BTreeMap::from([
            ("call".to_string(), "a".to_string()),
            ("accept".to_string(), "c".to_string()),
        ]);
        let map = Keymap::with_overrides(&swap).unwrap();
        assert_eq!(
            map.lookup(Context::Contacts, Key::ch('a')),
            Some(Action::Call)
        );
        assert_eq!(
            map.lookup(Context::Incoming, Key::ch('c')),
            Some(Action::Accept)
        );
    }

    #[test]
    fn a_letter_never_steals_a_key_from_writing() {
        assert!(refusal(&[("send", "s")]).contains("typed as text while writing"));
        // quit on a letter still leaves ctrl-c to quit while writing.
        let quit = BTreeMap::from([("quit".to_string(), "z".to_string())]);
        let map = Keymap::with_overrides(&quit).unwrap();
        assert_eq!(map.lookup(Context::Compose, Key::ch('z')), None);
        assert_eq!(
            map.lookup(Context::Contacts, Key::ch('z')),
            Some(Action::Quit)
        );
        let ctrl_c = Key::ctrl(KeyCode::Char('c'));
        assert_eq!(map.lookup(Context::Compose, ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn the_default_keys_never_clash() {
        let map = Keymap::default();
        for &(c1, k1, a1) in map.all() {
            for &(c2, k2, a2) in map.all() {
                assert!(
                    !(k1 == k2 && a1 != a2 && overlap(c1, c2)),
                    "{k1} is {a1:?} {} and {a2:?} {}",
                    c1.describe(),
                    c2.describe()
                );
            }
        }
    }
}
