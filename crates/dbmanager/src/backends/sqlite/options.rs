//! SQLite connect options: files in WAL mode, shared in-memory databases, per-connection
//! PRAGMAs.
//!
//! - `filepath` is always a path, never a URI: SQLite reads a name starting with `file:` as a
//!   URI (sqlx always opens with `SQLITE_OPEN_URI`), whose query could switch locking off or
//!   make each pooled connection a private in-memory database, so such a value is refused
//!   (URIs go in `dsn`; a file really named so is `./file:...`). `?` and `#` elsewhere in a path
//!   are part of the file name.
//! - A `dsn` is sqlx's `sqlite:` URL, its query parameters checked first; it gets the same
//!   `busy_timeout` and `foreign_keys` as a file, and WAL with `synchronous=NORMAL` unless it is
//!   in memory, read-only (`mode=ro`) or `immutable` (what the URL says wins).
//! - `:memory:` (or a `dsn` in memory) is one database shared by the pool, held open by a
//!   connection kept for the pool's life; closing the connection drops it, and the next connect
//!   starts with a new, empty database.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::Lite;
use crate::backends::config_error;
use crate::backends::sqlx::sqlx_error;
use crate::config::ConnectionConfig;
use crate::dsn::{self, Accept, Known, QuerySyntax};
use crate::error::{Operation, Result};

/// How long a statement waits on a locked database before failing with SQLITE_BUSY; at most
/// `query_timeout`: a statement the neutral handle gives up on at `query_timeout` goes on in
/// SQLite's worker thread (there is no server to cancel it), and one still waiting for the
/// lock would run once it is free, a write reported as failed then committed after all.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const MEMORY: &str = ":memory:";

/// The query parameters sqlx 0.9's SQLite parser reads (its errors quote bad values).
const DSN_PARAMETERS: &[Known] = &[
    Known {
        name: "mode",
        accept: Accept::Exactly(&["ro", "rw", "rwc", "memory"]),
    },
    Known {
        name: "cache",
        accept: Accept::Exactly(&["private", "shared"]),
    },
    Known {
        name: "immutable",
        accept: Accept::Exactly(&["true", "false", "1", "0"]),
    },
    Known {
        name: "vfs",
        accept: Accept::Any,
    },
];

/// What [`connect_options`] resolved.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) options: SqliteConnectOptions,
    /// The database lives in memory.
    pub(crate) in_memory: bool,
    /// A missing file is created (`filepath`, or `mode=rwc` in a `dsn`): the pool opening
    /// creates it, and its connections then open only the file that exists (see `open`).
    pub(crate) creates: bool,
}

/// Driver options, and whether the database lives in memory: the `dsn`, `:memory:` (one
/// database shared by the pool), or a file; the PRAGMAs here are sent on every new connection.
pub(crate) fn connect_options(name: &str, c: &ConnectionConfig) -> Result<Resolved> {
    let (options, in_memory, creates) = match &c.dsn {
        Some(dsn) => from_dsn(name, dsn)?,
        None => from_path(name, c.filepath.as_deref().unwrap_or(Path::new(MEMORY)))?,
    };
    let busy = match c.query_timeout {
        Duration::ZERO => BUSY_TIMEOUT,
        bound => bound.min(BUSY_TIMEOUT),
    };
    Ok(Resolved {
        options: options.busy_timeout(busy).foreign_keys(true),
        in_memory,
        creates: creates && !in_memory,
    })
}

fn from_dsn(name: &str, dsn: &secrecy::SecretString) -> Result<(SqliteConnectOptions, bool, bool)> {
    let params = dsn::check_query(name, dsn, QuerySyntax::Sqlite, DSN_PARAMETERS)?;
    let text = dsn.expose_secret();
    let options = SqliteConnectOptions::from_str(text)
        .map_err(|e| sqlx_error::<Lite>(name, Operation::Connect, e))?;
    // As sqlx's parser reads it: the part between the scheme and the first `?`.
    let database = text
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    let param = |key: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let in_memory = database == MEMORY || param("mode") == Some("memory");
    let read_only = param("mode") == Some("ro");
    let immutable = matches!(param("immutable"), Some("true" | "1"));
    let creates = param("mode") == Some("rwc");
    let options = if in_memory || read_only || immutable {
        options
    } else {
        options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    };
    Ok((options, in_memory, creates))
}

