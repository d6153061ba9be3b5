//! IPv4 subnet arithmetic shared by the default bridge (`bip`) and user-defined networks:
//! `A.B.C.D/N` parsing, network addresses, overlap.

use std::net::Ipv4Addr;

/// Why a subnet or an address with its prefix was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubnetError {
    /// No `/` between the address and the prefix.
    #[error("{text:?} is not A.B.C.D/N")]
    NotAddressPrefix {
        /// The text as written.
        text: String,
    },
    /// The part before `/` is not an IPv4 address (the parser's reason says no more).
    #[error("{text:?}: {addr:?} is not an IPv4 address")]
    NotIpv4 {
        /// The text as written.
        text: String,
        /// Its address part.
        addr: String,
    },
    /// The prefix is not a number in 8-30.
    #[error("{text:?}: the prefix must be 8-30")]
    Prefix {
        /// The text as written.
        text: String,
    },
    /// A `--subnet` that is not a subnet.
    #[error("invalid subnet {0}")]
    Subnet(#[source] Box<SubnetError>),
}

/// Whether two subnets share an address.
pub fn overlaps(a: Ipv4Addr, a_prefix: u8, b: Ipv4Addr, b_prefix: u8) -> bool {
    let p = a_prefix.min(b_prefix);
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    u32::from(a) & mask == u32::from(b) & mask
}

/// Parses `A.B.C.D/N` into (the address as written, prefix); the prefix must be 8-30.
pub fn parse_address_prefix(text: &str) -> Result<(Ipv4Addr, u8), SubnetError> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| SubnetError::NotAddressPrefix { text: text.into() })?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| SubnetError::NotIpv4 {
        text: text.into(),
        addr: addr.into(),
    })?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=30).contains(p))
        .ok_or_else(|| SubnetError::Prefix { text: text.into() })?;
    Ok((addr, prefix))
}

/// The network address of `addr/prefix`.
pub fn network_of(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & (u32::MAX << (32 - prefix)))
}

/// Parses a subnet `A.B.C.D/N` into (network address, prefix).
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), SubnetError> {
    let (addr, prefix) =
        parse_address_prefix(cidr).map_err(|e| SubnetError::Subnet(Box::new(e)))?;
    Ok((network_of(addr, prefix), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_to_their_network_and_overlap_by_the_shorter_prefix() {
        let (net, prefix) = parse_cidr("10.89.1.77/24").unwrap();
        assert_eq!((net, prefix), (Ipv4Addr::new(10, 89, 1, 0), 24));
        assert!(overlaps(net, 24, Ipv4Addr::new(10, 89, 0, 0), 16));
        assert!(!overlaps(net, 24, Ipv4Addr::new(10, 89, 2, 0), 24));
        let err = parse_cidr("10.89.1.0/31").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid subnet \"10.89.1.0/31\": the prefix must be 8-30"
        );
        assert!(parse_address_prefix("10.89.1.0").is_err());
    }
}
