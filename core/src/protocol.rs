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
/// a stopped VM mounts its root without a workload; 4: the host's clock on every request,
/// which an older agent would ignore and leave the guest in 1970; the disks' bytes in
/// `GuestStats`; 5: `Restored` after a VM template's restore, eth0's MAC in `GuestNetwork`;
/// 6: `Restored` carries no NIC flag, a `--network none` workload has its own namespace).
pub const PROTOCOL_VERSION: u32 = 6;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// The most bytes of a `cp` archive one `Input` frame carries (base64 makes a third more).
pub const COPY_CHUNK: usize = 256 << 10;
/// The virtio-console port name the agent listens on.
pub const AGENT_PORT_NAME: &str = "capsa.agent";
/// The vsock port the agent listens on where the engine offers vsock.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Where the initramfs holds capsa-init (the agent loads it from there before it leaves
/// the initramfs).
pub const INIT_PROGRAM_IN_GUEST: &str = "/capsa-init";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// The request this answers (0 for events).
    pub id: u64,
    pub message: Message,
    /// The host's wall clock when it sent this request, nanoseconds since the Unix epoch:
    /// the guest has no clock of its own that follows the host's (no RTC, and under QEMU's
    /// emulator only jiffies), so the agent sets its clock from this (see
    /// [`clock_correction`]). Absent on everything but the host's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_time_ns: Option<u64>,
}

/// The wall clock now, nanoseconds since the Unix epoch (None before 1970 or after 2554):
/// what the host stamps its requests with.
pub fn wall_clock_ns() -> Option<u64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
}

/// Where a guest clock reading `guest_ns` must be set given the host's stamp `host_ns`
/// on a request that just arrived (None: leave it). The stamp is earlier than the true
/// time by the channel's latency, so a guest clock behind it is surely behind and moves
/// forward to it; one ahead is moved back only beyond `MAX_AHEAD_NS`, so the latency never
/// turns the guest's clock back on every request.
pub fn clock_correction(guest_ns: u64, host_ns: u64) -> Option<u64> {
    const MAX_AHEAD_NS: u64 = 500_000_000;
    (guest_ns < host_ns || guest_ns - host_ns > MAX_AHEAD_NS).then_some(host_ns)
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
    /// The VM was restored from a template (a snapshot shared by many VMs): the agent mixes
    /// `entropy` (host random bytes) into the guest's RNG and reseeds it, so no two clones
    /// draw the same numbers, and probes the disks again (their capacity and read-only flag
    /// are this VM's, not the template's placeholders'), leaving empty slots unbound. Sent
    /// after `Hello`, before anything reads a disk or a random number for the workload.
    /// Without `nic` (`--network none`) the template's network device is unbound: the
    /// workload sees only `lo`, as in a VM booted without one.
    Restored { entropy: Bytes },
    /// Mount the root, write the container's files, set up its cgroup and process; not started.
    Create(Box<CreateRequest>),
    /// Release the created workload.
    Start,
    /// Release container `id` of a pod's VM (created with a `root_dir`).
    StartContainer { id: String },
    /// Remove container `id` of a pod's VM: its processes killed, its cgroup, its root and
    /// the copies of its bind sources removed (its ID can be used again).
    RemoveContainer { id: String },
    /// A pod container's root: a copy process extracts the tar stream sent to it as
    /// `Input` (ended by `CloseInput`) into `dir` under the pod's disk (a name, not a
    /// path: [`POD_ROOTS`]), keeping the entries' owners; its `Exited` says it is whole.
    Unpack { process: String, dir: String },
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
    /// `commit`: a copy process (in the agent's own mount namespace, where the writable
    /// disk is mounted) writes the overlay's upper directory as an image layer tar
    /// (`capsa_core::layer_diff`), leaving out `skipped` (paths relative to the root: the
    /// spec's mount points); its `Output` on stdout is the tar, then `Exited`.
    CopyOutLayer {
        process: String,
        skipped: Vec<String>,
    },
    /// `cp` in: a copy process extracts the tar stream sent to it as `Input` (ended by
    /// `CloseInput`) at `path` (`as_is`: into `path`, as for a tar stream given on stdin;
    /// `keep_owners`: `cp -a`, entries take the uid and gid the stream names).
    CopyIn {
        process: String,
        path: String,
        as_is: bool,
        #[serde(default)]
        keep_owners: bool,
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
    /// A pod container's root: the directory of that name under [`POD_ROOTS`], filled by
    /// `Unpack` (then `layers` and `upper` are not used, and the VM may hold several).
    #[serde(default)]
    pub root_dir: Option<String>,
}

/// Where in the guest the pod's disk (serial `pod`) holds its containers' roots.
pub const POD_ROOTS: &str = "/run/capsa/pod";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestVolume {
    /// Block-device serial of the volume's disk.
    pub serial: String,
    /// `erofs` (read-only volume) or `ext4`.
    pub fstype: String,
    /// Where in the guest the agent mounts it (the source of the spec's bind mount).
    pub path: String,
    /// Attached read-only (`:ro`): mounted so. A VM restored from a template keeps the
    /// flags its disks had in the template, so the agent cannot learn this from the disk.
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The name events of this process carry.
    pub process: String,
    /// The container it joins in a pod's VM (empty: the VM's first).
    #[serde(default)]
    pub container: String,
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
    /// eth0's MAC, set by the agent: a VM restored from a template has the template's.
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    pub cpu_ns: u64,
    /// Of `cpu_ns`, in user mode and in the kernel.
    #[serde(default)]
    pub cpu_user_ns: u64,
    #[serde(default)]
    pub cpu_kernel_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: Option<u64>,
    pub pids: u64,
    pub guest_memory_total: u64,
    pub guest_memory_available: u64,
    /// Bytes read from and written to the workload's disks (its layers, writable layer and
    /// volumes: every disk of the guest is the workload's).
    #[serde(default)]
    pub block_read: u64,
    #[serde(default)]
    pub block_write: u64,
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
        d.deserialize_str(Base64Visitor)
    }
}

