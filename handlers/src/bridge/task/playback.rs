//! The model's audio on its way to the caller: pieces of at most 100 ms with a mark each,
//! the playback ledger that says what the caller has heard, and barge-in (clear, then
//! truncate at what was heard).

use super::*;

/// The playback ledger of one assistant item (PROTOCOLS.md §12.3).
#[derive(Debug, Default)]
pub(super) struct Playback {
    pub(super) item_id: Option<String>,
    /// Audio forwarded, ms.
    pub(super) sent_ms: u64,
    /// Audio the carrier confirmed played (its last echoed mark), ms.
    pub(super) acked_ms: u64,
    pub(super) t_ack: Option<Instant>,
    pub(super) first_send: Option<Instant>,
    /// Marks in flight: (name, cumulative ms at that mark).
    pub(super) marks: VecDeque<(String, u64)>,
}

impl Playback {
    /// The audio actually heard, ms: the last acknowledged mark plus the time since (no more
    /// than the next piece); without marks, the time since the first piece went out; never
    /// more than that time (early echoes) nor than what was sent.
    pub(super) fn played_ms(&self) -> u64 {
        let Some(first) = self.first_send else {
            return 0;
        };
        // Nothing can have played for longer than the audio has been out.
        let wall = first.elapsed().as_millis() as u64;
        let by_marks = match self.t_ack {
            Some(t_ack) => {
                let next = self.marks.front().map_or(self.sent_ms, |(_, cum)| *cum);
                let step = next.saturating_sub(self.acked_ms);
                self.acked_ms + (t_ack.elapsed().as_millis() as u64).min(step)
            }
            None => wall,
        };
        by_marks.min(wall).min(self.sent_ms)
    }

    /// Everything sent has played: long enough ago, and, on carriers that echo marks,
    /// confirmed by the last one.
    pub(super) fn all_played(&self, marks: bool) -> bool {
        self.played_ms() >= self.sent_ms && (!marks || self.marks.is_empty())
    }

    /// The carrier echoed mark `name`: everything before it has played. An echo of a mark
    /// not pending (repeated, or out of order after a later one) changes nothing.
    pub(super) fn ack(&mut self, name: &str) {
        let Some(index) = self.marks.iter().position(|(mark, _)| mark == name) else {
            return;
        };
        let (_, cum) = self
            .marks
            .drain(..=index)
            .next_back()
            .expect("index is in range");
        self.acked_ms = cum;
        self.t_ack = Some(Instant::now());
    }
}

impl Relay {
    /// A piece of the model's voice (base64) for `item`, in response `response`.
    pub(super) async fn on_audio_delta(
        &mut self,
        delta: &str,
        item: Option<String>,
        response: Option<&str>,
    ) {
        if self.responses.is_cut_off(response) {
            metrics::counter!("callgate_audio_dropped_total", "direction" => "outbound", "reason" => "cancelled").increment(1);
            return;
        }
        // Hostile-upstream rule: base64 is checked before anything reaches the carrier.
        if decode_base64_into(delta, &mut self.raw).is_err() {
            metrics::counter!("callgate_upstream_events_ignored_total", "reason" => "bad_base64")
                .increment(1);
            return;
        }
        if item != self.playback.item_id {
            // A new assistant item: its ledger starts from zero (truncation is per item).
            self.playback = Playback {
                item_id: item,
                ..Playback::default()
            };
            self.piece.clear();
        }
        match &mut self.transcoder {
            None => self.piece.extend_from_slice(&self.raw),
            Some(transcoder) => {
                self.converted.clear();
                transcoder.transcode(&self.raw, &mut self.converted);
                self.piece.extend_from_slice(&self.converted);
            }
        }
        self.speaking = true;
        self.last_model_audio = Some(self.received);
        if !self.protocol.reports_turns() {
            self.audio_pause = Some(tokio::time::Instant::now() + super::AUDIO_PAUSE);
        }
        if let Some((stopped, span)) = self.turn.take() {
            let latency = stopped.elapsed();
            span.record("latency_ms", latency.as_millis() as u64);
            metrics::histogram!("callgate_model_first_audio_seconds").record(latency.as_secs_f64());
        }
        while self.piece.len() >= self.piece_bytes {
            self.send_piece(self.piece_bytes, false).await;
        }
        // No added latency: while the carrier has less than a piece queued ahead of playback,
        // what has arrived goes out at once (holding it would only make the caller wait).
        // Audio that would queue behind unheard audio anyway is gathered into whole pieces.
        // Only what the carrier's framing takes goes early (whole 20 ms frames for Smartflo
        // and Telnyx; never for Exotel, whose smallest chunk is a piece), or the writer would
        // pad the rest with silence in mid-sentence.
        let framing = self.framing;
        let ready = self.piece.len() - self.piece.len() % framing.multiple;
        if ready > 0
            && ready >= framing.min
            && self.queued_ahead_ms() < self.call.outbound_format.duration_ms(self.piece_bytes)
        {
            self.send_early(ready).await;
        }
    }

