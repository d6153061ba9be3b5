//! A container's networking through its life: the address and ports chosen at create
//! (under a lock, against every other container's record), the /etc files written for it,
//! the veth connected once its init exists, and the published ports taken back when its
//! workload exits or it is removed.

use super::options::RunOptions;
use super::state::{State, Status};
use super::store::{ContainerDir, ContainerStore};
use super::ContainerError;
use crate::events::Kind;
use crate::fsutil::FileLock;
use crate::image::Image;
use crate::net::bridge::BridgeConfig;
use crate::net::claims::{self, Claim, Claimant, Claims};
use crate::net::dns_name;
use crate::net::networks::NetworkStore;
use crate::net::ports::{PortMapping, Proto};
use crate::net::{self, Endpoint, NetworkMode};

/// /etc/hosts lines every container has.
const LOOPBACK_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Docker's refusal of `--ip` on the default bridge, whose addresses are handed out in
/// order (a fixed one there would be taken by the next container's default choice).
const FIXED_IP_ON_DEFAULT_BRIDGE: &str =
    "user specified IP address is supported on user defined networks only";

/// The bridge settings of network `name`: the default `bridge` (`bip` in daemon.json), or
/// a user-defined one.
pub fn bridge_config(store: &ContainerStore, name: &str) -> Result<BridgeConfig, ContainerError> {
    let invalid = |e: net::NetError| ContainerError::invalid(e);
    if name == "bridge" {
        return BridgeConfig::load(&store.root().daemon_config()).map_err(invalid);
    }
    NetworkStore::new(store.root().dir())
        .get(name)
        .map(|n| n.bridge_config())
        .map_err(invalid)
}

/// `opts` with each `--add-host NAME:host-gateway` name given the default bridge's gateway
/// address (the host as containers reach it, as Docker's `host-gateway`).
pub fn with_gateway_hosts<'o>(
    store: &ContainerStore,
    opts: std::borrow::Cow<'o, RunOptions>,
) -> Result<std::borrow::Cow<'o, RunOptions>, ContainerError> {
    if opts.gateway_hosts.is_empty() {
        return Ok(opts);
    }
    let gateway = std::net::IpAddr::V4(bridge_config(store, "bridge")?.gateway);
    let mut opts = opts.into_owned();
    let names = std::mem::take(&mut opts.gateway_hosts);
    opts.add_hosts
        .extend(names.into_iter().map(|name| (name, gateway)));
    Ok(std::borrow::Cow::Owned(opts))
}

/// The locks a new container's network choice is made under: its state root's pool, and
/// the claims every state root on this network namespace shares. Held until its state is
/// written, so that no other create picks the same.
#[derive(Debug)]
pub struct PoolLock {
    _root: FileLock,
    _claims: Claims,
}

/// The container `id` of `store` as a claimant of host-wide network claims.
fn claimant(store: &ContainerStore, id: &str) -> Claimant {
    Claimant {
        root: store.root().dir().to_path_buf(),
        owner: id.to_string(),
    }
}

/// Whether `who` still holds `claim`: a network its subnet while its record exists; a
/// container its address and MAC while it exists (stopped too, as its own root's records
/// keep them), its host ports while it is not stopped.
fn still_holds(claim: &Claim, who: &Claimant) -> bool {
    match claim {
        Claim::Subnet { .. } => NetworkStore::new(&who.root).get(&who.owner).is_ok(),
        Claim::Port(_) => {
            let dir = who.root.join("containers").join(&who.owner);
            match std::fs::read(dir.join("state.json")) {
                Ok(b) => serde_json::from_slice::<State>(&b)
                    .map_or(true, |s| !matches!(s.status, Status::Exited | Status::Dead)),
                Err(_) => dir.is_dir(),
            }
        }
        Claim::Address { .. } | Claim::Mac { .. } => {
            who.root.join("containers").join(&who.owner).is_dir()
        }
    }
}

fn lock_claims() -> Result<Claims, ContainerError> {
    Claims::lock().map_err(|e| ContainerError::InvalidArgument(e.to_string()))
}

/// The host ports claimed by others than `me` on this network namespace.
fn ports_claimed_elsewhere(
    claims: &Claims,
    me: &Claimant,
) -> Result<Vec<PortMapping>, ContainerError> {
    let elsewhere = claims
        .of_others(me, still_holds)
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
    Ok(elsewhere
        .into_iter()
        .filter_map(|(c, _)| match c {
            Claim::Port(p) => Some(p),
            _ => None,
        })
        .collect())
}

