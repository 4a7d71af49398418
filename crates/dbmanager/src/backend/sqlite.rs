//! SQLite: files in WAL mode, shared in-memory databases, per-connection PRAGMAs.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::Mutex;

use super::{ConnectSpec, SqlPool, config_error};
use crate::config::ConnectionConfig;
use crate::error::{Operation, Result};
use crate::pool::sqlx_error;

/// How long a statement waits on a locked database before failing with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const MEMORY: &str = ":memory:";

pub(crate) struct SqliteBackend {
    pub sql: SqlPool<sqlx::Sqlite>,
    /// Holds a shared in-memory database open: SQLite drops it when its last connection
    /// closes, which the pool's idle and lifetime limits would otherwise do.
    keeper: Mutex<Option<SqliteConnection>>,
}

impl SqliteBackend {
    pub(crate) async fn close(&self) {
        self.sql.pool.close().await;
        if let Some(conn) = self.keeper.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

/// Driver options: the `dsn`, `:memory:` (one database shared by the pool), or a file; the
/// PRAGMAs here are sent on every new connection.
pub(crate) fn connect_options(
    name: &str,
    c: &ConnectionConfig,
) -> Result<(SqliteConnectOptions, bool)> {
    let (options, in_memory) = if let Some(dsn) = &c.dsn {
        let text = dsn.expose_secret();
        let in_memory = text.contains(MEMORY) || text.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(text)
            .map_err(|e| sqlx_error(name, Operation::Connect, e))?;
        (options, in_memory)
    } else {
        let path = c.filepath.as_deref().unwrap_or(Path::new(MEMORY));
        if path == Path::new(MEMORY) {
            let options = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| sqlx_error(name, Operation::Connect, e))?;
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

pub(crate) async fn open(spec: &ConnectSpec<'_>) -> Result<SqliteBackend> {
    let (options, in_memory) = connect_options(spec.name, spec.config)?;
    let probe = super::probe::<sqlx::Sqlite>(spec, &options).await?;
    let keeper = if in_memory {
        Some(probe)
    } else {
        let _ = probe.close().await;
        None
    };
    let (pool, slot) = super::lazy_pool(spec, options).await?;
    #[cfg(feature = "sea-orm")]
    let orm = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone());
    Ok(SqliteBackend {
        sql: SqlPool::new(
            pool,
            slot,
            #[cfg(feature = "sea-orm")]
            orm,
        ),
        keeper: Mutex::new(keeper),
    })
}
