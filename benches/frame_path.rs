//! The per-frame path: one carrier media frame through the real event stack
//! (decode → validate → trace → catch-panic → timeout → router → media handler → upstream
//! queue), and the outbound writer. Run: `cargo bench --bench frame_path`.

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use callgate::config::Config;
use callgate_handlers::bridge::UpstreamAudio;
use callgate_handlers::call_state::CallStore;
use callgate_handlers::codec::{AudioFormat, BASE64};
use callgate_handlers::dialect::{Dialect, Writer};
use callgate_handlers::event::{Frame, Outbound};
use callgate_handlers::CallContext;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use tower::Service;

const SID: &str = "MZ11111111111111111111111111111111";

fn frame_text(payload: &str) -> String {
    format!(
        r#"{{"event":"media","sequenceNumber":"42","media":{{"track":"inbound","chunk":"41","timestamp":"820","payload":"{payload}"}},"streamSid":"{SID}"}}"#
    )
}

fn media_frame(payload: &str) -> Frame {
    Frame::text(frame_text(payload))
}

fn start_frame() -> Frame {
    Frame::text(format!(
        r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC1","streamSid":"{SID}","callSid":"CA1","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{}}}},"streamSid":"{SID}"}}"#
    ))
}

fn bench_pipeline(c: &mut Criterion, name: &str, audio: UpstreamAudio) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut config = Config::load(None, Vec::new()).unwrap();
    // An upstream nobody answers: the bridge task never runs during the measurement (this
    // thread never yields to it), so this times the gateway's own work on the frame.
    config.upstream.url = "ws://127.0.0.1:9/".into();
    config.upstream.audio = audio;
    let bridge = Arc::new(config.bridge_config(None));
    let (outbox, _rx) = tokio::sync::mpsc::channel(16);
    let ctx = CallContext::new(1, Dialect::Twilio, CallStore::new(), bridge, outbox);
    let mut stack = callgate::pipeline::build(ctx, Default::default());
    let mut call = |frame: Frame| {
        futures_util::future::poll_fn(|cx| stack.poll_ready(cx))
            .now_or_never()
            .unwrap()
            .unwrap();
        stack
            .call(frame)
            .now_or_never()
            .expect("handlers are synchronous")
            .unwrap()
    };
    call(start_frame());
    let payload = BASE64.encode([0x55u8; 160]);
    c.bench_function(name, |b| b.iter(|| call(black_box(media_frame(&payload)))));
}

