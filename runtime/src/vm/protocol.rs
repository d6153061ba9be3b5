//! The host <-> guest-agent protocol: length-prefixed JSON messages over any byte stream (a
//! virtio-console port or a vsock stream). Every frame is a 4-byte big-endian length and an
//! [`Envelope`] carrying the protocol version, so an agent of another version is recognised at
//! the first message and refused by name rather than misread.
//!
//! The host sends requests with ids; the agent answers each with a response of the same id and
//! sends events (workload output, exits) with id 0 whenever they happen.

use std::io::{Read, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change (2: `cp` streams through a copy process; 3: `cp` with
/// a stopped VM mounts its root without a workload).
pub const PROTOCOL_VERSION: u32 = 3;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// The most bytes of a `cp` archive one `Input` frame carries (base64 makes a third more).
pub const COPY_CHUNK: usize = 256 << 10;
/// The virtio-console port name the agent listens on.
pub const AGENT_PORT_NAME: &str = "capsa.agent";
/// The vsock port the agent listens on where the engine offers vsock.
pub const AGENT_VSOCK_PORT: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// The request this answers (0 for events).
    pub id: u64,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    Request(Request),
    Response(Response),
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The first message: the agent answers with its own version and kernel.
    Hello,
    /// Mount the root, write the container's files, set up its cgroup and process; not started.
    Create(Box<CreateRequest>),
    /// Release the created workload.
    Start,
    /// Mount the container's root (layers over the writable layer, the latter checked first)
    /// without creating its workload: what `cp` with a stopped VM copies from and to.
    MountRoot(Box<CreateRequest>),
    /// Run another process in the workload's namespaces, cgroup and seccomp (`exec`); its
    /// output and exit come as events under `process`.
    Exec(Box<ExecRequest>),
    /// Send a signal to the workload (or an exec'd process).
    Signal { process: String, signal: i32 },
    /// Bytes for a process's stdin.
    Input { process: String, data: Bytes },
    /// Close a process's stdin.
    CloseInput { process: String },
    /// The guest's and the workload's resource counters.
    Stats,
    /// The workload's processes as `ps -ef` lists them (`top`).
    Top,
    /// The terminal's window size for a workload started with `-t`.
    Resize {
        process: String,
        rows: u16,
        cols: u16,
    },
    /// Freeze (`true`) or thaw the workload's cgroup (`pause`, `unpause`).
    Freeze { frozen: bool },
    /// `cp` out: a copy process (in the workload's root, or the one `MountRoot` mounted) writes `path` as a tar
    /// stream: its `Output` on stdout is the archive, on stderr why it failed, then `Exited`.
    CopyOut { process: String, path: String },
    /// `cp` in: a copy process extracts the tar stream sent to it as `Input` (ended by
    /// `CloseInput`) at `path` (`as_is`: into `path`, as for a tar stream given on stdin).
    CopyIn {
        process: String,
        path: String,
        as_is: bool,
    },
    /// Unmount, sync and power off.
    Shutdown,
    /// `attach`: the workload's output from now on, and with `stdin` the client's input for
    /// it. Served by the VM's monitor on its control socket; never sent to the agent.
    Attach { stdin: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Hello {
        agent: String,
        kernel: String,
    },
    Ok,
    Error {
        kind: ErrorKind,
        message: String,
    },
    Stats(GuestStats),
    /// A header and one line per process.
    Top(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or not valid now (e.g. Start before Create).
    BadRequest,
    /// Setting up the root file system or the devices failed.
    Storage,
    /// The isolation core refused or failed (namespaces, cgroups, seccomp, exec).
    Isolation,
    /// No such process.
    NotFound,
    /// Anything else inside the guest.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Output {
        process: String,
        stream: Stream,
        data: Bytes,
    },
    /// The process exited: its status as a shell reports it (128+signal when killed).
    Exited {
        process: String,
        code: i32,
        oom_killed: bool,
    },
}

impl Event {
    /// The process the event is about.
    pub fn process(&self) -> &str {
        match self {
            Event::Output { process, .. } | Event::Exited { process, .. } => process,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Everything the agent needs to create the workload. The OCI spec is built on the host exactly
/// as for a container; paths in it that only exist on the host are replaced by `files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub spec: oci_spec::runtime::Spec,
    /// Block-device serials of the image's layers (erofs, read-only), top layer first.
    pub layers: Vec<String>,
    /// Block-device serial of the writable layer's ext4 disk.
    pub upper: String,
    /// Files the host prepared (/etc/hosts, /etc/hostname, /etc/resolv.conf), by path in
    /// the container.
    pub files: Vec<GuestFile>,
    /// eth0's configuration, if the VM has a network device.
    pub network: Option<GuestNetwork>,
    /// `-v` volumes: disks the agent mounts where the spec's bind mounts take them from.
    #[serde(default)]
    pub volumes: Vec<GuestVolume>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestVolume {
    /// Block-device serial of the volume's disk.
    pub serial: String,
    /// `erofs` (read-only volume) or `ext4`.
    pub fstype: String,
    /// Where in the guest the agent mounts it (the source of the spec's bind mount).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The name events of this process carry.
    pub process: String,
    /// Args, env, cwd: the container's process with `exec`'s changes.
    pub spec_process: oci_spec::runtime::Process,
    /// `-u`, or the image's user.
    pub user: String,
    /// `-i`: the process reads `Input` (else its stdin is empty).
    #[serde(default)]
    pub interactive: bool,
    /// `-t`: the process gets a pty (its output comes as stdout; `Resize` sets its size).
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub guest_memory_total: u64,
    pub guest_memory_available: u64,
}

/// Bytes carried as base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the agent connection closed")]
    Closed,
    #[error("agent connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("a {0}-byte frame is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the other side speaks agent protocol version {theirs}, this capsa speaks {PROTOCOL_VERSION}; rebuild the guest agent and capsa together")]
    Version { theirs: u32 },
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, id: u64, message: Message) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(&Envelope {
        version: PROTOCOL_VERSION,
        id,
        message,
    })?;
    if bytes.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend((bytes.len() as u32).to_be_bytes());
    frame.extend(bytes);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame; a version other than ours is an error.
pub fn read_frame(r: &mut impl Read) -> Result<Envelope, ProtocolError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Closed
        } else {
            e.into()
        }
    })?;
    // The version is checked before the message, whose shape may differ between versions.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let v: VersionOnly = serde_json::from_slice(&buf)?;
    if v.version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version { theirs: v.version });
    }
    Ok(serde_json::from_slice(&buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let out = Message::Event(Event::Output {
            process: "init".into(),
            stream: Stream::Stderr,
            data: Bytes(vec![0, 1, 255]),
        });
        write_frame(&mut buf, 0, out.clone()).unwrap();
        write_frame(
            &mut buf,
            7,
            Message::Request(Request::Signal {
                process: "init".into(),
                signal: 15,
            }),
        )
        .unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame(&mut r).unwrap().message, out);
        assert_eq!(read_frame(&mut r).unwrap().id, 7);
        assert!(matches!(read_frame(&mut r), Err(ProtocolError::Closed)));
    }

    #[test]
    fn another_version_or_garbage_is_named() {
        let body = br#"{"version":99,"id":1,"message":{"future":{}}}"#;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        let e = read_frame(&mut frame.as_slice()).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend([0; 8]);
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(ProtocolError::TooLarge(_))
        ));
        let mut junk = 4u32.to_be_bytes().to_vec();
        junk.extend(b"}}}}");
        assert!(matches!(
            read_frame(&mut junk.as_slice()),
            Err(ProtocolError::Malformed(_))
        ));
        let mut short = 10u32.to_be_bytes().to_vec();
        short.extend(b"{}");
        assert!(matches!(
            read_frame(&mut short.as_slice()),
            Err(ProtocolError::Closed)
        ));
    }
}
