//! Segment descriptors: the boot GDT written into guest memory and the matching `kvm_segment`s,
//! so that the hidden parts of the segment registers agree with the table.

use kvm_bindings::kvm_segment;

/// Access/flags words (bits 8..15 and 20..23 of a descriptor, packed as KVM's tools write them).
pub const CODE_64: u16 = 0xa09b;
pub const CODE_32: u16 = 0xc09b;
pub const DATA: u16 = 0xc093;
pub const TSS: u16 = 0x808b;

/// One 8-byte GDT entry.
pub fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The `kvm_segment` that loading selector `index * 8` from a GDT holding `descriptor` yields.
pub fn segment(index: u16, descriptor: u64) -> kvm_segment {
    let base = ((descriptor >> 16) & 0x00ff_ffff) | ((descriptor >> 32) & 0xff00_0000);
    let limit = (descriptor & 0xffff) | ((descriptor >> 32) & 0x000f_0000);
    let granular = (descriptor >> 55) & 1 == 1;
    let bit = |n: u32| ((descriptor >> n) & 1) as u8;
    kvm_segment {
        base,
        // With 4 KiB granularity the limit counts pages; KVM wants it in bytes.
        limit: if granular {
            ((limit as u32) << 12) | 0xfff
        } else {
            limit as u32
        },
        selector: index * 8,
        type_: ((descriptor >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((descriptor >> 45) & 3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: if bit(47) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_through_segments() {
        let code = entry(CODE_64, 0, 0xfffff);
        assert_eq!(code, 0x00af_9b00_0000_ffff);
        let s = segment(1, code);
        assert_eq!(
            (s.selector, s.type_, s.l, s.db, s.g, s.present),
            (8, 0xb, 1, 0, 1, 1)
        );
        assert_eq!(s.limit, 0xffff_ffff);
        let data = segment(2, entry(DATA, 0, 0xfffff));
        assert_eq!((data.type_, data.db, data.s), (3, 1, 1));
        let tss = segment(3, entry(TSS, 0x1000, 0x67));
        assert_eq!((tss.base, tss.limit, tss.s, tss.g), (0x1000, 0x67fff, 0, 1));
    }
}
