//! `dbmanager serve`: every endpoint scraped with a real HTTP client, metrics that move, and
//! readiness that follows a stopped and restarted test server.

#[path = "../../dbmanager/tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(args: &[&str], data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("DBMANAGER_DATA_DIR", data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        Self { child, addr }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(body: &str, name: &str, fragment: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(fragment))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn serve_on_the_embedded_default_answers_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&[], dir.path());
    let (code, body) = served.get("/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = served.get("/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["connections"]["main"]["status"], "healthy");
    let (code, body) = served.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&body, "dbmanager_connection_status", "connection=\"main\""),
        Some(1.0),
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"));
    let (code, body) = served.get("/stats");
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["total"], 1);
    assert_eq!(stats["connections"]["main"]["kind"], "sqlite");
    assert_eq!(served.get("/nope").0, 404);
    assert_eq!(served.stop(), Some(0), "graceful exit on SIGTERM");
}

#[test]
fn readiness_and_metrics_follow_a_stopped_server() {
    let mut mongo = support::OwnedServer::mongodb();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:
  health_check_interval: 200ms
  retry_attempts: 1
  connections:
    lite:
      type: sqlite
      filepath: '{}'
    docs:
      type: mongodb
      host: 127.0.0.1:{}
      database: app
      sslmode: disable
      connect_timeout: 500ms
    optional:
      type: sqlite
      filepath: /nonexistent-dir/x.db
      critical: false
",
            dir.path().join("l.db").display(),
            mongo.port
        ),
    )
    .unwrap();
    let served = Served::start(&["--config", config.to_str().unwrap()], dir.path());
    let (code, body) = served.get("/readyz");
    assert_eq!(
        code, 200,
        "a non-critical connection that is down does not block readiness: {body}"
    );
    let checks = || {
        metric(
            &served.get("/metrics").1,
            "dbmanager_health_check_duration_seconds_count",
            "connection=\"docs\"",
        )
        .unwrap_or(0.0)
    };
    let before = checks();
    assert!(
        wait_for(Duration::from_secs(10), || checks() > before),
        "health checks run and are counted"
    );

    mongo.stop();
    assert!(
        wait_for(Duration::from_secs(15), || served.get("/readyz").0 == 503),
        "readiness turns 503"
    );
    let (_, body) = served.get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["connections"]["docs"]["status"], "unhealthy");
    assert!(ready["connections"]["docs"]["last_error"].is_string());
    assert_eq!(
        metric(
            &served.get("/metrics").1,
            "dbmanager_connection_status",
            "connection=\"docs\""
        ),
        Some(0.0)
    );

    mongo.restart();
    assert!(
        wait_for(Duration::from_secs(20), || served.get("/readyz").0 == 200),
        "readiness comes back"
    );
    assert_eq!(
        metric(
            &served.get("/metrics").1,
            "dbmanager_connection_status",
            "connection=\"docs\""
        ),
        Some(1.0)
    );
    assert_eq!(served.stop(), Some(0));
}
