//! Drawing: a pure function of the model and the time.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, Paragraph};

use crate::client::event::{LinkState, LoginStatus};
use crate::tui::state::Model;

pub fn draw(frame: &mut Frame, model: &Model, now: u64) {
    let [status, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [contacts, log] =
        Layout::horizontal([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(body);

    frame.render_widget(status_line(model), status);
    if model.users.iter().any(|u| u.user != model.user.as_str()) {
        frame.render_widget(contact_list(model), contacts);
    } else {
        let hint = Paragraph::new(vec![
            Line::from("No one else here yet.".dark_gray()),
            Line::from(""),
            Line::from("In another terminal:".dark_gray()),
            Line::from("  termphone --user bob"),
        ])
        .wrap(ratatui::widgets::Wrap { trim: false })
        .block(Block::bordered().title(" Contacts "));
        frame.render_widget(hint, contacts);
    }
    frame.render_widget(event_log(model, log.height.saturating_sub(2) as usize), log);
    frame.render_widget(
        Line::from(vec![
            " q ".reversed(),
            " quit ".into(),
            format!("  up {}", clock(now.saturating_sub(model.started_at))).dark_gray(),
        ]),
        footer,
    );
}

fn status_line(model: &Model) -> Paragraph<'_> {
    let (status, color) = match model.status {
        LoginStatus::Logined => ("LOGINED", Color::Green),
        LoginStatus::Logining => ("LOGINING", Color::Yellow),
        LoginStatus::Logout => ("LOGOUT", Color::Red),
    };
    let link = match model.link {
        Some(LinkState::Connected) => Span::raw("connected").green(),
        Some(LinkState::Reconnecting) => Span::raw("reconnecting…").yellow(),
        Some(LinkState::Disconnected) => Span::raw("disconnected").red(),
        None => Span::raw("connecting…").yellow(),
    };
    // Most important first: a narrow terminal cuts the end of the line.
    let mut spans = vec![
        " termphone ".bold().reversed(),
        format!(" {}@{} ({})  ", model.user, model.device, model.platform).into(),
        Span::styled(
            status,
            Style::default().fg(color).add_modifier(Modifier::BOLD),
        ),
        "  ".into(),
        link,
    ];
    if let Some(alert) = &model.alert {
        spans.push(format!("  {alert}").red());
    }
    spans.push(format!("  {}", model.relay_url).dark_gray());
    Paragraph::new(Line::from(spans))
}

fn contact_list(model: &Model) -> List<'_> {
    let items = model
        .users
        .iter()
        .filter(|u| u.user != model.user.as_str())
        .map(|u| {
            let online = !u.devices.is_empty();
            let (dot, style) = if online {
                ("●", Style::default().fg(Color::Green))
            } else {
                ("○", Style::default().fg(Color::DarkGray))
            };
            let devices = match u.devices.len() {
                0 => "offline".to_owned(),
                1 => "1 device".to_owned(),
                n => format!("{n} devices"),
            };
            ListItem::new(Line::from(vec![
                Span::styled(format!("{dot} "), style),
                Span::raw(u.user.clone()),
                format!("  {devices}").dark_gray(),
            ]))
        });
    List::new(items).block(Block::bordered().title(" Contacts "))
}

fn event_log(model: &Model, rows: usize) -> List<'_> {
    let skip = model.log.len().saturating_sub(rows);
    let items = model.log.iter().skip(skip).map(|l| {
        ListItem::new(Line::from(vec![
            format!("{} ", clock(l.at.saturating_sub(model.started_at))).dark_gray(),
            Span::raw(l.text.clone()),
        ]))
    });
    List::new(items).block(Block::bordered().title(" Event log "))
}

/// `MM:SS.mmm` since the UI started: event logs compare intervals, not dates.
fn clock(ms: u64) -> String {
    format!(
        "{:02}:{:02}.{:03}",
        ms / 60_000,
        (ms / 1000) % 60,
        ms % 1000
    )
}
