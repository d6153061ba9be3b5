//! `.dockerignore`, with Docker's pattern rules: one pattern a line, `#` comments, `!` to
//! take a path back, `*`, `?`, `[...]` within one path component, `**` across any number
//! of them; a pattern that matches a directory matches everything under it; the last
//! pattern that matches a path decides.

use regex::Regex;

/// A `.dockerignore` pattern that does not compile.
#[derive(Debug, thiserror::Error)]
#[error(".dockerignore: bad pattern {pattern:?}: {reason}")]
pub struct IgnoreError {
    pattern: String,
    reason: String,
}

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Default)]
pub struct Ignore {
    patterns: Vec<(Regex, bool)>,
}

impl Ignore {
    /// Reads the file's text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pattern);
            if cleaned.is_empty() {
                continue;
            }
            let regex = Regex::new(&to_regex(&cleaned)).map_err(|e| IgnoreError {
                pattern: line.to_string(),
                reason: e.to_string(),
            })?;
            patterns.push((regex, keep));
        }
        Ok(Ignore { patterns })
    }

    /// Whether a `!` pattern could take back something under an ignored directory (else
    /// an ignored directory's contents need not be listed at all).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|(_, keep)| *keep)
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn ignores(&self, path: &str) -> bool {
        let mut ignored = false;
        for (regex, keep) in &self.patterns {
            if matches_or_parent(regex, path) {
                ignored = !keep;
            }
        }
        ignored
    }
}

fn matches_or_parent(regex: &Regex, path: &str) -> bool {
    let mut at = path;
    loop {
        if regex.is_match(at) {
            return true;
        }
        match at.rfind('/') {
            Some(i) => at = &at[..i],
            None => return false,
        }
    }
}

/// A path cleaned as Go's `filepath.Clean`, relative: `.` and empty parts dropped, `..`
/// taking one part back and never climbing above the top.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Whether `pattern` holds a glob character.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// A Docker pattern as an anchored regular expression.
pub fn to_regex(pattern: &str) -> String {
    let mut out = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                    out.push_str("(.*/)?");
                } else {
                    out.push_str(".*");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                let mut class = String::from("[");
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!' | '^')) {
                    class.push('^');
                    j += 1;
                }
                let mut closed = false;
                while j < chars.len() {
                    match chars[j] {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '\\' if j + 1 < chars.len() => {
                            j += 1;
                            class.push_str(&regex::escape(&chars[j].to_string()));
                        }
                        c => class.push_str(&regex::escape(&c.to_string())),
                    }
                    j += 1;
                }
                if closed {
                    class.push(']');
                    out.push_str(&class);
                    i = j;
                } else {
                    out.push_str(r"\[");
                }
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push_str(&regex::escape(&chars[i].to_string()));
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_s_pattern_rules() {
        let ig = Ignore::parse("# c\n*.log\n!keep.log\nbuild/\n**/tmp\n/secret?\n").unwrap();
        assert!(ig.ignores("a.log"));
        assert!(!ig.ignores("keep.log"));
        assert!(!ig.ignores("dir/a.log"), "* stays in one component");
        assert!(ig.ignores("build/x/y"));
        assert!(ig.ignores("tmp") && ig.ignores("a/b/tmp/c"));
        assert!(ig.ignores("secret1") && !ig.ignores("secret12"));
        assert!(!ig.ignores("src/main.rs"));
        assert_eq!(clean("../a/./b/../c/"), "a/c");
    }
}
