//! Architecture-specific set-up. capsa-vmm runs x86-64 guests only.

pub mod x86_64;
