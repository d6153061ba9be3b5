//! The device allowlist of cgroup v2: the OCI spec's `linux.resources.devices` rules turned
//! into an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, which the kernel runs on every
//! `mknod` and every open of a device node by a process of the cgroup (v2 has no devices
//! controller; this program is its replacement).
//!
//! Semantics: the rules are read in order and, for each access asked for (read, write,
//! mknod), the last rule that matches the device and names that access decides; an access
//! no rule decides is denied. This is what the v1 devices controller does with a list that
//! starts with `a *:* rwm` (as every list capsa makes does), and it stays right for a deny
//! rule that names only some of the accesses of an earlier allow (`allow c 1:3 rwm`, then
//! `deny c 1:3 w`: reads pass, `O_RDWR` is refused). A list that starts without such a rule
//! is applied over "deny everything", failing closed where v1 would start from its parent.
//!
//! The program walks the rules from the last to the first, keeping the accesses not yet
//! decided in a register: an allow rule that matches clears its accesses (all cleared:
//! allow); a deny rule that matches one still undecided access denies. Rules before a rule
//! that matches everything are never reached and are left out.
//!
//! A rule matches when `(type ^ T) | (major ^ M) | (minor ^ m)` is zero, computed in scratch
//! registers: the fields are never compared directly, so the verifier learns nothing about
//! them on one path that it does not know on another, and walks fewer paths. Loading the
//! program (nearly all of it the verifier's walk) costs about 240 µs for Docker's default
//! list here, against 320 µs with one compare per field.
//!
//! Instructions are built with rbpf's instruction builder; the unit tests run the programs
//! in rbpf's interpreter, and the kernel's verifier checks them when loaded.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use rbpf::insn_builder::{Arch, BpfCode, Cond, Instruction, IntoBytes, MemSize, Source};

/// `bpf_cgroup_dev_ctx.access_type` low half: the device type.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
/// `bpf_cgroup_dev_ctx.access_type` high half: the access asked for.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Registers: r1 points at the context; the program keeps the device in r2 (type), r4
/// (major), r5 (minor), the accesses not yet decided in r3, and tests a rule in r6, r7.
const R_RET: u8 = 0;
const R_CTX: u8 = 1;
const R_TYPE: u8 = 2;
const R_UNDECIDED: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;
const R_MATCH: u8 = 6;
const R_SCRATCH: u8 = 7;

/// Instructions after the last rule: `deny: r0 = 0; exit; allow: r0 = 1; exit`.
const DENY_TAIL_LEN: usize = 2;
/// More rules than this are refused: jump offsets are 16-bit (a rule is at most 11
/// instructions). capsa's own lists have a dozen.
pub const MAX_RULES: usize = 2500;

/// A rule the program cannot express, named by its position in the list.
#[derive(Debug, thiserror::Error)]
#[error("device rule {index} ({rule}): {reason}")]
pub struct BadDeviceRule {
    /// Position in `linux.resources.devices`, from 0.
    pub index: usize,
    /// The rule as v1 writes it (`c 1:3 rwm`).
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One rule in the form the program tests it. `None` fields match anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    allow: bool,
    typ: Option<u32>,
    major: Option<i32>,
    minor: Option<i32>,
    /// ACC_* bits, never 0.
    access: u32,
}

impl Rule {
    /// Matches every device and every access: the rules before it do not matter.
    fn is_total(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    /// The fields this rule tests: (register, value).
    fn tests(&self) -> Vec<(u8, i32)> {
        [
            (R_TYPE, self.typ.map(|t| t as i32)),
            (R_MAJOR, self.major),
            (R_MINOR, self.minor),
        ]
        .into_iter()
        .filter_map(|(reg, value)| Some((reg, value?)))
        .collect()
    }

    /// Instructions of this rule's block: the match test (2 for the first field, 3 for each
    /// other, 1 for the jump: 3 per field), then the verdict.
    fn block_len(&self) -> usize {
        3 * self.tests().len() + if self.allow { 2 } else { 1 }
    }
}

/// `c 1:3 rwm`, as the v1 controller spells a rule (for error messages).
fn describe(rule: &LinuxDeviceCgroup) -> String {
    let typ = match rule.typ() {
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::P) => "p",
        _ => "a",
    };
    let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
    format!(
        "{} {typ} {}:{} {}",
        if rule.allow() { "allow" } else { "deny" },
        num(rule.major()),
        num(rule.minor()),
        rule.access().as_deref().unwrap_or("rwm")
    )
}

