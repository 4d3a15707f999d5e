use super::*;
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

const SECRET: &[u8] = b"test-secret-test-secret-test-sec";
const RSA_PRIVATE: &[u8] = include_bytes!("../testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../testdata/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../testdata/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../testdata/ec_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("../testdata/ed_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../testdata/ed_public.pem");

fn install() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

fn claims() -> Claims {
    Claims {
        iss: "callgate".into(),
        aud: "carriers".into(),
        exp: get_current_timestamp() + 300,
        sub: Some("twilio".into()),
        tenant: Some("acme".into()),
        ..Claims::default()
    }
}

fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    h
}

fn verifier() -> JwtVerifier {
    install();
    JwtVerifier::new(
        vec![
            JwtKey {
                kid: "hs-current".into(),
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(SECRET),
            },
            JwtKey {
                kid: "hs-previous".into(),
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(b"previous-secret-previous-secret!"),
            },
            JwtKey {
                kid: "rsa".into(),
                algorithm: Algorithm::RS256,
                key: DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap(),
            },
            JwtKey {
                kid: "ec".into(),
                algorithm: Algorithm::ES256,
                key: DecodingKey::from_ec_pem(EC_PUBLIC).unwrap(),
            },
            JwtKey {
                kid: "ed".into(),
                algorithm: Algorithm::EdDSA,
                key: DecodingKey::from_ed_pem(ED_PUBLIC).unwrap(),
            },
        ],
        "callgate",
        "carriers",
        5,
    )
}

