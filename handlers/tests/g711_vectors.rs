//! The codec against the reference vectors in tests/fixtures/g711-vectors.json: all 256
//! decode codes of both laws, and the encode table.

use callgate_handlers::codec::g711::{alaw_decode, alaw_encode, mulaw_decode, mulaw_encode};
use serde_json::Value;

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/g711-vectors.json");
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn every_decode_code_matches() {
    let v = vectors();
    for (law, decode) in [
        ("mulaw_decode", mulaw_decode as fn(u8) -> i16),
        ("alaw_decode", alaw_decode),
    ] {
        let table = v[law].as_array().unwrap();
        assert_eq!(table.len(), 256, "{law}");
        for (code, expected) in table.iter().enumerate() {
            assert_eq!(
                decode(code as u8) as i64,
                expected.as_i64().unwrap(),
                "{law} code {code:#04x}"
            );
        }
    }
}

/// The fixture's encode table comes from CPython's `audioop`, whose μ-law encoder shifts
/// before taking the magnitude and so rounds some negative inputs away from zero
/// (PROTOCOLS.md §9.4). callgate follows the gateway rule there: the 16-bit magnitude-first
/// encoder. At the three table entries where the two references disagree we assert the
/// magnitude-first code, and that it is the nearer one.
const MULAW_AUDIOOP_DISAGREES: &[(i16, u8)] = &[(-33, 0x7B), (-2, 0x7F), (-1, 0x7F)];

#[test]
fn encode_table_matches() {
    let v = vectors();
    for (law, encode, decode) in [
        (
            "mulaw_encode",
            mulaw_encode as fn(i16) -> u8,
            mulaw_decode as fn(u8) -> i16,
        ),
        ("alaw_encode", alaw_encode, alaw_decode),
    ] {
        let table = v[law].as_array().unwrap();
        assert!(table.len() > 30, "{law}");
        let mut disagreements = 0;
        for pair in table {
            let input = pair[0].as_i64().unwrap() as i16;
            let audioop = pair[1].as_i64().unwrap() as u8;
            let ours = encode(input);
            match MULAW_AUDIOOP_DISAGREES
                .iter()
                .find(|(i, _)| law == "mulaw_encode" && *i == input)
            {
                Some(&(_, expected)) => {
                    disagreements += 1;
                    assert_eq!(ours, expected, "{law}({input})");
                    let error = |code: u8| (decode(code) as i32 - input as i32).abs();
                    assert!(
                        error(ours) <= error(audioop),
                        "{law}({input}): ours is not the nearer code"
                    );
                }
                None => assert_eq!(ours, audioop, "{law}({input})"),
            }
        }
        if law == "mulaw_encode" {
            assert_eq!(
                disagreements,
                MULAW_AUDIOOP_DISAGREES.len(),
                "the table changed; re-check §9.4"
            );
        }
    }
}
