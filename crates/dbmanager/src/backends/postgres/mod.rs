//! PostgreSQL through sqlx: one pool, SeaORM on the same pool, the neutral handle.

mod listener;
mod options;
mod rows;
mod servers;

use futures_util::future::BoxFuture;
use sqlx::Postgres;

use crate::backends::pg_common::{classify_server_error, session_settings, transaction_settings};
use crate::backends::sqlx::rows::check_parameter_count;
use crate::backends::sqlx::{
    self as shared, CacheFailure, OpenPlan, PerTransaction, SqlxFlavor, sqlx_statements,
};
use crate::config::{DatabaseType, Pooler};
use crate::driver::{BackendPool, Driver, OpenSpec};
use crate::error::{ErrorKind, Result};
use crate::sql::Value;

pub(crate) use options::connect_options;

pub(crate) use crate::backends::pg_common::DEFAULT_PORT;

/// PostgreSQL's checks, and the dsn as sqlx parses it.
fn check(c: &crate::config::ConnectionConfig, p: &mut crate::config::ConnectionProblems<'_>) {
    crate::backends::pg_common::check(c, p);
    crate::backends::check_dsn(c, p, crate::backends::pg_common::DSN_SCHEMES, |dsn| {
        options::dsn_options("", dsn)
    });
}

pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Postgres,
    variant: Some(crate::config::PostgresDriver::Sqlx),
    system_name: "postgresql",
    default_port: Some(DEFAULT_PORT),
    dsn_schemes: crate::backends::pg_common::DSN_SCHEMES,
    fields: crate::backends::pg_common::FIELDS,
    required: crate::backends::pg_common::REQUIRED,
    no_sea_orm: None,
    check,
    classify: shared::classify_any::<Pg>,
    open,
    listen: Some(&listener::LISTEN),
    replica_lag: Some(&crate::backends::pg_common::replica_lag::PROBE),
};

/// The PostgreSQL flavor of the shared sqlx backend.
pub(crate) struct Pg;

impl SqlxFlavor for Pg {
    type DB = Postgres;

    const ARRAYS: bool = true;
    const PLACEHOLDERS: &'static crate::sql::placeholders::Dialect =
        &crate::backends::pg_common::POSTGRES;

    fn classify_database(e: &dyn sqlx::error::DatabaseError) -> ErrorKind {
        classify_server_error(e.code().as_deref(), e.message())
    }

    sqlx_statements!(Postgres, rows::bind, rows::decode);

    /// libpq's check for `target_session_attrs=read-write` on servers older than 14: a standby
    /// and a server with `default_transaction_read_only` both say `on`. The simple query
    /// protocol: no prepared statement is left behind.
    async fn is_writable(conn: &mut sqlx::PgConnection) -> std::result::Result<bool, sqlx::Error> {
        use sqlx::Row as _;
        let row = sqlx::raw_sql("SHOW transaction_read_only")
            .fetch_one(conn)
            .await?;
        Ok(row.try_get::<String, _>(0)? == "off")
    }

    fn means_failover(e: &dyn sqlx::error::DatabaseError) -> bool {
        e.code()
            .is_some_and(|code| crate::backends::pg_common::sqlstate_means_failover(&code))
    }

    fn cache_failure(e: &dyn sqlx::error::DatabaseError) -> Option<CacheFailure> {
        let routine = e
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|db| db.routine());
        e.code()
            .is_some_and(|code| {
                crate::backends::pg_common::stale_cached_statement(&code, routine, e.message())
            })
            .then_some(CacheFailure::Stale)
    }

    fn with_credentials(
        options: sqlx::postgres::PgConnectOptions,
        credentials: &crate::credentials::Resolved,
    ) -> sqlx::postgres::PgConnectOptions {
        options::with_credentials(options, credentials)
    }

    /// The wire protocol counts parameters in 16 bits.
    fn check_statement(_sql: &str, params: &[Value]) -> std::result::Result<(), sqlx::Error> {
        check_parameter_count(params.len(), u16::MAX as usize)
    }

    #[cfg(feature = "sea-orm")]
    fn sea_orm(pool: sqlx::PgPool) -> sea_orm::DatabaseConnection {
        pool.into()
    }

    #[cfg(feature = "sea-orm")]
    fn decode_orm_row(
        result: &sea_orm::QueryResult,
    ) -> Option<std::result::Result<Vec<crate::sql::Value>, sqlx::Error>> {
        result.try_as_pg_row().map(rows::decode)
    }

    #[cfg(feature = "sea-orm")]
    fn orm_timestamp(t: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
        crate::backends::pg_common::datetime::whole_micros(t)
    }

    /// sqlx caches statements by text alone: SeaORM's carry their parameter types too.
    #[cfg(feature = "sea-orm")]
    fn orm_text(sql: String, params: &[Value]) -> String {
        // Every SeaORM value is typed (a NULL one as text).
        rows::typed_text(&sql, params, &[], "dbmanager sea-orm")
    }
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move {
        let (credentials, _) = spec.credentials.current().await?;
        let options = connect_options(spec.name, spec.config, spec.settings, &credentials).await?;
        let failover = servers::plan(spec.name, spec.config, &options)?;
        // Behind a pooler the session settings are statements (see `connect_options`): once
        // per connection in session mode, once per transaction in transaction mode.
        let (init, per_transaction) = match spec.config.pooler {
            Pooler::None => (Vec::new(), None),
            Pooler::Session => (
                session_settings(spec.config, spec.settings, false)
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                None,
            ),
            Pooler::Transaction => (
                Vec::new(),
                Some(PerTransaction {
                    settings: transaction_settings(spec.config, spec.settings),
                }),
            ),
        };
        let plan = OpenPlan {
            options,
            keep_probe: false,
            init,
            per_transaction,
            failover,
        };
        shared::open::<Pg>(spec, plan).await
    })
}

impl crate::adopt::Sealed for sqlx::PgPool {}

impl crate::adopt::Adoptable for sqlx::PgPool {
    fn kind(&self) -> DatabaseType {
        DatabaseType::Postgres
    }

    fn adopt(self, context: &crate::adopt::AdoptContext) -> crate::adopt::Adopted {
        crate::adopt::Adopted(shared::adopt::<Pg>(&context.name, &context.counters, self))
    }

    fn is_closed(&self) -> bool {
        sqlx::Pool::is_closed(self)
    }
}
