//! `termphone headless`: one device driven by JSON lines.
//!
//! Commands arrive on stdin, one JSON object a line; events leave on stdout,
//! one JSON object a line, and nothing else is ever written there (logs go
//! to stderr). `docs/headless.md` is the reference.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::client::ClientSettings;
use crate::client::connection::{self, ClientHandle};
use crate::client::engine::{CallCommand, ChatCommand, ClientEngine, Command};
use crate::client::event::{EVENT_NAMES, Event, LoginStatus};
use crate::client::local_store::{Recorder, StoreHandle};
use crate::error::{Error, ErrorCode};
use crate::ids::{DeviceId, UserId};
use crate::profile::Profile;
use crate::time::unix_millis;

/// Every command name, in the order docs/headless.md lists them.
pub const COMMANDS: &[&str] = &[
    "login",
    "logout",
    "enableMultiDeviceAbility",
    "call",
    "groupCall",
    "accept",
    "reject",
    "ignore",
    "hangup",
    "inviteUser",
    "joinInGroupCall",
    "openMicrophone",
    "closeMicrophone",
    "sendMessage",
    "recallMessage",
    "markRead",
    "typing",
    "getConversations",
    "getMessages",
    "getUsers",
    "getCallHistory",
    "wait",
    "quit",
];

const DEFAULT_WAIT_MS: u64 = 10_000;

