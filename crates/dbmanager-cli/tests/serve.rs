//! `dbmanager serve`: every endpoint scraped with a real HTTP client, metrics that move, and
//! readiness that follows a stopped and restarted test server.

// The shared test support names the library's backend features, which this crate lacks.
#[path = "../../dbmanager/tests/support/mod.rs"]
#[allow(unused_imports, unused_variables, unexpected_cfgs)]
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
    // Connecting happens behind the server: ready once the SQLite file is open.
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));
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
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));
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

/// A server that accepts TCP connections and never says a word, holding them open.
struct Blackhole {
    port: u16,
    _held: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Blackhole {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        Self { port, _held: held }
    }
}

/// A connection added by a reload while its server is down is treated as at startup: listed
/// (unavailable) by `/readyz` and `/stats`, not ready when it is critical, and connected by the
/// health loop later. It used to be left out of everything (ready stayed 200) until the next
/// reload, mentioned only in `last_reload`.
#[test]
fn a_connection_added_by_a_reload_while_its_server_is_down_is_shown_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        "dbmanager:\n  health_check_interval: 1s\n  connections:\n    a: {type: sqlite, filepath: ':memory:'}\n",
    );
    let served = Served::start(&["--config", &path], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));
    let down = support::free_port();
    std::fs::write(
        &path,
        format!(
            "dbmanager:\n  health_check_interval: 1s\n  connections:\n    a: {{type: sqlite, filepath: ':memory:'}}\n    \
             late: {{type: postgres, host: 127.0.0.1, port: {down}, database: d, connect_timeout: 1s}}\n"
        ),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || {
            !stats_of(&served)["last_reload"].is_null()
        }),
        "{}",
        served.get("/stats").1
    );
    let stats = stats_of(&served);
    assert_eq!(
        stats["last_reload"]["added"],
        serde_json::json!(["late"]),
        "{stats}"
    );
    assert_eq!(stats["last_reload"]["failed"][0][0], "late", "{stats}");
    assert_eq!(
        stats["connections"]["late"]["status"], "unavailable",
        "{stats}"
    );
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 503, "a critical connection is down: {body}");
    assert!(body.contains("\"late\""), "{body}");
    assert_eq!(served.stop(), Some(0));
}

fn config_file(dir: &std::path::Path, body: &str) -> String {
    let path = dir.join("c.yaml");
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn healthz_answers_from_the_first_moment_while_a_connection_hangs() {
    let hole = Blackhole::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "dbmanager:
  retry_attempts: 3
  retry_delay: 1s
  connections:
    stuck:
      type: postgres
      host: 127.0.0.1
      port: {}
      database: app
      sslmode: disable
      connect_timeout: 10s
",
            hole.port
        ),
    );
    let started = Instant::now();
    let served = Served::start(&["--config", &config], dir.path());
    let (code, body) = served.get("/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, body) = served.get("/readyz");
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["connections"]["stuck"]["status"], "unavailable");
    let reason = ready["connections"]["stuck"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("connecting"), "{reason}");
    // Everything above happened while the first connect attempt (10 s) was still hanging.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "answered only after {:?}",
        started.elapsed()
    );
    assert_eq!(
        served.stop(),
        Some(0),
        "shutdown does not wait for the hung connect"
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--header-read-timeout", "1"], dir.path());
    let mut slow = TcpStream::connect(&served.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection (possibly after a 408): the read ends instead of
    // waiting out the client's 20 s.
    let outcome = slow.read_to_end(&mut rest);
    assert!(
        outcome.is_ok(),
        "the server did not close the connection: {outcome:?}"
    );
    assert_eq!(served.get("/healthz").0, 200, "others are still served");
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--max-connections", "1"], dir.path());
    // Holds the only slot with a request that is not finished yet.
    let mut holder = TcpStream::connect(&served.addr).unwrap();
    holder.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let mut waiting = TcpStream::connect(&served.addr).unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(
        early.is_err(),
        "a second connection was served while the limit was 1: {early:?}"
    );

    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    waiting.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn shutdown_drains_open_connections_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        &["--drain", "1", "--header-read-timeout", "120"],
        dir.path(),
    );
    // A connection in the middle of a request would hold a graceful shutdown until the
    // 120 s header timeout without the drain deadline.
    let mut open = TcpStream::connect(&served.addr).unwrap();
    open.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(served.stop(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// `--drain 0` (close open HTTP connections at once) is a valid choice; a zero header timeout
/// is not, and its message says what is accepted (it said "between 0 and 3600" and refused 0).
#[test]
fn drain_zero_is_accepted_and_a_zero_header_timeout_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--drain", "0"], dir.path());
    assert_eq!(served.get("/healthz").0, 200);
    assert_eq!(served.stop(), Some(0));

    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--header-read-timeout",
            "0",
        ])
        .env("DBMANAGER_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--header-read-timeout must be more than 0 and at most 3600 seconds"),
        "{stderr}"
    );
}