/// Decodes the base64 text where the parser has it (in the frame, or its scratch buffer for
/// text with escapes), without an owned copy of it: a frame of output costs its decoded
/// bytes, not a second copy of its text.
struct Base64Visitor;

impl serde::de::Visitor<'_> for Base64Visitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("base64 text")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Bytes, E> {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes)
            .map_err(E::custom)
    }
}

impl Message {
    /// What the message is, for errors: its kind, never its content (which may be large,
    /// or text the other side chose).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request(_) => "a request",
            Message::Response(r) => r.kind(),
            Message::Event(Event::Output { .. }) => "an output event",
            Message::Event(Event::Exited { .. }) => "an exit event",
        }
    }
}

impl Response {
    /// What the answer is, for errors (see [`Message::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "a hello answer",
            Response::Ok => "an ok answer",
            Response::Error { .. } => "an error answer",
            Response::Stats(_) => "a stats answer",
            Response::Top(_) => "a top answer",
        }
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
    write_envelope(
        w,
        &Envelope {
            version: PROTOCOL_VERSION,
            id,
            message,
            host_time_ns: None,
        },
    )
}

/// Writes one request from the host to the agent, stamped with the host's clock.
pub fn write_host_request(
    w: &mut impl Write,
    id: u64,
    request: Request,
) -> Result<(), ProtocolError> {
    write_envelope(
        w,
        &Envelope {
            version: PROTOCOL_VERSION,
            id,
            message: Message::Request(request),
            host_time_ns: wall_clock_ns(),
        },
    )
}

fn write_envelope(w: &mut impl Write, envelope: &Envelope) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(envelope)?;
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

/// Reads one frame, blocking until it is whole; a version other than ours is an error.
pub fn read_frame(r: &mut impl Read) -> Result<Envelope, ProtocolError> {
    read_frame_limited(r, MAX_FRAME)
}

/// [`read_frame`] refusing frames longer than `max` bytes. The memory taken follows the bytes
/// that arrive, never the length the other side announced: a peer that announces 16 MiB and
/// sends ten bytes costs ten bytes.
pub fn read_frame_limited(r: &mut impl Read, max: usize) -> Result<Envelope, ProtocolError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).map_err(closed_at_eof)?;
    let len = frame_len(header, max)?;
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(ProtocolError::Closed);
    }
    decode(&buf)
}

