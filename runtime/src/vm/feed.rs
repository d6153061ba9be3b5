//! A bounded queue from a helper thread (one reading this terminal's stdin, one per control
//! client sending input) to the relay loop, with a doorbell: each item queued rings a pipe
//! the relay's poll watches, so the loop sleeps until there is something to take instead of
//! waking on a timer to look.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

/// The sending end: cloned into each helper thread.
pub(super) struct Ringer<T> {
    tx: SyncSender<T>,
    bell: Arc<OwnedFd>,
}

impl<T> Clone for Ringer<T> {
    fn clone(&self) -> Self {
        Ringer {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> Ringer<T> {
    /// Queues `item`, waiting while the queue is full (the helper, not the monitor's memory,
    /// holds what the relay has not taken); false once the relay has gone.
    pub(super) fn send(&self, item: T) -> bool {
        if self.tx.send(item).is_err() {
            return false;
        }
        // A full pipe already rings: the relay drains it and takes what is queued.
        let _ = nix::unistd::write(&*self.bell, &[1]);
        true
    }
}

/// The relay's end.
pub(super) struct Feed<T> {
    rx: Receiver<T>,
    bell: OwnedFd,
}

impl<T> Feed<T> {
    /// A queue of at most `bound` items, and its first sender.
    pub(super) fn new(bound: usize) -> std::io::Result<(Ringer<T>, Feed<T>)> {
        use nix::fcntl::OFlag;
        let (bell_r, bell_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(bound);
        let ringer = Ringer {
            tx,
            bell: Arc::new(bell_w),
        };
        Ok((ringer, Feed { rx, bell: bell_r }))
    }

    /// What the relay's poll watches: readable once something was queued.
    pub(super) fn bell(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// Silences the bell: the items it announced are taken by [`Feed::take`] next.
    pub(super) fn hush(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.bell.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }

    /// Takes at most `most` items; whether more may be left (the bell will not ring again
    /// for them).
    pub(super) fn take(&self, most: usize, mut each: impl FnMut(T) -> bool) -> Taken {
        for _ in 0..most {
            match self.rx.try_recv() {
                Ok(item) => {
                    if !each(item) {
                        return Taken::Stop;
                    }
                }
                Err(TryRecvError::Empty) => return Taken::All,
                Err(TryRecvError::Disconnected) => return Taken::All,
            }
        }
        Taken::More
    }
}

/// What [`Feed::take`] left.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// The queue is empty.
    All,
    /// It stopped at its bound; more may wait.
    More,
    /// The caller's handler asked to stop.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rings(feed: &Feed<u32>) -> bool {
        crate::linux::sys::wait_readable(std::os::fd::AsRawFd::as_raw_fd(&feed.bell()), 0).unwrap()
    }

    #[test]
    fn the_bell_rings_only_when_something_was_queued() {
        let (ringer, feed) = Feed::<u32>::new(4).unwrap();
        assert!(!rings(&feed), "a quiet queue must not wake the relay");
        let helper = ringer.clone();
        std::thread::spawn(move || assert!(helper.send(7)))
            .join()
            .unwrap();
        assert!(rings(&feed));
        feed.hush();
        assert!(!rings(&feed));
        let mut got = Vec::new();
        assert_eq!(
            feed.take(8, |i| {
                got.push(i);
                true
            }),
            Taken::All
        );
        assert_eq!(got, vec![7]);
    }

    #[test]
    fn taking_is_bounded_per_turn() {
        let (ringer, feed) = Feed::<u32>::new(8).unwrap();
        for i in 0..5 {
            assert!(ringer.send(i));
        }
        let mut got = Vec::new();
        assert_eq!(
            feed.take(3, |i| {
                got.push(i);
                true
            }),
            Taken::More
        );
        assert_eq!(
            feed.take(3, |i| {
                got.push(i);
                true
            }),
            Taken::All
        );
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        drop(feed);
        assert!(!ringer.send(9), "a relay that has gone takes nothing");
    }
}
