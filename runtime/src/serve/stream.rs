//! What the streaming endpoints share: Docker's 8-byte multiplexing of stdout and stderr,
//! bounded channels between the engine's blocking side and a response body (a slow
//! reader holds the writer, a reader that goes stops it), and hijacked connections
//! (`attach`, `exec/{id}/start`: `101`, `Upgrade: tcp`, then raw bytes both ways).

use super::http::{ApiError, ApiVersion};
use crate::container::session::Stream;
use crate::container::ContainerError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::sync::mpsc;

/// Chunks in flight between a blocking writer and a response body or connection: a slow
/// reader holds at most this many chunks (of at most [`CHUNK`] bytes) in the server.
pub const IN_FLIGHT: usize = 8;

/// Bytes gathered before a chunk is sent on.
pub const CHUNK: usize = 32 << 10;

/// The engine's error as the API answers it (the one mapping, [`super::errors`]).
pub fn engine_error(e: ContainerError) -> ApiError {
    ApiError::from(e)
}

/// One chunk of `stream` as Docker's multiplexed streams carry it: the stream (1 stdout,
/// 2 stderr), three zero bytes, the length (big-endian u32), the bytes.
pub fn multiplexed(stream: Stream, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.push(match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Output for a client: multiplexed frames (no terminal) or the bytes as they are.
pub fn framed(multiplex: bool, stream: Stream, data: &[u8]) -> Vec<u8> {
    if multiplex {
        multiplexed(stream, data)
    } else {
        data.to_vec()
    }
}

/// The sending end of a streamed response body.
pub type BodySender = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A response body fed through a bounded channel; its sender, for the blocking side.
pub fn channel_body() -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (tx, body)
}

/// A `std::io::Write` into a response body: it blocks while the reader is slow and fails
/// once the reader has gone, so the engine's side stops. Call only on a blocking thread.
pub struct BodyWriter {
    tx: BodySender,
    buf: Vec<u8>,
}

impl BodyWriter {
    pub fn new(tx: BodySender) -> BodyWriter {
        BodyWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    /// Whether the reader has gone.
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Ends the body with an error (the client sees a broken stream, not a clean end).
    pub fn fail(self, message: String) {
        let _ = self.tx.blocking_send(Err(std::io::Error::other(message)));
    }
}

impl std::io::Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// A streamed 200 response of `content_type`.
pub fn streamed(content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The content type of a hijacked stream: multiplexed without a terminal from API 1.42
/// on, raw otherwise.
fn hijack_content_type(tty: bool, version: ApiVersion) -> &'static str {
    if !tty && version.at_least(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    }
}

/// The `101` answer that hands the connection over to the stream.
pub fn upgrade_response(tty: bool, version: ApiVersion) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(hijack_content_type(tty, version)),
    );
    response
}

/// The blocking side's ends of a hijacked connection: output to send, input to read (a
/// socket: its end of file is the client's half-close), and a way to tell that the client
/// has gone altogether.
pub struct Wires {
    /// Chunks for the client, already framed.
    pub output: mpsc::Sender<Vec<u8>>,
    /// The client's input (end of file: the client closed its writing side).
    pub input: std::os::unix::net::UnixStream,
    /// The client's own socket (`POLLHUP` there: the client has gone both ways), when the
    /// listener kept it (see [`super::listen::ClientSocket`]).
    pub peer: Option<std::sync::Arc<OwnedFd>>,
    /// Told once the `101` answer is on its way and the connection taken over (closed
    /// unheard when the client went first).
    pub upgraded: std::sync::mpsc::Receiver<()>,
}

impl Wires {
    /// Waits until the connection is taken over; false when the client went first.
    pub fn wait_upgraded(&self) -> bool {
        self.upgraded
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_ok()
    }

    /// Whether the client has gone (its connection hung up, or the writer stopped).
    pub fn gone(&self) -> bool {
        if self.output.is_closed() {
            return true;
        }
        self.peer.as_ref().is_some_and(|fd| hung_up(fd.as_raw_fd()))
    }

    /// The raw descriptor of the client's socket (-1: not known, which poll ignores), to
    /// poll for `POLLHUP`.
    pub fn peer_fd(&self) -> i32 {
        self.peer.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }
}

/// Whether socket `fd` reports a hang-up (both directions closed by the peer).
pub fn hung_up(fd: i32) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    }];
    // SAFETY: one pollfd that lives across the call; a zero timeout does not block.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
    n > 0 && p[0].revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// Takes over the connection of `request` once the `101` has gone out, and joins it to
