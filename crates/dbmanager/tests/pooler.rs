//! Behind PgBouncer (Debian's 1.18): `pooler: transaction` and `pooler: session` against a
//! private PostgreSQL cluster with private PgBouncers in front of it (no
//! `ignore_startup_parameters` unless a test says so).
//!
//! - The SQL conformance suite (`support/conformance.rs`) runs through PgBouncer in
//!   transaction mode and in session mode, on both layers of the neutral handle, on both
//!   drivers (`driver: sqlx` and `driver: tokio-postgres`).
//! - A workload of 64 concurrent tasks over a server pool of 2 runs every layer: the neutral
//!   handle (native and SeaORM on sqlx, and on tokio-postgres), native sqlx, SeaORM and native
//!   tokio-postgres used as the README says, transactions (committed and rolled back),
//!   parameters of several types, health checks.
//! - Regressions: without the key, the same PgBouncer fails as reported (`prepared statement
//!   "sqlx_s_1" already exists`, with or without `statement-cache-capacity=0`; on
//!   tokio-postgres a cached statement missing on the server session lent next), or refuses
//!   the login when it does not ignore the startup parameters.

mod support;

use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dbmanager::reexports::bigdecimal::BigDecimal;
use dbmanager::reexports::chrono::{DateTime, FixedOffset};
use dbmanager::reexports::sea_orm::{self, ConnectionTrait as _, TransactionTrait as _};
use dbmanager::reexports::sqlx;
use dbmanager::reexports::uuid::Uuid;
use dbmanager::{
    Connection, ConnectionConfig, DatabaseType, DefaultOrm, ErrorKind, ListenerEvent, Manager,
    ManagerConfig, Pooler, PostgresDriver, Value,
};
use support::conformance::{self as suite, Caps, Ddl, Fixture, NativeError, TypeDdl, within};
use support::pgbouncer::{PgBouncer, PgBouncerConfig};
use support::{PrivateCluster, fast_config, unique};

const LIMIT: Duration = Duration::from_secs(120);

/// The server pool of the transaction-mode PgBouncer: small, so that 64 tasks really share it.
const TRANSACTION_POOL: u32 = 2;

/// The private cluster and the PgBouncers in front of it that this file's tests share while any
/// of them runs (started by the first, stopped when the last lets go).
struct Servers {
    // Dropped before the cluster.
    transaction: PgBouncer,
    session: PgBouncer,
    cluster: PrivateCluster,
}

static SERVERS: Mutex<Weak<Servers>> = Mutex::new(Weak::new());

fn servers() -> Arc<Servers> {
    let mut shared = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(servers) = shared.upgrade() {
        return servers;
    }
    let cluster = PrivateCluster::start();
    let users = [(cluster.superuser.as_str(), cluster.password.as_str())];
    let transaction = PgBouncer::start(
        cluster.port,
        &users,
        &PgBouncerConfig::new("transaction", TRANSACTION_POOL),
    );
    // A session keeps its server connection while the client is connected: room for every
    // client connection of the scenarios running at once (the workload's 40 and a few more;
    // the private cluster takes 60).
    let session = PgBouncer::start(cluster.port, &users, &PgBouncerConfig::new("session", 48));
    let servers = Arc::new(Servers {
        transaction,
        session,
        cluster,
    });
    *shared = Arc::downgrade(&servers);
    servers
}

impl Servers {
    fn bouncer(&self, pooler: Pooler) -> &PgBouncer {
        match pooler {
            Pooler::Transaction => &self.transaction,
            _ => &self.session,
        }
    }

    /// A connection to `database` through the PgBouncer of `pooler`'s mode.
    fn config(&self, name: &str, database: &str, pooler: Pooler) -> ConnectionConfig {
        let c = &self.cluster;
        let mut config = c.config(name, &c.superuser, &c.password, database);
        config.port = Some(self.bouncer(pooler).port);
        config.pooler = pooler;
        config
    }

    /// Server sessions on `database` now (seen by the server, not through PgBouncer).
    fn server_sessions(&self, database: &str) -> i64 {
        self.cluster
            .sql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"
            ))
            .parse()
            .unwrap_or(-1)
    }
}

/// A fresh database on the shared cluster, reached through PgBouncer; on `driver:
/// tokio-postgres` when `TOKIO`, else on sqlx.
struct Behind<const TRANSACTION: bool, const TOKIO: bool = false> {
    database: String,
    servers: Arc<Servers>,
}

impl<const TRANSACTION: bool, const TOKIO: bool> Behind<TRANSACTION, TOKIO> {
    fn pooler() -> Pooler {
        if TRANSACTION {
            Pooler::Transaction
        } else {
            Pooler::Session
        }
    }

    fn new() -> Self {
        let servers = servers();
        let database = unique("pgb");
        servers
            .cluster
            .sql(&format!("CREATE DATABASE \"{database}\""));
        Self { database, servers }
    }
}

impl<const TRANSACTION: bool, const TOKIO: bool> Drop for Behind<TRANSACTION, TOKIO> {
    fn drop(&mut self) {
        // PgBouncer keeps server connections to it: FORCE ends them.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.servers.cluster.sql(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ))
        }));
    }
}

type Direct = suite::Postgres;

impl<const TRANSACTION: bool, const TOKIO: bool> Fixture for Behind<TRANSACTION, TOKIO> {
    const KIND: DatabaseType = DatabaseType::Postgres;
    const SEA_ORM: bool = !TOKIO;
    const DDL: Ddl = <Direct as Fixture>::DDL;
    const CAPS: Caps = <Direct as Fixture>::CAPS;
    const TYPES: TypeDdl = <Direct as Fixture>::TYPES;

    fn create() -> Self {
        Self::new()
    }

    fn config(&self, name: &str) -> ConnectionConfig {
        let mut config = self.servers.config(name, &self.database, Self::pooler());
        if TOKIO {
            config.driver = Some(PostgresDriver::TokioPostgres);
        }
        config
    }