/// Chooses the address and host ports of a new bridge container, clear of every state
/// root's on this network namespace, and claims them.
pub fn plan(
    store: &ContainerStore,
    opts: &RunOptions,
    image: &Image,
    id: &str,
) -> Result<(Option<Endpoint>, Option<PoolLock>), ContainerError> {
    if opts.network != NetworkMode::Bridge {
        let asked = [
            (!opts.publish.is_empty() || opts.publish_all, "-p/-P"),
            (opts.ip.is_some(), "--ip"),
            (opts.mac.is_some(), "--mac-address"),
            (!opts.aliases.is_empty(), "--network-alias"),
        ];
        if let Some((_, flag)) = asked.iter().find(|(set, _)| *set) {
            // Docker ignores these here with a warning; a silent no-op would mislead.
            return Err(ContainerError::InvalidArgument(format!(
                "{flag} needs a bridge network; --network {} has no address of its own",
                opts.network.name()
            )));
        }
        return Ok((None, None));
    }
    if opts.network_name == "bridge" && !opts.aliases.is_empty() {
        return Err(ContainerError::InvalidArgument(
            "--network-alias is only for user-defined networks (as in Docker)".into(),
        ));
    }
    if opts.network_name == "bridge" && opts.ip.is_some() {
        return Err(ContainerError::InvalidArgument(
            FIXED_IP_ON_DEFAULT_BRIDGE.into(),
        ));
    }
    // The network by its name: it may be given by ID, and the addresses and members
    // found below are recorded under names.
    let network_name = match opts.network_name.as_str() {
        "bridge" => "bridge".to_string(),
        wanted => {
            NetworkStore::new(store.root().dir())
                .get(wanted)
                .map_err(ContainerError::invalid)?
                .name
        }
    };
    let config = bridge_config(store, &network_name)?;
    let lock_path = store.root().dir().join("network.lock");
    let lock = FileLock::acquire(&lock_path).map_err(|e| ContainerError::io(&lock_path, e))?;
    let others: Vec<State> = store
        .ids()
        .iter()
        .filter(|other| *other != id)
        .filter_map(|other| store.load(other).ok())
        .collect();
    let claims = lock_claims()?;
    let me = claimant(store, id);
    let elsewhere = claims
        .of_others(&me, still_holds)
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
    let mut taken_ips = addresses_on(&others, &network_name);
    let mut taken_macs = Vec::new();
    let mut taken_ports: Vec<PortMapping> = others
        .iter()
        .filter(|s| s.status != Status::Exited)
        .filter_map(|s| s.endpoint.as_ref())
        .flat_map(|e| e.ports.iter().copied())
        .collect();
    for (claim, _) in elsewhere {
        match claim {
            Claim::Address { bridge, ip } if bridge == config.name => taken_ips.push(ip),
            Claim::Mac { bridge, mac } if bridge == config.name => taken_macs.push(mac),
            Claim::Port(p) => taken_ports.push(p),
            _ => {}
        }
    }
    let mut ports = opts.publish.clone();
    if opts.publish_all {
        // The image's exposed ports and those added at create (`--expose`), once each.
        for p in exposed_ports(image)?
            .into_iter()
            .chain(opts.expose.iter().copied())
        {
            let same = |q: &PortMapping| q.container_port == p.container_port && q.proto == p.proto;
            if !ports.iter().any(same) {
                ports.push(p);
            }
        }
    }
    let request = net::Request {
        network: network_name.clone(),
        ports,
        ip: opts.ip,
        mac: opts.mac,
        aliases: opts.aliases.clone(),
        link_local_ips: opts.link_local_ips.clone(),
        driver_opts: opts.endpoint_driver_opts.clone(),
    };
    let endpoint = net::allocate(&config, id, &request, &taken_ips, &taken_ports)
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
    if taken_macs.contains(&endpoint.mac) {
        return Err(ContainerError::InvalidArgument(format!(
            "MAC address {} is already in use on network {}",
            endpoint.mac_string(),
            network_name
        )));
    }
    claims
        .record(&claims::of_endpoint(&config.name, &endpoint), &me)
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))?;
    Ok((
        Some(endpoint),
        Some(PoolLock {
            _root: lock,
            _claims: claims,
        }),
    ))
}

/// `network create`: a user-defined network whose subnet no state root on this network
/// namespace has taken, claimed for it.
pub fn create_network(
    root: &crate::root::StateRoot,
    name: &str,
    plan: &crate::net::networks::AddressPlan,
    internal: bool,
) -> Result<crate::net::networks::NetworkRecord, net::NetError> {
    let default_bridge = BridgeConfig::load(&root.daemon_config())?;
    let claims = Claims::lock()?;
    let me = Claimant {
        root: root.dir().to_path_buf(),
        owner: name.to_string(),
    };
    let elsewhere: Vec<_> = claims
        .of_others(&me, still_holds)?
        .into_iter()
        .filter(|(_, by)| by.root != root.dir())
        .filter_map(|(claim, by)| match claim {
            Claim::Subnet { net, prefix } => Some((
                net,
                prefix,
                format!("{} of state root {}", by.owner, by.root.display()),
            )),
            _ => None,
        })
        .collect();
    let record =
        NetworkStore::new(root.dir()).create(name, plan, internal, &default_bridge, &elsewhere)?;
    let subnet = Claim::Subnet {
        net: record.subnet,
        prefix: record.prefix,
    };
    claims.record(&[subnet], &me)?;
    crate::events::emit(
        root,
        Kind::Network,
        "create",
        &record.id,
        &[("name", &record.name), ("type", "bridge")],
    );
    Ok(record)
}

