//! The one policy for the calls the server makes on its own (code hosts' APIs, OAuth
//! token exchanges, registries): **internal addresses are refused unless an admin's
//! allow-list names them.** Start at [`Policy`]; [`Policy::apply`] puts it on a
//! `reqwest::ClientBuilder`, and every client Wharf builds for those calls goes through it.
//!
//! Without the policy, anyone who may set an address Wharf then calls (a binding's
//! instance URL, a redirect the far side answers, a name whose DNS record points
//! inward) could make the server call `127.0.0.1`, the cloud metadata service at
//! `169.254.169.254` or any private host, with a token or the OAuth client secret, and
//! learn from the errors which ports answer.
//!
//! Where the check happens, so nothing slips past it:
//! - **names** are checked after DNS resolution, by the client's resolver
//!   ([`Policy::apply`] installs it): the addresses a name resolves to are filtered at
//!   connect time, so a name that resolved outward once and inward later (DNS
//!   rebinding) is still refused;
//! - **IP literals** (`http://127.0.0.1/`, `http://[::1]/`, `http://2130706433/`) never
//!   reach a resolver (hyper connects to them directly), so [`Policy::check_url`] is
//!   called on every address before the request is sent;
//! - **redirects** are followed only through [`Policy::check_url`] (names in their
//!   targets then meet the resolver as above), at most [`MAX_REDIRECTS`] of them.
//!
//! Refused ([`internal`]): loopback, unspecified (`0.0.0.0/8`, `::`), private (RFC 1918,
//! `fc00::/7`, the old site-local `fec0::/10`), link-local (`169.254.0.0/16` with the
//! metadata service, `fe80::/10`), shared/CGNAT `100.64.0.0/10`, IETF and benchmarking
//! ranges, multicast, the reserved `240.0.0.0/4` and broadcast; and IPv6 forms that
//! carry an IPv4 address (`::ffff:a.b.c.d`, `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`) when that IPv4 address is one of them.
//!
//! The allow-list (`outbound_allow`) holds host names (`git.internal`), IP addresses
//! (`10.1.2.3`, `::1`) and networks in CIDR form (`10.0.0.0/8`, `fd00::/8`). A name
//! allows whatever it resolves to; an address or network allows itself, whatever name
//! led there. An entry allows every port of its host.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Redirects followed at most per request.
pub const MAX_REDIRECTS: usize = 10;

/// The outbound policy: which internal addresses an admin allowed. Cheap to clone;
/// the default allows none.
#[derive(Clone, Default)]
pub struct Policy {
    inner: Arc<Allowed>,
}

#[derive(Default)]
struct Allowed {
    /// Lowercase, without a trailing dot.
    names: Vec<String>,
    nets: Vec<Net>,
}

/// An IP network: the address and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V4(_), IpAddr::V6(ip)) => embedded_v4(ip).is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (bytes, bits) = ((prefix / 8) as usize, prefix % 8);
    a[..bytes] == b[..bytes] && (bits == 0 || (a[bytes] ^ b[bytes]) >> (8 - bits) == 0)
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.inner.nets.iter().map(Net::to_string).collect();
        f.debug_struct("Policy").field("names", &self.inner.names).field("nets", &nets).finish()
    }
}

/// An `outbound_allow` entry that is not a host, an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "outbound_allow entry `{entry}` is not usable: {why} (expected a host name like git.internal, an IP address \
     like 10.1.2.3, or a network like 10.0.0.0/8)"
)]
pub struct BadEntry {
    pub entry: String,
    pub why: String,
}

/// A call refused by the policy: which address, why, and how an admin allows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// The host as the address named it (a name, or the IP literal).
    pub host: String,
    /// The internal address refused.
    pub address: IpAddr,
    /// What kind of internal address it is (`loopback`, `private`, `link-local`…).
    pub kind: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.host == self.address.to_string() {
            format!("{} is a {} address", self.address, self.kind)
        } else {
            format!("`{}` resolves to {}, a {} address", self.host, self.address, self.kind)
        };
        write!(
            f,
            "refused to connect: {what}, and Wharf calls loopback, link-local and private addresses only when an \
             admin allows them (server config outbound_allow = [\"{}\"], or WHARF_OUTBOUND_ALLOW)",
            self.host
        )
    }
}

