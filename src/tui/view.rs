//! Drawing: a pure function of the model and the time. Layers, bottom up:
//! the panes, the incoming-call pane, the help popup or an event's detail
//! (`overlays`).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui_textarea::WrapMode;

use crate::client::event::{CallRole, LinkState, LoginStatus};
use crate::client::records::CallOutcome;
use crate::media::quality::Quality;
use crate::protocol::CancelReason;
use crate::tui::conversation;
use crate::tui::keymap::Action;
use crate::tui::layout::{MIN_HEIGHT, MIN_WIDTH, centered, elapsed};
use crate::tui::state::{Model, Pane, clock_secs, names};
use crate::tui::{devices, keypad, overlays, text};

/// The most rows a draft takes before it scrolls.
const DRAFT_ROWS: usize = 5;
/// The most rows problems and notices take above the footer: enough for
/// a sound card's error whole at 60 columns.
const MESSAGE_ROWS: usize = 6;

/// What the model pages and scrolls by, as drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drawn {
    /// The conversation's message area (columns, rows).
    pub viewport: (u16, u16),
    /// The open overlay's rows: (shown at once, in all); none open: (0, 0).
    pub overlay: (u16, u16),
}

pub fn draw(frame: &mut Frame, model: &Model, now: u64) -> Drawn {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        overlays::too_small(frame, area, model);
        return Drawn {
            viewport: model.viewport,
            overlay: model.overlay_rows,
        };
    }
    let messages = message_lines(model, now, area.width);
    let message_rows = messages.len().max(1) as u16;
    let [status, body, message_row, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(message_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    let left_width = (body.width / 3).clamp(22, 36);
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_width), Constraint::Min(20)]).areas(body);
    let [contacts, history] =
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(left);
    // Two lines of call, a meter for this device and one per participant,
    // the keys heard, and the call held aside.
    let call_rows = model.call.as_ref().map_or(0, |c| {
        let meters = if c.began_at.is_some() {
            1 + c.participants.len()
        } else {
            0
        };
        let keys = usize::from(!c.keys_heard.is_empty());
        let held = usize::from(model.held_call.is_some());
        4 + (meters + keys + held) as u16
    });
    // The conversation keeps its borders, its status line, a row of
    // messages and, while one is written, the editor's two rows (or the
    // whole welcome); the event log gives way first (at 60x16 in a call
    // the editor was squeezed out, and the demo's welcome cut).
    let conversation_rows = match &model.conversation {
        _ if writing(model) => 6,
        // A welcome (the demo's) is read whole before any conversation.
        None if !model.banner.is_empty() => model.banner.len() as u16 + 2,
        _ => 4,
    };
    let spare = right.height.saturating_sub(call_rows + conversation_rows);
    let log_rows = match (right.height / 4).clamp(4, 12).min(spare) {
        rows if rows < 3 => 0,
        rows => rows,
    };
    let [call, conversation, log] = Layout::vertical([
        Constraint::Length(call_rows),
        Constraint::Min(4),
        Constraint::Length(log_rows),
    ])
    .areas(right);

    frame.render_widget(status_line(model, status.width), status);
    draw_contacts(frame, model, contacts);
    draw_history(frame, model, history);
    if model.call.is_some() {
        frame.render_widget(call_panel(model, now), call);
    }
    let viewport = draw_conversation(frame, model, now, conversation);
    draw_event_log(frame, model, log);
    frame.render_widget(Paragraph::new(messages), message_row);
    frame.render_widget(footer_line(model, footer.width), footer);
    keypad::draw(frame, right, model.keypad.as_deref());
    if !model.incoming.is_empty() {
        draw_incoming(frame, model, now);
    }
    let mut overlay = (0, 0);
    if model.help {
        overlay = overlays::help(frame, model);
    }
    if let Some(line) = &model.detail {
        overlay = overlays::detail(frame, model, line);
    }
    devices::draw(frame, model.picker.as_ref(), model.devices.as_ref());
    Drawn { viewport, overlay }
}

