//! Messages between the parent and the container's init over a SOCK_SEQPACKET socket pair:
//! one datagram per message, JSON-encoded, so a message is never split or merged.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Largest message (an error text).
const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one message carries (one per image layer).
pub const MAX_FDS: usize = 128;

/// What the parent and the init tell each other.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Message {
    /// Parent -> init (user namespaces only): the ID maps are written; the idmapped layers
    /// travel with this message.
    Go,
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

/// Sends one message.
pub fn send(fd: &OwnedFd, msg: &Message) -> io::Result<()> {
    let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
    nix::unistd::write(fd, &data).map_err(io::Error::from)?;
    Ok(())
}

/// Sends one message with descriptors attached (SCM_RIGHTS).
pub fn send_with_fds(fd: &OwnedFd, msg: &Message, fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let iov = [std::io::IoSlice::new(&data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(io::Error::from)?;
    Ok(())
}

/// Receives one message and the descriptors attached to it (at most [`MAX_FDS`]).
pub fn recv_with_fds(fd: &OwnedFd) -> io::Result<(Message, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
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
        (msg.bytes, fds)
    };
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let msg = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok((msg, fds))
}

/// Receives one message, waiting at most `timeout_ms` (-1: forever). A closed peer is
/// `UnexpectedEof`; a timeout is `TimedOut`.
pub fn recv(fd: &OwnedFd, timeout_ms: i32) -> io::Result<Message> {
    if !crate::linux::sys::wait_readable(fd.as_raw_fd(), timeout_ms)? {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_slice(&buf[..n]).map_err(io::Error::other)
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
}
