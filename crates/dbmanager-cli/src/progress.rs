//! `check`'s live progress on a terminal: one line per connection, redrawn in place while the
//! connections connect and are checked (connected, retrying and why, failed), erased before the
//! table is printed. Never drawn when stdout is not a terminal, so piped output is unchanged.
//!
//! Retries are learned from the library's `tracing` events ("connect attempt failed; retrying",
//! logged for connections with `enable_logging: true`), captured by [`RetryCapture`]; the rest
//! comes from each connection's health report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbmanager::Manager;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Whether a progress display owns the terminal now: the stderr log then leaves out the
/// library's connection events, which the display shows, so that they do not break it.
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The last retry of each connection, by name.
static RETRIES: Mutex<BTreeMap<String, Retry>> = Mutex::new(BTreeMap::new());

const REDRAW: Duration = Duration::from_millis(100);
const FIRST_DRAW: Duration = Duration::from_millis(150);
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Debug, Clone)]
struct Retry {
    attempt: u64,
    max_attempts: u64,
    retry_in: Duration,
    error: String,
    at: Instant,
}

/// A `tracing` layer that keeps the library's retry events for the display.
pub struct RetryCapture;

#[derive(Default)]
struct RetryFields {
    connection: Option<String>,
    attempt: Option<u64>,
    max_attempts: Option<u64>,
    retry_in_ms: Option<u64>,
    error: Option<String>,
}

impl Visit for RetryFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "attempt" => self.attempt = Some(value),
            "max_attempts" => self.max_attempts = Some(value),
            "retry_in_ms" => self.retry_in_ms = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(value) = u64::try_from(value) {
            self.record_u64(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "connection" => self.connection = Some(format!("{value:?}")),
            "error" => self.error = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for RetryCapture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("dbmanager") {
            return;
        }
        let mut fields = RetryFields::default();
        event.record(&mut fields);
        if let (Some(name), Some(retry_in_ms)) = (fields.connection, fields.retry_in_ms)
            && let Ok(mut retries) = RETRIES.lock()
        {
            retries.insert(
                name,
                Retry {
                    attempt: fields.attempt.unwrap_or(0),
                    max_attempts: fields.max_attempts.unwrap_or(0),
                    retry_in: Duration::from_millis(retry_in_ms),
                    error: fields.error.unwrap_or_default(),
                    at: Instant::now(),
                },
            );
        }
    }
}

/// Whether `check` should draw progress: a human is watching (stdout is a terminal that can
/// move its cursor), the output is the table, and no log level was asked for (a log on the same
/// terminal would run through the display).
pub fn wanted(json: bool) -> bool {
    !json
        && std::io::stdout().is_terminal()
        && std::env::var_os("DBMANAGER_LOG").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// The outcome of one connection's check, once known.
#[derive(Debug, Clone)]
enum Checked {
    Running,
    Up(f64),
    Failed(String),
}

/// A running display; [`Progress::finish`] erases it.
pub struct Progress {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    checks: Arc<Mutex<BTreeMap<String, Checked>>>,
}

impl Progress {
    pub fn start(manager: &Manager) -> Self {
        // Only a stderr on the same kind of device can garble the display.
        ACTIVE.store(std::io::stderr().is_terminal(), Ordering::Relaxed);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let checks = Arc::new(Mutex::new(BTreeMap::new()));
        let task = tokio::spawn({
            let manager = manager.clone();
            let checks = checks.clone();
            async move {
                let started = Instant::now();
                let mut connected_in = BTreeMap::new();
                let mut drawn = 0;
                let mut tick = 0usize;
                // A check that is over at once draws nothing (no flicker before the table).
                tokio::select! {
                    () = tokio::time::sleep(FIRST_DRAW) => {}
                    _ = stopped.changed() => return,
                }
                loop {
                    let lines = frame(&manager, &checks, started, tick, &mut connected_in);
                    drawn = draw(&lines, drawn);
                    tick += 1;
                    tokio::select! {
                        () = tokio::time::sleep(REDRAW) => {}
                        _ = stopped.changed() => break,
                    }
                }
                erase(drawn);
            }
        });
        Self { stop, task, checks }
    }

    /// The check of `name` started.
    pub fn checking(&self, name: &str) {
        self.set(name, Checked::Running);
    }

    /// The check of `name` ended: its ping time, or its error.
    pub fn checked(&self, name: &str, outcome: Result<f64, String>) {
        self.set(
            name,
            match outcome {
                Ok(ms) => Checked::Up(ms),
                Err(e) => Checked::Failed(e),
            },
        );
    }

    fn set(&self, name: &str, state: Checked) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.insert(name.to_owned(), state);
        }
    }

    /// Stops the display and erases it.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        ACTIVE.store(false, Ordering::Relaxed);
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// An error message without the `connection `name`: ` prefix the line already says.
fn short<'a>(error: &'a str, name: &str) -> &'a str {
    error
        .strip_prefix(&format!("connection `{name}`: "))
        .unwrap_or(error)
}

