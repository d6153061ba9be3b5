//! COM1, an 8250 UART (vm-superio), whose output goes to stdout, a file, or nowhere.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use vm_superio::Serial;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// COM1's I/O ports.
pub const PORT_BASE: u64 = 0x3f8;
pub const PORT_LEN: u64 = 8;

/// Where the guest's console output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialOutput {
    Stdout,
    File(std::path::PathBuf),
    /// A handed descriptor open for writing.
    Fd(std::os::fd::RawFd),
    None,
}

impl std::str::FromStr for SerialOutput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "none" => Ok(Self::None),
            _ => match (s.strip_prefix("file="), crate::handed::parse(s)) {
                (Some(p), _) if !p.is_empty() => Ok(Self::File(p.into())),
                (_, Some(fd)) => Ok(Self::Fd(fd.map_err(|e| format!("serial output {e}"))?)),
                _ => Err(format!(
                    "serial output {s:?}: expected stdout, none, file=PATH or fd=N"
                )),
            },
        }
    }
}

/// The sink behind the UART.
pub enum Sink {
    Stdout(io::Stdout),
    File(File),
    None,
}

impl Sink {
    pub fn open(output: &SerialOutput) -> io::Result<Self> {
        Ok(match output {
            SerialOutput::Stdout => Sink::Stdout(io::stdout()),
            SerialOutput::File(p) => Sink::File(open_append(p)?),
            SerialOutput::Fd(fd) => Sink::File(crate::handed::take(*fd)?),
            SerialOutput::None => Sink::None,
        })
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(s) => s.write(buf),
            Sink::File(f) => f.write(buf),
            Sink::None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => f.flush(),
            Sink::None => Ok(()),
        }
    }
}

/// The UART on the port bus.
pub struct SerialDevice(pub Serial<EventFdTrigger, vm_superio::serial::NoEvents, Sink>);

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [b] = data {
            *b = self.0.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [b] = data {
            // A failed console write must not stop the guest; the output is best effort.
            let _ = self.0.write(offset as u8, *b);
        }
    }
}
