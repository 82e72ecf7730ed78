//! The terminal UI: an Elm-style loop over the same client engine headless
//! mode uses. `state` holds the model and its update, `view` draws it,
//! `keymap` maps keys to actions; this file only wires terminal, engine,
//! local store and clock together, and carries out the model's effects.

pub mod keymap;
pub mod state;
#[cfg(test)]
mod tests;
pub mod view;

use std::io::Write;
use std::time::Duration;

use crossterm::event::EventStream;
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::client::ClientSettings;
use crate::client::connection::{self, ClientHandle};
use crate::client::engine::{ClientEngine, Command};
use crate::client::history::CallRecord;
use crate::client::local_store::{Conversation, Recorder, StoreHandle, StoredMessage};
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
    /// Lines shown until a conversation is opened (the demo's welcome).
    pub banner: Vec<String>,
}

/// Answers from the local store, back into the loop.
enum Loaded {
    Conversations(Vec<Conversation>),
    Messages(String, Vec<StoredMessage>),
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
        banner,
    } = options;
    let login = settings
        .login(
            user.clone(),
            device.as_ref(),
            user_sig,
            unix_millis() / 1000,
        )
        .map_err(std::io::Error::other)?;
    let profile = login.profile;
    let mut recorder = Recorder::new(login.store);
    let ClientHandle {
        commands,
        mut events,
    } = connection::spawn(
        settings.relay_target(),
        ClientEngine::new(settings.engine_config()),
        settings.media.clone(),
    );
    let _ = commands.send(login.command);

    let mut model = Model::new(
        user,
        profile.device.clone(),
        settings.platform.clone(),
        settings.relay_url.clone(),
        keymap,
        unix_millis(),
    );
    model.banner = banner;
    let (loaded_tx, mut loaded) = mpsc::unbounded_channel();
    let mut terminal = ratatui::init();
    let mut keys = EventStream::new();
    // Closing the terminal (SIGHUP) or a `kill` (SIGTERM) quits as `q`
    // does: the device logs out, so its call ends for the others at once,
    // and the call is kept in its history.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // Often enough for the call timer, the ringing flash and notices to move.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ringing: Option<Ringtone> = None;
    let result = loop {
        if let Err(e) = terminal.draw(|frame| view::draw(frame, &model, unix_millis())) {
            break Err(e);
        }
        let effects = tokio::select! {
            key = keys.next() => match key {
                Some(Ok(event)) => model.on_terminal(event, unix_millis()),
                Some(Err(e)) => break Err(e),
                None => vec![Effect::Quit],
            },
            event = events.recv() => match event {
                Some(event) => {
                    recorder.observe(unix_millis(), &event);
                    model.on_engine(event, unix_millis())
                }
                None => vec![Effect::Quit],
            },
            Some(answer) = loaded.recv() => {
                match answer {
                    Loaded::Conversations(c) => model.on_conversations(c),
                    Loaded::Messages(peer, m) => model.on_messages(&peer, m),
                    Loaded::History(h) => model.on_history(h),
                }
                Vec::new()
            }
            _ = tick.tick() => Vec::new(),
            _ = sigterm.recv() => vec![Effect::Quit],
            _ = sighup.recv() => vec![Effect::Quit],
        };
        if apply(effects, &commands, recorder.store(), &loaded_tx, bell) {
            break Ok(());
        }
        match (ringtone && !model.incoming.is_empty(), &ringing) {
            (true, None) => ringing = Ringtone::start(&settings.media.output),
            (false, Some(_)) => ringing = None,
            _ => {}
        }
    };
    drop(ringing);
    ratatui::restore();
    let _ = commands.send(Command::Logout);
    drop(commands);
    let drain = async {
        while let Some(event) = events.recv().await {
            recorder.observe(unix_millis(), &event);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    recorder.store().flush().await;
    result
}

/// Carries out effects; true when the UI should quit.
fn apply(
    effects: Vec<Effect>,
    commands: &mpsc::UnboundedSender<Command>,
    store: &StoreHandle,
    loaded: &mpsc::UnboundedSender<Loaded>,
    bell: bool,
) -> bool {
    let mut quit = false;
    for effect in effects {
        match effect {
            Effect::Engine(cmd) => {
                let _ = commands.send(cmd);
            }
            Effect::LoadConversations => {
                let (store, loaded) = (store.clone(), loaded.clone());
                tokio::spawn(async move {
                    if let Ok(c) = store.conversations().await {
                        let _ = loaded.send(Loaded::Conversations(c));
                    }
                });
            }
            Effect::LoadMessages(peer) => {
                let (store, loaded) = (store.clone(), loaded.clone());
                tokio::spawn(async move {
                    if let Ok(m) = store.messages(peer.to_string(), 500, None).await {
                        let _ = loaded.send(Loaded::Messages(peer.to_string(), m));
                    }
                });
            }
            Effect::LoadHistory => {
                let (store, loaded) = (store.clone(), loaded.clone());
                tokio::spawn(async move {
                    if let Ok(h) = store.recent(100).await {
                        let _ = loaded.send(Loaded::History(h));
                    }
                });
            }
            Effect::Bell => {
                if bell {
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