/// Whether the open conversation's editor shows: open, or holding a draft.
fn writing(model: &Model) -> bool {
    model.conversation.as_ref().is_some_and(|c| {
        model.composing || (model.drafts.get(&c.peer)).is_some_and(|d| !d.is_empty())
    })
}

/// The standing problem (red) and the passing notice, each whole: they
/// wrap over up to [`MESSAGE_ROWS`] rows of `width` columns instead of
/// taking the footer's key hints.
fn message_lines(model: &Model, now: u64, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width).saturating_sub(2);
    let mut lines = Vec::new();
    if let Some(alert) = &model.alert {
        let mut alert = text::clean(alert, false).into_owned();
        let login = model.hints().into_iter().find(|(_, a)| *a == Action::Login);
        if let Some((key, _)) = login.filter(|_| model.signed_out.is_some()) {
            alert.push_str(&format!(" Press {key} to log in again."));
        }
        let rows = text::wrap(&alert, width).into_iter();
        lines.extend(rows.map(|row| Line::from(format!(" {row}").red().bold())));
    }
    if let Some(notice) = model.notice_now(now) {
        let rows = text::wrap(notice, width).into_iter();
        lines.extend(rows.map(|row| Line::from(format!(" {row} ").black().on_yellow())));
    }
    lines.truncate(MESSAGE_ROWS);
    lines
}

fn pane_block(title: String, model: &Model, pane: Pane) -> Block<'static> {
    let focused = model.focus == pane && model.incoming.is_empty() && !model.help;
    let style = if focused {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::bordered().border_style(style).title(Span::styled(
        title,
        if focused {
            style.bold()
        } else {
            Style::default()
        },
    ))
}

fn status_line(model: &Model, width: u16) -> Paragraph<'_> {
    let (status, color) = match model.status {
        LoginStatus::Logined => ("LOGINED", Color::Green),
        LoginStatus::Logining => ("LOGINING", Color::Yellow),
        LoginStatus::Logout => ("LOGOUT", Color::Red),
    };
    let link = match (model.signed_out, model.link) {
        (Some(why), _) => Span::raw(why).red().bold(),
        (None, Some(LinkState::Connected)) => Span::raw("connected").green(),
        (None, Some(LinkState::Reconnecting)) => {
            Span::raw("relay unreachable, reconnecting…").yellow()
        }
        (None, Some(LinkState::Disconnected)) => Span::raw("disconnected").red(),
        (None, None) => Span::raw("connecting…").yellow(),
    };
    // Most important first: a narrow terminal cuts the end of the line.
    let mut spans = vec![
        " termphone ".bold().reversed(),
        format!(" {}@{} ({})  ", model.me, model.device, model.platform).into(),
        Span::styled(
            status,
            Style::default().fg(color).add_modifier(Modifier::BOLD),
        ),
        "  ".into(),
        link,
    ];
    // The switches that change how calls are taken, while they are on.
    if let Some(delay) = model.auto_answer {
        let after = if delay == 0 {
            String::new()
        } else {
            format!(" {:.1}s", delay as f64 / 1000.0)
        };
        spans.push(format!("  auto-answer{after}").cyan());
    }
    if model.call_waiting {
        spans.push("  call waiting".cyan());
    }
    // The relay's address whole or not at all (a cut port is a wrong one),
    // without its scheme when space is short.
    let used: usize = spans.iter().map(Span::width).sum();
    let host = model.relay_url.trim_start_matches("ws://");
    if let Some(address) = [model.relay_url.as_str(), host]
        .into_iter()
        .find(|a| used + 2 + a.chars().count() <= usize::from(width))
    {
        spans.push(format!("  {address}").dark_gray());
    }
    Paragraph::new(Line::from(spans))
}

