//! `top` inside the guest: the workload's processes (its cgroup's members) in `ps -ef`'s
//! columns, read from /proc since the image need not have a `ps`.

/// CPU ticks per second of the guest kernel (USER_HZ).
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer and returns one.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// One `ps -ef` row for `pid`, or None if it has exited meanwhile.
fn row(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let secs = ticks / ticks_per_second();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut cmd = String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .trim_end()
        .to_string();
    if cmd.is_empty() {
        cmd = format!("[{}]", stat.split_once('(')?.1.rsplit_once(')')?.0);
    }
    Some(format!(
        "{uid:<8} {pid:>5} {ppid:>5}  0 -     ?        {:02}:{:02}:{:02} {cmd}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// The header and a row per process of `pids`.
pub fn rows(pids: &[i32]) -> Vec<String> {
    let mut out = vec!["UID        PID  PPID  C STIME TTY          TIME CMD".to_string()];
    out.extend(pids.iter().filter_map(|p| row(*p)));
    out
}
