//! The terminal UI: an Elm-style loop over the same client engine headless
//! mode uses. `state` holds the model and its update, `view` draws it,
//! `keymap` maps keys to actions; this file only wires terminal, engine,
//! local store and clock together, and carries out the model's effects.

mod conversation;
mod devices;
pub mod keymap;
mod keypad;
mod layout;
mod overlays;
pub mod state;
#[cfg(test)]
mod tests;
mod text;
pub mod view;

use std::io::Write;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::client::connection::ClientHandle;
use crate::client::engine::{Command, LOGOUT_MAX_MS};
use crate::client::event::Event;
use crate::client::local_store::StoreHandle;
use crate::client::records::{CallRecord, Conversation, StoredMessage};
use crate::client::{ClientSettings, queue};
use crate::ids::{DeviceId, UserId};
use crate::media::ringtone::Ringtone;
use crate::time::unix_millis;
pub use keymap::Keymap;
pub use state::{Effect, Model};

pub struct TuiOptions {
    pub settings: ClientSettings,
    pub user: UserId,
    pub device: Option<DeviceId>,
    pub user_sig: Option<String>,
    pub keymap: Keymap,
    /// Ring the terminal bell on an incoming call.
    pub bell: bool,
    /// Play the ringtone while a call rings.
    pub ringtone: bool,
    /// Scroll the conversation with the mouse wheel (mouse capture on).
    pub mouse: bool,
    /// The copy key puts a message on the terminal's clipboard (OSC 52).
    pub copy: bool,
    /// Lines shown until a conversation is opened (the demo's welcome).
    pub banner: Vec<String>,
    /// The terminal's stderr, which the log file holds while the screen
    /// is up: what the logout at quit waits for, or gave up on, is said
    /// there. `None`: the process's stderr.
    pub terminal: Option<std::fs::File>,
}

/// Answers from the local store, back into the loop.
enum Loaded {
    Conversations(Vec<Conversation>),
    Messages(UserId, Vec<StoredMessage>),
    Older(UserId, Vec<StoredMessage>),
    History(Vec<CallRecord>),
}

