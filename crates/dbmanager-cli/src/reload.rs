//! `serve`'s config reloads: on SIGHUP and when the config file changes, debounced. The file is
//! watched through its directory, so editors that save by writing a new file and renaming it
//! over the old one are seen too, and so is a Kubernetes volume's swap of its `..data`
//! directory under a symlinked file; a symlinked file's target directory is watched as well,
//! for edits in place of the target. A file event reloads only when what the file holds
//! changed: reading the file is an event too (inotify's open and close), and a reload that
//! reacted to its own read would reload forever. A file that does not load keeps the running
//! config and says why; the outcome of the last reload is on `/stats`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbmanager::reexports::chrono;
use dbmanager::{ConnectPolicy, Manager, ManagerConfig};
use notify::{RecursiveMode, Watcher as _};

use crate::tags::TagFilter;
use serde::Serialize;

/// Changes closer together than this are one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Old pools get this long to finish their checkouts after a replace or removal.
const DRAIN: Duration = Duration::from_secs(10);

/// Why a config without connections is refused, at startup and on reload.
pub const NOTHING_TO_SERVE: &str = "the configuration has no connections: nothing to serve (add one under `dbmanager.connections`)";

/// What the last reload did.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// When it finished (RFC 3339, UTC).
    pub at: String,
    /// `signal` (SIGHUP) or `file` (the file changed).
    pub trigger: &'static str,
    /// Whether the new config was loaded and every change applied.
    pub ok: bool,
    /// Why the file was not loaded: its problems (never a secret value).
    pub problems: Option<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub replaced: Vec<String>,
    pub unchanged: Vec<String>,
    /// Connections whose only changes were `critical`, `tags` or the retry settings, applied
    /// in place.
    pub updated: Vec<String>,
    /// Connections whose change failed, with why.
    pub failed: Vec<(String, String)>,
}

/// Shared with the HTTP handlers. Locked only to copy or store one value, never across an
/// `.await`.
#[derive(Debug, Default)]
pub struct Reloads {
    last: Mutex<Option<LastReload>>,
}

impl Reloads {
    pub fn last(&self) -> Option<LastReload> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Whether the last reload left something not applied (a file it could not load, or a
    /// connection whose change failed).
    fn last_failed(&self) -> bool {
        self.last().is_some_and(|last| !last.ok)
    }

    fn store(&self, reload: LastReload) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(reload);
        }
    }
}

/// Reloads `path` into `manager` and records (and logs) the outcome. Only the connections
/// `filter` selects are kept: one that stops matching is removed, one that starts matching is
/// added; a file in which nothing matches keeps the running config.
pub async fn reload(
    manager: &Manager,
    path: &Path,
    trigger: &'static str,
    reloads: &Reloads,
    filter: &TagFilter,
) {
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let loaded = ManagerConfig::from_file(path)
        .map_err(|problems| problems.to_string())
        .and_then(|config| filter.select(config))
        .and_then(|config| {
            // As `--tag` selecting nothing: a file emptied by mistake (a half-rendered
            // template, a truncated ConfigMap) must not drain every pool and leave a server
            // that reports itself ready with nothing behind it.
            if config.connections.is_empty() {
                Err(NOTHING_TO_SERVE.to_owned())
            } else {
                Ok(config)
            }
        });
    let outcome = match loaded {
        Err(problems) => {
            eprintln!("reload ({trigger}): kept the running config: {problems}");
            LastReload {
                at: now(),
                trigger,
                ok: false,
                problems: Some(problems),
                added: Vec::new(),
                removed: Vec::new(),
                replaced: Vec::new(),
                unchanged: Vec::new(),
                updated: Vec::new(),
                failed: Vec::new(),
            }
        }
        // As at startup: a new connection whose server is down is kept, unavailable, for the
        // health loop to connect (and readiness to report) instead of being left out.
        Ok(config) => match manager
            .reload_with(config, DRAIN, ConnectPolicy::Partial)
            .await
        {
            Err(e) => {
                eprintln!("reload ({trigger}): kept the running config: {e}");
                LastReload {
                    at: now(),
                    trigger,
                    ok: false,
                    problems: Some(e.to_string()),
                    added: Vec::new(),
                    removed: Vec::new(),
                    replaced: Vec::new(),
                    unchanged: Vec::new(),
                    updated: Vec::new(),
                    failed: Vec::new(),
                }
            }
            Ok(report) => {
                let failed: Vec<(String, String)> = report
                    .failed
                    .iter()
                    .map(|(n, e)| (n.clone(), e.to_string()))
                    .collect();
                eprintln!(
                    "reload ({trigger}): added {:?}, removed {:?}, replaced {:?}, updated {:?}, unchanged {:?}, failed {:?}",
                    report.added,
                    report.removed,
                    report.replaced,
                    report.updated,
                    report.unchanged,
                    failed
                );
                LastReload {
                    at: now(),
                    trigger,
                    ok: report.is_complete(),
                    problems: None,
                    added: report.added,
                    removed: report.removed,
                    replaced: report.replaced,
                    unchanged: report.unchanged,
                    updated: report.updated,
                    failed,
                }
            }
        },
    };
    reloads.store(outcome);
}