fn frame(
    manager: &Manager,
    checks: &Mutex<BTreeMap<String, Checked>>,
    started: Instant,
    tick: usize,
    connected_in: &mut BTreeMap<String, Duration>,
) -> Vec<String> {
    let connections = manager.connections();
    let retries = RETRIES.lock().map(|r| r.clone()).unwrap_or_default();
    let checks = checks.lock().map(|c| c.clone()).unwrap_or_default();
    let spinner = SPINNER[tick % SPINNER.len()];
    let mut done = 0;
    let mut rows = Vec::with_capacity(connections.len());
    for c in &connections {
        let name = c.name();
        let health = c.health();
        let (symbol, text) = match (checks.get(name), health.status.is_up(), health.last_check) {
            (Some(Checked::Up(ms)), _, _) => {
                done += 1;
                ('✓', format!("up, ping {ms:.2} ms"))
            }
            (Some(Checked::Failed(e)), _, _) => {
                done += 1;
                ('✗', format!("check failed: {}", short(e, name)))
            }
            (Some(Checked::Running), _, _) => (spinner, "connected, checking".to_owned()),
            (None, true, _) => {
                let elapsed = *connected_in
                    .entry(name.to_owned())
                    .or_insert_with(|| started.elapsed());
                ('✓', format!("connected in {}", seconds(elapsed)))
            }
            (None, false, Some(_)) => {
                done += 1;
                let error = health.last_error.as_deref().unwrap_or("not connected");
                ('✗', format!("failed: {}", short(error, name)))
            }
            (None, false, None) => match retries.get(name) {
                Some(r) => {
                    let of = |n: u64| match r.max_attempts {
                        0 => format!("attempt {n}"),
                        max => format!("attempt {n} of {max}"),
                    };
                    let error = short(&r.error, name);
                    let left = r.retry_in.saturating_sub(r.at.elapsed());
                    let text = if left.is_zero() {
                        let next = of(r.attempt + 1);
                        format!("{next}, connecting ({} failed: {error})", r.attempt)
                    } else {
                        let (attempt, left) = (of(r.attempt), seconds(left));
                        format!("{attempt} failed, retrying in {left}: {error}")
                    };
                    ('↻', text)
                }
                None => (
                    spinner,
                    format!("connecting, {}", seconds(started.elapsed())),
                ),
            },
        };
        // Errors may quote the config, control characters included: a line must stay a line.
        rows.push(crate::text::escaped(&format!(
            "  {symbol} {name} ({}): {text}",
            c.kind()
        )));
    }
    let mut lines = vec![format!(
        "Checking {} connection{}: {done} done, {}",
        connections.len(),
        if connections.len() == 1 { "" } else { "s" },
        seconds(started.elapsed())
    )];
    lines.extend(rows);
    lines
}

/// Cuts `line` to `width` columns (one per character), marking the cut.
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Redraws the block in place of the previous one (`drawn` lines); returns the lines drawn.
fn draw(lines: &[String], drawn: usize) -> usize {
    let (columns, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    let width = if columns == 0 {
        80
    } else {
        usize::from(columns)
    };
    // Never more lines than the screen holds: the cursor cannot move above its top.
    let room = if rows == 0 { 24 } else { usize::from(rows) }
        .saturating_sub(1)
        .max(2);
    let mut shown: Vec<String> = lines.iter().take(room).cloned().collect();
    if lines.len() > room
        && let Some(last) = shown.last_mut()
    {
        *last = format!("  … and {} more", lines.len() - room + 1);
    }
    let mut out = String::new();
    if drawn > 0 {
        let _ = write!(out, "\x1b[{drawn}A");
    }
    for line in &shown {
        let _ = write!(
            out,
            "\r\x1b[2K{}\n",
            fit(line, width.saturating_sub(1).max(10))
        );
    }
    // Lines left over from a taller previous frame.
    out.push_str("\x1b[J");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    shown.len()
}

fn erase(drawn: usize) {
    if drawn == 0 {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "\x1b[{drawn}A\r\x1b[J");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_to_the_width() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("connection refused", 10), "connectio…");
        assert_eq!(fit("✓ ünïcödé", 4), "✓ ü…");
    }

    #[test]
    fn the_connection_prefix_is_not_repeated() {
        assert_eq!(
            short("connection `pg`: connect failed: refused", "pg"),
            "connect failed: refused"
        );
        assert_eq!(short("other", "pg"), "other");
    }
}
