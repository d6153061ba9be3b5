//! The progress line while the suite runs (on stderr, only on a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// What is being measured now.
    pub fn doing(&self, what: String) {
        self.bar.set_message(what);
    }

    pub fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Prints a line above the bar (a subject that failed or was skipped).
    pub fn note(&self, line: String) {
        self.bar.println(line);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
