//! `media`: check the caller's audio and queue it for the upstream.
//!
//! The hot path: 50 frames a second per call. No log, no metrics registry lookup, no
//! contended lock (the upstream queue's mutex is shared only with the call's own bridge
//! task); one base64 check into a reused buffer, and in passthrough mode the payload text
//! itself goes upstream. Telnyx frames, which may arrive out of order, pass through a small
//! reorder window first.
//!
//! Audio is bounded in time, not in messages: a message carrying more than
//! `max_media` is refused as bad input, and audio arriving faster than the clock (beyond a
//! small burst) is dropped and counted ([`AudioPace`]), so no carrier can feed the paid
//! upstream faster than a caller can speak.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::audio_pace::AudioPace;
use crate::bridge::BridgeHandle;
use crate::call::{sync_service, CallContext, Flow};
use crate::call_state::CallState;
use crate::codec::{decode_base64_into, Transcoder, BASE64};
use crate::error::EventError;
use crate::event::{Media, Payload};

/// Out-of-order frames held before a gap is given up on (100 ms of 20 ms frames).
const REORDER_WINDOW: usize = 5;

/// Handles `media`.
#[derive(Debug)]
pub struct MediaHandler {
    ctx: Arc<CallContext>,
    call: Option<(Arc<CallState>, Arc<BridgeHandle>)>,
    /// `None` when carrier and upstream formats are equal (passthrough).
    transcoder: Option<Transcoder>,
    reorder: Option<Reorder>,
    pace: AudioPace,
    /// Frames the reorder window released (reused).
    ready: Vec<Payload>,
    raw: Vec<u8>,
    converted: Vec<u8>,
}

impl MediaHandler {
    /// A handler for one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        let reorder = ctx.dialect.reorders_media().then(Reorder::default);
        let pace = AudioPace::new(ctx.bridge_config.audio_burst);
        Self {
            ctx,
            call: None,
            transcoder: None,
            reorder,
            pace,
            ready: Vec::new(),
            raw: Vec::with_capacity(1024),
            converted: Vec::new(),
        }
    }

    fn handle(&mut self, media: Media) -> Result<Flow, EventError> {
        if self.call.is_none() {
            let (session, bridge) = self.ctx.started()?;
            let upstream = session.upstream_audio.input_format();
            if session.media_format != upstream {
                self.transcoder = Some(
                    Transcoder::new(session.media_format, upstream)
                        .map_err(|e| EventError::Audio(e.to_string()))?,
                );
            }
            self.call = Some((session, bridge));
        }
        let (session, _) = self.call.as_ref().expect("set above");
        session.owns(media.stream_sid.as_deref())?;
        match &mut self.reorder {
            None => self.forward(media.payload),
            Some(reorder) => {
                let key = media.chunk.or(media.sequence);
                let mut ready = std::mem::take(&mut self.ready);
                reorder.push(key, media.payload, &mut ready);
                if reorder.lost > 0 {
                    let lost = std::mem::take(&mut reorder.lost);
                    session.counters.audio_dropped.fetch_add(lost, Relaxed);
                    session.counters.reorder_lost.fetch_add(lost, Relaxed);
                }
                let forwarded = ready.drain(..).try_for_each(|p| self.forward(p).map(drop));
                self.ready = ready;
                forwarded.map(|()| Flow::Continue)
            }
        }
    }

    fn forward(&mut self, payload: Payload) -> Result<Flow, EventError> {
        let (session, bridge) = self.call.as_ref().expect("started");
        let raw = match &payload {
            Payload::Base64(text) => {
                decode_base64_into(text, &mut self.raw).map_err(|_| EventError::BadBase64)?;
                &self.raw[..]
            }
            Payload::Raw(bytes) => &bytes[..],
        };
        let bytes_per_ms = session.media_format.bytes_per_ms().max(1) as u64;
        let audio = Duration::from_micros(raw.len() as u64 * 1000 / bytes_per_ms);
        let limits = &self.ctx.bridge_config;
        if audio > limits.max_media {
            return Err(EventError::MediaTooLong {
                ms: audio.as_millis() as u64,
                max_ms: limits.max_media.as_millis() as u64,
            });
        }
        if !self.pace.admit(Instant::now(), audio) {
            // Not bad input to count toward 1007 (the frame was well formed), but never
            // forwarded: the upstream bills for every second it hears.
            let first = session.counters.too_fast.fetch_add(1, Relaxed) == 0;
            session.counters.audio_dropped.fetch_add(1, Relaxed);
            if first {
                tracing::warn!(
                    burst_ms = limits.audio_burst.as_millis() as u64,
                    "caller audio faster than real time: dropping what runs ahead"
                );
            }
            return Ok(Flow::Continue);
        }
        session.touch();
        if let Some(recorder) = session.recorder.get() {
            recorder.caller(raw);
        }
        session.counters.frames_in.fetch_add(1, Relaxed);
        session
            .counters
            .bytes_in
            .fetch_add(raw.len() as u64, Relaxed);
        let chunk = match &mut self.transcoder {
            None => match payload {
                Payload::Base64(text) => text,
                Payload::Raw(bytes) => BASE64.encode(&bytes),
            },
            Some(transcoder) => {
                self.converted.clear();
                transcoder.transcode(raw, &mut self.converted);
                if self.converted.is_empty() {
                    return Ok(Flow::Continue);
                }
                BASE64.encode(&self.converted)
            }
        };
        let dropped = bridge.send_audio(chunk, audio);
        if dropped > 0 {
            session.counters.audio_dropped.fetch_add(dropped, Relaxed);
        }
        Ok(Flow::Continue)
    }
}

