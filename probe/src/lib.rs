//! capsa-probe: the overhead probe `capsa bench` runs inside every isolation and peer. One
//! static binary (no libraries to find in the image), so each subject runs the same code.
//!
//! - `capsa-probe all [--quick] [--dir DIR]` measures in-process and prints one JSON line:
//!   syscall cost, a CPU loop, memory bandwidth, file write+fsync and read;
//! - `capsa-probe serve PORT` is the far end of the TCP figures, which the host side
//!   (`tcp::round_trips`, `tcp::throughput`) drives through a published port.

pub mod local;
pub mod tcp;
