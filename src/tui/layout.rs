//! Sizes and small layout helpers shared by the panes and the overlays.

use ratatui::layout::{Constraint, Flex, Layout, Rect};

/// Below this a conversation, its draft and the key hints no longer fit
/// readably beside the contacts.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// A `width` x `height` box in the middle of `area`, clipped to it.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

/// `MM:SS.mmm` since the UI started: event logs compare intervals, not dates.
pub fn elapsed(ms: u64) -> String {
    format!(
        "{:02}:{:02}.{:03}",
        ms / 60_000,
        (ms / 1000) % 60,
        ms % 1000
    )
}
