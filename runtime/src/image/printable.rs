//! Text that came from an image, an archive or a registry, made fit for one line of an
//! error message: control characters (newline, carriage return, ESC and the rest) are
//! shown escaped, so no input can add lines to an error or drive the user's terminal.

use std::borrow::Cow;

/// `text` with every control character escaped (`\n`, `\u{1b}`); other text unchanged.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("plain café"), "plain café");
        assert_eq!(printable("a\nb\u{1b}[31mc\r"), "a\\nb\\u{1b}[31mc\\r");
        assert!(!printable("x\u{7f}\u{9b}y").chars().any(char::is_control));
    }
}
