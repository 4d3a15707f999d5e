//! Logs (human or JSON, `RUST_LOG`), traces over OTLP, and the Prometheus registry behind
//! `/metrics`.
//!
//! Tracing is one `tracing` subscriber with up to three layers: the env filter, the log
//! formatter, and `tracing-opentelemetry` exporting spans over OTLP when an endpoint is set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). HTTP/protobuf is
//! the default protocol; `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` needs the `otlp-grpc` feature.
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER(_ARG)` are honoured
//! by the OpenTelemetry SDK itself.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How to set telemetry up.
#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    /// JSON log lines instead of human-readable ones.
    pub json: bool,
    /// Full OTLP traces URL (`…/v1/traces`); `None` reads the standard env variables, and
    /// without them trace export is off.
    pub otlp_traces_endpoint: Option<String>,
    /// Log filter; `None` reads `RUST_LOG` (default `info`).
    pub filter: Option<String>,
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops trace export (call before exit).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The provider's shutdown blocks until the batch is exported.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = provider.shutdown() {
                    eprintln!("trace export shutdown failed: {error}");
                }
            })
            .await;
        }
    }
}

/// Whether the environment asks for trace export.
fn endpoint_from_env() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Dependencies whose `log`/`tracing` records at debug and trace carry what we must never
/// log: tungstenite prints every message (start tokens, DTMF frames, the text we send the
/// model) and its handshake request (the upstream API key); hyper and the HTTP clients print
/// headers. Whatever `RUST_LOG` says, they stop at `info`.
const CAPPED: &[&str] = &[
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "reqwest=info",
    "rustls=info",
    "opentelemetry_otlp=info",
    "opentelemetry_http=info",
];

/// The log filter: `filter` (or `RUST_LOG`, default `info`) with [`CAPPED`] applied.
fn log_filter(filter: Option<&str>) -> EnvFilter {
    let mut filter = match filter {
        Some(filter) => EnvFilter::new(filter),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    for directive in CAPPED {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    filter
}

/// Installs the subscriber (once per process; later calls only return a no-op guard),
/// logging to stdout. Must run inside a tokio runtime when trace export is on.
pub fn init(options: TelemetryOptions) -> Telemetry {
    use std::io::IsTerminal;
    let colour = std::io::stdout().is_terminal();
    init_with_writer(options, std::io::stdout, colour)
}

/// [`init`] with log lines going to `writer` (tests capture exactly what production logs).
/// Installs the `log` bridge too, so dependencies' `log` records pass the same filter.
pub fn init_with_writer<W>(options: TelemetryOptions, writer: W, colour: bool) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = log_filter(options.filter.as_deref());
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = if options.json {
        // JSON escapes every string: one object per line whatever the fields hold.
        fmt.json().with_writer(BoxMakeWriter::new(writer)).boxed()
    } else {
        // Carrier fields (call ids, event and mark names) reach log lines: a CR or LF in
        // them must not start a forged line of its own.
        fmt.with_ansi(colour)
            .with_writer(BoxMakeWriter::new(OneLine(writer)))
            .boxed()
    };
    let provider = if options.otlp_traces_endpoint.is_some() || endpoint_from_env() {
        match tracer_provider(options.otlp_traces_endpoint.as_deref()) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("OTLP trace export disabled: {error}");
                None
            }
        }
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("callgate")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    Telemetry {
        provider: if installed { provider } else { None },
    }
}

/// Makes writers that keep each log event on one line: a CR or LF inside the event is
/// written as `\r` / `\n`; only the event's own final newline stays.
struct OneLine<W>(W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for OneLine<W> {
    type Writer = OneLineWriter<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

/// See [`OneLine`]. The formatter hands each event over in one `write_all`.
struct OneLineWriter<W>(W);

impl<W: std::io::Write> std::io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut escaped = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => escaped.extend_from_slice(b"\\n"),
                b'\r' => escaped.extend_from_slice(b"\\r"),
                b => escaped.push(b),
            }
        }
        escaped.extend_from_slice(end);
        self.0.write_all(&escaped)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn tracer_provider(endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let grpc = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").is_ok_and(|p| p.trim() == "grpc");
    let exporter = if grpc {
        grpc_exporter(endpoint)?
    } else {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        builder.build()?
    };
    let mut resource = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name"));
    if !named {
        resource = resource.with_service_name("callgate");
    }
    // Spans are exported from the tokio runtime (the HTTP client is hyper's).
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

#[cfg(feature = "otlp-grpc")]
fn grpc_exporter(endpoint: Option<&str>) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    Ok(builder.build()?)
}

#[cfg(not(feature = "otlp-grpc"))]
fn grpc_exporter(_endpoint: Option<&str>) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs callgate built with --features otlp-grpc")
}

/// Installs the log subscriber only (tools and tests that export no traces).
pub fn init_logging(json: bool) {
    let _ = init(TelemetryOptions {
        json,
        ..TelemetryOptions::default()
    });
}

/// The process-wide metrics registry (installed on first use).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Latencies render as histograms (not summaries) with buckets from 0.5 ms to 10 s.
        let buckets = [
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (embedding, tests); then this registry
        // simply stays empty.
        let _ = metrics::set_global_recorder(recorder);
        // Every family from the start, zero-valued, so alerts and dashboards see it.
        crate::metric_families::register();
        handle
    })
}

/// Folds recorded histogram samples into their buckets every second, so memory stays flat
/// between scrapes: the per-frame latency histograms take 100 samples per call-second, held
/// (8 bytes each) until folded, which at 5 s was 8 KiB per call.
pub fn spawn_metrics_upkeep() {
    let handle = metrics();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The metrics in Prometheus text format.
pub fn render_metrics() -> String {
    let handle = metrics();
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn carriage_returns_and_line_feeds_inside_an_event_are_escaped() {
        let mut out = Vec::new();
        super::OneLineWriter(&mut out)
            .write_all(b"INFO event=x\r\nINFO forged done\n")
            .unwrap();
        assert_eq!(out, b"INFO event=x\\r\\nINFO forged done\n");
        let mut plain = Vec::new();
        super::OneLineWriter(&mut plain)
            .write_all(b"INFO ok\n")
            .unwrap();
        assert_eq!(plain, b"INFO ok\n");
    }

    #[test]
    fn dependencies_stay_capped_whatever_rust_log_says() {
        let filter = super::log_filter(Some("trace")).to_string();
        for capped in super::CAPPED {
            assert!(filter.contains(capped), "{capped} missing from {filter}");
        }
    }
}
