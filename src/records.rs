//! Call records in an embedded SQLite database: a row per call, written when the call starts
//! and completed when it ends, and its transcript appended line by line as it is spoken, so
//! a crash loses nothing already said.
//!
//! One thread owns the connection (SQLite is synchronous; nothing blocks the runtime); calls
//! send it operations over a channel. WAL mode: each line is durable once committed.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::Context;
use callgate_handlers::call_state::CallState;
use callgate_handlers::feed::FeedEvent;
use rusqlite::{params, Connection};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::recording::RecordingInfo;

/// How long a finished call's record waits for its recording to be written and uploaded.
const RECORDING_WAIT: std::time::Duration = std::time::Duration::from_secs(150);

/// Columns added after the first schema, created on databases that predate them.
const ADDED_COLUMNS: &[(&str, &str)] =
    &[("recording_location", "TEXT"), ("recording_ms", "INTEGER")];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    call_sid TEXT NOT NULL,
    stream_sid TEXT NOT NULL,
    carrier TEXT NOT NULL,
    tenant TEXT,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER,
    duration_ms INTEGER,
    outcome TEXT,
    close_code INTEGER,
    frames_in INTEGER,
    frames_out INTEGER,
    audio_dropped INTEGER,
    barge_ins INTEGER,
    dtmf INTEGER,
    tool_calls INTEGER,
    recording_location TEXT,
    recording_ms INTEGER
);
CREATE TABLE IF NOT EXISTS transcript (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (key, seq)
);
CREATE INDEX IF NOT EXISTS calls_by_sid ON calls (call_sid);
";

enum Op {
    /// The call's row, from the record's identity fields.
    Start(Box<CallRecord>),
    Line {
        key: String,
        seq: i64,
        at_ms: i64,
        role: String,
        text: String,
    },
    /// The call's outcome and counters.
    End(Box<CallRecord>),
}

/// The writer's handle; cheap to clone.
#[derive(Clone)]
pub struct Records {
    ops: mpsc::Sender<Op>,
    path: Arc<PathBuf>,
    webhook: Option<Arc<Webhook>>,
}

/// POSTs each finished record as JSON, retrying with backoff.
struct Webhook {
    url: String,
    retries: u32,
    client: callgate_handlers::bridge::tools::HttpsClient,
}

impl Webhook {
    async fn deliver(&self, record: &CallRecord) {
        let body = serde_json::to_vec(record).unwrap_or_default();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(
                    250 << (attempt - 1).min(5),
                ))
                .await;
            }
            let request = http::Request::post(&self.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())));
            let Ok(request) = request else { return };
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.client.request(request),
            )
            .await;
            match sent {
                Ok(Ok(response)) if response.status().is_success() => {
                    metrics::counter!("callgate_record_webhooks_total", "outcome" => "delivered")
                        .increment(1);
                    return;
                }
                Ok(Ok(response)) => tracing::warn!(
                    status = response.status().as_u16(),
                    attempt,
                    "record webhook refused"
                ),
                Ok(Err(error)) => tracing::warn!(%error, attempt, "record webhook failed"),
                Err(_) => tracing::warn!(attempt, "record webhook timed out"),
            }
        }
        metrics::counter!("callgate_record_webhooks_total", "outcome" => "gave_up").increment(1);
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("path", &self.path).finish()
    }
}

/// A finished call, as stored (and as POSTed to the records webhook).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallRecord {
    /// Unique per call (start time and gateway id).
    pub key: String,
    /// Carrier call id.
    pub call_sid: String,
    /// Carrier stream id.
    pub stream_sid: String,
    /// Carrier dialect.
    pub carrier: String,
    /// Tenant, when authenticated.
    pub tenant: Option<String>,
    /// Unix ms.
    pub started_at_ms: i64,
    /// Unix ms.
    pub ended_at_ms: i64,
    /// Call length.
    pub duration_ms: i64,
    /// `completed`, `failed`, ...
    pub outcome: String,
    /// Close code sent to the carrier.
    pub close_code: i64,
    /// Media frames in and out.
    pub frames_in: i64,
    /// Media frames out.
    pub frames_out: i64,
    /// Caller audio dropped.
    pub audio_dropped: i64,
    /// Barge-ins.
    pub barge_ins: i64,
    /// DTMF key presses.
    pub dtmf: i64,
    /// Function tools the model called.
    pub tool_calls: i64,
    /// Where the call's recording is (a file path or an `s3://` URL), when recorded.
    pub recording_location: Option<String>,
    /// The recording's length, when recorded.
    pub recording_ms: Option<i64>,
    /// The transcript, in order.
    pub transcript: Vec<TranscriptLine>,
}

/// One transcript line.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptLine {
    /// Milliseconds since the call started.
    pub at_ms: i64,
    /// `user` or `assistant`.
    pub role: String,
    /// What was said (DTMF redacted in PCI mode).
    pub text: String,
}