    fn native_layer() -> &'static str {
        if TOKIO { "tokio-postgres" } else { "postgres" }
    }

    async fn native_syntax_error(conn: &Connection) -> NativeError {
        #[cfg(feature = "tokio-postgres")]
        if TOKIO {
            let client = conn.tokio_postgres().unwrap().get().await.unwrap();
            // The simple protocol: no statement left on the lent server session.
            return Box::new(client.batch_execute("SELEC 1").await.unwrap_err());
        }
        let pool = conn.postgres().unwrap();
        Box::new(
            sqlx::query("SELEC 1")
                .persistent(false)
                .execute(&pool)
                .await
                .unwrap_err(),
        )
    }
}

/// The scenario lists of `tests/conformance.rs`, run on one fixture (and on SeaORM too when
/// `sea_orm` is named).
macro_rules! behind_pgbouncer {
    ($module:ident, $fixture:ty $(, $orm:ident)?) => {
        mod $module {
            use super::*;

            behind_pgbouncer!(@pool $fixture;
                lookup_by_name_and_default_switching,
                misuse_is_a_typed_error,
                stats_after_use_and_under_contention,
                close_with_a_checked_out_connection,
                native_driver_errors_classify,
            );

            mod native {
                use super::*;
                behind_pgbouncer!(@statements $fixture, DefaultOrm::Native; STATEMENTS);
            }

            $(
                mod $orm {
                    use super::*;
                    behind_pgbouncer!(@statements $fixture, DefaultOrm::SeaOrm; STATEMENTS);
                }
            )?
        }
    };
    (@pool $fixture:ty; $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                suite::$scenario::<$fixture>().await;
            }
        )+
    };
    (@statements $fixture:ty, $layer:expr; STATEMENTS) => {
        behind_pgbouncer!(@each $fixture, $layer;
            transactions,
            commit_after_an_error_tells_the_truth,
            null_in_every_column_type,
            unicode_text_round_trips,
            large_blob_round_trips,
            ten_thousand_rows_in_order,
            parameters_up_to_the_limit,
            parameters_over_the_limit_are_a_query_error,
            placeholder_edge_cases,
            missing_parameter_is_a_query_error,
            placeholder_zero_is_a_query_error,
            query_errors_are_query_kind,
            typed_values_round_trip,
        );
    };
    (@each $fixture:ty, $layer:expr; $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                suite::$scenario::<$fixture>($layer).await;
            }
        )+
    };
}

behind_pgbouncer!(transaction_mode, Behind<true>, sea_orm);
behind_pgbouncer!(session_mode, Behind<false>, sea_orm);

/// The same scenarios on `driver: tokio-postgres` (no SeaORM there).
#[cfg(feature = "tokio-postgres")]
mod tokio_postgres {
    use super::*;

    behind_pgbouncer!(transaction_mode, Behind<true, true>);
    behind_pgbouncer!(session_mode, Behind<false, true>);
}

// ---------------------------------------------------------------------------------------------
// The workload: 64 concurrent tasks on every layer
// ---------------------------------------------------------------------------------------------

const TASKS: i64 = 64;

/// A schema name that needs quoting, so `schema:` (the `search_path`) is seen to apply.
const SCHEMA: &str = "App Space";

/// The parameters of row `id`: several types.
fn row_params(id: i64, layer: &str) -> Vec<Value> {
    let at: DateTime<FixedOffset> =
        DateTime::parse_from_rfc3339("2024-02-29T23:59:59.123456-08:00").unwrap();
    vec![
        Value::Int(id),
        Value::Text(format!("{layer} ünï {id}")),
        Value::Decimal(BigDecimal::from_str(&format!("{id}.25")).unwrap()),
        Value::TimestampTz(at),
        Value::Uuid(Uuid::from_u128(id as u128)),
        Value::Bool(id % 2 == 0),
        Value::Bytes(vec![0, 255, id as u8]),
        Value::Null,
    ]
}

const INSERT: &str = "INSERT INTO items (id, label, amount, at, tag, ok, data, note) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const SELECT: &str = "SELECT id, label, amount, at, tag, ok, data, note FROM items WHERE id = $1";

/// Checks the row read back against what was written.
fn check_row(row: &dbmanager::Row, params: &[Value]) {
    let expected = ["id", "label", "amount", "at", "tag", "ok", "data", "note"];
    for (column, want) in expected.iter().zip(params) {
        let got = row
            .value(*column)
            .unwrap_or_else(|| panic!("{column} missing"));
        match (got, want) {
            (Value::TimestampTz(a), Value::TimestampTz(b)) => assert_eq!(a, b, "{column}"),
            _ => assert_eq!(got, want, "{column}"),
        }
    }
}

/// One neutral handle's share: a committed insert through a transaction, a standalone insert,
/// a rolled-back insert, reads with parameters, the session settings inside and outside a
/// transaction.
async fn neutral(db: &dbmanager::Database, base: i64, layer: &str) {
    let params = row_params(base, layer);
    let mut tx = db.begin().await.unwrap();
    assert_eq!(tx.execute(INSERT, &params).await.unwrap(), 1);
    let seen = tx
        .fetch_all(
            "SELECT current_setting('search_path') AS p, current_setting('statement_timeout') AS t, \
             current_setting('TimeZone') AS z, current_setting('DateStyle') AS d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(seen[0].get::<String>("p").unwrap(), "\"App Space\"");
    assert_eq!(seen[0].get::<String>("t").unwrap(), "7s");
    // sqlx's session defaults, on tokio-postgres too (its sessions ran at the server's).
    assert_eq!(seen[0].get::<String>("z").unwrap(), "UTC", "{layer}");
    assert_eq!(seen[0].get::<String>("d").unwrap(), "ISO, MDY", "{layer}");
    tx.commit().await.unwrap();

    let standalone = row_params(base + 1, layer);
    assert_eq!(db.execute(INSERT, &standalone).await.unwrap(), 1);

    let mut tx = db.begin().await.unwrap();
    tx.execute(INSERT, &row_params(base + 2, layer))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let row = db
        .fetch_optional(SELECT, &[Value::Int(base)])
        .await
        .unwrap();
    check_row(&row.expect("the committed row"), &params);
    let row = db
        .fetch_optional(SELECT, &[Value::Int(base + 1)])
        .await
        .unwrap();
    check_row(&row.expect("the standalone row"), &standalone);
    assert!(
        db.fetch_optional(SELECT, &[Value::Int(base + 2)])
            .await
            .unwrap()
            .is_none(),
        "the rolled-back row"
    );
    let seen = db
        .fetch_all("SELECT current_setting('statement_timeout') AS t", &[])
        .await
        .unwrap();
    assert_eq!(seen[0].get::<String>("t").unwrap(), "7s");
}

