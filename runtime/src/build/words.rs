//! Docker's word rules for instruction arguments (the builder's shell lexer): quotes
//! removed, backslash escapes, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alternate}`
//! (and their forms without the colon) expanded from the build's variables. `RUN`'s shell
//! form is not processed here: the shell does its own.

use std::collections::BTreeMap;

/// The variables a word expands from (ENV of the image so far, then the stage's ARGs).
pub type Vars = BTreeMap<String, String>;

/// A word that does not parse (an unclosed quote or `${`).
#[derive(Debug, thiserror::Error)]
#[error("{what} in {text:?}")]
pub struct WordError {
    what: &'static str,
    text: String,
}

/// Splits `text` into words at unquoted white space, each with quotes removed and
/// variables expanded.
pub fn words(text: &str, vars: &Vars) -> Result<Vec<String>, WordError> {
    let mut out = Vec::new();
    let mut lexer = Lexer::new(text, vars);
    while let Some(w) = lexer.word()? {
        out.push(w);
    }
    Ok(out)
}

/// The whole of `text` as one word (white space kept), quotes removed and variables
/// expanded: a FROM image, a WORKDIR, a USER.
pub fn word(text: &str, vars: &Vars) -> Result<String, WordError> {
    let mut lexer = Lexer::new(text, vars);
    lexer.keep_spaces = true;
    Ok(lexer.word()?.unwrap_or_default())
}

/// `K=V K2="v 2"` pairs (ENV, LABEL), or the legacy `K rest of line` form.
pub fn pairs(text: &str, vars: &Vars) -> Result<Vec<(String, String)>, WordError> {
    let text = text.trim();
    let first = text.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        // `ENV K value with spaces`: one key, the rest as one word.
        let rest = text[first.len()..].trim_start();
        let key = word(first, vars)?;
        return Ok(vec![(key, word(rest, vars)?)]);
    }
    let mut out = Vec::new();
    for w in words(text, vars)? {
        match w.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                return Err(WordError {
                    what: "a KEY=VALUE pair expected",
                    text: w,
                })
            }
        }
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    text: &'a str,
    vars: &'a Vars,
    keep_spaces: bool,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, vars: &'a Vars) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            text,
            vars,
            keep_spaces: false,
        }
    }

    fn error(&self, what: &'static str) -> WordError {
        WordError {
            what,
            text: self.text.to_string(),
        }
    }

    /// The next word, or None at the end.
    fn word(&mut self) -> Result<Option<String>, WordError> {
        if !self.keep_spaces {
            while self.chars.next_if(|c| c.is_whitespace()).is_some() {}
        }
        if self.chars.peek().is_none() {
            return Ok(None);
        }
        let mut out = String::new();
        while let Some(&c) = self.chars.peek() {
            match c {
                c if c.is_whitespace() && !self.keep_spaces => break,
                '\'' => {
                    self.chars.next();
                    loop {
                        match self.chars.next() {
                            Some('\'') => break,
                            Some(c) => out.push(c),
                            None => return Err(self.error("an unclosed single quote")),
                        }
                    }
                }
                '"' => {
                    self.chars.next();
                    loop {
                        match self.chars.next() {
                            Some('"') => break,
                            Some('\\') => match self.chars.next() {
                                Some(c @ ('"' | '\\' | '$')) => out.push(c),
                                Some(c) => {
                                    out.push('\\');
                                    out.push(c);
                                }
                                None => return Err(self.error("an unclosed double quote")),
                            },
                            Some('$') => out.push_str(&self.variable()?),
                            Some(c) => out.push(c),
                            None => return Err(self.error("an unclosed double quote")),
                        }
                    }
                }
                '\\' => {
                    self.chars.next();
                    if let Some(c) = self.chars.next() {
                        out.push(c);
                    }
                }
                '$' => {
                    self.chars.next();
                    out.push_str(&self.variable()?);
                }
                c => {
                    self.chars.next();
                    out.push(c);
                }
            }
        }
        Ok(Some(out))
    }

    /// After a `$`: the variable's value (a lone `$` stays itself).
    fn variable(&mut self) -> Result<String, WordError> {
        if self.chars.next_if_eq(&'{').is_none() {
            let mut name = String::new();
            while let Some(c) = self
                .chars
                .next_if(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                name.push(c);
            }
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        let mut name = String::new();
        while let Some(c) = self
            .chars
            .next_if(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            name.push(c);
        }
        let value = self.vars.get(&name);
        let close = |l: &mut Self| match l.chars.next() {
            Some('}') => Ok(()),
            _ => Err(l.error("an unclosed ${")),
        };
        match self.chars.next() {
            Some('}') => Ok(value.cloned().unwrap_or_default()),
            Some(':') => {
                let op = self.chars.next();
                let word = self.nested()?;
                close(self)?;
                let set = value.is_some_and(|v| !v.is_empty());
                Ok(modifier(op, set, value, word))
            }
            Some(op @ ('-' | '+')) => {
                let word = self.nested()?;
                close(self)?;
                Ok(modifier(Some(op), value.is_some(), value, word))
            }
            _ => Err(self.error("an unclosed ${")),
        }
    }

    /// The word inside `${VAR:-...}`, up to its `}` (expanded too).
    fn nested(&mut self) -> Result<String, WordError> {
        let mut out = String::new();
        while let Some(&c) = self.chars.peek() {
            match c {
                '}' => break,
                '$' => {
                    self.chars.next();
                    out.push_str(&self.variable()?);
                }
                '\\' => {
                    self.chars.next();
                    if let Some(c) = self.chars.next() {
                        out.push(c);
                    }
                }
                c => {
                    self.chars.next();
                    out.push(c);
                }
            }
        }
        Ok(out)
    }
}

fn modifier(op: Option<char>, set: bool, value: Option<&String>, word: String) -> String {
    match (op, set) {
        (Some('-'), true) => value.cloned().unwrap_or_default(),
        (Some('-'), false) => word,
        (Some('+'), true) => word,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "1"), ("E", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quotes_escapes_and_variables_are_docker_s() {
        let v = vars();
        assert_eq!(
            words(r#"a "b c" 'd $A' $A\ x"#, &v).unwrap(),
            ["a", "b c", "d $A", "1 x"]
        );
        assert_eq!(
            word("${A:-z}/${B:-z}/${E:-z}/${E-z}/${A:+y}/${B:+y}", &v).unwrap(),
            "1/z/z//y/"
        );
        assert_eq!(word("/app dir", &v).unwrap(), "/app dir");
        assert_eq!(
            pairs(r#"K="v 1" L=$A M=a\ b"#, &v).unwrap(),
            [
                ("K".into(), "v 1".into()),
                ("L".into(), "1".into()),
                ("M".into(), "a b".into())
            ]
        );
        assert_eq!(
            pairs("K some value", &v).unwrap(),
            [("K".into(), "some value".into())]
        );
        assert!(words("'open", &v).is_err());
        assert!(word("${A", &v).is_err());
    }
}
