//! Shared test fixtures: a throwaway database per test on the machine's PostgreSQL, private
//! PostgreSQL clusters a test may stop or configure, and small helpers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dbmanager::{ConnectionConfig, DatabaseType, ManagerConfig};

/// The machine's PostgreSQL (trust auth), overridable for other setups.
pub fn pg_host() -> String {
    std::env::var("DBMANAGER_TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub fn pg_port() -> u16 {
    std::env::var("DBMANAGER_TEST_PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432)
}

pub fn pg_user() -> String {
    std::env::var("DBMANAGER_TEST_PG_USER").unwrap_or_else(|_| "postgres".into())
}

/// `psql` arguments for one statement, failing on the first error, unaligned tuples only.
fn psql_args(host: &str, port: u16, user: &str, db: &str, sql: &str) -> Vec<String> {
    let port = port.to_string();
    [
        "-h",
        host,
        "-p",
        &port,
        "-U",
        user,
        "-d",
        db,
        "-v",
        "ON_ERROR_STOP=1",
        "-Atqc",
        sql,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs a prepared `psql` command and returns its trimmed output; panics on failure.
fn run_psql(mut command: Command) -> String {
    let out = command
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn psql(port: u16, user: &str, db: &str, sql: &str) -> String {
    let mut command = Command::new("psql");
    command.args(psql_args("127.0.0.1", port, user, db, sql));
    run_psql(command)
}

/// Runs SQL on the machine's PostgreSQL as the admin user.
pub fn admin_sql(db: &str, sql: &str) -> String {
    psql(pg_port(), &pg_user(), db, sql)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos % 100_000
}

/// A database created for one test and dropped (with its sessions) when dropped.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create() -> Self {
        let name = unique("dbm_test");
        admin_sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        Self { name }
    }

    /// A postgres connection config for this database with small pools.
    pub fn config(&self, connection: &str) -> ConnectionConfig {
        let mut c = ConnectionConfig::new(connection, DatabaseType::Postgres);
        c.host = Some(pg_host());
        c.port = Some(pg_port());
        c.user = Some(pg_user());
        c.database = Some(self.name.clone());
        // Plain TCP: sqlx's TLS connect stalls ~90 ms on delayed ACKs (see README), which adds
        // up over hundreds of connects. TLS itself is covered by the tests that set sslmode.
        c.sslmode = Some(dbmanager::SslMode::Disable);
        c.max_open_conns = Some(4);
        c.max_idle_conns = Some(4);
        c.connect_timeout = Duration::from_secs(5);
        c
    }

    /// Server backends connected to this database now.
    pub fn backends(&self) -> i64 {
        admin_sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        )
        .parse()
        .unwrap_or(-1)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let drop_sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args(psql_args(
                "127.0.0.1",
                pg_port(),
                &pg_user(),
                "postgres",
                &drop_sql,
            ))
            .output();
    }
}

/// A manager config with fast retries for tests.
pub fn fast_config() -> ManagerConfig {
    let mut m = ManagerConfig::default();
    m.retry_attempts = 1;
    m.retry_delay = Duration::from_millis(50);
    m.retry_max_delay = Duration::from_millis(200);
    m.health_check_interval = Duration::ZERO;
    m
}

/// A port nothing listens on (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn pg_bin(tool: &str) -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(base)
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(tool)
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
pub(crate) fn as_postgres(tool: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(pg_bin(tool))
            .args(args);
        c
    } else {
        let mut c = Command::new(pg_bin(tool));
        c.args(args);
        c
    }
}

/// Runs a PostgreSQL tool as `as_postgres` does and panics with its stderr when it fails.
pub(crate) fn run_as_postgres(tool: &str, args: &[&str]) {
    let out = as_postgres(tool, args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} does not run: {e}"));
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory under /tmp that the `postgres` user owns (when we are root), for the
/// servers a test runs as that user.
pub(crate) fn postgres_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("temp dir");
    chown_to_postgres(dir.path());
    dir
}

/// `chown -R postgres:postgres` when we are root (PostgreSQL's tools refuse to run as root).
pub(crate) fn chown_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown runs");
        assert!(status.success());
    }
}

