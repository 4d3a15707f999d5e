//! Outbound: [`Outbound`] messages → carrier frames, with each carrier's framing rules.

use base64::Engine as _;
use bytes::Bytes;

use super::Dialect;
use crate::codec::{AudioFormat, BASE64};
use crate::event::Outbound;

/// One frame for the carrier socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// A JSON text frame.
    Text(String),
    /// A binary frame (raw audio).
    Binary(Bytes),
}

impl OutFrame {
    /// The text, for text frames.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            Self::Binary(_) => None,
        }
    }
}

/// How a carrier wants outbound audio cut, in payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Payload sizes are a multiple of this (1: any size).
    pub multiple: usize,
    /// Smallest payload worth sending (the rest waits, or is padded at the end of audio).
    pub min: usize,
    /// Largest payload in one message.
    pub max: usize,
}

impl Dialect {
    /// The framing rule of this carrier's outbound audio in `format`.
    pub fn framing(self, format: AudioFormat) -> Framing {
        let frame_20ms = format.bytes_per_ms() * 20;
        let (multiple, min, max) = match self {
            Dialect::Twilio | Dialect::Plivo | Dialect::Voximplant | Dialect::RawAudio => {
                (1, 1, usize::MAX)
            }
            // Smartflo: multiples of 160 bytes of μ-law (PROTOCOLS.md §3.2).
            Dialect::Smartflo | Dialect::VendorStream => (frame_20ms, frame_20ms, usize::MAX),
            // Exotel: at least 3200 bytes and at most 100 KB, in multiples of 320 bytes at
            // 8 kHz, scaled with the rate (§4.2). Exotel calls 3.2 KB "100 ms"; at 16-bit
            // 8 kHz it is 200 ms. The byte rule is what its player enforces, so we keep it.
            Dialect::Exotel => (
                frame_20ms,
                frame_20ms * 10,
                100_000 / frame_20ms * frame_20ms,
            ),
            // Telnyx RTP mode: 20 ms to 30 s per chunk (§6.2).
            Dialect::Telnyx => (frame_20ms, frame_20ms, format.bytes_per_ms() * 30_000),
        };
        Framing { multiple, min, max }
    }
}

/// Encodes one call's outbound messages: its stream id, counters and framing rules.
#[derive(Debug)]
pub struct Writer {
    dialect: Dialect,
    format: AudioFormat,
    /// The stream id as a JSON string literal (quotes and escaping included).
    sid: String,
    /// Payload sizes must be a multiple of this many bytes (1: any size).
    multiple: usize,
    /// Smallest payload worth sending (the rest waits, or is padded at the end of audio).
    min: usize,
    /// Largest payload in one message.
    max: usize,
    chunk: u64,
    sequence: u64,
    /// Audio bytes sent so far (timestamps).
    sent_bytes: u64,
    /// Voximplant: a playback stream is open (our `start` was sent).
    stream_open: bool,
    /// Audio waiting to fill a whole frame (carriers with a framing rule).
    pending: Vec<u8>,
}

impl Writer {
    /// A writer for one call whose carrier-side audio is `format`.
    pub fn new(dialect: Dialect, stream_sid: impl Into<String>, format: AudioFormat) -> Self {
        let Framing { multiple, min, max } = dialect.framing(format);
        Self {
            dialect,
            format,
            sid: serde_json::to_string(&stream_sid.into()).expect("a string always serializes"),
            multiple,
            min,
            max,
            chunk: 0,
            sequence: 0,
            sent_bytes: 0,
            stream_open: false,
            pending: Vec::new(),
        }
    }

