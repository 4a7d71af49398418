//! `dbmanager check`: validate, connect, ping, print one row per connection.

use std::path::Path;
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use dbmanager::ConnectPolicy;
use serde::Serialize;

use crate::progress::{self, Progress};
use crate::tags::TagFilter;
use crate::text::escaped;
use crate::{EXIT_DOWN, EXIT_OK, load};

/// One row of the report.
#[derive(Serialize)]
struct Row {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    ping_ms: Option<f64>,
    pool_max: u32,
    /// The server in use, for a connection with a `hosts:` list.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    error: Option<String>,
    /// For a read replica: the connection it is a member of (its name says its host and port).
    #[serde(skip_serializing_if = "Option::is_none")]
    member_of: Option<String>,
    /// For a read replica: banned from reads or over `max_replica_lag` now.
    #[serde(skip_serializing_if = "Option::is_none")]
    replica_state: Option<String>,
}

pub async fn run(config: Option<&Path>, json: bool, filter: &TagFilter) -> u8 {
    let manager = match load::manager_or_exit(config, filter) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // Nothing to check is a mistake worth saying (as `--tag` selecting nothing is): an empty
    // table and exit code 0 would pass a deploy check that checked nothing.
    if manager.connections().is_empty() {
        eprintln!(
            "error: the configuration has no connections: nothing to check (add one under `dbmanager.connections`)"
        );
        return crate::EXIT_CONFIG;
    }
    // On a terminal, what is still connecting (and retrying, and why) is drawn live; piped
    // output is only the table below.
    let progress = progress::wanted(json).then(|| Progress::start(&manager));
    let report = match manager.connect_with(ConnectPolicy::Partial).await {
        Ok(report) => report,
        Err(e) => {
            if let Some(progress) = progress {
                progress.finish().await;
            }
            eprintln!("error: {}", escaped(&e.to_string()));
            return EXIT_DOWN;
        }
    };
    let mut rows = Vec::new();
    for conn in manager.connections() {
        let connect_error = report
            .failed
            .iter()
            .find(|(name, _)| name == conn.name())
            .map(|(_, e)| e.to_string());
        let (ping_ms, error) = match connect_error {
            Some(e) => (None, Some(e)),
            None => {
                if let Some(progress) = &progress {
                    progress.checking(conn.name());
                }
                let started = Instant::now();
                let outcome = match conn.health_check().await {
                    Ok(()) => Ok(millis(started.elapsed())),
                    Err(e) => Err(e.to_string()),
                };
                if let Some(progress) = &progress {
                    progress.checked(conn.name(), outcome.clone());
                }
                match outcome {
                    Ok(ms) => (Some(ms), None),
                    Err(e) => (None, Some(e)),
                }
            }
        };
        rows.push(Row {
            name: conn.name().to_owned(),
            kind: conn.kind().to_string(),
            status: if error.is_none() { "up" } else { "down" }.to_owned(),
            ping_ms,
            pool_max: conn.pool_settings().max_open,
            host: conn.health().current_host,
            error,
            member_of: None,
            replica_state: None,
        });
        rows.extend(check_replicas(&conn).await);
    }
    if let Some(progress) = progress {
        progress.finish().await;
    }
    manager.close(Duration::from_secs(5)).await;

    if json {
        match serde_json::to_string_pretty(&rows) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(["name", "type", "status", "ping", "pool max", "error"]);
        for r in &rows {
            // A server's error may quote the config, control characters included.
            table.add_row([
                escaped(&r.name),
                r.kind.clone(),
                // The server a `hosts:` list led to, beside the status.
                match &r.host {
                    Some(host) => format!("{} ({})", r.status, escaped(host)),
                    None => r.status.clone(),
                },
                r.ping_ms.map_or("-".to_owned(), |ms| format!("{ms:.2} ms")),
                r.pool_max.to_string(),
                r.error.as_deref().map(escaped).unwrap_or_default(),
            ]);
        }
        println!("{table}");
    }
    // A replica that is down degrades reads (they follow `replica_fallback`) but is not a
    // connection of its own: the exit code is the connections'.
    if rows
        .iter()
        .filter(|r| r.member_of.is_none())
        .all(|r| r.error.is_none())
    {
        EXIT_OK
    } else {
        EXIT_DOWN
    }
}

/// One row per read replica of `conn`, after its connection's: pinged like a connection, with
/// its routing state.
async fn check_replicas(conn: &dbmanager::Connection) -> Vec<Row> {
    let mut rows = Vec::new();
    for (member, stats) in conn.members().into_iter().zip(conn.member_stats()) {
        let started = Instant::now();
        let (ping_ms, error) = match member.health_check().await {
            Ok(()) => (Some(millis(started.elapsed())), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let state = stats.replica.as_ref().map(|r| {
            if r.banned {
                "banned".to_owned()
            } else if r.lagging {
                "lagging".to_owned()
            } else {
                "in use".to_owned()
            }
        });
        rows.push(Row {
            name: member.name().to_owned(),
            kind: member.kind().to_string(),
            status: if error.is_none() { "up" } else { "down" }.to_owned(),
            ping_ms,
            pool_max: member.pool_settings().max_open,
            host: None,
            error: error.or_else(|| {
                stats
                    .replica
                    .as_ref()
                    .filter(|r| r.banned || r.lagging)
                    .and_then(|r| r.last_error.clone())
            }),
            member_of: Some(conn.name().to_owned()),
            replica_state: state,
        });
    }
    rows
}

/// Milliseconds to the microsecond: `4.434`, where `as_secs_f64() * 1000.0` gives binary noise
/// such as `4.434099000000001` in the JSON.
fn millis(took: std::time::Duration) -> f64 {
    // A ping longer than u64::MAX microseconds cannot happen; saturate rather than wrap.
    u64::try_from(took.as_micros()).unwrap_or(u64::MAX) as f64 / 1000.0
}
