//! The open conversation: a window of its messages (never the whole
//! history, however long), how far the reader has scrolled back, what
//! arrived below since, and the rows all of it makes at a given width.
//!
//! Scrolling counts rows from the newest one, so messages loaded above (an
//! older page) leave the screen where it is, and the view and the model
//! agree on what "a page" and "the top" are because both ask [`rows`].

use ratatui::style::Stylize;
use ratatui::text::{Line, Span};

use crate::client::records::StoredMessage;
use crate::ids::UserId;
use crate::tui::text;

/// Messages read from the store at a time.
pub const PAGE: usize = 100;
/// The most messages held at once: scrolling further back drops the newest
/// ones, which come back from the store on the way down.
pub const WINDOW: usize = 500;

/// Where one of this user's messages stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Someone else's message, or one of ours read back from the store.
    Settled,
    /// Handed to the engine, not yet stored by the relay.
    Sending,
    /// Stored by the relay (`MESSAGE_SENT`).
    Sent,
    /// Refused, with why; it can be sent again under the same id.
    Failed(String),
}

/// A message as the pane shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Shown {
    pub message: StoredMessage,
    pub delivery: Delivery,
    /// The id this device sent it under, for a resend.
    pub client_msg_id: Option<String>,
}

impl Shown {
    pub fn settled(message: StoredMessage) -> Shown {
        Shown {
            message,
            delivery: Delivery::Settled,
            client_msg_id: None,
        }
    }
}

/// Whether older messages than the window's first may exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Older {
    Maybe,
    Loading,
    None,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub peer: UserId,
    /// Oldest first.
    pub shown: Vec<Shown>,
    /// Rows scrolled back from the newest.
    pub scroll: usize,
    /// Messages that arrived while scrolled back.
    pub new_below: usize,
    pub older: Older,
    /// Newer messages than the window's last were dropped to bound it.
    pub newer_dropped: bool,
    /// The first message that was unread when the conversation opened.
    pub first_unread: Option<String>,
    /// Unread messages when it opened, until the first page marks them.
    pub unread_at_open: u64,
    /// The message the cursor is on (an index into `shown`).
    pub selected: Option<usize>,
    /// The peer read what was sent up to this time (unix ms).
    pub peer_read: Option<u64>,
}

/// One row of the pane.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub line: Line<'static>,
    /// The message it belongs to (an index into `shown`).
    pub message: Option<usize>,
}

impl Conversation {
    /// Whether `shown` is one of `me`'s that the other user has read
    /// (✓✓).
    pub fn read(&self, shown: &Shown, me: &UserId) -> bool {
        mine(shown, me) && self.peer_read >= Some(shown.message.timestamp)
    }

    pub fn new(peer: UserId, unread: u64) -> Conversation {
        Conversation {
            peer,
            shown: Vec::new(),
            scroll: 0,
            new_below: 0,
            older: Older::Maybe,
            newer_dropped: false,
            first_unread: None,
            unread_at_open: unread,
            selected: None,
            peer_read: None,
        }
    }

    /// A page from the store or the relay: merged by message id (the page's
    /// copy wins, what is shown and not in it stays), oldest first. A page
    /// older than everything shown keeps the screen where it is.
    pub fn merge(&mut self, page: Vec<StoredMessage>, me: &UserId, width: usize) {
        // A page from before the window (scrolling back) pushes out the
        // newest; any other (the newest page, live ones) the oldest.
        let older = match (page.last(), self.shown.first()) {
            (Some(last), Some(first)) => last.timestamp <= first.message.timestamp,
            _ => false,
        };
        for message in page {
            match (self.shown.iter_mut()).find(|s| s.message.msg_id == message.msg_id) {
                Some(shown) => shown.message = message,
                None => self.shown.push(Shown::settled(message)),
            }
        }
        self.shown.sort_by_key(|s| s.message.timestamp);
        if self.first_unread.is_none() && self.unread_at_open > 0 {
            self.first_unread = self.find_first_unread();
            self.unread_at_open = 0;
        }
        // Rows added above the screen leave the rows below it, and so the
        // scroll, as they were.
        self.bound(me, width, older);
    }

    /// The oldest unread one of the peer's messages when it opened.
    fn find_first_unread(&self) -> Option<String> {
        let mut left = self.unread_at_open;
        let mut first = None;
        for s in self.shown.iter().rev() {
            if left == 0 {
                break;
            }
            if s.message.from == self.peer && !s.message.recalled {
                first = Some(s.message.msg_id.clone());
                left -= 1;
            }
        }
        first
    }

