//! The embedded Realtime simulator: used when no model is configured, so a fresh machine can
//! run the whole call path.
//!
//! It speaks the GA protocol over a real WebSocket on loopback: `session.created`,
//! `session.update` → `session.updated`, an energy VAD emitting
//! `input_audio_buffer.speech_started` / `speech_stopped` / `committed`, a placeholder
//! caller transcript, and a reply that plays the caller's last utterance back as
//! `response.output_audio.delta`s with its transcript events. It is not a model.

use std::net::SocketAddr;

use base64::Engine as _;
use callgate_handlers::bridge::{wire, UpstreamAudio};
use callgate_handlers::codec::{AudioFormat, Transcoder, BASE64};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Longest utterance kept for the echo reply.
const MAX_UTTERANCE_MS: usize = 15_000;
/// Each reply delta carries this much audio.
const DELTA_MS: usize = 100;
/// RMS above which a 20 ms block counts as speech (about −35 dBFS).
const SPEECH_RMS: f64 = 600.0;
/// Voiced blocks needed to start a turn.
const START_BLOCKS: u32 = 2;

/// A running simulator.
#[derive(Debug)]
pub struct Loopback {
    /// Its `ws://` URL.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
}

/// Starts the simulator on `127.0.0.1:0`.
pub async fn start() -> std::io::Result<Loopback> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "loopback accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(Loopback {
        url: format!("ws://{addr}/v1/realtime?model=loopback"),
        addr,
    })
}

async fn serve(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut sim = Simulator::new();
    if ws
        .send(text(sim.session_event("session.created")))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(body) = message else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(&body) else {
            continue;
        };
        for reply in sim.on_client_event(&event) {
            if ws.send(text(reply)).await.is_err() {
                return;
            }
        }
    }
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

struct Simulator {
    input: UpstreamAudio,
    output: UpstreamAudio,
    silence_ms: u32,
    /// All input audio so far, in ms (the clock VAD events use).
    audio_ms: u64,
    /// Samples not yet forming a whole 20 ms block.
    block: Vec<i16>,
    voiced_run: u32,
    silent_ms: u32,
    speaking: bool,
    speech_started_ms: u64,
    utterance: Vec<i16>,
    last_utterance: Vec<i16>,
    counter: u64,
    samples: Vec<i16>,
    raw: Vec<u8>,
}

