//! Exotel, Voximplant, Plivo, Telnyx and raw audio (PROTOCOLS.md §4–§6).

use super::*;

#[test]
fn other_carriers_protocol_examples_decode() {
    let cases: &[(Dialect, &str, &str)] = &[
        (Dialect::Exotel, r#"{"event": "connected"}"#, "connected"),
        (
            Dialect::Exotel,
            r#"{"event":"connected","protocol":"Exotel Media Stream","version":"1.0.0"}"#,
            "connected",
        ),
        (
            Dialect::Exotel,
            r#"{"event": "start", "sequence_number": "1", "stream_sid": "MZx", "start": {"stream_sid": "MZx", "call_sid": "CAx", "account_sid": "ACx", "from": "+919876543210", "to": "+918047491899", "custom_parameters": {"key1": "value1"}, "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}}"#,
            "start",
        ),
        (
            Dialect::Exotel,
            r#"{"event": "media", "sequence_number": "3", "stream_sid": "MZx", "media": {"chunk": "2", "timestamp": "200", "payload": "AAAA"}}"#,
            "media",
        ),
        (
            Dialect::Exotel,
            r#"{"event": "dtmf", "sequence_number": "7", "stream_sid": "MZx", "dtmf": {"digit": "5", "duration": "100"}}"#,
            "dtmf",
        ),
        (
            Dialect::Exotel,
            r#"{"event": "mark", "sequence_number": "15", "stream_sid": "MZx", "mark": {"name": "r1:i3:c17"}}"#,
            "mark",
        ),
        (
            Dialect::Exotel,
            r#"{"event": "stop", "sequence_number": "100", "stream_sid": "MZx", "stop": {"call_sid": "CAx", "account_sid": "ACx", "reason": "callended"}}"#,
            "stop",
        ),
        (
            Dialect::Voximplant,
            r#"{"event": "start", "sequenceNumber": 0, "start": {"mediaFormat": {"encoding": "PCM16", "sampleRate": 16000}}}"#,
            "start",
        ),
        (
            Dialect::Voximplant,
            r#"{"event": "start", "sequenceNumber": 0, "start": {"tag": "caller", "customParameters": {"callId": "12345"}, "mediaFormat": {"encoding": "ULAW", "sampleRate": 8000}}}"#,
            "start",
        ),
        (
            Dialect::Voximplant,
            r#"{"event": "media", "sequenceNumber": 1, "media": {"chunk": 1, "timestamp": 160, "payload": "AAAA"}}"#,
            "media",
        ),
        (
            Dialect::Voximplant,
            r#"{"event": "stop", "sequenceNumber": 42, "stop": {"mediaInfo": {"bytesSent": 64000, "duration": 8000}}}"#,
            "stop",
        ),
        (
            Dialect::Voximplant,
            r#"{"event": "gw.dtmf", "digit": "5"}"#,
            "dtmf",
        ),
        (Dialect::Voximplant, r#"{"event": "gw.hangup"}"#, "stop"),
        (
            Dialect::Plivo,
            r#"{"event": "start", "sequenceNumber": 1, "start": {"callId": "12345678-1234-1234-1234-123456789abc", "streamId": "87654321-4321-4321-4321-cba987654321", "accountId": "MAXXXXXXXXXXXXXXXXXX", "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, "extra_headers": "userId=12345;sessionId=abc-xyz"}"#,
            "start",
        ),
        (
            Dialect::Plivo,
            r#"{"event":"media","sequenceNumber":42,"streamId":"s1","media":{"track":"inbound","timestamp":"1705312200000","chunk":41,"payload":"AAAA"},"extra_headers":""}"#,
            "media",
        ),
        (
            Dialect::Plivo,
            r#"{"event":"playedStream","streamId":"s1","name":"cp1"}"#,
            "mark",
        ),
        (
            Dialect::Plivo,
            r#"{"event":"clearedAudio","streamId":"s1"}"#,
            "ack",
        ),
        (
            Dialect::Telnyx,
            r#"{"event":"connected","version":"1.0.0"}"#,
            "connected",
        ),
        (
            Dialect::Telnyx,
            r#"{"event":"start","sequence_number":"1","stream_id":"32DE0DEA-53CB-4B21-89A4-9E1819C043BC","start":{"user_id":"u","call_control_id":"v2:abc","call_session_id":"s","from":"+13122010094","to":"+13122123456","tags":["TAG1"],"client_state":"aGF2ZSBhIG5pY2UgZGF5ID1d","custom_parameters":{"customer_id":"customer_123"},"media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}}}"#,
            "start",
        ),
        (
            Dialect::Telnyx,
            r#"{"event":"media","sequence_number":"4","stream_id":"32DE","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AAAA"}}"#,
            "media",
        ),
    ];
    for (dialect, json, kind) in cases {
        let event = decode(*dialect, json).unwrap_or_else(|e| panic!("{dialect:?} {json}: {e}"));
        assert_eq!(event.kind(), *kind, "{json}");
    }
}

#[test]
fn exotel_formats_casing_and_fallbacks() {
    let rates = [("\"8000\"", 8000), ("16000", 16000), ("\"24000\"", 24000)];
    for (rate, expected) in rates {
        let json = format!(
            r#"{{"event":"start","stream_sid":"MZ1","start":{{"call_sid":"CA1","media_format":{{"encoding":"audio/x-raw","sample_rate":{rate}}}}}}}"#
        );
        let Event::Start(start) = decode(Dialect::Exotel, &json).unwrap() else {
            panic!()
        };
        assert_eq!(start.media_format, AudioFormat::Pcm16 { rate: expected });
    }
    // camelCase works as well as snake_case; "linear16" is the repo's name for the encoding.
    let camel = r#"{"event":"start","streamSid":"MZ1","sequenceNumber":1,"start":{"callSid":"CA1","mediaFormat":{"encoding":"linear16","sampleRate":16000}}}"#;
    let Event::Start(start) = decode(Dialect::Exotel, camel).unwrap() else {
        panic!()
    };
    assert_eq!(
        (start.stream_sid.as_str(), start.media_format),
        ("MZ1", AudioFormat::Pcm16 { rate: 16000 })
    );
    // The in-house Exotel integration's minimal messages (seeds/003): no stream_sid on media,
    // no media_format (8 kHz, or the ?sample-rate= hint), an empty stop.
    let minimal = r#"{"event":"start","start":{"stream_sid":"stream_id","call_sid":"call_id"}}"#;
    let Event::Start(start) = decode(Dialect::Exotel, minimal).unwrap() else {
        panic!()
    };
    assert_eq!(start.media_format, AudioFormat::Pcm16 { rate: 8000 });
    let hints = Hints {
        sample_rate: Some(24000),
        ..Default::default()
    };
    let Event::Start(start) = Dialect::Exotel
        .decode_with(&Frame::text(minimal), &hints)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(start.media_format, AudioFormat::Pcm16 { rate: 24000 });
    assert!(matches!(
        decode(
            Dialect::Exotel,
            r#"{"event":"media","media":{"payload":"AAAA","timestamp":"1"}}"#
        ),
        Ok(Event::Media(Media {
            stream_sid: None,
            ..
        }))
    ));
    assert!(matches!(
        decode(Dialect::Exotel, r#"{"event":"stop"}"#),
        Ok(Event::Stop(_))
    ));
}

#[test]
fn voximplant_encodings_and_ids() {
    for (encoding, rate, expected) in [
        ("ULAW", 8000, AudioFormat::Mulaw),
        ("ALAW", 8000, AudioFormat::Alaw),
        ("PCM8", 8000, AudioFormat::Pcm16 { rate: 8000 }),
        ("PCM16", 16000, AudioFormat::Pcm16 { rate: 16000 }),
        ("PCM16_8KHZ", 8000, AudioFormat::Pcm16 { rate: 8000 }),
    ] {
        let json = format!(
            r#"{{"event":"start","sequenceNumber":0,"start":{{"mediaFormat":{{"encoding":"{encoding}","sampleRate":{rate}}}}}}}"#
        );
        let Event::Start(start) = decode(Dialect::Voximplant, &json).unwrap() else {
            panic!()
        };
        assert_eq!(start.media_format, expected, "{encoding}");
    }
    let opus = r#"{"event":"start","sequenceNumber":0,"start":{"mediaFormat":{"encoding":"OPUS","sampleRate":48000}}}"#;
    assert_eq!(
        decode(Dialect::Voximplant, opus).unwrap_err().reason(),
        "unsupported_format"
    );
    // The call id comes from the path when the route has one.
    let hints = Hints {
        call_id: Some("call-9".into()),
        ..Default::default()
    };
    let json = r#"{"event":"start","sequenceNumber":0,"start":{"tag":"caller","mediaFormat":{"encoding":"ULAW","sampleRate":8000}}}"#;
    let Event::Start(start) = Dialect::Voximplant
        .decode_with(&Frame::text(json), &hints)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (start.call_sid.as_str(), start.stream_sid.as_str()),
        ("call-9", "call-9")
    );
}

#[test]
fn raw_audio_opens_with_its_path_id_and_takes_binary() {
    let hints = Hints {
        call_id: Some("abc".into()),
        ..Default::default()
    };
    assert!(Dialect::RawAudio.starts_on_open());
    let event = Dialect::RawAudio
        .decode_with(&Frame::Opened, &hints)
        .unwrap();
    let Event::Start(start) = event else {
        panic!("{event:?}")
    };
    assert_eq!(
        (start.call_sid.as_str(), start.media_format),
        ("abc", AudioFormat::Pcm16 { rate: 24000 })
    );
    let Event::Media(media) = Dialect::RawAudio
        .decode(&Frame::Binary(vec![1, 2, 3, 4].into()))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(media.payload, Payload::Raw(vec![1, 2, 3, 4].into()));
    // Other dialects refuse binary frames and are never sent the opening.
    assert_eq!(
        Dialect::Plivo
            .decode(&Frame::Binary(vec![1].into()))
            .unwrap_err()
            .reason(),
        "binary_frame"
    );
    assert!(Dialect::ALL
        .iter()
        .all(|d| d.starts_on_open() == (*d == Dialect::RawAudio)));
}

#[test]
fn plivo_and_telnyx_formats() {
    for (content, expected) in [
        ("audio/x-mulaw", AudioFormat::Mulaw),
        ("audio/x-l16;rate=16000", AudioFormat::Pcm16 { rate: 16000 }),
        ("audio/x-l16", AudioFormat::Pcm16 { rate: 8000 }),
    ] {
        let json = format!(
            r#"{{"event":"start","start":{{"callId":"c","streamId":"s","mediaFormat":{{"encoding":"{content}"}}}}}}"#
        );
        let Event::Start(start) = decode(Dialect::Plivo, &json).unwrap() else {
            panic!()
        };
        assert_eq!(start.media_format, expected, "{content}");
        assert_eq!(start.stream_sid, "s");
    }
    for (encoding, rate, expected) in [
        ("PCMU", 8000, AudioFormat::Mulaw),
        ("PCMA", 8000, AudioFormat::Alaw),
        ("L16", 16000, AudioFormat::Pcm16 { rate: 16000 }),
    ] {
        let json = format!(
            r#"{{"event":"start","stream_id":"t1","start":{{"call_control_id":"v2:x","media_format":{{"encoding":"{encoding}","sample_rate":{rate},"channels":1}}}}}}"#
        );
        let Event::Start(start) = decode(Dialect::Telnyx, &json).unwrap() else {
            panic!()
        };
        assert_eq!(start.media_format, expected);
        assert_eq!(
            (start.stream_sid.as_str(), start.call_sid.as_str()),
            ("t1", "v2:x")
        );
    }
    let Event::Media(media) = decode(Dialect::Telnyx, r#"{"event":"media","sequence_number":"9","stream_id":"t1","media":{"chunk":7,"payload":"AAAA"}}"#).unwrap() else { panic!() };
    assert_eq!((media.sequence, media.chunk), (Some(9), Some(7)));
}

#[test]
fn exotel_accepts_every_label_it_really_sends() {
    let start = |format: &str| {
        let json = format!(
            r#"{{"event":"start","stream_sid":"MZ1","start":{{"call_sid":"CA1","media_format":{format}}}}}"#
        );
        match decode(Dialect::Exotel, &json) {
            Ok(Event::Start(start)) => start.media_format,
            other => panic!("{format}: {other:?}"),
        }
    };
    let pcm8 = AudioFormat::Pcm16 { rate: 8000 };
    assert_eq!(
        start(r#"{"encoding":"audio/x-raw","sample_rate":"8000Hz"}"#),
        pcm8
    );
    assert_eq!(
        start(r#"{"encoding":"audio/x-raw","sample_rate":"16 kHz"}"#),
        AudioFormat::Pcm16 { rate: 16000 }
    );
    assert_eq!(
        start(r#"{"encoding":"audio/x-mulaw","sample_rate":8000}"#),
        AudioFormat::Mulaw
    );
    assert_eq!(start(r#"{"encoding":"audio/L16;rate=8000"}"#), pcm8);
    assert_eq!(
        start(r#"{"encoding":"base64","bit_rate":"128kbps","sample_rate":"8000"}"#),
        pcm8
    );
    assert_eq!(
        start(r#"{"encoding":"base64","bit_rate":"256kbps"}"#),
        AudioFormat::Pcm16 { rate: 16000 }
    );
    // Never refused over a label: the default, with a warning and a counter.
    assert_eq!(
        start(r#"{"encoding":"audio/something-new","sample_rate":"8000Hz"}"#),
        pcm8
    );
    assert_eq!(
        start(r#"{"encoding":"audio/x-raw","sample_rate":11025}"#),
        pcm8
    );
}

#[test]
fn the_outbound_track_never_becomes_caller_audio() {
    for (dialect, json) in [
        (Dialect::Twilio, format!(r#"{{"event":"media","streamSid":"{SID}","media":{{"track":"outbound","chunk":"2","timestamp":"20","payload":"AAAA"}}}}"#)),
        (Dialect::Telnyx, r#"{"event":"media","sequence_number":"4","stream_id":"s","media":{"track":"outbound","chunk":"2","timestamp":"20","payload":"AAAA"}}"#.to_owned()),
        (Dialect::Exotel, r#"{"event":"media","stream_sid":"s","media":{"track":"outbound_track","payload":"AAAA"}}"#.to_owned()),
    ] {
        assert!(matches!(decode(dialect, &json), Ok(Event::Ack(_))), "{dialect:?}");
        let inbound = json.replace("outbound", "inbound");
        assert!(matches!(decode(dialect, &inbound), Ok(Event::Media(_))), "{dialect:?}");
    }
}

#[test]
fn plivo_extra_headers_and_telnyx_client_state_become_custom_parameters() {
    let plivo = r#"{"event": "start", "sequenceNumber": 1, "start": {"callId": "c1", "streamId": "s1", "accountId": "MA1", "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, "extra_headers": "profile=sales;tenant=acme;token=abc"}"#;
    let Ok(Event::Start(start)) = decode(Dialect::Plivo, plivo) else {
        panic!()
    };
    assert_eq!(start.custom_parameters["profile"], "sales");
    assert_eq!(start.custom_parameters["token"], "abc");
    let state = BASE64.encode(r#"{"profile":"support","tenant":"acme"}"#);
    let telnyx = format!(
        r#"{{"event":"start","sequence_number":"1","stream_id":"s","start":{{"call_control_id":"v2:c","client_state":"{state}","custom_parameters":{{"tenant":"explicit"}},"media_format":{{"encoding":"PCMU","sample_rate":8000,"channels":1}}}}}}"#
    );
    let Ok(Event::Start(start)) = decode(Dialect::Telnyx, &telnyx) else {
        panic!()
    };
    assert_eq!(start.custom_parameters["profile"], "support");
    assert_eq!(
        start.custom_parameters["tenant"], "explicit",
        "explicit parameters win"
    );
    let pairs = BASE64.encode("profile=billing");
    let telnyx = telnyx.replace(&state, &pairs);
    let Ok(Event::Start(start)) = decode(Dialect::Telnyx, &telnyx) else {
        panic!()
    };
    assert_eq!(start.custom_parameters["profile"], "billing");
}

#[test]
fn exotel_outbound_framing() {
    // 8 kHz: at least 3200 bytes, multiples of 320, first chunk as soon as complete.
    let mut writer = Writer::new(Dialect::Exotel, "MZ1", AudioFormat::Pcm16 { rate: 8000 });
    let out = write_all(
        &mut writer,
        &[
            audio(0x11, 3000),
            audio(0x11, 500),
            audio(0x11, 100),
            Outbound::Mark { name: "m".into() },
            Outbound::Clear,
        ],
    );
    let media: Vec<&serde_json::Value> = out.iter().filter(|m| m["event"] == "media").collect();
    // 3000 held; 3500 → 3200 out (300 held); 400 held; the mark pads the tail to 3200.
    assert_eq!(sizes(&out), [3200, 3200]);
    let tail = &payloads(&out)[1];
    assert!(
        tail[..400].iter().all(|&b| b == 0x11) && tail[400..].iter().all(|&b| b == 0),
        "zero padded"
    );
    assert_eq!(media[0]["stream_sid"], "MZ1");
    assert_eq!(media[0]["sequence_number"], "1");
    assert_eq!(media[0]["media"]["chunk"], "1");
    assert_eq!(media[1]["media"]["timestamp"], "200");
    let mark = out.iter().find(|m| m["event"] == "mark").unwrap();
    assert_eq!(mark["mark"]["name"], "m");
    assert_eq!(
        out.last().unwrap(),
        &serde_json::json!({"event": "clear", "stream_sid": "MZ1"})
    );
    // 24 kHz scales: 100 ms = 4800 bytes... ×2 for 16-bit = 9600, multiples of 960.
    let mut writer = Writer::new(Dialect::Exotel, "MZ1", AudioFormat::Pcm16 { rate: 24000 });
    let out = write_all(
        &mut writer,
        &[audio(0x11, 10_000), Outbound::Mark { name: "m".into() }],
    );
    assert_eq!(sizes(&out), [9600, 9600]);
}

#[test]
fn plivo_telnyx_voximplant_outbound() {
    let mut plivo = Writer::new(Dialect::Plivo, "s1", AudioFormat::Mulaw);
    let out = write_all(
        &mut plivo,
        &[
            Outbound::Media {
                audio: Bytes::from_static(&[0, 0, 0]),
            },
            Outbound::Mark { name: "cp".into() },
            Outbound::Clear,
        ],
    );
    assert_eq!(
        out[0],
        serde_json::json!({"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "AAAA"}})
    );
    assert_eq!(
        out[1],
        serde_json::json!({"event": "checkpoint", "streamId": "s1", "name": "cp"})
    );
    assert_eq!(
        out[2],
        serde_json::json!({"event": "clearAudio", "streamId": "s1"})
    );

    let mut telnyx = Writer::new(Dialect::Telnyx, "t1", AudioFormat::Mulaw);
    let out = write_all(
        &mut telnyx,
        &[
            audio(1, 200),
            Outbound::Mark { name: "m".into() },
            Outbound::Clear,
        ],
    );
    assert_eq!(sizes(&out), [160, 160], "20 ms multiples, tail padded");
    assert_eq!(out[0]["stream_id"], "t1");
    assert_eq!(
        out.last().unwrap(),
        &serde_json::json!({"event": "clear", "stream_id": "t1"})
    );

    let mut vox = Writer::new(Dialect::Voximplant, "call-1", AudioFormat::Mulaw);
    let out = write_all(
        &mut vox,
        &[
            audio(1, 160),
            audio(2, 160),
            Outbound::Mark {
                name: "no marks on this wire".into(),
            },
            Outbound::Clear,
            audio(3, 160),
        ],
    );
    let events: Vec<&str> = out.iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["start", "media", "media", "stop", "gw.clear", "start", "media"]
    );
    assert_eq!(
        out[0]["start"]["mediaFormat"],
        serde_json::json!({"encoding": "ULAW", "sampleRate": 8000})
    );
    assert_eq!(
        out[2]["media"]["timestamp"], 160,
        "timestamps count samples"
    );
    assert_eq!(
        vox.hangup().unwrap().as_text(),
        Some(r#"{"event":"gw.hangup"}"#)
    );
}
