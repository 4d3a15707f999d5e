//! PostgreSQL for the record tests: a database of their own on a real server, and reading
//! records back outside the test's runtime.

/// A fresh PostgreSQL database for one test, on the server at `CALLGATE_TEST_POSTGRES_URL`
/// (default `postgres://postgres@127.0.0.1:5432/postgres`; `.ci/run` makes sure one runs),
/// dropped when the value is. `None`, said loudly, when no server answers: the caller skips
/// its PostgreSQL half.
pub fn postgres_db() -> Option<TestDatabase> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let server = std::env::var("CALLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!(
        "callgate_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    // Two statements: CREATE DATABASE may not share an implicit transaction.
    let created = on_server(
        &server,
        &[
            &format!("DROP DATABASE IF EXISTS {name}"),
            &format!("CREATE DATABASE {name}"),
        ],
    );
    match created {
        Ok(()) => Some(TestDatabase {
            url: format!("{}/{name}", server.rsplit_once('/').unwrap().0),
            name,
            server,
        }),
        Err(error) => {
            eprintln!("\n!!! SKIPPING the PostgreSQL half: no server at {server} ({error:?}); .ci/run starts one\n");
            None
        }
    }
}

/// Runs `statements` on `server`, off the test's runtime (the client runs one of its own).
fn on_server(server: &str, statements: &[&str]) -> Result<(), postgres::Error> {
    let server = server.to_owned();
    let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
    std::thread::spawn(move || -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&server, postgres::NoTls)?;
        for statement in &statements {
            client.batch_execute(statement)?;
        }
        Ok(())
    })
    .join()
    .unwrap()
}

/// A test's own PostgreSQL database; dropped (connections and all) with this value.
pub struct TestDatabase {
    pub url: String,
    name: String,
    server: String,
}

impl TestDatabase {
    /// Cuts every connection to this database, as a server restart or a failover would.
    pub fn cut_connections(&self) {
        on_server(
            &self.server,
            &[&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            )],
        )
        .unwrap();
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = on_server(
            &self.server,
            &[&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )],
        );
    }
}

/// Reads one call's record from `location` (outside the runtime: the PostgreSQL client is
/// synchronous).
pub async fn read_record(
    location: callgate::records::Location,
    id: String,
) -> Option<callgate::records::CallRecord> {
    tokio::task::spawn_blocking(move || {
        callgate::records::RecordReader::at(&location)
            .unwrap()
            .show(&id)
            .unwrap()
    })
    .await
    .unwrap()
}