/// the blocking side: chunks from the returned [`Wires::output`] are written to the
/// client, what the client sends arrives on [`Wires::input`], the client's half-close
/// closes it. When the output ends the connection is closed.
pub fn hijack(request: &mut axum::extract::Request) -> Result<Wires, ApiError> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<super::listen::ClientSocket>>()
        .and_then(|info| info.0 .0.clone());
    let on_upgrade = hyper::upgrade::on(&mut *request);
    let (output, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| ApiError::internal(format!("socket pair: {e}")))?;
    theirs
        .set_nonblocking(true)
        .map_err(|e| ApiError::internal(format!("socket pair: {e}")))?;
    let theirs = tokio::net::UnixStream::from_std(theirs)
        .map_err(|e| ApiError::internal(format!("socket pair: {e}")))?;
    let peer_slot = peer.clone();
    let (upgraded_tx, upgraded) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(upgraded) = on_upgrade.await else {
            return; // the client went before the answer: dropping `rx` stops the writer
        };
        let (mut from_client, mut to_client, early) = split_client(upgraded);
        let _ = upgraded_tx.send(());
        let (input_r, mut input_w) = theirs.into_split();
        drop(input_r); // nothing comes back on it
        let reader = tokio::spawn(async move {
            if !early.is_empty() && input_w.write_all(&early).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match from_client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // The client's half-close: the workload's input ends.
            let _ = input_w.shutdown().await;
            // Held until the output ends, so that the blocking side sees no early hang-up.
            std::future::pending::<()>().await;
        });
        let mut first = true;
        while let Some(chunk) = rx.recv().await {
            if std::mem::take(&mut first) {
                headers_read(peer_slot.as_deref()).await;
            }
            if to_client.write_all(&chunk).await.is_err() {
                break;
            }
            let _ = to_client.flush().await;
        }
        drop(rx);
        let _ = to_client.shutdown().await;
        reader.abort();
    });
    Ok(Wires {
        output,
        input: ours,
        peer,
        upgraded,
    })
}

/// Waits (at most 200 ms) until the client has read the `101` answer off its socket before
/// the stream's first bytes follow. A client that reads the answer's headers through a
/// buffer and the stream from the bare socket (docker-py) loses whatever arrived with the
/// headers: a stopped container's logs, ready at once, came in that same read 4 times in 5.
/// The kernel counts what the peer has not read yet (`SIOCOUTQ` on a Unix socket).
async fn headers_read(peer: Option<&OwnedFd>) {
    let Some(fd) = peer.map(|fd| fd.as_raw_fd()) else {
        return;
    };
    for _ in 0..200 {
        let mut unread: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int through the pointer, which lives across the call;
        // the descriptor is the duplicate the caller holds for the connection's lifetime.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unread) };
        if rc != 0 || unread == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

type ClientRead = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type ClientWrite = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The upgraded connection's two directions, and the bytes the server had read past the
/// request (none when hyper's own wrapper replays them).
fn split_client(upgraded: hyper::upgrade::Upgraded) -> (ClientRead, ClientWrite, Bytes) {
    use hyper_util::rt::TokioIo;
    match upgraded.downcast::<TokioIo<tokio::net::UnixStream>>() {
        Ok(parts) => {
            let (r, w) = parts.io.into_inner().into_split();
            (Box::new(r), Box::new(w), parts.read_buf)
        }
        Err(upgraded) => {
            let (r, w) = tokio::io::split(TokioIo::new(upgraded));
            (Box::new(r), Box::new(w), Bytes::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multiplexed_frame_has_dockers_header() {
        assert_eq!(
            multiplexed(Stream::Stderr, b"hi\n"),
            [2, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']
        );
        assert_eq!(
            multiplexed(Stream::Stdout, b"")[..8],
            [1, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(framed(false, Stream::Stderr, b"raw"), b"raw");
    }

    #[test]
    fn hijacked_streams_are_multiplexed_without_a_terminal_from_1_42() {
        let tty = hijack_content_type(true, ApiVersion(1, 50));
        assert_eq!(tty, "application/vnd.docker.raw-stream");
        let old = hijack_content_type(false, ApiVersion(1, 41));
        assert_eq!(old, "application/vnd.docker.raw-stream");
        let plain = hijack_content_type(false, ApiVersion(1, 42));
        assert_eq!(plain, "application/vnd.docker.multiplexed-stream");
    }
}