/// A network's `IPAM.Config` entry as Docker shows it (`IPRange` and
/// `AuxiliaryAddresses` only when set).
fn ipam_config(r: &crate::net::networks::NetworkRecord) -> serde_json::Value {
    let mut config = serde_json::json!({
        "Subnet": format!("{}/{}", r.subnet, r.prefix),
        "Gateway": r.gateway.to_string(),
    });
    if let Some((net, prefix)) = r.ip_range {
        config["IPRange"] = format!("{net}/{prefix}").into();
    }
    if !r.aux_addresses.is_empty() {
        config["AuxiliaryAddresses"] = serde_json::json!(r.aux_addresses);
    }
    config
}

/// Why a network cannot be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveNetworkError {
    /// `bridge`, `host`, `none`.
    #[error("{0} is a pre-defined network and cannot be removed")]
    BuiltIn(String),
    /// Containers are attached to it.
    #[error("error while removing network: network {name} id {id} has active endpoints ({})", .users.join(", "))]
    ActiveEndpoints {
        /// The network's name.
        name: String,
        /// Its short ID.
        id: String,
        /// The containers attached, by name.
        users: Vec<String>,
    },
    /// No such network, or its bridge could not be taken down.
    #[error(transparent)]
    Net(#[from] net::NetError),
}

/// The ID of a pre-defined network (stable for a name).
pub fn builtin_id(name: &str) -> String {
    crate::image::digest::sha256_of(format!("capsa network {name}").as_bytes())
        .trim_start_matches("sha256:")
        .to_string()
}

/// The containers attached to network `name`.
pub fn members(containers: &ContainerStore, name: &str) -> Vec<State> {
    containers
        .list()
        .into_iter()
        .filter(|s| {
            s.endpoints().any(|e| e.network == name)
                || (s.endpoint.is_none() && s.network.name() == name)
        })
        .collect()
}

/// `network inspect`'s object for network `wanted` (a name, an ID or an ID prefix;
/// `bridge`, `host`, `none` included).
pub fn describe(
    root: &crate::root::StateRoot,
    containers: &ContainerStore,
    wanted: &str,
) -> Result<serde_json::Value, net::NetError> {
    use crate::net::networks::NetworkRecord;
    use serde_json::json;
    let builtin = crate::net::networks::BUILT_IN
        .iter()
        .find(|n| **n == wanted || (wanted.len() >= 3 && builtin_id(n).starts_with(wanted)))
        .copied();
    let record = match builtin {
        Some("bridge") => {
            let b = BridgeConfig::load(&root.daemon_config())?;
            Some(NetworkRecord {
                name: "bridge".into(),
                id: builtin_id("bridge"),
                bridge: b.name.clone(),
                subnet: b.subnet,
                prefix: b.prefix,
                gateway: b.gateway,
                internal: false,
                created: String::new(),
                labels: Default::default(),
                ip_range: None,
                aux_addresses: Default::default(),
            })
        }
        Some(_) => None,
        None => Some(NetworkStore::new(root.dir()).get(wanted)?),
    };
    let name = record
        .as_ref()
        .map_or(builtin.unwrap_or(wanted), |r| r.name.as_str())
        .to_string();
    let mut attached = serde_json::Map::new();
    for s in members(containers, &name) {
        let endpoint = s.endpoints().find(|e| e.network == name);
        let (mac, ip) = endpoint
            .map(|e| (e.mac_string(), format!("{}/{}", e.ip, e.prefix)))
            .unwrap_or_default();
        let endpoint_id = endpoint
            .map(|e| crate::image::digest::sha256_of(format!("{}{}", s.id, e.network).as_bytes()))
            .map(|d| d.trim_start_matches("sha256:").to_string())
            .unwrap_or_default();
        attached.insert(
            s.id.clone(),
            json!({"Name": s.name, "EndpointID": endpoint_id, "MacAddress": mac, "IPv4Address": ip, "IPv6Address": ""}),
        );
    }
    let created = |c: &str| {
        if c.is_empty() {
            "0001-01-01T00:00:00Z".to_string()
        } else {
            c.to_string()
        }
    };
    Ok(match record {
        Some(r) => json!({
            "Name": r.name,
            "Id": r.id,
            "Created": created(&r.created),
            "Scope": "local",
            "Driver": "bridge",
            "EnableIPv4": true,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": [ipam_config(&r)]},
            "Internal": r.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": attached,
            // dockerd names the bridge device of the default network only; a user
            // network's options are the ones it was created with (capsa takes none), which
            // clients such as compose compare with their own.
            "Options": if r.name == "bridge" { json!({"com.docker.network.bridge.name": r.bridge}) } else { json!({}) },
            "Labels": r.labels,
        }),
        None => json!({
            "Name": name,
            "Id": builtin_id(&name),
            "Created": created(""),
            "Scope": "local",
            "Driver": if name == "none" { "null" } else { "host" },
            "EnableIPv4": true,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": []},
            "Internal": false,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": attached,
            "Options": {},
            "Labels": {},
        }),
    })
}