/// Runs the TUI until the user quits or SIGTERM arrives. The terminal is
/// restored on every way out, panics included (ratatui's hook).
pub async fn run(options: TuiOptions) -> std::io::Result<()> {
    let TuiOptions {
        settings,
        user,
        device,
        user_sig,
        keymap,
        bell,
        ringtone,
        mouse,
        copy,
        banner,
        terminal,
    } = options;
    let mut terminal_err: Box<dyn Write + Send> = match terminal {
        Some(file) => Box::new(file),
        None => Box::new(std::io::stderr()),
    };
    let ClientHandle {
        commands,
        mut events,
    } = settings.connect();
    let login = settings
        .login(
            user.clone(),
            device.as_ref(),
            user_sig.clone(),
            unix_millis() / 1000,
            &commands,
        )
        .map_err(std::io::Error::other)?;
    let (device, _profile, recorder) = (login.device, login.profile, login.recorder);
    let again = LoginAgain {
        settings: settings.clone(),
        user: user.clone(),
        device: device.clone(),
        user_sig,
    };

    let mut model = Model::new(
        user,
        device,
        settings.platform.clone(),
        settings.relay_url.clone(),
        keymap,
        unix_millis(),
    );
    model.banner = banner;
    model.auto_answer = settings.auto_answer_ms;
    model.auto_answer_delay = settings.auto_answer_ms.unwrap_or(0);
    model.call_waiting = settings.call_waiting;
    model.voice = settings.media.voice;
    model.card_mic = settings.media.input.is_card();
    model.copy = copy;
    let (loaded_tx, mut loaded) = mpsc::unbounded_channel();
    let mut terminal = ratatui::try_init()?;
    let mut keys = terminal_input();
    // Closing the terminal (SIGHUP) or a `kill` (SIGTERM) quits as `q`
    // does: the device logs out, so its call ends for the others at once,
    // and the call is kept in its history.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // Often enough for the call timer, the ringing flash and notices to move.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ringing: Option<Ringtone> = None;
    let mut terminal_modes = TerminalModes::enter(mouse)?;
    let result = loop {
        // The model pages and wraps by the conversation's size as drawn: a
        // resize or a new layout is drawn again with the size it learns.
        let mut drawn = view::Drawn {
            viewport: model.viewport,
            overlay: model.overlay_rows,
        };
        if let Err(e) = terminal.draw(|frame| drawn = view::draw(frame, &model, unix_millis())) {
            break Err(e);
        }
        if drawn.overlay != model.overlay_rows {
            model.on_overlay(drawn.overlay);
        }
        if drawn.viewport != model.viewport {
            model.on_viewport(drawn.viewport.0, drawn.viewport.1);
            continue;
        }
        let effects = tokio::select! {
            key = keys.recv() => match key {
                Some(Ok(event)) => model.on_terminal(event, unix_millis()),
                Some(Err(e)) => break Err(e),
                None => vec![Effect::Quit],
            },
            event = events.recv() => match event {
                Some(event) => {
                    recorder.observe(&event);
                    model.on_engine(event, unix_millis())
                }
                None => vec![Effect::Quit],
            },
            Some(answer) = loaded.recv() => {
                match answer {
                    Loaded::Conversations(c) => model.on_conversations(c),
                    Loaded::Messages(peer, m) => model.on_messages(&peer, m),
                    Loaded::Older(peer, m) => model.on_older(&peer, m),
                    Loaded::History(h) => model.on_history(h),
                }
                Vec::new()
            }
            // A terminal can go without a SIGHUP reaching us (a pty whose
            // session ended elsewhere): nobody is left to see the screen.
            _ = tick.tick() => if terminal_gone() { vec![Effect::Quit] } else { Vec::new() },
            _ = sigterm.recv() => vec![Effect::Quit],
            _ = sighup.recv() => vec![Effect::Quit],
        };
        let shell = Shell {
            commands: &commands,
            store: recorder.store(),
            loaded: &loaded_tx,
            bell,
            again: &again,
        };
        if shell.apply(effects) {
            break Ok(());
        }
        match (ringtone && !model.incoming.is_empty(), &ringing) {
            (true, None) => ringing = Ringtone::start(&settings.media.output),
            (false, Some(_)) => ringing = None,
            _ => {}
        }
    };
    drop(ringing);
    terminal_modes.leave();
    ratatui::restore();
    let _ = commands.send(Command::Logout);
    drop(commands);
    // The connection task ends once the logout has run its course: at
    // once, or once the messages still on their way have reached the
    // relay (up to 10 s, through a reconnection). Those it gave up on are
    // named here, on the terminal the screen has left.
    let drain = async {
        let patience = tokio::time::sleep(QUIET_LOGOUT);
        tokio::pin!(patience);
        let mut said = false;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if let Some(line) = unsent(&model, &event) {
                            let _ = writeln!(terminal_err, "{line}");
                        }
                        recorder.observe(&event);
                    }
                    None => break,
                },
                () = &mut patience, if !said => {
                    said = true;
                    let _ = writeln!(
                        terminal_err,
                        "termphone: logging out: waiting for the relay to take the messages \
                         on their way (up to {} s; Ctrl-C quits now)",
                        LOGOUT_MAX_MS / 1000
                    );
                }
            }
        }
    };
    let leaving = Duration::from_millis(LOGOUT_MAX_MS + 1_000);
    let _ = tokio::time::timeout(leaving, drain).await;
    recorder.store().flush().await;
    result
}

/// A logout that takes longer than this says what it waits for.
const QUIET_LOGOUT: Duration = Duration::from_secs(1);

/// The line that names a message the logout gave up on (the engine's
/// `ERROR` with its client id), with its text where this screen had it.
/// The relay never confirmed it, which is not to say it never got it: the
/// words say "may not", and the text is there to send again.
fn unsent(model: &Model, event: &Event) -> Option<String> {
    let Event::Error {
        client_msg_id: Some(id),
        message,
        ..
    } = event
    else {
        return None;
    };
    Some(match model.on_their_way.get(id) {
        Some((to, text)) => format!(
            "termphone: the relay did not confirm this message before the logout; it may not \
             have reached {to}: \"{text}\""
        ),
        None => {
            format!("termphone: the relay did not confirm a message before the logout: {message}")
        }
    })
}

/// Terminal input, read on a thread of its own. Once the terminal is gone,
/// crossterm's reader spins inside its read loop without returning
/// (crossterm-rs/crossterm#793): on the runtime it would freeze this loop,
/// SIGHUP and SIGTERM included, and leave the device online at 100% CPU for
/// good. On its own thread it stalls only itself, and the loop still quits
/// (the process exit ends that thread).
fn terminal_input() -> mpsc::UnboundedReceiver<std::io::Result<crossterm::event::Event>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("terminal-input".into())
        .spawn(move || {
            loop {
                let event = crossterm::event::read();
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    break;
                }
            }
        })
        .expect("spawn the terminal input thread");
    rx
}

