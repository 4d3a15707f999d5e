//! Codec costs for one 20 ms frame. Run: `cargo bench -p callgate-handlers --bench codec`.

use std::hint::black_box;

use base64::Engine as _;
use callgate_handlers::codec::{decode_base64_into, AudioFormat, Transcoder, BASE64};
use criterion::{criterion_group, criterion_main, Criterion};

fn codec(c: &mut Criterion) {
    let samples: Vec<i16> = (0..160)
        .map(|i| ((i as f64 * 0.7).sin() * 9000.0) as i16)
        .collect();
    let mut mulaw = Vec::new();
    AudioFormat::Mulaw.encode(&samples, &mut mulaw);
    let mut out_bytes = Vec::with_capacity(1024);
    let mut out_samples = Vec::with_capacity(1024);

    c.bench_function("codec/mulaw_encode_20ms", |b| {
        b.iter(|| {
            out_bytes.clear();
            AudioFormat::Mulaw.encode(black_box(&samples), &mut out_bytes);
        })
    });
    c.bench_function("codec/mulaw_decode_20ms", |b| {
        b.iter(|| {
            out_samples.clear();
            AudioFormat::Mulaw.decode(black_box(&mulaw), &mut out_samples);
        })
    });
    let text = BASE64.encode(&mulaw);
    c.bench_function("codec/base64_check_20ms_mulaw", |b| {
        b.iter(|| decode_base64_into(black_box(&text), &mut out_bytes).unwrap())
    });

    let mut up = Transcoder::new(AudioFormat::Mulaw, AudioFormat::Pcm16 { rate: 24000 }).unwrap();
    c.bench_function("codec/mulaw8k_to_pcm24k_20ms", |b| {
        b.iter(|| {
            out_bytes.clear();
            up.transcode(black_box(&mulaw), &mut out_bytes);
        })
    });
    let mut pcm24 = Vec::new();
    AudioFormat::Pcm16 { rate: 24000 }.encode(
        &(0..480)
            .map(|i| ((i as f64 * 0.26).sin() * 9000.0) as i16)
            .collect::<Vec<_>>(),
        &mut pcm24,
    );
    let mut down = Transcoder::new(AudioFormat::Pcm16 { rate: 24000 }, AudioFormat::Mulaw).unwrap();
    c.bench_function("codec/pcm24k_to_mulaw8k_20ms", |b| {
        b.iter(|| {
            out_bytes.clear();
            down.transcode(black_box(&pcm24), &mut out_bytes);
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
