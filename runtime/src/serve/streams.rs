//! The blocking pool shared between short requests and streams.
//!
//! Every handler calls the engine on one of the runtime's [`BLOCKING_THREADS`] blocking
//! threads. A short request gives its thread back at once; a stream (`events`, `logs`,
//! `stats`, `attach`, an exec's session, `wait`, a body read or written as the client
//! goes) holds one for as long as its client or its workload wants. Streams therefore
//! take a [`Slot`] first, one of [`MAX_STREAMS`], and hold it on their thread for its
//! life: the other threads stay for short requests, so `docker ps` is answered however
//! many streams are open. A stream beyond the cap is refused with a 503 that names the
//! limit, before anything of it starts.

use super::http::{ApiError, ApiResult};
use axum::http::StatusCode;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Threads of the runtime's blocking pool.
pub const BLOCKING_THREADS: usize = 256;
/// Most streams open at once; the pool's other threads (64) serve short requests.
pub const MAX_STREAMS: usize = 192;

/// The slots of the server's streams.
pub struct Streams(Arc<Semaphore>);

impl Default for Streams {
    fn default() -> Self {
        Streams(Arc::new(Semaphore::new(MAX_STREAMS)))
    }
}

/// One stream's place among [`MAX_STREAMS`], given back when dropped (when the stream's
/// job ends).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Streams {
    /// A slot for one more stream, or a 503 naming the limit when all are taken.
    pub fn take(&self) -> ApiResult<Slot> {
        match self.0.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot { _permit: permit }),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many open streams: the server serves at most {MAX_STREAMS} at once \
                     (events, logs, stats, attach, exec, wait, uploads and downloads); \
                     close one and retry"
                ),
            )),
        }
    }
}

/// Runs a stream's `job` on the blocking pool, holding `slot` until it returns.
pub fn spawn<F>(slot: Slot, job: F)
where
    F: FnOnce() + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        job()
    });
}

/// [`super::http::blocking`] for a job that lasts as long as its client wants (a request
/// body read as it arrives), holding `slot` until it returns.
pub async fn blocking<T, F>(slot: Slot, f: F) -> ApiResult<T>
where
    F: FnOnce() -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    super::http::blocking(move || {
        let _slot = slot;
        f()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_at_the_cap_and_come_back_when_dropped() {
        let streams = Streams::default();
        let held: Vec<Slot> = (0..MAX_STREAMS).map(|_| streams.take().unwrap()).collect();
        let refused = streams.take().err().expect("a slot past the cap");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.message.contains(&MAX_STREAMS.to_string()));
        drop(held);
        assert!(streams.take().is_ok());
    }
}
