//! SQLite connect options: files in WAL mode, shared in-memory databases, per-connection
//! PRAGMAs.

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

/// How long a statement waits on a locked database before failing with SQLITE_BUSY.
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

/// Driver options: the `dsn` (its query parameters checked first), `:memory:` (one database
/// shared by the pool), or a file; the PRAGMAs here are sent on every new connection.
pub(crate) fn connect_options(
    name: &str,
    c: &ConnectionConfig,
) -> Result<(SqliteConnectOptions, bool)> {
    let (options, in_memory) = if let Some(given) = &c.dsn {
        dsn::check_query(name, given, QuerySyntax::Sqlite, DSN_PARAMETERS)?;
        let text = given.expose_secret();
        let in_memory = text.contains(MEMORY) || text.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(text)
            .map_err(|e| sqlx_error::<Lite>(name, Operation::Connect, e))?;
        (options, in_memory)
    } else {
        let path = c.filepath.as_deref().unwrap_or(Path::new(MEMORY));
        if path == Path::new(MEMORY) {
            let options = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| sqlx_error::<Lite>(name, Operation::Connect, e))?;
            (options, true)
        } else {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                && !parent.is_dir()
            {
                return Err(config_error(
                    name,
                    format!(
                        "the directory `{}` of filepath `{}` does not exist",
                        parent.display(),
                        path.display()
                    ),
                ));
            }
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            (options, false)
        }
    };
    Ok((
        options.busy_timeout(BUSY_TIMEOUT).foreign_keys(true),
        in_memory,
    ))
}
