//! Text from images, containers, registries and guests made safe for a terminal (and for one
//! line of an error message) before anything prints it: an image's Cmd, a registry's error text, a name from an archive may hold a
//! newline (a forged line of `ps`, a second line of an error) or an escape sequence (which
//! the terminal would obey: move the cursor, retitle the window, rewrite what is shown).
//! Every control character is printed as an escape instead (`\n`, `\t`, `\x1b`), and so are
//! Unicode's invisible direction overrides, which reorder what a line appears to say.
//! What is already safe is returned as it is, without a copy.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1) and bidirectional formatting
/// character written as an escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] for every string of a JSON value (keys too), for templates that
/// print fields as text.
pub fn escape_json_strings(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(escape_controls(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(escape_json_strings).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (escape_controls(k).into_owned(), escape_json_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Control characters, and the invisible characters that change the direction of the text
/// around them (LRM, RLM, ALM, the embeddings, overrides and isolates).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(escape_controls("plain text é"), "plain text é");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nb\r\tc\x1b[2Jd\x7f\u{9b}e"),
            "a\\nb\\r\\tc\\x1b[2Jd\\x7f\\u{9b}e"
        );
        assert_eq!(escape_controls("x\u{202e}y"), "x\\u{202e}y");
        // Escaping twice changes nothing more: an escaped text has no control left.
        let once = escape_controls("\x1b]0;title\x07").into_owned();
        assert_eq!(escape_controls(&once), once);
    }

    #[test]
    fn every_string_of_a_json_value_is_escaped() {
        let v = serde_json::json!({"Cmd": ["sh", "-c", "x\ny"], "n\t": 3});
        let e = escape_json_strings(&v);
        assert_eq!(e["Cmd"][2], "x\\ny");
        assert_eq!(e["n\\t"], 3);
    }
}
