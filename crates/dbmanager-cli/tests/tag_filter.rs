//! `--tag KEY=VALUE` on `check` and `serve`: only the connections whose tags match every filter
//! are connected and reported; a malformed filter is a usage error and one that selects
//! nothing is a clear error; `serve` applies the filter to every reload too.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Served, wait_for, write_file};

fn dbmanager(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(args)
        .env("DBMANAGER_DATA_DIR", data_dir)
        .env_remove("DBMANAGER_LOG")
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A SQLite connection in `dir` with `tags` (YAML flow mapping body), or one that cannot open
/// (its directory does not exist) when `broken`.
fn lite(dir: &Path, name: &str, tags: &str, broken: bool) -> String {
    let file = if broken {
        dir.join("missing-dir").join(format!("{name}.db"))
    } else {
        dir.join(format!("{name}.db"))
    };
    format!(
        "    {name}:\n      type: sqlite\n      filepath: '{}'\n      tags: {{{tags}}}\n",
        file.display()
    )
}

/// Three connections: `a` (analytics, eu), `b` (analytics, us), and `web`, which cannot connect.
fn config(dir: &Path) -> String {
    let body = format!(
        "dbmanager:\n  default_connection: web\n  retry_attempts: 1\n  connections:\n{}{}{}",
        lite(dir, "a", "tier: analytics, region: eu", false),
        lite(dir, "b", "tier: analytics, region: us", false),
        lite(dir, "web", "tier: web", true),
    );
    write_file(dir, "c.yaml", &body)
}

fn names(out: &Output) -> Vec<String> {
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn check_connects_only_the_selected_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());

    // Without a filter the broken connection is checked, and fails the run.
    let out = dbmanager(&["check", "-c", &path, "--format", "json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(names(&out), ["a", "b", "web"]);

    // Selected by one tag: the broken one (and the default connection) is left out, not
    // connected at all.
    let out = dbmanager(
        &[
            "check",
            "-c",
            &path,
            "--format",
            "json",
            "--tag",
            "tier=analytics",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names(&out), ["a", "b"]);

    // Repeated flags are ANDed.
    let out = dbmanager(
        &[
            "check",
            "-c",
            &path,
            "--format",
            "json",
            "--tag",
            "tier=analytics",
            "--tag",
            "region=eu",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(names(&out), ["a"]);

    // The table format reports the same selection.
    let out = dbmanager(&["check", "-c", &path, "--tag", "tier=web"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("web") && table.contains("down"), "{table}");
}

#[test]
fn a_malformed_filter_is_a_usage_error_and_one_matching_nothing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    for bad in ["tier", "=analytics", " =x"] {
        let out = dbmanager(&["check", "-c", &path, "--tag", bad], dir.path());
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("is not a tag filter: expected KEY=VALUE"),
            "{bad}: {err}"
        );
    }

    let out = dbmanager(
        &[
            "check",
            "-c",
            &path,
            "--tag",
            "tier=analytics",
            "--tag",
            "region=mars",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "error: no connection matches --tag tier=analytics --tag region=mars (tags in the config: \
         region=eu, region=us, tier=analytics, tier=web)"
    );
    assert!(out.stdout.is_empty());

    // Unknown key: the same error.
    let out = dbmanager(&["check", "-c", &path, "--tag", "owner=me"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no connection matches --tag owner=me"),
        "{}",
        stderr(&out)
    );

    // The whole file is still validated, selected or not.
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        &format!(
            "dbmanager:\n  connections:\n{}    broken: {{type: sqlit}}\n",
            lite(dir.path(), "a", "tier: analytics", false)
        ),
    );
    let out = dbmanager(
        &["check", "-c", &bad, "--tag", "tier=analytics"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("connections.broken.type"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_manages_only_the_selected_connections_and_reloads_through_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let served = Served::start(&["--config", &path, "--tag", "tier=analytics"], dir.path());
    assert!(wait_for(Duration::from_secs(10), || served
        .get("/readyz")
        .status
        == 200));
    let stats = served.json("/stats");
    let connections = stats["connections"].as_object().unwrap();
    assert_eq!(
        connections.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "{stats}"
    );
    assert_eq!(stats["tag_filter"], serde_json::json!(["tier=analytics"]));
    let metrics = served.get("/metrics").body;
    assert!(metrics.contains("connection=\"a\""), "{metrics}");
    assert!(!metrics.contains("connection=\"web\""), "{metrics}");
    // Readiness is about the selected connections only: the broken one is not among them.
    assert_eq!(served.get("/readyz").status, 200);

    // A reload applies the same filter: `b` stops matching and is removed, `c` is new and
    // matches, `web` still does not match and stays out.
    std::fs::write(
        &path,
        format!(
            "dbmanager:\n  retry_attempts: 1\n  connections:\n{}{}{}{}",
            lite(dir.path(), "a", "tier: analytics, region: eu", false),
            lite(dir.path(), "b", "tier: batch", false),
            lite(dir.path(), "c", "tier: analytics", false),
            lite(dir.path(), "web", "tier: web", true),
        ),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            served.json("/stats")["last_reload"]["ok"] == true
        }),
        "{}",
        served.get("/stats").body
    );
    let stats = served.json("/stats");
    assert_eq!(stats["last_reload"]["added"], serde_json::json!(["c"]));
    assert_eq!(stats["last_reload"]["removed"], serde_json::json!(["b"]));
    assert_eq!(stats["last_reload"]["unchanged"], serde_json::json!(["a"]));
    let connections = stats["connections"].as_object().unwrap();
    assert_eq!(
        connections.keys().collect::<Vec<_>>(),
        ["a", "c"],
        "{stats}"
    );

    // A file in which nothing matches any more keeps the running config, and says why.
    std::fs::write(
        &path,
        format!(
            "dbmanager:\n  connections:\n{}",
            lite(dir.path(), "a", "tier: gone", false)
        ),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        served.json("/stats")["last_reload"]["ok"] == false
    }));
    let stats = served.json("/stats");
    assert!(
        stats["last_reload"]["problems"]
            .as_str()
            .unwrap()
            .contains("no connection matches --tag tier=analytics"),
        "{stats}"
    );
    assert_eq!(
        stats["connections"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["a", "c"]
    );
    assert_eq!(served.stop(), Some(0));
}

#[test]
fn serve_refuses_a_filter_that_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", &path])
        .args(["--tag", "tier=nope"])
        .env("DBMANAGER_DATA_DIR", dir.path())
        .env_remove("DBMANAGER_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no connection matches --tag tier=nope"),
        "{}",
        stderr(&out)
    );
}
