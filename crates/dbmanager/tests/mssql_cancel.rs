//! A SQL Server statement abandoned mid-way, against a private substitute server: the
//! substitute runs one statement at a time server-wide, so while the slow statement runs no
//! other session (not even a login) gets an answer; on the shared server, suites running beside
//! it would time out.
#![cfg(feature = "mssql")]

mod support;

use std::time::Duration;

use dbmanager::Manager;
use support::{OwnedServer, fast_config, mssql_config};

/// Seconds of the substitute's time (a `WHILE` loop: it has no `WAITFOR DELAY`).
const SLOW: &str = "DECLARE @i INT = 0; WHILE @i < 12000000 SET @i = @i + 1; SELECT @i AS i";

/// A native-layer statement abandoned mid-way (its future dropped by a timeout) leaves its
/// response on the wire; the next checkout of that pool slot must not inherit that client.
///
/// The substitute runs one statement at a time server-wide (while the loop runs, even a new
/// session's login waits), so it cannot show that the next caller is not delayed; it shows that
/// the abandoned client is discarded and replaced, not handed out again.
#[tokio::test]
async fn a_cancelled_native_query_does_not_desynchronise_the_next_checkout() {
    // A private server: the slow statement holds the substitute's only executor.
    let server = OwnedServer::mssql("Cancel-Test-Pw1");
    let mut c = mssql_config("ms");
    c.port = Some(server.port);
    c.password = Some("Cancel-Test-Pw1".to_owned().into());
    c.max_open_conns = Some(1);
    c.max_idle_conns = Some(1);
    c.connect_timeout = Duration::from_secs(30);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("ms").unwrap();
    let pool = conn.mssql().unwrap();
    let before = conn.stats();

    let mut client = pool.acquire().await.unwrap();
    let abandoned = tokio::time::timeout(Duration::from_millis(300), async {
        client.simple_query(SLOW).await?.into_results().await
    })
    .await;
    assert!(abandoned.is_err(), "the slow statement was cancelled");
    drop(client);

    let mut client = pool.acquire().await.unwrap();
    let row = client
        .simple_query("SELECT 42 AS n")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>("n"), Some(42));
    drop(client);
    let after = conn.stats();
    assert!(
        after.opened_total > before.opened_total && after.closed_broken > before.closed_broken,
        "the abandoned client was replaced, not reused: {before:?} -> {after:?}"
    );

    // The same through the neutral handle's own path.
    let db = conn.database().unwrap();
    let abandoned = tokio::time::timeout(Duration::from_millis(300), db.fetch_all(SLOW, &[])).await;
    assert!(abandoned.is_err());
    let row = db.fetch_one("SELECT 43 AS n", &[]).await.unwrap();
    assert_eq!(row.get::<i64>("n"), Some(43));
    let last = conn.stats();
    assert!(
        last.closed_broken > after.closed_broken,
        "{after:?} -> {last:?}"
    );
    manager.close(Duration::from_secs(5)).await;
}
