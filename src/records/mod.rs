//! Call records: a row per call, written when the call starts and completed when it ends, and
//! its transcript appended line by line as it is spoken, so a crash loses nothing already
//! said. Kept in an embedded SQLite file (`records.path`, the default: nothing to install) or
//! in PostgreSQL (`records.url`, shared by every replica), the same schema in both.
//!
//! One thread owns the store's connection (both clients are synchronous; nothing blocks the
//! runtime); calls send it operations over a channel.

mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::Context;
use callgate_handlers::call_state::CallState;
use callgate_handlers::feed::FeedEvent;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::recording::RecordingInfo;

/// How long a finished call's record waits for its recording to be written and uploaded.
const RECORDING_WAIT: std::time::Duration = std::time::Duration::from_secs(150);

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

/// Where records are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:password@host/db`).
    Postgres(String),
}

impl Location {
    /// PostgreSQL when `url` is set, else the SQLite file at `path`.
    pub fn of(path: &str, url: &str) -> Self {
        if url.is_empty() {
            Self::Sqlite(PathBuf::from(path))
        } else {
            Self::Postgres(url.to_owned())
        }
    }

    /// For logs: the file, or the database's host and name (never the password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => postgres::describe(url),
        }
    }

    /// Opens the store for writing (creating the schema or migrating it).
    fn open(&self) -> anyhow::Result<Box<dyn Store>> {
        Ok(match self {
            Self::Sqlite(path) => Box::new(sqlite::Sqlite::open(path)?),
            Self::Postgres(url) => Box::new(postgres::Postgres::connect(url)?),
        })
    }
}

/// A store of records, used from one thread.
trait Store: Send {
    /// The call's row, from the record's identity fields (a second start is ignored).
    fn start(&mut self, record: &CallRecord) -> anyhow::Result<()>;
    /// One transcript line (the same `seq` again replaces it).
    fn line(
        &mut self,
        key: &str,
        seq: i64,
        at_ms: i64,
        role: &str,
        text: &str,
    ) -> anyhow::Result<()>;
    /// The call's outcome and counters.
    fn end(&mut self, record: &CallRecord) -> anyhow::Result<()>;
    /// Keys of the most recent calls, newest first.
    fn recent(&mut self, limit: usize) -> anyhow::Result<Vec<String>>;
    /// One call by key or call id (the latest with that call id), with its transcript.
    fn show(&mut self, key_or_sid: &str) -> anyhow::Result<Option<CallRecord>>;
}

/// The writer's handle; cheap to clone.
#[derive(Clone)]
pub struct Records {
    ops: mpsc::Sender<Op>,
    location: Arc<Location>,
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
        f.debug_struct("Records")
            .field("at", &self.location.describe())
            .finish()
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
    /// Opens (creating or migrating the schema) the store at `location` and starts the
    /// writer thread; with `webhook_url`, finished records are also POSTed there (`retries`
    /// retries).
    pub fn open_with_webhook(
        location: &Location,
        webhook_url: Option<&str>,
        retries: u32,
    ) -> anyhow::Result<Self> {
        let mut records = Self::open(location)?;
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

    /// Opens (creating or migrating the schema) the store at `location` and starts the
    /// writer thread.
    pub fn open(location: &Location) -> anyhow::Result<Self> {
        let (ops, rx) = mpsc::channel::<Op>();
        // The store is opened on its own thread: the PostgreSQL client runs a runtime of its
        // own, which may not start inside the gateway's. Startup waits for the outcome.
        let (opened_tx, opened) = mpsc::channel();
        let at = location.clone();
        std::thread::Builder::new()
            .name("callgate-records".into())
            .spawn(move || match at.open() {
                Ok(store) => {
                    let _ = opened_tx.send(Ok(()));
                    writer(store, rx);
                }
                Err(error) => {
                    let _ = opened_tx.send(Err(error));
                }
            })
            .context("starting the records thread")?;
        opened
            .recv()
            .context("the records thread ended while opening its store")??;
        Ok(Self {
            ops,
            location: Arc::new(location.clone()),
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

    /// Where the records are kept.
    pub fn location(&self) -> &Location {
        &self.location
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

/// The writer thread: each operation in order; a failure is counted and logged, and the
/// next operation is tried (a call's record must never stop the others').
fn writer(mut store: Box<dyn Store>, ops: mpsc::Receiver<Op>) {
    for op in ops {
        let result = match op {
            Op::Start(record) => store.start(&record),
            Op::Line {
                key,
                seq,
                at_ms,
                role,
                text,
            } => store.line(&key, seq, at_ms, &role, &text),
            Op::End(record) => store.end(&record),
        };
        if let Err(error) = result {
            metrics::counter!("callgate_record_write_errors_total").increment(1);
            tracing::error!(error = %format!("{error:#}"), "writing a call record failed");
        }
    }
}

/// Reads records (the `callgate calls` command and tests), from either store.
pub struct RecordReader {
    store: std::sync::Mutex<Box<dyn Store>>,
}

impl RecordReader {
    /// Opens an SQLite database read-only.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: std::sync::Mutex::new(Box::new(sqlite::Sqlite::open_read_only(path)?)),
        })
    }

    /// Opens the store at `location` (PostgreSQL, or SQLite read-only). The PostgreSQL
    /// client is synchronous: call this (and read) outside an async runtime, e.g. in
    /// `spawn_blocking`.
    pub fn at(location: &Location) -> anyhow::Result<Self> {
        match location {
            Location::Sqlite(path) => Self::open(path),
            Location::Postgres(url) => Ok(Self {
                store: std::sync::Mutex::new(Box::new(postgres::Postgres::connect(url)?)),
            }),
        }
    }

    /// The most recent calls, newest first.
    pub fn list(&self, limit: usize) -> anyhow::Result<Vec<CallRecord>> {
        let mut store = callgate_layers::util::lock(&self.store);
        let keys = store.recent(limit)?;
        // Every listed key is found (nothing deletes rows); a missing one would be skipped.
        keys.iter()
            .filter_map(|k| store.show(k).transpose())
            .collect()
    }

    /// One call by key or call id (the latest with that call id).
    pub fn show(&self, key_or_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        callgate_layers::util::lock(&self.store).show(key_or_sid)
    }
}
