//! The caller's audio on its way to the model: every queued chunk appended in order, with
//! one flush, and the time the gateway held each one.

use super::*;

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
            for (_, chunk) in &batch {
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
        if result.is_ok() {
            for (accepted, _) in &batch {
                self.latency_inbound
                    .record(accepted.elapsed().as_secs_f64());
            }
        }
        self.batch = batch;
        self.batch.clear();
        result
    }
}
