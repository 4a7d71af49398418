//! Read replicas on a real streaming-replication set (a private primary and hot standbys made
//! with `pg_basebackup -R`): routing of the neutral handle by policy, bans of a killed standby
//! under load, the lag bound with replay paused, read-your-writes, fallbacks, `reader()` /
//! `writer()` with the native pool and SeaORM, stats and metrics; and the configuration
//! problems of the replica keys. Which server answered is told by `inet_server_port()`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dbmanager::{
    ConnectionConfig, Database, ErrorKind, Manager, ManagerConfig, PostgresDriver, ReadPolicy,
    ReplicaFallback,
};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use support::proxy::{Fault, FaultProxy};
use support::replication::ReplicationSet;
use support::{PrivateCluster, fast_config};

const PORT_SQL: &str = "SELECT inet_server_port() AS port";

/// A manager with one connection `main` on the set's primary and one replica per standby
/// (on `replica_ports`, the standbys' own unless a proxy stands in between).
fn manager(
    set: &ReplicationSet,
    replica_ports: &[u16],
    adjust: impl FnOnce(&mut ConnectionConfig),
) -> Manager {
    let primary = &set.primary;
    let mut c = primary.config("main", "admin", &primary.password, "postgres");
    c.max_open_conns = Some(8);
    c.max_idle_conns = Some(8);
    c.connect_timeout = Duration::from_secs(3);
    for port in replica_ports {
        let replica = c.replica("127.0.0.1", Some(*port));
        c.replicas.push(replica);
    }
    adjust(&mut c);
    let mut m = fast_config();
    // Replicas are checked (ping and lag) this often.
    m.health_check_interval = Duration::from_millis(200);
    Manager::new(m.with_connection(c)).expect("valid config")
}

fn ports(set: &ReplicationSet) -> Vec<u16> {
    set.standbys.iter().map(|s| s.port).collect()
}

async fn port_of(db: &Database) -> dbmanager::Result<u16> {
    let row = db.fetch_one(PORT_SQL, &[]).await?;
    Ok(row
        .get::<i64>("port")
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0))
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member_name(port: u16) -> String {
    format!("main/replica:127.0.0.1:{port}")
}

fn replica_stats(manager: &Manager, port: u16) -> dbmanager::ReplicaStats {
    let stats = manager.stats();
    let member = stats
        .connections
        .get(&member_name(port))
        .unwrap_or_else(|| {
            panic!(
                "{} listed in {:?}",
                member_name(port),
                stats.connections.keys()
            )
        });
    member.replica.clone().expect("a member has replica stats")
}

