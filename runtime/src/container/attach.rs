//! The attach socket of a container with a terminal (`containers/<id>/attach.sock`): its
//! monitor holds the pty and serves any number of clients (`run -it`, `start -ai`,
//! `attach`) in the one attach wire format, the protocol's frames (see
//! [`super::session`]): `Input`, `Resize` and `CloseInput` from a client, the terminal's
//! output as `Output` events to every client.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// File name of the socket in the container's folder.
const SOCKET: &str = "attach.sock";

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
