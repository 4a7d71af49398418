//! PostgreSQL streaming replication on this machine: a private primary and hot standbys made with
//! `pg_basebackup -R`, each on its own port, which a test may pause, kill and promote.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{PrivateCluster, free_port, postgres_tempdir, run_as_postgres};

/// A primary and its standbys; every server is stopped and removed when dropped.
pub struct ReplicationSet {
    pub primary: PrivateCluster,
    pub standbys: Vec<PrivateCluster>,
}

impl ReplicationSet {
    /// A primary plus `standbys` hot standbys streaming from it, each caught up once.
    pub fn start(standbys: usize) -> Self {
        let primary = PrivateCluster::start();
        let standbys = (0..standbys)
            .map(|_| PrivateCluster::standby_of(&primary))
            .collect();
        let set = Self { primary, standbys };
        set.wait_caught_up(Duration::from_secs(30));
        set
    }

    /// Waits until every standby has replayed the primary's current WAL position.
    pub fn wait_caught_up(&self, limit: Duration) {
        let target = self.primary.sql("SELECT pg_current_wal_lsn()");
        let deadline = Instant::now() + limit;
        for standby in &self.standbys {
            loop {
                let behind = standby.sql(&format!(
                    "SELECT pg_wal_lsn_diff('{target}', pg_last_wal_replay_lsn()) > 0"
                ));
                if behind == "f" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "standby on port {} did not catch up with {target}",
                    standby.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl PrivateCluster {
    /// A hot standby of `primary` (`pg_basebackup -R -X stream` over the primary's socket),
    /// started on a port of its own.
    pub fn standby_of(primary: &PrivateCluster) -> Self {
        let dir = postgres_tempdir("dbm-pg-standby-");
        let data = dir.path().join("data");
        let port = primary.port.to_string();
        run_as_postgres(
            "pg_basebackup",
            &[
                "-h",
                primary.dir.path().to_str().expect("utf-8 temp path"),
                "-p",
                &port,
                "-U",
                &primary.superuser,
                "-D",
                data.to_str().expect("utf-8 temp path"),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        let standby = Self {
            port: free_port(),
            dir,
            superuser: primary.superuser.clone(),
            password: primary.password.clone(),
        };
        standby.start_server();
        standby
    }

    /// Whether the server is a standby (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> bool {
        self.sql("SELECT pg_is_in_recovery()") == "t"
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) -> Instant {
        run_as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().expect("utf-8 temp path"),
                "-w",
                "-t",
                "30",
                "promote",
            ],
        );
        Instant::now()
    }

    /// Stops WAL replay on a standby (`pg_wal_replay_pause()`): its lag then grows with every
    /// write on the primary.
    pub fn pause_replay(&self) {
        self.sql("SELECT pg_wal_replay_pause()");
    }

    pub fn resume_replay(&self) {
        self.sql("SELECT pg_wal_replay_resume()");
    }

    /// `kill -9` of the postmaster, without a restart.
    pub fn kill9(&self) {
        let pid = self.postmaster_pid();
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// One write of [`spawn_writer`]: when it ended, and the port of the server that took it
/// (`None`: it failed).
pub struct Write {
    pub ended: Instant,
    pub server: Option<i32>,
}

/// Inserts 1, 2, ... into the table `written` through `db`, one row every `every`, until `stop`;
/// each write records which server took it (`inet_server_port()`), for failover tests.
pub fn spawn_writer(
    db: dbmanager::Database,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> tokio::task::JoinHandle<Vec<Write>> {
    tokio::spawn(async move {
        let mut writes = Vec::new();
        let mut n = 0i64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let server = db
                .fetch_one(
                    "INSERT INTO written VALUES ($1) RETURNING inet_server_port() AS port",
                    &[dbmanager::Value::from(n)],
                )
                .await
                .ok()
                .and_then(|row| row.get::<i32>("port"));
            writes.push(Write {
                ended: Instant::now(),
                server,
            });
            tokio::time::sleep(every).await;
        }
        writes
    })
}
