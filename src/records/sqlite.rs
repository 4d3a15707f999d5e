//! Records in an embedded SQLite file (the default): WAL mode, so a committed line survives
//! a crash of the process; the file is the owner's alone (0600).

use std::path::Path;

use anyhow::Context;
use rusqlite::{params, Connection};

use super::{CallRecord, Store, TranscriptLine};

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

/// An SQLite connection.
pub(super) struct Sqlite {
    connection: Connection,
}

impl Sqlite {
    /// Opens (creating and migrating) the database at `path` for writing.
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            connection: open(path)?,
        })
    }

    /// Opens the database at `path` for reading only.
    pub(super) fn open_read_only(path: &Path) -> anyhow::Result<Self> {
        let connection =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { connection })
    }
}

impl Store for Sqlite {
    fn start(&mut self, r: &CallRecord) -> anyhow::Result<()> {
        self.connection.execute(
            "INSERT OR IGNORE INTO calls (key, call_sid, stream_sid, carrier, tenant, started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.key, r.call_sid, r.stream_sid, r.carrier, r.tenant, r.started_at_ms],
        )?;
        Ok(())
    }

    fn line(
        &mut self,
        key: &str,
        seq: i64,
        at_ms: i64,
        role: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        self.connection.execute(
            "INSERT OR REPLACE INTO transcript (key, seq, at_ms, role, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, seq, at_ms, role, text],
        )?;
        Ok(())
    }

    fn end(&mut self, record: &CallRecord) -> anyhow::Result<()> {
        self.connection.execute(
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
        )?;
        Ok(())
    }

    fn recent(&mut self, limit: usize) -> anyhow::Result<Vec<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT key FROM calls ORDER BY started_at_ms DESC LIMIT ?1")?;
        let keys = statement
            .query_map(params![limit as i64], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn show(&mut self, key_or_sid: &str) -> anyhow::Result<Option<CallRecord>> {
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