/// The controlling terminal hung up: its settings can no longer be read.
fn terminal_gone() -> bool {
    let mut settings = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr writes a termios into the space given, or fails.
    unsafe { libc::tcgetattr(libc::STDIN_FILENO, settings.as_mut_ptr()) != 0 }
}

/// How this device logs in again: the same user and device, the ticket it
/// was given or a fresh one minted now.
#[derive(Clone)]
struct LoginAgain {
    settings: crate::client::ClientSettings,
    user: UserId,
    device: DeviceId,
    user_sig: Option<String>,
}

impl LoginAgain {
    fn command(&self, sync_after: u64) -> Command {
        Command::Login {
            user: self.user.clone(),
            device: self.device.clone(),
            user_sig: self
                .user_sig
                .clone()
                .unwrap_or_else(|| self.settings.mint(&self.user, unix_millis() / 1000)),
            sync_after,
        }
    }
}

/// What effects are carried out with.
struct Shell<'a> {
    commands: &'a queue::Sender<Command>,
    store: &'a StoreHandle,
    loaded: &'a mpsc::UnboundedSender<Loaded>,
    bell: bool,
    again: &'a LoginAgain,
}

impl Shell<'_> {
    /// Carries out effects; true when the UI should quit.
    fn apply(&self, effects: Vec<Effect>) -> bool {
        let mut quit = false;
        for effect in effects {
            match effect {
                Effect::Engine(cmd) => {
                    let _ = self.commands.send(cmd);
                }
                Effect::LoadConversations => {
                    let (store, loaded) = (self.store.clone(), self.loaded.clone());
                    tokio::spawn(async move {
                        if let Ok(c) = store.conversations().await {
                            let _ = loaded.send(Loaded::Conversations(c));
                        }
                    });
                }
                Effect::LoadMessages(peer) => self.load_page(peer, None),
                Effect::LoadOlder { peer, before } => self.load_page(peer, Some(before)),
                Effect::Copy(text) => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(osc52(&text).as_bytes());
                    let _ = out.flush();
                }
                Effect::LoadHistory => {
                    let (store, loaded) = (self.store.clone(), self.loaded.clone());
                    tokio::spawn(async move {
                        if let Ok(h) = store.recent(100).await {
                            let _ = loaded.send(Loaded::History(h));
                        }
                    });
                }
                Effect::Login => {
                    let (store, commands) = (self.store.clone(), self.commands.clone());
                    let again = self.again.clone();
                    // The engine forgot its sync position when it signed
                    // out; the store has it, so nothing is fetched twice.
                    tokio::spawn(async move {
                        let sync_after = store.high_water().await.unwrap_or(0);
                        let _ = commands.send(again.command(sync_after));
                    });
                }
                Effect::Bell => {
                    if self.bell {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(b"\x07");
                        let _ = out.flush();
                    }
                }
                Effect::Quit => quit = true,
            }
        }
        quit
    }

    /// A page of a conversation (the newest, or the one before `before`)
    /// by the client's rule: the local store's, and the relay asked when
    /// the store has less.
    fn load_page(&self, peer: UserId, before: Option<u64>) {
        let (store, loaded) = (self.store.clone(), self.loaded.clone());
        let commands = self.commands.clone();
        tokio::spawn(async move {
            if let Ok(page) = store.page(peer.clone(), conversation::PAGE, before).await {
                let answer = match before {
                    None => Loaded::Messages(peer, page.messages),
                    Some(_) => Loaded::Older(peer, page.messages),
                };
                let _ = loaded.send(answer);
                if let Some(command) = page.ask_relay {
                    let _ = commands.send(command);
                }
            }
        });
    }
}

/// The OSC 52 sequence that puts `text` on the terminal's clipboard.
fn osc52(text: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("\x1b]52;c;{encoded}\x07")
}

/// The terminal modes the TUI turns on besides ratatui's: bracketed paste
/// (a pasted block arrives whole, never as keys that could send it line by
/// line) and, unless the config turns it off, the mouse wheel.
struct TerminalModes {
    mouse: bool,
}

impl TerminalModes {
    fn enter(mouse: bool) -> std::io::Result<TerminalModes> {
        use crossterm::event::{EnableBracketedPaste, EnableMouseCapture};
        let mut out = std::io::stdout();
        crossterm::execute!(out, EnableBracketedPaste)?;
        if mouse {
            crossterm::execute!(out, EnableMouseCapture)?;
        }
        Ok(TerminalModes { mouse })
    }

    fn leave(&mut self) {
        use crossterm::event::{DisableBracketedPaste, DisableMouseCapture};
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(out, DisableBracketedPaste);
        if self.mouse {
            let _ = crossterm::execute!(out, DisableMouseCapture);
        }
    }
}
