//! The DTMF keypad (SPEC 8.2 in the TUI): a popup over a connected call
//! laid out like a phone's, with the keys dialed since it opened. Each
//! key sends its digit at once (`sendDTMF`); the footer gives the keys, as
//! everywhere, from the keymap.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

/// The keys in a phone's rows, with the letters' column at the right.
const ROWS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Width of the popup: four keys and their spacing.
const WIDTH: u16 = 23;

/// Draws the keypad in the top right of `area` (over the call pane's
/// side, so the call's meters stay in view), with the last key pressed
/// lit and the keys dialed so far.
pub fn draw(frame: &mut Frame, area: Rect, dialed: Option<&str>) {
    let Some(dialed) = dialed else {
        return;
    };
    let last = dialed.chars().last();
    let mut lines: Vec<Line> = ROWS
        .iter()
        .map(|row| {
            let keys: Vec<Span> = row
                .iter()
                .flat_map(|&k| {
                    let key = format!(" {k} ");
                    let key = if Some(k) == last {
                        key.black().on_green().bold()
                    } else {
                        key.reversed()
                    };
                    [key, Span::raw("  ")]
                })
                .collect();
            Line::from(keys)
        })
        .collect();
    // The keys are ASCII: the latest that fit, by bytes.
    let room = usize::from(WIDTH - 3);
    let shown = &dialed[dialed.len().saturating_sub(room)..];
    lines.push(Line::from(format!(" {shown}").bold()));
    let height = lines.len() as u16 + 2;
    let popup = Rect {
        x: area.right().saturating_sub(WIDTH + 1).max(area.x),
        y: area.y + 1,
        width: WIDTH.min(area.width),
        height: height.min(area.height.saturating_sub(1)),
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .border_style(Style::default().fg(Color::Cyan))
                .title(" Keypad ".cyan().bold()),
        ),
        popup,
    );
}
