//! The lexer: a template's text cut into tokens, as Go's text/template/parse does it
//! (`{{` and `}}` delimiters, `{{-`/`-}}` trim markers, `{{/* comments */}}`).

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Plain text outside actions.
    Text(String),
    /// `{{` (after its trim marker, if any).
    Open,
    /// `}}`.
    Close,
    /// Spaces inside an action (they separate arguments).
    Space,
    /// `.Name` (the name without its dot).
    Field(String),
    /// `$` or `$name` (with its `$`).
    Variable(String),
    /// A function name.
    Ident(String),
    /// `if`, `else`, `end`, `range`, `with`, `define`, `template`, `block`, `break`,
    /// `continue`.
    Keyword(&'static str),
    Bool(bool),
    Nil,
    /// `.` alone.
    Dot,
    /// A number as written.
    Number(String),
    /// A quoted string: its text as written (quotes included) and its value.
    Str(String, String),
    /// A character constant: its text as written and its value.
    Char(String, char),
    Pipe,
    LeftParen,
    RightParen,
    /// `:=`.
    Declare,
    /// `=`.
    Assign,
    /// `,` (between the two variables of a `range`).
    Comma,
    /// A lexing error (displayed as Go's message).
    Error(LexError),
    Eof,
}

/// Why a template's text does not lex; displayed as Go's text/template words it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum LexError {
    #[error("unclosed left paren")]
    UnclosedLeftParen,
    #[error("unclosed action")]
    UnclosedAction,
    #[error("expected :=")]
    ExpectedDeclare,
    #[error("unexpected right paren U+0029 ')'")]
    UnexpectedRightParen,
    /// The character, as Go names it (`U+0040 '@'`).
    #[error("unrecognized character in action: {0}")]
    UnrecognizedCharacter(String),
    #[error("unclosed comment")]
    UnclosedComment,
    #[error("comment ends before closing delimiter")]
    CommentNotClosed,
    #[error("unterminated quoted string")]
    UnterminatedString,
    #[error("unterminated raw quoted string")]
    UnterminatedRawString,
    #[error("unterminated character constant")]
    UnterminatedChar,
    /// The number as written.
    #[error("bad number syntax: {0:?}")]
    BadNumber(String),
    /// A bad escape sequence.
    #[error("invalid syntax")]
    InvalidEscape,
}

/// One token and where it starts.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    /// Byte offset in the template.
    pub pos: usize,
}

const KEYWORDS: [&str; 10] = [
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
];

