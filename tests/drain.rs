//! SIGTERM against the real binary: readiness flips at once, new upgrades get 503, live
//! calls finish normally (or close 1001 at the deadline), and the process exits.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

struct Binary {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Binary {
    async fn start(upstream: &FakeUpstream, drain_deadline_s: u64) -> Self {
        let addr = free_addr();
        let child = spawn_binary(addr, |command| {
            command
                .env("CALLGATE_LISTEN", addr.to_string())
                .env("CALLGATE_UPSTREAM_URL", &upstream.url)
                .env(
                    "CALLGATE_CALLS__DRAIN_DEADLINE_S",
                    drain_deadline_s.to_string(),
                )
                .env("CALLGATE_RECORDS__ENABLED", "false");
        })
        .await;
        Self { child, addr }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn sid(i: usize) -> String {
    format!("MZ{i:032}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_live_calls_then_exits() {
    let upstream = FakeUpstream::start().await;
    let mut binary = Binary::start(&upstream, 20).await;
    let url = format!("ws://{}/twilio", binary.addr);
    let mut calls = Vec::new();
    for i in 0..5 {
        let mut carrier = Carrier::connect(&url).await;
        carrier.send(twilio_start(&sid(i), json!({}))).await;
        carrier.send(media(&sid(i), 1, "/w==")).await;
        calls.push(carrier);
    }
    eventually(|| (upstream.all_appends().len() == 5).then_some(())).await;
    assert!(http_get(binary.addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));

    binary.signal("TERM");
    // Readiness fails at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !http_get(binary.addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 503")
    {
        assert!(Instant::now() < deadline, "readiness did not flip");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New upgrades are refused with 503 + Retry-After.
    let (status, headers) = Carrier::try_connect(&url, &[])
        .await
        .err()
        .expect("a new call was admitted while draining");
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    // Every live call carries on and ends normally.
    for (i, carrier) in calls.iter_mut().enumerate() {
        carrier.send(media(&sid(i), 2, "AAAA")).await;
    }
    eventually(|| (upstream.all_appends().len() == 10).then_some(())).await;
    for (i, mut carrier) in calls.into_iter().enumerate() {
        carrier.send(stop(&sid(i))).await;
        assert_eq!(carrier.closed().await.0, 1000, "call {i}");
    }
    // And the process exits right after the last call.
    let status = binary.exited(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_live_at_the_deadline_close_1001() {
    let upstream = FakeUpstream::start().await;
    let mut binary = Binary::start(&upstream, 1).await;
    let mut carrier = Carrier::connect(&format!("ws://{}/twilio", binary.addr)).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    let signalled = Instant::now();
    binary.signal("TERM");
    assert_eq!(
        carrier.closed().await,
        (1001, "gateway shutting down".to_owned())
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "closed before the deadline"
    );
    assert_eq!(upstream.wait_closed(0).await, 1000);
    assert!(binary.exited(Duration::from_secs(5)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let upstream = FakeUpstream::start().await;
    let mut binary = Binary::start(&upstream, 60).await;
    let mut carrier = Carrier::connect(&format!("ws://{}/twilio", binary.addr)).await;
    carrier.send(twilio_start(SID, json!({}))).await;
    upstream.conn(0).await;
    binary.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    binary.signal("TERM");
    let status = binary.exited(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(130));
}
