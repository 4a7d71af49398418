//! SQL Server transactions the server ends, and clients that must not go back to the pool out
//! of step, against the substitute server `scripts/test-servers.sh` starts.
//!
//! The substitute cannot deadlock (error 1205: its write locks are table-level and no-wait, a
//! conflict fails at once) or doom a transaction (`XACT_STATE() = -1`); a server-side rollback
//! is forced with a `ROLLBACK` inside a statement and with a runtime error under
//! `XACT_ABORT ON`. The cancelled statement is in `tests/mssql_cancel.rs`.
//!
//! Each test runs on a private substitute server: on the shared one, with other suites running
//! transactions and DDL beside these, the substitute lost tables ("table ... not found in
//! storage", "Invalid object name" for a table just created).
#![cfg(feature = "mssql")]

mod support;

use std::time::Duration;

use dbmanager::{Database, ErrorKind, Manager, Value};
use support::{OwnedServer, fast_config, mssql_config, unique};

const PASSWORD: &str = "Tx-Test-Pw1";

/// A private substitute server and a manager with one connection `ms` of `max_open` clients on
/// it; the server stops when the returned guard is dropped.
async fn manager(max_open: u32) -> (OwnedServer, Manager) {
    let server = OwnedServer::mssql(PASSWORD);
    let mut c = mssql_config("ms");
    c.port = Some(server.port);
    c.password = Some(PASSWORD.to_owned().into());
    c.max_open_conns = Some(max_open);
    c.max_idle_conns = Some(max_open);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    (server, manager)
}

async fn table(db: &Database) -> String {
    let table = unique("tx");
    db.execute(&format!("CREATE TABLE {table} (id INT PRIMARY KEY)"), &[])
        .await
        .unwrap();
    table
}

async fn ids(db: &Database, table: &str) -> Vec<i64> {
    db.fetch_all(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64>("id").unwrap())
        .collect()
}

async fn trancount(db: &Database) -> i64 {
    db.fetch_one("SELECT @@TRANCOUNT AS n", &[])
        .await
        .unwrap()
        .get::<i64>("n")
        .unwrap()
}

/// After the server rolled the transaction back, a later statement on the handle would run in
/// autocommit and persist, and only `commit()` would fail.
#[tokio::test]
async fn statements_after_a_server_side_rollback_fail_and_nothing_persists() {
    let (_server, manager) = manager(1).await;
    let db = manager.database("ms").unwrap();
    let table = table(&db).await;
    let insert = format!("INSERT INTO {table} (id) VALUES ($1)");

    let mut tx = db.begin().await.unwrap();
    tx.execute(&insert, &[Value::Int(1)]).await.unwrap();
    let err = tx.execute("ROLLBACK TRANSACTION", &[]).await.unwrap_err();
    assert!(err.to_string().contains("transaction"), "{err}");
    let err = tx.execute(&insert, &[Value::Int(2)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query, "{err}");
    assert!(err.to_string().contains("connection `ms`"), "{err}");
    let err = tx
        .fetch_all(&format!("SELECT id FROM {table}"), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    let err = tx.commit().await.unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");

    assert_eq!(
        ids(&db, &table).await,
        Vec::<i64>::new(),
        "nothing persisted"
    );
    // The one pooled client came back clean: no transaction open, autocommit.
    assert_eq!(trancount(&db).await, 0);
    db.execute(&insert, &[Value::Int(3)]).await.unwrap();
    assert_eq!(ids(&db, &table).await, [3]);
    manager.close(Duration::from_secs(5)).await;
}

/// A runtime error inside a transaction: with `XACT_ABORT ON` (set by `begin`) the server rolls
/// the whole transaction back, so the handle refuses everything after it; a rollback then
/// succeeds and the client is reused.
#[tokio::test]
async fn a_runtime_error_aborts_the_transaction_and_the_handle() {
    let (_server, manager) = manager(1).await;
    let db = manager.database("ms").unwrap();
    let table = table(&db).await;
    let insert = format!("INSERT INTO {table} (id) VALUES ($1)");

    let mut tx = db.begin().await.unwrap();
    tx.execute(&insert, &[Value::Int(1)]).await.unwrap();
    let err = tx.execute(&insert, &[Value::Int(1)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query, "duplicate key: {err}");
    let err = tx.execute(&insert, &[Value::Int(2)]).await.unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    tx.rollback().await.unwrap();
    assert_eq!(
        ids(&db, &table).await,
        Vec::<i64>::new(),
        "nothing persisted"
    );
    assert_eq!(trancount(&db).await, 0);

    // Committing an aborted transaction is an error, never a silent success.
    let mut tx = db.begin().await.unwrap();
    tx.execute(&insert, &[Value::Int(5)]).await.unwrap();
    tx.execute("SELECT 1 / 0 AS boom", &[]).await.unwrap_err();
    let err = tx.commit().await.unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(ids(&db, &table).await, Vec::<i64>::new());

    // A healthy transaction still commits, and its statements see their own work.
    let mut tx = db.begin().await.unwrap();
    tx.execute(&insert, &[Value::Int(7)]).await.unwrap();
    let seen = tx.fetch_all(&format!("SELECT id FROM {table}"), &[]).await;
    assert_eq!(seen.unwrap().len(), 1);
    tx.commit().await.unwrap();
    assert_eq!(ids(&db, &table).await, [7]);
    assert_eq!(trancount(&db).await, 0);
    manager.close(Duration::from_secs(5)).await;
}

/// A statement that leaves a nested transaction open would make `commit()` commit only the
/// inner level and return the client mid-transaction.
#[tokio::test]
async fn a_statement_that_opens_a_nested_transaction_poisons_the_handle() {
    let (_server, manager) = manager(1).await;
    let db = manager.database("ms").unwrap();
    let table = table(&db).await;
    let mut tx = db.begin().await.unwrap();
    tx.execute(&format!("INSERT INTO {table} (id) VALUES (1)"), &[])
        .await
        .unwrap();
    tx.execute("BEGIN TRANSACTION", &[]).await.unwrap_err();
    tx.commit().await.unwrap_err();
    assert_eq!(ids(&db, &table).await, Vec::<i64>::new());
    assert_eq!(trancount(&db).await, 0);
    manager.close(Duration::from_secs(5)).await;
}

/// A native-layer client returned with its own transaction open must not be handed to the next
/// caller, who would run inside it.
#[tokio::test]
async fn a_native_client_returned_mid_transaction_is_not_reused() {
    let (_server, manager) = manager(1).await;
    let conn = manager.get("ms").unwrap();
    let db = conn.database().unwrap();
    let table = table(&db).await;
    let pool = conn.mssql().unwrap();
    let mut client = pool.acquire().await.unwrap();
    client
        .simple_query(format!(
            "BEGIN TRANSACTION; INSERT INTO {table} (id) VALUES (1)"
        ))
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    drop(client);
    assert_eq!(trancount(&db).await, 0, "the next caller is not inside it");
    assert_eq!(ids(&db, &table).await, Vec::<i64>::new());
    manager.close(Duration::from_secs(5)).await;
}
