//! SQLite through sqlx: files in WAL mode or a shared in-memory database, SeaORM on the same
//! pool, the neutral handle.

mod options;
mod rows;

use futures_util::future::BoxFuture;
use sqlx::Sqlite;
use sqlx::sqlite::SqliteConnectOptions;

use crate::backends::sqlx::{self as shared, OpenPlan, SqlxFlavor, sqlx_statements};
use crate::config::DatabaseType;
use crate::config::{ConnectionConfig, ConnectionProblems};
use crate::driver::{BackendPool, Driver, Field, OpenSpec};
use crate::error::{Error, ErrorKind, Operation, Result};

pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Sqlite,
    variant: None,
    system_name: "sqlite",
    default_port: None,
    dsn_schemes: &["sqlite:"],
    fields: &[Field::Filepath, Field::InitSql],
    required: &[Field::Filepath],
    no_sea_orm: None,
    check,
    classify: shared::classify_any::<Lite>,
    open,
    listen: None,
    replica_lag: None,
};

/// A `filepath` that can never be opened as written is a problem of the file, found with every
/// other one when it is loaded rather than as a failed connect.
fn check(c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
    if let Some(problem) = c.filepath.as_deref().and_then(options::filepath_problem) {
        p.push("filepath", problem);
    }
}

/// The SQLite flavor of the shared sqlx backend.
pub(crate) struct Lite;

impl SqlxFlavor for Lite {
    type DB = Sqlite;

    const TEXT_UUIDS: bool = true;
    const TEXT_DECIMALS: bool = true;
    const PLACEHOLDERS: &'static crate::sql::placeholders::Dialect = &rows::SQLITE;
    /// A deferred `BEGIN` starts as a reader, and a reader that then writes while another
    /// connection writes fails at once with SQLITE_BUSY: SQLite does not wait `busy_timeout`
    /// there, since waiting could deadlock. `BEGIN IMMEDIATE` takes the write lock up front,
    /// waiting `busy_timeout` for it, so concurrent transactions queue instead of failing.
    const IMMEDIATE_TRANSACTIONS: bool = true;

    /// SQLite rolls the whole transaction back on some errors (`INSERT OR ROLLBACK`, a
    /// trigger's `RAISE(ROLLBACK, ...)`, SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM) and runs
    /// later statements in autocommit; `BEGIN` succeeds only then. Its result codes do not
    /// say which errors did, so every database error is probed.
    fn ends_transaction(_: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
        Some("BEGIN")
    }

    /// A database that may not be written (`PRAGMA query_only`) refuses `BEGIN IMMEDIATE`
    /// with SQLITE_READONLY; its transactions only read.
    fn immediate_refused(e: &sqlx::Error) -> bool {
        e.as_database_error()
            .and_then(|db| db.code())
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == READONLY)
    }

    fn classify_database(e: &dyn sqlx::error::DatabaseError) -> ErrorKind {
        classify_result_code(e.code().as_deref())
    }

    sqlx_statements!(Sqlite, rows::bind, rows::decode);

    fn check_statement(
        sql: &str,
        params: &[crate::sql::Value],
    ) -> std::result::Result<(), sqlx::Error> {
        rows::check_placeholders(sql, params)
    }

    #[cfg(feature = "sea-orm")]
    fn sea_orm(pool: sqlx::SqlitePool) -> sea_orm::DatabaseConnection {
        pool.into()
    }

    #[cfg(feature = "sea-orm")]
    fn decode_orm_row(
        result: &sea_orm::QueryResult,
    ) -> Option<std::result::Result<Vec<crate::sql::Value>, sqlx::Error>> {
        result.try_as_sqlite_row().map(rows::decode)
    }
}

/// SQLITE_READONLY, the primary result code of a write to a database that cannot be written.
const READONLY: i32 = 8;

/// Primary result codes (extended codes carry the primary one in their low byte).
fn classify_result_code(code: Option<&str>) -> ErrorKind {
    match code.and_then(|c| c.parse::<i32>().ok()).map(|n| n & 0xff) {
        // BUSY, LOCKED
        Some(5 | 6) => ErrorKind::Transient,
        // CANTOPEN; NOTADB (the file is something else, or encrypted)
        Some(14 | 26) => ErrorKind::Configuration,
        // AUTH
        Some(23) => ErrorKind::Authentication,
        _ => ErrorKind::Query,
    }
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move {
        // Only a provider can get here (`password`, `password_file` are refused at load): it
        // would never be asked, which the application should hear of rather than find out.
        if spec.credentials.is_dynamic() {
            return Err(Error::Unsupported {
                connection: spec.name.to_string(),
                layer: "a credential provider",
                backend: DatabaseType::Sqlite,
                reason: "SQLite has no login (remove the provider set for this connection)",
            });
        }
        let options::Resolved {
            options,
            in_memory,
            creates,
        } = options::connect_options(spec.name, spec.config)?;
        let options = if creates {
            created(spec, options).await?
        } else {
            options
        };
        // The probe of an in-memory database is kept: SQLite drops the database when its last
        // connection closes, which the pool's idle and lifetime limits would otherwise do.
        let plan = OpenPlan {
            options,
            keep_probe: in_memory,
            init: Vec::new(),
            failover: None,
            per_transaction: None,
        };
        shared::open::<Lite>(spec, plan).await
    })
}

/// Creates a missing database file now, once, and returns options that never create one: a
/// file deleted (or moved away) under the running pool then fails the pool's new connections
/// (`unable to open database file`) instead of each silently starting a new, empty database
/// beside the connections still on the old one. `reconnect`, `replace` and a reload open the
/// pool again, and so create it again.
async fn created(
    spec: &OpenSpec<'_>,
    options: SqliteConnectOptions,
) -> Result<SqliteConnectOptions> {
    if !options.get_filename().exists() {
        let create = async {
            let conn = sqlx::ConnectOptions::connect(&options)
                .await
                .map_err(|e| shared::sqlx_error::<Lite>(spec.name, Operation::Connect, e))?;
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        };
        crate::backends::bounded(
            spec.name,
            Operation::Connect,
            spec.settings.connect_timeout,
            create,
        )
        .await?;
    }
    Ok(options.create_if_missing(false))
}

impl crate::adopt::Sealed for sqlx::SqlitePool {}

impl crate::adopt::Adoptable for sqlx::SqlitePool {
    fn kind(&self) -> DatabaseType {
        DatabaseType::Sqlite
    }

    fn adopt(self, context: &crate::adopt::AdoptContext) -> crate::adopt::Adopted {
        crate::adopt::Adopted(shared::adopt::<Lite>(
            &context.name,
            &context.counters,
            self,
        ))
    }

    fn is_closed(&self) -> bool {
        sqlx::Pool::is_closed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_classify() {
        assert_eq!(classify_result_code(Some("517")), ErrorKind::Transient); // BUSY_SNAPSHOT
        assert_eq!(classify_result_code(Some("5")), ErrorKind::Transient);
        assert_eq!(classify_result_code(Some("14")), ErrorKind::Configuration);
        assert_eq!(classify_result_code(Some("26")), ErrorKind::Configuration); // NOTADB
        assert_eq!(classify_result_code(Some("6")), ErrorKind::Transient); // LOCKED
        assert_eq!(classify_result_code(Some("262")), ErrorKind::Transient); // LOCKED_SHAREDCACHE
        assert_eq!(classify_result_code(Some("8")), ErrorKind::Query); // READONLY
        assert_eq!(classify_result_code(Some("1")), ErrorKind::Query);
        assert_eq!(classify_result_code(None), ErrorKind::Query);
    }
}
