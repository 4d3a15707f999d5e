//! `[tape]`: call tapes on disk. What a tape holds and how it is redacted is
//! `callgate_handlers::tape`; here each call's lines are written to
//! `<dir>/<unix ms>-<connection id>.jsonl` (0600) by a task of its own, flushed whenever
//! the queue runs dry, so a crash loses at most the lines still queued.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use callgate_handlers::tape::{Redaction, Tape, VERSION};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Lines queued for the disk before the tape drops one (and counts it).
const QUEUED_LINES: usize = 4096;

/// `[tape]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TapeConfig {
    /// Tape every call.
    pub enabled: bool,
    /// Where tapes are written.
    pub dir: String,
    /// Keep audio payloads (else their length and a hash; such tapes replay their timing
    /// and events, with silence for audio).
    pub audio: bool,
}

impl Default for TapeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "tapes".into(),
            audio: true,
        }
    }
}

/// Opens the tapes of calls.
#[derive(Debug, Clone)]
pub struct Tapes {
    dir: PathBuf,
    redaction: Redaction,
    /// What a replay needs to behave like this gateway (see `replay::TapeSettings`).
    settings: Arc<Value>,
}

impl Tapes {
    /// Creates `dir` (0700).
    pub fn new(config: &TapeConfig, pci: bool, settings: Value) -> anyhow::Result<Self> {
        let dir = PathBuf::from(&config.dir);
        crate::recording::create_private_dir(&dir)?;
        Ok(Self {
            dir,
            redaction: Redaction {
                audio: config.audio,
                pci,
            },
            settings: Arc::new(settings),
        })
    }

    /// A tape for connection `id` on `path` (its carrier `dialect`, or `detect`).
    pub fn open(&self, id: u64, path: &str, dialect: &str) -> Arc<Tape> {
        let (lines, rx) = mpsc::channel(QUEUED_LINES);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let file = self.dir.join(format!("{started}-{id}.jsonl"));
        let header = json!({
            "callgate_tape": VERSION,
            "path": path,
            "dialect": dialect,
            "audio": self.redaction.audio,
            "pci": self.redaction.pci,
            "settings": *self.settings,
        });
        tokio::spawn(async move {
            if let Err(error) = write(file, rx).await {
                tracing::error!(error = format!("{error:#}"), "call tape failed");
            }
        });
        Arc::new(Tape::new(header, self.redaction, lines))
    }
}

async fn write(path: PathBuf, mut lines: mpsc::Receiver<String>) -> anyhow::Result<()> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    let mut out = tokio::io::BufWriter::new(file);
    while let Some(line) = lines.recv().await {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        while let Ok(line) = lines.try_recv() {
            out.write_all(line.as_bytes()).await?;
            out.write_all(b"\n").await?;
        }
        out.flush().await?;
    }
    Ok(())
}