/// Native sqlx as the README says for `pooler`: in transaction mode, statements with
/// `persistent(false)` inside a transaction; in session mode, anything.
async fn native_sqlx(pool: &sqlx::PgPool, id: i64, pooler: Pooler) {
    let label = format!("sqlx {id}");
    if pooler == Pooler::Transaction {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO \"App Space\".items (id, label, amount) VALUES ($1, $2, $3::numeric)",
        )
        .bind(id)
        .bind(&label)
        .bind("1.5")
        .persistent(false)
        .execute(&mut *tx)
        .await
        .unwrap();
        let (read,): (String,) =
            sqlx::query_as("SELECT label FROM \"App Space\".items WHERE id = $1")
                .bind(id)
                .persistent(false)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(read, label);
        tx.commit().await.unwrap();
    } else {
        sqlx::query("INSERT INTO items (id, label, amount) VALUES ($1, $2, $3::numeric)")
            .bind(id)
            .bind(&label)
            .bind("1.5")
            .execute(pool)
            .await
            .unwrap();
        let (read,): (String,) = sqlx::query_as("SELECT label FROM items WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(read, label);
    }
}

/// SeaORM as the README says for `pooler`: in transaction mode, inside a transaction that
/// starts with `DEALLOCATE ALL`; in session mode, anything.
async fn native_sea_orm(db: &sea_orm::DatabaseConnection, id: i64, pooler: Pooler) {
    let backend = sea_orm::DatabaseBackend::Postgres;
    let label = format!("sea-orm {id}");
    let insert = sea_orm::Statement::from_sql_and_values(
        backend,
        "INSERT INTO \"App Space\".items (id, label) VALUES ($1, $2)",
        [id.into(), label.clone().into()],
    );
    let select = sea_orm::Statement::from_sql_and_values(
        backend,
        "SELECT label FROM \"App Space\".items WHERE id = $1",
        [id.into()],
    );
    let read = if pooler == Pooler::Transaction {
        let tx = db.begin().await.unwrap();
        tx.execute_unprepared("DEALLOCATE ALL").await.unwrap();
        tx.execute_raw(insert).await.unwrap();
        let row = tx.query_one_raw(select).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        row
    } else {
        db.execute_raw(insert).await.unwrap();
        db.query_one_raw(select).await.unwrap().unwrap()
    };
    assert_eq!(read.try_get::<String>("", "label").unwrap(), label);
}

