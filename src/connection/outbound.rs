//! The carrier-bound half of a call: what the bridge asks for (audio, marks, clears, the
//! hang-up, a transfer, DTMF, the fallback) encoded by the carrier's writer and written
//! with a deadline.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use callgate_handlers::bridge::Downstream;
use callgate_handlers::dialect::OutFrame;
use callgate_handlers::event::Outbound;
use callgate_handlers::tape::{Dir, Tape};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Call, Started};
use crate::carrier_socket::CarrierSocket;
use crate::close::{Ending, Rescue};

impl Call<'_> {
    /// Carries out one request of the bridge; `Some` ends the call.
    pub(super) async fn on_downstream(
        &mut self,
        socket: &mut CarrierSocket,
        item: Downstream,
    ) -> Option<Rescue> {
        match item {
            Downstream::Out(message, received) => {
                if self.on_outbound(&mut *socket, &message).await.is_err() {
                    return Some(self.end(Ending::CarrierGone));
                }
                self.observe(&message, received);
            }
            Downstream::Hangup => {
                // The assistant ended the conversation (`end_call`).
                if let Some(frame) = self.started.as_ref().and_then(|s| s.writer.hangup()) {
                    let _ = self.send_one(socket, frame).await;
                }
                return Some(self.end(Ending::HungUp));
            }
            Downstream::Transferred { target, number } => {
                // The carrier has the call now (or its scenario dials `number`).
                let frame =
                    number.and_then(|n| self.started.as_ref().and_then(|s| s.writer.transfer(&n)));
                if let Some(frame) = frame {
                    let _ = self.send_one(socket, frame).await;
                }
                tracing::info!(%target, "call transferred; closing the stream");
                return Some(self.end(Ending::Transferred));
            }
            Downstream::SendDtmf(digits) => {
                let frame = self
                    .started
                    .as_ref()
                    .and_then(|s| s.writer.send_dtmf(&digits));
                if let Some(frame) = frame {
                    if self.send_one(socket, frame).await.is_err() {
                        return Some(self.end(Ending::CarrierGone));
                    }
                }
            }
            Downstream::Fallback { audio, duration } => {
                // The carrier plays the fallback; the close follows once it has.
                let audio = Outbound::Media { audio };
                tracing::warn!(
                    duration_ms = duration.as_millis() as u64,
                    "playing the fallback audio"
                );
                let end = Outbound::Mark {
                    name: "fallback".into(),
                };
                if self.on_outbound(&mut *socket, &audio).await.is_err()
                    || self.on_outbound(&mut *socket, &end).await.is_err()
                {
                    return Some(self.end(Ending::CarrierGone));
                }
                self.fallback_until =
                    Some(tokio::time::Instant::now() + duration.min(Duration::from_secs(10)));
            }
            Downstream::End(error) => {
                tracing::warn!(%error, "ending call: upstream failed");
                if let Some(until) = self.fallback_until {
                    tokio::time::sleep_until(until).await;
                }
                return Some(self.end(Ending::UpstreamFailed));
            }
        }
        None
    }

    /// Writes one frame the writer made for a request of the bridge (hang-up, transfer, DTMF).
    async fn send_one(&self, socket: &mut CarrierSocket, frame: OutFrame) -> Result<(), WsError> {
        let timeout = self.state.calls.carrier_write_timeout;
        send_frames(socket, vec![frame], timeout, self.tape.as_deref()).await
    }

    /// Latency of one message from the upstream event that caused it to the carrier write.
    pub(super) fn observe(&self, message: &Outbound, received: std::time::Instant) {
        let elapsed = received.elapsed().as_secs_f64();
        match message {
            Outbound::Media { .. } => self.latency_outbound.record(elapsed),
            Outbound::Clear => {
                metrics::histogram!("callgate_barge_in_clear_seconds").record(elapsed)
            }
            Outbound::Mark { name } => {
                if let Some(started) = &self.started {
                    started.call.mark_sent(name);
                }
            }
        }
    }

    /// Encodes and sends one message from the bridge.
    pub(super) async fn on_outbound(
        &mut self,
        socket: &mut CarrierSocket,
        message: &Outbound,
    ) -> Result<(), WsError> {
        // Nothing may reach the carrier before `start` (it has no stream id yet).
        let Some(Started {
            call: session,
            writer,
        }) = self.started.as_mut()
        else {
            return Ok(());
        };
        // The recording hears what the carrier is given to play, and loses what a clear cuts.
        if let Some(recorder) = session.recorder.get() {
            match message {
                Outbound::Media { audio } => recorder.assistant(audio),
                Outbound::Clear => recorder.clear(),
                Outbound::Mark { .. } => {}
            }
        }
        self.frames.clear();
        writer.write(message, &mut self.frames);
        let frames = std::mem::take(&mut self.frames);
        let frames = match (&mut self.pacer, message) {
            (None, _) => frames,
            (Some(pacer), Outbound::Clear) => {
                pacer.clear();
                frames
            }
            (Some(pacer), Outbound::Media { audio }) => pacer.push(
                frames,
                Duration::from_millis(session.outbound_format.duration_ms(audio.len())),
            ),
            (Some(pacer), _) => pacer.push(frames, Duration::ZERO),
        };
        if matches!(message, Outbound::Media { .. }) {
            session
                .counters
                .frames_out
                .fetch_add(frames.len() as u64, Relaxed);
        }
        send_frames(
            socket,
            frames,
            self.state.calls.carrier_write_timeout,
            self.tape.as_deref(),
        )
        .await
    }
}

/// Sends frames; a carrier that stops reading fills the bounded write buffer and the send
/// times out, which ends the call (there is no one left to hear it).
pub(super) async fn send_frames(
    socket: &mut CarrierSocket,
    frames: Vec<OutFrame>,
    timeout: Duration,
    tape: Option<&Tape>,
) -> Result<(), WsError> {
    if frames.is_empty() {
        return Ok(());
    }
    if let Some(tape) = tape {
        for frame in &frames {
            match frame {
                OutFrame::Text(text) => tape.text(Dir::CarrierOut, None, text),
                OutFrame::Binary(bytes) => tape.binary(Dir::CarrierOut, bytes),
            }
        }
    }
    let send = async {
        for frame in frames {
            socket
                .feed(match frame {
                    OutFrame::Text(text) => Message::Text(text.into()),
                    OutFrame::Binary(bytes) => Message::Binary(bytes),
                })
                .await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(result) => result,
        Err(_) => {
            metrics::counter!("callgate_carrier_write_timeouts_total").increment(1);
            tracing::warn!("carrier stopped reading; dropping the call");
            Err(WsError::Io(std::io::ErrorKind::TimedOut.into()))
        }
    }
}
