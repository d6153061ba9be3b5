//! How many host syscalls a process can make, read from the process itself: every thread's
//! stack of seccomp filters is fetched with PTRACE_SECCOMP_GET_FILTER (the thread held
//! stopped for a moment) and each classic-BPF program is evaluated for every x86_64 syscall
//! in the table. Arguments are unknown to the evaluator: a test on an argument follows both
//! branches, so "reachable" counts syscalls some argument values let through (an
//! over-approximation where rules depend on arguments) and "unconditional" those every
//! value lets through. A process without filters reaches the whole table and every ABI.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::bench::error::BenchError;
use crate::bench::report::SyscallReach;

/// PTRACE_SECCOMP_GET_FILTER (linux/ptrace.h).
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// seccomp_data: the syscall number, then the architecture.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// sizeof(struct seccomp_data).
const SECCOMP_DATA_LEN: u32 = 64;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// x32 syscalls are x86_64 ones with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The action part of a return value, and the two that let the call through.
const RET_ACTION_FULL: u32 = 0xffff_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_LOG: u32 = 0x7ffc_0000;
/// Paths evaluated per syscall before giving up (then counted as maybe allowed).
const STEP_BUDGET: usize = 200_000;

/// One classic BPF instruction (struct sock_filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A value known exactly, or not at all (an argument).
type Val = Option<u32>;

/// What one syscall can lead to through one filter.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Outcomes {
    pub may_allow: bool,
    pub may_deny: bool,
}

#[derive(Clone)]
struct State {
    pc: usize,
    a: Val,
    x: Val,
    mem: [Val; 16],
}

/// Evaluates `prog` for a call with this architecture and number (`nr` None: any number).
pub fn evaluate(prog: &[Insn], arch: u32, nr: Option<u32>) -> Outcomes {
    let mut out = Outcomes::default();
    let mut stack = vec![State {
        pc: 0,
        a: Some(0),
        x: Some(0),
        mem: [Some(0); 16],
    }];
    let mut steps = 0usize;
    while let Some(mut s) = stack.pop() {
        loop {
            steps += 1;
            if steps > STEP_BUDGET {
                out.may_allow = true;
                out.may_deny = true;
                return out;
            }
            let Some(i) = prog.get(s.pc) else {
                out.may_deny = true; // fell off the end: the kernel refuses such a program
                break;
            };
            let next = s.pc + 1;
            match i.code & 0x07 {
                0x00 => {
                    // BPF_LD
                    s.a = load(i, arch, nr, &s.mem);
                    s.pc = next;
                }
                0x01 => {
                    // BPF_LDX
                    s.x = load(i, arch, nr, &s.mem);
                    s.pc = next;
                }
                0x02 => {
                    s.mem[(i.k & 15) as usize] = s.a;
                    s.pc = next;
                }
                0x03 => {
                    s.mem[(i.k & 15) as usize] = s.x;
                    s.pc = next;
                }
                0x04 => {
                    s.a = alu(i, s.a, s.x);
                    s.pc = next;
                }
                0x05 => {
                    let op = i.code & 0xf0;
                    if op == 0x00 {
                        s.pc = next + i.k as usize; // BPF_JA
                        continue;
                    }
                    let rhs = if i.code & 0x08 != 0 { s.x } else { Some(i.k) };
                    let taken = match (s.a, rhs) {
                        (Some(a), Some(b)) => Some(match op {
                            0x10 => a == b,
                            0x20 => a > b,
                            0x30 => a >= b,
                            0x40 => a & b != 0,
                            _ => false,
                        }),
                        _ => None,
                    };
                    let (t, f) = (next + i.jt as usize, next + i.jf as usize);
                    match taken {
                        Some(true) => s.pc = t,
                        Some(false) => s.pc = f,
                        None => {
                            let mut other = s.clone();
                            other.pc = f;
                            stack.push(other);
                            s.pc = t;
                        }
                    }
                }
                0x06 => {
                    let ret = if i.code & 0x18 == 0x10 {
                        s.a
                    } else {
                        Some(i.k)
                    };
                    match ret.map(|r| r & RET_ACTION_FULL) {
                        Some(RET_ALLOW) | Some(RET_LOG) => out.may_allow = true,
                        Some(_) => out.may_deny = true,
                        None => {
                            out.may_allow = true;
                            out.may_deny = true;
                        }
                    }
                    break;
                }
                _ => {
                    // BPF_MISC: TAX / TXA
                    if i.code & 0xf8 == 0x80 {
                        s.a = s.x;
                    } else {
                        s.x = s.a;
                    }
                    s.pc = next;
                }
            }
        }
    }
    out
}