impl Policy {
    /// A policy allowing the internal hosts and networks `entries` name (see the
    /// module docs); blank entries are skipped.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Policy, BadEntry> {
        let mut allowed = Allowed::default();
        for entry in entries {
            let text = entry.as_ref().trim();
            if text.is_empty() {
                continue;
            }
            let bad = |why: &str| BadEntry { entry: text.to_owned(), why: why.to_owned() };
            if let Some((addr, prefix)) = text.split_once('/') {
                let addr: IpAddr = addr.parse().map_err(|_| bad("the part before `/` is not an IP address"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| bad(&format!("the prefix length must be a number from 0 to {max}")))?;
                allowed.nets.push(Net { addr, prefix });
            } else if let Ok(addr) = text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                allowed.nets.push(Net { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } });
            } else if text.contains(':') {
                return Err(bad("ports are not part of an entry (an entry allows every port of its host)"));
            } else {
                let name = text.trim_end_matches('.').to_ascii_lowercase();
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|label| {
                        !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
                if !ok {
                    return Err(bad("it is not a host name"));
                }
                allowed.names.push(name);
            }
        }
        Ok(Policy { inner: Arc::new(allowed) })
    }

    /// This policy, also allowing `host` (`name`, `name:port`, an IP address with or
    /// without a port, `[v6]:port`; every port of it): for a client of one place an
    /// admin chose, such as a registered registry, whose own redirects and token
    /// services stay under the policy.
    pub fn also_allowing(&self, host: &str) -> Policy {
        let host = host.trim();
        let bare = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(""),
            None => host,
        };
        let mut allowed = Allowed { names: self.inner.names.clone(), nets: self.inner.nets.clone() };
        match bare.parse::<IpAddr>() {
            Ok(addr) => allowed.nets.push(Net { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }),
            Err(_) => allowed.names.push(bare.trim_end_matches('.').to_ascii_lowercase()),
        }
        Policy { inner: Arc::new(allowed) }
    }

    /// The addresses the name `host` resolves to (system resolver) that may be called:
    /// what every connector of the server dials. Fails with the first [`Refused`] when
    /// the name resolves only to refused addresses, or with the resolver's error.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let mut refused = None;
        let mut kept = Vec::with_capacity(resolved.len());
        for addr in resolved {
            match self.check(host, addr.ip()) {
                Ok(()) => kept.push(addr),
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        match (kept.is_empty(), refused) {
            (true, Some(refused)) => Err(Box::new(refused)),
            _ => Ok(kept),
        }
    }

    /// Whether `address`, reached through `host` (a name or the literal), may be called.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        let Some(kind) = internal(address) else { return Ok(()) };
        let name = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        if self.inner.names.contains(&name) || self.inner.nets.iter().any(|net| net.contains(address)) {
            return Ok(());
        }
        Err(Refused { host: name, address, kind })
    }

    /// Checks an address about to be called: an IP-literal host now (no resolver sees
    /// it); a name is checked by the resolver when the client connects. Call it
    /// before every request a client with this policy sends.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        // The URL parser already turned `2130706433` and `0x7f.1` into `127.0.0.1`.
        let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => self.check(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// The builder with this policy: its resolver drops refused addresses (and fails
    /// when none is left), and redirects are followed only to addresses
    /// [`Policy::check_url`] accepts, at most [`MAX_REDIRECTS`].
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let policy = self.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        });
        builder.dns_resolver(Arc::new(Resolver { policy: self.clone() })).redirect(redirects)
    }
}

/// The refusal behind a client's error, if the policy is why it failed.
pub fn refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

/// Resolves names with the system resolver and keeps the addresses the policy allows.
struct Resolver {
    policy: Policy,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move { Ok(Box::new(policy.resolve(name.as_str()).await?.into_iter()) as Addrs) })
    }
}

