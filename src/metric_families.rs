//! Every metric family callgate exports, described and registered zero-valued at startup
//! for its known label sets: a series that appears only after its first event breaks
//! `rate()` alerts and dashboards. `tests/observability.rs` checks this list, `/metrics` on a
//! fresh gateway and the README's table against one another.

use callgate_handlers::dialect::Dialect;

/// How a family is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Seconds, in the configured buckets.
    Histogram,
}

/// One family: name, kind, help, and the label sets registered at startup.
pub struct Family {
    /// `callgate_…`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label sets to create at zero (empty: one series without labels).
    pub series: fn() -> Vec<Vec<(&'static str, &'static str)>>,
}

fn none() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![Vec::new()]
}

/// One series per value of `label`.
fn each(label: &'static str, values: &[&'static str]) -> Vec<Vec<(&'static str, &'static str)>> {
    values.iter().map(|v| vec![(label, *v)]).collect()
}

/// One series per carrier and value of `label`.
fn per_carrier(
    label: &'static str,
    values: &[&'static str],
) -> Vec<Vec<(&'static str, &'static str)>> {
    Dialect::ALL
        .iter()
        .flat_map(|d| {
            values
                .iter()
                .map(move |v| vec![("carrier", d.name()), (label, *v)])
        })
        .collect()
}

fn carriers() -> Vec<Vec<(&'static str, &'static str)>> {
    Dialect::ALL
        .iter()
        .map(|d| vec![("carrier", d.name())])
        .collect()
}

const OUTCOMES: &[&str] = &[
    "completed",
    "transferred",
    "drained",
    "bad_input",
    "policy",
    "too_big",
    "overloaded",
    "unsupported_format",
    "failed",
];
const DIRECTIONS: &[&str] = &["inbound", "outbound"];

/// The catalogue.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "callgate_calls_active",
        kind: Kind::Gauge,
        help: "Live calls.",
        series: carriers,
    },
    Family {
        name: "callgate_calls_total",
        kind: Kind::Counter,
        help: "Finished calls by outcome.",
        series: || per_carrier("outcome", OUTCOMES),
    },
    Family {
        name: "callgate_bad_frames_total",
        kind: Kind::Counter,
        help: "Rejected carrier frames by reason.",
        series: || {
            per_carrier(
                "reason",
                &[
                    "invalid_json",
                    "missing_field",
                    "flood",
                    "no_start",
                    "media_too_long",
                    "invalid_utf8",
                    "too_big",
                ],
            )
        },
    },
    Family {
        name: "callgate_unknown_events_total",
        kind: Kind::Counter,
        help: "Unknown carrier events (ignored).",
        series: carriers,
    },
    Family {
        name: "callgate_frames_total",
        kind: Kind::Counter,
        help: "Media frames, added at call end.",
        series: || per_carrier("direction", DIRECTIONS),
    },
    Family {
        name: "callgate_format_fallbacks_total",
        kind: Kind::Counter,
        help: "Calls whose media format label was unknown and fell back to the carrier's default.",
        series: carriers,
    },
    Family {
        name: "callgate_gateway_latency_seconds",
        kind: Kind::Histogram,
        help: "Time the gateway adds, each direction.",
        series: || each("direction", DIRECTIONS),
    },
    Family {
        name: "callgate_model_first_audio_seconds",
        kind: Kind::Histogram,
        help: "Caller speech stopped to the first reply audio.",
        series: none,
    },
    Family {
        name: "callgate_mark_round_trip_seconds",
        kind: Kind::Histogram,
        help: "Mark written to its echo.",
        series: none,
    },
    Family {
        name: "callgate_barge_in_clear_seconds",
        kind: Kind::Histogram,
        help: "speech_started received to clear written.",
        series: none,
    },
    Family {
        name: "callgate_upstream_connect_seconds",
        kind: Kind::Histogram,
        help: "Call start (or reconnect) to upstream session ready.",
        series: none,
    },
    Family {
        name: "callgate_upstream_pool_idle",
        kind: Kind::Gauge,
        help: "Warm upstream sessions waiting for a call.",
        series: none,
    },
    Family {
        name: "callgate_upstream_pool_takes_total",
        kind: Kind::Counter,
        help: "Upstream sessions calls asked the warm pool for, by outcome.",
        series: || each("outcome", &["warm", "cold"]),
    },
    Family {
        name: "callgate_upstream_pool_recycled_total",
        kind: Kind::Counter,
        help: "Warm sessions closed before a call took them, and failed opens, by reason.",
        series: || {
            each(
                "reason",
                &["age", "expiring", "stalled", "closed", "open_failed"],
            )
        },
    },
    Family {
        name: "callgate_audio_dropped_total",
        kind: Kind::Counter,
        help: "Audio dropped, by direction and reason.",
        series: || {
            let mut series = each("reason", &["queue_full", "reorder", "too_fast"]);
            series
                .iter_mut()
                .for_each(|s| s.insert(0, ("direction", "inbound")));
            series.push(vec![("direction", "outbound"), ("reason", "cancelled")]);
            series
        },
    },
    Family {
        name: "callgate_barge_ins_total",
        kind: Kind::Counter,
        help: "clear sent on caller speech.",
        series: none,
    },
    Family {
        name: "callgate_stale_marks_total",
        kind: Kind::Counter,
        help: "Mark echoes of an older generation, ignored.",
        series: none,
    },
    Family {
        name: "callgate_dtmf_dropped_total",
        kind: Kind::Counter,
        help: "Key presses dropped (the bridge far behind).",
        series: none,
    },
    Family {
        name: "callgate_panics_total",
        kind: Kind::Counter,
        help: "Panics, each closing its call with 1011.",
        series: none,
    },
    Family {
        name: "callgate_upstream_failures_total",
        kind: Kind::Counter,
        help: "Calls ended by the upstream, by reason.",
        series: || {
            each(
                "reason",
                &[
                    "connect",
                    "not_ready",
                    "closed",
                    "fatal_error",
                    "stalled",
                    "gave_up",
                ],
            )
        },
    },
    Family {
        name: "callgate_upstream_errors_total",
        kind: Kind::Counter,
        help: "Recoverable upstream error events by code.",
        series: || each("code", &["other"]),
    },
    Family {
        name: "callgate_upstream_events_ignored_total",
        kind: Kind::Counter,
        help: "Unparseable, binary or bad-base64 upstream events.",
        series: || each("reason", &["invalid", "binary", "bad_base64"]),
    },
    Family {
        name: "callgate_upstream_reconnects_total",
        kind: Kind::Counter,
        help: "Reconnect attempts and calls that gave up.",
        series: || each("outcome", &["attempt", "gave_up"]),
    },
    Family {
        name: "callgate_upstream_rollovers_total",
        kind: Kind::Counter,
        help: "Sessions replaced before expires_at.",
        series: none,
    },
    Family {
        name: "callgate_upstream_reseeds_total",
        kind: Kind::Counter,
        help: "New sessions given the conversation so far.",
        series: none,
    },
    Family {
        name: "callgate_carrier_write_timeouts_total",
        kind: Kind::Counter,
        help: "Calls dropped because the carrier stopped reading.",
        series: none,
    },
    Family {
        name: "callgate_upgrades_rejected_total",
        kind: Kind::Counter,
        help: "Refused upgrades and connections by reason.",
        series: || {
            each(
                "reason",
                &[
                    "unauthorized",
                    "forbidden",
                    "origin",
                    "not_upgrade",
                    "rate_limited",
                    "blocked",
                    "overloaded",
                    "draining",
                    "call_cap",
                    "cluster_unavailable",
                    "connection_cap",
                    "connection_cap_per_ip",
                ],
            )
        },
    },
    Family {
        name: "callgate_cluster_redis_up",
        kind: Kind::Gauge,
        help: "1 while the cluster's Redis answers; 0 while it does not, or with no cluster configured.",
        series: none,
    },
    Family {
        name: "callgate_cluster_fallbacks_total",
        kind: Kind::Counter,
        help: "Admission decisions taken without Redis, by decision and cluster.on_redis_error policy.",
        series: || {
            ["local", "closed"]
                .iter()
                .flat_map(|policy| {
                    ["per_ip", "global", "standing", "failed_auth", "jti", "call_cap"]
                        .iter()
                        .map(move |what| vec![("what", *what), ("policy", *policy)])
                })
                .collect()
        },
    },
    Family {
        name: "callgate_admin_auth_failures_total",
        kind: Kind::Counter,
        help: "Admin API requests with a wrong or missing token.",
        series: none,
    },
    Family {
        name: "callgate_tool_calls_total",
        kind: Kind::Counter,
        help: "Function calls by the model.",
        series: || each("tool", &["end_call", "webhook"]),
    },
    Family {
        name: "callgate_tool_errors_total",
        kind: Kind::Counter,
        help: "Tool calls answered with an error.",
        series: none,
    },
    Family {
        name: "callgate_transfers_total",
        kind: Kind::Counter,
        help: "Calls transferred to a person.",
        series: carriers,
    },
    Family {
        name: "callgate_carrier_api_requests_total",
        kind: Kind::Counter,
        help: "Carrier API requests (call control) by outcome.",
        series: || per_carrier("outcome", &["ok", "retry", "refused"]),
    },
    Family {
        name: "callgate_record_webhooks_total",
        kind: Kind::Counter,
        help: "Records webhook deliveries.",
        series: || each("outcome", &["delivered", "gave_up"]),
    },
    Family {
        name: "callgate_record_write_errors_total",
        kind: Kind::Counter,
        help: "Call record writes that failed.",
        series: none,
    },
    Family {
        name: "callgate_record_events_missed_total",
        kind: Kind::Counter,
        help: "Feed events the recorder fell behind on.",
        series: none,
    },
    Family {
        name: "callgate_recordings_total",
        kind: Kind::Counter,
        help: "Call recordings finished, by outcome.",
        series: || each("outcome", &["written", "uploaded", "failed"]),
    },
    Family {
        name: "callgate_recording_chunks_dropped_total",
        kind: Kind::Counter,
        help: "Recording chunks dropped because the disk fell behind.",
        series: none,
    },
    Family {
        name: "callgate_tape_lines_dropped_total",
        kind: Kind::Counter,
        help: "Call tape lines dropped because the disk fell behind.",
        series: none,
    },
    Family {
        name: "callgate_sessions_reaped_total",
        kind: Kind::Counter,
        help: "Idle sessions removed by the safety net.",
        series: none,
    },
];

/// Describes every family and creates its known series at zero (call once the recorder is
/// installed).
pub fn register() {
    for family in FAMILIES {
        let name = family.name;
        match family.kind {
            Kind::Counter => metrics::describe_counter!(name, family.help),
            Kind::Gauge => metrics::describe_gauge!(name, family.help),
            Kind::Histogram => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, family.help)
            }
        }
        for labels in (family.series)() {
            let labels: Vec<metrics::Label> = labels
                .into_iter()
                .map(|(k, v)| metrics::Label::new(k, v))
                .collect();
            match family.kind {
                Kind::Counter => metrics::counter!(name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(name, labels).increment(0.0),
                Kind::Histogram => drop(metrics::histogram!(name, labels)),
            }
        }
    }
}
