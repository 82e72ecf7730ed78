//! The live view of `termphone load` on a terminal: rates, iterations,
//! each step's latencies, the spread of all of them, the failures, and
//! what the runner itself costs. A pure view of a [`Snapshot`]; the
//! runner draws one every half second.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table};

use super::report::Stats;

/// What the dashboard shows at one moment.
pub struct Snapshot<'a> {
    pub stats: &'a Stats,
    pub elapsed: Duration,
    pub started: u64,
    pub in_flight: u64,
    /// Devices of iterations in flight.
    pub devices: u64,
    /// The runner's share of one core since the last snapshot, and its
    /// resident memory.
    pub cpu_percent: Option<f64>,
    pub rss_mib: Option<f64>,
    pub stopping: bool,
}

/// Latency buckets of the histogram, upper bounds in ms.
const BUCKETS_MS: [f64; 10] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0];

pub fn draw(frame: &mut Frame, s: &Snapshot) {
    let report = s.stats.to_json();
    // The steps come first: on a small terminal the spread gets shorter,
    // and the failures box shows only once there are failures.
    let failures = match report.failures.len().min(6) as u16 {
        0 => 0,
        n => n + 2,
    };
    // The calls' voice, once one has ended: two lines more.
    let media = report.media.as_ref().map(|m| m.lines());
    let head_rows = if media.is_some() { 7 } else { 5 };
    // What the steps' table (borders and header) leaves of the screen goes
    // to the spread, at most 5 rows under 30, 8 above; under 4 it goes.
    let height = frame.area().height;
    let left = height.saturating_sub(head_rows + failures + report.steps.len() as u16 + 3);
    let spread_rows = match left.min(if height < 30 { 5 } else { 8 }) {
        ..4 => 0,
        rows => rows,
    };
    let [head, steps, spread, failed] = Layout::vertical([
        Constraint::Length(head_rows),
        Constraint::Min(4),
        Constraint::Length(spread_rows),
        Constraint::Length(failures),
    ])
    .areas(frame.area());

    let secs = s.elapsed.as_secs_f64().max(0.001);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let red = Style::default().fg(Color::Red);
    let state = if s.stopping {
        "stopping: devices logging out"
    } else {
        "q: stop and report"
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{:.1} s", secs), bold),
            Span::raw(format!(
                "   rate {:.1}/s of {}/s   {} started   {} in flight   {} devices",
                s.started as f64 / secs,
                report.target_rate,
                s.started,
                s.in_flight,
                s.devices
            )),
        ]),
        Line::from(vec![
            Span::styled(format!("{} passed", report.passed), bold),
            Span::raw("   "),
            Span::styled(
                format!(
                    "{} failed ({:.1}%)",
                    report.failed,
                    s.stats.failed_percent()
                ),
                if report.failed > 0 {
                    red
                } else {
                    Style::default()
                },
            ),
            Span::raw(format!("   {} aborted", report.aborted)),
        ]),
        Line::from(format!(
            "runner: CPU {}, {} resident   {state}",
            s.cpu_percent
                .map_or("?".into(), |c| format!("{c:.0}% of a core")),
            s.rss_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
        )),
    ];
    if let Some([streams, figures]) = media {
        lines.push(Line::from(vec![
            Span::styled("media: ", bold),
            Span::raw(streams),
        ]));
        lines.push(Line::from(format!("       {figures}")));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" load: {} ", report.flow))),
        head,
    );

    let rows = report.steps.iter().map(|st| {
        Row::new(vec![
            st.step.to_string(),
            st.device.clone(),
            st.count.to_string(),
            format!("{:.2}", st.p50_ms),
            format!("{:.2}", st.p90_ms),
            format!("{:.2}", st.p99_ms),
            format!("{:.2}", st.max_ms),
            st.what.clone(),
        ])
    });
    let widths = [
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Min(10),
    ];
    let header = Row::new([
        "step", "device", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "what",
    ])
    .style(bold);
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" steps ")),
        steps,
    );

    let all = s.stats.all_steps();
    let mut below = 0;
    let bars: Vec<Bar> = BUCKETS_MS
        .iter()
        .map(|&ms| {
            let upto = all.count_between(0, (ms * 1000.0) as u64);
            let n = upto.saturating_sub(below);
            below = upto;
            Bar::default().value(n).label(Line::from(format!("≤{ms}")))
        })
        .collect();
    frame.render_widget(
        BarChart::default()
            .data(BarGroup::default().bars(&bars))
            .bar_width(6)
            .bar_gap(1)
            .block(Block::bordered().title(" all steps, by ms ")),
        spread,
    );

    let lines: Vec<Line> = (report.failures.iter().take(6))
        .map(|f| {
            Line::from(vec![
                Span::styled(format!("{}× ", f.count), red),
                Span::raw(format!("{}: {}", f.place(), f.reason)),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" failures by step and reason ")),
        failed,
    );
}

