//! The agent's byte stream to the host: the virtio-console port named `capsa.agent`
//! (`/dev/vportNpM`), found through sysfs.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use capsa_core::protocol::AGENT_PORT_NAME;

/// Finds the port's device node by its name, waiting for the driver to announce it.
pub fn find_port(timeout: Duration) -> std::io::Result<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == AGENT_PORT_NAME {
                    return Ok(PathBuf::from("/dev").join(e.file_name()));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "no virtio-console port named {AGENT_PORT_NAME} appeared"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Opens the port for reading and writing.
pub fn open(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}
