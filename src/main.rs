use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use termphone::cli::{
    AdminCmd, AdminSendArgs, Cli, Cmd, DeviceArgs, Dirs, FlowArgs, LoadArgs, RelayArgs, UsersigArgs,
};
use termphone::config::Config;
use termphone::config::DEFAULT_RELAY_ADDR;
use termphone::media::spec::AudioSpec;
use termphone::tls::{KNOWN_RELAYS, KnownRelays, Trust};
use termphone::usersig::{self, Ticket};
use termphone::{admin, demo, flow, headless, logging, relay, time, tui};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if termphone::cli::device_flags_before_subcommand(&matches) {
        return fail(&"device flags go after the subcommand, e.g. termphone headless --user alice");
    }
    let dirs = Dirs::discover();
    let config = match Config::load(cli.config.as_deref(), &dirs.config_file) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    match cli.command {
        None => run_tui(&cli.device, &config, cli.config.as_deref(), &dirs),
        Some(Cmd::Headless(args)) => run_headless(&args, &config, &dirs),
        Some(Cmd::Relay(args)) => run_relay(&args, config, &dirs),
        Some(Cmd::Usersig(args)) => print_usersig(&args, &config),
        Some(Cmd::Admin(AdminCmd::Send(args))) => admin_send(&args, &config, &dirs),
        Some(Cmd::Flow(args)) => run_flow(&args, &config),
        Some(Cmd::Load(args)) => run_load(&args, &config),
        Some(Cmd::Demo(args)) => run_demo(&config, cli.config.as_deref(), &dirs, args.tls),
        Some(Cmd::Devices) => list_devices(),
        Some(Cmd::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "termphone", &mut script);
            print_out(&script)
        }
        Some(Cmd::Man) => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                // A reader that had enough (`termphone man | head`).
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail(&format!("stdout: {e}")),
            }
        }
    }
}

fn list_devices() -> ExitCode {
    logging::to_stderr("warn");
    // Probing opens every ALSA plugin; those with nothing behind them (JACK,
    // OSS, PulseAudio when no server runs) explain why on stderr, at length.
    // The list below is the answer, so their chatter is silenced.
    let devices = match with_stderr_silenced(termphone::media::device::list) {
        Ok(devices) => devices,
        Err(e) => return fail(&e.message),
    };
    let mut rows: Vec<[String; 3]> = devices
        .iter()
        .map(|d| {
            let mut roles = Vec::new();
            for (has, default, role) in [
                (d.input, d.default_input, "input"),
                (d.output, d.default_output, "output"),
            ] {
                if has {
                    roles.push(if default {
                        format!("{role} (default)")
                    } else {
                        role.to_owned()
                    });
                }
            }
            [d.id.clone(), roles.join(", "), d.name.clone()]
        })
        .collect();
    // A PulseAudio (or PipeWire) server's own sinks and sources, by name.
    let pulse = with_stderr_silenced(|| {
        let mut lister = termphone::media::device::Lister::default();
        if lister.pollable() {
            lister.lists().ok()
        } else {
            None
        }
    });
    if let Some(lists) = &pulse {
        let ids = lists.microphones.iter().chain(&lists.speakers);
        let mut seen = std::collections::BTreeSet::new();
        for d in ids.filter(|d| d.device_id != "default") {
            if !seen.insert(d.device_id.clone()) {
                continue;
            }
            let roles: Vec<&str> = [
                (lists.has(true, &d.device_id), "input"),
                (lists.has(false, &d.device_id), "output"),
            ]
            .into_iter()
            .filter_map(|(has, role)| has.then_some(role))
            .collect();
            rows.push([d.device_id.clone(), roles.join(", "), d.label.clone()]);
        }
    }
    let width = |k: usize| rows.iter().map(|r| r[k].chars().count()).max().unwrap_or(0);
    let (id_width, use_width) = (width(0).max(6), width(1).max(3));
    let mut out = String::new();
    if !rows.is_empty() {
        out += &format!(
            "{:<id_width$}  {:<use_width$}  DESCRIPTION\n",
            "DEVICE", "USE"
        );
    }
    for [id, roles, name] in &rows {
        out += &format!("{id:<id_width$}  {roles:<use_width$}  {name}\n");
    }
    out += &format!(
        "\nhost: {}\n",
        with_stderr_silenced(termphone::media::device::host_label)
    );
    if devices.iter().all(|d| d.id == "null") && pulse.is_none() {
        out += "\nno sound card: calls carry silence unless you pick a source, e.g. \
                --audio-in tone:440, --audio-in wav:PATH or --audio-out wav:PATH\n";
    }
    print_out(out)
}

