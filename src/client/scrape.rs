//! Reading the gateway's own latency histograms from `/metrics` around a load run, so that
//! `callgate loadtest` can report the time the gateway added (model byte in → carrier byte
//! out) beside what the carrier side saw.

use std::collections::BTreeMap;

use anyhow::Context;

/// `GET url`, the body as text (the gateway's own HTTP client: http:// or https://).
pub async fn get(url: &str) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let request = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .with_context(|| format!("{url} is not a URL"))?;
    let client = callgate_handlers::bridge::tools::https_client();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .with_context(|| format!("{url}: no answer in 10 s"))?
            .with_context(|| format!("{url}: request failed"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The gateway's `/metrics` beside its carrier URL: `ws://host:port/…` →
/// `http://host:port/metrics`, `wss://…` → `https://…` ("" for anything else).
pub fn metrics_url_of(url: &str) -> String {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("ws://") {
        ("http", rest)
    } else if let Some(rest) = url.strip_prefix("wss://") {
        ("https", rest)
    } else {
        return String::new();
    };
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{host}/metrics")
}

/// `/metrics` now, or `None` (said on stdout) when it cannot be read or `url` is "".
pub async fn snapshot(url: &str) -> Option<String> {
    if url.is_empty() {
        return None;
    }
    match get(url).await {
        Ok(text) => Some(text),
        Err(error) => {
            println!("gateway metrics unavailable: {error:#}");
            None
        }
    }
}

/// What the gateway's histograms say about a run between two snapshots.
pub fn gateway_latency(before: &str, after: &str) -> String {
    let run = |name: &str, labels: &[(&str, &str)]| {
        Buckets::of(after, name, labels).since(&Buckets::of(before, name, labels))
    };
    let latency = "callgate_gateway_latency_seconds";
    format!(
        "gateway-added latency (its histograms, bucket bounds):\n  model → carrier: {}\n  carrier → model: {}\n  start → upstream ready: {}\n",
        run(latency, &[("direction", "outbound")]).describe(),
        run(latency, &[("direction", "inbound")]).describe(),
        run("callgate_upstream_connect_seconds", &[]).describe(),
    )
}

/// One histogram series' cumulative bucket counts, by upper bound (seconds).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Buckets(BTreeMap<u64, f64>);

impl Buckets {
    /// The buckets of `name` whose labels include every `labels` pair, summed.
    pub fn of(text: &str, name: &str, labels: &[(&str, &str)]) -> Self {
        let prefix = format!("{name}_bucket{{");
        let mut buckets = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if !labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            {
                continue;
            }
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            let (Some(le), Ok(value)) = (le, value.parse::<f64>()) else {
                continue;
            };
            // +Inf sorts last; bounds are kept in nanoseconds to order them exactly.
            let bound = le
                .parse::<f64>()
                .map_or(u64::MAX, |s| (s * 1e9).round() as u64);
            *buckets.entry(bound).or_insert(0.0) += value;
        }
        Self(buckets)
    }

    /// What was added between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(le, n)| (*le, n - before.0.get(le).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    /// Samples counted.
    pub fn count(&self) -> f64 {
        self.0.values().last().copied().unwrap_or(0.0)
    }

    /// The smallest bucket bound (ms) under which at least `q` (0–1) of the samples fall;
    /// `None` without samples, infinity when only +Inf holds them.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        self.0
            .iter()
            .find(|(_, n)| **n >= q * total)
            .map(|(le, _)| {
                if *le == u64::MAX {
                    f64::INFINITY
                } else {
                    *le as f64 / 1e6
                }
            })
    }

    /// Share of the samples at or under `ms` (a bucket bound).
    pub fn share_within_ms(&self, ms: f64) -> Option<f64> {
        let total = self.count();
        let bound = (ms * 1e6).round() as u64;
        (total > 0.0).then(|| self.0.get(&bound).copied().unwrap_or(0.0) / total)
    }

    /// `p50 ≤ X ms, p99 ≤ Y ms (Z% ≤ 1 ms), N samples`, or `no samples`.
    pub fn describe(&self) -> String {
        match (self.quantile_ms(0.5), self.quantile_ms(0.99)) {
            (Some(p50), Some(p99)) => format!(
                "p50 ≤ {p50} ms, p99 ≤ {p99} ms ({:.2}% ≤ 1 ms), {} samples",
                self.share_within_ms(1.0).unwrap_or(0.0) * 100.0,
                self.count()
            ),
            _ => "no samples".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
callgate_gateway_latency_seconds_bucket{direction="outbound",le="0.0005"} 90
callgate_gateway_latency_seconds_bucket{direction="outbound",le="0.001"} 99
callgate_gateway_latency_seconds_bucket{direction="outbound",le="0.002"} 100
callgate_gateway_latency_seconds_bucket{direction="outbound",le="+Inf"} 100
callgate_gateway_latency_seconds_bucket{direction="inbound",le="0.0005"} 1
callgate_gateway_latency_seconds_bucket{direction="inbound",le="+Inf"} 2
"#;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let out = Buckets::of(
            TEXT,
            "callgate_gateway_latency_seconds",
            &[("direction", "outbound")],
        );
        assert_eq!(out.count(), 100.0);
        assert_eq!(out.quantile_ms(0.5), Some(0.5));
        assert_eq!(out.quantile_ms(0.99), Some(1.0));
        assert_eq!(out.quantile_ms(1.0), Some(2.0));
        assert_eq!(out.share_within_ms(1.0), Some(0.99));
        let inbound = Buckets::of(
            TEXT,
            "callgate_gateway_latency_seconds",
            &[("direction", "inbound")],
        );
        assert_eq!(inbound.quantile_ms(0.99), Some(f64::INFINITY));
    }

    #[test]
    fn the_metrics_url_is_the_gateways_own() {
        assert_eq!(
            metrics_url_of("ws://127.0.0.1:8080/twilio"),
            "http://127.0.0.1:8080/metrics"
        );
        assert_eq!(
            metrics_url_of("wss://gw.example.com/twilio?x=1"),
            "https://gw.example.com/metrics"
        );
        assert_eq!(metrics_url_of(""), "");
    }

    #[test]
    fn a_run_is_the_difference_of_two_scrapes() {
        let before = Buckets::of(
            TEXT,
            "callgate_gateway_latency_seconds",
            &[("direction", "outbound")],
        );
        let after_text = TEXT
            .replace("} 100", "} 110")
            .replace("\"0.001\"} 99", "\"0.001\"} 109");
        let after = Buckets::of(
            &after_text,
            "callgate_gateway_latency_seconds",
            &[("direction", "outbound")],
        );
        let run = after.since(&before);
        assert_eq!(run.count(), 10.0);
        assert_eq!(run.quantile_ms(0.99), Some(1.0));
        assert_eq!(Buckets::default().describe(), "no samples");
    }
}