/// The runner's CPU time so far (user + system, from /proc) and resident
/// memory; `None` where /proc does not say.
pub fn usage() -> (Option<Duration>, Option<f64>) {
    let ticks_per_sec = 100.0;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The fields after the command name, which may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some(Duration::from_secs_f64((utime + stime) / ticks_per_sec))
        });
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| {
            let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some(pages * 4096.0 / (1024.0 * 1024.0))
        });
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{MediaFigures, Names, Outcome, StepOutcome};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// Steps 1 to `n` of `device`, each passed in 1 ms.
    fn passed_steps(n: usize, device: &str) -> Vec<StepOutcome> {
        (1..=n)
            .map(|step| StepOutcome {
                step,
                device: device.into(),
                passed: true,
                what: format!("step number {step}"),
                ms: 1,
                at_ms: 0,
                elapsed: Duration::from_millis(1),
            })
            .collect()
    }

    fn outcome(steps: Vec<StepOutcome>, media: Vec<MediaFigures>) -> Outcome {
        Outcome {
            name: "f".into(),
            file: "f.toml".into(),
            passed: steps.iter().all(|s| s.passed),
            steps,
            failure: None,
            duration: Duration::ZERO,
            timeline: None,
            media,
        }
    }

    /// One iteration started, none in flight, a second in.
    fn one_started(stats: &Stats) -> Snapshot<'_> {
        Snapshot {
            stats,
            elapsed: Duration::from_secs(1),
            started: 1,
            in_flight: 0,
            devices: 0,
            cpu_percent: None,
            rss_mib: None,
            stopping: false,
        }
    }

    /// The dashboard as a `width` x `height` terminal shows it.
    fn screen(snapshot: &Snapshot, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, snapshot)).unwrap();
        (terminal.backend().buffer().content.chunks(width as usize))
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect()
    }

    /// An 80x24 terminal still shows every step of a ten-step flow.
    #[test]
    fn a_small_terminal_keeps_every_step_in_view() {
        let mut stats = Stats::new("ten steps", 10.0);
        let outcome = outcome(passed_steps(10, "bob"), Vec::new());
        stats.add(0, &outcome, &Names::default());
        let screen = screen(&one_started(&stats), 80, 24);
        assert!(screen.contains("step number 10"), "{screen}");
        assert!(screen.contains("q: stop and report"), "{screen}");
    }

    /// Once calls with voice have ended, how they sounded is on screen, at
    /// 80 columns, and every step still is.
    #[test]
    fn calls_with_voice_show_how_they_sounded() {
        let mut stats = Stats::new("two way audio", 5.0);
        let heard = |mos, first| MediaFigures {
            mos,
            loss_percent: 0.0,
            time_to_first_audio_ms: first,
        };
        let media = vec![heard(4.28, Some(60)), heard(1.0, None)];
        stats.add(
            0,
            &outcome(passed_steps(10, "alice"), media),
            &Names::default(),
        );
        let screen = screen(&one_started(&stats), 80, 24);
        for expected in [
            "media: 2 streams (1 silent): MOS p50 1.00, min 1.00",
            "loss p50 0.0%, p99 0.0%, max 0.0%; first audio p50 60 ms, p99 60 ms",
            "step number 10",
            "all steps, by ms",
        ] {
            assert!(screen.contains(expected), "{expected:?} missing:\n{screen}");
        }
    }

    #[test]
    fn the_dashboard_shows_rates_steps_and_failures() {
        let mut stats = Stats::new("every device rings", 20.0);
        for n in 0..20u64 {
            let failed = n == 7;
            let step = StepOutcome {
                step: 1,
                device: "bob".into(),
                passed: !failed,
                what: match failed {
                    true => "expected ON_CALL_BEGIN within 5000 ms; arrived: nothing".into(),
                    false => "got ON_CALL_BEGIN".into(),
                },
                ms: n,
                at_ms: 0,
                elapsed: Duration::from_millis(n + 1),
            };
            stats.add(n, &outcome(vec![step], Vec::new()), &Names::default());
        }
        let snapshot = Snapshot {
            started: 22,
            in_flight: 2,
            devices: 6,
            cpu_percent: Some(41.0),
            rss_mib: Some(37.0),
            ..one_started(&stats)
        };
        let screen = screen(&snapshot, 100, 30);
        for expected in [
            "rate 22.0/s of 20/s",
            "2 in flight",
            "6 devices",
            "19 passed",
            "1 failed (5.0%)",
            "runner: CPU 41% of a core, 37 MiB resident   q: stop and report",
            "got ON_CALL_BEGIN",
            "1× step 1 [bob]: expected ON_CALL_BEGIN within 5000 ms",
        ] {
            assert!(screen.contains(expected), "{expected:?} missing:\n{screen}");
        }
    }
}
