//! virtio-console with named ports (MULTIPORT): each port is a guest character device
//! `/dev/vportNpM` whose name (`/sys/class/virtio-ports/*/name`) the guest learns from the
//! control queue, and whose host side is a Unix socket the VMM listens on. One host client at a
//! time per port; its connecting and leaving are PORT_OPEN 1/0 for the guest.

mod control;
mod port;

use std::path::Path;

use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;

use super::{
    device_type, Context, DeviceError, DeviceState, EventOps, SavedPort, VirtioDevice,
    VIRTIO_F_VERSION_1,
};
use control::{event, Control};
use port::Port;

const VIRTIO_CONSOLE_F_MULTIPORT: u64 = 1 << 1;
const CONTROL_RX: usize = 2;
const CONTROL_TX: usize = 3;
const QUEUE_SIZE: u16 = 64;
/// Port 0 is the classic console (hvc0), which capsa does not use; named ports start at 1.
const FIRST_PORT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console port name {0:?} must be 1 to 64 bytes without NUL or newline")]
    BadName(String),
    #[error("cannot listen on console socket {path}: {source}")]
    Listen {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("console port {name}: the handed socket: {source}")]
    Handed {
        name: String,
        source: std::io::Error,
    },
}

/// The host side of a console port.
pub enum PortHost<'a> {
    /// A Unix socket the port listens on (one client at a time).
    Listen(&'a Path),
    /// A connected stream socket handed to the VMM.
    Connected(std::os::unix::net::UnixStream),
}

pub struct Console {
    ports: Vec<Port>,
    queue_sizes: Vec<u16>,
    config: [u8; 12],
    control: Control,
    driver_ready: bool,
}

/// The rx and tx queue indices of port `id`.
fn port_queues(id: u32) -> (usize, usize) {
    if id == 0 {
        (0, 1)
    } else {
        (2 * id as usize + 2, 2 * id as usize + 3)
    }
}

/// Which port a queue index belongs to, and whether it is its tx queue.
fn queue_port(queue: usize) -> Option<(u32, bool)> {
    match queue {
        0 | 1 => Some((0, queue == 1)),
        2 | 3 => None,
        q => Some(((q as u32 - 2) / 2, q % 2 == 1)),
    }
}

impl Console {
    /// A device with one port per (name, socket path to listen on).
    pub fn new(ports: &[(String, &Path)]) -> Result<Self, ConsoleError> {
        let hosts = ports
            .iter()
            .map(|(name, path)| (name.clone(), PortHost::Listen(path)))
            .collect();
        Self::with_hosts(hosts)
    }

