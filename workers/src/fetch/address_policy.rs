//! Which IP addresses the scraper may connect to: the publicly routable ones, plus
//! the networks an operator allows explicitly (`ORDERS_SCRAPER_ALLOW_PRIVATE`, for
//! tests and intranets). Everything a URL could use to reach the machine itself, its
//! network or a cloud's metadata service is refused: loopback, private, link-local
//! (169.254.169.254 is there), shared, documentation, benchmarking, multicast,
//! reserved, and the IPv6 forms that embed such an IPv4 address. And which ports:
//! the web's (`ORDERS_SCRAPER_PORTS`), except on an IP-literal host of an allowed
//! network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The address check of every connection the scraper makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed_networks: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy that also permits the (otherwise refused) addresses in
    /// `allowed_networks`.
    pub fn new(allowed_networks: Vec<IpNet>) -> Self {
        Self { allowed_networks }
    }

    pub fn allowed_networks(&self) -> &[IpNet] {
        &self.allowed_networks
    }

    /// Whether the scraper may connect to `address`.
    pub fn permits(&self, address: IpAddr) -> bool {
        self.explicitly_allows(address) || is_publicly_routable(address)
    }

    /// Whether `address` is in a network the operator allowed by name.
    pub fn explicitly_allows(&self, address: IpAddr) -> bool {
        // `::ffff:127.0.0.1` reaches 127.0.0.1: an allow-list entry written for the
        // IPv4 form must cover it, and the IPv4 rules must judge it.
        let canonical = address.to_canonical();
        self.allowed_networks
            .iter()
            .any(|network| network.contains(&address) || network.contains(&canonical))
    }
}

/// Which ports the scraper connects to (`ORDERS_SCRAPER_PORTS`). Shops serve their
/// pages on the web's ports; a URL naming another port of a public host (a mail
/// server's 25, a database's 5432, an admin console's 9000) would make the scraper
/// a port scanner and a proxy for whoever places an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPolicy {
    /// Every port (`*`).
    Any,
    /// Only these.
    Only(Vec<u16>),
}

/// The ports of `ORDERS_SCRAPER_PORTS` by default: HTTP, HTTPS and their common
/// alternatives.
pub const DEFAULT_SCRAPER_PORTS: &str = "80,443,8080,8443";

impl Default for PortPolicy {
    fn default() -> Self {
        Self::Only(vec![80, 443, 8080, 8443])
    }
}

impl PortPolicy {
    pub fn permits(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::Only(ports) => ports.contains(&port),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not a port (1 to 65535); write ports separated by commas, or * for any")]
pub struct InvalidPort {
    pub entry: String,
}

/// Parses `ORDERS_SCRAPER_PORTS`: ports separated by commas or white space, or `*`.
pub fn parse_allowed_ports(list: &str) -> Result<PortPolicy, InvalidPort> {
    if list.trim() == "*" {
        return Ok(PortPolicy::Any);
    }
    let ports = list
        .split(|character: char| character == ',' || character.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| InvalidPort {
                    entry: entry.to_owned(),
                })
        })
        .collect::<Result<Vec<u16>, InvalidPort>>()?;
    if ports.is_empty() {
        return Err(InvalidPort {
            entry: list.to_owned(),
        });
    }
    Ok(PortPolicy::Only(ports))
}

