//! Published ports: `-p [IP:][HOST:]CONTAINER[/tcp|udp]` as Docker parses it, and the
//! check that a host port is free before anything is set up.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it listens on (0.0.0.0: every address).
    pub host_ip: Ipv4Addr,
    /// The host port (0 until a free one is chosen).
    pub host_port: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

/// Why a `-p` value or its host port was refused.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A `-p` value that does not parse; `why` says which part.
    #[error("invalid -p {spec:?}: {why}")]
    Spec {
        /// The value as written.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// The host port cannot be bound.
    #[error("Bind for {ip}:{port} failed: port is already allocated ({source})")]
    Taken {
        /// The host address.
        ip: Ipv4Addr,
        /// The host port.
        port: u16,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

impl PortMapping {
    /// Parses one `-p` value.
    pub fn parse(spec: &str) -> Result<PortMapping, PortError> {
        let bad = |why: &str| PortError::Spec {
            spec: spec.into(),
            why: why.into(),
        };
        let (addr_ports, proto) = match spec.rsplit_once('/') {
            Some((a, "tcp")) => (a, Proto::Tcp),
            Some((a, "udp")) => (a, Proto::Udp),
            Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = addr_ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [ip, h, c] => (*ip, *h, *c),
            _ => return Err(bad("expected [IP:][HOST:]CONTAINER[/PROTO]")),
        };
        let port = |s: &str, what: &str| -> Result<u16, PortError> {
            s.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("{what} port {s:?} is not 1-65535")))
        };
        let host_ip = if ip.is_empty() {
            Ipv4Addr::UNSPECIFIED
        } else {
            ip.parse()
                .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?
        };
        Ok(PortMapping {
            host_ip,
            host_port: if host.is_empty() {
                0
            } else {
                port(host, "host")?
            },
            container_port: port(container, "container")?,
            proto,
        })
    }

    /// `0.0.0.0:8080->80/tcp`, as `docker ps` shows it.
    pub fn display(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip,
            self.host_port,
            self.container_port,
            self.proto.name()
        )
    }

    /// Whether two mappings want the same host socket.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }

    /// Checks the host port is free by binding it (a port 0 gets a free one chosen).
    pub fn claim_host_port(&mut self) -> Result<(), PortError> {
        let addr = SocketAddrV4::new(self.host_ip, self.host_port);
        let taken = |source: std::io::Error| PortError::Taken {
            ip: self.host_ip,
            port: self.host_port,
            source,
        };
        let port = match self.proto {
            Proto::Tcp => TcpListener::bind(addr)
                .and_then(|l| l.local_addr())
                .map_err(taken)?
                .port(),
            Proto::Udp => UdpSocket::bind(addr)
                .and_then(|s| s.local_addr())
                .map_err(taken)?
                .port(),
        };
        self.host_port = port;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_like_docker() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (8080, 80, Proto::Tcp)
        );
        let p = PortMapping::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(p.proto, Proto::Udp);
        let p = PortMapping::parse("80").unwrap();
        assert_eq!(p.host_port, 0);
        assert_eq!(p.display(), "0.0.0.0:0->80/tcp");
        for bad in [
            "",
            "x:80",
            "80/sctp",
            "70000:80",
            "1:2:3:4",
            "300.1.1.1:80:80",
            "0:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn any_address_clashes_with_every_address() {
        let any = PortMapping::parse("8080:80").unwrap();
        let lo = PortMapping::parse("127.0.0.1:8080:81").unwrap();
        let udp = PortMapping::parse("8080:80/udp").unwrap();
        assert!(any.clashes_with(&lo));
        assert!(!any.clashes_with(&udp));
    }
}
