//! HTTP middleware for WebSocket upgrades: who is calling, may they, and how often. It knows
//! nothing of telephony; the root crate's `admission` module orders these layers.
//!
//! [`client_ip`] (trusted proxies), [`admission`] (the gates: origin, upgrade shape, per-IP
//! limit, failed-auth standing, the gateway-wide budget), [`auth`] (JWT, Twilio signature,
//! Basic, IP allow-list), [`limit`]: the limiters, the failure blocklist and the per-host
//! connection counts, and [`limits`]: the interface to that state, local or shared.

pub mod admission;
pub mod auth;
pub mod client_ip;
pub mod limit;
pub mod limits;

/// The value of query parameter `name` in `query` (as sent: no percent-decoding, which
/// tokens, ids and numbers do not need).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_param_finds_exact_names_only() {
        let query = "sample-rate=16000&token=a.b.c&tokens=x&flag";
        assert_eq!(super::query_param(query, "token"), Some("a.b.c"));
        assert_eq!(super::query_param(query, "sample-rate"), Some("16000"));
        assert_eq!(super::query_param(query, "flag"), None);
        assert_eq!(super::query_param(query, "missing"), None);
        assert_eq!(super::query_param("", "token"), None);
    }
}
