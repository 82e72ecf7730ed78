//! `termphone headless`: one device driven by JSON lines.
//!
//! Commands arrive on stdin, one JSON object a line; events leave on stdout,
//! one JSON object a line, and nothing else is ever written there (logs go
//! to stderr). `docs/headless.md` is the reference.

use std::collections::HashMap;
use std::future::Future;
use std::io::BufRead;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use strum::VariantNames;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::connection::ClientHandle;
use crate::client::engine::{CallCommand, ChatCommand, Command, DeviceKind, VoiceProcessingChange};
use crate::client::event::{EVENT_NAMES, Event, LoginStatus};
use crate::client::local_store::{Page, Recorder, StoreHandle};
use crate::client::{ClientSettings, queue};
use crate::error::{Error, ErrorCode};
use crate::ids::{DeviceId, UserId};
use crate::media::control::Digit;
use crate::profile::Profile;
use crate::protocol::{Role, RoomId};
use crate::signals::Signals;
use crate::time::unix_millis;

/// Every command name, in the order docs/headless.md lists them.
pub const COMMANDS: &[&str] = Request::VARIANTS;

/// The commands that ask the media thread (`Flow::uses_media`).
pub const MEDIA_COMMANDS: &[&str] = &[
    "getMediaStats",
    "sendDTMF",
    "setAudioProcessing",
    "getDeviceList",
    "switchDevice",
];

const DEFAULT_WAIT_MS: u64 = 10_000;

/// What `termphone headless` starts with.
pub struct HeadlessOptions {
    pub settings: ClientSettings,
    /// Who to log in as at start; a `--user` that is no UserID is that
    /// login refused (an `ERROR`, the process staying up).
    pub user: Result<Option<UserId>, Error>,
    pub device: Option<DeviceId>,
    pub user_sig: Option<String>,
}

