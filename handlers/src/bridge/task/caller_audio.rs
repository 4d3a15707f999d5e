//! The caller's audio on its way to the model: every queued chunk appended in order, with
//! one flush, and the time the gateway held each one.

use super::*;
use base64::Engine as _;

impl Relay {
    /// Sends every queued caller chunk, in order, with one flush.
    pub(super) async fn flush_audio(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        self.batch.clear();
        self.audio.drain_into(&mut self.batch);
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        let batch = std::mem::take(&mut self.batch);
        let sending = async {
            for (_, chunk, _) in &batch {
                self.protocol.append_audio(chunk, &mut text);
                ws.feed(Message::Text(std::mem::take(&mut text).into()))
                    .await?;
            }
            ws.flush().await
        };
        let result = match tokio::time::timeout(config.stall_timeout, sending).await {
            Err(_) => Err(BridgeError::Stalled),
            Ok(result) => result.map_err(closed),
        };
        let mut batch = batch;
        match result {
            Ok(()) => {
                self.last_append = Instant::now();
                for (accepted, _, _) in &batch {
                    self.latency_inbound
                        .record(accepted.elapsed().as_secs_f64());
                }
            }
            // The upstream went away mid-send: the next session gets this audio.
            Err(_) => {
                let dropped = self.audio.requeue(batch.drain(..));
                self.call
                    .counters
                    .audio_dropped
                    .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.batch = batch;
        self.batch.clear();
        result
    }

    /// Protocols that want an unbroken input stream (GPT-Live: "keep input audio running,
    /// including silence"): silence over a gap of more than [`super::INPUT_GAP`] in the
    /// caller's audio (a carrier that pauses, audio held while a session opens). At most a
    /// second at a time: the check runs every 100 ms.
    pub(super) async fn fill_silence(
        &mut self,
        ws: &mut Upstream,
        config: &BridgeConfig,
    ) -> Result<(), BridgeError> {
        let gap = self.last_append.elapsed();
        if gap < super::INPUT_GAP {
            return Ok(());
        }
        let format = self.call.upstream_audio.input_format();
        let ms = gap.as_millis().min(1000) as usize;
        let silence = vec![format.silence_byte(); format.bytes_per_ms() * ms];
        let mut text = String::new();
        self.protocol
            .append_audio(&crate::codec::BASE64.encode(&silence), &mut text);
        send_text(ws, text, config).await?;
        self.last_append = Instant::now();
        Ok(())
    }
}
