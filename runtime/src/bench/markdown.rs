//! The report as Markdown (bench.md) and as the short table printed at the end of a run.

use std::fmt::Write;

use capsa_escape::findings::Reach;

use super::report::{Cell, Outcome, Report, Verdict, OVERHEAD_FIGURES};

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// A figure to 3 significant digits.
fn sig(x: f64) -> String {
    let digits = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}")
}

fn labels(report: &Report) -> String {
    let m = &report.machine;
    format!(
        "{} ({} cores, {} GiB), {}, host kernel {}, KVM: {}, cgroups: {}",
        m.cpu, m.cpus, m.memory_gib, m.os, m.host_kernel, m.kvm, m.cgroup
    )
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# capsa bench\n");
    let _ = writeln!(s, "- command: `{}`", r.command);
    let _ = writeln!(s, "- machine: {}", labels(r));
    let _ = writeln!(
        s,
        "- image: `{}`; started {}; took {:.0} s{}\n",
        r.image,
        r.started,
        r.duration_s,
        if r.quick { "; --quick" } else { "" }
    );
    subjects(&mut s, r);
    start(&mut s, r);
    memory(&mut s, r);
    density(&mut s, r);
    overhead(&mut s, r);
    isolation(&mut s, r);
    for (scenario, why) in &r.not_run {
        let _ = writeln!(s, "- {scenario}: {why}");
    }
    let _ = writeln!(
        s,
        "\n![start latency CDF](bench-start-cdf.svg)\n![density](bench-density.svg)\n![overhead](bench-overhead.svg)\n![isolation matrix](bench-isolation.svg)"
    );
    s
}

fn subjects(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## Subjects\n");
    let _ = writeln!(
        s,
        "| subject | isolation | engine | accelerator | VM start | version | here |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for i in &r.subjects {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i.name,
            i.isolation,
            i.engine,
            i.accelerator.as_deref().unwrap_or("-"),
            i.vm_start.as_deref().unwrap_or("-"),
            i.version,
            i.unavailable
                .as_deref()
                .map(|w| format!("not available: {w}"))
                .unwrap_or_else(|| "ran".into())
        );
    }
    let _ = writeln!(s);
}

/// A table row for a subject whose outcome has no figures.
fn absent<T>(s: &mut String, name: &str, o: &Outcome<T>, columns: usize) -> bool {
    match o.why_not() {
        Some(why) => {
            let _ = writeln!(
                s,
                "| {name} | {} |{}",
                why.replace('|', "/"),
                " |".repeat(columns.saturating_sub(1))
            );
            true
        }
        None => false,
    }
}

fn start(s: &mut String, r: &Report) {
    if r.start.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Start latency (ms)\n\nThe command a user types, from its spawn to the workload's first line and to its exit; CPU is user+system of the whole process tree. Runs of the subjects interleaved after warm-up.\n"
    );
    let _ = writeln!(s, "| subject | runs | first output p50 | p95 | p99 | exit p50 | p95 | p99 | CPU p50 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, o) in &r.start {
        if absent(s, name, o, 8) {
            continue;
        }
        if let Some(x) = o.ok() {
            let (f, e, c) = (&x.first_output_ms, &x.exit_ms, &x.cpu_ms);
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.n,
                ms(f.p50),
                ms(f.p95),
                ms(f.p99),
                ms(e.p50),
                ms(e.p95),
                ms(e.p99),
                ms(c.p50)
            );
        }
    }
    let _ = writeln!(s);
}

fn memory(s: &mut String, r: &Report) {
    if r.memory.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Memory per idle instance (MiB)\n\nPSS (smaps_rollup) summed over every host process of the instance; for a VM it includes the guest memory its VMM has touched (shown apart). cgroup: the instance's host cgroup charge.\n");
    let _ = writeln!(
        s,
        "| subject | PSS | cgroup | guest touched | processes |\n| --- | --- | --- | --- | --- |"
    );
    for (name, o) in &r.memory {
        if absent(s, name, o, 4) {
            continue;
        }
        if let Some(m) = o.ok() {
            let procs: Vec<String> = m
                .processes
                .iter()
                .map(|p| format!("{} {}", p.command, mib(p.pss_kib)))
                .collect();
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} |",
                mib(m.pss_kib),
                m.cgroup_kib.map(mib).unwrap_or_else(|| "-".into()),
                m.guest_touched_kib.map(mib).unwrap_or_else(|| "-".into()),
                procs.join(", ")
            );
        }
    }
    let _ = writeln!(s);
}

