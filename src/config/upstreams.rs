//! Upstream groups (`[upstreams.NAME]`) and `trusted_proxies`, validated: server addresses
//! (`host:port weight=N`, `unix:/path`), balancing policy, timeouts, passive-health limits.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{ConfigError, Locator, UpstreamFile};

/// Where an upstream server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One server of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    pub addr: Addr,
    /// Relative share of requests under weighted round robin. Default 1.
    pub weight: u32,
}

/// How a group picks a server for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's), the default.
    RoundRobin,
    /// Fewest requests in flight (from this worker), ties by weight.
    LeastConn,
    /// Two servers at random, the one with fewer in flight (power of two choices).
    RandomTwo,
    /// Rendezvous hash of `hash_key`: the same key goes to the same server while it is up.
    Hash,
}

/// What `hash_key` hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKey {
    RemoteIp,
    Host,
    Path,
    Uri,
}

/// A validated `[upstreams.NAME]`.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<ServerSpec>,
    pub balance: Balance,
    pub hash_key: HashKey,
    /// Idle connections kept per worker per server. Default 32.
    pub keepalive: usize,
    /// An idle pooled connection older than this is closed, never reused. Default 30 s (keep it
    /// below the upstream's own keep-alive timeout).
    pub idle_timeout: Duration,
    /// Connecting longer than this fails the attempt (502, or a retry). Default 2 s.
    pub connect_timeout: Duration,
    /// Waiting longer than this between two reads from the upstream → 504. Default 60 s.
    pub read_timeout: Duration,
    /// Passive health: this many failures within `fail_timeout` take a server out. Default 3.
    pub max_fails: u32,
    /// ... for this long. Default 10 s.
    pub fail_timeout: Duration,
    /// Further servers tried after a failure, under the retry rule. Default 1.
    pub retries: u32,
    /// Response bytes read ahead of a slow client per request before reading pauses.
    /// Default 1 MiB.
    pub buffer_responses: usize,
    /// Read a request's whole body before choosing a server (default); false streams it to
    /// the upstream as it arrives.
    pub buffer_requests: bool,
    /// Active health checks, if configured.
    pub health: Option<Health>,
}

/// `health = { path, interval, expect }`: a management thread GETs `path` from every server
/// each `interval`; a server that does not answer `expect` is skipped by every worker until
/// it does again.
#[derive(Clone, Debug)]
pub struct Health {
    pub path: String,
    /// Default 2 s.
    pub interval: Duration,
    /// Default 200.
    pub expect: u16,
    /// One flag per server, shared by the checker (writes) and the workers (read): healthy.
    pub up: Arc<[AtomicBool]>,
}

/// An address or CIDR block whose forwarding fields are trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, ip) => ip,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

/// Parses one `servers` entry: `127.0.0.1:8001`, `127.0.0.1:8002 weight=2`, `unix:/run/a.sock`.
pub fn server_spec(s: &str) -> Result<ServerSpec, String> {
    let mut parts = s.split_whitespace();
    let addr = parts.next().ok_or("an empty server entry")?;
    let addr = match addr.strip_prefix("unix:") {
        Some(p) if p.starts_with('/') => Addr::Unix(PathBuf::from(p)),
        Some(_) => return Err(format!("{addr:?}: a unix socket path must be absolute")),
        None => Addr::Tcp(addr.parse().map_err(|_| {
            format!("{addr:?} is not ADDR:PORT (e.g. 127.0.0.1:8000) or unix:/path")
        })?),
    };
    let mut weight = 1;
    for opt in parts {
        match opt.split_once('=') {
            Some(("weight", w)) => {
                weight = w
                    .parse()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
                    .ok_or_else(|| format!("weight={w}: a weight is 1-1000"))?;
            }
            _ => return Err(format!("unknown server option {opt:?} (known: weight=N)")),
        }
    }
    Ok(ServerSpec { addr, weight })
}