fn frame_path(c: &mut Criterion) {
    let payload = BASE64.encode([0x55u8; 160]);
    let frame = media_frame(&payload);
    c.bench_function("frame/decode_twilio_media", |b| {
        b.iter(|| Dialect::Twilio.decode(black_box(&frame)).unwrap())
    });
    bench_pipeline(c, "frame/pipeline_pcmu_passthrough", UpstreamAudio::Pcmu);
    bench_pipeline(c, "frame/pipeline_pcm24k_transcode", UpstreamAudio::Pcm24k);
    // The same frame with the production subscriber installed: log formatting (to a sink)
    // and the OpenTelemetry layer with a sampling tracer (spans are built, not exported).
    {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call");
            let _entered = span.enter();
            bench_pipeline(
                c,
                "frame/pipeline_pcmu_passthrough_telemetry_on",
                UpstreamAudio::Pcmu,
            );
        });
    }

    // The carrier socket's frame meter: the header of one masked 20 ms Twilio media frame
    // read off the wire, its payload skipped, one unit of the socket's budget taken.
    {
        use callgate::carrier_socket::FrameScanner;
        use callgate_layers::http::limit::{quota, GlobalLimiter};
        let text = frame_text(&payload);
        let mut wire = vec![0x81u8, 0x80 | 126];
        wire.extend((text.len() as u16).to_be_bytes());
        wire.extend([1, 2, 3, 4]);
        wire.extend(text.as_bytes());
        let mut scanner = FrameScanner::default();
        let budget = GlobalLimiter::new(quota(1_000_000_000, 1_000_000_000));
        c.bench_function("frame/meter_twilio_media", |b| {
            b.iter(|| {
                for _ in 0..scanner.scan(black_box(&wire)) {
                    let _ = budget.check();
                }
            })
        });
    }

    let mut twilio = Writer::new(Dialect::Twilio, SID, AudioFormat::Mulaw);
    let mut smartflo = Writer::new(Dialect::Smartflo, SID, AudioFormat::Mulaw);
    // One 100 ms piece of model audio, as the bridge hands it over: the writer's cost
    // includes the only base64 encoding on the way out.
    let delta = Outbound::Media {
        audio: vec![0x55u8; 800].into(),
    };
    let mut frames = Vec::new();
    c.bench_function("outbound/twilio_100ms_delta", |b| {
        b.iter(|| {
            frames.clear();
            twilio.write(black_box(&delta), &mut frames);
        })
    });
    c.bench_function("outbound/smartflo_100ms_delta", |b| {
        b.iter(|| {
            frames.clear();
            smartflo.write(black_box(&delta), &mut frames);
        })
    });
    // One 100 ms delta of model audio (μ-law, as the GA server sends it) decoded into the
    // call core's event: the audio stays borrowed from the message.
    let upstream_delta =
        serde_json::json!({"type": "response.output_audio.delta", "event_id": "event_1",
        "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0,
        "delta": BASE64.encode(vec![0x55u8; 800])})
        .to_string();
    c.bench_function("upstream/decode_100ms_delta", |b| {
        b.iter(|| {
            black_box(
                callgate_handlers::bridge::realtime::decode_realtime(black_box(&upstream_delta))
                    .unwrap(),
            );
        })
    });
    // The same through each provider's adapter, as the call core calls it, and one 20 ms
    // frame of caller audio appended in each protocol's words.
    let settings = callgate_handlers::bridge::SessionSettings::default();
    let mut live = callgate_handlers::bridge::live::Live::with(
        "gpt-live-1",
        "gpt-5-mini",
        Vec::new(),
        UpstreamAudio::Pcmu,
        &settings,
    );
    let live_delta =
        serde_json::json!({"type": "session.output_audio.delta", "event_id": "event_1",
        "delta": BASE64.encode(vec![0x55u8; 800])})
        .to_string();
    c.bench_function("upstream/decode_100ms_delta_live", |b| {
        b.iter(|| {
            black_box(live.decode(black_box(&live_delta)).unwrap());
        })
    });
    let frame = BASE64.encode(vec![0xFFu8; 160]);
    let mut out = String::new();
    c.bench_function("upstream/append_20ms_frame_realtime", |b| {
        b.iter(|| callgate_handlers::bridge::wire::append(black_box(&frame), &mut out))
    });
    c.bench_function("upstream/append_20ms_frame_live", |b| {
        b.iter(|| live.append_audio(black_box(&frame), &mut out))
    });
    // Gemini: 100 ms of its 24 kHz PCM, and a 20 ms caller frame at 16 kHz.
    let mut gemini = callgate_handlers::bridge::gemini::Gemini::new("m", &[], &settings);
    let gemini_delta = serde_json::json!({"serverContent": {"modelTurn": {"parts": [{"inlineData":
        {"mimeType": "audio/pcm;rate=24000", "data": BASE64.encode(vec![0x11u8; 4800])}}]}}})
    .to_string();
    c.bench_function("upstream/decode_100ms_delta_gemini", |b| {
        b.iter(|| {
            black_box(gemini.decode(black_box(&gemini_delta)).unwrap());
        })
    });
    let frame16k = BASE64.encode(vec![0u8; 640]);
    c.bench_function("upstream/append_20ms_frame_gemini", |b| {
        b.iter(|| gemini.append_audio(black_box(&frame16k), &mut out))
    });
}

criterion_group!(benches, frame_path);
criterion_main!(benches);