fn draw_contacts(frame: &mut Frame, model: &Model, area: Rect) {
    let block = pane_block(" Contacts ".into(), model, Pane::Contacts);
    if model.contacts().next().is_none() {
        let lines = match model.link {
            Some(LinkState::Connected) => vec![
                Line::from("No one else here yet.".dark_gray()),
                Line::from(""),
                Line::from("In another terminal:".dark_gray()),
                Line::from("  termphone --user bob"),
            ],
            // Something that answers there, but not as a relay (another
            // server, or ws:// and wss:// mixed up): no relay can be
            // started there, and the alert below says what answered.
            Some(_)
                if !model
                    .alert
                    .as_deref()
                    .is_some_and(crate::tls::answered_but_not_as_a_relay) =>
            {
                vec![
                    Line::from("Cannot reach the relay".yellow()),
                    Line::from(format!("  {}", model.relay_url)),
                    Line::from("Retrying by itself.".dark_gray()),
                    Line::from(""),
                    Line::from("Start one there with".dark_gray()),
                    Line::from("  termphone relay"),
                    Line::from(match model.relay_url.strip_prefix("wss://") {
                        Some(address) => format!("  --tls --listen {address}"),
                        None => {
                            format!("  --listen {}", model.relay_url.trim_start_matches("ws://"))
                        }
                    }),
                    Line::from("or fix --relay.".dark_gray()),
                ]
            }
            Some(_) => vec![
                Line::from("Cannot reach the relay".yellow()),
                Line::from(format!("  {}", model.relay_url)),
                Line::from("Retrying by itself.".dark_gray()),
                Line::from(""),
                Line::from("Something answers there, but".dark_gray()),
                Line::from("not as a relay: see below,".dark_gray()),
                Line::from("and fix --relay.".dark_gray()),
            ],
            None => vec![Line::from(
                format!("Connecting to {}…", model.relay_url).dark_gray(),
            )],
        };
        let hint = Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block);
        frame.render_widget(hint, area);
        return;
    }
    let items: Vec<ListItem> = model
        .contacts()
        .map(|u| {
            let online = !u.devices.is_empty();
            let (dot, style) = if online {
                ("●", Style::default().fg(Color::Green))
            } else {
                ("○", Style::default().fg(Color::DarkGray))
            };
            let mut spans = vec![
                Span::styled(format!("{dot} "), style),
                Span::raw(u.user.to_string()),
            ];
            // Unread first: in a narrow pane the row's end is cut.
            if let Some(n) = model.unread.get(&u.user).filter(|n| **n > 0) {
                spans.push(format!(" ({n})").yellow().bold());
            }
            // Then what fits, each whole or not at all (a cut "in ca" or
            // "3 de" said nothing): in a call first, then the device count,
            // "3 devices", else "3 dev".
            let room = usize::from(area.width.saturating_sub(2));
            let mut used: usize = spans.iter().map(|s| text::width(&s.content)).sum();
            let mut fit = |spans: &mut Vec<Span<'static>>, choices: &[String], style: Style| {
                if let Some(text) = choices.iter().find(|t| used + text::width(t) <= room) {
                    used += text::width(text);
                    spans.push(Span::styled(text.clone(), style));
                }
            };
            if u.in_call {
                fit(&mut spans, &[" in call".into()], Style::default().magenta());
            }
            let count = match u.devices.len() {
                0 => vec![],
                1 => vec![" 1 device".into(), " 1 dev".into()],
                n => vec![format!(" {n} devices"), format!(" {n} dev")],
            };
            fit(&mut spans, &count, Style::default().dark_gray());
            ListItem::new(Line::from(spans))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(model.selected));
    // This user's other devices online, at the foot of the pane.
    let mine = (model.users.iter()).find(|u| u.user == model.me);
    let others: Vec<_> = (mine.into_iter())
        .flat_map(|u| &u.devices)
        .filter(|d| d.device != model.device)
        .collect();
    let room = usize::from(area.width).saturating_sub(4);
    let with_platforms: Vec<String> = (others.iter())
        .map(|d| format!("{} ({})", d.device, d.platform))
        .collect();
    let ids: Vec<&str> = others.iter().map(|d| d.device.as_str()).collect();
    let label = [
        format!(" also on {} ", with_platforms.join(", ")),
        format!(" also on {} ", ids.join(", ")),
        format!(" also on {} other devices ", others.len()),
    ]
    .into_iter()
    .find(|l| text::width(l) <= room);
    let block = match label {
        Some(label) if !others.is_empty() => block.title_bottom(label.dark_gray()),
        _ => block,
    };
    let list = List::new(items)
        .block(block)
        .highlight_style(Style::default().reversed());
    frame.render_stateful_widget(list, area, &mut state);
}