fn load(i: &Insn, arch: u32, nr: Option<u32>, mem: &[Val; 16]) -> Val {
    match i.code & 0xe0 {
        0x00 => Some(i.k),                // BPF_IMM
        0x60 => mem[(i.k & 15) as usize], // BPF_MEM
        0x80 => Some(SECCOMP_DATA_LEN),   // BPF_LEN
        0x20 => match i.k {
            OFFSET_NR => nr,
            OFFSET_ARCH => Some(arch),
            _ => None, // instruction pointer, arguments
        },
        _ => None,
    }
}

fn alu(i: &Insn, a: Val, x: Val) -> Val {
    let op = i.code & 0xf0;
    if op == 0x80 {
        return a.map(|v| v.wrapping_neg());
    }
    let b = if i.code & 0x08 != 0 { x } else { Some(i.k) };
    let (a, b) = (a?, b?);
    Some(match op {
        0x00 => a.wrapping_add(b),
        0x10 => a.wrapping_sub(b),
        0x20 => a.wrapping_mul(b),
        0x30 => a.checked_div(b)?,
        0x40 => a | b,
        0x50 => a & b,
        0x60 => a.checked_shl(b).unwrap_or(0),
        0x70 => a.checked_shr(b).unwrap_or(0),
        0x90 => a.checked_rem(b)?,
        0xa0 => a ^ b,
        _ => return None,
    })
}

/// Every x86_64 syscall number in the table.
fn table() -> Vec<u32> {
    syscalls::Sysno::iter().map(|s| s.id() as u32).collect()
}

/// What a stack of filters lets through, as the report counts it. An empty stack is a
/// thread without seccomp.
pub fn reach_of(stacks: &[Vec<Vec<Insn>>], process: String) -> SyscallReach {
    let table = table();
    let through = |stack: &Vec<Vec<Insn>>, arch: u32, nr: Option<u32>| {
        let per: Vec<Outcomes> = stack.iter().map(|f| evaluate(f, arch, nr)).collect();
        (
            per.iter().all(|o| o.may_allow),
            per.iter().all(|o| !o.may_deny),
        )
    };
    let mut reachable = BTreeSet::new();
    let mut unconditional = BTreeSet::new();
    let mut other_abis = false;
    for stack in stacks {
        for &nr in &table {
            let (some, all) = through(stack, AUDIT_ARCH_X86_64, Some(nr));
            if some {
                reachable.insert(nr);
            }
            if all {
                unconditional.insert(nr);
            }
            if !other_abis && through(stack, AUDIT_ARCH_X86_64, Some(nr | X32_SYSCALL_BIT)).0 {
                other_abis = true;
            }
        }
        if !other_abis && through(stack, AUDIT_ARCH_I386, None).0 {
            other_abis = true;
        }
    }
    let distinct: BTreeSet<&Vec<Insn>> = stacks.iter().flatten().collect();
    SyscallReach {
        process,
        table: table.len(),
        reachable: reachable.len(),
        unconditional: unconditional.len(),
        filters: distinct.len(),
        other_abis,
    }
}

/// The seccomp filters of one thread, newest first; empty when it has none. The thread is
/// seized, stopped while they are read, and detached.
pub fn filters_of_thread(tid: i32) -> Result<Vec<Vec<Insn>>, BenchError> {
    // SAFETY: seize and interrupt a thread by id; it is detached below on every path.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) } != 0 {
        return Err(BenchError::Ptrace {
            request: "PTRACE_SEIZE",
            tid,
            source: std::io::Error::last_os_error(),
        });
    }
    let mut status = 0;
    // SAFETY: stops the thread seized above and collects that stop (__WALL: not our child).
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0);
        libc::waitpid(tid, &mut status, libc::__WALL);
    }
    let result = read_filters(tid);
    // SAFETY: resumes the thread as it was.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) };
    result
}

fn read_filters(tid: i32) -> Result<Vec<Vec<Insn>>, BenchError> {
    let mut filters = Vec::new();
    for index in 0.. {
        // SAFETY: with a null buffer the kernel only returns the filter's length.
        let len = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                index as libc::c_ulong,
                std::ptr::null_mut::<libc::sock_filter>(),
            )
        };
        if len < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                // Past the last filter, or not in filter mode at all.
                Some(libc::ENOENT) | Some(libc::EINVAL) => Ok(filters),
                _ => Err(BenchError::Ptrace {
                    request: "PTRACE_SECCOMP_GET_FILTER",
                    tid,
                    source: e,
                }),
            };
        }
        let mut buf = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0
            };
            len as usize
        ];
        // SAFETY: the buffer holds exactly `len` instructions, as the kernel said.
        let got = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                index as libc::c_ulong,
                buf.as_mut_ptr(),
            )
        };
        if got < 0 {
            return Err(BenchError::Ptrace {
                request: "PTRACE_SECCOMP_GET_FILTER",
                tid,
                source: std::io::Error::last_os_error(),
            });
        }
        filters.push(
            buf.iter()
                .map(|f| Insn {
                    code: f.code,
                    jt: f.jt,
                    jf: f.jf,
                    k: f.k,
                })
                .collect(),
        );
    }
    Ok(filters)
}

