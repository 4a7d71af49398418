//! `dbmanager check` on a terminal draws live progress (what connected, what is retrying and
//! why) and erases it before the table; piped, its output is the plain table as before.

mod common;

use std::process::Command;

use common::write_file;

/// A healthy SQLite connection and a PostgreSQL one on a refused port, retried once after 1 s.
fn config(dir: &std::path::Path) -> String {
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_file(
        dir,
        "c.yaml",
        &format!(
            "dbmanager:
  retry_attempts: 2
  retry_delay: 1s
  connections:
    lite:
      type: sqlite
      filepath: '{}'
    pg-down:
      type: postgres
      host: 127.0.0.1
      port: {refused}
      user: app
      password: Secret-PW-progress-1
      database: app
      sslmode: disable
",
            dir.join("lite.db").display()
        ),
    )
}

#[test]
fn piped_output_is_the_plain_table_and_the_log_is_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(["check", "--config", &config(dir.path())])
        .env_remove("DBMANAGER_LOG")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stdout.contains('\x1b'),
        "escape codes in piped output: {stdout:?}"
    );
    assert!(!stdout.contains("Checking"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "borders, header and two rows: {stdout}");
    assert!(
        lines[0].starts_with('┌') && lines[5].starts_with('└'),
        "{stdout}"
    );
    assert!(
        lines[1].contains("name") && lines[1].contains("error"),
        "{stdout}"
    );
    assert!(
        lines[3].contains("lite") && lines[3].contains(" up "),
        "{stdout}"
    );
    assert!(
        lines[4].contains("pg-down") && lines[4].contains("refused"),
        "{stdout}"
    );
    // The log is unchanged too, minus colours: the retry is logged as it was.
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a piped log: {stderr:?}"
    );
    assert!(
        stderr.contains("connect attempt failed; retrying"),
        "{stderr}"
    );
    assert!(!stdout.contains("Secret-PW") && !stderr.contains("Secret-PW"));
}

#[test]
fn on_a_terminal_check_shows_progress_then_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // `script` runs the command on a pseudo-terminal and copies what it draws to stdout.
    let command = format!(
        "stty cols 160 rows 40; exec '{}' check --config '{config}'",
        env!("CARGO_BIN_EXE_dbmanager")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("DBMANAGER_LOG")
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(out.status.code(), Some(1), "{screen}");
    assert!(screen.contains("Checking 2 connections"), "{screen}");
    // Redrawn in place: the cursor moves up over the previous frame.
    assert!(screen.contains("\x1b[3A"), "{screen:?}");
    assert!(
        screen.contains("✓ lite (sqlite): connected in") || screen.contains("✓ lite (sqlite): up"),
        "{screen}"
    );
    assert!(
        screen.contains("↻ pg-down (postgres): attempt 1 of 2 failed, retrying in")
            && screen.contains("Connection refused"),
        "the retry and its reason: {screen}"
    );
    // The library's log lines do not run through the display; the table tells the outcome.
    assert!(
        !screen.contains("connect attempt failed; retrying"),
        "{screen}"
    );
    let (_, after) = screen.rsplit_once("\x1b[J").expect("the display is erased");
    let table = after.trim_start();
    assert!(
        table.starts_with('┌'),
        "the table follows the erased display: {after:?}"
    );
    assert!(!table.contains('\x1b'), "{table:?}");
    assert!(table.contains("lite") && table.contains("pg-down") && table.contains("refused"));
    assert!(!screen.contains("Secret-PW"));
}
