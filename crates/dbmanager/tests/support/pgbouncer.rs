//! A private PgBouncer (Debian's, 1.18) in front of a PostgreSQL server, for the pooler tests:
//! its ini and user list in a temp dir the `postgres` user owns, started with `pgbouncer -d`
//! on a free port, and stopped when dropped (even on panic).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{chown_to_postgres, free_port, is_root};

/// How a test's PgBouncer pools.
#[derive(Debug, Clone)]
pub struct PgBouncerConfig {
    /// `pool_mode`: `session` or `transaction`.
    pub pool_mode: &'static str,
    /// `default_pool_size`: server connections per database and user.
    pub pool_size: u32,
    /// `ignore_startup_parameters`, if any (unset, PgBouncer refuses a client sending any
    /// startup parameter it does not track).
    pub ignore_startup_parameters: Option<&'static str>,
}

impl PgBouncerConfig {
    pub fn new(pool_mode: &'static str, pool_size: u32) -> Self {
        Self {
            pool_mode,
            pool_size,
            ignore_startup_parameters: None,
        }
    }
}

/// A running PgBouncer. Clients log in with SCRAM as the users of its user list; every
/// database name is passed through to the server (`* =`), which PgBouncer logs in to with the
/// same user and password.
pub struct PgBouncer {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts one in front of `server_port` on 127.0.0.1, for `users` (name, password).
    pub fn start(server_port: u16, users: &[(&str, &str)], config: &PgBouncerConfig) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dbm-pgb-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let userlist: String = users
            .iter()
            .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        std::fs::write(dir.path().join("users.txt"), userlist).expect("write user list");
        let ignore = config
            .ignore_startup_parameters
            .map(|p| format!("ignore_startup_parameters = {p}\n"))
            .unwrap_or_default();
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {users}\n\
             pool_mode = {mode}\n\
             default_pool_size = {size}\n\
             max_client_conn = 500\n\
             {ignore}\
             logfile = {log}\n\
             pidfile = {pid}\n",
            users = path("users.txt"),
            mode = config.pool_mode,
            size = config.pool_size,
            log = path("pgb.log"),
            pid = path("pgb.pid"),
        );
        let ini_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).expect("write pgbouncer.ini");
        chown_to_postgres(dir.path());
        let bouncer = Self { port, dir };
        // Debian installs it in /usr/sbin, which a non-root PATH may lack.
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("pgbouncer");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        let out = command
            .arg("-d")
            .arg(&ini_path)
            .output()
            .expect("pgbouncer runs (Debian package `pgbouncer`)");
        assert!(
            out.status.success(),
            "pgbouncer failed to start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            bouncer.log()
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "pgbouncer did not listen on {port}: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgb.log")).unwrap_or_default()
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pgb.pid")
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Drop for PgBouncer {
    /// SIGTERM (1.18: immediate shutdown), then SIGKILL if it is still there after 5 s.
    fn drop(&mut self) {
        let Some(pid) = read_pid(&self.pid_file()) else {
            return;
        };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
