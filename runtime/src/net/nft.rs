//! capsa's nftables tables: masquerade for egress, published ports as map elements, and the
//! guards that keep a workload's forged packets off the host's loopback services and its
//! IPv6 configuration.
//!
//! `ip capsa` is loaded whole when the first bridge is created, with `bridge capsa` beside
//! it (the IPv6 guard, which must see frames before any IPv6 stack does). Published ports are
//! elements of four maps (per protocol; keyed by host address and port, or by port alone
//! for 0.0.0.0), so adding or removing a container's ports is one element change, never a
//! rule edit, and a container's leftovers are deleted by key. Rules are given to `nft -f -`,
//! the interface nftables keeps stable.

use super::ports::{PortMapping, Proto};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The tables' name (families `ip` and `bridge`).
pub const TABLE: &str = "capsa";

/// The device group of every workload's port on a capsa bridge (a container's host-side
/// veth, a VM's tap): the bridge-family guard matches it (`meta iifgroup`), which needs no
/// per-container rule and no bridge-family kernel module. "caps" in ASCII.
pub const PORT_GROUP: u32 = 0x6361_7073;

/// The whole table. Networks are members of the `bridges` set (and of `internal` when
/// they may not reach beyond their bridge), so creating or removing one is an element
/// change, like a published port. Loaded once per boot of the machine's (or namespace's)
/// network stack, by the first bridge made.
pub fn ruleset() -> String {
    format!(
        r#"table ip {TABLE} {{
  set bridges {{ type ifname; }}
  set internal {{ type ifname; }}
  set same_bridge {{ type ifname . ifname; }}
  map tcp_addr {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map tcp_any {{ type inet_service : ipv4_addr . inet_service; }}
  map udp_addr {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}
  map udp_any {{ type inet_service : ipv4_addr . inet_service; }}
  chain publish {{
    meta l4proto tcp dnat to ip daddr . tcp dport map @tcp_addr
    meta l4proto tcp dnat to tcp dport map @tcp_any
    meta l4proto udp dnat to ip daddr . udp dport map @udp_addr
    meta l4proto udp dnat to udp dport map @udp_any
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump publish
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump publish
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname @bridges oifname != @bridges masquerade
    ip saddr 127.0.0.0/8 oifname @bridges masquerade
    ct status dnat iifname @bridges oifname @bridges masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname . oifname @same_bridge accept
    iifname @internal drop
    oifname @internal drop
    iifname @bridges oifname @bridges ct status != dnat drop
    iifname @bridges accept
    oifname @bridges ct state established,related accept
    oifname @bridges ct status dnat accept
  }}
}}
{guard}"#,
        guard = guard()
    )
}

/// The guards, as commands that are safe to repeat: each chain is made if missing and its
/// rules replaced, in one transaction. Loaded with the table, and again over the tables of
/// an older capsa (see [`super::bridge::ensure`]).
///
/// - `loopback_guard`: the bridges have `route_localnet` on (a host process's connection to
///   a port published on 127.0.0.1 leaves through the bridge with source 127.0.0.1, and its
///   replies return to it), which would also route a workload's forged frame for 127.0.0.1
///   to the host's loopback-only services (CVE-2020-8558). Before connection tracking,
///   nothing from a bridge may be addressed to, or come from, 127.0.0.0/8: the replies of
///   those host connections arrive addressed to the bridge (masqueraded) and only become
///   127.0.0.1 after this hook, so they pass. (A forged 127/8 source is also refused by
///   recent kernels' source validation; the rule keeps older ones from trusting it.)
/// - `ra_guard` (bridge family, so it sees every frame a workload's port hands its bridge,
///   towards the host or another workload): ICMPv6 router advertisements and redirects
///   from a port of [`PORT_GROUP`] are dropped.
///   capsa's networks carry no IPv6 and have no router but the host; the bridges, the
///   containers' interfaces and the VMs' have IPv6 disabled as well.
pub fn guard() -> String {
    format!(
        r#"add table ip {TABLE}
add chain ip {TABLE} loopback_guard {{ type filter hook prerouting priority raw; policy accept; }}
flush chain ip {TABLE} loopback_guard
add rule ip {TABLE} loopback_guard iifname @bridges ip daddr 127.0.0.0/8 drop
add rule ip {TABLE} loopback_guard iifname @bridges ip saddr 127.0.0.0/8 drop
add table bridge {TABLE}
add chain bridge {TABLE} ra_guard {{ type filter hook prerouting priority filter; policy accept; }}
flush chain bridge {TABLE} ra_guard
add rule bridge {TABLE} ra_guard meta iifgroup {PORT_GROUP} meta l4proto ipv6-icmp icmpv6 type {{ nd-router-advert, nd-redirect }} drop
"#
    )
}

