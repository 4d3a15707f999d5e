//! Records in PostgreSQL (`records.url`), shared by every replica: the SQLite schema, created
//! and migrated at startup by numbered migrations that run once, under an advisory lock so
//! that replicas starting together do not race.
//!
//! The connection is plain TCP (the `postgres` client without TLS): run it inside the
//! cluster's network, or put a TLS-terminating proxy in front. A URL that asks for TLS
//! (`sslmode=require`) is refused at startup with that reason.

use anyhow::Context;
use postgres::{Client, NoTls};

use super::{CallRecord, Store, TranscriptLine};

/// Applied in order, each once; the number of applied migrations is kept in
/// `callgate_schema`. Never edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the schema of the SQLite store.
    "CREATE TABLE calls (
        key TEXT PRIMARY KEY,
        call_sid TEXT NOT NULL,
        stream_sid TEXT NOT NULL,
        carrier TEXT NOT NULL,
        tenant TEXT,
        started_at_ms BIGINT NOT NULL,
        ended_at_ms BIGINT,
        duration_ms BIGINT,
        outcome TEXT,
        close_code BIGINT,
        frames_in BIGINT,
        frames_out BIGINT,
        audio_dropped BIGINT,
        barge_ins BIGINT,
        dtmf BIGINT,
        tool_calls BIGINT,
        recording_location TEXT,
        recording_ms BIGINT
    );
    CREATE TABLE transcript (
        key TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (key, seq)
    );
    CREATE INDEX calls_by_sid ON calls (call_sid);
    CREATE INDEX calls_by_start ON calls (started_at_ms DESC);",
];

/// Any number, the same for every replica: the lock migrations take.
const MIGRATION_LOCK: i64 = 0x6361_6c6c_6761_7465;

/// A PostgreSQL connection, opened again when it breaks (a server restart, a failover, an
/// idle connection cut by a proxy).
pub(super) struct Postgres {
    client: Client,
    url: String,
}

impl Postgres {
    /// Connects to `url` and brings the schema up to date.
    pub(super) fn connect(url: &str) -> anyhow::Result<Self> {
        if url.contains("sslmode=require") || url.contains("sslmode=verify") {
            anyhow::bail!(
                "records.url asks for TLS (sslmode), which this build's PostgreSQL client does not speak: connect over the cluster network or through a TLS proxy"
            );
        }
        let mut client = connect(url)?;
        migrate(&mut client)?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }

    /// Runs `query`; if the connection turns out to be broken, connects again and runs it
    /// once more (an operation that fails twice is counted and logged by the writer).
    fn run<T>(
        &mut self,
        query: impl Fn(&mut Client) -> Result<T, postgres::Error>,
    ) -> anyhow::Result<T> {
        match query(&mut self.client) {
            Err(error) if self.client.is_closed() || lost(&error) => {
                tracing::warn!(%error, at = %describe(&self.url), "PostgreSQL connection lost; connecting again");
                self.client = connect(&self.url)?;
                Ok(query(&mut self.client)?)
            }
            result => Ok(result?),
        }
    }
}

/// Connects to `url`, within 10 s unless the URL sets its own `connect_timeout` (an
/// unreachable server must not hold startup, or the records thread, for minutes).
fn connect(url: &str) -> anyhow::Result<Client> {
    let mut config: postgres::Config = url
        .parse()
        .with_context(|| format!("records.url is not a PostgreSQL URL ({})", describe(url)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    config
        .connect(NoTls)
        .with_context(|| format!("connecting to PostgreSQL at {}", describe(url)))
}

/// Applies the migrations not yet applied, in one transaction under an advisory lock.
fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS callgate_schema (applied BIGINT NOT NULL)")?;
    let applied: i64 = match tx.query_opt("SELECT applied FROM callgate_schema", &[])? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO callgate_schema (applied) VALUES (0)", &[])?;
            0
        }
    };
    for (n, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(migration)
            .with_context(|| format!("records schema migration {}", n + 1))?;
    }
    tx.execute(
        "UPDATE callgate_schema SET applied = $1",
        &[&(MIGRATIONS.len() as i64)],
    )?;
    tx.commit()?;
    Ok(())
}

/// The error says the connection is gone: closed, or ended by the server (SQLSTATE class
/// 57, operator intervention, e.g. a shutdown or `pg_terminate_backend`; class 08,
/// connection exception).
fn lost(error: &postgres::Error) -> bool {
    error.is_closed()
        || error
            .code()
            .is_some_and(|state| state.code().starts_with("57") || state.code().starts_with("08"))
}

