//! pg_auto_failover on this machine: a monitor and two data nodes (one primary, one secondary),
//! each a private PostgreSQL on its own port, run by `pg_autoctl ... --run` as `postgres` with a
//! clean environment (its configuration and state under the set's own directory). Dropping the
//! set stops every node and the monitor, kills what is left of the `pg_autoctl` processes it
//! started (by PID), and removes the directory, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, is_root, postgres_tempdir};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The monitor and the two data nodes.
pub struct AutoFailoverSet {
    dir: tempfile::TempDir,
    pub monitor_port: u16,
    pub node_ports: [u16; 2],
    /// The `pg_autoctl create ... --run` processes: monitor, node 1, node 2.
    children: Vec<Child>,
}

/// A node's role as the monitor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only node: primary, nothing to replicate to.
    Single,
    Primary,
    Secondary,
    Other,
}

impl AutoFailoverSet {
    /// Starts the monitor, then node 1 (`single`, then the primary), then node 2 (a secondary made
    /// with `pg_basebackup`); returns when the monitor reports one primary and one secondary.
    pub fn start() -> Self {
        let dir = postgres_tempdir("dbm-autofailover-");
        let mut set = Self {
            dir,
            monitor_port: free_port(),
            node_ports: [free_port(), free_port()],
            children: Vec::new(),
        };
        let monitor = set.path("monitor");
        let port = set.monitor_port.to_string();
        set.spawn(&[
            "create",
            "monitor",
            "--pgdata",
            &monitor,
            "--pgport",
            &port,
            "--hostname",
            "127.0.0.1",
            "--auth",
            "trust",
            "--no-ssl",
            "--run",
        ]);
        // Its port first: `pg_autoctl show state` is not run before the monitor's
        // configuration exists (an early call raced its creation here once).
        set.wait_until("the monitor answers", Duration::from_secs(60), |s| {
            std::net::TcpStream::connect(("127.0.0.1", s.monitor_port)).is_ok()
                && s.log(0)
                    .contains("Monitor has been successfully initialized")
                && s.autoctl(&["show", "state", "--pgdata", &monitor]).is_ok()
        });
        set.spawn_node(0);
        set.wait_until("node 1 runs alone", Duration::from_secs(60), |s| {
            s.roles() == [Role::Single, Role::Other]
        });
        set.spawn_node(1);
        set.wait_until("node 2 is a secondary", Duration::from_secs(90), |s| {
            s.roles() == [Role::Primary, Role::Secondary]
        });
        set
    }

    fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_owned()
    }

    fn monitor_uri(&self) -> String {
        format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            self.monitor_port
        )
    }

    fn spawn_node(&mut self, index: usize) {
        let pgdata = self.path(&format!("node{}", index + 1));
        let port = self.node_ports[index].to_string();
        let monitor = self.monitor_uri();
        let name = format!("node_{}", index + 1);
        self.spawn(&[
            "create",
            "postgres",
            "--pgdata",
            &pgdata,
            "--pgport",
            &port,
            "--hostname",
            "127.0.0.1",
            "--name",
            &name,
            "--auth",
            "trust",
            "--no-ssl",
            "--monitor",
            &monitor,
            "--run",
        ]);
    }

    /// `pg_autoctl` as `postgres` (when root) with a clean environment: root's PATH entries
    /// make it log permission errors, and its configuration goes under this set's directory.
    fn command(&self, args: &[&str]) -> Command {
        let home = self.dir.path();
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c.arg("env");
            c
        } else {
            Command::new("env")
        };
        c.arg("-i")
            .arg(format!("PATH={PG_BIN}:/usr/bin:/bin"))
            .arg(format!("HOME={}", home.display()))
            .arg(format!("XDG_CONFIG_HOME={}", home.join("config").display()))
            .arg(format!("XDG_DATA_HOME={}", home.join("data").display()))
            .arg("/usr/bin/pg_autoctl")
            .args(args);
        c
    }

    fn spawn(&mut self, args: &[&str]) {
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("autoctl-{}.log", self.children.len())),
        )
        .expect("log file");
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("pg_autoctl runs");
        self.children.push(child);
    }

    fn autoctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Each node's role from `pg_autoctl show state`: a node counts as primary or secondary
    /// once its current state and the monitor's assigned state agree.
    pub fn roles(&self) -> [Role; 2] {
        let mut roles = [Role::Other, Role::Other];
        let Ok(state) = self.autoctl(&["show", "state", "--pgdata", &self.path("monitor")]) else {
            return roles;
        };
        for line in state.lines() {
            let columns: Vec<&str> = line.split('|').map(str::trim).collect();
            let [name, .., current, assigned] = columns.as_slice() else {
                continue;
            };
            let index = match *name {
                "node_1" => 0,
                "node_2" => 1,
                _ => continue,
            };
            if current == assigned {
                roles[index] = match *current {
                    "single" => Role::Single,
                    "primary" => Role::Primary,
                    "secondary" => Role::Secondary,
                    _ => Role::Other,
                };
            }
        }
        roles
    }

    /// `pg_autoctl stop` of a node: its keeper and its PostgreSQL stop (fast shutdown).
    pub fn stop_node(&self, index: usize) {
        let pgdata = self.path(&format!("node{}", index + 1));
        if let Err(e) = self.autoctl(&["stop", "--pgdata", &pgdata]) {
            panic!("pg_autoctl stop failed: {e}");
        }
    }

    /// The monitor's view, for a failure message.
    pub fn state(&self) -> String {
        self.autoctl(&["show", "state", "--pgdata", &self.path("monitor")])
            .unwrap_or_else(|e| e)
    }

    pub fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "pg_auto_failover: {what} not within {limit:?}\n{}\n{}",
                self.state(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("autoctl-{index}.log")))
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        (0..self.children.len())
            .map(|i| {
                let path: PathBuf = self.dir.path().join(format!("autoctl-{i}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {}\n{}", path.display(), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn data_dirs(&self) -> Vec<String> {
        ["node2", "node1", "monitor"]
            .iter()
            .map(|d| self.path(d))
            .filter(|d| Path::new(d).exists())
            .collect()
    }
}

impl Drop for AutoFailoverSet {
    fn drop(&mut self) {
        // Nodes before the monitor, each with a fast stop, then whatever still runs is killed.
        for pgdata in self.data_dirs() {
            let _ = self
                .command(&["stop", "--pgdata", &pgdata, "--fast"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                // `runuser` passes SIGTERM on to pg_autoctl, which then stops its PostgreSQL.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A PostgreSQL left behind by a keeper that did not stop it.
        for pgdata in self.data_dirs() {
            let _ = super::as_postgres("pg_ctl", &["-D", &pgdata, "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