    /// A device with one port per (name, host side).
    pub fn with_hosts(ports: Vec<(String, PortHost<'_>)>) -> Result<Self, ConsoleError> {
        let mut list = Vec::new();
        for (i, (name, host)) in ports.into_iter().enumerate() {
            if name.is_empty() || name.len() > 64 || name.contains(['\0', '\n']) {
                return Err(ConsoleError::BadName(name));
            }
            let id = FIRST_PORT + i as u32;
            list.push(match host {
                PortHost::Listen(path) => Port::listen(id, &name, path)?,
                PortHost::Connected(stream) => Port::connected(id, &name, stream)
                    .map_err(|source| ConsoleError::Handed { name, source })?,
            });
        }
        let max_ports = list.len() as u32 + FIRST_PORT;
        let mut config = [0u8; 12];
        config[4..8].copy_from_slice(&max_ports.to_le_bytes());
        let queue_sizes = vec![QUEUE_SIZE; 2 * max_ports as usize + 2];
        Ok(Self {
            ports: list,
            queue_sizes,
            config,
            control: Control::default(),
            driver_ready: false,
        })
    }

    fn port(&mut self, id: u32) -> Option<&mut Port> {
        self.ports.iter_mut().find(|p| p.id == id)
    }

    /// A control message from the driver.
    fn on_control(&mut self, id: u32, ev: u16, value: u16, ops: &EventOps) {
        match ev {
            event::DEVICE_READY if value == 1 => {
                self.driver_ready = true;
                for p in &self.ports {
                    self.control.send(p.id, event::DEVICE_ADD, 1, &[]);
                }
            }
            event::PORT_READY if value == 1 => {
                let Some(p) = self.ports.iter_mut().find(|p| p.id == id) else {
                    return;
                };
                p.guest_ready = true;
                let name = p.name.clone();
                let connected = p.host_connected();
                self.control.send(id, event::PORT_NAME, 0, name.as_bytes());
                if connected {
                    self.control.send(id, event::PORT_OPEN, 1, &[]);
                }
            }
            event::PORT_OPEN => {
                if let Some(p) = self.port(id) {
                    p.guest_open = value == 1;
                    p.rearm(ops);
                }
            }
            _ => {}
        }
    }

    fn process_control_tx(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        while let Some(chain) = ctx.queues[CONTROL_TX].pop_descriptor_chain(ctx.mem) {
            let head = chain.head_index();
            if let Some((id, ev, value)) = control::read(ctx.mem, chain) {
                self.on_control(id, ev, value, ctx.ops);
            }
            ctx.queues[CONTROL_TX]
                .add_used(ctx.mem, head, 0)
                .map_err(|e| DeviceError::Guest(format!("control used ring: {e}")))?;
        }
        ctx.notify(CONTROL_TX);
        Ok(())
    }

    /// Everything that may have become deliverable: port data (a host client that left on the
    /// way becomes a PORT_OPEN 0), then control messages.
    fn deliver(&mut self, ctx: &mut Context<'_>) -> Result<(), DeviceError> {
        for p in &mut self.ports {
            let (rx, _) = port_queues(p.id);
            let before = p.host_connected();
            if p.deliver_host_input(ctx.mem, &mut ctx.queues[rx], ctx.ops)? {
                ctx.notify(rx);
            }
            if before && !p.host_connected() && p.guest_ready && self.driver_ready {
                self.control.send(p.id, event::PORT_OPEN, 0, &[]);
            }
        }
        if self.control.flush(ctx.mem, &mut ctx.queues[CONTROL_RX])? {
            ctx.notify(CONTROL_RX);
        }
        Ok(())
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, _features: u64, ctx: Context<'_>) -> Result<(), DeviceError> {
        for (index, p) in self.ports.iter_mut().enumerate() {
            p.activate(index, ctx.ops)?;
        }
        Ok(())
    }

    fn process_queue(&mut self, queue: usize, mut ctx: Context<'_>) -> Result<(), DeviceError> {
        if queue == CONTROL_TX {
            self.process_control_tx(&mut ctx)?;
        } else if let Some((id, true)) = queue_port(queue) {
            let ops = ctx.ops.clone();
            if let Some(p) = self.port(id) {
                p.forward_guest_output(ctx.mem, &mut ctx.queues[queue], &ops)?;
            }
            ctx.notify(queue);
        }
        self.deliver(&mut ctx)
    }

    fn process_event(
        &mut self,
        token: u32,
        events: EventSet,
        mut ctx: Context<'_>,
    ) -> Result<(), DeviceError> {
        let (index, is_listener) = port::decode_token(token);
        let Some(p) = self.ports.get_mut(index) else {
            return Ok(());
        };
        let id = p.id;
        let was = p.host_connected();
        if is_listener {
            p.accept(index, ctx.ops);
        } else {
            p.host_event(events, ctx.ops);
        }
        let now = p.host_connected();
        let ready = p.guest_ready;
        if was != now && ready && self.driver_ready {
            self.control.send(id, event::PORT_OPEN, u16::from(now), &[]);
        }
        self.deliver(&mut ctx)
    }

    fn reset(&mut self, ops: &EventOps) {
        for p in &mut self.ports {
            p.reset(ops);
        }
        self.control = Control::default();
        self.driver_ready = false;
    }

    /// Bytes in flight either way are not kept, nor control messages the driver had not
    /// taken yet: the guest learns what it missed from the restore (below).
    fn save_state(&self) -> DeviceState {
        DeviceState::Console {
            driver_ready: self.driver_ready,
            ports: self
                .ports
                .iter()
                .map(|p| SavedPort {
                    name: p.name.clone(),
                    guest_ready: p.guest_ready,
                    guest_open: p.guest_open,
                    host_connected: p.host_connected(),
                })
                .collect(),
        }
    }

    /// The same ports by name and order; the host side is the restore's, so a port whose
    /// client the guest saw connected and that has none now is closed for the guest
    /// (PORT_OPEN 0), and one handed a connection it did not have is opened.
    fn restore_state(&mut self, saved: &DeviceState) -> Result<(), String> {
        let DeviceState::Console {
            driver_ready,
            ports,
        } = saved
        else {
            return Err(format!(
                "saved state {saved:?} is not a virtio-console device's"
            ));
        };
        let names = |list: Vec<&str>| list.join(", ");
        let saved_names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
        let given: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
        if saved_names != given {
            return Err(format!(
                "the snapshot's console ports are [{}], the restore gives [{}] (give each \
                 --console again, in the same order)",
                names(saved_names),
                names(given)
            ));
        }
        self.driver_ready = *driver_ready;
        for (port, saved) in self.ports.iter_mut().zip(ports) {
            port.guest_ready = saved.guest_ready;
            port.guest_open = saved.guest_open;
            let now = port.host_connected();
            if saved.guest_ready && *driver_ready && saved.host_connected != now {
                self.control
                    .send(port.id, event::PORT_OPEN, u16::from(now), &[]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