/// `network rm`: removes a user-defined network no container is attached to.
pub fn remove_network(containers: &ContainerStore, wanted: &str) -> Result<(), RemoveNetworkError> {
    if crate::net::networks::BUILT_IN.contains(&wanted) {
        return Err(RemoveNetworkError::BuiltIn(wanted.to_string()));
    }
    let root = containers.root();
    let store = NetworkStore::new(root.dir());
    let record = store.get(wanted)?;
    let users: Vec<String> = members(containers, &record.name)
        .into_iter()
        .map(|s| s.name)
        .collect();
    if !users.is_empty() {
        return Err(RemoveNetworkError::ActiveEndpoints {
            id: record.id.get(..12).unwrap_or(&record.id).to_string(),
            name: record.name,
            users,
        });
    }
    crate::net::bridge::remove(&record.bridge_config())?;
    store.remove(&record.name)?;
    crate::events::emit(
        root,
        Kind::Network,
        "destroy",
        &record.id,
        &[("name", &record.name), ("type", "bridge")],
    );
    Ok(())
}

/// `network prune`: removes every user-defined network no container is attached to;
/// their names.
pub fn prune_networks(containers: &ContainerStore) -> Vec<String> {
    NetworkStore::new(containers.root().dir())
        .list()
        .into_iter()
        .filter(|n| remove_network(containers, &n.name).is_ok())
        .map(|n| n.name)
        .collect()
}

/// Records a network event for a container's connection.
fn connection_event(store: &ContainerStore, action: &str, network: &str, id: &str) {
    let net_id = match NetworkStore::new(store.root().dir()).get(network) {
        Ok(r) => r.id,
        Err(_) => builtin_id(network),
    };
    crate::events::emit(
        store.root(),
        Kind::Network,
        action,
        &net_id,
        &[("container", id), ("name", network), ("type", "bridge")],
    );
}

/// The addresses `states` hold on network `name`.
fn addresses_on(states: &[State], name: &str) -> Vec<std::net::Ipv4Addr> {
    states
        .iter()
        .flat_map(|s| s.endpoints())
        .filter(|e| e.network == name)
        .map(|e| e.ip)
        .collect()
}

/// Refuses `network connect`/`disconnect` for a workload that does not run on this host:
/// its recorded pid is its monitor's, in the host's network namespace, and a VM's network
/// devices are fixed when it boots.
fn refuse_outside_host(state: &State) -> Result<(), ContainerError> {
    if state.isolation.workload_on_host() {
        return Ok(());
    }
    Err(ContainerError::InvalidArgument(format!(
        "container {}: network connect and disconnect are not available for VM containers yet",
        state.name
    )))
}

/// Disconnects a container from its first network: its interface (and with it the
/// default route) leaves the running workload, or the init waiting at the start gate; its
/// host ports stop forwarding; the endpoint is kept aside (address, MAC, host ports) until
/// a connect to that network gives it back.
fn detach_first(store: &ContainerStore, state: &State, name: &str) -> Result<(), ContainerError> {
    let invalid = |m: String| ContainerError::InvalidArgument(m);
    if let (true, Some(pid), Some(endpoint)) = (state.init_alive(), state.pid, &state.endpoint) {
        if !endpoint.ports.is_empty() {
            net::detach(endpoint, &ports_of_others(store, &state.id));
        }
        net::unplug(pid, &endpoint.ifname).map_err(|e| invalid(e.to_string()))?;
    }
    store.update(&state.id, |s| s.detached_endpoint = s.endpoint.take())?;
    refresh_hosts(store, name);
    connection_event(store, "disconnect", name, &state.id);
    Ok(())
}