    /// Appends the frames for `message` to `frames`.
    pub fn write(&mut self, message: &Outbound, frames: &mut Vec<OutFrame>) {
        match message {
            // Binary frames of any size: the bytes go out as they are.
            Outbound::Media { audio } if self.dialect == Dialect::RawAudio => {
                self.sent_bytes += audio.len() as u64;
                frames.push(OutFrame::Binary(audio.clone()));
            }
            // Any size, JSON: one message per piece.
            Outbound::Media { audio } if self.multiple == 1 => {
                let payload = BASE64.encode(audio);
                self.media(&payload, audio.len(), frames);
            }
            Outbound::Media { audio } => {
                self.pending.extend_from_slice(audio);
                while self.pending.len() >= self.min {
                    let whole = (self.pending.len() / self.multiple * self.multiple).min(self.max);
                    self.emit_pending(whole, frames);
                }
            }
            Outbound::Mark { name } => {
                // A mark closes a stretch of audio: the tail goes out padded with silence so
                // it plays before the mark and still obeys the framing rule.
                if !self.pending.is_empty() {
                    let padded = self.pending.len().div_ceil(self.multiple) * self.multiple;
                    self.pending
                        .resize(padded.max(self.min), self.format.silence_byte());
                    while !self.pending.is_empty() {
                        let take = self.pending.len().min(self.max);
                        self.emit_pending(take, frames);
                    }
                }
                if self.dialect.has_marks() {
                    self.sequence += 1;
                    let name = serde_json::to_string(name).expect("a string always serializes");
                    frames.push(OutFrame::Text(match self.dialect {
                        Dialect::Exotel => format!(r#"{{"event":"mark","stream_sid":{},"sequence_number":"{}","mark":{{"name":{name}}}}}"#, self.sid, self.sequence),
                        Dialect::Plivo => format!(r#"{{"event":"checkpoint","streamId":{},"name":{name}}}"#, self.sid),
                        Dialect::Telnyx => format!(r#"{{"event":"mark","stream_id":{},"mark":{{"name":{name}}}}}"#, self.sid),
                        Dialect::VendorStream => format!(r#"{{"event":"mark","sequenceNumber":{},"streamSid":{},"mark":{{"name":{name}}}}}"#, self.sequence, self.sid),
                        _ => format!(r#"{{"event":"mark","streamSid":{},"mark":{{"name":{name}}}}}"#, self.sid),
                    }));
                }
            }
            Outbound::Clear => {
                self.pending.clear();
                let sid = &self.sid;
                match self.dialect {
                    Dialect::Exotel => frames.push(OutFrame::Text(format!(
                        r#"{{"event":"clear","stream_sid":{sid}}}"#
                    ))),
                    Dialect::Plivo => frames.push(OutFrame::Text(format!(
                        r#"{{"event":"clearAudio","streamId":{sid}}}"#
                    ))),
                    Dialect::Telnyx => frames.push(OutFrame::Text(format!(
                        r#"{{"event":"clear","stream_id":{sid}}}"#
                    ))),
                    Dialect::Voximplant => {
                        // Our scenario calls ws.clearMediaBuffer(); the next audio opens a new
                        // playback stream with its own `start`.
                        if self.stream_open {
                            self.sequence += 1;
                            frames.push(OutFrame::Text(format!(
                                r#"{{"event":"stop","sequenceNumber":{}}}"#,
                                self.sequence
                            )));
                            self.stream_open = false;
                        }
                        frames.push(OutFrame::Text(r#"{"event":"gw.clear"}"#.to_owned()));
                    }
                    // The in-house raw-audio protocol has no control messages.
                    Dialect::RawAudio => {}
                    _ => frames.push(OutFrame::Text(format!(
                        r#"{{"event":"clear","streamSid":{sid}}}"#
                    ))),
                }
            }
        }
    }

    /// DTMF digits for the far end, where the stream can carry them: Plivo's `sendDTMF`,
    /// our Voximplant scenario's `gw.send_dtmf`.
    pub fn send_dtmf(&self, digits: &str) -> Option<OutFrame> {
        let digits = serde_json::to_string(digits).expect("a string always serializes");
        match self.dialect {
            Dialect::Plivo => Some(format!(r#"{{"event":"sendDTMF","dtmf":{digits}}}"#)),
            Dialect::Voximplant => Some(format!(r#"{{"event":"gw.send_dtmf","digits":{digits}}}"#)),
            _ => None,
        }
        .map(OutFrame::Text)
    }

    /// Our Voximplant scenario's transfer message: it dials `number` and bridges the caller.
    pub fn transfer(&self, number: &str) -> Option<OutFrame> {
        let number = serde_json::to_string(number).expect("a string always serializes");
        (self.dialect == Dialect::Voximplant)
            .then(|| OutFrame::Text(format!(r#"{{"event":"gw.transfer","number":{number}}}"#)))
    }

    /// The Voximplant scenario's hang-up message (`end_call`), where the dialect has one.
    pub fn hangup(&self) -> Option<OutFrame> {
        (self.dialect == Dialect::Voximplant)
            .then(|| OutFrame::Text(r#"{"event":"gw.hangup"}"#.to_owned()))
    }

    /// One media message of the first `len` pending bytes.
    fn emit_pending(&mut self, len: usize, frames: &mut Vec<OutFrame>) {
        let payload = BASE64.encode(&self.pending[..len]);
        self.pending.drain(..len);
        self.media(&payload, len, frames);
    }

    /// One media message for `payload` (base64 of `bytes` bytes).
    fn media(&mut self, payload: &str, bytes: usize, frames: &mut Vec<OutFrame>) {
        self.chunk += 1;
        self.sequence += 1;
        let sid = &self.sid;
        let (chunk, sequence) = (self.chunk, self.sequence);
        let timestamp_ms = self.format.duration_ms(self.sent_bytes as usize);
        let text = match self.dialect {
            Dialect::Twilio => format!(
                r#"{{"event":"media","streamSid":{sid},"media":{{"payload":"{payload}"}}}}"#
            ),
            Dialect::Smartflo => format!(
                r#"{{"event":"media","streamSid":{sid},"media":{{"payload":"{payload}","chunk":{chunk}}}}}"#
            ),
            Dialect::VendorStream => {
                format!(
                    r#"{{"event":"media","sequenceNumber":{sequence},"streamSid":{sid},"media":{{"payload":"{payload}","chunk":{chunk}}}}}"#
                )
            }
            Dialect::Exotel => format!(
                r#"{{"event":"media","stream_sid":{sid},"sequence_number":"{sequence}","media":{{"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload}"}}}}"#
            ),
            Dialect::Plivo => {
                let (content_type, rate) = match self.format {
                    AudioFormat::Mulaw => ("audio/x-mulaw", 8000),
                    AudioFormat::Alaw => ("audio/x-alaw", 8000),
                    AudioFormat::Pcm16 { rate } => ("audio/x-l16", rate),
                };
                format!(
                    r#"{{"event":"playAudio","media":{{"contentType":"{content_type}","sampleRate":{rate},"payload":"{payload}"}}}}"#
                )
            }
            Dialect::Telnyx => format!(
                r#"{{"event":"media","stream_id":{sid},"media":{{"payload":"{payload}"}}}}"#
            ),
            Dialect::Voximplant => {
                if !self.stream_open {
                    self.stream_open = true;
                    self.chunk = 1;
                    let (encoding, rate) = match self.format {
                        AudioFormat::Mulaw => ("ULAW", 8000),
                        AudioFormat::Alaw => ("ALAW", 8000),
                        AudioFormat::Pcm16 { rate: 8000 } => ("PCM8", 8000),
                        AudioFormat::Pcm16 { rate } => ("PCM16", rate),
                    };
                    frames.push(OutFrame::Text(format!(
                        r#"{{"event":"start","sequenceNumber":{sequence},"start":{{"mediaFormat":{{"encoding":"{encoding}","sampleRate":{rate}}}}}}}"#
                    )));
                    self.sequence += 1;
                }
                // Timestamps in samples (PROTOCOLS.md §5.3, UNVERIFIED).
                let samples = self.sent_bytes / self.format.bytes_per_sample() as u64;
                format!(
                    r#"{{"event":"media","sequenceNumber":{},"media":{{"chunk":{},"timestamp":{samples},"payload":"{payload}"}}}}"#,
                    self.sequence, self.chunk
                )
            }
            Dialect::RawAudio => unreachable!("raw audio is written as binary frames"),
        };
        self.sent_bytes += bytes as u64;
        frames.push(OutFrame::Text(text));
    }
}