/// Cuts `text` into tokens; the last is `Eof` or `Error`.
pub(super) fn lex(text: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        text,
        pos: 0,
        tokens: Vec::new(),
        parens: 0,
    };
    lexer.run();
    lexer.tokens
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    tokens: Vec<Token>,
    parens: usize,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn emit(&mut self, tok: Tok, pos: usize) {
        self.tokens.push(Token { tok, pos });
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Text up to the next `{{`, then actions, until the end.
    fn run(&mut self) {
        let mut trim_next_text = false;
        loop {
            let start = self.pos;
            let end = self
                .rest()
                .find("{{")
                .map_or(self.text.len(), |i| start + i);
            let mut text = &self.text[start..end];
            if trim_next_text {
                text = text.trim_start_matches(is_space);
            }
            let open_trims = self.text[end..].starts_with("{{- ")
                || self.text[end..].starts_with("{{-\t")
                || self.text[end..].starts_with("{{-\r")
                || self.text[end..].starts_with("{{-\n");
            if open_trims {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                self.emit(Tok::Text(text.to_string()), start);
            }
            self.pos = end;
            if end == self.text.len() {
                self.emit(Tok::Eof, end);
                return;
            }
            // The trim marker is the dash and the white space after it.
            self.pos += if open_trims { 4 } else { 2 };
            match self.action(end) {
                Ok(trim) => trim_next_text = trim,
                Err(msg) => {
                    let at = self.pos;
                    self.emit(Tok::Error(msg), at);
                    return;
                }
            }
        }
    }

    /// Whether the action closes here: `}}` or ` -}}` (which trims the following text).
    fn close_here(&self) -> Option<(usize, bool)> {
        let rest = self.rest();
        if rest.starts_with("}}") {
            return Some((2, false));
        }
        let mut chars = rest.chars();
        if chars.next().is_some_and(is_space) && chars.as_str().starts_with("-}}") {
            return Some((4, true));
        }
        None
    }

    /// One action after its `{{`; returns whether it trims the text after it.
    fn action(&mut self, open_pos: usize) -> Result<bool, LexError> {
        if self.rest().starts_with("/*") {
            return self.comment(open_pos);
        }
        self.emit(Tok::Open, open_pos);
        self.parens = 0;
        loop {
            if let Some((len, trim)) = self.close_here() {
                if self.parens > 0 {
                    return Err(LexError::UnclosedLeftParen);
                }
                let at = self.pos;
                self.emit(Tok::Close, at);
                self.pos += len;
                return Ok(trim);
            }
            let Some(c) = self.peek() else {
                return Err(LexError::UnclosedAction);
            };
            let start = self.pos;
            match c {
                c if is_space(c) => {
                    while self.peek().is_some_and(is_space) && self.close_here().is_none() {
                        self.pos += 1;
                    }
                    self.emit(Tok::Space, start);
                }
                '=' => {
                    self.pos += 1;
                    self.emit(Tok::Assign, start);
                }
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return Err(LexError::ExpectedDeclare);
                    }
                    self.pos += 2;
                    self.emit(Tok::Declare, start);
                }
                '|' => {
                    self.pos += 1;
                    self.emit(Tok::Pipe, start);
                }
                ',' => {
                    self.pos += 1;
                    self.emit(Tok::Comma, start);
                }
                '"' => self.quoted(start)?,
                '`' => self.raw_quoted(start)?,
                '\'' => self.char_constant(start)?,
                '$' => {
                    self.pos += 1;
                    self.word();
                    let name = self.text[start..self.pos].to_string();
                    self.emit(Tok::Variable(name), start);
                }
                '.' => {
                    let next = self.rest()[1..].chars().next();
                    if next.is_some_and(|d| d.is_ascii_digit()) {
                        self.number(start)?;
                    } else if next.is_some_and(is_alnum) {
                        self.pos += 1;
                        self.word();
                        let name = self.text[start + 1..self.pos].to_string();
                        self.emit(Tok::Field(name), start);
                    } else {
                        self.pos += 1;
                        self.emit(Tok::Dot, start);
                    }
                }
                '+' | '-' | '0'..='9' => self.number(start)?,
                '(' => {
                    self.pos += 1;
                    self.parens += 1;
                    self.emit(Tok::LeftParen, start);
                }
                ')' => {
                    if self.parens == 0 {
                        return Err(LexError::UnexpectedRightParen);
                    }
                    self.pos += 1;
                    self.parens -= 1;
                    self.emit(Tok::RightParen, start);
                }
                c if is_alnum(c) => {
                    self.word();
                    let word = &self.text[start..self.pos];
                    let tok = match word {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        w => match KEYWORDS.iter().find(|k| **k == w) {
                            Some(k) => Tok::Keyword(k),
                            None => Tok::Ident(w.to_string()),
                        },
                    };
                    self.emit(tok, start);
                }
                c => return Err(LexError::UnrecognizedCharacter(unicode_name(c))),
            }
        }
    }

    fn word(&mut self) {
        while self.peek().is_some_and(is_alnum) {
            self.pos += self.peek().map_or(1, char::len_utf8);
        }
    }

    /// `{{/* ... */}}`, with its optional trim markers; emits nothing.
    fn comment(&mut self, _open_pos: usize) -> Result<bool, LexError> {
        let Some(end) = self.rest().find("*/") else {
            return Err(LexError::UnclosedComment);
        };
        self.pos += end + 2;
        match self.close_here() {
            Some((len, trim)) => {
                self.pos += len;
                Ok(trim)
            }
            None => Err(LexError::CommentNotClosed),
        }
    }

    fn quoted(&mut self, start: usize) -> Result<(), LexError> {
        let mut value = String::new();
        let mut chars = self.rest()[1..].char_indices();
        loop {
            let Some((i, c)) = chars.next() else {
                return Err(LexError::UnterminatedString);
            };
            match c {
                '"' => {
                    self.pos += 1 + i + 1;
                    let written = self.text[start..self.pos].to_string();
                    self.emit(Tok::Str(written, value), start);
                    return Ok(());
                }
                '\n' => return Err(LexError::UnterminatedString),
                '\\' => value.push(unescape(&mut chars, '"')?),
                c => value.push(c),
            }
        }
    }

    fn raw_quoted(&mut self, start: usize) -> Result<(), LexError> {
        let Some(end) = self.rest()[1..].find('`') else {
            return Err(LexError::UnterminatedRawString);
        };
        let value = self.rest()[1..1 + end].replace('\r', "");
        self.pos += end + 2;
        let written = self.text[start..self.pos].to_string();
        self.emit(Tok::Str(written, value), start);
        Ok(())
    }

    fn char_constant(&mut self, start: usize) -> Result<(), LexError> {
        let mut chars = self.rest()[1..].char_indices();
        let value = match chars.next() {
            Some((_, '\\')) => unescape(&mut chars, '\'')?,
            Some((_, '\n')) | Some((_, '\'')) | None => return Err(LexError::UnterminatedChar),
            Some((_, c)) => c,
        };
        match chars.next() {
            Some((i, '\'')) => {
                self.pos += 1 + i + 1;
                let written = self.text[start..self.pos].to_string();
                self.emit(Tok::Char(written, value), start);
                Ok(())
            }
            _ => Err(LexError::UnterminatedChar),
        }
    }

    /// A number as Go scans it: sign, base prefix, digits with `_`, fraction, exponent.
    /// Its value is checked by the parser.
    fn number(&mut self, start: usize) -> Result<(), LexError> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let mut hex = false;
        if bytes.get(i) == Some(&b'0') {
            match bytes.get(i + 1).map(u8::to_ascii_lowercase) {
                Some(b'x') => {
                    i += 2;
                    hex = true;
                }
                Some(b'o' | b'b') => i += 2,
                _ => {}
            }
        }
        let digits = |b: u8| {
            b == b'_'
                || if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
        };
        while bytes.get(i).is_some_and(|b| digits(*b)) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            while bytes.get(i).is_some_and(|b| digits(*b)) {
                i += 1;
            }
        }
        let exponent: &[u8] = if hex { b"pP" } else { b"eE" };
        if bytes.get(i).is_some_and(|b| exponent.contains(b)) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        let next = self.text[i..].chars().next();
        if next.is_some_and(is_alnum) || next == Some('.') {
            let end = i + self.text[i..]
                .find(|c: char| !is_alnum(c) && c != '.')
                .unwrap_or(self.text.len() - i);
            return Err(LexError::BadNumber(self.text[start..end].to_string()));
        }
        self.pos = i;
        let written = self.text[start..i].to_string();
        self.emit(Tok::Number(written), start);
        Ok(())
    }
}

