//! The mix on PostgreSQL's own C client: pgbench with one `-f` script per kind (weighted by the
//! kind's share), `-M prepared`, the same client count, and its per-transaction log read back
//! into the same histograms as the Rust clients'.

use std::path::Path;
use std::time::Duration;

use crate::latency::{self, Run};
use crate::support;

use super::workload::KINDS;

/// Runs pgbench for the warm-up plus `duration` (rounded up to whole seconds, which is all
/// `-T` takes) and measures, like the Rust clients, only transactions that completed after the
/// warm-up.
pub async fn run(database: &str, clients: usize, warmup: Duration, duration: Duration) -> Run {
    match attempt(database, clients, warmup, duration).await {
        Ok(run) => run,
        Err(e) => Run {
            histograms: KINDS.iter().map(|_| latency::histogram()).collect(),
            elapsed: duration,
            errors: 1,
            first_error: Some(e),
        },
    }
}

async fn attempt(
    database: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Run, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut scripts = Vec::new();
    for (kind, weight) in KINDS {
        let path = dir.path().join(format!("{kind:?}.sql"));
        std::fs::write(&path, kind.pgbench_script()).map_err(|e| e.to_string())?;
        scripts.push(format!("{}@{weight}", path.display()));
    }
    let threads = clients.min(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    );
    let seconds = (warmup + duration).as_secs_f64().ceil().max(1.0) as u64;
    let prefix = dir.path().join("log");
    let mut command = tokio::process::Command::new("pgbench");
    command
        .args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .args(["-h", &support::pg_host()])
        .args(["-p", &support::pg_port().to_string()])
        .args(["-U", &support::pg_user()])
        .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &seconds.to_string()]);
    for script in &scripts {
        command.args(["-f", script]);
    }
    let out = command
        .arg(database)
        .output()
        .await
        .map_err(|e| format!("pgbench did not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    read_logs(dir.path(), warmup)
}

/// One transaction from pgbench's log: which script, how long, when it completed (µs).
struct Logged {
    script: usize,
    latency_us: u64,
    completed_us: u64,
}

/// Parses `client_id transaction_no time script_no time_epoch time_us [...]`; `time` is not
/// a number for a failed or skipped transaction.
fn parse(line: &str) -> Option<Result<Logged, String>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 6 {
        return None;
    }
    let number = |i: usize| fields[i].parse::<u64>().ok();
    Some(match (number(2), number(3), number(4), number(5)) {
        (Some(latency_us), Some(script), Some(epoch), Some(us)) => Ok(Logged {
            script: script as usize,
            latency_us,
            completed_us: epoch * 1_000_000 + us,
        }),
        _ => Err(format!("pgbench logged a failed transaction: {line}")),
    })
}

fn read_logs(dir: &Path, warmup: Duration) -> Result<Run, String> {
    let mut logged = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("log."));
        if !is_log {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        for parsed in text.lines().filter_map(parse) {
            match parsed {
                Ok(l) => logged.push(l),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let first = logged.iter().map(|l| l.completed_us).min().unwrap_or(0);
    let last = logged.iter().map(|l| l.completed_us).max().unwrap_or(0);
    let window_start = first + warmup.as_micros() as u64;
    let mut histograms: Vec<_> = KINDS.iter().map(|_| latency::histogram()).collect();
    for l in logged.iter().filter(|l| l.completed_us > window_start) {
        // The transaction must also have started inside the window, as for the Rust clients.
        if l.completed_us - l.latency_us < window_start {
            continue;
        }
        if let Some(h) = histograms.get_mut(l.script) {
            latency::record(h, Duration::from_micros(l.latency_us));
        }
    }
    if histograms.iter().all(|h| h.is_empty()) {
        return Err("pgbench logged no transaction after the warm-up".into());
    }
    Ok(Run {
        histograms,
        elapsed: Duration::from_micros(last.saturating_sub(window_start)),
        errors,
        first_error,
    })
}