/// The commands that make `bridge` a network (and an internal one when `internal`).
pub fn add_bridge(bridge: &str, internal: bool) -> String {
    // Traffic between two containers of one bridge passes the forward hook too when the
    // host has br_netfilter loaded; `same_bridge` lets it through before any isolation.
    let mut out = format!(
        "add element ip {TABLE} bridges {{ \"{bridge}\" }}\nadd element ip {TABLE} same_bridge {{ \"{bridge}\" . \"{bridge}\" }}\n"
    );
    if internal {
        out.push_str(&format!(
            "add element ip {TABLE} internal {{ \"{bridge}\" }}\n"
        ));
    }
    out
}

/// The commands that forget `bridge` (each alone, so a missing one is skipped).
pub fn delete_bridge(bridge: &str) -> [String; 3] {
    [
        format!("delete element ip {TABLE} bridges {{ \"{bridge}\" }}\n"),
        format!("delete element ip {TABLE} internal {{ \"{bridge}\" }}\n"),
        format!("delete element ip {TABLE} same_bridge {{ \"{bridge}\" . \"{bridge}\" }}\n"),
    ]
}

/// Whether the table is loaded in this network namespace.
pub fn table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The map and key of one published port.
fn element(p: &PortMapping, target: Ipv4Addr) -> String {
    let proto = match p.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    if p.host_ip.is_unspecified() {
        format!(
            "{proto}_any {{ {} : {target} . {} }}",
            p.host_port, p.container_port
        )
    } else {
        format!(
            "{proto}_addr {{ {} . {} : {target} . {} }}",
            p.host_ip, p.host_port, p.container_port
        )
    }
}

/// The commands adding `ports` towards `target`.
pub fn add_ports(ports: &[PortMapping], target: Ipv4Addr) -> String {
    ports
        .iter()
        .map(|p| format!("add element ip {TABLE} {}\n", element(p, target)))
        .collect()
}

/// The command deleting one published port (its key is enough; the value is ignored).
pub fn delete_port(port: &PortMapping, target: Ipv4Addr) -> String {
    format!("delete element ip {TABLE} {}\n", element(port, target))
}

/// Why `nft` did not apply a change.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("nft: {0} (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    /// Talking to `nft` failed.
    #[error("nft: {0}")]
    Io(#[source] std::io::Error),
    /// `nft` refused the commands; its own message.
    #[error("nft: {0}")]
    Refused(String),
}

/// Runs `nft -f -` with `commands`; the error carries nft's own message.
pub fn apply(commands: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes()).map_err(NftError::Io)?;
    }
    let out = child.wait_with_output().map_err(NftError::Io)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_keyed_by_address_only_when_one_is_given() {
        let target = Ipv4Addr::new(10, 88, 0, 2);
        let any = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            add_ports(&[any], target),
            "add element ip capsa tcp_any { 8080 : 10.88.0.2 . 80 }\n"
        );
        let lo = PortMapping::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            delete_port(&lo, target),
            "delete element ip capsa udp_addr { 127.0.0.1 . 5353 : 10.88.0.2 . 53 }\n"
        );
    }
}