fn stats_of(served: &Served) -> serde_json::Value {
    serde_json::from_str(&served.get("/stats").1).unwrap()
}

#[test]
fn serve_reloads_its_config_on_file_change_and_sighup_and_keeps_it_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let lite = |name: &str| {
        format!(
            "    {name}:\n      type: sqlite\n      filepath: '{}'\n",
            dir.path().join(format!("{name}.db")).display()
        )
    };
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, format!("dbmanager:\n  connections:\n{}", lite("a"))).unwrap();
    let served = Served::start(&["--config", path.to_str().unwrap()], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));

    // Saved the way editors do: a new file renamed over the old one.
    let tmp = dir.path().join(".c.yaml.swp");
    std::fs::write(
        &tmp,
        format!("dbmanager:\n  connections:\n{}{}", lite("a"), lite("b")),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // The new connection shows as soon as it is registered, the reload's outcome once the
    // reload has ended: both are waited for.
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = stats_of(&served);
            s["connections"]["b"].is_object() && s["last_reload"]["ok"].is_boolean()
        }),
        "the file change was picked up: {}",
        served.get("/stats").1
    );
    let stats = stats_of(&served);
    assert_eq!(stats["last_reload"]["ok"], true, "{stats}");
    assert_eq!(stats["last_reload"]["trigger"], "file");
    assert_eq!(stats["last_reload"]["added"], serde_json::json!(["b"]));
    assert_eq!(stats["last_reload"]["unchanged"], serde_json::json!(["a"]));
    // One change, one reload. Regression: a reload's own read of the file (inotify's open and
    // close events) started the next one, forever.
    let at = stats["last_reload"]["at"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        stats_of(&served)["last_reload"]["at"],
        at,
        "it reloaded again"
    );

    // A broken file keeps the running config and says why, without quoting secrets.
    std::fs::write(
        &path,
        "dbmanager:\n  connections:\n    a: {type: postgres, host: h, database: d, password: Reload-Secret-1, max_open_conns: 0}\n",
    )
    .unwrap();
    assert!(wait_for(
        Duration::from_secs(10),
        || stats_of(&served)["last_reload"]["ok"] == false
    ));
    let body = served.get("/stats").1;
    assert!(!body.contains("Reload-Secret-1"), "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        stats["last_reload"]["problems"]
            .as_str()
            .unwrap()
            .contains("max_open_conns"),
        "{stats}"
    );
    assert!(stats["connections"]["a"].is_object() && stats["connections"]["b"].is_object());

    // Fixed, then SIGHUP (not a file event: the watcher may be slower than the signal, so the
    // outcome is waited for either way).
    std::fs::write(&path, format!("dbmanager:\n  connections:\n{}", lite("b"))).unwrap();
    Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = stats_of(&served);
            s["last_reload"]["ok"] == true && s["connections"]["a"].is_null()
        }),
        "{}",
        served.get("/stats").1
    );
    assert_eq!(served.get("/healthz").0, 200);
    assert_eq!(served.stop(), Some(0));
}

/// A reload whose replacement could not connect keeps the old pool. Saving the file again
/// unchanged (`touch`, once the new server is up) did nothing, since only new contents
/// reloaded, so the change was stuck until a SIGHUP; a file event after a failed reload now
/// retries it.
#[test]
fn a_file_event_retries_a_failed_reload_even_with_the_same_contents() {
    let dir = tempfile::tempdir().unwrap();
    let pg = |database: &str| {
        format!(
            "dbmanager:\n  retry_attempts: 1\n  connections:\n    a: {{type: postgres, host: '{}', port: {}, user: '{}', database: '{database}', sslmode: disable, connect_timeout: 2s}}\n",
            support::pg_host(),
            support::pg_port(),
            support::pg_user()
        )
    };
    let first = support::TestDb::create();
    // Not created yet: the replacement fails until it is.
    let later = support::unique("dbm_touch");
    let path = config_file(dir.path(), &pg(&first.name));
    let served = Served::start(&["--config", &path], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));

    std::fs::write(&path, pg(&later)).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || stats_of(&served)["last_reload"]
            ["ok"]
            == false),
        "{}",
        served.get("/stats").1
    );
    let stats = stats_of(&served);
    assert_eq!(stats["last_reload"]["failed"][0][0], "a", "{stats}");

    support::admin_sql("postgres", &format!("CREATE DATABASE \"{later}\""));
    std::fs::write(&path, pg(&later)).unwrap();
    let retried = wait_for(Duration::from_secs(20), || {
        stats_of(&served)["last_reload"]["ok"] == true
    });
    let stats = stats_of(&served);
    assert_eq!(served.stop(), Some(0));
    support::admin_sql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS \"{later}\" WITH (FORCE)"),
    );
    assert!(
        retried,
        "the same file saved again retried the reload: {stats}"
    );
    assert_eq!(
        stats["last_reload"]["replaced"],
        serde_json::json!(["a"]),
        "{stats}"
    );
}

