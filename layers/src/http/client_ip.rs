//! The caller's IP: the TCP peer, or, only when the peer is a trusted proxy, the first
//! untrusted hop of `X-Forwarded-For` / `Forwarded` walking right to left.
//!
//! Left-most entries are whatever the client wrote; only hops appended by proxies we trust
//! can be believed, so an untrusted peer's headers are ignored entirely.

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

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// Trust these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(Arc::new(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = forwarded_hops(headers);
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

/// Hops from `X-Forwarded-For`, else from `Forwarded: for=…`, left to right.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
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
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    // `[2001:db8::1]` without a port.
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
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

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
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
        assert_eq!(
            proxies().client_ip(peer, &h),
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
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
