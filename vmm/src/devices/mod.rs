//! Device models: the buses vCPU exits are dispatched on, the legacy PC devices, virtio.

pub mod bus;
pub mod legacy;
pub mod virtio;
