//! CPUID: what KVM supports on this host, with each vCPU's own APIC ID and topology patched in and
//! the hypervisor bit set (so the guest looks for KVM's paravirtual leaves at 0x4000_0000).

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

/// KVM's supported CPUID, read once for all vCPUs.
pub fn supported(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
}

/// The CPUID of vCPU `index` out of `count`.
pub fn for_vcpu(base: &CpuId, index: u8, count: u8) -> CpuId {
    let mut cpuid = base.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors; ECX[31] hypervisor.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                e.ecx |= 1 << 31;
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: the logical count above is meaningful
                }
            }
            0xb | 0x1f => {
                // Extended topology: one thread per core, `count` cores; EDX is the x2APIC ID.
                e.edx = u32::from(index);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8; // level type SMT
                    }
                    1 => {
                        // Bits of the x2APIC ID below the package level: ceil(log2(count)).
                        e.eax = 32 - (u32::from(count.max(1)) - 1).leading_zeros();
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1; // level type core
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn each_vcpu_gets_its_apic_id_and_the_hypervisor_bit() {
        let leaf1 = kvm_cpuid_entry2 {
            function: 1,
            ebx: 0xffff_0800,
            ..Default::default()
        };
        let core = kvm_cpuid_entry2 {
            function: 0xb,
            index: 1,
            ..Default::default()
        };
        let base = CpuId::from_entries(&[leaf1, core]).unwrap();
        let c = for_vcpu(&base, 2, 3);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 2);
        assert_eq!((e[0].ebx >> 16) & 0xff, 3);
        assert_eq!(e[0].ebx & 0xffff, 0x0800);
        assert_ne!(e[0].ecx & (1 << 31), 0);
        assert_eq!((e[1].eax, e[1].ebx, e[1].edx), (2, 3, 2));
    }
}