fn closed_at_eof(e: std::io::Error) -> ProtocolError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProtocolError::Closed
    } else {
        e.into()
    }
}

/// The length a frame's header announces, if it is within `max`.
fn frame_len(header: [u8; 4], max: usize) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok(len)
}

/// One frame's JSON: its version first, then the message.
fn decode(buf: &[u8]) -> Result<Envelope, ProtocolError> {
    // The version is checked before the message, whose shape may differ between versions.
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let v: VersionOnly = serde_json::from_slice(buf)?;
    if v.version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version { theirs: v.version });
    }
    Ok(serde_json::from_slice(buf)?)
}

/// How much one read takes at least (small frames arrive together).
const READ_CHUNK: usize = 64 << 10;
/// How much one read takes at most (a large frame arrives in several).
const READ_MOST: usize = 1 << 20;

/// Frames of a stream that is read only when poll(2) says it is readable: each
/// [`FrameReader::fill`] is one read(2), so a peer that stops in the middle of a frame never
/// blocks the reader, and the reader holds at most the frame it is reading (plus the start
/// of the next), within a limit on frame length.
pub struct FrameReader {
    /// Room for reads; its first `filled` bytes have arrived.
    buf: Vec<u8>,
    filled: usize,
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            filled: 0,
            max,
        }
    }

    /// One read from `r`, which must be readable (or it blocks); `Closed` at its end.
    pub fn fill(&mut self, r: &mut impl Read) -> Result<(), ProtocolError> {
        let remaining = match self.announced()? {
            Some(len) if self.filled >= 4 + len => return Ok(()), // take it first
            Some(len) => 4 + len - self.filled,
            None => READ_CHUNK,
        };
        let end = self.filled + remaining.clamp(READ_CHUNK, READ_MOST);
        if self.buf.len() < end {
            // Zeroed once: the room is reused by the reads that follow.
            self.buf.resize(end, 0);
        }
        let n = loop {
            match r.read(&mut self.buf[self.filled..end]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(ProtocolError::Closed);
        }
        self.filled += n;
        Ok(())
    }

    /// The next whole frame, if its bytes have all arrived.
    pub fn next_frame(&mut self) -> Result<Option<Envelope>, ProtocolError> {
        let Some(len) = self.announced()? else {
            return Ok(None);
        };
        if self.filled < 4 + len {
            return Ok(None);
        }
        let envelope = decode(&self.buf[4..4 + len]);
        self.buf.copy_within(4 + len..self.filled, 0);
        self.filled -= 4 + len;
        if self.buf.len() > READ_MOST && self.filled < READ_CHUNK {
            // A large frame's room is given back rather than kept for the VM's life.
            self.buf.truncate(READ_CHUNK);
            self.buf.shrink_to_fit();
        }
        envelope.map(Some)
    }

    /// Bytes received and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.filled
    }

    /// The length the current frame's header announces, once it has arrived.
    fn announced(&self) -> Result<Option<usize>, ProtocolError> {
        match self.buf.get(..4) {
            Some(&[a, b, c, d]) if self.filled >= 4 => frame_len([a, b, c, d], self.max).map(Some),
            _ => Ok(None),
        }
    }
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
    fn host_requests_carry_the_host_clock_and_a_guest_clock_only_moves_when_wrong() {
        let mut buf = Vec::new();
        let before = wall_clock_ns().unwrap();
        write_host_request(&mut buf, 3, Request::Stats).unwrap();
        write_frame(&mut buf, 0, Message::Response(Response::Ok)).unwrap();
        let mut r = buf.as_slice();
        let stamped = read_frame(&mut r).unwrap().host_time_ns.unwrap();
        assert!(stamped >= before && stamped <= wall_clock_ns().unwrap());
        assert_eq!(read_frame(&mut r).unwrap().host_time_ns, None);
        let host = 1_800_000_000_000_000_000;
        assert_eq!(clock_correction(2_000_000_000, host), Some(host), "1970");
        assert_eq!(clock_correction(host - 1, host), Some(host), "behind");
        assert_eq!(clock_correction(host + 10_000_000, host), None, "latency");
        assert_eq!(
            clock_correction(host + 5_000_000_000, host),
            Some(host),
            "ahead"
        );
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

    /// A reader that hands out `data` and records the largest buffer it was asked to fill.
    struct Recording<'a> {
        data: &'a [u8],
        largest: usize,
    }

    impl Read for Recording<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest = self.largest.max(buf.len());
            self.data.read(buf)
        }
    }

    #[test]
    fn a_frame_announced_large_costs_only_the_bytes_that_arrive() {
        let mut frame = (MAX_FRAME as u32).to_be_bytes().to_vec();
        frame.extend(b"{\"version\":3");
        let mut r = Recording {
            data: &frame,
            largest: 0,
        };
        assert!(matches!(read_frame(&mut r), Err(ProtocolError::Closed)));
        assert!(r.largest <= READ_CHUNK, "asked to fill {} bytes", r.largest);
    }

    fn frame(id: u64, message: Message) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, id, message).unwrap();
        buf
    }

    #[test]
    fn the_frame_reader_takes_frames_split_anywhere_and_holds_at_most_one() {
        let out = |n: usize| {
            Message::Event(Event::Output {
                process: "init".into(),
                stream: Stream::Stdout,
                data: Bytes(vec![7; n]),
            })
        };
        let mut stream = Vec::new();
        for n in [0, 1, 100_000, 3] {
            stream.extend(frame(0, out(n)));
        }
        stream.extend(frame(4, Message::Response(Response::Ok)));
        // Delivered a few bytes at a time, as a slow guest would.
        for step in [1, 3, 4096, 1 << 20] {
            let mut reader = FrameReader::new(MAX_FRAME);
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                let mut piece = piece;
                while !piece.is_empty() {
                    reader.fill(&mut piece).unwrap();
                    while let Some(env) = reader.next_frame().unwrap() {
                        got.push(env);
                    }
                    assert!(reader.buffered() <= 4 + 140_000 + READ_CHUNK);
                }
            }
            let sizes: Vec<Option<usize>> = got
                .iter()
                .map(|e| match &e.message {
                    Message::Event(Event::Output { data, .. }) => Some(data.0.len()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                sizes,
                [Some(0), Some(1), Some(100_000), Some(3), None],
                "{step}"
            );
            assert_eq!(reader.buffered(), 0);
            assert!(matches!(
                reader.fill(&mut [].as_slice()),
                Err(ProtocolError::Closed)
            ));
        }
    }

    #[test]
    fn the_frame_reader_refuses_a_long_frame_from_its_header() {
        let mut reader = FrameReader::new(1000);
        reader.fill(&mut 1001u32.to_be_bytes().as_slice()).unwrap();
        assert!(matches!(
            reader.next_frame(),
            Err(ProtocolError::TooLarge(1001))
        ));
        assert!(matches!(
            read_frame_limited(
                &mut frame(1, Message::Response(Response::Ok)).as_slice(),
                10
            ),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        for body in [
            "[".repeat(1 << 20),
            format!(
                "{{\"version\":3,\"id\":0,\"message\":{}",
                "{\"a\":".repeat(200_000)
            ),
        ] {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend(body.as_bytes());
            assert!(matches!(
                read_frame(&mut f.as_slice()),
                Err(ProtocolError::Malformed(_))
            ));
        }
    }

    #[test]
    fn bytes_decode_from_escaped_json_text() {
        let body = format!(
            r#"{{"version":{PROTOCOL_VERSION},"id":0,"message":{{"event":{{"output":{{"process":"init","stream":"stdout","data":"AAH\/"}}}}}}}}"#
        );
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend(body.as_bytes());
        match read_frame(&mut f.as_slice()).unwrap().message {
            Message::Event(Event::Output { data, .. }) => assert_eq!(data.0, [0, 1, 255]),
            other => panic!("{other:?}"),
        }
    }
}
