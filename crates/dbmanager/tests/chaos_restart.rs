//! Chaos against private PostgreSQL clusters: restart and `kill -9` under load, and a server
//! that is down when the application starts, on both PostgreSQL drivers. Handles obtained
//! before keep working, and (sqlx) a LISTEN/NOTIFY listener comes back with `Reconnected` and
//! hears what is sent after it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmanager::{ConnectPolicy, ListenerEvent, Manager, PostgresDriver, Status};
use support::{PrivateCluster, fast_config};

const POOL: u32 = 8;

struct Outcome {
    started: Instant,
    finished: Instant,
    ok: bool,
}

fn manager_for(cluster: &PrivateCluster, driver: PostgresDriver) -> Manager {
    let mut c = cluster.config("pg", "admin", &cluster.password, "postgres");
    c.driver = Some(driver);
    c.max_open_conns = Some(POOL);
    c.max_idle_conns = Some(POOL);
    c.connect_timeout = Duration::from_secs(10);
    Manager::new(fast_config().with_connection(c)).unwrap()
}

/// Runs 64 workers on handles taken before `disrupt`, which returns when the server accepts
/// connections again; then checks the outcomes.
async fn survive(
    cluster: &PrivateCluster,
    driver: PostgresDriver,
    what: &str,
    disrupt: impl FnOnce() -> Instant + Send + 'static,
) {
    let manager = manager_for(cluster, driver);
    manager.connect().await.unwrap();
    let conn = manager.get("pg").unwrap();
    let sql = conn.database().unwrap();
    let mut layers = match driver {
        PostgresDriver::Sqlx => Some(SqlxLayers::take(&conn).await),
        _ => None,
    };
    #[cfg(feature = "tokio-postgres")]
    let tokio_pool =
        (driver == PostgresDriver::TokioPostgres).then(|| conn.tokio_postgres().unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (sql, stop) = (sql.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = sql.fetch_one("SELECT 1::int8 AS one", &[]).await.is_ok();
                    outcomes.push(Outcome {
                        started,
                        finished: Instant::now(),
                        ok,
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let up = tokio::task::spawn_blocking(disrupt).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap());
    }

    let errors: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let late_errors = errors.iter().filter(|o| o.started >= up).count();
    let recovered = outcomes
        .iter()
        .filter(|o| o.ok && o.finished >= up)
        .map(|o| o.finished.duration_since(up))
        .min()
        .expect("queries succeed after the server is back");
    println!(
        "{what}: {} queries, {} failed, first success {recovered:?} after the server accepted connections",
        outcomes.len(),
        errors.len()
    );
    // At the moment of the disruption each pool slot holds at most one statement in flight, or
    // one connect in progress that the dying server resets (sqlx's pool retries a refused
    // connect, not one reset half-way): at most one failure per slot for each.
    assert!(
        errors.len() <= 2 * POOL as usize,
        "{what}: {} errors for at most {POOL} connections in use or opening at the moment of the disruption",
        errors.len()
    );
    assert_eq!(
        late_errors, 0,
        "{what}: a checkout that began after the server came back failed"
    );

    // Every layer obtained before the disruption works.
    if let Some(layers) = &mut layers {
        layers.check(what).await;
    }
    #[cfg(feature = "tokio-postgres")]
    if let Some(pool) = tokio_pool {
        let client = pool.get().await.unwrap();
        let stmt = client.prepare_cached("SELECT 1::int4").await.unwrap();
        let one: i32 = client.query_one(&stmt, &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }
    conn.health_check().await.unwrap();
    let stats = conn.stats();
    assert!(stats.open <= POOL, "{stats:?}");
    manager.close(Duration::from_secs(5)).await;
    assert!(
        support::eventually(Duration::from_secs(5), || cluster.backends("postgres") == 0).await
    );
}

/// The sqlx driver's own layers: the native pool, SeaORM, a LISTEN/NOTIFY listener.
struct SqlxLayers {
    native: dbmanager::reexports::sqlx::PgPool,
    orm: dbmanager::reexports::sea_orm::DatabaseConnection,
    listener: dbmanager::Listener,
    notifier: dbmanager::ListenerHandle,
}

impl SqlxLayers {
    async fn take(conn: &dbmanager::Connection) -> Self {
        let native = conn.postgres().unwrap();
        let orm = conn.sea_orm().unwrap();
        let listener = conn.listener().await.unwrap();
        listener.listen("chaos").await.unwrap();
        let notifier = listener.handle();
        Self {
            native,
            orm,
            listener,
            notifier,
        }
    }

    async fn check(&mut self, what: &str) {
        let one: i32 = dbmanager::reexports::sqlx::query_scalar("SELECT 1")
            .fetch_one(&self.native)
            .await
            .unwrap();
        assert_eq!(one, 1);
        use dbmanager::reexports::sea_orm::ConnectionTrait;
        self.orm.execute_unprepared("SELECT 1").await.unwrap();
        let (listener, notifier) = (&mut self.listener, &self.notifier);

        // The listener lost its session, reported it, came back, and hears everything sent after.
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(60), listener.recv())
                .await
                .expect("the listener yields an item")
                .expect("the stream is open")
        };
        let lost = next().await;
        assert!(
            matches!(lost, ListenerEvent::Disconnected { .. }),
            "{what}: {lost:?}"
        );
        assert_eq!(next().await, ListenerEvent::Reconnected, "{what}");
        for i in 0..50 {
            let payload = i.to_string();
            let mut tries = 0;
            while let Err(e) = notifier.notify("chaos", &payload).await {
                assert!(e.is_retryable() && tries < 20, "{what}: {e}");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for i in 0..50 {
            match next().await {
                ListenerEvent::Notification(n) => assert_eq!(n.payload, i.to_string(), "{what}"),
                other => panic!("{what}: expected notification {i}, got {other:?}"),
            }
        }
    }
}

async fn restart_under_load(driver: PostgresDriver) {
    let cluster = Arc::new(PrivateCluster::start());
    let c = cluster.clone();
    let what = format!("{driver}: fast restart");
    survive(&cluster, driver, &what, move || c.restart()).await;
}

async fn kill_9_under_load(driver: PostgresDriver) {
    let cluster = Arc::new(PrivateCluster::start());
    let c = cluster.clone();
    let what = format!("{driver}: kill -9");
    survive(&cluster, driver, &what, move || c.kill9_and_restart()).await;
}

/// The scenarios above, once per driver: `<driver>::<scenario>`.
macro_rules! per_driver {
    ($($module:ident: $driver:expr $(, $cfg:meta)?;)+) => {$(
        $(#[$cfg])?
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restart_under_load() {
                super::restart_under_load($driver).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kill_9_under_load() {
                super::kill_9_under_load($driver).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn down_at_startup_then_connected_by_the_health_loop() {
                super::down_at_startup_then_connected_by_the_health_loop($driver).await;
            }
        }
    )+};
}

per_driver! {
    sqlx: PostgresDriver::Sqlx;
    tokio_postgres: PostgresDriver::TokioPostgres, cfg(feature = "tokio-postgres");
}

async fn down_at_startup_then_connected_by_the_health_loop(driver: PostgresDriver) {
    let cluster = PrivateCluster::start();
    cluster.stop_server("fast");
    let mut c = cluster.config("pg", "admin", &cluster.password, "postgres");
    c.driver = Some(driver);
    c.connect_timeout = Duration::from_secs(2);
    let mut config = fast_config().with_connection(c);
    config.health_check_interval = Duration::from_millis(200);
    let manager = Manager::new(config).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    let conn = manager.get("pg").unwrap();
    assert_eq!(conn.status(), Status::Unavailable);
    assert_eq!(manager.stats().healthy, 0);
    assert!(conn.database().is_err());

    let up = Instant::now();
    cluster.start_server();
    assert!(
        support::eventually(Duration::from_secs(20), || conn.is_connected()).await,
        "the health loop connects once the server is up"
    );
    println!(
        "connected by the health loop {:?} after the server started",
        up.elapsed()
    );
    // The connection is up before the health loop's reconnect has counted itself and set the
    // status (CI once read `reconnects_ok` 0 here): wait for both.
    assert!(
        support::eventually(Duration::from_secs(5), || conn.stats().reconnects_ok >= 1
            && conn.status() == Status::Healthy)
        .await,
        "{:?} {:?}",
        conn.status(),
        conn.stats()
    );
    assert_eq!(manager.stats().healthy, 1);
    conn.database()
        .unwrap()
        .execute("SELECT 1", &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(5)).await;
}
