//! The layers of a pull or a push, worked on a few threads at once: the first failure
//! raises a flag that stops the other threads taking more (and that long transfers poll),
//! and is what the caller gets back, with the job it concerns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Runs `work` over `jobs` on up to `threads` threads; the first job to fail stops the rest
/// and is returned with its error. `work` is handed the stop flag to poll while it runs.
pub fn until_first_failure<J: Send, E: Send>(
    jobs: Vec<J>,
    threads: usize,
    work: impl Fn(&J, &AtomicBool) -> Result<(), E> + Sync,
) -> Result<(), (J, E)> {
    let threads = threads.min(jobs.len());
    let queue = Mutex::new(VecDeque::from(jobs));
    let failed: Mutex<Option<(J, E)>> = Mutex::new(None);
    let abort = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if abort.load(Ordering::Relaxed) {
                    return;
                }
                let Some(job) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                if let Err(e) = work(&job, &abort) {
                    let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() && !abort.swap(true, Ordering::Relaxed) {
                        *slot = Some((job, e));
                    }
                    return;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_job_runs_when_none_fails() {
        let done = AtomicUsize::new(0);
        let r: Result<(), ((), ())> = until_first_failure(vec![(); 10], 3, |_, _| {
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        assert!(r.is_ok());
        assert_eq!(done.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn the_first_failure_stops_the_rest_and_names_its_job() {
        let started = AtomicUsize::new(0);
        let r = until_first_failure((0..100).collect(), 1, |&n: &i32, _| {
            started.fetch_add(1, Ordering::Relaxed);
            if n == 3 {
                Err("broken")
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err((3, "broken")));
        assert_eq!(
            started.load(Ordering::Relaxed),
            4,
            "nothing after the failure"
        );
    }
}
