//! A NULL parameter is untyped, or typed by its context, on every backend and layer: it goes
//! into a column of any type, and `COALESCE($1, 5)` is an integer. SeaORM binds a NULL as
//! text (PostgreSQL then refuses it for an `int` or `bytea` column); sqlx's MySQL binding
//! types it as a string; tiberius binds NVARCHAR (SQL Server refuses that for `varbinary`).

mod support;

use std::time::Duration;

use dbmanager::{DefaultOrm, Manager, Value};
use support::{TestDb, fast_config, unique};

const LAYERS: [DefaultOrm; 2] = [DefaultOrm::Native, DefaultOrm::SeaOrm];

/// Inserts NULL through `$1` into each `(column, type)` of a new table and reads NULLs back;
/// then `COALESCE($1, 5)` must come back as the integer 5.
async fn null_goes_anywhere(manager: &Manager, name: &str, columns: &[(&str, &str)]) {
    let db = manager.database(name).unwrap();
    let layer = db.layer();
    let table = unique("nulls");
    let defs: Vec<String> = columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
    db.execute(
        &format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, {})",
            defs.join(", ")
        ),
        &[],
    )
    .await
    .unwrap();
    for (i, (column, ty)) in columns.iter().enumerate() {
        let id = i64::try_from(i).unwrap();
        db.execute(
            &format!("INSERT INTO {table} (id, {column}) VALUES ($1, $2)"),
            &[Value::Int(id), Value::Null],
        )
        .await
        .unwrap_or_else(|e| panic!("{name} {layer:?}: NULL into {ty}: {e}"));
        let row = db
            .fetch_one(
                &format!("SELECT {column} FROM {table} WHERE id = $1"),
                &[Value::Int(id)],
            )
            .await
            .unwrap();
        assert_eq!(row.value(0), Some(&Value::Null), "{name} {layer:?} {ty}");
    }
    // In an expression the NULL takes the type the context gives it.
    let row = db
        .fetch_one("SELECT COALESCE($1, 5) AS v", &[Value::Null])
        .await
        .unwrap_or_else(|e| panic!("{name} {layer:?}: COALESCE($1, 5): {e}"));
    assert_eq!(row.value("v"), Some(&Value::Int(5)), "{name} {layer:?}");
    // A NULL among other parameters keeps their numbering.
    let row = db
        .fetch_one(
            "SELECT COALESCE($2, $1) AS v, $3 AS w",
            &[Value::Int(7), Value::Null, Value::Int(8)],
        )
        .await
        .unwrap();
    assert_eq!(row.value("v"), Some(&Value::Int(7)), "{name} {layer:?}");
    assert_eq!(row.get::<i64>("w"), Some(8), "{name} {layer:?}");
    // A NULL that no placeholder names has no context at all (PostgreSQL's native layer
    // answered "could not determine data type of parameter $2").
    let row = db
        .fetch_one("SELECT $1 AS v", &[Value::Int(3), Value::Null])
        .await
        .unwrap_or_else(|e| panic!("{name} {layer:?}: an unnamed NULL: {e}"));
    assert_eq!(row.get::<i64>("v"), Some(3), "{name} {layer:?}");
    db.execute(&format!("DROP TABLE {table}"), &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_null_parameters_are_typed_by_context_on_both_layers() {
    let db = TestDb::create();
    for layer in LAYERS {
        let mut c = db.config("pg");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        null_goes_anywhere(
            &manager,
            "pg",
            &[
                ("i", "int"),
                ("b", "bytea"),
                ("j", "jsonb"),
                ("t", "timestamptz"),
                ("u", "uuid"),
                ("n", "numeric"),
                ("a", "int[]"),
            ],
        )
        .await;
        manager.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn sqlite_null_parameters_are_untyped_on_both_layers() {
    for layer in LAYERS {
        let mut c = dbmanager::ConnectionConfig::sqlite("lite", ":memory:");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        null_goes_anywhere(
            &manager,
            "lite",
            &[
                ("i", "INTEGER"),
                ("b", "BLOB"),
                ("r", "REAL"),
                ("t", "TEXT"),
            ],
        )
        .await;
        manager.close(Duration::from_secs(5)).await;
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_null_parameters_are_typed_by_context_on_both_layers() {
    let db = support::mysql::MysqlTestDb::create();
    for layer in LAYERS {
        let mut c = db.config("my");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        null_goes_anywhere(
            &manager,
            "my",
            &[
                ("i", "INT"),
                ("b", "VARBINARY(16)"),
                ("j", "JSON"),
                ("d", "DATETIME"),
                ("n", "DECIMAL(10,2)"),
            ],
        )
        .await;
        manager.close(Duration::from_secs(5)).await;
    }
}

/// The substitute accepts an NVARCHAR NULL into VARBINARY (real SQL Server refuses the
/// implicit conversion), so this only shows NULLs go everywhere; the unit tests in
/// `backends/mssql/sql.rs` show the statement carries `NULL`, not a typed parameter.
#[cfg(feature = "mssql")]
#[tokio::test]
async fn mssql_null_parameters_are_typed_by_context() {
    let manager = Manager::new(fast_config().with_connection(support::mssql_config("ms"))).unwrap();
    manager.connect().await.unwrap();
    null_goes_anywhere(
        &manager,
        "ms",
        &[
            ("i", "INT"),
            ("b", "VARBINARY(16)"),
            ("d", "DATETIME"),
            ("u", "UNIQUEIDENTIFIER"),
            ("n", "DECIMAL(10,2)"),
        ],
    )
    .await;
    manager.close(Duration::from_secs(5)).await;
}
