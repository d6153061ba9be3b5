//! The attach socket of a container with a terminal (`containers/<id>/attach.sock`): its
//! monitor holds the pty and serves any number of clients (`run -it`, `start -ai`,
//! `attach`). Monitor -> client: the terminal's output, raw. Client -> monitor: frames of
//! `[kind u8][length u32 LE][payload]`, kind 0 keyboard input, kind 1 a window size
//! (rows u16 LE, columns u16 LE).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Frame kind: bytes for the terminal.
const FRAME_INPUT: u8 = 0;
/// Frame kind: a new window size.
const FRAME_RESIZE: u8 = 1;
/// Bytes of a frame header.
const HEADER: usize = 5;
/// Largest payload accepted (a client sending more is cut off).
const MAX_PAYLOAD: usize = 1 << 20;
/// File name of the socket in the container's folder.
const SOCKET: &str = "attach.sock";

/// A message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Keyboard input.
    Input(Vec<u8>),
    /// The client's window size (rows, columns).
    Resize(u16, u16),
}

fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encodes keyboard input.
pub fn input(data: &[u8]) -> Vec<u8> {
    encode(FRAME_INPUT, data)
}

/// Encodes a window size.
pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_le_bytes().to_vec();
    p.extend_from_slice(&cols.to_le_bytes());
    encode(FRAME_RESIZE, &p)
}

/// Reassembles frames from a byte stream.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame; `Err` for a malformed stream (the client is dropped).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[1..HEADER].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("frame of {len} bytes"));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload: Vec<u8> = self.buf.drain(..HEADER + len).skip(HEADER).collect();
        match (kind, payload.len()) {
            (FRAME_INPUT, _) => Ok(Some(Frame::Input(payload))),
            (FRAME_RESIZE, 4) => Ok(Some(Frame::Resize(
                u16::from_le_bytes([payload[0], payload[1]]),
                u16::from_le_bytes([payload[2], payload[3]]),
            ))),
            _ => Err(format!("unknown frame kind {kind}")),
        }
    }
}

/// The socket's path, through a descriptor of the folder: socket paths are limited to 108
/// bytes, and a state directory may be deep.
fn short_path(dir: &std::os::fd::OwnedFd) -> String {
    format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())
}

fn open_dir(dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
    crate::linux::mountapi::open_path(dir)
}

/// Creates the listening socket in the container's folder `dir`; only root may connect
/// (connecting needs write permission on the socket file).
pub fn listen(dir: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let d = open_dir(dir)?;
    let _ = std::fs::remove_file(dir.join(SOCKET));
    let listener = UnixListener::bind(short_path(&d))?;
    std::fs::set_permissions(
        short_path(&d),
        std::fs::Permissions::from_mode(crate::root::PRIVATE_FILE),
    )?;
    Ok(listener)
}

/// Connects to the attach socket in the container's folder `dir`.
pub fn connect(dir: &Path) -> io::Result<UnixStream> {
    let d = open_dir(dir)?;
    UnixStream::connect(short_path(&d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_being_split_and_joined() {
        let mut stream = input(b"ls\r");
        stream.extend(resize(40, 120));
        let mut r = FrameReader::default();
        r.push(&stream[..3]);
        assert_eq!(r.next_frame().unwrap(), None);
        r.push(&stream[3..]);
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Input(b"ls\r".to_vec()))
        );
        assert_eq!(r.next_frame().unwrap(), Some(Frame::Resize(40, 120)));
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut r = FrameReader::default();
        r.push(&[9, 0, 0, 0, 0]);
        assert!(r.next_frame().is_err());
        let mut r = FrameReader::default();
        r.push(&[0, 0xff, 0xff, 0xff, 0x7f]);
        assert!(r.next_frame().is_err());
    }
}
