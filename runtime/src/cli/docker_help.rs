//! Docker's help wording for the flags capsa shares with Docker (from `docker run --help`
//! and its siblings, docker CLI 28.2.2), applied over the flag definitions of the container
//! verbs when the command line is built, so `capsa run --help` reads as Docker's does. A
//! flag whose meaning differs in capsa keeps Docker's sentence and says how after it.

/// (verbs, flag id, Docker's help).
const WORDING: &[(&[&str], &str, &str)] = &[
    (RUN, "detach", "Run container in background and print container ID"),
    (RUN, "name", "Assign a name to the container"),
    (RUN, "label", "Set meta data on a container"),
    (RUN, "publish", "Publish a container's port(s) to the host"),
    (RUN, "publish_all", "Publish all exposed ports to random ports"),
    (RUN, "expose", "Expose a port or a range of ports"),
    (RUN, "interactive", "Keep STDIN open even if not attached"),
    (RUN, "tty", "Allocate a pseudo-TTY"),
    (RUN, "env", "Set environment variables"),
    (RUN, "env_file", "Read in a file of environment variables"),
    (RUN, "volume", "Bind mount a volume"),
    (RUN, "workdir", "Working directory inside the container"),
    (RUN, "user", "Username or UID (format: <name|uid>[:<group|gid>])"),
    (RUN, "memory", "Memory limit"),
    (RUN, "cpus", "Number of CPUs"),
    (RUN, "pids_limit", "Tune container pids limit (set -1 for unlimited)"),
    (RUN, "rm", "Automatically remove the container and its associated anonymous volumes when it exits"),
    (RUN, "restart", "Restart policy to apply when a container exits"),
    (RUN, "network", "Connect a container to a network"),
    (RUN, "network_alias", "Add network-scoped alias for the container"),
    (RUN, "ip", "IPv4 address (e.g., 172.30.100.104)"),
    (RUN, "mac_address", "Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    (RUN, "hostname", "Container host name"),
    (RUN, "entrypoint", "Overwrite the default ENTRYPOINT of the image"),
    (RUN, "dns", "Set custom DNS servers"),
    (RUN, "add_host", "Add a custom host-to-IP mapping (host:ip)"),
    (RUN, "init", "Run an init inside the container that forwards signals and reaps processes"),
    (RUN, "read_only", "Mount the container's root filesystem as read only"),
    (RUN, "tmpfs", "Mount a tmpfs directory"),
    (RUN, "cap_add", "Add Linux capabilities"),
    (RUN, "cap_drop", "Drop Linux capabilities"),
    (RUN, "security_opt", "Security Options"),
    (RUN, "privileged", "Give extended privileges to this container"),
    (RUN, "oom_score_adj", "Tune host's OOM preferences (-1000 to 1000)"),
    (RUN, "cgroup_parent", "Optional parent cgroup for the container"),
    (RUN, "stop_signal", "Signal to stop the container"),
    (RUN, "stop_timeout", "Timeout (in seconds) to stop a container"),
    (RUN, "log_driver", "Logging driver for the container (capsa: json-file, local, none)"),
    (RUN, "log_opt", "Log driver options"),
    (RUN, "pull", "Pull image before running (\"always\", \"missing\", \"never\")"),
    (RUN, "platform", "Set platform if server is multi-platform capable"),
    (RUN, "detach_keys", "Override the key sequence for detaching a container"),
    (RUN, "cpu_shares", "CPU shares (relative weight)"),
    (RUN, "cpuset_cpus", "CPUs in which to allow execution (0-3, 0,1)"),
    (RUN, "cpuset_mems", "MEMs in which to allow execution (0-3, 0,1)"),
    (RUN, "memory_swap", "Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    (RUN, "memory_reservation", "Memory soft limit"),
    (RUN, "memory_swappiness", "Tune container memory swappiness (0 to 100) (default -1) (capsa: cgroup v1 only; refused on v2 and in a VM)"),
    (RUN, "oom_kill_disable", "Disable OOM Killer (capsa: cgroup v1 only; refused on v2 and in a VM)"),
    (RUN, "blkio_weight", "Block IO (relative weight), between 10 and 1000, or 0 to disable (default 0)"),
    (RUN, "health_cmd", "Command to run to check health"),
    (RUN, "health_interval", "Time between running the check (ms|s|m|h) (default 30s)"),
    (RUN, "health_timeout", "Maximum time to allow one check to run (ms|s|m|h) (default 30s)"),
    (RUN, "health_retries", "Consecutive failures needed to report unhealthy"),
    (RUN, "health_start_period", "Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)"),
    (RUN, "health_start_interval", "Time between running the check during the start period (ms|s|m|h) (default 0s)"),
    (RUN, "no_healthcheck", "Disable any container-specified HEALTHCHECK"),
    (RUN, "group_add", "Add additional groups to join"),
    (RUN, "ulimit", "Ulimit options"),
    (RUN, "shm_size", "Size of /dev/shm"),
    (RUN, "sysctl", "Sysctl options (capsa: namespaced keys only, as Docker allows)"),
    (RUN, "device", "Add a host device to the container (capsa: not with --isolation vm)"),
    (RUN, "userns", "User namespace to use (capsa: auto, a private range of host IDs, or host)"),
    (
        RUN,
        "isolation",
        "Container isolation technology (capsa: container, namespaces and cgroups on this kernel; or vm, a microVM)",
    ),
    (&["exec"], "detach", "Detached mode: run command in the background"),
    (&["exec"], "interactive", "Keep STDIN open even if not attached"),
    (&["exec"], "tty", "Allocate a pseudo-TTY"),
    (&["exec"], "env", "Set environment variables"),
    (&["exec"], "user", "Username or UID (format: \"<name|uid>[:<group|gid>]\")"),
    (&["exec"], "workdir", "Working directory inside the container"),
    (&["exec", "attach", "start"], "detach_keys", "Override the key sequence for detaching a container"),
    (&["start"], "attach", "Attach STDOUT/STDERR and forward signals"),
    (&["start"], "interactive", "Attach container's STDIN"),
    (PS, "all", "Show all containers (default shows just running)"),
    (PS, "quiet", "Only display container IDs"),
    (PS, "no_trunc", "Don't truncate output"),
    (PS, "last", "Show n last created containers (includes all states)"),
    (PS, "latest", "Show the latest created container (includes all states)"),
    (PS, "size", "Display total file sizes"),
    (PS, "filter", "Filter output based on conditions provided"),
    (&["logs"], "follow", "Follow log output"),
    (&["logs"], "tail", "Number of lines to show from the end of the logs"),
    (&["logs"], "timestamps", "Show timestamps"),
    (
        &["logs"],
        "since",
        "Show logs since timestamp (e.g. \"2013-01-02T13:23:37Z\") or relative (e.g. \"42m\" for 42 minutes)",
    ),
    (&["rm"], "force", "Force the removal of a running container (uses SIGKILL)"),
    (&["stop", "restart"], "time", "Seconds to wait before killing the container"),
    (&["stop", "restart", "kill"], "signal", "Signal to send to the container"),
    (&["stats"], "all", "Show all containers (default shows just running)"),
    (&["stats"], "no_stream", "Disable streaming stats and only pull the first result"),
];

const RUN: &[&str] = &["run", "create"];
const PS: &[&str] = &["ps", "ls"];

/// `cmd` with Docker's wording on the flags of [`WORDING`], wherever the verb appears (at
/// the top level and in its group).
pub fn apply(mut cmd: clap::Command) -> clap::Command {
    let verb = cmd.get_name().to_string();
    let mine: Vec<(&str, &str)> = WORDING
        .iter()
        .filter(|(verbs, _, _)| verbs.contains(&verb.as_str()))
        .map(|(_, id, help)| (*id, *help))
        .collect();
    if !mine.is_empty() {
        // `mut_arg` moves an argument to the end: every argument is passed through, in
        // order, so that positionals keep their places and help its order.
        let ids: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            let help = mine
                .iter()
                .find(|(m, _)| *m == id.as_str())
                .map(|(_, h)| *h);
            cmd = cmd.mut_arg(id, |a| match help {
                Some(help) => a.help(help),
                None => a,
            });
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for sub in subs {
        cmd = cmd.mut_subcommand(sub, apply);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every entry names a flag its verbs have: a renamed field cannot silently drop
    /// Docker's wording.
    #[test]
    fn every_entry_names_a_flag_of_its_verbs() {
        let cmd = crate::cli::Cli::command();
        for (verbs, id, _) in WORDING {
            for verb in *verbs {
                let sub = cmd
                    .find_subcommand(verb)
                    .or_else(|| cmd.find_subcommand("container")?.find_subcommand(verb))
                    .unwrap_or_else(|| panic!("no verb {verb}"));
                assert!(
                    sub.get_arguments().any(|a| a.get_id() == *id),
                    "{verb} has no flag {id}"
                );
            }
        }
    }

    #[test]
    fn run_help_reads_as_dockers() {
        let mut cmd = apply(crate::cli::Cli::command());
        let run = cmd.find_subcommand_mut("run").expect("run");
        let help = run.render_help().to_string();
        for line in [
            "Run container in background and print container ID",
            "Publish a container's port(s) to the host",
            "Keep STDIN open even if not attached",
            "Username or UID (format: <name|uid>[:<group|gid>])",
        ] {
            assert!(help.contains(line), "{line:?} not in {help}");
        }
        // The order of the flags and of the positionals is kept.
        let detach = help.find("-d, --detach").expect("--detach");
        let network = help.find("--network ").expect("--network");
        assert!(detach < network, "{help}");
        cmd.debug_assert();
    }
}