impl Simulator {
    fn new() -> Self {
        Self {
            input: UpstreamAudio::Pcm24k,
            output: UpstreamAudio::Pcm24k,
            silence_ms: 500,
            audio_ms: 0,
            block: Vec::new(),
            voiced_run: 0,
            silent_ms: 0,
            speaking: false,
            speech_started_ms: 0,
            utterance: Vec::new(),
            last_utterance: Vec::new(),
            counter: 0,
            samples: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_loopback_{}", self.counter)
    }

    fn session_event(&mut self, kind: &str) -> Value {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 3600)
            .unwrap_or_default();
        json!({
            "type": kind,
            "event_id": self.id("event"),
            "session": {
                "type": "realtime",
                "object": "realtime.session",
                "id": "sess_loopback",
                "model": "loopback",
                "expires_at": expires,
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": wire::ga_format(self.input),
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": self.silence_ms},
                    },
                    "output": {"format": wire::ga_format(self.output), "voice": "loopback"},
                },
            },
        })
    }

    fn on_client_event(&mut self, event: &Value) -> Vec<Value> {
        match event["type"].as_str().unwrap_or("") {
            "session.update" => {
                let session = &event["session"];
                if let Some(f) = parse_format(&session["audio"]["input"]["format"]) {
                    self.input = f;
                }
                if let Some(f) = parse_format(&session["audio"]["output"]["format"]) {
                    self.output = f;
                }
                if let Some(ms) =
                    session["audio"]["input"]["turn_detection"]["silence_duration_ms"].as_u64()
                {
                    self.silence_ms = ms as u32;
                }
                vec![self.session_event("session.updated")]
            }
            "input_audio_buffer.append" => {
                let audio = event["audio"].as_str().unwrap_or("");
                self.raw.clear();
                if BASE64.decode_vec(audio, &mut self.raw).is_err() {
                    return vec![error_event("invalid_value", "audio is not valid base64")];
                }
                self.samples.clear();
                self.input.format().decode(&self.raw, &mut self.samples);
                let samples = std::mem::take(&mut self.samples);
                let events = self.vad(&samples);
                self.samples = samples;
                events
            }
            "response.create" => {
                let utterance = self.last_utterance.clone();
                self.reply(&utterance)
            }
            "conversation.item.truncate" => vec![json!({
                "type": "conversation.item.truncated",
                "event_id": self.id("event"),
                "item_id": event["item_id"],
                "content_index": 0,
                "audio_end_ms": event["audio_end_ms"],
            })],
            _ => Vec::new(),
        }
    }

    fn vad(&mut self, samples: &[i16]) -> Vec<Value> {
        let rate = self.input.format().sample_rate() as usize;
        let block_len = rate / 50;
        let mut events = Vec::new();
        self.block.extend_from_slice(samples);
        let mut offset = 0;
        while self.block.len() - offset >= block_len {
            let block = &self.block[offset..offset + block_len];
            offset += block_len;
            self.audio_ms += 20;
            let rms =
                (block.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / block_len as f64).sqrt();
            if self.speaking || self.voiced_run > 0 {
                let room = MAX_UTTERANCE_MS * rate / 1000;
                if self.utterance.len() < room {
                    self.utterance.extend_from_slice(block);
                }
            }
            if rms >= SPEECH_RMS {
                self.voiced_run += 1;
                self.silent_ms = 0;
                if !self.speaking && self.voiced_run >= START_BLOCKS {
                    self.speaking = true;
                    self.speech_started_ms = self.audio_ms - 20 * START_BLOCKS as u64;
                    let item = self.id("item");
                    events.push(json!({
                        "type": "input_audio_buffer.speech_started",
                        "event_id": self.id("event"),
                        "audio_start_ms": self.speech_started_ms,
                        "item_id": item,
                    }));
                }
            } else {
                if !self.speaking {
                    self.voiced_run = 0;
                    self.utterance.clear();
                }
                self.silent_ms += 20;
                if self.speaking && self.silent_ms >= self.silence_ms {
                    self.speaking = false;
                    self.voiced_run = 0;
                    let utterance = std::mem::take(&mut self.utterance);
                    events.extend(self.end_turn(utterance));
                }
            }
        }
        self.block.drain(..offset);
        events
    }

    fn end_turn(&mut self, utterance: Vec<i16>) -> Vec<Value> {
        let item = self.id("item");
        let seconds = utterance.len() as f64 / self.input.format().sample_rate() as f64;
        let mut events = vec![
            json!({"type": "input_audio_buffer.speech_stopped", "event_id": self.id("event"), "audio_end_ms": self.audio_ms, "item_id": item}),
            json!({"type": "input_audio_buffer.committed", "event_id": self.id("event"), "previous_item_id": null, "item_id": item}),
            json!({
                "type": "conversation.item.input_audio_transcription.completed",
                "event_id": self.id("event"),
                "item_id": item,
                "content_index": 0,
                "transcript": format!("(loopback heard {seconds:.1} s of speech)"),
            }),
        ];
        events.extend(self.reply(&utterance));
        self.last_utterance = utterance;
        events
    }

    /// A whole response that plays `utterance` back in the output format.
    fn reply(&mut self, utterance: &[i16]) -> Vec<Value> {
        let response = self.id("resp");
        let item = self.id("item");
        let transcript = "(loopback: playing back what you said)";
        let mut events = vec![
            json!({"type": "response.created", "event_id": self.id("event"), "response": {"id": response, "object": "realtime.response", "status": "in_progress"}}),
            json!({"type": "response.output_item.added", "event_id": self.id("event"), "response_id": response, "output_index": 0, "item": {"id": item, "type": "message", "role": "assistant", "status": "in_progress"}}),
        ];
        let pcm_format = AudioFormat::Pcm16 {
            rate: self.input.format().sample_rate(),
        };
        let output = self.output.format();
        let mut pcm = Vec::new();
        pcm_format.encode(utterance, &mut pcm);
        let mut audio = Vec::new();
        match Transcoder::new(pcm_format, output) {
            Ok(mut t) => {
                t.transcode(&pcm, &mut audio);
                t.flush(&mut audio);
            }
            Err(error) => tracing::warn!(%error, "loopback cannot convert audio"),
        }
        let per_delta = output.bytes_per_ms() * DELTA_MS;
        for chunk in audio.chunks(per_delta.max(1)) {
            events.push(json!({
                "type": "response.output_audio.delta",
                "event_id": self.id("event"),
                "response_id": response,
                "item_id": item,
                "output_index": 0,
                "content_index": 0,
                "delta": BASE64.encode(chunk),
            }));
        }
        events.push(json!({"type": "response.output_audio_transcript.delta", "event_id": self.id("event"), "response_id": response, "item_id": item, "output_index": 0, "content_index": 0, "delta": transcript}));
        events.push(json!({"type": "response.output_audio_transcript.done", "event_id": self.id("event"), "response_id": response, "item_id": item, "output_index": 0, "content_index": 0, "transcript": transcript}));
        events.push(json!({"type": "response.output_audio.done", "event_id": self.id("event"), "response_id": response, "item_id": item, "output_index": 0, "content_index": 0}));
        events.push(json!({"type": "response.output_item.done", "event_id": self.id("event"), "response_id": response, "output_index": 0, "item": {"id": item, "type": "message", "role": "assistant", "status": "completed"}}));
        events.push(json!({"type": "response.done", "event_id": self.id("event"), "response": {"id": response, "object": "realtime.response", "status": "completed"}}));
        events
    }
}

