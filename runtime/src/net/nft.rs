//! capsa's nftables table: masquerade for egress, and published ports as map elements.
//!
//! One table, `ip capsa`, loaded whole when the bridge is created. Published ports are
//! elements of four maps (per protocol; keyed by host address and port, or by port alone
//! for 0.0.0.0), so adding or removing a container's ports is one element change, never a
//! rule edit, and a container's leftovers are deleted by key. Rules are given to `nft -f -`,
//! the interface nftables keeps stable.

use super::ports::{PortMapping, Proto};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The table's name (family `ip`).
pub const TABLE: &str = "capsa";

/// The whole table for bridge `bridge` with subnet `subnet/prefix`. Loading it replaces any
/// previous version atomically (`add` then `delete` then define, in one transaction).
pub fn ruleset(bridge: &str, subnet: Ipv4Addr, prefix: u8) -> String {
    format!(
        r#"add table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
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
    ip saddr {subnet}/{prefix} oifname != "{bridge}" masquerade
    ip saddr 127.0.0.0/8 oifname "{bridge}" masquerade
    ct status dnat ip saddr {subnet}/{prefix} oifname "{bridge}" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{bridge}" accept
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" ct status dnat accept
  }}
}}
"#
    )
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

/// Runs `nft -f -` with `commands`; the error carries nft's own message.
pub fn apply(commands: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e} (is the nftables package installed?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(commands.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
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
