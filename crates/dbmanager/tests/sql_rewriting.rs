//! The neutral handle's `$n` placeholders on every SQL backend and layer: a placeholder that
//! cannot be bound is a query error before the statement reaches the server, and statements
//! reach each server exactly as its own lexer reads them (property tests against the real
//! servers: the values and column names that come back are the literals and identifiers that
//! were written).

mod support;

use std::time::Duration;

use dbmanager::{DefaultOrm, ErrorKind, Manager, Value};
use support::{TestDb, fast_config};

const LAYERS: [DefaultOrm; 2] = [DefaultOrm::Native, DefaultOrm::SeaOrm];

/// Statements whose placeholders cannot be bound with one parameter.
const UNBINDABLE: [&str; 4] = [
    "SELECT $2 AS x",
    // `$0` made sqlx's SQLite worker panic (an index underflow) and return no rows.
    "SELECT $0 AS x",
    // SQLite read `$1abc` as parameter 1; PostgreSQL reports trailing junk.
    "SELECT $1abc AS x",
    "SELECT $1 AS x, $3 AS y",
];

async fn refuses_unbindable(manager: &Manager, name: &str) {
    let db = manager.database(name).unwrap();
    for sql in UNBINDABLE {
        let err = db.fetch_all(sql, &[Value::Int(1)]).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Query,
            "{name} {:?}: {sql}: {err}",
            db.layer()
        );
        assert!(
            err.to_string()
                .contains(&format!("connection `{name}`: query failed")),
            "{err}"
        );
    }
    let err = db.fetch_all("SELECT $1 AS x", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query, "{err}");
    // The pool still works.
    let row = db.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
    assert_eq!(row.get::<i64>("one"), Some(1));
}

#[tokio::test]
async fn sqlite_refuses_placeholders_without_a_parameter_on_both_layers() {
    for layer in LAYERS {
        let mut c = dbmanager::ConnectionConfig::sqlite("lite", ":memory:");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        refuses_unbindable(&manager, "lite").await;
        // SQLite's own markers would be bound by position or refused by sqlx as a
        // protocol-class (retryable) error.
        let db = manager.database("lite").unwrap();
        for sql in [
            "SELECT ? AS x",
            "SELECT :a AS x",
            "SELECT @a AS x",
            "SELECT $a AS x",
        ] {
            let err = db.fetch_all(sql, &[Value::Int(1)]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Query, "{sql}: {err}");
        }
        manager.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn postgres_refuses_placeholders_without_a_parameter_on_both_layers() {
    let db = TestDb::create();
    for layer in LAYERS {
        let mut c = db.config("pg");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        // The server's own answer ("bind message supplies 1 parameters, but prepared statement
        // requires 2", SQLSTATE 08P01) was classified as transient: retried in vain.
        refuses_unbindable(&manager, "pg").await;
        manager.close(Duration::from_secs(5)).await;
    }
}