/// The character after a backslash in a quoted string or a character constant.
fn unescape(chars: &mut std::str::CharIndices, quote: char) -> Result<char, LexError> {
    let bad = || {
        if quote == '"' {
            LexError::UnterminatedString
        } else {
            LexError::UnterminatedChar
        }
    };
    let (_, c) = chars.next().ok_or_else(bad)?;
    let hex = |chars: &mut std::str::CharIndices, n: usize| -> Result<char, LexError> {
        let digits: String = chars.take(n).map(|(_, c)| c).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .ok_or(LexError::InvalidEscape)
    };
    Ok(match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'v' => '\x0b',
        '\\' => '\\',
        '\'' if quote == '\'' => '\'',
        '"' if quote == '"' => '"',
        'x' => hex(chars, 2)?,
        'u' => hex(chars, 4)?,
        'U' => hex(chars, 8)?,
        '\n' => return Err(bad()),
        _ => return Err(LexError::InvalidEscape),
    })
}

/// Go's `%#U` of a character: `U+0040 '@'`.
pub(super) fn unicode_name(c: char) -> String {
    if c.is_control() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("U+{:04X} '{c}'", c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn text_actions_and_trim_markers() {
        assert_eq!(
            toks("a {{- .B.C  -}}  d"),
            vec![
                Tok::Text("a".into()),
                Tok::Open,
                Tok::Field("B".into()),
                Tok::Field("C".into()),
                Tok::Space,
                Tok::Close,
                Tok::Text("d".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("x{{/* note */}}y"),
            vec![Tok::Text("x".into()), Tok::Text("y".into()), Tok::Eof]
        );
    }

    #[test]
    fn operands() {
        assert_eq!(
            toks(r#"{{$x := index . "a\tb" 1 -2.5e3 'c' `r` | len}}"#)[1..],
            [
                Tok::Variable("$x".into()),
                Tok::Space,
                Tok::Declare,
                Tok::Space,
                Tok::Ident("index".into()),
                Tok::Space,
                Tok::Dot,
                Tok::Space,
                Tok::Str("\"a\\tb\"".into(), "a\tb".into()),
                Tok::Space,
                Tok::Number("1".into()),
                Tok::Space,
                Tok::Number("-2.5e3".into()),
                Tok::Space,
                Tok::Char("'c'".into(), 'c'),
                Tok::Space,
                Tok::Str("`r`".into(), "r".into()),
                Tok::Space,
                Tok::Pipe,
                Tok::Space,
                Tok::Ident("len".into()),
                Tok::Close,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors_are_gos() {
        let last = |t: &str| lex(t).pop().unwrap().tok;
        let message = |t: &str| match last(t) {
            Tok::Error(e) => e.to_string(),
            other => panic!("{t:?} lexed without an error: {other:?}"),
        };
        assert_eq!(last("{{.ID"), Tok::Error(LexError::UnclosedAction));
        assert_eq!(message("{{.ID"), "unclosed action");
        assert_eq!(message("{{/* x"), "unclosed comment");
        assert_eq!(message("{{\"abc}}"), "unterminated quoted string");
        assert_eq!(
            message("{{ @ }}"),
            "unrecognized character in action: U+0040 '@'"
        );
        assert_eq!(message("{{ 12ab }}"), "bad number syntax: \"12ab\"");
        assert_eq!(message("{{ (x }}"), "unclosed left paren");
    }
}
