//! Telling carriers apart, their names, and the simulator's messages decoded.

use super::twilio_family::{SMARTFLO_START, TWILIO_START};
use super::*;

#[test]
fn detection_recognises_each_opening() {
    use super::detect::{detect, Detection};
    let found = |json: &str| match detect(&Frame::text(json)) {
        Detection::Found(d) => Some(d),
        _ => None,
    };
    assert_eq!(
        found(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
        Some(Dialect::Twilio)
    );
    assert_eq!(found(TWILIO_START), Some(Dialect::Twilio));
    assert_eq!(found(SMARTFLO_START), Some(Dialect::Smartflo));
    assert_eq!(
        found(r#"{"event":"start","streamSid":"ST1","start":{"callSid":"CA1","streamSid":"ST1"}}"#),
        Some(Dialect::VendorStream)
    );
    assert_eq!(
        found(r#"{"event":"connected","protocol":"Exotel Media Stream","version":"1.0.0"}"#),
        Some(Dialect::Exotel)
    );
    assert_eq!(
        found(
            r#"{"event":"start","sequence_number":"1","stream_sid":"MZ","start":{"call_sid":"CA"}}"#
        ),
        Some(Dialect::Exotel)
    );
    assert_eq!(
        found(
            r#"{"event":"start","sequenceNumber":0,"start":{"mediaFormat":{"encoding":"ULAW","sampleRate":8000}}}"#
        ),
        Some(Dialect::Voximplant)
    );
    assert_eq!(
        found(
            r#"{"event":"start","sequenceNumber":1,"start":{"callId":"c","streamId":"s","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}}}"#
        ),
        Some(Dialect::Plivo)
    );
    assert_eq!(
        found(r#"{"event":"connected","version":"1.0.0"}"#),
        Some(Dialect::Telnyx)
    );
    assert_eq!(
        found(r#"{"event":"start","stream_id":"t","start":{"call_control_id":"v2"}}"#),
        Some(Dialect::Telnyx)
    );
    assert_eq!(
        detect(&Frame::text(r#"{"event":"connected"}"#)),
        Detection::NeedMore
    );
    for (garbage, says) in [
        ("hello", "not JSON"),
        (r#"{"foo":1}"#, "no event field"),
        (
            r#"{"event":"media","media":{"payload":"AA=="}}"#,
            "media before start",
        ),
        (r#"{"event":"start","start":{}}"#, "no known carrier"),
    ] {
        match detect(&Frame::text(garbage)) {
            Detection::Unknown(why) => assert!(why.contains(says), "{garbage}: {why}"),
            other => panic!("{garbage}: {other:?}"),
        }
    }
    assert!(
        matches!(detect(&Frame::Binary(vec![0].into())), Detection::Unknown(why) if why.contains("binary"))
    );
}

#[test]
fn names_round_trip_and_match_the_configuration() {
    for dialect in Dialect::ALL {
        assert_eq!(Dialect::from_name(dialect.name()), Some(dialect));
        let configured: Dialect =
            serde_json::from_value(serde_json::json!(dialect.name())).unwrap();
        assert_eq!(
            configured, dialect,
            "config and CLI spell {dialect:?} alike"
        );
    }
    assert_eq!(Dialect::from_name("Twilio"), None);
    assert_eq!(Dialect::from_name(""), None);
}

#[test]
fn every_message_the_simulator_sends_decodes_as_meant() {
    use super::messages::CarrierMessages;
    for dialect in Dialect::ALL {
        let says = CarrierMessages::new(dialect, "MZ0123456789abcdef0123456789abcdef")
            .with_parameters(serde_json::json!({"tenant": "acme"}));
        let text = |v: serde_json::Value| Frame::text(v.to_string());
        let name = dialect.name();
        if let Some(connected) = says.connected() {
            assert_eq!(
                dialect.decode(&text(connected)).unwrap().kind(),
                "connected"
            );
        }
        let Some(start) = says.start() else {
            assert_eq!(
                dialect,
                Dialect::RawAudio,
                "{name}: only raw audio has no start"
            );
            continue;
        };
        let Event::Start(start) = dialect.decode(&text(start)).unwrap() else {
            panic!("{name}: start is not a start");
        };
        assert_eq!(start.media_format, says.format, "{name}");
        assert_eq!(
            start.custom_parameters.get("tenant").map(String::as_str),
            Some("acme"),
            "{name}"
        );
        if dialect != Dialect::Voximplant {
            assert_eq!(start.call_sid, says.call_sid, "{name}");
        }
        let audio = vec![0xFF; says.format.bytes_per_ms() * 20];
        let Event::Media(media) = dialect
            .decode(&text(says.media(2, 1, &audio).unwrap()))
            .unwrap()
        else {
            panic!("{name}: media is not media");
        };
        assert_eq!(
            media.payload,
            Payload::Base64(BASE64.encode(&audio)),
            "{name}"
        );
        let Event::Mark(mark) = dialect.decode(&text(says.mark(3, "r1/end"))).unwrap() else {
            panic!("{name}: the mark echo is not a mark");
        };
        assert_eq!(mark.name, "r1/end", "{name}");
        let stop = says.stop(4).unwrap();
        assert_eq!(
            dialect.decode(&text(stop)).unwrap().kind(),
            "stop",
            "{name}"
        );
    }
}