fn draw_history(frame: &mut Frame, model: &Model, area: Rect) {
    let block = pane_block(" Calls ".into(), model, Pane::History);
    let items: Vec<ListItem> = model
        .history
        .iter()
        .map(|r| {
            let arrow = match r.call_role {
                CallRole::Caller => "↗",
                CallRole::Called => "↙",
            };
            let detail = match (r.outcome, &r.elsewhere) {
                (CallOutcome::Answered, _) => clock_secs(r.total_time),
                // "answered on term-7b7ad8": the device is the news.
                (other, Some(by)) => {
                    let said = other.as_str().replace('_', " ");
                    match said.strip_suffix(" elsewhere") {
                        Some(done) => format!("{done} on {}", by.device),
                        None => format!("{said} ({})", by.device),
                    }
                }
                // Said of this user's own outgoing call.
                (CallOutcome::Stopped(CancelReason::CallerCanceled), None)
                    if r.call_role == CallRole::Caller =>
                {
                    "canceled".into()
                }
                (other, None) => other.as_str().replace('_', " "),
            };
            let peers = format!("{arrow} {} ", names(&r.peers));
            // What does not fit beside the names goes on a row of its own
            // (the device a call was answered on, in a narrow pane).
            let room = usize::from(area.width.saturating_sub(2));
            let item = match text::width(&peers) + text::width(&detail) > room {
                false => ListItem::new(Line::from(vec![peers.into(), detail.dark_gray()])),
                true => ListItem::new(
                    std::iter::once(Line::from(peers))
                        .chain(
                            text::wrap(&detail, room.saturating_sub(1))
                                .into_iter()
                                .map(|row| Line::from(format!(" {row}").dark_gray())),
                        )
                        .collect::<Vec<_>>(),
                ),
            };
            if r.missed { item.red() } else { item }
        })
        .collect();
    let mut state = ListState::default()
        .with_selected((model.focus == Pane::History).then_some(model.history_selected));
    let list = List::new(items)
        .block(block)
        .highlight_style(Style::default().reversed());
    frame.render_stateful_widget(list, area, &mut state);
}

