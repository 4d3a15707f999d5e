//! Cost of authenticating one upgrade. Run: `cargo bench -p callgate-layers --bench auth`.

use std::hint::black_box;

use callgate_layers::http::auth::{Claims, JwtKey, JwtVerifier, TwilioSignature};
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/testdata/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}{name}")).unwrap()
}

fn auth(c: &mut Criterion) {
    callgate_layers::install_crypto();
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = Claims {
        iss: "callgate".into(),
        aud: "callgate".into(),
        exp,
        tenant: Some("acme".into()),
        ..Claims::default()
    };
    let cases = [
        (
            "HS256",
            Algorithm::HS256,
            DecodingKey::from_secret(b"bench-secret"),
            EncodingKey::from_secret(b"bench-secret"),
        ),
        (
            "RS256",
            Algorithm::RS256,
            DecodingKey::from_rsa_pem(&read("rsa_public.pem")).unwrap(),
            EncodingKey::from_rsa_pem(&read("rsa_private.pem")).unwrap(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            DecodingKey::from_ec_pem(&read("ec_public.pem")).unwrap(),
            EncodingKey::from_ec_pem(&read("ec_private.pem")).unwrap(),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            DecodingKey::from_ed_pem(&read("ed_public.pem")).unwrap(),
            EncodingKey::from_ed_pem(&read("ed_private.pem")).unwrap(),
        ),
    ];
    for (name, algorithm, decoding, encoding) in cases {
        let verifier = JwtVerifier::new(
            vec![JwtKey {
                kid: "k".into(),
                algorithm,
                key: decoding,
            }],
            "callgate",
            "callgate",
            10,
        );
        let mut header = Header::new(algorithm);
        header.kid = Some("k".into());
        let token = encode(&header, &claims, &encoding).unwrap();
        c.bench_function(&format!("auth/jwt_verify_{name}"), |b| {
            b.iter(|| verifier.verify(black_box(&token)).unwrap())
        });
    }
    // Primary and secondary tokens × 4 URL variants: every upgrade computes all 8 HMACs.
    let check = TwilioSignature::new(
        "wss://gw.example.com/twilio",
        vec!["primary-token".into(), "secondary-token".into()],
    );
    let signature = TwilioSignature::sign("primary-token", "wss://gw.example.com/twilio");
    c.bench_function("auth/twilio_signature_verify", |b| {
        b.iter(|| assert!(check.verify(black_box(&signature))))
    });
}

criterion_group!(benches, auth);
criterion_main!(benches);
