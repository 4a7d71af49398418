//! Primary failover without any manual step, under pg_auto_failover (a monitor and two data
//! nodes, private on this machine): the connection's `hosts:` list names both nodes; the
//! primary's node is stopped with `pg_autoctl stop`, the monitor promotes the secondary, and
//! the library finds it on its own. The write outage as the application sees it is printed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmanager::{ConnectionConfig, DatabaseType, Manager, SslMode};
use support::autofailover::AutoFailoverSet;
use support::fast_config;
use support::replication::spawn_writer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_follows_an_automatic_promotion() {
    let set = tokio::task::block_in_place(AutoFailoverSet::start);
    let hosts: Vec<String> = set
        .node_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let mut c = ConnectionConfig::new("pg", DatabaseType::Postgres);
    c.hosts = Some(hosts.clone());
    c.user = Some("postgres".into());
    c.database = Some("postgres".into());
    c.sslmode = Some(SslMode::Disable);
    c.max_open_conns = Some(4);
    c.connect_timeout = Duration::from_secs(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    assert_eq!(conn.stats().current_host.as_ref(), Some(&hosts[0]));
    let db = conn.database().unwrap();
    db.execute("CREATE TABLE written (id int8)", &[])
        .await
        .unwrap();

    // A write every 50 ms, each recording which node took it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(db.clone(), stop.clone(), Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stopped = Instant::now();
    tokio::task::block_in_place(|| set.stop_node(0));
    let new_primary = i32::from(set.node_ports[1]);
    // The monitor's detection dominates (about 50 s with its defaults).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let port = db
            .fetch_one("SELECT inet_server_port() AS port", &[])
            .await
            .ok()
            .and_then(|row| row.get::<i32>("port"));
        if port == Some(new_primary) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the library did not reach the promoted node\n{}\n{:?}",
            set.state(),
            conn.health()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let last_on_old = writes
        .iter()
        .filter(|w| w.server == Some(i32::from(set.node_ports[0])))
        .map(|w| w.ended)
        .max();
    let Some(first_on_new) = writes
        .iter()
        .find(|w| w.server == Some(new_primary))
        .map(|w| w.ended)
    else {
        panic!("no write reached the promoted node");
    };
    let failed = writes.iter().filter(|w| w.server.is_none()).count();
    println!(
        "pg_auto_failover: `pg_autoctl stop` of the primary's node → first write on the promoted node {:?}; \
         write outage as the application saw it (last write on the old primary → first on the new) {:?}; \
         {failed} write(s) failed meanwhile",
        first_on_new - stopped,
        last_on_old.map(|last| first_on_new - last)
    );
    assert_eq!(conn.stats().current_host.as_ref(), Some(&hosts[1]));
    assert!(conn.stats().host_switches >= 1);
    manager.close(Duration::from_secs(5)).await;
}
