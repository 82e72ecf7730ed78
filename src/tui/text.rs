//! Text from elsewhere, made safe and fitted to the screen.
//!
//! Every remote string (message text, user ids, device names, error
//! messages) reaches the terminal through [`clean`]: no control character,
//! escape sequence or bidirectional override can take effect, and tabs are
//! spaces. [`wrap`] breaks clean text into rows of a display width, at word
//! boundaries where there are any (and between CJK characters, which need
//! no spaces), by the width each character really takes (two columns for
//! CJK and most emoji, none for combining marks and joiners).

use std::borrow::Cow;

use textwrap::Options;
use unicode_width::UnicodeWidthStr;

/// Columns a tab stands for.
const TAB: &str = "    ";

/// `text` as it may be shown: tabs become spaces, other C0 and C1 controls
/// (ESC, BEL, CR, DEL, ...) their caret or `<U+..>` notation, and the
/// bidirectional embeddings, overrides and isolates are dropped. Line
/// breaks stay when `keep_lines`; otherwise they show as `⏎`.
pub fn clean(text: &str, keep_lines: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_cleaning(c, keep_lines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if keep_lines => out.push('\n'),
            '\n' => out.push('⏎'),
            '\t' => out.push_str(TAB),
            c if is_bidi_control(c) => {}
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push_str(&format!("<U+{:04X}>", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_cleaning(c: char, keep_lines: bool) -> bool {
    (c.is_control() && !(keep_lines && c == '\n')) || is_bidi_control(c)
}

/// The characters that reorder what follows them (Unicode's bidirectional
/// formatting characters): a message must not reverse the text after it.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// Columns `text` takes on screen.
pub fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// Clean `text` (lines kept) broken into rows of at most `width` columns.
/// An empty text is one empty row.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(2);
    let text = clean(text, true);
    let options = Options::new(width).break_words(true);
    let mut rows = Vec::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            rows.push(String::new());
            continue;
        }
        for row in textwrap::wrap(line, &options) {
            fit(row.trim_end(), width, &mut rows);
        }
    }
    rows
}

/// `row` as rows of at most `width` columns. textwrap measures a few
/// characters (some emoji, unassigned code points) narrower than the
/// terminal will draw them; what overflows goes on to a row of its own
/// rather than past the pane's edge or off the screen.
fn fit(row: &str, width: usize, rows: &mut Vec<String>) {
    let mut current = String::new();
    let mut used = 0;
    for c in row.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > width && !current.is_empty() {
            rows.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(c);
        used += w;
    }
    rows.push(current);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_text_stays_text() {
        let hostile = "a\x1b[2J\x1b]52;c;aGk=\x07b\tc\u{202e}d\r\u{7f}\u{9b}";
        let shown = clean(hostile, false);
        assert_eq!(shown, "a^[[2J^[]52;c;aGk=^Gb    cd^M^?<U+009B>");
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(clean("plain", false), Cow::Borrowed("plain"));
        assert_eq!(clean("two\nlines", false), "two⏎lines");
        assert_eq!(clean("two\nlines", true), "two\nlines");
    }

    #[test]
    fn words_wrap_at_spaces_and_cjk_between_characters() {
        assert_eq!(
            wrap("the quick brown fox jumps", 10),
            ["the quick", "brown fox", "jumps"]
        );
        let chinese = "我们明天下午三点在会议室开会讨论项目进度";
        let rows = wrap(chinese, 10);
        assert!(rows.iter().all(|r| width(r) <= 10), "{rows:?}");
        assert_eq!(rows.concat(), chinese);
        assert_eq!(rows[0], "我们明天下");
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("a\n\nb", 10), ["a", "", "b"]);
    }

    #[test]
    fn long_words_break_and_wide_characters_never_overflow() {
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        for w in 2..6 {
            for row in wrap("👩‍👩‍👧‍👦 ok 🇫🇷🇫🇷 é", w) {
                assert!(width(&row) <= w, "{row:?} in {w}");
            }
        }
    }

    proptest! {
        #[test]
        fn wrapped_rows_fit_and_keep_every_printable_character(
            text in "\\PC*|[\\x00-\\x1f\u{7f}-\u{9f}\u{202a}-\u{202e} a-z我们👍\n\t]{0,200}",
            w in 20usize..200,
        ) {
            let rows = wrap(&text, w);
            for row in &rows {
                prop_assert!(width(row) <= w, "{row:?} is wider than {w}");
                prop_assert!(!row.chars().any(char::is_control));
            }
            let kept: String = clean(&text, true).chars().filter(|c| !c.is_whitespace()).collect();
            let shown: String = rows.concat().chars().filter(|c| !c.is_whitespace()).collect();
            prop_assert_eq!(shown, kept);
        }
    }
}