fn routing(manager: &Manager) -> dbmanager::RoutingStats {
    manager.stats().connections["main"]
        .routing
        .clone()
        .expect("a connection with replicas has routing stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_killed_under_32_readers_is_banned_and_reads_go_on() {
    standby_killed_under_32_readers(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tokio_postgres_a_killed_standby_is_banned_and_reads_go_on() {
    standby_killed_under_32_readers(PostgresDriver::TokioPostgres).await;
}

async fn standby_killed_under_32_readers(driver: PostgresDriver) {
    let set = ReplicationSet::start(2);
    let standbys = ports(&set);
    let manager = manager(&set, &standbys, |c| c.driver = Some(driver));
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let answered_after_kill = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (db, stop, killed) = (db.clone(), stop.clone(), killed.clone());
        let (failures, answered) = (failures.clone(), answered_after_kill.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Read before the query starts: a query started after the kill may only land
                // on a survivor once the dead one is banned.
                let after = killed.load(Ordering::Relaxed);
                match port_of(&db).await {
                    Ok(port) if after => {
                        answered.lock().unwrap().insert(port);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = replica_stats(&manager, standbys[0]).reads;
    assert!(before > 0, "the first standby served reads before the kill");
    set.standbys[0].kill9();
    killed.store(true, Ordering::Relaxed);
    // Reads go on at the other standby: waited for rather than given a fixed two seconds (a
    // CI run with every test of this file starting its servers once took longer).
    support::eventually(Duration::from_secs(30), || {
        answered_after_kill.lock().unwrap().contains(&standbys[1])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let failed = failures.load(Ordering::Relaxed);
    assert!(failed <= 32, "at most the reads in flight fail: {failed}");
    let answered = answered_after_kill.lock().unwrap().clone();
    assert!(
        answered.contains(&standbys[1]),
        "the other standby kept serving: {answered:?}"
    );
    let dead = replica_stats(&manager, standbys[0]);
    assert!(dead.banned, "{dead:?}");
    assert!(dead.bans_total >= 1);
    assert!(dead.last_error.is_some());
    assert!(!replica_stats(&manager, standbys[1]).banned);

    // The second standby killed too: reads fall back to the primary, and are counted.
    set.standbys[1].kill9();
    let primary = set.primary.port;
    wait_until(
        Duration::from_secs(10),
        "reads fall back to the primary",
        || {
            let db = db.clone();
            async move { port_of(&db).await.ok() == Some(primary) }
        },
    )
    .await;
    assert!(routing(&manager).fallback_primary > 0);
    let text = manager.metrics_text();
    assert!(
        text.contains("dbmanager_replica_fallbacks_total{connection=\"main\""),
        "{text}"
    );
    assert!(
        text.contains("dbmanager_replica_banned{connection=\"main/replica:127.0.0.1:"),
        "{text}"
    );
    manager.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_beyond_max_replica_lag_takes_no_reads_until_it_catches_up() {
    standby_beyond_max_replica_lag(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tokio_postgres_a_lagging_standby_takes_no_reads_until_it_catches_up() {
    standby_beyond_max_replica_lag(PostgresDriver::TokioPostgres).await;
}

async fn standby_beyond_max_replica_lag(driver: PostgresDriver) {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    let primary = set.primary.port;
    let manager = manager(&set, &[standby], |c| {
        c.driver = Some(driver);
        c.max_replica_lag = Duration::from_millis(500);
    });
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    assert_eq!(port_of(&db).await.unwrap(), standby);
    assert!(!replica_stats(&manager, standby).lagging);

    // Something replayed first, so the lag is measured from its commit time.
    set.primary.sql("CREATE TABLE lag_marker (x int)");
    set.wait_caught_up(Duration::from_secs(10));
    set.standbys[0].pause_replay();
    let writes = {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let port = primary;
        let password = set.primary.password.clone();
        // Writes keep arriving, so the standby falls further behind while replay is paused.
        let task = tokio::spawn(async move {
            let url =
                format!("postgres://admin:{password}@127.0.0.1:{port}/postgres?sslmode=disable");
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            while !s.load(Ordering::Relaxed) {
                sqlx::query("INSERT INTO lag_marker VALUES (1)")
                    .execute(&pool)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (stop, task)
    };
    wait_until(
        Duration::from_secs(20),
        "the lagging standby is skipped",
        || {
            let (db, manager) = (db.clone(), manager.clone());
            async move {
                replica_stats(&manager, standby).lagging && port_of(&db).await.ok() == Some(primary)
            }
        },
    )
    .await;
    let lag = replica_stats(&manager, standby).lag.expect("lag measured");
    assert!(lag > Duration::from_millis(500), "{lag:?}");
    let fallbacks = routing(&manager).fallback_primary;
    assert!(fallbacks > 0);

    set.standbys[0].resume_replay();
    wait_until(Duration::from_secs(20), "the standby serves again", || {
        let db = db.clone();
        async move { port_of(&db).await.ok() == Some(standby) }
    })
    .await;
    assert!(!replica_stats(&manager, standby).lagging);
    writes.0.store(true, Ordering::Relaxed);
    writes.1.await.unwrap();
    manager.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_is_read_back_at_once_through_the_handle() {
    row_written_read_back(PostgresDriver::Sqlx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tokio_postgres_a_row_written_is_read_back_at_once() {
    row_written_read_back(PostgresDriver::TokioPostgres).await;
}

async fn row_written_read_back(driver: PostgresDriver) {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    let manager = manager(&set, &[standby], |c| {
        c.driver = Some(driver);
        c.read_your_writes = Duration::from_secs(30);
    });
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    db.execute("CREATE TABLE ryw (id int primary key)", &[])
        .await
        .unwrap();
    set.wait_caught_up(Duration::from_secs(10));
    // Replay paused: the standby will not see the row, so only the primary can answer it.
    set.standbys[0].pause_replay();

    let writer = manager.database("main").unwrap();
    writer
        .execute("INSERT INTO ryw VALUES ($1)", &[7i64.into()])
        .await
        .unwrap();
    let row = writer
        .fetch_optional("SELECT id FROM ryw WHERE id = $1", &[7i64.into()])
        .await
        .unwrap();
    assert!(row.is_some(), "the handle that wrote reads its row");
    assert_eq!(port_of(&writer).await.unwrap(), set.primary.port);
    assert!(routing(&manager).read_your_writes >= 2);

    // A handle that did not write reads from the standby, which has not replayed the row.
    let other = manager.database("main").unwrap();
    assert_eq!(port_of(&other).await.unwrap(), standby);
    let row = other
        .fetch_optional("SELECT id FROM ryw WHERE id = $1", &[7i64.into()])
        .await
        .unwrap();
    assert!(
        row.is_none(),
        "the standby is behind while replay is paused"
    );
    // A statement that is not a SELECT (it may write) goes to the primary.
    let returned = other
        .fetch_one("INSERT INTO ryw VALUES (8) RETURNING id", &[])
        .await
        .unwrap();
    assert_eq!(returned.get::<i64>("id"), Some(8));
    set.standbys[0].resume_replay();
    manager.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_policies_spread_reads_as_specified() {
    let set = ReplicationSet::start(2);
    let standbys = ports(&set);
    let both: BTreeSet<u16> = standbys.iter().copied().collect();

    // round_robin alternates.
    let m = manager(&set, &standbys, |_| {});
    m.connect().await.unwrap();
    let db = m.database("main").unwrap();
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(port_of(&db).await.unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), both);
    m.close(Duration::from_secs(2)).await;

    // random uses all of them.
    let m = manager(&set, &standbys, |c| c.read_policy = ReadPolicy::Random);
    m.connect().await.unwrap();
    let db = m.database("main").unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        seen.insert(port_of(&db).await.unwrap());
        if seen == both {
            break;
        }
    }
    assert_eq!(seen, both);
    m.close(Duration::from_secs(2)).await;

    // least_in_use: while a long read holds one standby, the short ones go to the other.
    let m = manager(&set, &standbys, |c| c.read_policy = ReadPolicy::LeastInUse);
    m.connect().await.unwrap();
    let db = m.database("main").unwrap();
    let long = {
        let db = db.clone();
        tokio::spawn(async move {
            let row = db
                .fetch_one(
                    "SELECT inet_server_port() AS port, pg_sleep(1.5)::text AS s",
                    &[],
                )
                .await
                .unwrap();
            row.get::<i64>("port").unwrap()
        })
    };
    wait_until(Duration::from_secs(5), "the long read is in flight", || {
        let m = m.clone();
        let standbys = standbys.clone();
        async move {
            standbys
                .iter()
                .any(|p| replica_stats(&m, *p).in_flight == 1)
        }
    })
    .await;
    let busy = *standbys
        .iter()
        .find(|p| replica_stats(&m, **p).in_flight == 1)
        .unwrap();
    for _ in 0..5 {
        assert_ne!(port_of(&db).await.unwrap(), busy);
    }
    assert_eq!(long.await.unwrap(), i64::from(busy));
    m.close(Duration::from_secs(2)).await;

    // lowest_latency: the standby behind a 50 ms proxy is not picked.
    let proxy = FaultProxy::start(standbys[0]).await;
    proxy.set(Fault::Latency(Duration::from_millis(50)));
    let m = manager(&set, &[proxy.port, standbys[1]], |c| {
        c.read_policy = ReadPolicy::LowestLatency;
    });
    m.connect().await.unwrap();
    let db = m.database("main").unwrap();
    for _ in 0..10 {
        assert_eq!(port_of(&db).await.unwrap(), standbys[1]);
    }
    let slow = replica_stats(&m, proxy.port).latency.unwrap();
    let fast = replica_stats(&m, standbys[1]).latency.unwrap();
    assert!(slow > fast, "{slow:?} vs {fast:?}");
    m.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_fallback_error_reads_fail_clearly_when_no_replica_is_usable() {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    let manager = manager(&set, &[standby], |c| {
        c.replica_fallback = ReplicaFallback::Error;
    });
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    assert_eq!(port_of(&db).await.unwrap(), standby);

    set.standbys[0].stop_server("immediate");
    wait_until(Duration::from_secs(10), "reads are refused", || {
        let db = db.clone();
        async move {
            match port_of(&db).await {
                Err(e) => e.to_string().contains("no replica is usable"),
                Ok(_) => false,
            }
        }
    })
    .await;
    let e = port_of(&db).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert!(e.to_string().contains(&member_name(standby)), "{e}");
    // The connection itself is up: the read was refused, not "not connected".
    assert!(matches!(e, dbmanager::Error::Refused { .. }), "{e:?}");
    assert!(!e.to_string().contains("not connected"), "{e}");
    assert!(routing(&manager).fallback_error > 0);
    let conn = manager.get("main").unwrap();
    assert_eq!(conn.reader().unwrap_err().kind(), ErrorKind::Transient);
    // Writes are the primary's, whatever the replicas do.
    db.execute("CREATE TABLE still_writable (x int)", &[])
        .await
        .unwrap();

    // Back: the probe lifts the ban and reads go to it again.
    set.standbys[0].start_server();
    wait_until(Duration::from_secs(15), "the standby is back", || {
        let db = db.clone();
        async move { port_of(&db).await.ok() == Some(standby) }
    })
    .await;
    assert!(!replica_stats(&manager, standby).banned);
    manager.close(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_and_writer_give_the_native_pool_and_sea_orm_of_each_side() {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    let primary = set.primary.port;
    let manager = manager(&set, &[standby], |_| {});
    manager.connect().await.unwrap();
    let conn = manager.get("main").unwrap();

    let reader = conn.reader().unwrap();
    assert_eq!(reader.name(), member_name(standby));
    let writer = conn.writer();
    assert_eq!(writer.name(), "main");
    for (side, port) in [(&reader, standby), (&writer, primary)] {
        let pool = side.postgres().unwrap();
        let native: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(native, i32::from(port));
        let orm = side.sea_orm().unwrap();
        let row = orm
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT inet_server_port() AS port",
            ))
            .await
            .unwrap()
            .expect("one row");
        assert_eq!(row.try_get::<i32>("", "port").unwrap(), i32::from(port));
    }
    assert_eq!(conn.members().len(), 1);

    // The replica is a member of its connection in stats, with its host and port.
    let stats = manager.stats();
    let member = &stats.connections[&member_name(standby)];
    let replica = member.replica.as_ref().unwrap();
    assert_eq!(replica.member_of, "main");
    assert_eq!(
        (replica.host.as_str(), replica.port),
        ("127.0.0.1", Some(standby))
    );
    assert!(member.status.is_up());
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(
        json["connections"][member_name(standby)]["replica"]["member_of"],
        "main"
    );
    let text = manager.metrics_text();
    let info = format!(
        "dbmanager_replica_info{{connection=\"{}\",type=\"postgres\",member_of=\"main\",host=\"127.0.0.1\",port=\"{standby}\"}} 1",
        member_name(standby)
    );
    assert!(text.contains(&info), "{text}");
    assert!(
        !text.contains(&set.primary.password),
        "no secret in metrics"
    );
    manager.close(Duration::from_secs(2)).await;
    // Closing the manager closes the replicas.
    assert!(!reader.is_connected());
}

/// On `driver: tokio-postgres` the sides give the native tokio-postgres pool; SeaORM is the sqlx
/// driver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tokio_postgres_reader_and_writer_give_the_native_client_of_each_side() {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    let primary = set.primary.port;
    let manager = manager(&set, &[standby], |c| {
        c.driver = Some(PostgresDriver::TokioPostgres);
    });
    manager.connect().await.unwrap();
    let conn = manager.get("main").unwrap();
    let reader = conn.reader().unwrap();
    assert_eq!(reader.name(), member_name(standby));
    for (side, port) in [(&reader, standby), (&conn.writer(), primary)] {
        let pool = side.tokio_postgres().unwrap();
        let client = pool.get().await.unwrap();
        let row = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i32::from(port));
        let err = side.sea_orm().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    }
    // The lag probe runs on this driver too: measured, and 0 on a caught-up standby.
    wait_until(
        Duration::from_secs(10),
        "the replica's lag is measured",
        || {
            let manager = manager.clone();
            async move { replica_stats(&manager, standby).lag.is_some() }
        },
    )
    .await;
    assert!(!replica_stats(&manager, standby).lagging);
    manager.close(Duration::from_secs(2)).await;
    assert!(!reader.is_connected());
}

/// `Manager::replace` with other replicas: the old members are closed, the new ones opened,
/// and a handle taken before routes to the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_the_replicas() {
    let set = ReplicationSet::start(2);
    let standbys = ports(&set);
    let manager = manager(&set, &standbys[..1], |_| {});
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    assert_eq!(port_of(&db).await.unwrap(), standbys[0]);
    let old = manager.get("main").unwrap().members();

    let mut next = manager.config().connections["main"].clone();
    next.replicas = vec![next.replica("127.0.0.1", Some(standbys[1]))];
    next.read_policy = ReadPolicy::Random;
    manager.replace(next, Duration::from_secs(2)).await.unwrap();
    let names: Vec<String> = manager
        .get("main")
        .unwrap()
        .members()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(names, vec![member_name(standbys[1])]);
    assert!(!old[0].is_connected(), "the old replica is closed");
    // The handle taken before the replace follows it to the new replica.
    assert_eq!(port_of(&db).await.unwrap(), standbys[1]);
    assert_eq!(routing(&manager).read_policy, "random");
    manager.close(Duration::from_secs(2)).await;
}

/// A replica down when the application starts does not fail the connect: it is banned and
/// joins once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_at_start_is_banned_not_fatal() {
    let primary = PrivateCluster::start();
    let dead = support::free_port();
    let mut c = primary.config("main", "admin", &primary.password, "postgres");
    c.replicas.push(c.replica("127.0.0.1", Some(dead)));
    let mut m = fast_config();
    m.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(m.with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    assert_eq!(port_of(&db).await.unwrap(), primary.port);
    let stats = manager.stats();
    let member = &stats.connections[&member_name(dead)];
    assert!(member.replica.as_ref().unwrap().banned);
    assert!(!member.status.is_up());
    assert_eq!(routing(&manager).fallback_primary, 1);
    manager.close(Duration::from_secs(2)).await;
}

/// A replica whose server never answers does not hold up the connect for its retries: the
/// connect waits one connect timeout for the first checks, then the replica keeps connecting in
/// the background, reads take the primary meanwhile, and it joins once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_answers_does_not_hold_up_the_connect() {
    // The "replica" is the system server behind a proxy that swallows every byte: a server
    // that accepts and never answers, as after a network partition.
    let proxy = FaultProxy::start(support::pg_port()).await;
    proxy.set(Fault::Blackhole);
    let mut c = ConnectionConfig::new("main", dbmanager::DatabaseType::Postgres);
    c.host = Some(support::pg_host());
    c.port = Some(support::pg_port());
    c.user = Some(support::pg_user());
    c.database = Some("postgres".into());
    c.connect_timeout = Duration::from_secs(1);
    c.replicas.push(c.replica("127.0.0.1", Some(proxy.port)));
    let mut m = fast_config();
    m.retry_attempts = 3;
    m.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(m.with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let member = member_name(proxy.port);
    // Each attempt fails after its connect timeout; the connect did not wait for all three.
    let attempts_failed: u64 = manager.stats().connections[&member]
        .connect_errors
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(
        attempts_failed < 3,
        "the connect waited for every attempt of the replica ({attempts_failed})"
    );
    let db = manager.database("main").unwrap();
    db.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
    assert!(
        routing(&manager).fallback_primary >= 1,
        "read from the primary meanwhile"
    );

    // The partition heals: the replica is checked again and takes reads.
    proxy.set(Fault::Forward);
    wait_until(Duration::from_secs(30), "the replica takes reads", || {
        let (db, manager) = (db.clone(), manager.clone());
        async move {
            db.fetch_one("SELECT 1 AS one", &[]).await.is_ok()
                && replica_stats(&manager, proxy.port).reads > 0
        }
    })
    .await;
    manager.close(Duration::from_secs(2)).await;
}

#[test]
fn replica_keys_are_checked_with_their_paths() {
    let yaml = r#"
dbmanager:
  connections:
    lite:
      type: sqlite
      filepath: ":memory:"
      replicas: [{filepath: "/tmp/x.db"}]
    ms:
      type: mssql
      host: h
      replicas: [{host: h2}]
    mongo:
      type: mongodb
      host: h
      replicas: [{host: h2}]
    primary:
      type: postgres
      host: db-1
      database: app
      read_policy: fastest
      max_replica_lag: 5
      read_your_writes: soon
      replica_fallback: nowhere
      replicas:
        - host: db-2
        - host: db-3
          port: 70000
        - hots: db-4
        - host: db-5
          read_policy: random
        - db-6
        - host: db-7
          max_open_conns: 0
"#;
    let problems =
        ManagerConfig::from_yaml_str_with_env(yaml, &dbmanager::EnvSource::empty()).unwrap_err();
    let paths: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let has = |path: &str, part: &str| {
        assert!(
            paths.iter().any(|(p, m)| *p == path && m.contains(part)),
            "no `{part}` at {path} in:\n{problems}"
        );
    };
    has("connections.lite.replicas", "sqlite has no read replicas");
    has("connections.ms.replicas", "mssql has no read replicas");
    has("connections.mongo.replicas", "mongodb has no read replicas");
    has("connections.primary.read_policy", "round_robin");
    has("connections.primary.max_replica_lag", "no unit");
    has("connections.primary.read_your_writes", "not a duration");
    has("connections.primary.replica_fallback", "primary, error");
    has("connections.primary.replicas[1].port", "not a valid port");
    has(
        "connections.primary.replicas[2].hots",
        "did you mean `host`",
    );
    has(
        "connections.primary.replicas[3].read_policy",
        "belongs to the connection",
    );
    has("connections.primary.replicas[4]", "expected a mapping");
    has(
        "connections.primary.replicas[5].max_open_conns",
        "at least 1",
    );
    // Nothing reported twice: the connection's own problems are not repeated per replica.
    assert!(
        !paths
            .iter()
            .any(|(p, _)| p.starts_with("connections.primary.replicas[0]")),
        "{problems}"
    );

    // Durations over the bound, and another user on a replica of a dsn connection (its host
    // points the dsn at the replica's server; a user needs a dsn of its own).
    let yaml = r#"
dbmanager:
  connections:
    primary:
      type: postgres
      dsn: postgres://u:S3cret@db-1/app
      max_replica_lag: 48h
      read_your_writes: 25h
      replicas:
        - host: db-2
          user: other
"#;
    let problems =
        ManagerConfig::from_yaml_str_with_env(yaml, &dbmanager::EnvSource::empty()).unwrap_err();
    let text = problems.to_string();
    assert!(
        text.contains("connections.primary.max_replica_lag: longer than 24h"),
        "{text}"
    );
    assert!(
        text.contains("connections.primary.read_your_writes: longer than 24h"),
        "{text}"
    );
    assert!(
        text.contains(
            "connections.primary.replicas[0].user: a replica of a connection given by a `dsn`"
        ) && !text.contains("conflicts with"),
        "{text}"
    );
    assert!(!text.contains("S3cret"), "{text}");
}

#[test]
fn config_show_lists_the_replica_keys_with_their_origins() {
    let yaml = r#"
dbmanager:
  connections:
    primary:
      type: postgres
      host: db-1
      database: app
      user: app
      password: S3cret
      replicas:
        - host: db-2
        - host: db-3
          port: 5433
          password: Other-S3cret
      read_policy: least_in_use
      max_replica_lag: 5s
"#;
    let effective = ManagerConfig::explain_yaml_str(yaml, &dbmanager::EnvSource::empty()).unwrap();
    let setting = |key: &str| {
        effective
            .settings
            .iter()
            .find(|s| s.path() == format!("connections.primary.{key}"))
            .unwrap_or_else(|| panic!("{key} listed"))
            .clone()
    };
    let replicas = setting("replicas");
    assert_eq!(
        replicas.value,
        serde_json::json!([
            {"host": "db-2"},
            {"host": "db-3", "port": 5433, "password": "[REDACTED]"}
        ])
    );
    assert_eq!(
        replicas.origins,
        vec![dbmanager::config::Origin::File { line: Some(11) }]
    );
    assert_eq!(setting("read_policy").value, "least_in_use");
    assert_eq!(setting("max_replica_lag").value, "5s");
    assert_eq!(setting("read_your_writes").value, "0s");
    assert_eq!(
        setting("read_your_writes").origins,
        vec![dbmanager::config::Origin::Default]
    );
    assert_eq!(setting("replica_fallback").value, "primary");
    let all = format!("{:?}", effective.settings);
    assert!(!all.contains("S3cret"), "{all}");

    // The parsed replicas inherit every key they do not set.
    let c = &effective.config.connections["primary"];
    assert_eq!(c.replicas.len(), 2);
    assert_eq!(c.replicas[0].database.as_deref(), Some("app"));
    assert_eq!(c.replicas[0].user.as_deref(), Some("app"));
    assert_eq!(c.replicas[1].port, Some(5433));
    assert_eq!(c.read_policy, ReadPolicy::LeastInUse);
}

/// MariaDB: a private primary (`--log-bin`) and a replica of it (`CHANGE MASTER TO ...; START
/// SLAVE`); the lag comes from `SHOW REPLICA STATUS`. With the replica's SQL thread stopped its
/// `Seconds_Behind_Master` is NULL: lag unknown, so over any bound, and reads go to the primary
/// until it replicates again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_replica_is_read_from_and_skipped_while_replication_is_stopped() {
    use support::mysql::PrivateMariaDb;
    let primary = PrivateMariaDb::start_with(&["--log-bin=mysql-bin", "--server-id=1"]);
    let replica = PrivateMariaDb::start_with(&["--server-id=2"]);
    let status = primary.sql("SHOW MASTER STATUS");
    let mut fields = status.split('\t');
    let (file, position) = (
        fields.next().unwrap_or_default().trim().to_owned(),
        fields.next().unwrap_or_default().trim().to_owned(),
    );
    assert!(!file.is_empty(), "binary log on: {status:?}");
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_PASSWORD='', MASTER_LOG_FILE='{file}', MASTER_LOG_POS={position}; START SLAVE",
        primary.port()
    ));

    let mut c = primary.config("main");
    c.replicas
        .push(c.replica("127.0.0.1", Some(replica.port())));
    c.max_replica_lag = Duration::from_secs(5);
    let mut m = fast_config();
    m.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(m.with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    let port = |db: Database| async move {
        let row = db.fetch_one("SELECT @@port AS port", &[]).await.unwrap();
        row.get::<i64>("port").unwrap()
    };
    let name = format!("main/replica:127.0.0.1:{}", replica.port());
    let lag = |manager: &Manager| {
        manager.stats().connections[&name]
            .replica
            .clone()
            .expect("replica stats")
    };
    wait_until(Duration::from_secs(20), "the replica replicates", || {
        let manager = manager.clone();
        async move { lag(&manager).lag == Some(Duration::ZERO) && !lag(&manager).lagging }
    })
    .await;
    assert_eq!(port(db.clone()).await, i64::from(replica.port()));
    // A write on the primary reaches the replica.
    db.execute("CREATE TABLE replicated (id int)", &[])
        .await
        .unwrap();
    db.execute("INSERT INTO replicated VALUES (1)", &[])
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "the row is replicated", || {
        let db = db.clone();
        async move {
            db.fetch_optional("SELECT id FROM replicated", &[])
                .await
                .is_ok_and(|r| r.is_some())
        }
    })
    .await;

    replica.sql("STOP SLAVE SQL_THREAD");
    wait_until(
        Duration::from_secs(20),
        "the stopped replica is skipped",
        || {
            let manager = manager.clone();
            async move { lag(&manager).lagging }
        },
    )
    .await;
    assert_eq!(lag(&manager).lag, None);
    assert_eq!(port(db.clone()).await, i64::from(primary.port()));

    replica.sql("START SLAVE SQL_THREAD");
    let replica_port = i64::from(replica.port());
    wait_until(Duration::from_secs(20), "the replica serves again", || {
        let db = db.clone();
        async move { port(db).await == replica_port }
    })
    .await;
    manager.close(Duration::from_secs(2)).await;
}

/// A connection `name` on the system server with one "replica" that is the same server under
/// another host name: for routing behaviour that needs no real replication (which side took a
/// read is told by the routing counters).
fn same_server_manager(
    name: &str,
    driver: PostgresDriver,
    adjust: impl FnOnce(&mut ConnectionConfig),
) -> Manager {
    let mut c = ConnectionConfig::new(name, dbmanager::DatabaseType::Postgres);
    c.host = Some("127.0.0.1".into());
    c.port = Some(support::pg_port());
    c.user = Some(support::pg_user());
    c.database = Some("postgres".into());
    c.driver = Some(driver);
    c.replicas
        .push(c.replica("localhost", Some(support::pg_port())));
    adjust(&mut c);
    let mut m = fast_config();
    m.health_check_interval = Duration::from_millis(200);
    Manager::new(m.with_connection(c)).expect("valid config")
}

fn routing_of(manager: &Manager, name: &str) -> dbmanager::RoutingStats {
    manager.stats().connections[name]
        .routing
        .clone()
        .expect("a connection with replicas has routing stats")
}

/// Waits until the connection's replica takes reads.
async fn replica_in_use(manager: &Manager, db: &Database, name: &str) {
    wait_until(Duration::from_secs(15), "the replica takes reads", || {
        let (db, manager) = (db.clone(), manager.clone());
        let name = name.to_owned();
        async move {
            let before = routing_of(&manager, &name).to_replica;
            db.fetch_one("SELECT 1 AS one", &[]).await.is_ok()
                && routing_of(&manager, &name).to_replica > before
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_past_read_your_writes_still_routes_reads_after_its_commit_to_the_primary()
 {
    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        let name = format!("ryw_tx_{}", driver.as_str().replace('-', "_"));
        let manager = same_server_manager(&name, driver, |c| {
            c.read_your_writes = Duration::from_secs(1);
        });
        manager.connect().await.unwrap();
        let db = manager.database(&name).unwrap();
        replica_in_use(&manager, &db, &name).await;

        // The transaction writes, then stays open longer than the window before its commit: its
        // writes become visible at the commit, so the window starts there.
        let tx = db.begin().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tx.commit().await.unwrap();
        let before = routing_of(&manager, &name);
        db.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
        let after = routing_of(&manager, &name);
        assert_eq!(
            after.read_your_writes,
            before.read_your_writes + 1,
            "{driver:?}: the read right after the commit went to a replica ({after:?})"
        );
        manager.close(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_runs_longer_than_read_your_writes_still_routes_the_next_read_to_the_primary()
{
    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        let name = format!("ryw_slow_{}", driver.as_str().replace('-', "_"));
        let manager = same_server_manager(&name, driver, |c| {
            c.read_your_writes = Duration::from_secs(1);
        });
        manager.connect().await.unwrap();
        let db = manager.database(&name).unwrap();
        replica_in_use(&manager, &db, &name).await;

        // `execute` and a `fetch` that is not a SELECT: both write, both end after the window.
        for write in [
            "DO $$ BEGIN PERFORM pg_sleep(1.5); END $$",
            "WITH s AS (SELECT pg_sleep(1.5)) SELECT 1 AS one FROM s",
        ] {
            if write.starts_with("DO") {
                db.execute(write, &[]).await.unwrap();
            } else {
                db.fetch_one(write, &[]).await.unwrap();
            }
            let before = routing_of(&manager, &name);
            db.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
            let after = routing_of(&manager, &name);
            assert_eq!(
                after.read_your_writes,
                before.read_your_writes + 1,
                "{driver:?}, {write}: the read right after the write went to a replica ({after:?})"
            );
        }
        manager.close(Duration::from_secs(2)).await;
    }
}

/// A handle that wrote before a `replace` of its connection (a new replica set, with a clock of
/// its own before the fix) reads from a replica again once `read_your_writes` has passed, not
/// for as long as the old set had lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_ends_on_time_after_a_replace() {
    let name = "ryw_replace";
    let manager = same_server_manager(name, PostgresDriver::Sqlx, |c| {
        c.read_your_writes = Duration::from_secs(1);
    });
    manager.connect().await.unwrap();
    let db = manager.database(name).unwrap();
    replica_in_use(&manager, &db, name).await;
    // The set has lived a while when the handle writes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    db.execute("SELECT 1", &[]).await.unwrap();

    let mut next = manager.config().connections[name].clone();
    next.read_policy = ReadPolicy::Random;
    manager.replace(next, Duration::from_secs(2)).await.unwrap();
    replica_in_use(&manager, &manager.database(name).unwrap(), name).await;
    // Past the window (and well short of the old set's age).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = routing_of(&manager, name);
    db.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
    let after = routing_of(&manager, name);
    assert_eq!(
        after.to_replica,
        before.to_replica + 1,
        "the read 1.5 s after the write, past read_your_writes (1 s), went to the primary ({after:?})"
    );
    manager.close(Duration::from_secs(2)).await;
}

/// A replica given by its own `dsn` (as it must be when its connection has one) is named and
/// shown by the server of that dsn, not by a host and port it never uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_given_by_a_dsn_is_named_by_its_server() {
    // The replica's server is the system one behind a forwarding proxy: another port.
    let proxy = FaultProxy::start(support::pg_port()).await;
    let user = support::pg_user();
    let dsn = |host: &str, port: u16| format!("postgres://{user}@{host}:{port}/postgres");
    let mut c = ConnectionConfig::from_dsn(
        "dsn_main",
        dbmanager::DatabaseType::Postgres,
        dsn("127.0.0.1", support::pg_port()),
    );
    let mut replica = c.clone();
    replica.dsn = Some(dsn("localhost", proxy.port).into());
    c.replicas.push(replica);
    let mut m = fast_config();
    m.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(m.with_connection(c)).expect("valid config");
    manager.connect().await.unwrap();
    let names: Vec<String> = manager
        .get("dsn_main")
        .unwrap()
        .members()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let expected = format!("dsn_main/replica:localhost:{}", proxy.port);
    assert_eq!(names, vec![expected.clone()]);
    let stats = manager.stats();
    let replica = stats.connections[&expected].replica.clone().unwrap();
    assert_eq!(replica.host, "localhost");
    assert_eq!(replica.port, Some(proxy.port));
    manager.close(Duration::from_secs(2)).await;
}

/// Two replica entries on one server would be one member name twice (their stats and metrics
/// hiding one another): a configuration problem, whether written with the default port or not,
/// or as dsns.
#[test]
fn two_replicas_on_the_same_server_are_a_configuration_problem() {
    let yaml = r#"
dbmanager:
  connections:
    primary:
      type: postgres
      host: db-1
      database: app
      replicas:
        - host: db-2
        - host: db-3
        - host: db-2
          port: 5432
          user: reporting
    bydsn:
      type: postgres
      dsn: postgres://u:S3cret@db-1/app
      replicas:
        - dsn: postgres://u:S3cret@db-2:5433/app
        - dsn: postgres://other:S3cret@db-2:5433/app?sslmode=disable
    mine:
      type: mysql
      host: db-1
      replicas:
        - host: db-2
        - host: db-2
          port: 3306
"#;
    let problems =
        ManagerConfig::from_yaml_str_with_env(yaml, &dbmanager::EnvSource::empty()).unwrap_err();
    let text = problems.to_string();
    for expected in [
        "connections.primary.replicas[2]: names the same server as replicas[0]",
        "connections.bydsn.replicas[1]: names the same server as replicas[0]",
        "connections.mine.replicas[1]: names the same server as replicas[0]",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(!text.contains("S3cret"), "{text}");
    assert_eq!(problems.iter().count(), 3, "{text}");
}

/// A read that fails on a replica for its own sake, not the replica's, does not ban it: a
/// statement over `query_timeout`, and a checkout that timed out because every connection of
/// the replica's pool was in use (too small a pool, not a server gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_read_or_a_full_replica_pool_does_not_ban_the_replica() {
    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        for full_pool in [false, true] {
            let name = format!("no_ban_{}_{full_pool}", driver.as_str().replace('-', "_"));
            let manager = same_server_manager(&name, driver, |c| {
                if full_pool {
                    c.connect_timeout = Duration::from_secs(2);
                    c.replicas[0].connect_timeout = Duration::from_secs(2);
                    c.replicas[0].max_open_conns = Some(1);
                    c.replicas[0].max_idle_conns = Some(1);
                } else {
                    c.query_timeout = Duration::from_secs(1);
                    c.replicas[0].query_timeout = Duration::from_secs(1);
                }
            });
            manager.connect().await.unwrap();
            let db = manager.database(&name).unwrap();
            replica_in_use(&manager, &db, &name).await;
            let member = format!("{name}/replica:localhost:{}", support::pg_port());
            let replica = |manager: &Manager| {
                let stats = &manager.stats().connections[&member];
                (stats.replica.clone().unwrap(), stats.open, stats.in_use)
            };

            if !full_pool {
                // Over query_timeout on the replica.
                let e = db
                    .fetch_one("SELECT pg_sleep(3) IS NULL AS slept", &[])
                    .await
                    .unwrap_err();
                // The library's timer or the server's statement_timeout, whichever fires first.
                assert!(e.to_string().contains("time"), "{driver:?}: {e}");
                assert!(
                    !replica(&manager).0.banned,
                    "{driver:?}: banned for a slow statement: {:?}",
                    replica(&manager)
                );
            } else {
                // The replica's only connection is held (a transaction on the member itself);
                // a read waits for it past its checkout bound.
                let members = manager.get(&name).unwrap().members();
                let member_db = members[0].database().unwrap();
                // The monitor's check may hold it for a moment.
                let deadline = Instant::now() + Duration::from_secs(20);
                let tx = loop {
                    match member_db.begin().await {
                        Ok(tx) => break tx,
                        Err(e) => assert!(
                            Instant::now() < deadline,
                            "{driver:?}: {e}: {:?}",
                            replica(&manager)
                        ),
                    }
                };
                let e = db.fetch_one("SELECT 1 AS one", &[]).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Transient, "{driver:?}: {e:?}");
                assert!(
                    !replica(&manager).0.banned,
                    "{driver:?}: banned for a full pool ({e}): {:?}",
                    replica(&manager)
                );
                tx.rollback().await.unwrap();
            }
            assert_eq!(
                replica(&manager).0.bans_total,
                0,
                "{driver:?}: {:?}",
                replica(&manager)
            );
            manager.close(Duration::from_secs(2)).await;
        }
    }
}

/// A replica entry may override any connection key, `dsn` and the password's source included:
/// an entry with a `dsn` does not inherit the keys a dsn replaces (`host`, `port`, `user`,
/// `database`), and one with `password` (or `password_file`) does not inherit the other.
#[test]
fn a_replica_entry_may_set_its_own_dsn_or_password_source() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pg-password");
    std::fs::write(&secret, "S3cretFile\n").unwrap();
    let yaml = format!(
        r#"
dbmanager:
  connections:
    primary:
      type: postgres
      host: db-1
      port: 5433
      user: app
      database: app
      password_file: {}
      replicas:
        - dsn: postgres://reporting:S3cretDsn@db-2:5432/app
        - host: db-3
          password: S3cretInline
"#,
        secret.display()
    );
    let config = ManagerConfig::from_yaml_str_with_env(&yaml, &dbmanager::EnvSource::empty())
        .unwrap_or_else(|problems| panic!("{problems}"));
    let primary = &config.connections["primary"];
    let by_dsn = &primary.replicas[0];
    assert_eq!(by_dsn.host, None);
    assert_eq!(by_dsn.port, None);
    assert_eq!(by_dsn.user, None);
    assert_eq!(by_dsn.database, None);
    let inline = &primary.replicas[1];
    assert_eq!(inline.host.as_deref(), Some("db-3"));
    assert_eq!(inline.password_file, None);
    assert!(inline.password.is_some());
    // The first keeps the file's password (apart from its dsn, as a connection may).
    assert!(by_dsn.password_file.is_some());
}

/// A replica whose server refuses connections when the application starts is banned (reads
/// refused with `replica_fallback: error`, naming it), and once its server accepts them it takes
/// reads, and its stats show it up and not banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_at_connect_takes_reads_once_it_is_up() {
    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        let proxy = FaultProxy::start(support::pg_port()).await;
        proxy.set(Fault::Refuse);
        let name = format!("late_{}", driver.as_str().replace('-', "_"));
        let manager = same_server_manager(&name, driver, |c| {
            c.replica_fallback = ReplicaFallback::Error;
            c.replicas = vec![c.replica("localhost", Some(proxy.port))];
        });
        manager.connect().await.unwrap();
        let member = format!("{name}/replica:localhost:{}", proxy.port);
        let db = manager.database(&name).unwrap();
        let e = db.fetch_one("SELECT 1 AS one", &[]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{driver:?}: {e}");
        assert!(e.to_string().contains(&member), "{driver:?}: {e}");
        // And why: the error that banned it.
        assert!(
            e.to_string().contains(&format!("{member} banned: ")),
            "{driver:?}: {e}"
        );
        let stats = manager.stats();
        assert!(stats.connections[&member].replica.as_ref().unwrap().banned);
        assert!(!stats.connections[&member].status.is_up());
        // The connection itself is up and writable.
        db.execute("SELECT 1", &[]).await.unwrap();

        proxy.set(Fault::Forward);
        replica_in_use(&manager, &db, &name).await;
        let stats = manager.stats();
        let replica = stats.connections[&member].replica.clone().unwrap();
        assert!(!replica.banned, "{driver:?}: {replica:?}");
        assert!(
            stats.connections[&member].status.is_up(),
            "{driver:?}: {:?}",
            stats.connections[&member].status
        );
        assert!(manager.get(&name).unwrap().members()[0].is_connected());
        manager.close(Duration::from_secs(2)).await;
    }
}

/// A MySQL replica whose user may not run `SHOW REPLICA STATUS` (no `REPLICATION CLIENT` /
/// `REPLICA MONITOR`: a least-privilege application user) still answers reads: its lag is
/// unknown, which matters only under a `max_replica_lag` bound, and is not a ban.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_replica_user_without_the_replication_privilege_still_takes_reads() {
    use support::mysql::MysqlTestDb;
    let test_db = MysqlTestDb::create();
    let user = support::unique("ro");
    test_db.create_user(&user, "Pw-ro-1");
    for bound in [Duration::ZERO, Duration::from_secs(5)] {
        let name = format!("my_{}", bound.as_secs());
        let mut c = test_db.config(&name);
        let mut replica = test_db.user_config(&name, &user, "Pw-ro-1");
        replica.host = Some("localhost".into());
        c.replicas.push(replica);
        c.max_replica_lag = bound;
        let mut m = fast_config();
        m.health_check_interval = Duration::from_millis(200);
        let manager = Manager::new(m.with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        let db = manager.database(&name).unwrap();
        let member = format!("{name}/replica:localhost:{}", support::mysql::mysql_port());
        let stats = |manager: &Manager| {
            manager.stats().connections[&member]
                .replica
                .clone()
                .unwrap()
        };
        wait_until(Duration::from_secs(10), "a check ran", || {
            let replica = stats(&manager);
            async move { replica.last_error.is_some() }
        })
        .await;
        let replica = stats(&manager);
        assert!(!replica.banned, "{bound:?}: {replica:?}");
        assert_eq!(replica.lag, None, "{replica:?}");
        let why = replica.last_error.clone().unwrap_or_default();
        assert!(why.contains("privilege"), "{bound:?}: {replica:?}");
        if bound.is_zero() {
            replica_in_use(&manager, &db, &name).await;
        } else {
            assert!(replica.lagging, "{replica:?}");
        }
        manager.close(Duration::from_secs(2)).await;
    }
}

/// `ConnectionConfig::replica` on a connection with a server list or a dsn gives a valid
/// replica on the server it names: not the list (`set either host or hosts`), and the dsn
/// pointed at that server (not `dsn: conflicts with host`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_of_a_connection_with_hosts_or_a_dsn_is_valid() {
    let proxy = FaultProxy::start(support::pg_port()).await;
    let user = support::pg_user();
    let mut listed = ConnectionConfig::new("api_hosts", dbmanager::DatabaseType::Postgres);
    listed.hosts = Some(vec![format!("127.0.0.1:{}", support::pg_port())]);
    listed.user = Some(user.clone());
    listed.database = Some("postgres".into());
    let by_dsn = ConnectionConfig::from_dsn(
        "api_dsn",
        dbmanager::DatabaseType::Postgres,
        format!(
            "postgres://{user}@127.0.0.1:{}/postgres?sslmode=disable",
            support::pg_port()
        ),
    );
    let mut m = fast_config();
    m.health_check_interval = Duration::from_millis(200);
    for mut c in [listed, by_dsn] {
        let replica = c.replica("localhost", Some(proxy.port));
        c.replicas.push(replica);
        m = m.with_connection(c);
    }
    let manager = Manager::new(m).unwrap_or_else(|problems| panic!("{problems}"));
    manager.connect().await.unwrap();
    for name in ["api_hosts", "api_dsn"] {
        let members: Vec<String> = manager
            .get(name)
            .unwrap()
            .members()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        assert_eq!(
            members,
            vec![format!("{name}/replica:localhost:{}", proxy.port)]
        );
        let db = manager.database(name).unwrap();
        replica_in_use(&manager, &db, name).await;
    }
    manager.close(Duration::from_secs(2)).await;
}

/// A standby that stopped receiving WAL (its primary_conninfo no longer reaches the primary, as
/// in a partition between the two) while the primary takes writes has replayed all it received,
/// but is not current: its lag grows past `max_replica_lag` and it takes no reads (it counted
/// as 0 behind for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cut_off_from_its_primary_is_not_counted_as_current() {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    let manager = manager(&set, &[standby], |c| {
        c.max_replica_lag = Duration::from_secs(1);
    });
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    set.primary.sql("CREATE TABLE cut_marker (x int)");
    set.wait_caught_up(Duration::from_secs(10));
    wait_until(Duration::from_secs(20), "the standby serves", || {
        let db = db.clone();
        async move { port_of(&db).await.ok() == Some(standby) }
    })
    .await;

    // Replication cut: the standby's WAL receiver cannot reach the primary any more.
    set.standbys[0].sql("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'");
    set.standbys[0].sql("SELECT pg_reload_conf()");
    wait_until(
        Duration::from_secs(30),
        "the cut-off standby is skipped",
        || {
            let manager = manager.clone();
            set.primary.sql("INSERT INTO cut_marker VALUES (1)");
            async move { replica_stats(&manager, standby).lagging }
        },
    )
    .await;
    let row = db
        .fetch_one("SELECT count(*) AS n FROM cut_marker", &[])
        .await
        .unwrap();
    assert!(
        row.get::<i64>("n").unwrap_or(0) > 0,
        "read from the primary"
    );
    manager.close(Duration::from_secs(2)).await;
}

/// On a connection given by a `dsn`, a replica entry that sets only `host` (and `port`) is the
/// connection's dsn pointed at that server, as `ConnectionConfig::replica` makes it: it used to
/// fail with `replicas[0].dsn: conflicts with host`, which did not say that such an entry needs
/// a dsn of its own. The replica takes reads (the same server under another host name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_entry_with_only_a_host_on_a_dsn_connection_points_the_dsn_at_it() {
    use secrecy::ExposeSecret as _;
    let user = support::pg_user();
    let port = support::pg_port();
    let yaml = format!(
        r#"
dbmanager:
  retry_attempts: 1
  health_check_interval: 200ms
  connections:
    dsn_hosted:
      type: postgres
      dsn: postgres://{user}@127.0.0.1:{port}/postgres?sslmode=disable
      replicas:
        - host: localhost
        - host: db-2
          port: 5433
"#
    );
    let config = ManagerConfig::from_yaml_str_with_env(&yaml, &dbmanager::EnvSource::empty())
        .unwrap_or_else(|problems| panic!("{problems}"));
    let replicas = &config.connections["dsn_hosted"].replicas;
    let dsns: Vec<&str> = replicas
        .iter()
        .map(|r| r.dsn.as_ref().map_or("", |d| d.expose_secret()))
        .collect();
    assert_eq!(
        dsns,
        [
            format!("postgres://{user}@localhost:{port}/postgres?sslmode=disable"),
            format!("postgres://{user}@db-2:5433/postgres?sslmode=disable"),
        ]
    );
    assert!(
        replicas
            .iter()
            .all(|r| r.host.is_none() && r.port.is_none())
    );

    // Another user is not a server: that entry needs a dsn of its own, and is told so.
    let other_user = yaml.replace("port: 5433", "user: reporting");
    let problems =
        ManagerConfig::from_yaml_str_with_env(&other_user, &dbmanager::EnvSource::empty())
            .unwrap_err()
            .to_string();
    assert!(
        problems.contains(
            "connections.dsn_hosted.replicas[1].user: a replica of a connection given by a \
             `dsn` takes that dsn pointed at its own `host`/`port`; for another user or \
             database give the entry its own `dsn`"
        ) && !problems.contains("conflicts with"),
        "{problems}"
    );

    // One real read routed to the first (the second names no server that answers).
    let mut config = config;
    if let Some(c) = config.connections.get_mut("dsn_hosted") {
        c.replicas.truncate(1);
    }
    let manager = Manager::new(config).unwrap_or_else(|problems| panic!("{problems}"));
    manager.connect().await.unwrap();
    let members: Vec<String> = manager
        .get("dsn_hosted")
        .unwrap()
        .members()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(members, [format!("dsn_hosted/replica:localhost:{port}")]);
    let db = manager.database("dsn_hosted").unwrap();
    replica_in_use(&manager, &db, "dsn_hosted").await;
    manager.close(Duration::from_secs(2)).await;
}

/// A replica entry whose `dsn` lists several servers reaches a standby: for a replica the
/// default `target_session_attrs` is `any` (a standby is what it is meant to reach). It used to
/// default to `read-write` like any server list, so no server of the list was accepted and the
/// replica never took a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_dsn_lists_several_servers_reaches_a_standby() {
    let set = ReplicationSet::start(1);
    let standby = set.standbys[0].port;
    // The second server of the list is the same standby behind a forwarding proxy.
    let proxy = FaultProxy::start(standby).await;
    let manager = manager(&set, &[], |c| {
        let mut replica = c.clone();
        replica.dsn = Some(
            format!(
                "postgres://admin@127.0.0.1:{standby},127.0.0.1:{}/postgres?sslmode=disable",
                proxy.port
            )
            .into(),
        );
        replica.host = None;
        replica.port = None;
        replica.user = None;
        replica.database = None;
        c.replicas.push(replica);
    });
    manager.connect().await.unwrap();
    let db = manager.database("main").unwrap();
    wait_until(
        Duration::from_secs(15),
        "a read reaches the standby",
        || {
            let db = db.clone();
            async move { port_of(&db).await.ok() == Some(standby) }
        },
    )
    .await;
    manager.close(Duration::from_secs(2)).await;
}