/// A Kubernetes ConfigMap or Secret volume: the file is a symlink through `..data`, which an
/// update swaps for a new directory; the file itself gets no event of its own.
#[test]
fn a_kubernetes_volume_update_is_reloaded() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let lite = |name: &str| {
        format!(
            "    {name}:\n      type: sqlite\n      filepath: '{}'\n",
            dir.path().join(format!("{name}.db")).display()
        )
    };
    let volume = dir.path().join("volume");
    let first = volume.join("..2026_11_29_first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(
        first.join("c.yaml"),
        format!("dbmanager:\n  connections:\n{}", lite("a")),
    )
    .unwrap();
    symlink("..2026_11_29_first", volume.join("..data")).unwrap();
    symlink("..data/c.yaml", volume.join("c.yaml")).unwrap();
    let path = volume.join("c.yaml");
    let served = Served::start(&["--config", path.to_str().unwrap()], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));

    // What the kubelet does: the new files in a new directory, then `..data` swapped by a
    // rename of a new symlink over it.
    let second = volume.join("..2026_11_29_second");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(
        second.join("c.yaml"),
        format!("dbmanager:\n  connections:\n{}{}", lite("a"), lite("b")),
    )
    .unwrap();
    symlink("..2026_11_29_second", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = stats_of(&served);
            s["last_reload"]["ok"] == true && s["connections"]["b"].is_object()
        }),
        "the volume update was picked up: {}",
        served.get("/stats").1
    );
    assert_eq!(
        stats_of(&served)["last_reload"]["added"],
        serde_json::json!(["b"])
    );
    assert_eq!(served.stop(), Some(0));
}

/// A config file that is a symlink to a file elsewhere, edited in place there: the target's
/// directory is watched too.
#[test]
fn a_symlinked_config_edited_at_its_target_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let lite = |name: &str| {
        format!(
            "    {name}:\n      type: sqlite\n      filepath: '{}'\n",
            dir.path().join(format!("{name}.db")).display()
        )
    };
    let elsewhere = dir.path().join("elsewhere");
    let here = dir.path().join("here");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&here).unwrap();
    let target = elsewhere.join("real.yaml");
    std::fs::write(
        &target,
        format!("dbmanager:\n  connections:\n{}", lite("a")),
    )
    .unwrap();
    let path = here.join("c.yaml");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let served = Served::start(&["--config", path.to_str().unwrap()], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));
    std::fs::write(
        &target,
        format!("dbmanager:\n  connections:\n{}{}", lite("a"), lite("b")),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = stats_of(&served);
            s["last_reload"]["ok"] == true && s["connections"]["b"].is_object()
        }),
        "the edit of the target was picked up: {}",
        served.get("/stats").1
    );
    assert_eq!(served.stop(), Some(0));
}

/// SIGHUP's default action ends a process. Without a config file there is nothing to reload,
/// but a SIGHUP (a supervisor's `reload`, a closed terminal) must not take the server down:
/// it used to exit with 129, no graceful close. The handler is installed before anything else,
/// so a SIGHUP early in startup does not kill it either.
#[test]
fn a_sighup_without_a_config_file_is_ignored_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(&[], dir.path());
    for _ in 0..2 {
        Command::new("kill")
            .args(["-HUP", &served.child.id().to_string()])
            .status()
            .unwrap();
    }
    // Give a fatal signal time to land before checking that it did not.
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/healthz")
        .0
        == 200));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the server"
    );
    assert_eq!(served.get("/readyz").0, 200);
    assert_eq!(served.stop(), Some(0));
}