/// Gives a container its first network's endpoint back (see [`detach_first`]), with the
/// aliases of this connect.
fn reattach_first(
    store: &ContainerStore,
    state: &State,
    name: &str,
    ip: Option<std::net::Ipv4Addr>,
    mac: Option<[u8; 6]>,
    aliases: Vec<String>,
) -> Result<(), ContainerError> {
    let invalid = |m: String| ContainerError::InvalidArgument(m);
    let mut endpoint = state
        .detached_endpoint
        .clone()
        .expect("checked by the caller");
    if let Some(ip) = ip.filter(|ip| *ip != endpoint.ip) {
        endpoint = readdress(store, state, name, endpoint, ip, mac)?;
    }
    if mac.is_some_and(|mac| mac != endpoint.mac) {
        return Err(invalid(format!(
            "container {}: its MAC address on {name} is {}; capsa does not change it while reconnecting",
            state.name,
            endpoint.mac_string()
        )));
    }
    for alias in &aliases {
        crate::net::dns_name::check(alias).map_err(|e| invalid(format!("alias {alias:?}: {e}")))?;
    }
    endpoint.aliases = aliases;
    if state.init_alive() {
        if let Some(pid) = state.pid {
            let config = bridge_config(store, name)?;
            net::attach(&config, &endpoint, pid).map_err(|e| invalid(e.to_string()))?;
        }
    }
    store.update(&state.id, |s| {
        s.detached_endpoint = None;
        s.endpoint = Some(endpoint.clone());
    })?;
    refresh_hosts(store, name);
    connection_event(store, "connect", name, &state.id);
    Ok(())
}

/// The detached first `endpoint` of `state` with the new address `ip` a reconnect asks for
/// (`docker network connect --ip`): checked free on network `name` as at create, and the
/// MAC derived from it unless one was set.
fn readdress(
    store: &ContainerStore,
    state: &State,
    name: &str,
    endpoint: Endpoint,
    ip: std::net::Ipv4Addr,
    mac: Option<[u8; 6]>,
) -> Result<Endpoint, ContainerError> {
    let invalid = |m: String| ContainerError::InvalidArgument(m);
    if name == "bridge" {
        return Err(invalid(FIXED_IP_ON_DEFAULT_BRIDGE.into()));
    }
    let config = bridge_config(store, name)?;
    let _pool = FileLock::acquire(&store.root().dir().join("network.lock"))
        .map_err(|e| ContainerError::io(&store.root().dir().join("network.lock"), e))?;
    let others: Vec<State> = store
        .list()
        .into_iter()
        .filter(|s| s.id != state.id)
        .collect();
    let o = endpoint.ip.octets();
    let derived_mac = endpoint.mac == [0x02, 0x42, o[0], o[1], o[2], o[3]];
    let request = net::Request {
        network: name.to_string(),
        ip: Some(ip),
        mac: mac.or((!derived_mac).then_some(endpoint.mac)),
        ..net::Request::default()
    };
    let claims = lock_claims()?;
    let me = claimant(store, &state.id);
    let elsewhere = claims
        .of_others(&me, still_holds)
        .map_err(|e| invalid(e.to_string()))?;
    let fresh = net::allocate(
        &config,
        &state.id,
        &request,
        &addresses_on(&others, name),
        &[],
    )
    .map_err(|e| invalid(e.to_string()))?;
    let taken_elsewhere = elsewhere.iter().any(|(c, _)| {
        matches!(c, Claim::Address { bridge, ip } if *bridge == config.name && *ip == fresh.ip)
    });
    if taken_elsewhere {
        return Err(invalid(format!(
            "--ip {}: the address is already in use on network {name}",
            fresh.ip
        )));
    }
    let moved = Endpoint {
        ip: fresh.ip,
        mac: fresh.mac,
        ip_requested: true,
        ..endpoint.clone()
    };
    let (old, new) = (
        claims::of_endpoint(&config.name, &endpoint),
        claims::of_endpoint(&config.name, &moved),
    );
    claims.release(&old, &me);
    claims
        .record(&new, &me)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(moved)
}