/// What kind of internal address `ip` is, or `None` for an address on the internet.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) | (198, 18..=19, _) => "reserved",
        // Documentation networks (TEST-NET-1, -2, -3): nothing real lives there.
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "reserved",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        "private"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xff00 == 0xff00 {
        "multicast"
    } else if first == 0x2001 && matches!(ip.segments()[1], 0 | 0xdb8) {
        // Teredo tunnels (the client's IPv4 address hidden inside) and documentation.
        "reserved"
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address carries: mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and its local-use
/// `64:ff9b:1::/48`, 6to4 `2002:AABB:CCDD::`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback.
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_named() {
        for (text, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd12::1", "private"),
            ("fc00::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a00:1::", "private"),
            ("::ffff:0:7f00:1", "loopback"),
            ("64:ff9b:1::a00:1", "private"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved"),
            ("2001:db8::1", "reserved"),
            ("192.0.2.1", "reserved"),
            ("198.51.100.7", "reserved"),
            ("203.0.113.9", "reserved"),
        ] {
            assert_eq!(internal(ip(text)), Some(kind), "{text}");
        }
        for text in ["8.8.8.8", "140.82.112.3", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert_eq!(internal(ip(text)), None, "{text}");
        }
    }

    #[test]
    fn the_allow_list_names_hosts_addresses_and_networks() {
        let also = Policy::default().also_allowing("registry.local:5000").also_allowing("127.0.0.1:5000");
        assert!(also.check("registry.local", ip("10.9.9.9")).is_ok() && also.check("x", ip("127.0.0.1")).is_ok());
        assert!(also.check("x", ip("127.0.0.2")).is_err());
        assert!(Policy::default().also_allowing("[::1]:5000").check("x", ip("::1")).is_ok());
        let policy = Policy::new(&["git.internal.", "10.0.0.0/8", "::1", " ", "FD00::/8"]).unwrap();
        assert!(policy.check("Git.Internal", ip("192.168.9.9")).is_ok(), "a name allows what it resolves to");
        assert!(policy.check("other", ip("10.200.1.1")).is_ok());
        assert!(policy.check("::1", ip("::1")).is_ok());
        assert!(policy.check("x", ip("fd01::5")).is_ok());
        assert!(policy.check("x", ip("::ffff:10.0.0.7")).is_ok(), "the mapped form of an allowed network");
        assert!(policy.check("8.8.8.8", ip("8.8.8.8")).is_ok(), "public addresses need no entry");
        let refused = policy.check("other", ip("192.168.9.9")).unwrap_err();
        assert_eq!(refused.kind, "private");
        let message = refused.to_string();
        assert!(message.contains("`other` resolves to 192.168.9.9, a private address"), "{message}");
        assert!(message.contains("outbound_allow = [\"other\"]"), "{message}");
        let message = Policy::default().check("127.0.0.1", ip("127.0.0.1")).unwrap_err().to_string();
        assert!(message.starts_with("refused to connect: 127.0.0.1 is a loopback address"), "{message}");

        for bad in ["10.0.0.0/33", "x/8", "git.internal:443", "bad host", "a..b", "10.0.0.0/"] {
            let e = Policy::new(&[bad]).unwrap_err();
            assert_eq!(e.entry, bad);
        }
    }

    #[test]
    fn literal_addresses_in_urls_are_checked() {
        let strict = Policy::default();
        for url in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "https://169.254.169.254/latest/meta-data/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert!(strict.check_url(&Url::parse(url).unwrap()).is_err(), "{url}");
        }
        assert!(strict.check_url(&Url::parse("https://gitlab.com/api/v4").unwrap()).is_ok());
        assert!(strict.check_url(&Url::parse("http://localhost/").unwrap()).is_ok(), "names: the resolver's turn");
        let allowed = Policy::new(&["127.0.0.1"]).unwrap();
        assert!(allowed.check_url(&Url::parse("http://127.0.0.1:9/").unwrap()).is_ok());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution_and_redirects_before_they_are_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server on loopback that redirects every request to itself by IP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/next\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let strict = Policy::default().apply(reqwest::Client::builder()).build().unwrap();
        let e = strict.get(format!("http://localhost:{port}/")).send().await.unwrap_err();
        let refused = refusal(&e).unwrap_or_else(|| panic!("not a refusal: {e:?}"));
        assert_eq!(refused.host, "localhost");
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing connected");

        // Allowed by name, the first request goes; its redirect to the IP literal is refused.
        let by_name = Policy::new(&["localhost"]).unwrap().apply(reqwest::Client::builder()).build().unwrap();
        let e = by_name.get(format!("http://localhost:{port}/")).send().await.unwrap_err();
        let refused = refusal(&e).unwrap_or_else(|| panic!("not a refusal: {e:?}"));
        assert_eq!(refused.address, ip("127.0.0.1"));
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "the redirect was not followed");
    }
}
