//! A pod VM's network: the pod's network namespace as CNI left it (eth0 with the pod's
//! address and a default route) handed to the guest, as Kata's "tcfilter" model does. A
//! tap device is made beside eth0 and every frame arriving on either is redirected to the
//! other (tc ingress, mirred); the guest's eth0 takes eth0's MAC, address and gateway, so
//! the pod's peers, and the CNI plugin's ARP and routes, see the same interface as before.
//! Nothing is routed, bridged or NATed in the namespace.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;

use super::protocol::GuestNetwork;
use super::VmError;

/// The pod's interface, as CNI names it in every pod.
const POD_LINK: &str = "eth0";

/// The tap device made beside it (removed with the engine, which holds it).
const TAP: &str = "capsa-pod0";

/// What the guest's network device needs: the tap the engine holds and eth0's identity.
pub struct PodNic {
    pub tap: OwnedFd,
    pub mac: [u8; 6],
    pub guest: GuestNetwork,
}

fn net_err(what: &str, e: impl std::fmt::Display) -> VmError {
    VmError::Io(format!("the pod's network: {what}: {e}"))
}

/// Moves this process into the network namespace at `path`: the engine started afterwards
/// is there too (its own namespaces aside, the tap it holds was made here).
pub fn enter(path: &Path) -> Result<(), VmError> {
    let ns = std::fs::File::open(path).map_err(|e| net_err(&path.display().to_string(), e))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| net_err(&format!("setns {}", path.display()), e))
}

/// In the current network namespace: eth0's identity taken for the guest and its frames
/// redirected to a new tap (and back). None when the namespace has no eth0 (a pod without
/// a network, `ctr run` without one): the guest has only its loopback, as the container
/// would have.
pub fn take_over_eth0(vnet_hdr: bool) -> Result<Option<PodNic>, VmError> {
    let Some((mac, address, prefix)) = link_identity()? else {
        return Ok(None);
    };
    // Without a default route (a CNI network with no way out), the guest has none either.
    let gateway = default_gateway()?.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    let tap = super::engine::open_tap(TAP, vnet_hdr)?;
    run(&["ip", "link", "set", TAP, "up"])?;
    if let Err(e) = redirect(POD_LINK, TAP).and_then(|()| redirect(TAP, POD_LINK)) {
        release_eth0();
        return Err(e);
    }
    let guest = GuestNetwork {
        address,
        prefix,
        gateway,
        mac: Some(mac),
    };
    Ok(Some(PodNic { tap, mac, guest }))
}

/// Takes the redirect off eth0 (the tap goes with the engine that holds it): the
/// namespace is as CNI left it, for its teardown or another create.
pub fn release_eth0() {
    let _ = run(&["tc", "qdisc", "del", "dev", POD_LINK, "ingress"]);
}

/// Every frame arriving on `from` leaves through `to`.
fn redirect(from: &str, to: &str) -> Result<(), VmError> {
    run(&["tc", "qdisc", "add", "dev", from, "ingress"])?;
    run(&[
        "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
        "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
    ])
}

fn run(args: &[&str]) -> Result<(), VmError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| net_err(args[0], e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(net_err(
        &args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim(),
    ))
}

fn ip_json(args: &[&str]) -> Result<serde_json::Value, VmError> {
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| net_err("ip", e))?;
    if !out.status.success() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| net_err(&format!("ip -j {args:?}"), e))
}

/// eth0's MAC and first IPv4 address, if the namespace has an eth0.
fn link_identity() -> Result<Option<([u8; 6], std::net::Ipv4Addr, u8)>, VmError> {
    let links = ip_json(&["addr", "show", "dev", POD_LINK])?;
    let Some(link) = links.as_array().and_then(|l| l.first()) else {
        return Ok(None);
    };
    let mac = parse_mac(link["address"].as_str().unwrap_or(""))
        .ok_or_else(|| net_err(POD_LINK, format!("no MAC in {link}")))?;
    let inet = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["family"] == "inet")
        .ok_or_else(|| net_err(POD_LINK, "no IPv4 address (capsa's pod VMs take IPv4)"))?;
    let address = inet["local"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| net_err(POD_LINK, format!("address {inet}")))?;
    let prefix = inet["prefixlen"]
        .as_u64()
        .filter(|p| *p <= 32)
        .ok_or_else(|| net_err(POD_LINK, format!("prefix {inet}")))?;
    Ok(Some((mac, address, prefix as u8)))
}

fn default_gateway() -> Result<Option<std::net::Ipv4Addr>, VmError> {
    let routes = ip_json(&["-4", "route", "show", "default"])?;
    Ok(routes
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| r["gateway"].as_str()?.parse().ok()))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_is_six_hex_bytes() {
        assert_eq!(
            parse_mac("0a:58:0a:d5:00:05"),
            Some([0x0a, 0x58, 0x0a, 0xd5, 0x00, 0x05])
        );
        assert_eq!(parse_mac("0a:58:0a:d5:00"), None);
        assert_eq!(parse_mac("zz:58:0a:d5:00:05"), None);
        assert_eq!(parse_mac(""), None);
    }
}