/// Runs `f` with the process's stderr pointed at /dev/null (restored after).
fn with_stderr_silenced<T>(f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::File::options().write(true).open("/dev/null") else {
        return f();
    };
    // SAFETY: dup and dup2 on descriptors this process owns; fd 2 is restored
    // from its copy before the copy is closed.
    unsafe {
        let saved = libc::dup(libc::STDERR_FILENO);
        if saved < 0 {
            return f();
        }
        libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO);
        let out = f();
        libc::dup2(saved, libc::STDERR_FILENO);
        libc::close(saved);
        out
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("termphone: {e}");
    ExitCode::from(2)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime")
}

/// The TUI draws on stdout and reads keys from the terminal: without one
/// (a script, `ssh host termphone` without `-t`, CI) it could only fail, so
/// it says so before it starts anything (a bundled relay included).
fn need_terminal(what: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    match std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        true => Ok(()),
        false => Err(format!(
            "{what} needs a terminal, and stdin or stdout is not one here; \
             from a script, use termphone headless --user NAME (docs/headless.md), \
             or ssh -t for a remote terminal"
        )),
    }
}

fn run_tui(args: &DeviceArgs, config: &Config, cli_config: Option<&Path>, dirs: &Dirs) -> ExitCode {
    // A mistake in the command line first: it is what to mend.
    let user = args.user(config);
    if let Err(e) = &user {
        return fail(&format!("--user: {}", e.message));
    }
    if let Err(e) = need_terminal("the TUI") {
        return fail(&e);
    }
    let Ok(Some(user)) = user else {
        return fail(
            &"who are you? Start with --user NAME (e.g. termphone --user alice), or set client.user in the config",
        );
    };
    let mut settings = args.settings(config, dirs, &AudioSpec::Default);
    if let Err(e) = settings.media.check() {
        return fail(&e);
    }
    if let Err(e) = pinned_only_with_tls(settings.relay_fingerprint, &settings.relay_url) {
        return fail(&e);
    }
    let (logging, keymap) = match tui_setup(config, cli_config, dirs) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    settings.multi_device |= config.tui.multi_device;
    let options = tui::TuiOptions {
        user,
        device: args.device_id(config),
        user_sig: args.usersig.clone(),
        settings,
        keymap,
        bell: config.tui.bell,
        ringtone: config.tui.ringtone,
        mouse: config.tui.mouse,
        copy: config.tui.osc52_copy,
        banner: Vec::new(),
        terminal: logging.terminal().ok(),
    };
    let ran = runtime().block_on(tui::run(options));
    ended(ran, logging)
}

