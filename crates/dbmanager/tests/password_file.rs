//! `password_file` is read at every connect, asynchronously, within `connect_timeout`: only a
//! regular file of at most 64 KiB; anything else is a configuration error that names the path
//! and never the content. A rotated file is used by the next connect. (Load-time validation
//! checks the file too; these tests change it after the config is loaded, as a rotation or a
//! mistake can, so the connect-time read is what they exercise.)

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dbmanager::{ConnectPolicy, ConnectionConfig, DatabaseType, Error, ErrorKind, Manager};
use support::{PrivateCluster, fast_config};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A PostgreSQL connection to a port nothing listens on, with its password in `file`: a
/// configuration error about the file is the only way to fail other than a refused connect.
fn config_with_file(file: &Path) -> ConnectionConfig {
    let mut c = ConnectionConfig::new("pwf", DatabaseType::Postgres);
    c.host = Some("127.0.0.1".into());
    c.port = Some(support::free_port());
    c.user = Some("u".into());
    c.database = Some("d".into());
    c.password_file = Some(file.to_owned());
    c.connect_timeout = CONNECT_TIMEOUT;
    c
}

/// Loads a config whose `password_file` is a small regular file (so load-time validation
/// passes), then lets `spoil` replace it, as a rotation or a mistake can between load and
/// connect. Connects in a task of its own (so a blocking read cannot stall the test's timer)
/// and returns the error, which must come within the connect timeout and be a configuration
/// error naming `file` after one attempt.
async fn rejected(file: &Path, spoil: impl FnOnce(&Path)) -> Error {
    std::fs::write(file, "valid-at-load\n").unwrap();
    let mut config = fast_config().with_connection(config_with_file(file));
    config.retry_attempts = 3;
    let manager = Manager::new(config).unwrap();
    spoil(file);
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let report = manager.connect_with(ConnectPolicy::Partial).await;
        manager.close(Duration::from_secs(1)).await;
        report
    });
    let report = match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(3), task).await {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => {
            // Let a reader blocked on a FIFO go (before the FIFO's directory is removed), so the
            // runtime can shut down.
            let path = file.to_owned();
            let (done, opened) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(std::fs::OpenOptions::new().write(true).open(path));
                let _ = done.send(());
            });
            let _ = opened.recv_timeout(Duration::from_secs(2));
            panic!("connect hung on password_file `{}`", file.display());
        }
    };
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        report.attempts["pwf"], 1,
        "configuration errors are not retried"
    );
    let (_, err) = report.failed.into_iter().next().expect("connect failed");
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let text = err.to_string();
    assert!(text.contains("password_file"), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    err
}

fn replace_with(make: impl FnOnce(&Path)) -> impl FnOnce(&Path) {
    move |file: &Path| {
        std::fs::remove_file(file).unwrap();
        make(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_is_refused_within_the_connect_timeout_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let fifo = replace_with(|file| {
        let status = Command::new("mkfifo").arg(file).status().unwrap();
        assert!(status.success());
    });
    let err = rejected(&file, fifo).await;
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_refused_not_read_forever() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let device = replace_with(|file| std::os::unix::fs::symlink("/dev/zero", file).unwrap());
    let err = rejected(&file, device).await;
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let directory = replace_with(|file| std::fs::create_dir(file).unwrap());
    let err = rejected(&file, directory).await;
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_64_kib_is_refused_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    let marker = "Big-File-Secret-7Kp";
    let content = marker.repeat(100 * 1024 / marker.len() + 1);
    assert!(content.len() >= 100 * 1024);
    let err = rejected(&file, |file| std::fs::write(file, &content).unwrap()).await;
    let text = format!("{err} {err:?}");
    assert!(text.contains("64 KiB"), "{text}");
    assert!(!text.contains(marker), "{text}");

    // Exactly at the limit is fine: the connect fails only because nothing listens.
    std::fs::write(&file, "x".repeat(64 * 1024)).unwrap();
    let manager = Manager::new(fast_config().with_connection(config_with_file(&file))).unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    assert_eq!(
        report.failed[0].1.kind(),
        ErrorKind::Transient,
        "{}",
        report.failed[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_missing_files_are_refused_without_quoting_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1");
    let latin1 = |file: &Path| std::fs::write(file, b"Latin1-Secret-\xe9\xff").unwrap();
    let err = rejected(&file, latin1).await;
    assert!(!format!("{err} {err:?}").contains("Latin1-Secret"), "{err}");

    // Removed after the config was loaded.
    let gone = dir.path().join("gone");
    let err = rejected(&gone, |file| std::fs::remove_file(file).unwrap()).await;
    assert!(err.to_string().contains("does not exist"), "{err}");
}

async fn current_user(manager: &Manager) -> Option<String> {
    manager
        .database("rot")
        .unwrap()
        .fetch_one("SELECT current_user::text AS u", &[])
        .await
        .unwrap()
        .get::<String>("u")
}

/// The file is read at every connect: rotate it and the server's password, and the next connect
/// (after a close) logs in with the new one.
#[tokio::test]
async fn a_rotated_password_file_is_used_by_the_next_connect() {
    let cluster = PrivateCluster::start();
    cluster.sql("CREATE ROLE rotating LOGIN PASSWORD 'first-Pw-1'");
    cluster.sql("CREATE DATABASE rot OWNER rotating");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "first-Pw-1\n").unwrap();
    let mut c = cluster.config("rot", "rotating", "unused", "rot");
    c.password = None;
    c.password_file = Some(file.clone());
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    assert_eq!(current_user(&manager).await.as_deref(), Some("rotating"));
    manager.close(Duration::from_secs(5)).await;

    // Rotate: the server first, then the file (as a secret manager would), atomically.
    cluster.sql("ALTER ROLE rotating PASSWORD 'second-Pw-2'");
    let staged = dir.path().join("pw.new");
    std::fs::write(&staged, "second-Pw-2\n").unwrap();
    std::fs::rename(&staged, &file).unwrap();

    manager.connect().await.unwrap();
    assert_eq!(current_user(&manager).await.as_deref(), Some("rotating"));
    manager.close(Duration::from_secs(5)).await;

    // And a file that now holds a stale password is an authentication error, not a silent reuse
    // of the one read earlier.
    std::fs::write(&file, "first-Pw-1\n").unwrap();
    let report = manager.connect_with(ConnectPolicy::Partial).await.unwrap();
    let (_, err) = &report.failed[0];
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(!err.to_string().contains("first-Pw-1"), "{err}");
}