/// Native tokio-postgres as the README says for `pooler`: in transaction mode, `query_typed*`
/// (the unnamed statement) inside a transaction; in session mode, anything (here the client's
/// statement cache).
#[cfg(feature = "tokio-postgres")]
async fn native_tokio_postgres(pool: &dbmanager::TokioPgPool, id: i64, pooler: Pooler) {
    use dbmanager::reexports::tokio_postgres::types::Type;

    let label = format!("tokio-postgres {id}");
    let mut client = pool.get().await.unwrap();
    let read: String = if pooler == Pooler::Transaction {
        let tx = client.transaction().await.unwrap();
        tx.query_typed(
            "INSERT INTO \"App Space\".items (id, label) VALUES ($1, $2)",
            &[(&id, Type::INT8), (&label, Type::TEXT)],
        )
        .await
        .unwrap();
        let row = tx
            .query_typed_one(
                "SELECT label FROM \"App Space\".items WHERE id = $1",
                &[(&id, Type::INT8)],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        row.get(0)
    } else {
        let insert = client
            .prepare_cached("INSERT INTO items (id, label) VALUES ($1, $2)")
            .await
            .unwrap();
        client.execute(&insert, &[&id, &label]).await.unwrap();
        let select = client
            .prepare_cached("SELECT label FROM items WHERE id = $1")
            .await
            .unwrap();
        client.query_one(&select, &[&id]).await.unwrap().get(0)
    };
    assert_eq!(read, label);
}

/// Rows each task keeps: 2 neutral handles × 2 rows, one native sqlx row, one SeaORM row; on
/// tokio-postgres 2 more from its neutral handle and one native.
const ROWS_PER_TASK: i64 = if cfg!(feature = "tokio-postgres") {
    9
} else {
    6
};

async fn workload(pooler: Pooler) {
    let servers = servers();
    let fixture = Behind::<true> {
        database: unique("pgb_load"),
        servers: servers.clone(),
    };
    servers
        .cluster
        .sql(&format!("CREATE DATABASE \"{}\"", fixture.database));
    let make = |name: &str, layer: DefaultOrm, driver: PostgresDriver| {
        let mut c = servers.config(name, &fixture.database, pooler);
        c.default_orm = layer;
        c.driver = Some(driver);
        c.schema = Some(SCHEMA.into());
        c.query_timeout = Duration::from_secs(7);
        c.max_open_conns = Some(16);
        c.max_idle_conns = Some(16);
        // 64 tasks over 16 connections on a machine whose 2 cores are shared: waits are long.
        c.connect_timeout = Duration::from_secs(30);
        c
    };
    let config = fast_config()
        .with_connection(make("native", DefaultOrm::Native, PostgresDriver::Sqlx))
        .with_connection(make("orm", DefaultOrm::SeaOrm, PostgresDriver::Sqlx));
    #[cfg(feature = "tokio-postgres")]
    let config = {
        // Half the others' pool: in session mode every client connection holds a server one.
        let mut tokio = make("tokio", DefaultOrm::Native, PostgresDriver::TokioPostgres);
        tokio.max_open_conns = Some(8);
        tokio.max_idle_conns = Some(8);
        config.with_connection(tokio)
    };
    let manager = Manager::new(config).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let native = manager.get("native").unwrap();
    let orm = manager.get("orm").unwrap();
    native
        .database()
        .unwrap()
        .execute("CREATE SCHEMA \"App Space\"", &[])
        .await
        .unwrap();
    native
        .database()
        .unwrap()
        .execute(
            "CREATE TABLE \"App Space\".items (id BIGINT PRIMARY KEY, label TEXT NOT NULL, \
             amount NUMERIC, at TIMESTAMPTZ, tag UUID, ok BOOLEAN, data BYTEA, note TEXT)",
            &[],
        )
        .await
        .unwrap();

    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (native, orm) = (native.clone(), orm.clone());
            #[cfg(feature = "tokio-postgres")]
            let tokio = manager.get("tokio").unwrap();
            tokio::spawn(async move {
                let base = i * 20;
                neutral(&native.database().unwrap(), base, "native").await;
                neutral(&orm.database().unwrap(), base + 3, "orm").await;
                native_sqlx(&native.postgres().unwrap(), base + 6, pooler).await;
                native_sea_orm(&orm.sea_orm().unwrap(), base + 7, pooler).await;
                native.health_check().await.unwrap();
                orm.health_check().await.unwrap();
                #[cfg(feature = "tokio-postgres")]
                {
                    neutral(&tokio.database().unwrap(), base + 8, "tokio").await;
                    native_tokio_postgres(&tokio.tokio_postgres().unwrap(), base + 11, pooler)
                        .await;
                    tokio.health_check().await.unwrap();
                }
            })
        })
        .collect();
    for task in within(LIMIT, "the workload", futures_util::future::join_all(tasks)).await {
        task.unwrap();
    }

    let db = native.database().unwrap();
    let count = db
        .fetch_all("SELECT count(*) AS n FROM items", &[])
        .await
        .unwrap();
    assert_eq!(count[0].get::<i64>("n").unwrap(), TASKS * ROWS_PER_TASK);

    let opened = native.stats().opened_total + orm.stats().opened_total;
    #[cfg(feature = "tokio-postgres")]
    let opened = opened + manager.get("tokio").unwrap().stats().opened_total;
    if pooler == Pooler::Transaction {
        let sessions = servers.server_sessions(&fixture.database);
        assert!(
            sessions <= i64::from(TRANSACTION_POOL),
            "PgBouncer keeps at most {TRANSACTION_POOL} server sessions, the server saw {sessions}"
        );
        assert!(
            opened > u64::from(TRANSACTION_POOL),
            "{opened} client connections shared {TRANSACTION_POOL} server sessions"
        );
    }
    let _ = manager.close(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_every_layer_in_transaction_mode() {
    workload(Pooler::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_every_layer_in_session_mode() {
    workload(Pooler::Session).await;
}

// ---------------------------------------------------------------------------------------------
// Without the key
// ---------------------------------------------------------------------------------------------

/// A PgBouncer in transaction mode with one server connection, which ignores the startup
/// parameters sqlx sends by default (so that a connection without `pooler` can log in at all),
/// and a fresh database behind it.
struct OneServer {
    bouncer: PgBouncer,
    database: String,
    cluster: PrivateCluster,
}

impl OneServer {
    fn start() -> Self {
        Self::with_server_connections(1)
    }

    /// The same with a server pool of `n` (`OneServer` names the one database, then).
    fn with_server_connections(n: u32) -> Self {
        let cluster = PrivateCluster::start();
        let mut config = PgBouncerConfig::new("transaction", n);
        config.ignore_startup_parameters = Some("extra_float_digits,options");
        let bouncer = PgBouncer::start(
            cluster.port,
            &[(cluster.superuser.as_str(), cluster.password.as_str())],
            &config,
        );
        let database = unique("pgb_one");
        cluster.sql(&format!("CREATE DATABASE \"{database}\""));
        Self {
            bouncer,
            database,
            cluster,
        }
    }

    /// Two client connections, opened up front.
    fn config(&self, pooler: Pooler) -> ConnectionConfig {
        self.named("main", pooler)
    }

    /// A manager with `main` on `driver: tokio-postgres` behind `pooler`, and `first` and
    /// `second` behind the transaction pooler: one client connection each, opened up front, so
    /// that holding `first` or `second` in a transaction decides which server session `main`'s
    /// next statement gets.
    #[cfg(feature = "tokio-postgres")]
    fn subject_and_holders(&self, pooler: Pooler) -> Manager {
        let one_each = |mut c: ConnectionConfig| {
            c.max_open_conns = Some(1);
            c.max_idle_conns = Some(1);
            c.min_open_conns = Some(1);
            c
        };
        let mut subject = one_each(self.config(pooler));
        subject.driver = Some(PostgresDriver::TokioPostgres);
        let mut config = ManagerConfig::default().with_connection(subject);
        for holder in ["first", "second"] {
            config = config.with_connection(one_each(self.named(holder, Pooler::Transaction)));
        }
        Manager::new(config).unwrap()
    }

    /// [`Self::config`] named `name`.
    fn named(&self, name: &str, pooler: Pooler) -> ConnectionConfig {
        let c = &self.cluster;
        let mut config = c.config(name, &c.superuser, &c.password, &self.database);
        config.port = Some(self.bouncer.port);
        config.pooler = pooler;
        config.max_open_conns = Some(2);
        config.max_idle_conns = Some(2);
        config.min_open_conns = Some(2);
        config
    }
}

/// Eight parameterised queries at once over two client connections that share one server
/// connection: every error they return.
async fn errors_of_parallel_queries(config: ConnectionConfig) -> Vec<dbmanager::Error> {
    let manager = Manager::new(ManagerConfig::default().with_connection(config)).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let db = manager.get("main").unwrap().database().unwrap();
    let mut errors = Vec::new();
    for round in 0..4 {
        let queries = (0..8).map(|i| {
            let db = db.clone();
            async move {
                db.fetch_all("SELECT $1::int8 AS n", &[Value::Int(i + round)])
                    .await
            }
        });
        for outcome in within(LIMIT, "queries", futures_util::future::join_all(queries)).await {
            if let Err(e) = outcome {
                errors.push(e);
            }
        }
    }
    let _ = manager.close(Duration::from_secs(10)).await;
    errors
}

/// The reported failure: sqlx's named statements (`sqlx_s_1` on each client connection) meet on
/// the one server connection; the statement cache off changes nothing, since sqlx still names
/// each statement (it just never reuses or closes them).
#[tokio::test]
async fn without_the_key_named_statements_collide_and_with_it_they_do_not() {
    let servers = OneServer::start();
    for cache_off in [false, true] {
        let mut config = servers.config(Pooler::None);
        if cache_off {
            let c = &servers.cluster;
            config = ConnectionConfig::from_dsn(
                "main",
                DatabaseType::Postgres,
                format!(
                    "postgres://{}:{}@127.0.0.1:{}/{}?sslmode=disable&statement-cache-capacity=0",
                    c.superuser, c.password, servers.bouncer.port, servers.database
                ),
            );
            config.max_open_conns = Some(2);
            config.max_idle_conns = Some(2);
            config.min_open_conns = Some(2);
        }
        let errors = errors_of_parallel_queries(config).await;
        assert!(
            errors.iter().any(|e| e
                .to_string()
                .contains("prepared statement \"sqlx_s_1\" already exists")),
            "statement-cache-capacity=0: {cache_off}; expected the collision, got {errors:?}"
        );
        assert!(errors.iter().all(|e| e.kind() == ErrorKind::Query));
    }
    let errors = errors_of_parallel_queries(servers.config(Pooler::Transaction)).await;
    assert!(errors.is_empty(), "with `pooler: transaction`: {errors:?}");
}

/// An error and its sources, as one text (tokio-postgres's own text is only "db error"; the
/// server's message is its source); a failed connect's failures each.
fn chain(e: &dbmanager::Error) -> String {
    if let dbmanager::Error::ConnectFailed { failures } = e {
        return failures.iter().map(chain).collect::<Vec<_>>().join("\n");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// tokio-postgres prepares a named statement (`sN`) and keeps it in the client's cache; behind
/// a transaction pooler the next use may reach another server session, where it does not
/// exist. Made to happen every time with a server pool of 2: `first` holds one server session
/// in a transaction while the statement is prepared on the other, then `second` holds that
/// one while the statement runs again. With `pooler: transaction` the same steps succeed.
/// Without the key the lost statement (SQLSTATE 26000) is now prepared again, as after a
/// `DISCARD ALL` (tests/postgres.rs), and runs, since the one free session takes both the
/// Parse and the Bind here; with more sessions free the Bind may reach yet another one, so
/// the key is still what makes it safe: `prepared statement "s..." does not exist` is then
/// the error.
#[cfg(feature = "tokio-postgres")]
#[tokio::test]
async fn tokio_postgres_without_the_key_loses_its_cached_statements_and_with_it_does_not() {
    let servers = OneServer::with_server_connections(2);
    for pooler in [Pooler::None, Pooler::Transaction] {
        let manager = servers.subject_and_holders(pooler);
        within(LIMIT, "connect", manager.connect()).await.unwrap();
        let db = manager.get("main").unwrap().database().unwrap();
        let hold = |name: &'static str| {
            let held = manager.get(name).unwrap().database().unwrap();
            async move {
                let mut tx = held.begin().await.unwrap();
                // The server session is assigned at the first statement.
                tx.fetch_all("SELECT 1 AS one", &[]).await.unwrap();
                tx
            }
        };
        let query = "SELECT $1::int8 AS n";

        let first = within(LIMIT, "first holds", hold("first")).await;
        let rows = db.fetch_all(query, &[Value::Int(1)]).await.unwrap();
        assert_eq!(rows[0].get::<i64>("n"), Some(1), "{pooler}");
        let second = within(LIMIT, "second holds", hold("second")).await;
        first.commit().await.unwrap();
        let again = db.fetch_all(query, &[Value::Int(2)]).await;
        second.commit().await.unwrap();
        match again {
            Ok(rows) => assert_eq!(rows[0].get::<i64>("n"), Some(2), "{pooler}"),
            Err(e) => panic!("{pooler}: {}", chain(&e)),
        }
        let _ = manager.close(Duration::from_secs(10)).await;
    }
}

/// Without `ignore_startup_parameters`, PgBouncer refuses the startup parameters a direct
/// connection sends (`options`: the keepalives, `search_path`, `statement_timeout`; sqlx's
/// `extra_float_digits`); with `pooler` set none is sent, and the settings still apply. On both
/// drivers.
#[tokio::test]
async fn the_key_sends_no_startup_parameter_pgbouncer_refuses() {
    let servers = servers();
    let database = unique("pgb_startup");
    servers
        .cluster
        .sql(&format!("CREATE DATABASE \"{database}\""));
    let _drop = Behind::<true> {
        database: database.clone(),
        servers: servers.clone(),
    };
    let drivers = [
        PostgresDriver::Sqlx,
        #[cfg(feature = "tokio-postgres")]
        PostgresDriver::TokioPostgres,
    ];
    for (driver, pooler) in drivers
        .into_iter()
        .flat_map(|d| [(d, Pooler::Transaction), (d, Pooler::Session)])
    {
        let mut config = servers.config("main", &database, Pooler::None);
        config.driver = Some(driver);
        config.port = Some(servers.bouncer(pooler).port);
        let manager = Manager::new(fast_config().with_connection(config.clone())).unwrap();
        let refused = within(LIMIT, "connect", manager.connect())
            .await
            .unwrap_err();
        assert!(
            chain(&refused).contains("unsupported startup parameter"),
            "{driver:?} {pooler}: {refused}"
        );

        config.pooler = pooler;
        config.schema = Some("pg_catalog".into());
        config.query_timeout = Duration::from_millis(4500);
        config.application_name = Some("pooled app".into());
        let manager = Manager::new(fast_config().with_connection(config)).unwrap();
        within(LIMIT, "connect", manager.connect()).await.unwrap();
        let db = manager.get("main").unwrap().database().unwrap();
        let row = db
            .fetch_all(
                "SELECT current_setting('search_path') AS p, current_setting('statement_timeout') AS t, \
                 current_setting('application_name') AS a",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row[0].get::<String>("p").unwrap(),
            "pg_catalog",
            "{driver:?} {pooler}"
        );
        assert_eq!(
            row[0].get::<String>("a").unwrap(),
            "pooled app",
            "{driver:?} {pooler}"
        );
        assert_eq!(
            row[0].get::<String>("t").unwrap(),
            "4500ms",
            "{driver:?} {pooler}"
        );
        let _ = manager.close(Duration::from_secs(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// LISTEN/NOTIFY and configuration
// ---------------------------------------------------------------------------------------------

/// A listener needs a session: refused behind a transaction pooler, working behind a session
/// pooler. On both PostgreSQL drivers.
async fn listen_is_refused_in_transaction_mode_and_works_in_session_mode(
    driver: dbmanager::PostgresDriver,
) {
    let fixture = Behind::<true>::new();
    let servers = fixture.servers.clone();
    let mut tx = servers.config("tx", &fixture.database, Pooler::Transaction);
    tx.driver = Some(driver);
    let manager = Manager::new(fast_config().with_connection(tx)).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let refused = manager
        .get("tx")
        .unwrap()
        .listener()
        .await
        .expect_err("a listener behind a transaction pooler");
    assert_eq!(refused.kind(), ErrorKind::Unsupported);
    assert!(
        refused.to_string().contains("pooler: transaction"),
        "{refused}"
    );
    let _ = manager.close(Duration::from_secs(10)).await;

    let mut session = servers.config("session", &fixture.database, Pooler::Session);
    session.driver = Some(driver);
    let manager = Manager::new(fast_config().with_connection(session)).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let conn = manager.get("session").unwrap();
    let mut listener = within(LIMIT, "listener", conn.listener()).await.unwrap();
    listener.listen("jobs").await.unwrap();
    listener.notify("jobs", "one").await.unwrap();
    match within(LIMIT, "a notification", listener.recv()).await {
        Some(ListenerEvent::Notification(n)) => {
            assert_eq!((n.channel.as_str(), n.payload.as_str()), ("jobs", "one"));
        }
        other => panic!("expected the notification, got {other:?}"),
    }
    drop(listener);
    let _ = manager.close(Duration::from_secs(10)).await;
}

on_both_drivers!(listen_is_refused_in_transaction_mode_and_works_in_session_mode);

fn problems(yaml: &str) -> Vec<String> {
    match ManagerConfig::from_yaml_str_with_env(yaml, &dbmanager::EnvSource::empty()) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn the_key_is_validated_and_shown() {
    let p = problems(
        "dbmanager:
  connections:
    pg:
      type: postgres
      host: h
      database: d
      pooler: transaction
      init_sql: [\"SET search_path TO x\"]
    other:
      type: postgres
      host: h
      database: d
      pooler: statement
    lite:
      type: sqlite
      filepath: ':memory:'
      pooler: session
",
    );
    let joined = p.join("\n");
    assert!(
        joined.contains("connections.pg.init_sql") && joined.contains("pooler: transaction"),
        "{joined}"
    );
    assert!(
        joined.contains("connections.other.pooler") && joined.contains("transaction"),
        "{joined}"
    );
    assert!(
        joined.contains("connections.lite.pooler") && joined.contains("only by postgres"),
        "{joined}"
    );

    let yaml = "dbmanager:
  connections:
    pg:
      type: postgres
      host: h
      database: d
      pooler: session
    plain:
      type: postgres
      host: h
      database: d
";
    let config =
        ManagerConfig::from_yaml_str_with_env(yaml, &dbmanager::EnvSource::empty()).unwrap();
    assert_eq!(config.connections["pg"].pooler, Pooler::Session);
    assert_eq!(config.connections["plain"].pooler, Pooler::None);
    let shown = ManagerConfig::explain_yaml_str(yaml, &dbmanager::EnvSource::empty()).unwrap();
    let json = shown.to_json();
    assert_eq!(json["dbmanager"]["connections"]["pg"]["pooler"], "session");
    assert_eq!(json["dbmanager"]["connections"]["plain"]["pooler"], "none");
}

/// Two statements that take one `int8` and give it back only if each ran as written.
const PLUS_ONE: &str = "SELECT $1::int8 + 1 AS v";
const TIMES_TWO: &str = "SELECT $1::int8 * 2 AS v";

/// What came back for `n` through the statement chosen by `i + j`, turned back into `n`.
fn undo(i: i64, j: i64, v: i64) -> i64 {
    if (i + j) % 2 == 0 { v - 1 } else { v / 2 }
}

/// Why the neutral handle runs a statement outside a transaction in a transaction of its own:
/// sqlx sends Parse/Describe + Sync, waits, then Bind/Execute + Sync. PgBouncer 1.18 lends the
/// server session at the first Sync outside a transaction, so the Bind can reach a session
/// where another client's unnamed statement waits, and runs that one with our parameters:
/// wrong results, no error. Native sqlx with `persistent(false)` alone shows it (64 tasks, one
/// server connection); the neutral handle, the same statements, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_need_a_transaction_behind_a_transaction_pooler() {
    let servers = OneServer::start();
    let mut config = servers.config(Pooler::Transaction);
    config.max_open_conns = Some(16);
    config.max_idle_conns = Some(16);
    let manager = Manager::new(ManagerConfig::default().with_connection(config)).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let conn = manager.get("main").unwrap();

    let pool = conn.postgres().unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut wrong = 0;
                for j in 0..20 {
                    let sql = if (i + j) % 2 == 0 {
                        PLUS_ONE
                    } else {
                        TIMES_TWO
                    };
                    let n = i * 1000 + j;
                    match sqlx::query_as::<_, (i64,)>(sql)
                        .bind(n)
                        .persistent(false)
                        .fetch_one(&pool)
                        .await
                    {
                        Ok((v,)) if undo(i, j, v) == n => {}
                        _ => wrong += 1,
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = 0;
    for task in within(LIMIT, "native sqlx", futures_util::future::join_all(tasks)).await {
        wrong += task.unwrap();
    }
    assert!(
        wrong > 0,
        "unnamed statements outside a transaction all ran as written: PgBouncer no longer lends the session between Sync messages?"
    );

    let db = conn.database().unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                for j in 0..20 {
                    let sql = if (i + j) % 2 == 0 {
                        PLUS_ONE
                    } else {
                        TIMES_TWO
                    };
                    let n = i * 1000 + j;
                    let row = db.fetch_optional(sql, &[Value::Int(n)]).await.unwrap();
                    let v = row.and_then(|r| r.get::<i64>("v")).unwrap();
                    assert_eq!(undo(i, j, v), n, "{sql} with {n}");
                }
            })
        })
        .collect();
    for task in within(
        LIMIT,
        "neutral handle",
        futures_util::future::join_all(tasks),
    )
    .await
    {
        task.unwrap();
    }
    let _ = manager.close(Duration::from_secs(10)).await;
}

/// The application's hooks run their statements outside any transaction, on whatever server
/// session PgBouncer lends at that moment: behind a transaction pooler each runs in a
/// transaction of its own, as the neutral handle's do, so none runs another client's
/// statement (an `after_release` hook here, while 64 tasks share one server connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_statements_are_safe_behind_a_transaction_pooler() {
    hook_statements_stay_their_own(OneServer::start(), PostgresDriver::Sqlx).await;
}

/// The same for `driver: tokio-postgres`, whose hooks' statements would otherwise be cached
/// named statements: its before-checkout hook (after-release is not called there) runs a
/// statement with a parameter at every checkout, while 64 tasks share a server pool of 2.
#[cfg(feature = "tokio-postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_hook_statements_are_safe_behind_a_transaction_pooler() {
    hook_statements_stay_their_own(
        OneServer::with_server_connections(2),
        PostgresDriver::TokioPostgres,
    )
    .await;
}

/// A closure as a hook that decides (after-release, before-checkout): the signature that lets
/// the compiler see it works for every connection's lifetime.
fn as_hook<F>(hook: F) -> F
where
    F: for<'c> Fn(
        dbmanager::HookConnection<'c>,
    ) -> futures_util::future::BoxFuture<'c, dbmanager::HookResult<bool>>,
{
    hook
}

/// 64 tasks run statements while a hook runs a statement with a parameter of its own at every
/// release (sqlx) or checkout (tokio-postgres, which calls no after-release hook); every hook
/// statement must answer its own parameter.
async fn hook_statements_stay_their_own(servers: OneServer, driver: PostgresDriver) {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    let mut config = servers.config(Pooler::Transaction);
    config.driver = Some(driver);
    config.max_open_conns = Some(16);
    config.max_idle_conns = Some(16);
    let manager = Manager::new(ManagerConfig::default().with_connection(config)).unwrap();
    let (runs, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (hook_runs, hook_wrong) = (runs.clone(), wrong.clone());
    let hook = as_hook(move |mut conn| {
        let (runs, wrong) = (hook_runs.clone(), hook_wrong.clone());
        Box::pin(async move {
            let n = i64::try_from(runs.fetch_add(1, SeqCst)).unwrap_or(0);
            let row = conn
                .fetch_optional("SELECT $1::int8 * 3 AS v", &[Value::Int(n)])
                .await;
            if !matches!(row, Ok(Some(ref r)) if r.get::<i64>("v") == Some(n * 3)) {
                wrong.fetch_add(1, SeqCst);
            }
            Ok(true)
        })
    });
    let hooks = match driver {
        PostgresDriver::Sqlx => dbmanager::Hooks::new().after_release(hook),
        _ => dbmanager::Hooks::new().before_checkout(hook),
    };
    manager.set_hooks("main", hooks).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let db = manager.get("main").unwrap().database().unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                for j in 0..10 {
                    let n = i * 1000 + j;
                    let row = db.fetch_optional(PLUS_ONE, &[Value::Int(n)]).await.unwrap();
                    assert_eq!(row.and_then(|r| r.get::<i64>("v")), Some(n + 1));
                }
            })
        })
        .collect();
    for task in within(LIMIT, "statements", futures_util::future::join_all(tasks)).await {
        task.unwrap();
    }
    assert!(runs.load(SeqCst) > 0, "the hook ran");
    assert_eq!(
        wrong.load(SeqCst),
        0,
        "hook statements that ran another's statement or failed"
    );
    let _ = manager.close(Duration::from_secs(10)).await;
}

/// A column of a type sqlx has not looked up yet on a connection (here an enum): sqlx 0.9's
/// lookup, a simple query between Parse and Bind, destroys the unnamed statement (SQLSTATE
/// 26000, on a direct connection too). The neutral handle runs such a statement once more
/// outside a transaction; native sqlx with `persistent(false)` shows the failure.
#[tokio::test]
async fn a_type_sqlx_looks_up_first_does_not_fail_the_statement() {
    let fixture = Behind::<true>::new();
    let manager = Manager::new(fast_config().with_connection(fixture.config("main"))).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let conn = manager.get("main").unwrap();
    let db = conn.database().unwrap();
    db.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')", &[])
        .await
        .unwrap();
    db.execute("CREATE TABLE moods (id BIGINT, m mood)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO moods VALUES (1, NULL)", &[])
        .await
        .unwrap();
    let select = "SELECT id, m FROM moods WHERE id = $1";

    let native = sqlx::query(select)
        .bind(1_i64)
        .persistent(false)
        .fetch_all(&conn.postgres().unwrap())
        .await
        .unwrap_err();
    assert!(
        native
            .to_string()
            .contains("unnamed prepared statement does not exist"),
        "{native}"
    );

    // A fresh pool: the first statement on each connection meets the lookup.
    let _ = manager.close(Duration::from_secs(10)).await;
    let manager = Manager::new(fast_config().with_connection(fixture.config("main"))).unwrap();
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let db = manager.get("main").unwrap().database().unwrap();
    for _ in 0..3 {
        let rows = db.fetch_all(select, &[Value::Int(1)]).await.unwrap();
        assert_eq!(rows[0].value("m"), Some(&Value::Null));
    }
    let _ = manager.close(Duration::from_secs(10)).await;
}

/// tokio-postgres looks up a column type it does not know (an enum) with named statements it
/// prepares once per client and keeps: behind a transaction pooler they exist only on the
/// server session of the first lookup. A second type looked up on another session fails there
/// (SQLSTATE 26000) before anything is committed; the neutral handle then closes that client
/// and runs the statement once more on a fresh one. Made to happen every time as in
/// `tokio_postgres_without_the_key_loses_its_cached_statements_and_with_it_does_not`.
#[cfg(feature = "tokio-postgres")]
#[tokio::test]
async fn tokio_postgres_type_lookups_survive_another_server_session() {
    let servers = OneServer::with_server_connections(2);
    let manager = servers.subject_and_holders(Pooler::Transaction);
    within(LIMIT, "connect", manager.connect()).await.unwrap();
    let conn = manager.get("main").unwrap();
    let db = conn.database().unwrap();
    for ddl in [
        "CREATE TYPE mood AS ENUM ('ok', 'sad')",
        "CREATE TYPE color AS ENUM ('red', 'blue')",
    ] {
        db.execute(ddl, &[]).await.unwrap();
    }
    let hold = |name: &'static str| {
        let held = manager.get(name).unwrap().database().unwrap();
        async move {
            let mut tx = held.begin().await.unwrap();
            tx.fetch_all("SELECT 1 AS one", &[]).await.unwrap();
            tx
        }
    };

    let first = within(LIMIT, "first holds", hold("first")).await;
    let rows = db
        .fetch_all("SELECT NULL::mood AS m, $1::int8 AS n", &[Value::Int(1)])
        .await
        .unwrap();
    assert_eq!(rows[0].value("m"), Some(&Value::Null));
    let second = within(LIMIT, "second holds", hold("second")).await;
    first.commit().await.unwrap();
    let broken_before = conn.stats().closed_broken;
    let rows = db
        .fetch_all("SELECT NULL::color AS c, $1::int8 AS n", &[Value::Int(2)])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<i64>("n"), Some(2));
    assert_eq!(
        conn.stats().closed_broken,
        broken_before + 1,
        "the client that lost its lookup statement is closed"
    );
    second.commit().await.unwrap();
    let _ = manager.close(Duration::from_secs(10)).await;
}

