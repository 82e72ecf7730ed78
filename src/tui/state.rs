//! The TUI's model and its update function: pure, so tests can feed it
//! keys and engine events and check what it asks for.

use std::collections::VecDeque;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::client::engine::Command;
use crate::client::event::{Event, LinkState, LoginStatus, UserView};
use crate::ids::{DeviceId, Platform, UserId};

/// Engine events kept for the event log.
const LOG_CAPACITY: usize = 1000;

/// What an update asks the shell to do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    Engine(Command),
    Quit,
}

/// One line of the event log.
pub struct LogLine {
    pub at: u64,
    pub text: String,
}

pub struct Model {
    pub user: UserId,
    pub device: DeviceId,
    pub platform: Platform,
    pub relay_url: String,
    pub started_at: u64,
    pub status: LoginStatus,
    pub link: Option<LinkState>,
    /// The last problem worth showing in the status line.
    pub alert: Option<String>,
    pub users: Vec<UserView>,
    pub log: VecDeque<LogLine>,
}

impl Model {
    pub fn new(
        user: UserId,
        device: DeviceId,
        platform: Platform,
        relay_url: String,
        now: u64,
    ) -> Self {
        Model {
            user,
            device,
            platform,
            relay_url,
            started_at: now,
            status: LoginStatus::Logout,
            link: None,
            alert: None,
            users: Vec::new(),
            log: VecDeque::new(),
        }
    }

    pub fn on_terminal(&mut self, event: TermEvent) -> Vec<Effect> {
        match event {
            TermEvent::Key(KeyEvent {
                code,
                modifiers,
                kind: KeyEventKind::Press,
                ..
            }) => match (code, modifiers) {
                (KeyCode::Char('q'), _) => vec![Effect::Quit],
                (KeyCode::Char('c'), m) if m.contains(KeyModifiers::CONTROL) => vec![Effect::Quit],
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    pub fn on_engine(&mut self, event: Event, now: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.log_event(&event, now);
        match event {
            Event::SdkReady => {
                self.alert = None;
                effects.push(Effect::Engine(Command::GetUsers { subscribe: true }));
            }
            Event::LoginStatusChanged { status, .. } => self.status = status,
            Event::ConnectionChanged { state } => {
                self.link = Some(state);
                if state == LinkState::Connected {
                    self.alert = None;
                }
            }
            Event::KickedOut { message, .. } => {
                self.alert = Some(format!(
                    "kicked out: {message}. Restart termphone to log in again"
                ))
            }
            Event::UserSigExpired => {
                self.alert = Some("your UserSig expired; restart termphone to log in again".into())
            }
            Event::Users { users } => self.users = users,
            Event::UserStatusChanged { user } => {
                match self.users.binary_search_by(|u| u.user.cmp(&user.user)) {
                    Ok(i) => self.users[i] = user,
                    Err(i) => self.users.insert(i, user),
                }
            }
            Event::Error { message, .. } => self.alert = Some(message),
            // Calls reach the TUI's panes with the TUI issue; the event log shows them now.
            _ => {}
        }
        effects
    }

    fn log_event(&mut self, event: &Event, now: u64) {
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            at: now,
            text: summary(event),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model::new(
            UserId::parse("alice").unwrap(),
            DeviceId::parse("d1").unwrap(),
            Platform::terminal(),
            "ws://127.0.0.1:7787".into(),
            0,
        )
    }

    #[test]
    fn ready_asks_for_users_and_logs() {
        let mut m = model();
        assert_eq!(
            m.on_engine(Event::SdkReady, 5),
            vec![Effect::Engine(Command::GetUsers { subscribe: true })]
        );
        assert_eq!(m.log.back().unwrap().text, "SDK_READY");
    }

    #[test]
    fn q_quits() {
        let mut m = model();
        let key = TermEvent::Key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE));
        assert_eq!(m.on_terminal(key), vec![Effect::Quit]);
    }
}