    /// Audio sent to the carrier and not yet played, ms.
    fn queued_ahead_ms(&self) -> u64 {
        self.playback
            .sent_ms
            .saturating_sub(self.playback.played_ms())
    }

    /// Sends `len` bytes at once; its mark waits until a piece's worth has gone out since
    /// the last one, so truncation keeps the accuracy of a piece without a mark per delta.
    async fn send_early(&mut self, len: usize) {
        let piece_ms = self.call.outbound_format.duration_ms(self.piece_bytes);
        // The last mark sent: still in flight, or echoed (then `acked_ms` is where it was).
        let marked = self
            .playback
            .marks
            .back()
            .map_or(self.playback.acked_ms, |(_, ms)| *ms);
        let sent_after = self.playback.sent_ms + self.call.outbound_format.duration_ms(len);
        if sent_after.saturating_sub(marked) >= piece_ms {
            self.send_piece(len, false).await;
        } else {
            self.send_audio(len).await;
        }
    }

    /// Sends `len` bytes of the piece buffer as one media message, then its mark.
    pub(super) async fn send_piece(&mut self, len: usize, last: bool) {
        self.send_audio(len).await;
        let item = self.playback.item_id.as_deref().unwrap_or("item");
        let mut name = format!("g{}/{}/{}", self.generation, item, self.playback.sent_ms);
        if last {
            name.push_str("/end");
        }
        self.playback
            .marks
            .push_back((name.clone(), self.playback.sent_ms));
        if self.playback.marks.len() > 256 {
            self.playback.marks.pop_front();
        }
        self.call.counters.marks_sent.fetch_add(1, Relaxed);
        self.emit(Outbound::Mark { name }).await;
    }

    /// Sends `len` bytes of the piece buffer as one media message (no mark).
    async fn send_audio(&mut self, len: usize) {
        let audio = self.piece.split_to(len.min(self.piece.len())).freeze();
        if audio.is_empty() {
            return;
        }
        self.call
            .counters
            .bytes_out
            .fetch_add(audio.len() as u64, Relaxed);
        self.playback.sent_ms += self.call.outbound_format.duration_ms(audio.len());
        self.playback.first_send.get_or_insert_with(Instant::now);
        self.emit(Outbound::Media { audio }).await;
    }

    /// The end of one item's audio (in `response`): the tail and the item's end mark go out.
    pub(super) async fn on_audio_done(&mut self, response: Option<&str>) {
        if self.responses.is_cut_off(response) {
            return;
        }
        if let Some(transcoder) = &mut self.transcoder {
            self.converted.clear();
            transcoder.flush(&mut self.converted);
            self.piece.extend_from_slice(&self.converted);
        }
        // The tail and the item's end mark (the carrier pads the tail to its framing).
        while self.piece.len() > self.piece_bytes {
            self.send_piece(self.piece_bytes, false).await;
        }
        self.send_piece(self.piece.len(), true).await;
    }