/// How a TUI run ended, said on the terminal's stderr once the log file
/// has it and gives stderr back.
fn ended(ran: Result<(), impl std::fmt::Display>, logging: logging::FileLogging) -> ExitCode {
    if let Err(e) = &ran {
        tracing::error!("termphone stopped: {e}");
    }
    drop(logging);
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// A fingerprint pins a certificate, which a `ws://` relay has none of:
/// silently ignored, it would leave the user thinking the link is pinned.
fn pinned_only_with_tls(
    fingerprint: Option<termphone::tls::Fingerprint>,
    relay_url: &str,
) -> Result<(), String> {
    match (fingerprint, relay_url.strip_prefix("ws://")) {
        (Some(_), Some(address)) => Err(format!(
            "--relay-fingerprint (or client.relay_fingerprint) pins the certificate of a relay \
             with TLS, and ws://{address} has none: use wss://{address}, or leave the \
             fingerprint out"
        )),
        _ => Ok(()),
    }
}

fn run_headless(args: &DeviceArgs, config: &Config, dirs: &Dirs) -> ExitCode {
    logging::to_stderr("warn");
    // Automation opens no sound card unless asked to.
    let settings = args.settings(config, dirs, &AudioSpec::Null);
    if let Err(e) = settings.media.check() {
        return fail(&e);
    }
    if let Err(e) = pinned_only_with_tls(settings.relay_fingerprint, &settings.relay_url) {
        return fail(&e);
    }
    let options = headless::HeadlessOptions {
        user: args.user(config),
        device: args.device_id(config),
        user_sig: args.usersig.clone(),
        settings,
    };
    runtime().block_on(async {
        match headless::run(options).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("stdout: {e}")),
        }
    })
}