/// `network connect`: gives container `id` an interface on network `name` (eth1, eth2...),
/// at once if its init exists, else when it starts.
pub fn connect_network(
    store: &ContainerStore,
    id: &str,
    name: &str,
    ip: Option<std::net::Ipv4Addr>,
    mac: Option<[u8; 6]>,
    aliases: Vec<String>,
) -> Result<(), ContainerError> {
    let invalid = |m: String| ContainerError::InvalidArgument(m);
    let state = store.observe(id)?;
    refuse_outside_host(&state)?;
    if state.network != NetworkMode::Bridge {
        return Err(invalid(format!(
            "container {} is on the {} network, which admits no other",
            state.name,
            state.network.name()
        )));
    }
    if state.endpoint.is_none()
        && state
            .detached_endpoint
            .as_ref()
            .is_some_and(|e| e.network == name)
    {
        return reattach_first(store, &state, name, ip, mac, aliases);
    }
    if state.endpoints().any(|e| e.network == name) {
        return Err(invalid(format!(
            "endpoint with name {} already exists in network {name}",
            state.name
        )));
    }
    if name == "bridge" && ip.is_some() {
        return Err(invalid(FIXED_IP_ON_DEFAULT_BRIDGE.into()));
    }
    let config = bridge_config(store, name)?;
    let _pool = FileLock::acquire(&store.root().dir().join("network.lock"))
        .map_err(|e| ContainerError::io(&store.root().dir().join("network.lock"), e))?;
    let all: Vec<State> = store.list();
    let request = net::Request {
        network: name.to_string(),
        ip,
        mac,
        aliases,
        ..net::Request::default()
    };
    let mut endpoint = net::allocate(&config, id, &request, &addresses_on(&all, name), &[])
        .map_err(|e| invalid(e.to_string()))?;
    let n = (1..)
        .find(|n| {
            !state
                .connected
                .iter()
                .any(|e| e.ifname == format!("eth{n}"))
        })
        .unwrap_or(1);
    endpoint.ifname = format!("eth{n}");
    endpoint.veth = format!("vx{}{n:02}", &id[..9.min(id.len())]);
    if state.init_alive() {
        if let Some(pid) = state.pid {
            net::attach(&config, &endpoint, pid).map_err(|e| invalid(e.to_string()))?;
        }
    }
    store.update(id, |s| s.connected.push(endpoint.clone()))?;
    drop(_pool);
    refresh_hosts(store, name);
    connection_event(store, "connect", name, id);
    Ok(())
}

/// `network disconnect`: takes a connected network's interface away.
pub fn disconnect_network(
    store: &ContainerStore,
    id: &str,
    name: &str,
) -> Result<(), ContainerError> {
    let invalid = |m: String| ContainerError::InvalidArgument(m);
    let state = store.observe(id)?;
    refuse_outside_host(&state)?;
    if state.endpoint.as_ref().is_some_and(|e| e.network == name) {
        return detach_first(store, &state, name);
    }
    let Some(endpoint) = state.connected.iter().find(|e| e.network == name) else {
        return Err(invalid(format!(
            "container {} is not connected to network {name}",
            state.name
        )));
    };
    if state.init_alive() {
        if let Some(pid) = state.pid {
            net::unplug(pid, &endpoint.ifname).map_err(|e| invalid(e.to_string()))?;
        }
    }
    store.update(id, |s| s.connected.retain(|e| e.network != name))?;
    refresh_hosts(store, name);
    connection_event(store, "disconnect", name, id);
    Ok(())
}

/// The image's `ExposedPorts` (`80/tcp`, `53/udp`) as mappings to free host ports.
fn exposed_ports(image: &Image) -> Result<Vec<PortMapping>, ContainerError> {
    let Some(cfg) = image.config.config() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for spec in cfg.exposed_ports().iter().flatten() {
        let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let container_port = port.parse().map_err(|_| {
            ContainerError::InvalidArgument(format!("image exposes {spec:?}: not a port"))
        })?;
        let proto = match proto {
            "udp" => Proto::Udp,
            _ => Proto::Tcp,
        };
        out.push(PortMapping {
            host_ip: std::net::Ipv4Addr::UNSPECIFIED,
            host_port: 0,
            container_port,
            proto,
        });
    }
    Ok(out)
}

/// Writes /etc/hostname, /etc/hosts and /etc/resolv.conf for the container.
pub fn write_etc_files(
    dir: &ContainerDir,
    hostname: &str,
    opts: &RunOptions,
    endpoint: Option<&Endpoint>,
) -> Result<(), ContainerError> {
    let write = |name: &str, data: String| {
        let path = dir.etc_file(name);
        std::fs::write(&path, data).map_err(|e| ContainerError::io(&path, e))
    };
    write("hostname", format!("{hostname}\n"))?;
    write(
        "hosts",
        base_hosts(opts.network, Some(hostname), &opts.add_hosts, endpoint),
    )?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if opts.dns.is_empty() {
        net::resolv_conf(&host_resolv)
    } else {
        let kept: String = host_resolv
            .lines()
            .filter(|l| !l.trim_start().starts_with("nameserver"))
            .map(|l| format!("{l}\n"))
            .collect();
        let servers: String = opts
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        kept + &servers
    };
    write("resolv.conf", resolv)
}

