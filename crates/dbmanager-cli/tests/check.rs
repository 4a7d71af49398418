//! `dbmanager check`: the embedded default, exit codes, formats, no secrets in output.

use std::process::{Command, Output};

fn dbmanager(args: &[&str], data_dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(args)
        .env("DBMANAGER_DATA_DIR", data_dir)
        .env_remove("DBMANAGER_LOG")
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_runs_on_the_embedded_sqlite_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dbmanager(&["check"], &data);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("main") && stdout.contains("sqlite") && stdout.contains("up"),
        "{stdout}"
    );
    assert!(
        data.join("quickstart.sqlite").exists(),
        "the data directory is created"
    );
}

/// `DBMANAGER_DATA_DIR=` (set but empty, as a compose file's `- DBMANAGER_DATA_DIR=` leaves
/// it) means the default `./data`, not the root of the file system.
#[test]
fn an_empty_data_dir_means_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["config", "show", "--json"])
        .current_dir(dir.path())
        .env("DBMANAGER_DATA_DIR", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = shown.to_string();
    assert!(text.contains("\"data/quickstart.sqlite\""), "{text}");
    assert!(!text.contains("\"/quickstart.sqlite\""), "{text}");
}

#[test]
fn check_json_has_one_row_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let out = dbmanager(&["check", "--format", "json"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // `--json`, as `config show` spells it (and the README writes it for `check`), is the same.
    let short = dbmanager(&["check", "--json"], dir.path());
    assert_eq!(short.status.code(), Some(0), "{}", text(&short).1);
    let short: serde_json::Value = serde_json::from_slice(&short.stdout).unwrap();
    assert_eq!(short.as_array().map(Vec::len), Some(1), "{short}");
    assert_eq!(short[0]["name"], "main");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "main");
    assert_eq!(rows[0]["type"], "sqlite");
    assert_eq!(rows[0]["status"], "up");
    assert_eq!(rows[0]["pool_max"], 4);
    assert!(rows[0]["ping_ms"].as_f64().unwrap() >= 0.0);
    // Whole microseconds, written as such: no binary float noise (4.434099000000001).
    let written = String::from_utf8_lossy(&out.stdout);
    let ping = written
        .split("\"ping_ms\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .unwrap_or_default()
        .trim();
    let decimals = ping.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 3, "ping_ms written as {ping}");
}

#[test]
fn an_invalid_config_exits_2_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "dbmanager:\n  connections:\n    a: {type: postgres, port: 0, password: Secret-PW-123}\n    b: {type: sqlit}\n",
    )
    .unwrap();
    let out = dbmanager(&["check", "--config", config.to_str().unwrap()], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    for expected in [
        "connections.a.database: required for postgres",
        "connections.a.host: required for postgres",
        "connections.a.port: 0 is not a valid port",
        "connections.b.type: `sqlit` is not valid",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }
    assert!(!stdout.contains("Secret-PW-123") && !stderr.contains("Secret-PW-123"));
}

#[test]
fn a_down_connection_exits_1_without_printing_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("down.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:
  retry_attempts: 1
  connections:
    lite: {{type: sqlite, filepath: '{}'}}
    down: {{type: postgres, host: 127.0.0.1, port: {port}, user: u, password: Secret-PW-456, database: d}}
",
            dir.path().join("ok.db").display()
        ),
    )
    .unwrap();
    let out = dbmanager(&["check", "--config", config.to_str().unwrap()], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("down") && stdout.contains("refused"),
        "{stdout}"
    );
    assert!(stdout.contains("lite"), "{stdout}");
    assert!(!stdout.contains("Secret-PW-456") && !stderr.contains("Secret-PW-456"));
}

/// A valid configuration without connections has nothing to check: a clear error and exit code
/// 2 (as `--tag` selecting nothing), not an empty table and success.
#[test]
fn a_config_without_connections_exits_2_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for body in ["dbmanager:\n  connections: {}\n", "dbmanager: {}\n"] {
        let path = dir.path().join("empty.yaml");
        std::fs::write(&path, body).unwrap();
        for format in ["table", "json"] {
            let out = dbmanager(
                &[
                    "check",
                    "--config",
                    path.to_str().unwrap(),
                    "--format",
                    format,
                ],
                dir.path(),
            );
            let (stdout, stderr) = text(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{body:?} {format}: {stdout}\n{stderr}"
            );
            assert!(stderr.contains("no connections"), "{stderr}");
            assert!(stdout.is_empty(), "{stdout}");
        }
    }
}

#[test]
fn a_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dbmanager(&["check", "--config", "/nonexistent/dbm.yaml"], dir.path());
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("cannot read `/nonexistent/dbm.yaml`"),
        "{stderr}"
    );
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

