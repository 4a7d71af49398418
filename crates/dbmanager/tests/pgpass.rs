//! libpq's password file for a connection configured without a password, on both PostgreSQL
//! drivers: a private scram-sha-256 cluster, `PGPASSFILE` naming the file (set once for this
//! test binary, which has only this test). A file others can read is ignored, as libpq does.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dbmanager::{ConnectPolicy, ErrorKind, Manager, PostgresDriver};
use support::{PrivateCluster, fast_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_password_reads_the_password_file_on_both_drivers() {
    let cluster = PrivateCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        format!(
            "# other servers first\nelsewhere:5432:*:*:wrong\n127.0.0.1:{}:postgres:{}:{}\n",
            cluster.port, cluster.superuser, cluster.password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: set before any thread of this binary reads the environment (its only test).
    unsafe { std::env::set_var("PGPASSFILE", &file) };
    unsafe { std::env::remove_var("PGPASSWORD") };

    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        let mut c = cluster.config("pg", &cluster.superuser, "unused", "postgres");
        c.password = None;
        c.driver = Some(driver);
        let manager = Manager::new(fast_config().with_connection(c.clone())).unwrap();
        manager
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let row = manager
            .database("pg")
            .unwrap()
            .fetch_one("SELECT current_user::text AS who", &[])
            .await
            .unwrap();
        assert_eq!(
            row.get::<String>("who").as_deref(),
            Some(cluster.superuser.as_str())
        );
        let shown = format!("{manager:?} {:?}", manager.stats());
        assert!(!shown.contains(&cluster.password), "{driver:?}: {shown}");
        manager.close(Duration::from_secs(5)).await;
    }

    // Readable by others: ignored, so the login fails as without a password.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    for driver in [PostgresDriver::Sqlx, PostgresDriver::TokioPostgres] {
        let mut c = cluster.config("pg", &cluster.superuser, "unused", "postgres");
        c.password = None;
        c.driver = Some(driver);
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
        let (_, err) = report
            .failed
            .first()
            .unwrap_or_else(|| panic!("{driver:?} connected with a world-readable file"));
        assert_eq!(err.kind(), ErrorKind::Authentication, "{driver:?}: {err}");
        manager.close(Duration::from_secs(5)).await;
    }
}