/// What `termphone headless` starts with.
pub struct HeadlessOptions {
    pub settings: ClientSettings,
    pub user: Option<UserId>,
    pub device: Option<DeviceId>,
    pub user_sig: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginArgs {
    #[serde(rename = "userID")]
    user_id: String,
    #[serde(rename = "userSig")]
    user_sig: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetUsersArgs {
    #[serde(default)]
    subscribe: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableArgs {
    enable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallArgs {
    #[serde(rename = "userID")]
    user_id: UserId,
    timeout: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupCallArgs {
    #[serde(rename = "userIDList")]
    user_id_list: Vec<UserId>,
    timeout: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallIdArgs {
    #[serde(rename = "callId")]
    call_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteArgs {
    #[serde(rename = "userIDList")]
    user_id_list: Vec<UserId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinArgs {
    #[serde(rename = "roomID")]
    room_id: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendArgs {
    #[serde(rename = "userID")]
    user_id: UserId,
    text: String,
    #[serde(rename = "clientMsgID")]
    client_msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MsgIdArgs {
    #[serde(rename = "msgID")]
    msg_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerArgs {
    #[serde(rename = "userID")]
    user_id: UserId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesArgs {
    #[serde(rename = "userID")]
    user_id: UserId,
    count: Option<usize>,
    /// Only messages older than this (unix ms): the next page back.
    before: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryArgs {
    count: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    event: String,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// A parsed command line.
enum Request {
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

/// Parses one line; on failure, the `ERROR` event to answer with (none for
/// a blank line).
fn parse(line: &str) -> Result<Request, Option<Box<Event>>> {
    if line.trim().is_empty() {
        return Err(None);
    }
    parse_command(line).map_err(|e| Some(Box::new(e)))
}

fn parse_command(line: &str) -> Result<Request, Event> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        error_event(
            ErrorCode::InvalidJson,
            format!("not a JSON object: {e}"),
            None,
        )
    })?;
    let Some(mut obj) = value.as_object().cloned() else {
        return Err(error_event(
            ErrorCode::InvalidJson,
            "a command is a JSON object".into(),
            None,
        ));
    };
    let Some(Value::String(cmd)) = obj.remove("cmd") else {
        return Err(error_event(
            ErrorCode::InvalidJson,
            r#"a command needs a string field "cmd", e.g. {"cmd":"login","userID":"alice"}"#.into(),
            None,
        ));
    };
    request(&cmd, Value::Object(obj)).map_err(|e| Event::error(e, Some(&cmd)))
}

/// Checks a command as headless mode would take it, without running it:
/// `args` holds its arguments (all but `cmd`). A flow checks its `send`
/// steps with this when it loads, so they cannot drift from what headless
/// mode accepts. The error is the message an `ERROR` event would carry.
pub fn check_command<'de, D>(cmd: &str, args: D) -> Result<(), String>
where
    D: Deserializer<'de, Error = serde_json::Error>,
{
    request(cmd, args).map(drop).map_err(|e| e.message)
}

fn request<'de, D>(cmd: &str, obj: D) -> Result<Request, Error>
where
    D: Deserializer<'de, Error = serde_json::Error>,
{
    fn args<'de, T: Deserialize<'de>, D: Deserializer<'de, Error = serde_json::Error>>(
        cmd: &str,
        obj: D,
    ) -> Result<T, Error> {
        T::deserialize(obj)
            .map_err(|e| Error::new(ErrorCode::InvalidParameters, format!("{cmd}: {e}")))
    }
    match cmd {
        "login" => {
            let a: LoginArgs = args(cmd, obj)?;
            let user = UserId::parse(&a.user_id)?;
            Ok(Request::Login {
                user,
                user_sig: a.user_sig,
            })
        }
        "logout" => args::<NoArgs, _>(cmd, obj).map(|_| Request::Engine(Command::Logout)),
        "enableMultiDeviceAbility" => {
            let a: EnableArgs = args(cmd, obj)?;
            Ok(Request::Engine(Command::EnableMultiDevice {
                enable: a.enable,
            }))
        }
        "call" => {
            let a: CallArgs = args(cmd, obj)?;
            Ok(call(CallCommand::Call {
                users: vec![a.user_id],
                group: false,
                timeout_secs: a.timeout,
            }))
        }
        "groupCall" => {
            let a: GroupCallArgs = args(cmd, obj)?;
            Ok(call(CallCommand::Call {
                users: a.user_id_list,
                group: true,
                timeout_secs: a.timeout,
            }))
        }
        "accept" | "reject" | "ignore" | "hangup" => {
            let CallIdArgs { call_id } = args(cmd, obj)?;
            Ok(call(match cmd {
                "accept" => CallCommand::Accept { call_id },
                "reject" => CallCommand::Reject { call_id },
                "ignore" => CallCommand::Ignore { call_id },
                _ => CallCommand::Hangup { call_id },
            }))
        }
        "inviteUser" => {
            let a: InviteArgs = args(cmd, obj)?;
            Ok(call(CallCommand::Invite {
                users: a.user_id_list,
            }))
        }
        "joinInGroupCall" => {
            let a: JoinArgs = args(cmd, obj)?;
            Ok(call(CallCommand::Join { room: a.room_id }))
        }
        "openMicrophone" | "closeMicrophone" => {
            let on = cmd == "openMicrophone";
            args::<NoArgs, _>(cmd, obj).map(|_| call(CallCommand::Microphone { on }))
        }
        "getUsers" => {
            let a: GetUsersArgs = args(cmd, obj)?;
            Ok(Request::Engine(Command::GetUsers {
                subscribe: a.subscribe,
            }))
        }
        "sendMessage" => {
            let a: SendArgs = args(cmd, obj)?;
            Ok(chat(ChatCommand::Send {
                to: a.user_id,
                text: a.text,
                client_msg_id: a.client_msg_id,
            }))
        }
        "recallMessage" => {
            let a: MsgIdArgs = args(cmd, obj)?;
            Ok(chat(ChatCommand::Recall { msg_id: a.msg_id }))
        }
        "markRead" => {
            let a: PeerArgs = args(cmd, obj)?;
            Ok(chat(ChatCommand::MarkRead { peer: a.user_id }))
        }
        "typing" => {
            let a: PeerArgs = args(cmd, obj)?;
            Ok(chat(ChatCommand::Typing { to: a.user_id }))
        }
        "getConversations" => args::<NoArgs, _>(cmd, obj).map(|_| Request::Conversations),
        "getMessages" => {
            let a: MessagesArgs = args(cmd, obj)?;
            Ok(Request::Messages {
                peer: a.user_id,
                count: a.count.unwrap_or(50),
                before: a.before,
            })
        }
        "getCallHistory" => {
            let a: HistoryArgs = args(cmd, obj)?;
            Ok(Request::History {
                count: a.count.unwrap_or(50),
            })
        }
        "wait" => {
            let a: WaitArgs = args(cmd, obj)?;
            if !EVENT_NAMES.contains(&a.event.as_str()) {
                return Err(Error::new(
                    ErrorCode::InvalidParameters,
                    format!(
                        "wait: unknown event {:?}; events are {}",
                        a.event,
                        EVENT_NAMES.join(", ")
                    ),
                ));
            }
            Ok(Request::Wait {
                event: a.event,
                timeout_ms: a.timeout_ms.unwrap_or(DEFAULT_WAIT_MS),
            })
        }
        "quit" => args::<NoArgs, _>(cmd, obj).map(|_| Request::Quit),
        other => Err(Error::new(
            ErrorCode::UnknownCommand,
            format!(
                "unknown command {other:?}; commands are {}",
                COMMANDS.join(", ")
            ),
        )),
    }
}

fn call(cmd: CallCommand) -> Request {
    Request::Engine(Command::Call(cmd))
}

fn chat(cmd: ChatCommand) -> Request {
    Request::Engine(Command::Chat(cmd))
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

struct PendingWait {
    event: String,
    timeout_ms: u64,
    deadline: tokio::time::Instant,
}

/// Runs headless mode until `quit` or the end of stdin.
pub async fn run(options: HeadlessOptions) -> std::io::Result<()> {
    let HeadlessOptions {
        settings,
        user,
        device,
        user_sig,
    } = options;
    let mut out = tokio::io::stdout();
    let ClientHandle {
        commands,
        mut events,
    } = connection::spawn(
        settings.relay_target(),
        ClientEngine::new(settings.engine_config()),
        settings.media.clone(),
    );
    let mut lines = stdin_lines();
    let mut device_state = DeviceState {
        settings,
        device,
        profile: None,
        status: LoginStatus::Logout,
        recorder: None,
    };
    let mut arrivals = Arrivals::default();
    let mut wait: Option<PendingWait> = None;
    let mut stdin_open = true;

    if let Some(user) = user
        && let Err(event) = device_state.login(user, user_sig, &commands)
    {
        write_event(&mut out, &event).await?;
    }

    // A `kill`, a closed terminal or Ctrl-C leaves as `quit` does: logged
    // out, so a call ends for the others at once and stays in the history.
    let mut stop = Signals::new()?;
    loop {
        let reading = wait.is_none() && stdin_open;
        let wait_deadline = wait.as_ref().map(|w| w.deadline);
        tokio::select! {
            line = lines.recv(), if reading => {
                match line.as_deref().map(parse) {
                    None => stdin_open = false,
                    Some(Err(None)) => {}
                    Some(Err(Some(event))) => write_event(&mut out, &event).await?,
                    Some(Ok(Request::Quit)) => break,
                    Some(Ok(Request::Login { user, user_sig })) => {
                        if let Err(event) = device_state.login(user, user_sig, &commands) {
                            write_event(&mut out, &event).await?;
                        }
                    }
                    Some(Ok(Request::Engine(cmd))) => {
                        let _ = commands.send(cmd);
                    }
                    Some(Ok(Request::History { count })) => {
                        let event = device_state.history(count).await;
                        write_event(&mut out, &event).await?;
                    }
                    Some(Ok(Request::Conversations)) => {
                        let event = device_state.conversations().await;
                        write_event(&mut out, &event).await?;
                    }
                    Some(Ok(Request::Messages { peer, count, before })) => {
                        // From the local store when it has the page; else the
                        // relay answers (with everything it keeps), later.
                        match device_state.messages(peer.clone(), count, before).await {
                            Some(event) => write_event(&mut out, &event).await?,
                            None => {
                                let history = ChatCommand::History { peer, before, count: count as u32 };
                                let _ = commands.send(Command::Chat(history));
                            }
                        }
                    }
                    Some(Ok(Request::Wait { event, timeout_ms })) => {
                        if !arrivals.take(&event) {
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
                device_state.observe(&event);
                arrivals.record(event.name());
                write_event(&mut out, &event).await?;
                if wait.as_ref().is_some_and(|w| arrivals.take(&w.event)) {
                    wait = None;
                }
            }
            _ = stop.recv() => break,
            _ = tokio::time::sleep_until(wait_deadline.unwrap_or_else(tokio::time::Instant::now)), if wait_deadline.is_some() => {
                let w = wait.take().expect("pending wait");
                let event = error_event(
                    ErrorCode::WaitTimeout,
                    format!("no {} within {} ms", w.event, w.timeout_ms),
                    Some("wait"),
                );
                write_event(&mut out, &event).await?;
            }
        }
        if !stdin_open && wait.is_none() {
            break;
        }
    }
    // Leave cleanly: a deliberate quit logs out at once instead of leaving
    // the session to its grace period.
    if device_state.status != LoginStatus::Logout {
        let _ = commands.send(Command::Logout);
    }
    drop(commands);
    // The connection task ends once it has carried that out; its last
    // events (the LOGOUT) still belong on stdout.
    let drain = async {
        while let Some(event) = events.recv().await {
            device_state.observe(&event);
            write_event(&mut out, &event).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let result = match tokio::time::timeout(Duration::from_secs(2), drain).await {
        Ok(result) => result,
        Err(_) => out.flush().await,
    };
    if let Some(recorder) = &device_state.recorder {
        recorder.store().flush().await;
    }
    result
}

/// SIGTERM, SIGHUP and SIGINT, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The device's identity as headless mode tracks it.
struct DeviceState {
    settings: ClientSettings,
    device: Option<DeviceId>,
    profile: Option<Profile>,
    status: LoginStatus,
    /// Keeps the logged-in profile's calls and chat.
    recorder: Option<Recorder>,
}

impl DeviceState {
    fn login(
        &mut self,
        user: UserId,
        user_sig: Option<String>,
        commands: &mpsc::UnboundedSender<Command>,
    ) -> Result<(), Event> {
        // Release the previous user's profile before taking the next one.
        self.profile = None;
        self.recorder = None;
        let login = self
            .settings
            .login(user, self.device.as_ref(), user_sig, unix_millis() / 1000)
            .map_err(|e| {
                error_event(
                    ErrorCode::LocalStoreFailed,
                    format!("cannot open this device's profile: {e}"),
                    Some("login"),
                )
            })?;
        self.recorder = Some(Recorder::new(login.store));
        let (command, profile) = (login.command, login.profile);
        self.profile = Some(profile);
        let _ = commands.send(command);
        Ok(())
    }

    fn observe(&mut self, event: &Event) {
        if let Some(recorder) = &mut self.recorder {
            recorder.observe(unix_millis(), event);
        }
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

    /// A page of messages from the local store; `None` when it holds fewer
    /// than asked, so the relay must be asked.
    async fn messages(&self, peer: UserId, count: usize, before: Option<u64>) -> Option<Event> {
        let store = match self.store("getMessages") {
            Ok(s) => s,
            Err(e) => return Some(e),
        };
        match store.messages(peer.to_string(), count, before).await {
            Ok(messages) if messages.len() >= count => Some(Event::Messages {
                user_id: peer.to_string(),
                messages,
            }),
            Ok(_) => None,
            Err(e) => Some(store_failed(e, "getMessages")),
        }
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

async fn write_event(out: &mut tokio::io::Stdout, event: &Event) -> std::io::Result<()> {
    out.write_all(event_line(event, unix_millis()).as_bytes())
        .await?;
    out.flush().await
}

/// Stdin lines, read on a plain thread: a pending `wait` never blocks
/// reading, and a read still blocked at exit does not hold the process (a
/// read on tokio's blocking pool would keep the runtime from shutting down).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                match line {
                    Ok(line) => {
                        if tx.blocking_send(line).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stdin is not valid UTF-8 text; stopping");
                        break;
                    }
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

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse(r#"{"cmd":"login","userID":"alice"}"#),
            Ok(Request::Login { .. })
        ));
        assert!(matches!(parse(r#"{"cmd":"quit"}"#), Ok(Request::Quit)));
        assert!(matches!(
            parse(r#"{"cmd":"wait","event":"SDK_READY","timeout_ms":5}"#),
            Ok(Request::Wait { timeout_ms: 5, .. })
        ));
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
}
