//! What is drawn over the panes: the help, one event in full, and the
//! notice that the terminal is too small for anything else.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::tui::keymap::{Action, Context};
use crate::tui::layout::{MIN_HEIGHT, MIN_WIDTH, centered, elapsed};
use crate::tui::state::{LogLine, Model, names};
use crate::tui::text;

/// The help's sections, in the order a user meets them.
const SECTIONS: [Context; 10] = [
    Context::Global,
    Context::Contacts,
    Context::Conversation,
    Context::Compose,
    Context::History,
    Context::Log,
    Context::Incoming,
    Context::Call,
    Context::Keypad,
    Context::SignedOut,
];
/// Width of the help's first column (where the keys work).
const LABEL: usize = 24;

/// A screen too small for the panes says so, instead of drawing them cut
/// (or leaving the last frame stale).
pub fn too_small(frame: &mut Frame, area: Rect, model: &Model) {
    let mut text = vec![
        Line::from(format!("terminal too small (need {MIN_WIDTH}x{MIN_HEIGHT})").bold()),
        Line::from(format!("it is {}x{}", area.width, area.height)),
    ];
    // A call that rings, or this device's call, is not to be lost for
    // want of room: who, and the keys, which work here too.
    let call = match (model.incoming.first(), &model.call) {
        (Some(ringing), _) => Some(format!("{} calls you", ringing.sponsor).yellow().bold()),
        (None, Some(call)) => {
            let with = match call.participants.is_empty() {
                true => names(&call.ringing),
                false => names(&call.participants),
            };
            let what = match call.began_at {
                Some(_) => "in a call with",
                None => "calling",
            };
            Some(format!("{what} {with}").green().bold())
        }
        (None, None) => None,
    };
    if let Some(call) = call {
        text.push(Line::from(call));
        let keys: Vec<String> = (model.hints().into_iter())
            // A non-breaking space: a key is never wrapped away from what it does.
            .map(|(key, action)| format!("{key}\u{a0}{}", model.hint(action)))
            .collect();
        text.push(Line::from(keys.join(" · ")));
    }
    let width = usize::from(area.width.max(1));
    let rows = (text.iter())
        .map(|l| l.width().div_ceil(width).max(1))
        .sum::<usize>() as u16;
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text).centered().wrap(Wrap { trim: true }),
        centered(area, area.width, rows),
    );
}

/// A popup clears the whole screen first: drawn over the panes, its border
/// would run into theirs.
fn clear_behind(frame: &mut Frame) {
    frame.render_widget(Clear, frame.area());
}

/// The editor's own keys, which are no actions of the keymap (and cannot
/// be rebound), as the README lists them.
const EDITOR_KEYS: [&str; 3] = [
    "← → Home End Ctrl-← Ctrl-→ Alt-b Alt-f move",
    "Backspace Delete Ctrl-W Ctrl-U delete",
    "↑ (empty draft) last sent",
];

/// Every key, one line per place it works: the same key (Enter) does
/// different things in different panes, and the help says where. Returns
/// its rows (shown at once, in all), as [`scrolled`] does.
pub fn help(frame: &mut Frame, model: &Model) -> (u16, u16) {
    let width = frame.area().width.saturating_sub(4).min(96);
    let room = usize::from(width.saturating_sub(2))
        .saturating_sub(LABEL)
        .max(10);
    let global = keys_of(model, Context::Global);
    let mut lines = Vec::new();
    for context in SECTIONS {
        let mut entries: Vec<String> = keys_of(model, context)
            .into_iter()
            .filter(|entry| context == Context::Global || !global.contains(entry))
            .map(|(keys, action)| format!("{} {}", keys.join(" "), action.hint()))
            .collect();
        if context == Context::Compose {
            entries.extend(EDITOR_KEYS.map(String::from));
        }
        let mut label = Some(format!("{:<LABEL$}", capitalized(context.describe())));
        let mut current = String::new();
        for entry in entries {
            if !current.is_empty() && current.chars().count() + 3 + entry.chars().count() > room {
                lines.push(help_line(label.take(), std::mem::take(&mut current)));
            }
            // An entry wider than the column (the keypad's sixteen keys on
            // a small screen) gets lines of its own.
            if entry.chars().count() > room {
                let mut pieces = text::wrap(&entry, room);
                current = pieces.pop().unwrap_or_default();
                for piece in pieces {
                    lines.push(help_line(label.take(), piece));
                }
                continue;
            }
            if !current.is_empty() {
                current.push_str(" · ");
            }
            current.push_str(&entry);
        }
        if !current.is_empty() {
            lines.push(help_line(label.take(), current));
        }
    }
    scrolled(frame, model, width, lines, "Keys")
}

/// Draws `lines` in a bordered box of `width` in the middle of the screen,
/// as tall as they need or the screen allows, scrolled down by the model's
/// `overlay_scroll`; the title says how to scroll when they do not fit.
/// Returns (rows shown at once, rows in all).
fn scrolled(
    frame: &mut Frame,
    model: &Model,
    width: u16,
    lines: Vec<Line>,
    title: &str,
) -> (u16, u16) {
    let full = frame.area();
    let all = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let height = all.saturating_add(2).min(full.height);
    let shown = height.saturating_sub(2);
    let last = all.saturating_sub(shown);
    let scroll = model.overlay_scroll.min(last);
    let title = match last {
        0 => format!(" {title} (Esc closes) "),
        _ => format!(
            " {title} {}-{} of {all} (↑↓ PgUp PgDn, Esc closes) ",
            scroll + 1,
            scroll + shown
        ),
    };
    clear_behind(frame);
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((scroll, 0))
            .block(Block::bordered().title(title)),
        centered(full, width, height),
    );
    (shown, all)
}

fn help_line(label: Option<String>, entries: String) -> Line<'static> {
    let label = label.unwrap_or_else(|| " ".repeat(LABEL));
    Line::from(vec![Span::raw(label).dark_gray(), Span::raw(entries)])
}

/// Each action of `context` with all its keys there, in table order.
fn keys_of(model: &Model, context: Context) -> Vec<(Vec<String>, Action)> {
    let mut out: Vec<(Vec<String>, Action)> = Vec::new();
    for &(c, key, action) in model.keymap.all() {
        if c != context {
            continue;
        }
        let key = key.to_string();
        match out.iter_mut().find(|(_, a)| *a == action) {
            Some((keys, _)) if !keys.contains(&key) => keys.push(key),
            Some(_) => {}
            None => out.push((vec![key], action)),
        }
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// One event of the log with every field, wrapped to the screen; returns
/// its rows, as [`scrolled`] does.
pub fn detail(frame: &mut Frame, model: &Model, line: &LogLine) -> (u16, u16) {
    let full = frame.area();
    let width = full.width.saturating_sub(4).min(100);
    let inner = usize::from(width.saturating_sub(2)).max(1);
    // Wrapped here, by display width, from text made safe to show.
    let lines: Vec<Line> = (line.full.lines())
        .flat_map(|l| text::wrap(l, inner))
        .map(Line::from)
        .collect();
    let title =
        (line.title.clone()).unwrap_or_else(|| elapsed(line.at.saturating_sub(model.started_at)));
    scrolled(frame, model, width, lines, &title)
}