    /// Keeps at most [`WINDOW`] messages: past it, the newest go when the
    /// reader is reading back (they come back from the store on the way
    /// down), else the oldest (they come back on the way up).
    fn bound(&mut self, me: &UserId, width: usize, drop_newest: bool) {
        let Some(excess) = self.shown.len().checked_sub(WINDOW).filter(|&n| n > 0) else {
            return;
        };
        if drop_newest {
            let before = self.total_rows(me, width);
            self.shown.truncate(WINDOW);
            self.newer_dropped = true;
            let after = self.total_rows(me, width);
            self.scroll = self.scroll.saturating_sub(before - after);
            self.selected = self.selected.filter(|&i| i < self.shown.len());
        } else {
            self.shown.drain(..excess);
            self.older = Older::Maybe;
            self.selected = self.selected.and_then(|i| i.checked_sub(excess));
        }
    }

    /// A message that arrived live (or one of ours being sent). While the
    /// reader is scrolled back it is counted below and the screen stays.
    pub fn push(&mut self, shown: Shown, me: &UserId, width: usize) {
        if self.newer_dropped {
            self.new_below += 1;
            return;
        }
        let before = self.total_rows(me, width);
        self.shown.push(shown);
        self.shown.sort_by_key(|s| s.message.timestamp);
        if self.scroll > 0 {
            self.new_below += 1;
            self.scroll += self.total_rows(me, width) - before;
        }
        self.bound(me, width, false);
    }

    pub fn find_sent(&mut self, client_msg_id: &str) -> Option<&mut Shown> {
        (self.shown.iter_mut()).find(|s| s.client_msg_id.as_deref() == Some(client_msg_id))
    }

    pub fn oldest_timestamp(&self) -> Option<u64> {
        self.shown.first().map(|s| s.message.timestamp)
    }

    /// Scrolls back by `rows`, up to the first row. True when the top of
    /// the window is reached and older messages may exist.
    pub fn scroll_up(&mut self, rows: usize, height: usize, me: &UserId, width: usize) -> bool {
        let top = self.total_rows(me, width).saturating_sub(height);
        self.scroll = (self.scroll + rows).min(top);
        self.scroll == top && self.older == Older::Maybe
    }

    /// Scrolls forward by `rows`. True when the newest row is reached and
    /// newer messages were dropped from the window (they must be read again).
    pub fn scroll_down(&mut self, rows: usize) -> bool {
        self.scroll = self.scroll.saturating_sub(rows);
        if self.scroll == 0 {
            self.new_below = 0;
        }
        self.scroll == 0 && self.newer_dropped
    }

    /// Back to the newest message. True when it must be read again.
    pub fn scroll_to_newest(&mut self) -> bool {
        self.scroll_down(usize::MAX)
    }

    /// The newest page replaces the window (after scrolling down past
    /// dropped messages).
    pub fn reload(&mut self, page: Vec<StoredMessage>, me: &UserId, width: usize) {
        let keep: Vec<Shown> = (self.shown.iter())
            .filter(|s| s.delivery != Delivery::Settled)
            .cloned()
            .collect();
        self.shown = page.into_iter().map(Shown::settled).collect();
        self.newer_dropped = false;
        self.older = Older::Maybe;
        self.scroll = 0;
        self.new_below = 0;
        self.selected = None;
        for s in keep {
            if !(self.shown.iter()).any(|x| x.message.msg_id == s.message.msg_id) {
                self.shown.push(s);
            }
        }
        self.shown.sort_by_key(|s| s.message.timestamp);
        self.bound(me, width, false);
    }

    fn total_rows(&self, me: &UserId, width: usize) -> usize {
        rows(self, me, width).len()
    }
}

/// The rows of `conversation` at `width` columns: day separators, the
/// unread line, each message wrapped with its continuation rows indented
/// under its text, and the state of this user's own messages.
pub fn rows(conversation: &Conversation, me: &UserId, width: usize) -> Vec<Row> {
    rows_from(conversation, me, width, 0)
}

/// The last rows of `conversation`: at least `wanted` of them (or all
/// there are), without wrapping the messages above them.
pub fn last_rows(
    conversation: &Conversation,
    me: &UserId,
    width: usize,
    wanted: usize,
) -> Vec<Row> {
    let mut start = conversation.shown.len();
    let mut rows = Vec::new();
    while start > 0 && rows.len() < wanted {
        start = start.saturating_sub(wanted.max(8) / 2);
        rows = rows_from(conversation, me, width, start);
    }
    rows
}

