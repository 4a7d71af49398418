//! The library's examples, run end to end as built binaries: the axum service against the
//! machine's PostgreSQL (SeaORM writes, the neutral handle, its merged `/metrics`, a graceful
//! shutdown on SIGTERM that leaves no session behind), and the three-backends example against
//! PostgreSQL, SQLite and MariaDB.
//!
//! `cargo test --workspace --all-features` builds the examples before it runs any test; alone:
//! `cargo build -p dbmanager --examples --all-features` first.

// The shared test support names the library's backend features, which this crate lacks.
#[path = "../../dbmanager/tests/support/mod.rs"]
#[allow(unused_imports, unused_variables, unexpected_cfgs)]
mod support;

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{get, request, terminate, wait_for};

/// The built example `name`, refusing a missing or stale binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("examples").join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dbmanager/examples")
        .join(format!("{name}.rs"));
    let build = "cargo build -p dbmanager --examples --all-features (cargo test --workspace \
                 --all-features builds them)";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is not built: {build}", binary.display()));
    let edited = std::fs::metadata(&source).unwrap().modified().unwrap();
    assert!(
        built >= edited,
        "{} is older than its source: {build}",
        binary.display()
    );
    binary
}

fn pg_url(database: &str) -> String {
    format!(
        "postgres://{}@{}:{}/{database}?sslmode=disable",
        support::pg_user(),
        support::pg_host(),
        support::pg_port()
    )
}

#[test]
fn the_axum_service_example_serves_stores_measures_and_shuts_down_gracefully() {
    let db = support::TestDb::create();
    let mut child = Command::new(example("axum_service"))
        .env("DATABASE_URL", pg_url(&db.name))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env_remove("AUDIT_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();

    for body in ["first", "second"] {
        let created = request(
            &addr,
            "POST",
            "/notes",
            Some(&format!("{{\"body\":\"{body}\"}}")),
        );
        assert_eq!(created.status, 201, "{}", created.body);
    }
    // Through SeaORM on PostgreSQL...
    let notes: serde_json::Value = serde_json::from_str(&get(&addr, "/notes").body).unwrap();
    assert_eq!(
        notes,
        serde_json::json!([{"id": 1, "body": "first"}, {"id": 2, "body": "second"}])
    );
    assert_eq!(
        support::admin_sql(
            &db.name,
            "SELECT string_agg(body, ',' ORDER BY id) FROM notes"
        ),
        "first,second",
        "the rows are in PostgreSQL"
    );
    // ...and through the neutral handle on the other connection.
    let audit: serde_json::Value = serde_json::from_str(&get(&addr, "/audit").body).unwrap();
    let details: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details, ["note 1", "note 2"]);

    let metrics = get(&addr, "/metrics").body;
    for expected in [
        // The application's own metric...
        "app_http_requests_total{route=\"/notes\",status=\"201\"} 2",
        // ...and the manager's, in the same exposition.
        "dbmanager_connection_status{connection=\"notes\",type=\"postgres\"} 1",
        "dbmanager_connection_status{connection=\"audit\",type=\"sqlite\"} 1",
        "db_queries_total{connection=\"audit\",type=\"sqlite\",operation=\"INSERT\",status=\"ok\"} 2",
    ] {
        assert!(metrics.contains(expected), "{expected} not in {metrics}");
    }
    assert_eq!(metrics.matches("# EOF").count(), 1, "one exposition");
    assert!(db.backends() > 0, "the pool holds sessions while serving");

    assert_eq!(terminate(&mut child), Some(0), "graceful exit on SIGTERM");
    let rest: Vec<String> = stdout.lines().map_while(Result::ok).collect();
    assert_eq!(rest, ["shutting down: closing the pools", "closed"]);
    assert!(
        wait_for(Duration::from_secs(10), || db.backends() == 0),
        "sessions left behind after the shutdown: {}",
        db.backends()
    );
}

#[test]
fn the_three_backends_example_runs_the_same_code_on_each() {
    let mysql = format!(
        "mysql://root@{}:{}/test",
        support::mysql::mysql_host(),
        support::mysql::mysql_port()
    );
    let out = Command::new(example("three_backends"))
        .env("POSTGRES_URL", pg_url("postgres"))
        .env("MYSQL_URL", mysql)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for (line, (name, kind)) in lines.iter().zip([
        ("cache", "sqlite"),
        ("legacy", "mysql"),
        ("orders", "postgres"),
    ]) {
        assert!(
            line.starts_with(&format!("{name} ({kind}, "))
                && line.ends_with(&format!("hello from {name} / 42")),
            "{line}"
        );
    }
    assert_eq!(lines[3], "3 connections, 3 healthy");
}