impl Records {
    /// Opens (creating if needed) the database at `path` and starts the writer thread;
    /// with `webhook_url`, finished records are also POSTed there (`retries` retries).
    pub fn open_with_webhook(
        path: &Path,
        webhook_url: Option<&str>,
        retries: u32,
    ) -> anyhow::Result<Self> {
        let mut records = Self::open(path)?;
        if let Some(url) = webhook_url.filter(|u| !u.is_empty()) {
            let client = callgate_handlers::bridge::tools::https_client();
            records.webhook = Some(Arc::new(Webhook {
                url: url.to_owned(),
                retries,
                client,
            }));
        }
        Ok(records)
    }

    /// Opens (creating if needed) the database at `path` and starts the writer thread.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let connection = open(path)?;
        let (ops, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("callgate-records".into())
            .spawn(move || writer(connection, rx))
            .context("starting the records thread")?;
        Ok(Self {
            ops,
            path: Arc::new(path.to_owned()),
            webhook: None,
        })
    }

    /// Records a call as it starts and follows its feed until it ends: transcript lines as
    /// they are final, the record when it ends. Returns the call's key.
    pub fn follow(
        &self,
        session: &Arc<CallState>,
        recording: Option<oneshot::Receiver<RecordingInfo>>,
    ) -> String {
        let started_at_ms = unix_ms(session.started_at);
        let mut record = CallRecord {
            key: call_key(session),
            call_sid: session.call_sid.clone(),
            stream_sid: session.stream_sid.clone(),
            carrier: session.dialect.name().to_owned(),
            tenant: session.identity.tenant.clone(),
            started_at_ms,
            ..CallRecord::default()
        };
        let key = record.key.clone();
        let _ = self.ops.send(Op::Start(Box::new(record.clone())));
        let mut feed = session.feed.subscribe();
        let ops = self.ops.clone();
        let session = session.clone();
        let webhook = self.webhook.clone();
        tokio::spawn(async move {
            let mut seq = 0i64;
            let mut transferred = None;
            loop {
                match feed.recv().await {
                    Ok(FeedEvent::Transcript {
                        role,
                        text,
                        is_final: true,
                        at_ms,
                    }) => {
                        seq += 1;
                        let line = TranscriptLine {
                            at_ms: at_ms as i64,
                            role: role.to_owned(),
                            text,
                        };
                        let _ = ops.send(Op::Line {
                            key: record.key.clone(),
                            seq,
                            at_ms: line.at_ms,
                            role: line.role.clone(),
                            text: line.text.clone(),
                        });
                        record.transcript.push(line);
                    }
                    Ok(FeedEvent::Transferred { target, .. }) => transferred = Some(target),
                    Ok(FeedEvent::CallEnded {
                        close_code,
                        outcome,
                    }) => {
                        let c = &session.counters;
                        use std::sync::atomic::Ordering::Relaxed;
                        record.ended_at_ms = unix_ms(std::time::SystemTime::now());
                        record.duration_ms = record.ended_at_ms - started_at_ms;
                        record.outcome = match &transferred {
                            Some(target) => format!("transferred:{target}"),
                            None => outcome.to_owned(),
                        };
                        record.close_code = close_code.into();
                        record.frames_in = c.frames_in.load(Relaxed) as i64;
                        record.frames_out = c.frames_out.load(Relaxed) as i64;
                        record.audio_dropped = c.audio_dropped.load(Relaxed) as i64;
                        record.barge_ins = c.clears.load(Relaxed) as i64;
                        record.dtmf = c.dtmf.load(Relaxed) as i64;
                        record.tool_calls = c.tool_calls.load(Relaxed) as i64;
                        // The recording is complete (and uploaded) soon after the call.
                        if let Some(recording) = recording {
                            let waited = tokio::time::timeout(RECORDING_WAIT, recording).await;
                            if let Ok(Ok(info)) = waited {
                                record.recording_location = Some(info.location);
                                record.recording_ms = Some(info.duration_ms as i64);
                            }
                        }
                        let record = Box::new(record);
                        if let Some(webhook) = webhook {
                            let posted = record.clone();
                            tokio::spawn(async move { webhook.deliver(&posted).await });
                        }
                        let _ = ops.send(Op::End(record));
                        return;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        metrics::counter!("callgate_record_events_missed_total").increment(missed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        key
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A call's key: its start time and gateway id (also its recording's file name).
pub fn call_key(call: &CallState) -> String {
    format!("{}-{}", unix_ms(call.started_at), call.id)
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn open(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Transcripts are private: the database is the owner's alone (0600), and SQLite gives
    // its -wal and -shm files the database's own mode.
    create_private(path)?;
    let connection =
        Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    // WAL: a committed line survives a crash of the process; NORMAL sync keeps writes cheap.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.execute_batch(SCHEMA)?;
    for (column, kind) in ADDED_COLUMNS {
        let present: bool = connection
            .prepare("SELECT 1 FROM pragma_table_info('calls') WHERE name = ?1")?
            .exists(params![column])?;
        if !present {
            connection.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(connection)
}

/// Creates `path` with mode 0600 if it does not exist, and tightens it if it does.
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(())
}

fn writer(connection: Connection, ops: mpsc::Receiver<Op>) {
    for op in ops {
        let result = match op {
            Op::Start(r) => connection.execute(
                "INSERT OR IGNORE INTO calls (key, call_sid, stream_sid, carrier, tenant, started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.key, r.call_sid, r.stream_sid, r.carrier, r.tenant, r.started_at_ms],
            ),
            Op::Line { key, seq, at_ms, role, text } => connection.execute(
                "INSERT OR REPLACE INTO transcript (key, seq, at_ms, role, text) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, seq, at_ms, role, text],
            ),
            Op::End(record) => connection.execute(
                "UPDATE calls SET ended_at_ms = ?2, duration_ms = ?3, outcome = ?4, close_code = ?5, frames_in = ?6, frames_out = ?7,
                                  audio_dropped = ?8, barge_ins = ?9, dtmf = ?10, tool_calls = ?11,
                                  recording_location = ?12, recording_ms = ?13 WHERE key = ?1",
                params![
                    record.key,
                    record.ended_at_ms,
                    record.duration_ms,
                    record.outcome,
                    record.close_code,
                    record.frames_in,
                    record.frames_out,
                    record.audio_dropped,
                    record.barge_ins,
                    record.dtmf,
                    record.tool_calls,
                    record.recording_location,
                    record.recording_ms
                ],
            ),
        };
        if let Err(error) = result {
            metrics::counter!("callgate_record_write_errors_total").increment(1);
            tracing::error!(%error, "writing a call record failed");
        }
    }
}

/// Reads records (the `callgate calls` command and tests).
pub struct RecordReader {
    connection: Connection,
}

impl RecordReader {
    /// Opens the database read-only.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let connection =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { connection })
    }

    /// The most recent calls, newest first.
    pub fn list(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        let mut statement = self
            .connection
            .prepare("SELECT key FROM calls ORDER BY started_at_ms DESC LIMIT ?1")?;
        let keys: Vec<String> = statement
            .query_map(params![limit as i64], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        // Every listed key is found (nothing deletes rows); a missing one would be skipped.
        keys.iter()
            .filter_map(|k| self.show(k).transpose())
            .collect()
    }

    /// One call by key or call id (the latest with that call id).
    pub fn show(&self, key_or_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let mut statement = self.connection.prepare(
            "SELECT key, call_sid, stream_sid, carrier, tenant, started_at_ms, ended_at_ms, duration_ms, outcome, close_code,
                    frames_in, frames_out, audio_dropped, barge_ins, dtmf, tool_calls, recording_location, recording_ms
             FROM calls WHERE key = ?1 OR call_sid = ?1 ORDER BY started_at_ms DESC LIMIT 1",
        )?;
        let mut rows = statement.query(params![key_or_sid])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let key: String = row.get(0)?;
        let mut record = CallRecord {
            key: key.clone(),
            call_sid: row.get(1)?,
            stream_sid: row.get(2)?,
            carrier: row.get(3)?,
            tenant: row.get(4)?,
            started_at_ms: row.get(5)?,
            ended_at_ms: row.get::<_, Option<i64>>(6)?.unwrap_or_default(),
            duration_ms: row.get::<_, Option<i64>>(7)?.unwrap_or_default(),
            outcome: row
                .get::<_, Option<String>>(8)?
                .unwrap_or_else(|| "in progress or interrupted".into()),
            close_code: row.get::<_, Option<i64>>(9)?.unwrap_or_default(),
            frames_in: row.get::<_, Option<i64>>(10)?.unwrap_or_default(),
            frames_out: row.get::<_, Option<i64>>(11)?.unwrap_or_default(),
            audio_dropped: row.get::<_, Option<i64>>(12)?.unwrap_or_default(),
            barge_ins: row.get::<_, Option<i64>>(13)?.unwrap_or_default(),
            dtmf: row.get::<_, Option<i64>>(14)?.unwrap_or_default(),
            tool_calls: row.get::<_, Option<i64>>(15)?.unwrap_or_default(),
            recording_location: row.get(16)?,
            recording_ms: row.get(17)?,
            transcript: Vec::new(),
        };
        let mut lines = self
            .connection
            .prepare("SELECT at_ms, role, text FROM transcript WHERE key = ?1 ORDER BY seq")?;
        record.transcript = lines
            .query_map(params![key], |row| {
                Ok(TranscriptLine {
                    at_ms: row.get(0)?,
                    role: row.get(1)?,
                    text: row.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(record))
    }
}