/// The server behind a transaction-mode PgBouncer crashes and comes back while the
/// application's client connections to PgBouncer stay open: on both drivers, the statement in
/// flight fails with a retryable error (PgBouncer's `server conn crashed?`, SQLSTATE 08P01, was
/// a `Query` error), later ones at most so until the server is back, and all work after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_behind_a_transaction_pooler_fails_statements_only_retryably() {
    let cluster = PrivateCluster::start();
    let users = [(cluster.superuser.as_str(), cluster.password.as_str())];
    let bouncer = PgBouncer::start(
        cluster.port,
        &users,
        &PgBouncerConfig::new("transaction", TRANSACTION_POOL),
    );
    let mut m = fast_config();
    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        let name = format!("restart_{}", driver.as_str().replace('-', "_"));
        let mut c = cluster.config(&name, &cluster.superuser, &cluster.password, "postgres");
        c.port = Some(bouncer.port);
        c.pooler = Pooler::Transaction;
        c.driver = Some(driver);
        m = m.with_connection(c);
    }
    let manager = Manager::new(m).unwrap();
    manager.connect().await.unwrap();
    let handles: Vec<(String, dbmanager::Database)> = manager
        .config()
        .connections
        .keys()
        .map(|name| (name.clone(), manager.database(name).unwrap()))
        .collect();
    for (_, db) in &handles {
        db.fetch_one("SELECT $1::int8 AS x", &[1i64.into()])
            .await
            .unwrap();
    }

    // One statement of each in flight when the server goes down.
    let in_flight: Vec<_> = handles
        .iter()
        .map(|(name, db)| {
            let (name, db) = (name.clone(), db.clone());
            tokio::spawn(async move {
                let outcome = db.execute("SELECT pg_sleep(30)", &[]).await;
                (name, outcome)
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + LIMIT;
    while cluster
        .sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'")
        .trim()
        != "2"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the statements never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop_server("immediate");
    for task in in_flight {
        let (name, outcome) = task.await.unwrap();
        let e = outcome.expect_err("the server went down under it");
        eprintln!("{name}: in flight: {:?}: {e}", e.kind());
        assert!(
            e.is_retryable(),
            "{name}: the statement in flight when the server went down failed with a non-retryable error ({:?}): {e}",
            e.kind()
        );
    }
    cluster.start_server();
    for (name, db) in &handles {
        let mut errors = Vec::new();
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            match db.fetch_one("SELECT $1::int8 AS x", &[2i64.into()]).await {
                Ok(row) => {
                    assert_eq!(row.get::<i64>("x"), Some(2));
                    break;
                }
                Err(e) => {
                    assert!(
                        e.is_retryable(),
                        "{name}: a statement after the server restarted failed with a non-retryable error ({:?}): {e}",
                        e.kind()
                    );
                    errors.push(e.to_string());
                    assert!(std::time::Instant::now() < deadline, "{name}: {errors:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // A transaction and a statement outside one work again.
        let mut tx = db.begin().await.unwrap();
        tx.execute("SELECT 1", &[]).await.unwrap();
        tx.commit().await.unwrap();
        db.execute("SELECT 1", &[]).await.unwrap();
        eprintln!(
            "{name}: {} failed statement(s) after the restart: {errors:?}",
            errors.len()
        );
    }
    manager.close(Duration::from_secs(2)).await;
    drop(bouncer);
}
