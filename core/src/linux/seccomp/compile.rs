//! Compiles an OCI `linux.seccomp` section to classic BPF programs with seccompiler.
//!
//! seccompiler's filters have one action on match and one on mismatch, while a profile can
//! mix actions (allow most, ENOSYS for clone3). So a profile compiles to a *stack* of
//! filters: first the allowlist (match: allow, mismatch: default action), then one filter per
//! other action (match: that action, mismatch: allow). The kernel runs every filter and keeps
//! the most severe answer; between two errnos, the later filter's wins, which is the more
//! specific rule. Compiled stacks are cached under `cache/seccomp/<sha256>.bpf`.

use super::SeccompError;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

/// errno for a default ERRNO action without `defaultErrnoRet` (EPERM, as runc).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;
/// Bytes of one `struct sock_filter`.
const INSN_BYTES: usize = 8;

/// Arguments the kernel declares as 32-bit (`int`, `unsigned int`) on x86_64, by syscall and
/// index. The kernel drops the upper half of the register, so a filter comparing all 64 bits
/// could be passed by setting bits the kernel ignores (`socket(AF_VSOCK | 1 << 32, ...)`
/// is greater than AF_VSOCK to a 64-bit comparison, and AF_VSOCK to the kernel). These are
/// compared on their lower 32 bits only, as the kernel reads them.
const INT_ARGS: &[(&str, u32)] = &[
    ("socket", 0),
    ("socket", 1),
    ("socket", 2),
    ("personality", 0),
];

/// How many bits of `arg` of `name` to compare: the kernel's width, unless the profile's
/// values do not fit it (then all 64, so the rule still means what it says).
fn arg_len(name: &str, arg: &LinuxSeccompArg) -> SeccompCmpArgLen {
    let fits = |v: u64| u32::try_from(v).is_ok();
    if INT_ARGS.contains(&(name, arg.index() as u32))
        && fits(arg.value())
        && fits(arg.value_two().unwrap_or(0))
    {
        SeccompCmpArgLen::Dword
    } else {
        SeccompCmpArgLen::Qword
    }
}

fn action_of(
    action: LinuxSeccompAction,
    errno: Option<u32>,
) -> Result<SeccompAction, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        other => {
            return Err(SeccompError::Compile(format!(
                "action {other:?} is not supported"
            )))
        }
    })
}

fn condition(name: &str, arg: &LinuxSeccompArg) -> Result<SeccompCondition, SeccompError> {
    let index = u8::try_from(arg.index()).map_err(|_| SeccompError::Compile("arg index".into()))?;
    let len = arg_len(name, arg);
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // libseccomp's MASKED_EQ: (arg & value) == valueTwo.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    SeccompCondition::new(index, len, op, value).map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Rules of one syscall entry for syscall `name`: all args on distinct indexes are ANDed
/// into one rule; args repeating an index are alternatives (one rule each), as libseccomp
/// treats them.
fn rules_of(name: &str, args: &[LinuxSeccompArg]) -> Result<Vec<SeccompRule>, SeccompError> {
    if args.is_empty() {
        return Ok(vec![]); // seccompiler's "match unconditionally"
    }
    let mut seen = std::collections::HashSet::new();
    let distinct = args.iter().all(|a| seen.insert(a.index()));
    let rule = |conds: Vec<SeccompCondition>| {
        SeccompRule::new(conds).map_err(|e| SeccompError::Compile(e.to_string()))
    };
    if distinct {
        let conds = args
            .iter()
            .map(|a| condition(name, a))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vec![rule(conds)?])
    } else {
        args.iter()
            .map(|a| rule(vec![condition(name, a)?]))
            .collect()
    }
}

type RuleMap = BTreeMap<i64, Vec<SeccompRule>>;

/// Adds `names` with the rules of `args` (none: unconditional) to `map`. An unconditional
/// entry wins over conditional ones for the same syscall. Names unknown on x86_64 are
/// skipped, as libseccomp skips them.
fn add_rules(
    map: &mut RuleMap,
    names: &[String],
    args: &[LinuxSeccompArg],
) -> Result<(), SeccompError> {
    for name in names {
        let Ok(sysno) = syscalls::Sysno::from_str(name) else {
            continue;
        };
        let nr = sysno.id() as i64;
        let rules = rules_of(name, args)?;
        match map.get_mut(&nr) {
            Some(existing) if existing.is_empty() => {}
            Some(_) if rules.is_empty() => {
                map.insert(nr, vec![]);
            }
            Some(existing) => existing.extend(rules),
            None => {
                map.insert(nr, rules);
            }
        }
    }
    Ok(())
}