/// One command line. Each variant's name, in camelCase, is its `cmd`: the
/// one table of command names (`COMMANDS`), and its fields are the
/// command's arguments (docs/headless.md).
#[derive(Debug, Deserialize, VariantNames)]
#[serde(tag = "cmd", rename_all = "camelCase", deny_unknown_fields)]
#[strum(serialize_all = "camelCase")]
enum Request {
    Login {
        /// Checked after parsing, so a bad one gets INVALID_USER_ID.
        #[serde(rename = "userID")]
        user_id: String,
        #[serde(rename = "userSig")]
        user_sig: Option<String>,
    },
    Logout {},
    EnableMultiDeviceAbility {
        enable: bool,
    },
    EnableCallWaiting {
        enable: bool,
    },
    Call {
        #[serde(rename = "userID")]
        user_id: UserId,
        timeout: Option<u32>,
        #[serde(rename = "userData")]
        user_data: Option<String>,
    },
    GroupCall {
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
        timeout: Option<u32>,
        #[serde(rename = "userData")]
        user_data: Option<String>,
    },
    Accept {
        #[serde(rename = "callId")]
        call_id: Option<String>,
        #[serde(rename = "endCurrent", default)]
        end_current: bool,
    },
    Reject {
        #[serde(rename = "callId")]
        call_id: Option<String>,
    },
    Ignore {
        #[serde(rename = "callId")]
        call_id: Option<String>,
    },
    Hangup {
        #[serde(rename = "callId")]
        call_id: Option<String>,
    },
    InviteUser {
        #[serde(rename = "userIDList")]
        user_id_list: Vec<UserId>,
    },
    JoinInGroupCall {
        #[serde(rename = "roomID")]
        room_id: RoomId,
        #[serde(default)]
        role: Role,
    },
    SwitchRole {
        role: Role,
    },
    OpenMicrophone {},
    CloseMicrophone {},
    GetMediaStats {},
    Hold {
        #[serde(rename = "callId")]
        call_id: Option<String>,
    },
    Unhold {
        #[serde(rename = "callId")]
        call_id: Option<String>,
    },
    TransferCall {
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    #[serde(rename = "sendDTMF")]
    #[strum(serialize = "sendDTMF")]
    SendDtmf {
        /// Checked after parsing, so a bad one gets INVALID_DTMF.
        digits: String,
    },
    SetAutoAnswer {
        enable: bool,
        #[serde(rename = "delayMs")]
        delay_ms: Option<u64>,
    },
    /// Voice processing stages on or off; one not named stays as it is.
    SetAudioProcessing(VoiceProcessingChange),
    GetUsers {
        #[serde(default)]
        subscribe: bool,
    },
    SendMessage {
        #[serde(rename = "userID")]
        user_id: UserId,
        text: String,
        #[serde(rename = "clientMsgID")]
        client_msg_id: Option<String>,
    },
    RecallMessage {
        #[serde(rename = "msgID")]
        msg_id: String,
    },
    MarkRead {
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    Typing {
        #[serde(rename = "userID")]
        user_id: UserId,
    },
    GetConversations {},
    GetMessages {
        #[serde(rename = "userID")]
        user_id: UserId,
        #[serde(default = "default_page")]
        count: usize,
        /// Only messages older than this (unix ms): the next page back.
        before: Option<u64>,
    },
    GetCallHistory {
        #[serde(default = "default_page")]
        count: usize,
    },
    GetDeviceList {},
    SwitchDevice {
        #[serde(rename = "deviceType")]
        device_type: DeviceKind,
        /// Checked after parsing, so a bad one gets INVALID_AUDIO_SPEC.
        #[serde(rename = "deviceId")]
        device_id: String,
    },
    Wait {
        event: String,
        #[serde(default = "default_wait_ms")]
        timeout_ms: u64,
    },
    Quit {},
}

fn default_page() -> usize {
    50
}

fn default_wait_ms() -> u64 {
    DEFAULT_WAIT_MS
}

/// What a command line asks of this process.
enum Action {
    Login {
        user: UserId,
        user_sig: Option<String>,
    },
    Engine(Command),
    History {
        count: usize,
    },
    Conversations,
    Messages {
        peer: UserId,
        count: usize,
        before: Option<u64>,
    },
    Wait {
        event: String,
        timeout_ms: u64,
    },
    Quit,
}

impl Request {
    /// Checks what serde cannot (a UserID's rule with its own code, a known
    /// event name) and says what to do.
    fn action(self) -> Result<Action, Error> {
        let engine = |c| Ok(Action::Engine(c));
        let call = |c| Ok(Action::Engine(Command::Call(c)));
        let chat = |c| Ok(Action::Engine(Command::Chat(c)));
        match self {
            Request::Login { user_id, user_sig } => Ok(Action::Login {
                user: UserId::parse(&user_id)?,
                user_sig,
            }),
            Request::Logout {} => engine(Command::Logout),
            Request::EnableMultiDeviceAbility { enable } => {
                engine(Command::EnableMultiDeviceAbility { enable })
            }
            Request::EnableCallWaiting { enable } => engine(Command::EnableCallWaiting { enable }),
            Request::Call {
                user_id,
                timeout,
                user_data,
            } => call(CallCommand::Call {
                users: vec![user_id],
                timeout_secs: timeout,
                user_data,
            }),
            Request::GroupCall {
                user_id_list,
                timeout,
                user_data,
            } => call(CallCommand::GroupCall {
                users: user_id_list,
                timeout_secs: timeout,
                user_data,
            }),
            Request::Accept {
                call_id,
                end_current,
            } => call(CallCommand::Accept {
                call_id,
                end_current,
            }),
            Request::Reject { call_id } => call(CallCommand::Reject { call_id }),
            Request::Ignore { call_id } => call(CallCommand::Ignore { call_id }),
            Request::Hangup { call_id } => call(CallCommand::Hangup { call_id }),
            Request::InviteUser { user_id_list } => call(CallCommand::InviteUser {
                users: user_id_list,
            }),
            Request::JoinInGroupCall { room_id, role } => call(CallCommand::JoinInGroupCall {
                room: room_id,
                role,
            }),
            Request::SwitchRole { role } => call(CallCommand::SwitchRole { role }),
            Request::OpenMicrophone {} => call(CallCommand::OpenMicrophone),
            Request::CloseMicrophone {} => call(CallCommand::CloseMicrophone),
            Request::GetMediaStats {} => call(CallCommand::GetMediaStats),
            Request::Hold { call_id } => call(CallCommand::Hold { call_id }),
            Request::Unhold { call_id } => call(CallCommand::Unhold { call_id }),
            Request::TransferCall { user_id } => call(CallCommand::TransferCall { user: user_id }),
            Request::SendDtmf { digits } => call(CallCommand::SendDtmf {
                digits: Digit::parse_all(&digits)?,
            }),
            Request::SetAutoAnswer { enable, delay_ms } => engine(Command::SetAutoAnswer {
                delay_ms: enable.then_some(delay_ms.unwrap_or(0)),
            }),
            Request::SetAudioProcessing(change) => engine(Command::SetAudioProcessing(change)),
            Request::SendMessage {
                user_id,
                text,
                client_msg_id,
            } => chat(ChatCommand::SendMessage {
                to: user_id,
                text,
                client_msg_id,
            }),
            Request::RecallMessage { msg_id } => chat(ChatCommand::RecallMessage { msg_id }),
            Request::MarkRead { user_id } => chat(ChatCommand::MarkRead { peer: user_id }),
            Request::Typing { user_id } => chat(ChatCommand::Typing { to: user_id }),
            Request::GetConversations {} => Ok(Action::Conversations),
            Request::GetMessages {
                user_id,
                count,
                before,
            } => Ok(Action::Messages {
                peer: user_id,
                count,
                before,
            }),
            Request::GetUsers { subscribe } => engine(Command::GetUsers { subscribe }),
            Request::GetCallHistory { count } => Ok(Action::History { count }),
            Request::GetDeviceList {} => engine(Command::GetDeviceList),
            Request::SwitchDevice {
                device_type,
                device_id,
            } => engine(Command::SwitchDevice {
                kind: device_type,
                spec: device_id.parse()?,
            }),
            Request::Wait { event, timeout_ms } => {
                if !EVENT_NAMES.contains(&event.as_str()) {
                    return Err(Error::new(
                        ErrorCode::InvalidParameters,
                        format!(
                            "wait: unknown event {event:?}; events are {}",
                            EVENT_NAMES.join(", ")
                        ),
                    ));
                }
                Ok(Action::Wait { event, timeout_ms })
            }
            Request::Quit {} => Ok(Action::Quit),
        }
    }
}

/// Parses one line; on failure, the `ERROR` event to answer with (none for
/// a blank line).
/// The longest `cmd` an `ERROR` echoes (no command's name comes close).
const MAX_ECHOED_CMD: usize = 64;

fn parse(line: &str) -> Result<Action, Option<Box<Event>>> {
    // A file of commands saved by an editor that marks UTF-8 starts with a
    // byte-order mark: not a mistake worth refusing the first command for.
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    if line.trim().is_empty() {
        return Err(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| {
        Some(Box::new(error_event(
            ErrorCode::InvalidJson,
            format!("not a JSON object: {e}"),
            None,
        )))
    })?;
    let cmd = command_name(&value).map_err(|e| Some(Box::new(Event::error(e, None))))?;
    request(&value).and_then(Request::action).map_err(|e| {
        // Echoed for a script to match, but not a megabyte of it.
        let echoed = (cmd.len() <= MAX_ECHOED_CMD).then_some(cmd.as_str());
        let mut event = Event::error(e, echoed);
        // A refused message names its id, whatever else is wrong with it.
        if let Event::Error { client_msg_id, .. } = &mut event
            && cmd == "sendMessage"
        {
            *client_msg_id = value["clientMsgID"].as_str().map(str::to_owned);
        }
        Some(Box::new(event))
    })
}

/// The `cmd` of a command object, if it names a command.
fn command_name(value: &Value) -> Result<String, Error> {
    let Some(obj) = value.as_object() else {
        return Err(Error::new(
            ErrorCode::InvalidJson,
            "a command is a JSON object",
        ));
    };
    let Some(Value::String(cmd)) = obj.get("cmd") else {
        return Err(Error::new(
            ErrorCode::InvalidJson,
            r#"a command needs a string field "cmd", e.g. {"cmd":"login","userID":"alice"}"#,
        ));
    };
    Ok(cmd.clone())
}

/// The command a JSON object holds, once its `cmd` is known to be a string.
fn request(value: &Value) -> Result<Request, Error> {
    let cmd = value["cmd"].as_str().unwrap_or_default();
    if !COMMANDS.contains(&cmd) {
        return Err(Error::new(
            ErrorCode::UnknownCommand,
            format!(
                "unknown command {}; commands are {}",
                crate::error::quoted(cmd),
                COMMANDS.join(", ")
            ),
        ));
    }
    Request::deserialize(value)
        .map_err(|e| Error::new(ErrorCode::InvalidParameters, format!("{cmd}: {e}")))
}

/// Checks a command's shape as headless mode would take it, without
/// running it. A flow checks its `send` steps with this when it loads, so
/// they cannot drift from what headless mode accepts. The error is the
/// message an `ERROR` event would carry. A value refused with a code of its
/// own (a DTMF key, a UserID to log in as, a sound device's name) passes:
/// sending it is how a flow tests that refusal.
pub fn check_command(command: &Value) -> Result<(), String> {
    let checked = command_name(command)
        .and_then(|_| request(command))
        .and_then(Request::action);
    let shape = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownCommand,
        ErrorCode::InvalidParameters,
    ];
    match checked {
        Err(e) if shape.contains(&e.code) => Err(e.message),
        _ => Ok(()),
    }
}

fn store_failed(e: rusqlite::Error, cmd: &str) -> Event {
    error_event(
        ErrorCode::LocalStoreFailed,
        format!("the local store cannot be read: {e}"),
        Some(cmd),
    )
}

fn error_event(code: ErrorCode, message: String, cmd: Option<&str>) -> Event {
    Event::error(Error::new(code, message), cmd)
}

#[derive(Serialize)]
struct Stamped<'a> {
    #[serde(flatten)]
    event: &'a Event,
    ts: u64,
}

/// One stdout line for an event.
pub fn event_line(event: &Event, ts: u64) -> String {
    let mut line = serde_json::to_string(&Stamped { event, ts }).expect("events serialize");
    line.push('\n');
    line
}

/// An event as the JSON value its stdout line holds.
fn event_value(event: &Event, ts: u64) -> Value {
    serde_json::to_value(Stamped { event, ts }).expect("events serialize")
}

/// Which events `wait` may still consume: each arrival satisfies at most
/// one `wait`, the oldest unconsumed first, so a `wait` sent after its event
/// already arrived returns at once.
#[derive(Default)]
struct Arrivals {
    seen: HashMap<&'static str, u64>,
    consumed: HashMap<&'static str, u64>,
}

impl Arrivals {
    fn record(&mut self, name: &'static str) {
        *self.seen.entry(name).or_default() += 1;
    }

