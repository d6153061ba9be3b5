//! What the probe prints: one JSON document (a single line, so the harness finds it among an
//! engine's console output) with the probe's view of itself and one finding per probe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning.
pub const VERSION: u32 = 1;

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Findings {
    /// Always [`VERSION`]; also how the harness recognises the line.
    pub capsa_escape: u32,
    pub context: crate::context::Context,
    pub probes: Vec<Finding>,
}

/// What one probe saw.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// The call did what it aimed at (on this kernel: the harness says whose kernel).
    Reached,
    /// The call was refused; `errno` says how.
    Refused,
    /// The thing does not exist here (no such syscall, device or file in this kernel).
    Absent,
}

/// One probe's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub name: String,
    pub reach: Reach,
    /// The errno of the refusal (or of the absence).
    pub errno: Option<i32>,
    /// `EPERM`, `EROFS`...
    pub errno_name: Option<String>,
    /// One line a reader understands: what was tried and what happened.
    pub detail: String,
    /// Facts the harness reads (a disk fingerprint, the mount flags of a path...).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

impl Finding {
    pub fn reached(name: &str, detail: impl Into<String>) -> Finding {
        Finding::new(name, Reach::Reached, None, detail)
    }

    pub fn refused(name: &str, errno: i32, detail: impl Into<String>) -> Finding {
        Finding::new(name, Reach::Refused, Some(errno), detail)
    }

    /// Refused without a failing call (nothing to reach was there: no inherited descriptor,
    /// no foreign process visible).
    pub fn nothing(name: &str, detail: impl Into<String>) -> Finding {
        Finding::new(name, Reach::Refused, None, detail)
    }

    pub fn absent(name: &str, errno: Option<i32>, detail: impl Into<String>) -> Finding {
        Finding::new(name, Reach::Absent, errno, detail)
    }

    fn new(name: &str, reach: Reach, errno: Option<i32>, detail: impl Into<String>) -> Finding {
        Finding {
            name: name.to_string(),
            reach,
            errno,
            errno_name: errno.map(|e| crate::sys::errno_name(e).to_string()),
            detail: detail.into(),
            facts: BTreeMap::new(),
        }
    }

    /// Adds a fact for the harness.
    pub fn fact(mut self, key: &str, value: impl ToString) -> Finding {
        self.facts.insert(key.to_string(), value.to_string());
        self
    }

    /// The errno of a refusal, by name.
    pub fn refused_with(&self, name: &str) -> bool {
        self.reach == Reach::Refused && self.errno_name.as_deref() == Some(name)
    }
}

impl Findings {
    /// The document as one line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The document among other output: the first line that parses as one.
    pub fn find_in(output: &str) -> Option<Findings> {
        output
            .lines()
            .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c == '\r'))
            .filter(|l| l.starts_with('{') && l.contains("\"capsa_escape\""))
            .find_map(|l| serde_json::from_str(l).ok())
    }

    pub fn get(&self, name: &str) -> Option<&Finding> {
        self.probes.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_found_among_console_output() {
        let doc = Findings {
            capsa_escape: VERSION,
            context: Default::default(),
            probes: vec![Finding::refused("mount", libc::EPERM, "mount: EPERM").fact("stage", "x")],
        };
        let console = format!(
            "[    0.1] booting\r\n{}\r\nreboot: Restarting\n",
            doc.to_line()
        );
        let found = Findings::find_in(&console).expect("found");
        assert_eq!(found, doc);
        assert!(found.get("mount").unwrap().refused_with("EPERM"));
        assert!(Findings::find_in("{\"other\": 1}\nnoise").is_none());
    }
}
