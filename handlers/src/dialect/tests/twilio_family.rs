//! Twilio, Smartflo and the in-house vendor stream (PROTOCOLS.md §2–§3).

use super::*;

// Every example message of PROTOCOLS.md §2.3 and §3.1, verbatim.
pub(super) const TWILIO_START: &str = r#"{"event": "start", "sequenceNumber": "1", "start": {"accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, "customParameters": {"tenant": "acme", "agent": "support-en"}}, "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#;
pub(super) const SMARTFLO_START: &str = r#"{"event": "start", "sequenceNumber": "1", "start": {"accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "from": "XXXXXXXXXX", "to": "XXXXXXXXXX", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "bitRate": 64, "bitDepth": 8}, "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}}, "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#;

#[test]
fn protocol_examples_decode() {
    let cases: &[(Dialect, &str, &str)] = &[
        (
            Dialect::Twilio,
            r#"{"event": "connected", "protocol": "Call", "version": "1.0.0"}"#,
            "connected",
        ),
        (Dialect::Twilio, TWILIO_START, "start"),
        (
            Dialect::Twilio,
            r#"{"event": "media", "sequenceNumber": "4", "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzS"}, "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#,
            "media",
        ),
        (
            Dialect::Twilio,
            r#"{"event": "dtmf", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}"#,
            "dtmf",
        ),
        (
            Dialect::Twilio,
            r#"{"event": "mark", "sequenceNumber": "4", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "mark": {"name": "r1:i3:c17"}}"#,
            "mark",
        ),
        (
            Dialect::Twilio,
            r#"{"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}, "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#,
            "stop",
        ),
        (Dialect::Smartflo, r#"{"event": "connected"}"#, "connected"),
        (Dialect::Smartflo, SMARTFLO_START, "start"),
        (
            Dialect::Smartflo,
            r#"{"event": "media", "sequenceNumber": "3", "media": {"chunk": "1", "timestamp": "5", "payload": "no+JhoaJjpz="}, "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#,
            "media",
        ),
        (
            Dialect::Smartflo,
            r#"{"event": "dtmf", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "sequenceNumber": "5", "dtmf": {"digit": "1"}}"#,
            "dtmf",
        ),
        (
            Dialect::Smartflo,
            r#"{"event": "mark", "sequenceNumber": "4", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "mark": {"name": "mark label"}}"#,
            "mark",
        ),
        (
            Dialect::Smartflo,
            r#"{"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "reason": "The caller disconnected the call"}, "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}"#,
            "stop",
        ),
    ];
    for (dialect, json, kind) in cases {
        let event = decode(*dialect, json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(event.kind(), *kind, "{json}");
    }
}

#[test]
fn twilio_start_fields() {
    let Event::Start(start) = decode(Dialect::Twilio, TWILIO_START).unwrap() else {
        panic!()
    };
    assert_eq!(start.stream_sid, SID);
    assert_eq!(start.call_sid, "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
    assert_eq!(start.tracks, ["inbound"]);
    assert_eq!(start.media_format, AudioFormat::Mulaw);
    assert_eq!(start.custom_parameters["tenant"], "acme");
}

#[test]
fn smartflo_start_reads_numbers_nested_or_top_level() {
    let Event::Start(start) = decode(Dialect::Smartflo, SMARTFLO_START).unwrap() else {
        panic!()
    };
    assert_eq!(start.from.as_deref(), Some("XXXXXXXXXX"));
    assert_eq!(start.custom_parameters["FirstName"], "Jane");
    let top_level = r#"{"event":"start","from":"111","to":"222","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},"streamSid":"MZ1"}"#;
    let Event::Start(start) = decode(Dialect::Smartflo, top_level).unwrap() else {
        panic!()
    };
    assert_eq!(
        (start.from.as_deref(), start.to.as_deref()),
        (Some("111"), Some("222"))
    );
}

#[test]
fn vendor_stream_accepts_the_in_house_test_client() {
    // The in-house integration's own test client (seeds/000): only callSid and streamSid.
    let minimal = r#"{"event":"start","sequenceNumber":"1","streamSid":"ST_TEST_123","start":{"callSid":"CA_TEST_123","streamSid":"ST_TEST_123"}}"#;
    let Event::Start(start) = decode(Dialect::VendorStream, minimal).unwrap() else {
        panic!()
    };
    assert_eq!(start.media_format, AudioFormat::Mulaw);
    assert!(start.account_sid.is_none());
    // Its documented flow: `tracks` as a string.
    let documented = r#"{"event":"start","sequenceNumber":"1","streamSid":"ST123456789","start":{"callSid":"CA123456789","streamSid":"ST123456789","accountSid":"AC123456789","tracks":"inbound","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
    let Event::Start(start) = decode(Dialect::VendorStream, documented).unwrap() else {
        panic!()
    };
    assert_eq!(start.tracks, ["inbound"]);
    // The same minimal start is missing required fields for the real carriers.
    assert!(matches!(
        decode(Dialect::Twilio, minimal),
        Err(DecodeError::Missing("start.accountSid"))
    ));
    // Its dtmf carries a `track` and its stop a nested streamSid: both ignored.
    let dtmf = r#"{"event":"dtmf","sequenceNumber":"10","streamSid":"ST123456789","dtmf":{"digit":"1","track":"inbound"}}"#;
    assert!(matches!(
        decode(Dialect::VendorStream, dtmf),
        Ok(Event::Dtmf(Dtmf { digit: '1', .. }))
    ));
    let stop = r#"{"event":"stop","sequenceNumber":"999","streamSid":"ST123456789","stop":{"callSid":"CA123456789","streamSid":"ST123456789"}}"#;
    assert!(matches!(
        decode(Dialect::VendorStream, stop),
        Ok(Event::Stop(_))
    ));
}

#[test]
fn counters_accept_strings_and_numbers() {
    for chunk in [r#""7""#, "7", "7.0"] {
        let json = format!(
            r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"/w==","chunk":{chunk},"timestamp":"40"}}}}"#
        );
        let Event::Media(media) = decode(Dialect::Twilio, &json).unwrap() else {
            panic!()
        };
        assert_eq!((media.chunk, media.timestamp), (Some(7), Some(40)));
    }
    let bad = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/w==","chunk":"seven"}}"#;
    assert!(matches!(
        decode(Dialect::Twilio, bad),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn escaped_payloads_and_unknown_fields_are_fine() {
    let json = r#"{"event":"media","streamSid":"MZ1","extra":{"a":1},"media":{"payload":"ab\/c","future":true}}"#;
    let Event::Media(media) = decode(Dialect::Twilio, json).unwrap() else {
        panic!()
    };
    assert_eq!(media.payload, Payload::Base64("ab/c".into()));
}

#[test]
fn bad_input_is_rejected_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("not json", "invalid_json"),
        (r#"{"sequenceNumber":"1"}"#, "invalid_json"),
        (
            r#"{"event":"media","media":{"payload":"/w=="}}"#,
            "missing_field",
        ),
        (r#"{"event":"media","streamSid":"MZ1"}"#, "missing_field"),
        (
            r#"{"event":"media","streamSid":"MZ1","media":{}}"#,
            "missing_field",
        ),
        (
            r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"12"}}"#,
            "invalid_digit",
        ),
        (
            r#"{"event":"mark","streamSid":"MZ1","mark":{}}"#,
            "missing_field",
        ),
        (
            r#"{"event":"start","streamSid":"MZ2","start":{"accountSid":"AC","streamSid":"MZ1","callSid":"CA","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}}}"#,
            "stream_sid_mismatch",
        ),
        (
            r#"{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC","streamSid":"MZ1","callSid":"CA","mediaFormat":{"encoding":"audio/L16","sampleRate":16000}}}"#,
            "unsupported_format",
        ),
        (
            r#"{"event":"start","streamSid":"MZ1","start":{"accountSid":"AC","streamSid":"MZ1","callSid":"CA"}}"#,
            "missing_field",
        ),
    ];
    for (json, reason) in cases {
        let err = decode(Dialect::Twilio, json).expect_err(json);
        assert_eq!(err.reason(), *reason, "{json}: {err}");
    }
    let err = Dialect::Twilio
        .decode(&Frame::Binary(vec![1, 2, 3].into()))
        .unwrap_err();
    assert_eq!(err.reason(), "binary_frame");
}

