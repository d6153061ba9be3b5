//! capsa-agent: the guest agent, PID 1 inside the microVM, and the host<->agent protocol.
//!
//! Empty on purpose: the agent and its protocol land with the VM-isolation issue. Nothing
//! here pretends to work before then.