fn call_panel(model: &Model, now: u64) -> Paragraph<'_> {
    let call = model.call.as_ref().expect("in a call");
    let listening = call.audience.contains(&model.me);
    let (title, color) = match call.began_at {
        Some(at) if !call.held_by.is_empty() => {
            let holders: Vec<&str> = (call.held_by.iter())
                .map(|u| if *u == model.me { "you" } else { u.as_str() })
                .collect();
            let time = clock_secs(now.saturating_sub(at) / 1000);
            (
                format!(" On hold ({}) {time} ", holders.join(", ")),
                Color::Yellow,
            )
        }
        Some(at) if listening => (
            format!(" Listening {} ", clock_secs(now.saturating_sub(at) / 1000)),
            Color::Cyan,
        ),
        Some(at) => (
            format!(" In call {} ", clock_secs(now.saturating_sub(at) / 1000)),
            Color::Green,
        ),
        None => match call.dialed_at {
            Some(at) => (
                format!(" Calling… {} ", clock_secs(now.saturating_sub(at) / 1000)),
                Color::Yellow,
            ),
            None => (" Calling… ".to_owned(), Color::Yellow),
        },
    };
    // Without the relay the call may be over already: said until the link
    // is back and the relay has told whether it is.
    let (title, color) = match model.link {
        Some(LinkState::Connected) | None => (title, color),
        Some(_) => (
            format!("{title}· reconnecting to the relay "),
            Color::Yellow,
        ),
    };
    let mut lines = Vec::new();
    let mut with = vec!["with ".dark_gray()];
    if call.participants.is_empty() && call.began_at.is_none() {
        with.push(Span::raw(names(&call.ringing)).bold());
    } else {
        with.push(Span::raw(names(&call.participants)).bold());
        if !call.ringing.is_empty() {
            with.push(format!("  ringing {}", names(&call.ringing)).dark_gray());
        }
    }
    lines.push(Line::from(with));
    let role = match call.role {
        CallRole::Caller => "you called",
        CallRole::Called => "you answered",
    };
    let mut room = Line::from(format!("room {}  {role}", call.room).dark_gray());
    if let Some(in_use) = devices::in_use(model.devices.as_ref()) {
        room.push_span(format!("  {in_use}").dark_gray());
    }
    lines.push(room);
    if call.began_at.is_some() {
        let mut me = meter_line("you", call.my_volume);
        if listening {
            me.push_span(" audience".cyan());
        } else if call.muted {
            me.push_span(" muted".red().bold());
        }
        if model.card_mic && model.voice.any() {
            me.push_span(" voice processing".green());
        }
        lines.push(me);
        for user in &call.participants {
            let audio = call.audio.get(user).cloned().unwrap_or_default();
            let mut line = meter_line(user.as_str(), audio.volume);
            if call.audience.contains(user) {
                line.push_span(" audience".cyan());
            }
            // No voice flows while the call is held: a grade would read
            // "down", a network fault that is not there.
            if let Some(q) = audio.quality.filter(|_| call.held_by.is_empty()) {
                let style = match q {
                    Quality::Excellent | Quality::Good => Style::default().green(),
                    Quality::Poor => Style::default().yellow(),
                    _ => Style::default().red(),
                };
                line.push_span(Span::styled(format!(" {}", q.label()), style));
            }
            if audio.muted {
                line.push_span(" muted".red());
            }
            lines.push(line);
        }
    }
    if !call.keys_heard.is_empty() {
        lines.push(Line::from(vec![
            "keys heard ".dark_gray(),
            Span::raw(call.keys_heard.clone()).bold(),
        ]));
    }
    if let Some(held) = &model.held_call {
        let since = held.began_at.map_or(0, |at| now.saturating_sub(at) / 1000);
        let swap = (model.hints().into_iter())
            .find(|(_, a)| *a == Action::Swap)
            .map_or(String::new(), |(k, _)| format!("  {k} swaps"));
        lines.push(Line::from(vec![
            "on hold ".yellow().bold(),
            Span::raw(names(&held.participants)),
            format!(" {}{swap}", clock_secs(since)).dark_gray(),
        ]));
    }
    Paragraph::new(lines).block(
        Block::bordered()
            .border_style(Style::default().fg(color))
            .title(Span::styled(title, Style::default().fg(color).bold())),
    )
}

/// `name ▮▮▮▮▯▯▯▯▯▯`: a voice level 0 to 100 in ten steps.
fn meter_line(name: &str, volume: u8) -> Line<'static> {
    let lit = usize::from(volume.min(100)).div_ceil(10);
    Line::from(vec![
        Span::raw(format!("{name:<12.12} ")),
        "▮".repeat(lit).green(),
        "▯".repeat(10 - lit).dark_gray(),
    ])
}

