//! The restart case for SQL Server and MongoDB: the test owns a server process, stops and starts
//! it, and handles obtained before keep working.

mod support;

use std::time::{Duration, Instant};

use dbmanager::reexports::mongodb::bson::doc;
use dbmanager::{ConnectionConfig, DatabaseType, Manager, SslMode};
use support::{OwnedServer, fast_config};

/// Retries `probe` until it succeeds; returns how long that took after `up`.
async fn recovery<F, Fut>(up: Instant, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if probe().await {
            return up.elapsed();
        }
        assert!(Instant::now() < deadline, "no recovery within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_server_restart_keeps_handles_working() {
    let mut server = OwnedServer::mssql("Restart-Pw1");
    let mut c = ConnectionConfig::new("ms", DatabaseType::Mssql);
    c.host = Some("127.0.0.1".into());
    c.port = Some(server.port);
    c.user = Some("sa".into());
    c.password = Some("Restart-Pw1".to_owned().into());
    c.sslmode = Some(SslMode::Disable);
    c.max_open_conns = Some(4);
    c.connect_timeout = Duration::from_secs(3);
    let mut config = fast_config().with_connection(c);
    config.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("ms").unwrap();
    let sql = conn.database().unwrap();
    let pool = conn.mssql().unwrap();
    sql.fetch_one("SELECT 1 AS one", &[]).await.unwrap();

    let up = tokio::task::spawn_blocking(move || {
        let up = server.restart();
        (server, up)
    })
    .await
    .unwrap();
    let (_server, up) = up;
    let took = recovery(up, || {
        let sql = sql.clone();
        async move { sql.fetch_one("SELECT 1 AS one", &[]).await.is_ok() }
    })
    .await;
    println!("SQL Server restart: first successful query {took:?} after the server listened again");
    // The native pool handle taken before the restart works too.
    let mut client = pool.acquire().await.unwrap();
    client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    drop(client);
    assert!(support::eventually(Duration::from_secs(10), || conn.status().is_up()).await);
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_restart_keeps_handles_working() {
    let mut server = OwnedServer::mongodb();
    let mut c = ConnectionConfig::new("docs", DatabaseType::Mongodb);
    c.host = Some(format!("127.0.0.1:{}", server.port));
    c.database = Some("app".into());
    c.sslmode = Some(SslMode::Disable);
    c.connect_timeout = Duration::from_secs(3);
    let mut config = fast_config().with_connection(c);
    config.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(config).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("docs").unwrap();
    let db = conn.mongodb_database().unwrap();
    db.run_command(doc! { "ping": 1 }).await.unwrap();

    let (_server, up) = tokio::task::spawn_blocking(move || {
        let up = server.restart();
        (server, up)
    })
    .await
    .unwrap();
    let took = recovery(up, || {
        let db = db.clone();
        async move { db.run_command(doc! { "ping": 1 }).await.is_ok() }
    })
    .await;
    println!("MongoDB restart: first successful ping {took:?} after the server listened again");
    assert!(support::eventually(Duration::from_secs(10), || conn.status().is_up()).await);
    manager.close(Duration::from_secs(5)).await;
}