/// What the config file holds now, or why it cannot be read (a file event reloads only when
/// this changed).
fn contents(path: &Path) -> Result<Vec<u8>, std::io::ErrorKind> {
    std::fs::read(path).map_err(|e| e.kind())
}

/// Whether `path` is a Kubernetes volume's own entry (`..data`, `..2026_11_29_...`): a
/// ConfigMap or Secret update swaps the `..data` symlink, and the file (a symlink through it)
/// changes without an event of its own.
fn is_volume_swap(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".."))
}

/// Takes over SIGHUP, whose default action ends the process: called first thing, so that a
/// SIGHUP at any moment of `serve`'s life reloads (or, without a config file, is ignored)
/// instead of killing it. `None` (with a warning) where no handler can be installed.
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: no SIGHUP handler: {e}");
            None
        }
    }
}

/// Without a config file there is nothing to reload: a SIGHUP says so, and the process keeps
/// serving (until the task is aborted).
pub fn ignore_hangups(hangup: Option<tokio::signal::unix::Signal>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut hangup) = hangup else {
            return;
        };
        while hangup.recv().await.is_some() {
            eprintln!(
                "reload (signal): nothing to reload: serving the embedded quick-start config"
            );
        }
    })
}

/// Reloads on SIGHUP (`hangup`, from [`hangup_signal`]) and on changes to `path` until the
/// task is aborted.
pub fn spawn(
    manager: Manager,
    path: PathBuf,
    reloads: Arc<Reloads>,
    filter: TagFilter,
    hangup: Option<tokio::signal::unix::Signal>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
        // The file's directory; for a symlinked file, also the directory of the file it points
        // to, where an edit in place of the target happens.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let target = std::fs::canonicalize(&path).ok();
        let mut names: Vec<std::ffi::OsString> =
            path.file_name().map(|n| n.to_owned()).into_iter().collect();
        let mut dirs = vec![dir];
        if let Some(target) = target.as_deref()
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
        {
            names.extend(target.file_name().map(|n| n.to_owned()));
            dirs.extend(target.parent().map(Path::to_path_buf));
        }
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| {
                    p.file_name().is_some_and(|n| names.iter().any(|m| m == n)) || is_volume_swap(p)
                })
            {
                let _ = tx.send(());
            }
        });
        let mut seen = contents(&path);
        // Without a watcher (no inotify here, say) SIGHUP still reloads.
        let _watcher = match watcher {
            Ok(mut w) => {
                for dir in &dirs {
                    if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                        eprintln!(
                            "warning: not watching {}: {e}; reload with SIGHUP",
                            dir.display()
                        );
                    }
                }
                Some(w)
            }
            Err(e) => {
                eprintln!("warning: no file watcher: {e}; reload with SIGHUP");
                None
            }
        };
        let mut hangup = hangup;
        loop {
            let trigger = tokio::select! {
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => "signal",
                Some(()) = changed.recv() => {
                    // Editors write in several steps: wait for the writes to settle.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
                    "file"
                }
                else => return,
            };
            let now = contents(&path);
            // A file event with the same contents is nothing new, unless the last reload
            // failed: saving the file again (`touch`) then retries it, e.g. once a replaced
            // connection's new server is up (a failed replace keeps the old pool and nothing
            // else would try again).
            if trigger == "file" && now == seen && !reloads.last_failed() {
                continue;
            }
            seen = now;
            reload(&manager, &path, trigger, &reloads, &filter).await;
        }
    })
}