/// The open conversation: its rows scrolled to where the reader is, a line
/// for who is typing or what arrived below, and the draft being written.
fn draw_conversation(frame: &mut Frame, model: &Model, now: u64, area: Rect) -> (u16, u16) {
    let title = match model.open_peer() {
        Some(peer) => format!(" {peer} "),
        None => " Conversation ".into(),
    };
    let block = pane_block(title, model, Pane::Conversation);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(conversation) = &model.conversation else {
        let mut lines: Vec<Line> = (model.banner.iter())
            .map(|l| Line::from(l.clone().cyan()))
            .collect();
        if !lines.is_empty() {
            lines.push(Line::from(""));
        }
        lines.push(Line::from("Select a contact and press Enter.".dark_gray()));
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
        return (inner.width, inner.height);
    };
    let draft = model.drafts.get(&conversation.peer);
    let draft_rows = match draft {
        Some(d) if writing(model) => {
            let rows = text::wrap(&d.lines().join("\n"), usize::from(inner.width)).len();
            rows.clamp(1, DRAFT_ROWS) as u16 + 1
        }
        _ if writing(model) => 2,
        _ => 0,
    };
    // Squeezed (a small screen under a long notice), the editor keeps its
    // rows first, then the status line: text is never typed blind.
    let draft_rows = draft_rows.min(inner.height);
    let status_rows = u16::from(inner.height > draft_rows);
    let [messages, status, compose] = Layout::vertical([
        Constraint::Length(inner.height - draft_rows - status_rows),
        Constraint::Length(status_rows),
        Constraint::Length(draft_rows),
    ])
    .areas(inner);

    let width = usize::from(messages.width);
    let height = usize::from(messages.height);
    let rows =
        conversation::last_rows(conversation, &model.me, width, conversation.scroll + height);
    let end = rows.len().saturating_sub(conversation.scroll);
    let start = end.saturating_sub(height);
    let mut lines: Vec<Line> = rows[start..end].iter().map(|r| r.line.clone()).collect();
    if conversation.shown.is_empty() {
        let peer = &conversation.peer;
        lines.push(Line::from(
            format!("No messages with {peer} yet.").dark_gray(),
        ));
    }
    // The newest message sits just above the draft, as in every chat.
    let padding = height.saturating_sub(lines.len());
    lines.splice(0..0, std::iter::repeat_n(Line::from(""), padding));
    frame.render_widget(Paragraph::new(lines), messages);

    let status_line = if conversation.scroll > 0 || conversation.newer_dropped {
        let below = match conversation.new_below {
            0 => "newer messages below".to_owned(),
            1 => "1 new message below".to_owned(),
            n => format!("{n} new messages below"),
        };
        // The key that works now: while writing, End is the line's end.
        let keys = model.keymap.hints(model.context());
        let key = |action| keys.iter().find(|(_, a)| *a == action).map(|(k, _)| k);
        let back = match (key(Action::Newest), key(Action::Newer)) {
            (Some(k), _) => format!(" · {k} to return"),
            (None, Some(k)) => format!(" · {k} for newer"),
            (None, None) => String::new(),
        };
        Line::from(format!("↓ {below}{back}").black().on_cyan())
    } else if let Some(who) = model.typing_now(now) {
        Line::from(format!("{who} is typing…").dark_gray().italic())
    } else {
        Line::from("")
    };
    frame.render_widget(Paragraph::new(status_line), status);

    if draft_rows > 0 {
        let mut editor = draft.cloned().unwrap_or_default();
        let title = if model.composing {
            " write "
        } else {
            " draft "
        };
        editor.set_block(
            Block::default()
                .borders(Borders::TOP)
                .title(title.dark_gray()),
        );
        if !model.composing {
            editor.set_cursor_style(Style::default());
        }
        editor.set_wrap_mode(WrapMode::WordOrGlyph);
        frame.render_widget(&editor, compose);
    }
    (messages.width, messages.height)
}

