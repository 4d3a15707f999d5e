//! What the model says, event by event ([`ModelEvent`], decoded from the Realtime API's
//! messages): session lifecycle, the model's audio and transcripts, speech started
//! (barge-in), tool calls, errors.

use super::*;

impl Relay {
    /// Handles one upstream message (unparseable or unknown ones are counted and ignored).
    pub(super) async fn on_event(
        &mut self,
        text: &str,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        let decoded = match self.protocol.decode(text) {
            Ok(decoded) => decoded,
            Err(error) => {
                metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "invalid")
                    .increment(1);
                tracing::debug!(%error, "unparseable upstream event ignored");
                return Ok(());
            }
        };
        for event in decoded.before {
            self.handle(event, ws, config).await?;
        }
        self.handle(decoded.event, ws, config).await?;
        for event in decoded.after {
            self.handle(event, ws, config).await?;
        }
        Ok(())
    }

    /// Acts on one thing the model said.
    async fn handle(
        &mut self,
        event: ModelEvent<'_>,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        match event {
            ModelEvent::SessionOpened { session } => {
                self.plan_rollover(session.as_ref(), config);
                let span = tracing::info_span!("session.update", audio = ?self.call.upstream_audio, ready_ms = tracing::field::Empty);
                self.configuring = Some((Instant::now(), span));
                if let Some(update) = self.protocol.configure() {
                    send_text(ws, update.to_owned(), config).await?;
                }
            }
            ModelEvent::SessionReady { session } => {
                #[cfg(feature = "fault-injection")]
                if self
                    .call
                    .custom_parameters
                    .get("callgate_fault")
                    .map(String::as_str)
                    == Some("panic_in_bridge")
                {
                    panic!("fault injection: panic_in_bridge");
                }
                if let Some(reported) = session
                    .as_ref()
                    .and_then(crate::bridge::wire::session_output_audio)
                {
                    if reported != self.call.upstream_audio {
                        tracing::warn!(
                            ?reported,
                            "upstream reports a different output format than configured"
                        );
                    }
                }
                if self.rollover.due_at().is_none() {
                    // Protocols whose session is only described once ready (GPT-Live).
                    self.plan_rollover(session.as_ref(), config);
                }
                if let Some((sent, span)) = self.configuring.take() {
                    span.record("ready_ms", sent.elapsed().as_millis() as u64);
                }
                if !self.ready {
                    self.become_ready(ws, config).await?;
                }
            }
            ModelEvent::Audio {
                delta,
                item_id,
                response_id,
            } => {
                self.on_audio_delta(&delta, item_id, response_id.as_deref())
                    .await
            }
            ModelEvent::AudioDone { response_id } => {
                self.on_audio_done(response_id.as_deref()).await
            }
            ModelEvent::SpeechStarted => self.barge_in(ws, config).await?,
            ModelEvent::ResponseStarted { id } => self.responses.started(id),
            ModelEvent::ResponseDone { id } => {
                // Only one response at a time: one asked for meanwhile (DTMF) goes now.
                if self.responses.done(id) {
                    self.request_response(ws, config).await?;
                }
            }
            ModelEvent::ToolCall {
                call_id,
                name,
                arguments,
                response_id,
            } => {
                // A call in a response the caller interrupted is not run, whatever its
                // status says (the model's turn was cut off).
                if !self.responses.is_cut_off(response_id.as_deref()) {
                    self.on_function_call(call_id, name, arguments, config);
                }
            }
            ModelEvent::Transcript {
                role,
                text,
                is_final: false,
                ..
            } => {
                self.call.publish(FeedEvent::Transcript {
                    role,
                    text: shown(&text, config).into_owned(),
                    is_final: false,
                    at_ms: self.call.at_ms(),
                });
            }
            ModelEvent::Transcript {
                role,
                text,
                is_final: true,
                item_id,
            } => {
                // PCI: what either side said may carry digits (the model reads them back);
                // they are redacted before the line is logged, published, stored or kept.
                let text = shown(&text, config).into_owned();
                tracing::debug!(
                    item_id = item_id.as_deref(),
                    role,
                    transcript = text.as_str(),
                    "transcript line"
                );
                self.remember(role, text);
            }
            // Its socket closes next: a reconnect follows, as for any lost session.
            ModelEvent::SessionClosed => tracing::info!("upstream ended the session"),
            ModelEvent::Expiring { time_left } => {
                // Move to a new connection now, between turns (the core rolls over; caller
                // audio is held meanwhile, and the protocol resumes the session).
                tracing::info!(
                    time_left,
                    "upstream will close this connection: moving to a new one"
                );
                self.rollover
                    .soon(tokio::time::Instant::now(), parse_time_left(&time_left));
            }
            ModelEvent::Error(error) => {
                if error.is_fatal() {
                    return Err(BridgeError::Fatal {
                        code: error.code.unwrap_or_default(),
                        message: error.message.unwrap_or_default(),
                    });
                }
                if error.is_already_shorter() {
                    tracing::debug!("truncate past the end of an item (harmless)");
                } else {
                    metrics::counter!("callgate_upstream_errors_total", "code" => error_code_label(error.code.as_deref())).increment(1);
                    tracing::warn!(
                        kind = error.kind.as_deref(),
                        code = error.code.as_deref(),
                        message = error.message.as_deref(),
                        "upstream error event"
                    );
                }
            }
            ModelEvent::SpeechStopped { item_id } => {
                // A turn: from the caller's silence to the model's first audio.
                let span = tracing::info_span!(
                    "turn",
                    item_id = item_id.as_deref(),
                    latency_ms = tracing::field::Empty
                );
                self.turn = Some((self.received, span));
            }
            ModelEvent::Other(kind) => {
                tracing::trace!(kind = &*kind, "upstream event");
            }
        }
        Ok(())
    }
}

impl Relay {
    /// The session is configured: re-seed it (not the call's first) or greet, then send the
    /// caller audio held meanwhile.
    pub(super) async fn become_ready(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        if self.reseed {
            self.reseed_conversation(ws, config).await?;
        } else if !self.greeting.is_empty() {
            // GPT-Live was asked in its instructions.
            if let Some(greeting) = self.protocol.greeting(&self.greeting) {
                send_text(ws, greeting, config).await?;
            }
        }
        self.ready = true;
        if let Some(since) = self.opening_since.take() {
            metrics::histogram!("callgate_upstream_connect_seconds")
                .record(since.elapsed().as_secs_f64());
        }
        tracing::debug!(held = self.audio.len(), "upstream session ready");
        self.flush_audio(ws, config).await
    }
}

/// A protobuf duration as JSON (`"9.5s"`), less a second of margin; 5 s when unreadable.
fn parse_time_left(text: &str) -> Duration {
    text.strip_suffix('s')
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s).saturating_sub(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(5))
}
