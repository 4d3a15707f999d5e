//! A real `redis-server` on a free loopback port, owned by one test: stopped (SIGKILL) and
//! started again on the same port when the test says, removed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One Redis server process (no persistence: a restart comes back empty, the hardest case).
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    /// A fresh server, or `None` (with a loud message) where `redis-server` is not installed
    /// and the run does not require it (`.ci/run` sets `CALLGATE_TEST_REQUIRE_REDIS=1`).
    pub async fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("CALLGATE_TEST_REQUIRE_REDIS").is_none(),
                "redis-server is not installed but CALLGATE_TEST_REQUIRE_REDIS is set"
            );
            eprintln!("\n!!! SKIPPED: redis-server is not installed (apt-get install redis-server; .ci/run does it) !!!\n");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.resume().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port and waits until it answers.
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