/// `host:port/db` of a URL, without user or password (for logs and errors).
pub(super) fn describe(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('?').next().unwrap_or(rest).to_owned()
}

impl Store for Postgres {
    fn start(&mut self, r: &CallRecord) -> anyhow::Result<()> {
        self.run(|client| {
            client.execute(
                "INSERT INTO calls (key, call_sid, stream_sid, carrier, tenant, started_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
                &[
                    &r.key,
                    &r.call_sid,
                    &r.stream_sid,
                    &r.carrier,
                    &r.tenant,
                    &r.started_at_ms,
                ],
            )
        })?;
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
        self.run(|client| {
            client.execute(
                "INSERT INTO transcript (key, seq, at_ms, role, text) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key, seq) DO UPDATE SET at_ms = EXCLUDED.at_ms, role = EXCLUDED.role, text = EXCLUDED.text",
                &[&key, &seq, &at_ms, &role, &text],
            )
        })?;
        Ok(())
    }

    fn end(&mut self, r: &CallRecord) -> anyhow::Result<()> {
        self.run(|client| {
            client.execute(
            "UPDATE calls SET ended_at_ms = $2, duration_ms = $3, outcome = $4, close_code = $5, frames_in = $6,
                              frames_out = $7, audio_dropped = $8, barge_ins = $9, dtmf = $10, tool_calls = $11,
                              recording_location = $12, recording_ms = $13 WHERE key = $1",
            &[
                &r.key,
                &r.ended_at_ms,
                &r.duration_ms,
                &r.outcome,
                &r.close_code,
                &r.frames_in,
                &r.frames_out,
                &r.audio_dropped,
                &r.barge_ins,
                &r.dtmf,
                &r.tool_calls,
                &r.recording_location,
                &r.recording_ms,
            ],
            )
        })?;
        Ok(())
    }

    fn recent(&mut self, limit: usize) -> anyhow::Result<Vec<String>> {
        let rows = self.run(|client| {
            client.query(
                "SELECT key FROM calls ORDER BY started_at_ms DESC LIMIT $1",
                &[&(limit as i64)],
            )
        })?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn show(&mut self, key_or_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let Some(row) = self.run(|client| client.query_opt(
            "SELECT key, call_sid, stream_sid, carrier, tenant, started_at_ms, ended_at_ms, duration_ms, outcome, close_code,
                    frames_in, frames_out, audio_dropped, barge_ins, dtmf, tool_calls, recording_location, recording_ms
             FROM calls WHERE key = $1 OR call_sid = $1 ORDER BY started_at_ms DESC LIMIT 1",
            &[&key_or_sid],
        ))?
        else {
            return Ok(None);
        };
        let number = |i: usize| row.get::<_, Option<i64>>(i).unwrap_or_default();
        let key: String = row.get(0);
        let transcript = self
            .run(|client| {
                client.query(
                    "SELECT at_ms, role, text FROM transcript WHERE key = $1 ORDER BY seq",
                    &[&key],
                )
            })?
            .iter()
            .map(|line| TranscriptLine {
                at_ms: line.get(0),
                role: line.get(1),
                text: line.get(2),
            })
            .collect();
        Ok(Some(CallRecord {
            key,
            call_sid: row.get(1),
            stream_sid: row.get(2),
            carrier: row.get(3),
            tenant: row.get(4),
            started_at_ms: row.get(5),
            ended_at_ms: number(6),
            duration_ms: number(7),
            outcome: row
                .get::<_, Option<String>>(8)
                .unwrap_or_else(|| "in progress or interrupted".into()),
            close_code: number(9),
            frames_in: number(10),
            frames_out: number(11),
            audio_dropped: number(12),
            barge_ins: number(13),
            dtmf: number(14),
            tool_calls: number(15),
            recording_location: row.get(16),
            recording_ms: row.get(17),
            transcript,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_see_the_password() {
        assert_eq!(
            describe("postgres://callgate:s3cret@db.internal:5432/calls?connect_timeout=5"),
            "db.internal:5432/calls"
        );
        assert_eq!(describe("postgres://localhost/calls"), "localhost/calls");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let error = Postgres::connect("postgres://callgate:pw@db/calls?sslmode=require")
            .err()
            .unwrap();
        assert!(error.to_string().contains("TLS"), "{error}");
        let error = format!(
            "{:#}",
            Postgres::connect("postgres://db/calls?bogus_option=1")
                .err()
                .unwrap()
        );
        assert!(error.contains("not a PostgreSQL URL"), "{error}");
    }
}