/// Why `path` can never be opened as written, if it cannot: checked when the configuration is
/// loaded (the sqlite driver's `check`) and again at connect, for a configuration built in code.
pub(super) fn filepath_problem(path: &Path) -> Option<&'static str> {
    if path.as_os_str().is_empty() {
        // SQLite would open a private temporary database per connection.
        return Some("is empty; give a file or `:memory:`");
    }
    if path.as_os_str().as_encoded_bytes().starts_with(b"file:") {
        return Some(
            "starts with `file:`, which SQLite would read as a URI; filepath is always a path: \
             put a URI in `dsn` (`dsn: \"sqlite:file:...\"`), or write `./file:...` for a file \
             so named",
        );
    }
    None
}

fn from_path(name: &str, path: &Path) -> Result<(SqliteConnectOptions, bool, bool)> {
    if path == Path::new(MEMORY) {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| sqlx_error::<Lite>(name, Operation::Connect, e))?;
        return Ok((options, true, false));
    }
    if let Some(problem) = filepath_problem(path) {
        let shown = if path.as_os_str().is_empty() {
            String::new()
        } else {
            format!("{} ", dsn::shown_path(path))
        };
        return Err(config_error(name, format!("filepath {shown}{problem}")));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(config_error(
            name,
            format!(
                "the directory {} of filepath {} does not exist",
                dsn::shown_path(parent),
                dsn::shown_path(path)
            ),
        ));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    Ok((options, false, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseType;
    use crate::error::ErrorKind;

    fn dsn(text: &str) -> Result<(SqliteConnectOptions, bool)> {
        connect_options(
            "lite",
            &ConnectionConfig::from_dsn("lite", DatabaseType::Sqlite, text),
        )
        .map(|r| (r.options, r.in_memory))
    }

    #[test]
    fn filepaths_starting_with_file_colon_are_refused() {
        for path in [
            "file:app.db?mode=memory",
            "file:app.db",
            "file:/tmp/x.db?nolock=1",
        ] {
            let err = connect_options("lite", &ConnectionConfig::sqlite("lite", path)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            assert!(err.to_string().contains("`dsn`"), "{err}");
        }
        let ok = connect_options("lite", &ConnectionConfig::sqlite("lite", "./file:app.db"));
        assert!(!ok.unwrap().in_memory);
        let empty = connect_options("lite", &ConnectionConfig::sqlite("lite", ""));
        assert_eq!(empty.unwrap_err().kind(), ErrorKind::Configuration);
    }

    #[test]
    fn memory_is_detected_from_the_dsn_as_sqlx_parses_it() {
        assert!(dsn("sqlite::memory:").unwrap().1);
        assert!(dsn("sqlite:file:shared?mode=memory").unwrap().1);
        assert!(dsn("sqlite::memory:?cache=shared").unwrap().1);
        assert!(!dsn("sqlite:/tmp/x.db?mode=rwc").unwrap().1);
        // A file whose name merely contains the words is a file.
        assert!(!dsn("sqlite:/tmp/a:memory:b.db").unwrap().1);
    }

    #[test]
    fn only_files_that_may_be_created_are_created_by_the_pool_opening() {
        let creates = |c: ConnectionConfig| connect_options("lite", &c).unwrap().creates;
        assert!(creates(ConnectionConfig::sqlite("lite", "/tmp/x.db")));
        assert!(!creates(ConnectionConfig::sqlite("lite", ":memory:")));
        let from = |text: &str| ConnectionConfig::from_dsn("lite", DatabaseType::Sqlite, text);
        assert!(creates(from("sqlite:/tmp/x.db?mode=rwc")));
        assert!(!creates(from("sqlite:/tmp/x.db")));
        assert!(!creates(from("sqlite:/tmp/x.db?mode=ro")));
        assert!(!creates(from(
            "sqlite:file:shared?mode=memory&cache=shared"
        )));
    }

    #[test]
    fn dsn_parameters_are_checked_without_quoting_values() {
        for (text, key) in [
            ("sqlite:/tmp/x.db?mode=Val-Hidden", "`mode`"),
            ("sqlite:/tmp/x.db?pasword=Val-Hidden", "`pasword`"),
            ("sqlite:/tmp/x.db?immutable=Val-Hidden", "`immutable`"),
        ] {
            let err = dsn(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            assert!(err.to_string().contains(key), "{err}");
            assert!(!err.to_string().contains("Val-Hidden"), "{err}");
        }
    }
}
