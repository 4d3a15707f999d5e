//! What each carrier sends on a call, built in one place: the `callgate call` simulator, the
//! integration tests and the dialect tests (which decode every message built here) all use
//! these builders. The messages follow PROTOCOLS.md; the dialect tests also decode the
//! documents' own examples verbatim, so a builder that drifted from the wire would show.

use serde_json::{json, Value};

use super::Dialect;
use crate::codec::{AudioFormat, BASE64};
use base64::Engine as _;

/// One call as a carrier announces it.
#[derive(Debug, Clone)]
pub struct CarrierMessages {
    /// Which carrier speaks.
    pub dialect: Dialect,
    /// The stream id (`streamSid`, `stream_id`, ...).
    pub stream_sid: String,
    /// The call id (`callSid`, `call_control_id`, ...).
    pub call_sid: String,
    /// The audio the carrier streams (Exotel announces its sample rate).
    pub format: AudioFormat,
    /// `start`'s custom parameters, a JSON object.
    pub custom_parameters: Value,
}

impl CarrierMessages {
    /// A call of `dialect` on stream `stream_sid`; the call id is the stream id with `CA` in
    /// place of its first two characters, the format the carrier's usual one.
    pub fn new(dialect: Dialect, stream_sid: &str) -> Self {
        let tail = stream_sid.get(2..).unwrap_or_default();
        Self {
            dialect,
            stream_sid: stream_sid.to_owned(),
            call_sid: format!("CA{tail}"),
            format: Self::usual_format(dialect),
            custom_parameters: json!({}),
        }
    }

    /// These messages with `start.customParameters` set to `params` (a JSON object).
    pub fn with_parameters(mut self, params: Value) -> Self {
        self.custom_parameters = params;
        self
    }

    /// The format a carrier streams by default: Exotel 16-bit PCM at 8 kHz, raw audio PCM16
    /// at 24 kHz, everyone else μ-law.
    pub fn usual_format(dialect: Dialect) -> AudioFormat {
        match dialect {
            Dialect::Exotel => AudioFormat::Pcm16 { rate: 8000 },
            Dialect::RawAudio => AudioFormat::Pcm16 { rate: 24000 },
            _ => AudioFormat::Mulaw,
        }
    }