    /// A mark came back: the audio before it has played (or was cleared).
    pub(super) fn on_mark_played(&mut self, name: &str) {
        let generation = name
            .strip_prefix('g')
            .and_then(|rest| rest.split('/').next())
            .and_then(|g| g.parse::<u64>().ok());
        if generation != Some(self.generation) {
            // Echoed after a clear: not playback (PROTOCOLS.md §12.3 step 4).
            metrics::counter!("callgate_stale_marks_total").increment(1);
            return;
        }
        self.playback.ack(name);
    }

    /// Barge-in: clear the carrier first, then tell the model how much was heard (skipped
    /// when it all played); deltas still in flight for the interrupted response are dropped.
    pub(super) async fn barge_in(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        if self.audible() {
            let played = self.playback.played_ms();
            let sent = self.playback.sent_ms;
            self.call.counters.clears.fetch_add(1, Relaxed);
            metrics::counter!("callgate_barge_ins_total").increment(1);
            tracing::info!(
                generation = self.generation,
                played_ms = played,
                sent_ms = sent,
                "barge-in: clearing the carrier's audio"
            );
            self.piece.clear();
            self.call.publish(FeedEvent::BargeIn {
                played_ms: played,
                at_ms: self.call.at_ms(),
            });
            self.emit(Outbound::Clear).await;
            if let (Some(item), true) = (&self.playback.item_id, played < sent) {
                if let Some(truncate) = self.protocol.truncate(item, played) {
                    send_text(ws, truncate, config).await?;
                }
            }
            self.responses.cut_off_current();
            self.playback = Playback::default();
        }
        self.speaking = false;
        self.generation += 1;
        Ok(())
    }

    /// The caller may still be hearing model audio: some went out since the last barge-in
    /// and the ledger does not say it all played (marks alone cannot: echoes may come early).
    pub(super) fn audible(&self) -> bool {
        self.speaking && !self.playback.all_played(self.call.dialect.has_marks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger of `pieces` × 100 ms, each followed by its mark, the first sent `ago`.
    fn ledger(pieces: u64, ago: Duration) -> Playback {
        let mut playback = Playback {
            first_send: Some(Instant::now() - ago),
            sent_ms: pieces * 100,
            ..Playback::default()
        };
        for n in 1..=pieces {
            playback
                .marks
                .push_back((format!("g0/i/{}", n * 100), n * 100));
        }
        playback
    }

    #[test]
    fn early_echoes_count_no_more_than_the_time_since_sending() {
        // All 2 s acknowledged 300 ms after sending: the caller has heard 300 ms at most.
        let mut playback = ledger(20, Duration::from_millis(300));
        playback.ack("g0/i/2000");
        assert_eq!(playback.acked_ms, 2000);
        let played = playback.played_ms();
        assert!((300..400).contains(&played), "played {played} ms");
        assert!(!playback.all_played(true));
    }

    #[test]
    fn repeated_or_out_of_order_echoes_keep_the_ledger() {
        let mut playback = ledger(20, Duration::from_secs(5));
        // Sent 5 s ago and never echoed: time says played; marks have not confirmed it.
        assert!(
            playback.all_played(false),
            "without marks, time alone decides"
        );
        assert!(
            !playback.all_played(true),
            "with marks, the last must come back"
        );
        playback.ack("g0/i/1000");
        assert_eq!((playback.acked_ms, playback.marks.len()), (1000, 10));
        // Earlier marks echoed after a later one, a repeat and a stranger: no change.
        for name in ["g0/i/300", "g0/i/1000", "g9/x/1"] {
            playback.ack(name);
            assert_eq!(
                (playback.acked_ms, playback.marks.len()),
                (1000, 10),
                "{name}"
            );
        }
        playback.ack("g0/i/2000");
        assert_eq!(playback.acked_ms, 2000);
        assert!(
            playback.all_played(true),
            "acknowledged and long enough ago"
        );
    }
}
