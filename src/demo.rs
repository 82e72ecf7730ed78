//! `termphone demo`: one terminal, nothing else running. An in-process
//! relay, scripted peers on real client engines, and the TUI logged in as
//! the demo user with multi-device ability.

use std::time::Duration;

use crate::client::connection::{self, ClientHandle, RelayTarget};
use crate::client::engine::{CallCommand, ChatCommand, ClientEngine, Command, EngineConfig};
use crate::client::event::{CallRole, Event, UserView};
use crate::client::{ClientSettings, StoreChoice, queue};
use crate::config::RelayConfig;
use crate::ids::{DEV_APP_ID, DeviceId, Platform, UserId};
use crate::media::pipeline::MediaSettings;
use crate::media::spec::AudioSpec;
use crate::relay::{self, RelayHandle};
use crate::time::unix_millis;
use crate::tls::{KnownRelays, Trust};
use crate::tui::{self, Keymap, TuiOptions};
use crate::usersig::{self, DEV_SECRET, Ticket};

/// The demo user.
pub const ME: &str = "you";

/// What the demo's banner says.
pub const BANNER: &[&str] = &[
    "Welcome to the termphone demo.",
    "carol calls you in a few seconds:",
    "  a answers, d declines, h hangs up",
    "echo answers calls, echoes messages:",
    "  Enter opens a chat, Enter sends.",
    "dave has two devices: call him (c);",
    "  one answers, the other stops.",
    "Message carol: she calls you again.",
    "Voice: echo plays yours back 0.5 s",
    "  later; m mutes your microphone.",
    "? lists every key, q quits.",
];

/// Runs the demo until the user quits the TUI; with `tls` its relay serves
/// `wss://` and every device pins the relay's fresh certificate.
pub async fn run(
    keymap: Keymap,
    tls: bool,
    terminal: Option<std::fs::File>,
) -> std::io::Result<()> {
    // Everything of the demo lives in a scratch directory: it touches no
    // profile of the user's.
    let scratch = tempfile::tempdir()?;
    let relay = start_relay(scratch.path(), tls).await?;
    let url = relay.url();
    let target = RelayTarget {
        url: url.clone(),
        autostart: None,
        trust: Trust::new(relay.fingerprint(), KnownRelays::default()),
    };
    let peers = vec![
        tokio::spawn(echo(target.clone())),
        tokio::spawn(carol(target.clone())),
        tokio::spawn(dave(target.clone(), "laptop", 440.0)),
        tokio::spawn(dave(target.clone(), "phone", 494.0)),
    ];
    let settings = ClientSettings {
        relay_url: url,
        relay_fingerprint: relay.fingerprint(),
        autostart_relay: false,
        app: DEV_APP_ID,
        platform: Platform::terminal(),
        secret: DEV_SECRET.into(),
        usersig_lifetime_secs: 24 * 3600,
        multi_device: true,
        call_waiting: false,
        auto_answer_ms: None,
        data_dir: scratch.path().join("data"),
        store: StoreChoice::Profile,
        media: MediaSettings {
            input: AudioSpec::Default,
            output: AudioSpec::Default,
            ..MediaSettings::default()
        },
        without_media: false,
    };

    let result = tui::run(TuiOptions {
        settings,
        user: UserId::parse(ME).expect("valid"),
        device: Some(DeviceId::parse("demo").expect("valid")),
        user_sig: None,
        keymap,
        bell: true,
        ringtone: true,
        mouse: true,
        copy: false,
        banner: BANNER.iter().map(|s| s.to_string()).collect(),
        terminal,
    })
    .await;
    for peer in peers {
        peer.abort();
    }
    relay.shutdown().await;
    result
}

async fn start_relay(dir: &std::path::Path, tls: bool) -> std::io::Result<RelayHandle> {
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().expect("valid"),
        tls,
        ..RelayConfig::default()
    };
    let store =
        relay::store::Store::open(&dir.join("relay.sqlite3")).map_err(std::io::Error::other)?;
    relay::start(&config, store)
        .await
        .map_err(std::io::Error::other)
}

/// A scripted peer: a real engine and connection, logged in.
struct Peer {
    commands: queue::Sender<Command>,
    events: queue::Receiver<Event>,
}

