//! The project's load generator against a real gateway and the echo upstream: every frame's
//! round trip is timed, refused calls are reported by reason, and the gateway's own
//! histograms are read around the run. (Nothing here is timed: the figures are printed by
//! `callgate loadtest` and the benchmarks; this checks that they are measured at all.)

mod common;

use std::time::Duration;

use callgate::client::{echo, scrape, stamped};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamped_load_times_every_frame_and_names_refusals() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
    tokio::spawn(echo::serve(listener, Duration::ZERO));
    let gw = Gateway::start(None, |c| {
        c.upstream.url = echo_url;
        // Room for three calls started at once from this address; the rest get 429.
        c.security.upgrades_per_ip_per_second = 1;
        c.security.upgrade_burst_per_ip = 3;
    })
    .await;
    let metrics_url = scrape::metrics_url_of(&gw.url("/twilio"));
    let before = scrape::snapshot(&metrics_url).await.unwrap();

    let report = stamped::run(&gw.url("/twilio"), 5, 1, Duration::ZERO).await;

    assert_eq!(report.frames_sent, 3 * 50, "three calls of one second ran");
    assert_eq!(report.failures.get("HTTP 429"), Some(&2), "{report:?}");
    // Every frame of the calls that ran came back through the echo, in its own call.
    assert_eq!(report.round_trips.len(), 150, "{}", report.summary(1));
    let (n, p50, p99) = report.percentiles(0);
    assert_eq!(n, 150);
    assert!(p50 > 0.0 && p99 >= p50);

    let after = scrape::snapshot(&metrics_url).await.unwrap();
    let outbound = scrape::Buckets::of(
        &after,
        "callgate_gateway_latency_seconds",
        &[("direction", "outbound")],
    )
    .since(&scrape::Buckets::of(
        &before,
        "callgate_gateway_latency_seconds",
        &[("direction", "outbound")],
    ));
    assert!(outbound.count() >= 1.0, "{}", outbound.describe());
    let text = scrape::gateway_latency(&before, &after);
    assert!(text.contains("model → carrier: p50 ≤"), "{text}");
}
