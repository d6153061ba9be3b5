//! A QMP client (QEMU's monitor protocol, one JSON object a line) over a socket pair
//! handed to a jailed QEMU: commands, descriptors by SCM_RIGHTS (`getfd`), and the waits a
//! migration to or from a file needs. QEMU runs guest-facing device code, so its replies
//! are bounded in size and time and parsed as untrusted.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::VmError;

/// How long QEMU may take to answer, or to write or read a device state.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// A connected QMP client (capabilities negotiated).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// The longest QMP line read.
const QMP_LINE: u64 = 64 << 10;

impl Qmp {
    pub fn connect(stream: UnixStream) -> Result<Qmp, VmError> {
        let err = |e: std::io::Error| VmError::Io(format!("QMP: {e}"));
        stream
            .set_read_timeout(Some(MIGRATION_TIMEOUT))
            .map_err(err)?;
        let writer = stream.try_clone().map_err(err)?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        q.line()?; // the greeting
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn line(&mut self) -> Result<serde_json::Value, VmError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(QMP_LINE)
            .read_line(&mut line)
            .map_err(|e| VmError::Io(format!("QMP: {e}")))?;
        if n == 0 {
            return Err(VmError::EngineExited("QEMU closed its monitor".into()));
        }
        serde_json::from_str(&line).map_err(|e| VmError::Io(format!("QMP: {e}")))
    }

    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VmError> {
        let bytes = Self::message(command, arguments);
        self.writer
            .write_all(&bytes)
            .map_err(|e| VmError::Io(format!("QMP {command}: {e}")))?;
        self.answer(command)
    }

    fn message(command: &str, arguments: Option<serde_json::Value>) -> Vec<u8> {
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    }

    /// `getfd`: hands QEMU descriptor `fd` (SCM_RIGHTS) under `name`.
    pub fn hand_fd(&mut self, name: &str, fd: std::os::fd::RawFd) -> Result<(), VmError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let bytes = Self::message("getfd", Some(serde_json::json!({ "fdname": name })));
        let fds = [fd];
        let iov = [std::io::IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(
            self.writer.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| VmError::Io(format!("QMP getfd: {e}")))?;
        if sent != bytes.len() {
            return Err(VmError::Io("QMP getfd: a short write".into()));
        }
        self.answer("getfd").map(|_| ())
    }

    fn answer(&mut self, command: &str) -> Result<serde_json::Value, VmError> {
        loop {
            let reply = self.line()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                let desc = e.get("desc").and_then(|d| d.as_str()).unwrap_or("?");
                return Err(VmError::Tool(format!("QMP {command}: {desc}")));
            }
            // An event: not the answer.
        }
    }

    /// Waits (bounded) for the incoming state to be loaded, then runs the guest: the
    /// template was stopped when saved, so QEMU leaves its clone paused. A load that fails
    /// ends QEMU, which closes the monitor.
    pub fn run_when_loaded(&mut self) -> Result<(), VmError> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        while Instant::now() < deadline {
            let r = self.execute("query-status", None)?;
            match r.get("status").and_then(|s| s.as_str()) {
                Some("inmigrate") => std::thread::sleep(Duration::from_millis(2)),
                Some("running") => return Ok(()),
                Some("paused" | "prelaunch" | "postmigrate") => {
                    return self.execute("cont", None).map(|_| ())
                }
                other => {
                    return Err(VmError::Tool(format!(
                        "loading the template's state left the VM {}",
                        other.unwrap_or("in no known state")
                    )))
                }
            }
        }
        Err(VmError::Tool(format!(
            "loading the template's state took over {MIGRATION_TIMEOUT:?}"
        )))
    }

    /// Until the outgoing migration has completed (bounded).
    pub fn wait_migration(&mut self) -> Result<(), VmError> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        while Instant::now() < deadline {
            let r = self.execute("query-migrate", None)?;
            match r.get("status").and_then(|s| s.as_str()) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = r.get("error-desc").and_then(|s| s.as_str()).unwrap_or("?");
                    return Err(VmError::Tool(format!("saving the device state: {why}")));
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Err(VmError::Tool(format!(
            "saving the device state took over {MIGRATION_TIMEOUT:?}"
        )))
    }
}
