//! Where `capsa serve` listens: a Unix socket (0660 root:group with `--group`, else 0600,
//! so only root, or members of a group the admin chose, reach an API that is as powerful
//! as root), or a TCP address only when one is named. One server per state root: a lock
//! in the root's locks folder refuses a second.

use super::ServeOptions;
use crate::root::StateRoot;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// One address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `unix:///path/to.sock`
    Unix(PathBuf),
    /// `tcp://127.0.0.1:2375`: plain HTTP, for those who ask for it by name.
    Tcp(std::net::SocketAddr),
}

impl Default for Host {
    fn default() -> Host {
        Host::Unix(PathBuf::from(super::DEFAULT_SOCKET))
    }
}

impl std::str::FromStr for Host {
    type Err = String;

    fn from_str(s: &str) -> Result<Host, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("{s}: a unix socket needs an absolute path"));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr
                .trim_end_matches('/')
                .parse()
                .map(Host::Tcp)
                .map_err(|e| format!("{s}: not an IP address and port ({e})"));
        }
        if s.starts_with('/') {
            return Ok(Host::Unix(PathBuf::from(s)));
        }
        Err(format!(
            "{s}: unsupported address (use unix:///path or tcp://IP:PORT)"
        ))
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another capsa serve already serves the state root {0} (lock {1})")]
    AlreadyServing(PathBuf, PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("group {0}: no such group")]
    NoSuchGroup(String),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("serving {host}: {source}")]
    Serve {
        host: String,
        source: std::io::Error,
    },
}

/// Takes the root's serve lock (held while the returned file is open).
pub fn lock_root(root: &StateRoot) -> Result<std::fs::File, ServeError> {
    let path = root.locks_dir().join("serve");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServeError::Io {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(ServeError::AlreadyServing(root.dir().to_path_buf(), path));
    }
    Ok(file)
}

/// A bound listener.
pub enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener, std::net::SocketAddr),
}

/// Binds every host of `options` (the default socket when none is given).
pub async fn bind_all(options: &ServeOptions) -> Result<Vec<Listener>, ServeError> {
    let gid = match &options.group {
        Some(name) => Some(group_id(name)?),
        None => None,
    };
    let hosts = if options.hosts.is_empty() {
        vec![Host::default()]
    } else {
        options.hosts.clone()
    };
    let mut listeners = Vec::new();
    for host in hosts {
        listeners.push(match host {
            Host::Unix(path) => Listener::Unix(bind_unix(&path, gid)?, path),
            Host::Tcp(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Serve {
                        host: addr.to_string(),
                        source,
                    })?;
                Listener::Tcp(l, addr)
            }
        });
    }
    Ok(listeners)
}

/// Binds a Unix socket at `path` with mode 0600 (0660 and group `gid` when given). A
/// stale socket left by a server that died is replaced; the root lock already says no
/// other server of this root runs.
fn bind_unix(
    path: &std::path::Path,
    gid: Option<u32>,
) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ServeError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )))
        }
        Err(_) => {}
    }
    // The socket is made under a umask that leaves it 0600 from its first instant, so no
    // client can connect in the window before the chmod below.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io)?;
    if let Some(gid) = gid {
        // Through a descriptor of the socket itself: a path in a folder others can write
        // could be swapped for a symlink between the bind and the chown.
        use std::os::unix::fs::OpenOptionsExt;
        let socket = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        let meta = socket.metadata().map_err(io)?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            return Err(io(std::io::Error::other(
                "replaced by something else than the socket",
            )));
        }
        let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&socket));
        std::os::unix::fs::chown(&by_fd, Some(0), Some(gid)).map_err(io)?;
        std::fs::set_permissions(&by_fd, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    }
    listener.set_nonblocking(true).map_err(io)?;
    tokio::net::UnixListener::from_std(listener).map_err(io)
}

/// The id of group `name` (or a number given as is).
fn group_id(name: &str) -> Result<u32, ServeError> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| ServeError::NoSuchGroup(name.to_string()))
}

/// The client's socket of one connection, duplicated when it is accepted and kept while
/// any of its requests lives: a hijacked stream polls it for the client's hang-up and asks
/// it whether the client has read the `101` answer yet (hyper's upgraded connection hides
/// the socket behind its own wrapper).
#[derive(Clone)]
pub struct ClientSocket(pub Option<std::sync::Arc<std::os::fd::OwnedFd>>);

impl ClientSocket {
    fn of(fd: std::os::fd::BorrowedFd<'_>) -> ClientSocket {
        ClientSocket(fd.try_clone_to_owned().ok().map(std::sync::Arc::new))
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for ClientSocket
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        ClientSocket::of(std::os::fd::AsFd::as_fd(stream.io()))
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientSocket
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientSocket::of(std::os::fd::AsFd::as_fd(stream.io()))
    }
}

/// Serves `app` on every listener until SIGINT or SIGTERM.
pub async fn serve_until_signal<S>(listeners: Vec<Listener>, app: S) -> Result<(), ServeError>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let app = app.clone();
        match listener {
            Listener::Unix(l, path) => {
                let service =
                    axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                        ClientSocket,
                    >(app);
                tasks.spawn(async move {
                    axum::serve(l, service)
                        .await
                        .map_err(|source| ServeError::Serve {
                            host: format!("unix://{}", path.display()),
                            source,
                        })
                });
            }
            Listener::Tcp(l, addr) => {
                let service =
                    axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                        ClientSocket,
                    >(app);
                tasks.spawn(async move {
                    axum::serve(l, service)
                        .await
                        .map_err(|source| ServeError::Serve {
                            host: format!("tcp://{addr}"),
                            source,
                        })
                });
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Runtime)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        Some(done) = tasks.join_next() => {
            done.unwrap_or(Ok(()))
        }
    }
}

/// Removes the Unix sockets of `options` after the server stops.
pub fn remove_sockets(options: &ServeOptions) {
    let hosts = if options.hosts.is_empty() {
        vec![Host::default()]
    } else {
        options.hosts.clone()
    };
    for host in hosts {
        if let Host::Unix(path) = host {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_as_docker_writes_them() {
        assert_eq!(
            "unix:///run/x.sock".parse::<Host>().unwrap(),
            Host::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:2375".parse::<Host>().unwrap(),
            Host::Tcp("127.0.0.1:2375".parse().unwrap())
        );
        assert!("unix://rel.sock".parse::<Host>().is_err());
        assert!("ssh://host".parse::<Host>().is_err());
    }
}
