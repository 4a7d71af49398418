//! `dbmanager check --config <case>` on every file of the hostile corpus
//! (`crates/dbmanager/tests/hostile/`): exit code 2, the expected report on stderr, and no part
//! of a planted secret anywhere in the output. The binary is built once by cargo and run per case.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every planted secret contains this.
const MARK: &str = "S3cret";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dbmanager/tests/hostile")
}

/// A FIFO and a file over the password_file cap, for the cases that name them.
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(dir.path().join("big"), vec![b'x'; 64 * 1024 + 1]).unwrap();
    dir
}

/// Runs the CLI with a clean environment: no `DBMANAGER__` override of the caller's leaks in.
fn check(config: &Path, fixtures: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["check", "--config"])
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOSTILE_DIR", fixtures)
        .env("HOSTILE_SECRET", "Hostile-S3cret-env")
        .env("DBMANAGER_DATA_DIR", fixtures)
        .output()
        .expect("the binary runs")
}

#[test]
fn every_hostile_case_exits_2_with_its_report_and_no_secret() {
    let dir = fixtures();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "the corpus is there: {cases:?}");
    for case in &cases {
        let expected = std::fs::read_to_string(case.with_extension("expected")).unwrap();
        let out = check(case, dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = case.display();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: exit code\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains(expected.trim_end()),
            "{name}: expected\n{expected}\ngot\n{stderr}"
        );
        assert!(
            !stdout.contains(MARK) && !stderr.contains(MARK),
            "{name} leaks:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn u64_max_durations_and_huge_pools_exit_2_never_101() {
    let dir = fixtures();
    let max = u64::MAX;
    let connection_keys = [
        format!("connect_timeout: {max}s"),
        format!("query_timeout: {max}s"),
        format!("conn_max_lifetime: {max}s"),
        format!("conn_max_idle_time: {max}s"),
        "max_open_conns: 4000000000".to_owned(),
        "min_open_conns: 4000000000".to_owned(),
        "max_idle_conns: 4000000000".to_owned(),
    ];
    let manager_keys = [
        format!("health_check_interval: {max}s"),
        format!("retry_delay: {max}s"),
        format!("retry_max_delay: {max}s"),
        format!("conn_max_lifetime: {max}s"),
        "max_open_conns: 4000000000".to_owned(),
    ];
    let db = dir.path().join("a.db");
    let mut configs = Vec::new();
    for key in &connection_keys {
        configs.push(format!(
            "dbmanager:\n  connections:\n    a: {{type: sqlite, filepath: '{}', {key}}}\n",
            db.display()
        ));
    }
    for key in &manager_keys {
        configs.push(format!(
            "dbmanager:\n  {key}\n  connections:\n    a: {{type: sqlite, filepath: '{}'}}\n",
            db.display()
        ));
    }
    for (i, yaml) in configs.iter().enumerate() {
        let path = dir.path().join(format!("huge-{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = check(&path, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{stderr}");
        assert!(stderr.contains("the largest accepted"), "{yaml}\n{stderr}");
        assert!(!stderr.contains("panicked"), "{yaml}\n{stderr}");
    }
}