/// The syscalls every thread of `pid` can reach; `what` names it in the report.
pub fn measure(pid: i32, what: &str) -> Result<SyscallReach, BenchError> {
    let task = PathBuf::from(format!("/proc/{pid}/task"));
    let tids: Vec<i32> = std::fs::read_dir(&task)
        .map_err(BenchError::file(&task))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut stacks = Vec::new();
    for tid in &tids {
        stacks.push(filters_of_thread(*tid)?);
    }
    Ok(reach_of(
        &stacks,
        format!("{what} (pid {pid}, {} threads)", tids.len()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    use std::collections::BTreeMap;

    fn insns(p: &BpfProgram) -> Vec<Insn> {
        p.iter()
            .map(|f| Insn {
                code: f.code,
                jt: f.jt,
                jf: f.jf,
                k: f.k,
            })
            .collect()
    }

    fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Vec<Insn> {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Errno(1),
            SeccompAction::Allow,
            seccompiler::TargetArch::x86_64,
        )
        .unwrap();
        let prog: BpfProgram = filter.try_into().unwrap();
        insns(&prog)
    }

    #[test]
    fn an_allowlist_reaches_its_syscalls_and_an_argument_rule_counts_as_conditional() {
        let mut rules = BTreeMap::new();
        rules.insert(libc::SYS_read, vec![]);
        rules.insert(libc::SYS_write, vec![]);
        let only_fd_1 =
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 1).unwrap();
        rules.insert(
            libc::SYS_close,
            vec![SeccompRule::new(vec![only_fd_1]).unwrap()],
        );
        let prog = compile(rules);
        let r = reach_of(&[vec![prog.clone()]], "test".into());
        assert_eq!((r.reachable, r.unconditional, r.filters), (3, 2, 1));
        assert!(!r.other_abis, "seccompiler checks the architecture");
        assert!(r.table > 300);
        assert_eq!(
            evaluate(&prog, AUDIT_ARCH_X86_64, Some(libc::SYS_getpid as u32)),
            Outcomes {
                may_allow: false,
                may_deny: true
            }
        );
        // A second filter that refuses write: a stack lets through only what all allow.
        let mut rules = BTreeMap::new();
        rules.insert(libc::SYS_read, vec![]);
        rules.insert(libc::SYS_close, vec![]);
        let r = reach_of(&[vec![prog, compile(rules)]], "test".into());
        assert_eq!((r.reachable, r.unconditional, r.filters), (2, 1, 2));
    }

    /// The filters a container gets for these capabilities, as the evaluator sees them.
    fn default_profile(caps: &[String]) -> Vec<Vec<Insn>> {
        let section = crate::linux::seccomp::profile::resolve(
            crate::linux::seccomp::DEFAULT_PROFILE,
            "default",
            caps,
        )
        .unwrap();
        crate::linux::seccomp::compile::compile(&section)
            .unwrap()
            .iter()
            .map(insns)
            .collect()
    }

    #[test]
    fn the_default_profile_is_evaluated_as_the_kernel_would_apply_it() {
        let caps: Vec<String> = crate::linux::capabilities::DOCKER_DEFAULT
            .iter()
            .map(|c| c.to_string())
            .collect();
        let stack = default_profile(&caps);
        let allowed = |nr: i64| {
            stack
                .iter()
                .all(|f| evaluate(f, AUDIT_ARCH_X86_64, Some(nr as u32)).may_allow)
        };
        for nr in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_ptrace,
        ] {
            assert!(allowed(nr), "syscall {nr} is in the default allowlist");
        }
        for nr in [
            libc::SYS_mount,
            libc::SYS_init_module,
            libc::SYS_kexec_load,
            libc::SYS_bpf,
            libc::SYS_keyctl,
        ] {
            assert!(
                !allowed(nr),
                "syscall {nr} needs a capability the default lacks"
            );
        }
        let r = reach_of(&[stack], "default".into());
        assert!(
            r.reachable < r.table && r.unconditional < r.reachable,
            "{r:?}"
        );
        assert!(!r.other_abis, "{r:?}");
        // With every capability the profile opens the capability-gated calls.
        let all = default_profile(&crate::linux::capabilities::all_caps());
        assert!(all
            .iter()
            .all(|f| evaluate(f, AUDIT_ARCH_X86_64, Some(libc::SYS_mount as u32)).may_allow));
        assert!(reach_of(&[all], "all caps".into()).reachable > r.reachable);
    }

    #[test]
    fn no_filter_reaches_everything() {
        let r = reach_of(&[vec![]], "unconfined".into());
        assert_eq!(r.reachable, r.table);
        assert_eq!(r.unconditional, r.table);
        assert!(r.other_abis);
    }
}