/// A private PostgreSQL cluster on its own port, with scram-sha-256 password auth for TCP,
/// which a test may stop, kill and start. Removed when dropped.
pub struct PrivateCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    pub superuser: String,
    pub password: String,
}

impl PrivateCluster {
    pub fn start() -> Self {
        let dir = postgres_tempdir("dbm-pg-");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        let password = "cluster-admin-pw".to_owned();
        std::fs::write(&pwfile, &password).expect("write pwfile");
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status();
        }
        run_as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "admin",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let cluster = Self {
            port: free_port(),
            dir,
            superuser: "admin".into(),
            password,
        };
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn try_start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let out = as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .output()
        .expect("pg_ctl runs");
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        ))
    }

    pub fn start_server(&self) {
        if let Err(e) = self.try_start() {
            panic!("pg_ctl start failed: {e}");
        }
    }

    /// Stops the server: `fast` or `immediate`.
    pub fn stop_server(&self, mode: &str) {
        let _ = as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "-t",
                "30",
                "stop",
            ],
        )
        .output();
    }

    /// SQL as the superuser over the cluster's unix socket (trust).
    pub fn sql(&self, sql: &str) -> String {
        let args = psql_args(
            self.dir.path().to_str().unwrap(),
            self.port,
            "admin",
            "postgres",
            sql,
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_psql(as_postgres("psql", &args))
    }

    pub fn config(
        &self,
        connection: &str,
        user: &str,
        password: &str,
        database: &str,
    ) -> ConnectionConfig {
        let mut c = ConnectionConfig::new(connection, DatabaseType::Postgres);
        c.host = Some("127.0.0.1".into());
        c.port = Some(self.port);
        c.user = Some(user.into());
        c.password = Some(password.to_owned().into());
        c.database = Some(database.into());
        c.sslmode = Some(dbmanager::SslMode::Disable);
        c.max_open_conns = Some(4);
        c.max_idle_conns = Some(4);
        c.connect_timeout = Duration::from_secs(5);
        c
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop_server("immediate");
    }
}

/// A `tracing` writer that keeps everything written, for tests that read the logs.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` until it is true or `limit` passes; returns whether it became true.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// The SQL Server test server started by `scripts/test-servers.sh start`.
pub fn mssql_port() -> u16 {
    env_or("DBMANAGER_TEST_MSSQL_PORT", "14331")
        .parse()
        .expect("a port")
}

pub fn mssql_password() -> String {
    env_or("DBMANAGER_TEST_MSSQL_PASSWORD", "Dbm-Test;Pass={w0rd}")
}

pub fn mssql_config(name: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, DatabaseType::Mssql);
    c.host = Some("127.0.0.1".into());
    c.port = Some(mssql_port());
    c.user = Some(env_or("DBMANAGER_TEST_MSSQL_USER", "sa"));
    c.password = Some(mssql_password().into());
    c.database = Some("master".into());
    c.sslmode = Some(dbmanager::SslMode::Disable);
    c.max_open_conns = Some(4);
    c.max_idle_conns = Some(4);
    c.connect_timeout = Duration::from_secs(5);
    c
}

/// The MongoDB test server started by `scripts/test-servers.sh start` (with auth).
pub fn mongo_port() -> u16 {
    env_or("DBMANAGER_TEST_MONGO_PORT", "27018")
        .parse()
        .expect("a port")
}

pub fn mongo_user() -> String {
    env_or("DBMANAGER_TEST_MONGO_USER", "dbm_user")
}

pub fn mongo_password() -> String {
    env_or("DBMANAGER_TEST_MONGO_PASSWORD", "dbm-Pass:w@rd/é%")
}