sync_service!(MediaHandler, Media);

/// Puts frames back in order by their counter, holding at most [`REORDER_WINDOW`] of them.
#[derive(Debug, Default)]
struct Reorder {
    next: Option<u64>,
    held: BTreeMap<u64, Payload>,
    /// Frames skipped (a gap given up on) or arriving too late, since last read.
    lost: u64,
}

impl Reorder {
    /// Takes one frame and appends to `ready` every frame now in order.
    fn push(&mut self, key: Option<u64>, payload: Payload, ready: &mut Vec<Payload>) {
        let Some(key) = key else {
            ready.push(payload);
            return;
        };
        let next = *self.next.get_or_insert(key);
        if key < next {
            // Too late: its place in the stream has passed.
            self.lost += 1;
            return;
        }
        self.held.insert(key, payload);
        loop {
            let next = self.next.expect("set above");
            if let Some(payload) = self.held.remove(&next) {
                ready.push(payload);
                self.next = Some(next + 1);
            } else if self.held.len() > REORDER_WINDOW {
                // The missing frame is not coming: skip to the oldest one we hold.
                let (&oldest, _) = self.held.first_key_value().expect("non-empty");
                self.lost += oldest - next;
                self.next = Some(oldest);
            } else {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> Payload {
        Payload::Base64(n.to_string())
    }

    /// Pushes frame `k` and returns the keys it released.
    fn push(r: &mut Reorder, k: u64) -> Vec<u64> {
        let mut out = Vec::new();
        r.push(Some(k), p(k), &mut out);
        out.into_iter()
            .map(|p| match p {
                Payload::Base64(s) => s.parse().unwrap(),
                Payload::Raw(_) => panic!("only base64 here"),
            })
            .collect()
    }

    #[test]
    fn reorders_within_the_window() {
        let mut r = Reorder::default();
        assert_eq!(push(&mut r, 1), [1]);
        assert_eq!(push(&mut r, 3), Vec::<u64>::new());
        assert_eq!(push(&mut r, 4), Vec::<u64>::new());
        assert_eq!(push(&mut r, 2), [2, 3, 4]);
        assert_eq!(r.lost, 0);
        // A late duplicate is dropped and counted.
        assert!(push(&mut r, 3).is_empty());
        assert_eq!(r.lost, 1);
    }

    #[test]
    fn gives_up_on_a_gap_after_the_window() {
        let mut r = Reorder::default();
        push(&mut r, 1);
        let mut out = Vec::new();
        for k in 3..=8 {
            out.extend(push(&mut r, k));
        }
        assert_eq!(out, [3, 4, 5, 6, 7, 8]);
        assert_eq!(r.lost, 1, "frame 2 never came");
    }
}
