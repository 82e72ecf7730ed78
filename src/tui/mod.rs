//! The terminal UI: an Elm-style loop over the same client engine headless
//! mode uses. `state` holds the model and its update, `view` draws it; this
//! file only wires terminal, engine and clock together.

mod state;
mod view;

use std::time::Duration;

use crossterm::event::EventStream;
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::client::ClientSettings;
use crate::client::connection::{self, ClientHandle};
use crate::client::engine::{ClientEngine, Command};
use crate::client::local_store::Recorder;
use crate::ids::{DeviceId, UserId};
use crate::time::unix_millis;
pub use state::{Effect, Model};

pub struct TuiOptions {
    pub settings: ClientSettings,
    pub user: UserId,
    pub device: Option<DeviceId>,
    pub user_sig: Option<String>,
}

/// Runs the TUI until the user quits or SIGTERM arrives. The terminal is
/// restored on every way out, panics included (ratatui's hook).
pub async fn run(options: TuiOptions) -> std::io::Result<()> {
    let TuiOptions {
        settings,
        user,
        device,
        user_sig,
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
    let login = login.command;
    let ClientHandle {
        commands,
        mut events,
    } = connection::spawn(
        settings.relay_url.clone(),
        ClientEngine::new(settings.engine_config()),
    );
    let _ = commands.send(login);

    let mut model = Model::new(
        user,
        profile.device.clone(),
        settings.platform.clone(),
        settings.relay_url.clone(),
        unix_millis(),
    );
    let mut terminal = ratatui::init();
    let mut keys = EventStream::new();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        if let Err(e) = terminal.draw(|frame| view::draw(frame, &model, unix_millis())) {
            break Err(e);
        }
        let effects = tokio::select! {
            key = keys.next() => match key {
                Some(Ok(event)) => model.on_terminal(event),
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
            _ = tick.tick() => Vec::new(),
            _ = sigterm.recv() => vec![Effect::Quit],
        };
        if apply(effects, &commands) {
            break Ok(());
        }
    };
    ratatui::restore();
    let _ = commands.send(Command::Logout);
    drop(commands);
    let drain = async { while events.recv().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    result
}

/// Carries out effects; true when the UI should quit.
fn apply(effects: Vec<Effect>, commands: &tokio::sync::mpsc::UnboundedSender<Command>) -> bool {
    let mut quit = false;
    for effect in effects {
        match effect {
            Effect::Engine(cmd) => {
                let _ = commands.send(cmd);
            }
            Effect::Quit => quit = true,
        }
    }
    quit
}