/// The rule in program form; `None` for a rule that can match no device (a FIFO's, or one
/// naming no access).
fn parse(index: usize, rule: &LinuxDeviceCgroup) -> Result<Option<Rule>, BadDeviceRule> {
    let bad = |reason: String| BadDeviceRule {
        index,
        rule: describe(rule),
        reason,
    };
    let typ = match rule.typ() {
        None | Some(LinuxDeviceType::A) => None,
        Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
        // `u` (unbuffered) is a character device too.
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
        // FIFOs are no devices: the kernel never asks about them.
        Some(LinuxDeviceType::P) => return Ok(None),
    };
    // -1 is runc's spelling of the wildcard.
    let number = |n: Option<i64>, what: &str| match n {
        None | Some(-1) => Ok(None),
        Some(n) => i32::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| bad(format!("{what} {n} is not a device number"))),
    };
    let major = number(rule.major(), "major")?;
    let minor = number(rule.minor(), "minor")?;
    let mut access = 0;
    for c in rule.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => return Err(bad(format!("access {other:?} is none of r, w, m"))),
        };
    }
    if access == 0 {
        return Ok(None);
    }
    Ok(Some(Rule {
        allow: rule.allow(),
        typ,
        major,
        minor,
        access,
    }))
}

/// A device program built from a rule list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFilter {
    /// The rules the program tests, last rule of the list first.
    reversed: Vec<Rule>,
    /// Whether every access to every device is allowed (nothing to attach).
    allows_everything: bool,
}

impl DeviceFilter {
    /// Builds the filter of `rules` (in the spec's order).
    pub fn new(rules: &[LinuxDeviceCgroup]) -> Result<DeviceFilter, BadDeviceRule> {
        if rules.len() > MAX_RULES {
            return Err(BadDeviceRule {
                index: MAX_RULES,
                rule: describe(&rules[MAX_RULES]),
                reason: format!("more than {MAX_RULES} device rules"),
            });
        }
        let mut reversed = Vec::new();
        let mut allows_everything = false;
        let mut denied_some = false;
        for (index, rule) in rules.iter().enumerate().rev() {
            let Some(rule) = parse(index, rule)? else {
                continue;
            };
            denied_some |= !rule.allow;
            reversed.push(rule);
            if rule.is_total() {
                allows_everything = !denied_some;
                break;
            }
        }
        Ok(DeviceFilter {
            reversed,
            allows_everything,
        })
    }

    /// True when the rules allow every access to every device: no program is needed.
    pub fn allows_everything(&self) -> bool {
        self.allows_everything
    }

    /// The program's instructions, 8 bytes each, in the kernel's (little-endian) encoding.
    pub fn program(&self) -> Vec<u8> {
        let mut code = BpfCode::new();
        Self::emit_prologue(&mut code);
        let rules_len: usize = self.reversed.iter().map(Rule::block_len).sum();
        let mut at = 0; // position in the rules section
        for rule in &self.reversed {
            at = Self::emit_rule(&mut code, rule, at, rules_len);
        }
        // Undecided accesses are denied.
        code.mov(Source::Imm, Arch::X32)
            .set_dst(R_RET)
            .set_imm(0)
            .push();
        code.exit().push();
        code.mov(Source::Imm, Arch::X32)
            .set_dst(R_RET)
            .set_imm(1)
            .push();
        code.exit().push();
        code.into_bytes().to_vec()
    }