/// The rows of the messages from index `start` on.
fn rows_from(conversation: &Conversation, me: &UserId, width: usize, start: usize) -> Vec<Row> {
    let width = width.max(8);
    let mut rows = Vec::new();
    let mut day = start
        .checked_sub(1)
        .and_then(|i| conversation.shown.get(i))
        .map(|s| s.message.timestamp / 86_400_000);
    for (i, shown) in conversation.shown.iter().enumerate().skip(start) {
        let m = &shown.message;
        let today = m.timestamp / 86_400_000;
        if day != Some(today) {
            day = Some(today);
            rows.push(separator(&day_label(m.timestamp), width, None));
        }
        if conversation.first_unread.as_deref() == Some(m.msg_id.as_str()) {
            rows.push(separator("new", width, Some(())));
        }
        let read = conversation.read(shown, me);
        message_rows(shown, i, me, width, read, &mut rows);
    }
    if let Some(selected) = conversation.selected {
        for row in rows.iter_mut().filter(|r| r.message == Some(selected)) {
            row.line = std::mem::take(&mut row.line).reversed();
        }
    }
    rows
}

fn separator(label: &str, width: usize, unread: Option<()>) -> Row {
    let label = format!(" {label} ");
    let rest = width.saturating_sub(text::width(&label));
    let line = format!(
        "{}{label}{}",
        "─".repeat(rest / 2),
        "─".repeat(rest - rest / 2)
    );
    Row {
        line: match unread {
            Some(()) => Line::from(line.red()),
            None => Line::from(line.dark_gray()),
        },
        message: None,
    }
}

fn mine(shown: &Shown, me: &UserId) -> bool {
    &shown.message.from == me
}

fn message_rows(
    shown: &Shown,
    i: usize,
    me: &UserId,
    width: usize,
    read: bool,
    rows: &mut Vec<Row>,
) {
    let m = &shown.message;
    let mine = mine(shown, me);
    let time = format!("{} ", hh_mm(m.timestamp));
    let who = if mine {
        "me".to_owned()
    } else {
        m.from.to_string()
    };
    let prefix = text::width(&time) + text::width(&who) + 2;
    // A long name leaves too little room beside it: the text goes below.
    let (indent, beside) = if prefix + 12 <= width {
        (prefix, true)
    } else {
        (2, false)
    };
    // A recalled message's body is a note, wrapped like text.
    let (body, recalled_style) = if m.recalled {
        ("(message recalled)", true)
    } else {
        (m.text.as_str(), false)
    };
    let span = |row: String| {
        if recalled_style {
            Span::raw(row).dark_gray().italic()
        } else {
            Span::raw(row)
        }
    };
    let mut text_rows = text::wrap(body, width - indent).into_iter();
    let state = state_span(&shown.delivery, mine, read);
    let head = vec![
        Span::raw(time).dark_gray(),
        if mine {
            Span::raw(who).cyan()
        } else {
            Span::raw(who).green()
        },
        Span::raw(": "),
    ];
    let mut lines: Vec<Vec<Span<'static>>> = Vec::new();
    if beside {
        let mut first = head;
        first.extend(text_rows.next().map(span));
        lines.push(first);
    } else {
        lines.push(head);
    }
    for row in text_rows {
        lines.push(vec![Span::raw(" ".repeat(indent)), span(row)]);
    }
    if let Some(state) = state {
        // The mark goes after the last row when it fits, else on a row of its own.
        let last = lines.last_mut().expect("a message has a row");
        let used: usize = last.iter().map(|s| text::width(&s.content)).sum();
        if used + 1 + text::width(&state.content) <= width {
            last.push(Span::raw(" "));
            last.push(state);
        } else {
            lines.push(vec![Span::raw(" ".repeat(indent)), state]);
        }
    }
    rows.extend(lines.into_iter().map(|spans| Row {
        line: Line::from(spans),
        message: Some(i),
    }));
}

/// The mark after one of this user's messages: sending `…`, stored by the
/// relay `✓`, read by the peer `✓✓`, not sent `✗ why`.
fn state_span(delivery: &Delivery, mine: bool, read: bool) -> Option<Span<'static>> {
    match delivery {
        Delivery::Sending => Some(Span::raw("…").dark_gray()),
        Delivery::Failed(why) => Some(Span::raw(format!("✗ {}", text::clean(why, false))).red()),
        Delivery::Sent | Delivery::Settled if mine && read => Some(Span::raw("✓✓").cyan()),
        Delivery::Sent | Delivery::Settled if mine => Some(Span::raw("✓").dark_gray()),
        Delivery::Sent | Delivery::Settled => None,
    }
}

