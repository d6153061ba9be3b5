//! `top` inside the guest: the workload's processes (its cgroup's members) in `ps -ef`'s
//! columns, read from /proc since the image need not have a `ps`.

/// The header `ps -ef` prints, which the host shows as it is.
pub const HEADER: &str = "UID        PID  PPID  C STIME TTY          TIME CMD";

/// CPU ticks per second of the guest kernel (USER_HZ).
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer and returns one.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// One `ps -ef` row for `pid`, or None if it has exited meanwhile.
fn row(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    format_row(pid, &stat, &status, &cmdline, ticks_per_second())
}

/// The row of process `pid` from its /proc `stat`, `status` and `cmdline` (`hz`: ticks per
/// second); None when `stat` is not what the kernel writes.
fn format_row(pid: i32, stat: &str, status: &str, cmdline: &[u8], hz: u64) -> Option<String> {
    // The command name (in parentheses) may hold spaces and ')': the fields follow the last.
    let (before, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let secs = ticks / hz.max(1);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    let mut cmd = String::from_utf8_lossy(cmdline)
        .replace('\0', " ")
        .trim_end()
        .to_string();
    if cmd.is_empty() {
        // A kernel thread (or a zombie): its name, bracketed as ps shows it.
        cmd = format!("[{}]", before.split_once('(')?.1);
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
    let mut out = vec![HEADER.to_string()];
    out.extend(pids.iter().filter_map(|p| row(*p)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc/PID/stat line for `comm` with parent `ppid` and utime/stime ticks.
    fn stat(pid: i32, comm: &str, ppid: i32, utime: u64, stime: u64) -> String {
        format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 5 0 0")
    }

    #[test]
    fn a_row_has_the_uid_pids_cpu_time_and_command_line() {
        let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        let row = format_row(
            42,
            &stat(42, "sh", 1, 3_600 * 100, 61 * 100),
            status,
            b"sh\0-c\0sleep 9\0",
            100,
        )
        .unwrap();
        assert_eq!(
            row,
            "1000        42     1  0 -     ?        01:01:01 sh -c sleep 9"
        );
    }

    #[test]
    fn a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields() {
        // A workload may name itself anything, ") 1 2 3" included.
        let stat = stat(7, "evil) 9 9 (x", 3, 0, 0);
        let row = format_row(7, &stat, "Uid:\t0\t0\t0\t0\n", b"", 100).unwrap();
        assert_eq!(
            row,
            "0            7     3  0 -     ?        00:00:00 [evil) 9 9 (x]"
        );
    }

    #[test]
    fn what_is_not_a_stat_line_gives_no_row() {
        assert_eq!(format_row(1, "garbage", "", b"x", 100), None);
        assert_eq!(format_row(1, "1 (x) S 0", "", b"x", 100), None);
        // A tick rate of 0 (sysconf failing) divides by nothing.
        assert!(format_row(1, &stat(1, "x", 0, 5, 5), "", b"x", 0).is_some());
    }

    #[test]
    fn rows_start_with_the_header_and_skip_processes_that_are_gone() {
        let me = std::process::id() as i32;
        let rows = rows(&[me, i32::MAX]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0], HEADER);
        let fields: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(fields[1], me.to_string());
    }
}
