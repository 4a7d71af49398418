//! A `hosts:` list on MySQL/MariaDB (two private MariaDB servers): the library passes over a
//! server with `read_only` for the one that accepts writes, and leaves a server that becomes
//! read-only (its writes fail with error 1290) for one that became writable.

mod support;

use std::time::{Duration, Instant};

use dbmanager::Manager;
use support::fast_config;
use support::mysql::PrivateMariaDb;

/// Both servers get the same table and an application user without `SUPER` (which
/// `read_only` does not stop).
fn prepare(server: &PrivateMariaDb) {
    server.sql(
        "CREATE TABLE test.written (id INT); \
         CREATE USER app@'%' IDENTIFIED BY 'app-pw'; \
         GRANT SELECT, INSERT ON test.* TO app@'%'",
    );
}

fn address(server: &PrivateMariaDb) -> String {
    format!("127.0.0.1:{}", server.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_server_that_is_not_read_only() {
    let (a, b) = (PrivateMariaDb::start(), PrivateMariaDb::start());
    prepare(&a);
    prepare(&b);
    a.sql("SET GLOBAL read_only = 1");

    let mut c = a.config("my");
    c.host = None;
    c.port = None;
    c.hosts = Some(vec![address(&a), address(&b)]);
    c.user = Some("app".into());
    c.password = Some("app-pw".to_owned().into());
    c.connect_timeout = Duration::from_secs(3);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("my").unwrap();
    assert_eq!(conn.stats().current_host, Some(address(&b)));
    let db = conn.database().unwrap();
    db.execute("INSERT INTO written VALUES (1)", &[])
        .await
        .unwrap();

    // b turns read-only, a writable: the next write fails (1290), then they go to a.
    tokio::task::block_in_place(|| {
        b.sql("SET GLOBAL read_only = 1");
        a.sql("SET GLOBAL read_only = 0");
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    while let Err(e) = db.execute("INSERT INTO written VALUES (2)", &[]).await {
        assert!(Instant::now() < deadline, "writes never moved: {e}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused >= 1,
        "the first write should have met the read-only server"
    );
    assert_eq!(conn.stats().current_host, Some(address(&a)));
    assert_eq!(conn.stats().host_switches, 1);
    assert_eq!(a.sql("SELECT count(*) FROM test.written"), "1");
    manager.close(Duration::from_secs(5)).await;
}