fn parse_format(format: &Value) -> Option<UpstreamAudio> {
    wire::audio_named(format["type"].as_str()?)
}

fn error_event(code: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message, "param": null, "event_id": null}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(sim: &mut Simulator, samples: &[i16]) -> Vec<Value> {
        let mut bytes = Vec::new();
        sim.input.format().encode(samples, &mut bytes);
        sim.on_client_event(
            &json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(&bytes)}),
        )
    }

    #[test]
    fn detects_a_turn_and_echoes_it() {
        let mut sim = Simulator::new();
        let updated = sim.on_client_event(&json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}}));
        assert_eq!(
            updated[0]["session"]["audio"]["output"]["format"]["type"],
            "audio/pcmu"
        );
        let tone: Vec<i16> = (0..8000)
            .map(|i| ((i as f64 * 0.785).sin() * 8000.0) as i16)
            .collect();
        let mut events = append(&mut sim, &tone);
        events.extend(append(&mut sim, &vec![0i16; 8000]));
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let pos = |k: &str| {
            kinds
                .iter()
                .position(|x| *x == k)
                .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
        };
        assert!(
            pos("input_audio_buffer.speech_started") < pos("input_audio_buffer.speech_stopped")
        );
        assert!(pos("input_audio_buffer.speech_stopped") < pos("response.output_audio.delta"));
        assert!(pos("response.output_audio.done") < pos("response.done"));
        let echoed: usize = events
            .iter()
            .filter(|e| e["type"] == "response.output_audio.delta")
            .map(|e| BASE64.decode(e["delta"].as_str().unwrap()).unwrap().len())
            .sum();
        // About one second of speech (plus the silence that ended the turn) at 8 bytes/ms.
        assert!(
            (8000..=8000 + 8 * 600).contains(&echoed),
            "echoed {echoed} bytes"
        );
    }
}
