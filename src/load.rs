//! `termphone load FLOW`: a call flow as a load test (docs/load.md). The
//! flow's scenario runs again and again, iterations started at a rate,
//! each with users of its own (`alice` → `PREFIXalice-17`), every device
//! of every iteration in this process over real WebSockets (the headless
//! loop, flow::Launch::InProcess), steps checked as `termphone
//! flow` checks them. Statistics go to a progress line, a JSON report and
//! a CSV trace ([`report`]).

pub mod dashboard;
pub mod media;
pub mod report;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use unicode_width::UnicodeWidthStr;

use crate::config::RelayConfig;
use crate::flow::{self, Flow, FlowError, Interrupt, Keep, Launch, Names, Outcome, Place, Tenant};
use crate::relay::{self, RelayHandle};
use crate::signals::Signals;
use crate::tls::Fingerprint;

use self::report::Stats;

/// How often the progress line (and a CSV row) comes.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// After Ctrl-C, how long iterations in flight get to log their devices out.
const WIND_DOWN: Duration = Duration::from_secs(5);
/// How often the dashboard is drawn.
const REDRAW_EVERY: Duration = Duration::from_millis(500);

/// What `termphone load` was asked for.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Iterations started per second (after the ramp).
    pub rate: f64,
    /// Seconds over which the rate climbs from 0.
    pub ramp: f64,
    pub max_concurrent: usize,
    pub iterations: Option<u64>,
    pub duration: Option<Duration>,
    pub relay: Option<String>,
    pub relay_fingerprint: Option<Fingerprint>,
    /// Who the devices log in as on an outside relay (`relay`).
    pub tenant: Tenant,
    pub prefix: String,
    pub csv: Option<PathBuf>,
    /// Draw the live dashboard (stdout is a terminal) instead of progress lines.
    pub dashboard: bool,
}