    fn take(&mut self, name: &str) -> bool {
        let Some((&key, &seen)) = self.seen.get_key_value(name) else {
            return false;
        };
        let consumed = self.consumed.entry(key).or_default();
        if *consumed < seen {
            *consumed += 1;
            true
        } else {
            false
        }
    }
}

/// Every event written out, counted, so that a `wait` for one already
/// written ends at once: the engine's, and the answers of the local store
/// (`MESSAGES`, `CONVERSATIONS`, `CALL_HISTORY`) and of bad lines too.
struct Counted<O> {
    out: O,
    arrivals: Arrivals,
}

impl<O: EventOut> Counted<O> {
    async fn event(&mut self, event: &Event) -> std::io::Result<()> {
        self.arrivals.record(event.name());
        self.out.event(event).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().await
    }
}

struct PendingWait {
    event: String,
    timeout_ms: u64,
    deadline: tokio::time::Instant,
}

/// Runs headless mode on stdin and stdout until `quit`, the end of stdin,
/// or a signal to stop.
pub async fn run(options: HeadlessOptions) -> std::io::Result<()> {
    let mut signals = Signals::new()?;
    serve(
        options,
        stdin_lines(),
        Lines(tokio::io::stdout()),
        Box::pin(async move {
            signals.recv().await;
        }),
    )
    .await
}

/// Where headless mode's events go: stdout as JSON lines, or a device of
/// `termphone load` straight to the flow that checks them.
pub trait EventOut {
    fn event(&mut self, event: &Event) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Finishes what a write cut short left (at exit).
    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Each event a JSON line, written out at once.
pub struct Lines<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> EventOut for Lines<W> {
    async fn event(&mut self, event: &Event) -> std::io::Result<()> {
        self.0
            .write_all(event_line(event, unix_millis()).as_bytes())
            .await?;
        self.0.flush().await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().await
    }
}

/// Each event the JSON value its line would read back as, with when it
/// was sent: a flow checks values, and a load process's thousands of
/// devices need no text, pipe and reader each in between.
impl EventOut for queue::Sender<(Value, std::time::Instant)> {
    async fn event(&mut self, event: &Event) -> std::io::Result<()> {
        let value = event_value(event, unix_millis());
        (self.send((value, std::time::Instant::now())))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "flow ended"))
    }
}