/// Compiles `seccomp` into the stack of BPF programs to install, in order.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    let default = action_of(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut allow = RuleMap::new();
    let mut others: Vec<(SeccompAction, RuleMap)> = Vec::new();
    for entry in seccomp.syscalls().iter().flatten() {
        let action = action_of(entry.action(), entry.errno_ret())?;
        if action == default {
            continue;
        }
        let args = entry.args().as_deref().unwrap_or(&[]);
        if action == SeccompAction::Allow {
            add_rules(&mut allow, entry.names(), args)?;
        } else {
            let pos = match others.iter().position(|(a, _)| *a == action) {
                Some(p) => p,
                None => {
                    others.push((action.clone(), RuleMap::new()));
                    others.len() - 1
                }
            };
            add_rules(&mut others[pos].1, entry.names(), args)?;
        }
    }
    let arch = TargetArch::x86_64;
    let mut programs = Vec::new();
    let mut push = |rules: RuleMap, mismatch: SeccompAction, matched: SeccompAction| {
        let filter = SeccompFilter::new(rules, mismatch, matched, arch)
            .map_err(|e| SeccompError::Compile(e.to_string()))?;
        programs
            .push(BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(e.to_string()))?);
        Ok::<(), SeccompError>(())
    };
    if default != SeccompAction::Allow {
        push(allow, default, SeccompAction::Allow)?;
    }
    for (action, rules) in others {
        if action != SeccompAction::Allow {
            push(rules, SeccompAction::Allow, action)?;
        }
    }
    Ok(programs)
}

/// [`compile`], through the on-disk cache in `cache_dir` keyed by the section's JSON.
pub fn compile_cached(
    seccomp: &LinuxSeccomp,
    cache_dir: &Path,
) -> Result<Vec<BpfProgram>, SeccompError> {
    let key = serde_json::to_vec(seccomp).map_err(|e| SeccompError::Compile(e.to_string()))?;
    let digest = Sha256::digest(&key);
    let path = cache_dir.join(format!("{digest:x}.bpf"));
    if let Some(programs) = std::fs::read(&path).ok().and_then(|b| decode(&b)) {
        return Ok(programs);
    }
    let programs = compile(seccomp)?;
    let _ = std::fs::create_dir_all(cache_dir);
    // A cache that cannot be written only costs a recompile next time.
    let _ = crate::fsutil::write_atomic(&path, &encode(&programs));
    Ok(programs)
}

/// The filters of `spec` (none when it has no `linux.seccomp`), through the cache.
pub fn for_spec(
    spec: &oci_spec::runtime::Spec,
    cache_dir: &Path,
) -> Result<Vec<BpfProgram>, SeccompError> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => compile_cached(s, cache_dir),
        None => Ok(vec![]),
    }
}

/// Cache format: per program a u32 instruction count, then 8-byte instructions.
fn encode(programs: &[BpfProgram]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for i in p {
            out.extend_from_slice(&i.code.to_le_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_le_bytes());
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<Vec<BpfProgram>> {
    let mut programs = Vec::new();
    while !bytes.is_empty() {
        let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        bytes = &bytes[4..];
        let body = bytes.get(..n * INSN_BYTES)?;
        let program = body
            .chunks_exact(INSN_BYTES)
            .map(|c| seccompiler::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        programs.push(program);
        bytes = &bytes[n * INSN_BYTES..];
    }
    Some(programs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::capabilities::DOCKER_DEFAULT;
    use crate::linux::seccomp::{profile, DEFAULT_PROFILE};

    fn default_seccomp() -> LinuxSeccomp {
        let caps: Vec<String> = DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect();
        profile::resolve(DEFAULT_PROFILE, "default", &caps).unwrap()
    }

    #[test]
    fn default_profile_compiles_to_allowlist_plus_enosys_filter() {
        let programs = compile(&default_seccomp()).unwrap();
        assert_eq!(programs.len(), 2, "allowlist + clone3 ENOSYS");
        assert!(programs[0].len() > 300);
    }

    #[test]
    fn cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let first = compile_cached(&default_seccomp(), dir.path()).unwrap();
        let second = compile_cached(&default_seccomp(), dir.path()).unwrap();
        assert_eq!(encode(&first), encode(&second));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
