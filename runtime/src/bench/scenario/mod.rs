//! The five scenarios. Each takes the subjects and returns one outcome per subject, so the
//! report always says something about every subject.

pub mod density;
pub mod isolation;
pub mod memory;
pub mod overhead;
pub mod start;

use std::collections::BTreeMap;

use super::plan::Plan;
use super::progress::Progress;
use super::report::Outcome;
use super::subjects::Subject;

pub struct Context<'a> {
    pub plan: &'a Plan,
    pub progress: &'a Progress,
}

/// Runs `measure` for each available subject; unavailable ones are skipped with their reason.
fn per_subject<T>(
    subjects: &[&dyn Subject],
    ctx: &Context,
    scenario: &str,
    mut measure: impl FnMut(&dyn Subject) -> Outcome<T>,
) -> BTreeMap<String, Outcome<T>> {
    let mut out = BTreeMap::new();
    for s in subjects {
        let info = s.info();
        let outcome = match &info.unavailable {
            Some(why) => Outcome::Skipped {
                reason: format!("not available here: {why}"),
            },
            None => {
                ctx.progress.doing(format!("{scenario}: {}", info.name));
                measure(*s)
            }
        };
        if let Some(why) = outcome.why_not() {
            ctx.progress
                .note(format!("{scenario} {}: {why}", info.name));
        }
        out.insert(info.name.clone(), outcome);
    }
    out
}
