//! MariaDB fixtures: a throwaway database (and users) per test on the machine's MariaDB, and
//! private MariaDB servers a test may kill, stop and restart.
//!
//! Every `mysql`/`mariadbd` call passes `--no-defaults` so `/etc/mysql/my.cnf` (the machine
//! server's pid file, socket, port and log) never leaks in, and the client talks utf8mb4 (its
//! default follows the locale: utf8mb3 or even latin1). MariaDB keeps account names in utf8mb3,
//! so a 4-byte character (emoji) in a *user name* is stored as `?`; passwords keep all of Unicode.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dbmanager::{ConnectionConfig, DatabaseType};

use super::{free_port, is_root, unique};

/// The machine's MariaDB (root, no password), overridable for other setups.
pub fn mysql_host() -> String {
    std::env::var("DBMANAGER_TEST_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub fn mysql_port() -> u16 {
    std::env::var("DBMANAGER_TEST_MYSQL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3306)
}

/// `text` as a single-quoted SQL string literal, backslashes and quotes escaped (MariaDB's
/// default `sql_mode`, without `NO_BACKSLASH_ESCAPES`).
pub fn mysql_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A `mysql` client running `sql` as root over TCP: batch mode, no column names, raw values.
fn mysql_command(host: &str, port: u16, sql: &str) -> Command {
    let mut command = Command::new("mysql");
    command
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "--default-character-set=utf8mb4",
            "--connect-timeout=5",
            "-N",
            "-B",
            "-r",
            "-uroot",
        ])
        .arg(format!("--host={host}"))
        .arg(format!("--port={port}"))
        .args(["-e", sql]);
    command
}

/// Runs a prepared `mysql` command; its output without the final newline, or its stderr.
fn try_mysql(mut command: Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run mysql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim_end_matches(['\n', '\r'])
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn run_mysql(command: Command) -> String {
    try_mysql(command).unwrap_or_else(|e| panic!("mysql failed: {e}"))
}

/// Runs SQL (one or more statements) as root on the machine's MariaDB; panics on failure.
pub fn mysql_admin(sql: &str) -> String {
    run_mysql(mysql_command(&mysql_host(), mysql_port(), sql))
}

/// SQL counting the sessions whose current database is `database`, this one excluded.
fn backends_sql(database: &str) -> String {
    format!(
        "SELECT count(*) FROM information_schema.processlist WHERE db = {} AND id <> connection_id()",
        mysql_quote(database)
    )
}

fn mysql_config(connection: &str, host: String, port: u16, database: &str) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(connection, DatabaseType::Mysql);
    c.host = Some(host);
    c.port = Some(port);
    c.user = Some("root".into());
    c.database = Some(database.into());
    c.sslmode = Some(dbmanager::SslMode::Disable);
    c.max_open_conns = Some(4);
    c.max_idle_conns = Some(4);
    c.connect_timeout = Duration::from_secs(5);
    c
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A database created for one test on the machine's MariaDB, dropped (with its sessions and
/// the users made by [`MysqlTestDb::create_user`]) when dropped.
pub struct MysqlTestDb {
    pub name: String,
    users: Mutex<Vec<String>>,
}

impl MysqlTestDb {
    pub fn create() -> Self {
        let name = unique("dbm_my");
        mysql_admin(&format!("CREATE DATABASE `{name}`"));
        Self {
            name,
            users: Mutex::new(Vec::new()),
        }
    }

    /// A mysql connection config for this database as root, with small pools.
    pub fn config(&self, connection: &str) -> ConnectionConfig {
        mysql_config(connection, mysql_host(), mysql_port(), &self.name)
    }

    /// [`MysqlTestDb::config`] logging in as `user` with `password`.
    pub fn user_config(&self, connection: &str, user: &str, password: &str) -> ConnectionConfig {
        let mut c = self.config(connection);
        c.user = Some(user.into());
        c.password = Some(password.to_owned().into());
        c
    }

    /// Creates `user`@`%` with `password` (any characters), granted everything on this database
    /// only; dropped with the database. An existing account of that name is replaced, so give
    /// each test its own name.
    pub fn create_user(&self, user: &str, password: &str) {
        let account = format!("{}@'%'", mysql_quote(user));
        mysql_admin(&format!(
            "DROP USER IF EXISTS {account}; \
             CREATE USER {account} IDENTIFIED BY {}; \
             GRANT ALL PRIVILEGES ON `{}`.* TO {account}",
            mysql_quote(password),
            self.name
        ));
        locked(&self.users).push(user.to_owned());
    }

    /// Sessions connected to this database now.
    pub fn backends(&self) -> i64 {
        mysql_admin(&backends_sql(&self.name)).parse().unwrap_or(-1)
    }
}

impl Drop for MysqlTestDb {
    fn drop(&mut self) {
        // Like PostgreSQL's DROP DATABASE ... WITH (FORCE): end the sessions first, since one
        // holding a table lock would make DROP DATABASE wait (lock_wait_timeout is a day).
        let ids = try_mysql(mysql_command(
            &mysql_host(),
            mysql_port(),
            &format!(
                "SELECT id FROM information_schema.processlist WHERE db = {} AND id <> connection_id()",
                mysql_quote(&self.name)
            ),
        ))
        .unwrap_or_default();
        let mut sql: String = ids
            .lines()
            .filter(|id| !id.is_empty())
            .map(|id| format!("KILL CONNECTION {id}; "))
            .collect();
        sql.push_str(&format!(
            "SET SESSION lock_wait_timeout = 10; DROP DATABASE IF EXISTS `{}`; ",
            self.name
        ));
        for user in locked(&self.users).drain(..) {
            sql.push_str(&format!("DROP USER IF EXISTS {}@'%'; ", mysql_quote(&user)));
        }
        // --force: a session that ended by itself (KILL fails) must not stop the rest.
        let mut command = mysql_command(&mysql_host(), mysql_port(), &sql);
        command.arg("--force");
        let _ = try_mysql(command);
    }
}

/// InnoDB sized for tests: 38 MB on disk instead of 114 MB, a small buffer pool.
const INNODB_OPTS: [&str; 2] = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"];

/// How long a private server may take to answer (install, start, recovery after kill -9).
const START_LIMIT: Duration = Duration::from_secs(60);

fn mariadbd_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/mariadbd");
    if sbin.exists() {
        sbin.into()
    } else {
        "mariadbd".into()
    }
}

