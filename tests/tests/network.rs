//! Networking end to end. Every test runs the whole engine inside a network namespace of
//! its own (TestEnv's), which stands for the host: the bridge, the nftables table and the
//! published ports live there, and no packet leaves the machine. "Outside" is one more
//! namespace joined to it by a veth pair.

use capsa_tests::registry::in_netns;
use capsa_tests::{eventually, text, TestEnv};
use std::process::Command;
use std::time::Duration;

/// A busybox httpd serving `body` on port 80, detached, with `flags` (ports, name).
fn web(env: &TestEnv, name: &str, flags: &[&str], body: &str) {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Fetches `url` from the test's host namespace (busybox wget), retrying while the
/// server starts; returns the body or the last error.
fn fetch(env: &TestEnv, url: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        // (busybox 1.35's wget crashes with -T; timeout(1) bounds it instead.)
        let out = env
            .host_command("timeout")
            .args(["5", "/bin/busybox", "wget", "-q", "-O", "-", url])
            .output()
            .unwrap();
        if out.status.success() {
            return text(&out.stdout);
        }
        last = text(&out.stderr);
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("FAILED: {last}")
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    let env = TestEnv::new();
    let out = env.sh(&["--network", "none"], "ls /sys/class/net; ip addr show lo");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"));
    assert!(out.contains("inet 127.0.0.1/8"), "{out}");
    assert!(out.contains("UP"), "{out}");
    env.assert_clean();
}

#[test]
fn the_bridge_gives_an_address_a_route_and_a_hosts_entry() {
    let env = TestEnv::new();
    let out = env.sh(
        &["--name", "addr"],
        "ip -4 addr show eth0; ip route; cat /etc/hosts; hostname",
    );
    assert!(out.contains("inet 10.88.0.2/16"), "{out}");
    assert!(out.contains("default via 10.88.0.1 dev eth0"), "{out}");
    let hostname = out.lines().last().unwrap();
    assert!(out.contains(&format!("10.88.0.2\t{hostname}")), "{out}");
    // The address went back to the pool with the container.
    let again = env.sh(&[], "ip -4 addr show eth0");
    assert!(again.contains("inet 10.88.0.2/16"), "{again}");
    env.assert_clean();
}

#[test]
fn published_ports_serve_on_loopback_every_address_and_between_containers() {
    let env = TestEnv::new();
    web(
        &env,
        "site",
        &["-p", "127.0.0.1:18080:80", "-p", "18081:80"],
        "hello-from-the-container",
    );
    let want = "hello-from-the-container\n";
    assert_eq!(fetch(&env, "http://127.0.0.1:18080/"), want);
    assert_eq!(fetch(&env, "http://127.0.0.1:18081/"), want);
    let ip = env.inspect("site", "{{.NetworkSettings.IPAddress}}");
    assert_eq!(
        fetch(&env, &format!("http://{ip}/")),
        want,
        "bridge address"
    );
    // Another container through the host's published port (hairpin NAT).
    let hairpin = env.sh(&[], "wget -q -O - http://10.88.0.1:18081/");
    assert_eq!(hairpin, want);
    let ports = text(&env.capsa(&["port", "site"]).stdout);
    assert!(ports.contains("80/tcp -> 127.0.0.1:18080"), "{ports}");
    assert!(ports.contains("80/tcp -> 0.0.0.0:18081"), "{ports}");
    assert!(env.ps_line("site").contains("127.0.0.1:18080->80/tcp"));
    assert_eq!(
        env.inspect("site", "{{json .NetworkSettings.Ports}}"),
        r#"{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"18080"},{"HostIp":"0.0.0.0","HostPort":"18081"}]}"#
    );
    assert!(env.capsa(&["rm", "-f", "site"]).status.success());
    env.assert_clean();
    assert!(fetch(&env, "http://127.0.0.1:18081/").starts_with("FAILED"));
}

#[test]
fn publish_all_and_udp_ports() {
    let env = TestEnv::new();
    let tar = capsa_tests::busybox_tarball().to_str().unwrap().to_string();
    let out = env.capsa(&[
        "import",
        "-c",
        "ENV PATH=/bin",
        "-c",
        "EXPOSE 80",
        "-c",
        "EXPOSE 69/udp",
        &tar,
        "exposing",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Debian's busybox has no UDP server: the host's python3 serves UDP, its /usr mounted
    // read-only into the container.
    let udp_server = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',69))\nwhile True:\n  d,a=s.recvfrom(100)\n  print(d.decode().strip(),flush=True)\n";
    let script = format!(
        "mkdir -p /www && echo all > /www/index.html && httpd -p 80 -h /www && exec /usr/bin/python3 -c \"{udp_server}\""
    );
    let out = env.run(&[
        "-d",
        "--name",
        "pa",
        "-P",
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/usr/lib64:/lib64:ro",
        "exposing",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tcp = text(&env.capsa(&["port", "pa", "80"]).stdout);
    let tcp_port = tcp.trim().rsplit(':').next().unwrap().to_string();
    assert_eq!(
        fetch(&env, &format!("http://127.0.0.1:{tcp_port}/")),
        "all\n"
    );
    let udp = text(&env.capsa(&["port", "pa", "69/udp"]).stdout);
    let udp_port = udp.trim().rsplit(':').next().unwrap().to_string();
    eventually(
        "a datagram through the published UDP port",
        Duration::from_secs(20),
        || {
            let send = format!(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'datagram', ('127.0.0.1', {udp_port}))"
        );
            let _ = env.host_command("python3").args(["-c", &send]).output();
            text(&env.capsa(&["logs", "pa"]).stdout).contains("datagram")
        },
    );
    assert!(env.capsa(&["rm", "-f", "pa"]).status.success());
    env.assert_clean();
}

#[test]
fn a_taken_port_is_refused_and_nothing_is_left() {
    let env = TestEnv::new();
    web(&env, "first", &["-p", "18090:80"], "first");
    let out = env.run(&["--rm", "-p", "18090:80", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("18090"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already allocated"));
    // A host process (this test) holds another port.
    let holder = in_netns(env.netns(), || {
        std::net::TcpListener::bind("0.0.0.0:18091").unwrap()
    });
    let out = env.run(&["--rm", "-p", "18091:80", "busybox", "true"]);
    drop(holder);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let all = text(&env.capsa(&["ps", "-aq"]).stdout);
    assert_eq!(all.lines().count(), 1, "only the first container: {all}");
    for bad in ["80:80:80:80", "x:80", "80/sctp"] {
        let out = env.run(&["--rm", "-p", bad, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert!(text(&out.stderr).contains(bad), "{}", text(&out.stderr));
    }
    let out = env.run(&["--rm", "--network", "nope", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("nope"));
    // A stopped container's port is free for another; starting the first again is refused.
    assert!(env.capsa(&["stop", "-t", "1", "first"]).status.success());
    web(&env, "second", &["-p", "18090:80"], "second");
    let again = env.capsa(&["start", "first"]);
    assert!(!again.status.success(), "two containers on one host port");
    assert!(
        text(&again.stderr).contains("already allocated"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(fetch(&env, "http://127.0.0.1:18090/"), "second\n");
    assert!(env.capsa(&["rm", "-f", "first", "second"]).status.success());
    env.assert_clean();
}

#[test]
fn egress_is_masqueraded_to_the_outside() {
    let env = TestEnv::new();
    let outside = Outside::new(&env);
    let seen = env.sh(&[], ASK_OUTSIDE);
    // And inward: a machine outside reaches a published port at the host's address.
    web(&env, "public", &["-p", "18070:80"], "from-outside");
    let fetch_outside = Command::new("ip")
        .args(["netns", "exec", &outside.name, "sh", "-c"])
        .arg("for i in $(seq 50); do timeout 5 busybox wget -q -O - http://192.0.2.1:18070/ && exit 0; sleep 0.1; done; exit 1")
        .output()
        .unwrap();
    assert_eq!(
        text(&fetch_outside.stdout),
        "from-outside\n",
        "{}",
        text(&fetch_outside.stderr)
    );
    assert!(env.capsa(&["rm", "-f", "public"]).status.success());
    assert_eq!(
        seen, "192.0.2.1\n",
        "the container's address is hidden behind the host's"
    );
    drop(outside);
    env.assert_clean();
}

/// "Outside": one more namespace, joined to the test's host namespace by a veth pair
/// (192.0.2.1 on the host side, 192.0.2.2 outside), with a server on 192.0.2.2:9000 that
/// answers each connection with the address it sees the client at.
struct Outside {
    name: String,
    host_netns: String,
    server: std::process::Child,
}

impl Outside {
    fn new(env: &TestEnv) -> Outside {
        let name = format!("{}-out", env.netns());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link",
            "add",
            "uplink",
            "netns",
            env.netns(),
            "type",
            "veth",
            "peer",
            "name",
            "wan",
            "netns",
            &name,
        ]);
        ip(&[
            "-n",
            env.netns(),
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "uplink",
        ]);
        ip(&["-n", env.netns(), "link", "set", "uplink", "up"]);
        ip(&["-n", &name, "addr", "add", "192.0.2.2/24", "dev", "wan"]);
        ip(&["-n", &name, "link", "set", "wan", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('192.0.2.2',9000))\ns.listen(8)\nwhile True:\n  c,a=s.accept()\n  c.sendall(a[0].encode()+b'\\n')\n  c.close()\n";
        let server = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c", script])
            .spawn()
            .unwrap();
        Outside {
            name,
            host_netns: env.netns().to_string(),
            server,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["-n", &self.host_netns, "link", "del", "uplink"])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The script that asks the outside server who we are (retrying while it starts).
const ASK_OUTSIDE: &str =
    "for i in $(seq 50); do nc 192.0.2.2 9000 2>/dev/null && exit 0; sleep 0.1; done; exit 1";

#[test]
fn user_networks_resolve_names_and_stay_apart() {
    let env = TestEnv::new();
    let ok = |args: &[&str]| {
        let out = env.capsa(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    ok(&["network", "create", "appnet"]);
    web(
        &env,
        "db",
        &["--network", "appnet", "--network-alias", "database"],
        "db-here",
    );
    let out = env.sh(
        &[
            "--network",
            "appnet",
            "--ip",
            "10.89.1.50",
            "--mac-address",
            "02:00:00:00:00:50",
        ],
        "for i in $(seq 50); do wget -q -O - http://db/ && break; sleep 0.1; done; \
         wget -q -O - http://database/; ip addr show eth0",
    );
    assert!(out.starts_with("db-here\ndb-here\n"), "{out}");
    assert!(out.contains("inet 10.89.1.50/24"), "{out}");
    assert!(out.contains("02:00:00:00:00:50"), "{out}");
    // The default bridge cannot reach the other network's containers.
    let db_ip = env.inspect("db", "{{.NetworkSettings.Networks.appnet.IPAddress}}");
    // (Not as PID 1: a PID 1 without a handler ignores timeout's SIGTERM.)
    let try_db = format!("timeout 3 wget -q -O - http://{db_ip}/; exit $?");
    let isolated = env.run(&["--rm", "busybox", "sh", "-c", &try_db]);
    assert!(
        !isolated.status.success(),
        "reached {db_ip} across networks"
    );
    let inspected = ok(&["network", "inspect", "-f", "{{json .Containers}}", "appnet"]);
    assert!(inspected.contains("\"Name\":\"db\""), "{inspected}");
    assert!(ok(&["network", "ls"]).contains("appnet"));
    // A container of the default bridge joins later as eth1, and leaves again.
    ok(&["run", "-d", "--name", "late", "busybox", "sleep", "60"]);
    ok(&[
        "network",
        "connect",
        "--alias",
        "latecomer",
        "appnet",
        "late",
    ]);
    let joined = ok(&[
        "exec",
        "late",
        "sh",
        "-c",
        "wget -q -O - http://database/; ip -o -4 addr show eth1",
    ]);
    assert!(
        joined.starts_with("db-here\n") && joined.contains("10.89.1."),
        "{joined}"
    );
    let seen_by_db = ok(&["exec", "db", "cat", "/etc/hosts"]);
    assert!(seen_by_db.contains("late latecomer"), "{seen_by_db}");
    let networks = env.inspect("late", "{{json .NetworkSettings.Networks}}");
    assert!(
        networks.contains("\"appnet\"") && networks.contains("\"bridge\""),
        "{networks}"
    );
    let again = env.capsa(&["network", "connect", "appnet", "late"]);
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    ok(&["network", "disconnect", "appnet", "late"]);
    let left = env.capsa(&["exec", "late", "sh", "-c", "ip link show eth1"]);
    assert!(!left.status.success(), "eth1 is still there");
    // As Docker: the first network leaves a running container too (its default route with
    // it), and a connect gives it back.
    ok(&["network", "disconnect", "bridge", "late"]);
    let gone = env.capsa(&["exec", "late", "sh", "-c", "ip link show eth0"]);
    assert!(!gone.status.success(), "eth0 is still there");
    let routes = ok(&["exec", "late", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    let networks = env.inspect("late", "{{json .NetworkSettings.Networks}}");
    assert!(!networks.contains("\"bridge\""), "{networks}");
    ok(&["network", "connect", "bridge", "late"]);
    let routes = ok(&["exec", "late", "ip", "route"]);
    assert!(routes.contains("default via"), "{routes}");
    let twice = env.capsa(&["network", "disconnect", "appnet", "late"]);
    assert!(
        text(&twice.stderr).contains("is not connected to network appnet"),
        "{}",
        text(&twice.stderr)
    );
    assert!(!ok(&["exec", "db", "cat", "/etc/hosts"]).contains("late"));
    ok(&["rm", "-f", "late"]);
    // In use: refused, and nothing changes.
    let busy = env.capsa(&["network", "rm", "appnet"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        text(&busy.stderr).contains("active endpoints (db)"),
        "{}",
        text(&busy.stderr)
    );
    ok(&["rm", "-f", "db"]);
    ok(&["network", "rm", "appnet"]);
    assert!(env.leftover_veths().iter().all(|n| !n.starts_with("br-")));
    env.assert_clean();
}

#[test]
fn internal_networks_have_no_way_out() {
    let env = TestEnv::new();
    let outside = Outside::new(&env);
    assert!(env
        .capsa(&["network", "create", "--internal", "sealed"])
        .status
        .success());
    let sealed = env.run(&[
        "--rm",
        "--network",
        "sealed",
        "busybox",
        "sh",
        "-c",
        "nc -w 2 192.0.2.2 9000",
    ]);
    assert!(
        !sealed.status.success(),
        "an internal network reached outside"
    );
    assert_eq!(
        env.sh(&[], ASK_OUTSIDE),
        "192.0.2.1\n",
        "the default bridge still can"
    );
    drop(outside);
    assert!(env.capsa(&["network", "prune", "-f"]).status.success());
    assert!(!text(&env.capsa(&["network", "ls"]).stdout).contains("sealed"));
    env.assert_clean();
}

#[test]
fn a_link_local_ip_is_on_the_interface_and_in_inspect() {
    let env = TestEnv::new();
    let run = env.run(&[
        "--name",
        "ll",
        "--link-local-ip",
        "169.254.8.8",
        "busybox",
        "ip",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let out = text(&run.stdout);
    assert!(out.contains("inet 10.88.0.2/16"), "{out}");
    assert!(out.contains("inet 169.254.8.8/16"), "{out}");
    let shown = env.capsa(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks.bridge.IPAMConfig}}",
        "ll",
    ]);
    assert_eq!(
        text(&shown.stdout).trim(),
        r#"{"LinkLocalIPs":["169.254.8.8"]}"#
    );
    assert!(env.capsa(&["rm", "ll"]).status.success());
    env.assert_clean();
}

#[test]
fn an_ip_range_and_auxiliary_addresses_plan_the_addresses_and_a_reconnect_may_change_one() {
    let env = TestEnv::new();
    let ok = |args: &[&str]| {
        let out = env.capsa(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    ok(&[
        "network",
        "create",
        "--subnet",
        "10.77.0.0/16",
        "--ip-range",
        "10.77.5.0/24",
        "--gateway",
        "10.77.5.254",
        "--aux-address",
        "router=10.77.5.0",
        "--aux-address",
        "printer=10.77.5.1",
        "planned",
    ]);
    let shown = ok(&[
        "network",
        "inspect",
        "-f",
        "{{json .IPAM.Config}}",
        "planned",
    ]);
    assert_eq!(
        shown.trim(),
        r#"[{"AuxiliaryAddresses":{"printer":"10.77.5.1","router":"10.77.5.0"},"Gateway":"10.77.5.254","IPRange":"10.77.5.0/24","Subnet":"10.77.0.0/16"}]"#
    );
    // The first free address of the range, past the reserved ones.
    ok(&[
        "run",
        "-d",
        "--name",
        "first",
        "--network",
        "planned",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(
        env.inspect("first", "{{.NetworkSettings.Networks.planned.IPAddress}}"),
        "10.77.5.2"
    );
    let reserved = env.run(&[
        "--rm",
        "--network",
        "planned",
        "--ip",
        "10.77.5.1",
        "busybox",
        "true",
    ]);
    assert_eq!(reserved.status.code(), Some(125));
    assert!(
        text(&reserved.stderr).contains("auxiliary address"),
        "{}",
        text(&reserved.stderr)
    );
    // Disconnected, then back with another address of the subnet (outside the range).
    ok(&["network", "disconnect", "planned", "first"]);
    ok(&[
        "network",
        "connect",
        "--ip",
        "10.77.9.9",
        "planned",
        "first",
    ]);
    let inside = ok(&["exec", "first", "ip", "-4", "addr", "show", "eth0"]);
    assert!(inside.contains("inet 10.77.9.9/16"), "{inside}");
    assert_eq!(
        env.inspect(
            "first",
            "{{.NetworkSettings.Networks.planned.IPAMConfig.IPv4Address}}"
        ),
        "10.77.9.9"
    );
    // The old address is free again.
    ok(&[
        "run",
        "-d",
        "--name",
        "second",
        "--network",
        "planned",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(
        env.inspect("second", "{{.NetworkSettings.Networks.planned.IPAddress}}"),
        "10.77.5.2"
    );
    ok(&["rm", "-f", "first", "second"]);
    ok(&["network", "rm", "planned"]);
    env.assert_clean();
}

#[test]
fn bad_network_requests_are_refused() {
    let env = TestEnv::new();
    let one = env.capsa(&["network", "create", "--subnet", "10.77.0.0/16", "one"]);
    assert!(one.status.success(), "{}", text(&one.stderr));
    let cases: [(&[&str], &str); 5] = [
        (
            &["network", "create", "--subnet", "10.77.3.0/24", "two"],
            "overlaps with network one",
        ),
        (
            &["network", "create", "--subnet", "10.88.1.0/24", "three"],
            "overlaps with network bridge",
        ),
        (&["network", "create", "bridge"], "pre-defined"),
        (&["network", "create", "one"], "already exists"),
        (&["network", "rm", "nope"], "nope"),
    ];
    for (args, why) in cases {
        let out = env.capsa(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for (flags, why) in [
        (vec!["--network", "nope"], "network nope not found"),
        (vec!["--network", "one", "--ip", "10.99.0.5"], "10.99.0.5"),
        (
            vec!["--network", "one", "--mac-address", "nonsense"],
            "nonsense",
        ),
        (vec!["--network", "none", "-p", "80"], "-p"),
        // A "link-local" address of a network's own subnet would answer for a neighbour's.
        (
            vec!["--link-local-ip", "10.88.0.3"],
            "not in 169.254.0.0/16",
        ),
        // Docker's refusal: the default bridge hands its addresses out in order.
        (
            vec!["--ip", "10.88.0.9"],
            "user specified IP address is supported on user defined networks only",
        ),
    ] {
        let mut args = vec!["--rm"];
        args.extend(flags.iter());
        args.extend(["busybox", "true"]);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(125), "{flags:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(env.capsa(&["network", "rm", "one"]).status.success());
    env.assert_clean();
}

#[test]
fn host_network_dns_and_extra_hosts() {
    let env = TestEnv::new();
    let names = |listing: &str| -> Vec<String> {
        let mut v: Vec<String> = listing
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            // The first container's veth goes away on the kernel's own time.
            .filter(|n| !n.starts_with("veth"))
            .collect();
        v.sort();
        v
    };
    // A bridge container first, so that the host namespace has more than lo.
    env.sh(&[], "true");
    let inside = env.sh(&["--network", "host"], "ip -o link");
    let host = env
        .host_command("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    assert_eq!(
        names(&inside),
        names(&text(&host.stdout)),
        "the host's interfaces"
    );
    assert!(names(&inside).contains(&"capsa0".to_string()));
    let out = env.run(&["--rm", "--network", "host", "-p", "80", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let files = env.sh(
        &["--dns", "192.0.2.53", "--add-host", "db.internal:192.0.2.7"],
        "cat /etc/resolv.conf /etc/hosts",
    );
    assert!(files.contains("nameserver 192.0.2.53"), "{files}");
    assert!(files.contains("192.0.2.7\tdb.internal"), "{files}");
    env.assert_clean();
}

#[test]
fn a_crashed_monitor_then_rm_f_leaves_no_port_or_veth() {
    let env = TestEnv::new();
    web(&env, "orphan", &["-p", "18095:80"], "orphan");
    assert_eq!(fetch(&env, "http://127.0.0.1:18095/"), "orphan\n");
    let id = env.inspect("orphan", "{{.Id}}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join("containers").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let monitor = state["monitor_pid"].as_i64().unwrap() as i32;
    // SAFETY: SIGKILL to the monitor of this test's container.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    assert!(env.capsa(&["rm", "-f", "orphan"]).status.success());
    env.assert_clean();
}

#[test]
fn two_state_roots_on_one_host_never_share_an_address_or_a_port() {
    let a = TestEnv::new();
    let b = TestEnv::sharing_netns_of(&a);
    web(&a, "web", &["-p", "18091:80"], "page-of-a");
    // The same host port from the other root: Docker's refusal, nothing created.
    let taken = b.run(&["-d", "--name", "web", "-p", "18091:80", "busybox", "true"]);
    assert_eq!(taken.status.code(), Some(125), "{}", text(&taken.stderr));
    assert!(
        text(&taken.stderr).contains("Bind for 0.0.0.0:18091 failed: port is already allocated"),
        "{}",
        text(&taken.stderr)
    );
    assert!(b.container_dirs().is_empty());
    web(&b, "web", &["-p", "18092:80"], "page-of-b");
    // Each root's first container has an address (and MAC) of its own on the shared bridge.
    let fmt = "{{.NetworkSettings.IPAddress}} {{.NetworkSettings.MacAddress}}";
    let (in_a, in_b) = (a.inspect("web", fmt), b.inspect("web", fmt));
    let (ip_a, mac_a) = in_a.split_once(' ').unwrap();
    let (ip_b, mac_b) = in_b.split_once(' ').unwrap();
    assert_ne!(ip_a, ip_b);
    assert_ne!(mac_a, mac_b);
    // Each published port serves its own root's page, every time.
    for _ in 0..3 {
        assert_eq!(fetch(&a, "http://127.0.0.1:18091/"), "page-of-a\n");
        assert_eq!(fetch(&b, "http://127.0.0.1:18092/"), "page-of-b\n");
        assert_eq!(fetch(&a, &format!("http://{ip_b}/")), "page-of-b\n");
    }
    // Once a's container is gone, its port is free for b.
    assert!(a.capsa(&["rm", "-f", "web"]).status.success());
    web(&b, "second", &["-p", "18091:80"], "second-of-b");
    assert_eq!(fetch(&b, "http://127.0.0.1:18091/"), "second-of-b\n");

    // User-defined networks: the same name in both roots gets subnets apart, and a subnet
    // the other root holds is refused.
    let ok = |env: &TestEnv, args: &[&str]| {
        let out = env.capsa(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    ok(&a, &["network", "create", "appnet"]);
    ok(&b, &["network", "create", "appnet"]);
    let subnet = |env: &TestEnv| {
        ok(
            env,
            &[
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
                "appnet",
            ],
        )
    };
    let (net_a, net_b) = (subnet(&a), subnet(&b));
    assert_ne!(net_a, net_b);
    let clash = b.capsa(&["network", "create", "--subnet", net_a.trim(), "other"]);
    assert!(!clash.status.success());
    assert!(
        text(&clash.stderr).contains("overlaps with network appnet of state root"),
        "{}",
        text(&clash.stderr)
    );
    ok(&b, &["rm", "-f", "web", "second"]);
    ok(&b, &["network", "rm", "appnet"]);
    ok(&a, &["network", "rm", "appnet"]);
    b.assert_clean();
    a.assert_clean();
}
