//! x86-64 specifics: the guest physical layout, boot protocols, registers, CPUID, MSRs and the
//! MP table.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