/// The newest events that fit, ending at the selected one; with focus,
/// the selected line is highlighted (Enter shows it whole).
fn draw_event_log(frame: &mut Frame, model: &Model, area: Rect) {
    let rows = area.height.saturating_sub(2) as usize;
    let end = model.log.len().saturating_sub(model.log_scroll);
    let skip = end.saturating_sub(rows);
    let items: Vec<ListItem> = model
        .log
        .iter()
        .skip(skip)
        .take(end - skip)
        .map(|l| {
            ListItem::new(Line::from(vec![
                format!("{} ", elapsed(l.at.saturating_sub(model.started_at))).dark_gray(),
                Span::raw(text::clean(&l.text, false).into_owned()),
            ]))
        })
        .collect();
    let focused = model.focus == Pane::Log;
    let selected = (focused && !items.is_empty()).then(|| items.len() - 1);
    let mut state = ListState::default().with_selected(selected);
    // Scrolled back, newer events arrive out of sight: say so, as the
    // conversation does.
    let title = match model.log_scroll {
        0 => " Event log ".to_owned(),
        n => format!(" Event log · {n} newer below (End) "),
    };
    let list = List::new(items)
        .block(pane_block(title, model, Pane::Log))
        .highlight_style(Style::default().reversed());
    frame.render_stateful_widget(list, area, &mut state);
}

/// The keys that work now, as many as fit: moving between panes goes
/// first when space runs out, help and quit last.
fn footer_line(model: &Model, width: u16) -> Line<'static> {
    let mut hints = model.hints();
    let cost = |h: &[(crate::tui::keymap::Key, Action)]| -> usize {
        h.iter()
            .map(|(k, a)| k.to_string().chars().count() + model.hint(*a).chars().count() + 4)
            .sum()
    };
    while cost(&hints) > usize::from(width) {
        let drop = [Action::PrevPane, Action::NextPane]
            .iter()
            .find_map(|e| hints.iter().position(|(_, a)| a == e))
            .or_else(|| {
                hints
                    .iter()
                    .rposition(|(_, a)| !matches!(a, Action::Help | Action::Quit))
            });
        match drop {
            Some(i) => {
                hints.remove(i);
            }
            None => break,
        }
    }
    let spans: Vec<Span> = hints
        .into_iter()
        .flat_map(|(key, action)| {
            [
                format!(" {key} ").reversed(),
                format!(" {} ", model.hint(action)).into(),
            ]
        })
        .collect();
    Line::from(spans)
}

fn draw_incoming(frame: &mut Frame, model: &Model, now: u64) {
    let call = &model.incoming[0];
    // The border flashes while it rings.
    let color = if (now / 500).is_multiple_of(2) {
        Color::Yellow
    } else {
        Color::Magenta
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw(call.sponsor.to_string()).bold(),
            " is calling".into(),
        ]),
        Line::from(
            if let Some(current) = model.call.as_ref().filter(|_| call.waiting) {
                format!(
                    "waiting: you are in a call with {}",
                    names(&current.participants)
                )
            } else if call.group && !call.others.is_empty() {
                format!("group call, also with {}", names(&call.others))
            } else if call.group {
                "group call".into()
            } else if let Some(by) = &call.transferred_by {
                format!("audio call, transferred by {by}")
            } else {
                "audio call".into()
            },
        )
        .dark_gray(),
        Line::from(
            format!(
                "ringing for {}",
                clock_secs(now.saturating_sub(call.since) / 1000)
            )
            .dark_gray(),
        ),
    ];
    if model.incoming.len() > 1 {
        lines.push(Line::from(
            format!("and {} more ringing", model.incoming.len() - 1).dark_gray(),
        ));
    }
    lines.push(Line::from(
        model
            .hints()
            .into_iter()
            .filter(|(_, a)| *a != Action::Quit)
            .flat_map(|(k, a)| {
                [
                    format!(" {k} ").reversed(),
                    format!(" {}  ", a.hint()).into(),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    // As wide as its longest line (the keys), at least 48 columns.
    let widest = lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    let area = centered(frame.area(), widest.max(46) + 2, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .border_style(Style::default().fg(color).bold())
                .title(Span::styled(
                    " Incoming call ",
                    Style::default().fg(color).bold(),
                )),
        ),
        area,
    );
}