/// Connects the new init `pid` as its state says: the bridge, or loopback alone.
pub fn connect(store: &ContainerStore, state: &State, pid: i32) -> Result<(), ContainerError> {
    let fail = |e: net::NetError| ContainerError::Setup {
        id: super::id::short(&state.id).to_string(),
        reason: e.to_string(),
    };
    match (&state.network, &state.endpoint) {
        (NetworkMode::Host, _) => Ok(()),
        (_, Some(_)) => {
            ports_still_free(store, state)?;
            for endpoint in state.endpoints() {
                let config = bridge_config(store, &endpoint.network)?;
                net::attach(&config, endpoint, pid).map_err(fail)?;
            }
            Ok(())
        }
        (_, None) => net::loopback_up(pid).map_err(fail),
    }
}

/// The part of a container's /etc/hosts that does not depend on other containers:
/// loopback (or, on the host network, the host's own file), `--add-host` entries, and the
/// container's own address with the host name capsa gave it (`first` is its first
/// network's endpoint).
fn base_hosts(
    network: NetworkMode,
    hostname: Option<&str>,
    add_hosts: &[(String, std::net::IpAddr)],
    first: Option<&Endpoint>,
) -> String {
    let mut hosts = match network {
        // The host's own names, as Docker gives a host-network container.
        NetworkMode::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        _ => LOOPBACK_HOSTS.to_string(),
    };
    for (name, ip) in add_hosts.iter().filter(|(n, _)| dns_name::is_valid(n)) {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    let Some(hostname) = hostname.filter(|h| dns_name::is_valid(h)) else {
        return hosts;
    };
    match first {
        Some(e) => hosts.push_str(&format!("{}\t{hostname}\n", e.ip)),
        None if network == NetworkMode::None => hosts.push_str(&format!("127.0.1.1\t{hostname}\n")),
        None => {}
    }
    hosts
}

/// Marks where the member list of a user-defined network starts in /etc/hosts.
const MEMBERS_MARKER: &str = "# capsa: containers on this network\n";

/// The names a member of `network` is known by there: its container name, its aliases on
/// that network and its host name, from its record; names that are not DNS names (a
/// record from before they were checked) are left out.
fn member_names(member: &State, endpoint: &Endpoint) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let candidates = std::iter::once(&member.name)
        .chain(endpoint.aliases.iter())
        .chain(member.hostname.iter());
    for name in candidates {
        if dns_name::is_valid(name) && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Name resolution on a user-defined network, by /etc/hosts kept current: every member's
/// file lists every member that is up (its name, aliases and host name). Called when a
/// member starts, stops or goes. Each file is rebuilt whole from capsa's records (the
/// container's own address, host name and `--add-host` entries, then the members): nothing
/// a container wrote into its /etc/hostname or /etc/hosts reaches any file. The files are
/// bind-mounted, so they are rewritten in place (same inode); a reader may see one write
/// half done, never a stale inode.
pub fn refresh_hosts(store: &ContainerStore, network: &str) {
    if network == "bridge" {
        return; // Docker's default bridge has no name resolution either.
    }
    let members: Vec<State> = store
        .ids()
        .iter()
        .filter_map(|id| store.load(id).ok())
        .filter(|s| matches!(s.status, Status::Created | Status::Running))
        .filter(|s| s.endpoints().any(|e| e.network == network))
        .collect();
    let mut lines = String::from(MEMBERS_MARKER);
    for m in &members {
        let Some(e) = m.endpoints().find(|e| e.network == network) else {
            continue;
        };
        let names = member_names(m, e);
        if !names.is_empty() {
            lines.push_str(&format!("{}\t{}\n", e.ip, names.join(" ")));
        }
    }
    for m in &members {
        let path = store.dir(&m.id).etc_file("hosts");
        let base = base_hosts(
            m.network,
            m.hostname.as_deref(),
            &m.extra_hosts,
            m.endpoint.as_ref(),
        );
        // Only an existing file is rewritten: a member being removed may have lost its own.
        let Ok(mut file) = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
        else {
            continue;
        };
        let _ = std::io::Write::write_all(&mut file, format!("{base}{lines}").as_bytes());
    }
}

/// A container started again publishes the ports it was created with; another container
/// or a host process may hold one now (Docker refuses the start then too).
pub fn ports_still_free(store: &ContainerStore, state: &State) -> Result<(), ContainerError> {
    let Some(endpoint) = state.endpoint.as_ref().filter(|e| !e.ports.is_empty()) else {
        return Ok(());
    };
    let claims = lock_claims()?;
    let me = claimant(store, &state.id);
    let mut held = ports_of_others(store, &state.id);
    held.extend(ports_claimed_elsewhere(&claims, &me)?);
    for p in &endpoint.ports {
        let taken = held.iter().any(|h| p.clashes_with(h));
        let mut probe = *p;
        if taken || probe.claim_host_port().is_err() {
            return Err(ContainerError::InvalidArgument(format!(
                "Bind for {}:{} failed: port is already allocated",
                p.host_ip, p.host_port
            )));
        }
    }
    let ports: Vec<Claim> = claims::of_endpoint("", endpoint)
        .into_iter()
        .filter(|c| matches!(c, Claim::Port(_)))
        .collect();
    claims
        .record(&ports, &me)
        .map_err(|e| ContainerError::InvalidArgument(e.to_string()))
}

/// Takes back what [`connect`] published (idempotent).
pub fn disconnect(store: &ContainerStore, state: &State) {
    if let Some(e) = &state.endpoint {
        if !e.ports.is_empty() {
            net::detach(e, &ports_of_others(store, &state.id));
        }
    }
}

/// The host ports published by containers other than `id` that are up.
fn ports_of_others(store: &ContainerStore, id: &str) -> Vec<PortMapping> {
    store
        .ids()
        .iter()
        .filter(|other| *other != id)
        .filter_map(|other| store.load(other).ok())
        .filter(|s| matches!(s.status, Status::Created | Status::Running))
        .flat_map(|s| s.endpoint.map(|e| e.ports).unwrap_or_default())
        .collect()
}

/// The network's name as `inspect` and `ps` show it.
pub fn network_name(state: &State) -> &str {
    match &state.endpoint {
        Some(e) => &e.network,
        None => state.network.name(),
    }
}

/// The mappings in force: a container's ports are published while its init exists.
pub fn active_ports(state: &State) -> &[PortMapping] {
    match (&state.endpoint, state.status) {
        (Some(e), Status::Created | Status::Running) => &e.ports,
        _ => &[],
    }
}

/// `docker ps`'s PORTS column: `127.0.0.1:8080->80/tcp, 0.0.0.0:8081->80/tcp`.
pub fn ports_column(state: &State) -> String {
    active_ports(state)
        .iter()
        .map(PortMapping::display)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `inspect`'s NetworkSettings, with Docker's field names.
/// Docker's `EndpointSettings` of `state` on one network (`endpoint`, none for a container
/// without an interface there: host, none, or not started). `NetworkID` is left empty for
/// the caller that can read the network store; `IPAMConfig` shows an address that was
/// and link-local addresses that were asked for. Capsa keeps no endpoint IDs, and has no
/// IPv6 or links.
pub fn endpoint_settings(state: &State, endpoint: Option<&Endpoint>) -> serde_json::Value {
    use serde_json::{json, Value};
    let user_network = endpoint.is_some_and(|e| e.network != "bridge");
    let aliases = endpoint
        .map(|e| e.aliases.clone())
        .filter(|a| !a.is_empty());
    let dns_names = endpoint
        .filter(|_| user_network)
        .map(|e| member_names(state, e));
    json!({
        "IPAMConfig": endpoint
            .filter(|e| e.ip_requested || !e.link_local_ips.is_empty())
            .map(|e| {
                let mut ipam = json!({});
                if e.ip_requested {
                    ipam["IPv4Address"] = json!(e.ip.to_string());
                }
                if !e.link_local_ips.is_empty() {
                    ipam["LinkLocalIPs"] = json!(e.link_local_ips);
                }
                ipam
            }),
        "Links": Value::Null,
        "Aliases": aliases,
        "MacAddress": endpoint.map(|e| e.mac_string()).unwrap_or_default(),
        "DriverOpts": endpoint
            .filter(|e| !e.driver_opts.is_empty())
            .map(|e| json!(e.driver_opts)),
        "GwPriority": 0,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": endpoint.map(|e| e.gateway.to_string()).unwrap_or_default(),
        "IPAddress": endpoint.map(|e| e.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": endpoint.map_or(0, |e| e.prefix),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names,
    })
}

pub fn inspect_settings(state: &State) -> serde_json::Value {
    use serde_json::json;
    let mut ports = serde_json::Map::new();
    for p in active_ports(state) {
        let key = format!("{}/{}", p.container_port, p.proto.name());
        let entry = ports.entry(key).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(
                json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}),
            );
        }
    }
    let (ip, prefix, gateway, mac) = match &state.endpoint {
        Some(e) => (
            e.ip.to_string(),
            e.prefix,
            e.gateway.to_string(),
            e.mac_string(),
        ),
        None => Default::default(),
    };
    let mut networks = serde_json::Map::new();
    match &state.endpoint {
        Some(e) => {
            networks.insert(e.network.clone(), endpoint_settings(state, Some(e)));
        }
        // Disconnected from its first network: that one is not listed, as with Docker.
        None if state.detached_endpoint.is_some() => {}
        None => {
            networks.insert(
                network_name(state).to_string(),
                endpoint_settings(state, None),
            );
        }
    }
    for e in &state.connected {
        networks.insert(e.network.clone(), endpoint_settings(state, Some(e)));
    }
    json!({
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "Gateway": gateway,
        "MacAddress": mac,
        "Ports": ports,
        "Networks": networks,
    })
}