    /// Loads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`:
    /// r2 = type, r3 = access asked for, r4 = major, r5 = minor.
    fn emit_prologue(code: &mut BpfCode) {
        let load = |code: &mut BpfCode, dst: u8, off: i16| {
            code.load_x(MemSize::Word)
                .set_dst(dst)
                .set_src(R_CTX)
                .set_off(off)
                .push();
        };
        load(code, R_TYPE, 0);
        code.mov(Source::Reg, Arch::X32)
            .set_dst(R_UNDECIDED)
            .set_src(R_TYPE)
            .push();
        code.right_shift(Source::Imm, Arch::X32)
            .set_dst(R_UNDECIDED)
            .set_imm(16)
            .push();
        code.bit_and(Source::Imm, Arch::X32)
            .set_dst(R_TYPE)
            .set_imm(0xffff)
            .push();
        load(code, R_MAJOR, 4);
        load(code, R_MINOR, 8);
    }

    /// Emits the block of `rule`, which starts at `start` in a rules section of `rules_len`
    /// instructions (the deny tail follows it, then the allow tail). Returns where the next
    /// block starts.
    fn emit_rule(code: &mut BpfCode, rule: &Rule, start: usize, rules_len: usize) -> usize {
        let end = start + rule.block_len();
        // Offsets count from the instruction after the jump; all fit i16 (MAX_RULES).
        let offset = |from: usize, to: usize| (to - from - 1) as i16;
        let mut at = start;
        let tests = rule.tests();
        for (i, (field, value)) in tests.iter().enumerate() {
            // R_MATCH = (field ^ value) | ...: zero when every field matches.
            let dst = if i == 0 { R_MATCH } else { R_SCRATCH };
            code.mov(Source::Reg, Arch::X32)
                .set_dst(dst)
                .set_src(*field)
                .push();
            code.bit_xor(Source::Imm, Arch::X32)
                .set_dst(dst)
                .set_imm(*value)
                .push();
            at += 2;
            if i > 0 {
                code.bit_or(Source::Reg, Arch::X32)
                    .set_dst(R_MATCH)
                    .set_src(R_SCRATCH)
                    .push();
                at += 1;
            }
        }
        if !tests.is_empty() {
            code.jump_conditional(Cond::NotEquals, Source::Imm)
                .set_dst(R_MATCH)
                .set_imm(0)
                .set_off(offset(at, end))
                .push();
            at += 1;
        }
        let deny = rules_len;
        let allow = rules_len + DENY_TAIL_LEN;
        if rule.allow {
            code.bit_and(Source::Imm, Arch::X32)
                .set_dst(R_UNDECIDED)
                .set_imm(!rule.access as i32)
                .push();
            code.jump_conditional(Cond::Equals, Source::Imm)
                .set_dst(R_UNDECIDED)
                .set_imm(0)
                .set_off(offset(at + 1, allow))
                .push();
        } else {
            code.jump_conditional(Cond::BitAnd, Source::Imm)
                .set_dst(R_UNDECIDED)
                .set_imm(rule.access as i32)
                .set_off(offset(at, deny))
                .push();
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::devices::{default_cgroup_rules, rule};

    const B: u32 = DEV_BLOCK;
    const C: u32 = DEV_CHAR;
    const R: u32 = ACC_READ;
    const W: u32 = ACC_WRITE;
    const M: u32 = ACC_MKNOD;
    /// Instructions before the first rule (see [`DeviceFilter::emit_prologue`]).
    const PROLOGUE_LEN: usize = 6;

    fn instruction_count(program: &[u8]) -> usize {
        program.len() / 8
    }

    /// What the program answers for one request, run in rbpf's interpreter on the
    /// context the kernel passes.
    fn verdict(program: &[u8], typ: u32, access: u32, major: u32, minor: u32) -> bool {
        let mut ctx = Vec::new();
        for v in [(access << 16) | typ, major, minor] {
            ctx.extend_from_slice(&v.to_le_bytes());
        }
        let vm = rbpf::EbpfVmRaw::new(Some(program)).expect("rbpf accepts the program");
        match vm.execute_program(&mut ctx).expect("the program runs") {
            0 => false,
            1 => true,
            other => panic!("program returned {other}"),
        }
    }

    fn compiled(rules: &[LinuxDeviceCgroup]) -> Vec<u8> {
        DeviceFilter::new(rules).unwrap().program()
    }

    #[test]
    fn default_rules_allow_the_standard_nodes_and_deny_disks_and_kmsg() {
        let p = compiled(&default_cgroup_rules(false));
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert!(verdict(&p, C, R | W, major, minor), "c {major}:{minor} rw");
            assert!(verdict(&p, C, M, major, minor), "c {major}:{minor} m");
        }
        assert!(verdict(&p, C, R | W, 136, 7), "pty slaves (136:*)");
        assert!(verdict(&p, C, R | W, 10, 200), "tun");
        // /dev/kmsg, /dev/mem, a disk, the guest's virtio disks: mknod yes, open no.
        for (typ, major, minor) in [(C, 1, 11), (C, 1, 1), (B, 8, 0), (B, 254, 0), (B, 254, 16)] {
            assert!(
                !verdict(&p, typ, R, major, minor),
                "{typ} {major}:{minor} r"
            );
            assert!(
                !verdict(&p, typ, W, major, minor),
                "{typ} {major}:{minor} w"
            );
            assert!(
                !verdict(&p, typ, R | W, major, minor),
                "{typ} {major}:{minor} rw"
            );
            assert!(verdict(&p, typ, M, major, minor), "{typ} {major}:{minor} m");
        }
        // A request naming mknod with an open access is denied as a whole.
        assert!(!verdict(&p, B, M | R, 8, 0));
        // 10:200 is tun as a char device, not as a block device.
        assert!(!verdict(&p, B, R, 10, 200));
    }

    #[test]
    fn privileged_rules_allow_everything_and_need_no_program() {
        let f = DeviceFilter::new(&default_cgroup_rules(true)).unwrap();
        assert!(f.allows_everything());
        let p = f.program();
        assert!(verdict(&p, B, R | W | M, 254, 0));
        assert!(verdict(&p, C, W, 1, 11));
        assert!(!DeviceFilter::new(&default_cgroup_rules(false))
            .unwrap()
            .allows_everything());
    }

    #[test]
    fn the_last_matching_rule_wins() {
        use LinuxDeviceType::{A, C as Char};
        let allow_then_deny = [
            rule(false, A, None, None, "rwm"),
            rule(true, Char, Some(1), Some(3), "rwm"),
            rule(false, Char, Some(1), Some(3), "rwm"),
        ];
        assert!(!verdict(&compiled(&allow_then_deny), C, R, 1, 3));
        let deny_then_allow = [
            rule(false, A, None, None, "rwm"),
            rule(false, Char, Some(1), Some(3), "rwm"),
            rule(true, Char, Some(1), Some(3), "rwm"),
        ];
        assert!(verdict(&compiled(&deny_then_allow), C, R, 1, 3));
        // A total rule at the end overrides everything before it, and the rules before it
        // are left out of the program.
        let mut rules = default_cgroup_rules(false);
        rules.push(rule(false, A, None, None, "rwm"));
        let f = DeviceFilter::new(&rules).unwrap();
        assert_eq!(f.reversed.len(), 1);
        assert!(!verdict(&f.program(), C, R, 1, 3));
        rules.push(rule(true, A, None, None, "rwm"));
        assert!(DeviceFilter::new(&rules).unwrap().allows_everything());
    }

    #[test]
    fn access_bits_are_decided_one_by_one() {
        use LinuxDeviceType::{A, C as Char};
        // Allowed rwm, then write denied: reads pass, writes and read-write opens do not.
        let rules = [
            rule(false, A, None, None, "rwm"),
            rule(true, Char, Some(1), Some(3), "rwm"),
            rule(false, Char, Some(1), Some(3), "w"),
        ];
        let p = compiled(&rules);
        assert!(verdict(&p, C, R, 1, 3));
        assert!(verdict(&p, C, M, 1, 3));
        assert!(!verdict(&p, C, W, 1, 3));
        assert!(!verdict(&p, C, R | W, 1, 3));
        // Read and write allowed by two rules: together they cover a read-write open.
        let rules = [
            rule(false, A, None, None, "rwm"),
            rule(true, Char, Some(1), Some(3), "r"),
            rule(true, Char, Some(1), Some(3), "w"),
        ];
        let p = compiled(&rules);
        assert!(verdict(&p, C, R | W, 1, 3));
        assert!(!verdict(&p, C, M, 1, 3));
        assert!(!verdict(&p, C, R | W | M, 1, 3));
    }

    #[test]
    fn wildcards_match_any_type_major_or_minor() {
        use LinuxDeviceType::{A, B as Block, C as Char};
        let rules = [
            rule(false, A, None, None, "rwm"),
            rule(true, Char, Some(136), None, "rw"),
            rule(true, Block, None, Some(0), "r"),
            rule(true, A, Some(7), Some(-1), "r"), // -1: runc's wildcard
        ];
        let p = compiled(&rules);
        assert!(verdict(&p, C, R | W, 136, 0));
        assert!(verdict(&p, C, R | W, 136, 99_999));
        assert!(!verdict(&p, B, R, 136, 1), "type c does not match block");
        assert!(verdict(&p, B, R, 8, 0));
        assert!(verdict(&p, B, R, 259, 0));
        assert!(!verdict(&p, B, R, 8, 1));
        assert!(!verdict(&p, B, W, 8, 0));
        assert!(verdict(&p, B, R, 7, 3), "type a matches block");
        assert!(verdict(&p, C, R, 7, 3), "type a matches char");
    }

    #[test]
    fn a_list_that_decides_nothing_denies() {
        use LinuxDeviceType::{C as Char, P};
        let p = compiled(&[]);
        assert!(!verdict(&p, C, R, 1, 3));
        // FIFO rules and rules naming no access match no device.
        let p = compiled(&[
            rule(true, P, None, None, "rwm"),
            rule(true, Char, Some(1), Some(3), ""),
        ]);
        assert!(!verdict(&p, C, R, 1, 3));
        assert_eq!(instruction_count(&p), PROLOGUE_LEN + 4);
    }

    #[test]
    fn bad_rules_are_named() {
        use LinuxDeviceType::C as Char;
        let rules = [
            rule(true, Char, Some(1), Some(3), "rwm"),
            rule(true, Char, Some(1), Some(3), "rx"),
        ];
        let err = DeviceFilter::new(&rules).unwrap_err().to_string();
        assert!(
            err.contains("device rule 1") && err.contains("'x'"),
            "{err}"
        );
        let rules = [rule(true, Char, Some(1 << 40), None, "r")];
        let err = DeviceFilter::new(&rules).unwrap_err().to_string();
        assert!(err.contains("major 1099511627776"), "{err}");
        let rules = [rule(true, Char, Some(1), Some(-2), "r")];
        assert!(DeviceFilter::new(&rules).is_err());
        let many = vec![rule(true, Char, Some(1), Some(3), "r"); MAX_RULES + 1];
        assert!(DeviceFilter::new(&many).is_err());
    }

    #[test]
    fn the_largest_list_still_encodes_its_jumps() {
        use LinuxDeviceType::{A, C as Char};
        let mut rules = vec![rule(false, A, None, None, "rwm")];
        rules.extend((0..MAX_RULES as i64 - 1).map(|n| rule(true, Char, Some(n), Some(n), "rw")));
        let p = compiled(&rules);
        assert!(
            verdict(&p, C, R | W, 0, 0),
            "first rule, farthest from the tail"
        );
        let last = MAX_RULES as u32 - 2;
        assert!(verdict(&p, C, R | W, last, last));
        assert!(!verdict(&p, C, R | W, 0, 1));
    }
}