impl Peer {
    /// A peer that plays nothing and speaks from `input` (generated audio:
    /// the demo needs no sound card).
    async fn login(
        relay: RelayTarget,
        user: &str,
        device: &str,
        multi_device: bool,
        input: AudioSpec,
    ) -> Peer {
        let user = UserId::parse(user).expect("valid");
        let config = EngineConfig {
            multi_device,
            ..EngineConfig::new(DEV_APP_ID, Platform::terminal())
        };
        let media = MediaSettings {
            input,
            output: AudioSpec::Null,
            ..MediaSettings::default()
        };
        let ClientHandle { commands, events } =
            connection::spawn(relay, ClientEngine::new(config), Some(media));
        let ticket = Ticket {
            app: DEV_APP_ID,
            user: user.clone(),
            issued_at: unix_millis() / 1000,
            lifetime: 24 * 3600,
        };
        // The demo's relay is new, so there is nothing to catch up on;
        // peers answer live messages only (see `live_from_me`).
        let _ = commands.send(Command::Login {
            user,
            device: DeviceId::parse(device).expect("valid"),
            user_sig: usersig::mint(DEV_SECRET, &ticket),
            sync_after: 0,
        });
        let mut peer = Peer { commands, events };
        // Logged in and caught up: commands that need a session work now.
        while let Some(event) = peer.events.recv().await {
            if matches!(event, Event::Synced { .. }) {
                break;
            }
        }
        peer
    }

    fn send(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }

    fn say(&self, text: impl Into<String>) {
        self.send(Command::Chat(ChatCommand::SendMessage {
            to: UserId::parse(ME).expect("valid"),
            text: text.into(),
            client_msg_id: None,
        }));
    }

    fn call_me(&self) {
        self.send(Command::Call(CallCommand::Call {
            users: vec![UserId::parse(ME).expect("valid")],
            timeout_secs: None,
            user_data: None,
        }));
    }
}

/// The text of a message the demo user just sent (not one caught up on).
fn live_from_me(event: &Event) -> Option<&str> {
    match event {
        Event::MessageReceived {
            from,
            text,
            offline: false,
            ..
        } if from == ME => Some(text),
        _ => None,
    }
}

/// Answers every call after a ring and echoes every message.
async fn echo(relay: RelayTarget) {
    let mut peer = Peer::login(relay, "echo", "bot", false, AudioSpec::Echo).await;
    while let Some(event) = peer.events.recv().await {
        if let Some(text) = live_from_me(&event) {
            peer.say(format!("echo: {text}"));
        } else if let Event::OnCallReceived { call_id, .. } = event {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            peer.send(Command::Call(CallCommand::Accept {
                call_id: Some(call_id),
                end_current: false,
            }));
        }
    }
}

/// Calls the demo user once it is online, and again whenever messaged; a
/// call that goes unanswered leaves a note saying how to get another.
async fn carol(relay: RelayTarget) {
    let mut peer = Peer::login(relay, "carol", "phone", false, AudioSpec::Tone(330.0)).await;
    peer.send(Command::GetUsers { subscribe: true });
    let mut called = false;
    while let Some(event) = peer.events.recv().await {
        if live_from_me(&event).is_some() {
            peer.say("calling you back…");
            tokio::time::sleep(Duration::from_secs(2)).await;
            peer.call_me();
            continue;
        }
        match event {
            Event::Users { users } if !called && online(&users) => {
                called = true;
                tokio::time::sleep(Duration::from_secs(3)).await;
                peer.call_me();
            }
            Event::UserStatusChanged { user } if !called && online(std::slice::from_ref(&user)) => {
                called = true;
                tokio::time::sleep(Duration::from_secs(3)).await;
                peer.call_me();
            }
            Event::OnCallCanceled {
                reason,
                call_role: CallRole::Caller,
                ..
            } => {
                let note = match reason.as_str() {
                    "timeout" => "Missed me? Message me to call you back.",
                    "busy" => "You were busy. Message me when free.",
                    _ => "No problem. Message me to call back.",
                };
                peer.say(note);
            }
            Event::OnCallReceived { call_id, .. } => {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                peer.send(Command::Call(CallCommand::Accept {
                    call_id: Some(call_id),
                    end_current: false,
                }));
            }
            _ => {}
        }
    }
}

/// Whether the demo user has a device online among `users`.
fn online(users: &[UserView]) -> bool {
    users.iter().any(|u| u.user == ME && !u.devices.is_empty())
}

/// One of dave's two devices: both ring; the laptop answers after a ring,
/// and each device tells the demo user what it saw.
async fn dave(relay: RelayTarget, device: &'static str, tone_hz: f32) {
    let mut peer = Peer::login(relay, "dave", device, true, AudioSpec::Tone(tone_hz)).await;
    while let Some(event) = peer.events.recv().await {
        match event {
            // Both ring; the laptop answers after a ring.
            Event::OnCallReceived { call_id, .. } if device == "laptop" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                peer.send(Command::Call(CallCommand::Accept {
                    call_id: Some(call_id),
                    end_current: false,
                }));
            }
            Event::OnCallBegin { .. } => peer.say(format!("{device}: both rang, I answered")),
            Event::OnCallCanceled { reason, .. } => {
                peer.say(format!("{device}: stopped ({reason})"));
            }
            _ => {}
        }
    }
}
