//! `media`: check the caller's audio and queue it for the upstream.
//!
//! The hot path: 50 frames a second per call. No lock, no log above `trace`, no metrics
//! registry lookup; one base64 check into a reused buffer, and in passthrough mode the
//! payload text itself goes upstream.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use base64::Engine as _;

use crate::bridge::BridgeHandle;
use crate::call::{sync_service, CallContext, Flow};
use crate::codec::{decode_base64_into, Transcoder, BASE64};
use crate::error::EventError;
use crate::event::Media;
use crate::session::Session;

/// Handles `media`.
#[derive(Debug)]
pub struct MediaHandler {
    ctx: Arc<CallContext>,
    call: Option<(Arc<Session>, Arc<BridgeHandle>)>,
    /// `None` when carrier and upstream formats are equal (passthrough).
    transcoder: Option<Transcoder>,
    raw: Vec<u8>,
    converted: Vec<u8>,
}

impl MediaHandler {
    /// A handler for one connection.
    pub fn new(ctx: Arc<CallContext>) -> Self {
        Self {
            ctx,
            call: None,
            transcoder: None,
            raw: Vec::with_capacity(1024),
            converted: Vec::new(),
        }
    }

    fn handle(&mut self, media: Media) -> Result<Flow, EventError> {
        if self.call.is_none() {
            let (session, bridge) = self.ctx.started()?;
            let upstream = self.ctx.bridge_config.audio.format();
            if session.media_format != upstream {
                self.transcoder = Some(
                    Transcoder::new(session.media_format, upstream)
                        .map_err(|e| EventError::Audio(e.to_string()))?,
                );
            }
            self.call = Some((session, bridge));
        }
        let (session, bridge) = self.call.as_ref().expect("set above");
        if media.stream_sid != session.stream_sid {
            return Err(EventError::StreamSidMismatch);
        }
        decode_base64_into(&media.payload, &mut self.raw).map_err(|_| EventError::BadBase64)?;
        session.touch();
        session.counters.frames_in.fetch_add(1, Relaxed);
        session
            .counters
            .bytes_in
            .fetch_add(self.raw.len() as u64, Relaxed);
        let chunk = match &mut self.transcoder {
            None => media.payload,
            Some(transcoder) => {
                self.converted.clear();
                transcoder.transcode(&self.raw, &mut self.converted);
                if self.converted.is_empty() {
                    return Ok(Flow::Continue);
                }
                BASE64.encode(&self.converted)
            }
        };
        if bridge.send_audio(chunk) {
            session.counters.audio_dropped.fetch_add(1, Relaxed);
        }
        Ok(Flow::Continue)
    }
}

sync_service!(MediaHandler, Media);
