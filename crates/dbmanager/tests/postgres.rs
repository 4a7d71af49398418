//! PostgreSQL-specific behaviour on the machine's real server: the three layers on one pool,
//! the settings that reach the server (search_path, statement_timeout, application_name, TLS,
//! keepalives), a given DSN, an unknown database. What every SQL backend shares (lookups,
//! default switching, stats, close, transactions, NULLs, text, blobs, placeholders, errors) is
//! in the conformance suite (`tests/conformance.rs`).

mod support;

use std::time::Duration;

use dbmanager::reexports::sea_orm::TransactionTrait;
use dbmanager::{
    ConnectPolicy, Error, ErrorKind, HookConnection, Hooks, Manager, PostgresDriver, SslMode, Value,
};
use support::{TestDb, admin_sql, fast_config};

#[tokio::test]
async fn the_three_layers_share_one_pool() {
    let db = TestDb::create();
    let mut c = db.config("primary");
    c.max_open_conns = Some(2);
    c.max_idle_conns = Some(2);
    c.connect_timeout = Duration::from_secs(3);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("primary").unwrap();
    let pool = conn.postgres().unwrap();
    let orm = conn.sea_orm().unwrap();
    let neutral = conn.database().unwrap();

    // One connection held through sqlx, one through a SeaORM transaction.
    let held_native = pool.acquire().await.unwrap();
    let held_orm = orm.begin().await.unwrap();
    let stats = conn.stats();
    assert_eq!(
        (stats.open, stats.in_use, stats.idle),
        (2, 2, 0),
        "{stats:?}"
    );
    assert_eq!(
        orm.get_postgres_connection_pool().size(),
        2,
        "SeaORM sees the same pool"
    );

    // The neutral handle has to wait: max_open_conns bounds all layers together.
    let waiting = tokio::spawn(async move { neutral.fetch_one("SELECT 7::int8 AS n", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third checkout must wait while two are held"
    );
    drop(held_native);
    let row = waiting.await.unwrap().unwrap();
    assert_eq!(row.get::<i64>("n"), Some(7));
    held_orm.rollback().await.unwrap();

    let stats = conn.stats();
    assert!(stats.open <= 2, "{stats:?}");
    assert_eq!(
        stats.wait_count, 1,
        "the neutral checkout waited once: {stats:?}"
    );
    assert!(stats.wait_duration > Duration::ZERO);
    assert!(db.backends() <= 2);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn settings_reach_the_server() {
    let db = TestDb::create();
    support::admin_sql(&db.name, "CREATE SCHEMA \"My Schema\"");
    let mut c = db.config("primary");
    c.schema = Some("My Schema".into());
    c.query_timeout = Duration::from_millis(300);
    c.application_name = Some("dbm-test-app".into());
    c.sslmode = Some(SslMode::Require);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let pool = manager.get("primary").unwrap().postgres().unwrap();
    let (schema, timeout, app, ssl): (String, String, String, bool) = dbmanager::reexports::sqlx::query_as(
        "SELECT current_schema(), current_setting('statement_timeout'), current_setting('application_name'), \
         (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(schema, "My Schema");
    assert_eq!(timeout, "300ms");
    assert_eq!(app, "dbm-test-app");
    assert!(ssl, "sslmode=require must encrypt");
    let (idle, user_timeout): (String, String) = dbmanager::reexports::sqlx::query_as(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_user_timeout')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (idle.as_str(), user_timeout.as_str()),
        ("5", "15000"),
        "the server drops dead clients fast"
    );

    let err = manager
        .database("primary")
        .unwrap()
        .execute("SELECT pg_sleep(5)", &[])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("statement timeout") || text.contains("timed out"),
        "{text}"
    );
    manager.close(Duration::from_secs(5)).await;

    // disable: plain; absent: `prefer`, as libpq, so TLS with a server that offers it.
    for (mode, expect_tls) in [(Some(SslMode::Disable), false), (None, true)] {
        let mut c = db.config("other");
        c.sslmode = mode;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let ssl: bool = dbmanager::reexports::sqlx::query_scalar(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&manager.get("other").unwrap().postgres().unwrap())
        .await
        .unwrap();
        assert_eq!(ssl, expect_tls, "sslmode {mode:?}");
        manager.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_given_dsn_is_used_and_structured_settings_still_apply() {
    let db = TestDb::create();
    let dsn = format!(
        "postgres://{}@{}:{}/{}?sslmode=disable",
        support::pg_user(),
        support::pg_host(),
        support::pg_port(),
        db.name
    );
    let mut c =
        dbmanager::ConnectionConfig::from_dsn("viadsn", dbmanager::DatabaseType::Postgres, dsn);
    c.max_open_conns = Some(3);
    c.application_name = Some("from-fields".into());
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("viadsn").unwrap();
    let pool = conn.postgres().unwrap();
    let (database, app): (String, String) = dbmanager::reexports::sqlx::query_as(
        "SELECT current_database(), current_setting('application_name')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(database, db.name);
    assert_eq!(app, "from-fields");
    assert_eq!(pool.options().get_max_connections(), 3);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn unknown_database_is_a_configuration_error_tried_once() {
    let mut c = TestDb::create().config("ghost");
    c.database = Some("dbm_does_not_exist".into());
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.attempts["ghost"], 1);
    let (name, err) = &report.failed[0];
    assert_eq!(name, "ghost");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let err = manager.get("ghost").unwrap().postgres().unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// sqlx shows a PostgreSQL error with " at line N" after it: the line of the server's C source
/// that raised it (postinit.c, parse_relation.c), which reads like a line of the statement or
/// the config. The errors shown end with the server's message instead; the sqlx error itself
/// is untouched (`source`).
#[tokio::test]
async fn server_errors_do_not_show_the_server_source_line() {
    let db = TestDb::create();
    let mut ghost = db.config("ghost");
    ghost.database = Some("dbm_does_not_exist".into());
    let manager = Manager::new(
        fast_config()
            .with_connection(db.config("main"))
            .with_connection(ghost),
    )
    .unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    let connect = report.failed[0].1.to_string();
    assert!(
        connect.ends_with("database \"dbm_does_not_exist\" does not exist"),
        "{connect}"
    );
    let err = manager
        .database("main")
        .unwrap()
        .execute("SELECT * FROM dbm_no_such_table", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("relation \"dbm_no_such_table\" does not exist"),
        "{err}"
    );
    let Error::Database { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        source
            .downcast_ref::<dbmanager::reexports::sqlx::Error>()
            .is_some(),
        "the driver's error is kept as it is"
    );
    manager.close(Duration::from_secs(5)).await;
}

/// The connection `pg` on `db` once per way to run the neutral handle: sqlx's native layer,
/// SeaORM, and the tokio-postgres driver.
fn every_layer_and_driver(db: &TestDb) -> Vec<dbmanager::ConnectionConfig> {
    let mut configs = Vec::new();
    for layer in [dbmanager::DefaultOrm::Native, dbmanager::DefaultOrm::SeaOrm] {
        let mut c = db.config("pg");
        c.default_orm = layer;
        configs.push(c);
    }
    #[cfg(feature = "tokio-postgres")]
    {
        let mut c = db.config("pg");
        c.driver = Some(dbmanager::PostgresDriver::TokioPostgres);
        configs.push(c);
    }
    configs
}

/// PostgreSQL's own types through the neutral handle, on both layers and both drivers: arrays
/// (NULL elements included, intervals too), intervals, money, and a timetz read as text.
#[tokio::test]
async fn arrays_intervals_and_money_round_trip() {
    use dbmanager::reexports::bigdecimal::BigDecimal;
    use dbmanager::{DefaultOrm, Interval, Value};
    use std::str::FromStr as _;

    let db = TestDb::create();
    let configs = every_layer_and_driver(&db);
    for c in configs {
        let layer = c.default_orm;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let sql = manager.database("pg").unwrap();
        // sea-query binds arrays as `Vec<T>`: NULL elements only on the native layer, and a
        // clear error (never sea-query's panic) through SeaORM.
        let with_nulls = matches!(layer, DefaultOrm::Native);
        let null_or = |v: Value| if with_nulls { Value::Null } else { v };
        let ints = Value::Array(vec![Value::Int(1), null_or(Value::Int(0)), Value::Int(-3)]);
        let texts = Value::Array(vec!["a".into(), "é🦀".into(), null_or("z".into())]);
        if !with_nulls {
            let err = sql
                .fetch_one(
                    "SELECT $1::int8[] AS x",
                    &[Value::Array(vec![Value::Int(1), Value::Null])],
                )
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Query, "{err}");
        }
        let decimals = Value::Array(vec![Value::Decimal(BigDecimal::from_str("1.25").unwrap())]);
        let span = Value::Interval(Interval {
            months: 14,
            days: -3,
            microseconds: 1_500_000,
        });
        // SeaORM has no interval value: binding one there is a clear error; the column reads
        // the same on both layers.
        let (span_sql, mut params) = match layer {
            DefaultOrm::SeaOrm => {
                let err = sql
                    .fetch_one("SELECT $1::interval AS span", std::slice::from_ref(&span))
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Query, "{err}");
                (
                    "'1 year 2 mons -3 days 00:00:01.5'::interval AS span, \
                     ARRAY['1 year 2 mons -3 days 00:00:01.5'::interval, NULL] AS spans",
                    Vec::new(),
                )
            }
            // Arrays of intervals bind too ("arrays of interval are not supported" before).
            _ => (
                "$4::interval AS span, $5::interval[] AS spans",
                vec![span.clone(), Value::Array(vec![span.clone(), Value::Null])],
            ),
        };
        params.splice(0..0, [ints.clone(), texts.clone(), decimals.clone()]);
        let row = sql
            .fetch_one(
                &format!(
                    "SELECT $1::int8[] AS ints, $2::text[] AS texts, $3::numeric[] AS decs, \
                     {span_sql}, '12.34'::money AS cash, \
                     '10:00:00+05:30'::timetz AS tz, ARRAY[]::int4[] AS empty, \
                     ARRAY['ab', NULL]::char(3)[] AS padded, 'r'::\"char\" AS kind, \
                     ARRAY['r', 'v']::\"char\"[] AS kinds"
                ),
                &params,
            )
            .await
            .unwrap_or_else(|e| panic!("{layer:?}: {e}"));
        assert_eq!(row.value("ints"), Some(&ints), "{layer:?}");
        assert_eq!(row.value("texts"), Some(&texts));
        assert_eq!(row.value("decs"), Some(&decimals));
        assert_eq!(
            row.get::<Interval>("span"),
            Some(Interval {
                months: 14,
                days: -3,
                microseconds: 1_500_000
            })
        );
        assert_eq!(
            row.get::<BigDecimal>("cash"),
            Some(BigDecimal::from_str("12.34").unwrap())
        );
        assert_eq!(row.get::<String>("tz").as_deref(), Some("10:00:00+05:30"));
        assert_eq!(row.value("empty"), Some(&Value::Array(Vec::new())));
        assert_eq!(
            row.value("spans"),
            Some(&Value::Array(vec![span.clone(), Value::Null])),
            "{layer:?}"
        );
        // `char(n)[]` and the catalogs' one-byte `"char"` read as text on both drivers (sqlx
        // names them `CHAR[]` and `"CHAR"`).
        assert_eq!(row.get::<String>("kind").as_deref(), Some("r"), "{layer:?}");
        assert_eq!(
            row.value("kinds"),
            Some(&Value::Array(vec!["r".into(), "v".into()])),
            "{layer:?}"
        );
        assert_eq!(
            row.value("padded"),
            Some(&Value::Array(vec!["ab ".into(), Value::Null])),
            "{layer:?}"
        );
        // Mixed element types are a clear error, not a guess.
        let err = sql
            .fetch_one(
                "SELECT $1::text[] AS x",
                &[Value::Array(vec![Value::Int(1), "a".into()])],
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Query, "{layer:?}: {err}");
        manager.close(Duration::from_secs(5)).await;
    }
}

/// Dates and times at PostgreSQL's edges, alike on both drivers and both sqlx layers:
/// `infinity`, `-infinity` and dates beyond chrono's range (PostgreSQL goes to year 294276) are
/// a clear query error (sqlx's decoders panicked), so is `24:00:00` (read as midnight before;
/// a `timetz`, read as text, keeps it),
/// and a parameter's digits below a microsecond are dropped, never carried into the next
/// second (`1999-12-31 23:59:59.9999995` was sent as 2000-01-01 00:00:00).
#[tokio::test]
async fn dates_and_times_at_their_edges() {
    use dbmanager::Value;
    use dbmanager::reexports::chrono::{NaiveDate, NaiveDateTime, NaiveTime};

    let db = TestDb::create();
    let configs = every_layer_and_driver(&db);
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    for c in configs {
        let what = format!("{:?} {:?}", c.driver, c.default_orm);
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let sql = manager.database("pg").unwrap();
        for (query, says) in [
            ("SELECT 'infinity'::timestamp AS v", "`infinity`"),
            ("SELECT '-infinity'::timestamptz AS v", "`-infinity`"),
            ("SELECT 'infinity'::date AS v", "`infinity`"),
            ("SELECT '-infinity'::date AS v", "`-infinity`"),
            ("SELECT '294276-12-31'::date AS v", "chrono's range"),
            (
                "SELECT '294276-12-31 23:59:59'::timestamp AS v",
                "chrono's range",
            ),
            ("SELECT '24:00:00'::time AS v", "24:00:00"),
            (
                "SELECT ARRAY['2020-01-01', 'infinity']::date[] AS v",
                "`infinity`",
            ),
            ("SELECT ARRAY['infinity']::timestamptz[] AS v", "`infinity`"),
            ("SELECT ARRAY['24:00:00']::time[] AS v", "24:00:00"),
        ] {
            let err = sql.fetch_one(query, &[]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Query, "{what} {query}: {err}");
            assert!(err.to_string().contains(says), "{what} {query}: {err}");
        }
        // A timetz is text, which holds 24:00:00 too (sqlx read it as 00:00:00).
        let row = sql
            .fetch_one(
                "SELECT '24:00:00+05:30'::timetz AS last, '10:00:00.5-08'::timetz AS half",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            row.get::<String>("last").as_deref(),
            Some("24:00:00+05:30"),
            "{what}"
        );
        assert_eq!(
            row.get::<String>("half").as_deref(),
            Some("10:00:00.500-08:00"),
            "{what}"
        );
        // Within chrono's range every value reads, BC dates included.
        let row = sql
            .fetch_one(
                "SELECT '4713-01-01 BC'::date AS bc, '23:59:59.999999'::time AS late, \
                 '1999-12-31 23:59:59.999999'::timestamp AS ts",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(row.get::<NaiveDate>("bc"), Some(day(-4712, 1, 1)), "{what}");
        let late = NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap();
        assert_eq!(row.get::<NaiveTime>("late"), Some(late), "{what}");
        let last = day(1999, 12, 31).and_time(late);
        assert_eq!(row.get::<NaiveDateTime>("ts"), Some(last), "{what}");
        // Half a microsecond before 2000: dropped, not rounded up to the next year.
        let before = day(1999, 12, 31)
            .and_hms_nano_opt(23, 59, 59, 999_999_500)
            .unwrap();
        let row = sql
            .fetch_one(
                "SELECT $1::timestamp AS ts, $2::timestamptz AS tz",
                &[
                    Value::Timestamp(before),
                    Value::TimestampTz(before.and_utc().fixed_offset()),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(row.get::<NaiveDateTime>("ts"), Some(last), "{what}");
        assert_eq!(
            row.get::<NaiveDateTime>("tz"),
            None,
            "{what}: a timestamptz is no naive timestamp"
        );
        assert_eq!(
            row.get::<dbmanager::reexports::chrono::DateTime<dbmanager::reexports::chrono::Utc>>(
                "tz"
            ),
            Some(last.and_utc()),
            "{what}"
        );
        manager.close(Duration::from_secs(5)).await;
    }
}

/// `numeric` reads alike on both drivers and both sqlx layers, each decimal with the scale
/// PostgreSQL gives it (`scale(v)`: sqlx's decoder read `0.00` with scale 0 and `1e100` with
/// scale -100, where tokio-postgres kept them), and NaN and the infinities are an error naming
/// them (sqlx said "invalid value for PgNumericSign: 0xD000" for `Infinity`).
#[tokio::test]
async fn numerics_keep_their_scale_on_both_drivers() {
    use dbmanager::Value;
    use dbmanager::reexports::bigdecimal::BigDecimal;
    use std::str::FromStr as _;

    let db = TestDb::create();
    let configs = every_layer_and_driver(&db);
    let scale = |d: &BigDecimal| d.as_bigint_and_exponent().1;
    for c in configs {
        let what = format!("{:?} {:?}", c.driver, c.default_orm);
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let sql = manager.database("pg").unwrap();
        let rows = sql
            .fetch_all(
                "SELECT v, scale(v) AS s, v::text AS t FROM (VALUES (0.00::numeric), \
                 ((-0.0)::numeric(5, 1)), (1e100::numeric), (1e-40::numeric), (1.50), \
                 (-12345678901234567890.12345678901234567890::numeric(40, 20)), (10000)) AS x (v)",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(rows.len(), 7);
        for row in &rows {
            let text = row.get::<String>("t").unwrap();
            let d = row.get::<BigDecimal>("v").unwrap();
            assert_eq!(d, BigDecimal::from_str(&text).unwrap(), "{what}: {text}");
            assert_eq!(
                Some(scale(&d)),
                row.get::<i64>("s"),
                "{what}: the scale of {text}"
            );
        }
        let row = sql
            .fetch_one("SELECT ARRAY[0.00, 1.50, NULL]::numeric[] AS list", &[])
            .await
            .unwrap();
        let scales: Vec<Option<i64>> = row
            .get::<Vec<Value>>("list")
            .unwrap()
            .iter()
            .map(|v| match v {
                Value::Decimal(d) => Some(scale(d)),
                _ => None,
            })
            .collect();
        assert_eq!(scales, [Some(2), Some(2), None], "{what}");
        for special in ["NaN", "Infinity", "-Infinity"] {
            let err = sql
                .fetch_one(&format!("SELECT '{special}'::numeric AS v"), &[])
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Query, "{what}: {err}");
            assert!(
                err.to_string()
                    .contains(&format!("numeric {special} has no decimal value")),
                "{what}: {err}"
            );
        }
        manager.close(Duration::from_secs(5)).await;
    }
}

/// Results with the same columns share one column-name list (no `String` per column per
/// query); a result with other columns, even of the same count, gets its own names, and a
/// transaction's results are named the same way.
#[tokio::test]
async fn results_of_the_same_columns_share_their_names() {
    let db = TestDb::create();
    let manager = Manager::new(fast_config().with_connection(db.config("pg"))).unwrap();
    manager.connect().await.unwrap();
    let neutral = manager.database("pg").unwrap();

    let first = neutral
        .fetch_one("SELECT 1 AS a, 2 AS b", &[])
        .await
        .unwrap();
    let again = neutral
        .fetch_all("SELECT 3 AS a, 4 AS b UNION ALL SELECT 5, 6", &[])
        .await
        .unwrap();
    assert_eq!(first.columns(), ["a", "b"]);
    assert_eq!(again.len(), 2);
    for row in &again {
        assert_eq!(row.columns(), ["a", "b"]);
        assert_eq!(row.columns().as_ptr(), first.columns().as_ptr());
    }

    // Same count, other names (and the same digest slot for `a`/`b` and `c`/`d`): not reused.
    let other = neutral
        .fetch_one("SELECT 1 AS c, 2 AS d", &[])
        .await
        .unwrap();
    assert_eq!(other.columns(), ["c", "d"]);
    assert_eq!(other.get::<i32>("d").unwrap(), 2);
    let back = neutral
        .fetch_one("SELECT 7 AS a, 8 AS b", &[])
        .await
        .unwrap();
    assert_eq!(back.columns(), ["a", "b"]);
    assert_eq!(back.get::<i32>("b").unwrap(), 8);

    let mut tx = neutral.begin().await.unwrap();
    let rows = tx.fetch_all("SELECT 9 AS c, 10 AS d", &[]).await.unwrap();
    assert_eq!(rows[0].columns(), ["c", "d"]);
    assert_eq!(rows[0].get::<i32>("c").unwrap(), 9);
    tx.rollback().await.unwrap();
    manager.close(Duration::from_secs(5)).await;
}

/// A migration run while the application is up: the statements its pooled connections have
/// prepared and cached go stale. PostgreSQL answers a cached `SELECT *` whose result changed
/// (a column added, a column's type changed, the table dropped and created again) with
/// "cached plan must not change result type", and a statement whose session ran `DISCARD ALL`
/// or `DEALLOCATE ALL` with "prepared statement does not exist"; each used to fail that way on
/// every later call on that connection. Outside a transaction the statement is now prepared
/// again and answers; inside one the error is reported (the server aborted the transaction)
/// and the connection works again once it ends.
async fn cached_statements_follow_schema_changes_and_discard_all(driver: PostgresDriver) {
    let db = TestDb::create();
    let mut c = db.config("main");
    c.driver = Some(driver);
    // One connection: every statement below runs on the one that cached them.
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let h = manager.get("main").unwrap().database().unwrap();
    h.execute("CREATE TABLE t (a int8)", &[]).await.unwrap();
    h.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let all = "SELECT * FROM t";
    let one = |sql: &'static str, params: Vec<Value>| {
        let h = h.clone();
        async move {
            match h.fetch_one(sql, &params).await {
                Ok(row) => row.values().to_vec(),
                Err(e) => panic!("{driver:?}: {sql}: {e}"),
            }
        }
    };
    assert_eq!(one(all, vec![]).await, [Value::Int(1)]);

    admin_sql(&db.name, "ALTER TABLE t ADD COLUMN b text DEFAULT 'x'");
    let want = [Value::Int(1), Value::Text("x".into())];
    assert_eq!(one(all, vec![]).await, want, "{driver:?}: a column added");
    assert_eq!(one(all, vec![]).await, want, "{driver:?}: and again");

    admin_sql(&db.name, "ALTER TABLE t ALTER COLUMN a TYPE text");
    let want = [Value::Text("1".into()), Value::Text("x".into())];
    assert_eq!(one(all, vec![]).await, want, "{driver:?}: a type changed");

    admin_sql(
        &db.name,
        "DROP TABLE t; CREATE TABLE t (c bool); INSERT INTO t VALUES (true)",
    );
    assert_eq!(one(all, vec![]).await, [Value::Bool(true)], "{driver:?}");

    let with_param = "SELECT * FROM t WHERE c = $1";
    let yes = || vec![Value::Bool(true)];
    assert_eq!(one(with_param, yes()).await, [Value::Bool(true)]);
    admin_sql(&db.name, "ALTER TABLE t ADD COLUMN d int8 DEFAULT 4");
    let want = [Value::Bool(true), Value::Int(4)];
    assert_eq!(
        one(with_param, yes()).await,
        want,
        "{driver:?}: with a parameter"
    );

    // Session resets by the application drop every prepared statement of the session.
    let update = "UPDATE t SET d = d + 1 WHERE c = $1";
    for reset in ["DISCARD ALL", "DEALLOCATE ALL"] {
        assert_eq!(h.execute(update, &yes()).await.unwrap(), 1);
        h.execute(reset, &[]).await.unwrap();
        let outcome = h.execute(update, &yes()).await;
        assert_eq!(outcome.ok(), Some(1), "{driver:?}: execute after {reset}");
        assert_eq!(one(with_param, yes()).await.len(), 2, "{driver:?}: {reset}");
        assert_eq!(one(all, vec![]).await.len(), 2, "{driver:?}: {reset}");
    }
    assert_eq!(one("SELECT d FROM t", vec![]).await, [Value::Int(8)]);

    // In a transaction the error is the caller's: the server aborted the transaction.
    admin_sql(&db.name, "ALTER TABLE t ADD COLUMN e int8 DEFAULT 5");
    let mut tx = h.begin().await.unwrap();
    let e = tx.fetch_all(all, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Query, "{driver:?}: {e}");
    tx.rollback().await.unwrap();
    assert_eq!(
        one(all, vec![]).await.len(),
        3,
        "{driver:?}: after the transaction"
    );
    manager.close(Duration::from_secs(5)).await;
}

on_both_drivers!(cached_statements_follow_schema_changes_and_discard_all);

/// Session state a statement sets (`SET search_path`, `SET statement_timeout`) stays with its
/// pooled connection on both drivers alike: the next statement on it sees it (README,
/// "Session state on a pooled connection"). An after-release hook running `DISCARD ALL`, as
/// PgBouncer's `server_reset_query` does, puts back what `schema` and `query_timeout` set
/// (they are the session's startup values), and the statements the connection had prepared,
/// which it drops, are prepared again rather than failing or costing the connection.
async fn session_state_stays_with_the_connection_until_an_after_release_reset(
    driver: PostgresDriver,
) {
    let db = TestDb::create();
    admin_sql(&db.name, "CREATE SCHEMA app");
    let config = |driver| {
        let mut c = db.config("main");
        c.driver = Some(driver);
        c.max_open_conns = Some(1);
        c.max_idle_conns = Some(1);
        c.schema = Some("app".into());
        c.query_timeout = Duration::from_secs(7);
        c
    };
    let show = "SELECT current_setting('search_path') AS path, current_setting('statement_timeout') AS timeout";
    let settings = |row: dbmanager::Row| {
        (
            row.get::<String>("path").unwrap_or_default(),
            row.get::<String>("timeout").unwrap_or_default(),
        )
    };
    let configured = ("\"app\"".to_owned(), "7s".to_owned());

    let manager = Manager::new(fast_config().with_connection(config(driver))).unwrap();
    manager.connect().await.unwrap();
    let h = manager.get("main").unwrap().database().unwrap();
    assert_eq!(settings(h.fetch_one(show, &[]).await.unwrap()), configured);
    h.execute("SET search_path TO public", &[]).await.unwrap();
    h.execute("SET statement_timeout = 0", &[]).await.unwrap();
    assert_eq!(
        settings(h.fetch_one(show, &[]).await.unwrap()),
        ("public".to_owned(), "0".to_owned()),
        "{driver:?}: kept by the connection"
    );
    manager.close(Duration::from_secs(5)).await;

    let manager = Manager::new(fast_config().with_connection(config(driver))).unwrap();
    let hooks = Hooks::new().after_release(|mut conn: HookConnection<'_>| {
        Box::pin(async move {
            conn.execute("DISCARD ALL", &[]).await?;
            Ok(true)
        })
    });
    manager.set_hooks("main", hooks).unwrap();
    manager.connect().await.unwrap();
    let connection = manager.get("main").unwrap();
    let h = connection.database().unwrap();
    for round in 0..3 {
        assert_eq!(
            settings(h.fetch_one(show, &[]).await.unwrap()),
            configured,
            "{driver:?}: round {round}"
        );
        h.execute("SET search_path TO public", &[]).await.unwrap();
        h.execute("SET statement_timeout = 0", &[]).await.unwrap();
        let row = h
            .fetch_one("SELECT $1::int8 + 1 AS n", &[Value::Int(round)])
            .await
            .unwrap();
        assert_eq!(row.get::<i64>("n"), Some(round + 1));
    }
    // The last release's hook runs after the statement returned (on sqlx in the background):
    // its outcome is seen once the pool's one connection is idle again (or was closed).
    support::eventually(Duration::from_secs(10), || {
        let stats = connection.stats();
        stats.idle == 1 || stats.closed_broken + stats.closed_by_hook > 0
    })
    .await;
    let stats = connection.stats();
    assert_eq!(
        (
            stats.opened_total,
            stats.closed_broken,
            stats.closed_by_hook
        ),
        (1, 0, 0),
        "{driver:?}: one connection served every round: {stats:?}"
    );
    manager.close(Duration::from_secs(5)).await;
}

on_both_drivers!(session_state_stays_with_the_connection_until_an_after_release_reset);

/// Types beyond the README's table read the same on both drivers: a domain as its base type,
/// `char(1)` and `"char"` as text; the ones the neutral handle does not decode are the same
/// error asking for a cast, naming the type as the server does (sqlx used to say `INET`,
/// `INT4RANGE`, tokio-postgres `_mood` for an array of an enum).
async fn types_beyond_the_table_read_alike(driver: PostgresDriver) {
    let db = TestDb::create();
    admin_sql(
        &db.name,
        "CREATE TYPE mood AS ENUM ('ok'); CREATE DOMAIN posint AS int8 CHECK (VALUE > 0)",
    );
    let mut c = db.config("main");
    c.driver = Some(driver);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let h = manager.get("main").unwrap().database().unwrap();
    for (sql, want) in [
        ("SELECT 5::posint AS v", Value::Int(5)),
        ("SELECT 'a'::char(1) AS v", Value::Text("a".into())),
        ("SELECT 'a'::\"char\" AS v", Value::Text("a".into())),
        ("SELECT NULL::mood AS v", Value::Null),
    ] {
        let row = h.fetch_one(sql, &[]).await.unwrap();
        assert_eq!(row.values(), [want], "{driver:?}: {sql}");
    }
    for (sql, type_name) in [
        ("SELECT 'ok'::mood AS v", "mood"),
        ("SELECT ARRAY['ok']::mood[] AS v", "mood[]"),
        ("SELECT ARRAY[5::posint] AS v", "posint[]"),
        ("SELECT '<a/>'::xml AS v", "xml"),
        ("SELECT '1.2.3.4'::inet AS v", "inet"),
        ("SELECT ARRAY['1.2.3.4'::inet] AS v", "inet[]"),
        ("SELECT '10.0.0.0/8'::cidr AS v", "cidr"),
        ("SELECT '08:00:2b:01:02:03'::macaddr AS v", "macaddr"),
        ("SELECT int4range(1, 5) AS v", "int4range"),
        ("SELECT tstzrange(now(), now()) AS v", "tstzrange"),
        ("SELECT B'101' AS v", "bit"),
        ("SELECT point(1, 2) AS v", "point"),
    ] {
        let e = h.fetch_one(sql, &[]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Query, "{driver:?}: {sql}: {e}");
        let want = format!(
            "column `v` has type {type_name}, which the neutral handle does not decode; cast it in SQL (e.g. `::text`)"
        );
        assert!(e.to_string().contains(&want), "{driver:?}: {sql}: {e}");
    }
    manager.close(Duration::from_secs(5)).await;
}

on_both_drivers!(types_beyond_the_table_read_alike);
