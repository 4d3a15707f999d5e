//! PCI redaction of digits in free text: what the caller or the model said may carry a card
//! number ("you said 4111 1111 1111 1111"), so in PCI mode every run of digits in a
//! transcript is replaced before the text is logged, published or stored.

use std::borrow::Cow;

/// What a run of digits becomes.
pub const REDACTED: &str = "[redacted]";

/// `text` with every run of digits replaced by [`REDACTED`]. A run is digits (and the
/// keypad's `*` and `#`) with at most two separators (space, comma, dash, dot, slash)
/// between them, so "4111-1111", "4, 1, 1, 1" and "4111#" are one run each. Borrowed when
/// there is nothing to redact (the common case costs one scan).
pub fn redact_digits(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Cow::Borrowed(text);
    }
    let is_key = |c: char| c.is_ascii_digit() || c == '*' || c == '#';
    let is_separator = |c: char| matches!(c, ' ' | ',' | '-' | '.' | '/');
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // A run must hold a digit: a lone `#` or `*` ("press #") is kept.
        let starts_run =
            chars[i].is_ascii_digit() || (is_key(chars[i]) && next_key_is_digit(&chars[i..]));
        if !starts_run {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i;
        while end < chars.len() && is_key(chars[end]) {
            end += 1;
            // Separators continue the run only when another key follows them closely.
            let gap = chars[end..]
                .iter()
                .take_while(|&&c| is_separator(c))
                .count();
            if gap > 0 && gap <= 2 && chars.get(end + gap).is_some_and(|&c| is_key(c)) {
                end += gap;
            }
        }
        out.push_str(REDACTED);
        i = end;
    }
    Cow::Owned(out)
}

/// True when `chars` starts with `*`/`#` keys directly followed by a digit.
fn next_key_is_digit(chars: &[char]) -> bool {
    chars
        .iter()
        .find(|&&c| c != '*' && c != '#')
        .is_some_and(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_become_one_redaction_each() {
        assert_eq!(redact_digits("you said 4111#"), "you said [redacted]");
        assert_eq!(
            redact_digits("card 4111 1111 1111 1111, expiry 12/29."),
            "card [redacted], expiry [redacted]."
        );
        assert_eq!(redact_digits("4, 1, 1, 1 right?"), "[redacted] right?");
        assert_eq!(redact_digits("*9 then 7"), "[redacted] then [redacted]");
    }

    #[test]
    fn text_without_digits_is_borrowed_untouched() {
        assert!(matches!(
            redact_digits("press # to finish"),
            Cow::Borrowed(_)
        ));
        assert_eq!(redact_digits("press # to finish"), "press # to finish");
        assert_eq!(redact_digits("room 5 or #"), "room [redacted] or #");
        assert_eq!(redact_digits("naïve café 7"), "naïve café [redacted]");
    }
}