pub fn mongo_config(name: &str, database: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, DatabaseType::Mongodb);
    c.host = Some("127.0.0.1".into());
    c.port = Some(mongo_port());
    c.user = Some(mongo_user());
    c.password = Some(mongo_password().into());
    c.database = Some(database.into());
    c.sslmode = Some(dbmanager::SslMode::Disable);
    c.max_open_conns = Some(4);
    c.connect_timeout = Duration::from_secs(5);
    c
}

pub mod autofailover;
pub mod conformance;
pub mod crash;
pub mod mysql;
pub mod pgbouncer;
pub mod proxy;
pub mod replication;

impl PrivateCluster {
    /// The postmaster's PID, from its pid file.
    pub fn postmaster_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).expect("pid file");
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid")
    }

    /// `kill -9` the postmaster, then start the server again once the old processes are gone.
    pub fn kill9_and_restart(&self) -> Instant {
        self.kill9();
        self.start_after_crash()
    }

    /// Starts the server, retrying while the killed server's processes still hold its resources.
    pub fn start_after_crash(&self) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_start() {
                Ok(()) => return Instant::now(),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "restart after kill -9 failed: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fast shutdown then start; returns when the server accepts connections again.
    pub fn restart(&self) -> Instant {
        self.stop_server("fast");
        self.start_server();
        Instant::now()
    }

    /// Server backends of `database` (excluding this query's own).
    pub fn backends(&self, database: &str) -> i64 {
        self.sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ))
        .parse()
        .unwrap_or(-1)
    }
}

/// A server process a test owns and may stop and start again on the same port.
pub struct OwnedServer {
    pub port: u16,
    args: Vec<String>,
    program: String,
    envs: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

impl OwnedServer {
    fn spawn(&mut self) {
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("dbm-owned-{}.log", self.port)),
        )
        .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run scripts/test-servers.sh start)",
                    self.program
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {}",
                self.program,
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the program named by `env_key` (else `~/.cache/dbmanager-tools/<default>`) with
    /// `--host 127.0.0.1 --port <a free port>` followed by `args`.
    fn start(env_key: &str, default: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let home = env_or("HOME", "/root");
        let port_text = port.to_string();
        let mut s = Self {
            port,
            program: env_or(env_key, &format!("{home}/.cache/dbmanager-tools/{default}")),
            args: ["--host", "127.0.0.1", "--port", &port_text]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        s.spawn();
        s
    }

    /// A private SQL Server test server (Iridium SQL) with the given password for `sa`.
    pub fn mssql(password: &str) -> Self {
        Self::start(
            "DBMANAGER_TEST_MSSQL_BIN",
            "bin/iridium-server",
            &["--memory", "--no-tls", "-u", "sa", "-P", password],
            &[("RUST_LOG", "warn")],
        )
    }

    /// A private MongoDB test server (SecantusDB), in memory, without auth.
    pub fn mongodb() -> Self {
        Self::start(
            "DBMANAGER_TEST_MONGO_BIN",
            "secantus/bin/secantusd-py",
            &[
                "--storage-path",
                ":memory:",
                "--standalone",
                "--log-level",
                "WARNING",
            ],
            &[],
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the server on the same port; returns when it listens again.
    pub fn restart(&mut self) -> Instant {
        self.stop();
        self.spawn();
        Instant::now()
    }
}

impl Drop for OwnedServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a scenario (`async fn name(driver: PostgresDriver)`) once per PostgreSQL driver, as
/// the tests `name::sqlx` and `name::tokio_postgres`; the `tokio::test` arguments follow the
/// name.
#[macro_export]
macro_rules! on_both_drivers {
    ($name:ident $(, $($flavor:tt)*)?) => {
        mod $name {
            #[tokio::test$(($($flavor)*))?]
            async fn sqlx() {
                super::$name(dbmanager::PostgresDriver::Sqlx).await;
            }

            #[tokio::test$(($($flavor)*))?]
            async fn tokio_postgres() {
                super::$name(dbmanager::PostgresDriver::TokioPostgres).await;
            }
        }
    };
}
