//! Messages between the parent and the container's init over a SOCK_SEQPACKET socket pair:
//! one datagram per message, JSON-encoded, so a message is never split or merged.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Largest message (an error text), encoded. [`send`] shortens an error text that would not
/// fit; [`recv`] refuses a longer datagram rather than parse a cut one.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most bytes of an error text kept when its message would exceed [`MAX_MESSAGE`]: JSON
/// may write a byte as six (`\u001b`), and the rest of the message needs a little room.
const MAX_ERROR_TEXT: usize = MAX_MESSAGE / 6 - 64;
/// Most descriptors one message carries (one per image layer).
pub const MAX_FDS: usize = 128;

/// What the parent and the init tell each other.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Message {
    /// Parent -> init (user namespaces only): the ID maps are written; the idmapped layers
    /// travel with this message.
    Go,
    /// Init -> parent: the container's mounts are made and the root is not yet pivoted
    /// into; the runtime runs its hooks now (only asked for when the config has some) and
    /// answers `Go`, or `Error` to stop.
    Mounted,
    /// Init -> parent: the root file system and everything before exec are in place.
    Ready,
    /// Init -> parent: set-up failed.
    Error(String),
}

/// A connected socket pair: (parent's end, init's end).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// `msg` as one datagram: JSON, at most [`MAX_MESSAGE`] bytes. An error text too long
/// for that (it may quote a field of any size) is cut, and says how much was cut.
fn encode(msg: &Message) -> io::Result<Vec<u8>> {
    let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
    match msg {
        Message::Error(text) if data.len() > MAX_MESSAGE => {
            let mut end = MAX_ERROR_TEXT.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let cut = Message::Error(format!(
                "{}... ({} more bytes cut)",
                &text[..end],
                text.len() - end
            ));
            serde_json::to_vec(&cut).map_err(io::Error::other)
        }
        _ => Ok(data),
    }
}

/// Sends one message.
pub fn send(fd: &OwnedFd, msg: &Message) -> io::Result<()> {
    let data = encode(msg)?;
    nix::unistd::write(fd, &data).map_err(io::Error::from)?;
    Ok(())
}

/// Parses a received datagram of `n` bytes (`truncated`: the kernel cut it to the buffer).
fn decode(buf: &[u8], n: usize, truncated: bool) -> io::Result<Message> {
    if truncated || n > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "a message over the channel's limit of {MAX_MESSAGE} bytes"
        )));
    }
    serde_json::from_slice(&buf[..n]).map_err(io::Error::other)
}

/// Sends one message with descriptors attached (SCM_RIGHTS).
pub fn send_with_fds(fd: &OwnedFd, msg: &Message, fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let data = encode(msg)?;
    let iov = [std::io::IoSlice::new(&data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(io::Error::from)?;
    Ok(())
}

/// Receives one message and the descriptors attached to it (at most [`MAX_FDS`]).
pub fn recv_with_fds(fd: &OwnedFd) -> io::Result<(Message, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    // One byte more than the largest message: a longer datagram shows as cut.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, truncated, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: descriptors just received are new and owned by nobody else.
                fds.extend(list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), fds)
    };
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok((decode(&buf, n, truncated)?, fds))
}

/// Receives one message and the descriptors attached to it, waiting at most `timeout_ms`
/// (-1: forever). A closed peer is `UnexpectedEof`; a timeout is `TimedOut`.
pub fn recv_with_fds_within(fd: &OwnedFd, timeout_ms: i32) -> io::Result<(Message, Vec<OwnedFd>)> {
    if !crate::linux::sys::wait_readable(fd.as_raw_fd(), timeout_ms)? {
        return Err(io::ErrorKind::TimedOut.into());
    }
    recv_with_fds(fd)
}

/// Receives one message, waiting at most `timeout_ms` (-1: forever). A closed peer is
/// `UnexpectedEof`; a timeout is `TimedOut`.
pub fn recv(fd: &OwnedFd, timeout_ms: i32) -> io::Result<Message> {
    if !crate::linux::sys::wait_readable(fd.as_raw_fd(), timeout_ms)? {
        return Err(io::ErrorKind::TimedOut.into());
    }
    // One byte more than the largest message: a longer datagram fills it (SOCK_SEQPACKET
    // cuts what does not fit).
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let n = loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    decode(&buf, n, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_whole() {
        let (a, b) = pair().unwrap();
        send(&a, &Message::Error("no such file: /x".into())).unwrap();
        send(&a, &Message::Ready).unwrap();
        assert_eq!(
            recv(&b, 1000).unwrap(),
            Message::Error("no such file: /x".into())
        );
        assert_eq!(recv(&b, 1000).unwrap(), Message::Ready);
        drop(a);
        assert_eq!(
            recv(&b, 1000).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn an_error_text_of_any_size_crosses_cut_to_the_limit() {
        let (a, b) = pair().unwrap();
        // Control characters: JSON writes each as six bytes.
        for text in [
            "a".repeat(70_000),
            "\u{1b}".repeat(70_000),
            "é".repeat(40_000),
        ] {
            send(&a, &Message::Error(format!("unable to find user {text}"))).unwrap();
            let Message::Error(got) = recv(&b, 1000).unwrap() else {
                panic!("not an error")
            };
            assert!(got.starts_with("unable to find user "), "{}", &got[..40]);
            assert!(
                got.ends_with("more bytes cut)"),
                "{}",
                &got[got.len() - 40..]
            );
            assert!(serde_json::to_vec(&Message::Error(got)).unwrap().len() <= MAX_MESSAGE);
        }
        send_with_fds(&a, &Message::Error("x".repeat(100_000)), &[]).unwrap();
        let (msg, _) = recv_with_fds(&b).unwrap();
        assert!(matches!(msg, Message::Error(t) if t.ends_with("more bytes cut)")));
    }

    #[test]
    fn a_datagram_over_the_limit_is_refused_not_parsed_cut() {
        let (a, b) = pair().unwrap();
        let big = format!("{{\"Error\":\"{}\"}}", "x".repeat(MAX_MESSAGE));
        nix::unistd::write(&a, big.as_bytes()).unwrap();
        let err = recv(&b, 1000).unwrap_err().to_string();
        assert!(err.contains("over the channel's limit"), "{err}");
    }
}
