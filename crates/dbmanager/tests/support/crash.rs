//! A server crash as a machine failure looks to clients: the postmaster and every one of its
//! processes killed at once (`kill -9` of the postmaster alone leaves its backends serving their
//! sessions until they notice, and a write could still succeed there).

use std::process::Command;

use super::PrivateCluster;

impl PrivateCluster {
    /// `kill -9` of the postmaster and all its children, by PID; nothing is restarted.
    pub fn crash(&self) {
        let pid = self.postmaster_pid().to_string();
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &pid])
            .output()
            .expect("ps runs");
        let children = String::from_utf8_lossy(&children.stdout).into_owned();
        let mut pids = vec![pid];
        pids.extend(children.split_whitespace().map(str::to_owned));
        // The postmaster first: it cannot start new processes after that.
        for pid in pids {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    }
}