fn run_relay(args: &RelayArgs, mut config: Config, dirs: &Dirs) -> ExitCode {
    logging::to_stderr("info");
    if let Some(listen) = args.listen {
        config.relay.listen = listen;
    }
    config.relay.tls |= args.tls;
    config.relay.insecure_plaintext |= args.insecure_plaintext;
    if let Err(e) = config.relay.check_tls_on() {
        return fail(&e);
    }
    let impairment = &mut config.relay.impairment;
    impairment.loss_percent = args.media_loss.unwrap_or(impairment.loss_percent);
    impairment.delay_ms = args.media_delay.unwrap_or(impairment.delay_ms);
    impairment.jitter_ms = args.media_jitter.unwrap_or(impairment.jitter_ms);
    impairment.loss_burst = args.media_loss_burst.unwrap_or(impairment.loss_burst);
    impairment.bandwidth_kbps = (args.media_bandwidth_kbps).unwrap_or(impairment.bandwidth_kbps);
    impairment
        .drop_from
        .extend(args.media_drop_from.iter().cloned());
    if let Err(e) = impairment.check() {
        return fail(&e);
    }
    let db = args
        .db
        .clone()
        .or_else(|| config.relay.db.clone())
        .unwrap_or_else(|| dirs.data_dir.join("relay.sqlite3"));
    if args.print_fingerprint {
        return match relay::print_fingerprint(&config.relay, &db) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let idle = args.exit_when_idle.map(std::time::Duration::from_secs);
    match runtime().block_on(relay::run(&config.relay, &db, idle)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// What every TUI needs first: its keys, then its log file (never the
/// terminal). The keys come first because the log file takes over stderr:
/// a refused key must reach the user, not only the log.
fn tui_setup(
    config: &Config,
    cli_config: Option<&Path>,
    dirs: &Dirs,
) -> Result<(logging::FileLogging, tui::Keymap), ExitCode> {
    let keymap = tui::Keymap::with_overrides(&config.tui.keys).map_err(|e| {
        let file = cli_config.unwrap_or(&dirs.config_file);
        fail(&format!(
            "{}: [tui.keys] {e}\n(termphone did not start; fix the key in that file)",
            file.display()
        ))
    })?;
    let guard = logging::to_file(&dirs.data_dir.join("logs"))
        .map_err(|e| fail(&format!("cannot open the log directory: {e}")))?;
    Ok((guard, keymap))
}

fn run_demo(config: &Config, cli_config: Option<&Path>, dirs: &Dirs, tls: bool) -> ExitCode {
    if let Err(e) = need_terminal("the demo") {
        return fail(&e);
    }
    let (logging, keymap) = match tui_setup(config, cli_config, dirs) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let ran = runtime().block_on(demo::run(keymap, tls, logging.terminal().ok()));
    ended(ran, logging)
}

/// Exit status 0 when every flow passed, 1 when a step failed, 2 when the
/// input cannot be used (a flow that does not load, a report not written).
/// Who a flow's devices log in as: on a relay of one's own (`--relay`), the
/// config's `[client] app` and `secret`; on the bundled one, its
/// development app.
fn tenant(relay: Option<&String>, config: &Config) -> flow::Tenant {
    match relay {
        Some(_) => flow::Tenant {
            app: config.client.app,
            secret: config.client.secret.clone(),
        },
        None => flow::Tenant::default(),
    }
}

fn run_flow(args: &FlowArgs, config: &Config) -> ExitCode {
    use flow::suite;
    logging::to_stderr("warn");
    let files = match suite::files(&args.file) {
        Ok(files) => files,
        Err(e) => return fail(&e),
    };
    if files.len() > 1 && args.report.is_some() {
        return fail(
            &"--report writes one flow's timeline: give it one flow, or use --junit or --json for a directory",
        );
    }
    let outputs = [&args.report, &args.junit, &args.json];
    if let Err(e) = writable(outputs.into_iter().flatten()) {
        return fail(&e);
    }
    let mut flows = Vec::with_capacity(files.len());
    let mut unusable = false;
    for file in &files {
        match flow::Flow::load(file) {
            Ok(f) => flows.push(f),
            Err(e) => {
                eprintln!("termphone: {e}");
                unusable = true;
            }
        }
    }
    if unusable {
        return ExitCode::from(2);
    }
    if let Some(url) = &args.relay
        && let Err(e) = pinned_only_with_tls(args.relay_fingerprint, url)
    {
        return fail(&e);
    }
    let outcomes = runtime().block_on(suite::run_all(
        &flows,
        args.relay.clone(),
        args.relay_fingerprint,
        &tenant(args.relay.as_ref(), config),
        args.report.as_deref(),
    ));
    if flows.len() > 1 || args.file.is_dir() {
        print!("{}", suite::summary(&outcomes));
    }
    let reports = [
        (args.junit.as_deref(), suite::junit(&outcomes)),
        (
            args.json.as_deref(),
            format!("{:#}\n", suite::json_report(&outcomes)),
        ),
    ];
    for (path, text) in reports {
        if let Some(path) = path
            && let Err(e) = std::fs::write(path, text)
        {
            return fail(&format!("{}: {e}", path.display()));
        }
    }
    if outcomes.iter().all(|o| o.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Refuses, before a run, a file it could not write at its end: the
/// run's results would be lost. Nothing is created.
fn writable<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<(), String> {
    for path in paths {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if path.is_dir() {
            return Err(format!(
                "{}: a directory; name a file to write",
                path.display()
            ));
        }
        if !dir.is_dir() {
            return Err(format!(
                "{}: no directory {} to write it in",
                path.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

fn run_load(args: &LoadArgs, config: &Config) -> ExitCode {
    use termphone::load::{self, report};
    logging::to_stderr("error");
    let stats = if args.merge.is_empty() {
        let file = args
            .flow
            .as_deref()
            .expect("clap requires a flow without --merge");
        if args.iterations.is_none() && args.duration.is_none() {
            return fail(
                &"how long to load? give --iterations N or --duration SECS (both: whichever ends first)",
            );
        }
        if file.is_dir() {
            return fail(&format!(
                "{}: a directory; load repeats one flow: give one of its .toml files \
                 (termphone flow DIR runs each of them once)",
                file.display()
            ));
        }
        let flow = match flow::Flow::load(file) {
            Ok(flow) => flow,
            Err(e) => return fail(&e),
        };
        if let Err(e) = load::check(&flow, &args.prefix) {
            return fail(&format!("{}: {e}", file.display()));
        }
        if let Some(url) = &args.relay
            && let Err(e) = pinned_only_with_tls(args.relay_fingerprint, url)
        {
            return fail(&e);
        }
        if let Err(e) = writable([&args.report, &args.csv].into_iter().flatten()) {
            return fail(&e);
        }
        let options = load::LoadOptions {
            rate: args.rate,
            ramp: args.ramp.max(0.0),
            max_concurrent: args.max_concurrent,
            iterations: args.iterations,
            duration: args.duration.map(|s| Duration::from_secs_f64(s.max(0.0))),
            relay: args.relay.clone(),
            relay_fingerprint: args.relay_fingerprint,
            tenant: tenant(args.relay.as_ref(), config),
            prefix: args.prefix.clone(),
            csv: args.csv.clone(),
            dashboard: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        };
        println!(
            "load: {} at {}/s{}",
            flow.name,
            args.rate,
            args.iterations
                .map(|n| format!(", {}", load::iterations(n)))
                .unwrap_or_default()
        );
        match runtime().block_on(load::run(flow, options)) {
            Ok(stats) => stats,
            Err(e) => return fail(&e),
        }
    } else {
        let mut merged = report::Stats::default();
        let mut seen = std::collections::BTreeSet::new();
        for path in &args.merge {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => return fail(&format!("{}: {e}", path.display())),
            };
            if !seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())) {
                return fail(&format!(
                    "{}: named twice; merged twice, its iterations would count twice",
                    path.display()
                ));
            }
            let read = serde_json::from_str(&text)
                .map_err(|e| e.to_string())
                .and_then(report::Stats::from_json);
            let merged_in = match read {
                Ok(stats) => merged.merge(stats),
                Err(e) => return fail(&format!("{}: not a load report: {e}", path.display())),
            };
            if let Err(e) = merged_in {
                return fail(&format!("{}: {e}", path.display()));
            }
        }
        merged
    };
    print!("{}", load::summary(&stats));
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&stats.to_json()).expect("plain data") + "\n";
        if let Err(e) = std::fs::write(path, text) {
            return fail(&format!("{}: {e}", path.display()));
        }
    }
    if stats.failed_percent() > args.max_failures {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn admin_send(args: &AdminSendArgs, config: &Config, dirs: &Dirs) -> ExitCode {
    let Some(token) = args
        .token
        .as_deref()
        .or(config.relay.admin_token.as_deref())
    else {
        return fail(&"no admin token: pass --token, or set relay.admin_token in the config");
    };
    let url = args
        .relay
        .clone()
        .or_else(|| config.client.relay_url.clone())
        .unwrap_or_else(|| format!("ws://{DEFAULT_RELAY_ADDR}"));
    let app = args.app.unwrap_or(config.client.app);
    let trust = Trust::new(
        (args.relay_fingerprint).or(config.client.pin_for(args.relay.as_deref())),
        KnownRelays::in_file(dirs.data_dir.join(KNOWN_RELAYS)),
    );
    let sent = runtime().block_on(admin::send(
        &url,
        &trust,
        token,
        app,
        &args.from,
        &args.to,
        &args.text,
        args.include_sender,
    ));
    match sent {
        Ok(msg_id) => print_out(format!("{msg_id}\n")),
        Err(e) => fail(&e),
    }
}

fn print_usersig(args: &UsersigArgs, config: &Config) -> ExitCode {
    let ticket = Ticket {
        app: args.app.unwrap_or(config.client.app),
        user: args.user.clone(),
        issued_at: time::unix_millis() / 1000,
        lifetime: args.expire.unwrap_or(config.client.usersig_lifetime_secs),
    };
    let secret = args.secret.as_deref().unwrap_or(&config.client.secret);
    print_out(format!("{}\n", usersig::mint(secret, &ticket)))
}

/// Writes a command's whole output: a full disk or a closed pipe is said
/// and exits 2 (a reader that had enough, `| head`, is no failure), where
/// `println!` would panic.
fn print_out(text: impl AsRef<[u8]>) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_ref())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&format!("stdout: {e}")),
    }
}