fn hs(claims: &impl Serialize, kid: &str) -> String {
    encode(
        &header(Algorithm::HS256, Some(kid)),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[test]
fn every_algorithm_verifies_with_its_key() {
    let v = verifier();
    let c = claims();
    let tokens = [
        hs(&c, "hs-current"),
        encode(
            &header(Algorithm::HS256, Some("hs-previous")),
            &c,
            &EncodingKey::from_secret(b"previous-secret-previous-secret!"),
        )
        .unwrap(),
        encode(
            &header(Algorithm::RS256, Some("rsa")),
            &c,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        )
        .unwrap(),
        encode(
            &header(Algorithm::ES256, Some("ec")),
            &c,
            &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        )
        .unwrap(),
        encode(
            &header(Algorithm::EdDSA, Some("ed")),
            &c,
            &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        )
        .unwrap(),
    ];
    for token in tokens {
        let verified = v.verify(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verified.tenant.as_deref(), Some("acme"));
    }
}

/// A token with a forged header and no signature.
fn unsigned(header_json: &str, claims: &Claims) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    format!(
        "{}.{}.",
        B64URL.encode(header_json),
        B64URL.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[test]
fn hostile_tokens_are_all_rejected() {
    let v = verifier();
    let c = claims();
    let now = get_current_timestamp();
    let without = |field: &str| {
        let mut value = serde_json::to_value(&c).unwrap();
        value.as_object_mut().unwrap().remove(field);
        hs(&value, "hs-current")
    };
    // HS256 "signed" with the RSA public key: the classic algorithm-confusion attack.
    let alg_switch = encode(
        &header(Algorithm::HS256, Some("rsa")),
        &c,
        &EncodingKey::from_secret(RSA_PUBLIC),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned(r#"{"alg":"none","typ":"JWT","kid":"hs-current"}"#, &c),
        ),
        (
            "alg none, no kid",
            unsigned(r#"{"alg":"none","typ":"JWT"}"#, &c),
        ),
        ("alg switch to HS256 with the RSA public key", alg_switch),
        (
            "expired",
            hs(
                &Claims {
                    exp: now - 60,
                    ..c.clone()
                },
                "hs-current",
            ),
        ),
        (
            "wrong audience",
            hs(
                &Claims {
                    aud: "someone-else".into(),
                    ..c.clone()
                },
                "hs-current",
            ),
        ),
        (
            "wrong issuer",
            hs(
                &Claims {
                    iss: "evil".into(),
                    ..c.clone()
                },
                "hs-current",
            ),
        ),
        ("missing exp", without("exp")),
        ("missing iss", without("iss")),
        ("missing aud", without("aud")),
        ("unknown kid", hs(&c, "nope")),
        (
            "no kid among several keys",
            encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap(),
        ),
        (
            "wrong key",
            encode(
                &header(Algorithm::HS256, Some("hs-current")),
                &c,
                &EncodingKey::from_secret(b"not-the-secret-not-the-secret-!!"),
            )
            .unwrap(),
        ),
        (
            "RS256 token for the EC key",
            encode(
                &header(Algorithm::RS256, Some("ec")),
                &c,
                &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            )
            .unwrap(),
        ),
        ("garbage", "not.a.jwt".into()),
        ("empty", String::new()),
    ];
    for (name, token) in cases {
        assert!(v.verify(&token).is_err(), "{name} was accepted");
    }
}

#[test]
fn leeway_is_small_and_honoured() {
    let v = verifier();
    let just_expired = hs(
        &Claims {
            exp: get_current_timestamp() - 2,
            ..claims()
        },
        "hs-current",
    );
    assert!(v.verify(&just_expired).is_ok(), "within the 5 s leeway");
    let long_expired = hs(
        &Claims {
            exp: get_current_timestamp() - 30,
            ..claims()
        },
        "hs-current",
    );
    assert!(v.verify(&long_expired).is_err());
}

#[tokio::test]
async fn single_use_and_call_bound_tokens() {
    let v = verifier();
    let once = hs(
        &Claims {
            jti: Some("abc".into()),
            call_sid: Some("CA1".into()),
            ..claims()
        },
        "hs-current",
    );
    assert_eq!(
        v.verify_for_call(&once, "CA2").unwrap_err(),
        AuthError::WrongCall
    );
    let fresh = hs(
        &Claims {
            jti: Some("def".into()),
            call_sid: Some("CA1".into()),
            ..claims()
        },
        "hs-current",
    );
    let claims = v.verify_for_call(&fresh, "CA1").unwrap();
    assert_eq!(v.spend(&claims).await, Ok(()));
    let again = v.verify_for_call(&fresh, "CA1").unwrap();
    assert_eq!(v.spend(&again).await.unwrap_err(), AuthError::Replayed);
    // A token without `jti` is not single-use.
    let reusable = v.verify(&hs(&claims_of_call("CA1"), "hs-current")).unwrap();
    assert_eq!(v.spend(&reusable).await, Ok(()));
    assert_eq!(v.spend(&reusable).await, Ok(()));
}

fn claims_of_call(call_sid: &str) -> Claims {
    Claims {
        call_sid: Some(call_sid.into()),
        ..claims()
    }
}

#[test]
fn twilio_reference_vectors() {
    // PROTOCOLS.md §2.2.
    assert_eq!(
        TwilioSignature::sign("12345", "wss://example.com/media"),
        "7PR3qMkpDyEJtMrVOY/LDyNq8J8="
    );
    assert_eq!(
        TwilioSignature::sign("12345", "wss://example.com/media/"),
        "T+WBXwUXC0/CyoZ1DA+p9ilZORs="
    );
    assert_eq!(
        TwilioSignature::sign("12345", "https://example.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212"),
        "L/OH5YylLD5NRKLltdqwSvS0BnU="
    );
}

#[test]
fn twilio_signature_variants() {
    let check = TwilioSignature::new(
        "wss://example.com/media",
        vec!["12345".into(), "rotated".into()],
    );
    for url in [
        "wss://example.com/media",
        "wss://example.com/media/",
        "wss://example.com:443/media",
        "wss://example.com:443/media/",
    ] {
        assert!(check.verify(&TwilioSignature::sign("12345", url)), "{url}");
    }
    assert!(
        check.verify(&TwilioSignature::sign("rotated", "wss://example.com/media")),
        "secondary token"
    );
    for (token, url) in [
        ("wrong", "wss://example.com/media"),
        ("12345", "https://example.com/media"),
        ("12345", "wss://evil.example/media"),
        ("12345", "wss://example.com/other"),
        ("12345", "wss://example.com:8443/media"),
    ] {
        assert!(
            !check.verify(&TwilioSignature::sign(token, url)),
            "{token} {url}"
        );
    }
    assert!(!check.verify("not base64!"));
    assert!(!check.verify(""));
}

fn request(headers: &[(&str, &str)], uri: &str) -> Request<()> {
    let mut builder = Request::builder().uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).unwrap()
}

#[test]
fn token_sources() {
    let verifier = Arc::new(verifier());
    let token = hs(&claims(), "hs-current");
    let strict = AuthMode::Jwt {
        verifier: verifier.clone(),
        sources: TokenSources::default(),
    };
    let bearer = format!("Bearer {token}");
    assert!(strict
        .authenticate(&request(&[("authorization", &bearer)], "/twilio"))
        .is_ok());
    let protocol = format!("callgate, {token}");
    assert!(strict
        .authenticate(&request(
            &[("sec-websocket-protocol", &protocol)],
            "/twilio"
        ))
        .is_ok());
    let in_query = format!("/twilio?token={token}");
    assert_eq!(
        strict.authenticate(&request(&[], &in_query)).unwrap_err(),
        AuthError::Missing,
        "query is opt-in"
    );
    let query = AuthMode::Jwt {
        verifier: verifier.clone(),
        sources: TokenSources {
            query: Some("token".into()),
            start: false,
        },
    };
    assert!(query.authenticate(&request(&[], &in_query)).is_ok());
    let start = AuthMode::Jwt {
        verifier: verifier.clone(),
        sources: TokenSources {
            query: None,
            start: true,
        },
    };
    let deferred = start.authenticate(&request(&[], "/twilio")).unwrap();
    assert!(deferred.admitted.start_token.is_some(), "deferred to start");
    let bad = start.authenticate(&request(&[("authorization", "Bearer x.y.z")], "/twilio"));
    assert!(bad.is_err(), "a bad header token is not excused by start");
}

#[test]
fn basic_and_allowlist() {
    let basic = AuthMode::Basic(Arc::new(BasicAuth::new("exotel", "s3cret")));
    let good = format!("Basic {}", B64.encode("exotel:s3cret"));
    let bad = format!("Basic {}", B64.encode("exotel:guess"));
    assert_eq!(
        basic
            .authenticate(&request(&[("authorization", &good)], "/"))
            .unwrap()
            .admitted
            .identity
            .subject
            .as_deref(),
        Some("exotel")
    );
    assert_eq!(
        basic
            .authenticate(&request(&[("authorization", &bad)], "/"))
            .unwrap_err(),
        AuthError::BadSignature
    );
    assert_eq!(
        basic.authenticate(&request(&[], "/")).unwrap_err(),
        AuthError::Missing
    );

    let allow = AuthMode::IpAllowlist(Arc::new(vec!["192.0.2.0/24".parse().unwrap()]));
    let mut inside = request(&[], "/");
    inside
        .extensions_mut()
        .insert(ClientIp("192.0.2.7".parse().unwrap()));
    assert!(allow.authenticate(&inside).is_ok());
    let mut outside = request(&[], "/");
    outside
        .extensions_mut()
        .insert(ClientIp("198.51.100.7".parse().unwrap()));
    assert_eq!(
        allow.authenticate(&outside).unwrap_err(),
        AuthError::Forbidden
    );
}
