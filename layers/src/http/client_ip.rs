//! The caller's IP: the TCP peer, or, only when the peer is a trusted proxy, the first
//! untrusted hop of the one forwarding header that proxy is configured to set
//! (`X-Forwarded-For` or `Forwarded`), walking right to left.
//!
//! Left-most entries are whatever the client wrote; only hops appended by proxies we trust
//! can be believed, so an untrusted peer's headers are ignored entirely. Only one header is
//! read: a proxy that sets `Forwarded` passes a client's own `X-Forwarded-For` through
//! untouched, so reading both would let the client choose its address. IPv4-mapped IPv6
//! addresses (`::ffff:192.0.2.1`, a dual-stack listener's view of an IPv4 peer) are
//! treated as the IPv4 address they carry, so IPv4 CIDRs match them.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::{HeaderMap, Request};
use ipnet::IpNet;
use tower::{Layer, Service};

/// The resolved client address, inserted into request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The rate-limiter key: IPv4 as is, IPv6 by its /64 (one subscriber's prefix).
    pub fn key(self) -> IpAddr {
        match self.0 {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }
}

/// Which forwarding header the trusted proxies set (`security.forwarded_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Arc<Vec<IpNet>>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trust `header` when the peer is in one of these networks.
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self {
            nets: Arc::new(nets),
            header,
        }
    }

    /// True when `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = match self.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
            ForwardedHeader::Forwarded => forwarded(headers),
        };
        // Right to left: the nearest hop was written by the proxy we trust.
        let mut nearest = peer;
        while let Some(hop) = hops.pop() {
            match hop {
                Some(ip) if self.trusts(ip) => nearest = ip,
                Some(ip) => return ip,
                // Garbage in a trusted proxy's header: stop at the last hop we know.
                None => return nearest,
            }
        }
        nearest
    }
}

/// Hops from `X-Forwarded-For`, left to right.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect()
}

/// Hops from `Forwarded: for=…`, left to right.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value.trim().trim_matches('"')))
            })
        })
        .collect()
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = if let Ok(ip) = hop.parse::<IpAddr>() {
        ip
    } else if let Ok(addr) = hop.parse::<SocketAddr>() {
        addr.ip()
    } else {
        // `[2001:db8::1]` without a port.
        hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?
    };
    Some(ip.to_canonical())
}

/// Applies [`ClientIpService`].
#[derive(Debug, Clone, Default)]
pub struct ClientIpLayer {
    trusted: TrustedProxies,
}

impl ClientIpLayer {
    /// Resolve client IPs, believing forwarding headers only from `trusted`.
    pub fn new(trusted: TrustedProxies) -> Self {
        Self { trusted }
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIpService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService {
            inner,
            trusted: self.trusted.clone(),
        }
    }
}

/// Inserts [`ClientIp`] into the request's extensions (from axum's `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct ClientIpService<S> {
    inner: S,
    trusted: TrustedProxies,
}

impl<S, B> Service<Request<B>> for ClientIpService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let ip = self.trusted.client_ip(peer, request.headers());
        request.extensions_mut().insert(ClientIp(ip));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        h
    }

    fn nets() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(nets(), ForwardedHeader::XForwardedFor)
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(proxies().client_ip(peer, &h), peer);
    }

    #[test]
    fn walks_right_to_left_to_the_first_untrusted_hop() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(
            proxies().client_ip(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.8:4711"),
        ]);
        assert_eq!(
            proxies().client_ip(peer, &split),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_header_is_understood() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711""#,
        )]);
        let proxies = TrustedProxies::new(nets(), ForwardedHeader::Forwarded);
        assert_eq!(
            proxies.client_ip(peer, &h),
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_client_written_header_never_beats_the_proxy_header() {
        // The attack: the proxy sets `Forwarded`, the client adds its own
        // `X-Forwarded-For` naming an allow-listed address. Only the configured header counts.
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.10"),
            ("forwarded", "for=203.0.113.66"),
        ]);
        let behind_forwarded = TrustedProxies::new(nets(), ForwardedHeader::Forwarded);
        assert_eq!(
            behind_forwarded.client_ip(peer, &h),
            "203.0.113.66".parse::<IpAddr>().unwrap()
        );
        // And the other way round.
        let h = headers(&[
            ("forwarded", "for=192.0.2.10"),
            ("x-forwarded-for", "203.0.113.66"),
        ]);
        assert_eq!(
            proxies().client_ip(peer, &h),
            "203.0.113.66".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let peer: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            proxies().client_ip(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(
            proxies().client_ip(untrusted, &HeaderMap::new()),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn garbage_stops_at_the_nearest_known_hop() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(proxies().client_ip(peer, &h), peer);
    }

    #[test]
    fn ipv6_keys_by_slash_64() {
        let a = ClientIp("2001:db8:1:2:aaaa::1".parse().unwrap()).key();
        let b = ClientIp("2001:db8:1:2:bbbb::9".parse().unwrap()).key();
        assert_eq!(a, b);
        assert_eq!(
            ClientIp("::ffff:192.0.2.1".parse().unwrap()).key(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