/// The IPv4 networks that are not the public internet (IANA special-purpose
/// registry, RFC 6890 and successors), as (network, prefix length).
const NON_PUBLIC_IPV4_NETWORKS: [([u8; 4], u32); 15] = [
    ([0, 0, 0, 0], 8),       // "this network", includes the unspecified address
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // shared address space, carrier-grade NAT (RFC 6598)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata services (169.254.169.254)
    ([172, 16, 0, 0], 12),   // private (RFC 1918)
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
    ([192, 168, 0, 0], 16),  // private (RFC 1918)
    ([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, includes the broadcast 255.255.255.255
];

fn ipv4_in(address: Ipv4Addr, network: [u8; 4], prefix_length: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix_length).unwrap_or(0);
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn ipv6_in(address: Ipv6Addr, network: Ipv6Addr, prefix_length: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix_length).unwrap_or(0);
    u128::from(address) & mask == u128::from(network) & mask
}

fn is_public_ipv4(address: Ipv4Addr) -> bool {
    !NON_PUBLIC_IPV4_NETWORKS
        .iter()
        .any(|(network, prefix_length)| ipv4_in(address, *network, *prefix_length))
}

fn is_public_ipv6(address: Ipv6Addr) -> bool {
    // Forms that carry an IPv4 address a gateway or the host itself would reach:
    // judged by that address.
    if let Some(mapped) = address.to_ipv4_mapped() {
        return is_public_ipv4(mapped);
    }
    let bits = u128::from(address);
    let nat64_well_known = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    if ipv6_in(address, nat64_well_known, 96) {
        // The last 32 bits; truncation is the point.
        return is_public_ipv4(Ipv4Addr::from(bits as u32));
    }
    let six_to_four = Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0);
    if ipv6_in(address, six_to_four, 16) {
        // Bits 16..48 are the IPv4 address of the 6to4 site.
        return is_public_ipv4(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Only global unicast (2000::/3) is the public internet. This refuses at once
    // the unspecified and loopback addresses, IPv4-compatible addresses, unique
    // local (fc00::/7), link-local (fe80::/10), site-local, multicast (ff00::/8),
    // discard-only (100::/64) and local-use NAT64 (64:ff9b:1::/48).
    let global_unicast = Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0);
    if !ipv6_in(address, global_unicast, 3) {
        return false;
    }
    let special_inside_global_unicast = [
        // IETF protocol assignments, includes Teredo (2001::/32) and ORCHID.
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
        // Documentation.
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
        (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    ];
    !special_inside_global_unicast
        .iter()
        .any(|(network, prefix_length)| ipv6_in(address, *network, *prefix_length))
}

/// Whether `address` is on the public internet, i.e. none of the special-purpose
/// ranges the module documentation lists.
pub fn is_publicly_routable(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(address) => is_public_ipv4(address),
        IpAddr::V6(address) => is_public_ipv6(address),
    }
}

/// A list of networks that is not one: names the entry that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is neither a CIDR network (10.0.0.0/8, fd00::/8) nor an IP address")]
pub struct InvalidNetwork {
    pub entry: String,
}

/// Parses `ORDERS_SCRAPER_ALLOW_PRIVATE`: CIDR networks or single addresses,
/// separated by commas or white space; empty means none.
pub fn parse_allowed_networks(list: &str) -> Result<Vec<IpNet>, InvalidNetwork> {
    list.split(|character: char| character == ',' || character.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| InvalidNetwork {
                    entry: entry.to_owned(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_a_list_or_any() {
        assert_eq!(
            parse_allowed_ports(DEFAULT_SCRAPER_PORTS),
            Ok(PortPolicy::default())
        );
        assert_eq!(parse_allowed_ports(" * "), Ok(PortPolicy::Any));
        assert_eq!(
            parse_allowed_ports("443 8000,8001"),
            Ok(PortPolicy::Only(vec![443, 8000, 8001]))
        );
        for wrong in ["", "0", "65536", "http", "80,-1"] {
            assert!(parse_allowed_ports(wrong).is_err(), "{wrong:?}");
        }
        assert!(PortPolicy::default().permits(443));
        assert!(!PortPolicy::default().permits(22));
        assert!(PortPolicy::Any.permits(22));
    }

    fn address(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    #[test]
    fn public_addresses_are_permitted() {
        let policy = AddressPolicy::default();
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(
                policy.permits(address(public)),
                "{public} should be permitted"
            );
        }
    }

    #[test]
    fn addresses_that_reach_the_machine_or_its_network_are_refused() {
        let policy = AddressPolicy::default();
        for refused in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "3fff::1",
        ] {
            assert!(
                !policy.permits(address(refused)),
                "{refused} should be refused"
            );
        }
    }

    #[test]
    fn an_allowed_network_permits_its_addresses_and_nothing_else() {
        let policy = AddressPolicy::new(parse_allowed_networks("127.0.0.0/8, 10.0.0.5").unwrap());
        assert!(policy.permits(address("127.0.0.1")));
        assert!(policy.permits(address("127.9.9.9")));
        assert!(
            policy.permits(address("::ffff:127.0.0.1")),
            "the mapped form of an allowed address"
        );
        assert!(policy.permits(address("10.0.0.5")));
        assert!(!policy.permits(address("10.0.0.6")));
        assert!(!policy.permits(address("::1")), "::1 is not in 127.0.0.0/8");
        assert!(!policy.permits(address("169.254.169.254")));
    }

    #[test]
    fn the_allow_list_parser_takes_networks_and_addresses_and_names_a_bad_entry() {
        assert_eq!(parse_allowed_networks("").unwrap(), Vec::<IpNet>::new());
        assert_eq!(
            parse_allowed_networks(" 10.0.0.0/8,fd00::/8 ::1 ").unwrap(),
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "fd00::/8".parse().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_allowed_networks("10.0.0.0/8,localhost"),
            Err(InvalidNetwork {
                entry: "localhost".to_owned()
            })
        );
    }
}