#[test]
fn check_shows_all_four_backends_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("four.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:
  retry_attempts: 1
  connections:
    primary:
      type: postgres
      host: {pg_host}
      port: {pg_port}
      user: {pg_user}
      database: postgres
      max_open_conns: 2
    cache-db:
      type: sqlite
      filepath: '{sqlite}'
    reports:
      type: mssql
      host: 127.0.0.1
      port: {ms_port}
      user: {ms_user}
      password: ${{MSSQL_TEST_PASSWORD}}
      sslmode: disable
    documents:
      type: mongodb
      host: 127.0.0.1
      port: {mongo_port}
      user: {mongo_user}
      password: ${{MONGO_TEST_PASSWORD}}
      database: admin
      sslmode: disable
",
            pg_host = env_or("DBMANAGER_TEST_PG_HOST", "127.0.0.1"),
            pg_port = env_or("DBMANAGER_TEST_PG_PORT", "5432"),
            pg_user = env_or("DBMANAGER_TEST_PG_USER", "postgres"),
            sqlite = dir.path().join("c.db").display(),
            ms_port = env_or("DBMANAGER_TEST_MSSQL_PORT", "14331"),
            ms_user = env_or("DBMANAGER_TEST_MSSQL_USER", "sa"),
            mongo_port = env_or("DBMANAGER_TEST_MONGO_PORT", "27018"),
            mongo_user = env_or("DBMANAGER_TEST_MONGO_USER", "dbm_user"),
        ),
    )
    .unwrap();
    let ms_password = env_or("DBMANAGER_TEST_MSSQL_PASSWORD", "Dbm-Test;Pass={w0rd}");
    let mongo_password = env_or("DBMANAGER_TEST_MONGO_PASSWORD", "dbm-Pass:w@rd/é%");
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args([
            "check",
            "--format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("MSSQL_TEST_PASSWORD", &ms_password)
        .env("MONGO_TEST_PASSWORD", &mongo_password)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut seen: Vec<(String, String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["type"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("cache-db".into(), "sqlite".into(), "up".into()),
            ("documents".into(), "mongodb".into(), "up".into()),
            ("primary".into(), "postgres".into(), "up".into()),
            ("reports".into(), "mssql".into(), "up".into()),
        ]
    );
    assert!(!stdout.contains(&ms_password) && !stderr.contains(&ms_password));
    assert!(!stdout.contains(&mongo_password) && !stderr.contains(&mongo_password));
}

/// A stand-in OTLP/HTTP collector: accepts POSTs, answers 200, hands back (path, body).
fn fake_collector() -> (u16, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            let _ = tx.send((path, body));
        }
    });
    (port, rx)
}

#[test]
fn spans_are_exported_over_otlp_when_the_environment_asks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("traced.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:\n  connections:\n    lite:\n      type: sqlite\n      filepath: '{}'\n      enable_tracing: true\n",
            dir.path().join("t.db").display()
        ),
    )
    .unwrap();
    let (port, received) = fake_collector();
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_SERVICE_NAME", "dbm-cli-test")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (path, body) = received
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("an OTLP export");
    assert_eq!(path, "/v1/traces");
    let body = String::from_utf8_lossy(&body);
    for expected in [
        "connect lite",
        "health_check lite",
        "db.system",
        "sqlite",
        "dbm-cli-test",
    ] {
        assert!(
            body.contains(expected),
            "{expected:?} not in the exported spans"
        );
    }
}

/// Read replicas are rows of their own after their connection: the machine's PostgreSQL listed
/// as a replica of itself (not in recovery: lag 0) is in use, one on a port nothing listens on
/// is down and banned; a replica that is down does not change the exit code.
#[test]
fn check_lists_replicas_after_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let host = env_or("DBMANAGER_TEST_PG_HOST", "127.0.0.1");
    let port = env_or("DBMANAGER_TEST_PG_PORT", "5432");
    let config = dir.path().join("replicas.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:
  retry_attempts: 1
  connections:
    primary:
      type: postgres
      host: {host}
      port: {port}
      user: {user}
      database: postgres
      sslmode: disable
      max_open_conns: 2
      replicas:
        - host: {host}
        - host: 127.0.0.1
          port: {dead}
",
            user = env_or("DBMANAGER_TEST_PG_USER", "postgres"),
        ),
    )
    .unwrap();
    let out = dbmanager(
        &[
            "check",
            "--format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ],
        dir.path(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(rows[0]["name"], "primary");
    assert!(rows[0].get("member_of").is_none());
    assert_eq!(rows[1]["name"], format!("primary/replica:{host}:{port}"));
    assert_eq!(rows[1]["member_of"], "primary");
    assert_eq!(rows[1]["status"], "up");
    assert_eq!(rows[1]["replica_state"], "in use");
    assert_eq!(rows[2]["name"], format!("primary/replica:127.0.0.1:{dead}"));
    assert_eq!(rows[2]["status"], "down");
    assert_eq!(rows[2]["replica_state"], "banned");
}

/// A server's error can quote what the config said (PostgreSQL: `database "..." does not
/// exist`), control characters included. The table, and the log beside it, show them escaped:
/// an error must not recolour, retitle or rewrite the operator's terminal, nor reorder a line
/// with a bidirectional override. (They used to reach the terminal raw.)
#[test]
fn a_server_error_quoting_control_characters_is_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("escapes.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:
  retry_attempts: 1
  connections:
    pg:
      type: postgres
      host: {host}
      port: {port}
      user: {user}
      database: \"no\\e[31mred\\e]0;title\\a\\u202eevil\\ntwo\"
",
            host = env_or("DBMANAGER_TEST_PG_HOST", "127.0.0.1"),
            port = env_or("DBMANAGER_TEST_PG_PORT", "5432"),
            user = env_or("DBMANAGER_TEST_PG_USER", "postgres"),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env("DBMANAGER_LOG", "warn")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("does not exist"),
        "the error is shown: {stdout}"
    );
    for (what, output) in [("table", &stdout), ("log", &stderr)] {
        for c in ['\x1b', '\x07', '\u{202e}'] {
            assert!(!output.contains(c), "{what} holds {:?} raw: {output:?}", c);
        }
        assert!(output.contains("\\u{1b}[31mred"), "{what}: {output:?}");
    }
    // The table is one line per connection still: borders, header, one row.
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
}