fn density(s: &mut String, r: &Report) {
    if r.density.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Density\n\nIdle instances started one after another; at each N the PSS of all their host processes over N, and the time the Nth took to start.\n");
    let _ = writeln!(s, "| subject | N | PSS per instance (MiB) | cgroup per instance (MiB) | start of the Nth (ms) |\n| --- | --- | --- | --- | --- |");
    let mut stops = Vec::new();
    for (name, o) in &r.density {
        if absent(s, name, o, 4) {
            continue;
        }
        if let Some(d) = o.ok() {
            for step in &d.steps {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} |",
                    step.n,
                    mib(step.pss_per_instance_kib),
                    step.cgroup_per_instance_kib
                        .map(mib)
                        .unwrap_or_else(|| "-".into()),
                    ms(step.start_nth_ms)
                );
            }
            stops.push(format!("- {name} stopped: {}", d.stopped));
        }
    }
    let _ = writeln!(s, "\n{}\n", stops.join("\n"));
}

fn overhead(s: &mut String, r: &Report) {
    if r.overhead.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Overhead (capsa-probe)\n\nThe same static probe in a fresh instance of each subject; TCP through a port published on 127.0.0.1. In parentheses: the ratio to the host without isolation (for getpid and round trips, higher is slower).\n");
    let names: Vec<&String> = r.overhead.keys().collect();
    let _ = writeln!(
        s,
        "| figure | host |{}\n| --- | --- |{}",
        names.iter().map(|n| format!(" {n} |")).collect::<String>(),
        " --- |".repeat(names.len())
    );
    let base = r.overhead_baseline.as_ref().and_then(|b| b.ok());
    for f in OVERHEAD_FIGURES {
        let host = base.and_then(|b| (f.value)(b));
        let mut row = format!(
            "| {} | {} |",
            f.label,
            host.map(sig).unwrap_or_else(|| "-".into())
        );
        for n in &names {
            let cell = match r.overhead[*n].ok() {
                Some(o) => match ((f.value)(o), host) {
                    (Some(v), Some(h)) if h > 0.0 => format!("{} ({:.2}x)", sig(v), v / h),
                    (Some(v), _) => sig(v),
                    (None, _) => "-".into(),
                },
                None => "-".into(),
            };
            let _ = write!(row, " {cell} |");
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(s);
    for (name, o) in &r.overhead {
        match o {
            Outcome::Ok(x) => {
                for (k, why) in &x.not_measured {
                    let _ = writeln!(s, "- {name} {k}: not measured: {why}");
                }
            }
            other => {
                let _ = writeln!(s, "- {name}: {}", other.why_not().unwrap_or_default());
            }
        }
    }
    if let Some(why) = r.overhead_baseline.as_ref().and_then(|b| b.why_not()) {
        let _ = writeln!(s, "- host baseline: {why}");
    }
    let _ = writeln!(s);
}

/// A matrix cell in words: the verdict and, for blocked or contained, by what.
pub fn cell_text(c: &Cell) -> String {
    let layers =
        c.by.iter()
            .map(|l| l.label())
            .collect::<Vec<_>>()
            .join(" + ");
    let star = if c.inferred { "*" } else { "" };
    match c.verdict {
        Verdict::Blocked => format!("blocked: {layers}{star}"),
        Verdict::Contained => format!("contained: {layers}"),
        v => v.label().to_string(),
    }
}

fn host_text(r: &Report, name: &str) -> String {
    r.isolation_baseline
        .as_ref()
        .and_then(|b| b.ok())
        .and_then(|b| b.get(name))
        .map(|f| match f.reach {
            Reach::Reached => "reached".to_string(),
            Reach::Refused => match &f.errno_name {
                Some(e) => format!("refused ({e})"),
                None => "none found".to_string(),
            },
            Reach::Absent => "absent".to_string(),
        })
        .unwrap_or_else(|| "-".into())
}

fn isolation(s: &mut String, r: &Report) {
    if r.isolation.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Isolation matrix (capsa-escape)\n\nThe same static probe tries each escape with harmless arguments in a fresh instance of each subject and on the host without isolation. ALLOWED: it reached the host (its kernel's global state, a host file, a host process). contained: it succeeded on the instance's own copy (its namespace, or the guest's kernel). blocked: refused, by the layers named, found by rerunning the probe with layers removed (the smallest removal that lets it through); * marks a layer named from the errno because only removing every layer at once let it through. n/a: not in this kernel, or the host refuses it without isolation.\n");
    let names: Vec<&String> = r.isolation.keys().collect();
    let _ = writeln!(
        s,
        "| probe | host (no isolation) |{}\n| --- | --- |{}",
        names.iter().map(|n| format!(" {n} |")).collect::<String>(),
        " --- |".repeat(names.len())
    );
    for row in crate::bench::scenario::isolation::rows() {
        let mut line = format!("| {} | {} |", row.label, host_text(r, row.name));
        for n in &names {
            let cell = match &r.isolation[*n] {
                Outcome::Ok(x) => x.cells.get(row.name).map(cell_text).unwrap_or_default(),
                _ => "-".into(),
            };
            let _ = write!(line, " {cell} |");
        }
        let _ = writeln!(s, "{line}");
    }
    let mut line = "| host syscalls reachable (workload; VM: its engine) | - |".to_string();
    for n in &names {
        let cell = match r.isolation[*n].ok().map(|x| &x.host_syscalls) {
            Some(Outcome::Ok(h)) => format!(
                "{} of {} ({} whatever the arguments; {} filters{})",
                h.reachable,
                h.table,
                h.unconditional,
                h.filters,
                if h.other_abis { "; i386/x32 open" } else { "" }
            ),
            Some(other) => other.why_not().unwrap_or_default().replace('|', "/"),
            None => "-".into(),
        };
        let _ = write!(line, " {cell} |");
    }
    let _ = writeln!(s, "{line}");
    let mut line =
        "| VM engine process (uid, CapEff, seccomp, namespaces shared with the host) | - |"
            .to_string();
    for n in &names {
        let cell = match r.isolation[*n].ok().and_then(|x| x.engine.as_ref()) {
            Some(e) => format!(
                "{}: uid {}, CapEff {}, seccomp {}, shares {}",
                e.command,
                e.uid,
                e.cap_eff,
                e.seccomp,
                if e.shared_namespaces.is_empty() {
                    "none".to_string()
                } else {
                    e.shared_namespaces.join(",")
                }
            ),
            None => "-".into(),
        };
        let _ = write!(line, " {cell} |");
    }
    let _ = writeln!(s, "{line}\n");
    let _ = writeln!(s, "Host syscalls are counted from the running process's own seccomp filters (PTRACE_SECCOMP_GET_FILTER on every thread, each program evaluated for every x86_64 syscall; an argument test counts both ways).\n\n### What each probe saw\n");
    for (name, o) in &r.isolation {
        match o {
            Outcome::Ok(x) => {
                let _ = writeln!(
                    s,
                    "- **{name}**: uid {}, CapEff {}, seccomp {}, no_new_privs {}, kernel {} ({}), {}: {}",
                    x.context.uid,
                    x.context.cap_eff,
                    x.context.seccomp,
                    x.context.no_new_privs,
                    x.context.kernel,
                    if x.same_kernel { "the host's" } else { "not the host's" },
                    if x.same_kernel { "namespaces shared with the host" } else { "the guest's initial namespaces" },
                    if x.shared_namespaces.is_empty() { "none".to_string() } else { x.shared_namespaces.join(", ") }
                );
                for (probe, c) in &x.cells {
                    let _ = writeln!(s, "  - {probe}: {}: {}", cell_text(c), c.detail);
                }
                for rerun in &x.reruns {
                    let _ = writeln!(
                        s,
                        "  - rerun with {} ({}): {}",
                        rerun.relaxation.describe(),
                        rerun.how,
                        rerun
                            .error
                            .clone()
                            .unwrap_or_else(|| format!("{} probes", rerun.probes.len()))
                    );
                }
            }
            other => {
                let _ = writeln!(s, "- **{name}**: {}", other.why_not().unwrap_or_default());
            }
        }
    }
    if let Some(why) = r.isolation_baseline.as_ref().and_then(|b| b.why_not()) {
        let _ = writeln!(s, "- host baseline: {why}");
    }
    let _ = writeln!(s);
}

/// The isolation matrix for the terminal: one line per probe, one column per subject.
pub fn isolation_summary(r: &Report) -> String {
    let mut s = String::new();
    if r.isolation.is_empty() {
        return s;
    }
    let names: Vec<&String> = r.isolation.keys().collect();
    // Rows of cells first, so each column is as wide as its widest cell.
    let mut rows: Vec<Vec<String>> = vec![["PROBE", "HOST"]
        .iter()
        .map(|h| h.to_string())
        .chain(names.iter().map(|n| n.to_string()))
        .collect()];
    for row in crate::bench::scenario::isolation::rows() {
        let mut cells = vec![row.name.to_string(), host_text(r, row.name)];
        cells.extend(names.iter().map(|n| match &r.isolation[*n] {
            Outcome::Ok(x) => x.cells.get(row.name).map(cell_text).unwrap_or_default(),
            _ => "-".into(),
        }));
        rows.push(cells);
    }
    let mut syscalls = vec!["host syscalls".to_string(), "-".to_string()];
    syscalls.extend(
        names
            .iter()
            .map(|n| match r.isolation[*n].ok().map(|x| &x.host_syscalls) {
                Some(Outcome::Ok(h)) => format!("{} of {}", h.reachable, h.table),
                _ => "-".into(),
            }),
    );
    rows.push(syscalls);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    for (n, o) in &r.isolation {
        if let Some(why) = o.why_not() {
            let _ = writeln!(s, "  {n}: {why}");
        }
    }
    s
}

/// The few figures a user looks at first, one line per subject.
pub fn terminal_summary(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "machine: {}", labels(r));
    if r.start.is_empty() && r.memory.is_empty() && r.density.is_empty() && r.overhead.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "{:<16} {:>12} {:>12} {:>10} {:>10} {:>14} {:>10}",
        "SUBJECT", "FIRST OUT p50", "EXIT p99", "CPU p50", "PSS MiB", "DENSITY", "GETPID ns"
    );
    for i in &r.subjects {
        let name = &i.name;
        let start = r.start.get(name).and_then(|o| o.ok());
        let mem = r.memory.get(name).and_then(|o| o.ok());
        let dens = r
            .density
            .get(name)
            .and_then(|o| o.ok())
            .and_then(|d| d.steps.last());
        let getpid = r
            .overhead
            .get(name)
            .and_then(|o| o.ok())
            .and_then(|o| o.getpid_ns);
        let or = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<16} {:>12} {:>12} {:>10} {:>10} {:>14} {:>10}",
            name,
            or(start.map(|x| format!("{} ms", ms(x.first_output_ms.p50)))),
            or(start.map(|x| format!("{} ms", ms(x.exit_ms.p99)))),
            or(start.map(|x| format!("{} ms", ms(x.cpu_ms.p50)))),
            or(mem.map(|m| mib(m.pss_kib))),
            or(dens.map(|d| format!("N={} {}M", d.n, mib(d.pss_per_instance_kib)))),
            or(getpid.map(sig)),
        );
        if let Some(why) = &i.unavailable {
            let _ = writeln!(s, "  {name}: not available here: {why}");
        }
    }
    s
}