/// A private MariaDB server on its own port (root without password over TCP, a database
/// `test`), which a test may kill, stop and start. Its data directory is removed when dropped.
pub struct PrivateMariaDb {
    port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    /// Server options beyond the common ones (`--log-bin`, `--server-id` for replication).
    extra: Vec<String>,
}

impl PrivateMariaDb {
    /// Installs a fresh data directory and starts the server on a free port (about 1.5 s, up
    /// to 3 s when several start at once).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`PrivateMariaDb::start`] with more server options, e.g. `--log-bin` and
    /// `--server-id=1` for a replication primary.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dbm-my-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // Each server gets its own tmpdir: mariadbd deletes every `#sql*` file in its tmpdir
        // at startup, so servers sharing /tmp break each other's temporary tables.
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "chown to mysql failed (is MariaDB installed?)"
            );
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
        }
        let mut install = Command::new("mariadb-install-db");
        install.arg("--no-defaults");
        if is_root() {
            install.arg("--user=mysql");
        }
        let out = install
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", dir.path().join("tmp").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(INNODB_OPTS)
            .stdin(Stdio::null())
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            port: free_port(),
            dir,
            child: Mutex::new(None),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        // The free port may be taken before mariadbd binds it: then try another.
        for attempt in 1.. {
            match server.try_start() {
                Ok(()) => break,
                Err(e) if attempt < 3 && e.port_busy => server.port = free_port(),
                Err(e) => panic!("mariadbd start failed: {}", e.message),
            }
        }
        server.sql("CREATE DATABASE test");
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The last lines of the server's error log and output, for failure messages.
    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for name in ["err.log", "out.log"] {
            let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            tail.push_str(&format!("\n--- {name}:\n"));
            tail.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        tail
    }

    /// Whether the server `pid` started answers: its pid file names it and root can query.
    fn answers(&self, pid: u32) -> bool {
        let pid_file = std::fs::read_to_string(self.path("pid")).unwrap_or_default();
        pid_file.trim() == pid.to_string()
            && std::net::TcpStream::connect_timeout(
                &(std::net::Ipv4Addr::LOCALHOST, self.port).into(),
                Duration::from_secs(1),
            )
            .is_ok()
            && try_mysql(mysql_command("127.0.0.1", self.port, "SELECT 1")).is_ok()
    }

    /// Spawns mariadbd and waits until it answers; on failure the server is gone again.
    fn try_start(&self) -> Result<(), StartFailure> {
        // kill -9 leaves the pid file behind; it must not pass for the new server's.
        let _ = std::fs::remove_file(self.path("pid"));
        // The error log grows across restarts: only this start's part tells why it failed.
        let log_start = std::fs::metadata(self.path("err.log")).map_or(0, |m| m.len() as usize);
        let failure = |message: String| {
            let log = std::fs::read(self.path("err.log")).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
            StartFailure {
                port_busy: new.contains("Bind on TCP/IP port"),
                message: format!("{message}:{}", self.log_tail()),
            }
        };
        let (out, out_too) = File::create(self.path("out.log"))
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| failure(format!("cannot create out.log: {e}")))?;
        let mut command = Command::new(mariadbd_bin());
        command.arg("--no-defaults");
        if is_root() {
            command.arg("--user=mysql");
        }
        let dir_arg =
            |option: &str, name: &str| format!("--{option}={}", self.path(name).display());
        command
            .arg(dir_arg("datadir", "data"))
            .arg(dir_arg("tmpdir", "tmp"))
            .arg(dir_arg("socket", "sock"))
            .arg(dir_arg("pid-file", "pid"))
            .arg(dir_arg("log-error", "err.log"))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
                // Commits reach the OS (survive kill -9) without an fsync each.
                "--innodb-flush-log-at-trx-commit=2",
            ])
            .args(INNODB_OPTS)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(out_too);
        let mut child = command
            .spawn()
            .map_err(|e| failure(format!("cannot run {}: {e}", mariadbd_bin().display())))?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failure(format!("mariadbd exited ({status})")));
            }
            if self.answers(child.id()) {
                *locked(&self.child) = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failure(format!(
                    "mariadbd did not answer on port {} within {START_LIMIT:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the stopped (or killed) server on the same port and data directory; returns when
    /// it answers. Retries while the port is still held.
    pub fn start_server(&self) {
        assert!(
            locked(&self.child).is_none(),
            "start_server: the private MariaDB on port {} is already running",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(e) if e.port_busy && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("mariadbd start failed: {}", e.message),
            }
        }
    }

    /// SIGKILL, as a crash: no shutdown, InnoDB recovers at the next start. Returns once the
    /// process is gone (its connections are reset). No-op when not running.
    pub fn kill9(&self) {
        if let Some(mut child) = locked(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Clean shutdown (SIGTERM); returns once the process is gone. No-op when not running.
    pub fn stop(&self) {
        let Some(mut child) = locked(&self.child).take() else {
            return;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `kill -9`, then start again; returns the instant the server answered again.
    pub fn kill9_and_restart(&self) -> Instant {
        self.kill9();
        self.start_server();
        Instant::now()
    }

    /// Clean stop, then start again; returns the instant the server answered again.
    pub fn restart(&self) -> Instant {
        self.stop();
        self.start_server();
        Instant::now()
    }

    /// Runs SQL (one or more statements) as root, no default database; panics on failure.
    pub fn sql(&self, sql: &str) -> String {
        run_mysql(mysql_command("127.0.0.1", self.port, sql))
    }

    /// A mysql connection config for database `test` as root, with small pools.
    pub fn config(&self, connection: &str) -> ConnectionConfig {
        mysql_config(connection, "127.0.0.1".into(), self.port, "test")
    }

    /// Sessions connected to `database` now.
    pub fn backends(&self, database: &str) -> i64 {
        self.sql(&backends_sql(database)).parse().unwrap_or(-1)
    }
}

/// Why a start failed, with the log tail; a taken port is worth another try.
struct StartFailure {
    port_busy: bool,
    message: String,
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill9();
    }
}
