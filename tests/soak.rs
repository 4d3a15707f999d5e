//! The short soak (the long one is benches/soak.sh): three dozen calls at real-time pace for a
//! minute against the embedded loopback, sampling this process's RSS, open file descriptors
//! and tokio tasks. Memory must plateau after warm-up; counts must return to baseline.
//!
//! A minute of wall time is too long for the default suite: run it with
//! `cargo test --release --test soak -- --ignored`.

mod common;

use std::time::{Duration, Instant};

use callgate_handlers::dialect::Dialect;
use common::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a one-minute soak: cargo test --release --test soak -- --ignored"]
async fn three_dozen_calls_for_a_minute_hold_memory_flat() {
    const CALLS: usize = 36;
    const SECONDS: u64 = 60;
    let gw = Gateway::start(None, |c| c.security.messages_per_second = 200).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let (fds_before, tasks_before) = (open_fds(), tasks());

    let (format, audio) = callgate::wav::read(&fixture("caller-booking-8k-mulaw.wav")).unwrap();
    let mut options =
        callgate::client::CallOptions::new(gw.url("/twilio"), Dialect::Twilio, Vec::new());
    let file = callgate::wav::convert(format, &audio, options.format).unwrap();
    options.repeat_for(&file, Duration::from_secs(SECONDS));
    options.linger = Duration::from_secs(3);
    let load = tokio::spawn(callgate::client::load(
        options,
        CALLS,
        Duration::from_millis(20),
    ));

    let started = Instant::now();
    let mut samples = Vec::new();
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push((started.elapsed().as_secs(), rss_kib()));
    }
    let report = load.await.unwrap();
    println!("rss samples (s, KiB): {samples:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        report.closes.get(&Some(1000)).copied(),
        Some(CALLS as u64),
        "{:?}",
        report.closes
    );
    assert!(report.frames_received > 0);
    // The loopback answered each turn during the call, not just at its end.
    assert!(
        report.first_reply_percentile(95.0).unwrap() < 20_000,
        "{:?}",
        report.first_reply_ms
    );

    // Memory: compare the first sample after a 20 s warm-up with the last under load.
    let under_load: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= 20 && *t <= SECONDS)
        .map(|(_, r)| *r)
        .collect();
    let (first, last) = (under_load[0] as f64, *under_load.last().unwrap() as f64);
    let drift = (last - first) / first * 100.0;
    println!(
        "rss drift after warm-up: {drift:.1}% ({first} → {last} KiB); p50 first reply {:?} ms",
        report.first_reply_percentile(50.0)
    );
    assert!(drift < 5.0, "RSS grew {drift:.1}% under steady load");

    // Everything the calls held is released.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (fds, live) = (open_fds(), tasks());
        if fds <= fds_before + 2 && live <= tasks_before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds {fds_before} → {fds}, tasks {tasks_before} → {live}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