/// Headless mode on any lines in and any events out, until `quit`, the
/// end of the lines, or `stop`: a process's stdin and stdout, or a device
/// of `termphone load`, many in one process.
pub async fn serve(
    options: HeadlessOptions,
    mut lines: mpsc::Receiver<Line>,
    out: impl EventOut,
    mut stop: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> std::io::Result<()> {
    let HeadlessOptions {
        settings,
        user,
        device,
        user_sig,
    } = options;
    let ClientHandle {
        commands,
        mut events,
    } = settings.connect();
    let mut device_state = DeviceState {
        settings,
        device,
        profile: None,
        status: LoginStatus::Logout,
        recorder: None,
        refused: false,
    };
    let mut out = Counted {
        out,
        arrivals: Arrivals::default(),
    };
    let mut wait: Option<PendingWait> = None;
    let mut stdin_open = true;

    match user {
        Ok(Some(user)) => {
            if let Err(event) = device_state.login(user, user_sig, &commands) {
                out.event(&event).await?;
            }
        }
        Ok(None) => {}
        Err(e) => {
            device_state.refused = true;
            out.event(&Event::error(e, Some("login"))).await?;
        }
    }

    // A `kill`, a closed terminal or Ctrl-C leaves as `quit` does: logged
    // out, so a call ends for the others at once and stays in the history.
    loop {
        let reading = wait.is_none() && stdin_open;
        let wait_deadline = wait.as_ref().map(|w| w.deadline);
        tokio::select! {
            line = lines.recv(), if reading => {
                let parsed = line.map(|line| match line {
                    Ok(text) => parse(&text),
                    Err(e) => Err(Some(Box::new(error_event(
                        ErrorCode::InvalidJson,
                        format!(
                            "not UTF-8 text ({e}): a command is a JSON object on a line \
                             of UTF-8; this line was skipped"
                        ),
                        None,
                    )))),
                });
                match parsed {
                    None => stdin_open = false,
                    Some(Err(None)) => {}
                    Some(Err(Some(event))) => {
                        device_state.refused |= matches!(&*event, Event::Error { cmd: Some(cmd), .. } if cmd == "login");
                        out.event(&event).await?;
                    }
                    Some(Ok(Action::Quit)) => break,
                    Some(Ok(Action::Login { user, user_sig })) => {
                        if let Err(event) = device_state.login(user, user_sig, &commands) {
                            out.event(&event).await?;
                        }
                    }
                    Some(Ok(Action::Engine(cmd))) => {
                        let _ = commands.send(cmd);
                    }
                    Some(Ok(Action::History { count })) => {
                        let event = device_state.history(count).await;
                        out.event(&event).await?;
                    }
                    Some(Ok(Action::Conversations)) => {
                        let event = device_state.conversations().await;
                        out.event(&event).await?;
                    }
                    Some(Ok(Action::Messages { peer, count, before })) => {
                        match device_state.messages(peer.clone(), count, before).await {
                            Ok(Page { ask_relay: Some(command), .. }) => {
                                let _ = commands.send(command);
                            }
                            Ok(Page { messages, ask_relay: None }) => {
                                let event = Event::Messages { user_id: peer, messages };
                                out.event(&event).await?;
                            }
                            Err(event) => out.event(&event).await?,
                        }
                    }
                    Some(Ok(Action::Wait { event, timeout_ms })) => {
                        if device_state.refused {
                            // The last login was refused, and none is
                            // under way since: nothing is on its way.
                            let event = error_event(
                                ErrorCode::WaitTimeout,
                                format!("no {event}: the login was refused (the ERROR before this), and no other is under way"),
                                Some("wait"),
                            );
                            out.event(&event).await?;
                        } else if !out.arrivals.take(&event) {
                            let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
                            wait = Some(PendingWait { event, timeout_ms, deadline });
                        }
                    }
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                if let Event::LoginStatusChanged { status, .. } = event {
                    device_state.status = status;
                }
                if let Some(failed) = device_state.keep(&event).await {
                    out.event(&failed).await?;
                }
                out.event(&event).await?;
                if wait.as_ref().is_some_and(|w| out.arrivals.take(&w.event)) {
                    wait = None;
                }
                // A refused login signs the device out: what a wait waits
                // for will not come, and saying so now beats the timeout;
                // so for a wait that comes after it.
                let refused = matches!(&event, Event::Error { cmd: Some(cmd), .. } if cmd == "login");
                device_state.refused |= refused;
                if refused && let Some(w) = wait.take() {
                    let event = error_event(
                        ErrorCode::WaitTimeout,
                        format!("no {}: the login was refused (the ERROR before this)", w.event),
                        Some("wait"),
                    );
                    out.event(&event).await?;
                }
            }
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(wait_deadline.unwrap_or_else(tokio::time::Instant::now)), if wait_deadline.is_some() => {
                let w = wait.take().expect("pending wait");
                let event = error_event(
                    ErrorCode::WaitTimeout,
                    format!("no {} within {} ms", w.event, w.timeout_ms),
                    Some("wait"),
                );
                out.event(&event).await?;
            }
        }
        if !stdin_open && wait.is_none() {
            break;
        }
    }
    // Leave cleanly: a deliberate quit logs out at once instead of leaving
    // the session to its grace period.
    let logging_out = device_state.status != LoginStatus::Logout;
    if logging_out {
        let _ = commands.send(Command::Logout);
    }
    drop(commands);
    // The connection task ends once it has carried that out; its last
    // events (the LOGOUT) still belong on stdout.
    let drain = async {
        while let Some(event) = events.recv().await {
            // The logout above was this loop's own, not the script's: a
            // login refused just before the quit has signed the device
            // out already, and that is no mistake of the script's.
            let not_logged_in = ErrorCode::NotLoggedIn.code();
            if logging_out
                && matches!(&event, Event::Error { code, cmd: Some(cmd), .. } if *code == not_logged_in && cmd == "logout")
            {
                continue;
            }
            if let Some(failed) = device_state.keep(&event).await {
                out.event(&failed).await?;
            }
            out.event(&event).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    // The connection task ends once the logout has run its course, the
    // device's messages on their way included.
    let leaving = Duration::from_millis(crate::client::engine::LOGOUT_MAX_MS + 1_000);
    let result = match tokio::time::timeout(leaving, drain).await {
        Ok(result) => result,
        Err(_) => out.flush().await,
    };
    if let Some(recorder) = &device_state.recorder {
        recorder.store().flush().await;
    }
    result
}

/// The device's identity as headless mode tracks it.
struct DeviceState {
    settings: ClientSettings,
    device: Option<DeviceId>,
    profile: Option<Profile>,
    status: LoginStatus,
    /// Keeps the logged-in profile's calls and chat.
    recorder: Option<Recorder>,
    /// The last login was refused (here, or by the relay): until another,
    /// nothing a wait could wait for is on its way.
    refused: bool,
}

impl DeviceState {
    fn login(
        &mut self,
        user: UserId,
        user_sig: Option<String>,
        commands: &queue::Sender<Command>,
    ) -> Result<(), Event> {
        // Release the previous user's profile before taking the next one.
        self.profile = None;
        self.recorder = None;
        self.refused = true;
        let login = self
            .settings
            .login(
                user,
                self.device.as_ref(),
                user_sig,
                unix_millis() / 1000,
                commands,
            )
            .map_err(|e| {
                error_event(
                    ErrorCode::LocalStoreFailed,
                    format!("cannot open this device's profile: {e}"),
                    Some("login"),
                )
            })?;
        self.recorder = Some(login.recorder);
        self.profile = login.profile;
        self.refused = false;
        Ok(())
    }

    /// Keeps what `event` says in the local store; a chat event is kept
    /// before it is said, so that a device killed (`kill -9`) right after
    /// printing it finds it in its store, and its sync position past it,
    /// when it starts again: its own messages never come back to it as new.
    /// What cannot be kept (a full disk) is said first, as an `ERROR`: the
    /// event is said all the same, and comes again at the next start.
    async fn keep(&self, event: &Event) -> Option<Event> {
        let e = self.recorder.as_ref()?.keep(event).await.err()?;
        let what = match event {
            Event::MessageReceived { msg_id, .. } | Event::MessageSent { msg_id, .. } => {
                format!("message {msg_id}")
            }
            other => other.name().to_owned(),
        };
        Some(error_event(
            ErrorCode::LocalStoreFailed,
            format!(
                "cannot keep {what} in the local store ({e}); it is said anyway, and said \
                 again (\"offline\": true) when this device next starts with room for it"
            ),
            None,
        ))
    }

    fn store(&self, cmd: &str) -> Result<&StoreHandle, Event> {
        self.recorder.as_ref().map(Recorder::store).ok_or_else(|| {
            error_event(
                ErrorCode::NotLoggedIn,
                format!("{cmd} reads the logged-in user's local store: log in first"),
                Some(cmd),
            )
        })
    }

    async fn conversations(&self) -> Event {
        let store = match self.store("getConversations") {
            Ok(s) => s,
            Err(e) => return e,
        };
        match store.conversations().await {
            Ok(conversations) => Event::Conversations { conversations },
            Err(e) => store_failed(e, "getConversations"),
        }
    }

    /// A page of a conversation, by the client's rule: from the local
    /// store when it holds the page, else the relay answers, later.
    async fn messages(
        &self,
        peer: UserId,
        count: usize,
        before: Option<u64>,
    ) -> Result<Page, Event> {
        let store = self.store("getMessages")?;
        (store.page(peer, count, before).await).map_err(|e| store_failed(e, "getMessages"))
    }

    async fn history(&self, count: usize) -> Event {
        let store = match self.store("getCallHistory") {
            Ok(s) => s,
            Err(e) => return e,
        };
        match store.recent(count).await {
            Ok(calls) => Event::CallHistory { calls },
            Err(e) => store_failed(e, "getCallHistory"),
        }
    }
}

/// A line of commands as read: its text, or why its bytes are not UTF-8
/// (answered with an `ERROR`, the session going on).
pub type Line = Result<String, std::string::FromUtf8Error>;

/// Stdin lines, read on a plain thread: a pending `wait` never blocks
/// reading, and a read still blocked at exit does not hold the process (a
/// read on tokio's blocking pool would keep the runtime from shutting down).
/// Read as bytes: one line that is not UTF-8 ended the whole session.
fn stdin_lines() -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().split(b'\n') {
                let Ok(mut bytes) = line else { break };
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                if tx.blocking_send(String::from_utf8(bytes)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the stdin thread");
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_code(line: &str) -> u32 {
        match parse(line) {
            Err(Some(e)) => match *e {
                Event::Error { code, .. } => code,
                _ => panic!("{line} gave {e:?}"),
            },
            _ => panic!("{line} parsed"),
        }
    }

    /// A load device's flow gets each event as a value: the one its stdout
    /// line would read back as, numbers, nesting and flattening alike.
    #[test]
    fn an_event_value_is_what_its_line_reads_back_as() {
        use crate::client::event::MediaStats;
        let stats = MediaStats {
            mos: 4.123456789,
            loss_percent: 0.1,
            jitter_ms: 3,
            ..MediaStats::default()
        };
        let events = [
            Event::MediaStats {
                room_id: 7,
                stats: Box::new(stats),
            },
            Event::error(
                Error::new(ErrorCode::NotLoggedIn, "log in first"),
                Some("call"),
            ),
            Event::SdkReady,
        ];
        for event in &events {
            let line: Value = serde_json::from_str(&event_line(event, 1_234)).unwrap();
            assert_eq!(event_value(event, 1_234), line);
        }
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse(r#"{"cmd":"login","userID":"alice"}"#),
            Ok(Action::Login { .. })
        ));
        assert!(matches!(parse(r#"{"cmd":"quit"}"#), Ok(Action::Quit)));
        assert!(matches!(
            parse("\u{feff}{\"cmd\":\"quit\"}"),
            Ok(Action::Quit)
        ));
        assert!(matches!(
            parse(r#"{"cmd":"wait","event":"SDK_READY","timeout_ms":5}"#),
            Ok(Action::Wait { timeout_ms: 5, .. })
        ));
    }

    /// A megabyte of unknown command comes back as its start and length,
    /// not whole, in the message and in `cmd`.
    #[test]
    fn an_unknown_command_is_quoted_not_echoed() {
        let long = "x".repeat(1 << 20);
        let line = format!(r#"{{"cmd":"{long}"}}"#);
        let Err(Some(event)) = parse(&line) else {
            panic!("parsed");
        };
        let Event::Error { message, cmd, .. } = *event else {
            panic!("{event:?}");
        };
        assert!(message.len() < 1_000, "{} bytes", message.len());
        assert!(message.contains("(1048576 bytes)"), "{message}");
        assert_eq!(cmd, None);
    }

    #[test]
    fn bad_lines_get_their_codes() {
        assert_eq!(error_code("nope"), 6002);
        assert_eq!(error_code("[]"), 6002);
        assert_eq!(error_code(r#"{"command":"login"}"#), 6002);
        assert_eq!(error_code(r#"{"cmd":"dance"}"#), 6001);
        assert_eq!(error_code(r#"{"cmd":"login"}"#), 6017);
        assert_eq!(
            error_code(r#"{"cmd":"login","userID":"alice","colour":1}"#),
            6017
        );
        assert_eq!(error_code(r#"{"cmd":"login","userID":"a b"}"#), 70400);
        assert_eq!(error_code(r#"{"cmd":"wait","event":"SDK_REDY"}"#), 6017);
        assert_eq!(error_code(r#"{"cmd":"quit","now":true}"#), 6017);
        assert_eq!(error_code(r#"{"cmd":"call","userID":"a b"}"#), 6017);
        assert_eq!(
            error_code(r#"{"cmd":"joinInGroupCall","roomID":"x"}"#),
            6017
        );
        assert_eq!(error_code(r#"{"cmd":"sendDTMF","digits":"12x"}"#), 6110);
        assert_eq!(
            error_code(r#"{"cmd":"joinInGroupCall","roomID":7,"role":"listener"}"#),
            6017
        );
        assert_eq!(error_code(r#"{"cmd":"switchRole"}"#), 6017);
        assert_eq!(error_code(r#"{"cmd":"sendDTMF","digits":""}"#), 6110);
        assert_eq!(error_code(r#"{"cmd":"sendDTMF"}"#), 6017);
        assert_eq!(error_code(r#"{"cmd":"sendDtmf","digits":"1"}"#), 6001);
    }

    /// Every refusal of a `sendMessage` carries its `clientMsgID`, one for
    /// a malformed command too: a script matches refusals by it.
    #[test]
    fn a_malformed_send_is_refused_with_its_client_msg_id() {
        for line in [
            r#"{"cmd":"sendMessage","userID":"bad user!","text":"hi","clientMsgID":"c1"}"#,
            r#"{"cmd":"sendMessage","userID":"bob","text":5,"clientMsgID":"c1"}"#,
            r#"{"cmd":"sendMessage","userID":"bob","text":"hi","clientMsgID":"c1","colour":1}"#,
        ] {
            let Err(Some(e)) = parse(line) else {
                panic!("{line} parsed")
            };
            let Event::Error {
                code,
                client_msg_id,
                ..
            } = *e
            else {
                panic!("{line} gave {e:?}")
            };
            assert_eq!(
                (code, client_msg_id.as_deref()),
                (6017, Some("c1")),
                "{line}"
            );
        }
    }

    /// The names in the first column of the table under `heading`.
    fn documented(heading: &str) -> Vec<String> {
        let doc = include_str!("../docs/headless.md");
        let table = doc.split(heading).nth(1).expect("the section is there");
        let table = table.split("\n## ").next().unwrap_or_default();
        (table.lines())
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| {
                let first = l.split(" | ").next().unwrap_or_default();
                first
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_doc_lists_every_command_and_event_once() {
        assert_eq!(documented("## Commands"), COMMANDS);
        let mut events = documented("## Events");
        events.sort();
        let mut names = EVENT_NAMES.to_vec();
        names.sort();
        assert_eq!(events, names);
    }

    /// The engine names the command an `ERROR` is about by its own variant
    /// names, which are the headless names.
    #[test]
    fn every_engine_command_is_named_as_headless_mode_names_it() {
        let bob: UserId = "bob".parse().unwrap();
        let engine = [
            Command::Logout,
            Command::GetUsers { subscribe: true },
            Command::EnableMultiDeviceAbility { enable: true },
            Command::EnableCallWaiting { enable: true },
            Command::Call(CallCommand::place(vec![bob.clone()], false, None)),
            Command::Call(CallCommand::place(vec![bob.clone()], true, None)),
            Command::Call(CallCommand::Accept {
                call_id: None,
                end_current: false,
            }),
            Command::Call(CallCommand::Reject { call_id: None }),
            Command::Call(CallCommand::Ignore { call_id: None }),
            Command::Call(CallCommand::Hangup { call_id: None }),
            Command::Call(CallCommand::InviteUser { users: Vec::new() }),
            Command::Call(CallCommand::JoinInGroupCall {
                room: 1,
                role: Role::Audience,
            }),
            Command::Call(CallCommand::SwitchRole { role: Role::Anchor }),
            Command::Call(CallCommand::OpenMicrophone),
            Command::Call(CallCommand::GetMediaStats),
            Command::Call(CallCommand::CloseMicrophone),
            Command::Call(CallCommand::Hold { call_id: None }),
            Command::Call(CallCommand::Unhold { call_id: None }),
            Command::Call(CallCommand::TransferCall { user: bob.clone() }),
            Command::Call(CallCommand::SendDtmf {
                digits: Digit::parse_all("1#").unwrap(),
            }),
            Command::SetAutoAnswer { delay_ms: Some(0) },
            Command::SetAudioProcessing(VoiceProcessingChange::default()),
            Command::Chat(ChatCommand::SendMessage {
                to: bob.clone(),
                text: "hi".into(),
                client_msg_id: None,
            }),
            Command::Chat(ChatCommand::RecallMessage { msg_id: "m".into() }),
            Command::Chat(ChatCommand::MarkRead { peer: bob.clone() }),
            Command::Chat(ChatCommand::Typing { to: bob.clone() }),
            Command::Chat(ChatCommand::GetMessages {
                peer: bob,
                before: None,
                count: 1,
            }),
            Command::GetDeviceList,
            Command::SwitchDevice {
                kind: DeviceKind::Speaker,
                spec: crate::media::spec::AudioSpec::Null,
            },
        ];
        for command in engine {
            assert!(COMMANDS.contains(&command.name()), "{}", command.name());
        }
    }

    #[test]
    fn every_command_parses_with_its_arguments() {
        let lines = [
            r#"{"cmd":"logout"}"#,
            r#"{"cmd":"enableMultiDeviceAbility","enable":true}"#,
            r#"{"cmd":"call","userID":"bob","timeout":5}"#,
            r#"{"cmd":"groupCall","userIDList":["bob","carol"]}"#,
            r#"{"cmd":"accept"}"#,
            r#"{"cmd":"accept","callId":"c2","endCurrent":true}"#,
            r#"{"cmd":"enableCallWaiting","enable":true}"#,
            r#"{"cmd":"hangup","callId":"c1"}"#,
            r#"{"cmd":"inviteUser","userIDList":["dave"]}"#,
            r#"{"cmd":"joinInGroupCall","roomID":7}"#,
            r#"{"cmd":"joinInGroupCall","roomID":7,"role":"audience"}"#,
            r#"{"cmd":"switchRole","role":"anchor"}"#,
            r#"{"cmd":"closeMicrophone"}"#,
            r#"{"cmd":"call","userID":"bob","userData":"ticket 42"}"#,
            r#"{"cmd":"groupCall","userIDList":["bob"],"userData":"x"}"#,
            r#"{"cmd":"hold"}"#,
            r#"{"cmd":"unhold","callId":"c1"}"#,
            r#"{"cmd":"transferCall","userID":"carol"}"#,
            r#"{"cmd":"sendDTMF","digits":"1234567890*#ABCD"}"#,
            r#"{"cmd":"setAutoAnswer","enable":true,"delayMs":500}"#,
            r#"{"cmd":"setAutoAnswer","enable":false}"#,
            r#"{"cmd":"setAudioProcessing","echoCancellation":false}"#,
            r#"{"cmd":"setAudioProcessing","echoCancellation":true,"noiseSuppression":false,"autoGain":true}"#,
            r#"{"cmd":"sendMessage","userID":"bob","text":"hi","clientMsgID":"m1"}"#,
            r#"{"cmd":"recallMessage","msgID":"m1"}"#,
            r#"{"cmd":"markRead","userID":"bob"}"#,
            r#"{"cmd":"getMessages","userID":"bob","before":10}"#,
            r#"{"cmd":"getUsers","subscribe":true}"#,
            r#"{"cmd":"getCallHistory"}"#,
            r#"{"cmd":"getDeviceList"}"#,
            r#"{"cmd":"switchDevice","deviceType":"speaker","deviceId":"wav:/tmp/x.wav"}"#,
        ];
        for line in lines {
            assert!(parse(line).is_ok(), "{line}");
        }
        assert!(matches!(
            parse(r#"{"cmd":"getMessages","userID":"bob"}"#),
            Ok(Action::Messages {
                count: 50,
                before: None,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"cmd":"openMicrophone"}"#),
            Ok(Action::Engine(Command::Call(CallCommand::OpenMicrophone)))
        ));
    }

    #[test]
    fn each_arrival_satisfies_one_wait() {
        let mut a = Arrivals::default();
        assert!(!a.take("SDK_READY"));
        a.record("SDK_READY");
        assert!(a.take("SDK_READY"));
        assert!(!a.take("SDK_READY"));
    }

    #[test]
    fn event_lines_carry_name_fields_and_ts() {
        let line = event_line(&Event::status(LoginStatus::Logined), 42);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "LOGIN_STATUS_CHANGED");
        assert_eq!(v["status"], "LOGINED");
        assert_eq!(v["statusCode"], 1);
        assert_eq!(v["ts"], 42);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn media_commands_are_commands() {
        assert!(MEDIA_COMMANDS.iter().all(|c| COMMANDS.contains(c)));
    }
}