#[test]
fn unknown_events_are_not_errors() {
    let event = decode(
        Dialect::Twilio,
        r#"{"event":"futureThing","streamSid":"MZ1"}"#,
    )
    .unwrap();
    assert_eq!(event, Event::Unknown("futureThing".into()));
}

#[test]
fn twilio_outbound_passes_payloads_through() {
    let mut writer = Writer::new(Dialect::Twilio, "MZ1", AudioFormat::Mulaw);
    let out = write_all(
        &mut writer,
        &[
            Outbound::Media {
                audio: Bytes::from_static(&[0, 1, 2]),
            },
            Outbound::Mark { name: "m1".into() },
            Outbound::Clear,
        ],
    );
    assert_eq!(
        out[0],
        serde_json::json!({"event":"media","streamSid":"MZ1","media":{"payload":"AAEC"}})
    );
    assert_eq!(
        out[1],
        serde_json::json!({"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}})
    );
    assert_eq!(
        out[2],
        serde_json::json!({"event":"clear","streamSid":"MZ1"})
    );
}

#[test]
fn smartflo_outbound_uses_160_byte_multiples_and_numeric_chunks() {
    let mut writer = Writer::new(Dialect::Smartflo, "MZ1", AudioFormat::Mulaw);
    let out = write_all(
        &mut writer,
        &[
            audio(0x11, 100),
            audio(0x11, 300),
            audio(0x11, 10),
            Outbound::Mark { name: "end".into() },
        ],
    );
    // 100 → nothing yet; +300 = 400 → 320 out, 80 held; +10 = 90 held; mark pads to 160.
    assert_eq!(sizes(&out), [320, 160]);
    let last = &payloads(&out)[1];
    assert!(last[..90].iter().all(|&b| b == 0x11) && last[90..].iter().all(|&b| b == 0xFF));
    assert_eq!(out[0]["media"]["chunk"], 1);
    assert_eq!(out[1]["media"]["chunk"], 2);
    assert_eq!(out[2]["event"], "mark");
    assert!(out[0].get("sequenceNumber").is_none());
}

#[test]
fn vendor_stream_outbound_numbers_messages() {
    let mut writer = Writer::new(Dialect::VendorStream, "ST1", AudioFormat::Mulaw);
    let out = write_all(
        &mut writer,
        &[
            audio(0, 160),
            Outbound::Mark {
                name: "done".into(),
            },
        ],
    );
    assert_eq!(out[0]["sequenceNumber"], 1);
    assert_eq!(out[1]["sequenceNumber"], 2);
    assert_eq!(out[1]["mark"]["name"], "done");
}

#[test]
fn clear_drops_held_audio() {
    let mut writer = Writer::new(Dialect::Smartflo, "MZ1", AudioFormat::Mulaw);
    let out = write_all(
        &mut writer,
        &[
            audio(1, 50),
            Outbound::Clear,
            Outbound::Mark { name: "m".into() },
        ],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["event"], "clear");
    assert_eq!(out[1]["event"], "mark");
}