/// Validates every upstream group; returns them sorted by name.
pub fn build(
    groups: Option<BTreeMap<String, Spanned<UpstreamFile>>>,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) -> Vec<Upstream> {
    let mut out = Vec::new();
    for (name, u) in groups.unwrap_or_default() {
        let span = u.span();
        let u = u.into_inner();
        let mut servers = Vec::new();
        if u.servers.get_ref().is_empty() {
            errs.push(loc.error(
                Some(u.servers.span()),
                format!("`servers` of upstream {name:?} is empty"),
            ));
        }
        for s in u.servers.get_ref() {
            match server_spec(s.get_ref()) {
                Ok(spec) => servers.push(spec),
                Err(why) => errs.push(loc.error(Some(s.span()), format!("`servers`: {why}"))),
            }
        }
        let balance = match u.balance.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_conn") => Balance::LeastConn,
            Some("random_two") => Balance::RandomTwo,
            Some("hash") => Balance::Hash,
            Some(other) => {
                errs.push(loc.error(
                    u.balance.as_ref().map(Spanned::span),
                    format!(
                        "`balance`: {other:?} is not a policy (round_robin, least_conn, random_two, hash)"
                    ),
                ));
                Balance::RoundRobin
            }
        };
        let hash_key = match u.hash_key.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("{remote_ip}") => HashKey::RemoteIp,
            Some("{host}") => HashKey::Host,
            Some("{path}") => HashKey::Path,
            Some("{uri}") => HashKey::Uri,
            Some(other) => {
                errs.push(loc.error(
                    u.hash_key.as_ref().map(Spanned::span),
                    format!(
                        "`hash_key`: {other:?} is not a key ({{remote_ip}}, {{host}}, {{path}}, {{uri}})"
                    ),
                ));
                HashKey::RemoteIp
            }
        };
        let health = u.health.as_ref().map(|h| {
            let hv = h.get_ref();
            if !hv.path.get_ref().starts_with('/') {
                errs.push(loc.error(Some(hv.path.span()), "`path` must start with `/`"));
            }
            let interval = hv.interval.map_or(Duration::from_secs(2), |d| d.0);
            if interval < Duration::from_millis(100) {
                errs.push(loc.error(Some(h.span()), "`interval` is at least 100ms"));
            }
            Health {
                path: hv.path.get_ref().clone(),
                interval,
                expect: hv.expect.unwrap_or(200),
                up: (0..u.servers.get_ref().len())
                    .map(|_| AtomicBool::new(true))
                    .collect(),
            }
        });
        if u.buffer_responses.is_some_and(|b| b.0 < 4096) {
            errs.push(loc.error(Some(span.clone()), "`buffer_responses` is at least 4KiB"));
        }
        let d =
            |v: Option<super::units::Dur>, def: u64| v.map_or(Duration::from_secs(def), |d| d.0);
        out.push(Upstream {
            name,
            servers,
            balance,
            hash_key,
            keepalive: u.keepalive.unwrap_or(32),
            idle_timeout: d(u.idle_timeout, 30),
            connect_timeout: d(u.connect_timeout, 2),
            read_timeout: d(u.read_timeout, 60),
            max_fails: u.max_fails.unwrap_or(3),
            fail_timeout: d(u.fail_timeout, 10),
            retries: u.retries.unwrap_or(1),
            buffer_responses: u
                .buffer_responses
                .map_or(1 << 20, |b| usize::try_from(b.0).unwrap_or(usize::MAX)),
            buffer_requests: u.buffer_requests.as_ref().is_none_or(|b| *b.get_ref()),
            health,
        });
    }
    out
}

/// A group for `--proxy ADDR` flags: round robin, every default.
pub fn from_flags(servers: Vec<ServerSpec>) -> Upstream {
    Upstream {
        name: "default".into(),
        servers,
        balance: Balance::RoundRobin,
        hash_key: HashKey::RemoteIp,
        keepalive: 32,
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(60),
        max_fails: 3,
        fail_timeout: Duration::from_secs(10),
        retries: 1,
        buffer_responses: 1 << 20,
        buffer_requests: true,
        health: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries_parse() {
        assert_eq!(
            server_spec("127.0.0.1:8002 weight=2"),
            Ok(ServerSpec {
                addr: Addr::Tcp("127.0.0.1:8002".parse().unwrap()),
                weight: 2
            })
        );
        assert_eq!(
            server_spec("unix:/run/app.sock").unwrap().addr,
            Addr::Unix("/run/app.sock".into())
        );
        assert!(server_spec("localhost:80").is_err());
        assert!(server_spec("unix:rel.sock").is_err());
        assert!(server_spec("127.0.0.1:1 weight=0").is_err());
        assert!(server_spec("127.0.0.1:1 backup").is_err());
    }

    #[test]
    fn cidrs_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
    }
}