impl LoadOptions {
    /// When iteration `n` (from 0) is due, from the start: the rate climbs
    /// linearly over the ramp, then holds.
    fn due(&self, n: u64) -> Duration {
        let (n, rate, ramp) = (n as f64, self.rate, self.ramp);
        let during_ramp = rate * ramp / 2.0;
        let secs = if ramp > 0.0 && n < during_ramp {
            (2.0 * n * ramp / rate).sqrt()
        } else {
            ramp + (n - during_ramp) / rate
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// A flow `termphone load` cannot run: what is wrong and what to do.
pub fn check(flow: &Flow, prefix: &str) -> Result<(), String> {
    for device in &flow.devices {
        let longest = format!("{prefix}{}-999999", device.user);
        if let Err(e) = crate::ids::UserId::parse(&longest) {
            return Err(format!(
                "user {:?} with --prefix {prefix:?} makes names like {longest:?}: {}; \
                 shorten the prefix or the user",
                device.user, e.message
            ));
        }
    }
    if !flow.relay.media_drop_from.is_empty() {
        return Err(
            "[relay] media_drop_from names users, and every iteration has users of its own: \
             take it out for load"
                .into(),
        );
    }
    Ok(())
}

/// Runs the load; the statistics at the end (also after Ctrl-C).
pub async fn run(flow: Flow, options: LoadOptions) -> Result<Stats, FlowError> {
    let scratch = tempfile::tempdir().map_err(|e| FlowError::Relay(e.to_string()))?;
    let (url, fingerprint, relay) = match &options.relay {
        Some(url) => {
            if let Some(warning) = flow.relay.ignored_by(&flow.name, url) {
                eprintln!("termphone: {warning}");
            }
            (url.clone(), options.relay_fingerprint, None)
        }
        None => {
            let handle = start_relay(&flow, scratch.path()).await?;
            (handle.url(), handle.fingerprint(), Some(handle))
        }
    };
    let (stop_tx, stop) = watch::channel(None);
    let stats = Load {
        media: flow.uses_media(),
        flow: Arc::new(flow),
        options,
        url,
        fingerprint,
        scratch: scratch.path().to_owned(),
        stop,
    }
    .drive(stop_tx)
    .await;
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    Ok(stats)
}

/// The bundled relay, with the flow's `[relay]` settings and room for a
/// load: every device connects from this address.
async fn start_relay(flow: &Flow, dir: &Path) -> Result<RelayHandle, FlowError> {
    let mut config = RelayConfig {
        listen: "127.0.0.1:0".parse().expect("valid"),
        ..RelayConfig::default()
    };
    flow.relay.apply(&mut config);
    config.max_connections = 100_000;
    config.max_unauthenticated = 10_000;
    config.max_unauthenticated_per_address = 10_000;
    let store = relay::store::Store::open(&dir.join("relay.sqlite3"))
        .map_err(|e| FlowError::Relay(e.to_string()))?;
    relay::start(&config, store)
        .await
        .map_err(|e| FlowError::Relay(e.to_string()))
}

struct Load {
    flow: Arc<Flow>,
    /// Whether its iterations' calls carry media ([`Flow::uses_media`]).
    media: bool,
    options: LoadOptions,
    url: String,
    fingerprint: Option<Fingerprint>,
    scratch: PathBuf,
    stop: Interrupt,
}

/// One iteration's end.
struct Ended {
    n: u64,
    outcome: Outcome,
    names: Names,
}

/// The next signal asking to stop; never, where none could be listened for.
async fn asked_to_stop(signals: &mut Option<Signals>) -> &'static str {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

impl Load {
    async fn drive(self, stop_tx: watch::Sender<Option<&'static str>>) -> Stats {
        let opts = &self.options;
        let mut stats = Stats::new(&self.flow.name, opts.rate);
        let mut csv = Csv::new(opts.csv.as_deref());
        let mut screen = Screen::open(opts.dashboard);
        let slots = Arc::new(Semaphore::new(opts.max_concurrent.max(1)));
        let (ended_tx, mut ended) = mpsc::unbounded_channel::<Ended>();
        let start = Instant::now();
        let mut progress = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
        let mut redraw = tokio::time::interval(REDRAW_EVERY);
        // Ctrl-C, or a SIGTERM from a CI job's timeout: the same wind-down.
        let mut signals = Signals::new().ok();
        let (mut started, mut in_flight) = (0u64, 0u64);
        let mut wind_down: Option<Instant> = None;
        loop {
            let stopping = wind_down.is_some();
            let more = !stopping
                && opts.iterations.is_none_or(|n| started < n)
                && opts.duration.is_none_or(|d| start.elapsed() < d);
            // Starting is over: the rate is over the time it took, up to
            // when the next iteration would have been due (a stop: now).
            if !more && stats.starting.is_zero() {
                stats.starting = match stopping {
                    true => start.elapsed(),
                    false => start.elapsed().max(opts.due(started)),
                };
            }
            if !more && in_flight == 0 {
                break;
            }
            let due = start + opts.due(started);
            let mut stop = None;
            tokio::select! {
                permit = slots.clone().acquire_owned(), if more && Instant::now() >= due => {
                    let permit = permit.expect("never closed");
                    self.spawn(started, ended_tx.clone(), permit);
                    started += 1;
                    in_flight += 1;
                }
                _ = tokio::time::sleep_until(due), if more && Instant::now() < due => {}
                Some(end) = ended.recv() => {
                    in_flight -= 1;
                    if stopping && !end.outcome.passed {
                        stats.aborted += 1;
                    } else {
                        stats.add(end.n, &end.outcome, &end.names);
                    }
                }
                _ = progress.tick() => {
                    if screen.is_none() {
                        println!("{}", progress_line(&stats, start.elapsed(), started, in_flight));
                    }
                    csv.row(&stats, start.elapsed(), started, in_flight);
                }
                _ = redraw.tick(), if screen.is_some() => {
                    let devices = in_flight * self.flow.devices.len() as u64;
                    screen.draw(&stats, start.elapsed(), started, in_flight, devices, stopping);
                }
                quit = screen.quit_key(), if screen.is_some() => {
                    stop = quit.then_some("q");
                }
                by = asked_to_stop(&mut signals) => stop = Some(by),
                _ = tokio::time::sleep_until(wind_down.unwrap_or(start)), if stopping => {
                    // Past the wind-down: what is still running is given up.
                    stats.aborted += in_flight;
                    break;
                }
            }
            // Asked again while winding down: what is still running is
            // given up at once, as past the wind-down.
            if let (Some(by), true) = (stop, stopping) {
                if screen.is_none() {
                    println!("{by} again: {in_flight} iterations given up without logging out");
                }
                stats.aborted += in_flight;
                break;
            }
            if stop.is_some() {
                if screen.is_none() {
                    println!("stopping: {in_flight} iterations in flight log their devices out");
                }
                // Their steps under way end at once, audio steps too.
                let _ = stop_tx.send(stop);
                wind_down = Some(Instant::now() + WIND_DOWN);
            }
        }
        drop(screen);
        stats.duration = start.elapsed();
        csv.row(&stats, stats.duration, started, 0);
        stats
    }

    fn spawn(
        &self,
        n: u64,
        ended: mpsc::UnboundedSender<Ended>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let flow = self.flow.clone();
        let names = Names::iteration(
            flow.devices.iter().map(|d| d.user.as_str()),
            &self.options.prefix,
            n,
        );
        let (url, fingerprint) = (self.url.clone(), self.fingerprint);
        let tenant = self.options.tenant.clone();
        let (scratch, stop, media) = (self.scratch.clone(), self.stop.clone(), self.media);
        tokio::spawn(async move {
            let data = scratch.join(format!("i{n}"));
            let outcome = match std::fs::create_dir_all(&data) {
                Ok(()) => {
                    let place = Place {
                        url,
                        fingerprint,
                        data: &data,
                        launch: Launch::InProcess {
                            stop: stop.clone(),
                            media,
                        },
                        names: &names,
                        verbose: false,
                        tenant: &tenant,
                        interrupt: Some(stop),
                    };
                    flow::execute(&flow, &place, Keep::Nothing).await.0
                }
                Err(e) => Outcome::not_started(&flow, format!("scratch directory: {e}")),
            };
            // Each iteration's stores and audio taps go with it.
            let _ = std::fs::remove_dir_all(&data);
            drop(permit);
            let _ = ended.send(Ended { n, outcome, names });
        });
    }
}

/// "1 iteration", "2 iterations".
pub fn iterations(n: u64) -> String {
    match n {
        1 => "1 iteration".into(),
        n => format!("{n} iterations"),
    }
}

/// The end of a run in a few lines: totals, each step's latencies, and
/// the failures by step and reason.
pub fn summary(stats: &Stats) -> String {
    let report = stats.to_json();
    // A rate needs a few iterations to mean anything.
    let rate = match report.iterations {
        0 | 1 => String::new(),
        _ => format!(" ({:.1}/s)", report.actual_rate),
    };
    let mut out = format!(
        "{}: {} in {:.1} s{rate}: {} passed, {} failed ({:.1}%), {} aborted\n",
        report.flow,
        iterations(report.iterations),
        report.duration_secs,
        report.passed,
        report.failed,
        stats.failed_percent(),
        report.aborted
    );
    if !report.steps.is_empty() {
        out.push_str("  step  device        count    p50 ms    p90 ms    p99 ms    max ms  what\n");
    }
    for s in &report.steps {
        // Cut to the table's width, and said to be cut (the report has it
        // whole).
        let what: String = match s.what.chars().nth(WHAT_WIDTH) {
            Some(_) => s.what.chars().take(WHAT_WIDTH - 1).chain(['…']).collect(),
            None => s.what.clone(),
        };
        // Padded by the columns it takes: a Chinese name's characters take two.
        let pad = " ".repeat(DEVICE_WIDTH.saturating_sub(s.device.width()));
        let _ = writeln!(
            out,
            "  {:>4}  {}{pad} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {what}",
            s.step, s.device, s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
        );
    }
    if let Some(m) = &report.media {
        let [streams, figures] = m.lines();
        let _ = writeln!(out, "  media: {streams}; {figures}");
    }
    for f in &report.failures {
        let examples: Vec<String> = f.iterations.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "  {}× {}: {} (iterations {})",
            f.count,
            f.place(),
            f.reason,
            examples.join(", ")
        );
    }
    out
}

/// The width of a step's words in the summary's table.
const WHAT_WIDTH: usize = 60;

/// The width of the summary table's device column.
const DEVICE_WIDTH: usize = 12;

/// `  12.0 s  240 started (20.0/s)  3 in flight  237 passed  0 failed  p99 4.1 ms`
pub fn progress_line(stats: &Stats, elapsed: Duration, started: u64, in_flight: u64) -> String {
    let secs = elapsed.as_secs_f64();
    let mut line = format!(
        "{secs:>7.1} s  {started} started ({:.1}/s)  {in_flight} in flight  {} passed  {} failed",
        started as f64 / secs.max(0.001),
        stats.passed,
        stats.failed
    );
    let all = stats.all_steps();
    if !all.is_empty() {
        let _ = write!(
            line,
            "  step p99 {:.1} ms",
            all.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    line
}

/// The dashboard's terminal while it is shown; restored when dropped.
struct Screen {
    terminal: Option<ratatui::DefaultTerminal>,
    keys: Option<crossterm::event::EventStream>,
    /// CPU time and when, at the last drawing.
    last_cpu: Option<(Duration, std::time::Instant)>,
}

impl Screen {
    fn open(dashboard: bool) -> Screen {
        let terminal = dashboard.then(ratatui::init);
        Screen {
            keys: terminal
                .as_ref()
                .map(|_| crossterm::event::EventStream::new()),
            terminal,
            last_cpu: None,
        }
    }

    fn is_none(&self) -> bool {
        self.terminal.is_none()
    }

    fn is_some(&self) -> bool {
        self.terminal.is_some()
    }

    fn draw(
        &mut self,
        stats: &Stats,
        elapsed: Duration,
        started: u64,
        in_flight: u64,
        devices: u64,
        stopping: bool,
    ) {
        let (cpu, rss_mib) = dashboard::usage();
        let now = std::time::Instant::now();
        let cpu_percent = match (cpu, self.last_cpu) {
            (Some(cpu), Some((before, at))) => Some(
                100.0 * (cpu.saturating_sub(before)).as_secs_f64()
                    / now.duration_since(at).as_secs_f64().max(0.001),
            ),
            _ => None,
        };
        self.last_cpu = cpu.map(|c| (c, now));
        let snapshot = dashboard::Snapshot {
            stats,
            elapsed,
            started,
            in_flight,
            devices,
            cpu_percent,
            rss_mib,
            stopping,
        };
        if let Some(terminal) = self.terminal.as_mut() {
            let _ = terminal.draw(|frame| dashboard::draw(frame, &snapshot));
        }
    }

    /// True on `q` or Ctrl-C (the terminal is raw: Ctrl-C is a key here).
    async fn quit_key(&mut self) -> bool {
        use crossterm::event::{Event, KeyCode, KeyModifiers};
        use futures_util::StreamExt;
        let Some(keys) = self.keys.as_mut() else {
            return std::future::pending().await;
        };
        match keys.next().await {
            Some(Ok(Event::Key(key))) => {
                key.code == KeyCode::Char('q')
                    || (key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL))
            }
            Some(_) => false,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal.take().is_some() {
            ratatui::restore();
        }
    }
}

/// `--csv`: a row per progress interval, like SIPp's `-trace_stat`.
struct Csv {
    out: Option<std::io::BufWriter<std::fs::File>>,
    last: (u64, u64, u64),
}

impl Csv {
    fn new(path: Option<&Path>) -> Csv {
        use std::io::Write;
        let out = path.and_then(|p| match std::fs::File::create(p) {
            Ok(f) => Some(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("termphone: --csv {}: {e}; no trace is written", p.display());
                None
            }
        });
        let mut csv = Csv {
            out,
            last: (0, 0, 0),
        };
        if let Some(out) = csv.out.as_mut() {
            let _ = writeln!(
                out,
                "elapsedSecs,started,inFlight,passed,failed,aborted,startedInInterval,passedInInterval,failedInInterval,stepP50Ms,stepP99Ms"
            );
        }
        csv
    }

    fn row(&mut self, stats: &Stats, elapsed: Duration, started: u64, in_flight: u64) {
        use std::io::Write;
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let all = stats.all_steps();
        let q = |q: f64| match all.is_empty() {
            true => 0.0,
            false => all.value_at_quantile(q) as f64 / 1000.0,
        };
        let (s0, p0, f0) = self.last;
        let _ = writeln!(
            out,
            "{:.1},{started},{in_flight},{},{},{},{},{},{},{:.2},{:.2}",
            elapsed.as_secs_f64(),
            stats.passed,
            stats.failed,
            stats.aborted,
            started - s0,
            stats.passed - p0,
            stats.failed - f0,
            q(0.5),
            q(0.99)
        );
        let _ = out.flush();
        self.last = (started, stats.passed, stats.failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rate: f64, ramp: f64) -> LoadOptions {
        LoadOptions {
            rate,
            ramp,
            max_concurrent: 10,
            iterations: None,
            duration: None,
            relay: None,
            relay_fingerprint: None,
            tenant: Tenant::default(),
            prefix: String::new(),
            csv: None,
            dashboard: false,
        }
    }

    #[test]
    fn iterations_start_at_the_rate_after_a_linear_ramp() {
        let steady = options(20.0, 0.0);
        assert_eq!(steady.due(0), Duration::ZERO);
        assert_eq!(steady.due(20), Duration::from_secs(1));
        // Over a 10 s ramp to 20/s, 100 start during the ramp (half the
        // steady 200), the 50th at about 7.07 s, then 20 a second.
        let ramped = options(20.0, 10.0);
        assert!((ramped.due(50).as_secs_f64() - 50f64.sqrt()).abs() < 0.01);
        assert_eq!(ramped.due(100), Duration::from_secs(10));
        assert_eq!(ramped.due(120), Duration::from_secs(11));
    }

    /// A device that did not log in fails before the first step, and the
    /// summary says so, not `step 0 []`; a step's words too long for the
    /// table are cut with a mark (the report keeps them whole).
    #[test]
    fn the_summary_says_where_each_failure_was() {
        let flow = Flow::parse(
            "name = \"f\"\n\n[[device]]\nname = \"a\"\nuser = \"alice\"\n\n\
             [[step]]\ndevice = \"a\"\nsend = { cmd = \"sendMessage\", userID = \"bob\", \
             text = \"a message long enough to be cut in the summary's table\" }\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap();
        let mut stats = Stats::new("f", 10.0);
        let names = Names::iteration(["alice"], "", 0);
        let why = "device a could not log in: refused".to_owned();
        stats.add(0, &Outcome::not_started(&flow, why), &names);
        let text = summary(&stats);
        assert!(
            text.contains("  1× before the first step: device a could not log in: refused"),
            "{text}"
        );
        let mut passed = Outcome::not_started(&flow, String::new());
        passed.passed = true;
        passed.steps.push(flow::StepOutcome {
            step: 1,
            device: "a".into(),
            passed: true,
            what: "send {\"cmd\":\"sendMessage\",\"text\":\"a message long enough to be cut in the summary's table\"}".into(),
            ms: 1,
            at_ms: 1,
            elapsed: Duration::from_millis(1),
        });
        stats.add(1, &passed, &names);
        let text = summary(&stats);
        let row = text.lines().find(|l| l.contains("send {")).expect(&text);
        let what = &row[row.find("send {").expect("the step's words")..];
        assert!(what.ends_with('…'), "{row}");
        assert_eq!(what.chars().count(), WHAT_WIDTH, "{row}");

        // A device named in characters two columns wide keeps the count
        // under its heading.
        passed.steps[0].device = "发送者".into();
        let mut stats = Stats::new("f", 10.0);
        stats.add(0, &passed, &names);
        let text = summary(&stats);
        let header = text.lines().find(|l| l.contains("count")).expect(&text);
        let row = text.lines().find(|l| l.contains("发送者")).expect(&text);
        let count_ends = |line: &str, at: usize| line[..at].width();
        let in_header = count_ends(header, header.find("count").unwrap() + "count".len());
        let device = row.find("发送者").unwrap();
        let in_row = count_ends(
            row,
            device + row[device..].find(" 1 ").unwrap() + " 1".len(),
        );
        assert_eq!(in_row, in_header, "{text}");
    }
}