/// An operator marks a connection whose server is down `critical: false` so that the service
/// becomes ready: the reload applies it in place (`updated`), with no new pool to open. It used
/// to try a new pool, which could not connect, so the change failed and `/readyz` stayed 503.
#[test]
fn marking_a_down_connection_not_critical_makes_serve_ready() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let path = dir.path().join("c.yaml");
    let config = |extra: &str| {
        format!(
            "dbmanager:\n  retry_attempts: 1\n  connections:\n    lite:\n      type: sqlite\n      filepath: '{}'\n    down:\n      type: postgres\n      host: 127.0.0.1\n      port: {port}\n      user: u\n      database: d\n      connect_timeout: 2s\n{extra}",
            dir.path().join("lite.db").display()
        )
    };
    std::fs::write(&path, config("")).unwrap();
    let served = Served::start(&["--config", path.to_str().unwrap()], dir.path());
    assert!(wait_for(Duration::from_secs(10), || {
        let (code, body) = served.get("/readyz");
        code == 503 && body.contains("refused")
    }));

    std::fs::write(
        &path,
        config("      critical: false\n      tags: {tier: reports}\n"),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || served.get("/readyz").0 == 200),
        "{}",
        served.get("/stats").1
    );
    let stats = stats_of(&served);
    assert_eq!(stats["last_reload"]["ok"], true, "{stats}");
    assert_eq!(
        stats["last_reload"]["updated"],
        serde_json::json!(["down"]),
        "{stats}"
    );
    let (_, ready) = served.get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["connections"]["down"]["critical"], false, "{ready}");
    assert!(
        metric(
            &served.get("/metrics").1,
            "dbmanager_connection_critical",
            "connection=\"down\""
        ) == Some(0.0)
    );
    assert_eq!(served.stop(), Some(0));
}

/// A config file that loses all its connections (a half-rendered template, a truncated
/// ConfigMap) keeps the running config and says why, as a `--tag` filter selecting nothing
/// does; it used to remove every connection and leave `/readyz` answering 200 with nothing
/// behind it. At startup such a file is refused with exit code 2, as `check` refuses it.
#[test]
fn a_config_without_connections_is_refused_at_startup_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "dbmanager:\n  connections: {}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no connections"),
        "{out:?}"
    );

    std::fs::write(
        &path,
        format!(
            "dbmanager:\n  connections:\n    a: {{type: sqlite, filepath: '{}'}}\n",
            dir.path().join("a.db").display()
        ),
    )
    .unwrap();
    let served = Served::start(&["--config", path.to_str().unwrap()], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .0
        == 200));
    std::fs::write(&path, "dbmanager:\n  connections: {}\n").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || stats_of(&served)["last_reload"]
            ["ok"]
            == false),
        "{}",
        served.get("/stats").1
    );
    let stats = stats_of(&served);
    assert!(
        stats["last_reload"]["problems"]
            .as_str()
            .unwrap()
            .contains("no connections"),
        "{stats}"
    );
    assert!(stats["connections"]["a"].is_object(), "{stats}");
    let (code, body) = served.get("/readyz");
    assert_eq!(code, 200);
    assert!(body.contains("\"a\""), "{body}");
    assert_eq!(served.stop(), Some(0));
}

/// A client that sends its request and then stops reading (a slow-read attack, a scraper stuck
/// on a dead network) held its connection slot for ever once the response outgrew the socket
/// buffers (`/metrics` of a large config): with every slot taken, `/healthz` stopped answering
/// and the liveness probe restarted the pod. A write that makes no progress for
/// `--header-read-timeout` now ends that connection.
#[test]
fn a_client_that_stops_reading_its_response_does_not_hold_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let mut yaml = String::from("dbmanager:\n  health_check_interval: 0s\n  connections:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "    c{i:04}: {{type: sqlite, filepath: ':memory:', max_open_conns: 1}}\n"
        ));
    }
    std::fs::write(&path, yaml).unwrap();
    let served = Served::start(
        &[
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "1",
            "--header-read-timeout",
            "1",
        ],
        dir.path(),
    );
    let (code, metrics) = served.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.len() > 6_000_000,
        "the response outgrows the socket buffers: {} bytes",
        metrics.len()
    );

    // Takes the only slot, asks for the big response, never reads it.
    let mut stuck = TcpStream::connect(&served.addr).unwrap();
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let mut probe = TcpStream::connect(&served.addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let outcome = probe.read_to_string(&mut response);
    assert!(
        outcome.is_ok() && response.starts_with("HTTP/1.1 200"),
        "the liveness probe was not served while a client sat on its response: {outcome:?} {response:?}"
    );
    drop(stuck);
    assert_eq!(served.stop(), Some(0));
}
