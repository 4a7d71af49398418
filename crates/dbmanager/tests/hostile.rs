//! The hostile-input corpus: `tests/hostile/<case>.yaml`, each with the exact problem report
//! expected for it in `<case>.expected`. Every case must be rejected with exactly that report,
//! in bounded time, and no output may contain any part of the secrets the cases plant (all of
//! them contain `S3cret`). `HOSTILE_BLESS=1` rewrites the `.expected` files (review the diff).
//!
//! The CLI runs the same corpus end to end (`crates/dbmanager-cli/tests/hostile.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dbmanager::{EnvSource, ManagerConfig};

/// Every planted secret contains this.
const MARK: &str = "S3cret";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// A FIFO and a file over the password_file cap, for the cases that name them.
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    let cap = usize::try_from(dbmanager::config::MAX_PASSWORD_FILE_BYTES).unwrap();
    std::fs::write(dir.path().join("big"), vec![b'x'; cap + 1]).unwrap();
    dir
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_hostile_case_gets_exactly_its_expected_report_and_no_secret() {
    let dir = fixtures();
    let env: EnvSource = [
        ("HOSTILE_DIR", dir.path().display().to_string()),
        ("HOSTILE_SECRET", "Hostile-S3cret-env".to_owned()),
    ]
    .into_iter()
    .collect();
    let bless = std::env::var_os("HOSTILE_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 20, "the corpus is there: {cases:?}");
    let mut failures = Vec::new();
    for (name, yaml_path) in &cases {
        let yaml = std::fs::read_to_string(yaml_path).unwrap();
        let started = Instant::now();
        let outcome = ManagerConfig::from_yaml_str_with_env(&yaml, &env);
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(2), "{name} took {elapsed:?}");
        let problems = match outcome {
            Ok(config) => panic!("{name} was accepted: {config:?}"),
            Err(p) => p,
        };
        let report = problems.to_string();
        let everything = format!(
            "{report}\n{problems:?}\n{}",
            dbmanager::Error::from(problems.clone())
        );
        assert!(!everything.contains(MARK), "{name} leaks:\n{everything}");
        let expected_path = yaml_path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, format!("{report}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if expected.trim_end() != report {
            failures.push(format!(
                "{name}:\n--- expected\n{}\n--- got\n{report}",
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_expected_file_has_its_case() {
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expected") {
            assert!(
                path.with_extension("yaml").exists(),
                "{} has no case",
                path.display()
            );
        }
    }
}