    /// The `connected` greeting, for carriers that send one.
    pub fn connected(&self) -> Option<Value> {
        match self.dialect {
            Dialect::Twilio => {
                Some(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            }
            Dialect::Smartflo | Dialect::Exotel => Some(json!({"event": "connected"})),
            Dialect::Telnyx => Some(json!({"event": "connected", "version": "1.0.0"})),
            Dialect::VendorStream | Dialect::Voximplant | Dialect::RawAudio | Dialect::Plivo => {
                None
            }
        }
    }

    /// `start` (`None`: raw audio starts by connecting; its call id rides in the URL path).
    pub fn start(&self) -> Option<Value> {
        let (sid, call, params) = (&self.stream_sid, &self.call_sid, &self.custom_parameters);
        Some(match self.dialect {
            Dialect::Twilio => json!({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                "start": {"accountSid": "ACcallgate", "streamSid": sid, "callSid": call,
                "tracks": ["inbound"], "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
            Dialect::Smartflo => json!({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                "start": {"accountSid": "ACcallgate", "streamSid": sid, "callSid": call,
                "from": "0000000000", "to": "1111111111", "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "bitRate": 64, "bitDepth": 8}}}),
            Dialect::VendorStream => {
                json!({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                "start": {"callSid": call, "streamSid": sid, "accountSid": "ACcallgate",
                "tracks": "inbound", "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
            }
            Dialect::Exotel => json!({"event": "start", "sequence_number": "1", "stream_sid": sid,
                "start": {"stream_sid": sid, "call_sid": call, "account_sid": "ACcallgate",
                "from": "+910000000000", "to": "+911111111111", "custom_parameters": params,
                "media_format": {"encoding": "audio/x-raw",
                    "sample_rate": self.format.sample_rate().to_string(), "bit_rate": "16"}}}),
            Dialect::Voximplant => json!({"event": "start", "sequenceNumber": 0,
                "start": {"tag": "caller", "customParameters": params,
                "mediaFormat": {"encoding": "ULAW", "sampleRate": 8000}}}),
            Dialect::Plivo => json!({"event": "start", "sequenceNumber": 1,
                "start": {"callId": call, "streamId": sid, "accountId": "MAcallgate",
                "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
                // Plivo has no custom parameters; `<Stream extraHeaders>` carries them.
                "extra_headers": self.extra_headers()}),
            Dialect::Telnyx => json!({"event": "start", "sequence_number": "1", "stream_id": sid,
                "start": {"call_control_id": call, "call_session_id": call,
                "from": "+10000000000", "to": "+11111111111", "custom_parameters": params,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}),
            Dialect::RawAudio => return None,
        })
    }

    /// The custom parameters as Plivo's `extraHeaders`: `k=v;k=v`.
    fn extra_headers(&self) -> String {
        let Some(params) = self.custom_parameters.as_object() else {
            return String::new();
        };
        let pairs = params.iter().map(|(k, v)| match v {
            Value::String(v) => format!("{k}={v}"),
            v => format!("{k}={v}"),
        });
        pairs.collect::<Vec<_>>().join(";")
    }

    /// Media message `sequence` carrying frame `chunk` of caller `audio` (20 ms frames;
    /// `None`: raw audio sends binary frames).
    pub fn media(&self, sequence: u64, chunk: u64, audio: &[u8]) -> Option<Value> {
        self.media_base64(sequence, chunk, &BASE64.encode(audio))
    }

    /// [`Self::media`] with the payload already in base64 (or deliberately not).
    pub fn media_base64(&self, sequence: u64, chunk: u64, payload: &str) -> Option<Value> {
        let (sid, ts) = (&self.stream_sid, chunk * 20);
        Some(match self.dialect {
            Dialect::Twilio | Dialect::Smartflo | Dialect::VendorStream => {
                json!({"event": "media", "sequenceNumber": sequence.to_string(), "streamSid": sid,
                "media": {"track": "inbound", "chunk": chunk.to_string(), "timestamp": ts.to_string(), "payload": payload}})
            }
            Dialect::Exotel => {
                json!({"event": "media", "sequence_number": sequence.to_string(), "stream_sid": sid,
                "media": {"chunk": chunk.to_string(), "timestamp": ts.to_string(), "payload": payload}})
            }
            Dialect::Voximplant => json!({"event": "media", "sequenceNumber": chunk,
                "media": {"chunk": chunk, "timestamp": chunk * 160, "payload": payload}}),
            Dialect::Plivo => json!({"event": "media", "sequenceNumber": sequence, "streamId": sid,
                "media": {"track": "inbound", "timestamp": (1_700_000_000_000u64 + ts).to_string(),
                "chunk": chunk, "payload": payload}}),
            Dialect::Telnyx => {
                json!({"event": "media", "sequence_number": sequence.to_string(), "stream_id": sid,
                "media": {"track": "inbound", "chunk": chunk.to_string(), "timestamp": ts.to_string(), "payload": payload}})
            }
            Dialect::RawAudio => return None,
        })
    }

    /// The carrier's echo of a played mark.
    pub fn mark(&self, sequence: u64, name: &str) -> Value {
        let sid = &self.stream_sid;
        match self.dialect {
            Dialect::Exotel => json!({"event": "mark", "sequence_number": sequence.to_string(),
                "stream_sid": sid, "mark": {"name": name}}),
            Dialect::Plivo => json!({"event": "playedStream", "sequenceNumber": sequence,
                "streamId": sid, "name": name}),
            Dialect::Telnyx => json!({"event": "mark", "sequence_number": sequence.to_string(),
                "stream_id": sid, "mark": {"name": name}}),
            _ => json!({"event": "mark", "sequenceNumber": sequence.to_string(), "streamSid": sid,
                "mark": {"name": name}}),
        }
    }

    /// `stop` (`None`: raw audio hangs up by closing the socket).
    pub fn stop(&self, sequence: u64) -> Option<Value> {
        let (sid, call) = (&self.stream_sid, &self.call_sid);
        Some(match self.dialect {
            Dialect::Exotel => json!({"event": "stop", "sequence_number": sequence.to_string(),
                "stream_sid": sid, "stop": {"call_sid": call, "account_sid": "ACcallgate", "reason": "callended"}}),
            Dialect::Voximplant => json!({"event": "stop", "sequenceNumber": sequence,
                "stop": {"mediaInfo": {"bytesSent": 0, "duration": 0}}}),
            Dialect::Plivo => json!({"event": "stop", "sequenceNumber": sequence, "streamId": sid}),
            Dialect::Telnyx => json!({"event": "stop", "sequence_number": sequence.to_string(),
                "stream_id": sid, "stop": {"call_control_id": call}}),
            Dialect::RawAudio => return None,
            _ => json!({"event": "stop", "sequenceNumber": sequence.to_string(), "streamSid": sid,
                "stop": {"accountSid": "ACcallgate", "callSid": call}}),
        })
    }
}