/// `HH:MM` of a unix-ms time, in UTC.
pub fn hh_mm(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// `Tue 1 Dec 2026` of a unix-ms time, in UTC.
pub fn day_label(ms: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (ms / 86_400_000) as i64;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {day} {} {year}",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[month as usize - 1]
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        name.parse().unwrap()
    }

    fn message(n: u64, from: &str, text: &str) -> StoredMessage {
        StoredMessage::new(
            format!("m{n}"),
            user(from),
            user(if from == "alice" { "bob" } else { "alice" }),
            text.into(),
            1_795_435_200_000 + n * 60_000,
        )
    }

    fn plain(row: &Row) -> String {
        row.line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn dates_are_named_in_utc() {
        assert_eq!(day_label(0), "Thu 1 Jan 1970");
        assert_eq!(day_label(1_795_435_200_000), "Mon 23 Nov 2026");
        assert_eq!(day_label(951_782_400_000), "Tue 29 Feb 2000");
    }

    #[test]
    fn a_long_message_wraps_under_its_text_and_shows_every_word() {
        let mut c = Conversation::new(user("bob"), 0);
        let words: Vec<String> = (0..100).map(|i| format!("word{i}")).collect();
        c.merge(
            vec![message(1, "bob", &words.join(" "))],
            &user("alice"),
            40,
        );
        let rows = rows(&c, &user("alice"), 40);
        let texts: Vec<String> = rows.iter().map(plain).collect();
        assert!(texts[0].contains("Nov 2026"), "{texts:?}");
        assert!(texts[1].starts_with("12:01 bob: word0"));
        assert!(texts[2].starts_with("           word"), "{texts:?}");
        assert!(texts.iter().all(|t| text::width(t) <= 40));
        let all = texts.join(" ");
        for w in &words {
            assert!(all.split_whitespace().any(|x| x == w), "{w} missing");
        }
    }

    #[test]
    fn scrolling_back_keeps_the_screen_when_messages_arrive() {
        let me = user("alice");
        let mut c = Conversation::new(user("bob"), 0);
        c.merge((1..=30).map(|n| message(n, "bob", "hi")).collect(), &me, 40);
        assert!(!c.scroll_up(10, 5, &me, 40));
        assert_eq!(c.scroll, 10);
        c.push(Shown::settled(message(31, "bob", "new")), &me, 40);
        assert_eq!((c.scroll, c.new_below), (11, 1));
        assert!(
            c.scroll_up(1_000, 5, &me, 40),
            "the top asks for older ones"
        );
        assert!(!c.scroll_to_newest());
        assert_eq!((c.scroll, c.new_below), (0, 0));
    }

    #[test]
    fn the_window_stays_bounded_and_knows_what_it_dropped() {
        let me = user("alice");
        let mut c = Conversation::new(user("bob"), 0);
        for page in 0..7 {
            let start = 10_000 - (page + 1) * PAGE as u64;
            c.merge(
                (start..start + PAGE as u64)
                    .map(|n| message(n, "bob", "x"))
                    .collect(),
                &me,
                40,
            );
        }
        assert_eq!(c.shown.len(), WINDOW);
        assert!(c.newer_dropped);
        assert!(c.scroll_to_newest(), "the newest must be read again");
    }

    #[test]
    fn the_unread_line_sits_before_the_first_unread_message() {
        let me = user("alice");
        let mut c = Conversation::new(user("bob"), 2);
        c.merge(
            vec![
                message(1, "bob", "old"),
                message(2, "alice", "mine"),
                message(3, "bob", "new one"),
                message(4, "bob", "new two"),
            ],
            &me,
            40,
        );
        let texts: Vec<String> = rows(&c, &me, 40).iter().map(plain).collect();
        let line = texts.iter().position(|t| t.contains(" new ")).unwrap();
        assert!(texts[line + 1].contains("new one"), "{texts:?}");
    }

    proptest::proptest! {
        /// Whatever people write and however wide the pane, every row fits
        /// it and every printable character of every message shows, in order.
        #[test]
        fn every_row_fits_and_every_character_shows(
            texts in proptest::collection::vec(
                "\\PC{0,300}|[\\x00-\\x1f\u{7f}\u{202e} a-z我们👍\u{200d}\u{301}\n\t]{0,200}",
                1..6,
            ),
            width in 20usize..200,
        ) {
            let me = user("alice");
            let mut c = Conversation::new(user("bob"), 0);
            let page: Vec<StoredMessage> = (texts.iter().enumerate())
                .map(|(i, t)| message(i as u64 + 1, if i % 2 == 0 { "bob" } else { "alice" }, t))
                .collect();
            c.merge(page, &me, width);
            let rows = rows(&c, &me, width);
            for row in &rows {
                let shown: String = row.line.spans.iter().map(|s| s.content.as_ref()).collect();
                proptest::prop_assert!(text::width(&shown) <= width, "{shown:?} > {width}");
                proptest::prop_assert!(!shown.chars().any(char::is_control));
            }
            for (i, t) in texts.iter().enumerate() {
                let shown: String = (rows.iter())
                    .filter(|r| r.message == Some(i))
                    .flat_map(|r| r.line.spans.iter())
                    .map(|s| s.content.as_ref())
                    .collect::<String>();
                let want: String = text::clean(t, true).chars().filter(|c| !c.is_whitespace()).collect();
                let got: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
                proptest::prop_assert!(got.contains(&want), "{want:?} not in {got:?}");
            }
        }
    }
}
