//! `--compare-to OLD.json`: this run's figures as ratios to an earlier run's, with each change
//! flagged when it is larger than the run-to-run noise. For sampled figures the noise is the
//! wider relative interquartile range of the two runs (at least 5%); single measurements
//! (memory, overhead) get a fixed 10%, about what repeated runs here move by.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::report::{Report, OVERHEAD_FIGURES, SCHEMA};
use super::stats::Summary;

const SAMPLED_FLOOR: f64 = 0.05;
const SINGLE_NOISE: f64 = 0.10;

/// One compared figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub figure: String,
    pub subject: String,
    pub old: f64,
    pub new: f64,
    pub noise: f64,
}

impl Change {
    pub fn ratio(&self) -> f64 {
        if self.old == 0.0 {
            f64::NAN
        } else {
            self.new / self.old
        }
    }

    pub fn beyond_noise(&self) -> bool {
        (self.ratio() - 1.0).abs() > self.noise
    }
}

/// An earlier report that cannot be compared with; names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: report schema {schema:?}, this capsa reads schema {SCHEMA}", .path.display())]
    Schema { path: PathBuf, schema: Option<u64> },
}

pub fn load(path: &Path) -> Result<Report, LoadError> {
    let parse = |source| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(parse)?;
    let schema = value.get("schema").and_then(|v| v.as_u64());
    if schema != Some(SCHEMA as u64) {
        return Err(LoadError::Schema {
            path: path.to_path_buf(),
            schema,
        });
    }
    serde_json::from_value(value).map_err(parse)
}

fn sampled(figure: &str, subject: &str, old: &Summary, new: &Summary) -> Change {
    Change {
        figure: figure.into(),
        subject: subject.into(),
        old: old.p50,
        new: new.p50,
        noise: SAMPLED_FLOOR
            .max(old.relative_iqr())
            .max(new.relative_iqr()),
    }
}

fn single(figure: &str, subject: &str, old: f64, new: f64) -> Change {
    Change {
        figure: figure.into(),
        subject: subject.into(),
        old,
        new,
        noise: SINGLE_NOISE,
    }
}

/// Every figure both reports have for the same subject.
pub fn changes(old: &Report, new: &Report) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, o) in &new.start {
        if let (Some(n), Some(p)) = (o.ok(), old.start.get(name).and_then(|x| x.ok())) {
            out.push(sampled(
                "start: first output p50 (ms)",
                name,
                &p.first_output_ms,
                &n.first_output_ms,
            ));
            out.push(sampled(
                "start: exit p50 (ms)",
                name,
                &p.exit_ms,
                &n.exit_ms,
            ));
            out.push(sampled("start: CPU p50 (ms)", name, &p.cpu_ms, &n.cpu_ms));
        }
    }
    for (name, o) in &new.memory {
        if let (Some(n), Some(p)) = (o.ok(), old.memory.get(name).and_then(|x| x.ok())) {
            out.push(single(
                "memory: PSS (KiB)",
                name,
                p.pss_kib as f64,
                n.pss_kib as f64,
            ));
        }
    }
    for (name, o) in &new.density {
        if let (Some(n), Some(p)) = (o.ok(), old.density.get(name).and_then(|x| x.ok())) {
            for step in &n.steps {
                if let Some(before) = p.steps.iter().find(|s| s.n == step.n) {
                    out.push(single(
                        &format!("density: PSS per instance at N={} (KiB)", step.n),
                        name,
                        before.pss_per_instance_kib as f64,
                        step.pss_per_instance_kib as f64,
                    ));
                }
            }
        }
    }
    for (name, o) in &new.overhead {
        if let (Some(n), Some(p)) = (o.ok(), old.overhead.get(name).and_then(|x| x.ok())) {
            for f in OVERHEAD_FIGURES {
                if let (Some(a), Some(b)) = ((f.value)(p), (f.value)(n)) {
                    out.push(single(&format!("overhead: {}", f.label), name, a, b));
                }
            }
        }
    }
    out
}

pub fn render(old_path: &Path, changes: &[Change]) -> String {
    let mut s = format!("compared with {}:\n", old_path.display());
    let _ = writeln!(
        s,
        "{:<44} {:<16} {:>12} {:>12} {:>7}  CHANGE",
        "FIGURE", "SUBJECT", "BEFORE", "NOW", "RATIO"
    );
    for c in changes {
        let verdict = if c.beyond_noise() {
            format!("beyond noise (±{:.0}%)", c.noise * 100.0)
        } else {
            "within noise".into()
        };
        let _ = writeln!(
            s,
            "{:<44} {:<16} {:>12.1} {:>12.1} {:>6.2}x  {verdict}",
            c.figure,
            c.subject,
            c.old,
            c.new,
            c.ratio()
        );
    }
    if changes.is_empty() {
        s.push_str("no figure in common\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::summarize;

    #[test]
    fn changes_beyond_the_noise_are_flagged() {
        let steady = summarize(&[10.0, 10.1, 10.2, 9.9, 10.0]).unwrap();
        let slower = summarize(&[20.0, 20.1, 20.2, 19.9, 20.0]).unwrap();
        assert!(sampled("f", "s", &steady, &slower).beyond_noise());
        assert!(!sampled("f", "s", &steady, &steady).beyond_noise());
        assert!(!single("m", "s", 100.0, 105.0).beyond_noise());
        assert!(single("m", "s", 100.0, 130.0).beyond_noise());
    }
}
