//! Credentials that rotate while pools are open, against real servers: the password changed on
//! the server and in `password_file` under load (existing sessions keep working; once the
//! server ends them, new connections log in with the new password; no restart, no reconnect),
//! credential providers (short-lived tokens refreshed before they expire, failures with their
//! own error kind, the secret never shown), and the SQL Server and MongoDB stand-ins.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbmanager::reexports::sqlx::{self, Connection as _};
use dbmanager::{
    BoxError, CredentialRequest, Credentials, Database, Error, ErrorKind, Manager, Operation,
};
use support::mysql::{MysqlTestDb, mysql_admin, mysql_quote};
use support::{PrivateCluster, fast_config, unique};

/// Tasks querying at once, and the pool they share.
const TASKS: usize = 32;
const POOL: u32 = 8;

/// 32 tasks running one statement in a loop until stopped; every failure kept.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<Error>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(db: &Database, sql: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..TASKS)
            .map(|_| {
                let (db, stop, ok, errors) = (db.clone(), stop.clone(), ok.clone(), errors.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match db.fetch_all(sql, &[]).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            errors,
            tasks,
        }
    }

    /// Waits until `more` further statements succeeded; panics after a minute.
    async fn succeed(&self, more: u64, what: &str) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let started = Instant::now();
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: only {} of {target} statements succeeded; errors: {:?}",
                self.ok.load(Ordering::Relaxed),
                self.error_texts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn error_texts(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    async fn stop(self) -> Vec<Error> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}

/// Rewrites `file` in place (same inode), as `echo new > file` does.
fn rewrite_in_place(file: &Path, content: &str) {
    std::fs::write(file, content).unwrap();
}

/// Replaces `file` by a rename (new inode), as Kubernetes secret volumes and secret agents do.
fn replace_by_rename(file: &Path, content: &str) {
    let staged = file.with_extension("new");
    std::fs::write(&staged, content).unwrap();
    std::fs::rename(&staged, file).unwrap();
}

/// The failures a terminated session can cause: at most one statement per killed session (the
/// one in flight on it, or the next one sent on it before the pool saw it close), each a
/// transient error. Anything else (an authentication error above all) is a failed rotation.
fn only_killed_sessions_failed(errors: &[Error], killed: usize) {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        errors.len() <= killed,
        "{} failures for {killed} killed sessions: {texts:#?}",
        errors.len()
    );
    for e in errors {
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    }
}

fn pids(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// On a private scram-sha-256 cluster: 32 tasks query while the role's password is changed and
/// the file rewritten; existing sessions keep working; then every session of the role is
/// terminated and the pool's new connections log in with the new password. Only the statements
/// of killed sessions fail; the manager is neither restarted nor asked to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_password_rotation_under_load() {
    let cluster = PrivateCluster::start();
    cluster.sql("CREATE ROLE rot_app LOGIN PASSWORD 'Old-Pg-Pw-1'");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    rewrite_in_place(&file, "Old-Pg-Pw-1\n");
    let mut c = cluster.config("rot", "rot_app", "unused", "postgres");
    c.password = None;
    c.password_file = Some(file.clone());
    c.max_open_conns = Some(POOL);
    c.max_idle_conns = Some(POOL);
    c.min_open_conns = Some(POOL);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("rot").unwrap();
    let load = Load::start(&manager.database("rot").unwrap(), "SELECT 1 AS one");
    load.succeed(500, "before the rotation").await;

    // The server first, then the file, rewritten in place: over a connection held open, so
    // that the two land microseconds apart (a pool connection opened in between would log in
    // with the old password and fail, as it would in production).
    let admin = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(cluster.port)
        .username(&cluster.superuser)
        .password(&cluster.password)
        .database("postgres")
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    let mut admin = sqlx::PgConnection::connect_with(&admin).await.unwrap();
    sqlx::raw_sql("ALTER ROLE rot_app PASSWORD 'New-Pg-Pw-2'")
        .execute(&mut admin)
        .await
        .unwrap();
    rewrite_in_place(&file, "New-Pg-Pw-2\n");
    load.succeed(2000, "after the rotation").await;
    assert!(
        load.error_texts().is_empty(),
        "existing sessions keep working: {:?}",
        load.error_texts()
    );
    // Give the pool's watcher a moment to see the new file (the checkouts that open
    // connections check it too; this only makes the kill below land after the rotation).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The pool has sessions to kill. Once (a full suite under heavy load) it had none at this
    // point; wait for them, and say what the pool looked like, so that a pool that lost its
    // sessions shows (its load's errors fail the assertions below in any case).
    let sessions =
        || pids(&cluster.sql("SELECT pid FROM pg_stat_activity WHERE usename = 'rot_app'"));
    if sessions().is_empty() {
        println!(
            "no rot_app session before the kill: {:?}; load errors so far: {:?}",
            conn.stats(),
            load.error_texts()
        );
        assert!(support::eventually(Duration::from_secs(10), || !sessions().is_empty()).await);
    }
    let opened_before = conn.stats().opened_total;
    let before = sessions();
    let killed: usize = cluster
        .sql(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = 'rot_app') t",
        )
        .parse()
        .unwrap();
    assert!(killed > 0, "the pool had sessions to kill");
    load.succeed(3000, "after the sessions were killed").await;
    let errors = load.stop().await;
    only_killed_sessions_failed(&errors, killed);

    let after = sessions();
    assert!(
        after.difference(&before).count() > 0,
        "new sessions logged in: before {before:?}, after {after:?}"
    );
    let stats = conn.stats();
    assert!(stats.opened_total > opened_before, "{stats:?}");
    assert_eq!(
        (stats.reconnects_ok, stats.reconnects_failed),
        (0, 0),
        "no reconnect"
    );
    // The new sessions could only have used the new password.
    let old = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(cluster.port)
        .username("rot_app")
        .database("postgres")
        .password("Old-Pg-Pw-1")
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    assert!(sqlx::PgConnection::connect_with(&old).await.is_err());
    let shown = format!("{manager:?} {conn:?} {stats:?}");
    assert!(!shown.contains("Pg-Pw"), "{shown}");
    manager.close(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------
// MariaDB

/// A dedicated user on the shared MariaDB (unique name, dropped with the test database): the
/// same rotation with `ALTER USER ... IDENTIFIED BY`, the file replaced by a rename, and
/// `KILL CONNECTION` for every session of the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_password_rotation_under_load() {
    let db = MysqlTestDb::create();
    let user = unique("dbm_rot");
    db.create_user(&user, "Old-My-Pw-1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    replace_by_rename(&file, "Old-My-Pw-1\n");
    let mut c = db.user_config("rot", &user, "unused");
    c.password = None;
    c.password_file = Some(file.clone());
    c.max_open_conns = Some(POOL);
    c.max_idle_conns = Some(POOL);
    c.min_open_conns = Some(POOL);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("rot").unwrap();
    let load = Load::start(&manager.database("rot").unwrap(), "SELECT 1 AS one");
    load.succeed(500, "before the rotation").await;

    // Over a root connection held open, so that the server and the file change microseconds
    // apart.
    let root = sqlx::mysql::MySqlConnectOptions::new()
        .host(&support::mysql::mysql_host())
        .port(support::mysql::mysql_port())
        .username("root")
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
    let mut root = sqlx::MySqlConnection::connect_with(&root).await.unwrap();
    let account = format!("{}@'%'", mysql_quote(&user));
    let alter = format!("ALTER USER {account} IDENTIFIED BY 'New-My-Pw-2'");
    sqlx::raw_sql(sqlx::AssertSqlSafe(alter))
        .execute(&mut root)
        .await
        .unwrap();
    replace_by_rename(&file, "New-My-Pw-2\n");
    load.succeed(2000, "after the rotation").await;
    assert!(
        load.error_texts().is_empty(),
        "existing sessions keep working: {:?}",
        load.error_texts()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let opened_before = conn.stats().opened_total;
    let sessions_sql = format!(
        "SELECT id FROM information_schema.processlist WHERE user = {}",
        mysql_quote(&user)
    );
    let before = pids(&mysql_admin(&sessions_sql));
    assert!(!before.is_empty(), "the pool had sessions to kill");
    let kill: String = before
        .iter()
        .map(|id| format!("KILL CONNECTION {id}; "))
        .collect();
    // A session may end between the listing and its KILL; the others are still killed.
    let _ = std::process::Command::new("mysql")
        .args([
            "--no-defaults",
            "--protocol=tcp",
            "-uroot",
            "--force",
            "-h",
            &support::mysql::mysql_host(),
            "-P",
            &support::mysql::mysql_port().to_string(),
            "-e",
            &kill,
        ])
        .output()
        .unwrap();
    load.succeed(3000, "after the sessions were killed").await;
    let errors = load.stop().await;
    only_killed_sessions_failed(&errors, before.len());

    let after = pids(&mysql_admin(&sessions_sql));
    assert!(
        after.difference(&before).count() > 0,
        "new sessions logged in: before {before:?}, after {after:?}"
    );
    let stats = conn.stats();
    assert!(stats.opened_total > opened_before, "{stats:?}");
    assert_eq!((stats.reconnects_ok, stats.reconnects_failed), (0, 0));
    let old = sqlx::mysql::MySqlConnectOptions::new()
        .host(&support::mysql::mysql_host())
        .port(support::mysql::mysql_port())
        .username(&user)
        .password("Old-My-Pw-1")
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
    assert!(sqlx::MySqlConnection::connect_with(&old).await.is_err());
    manager.close(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------
// Credential providers

/// A token service: each call issues a new token, valid for `LIFETIME`, and makes it the
/// role's only password (the cluster stands in for a server that accepts only current tokens).
struct TokenService {
    cluster: Arc<PrivateCluster>,
    calls: AtomicU64,
    fail: AtomicBool,
}

/// Long enough for the first phase to finish before the refresh point (three quarters of it)
/// on a busy machine.
const LIFETIME: Duration = Duration::from_secs(8);

impl TokenService {
    async fn issue(&self, request: CredentialRequest) -> Result<Credentials, BoxError> {
        assert_eq!(request.connection, "iam");
        assert_eq!(request.port, Some(self.cluster.port));
        if self.fail.load(Ordering::SeqCst) {
            return Err("token service unavailable".into());
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("Tok-Secret-{n}");
        let cluster = self.cluster.clone();
        let sql = format!("ALTER ROLE iam_app PASSWORD '{token}'");
        tokio::task::spawn_blocking(move || cluster.sql(&sql)).await?;
        Ok(Credentials::password(token)
            .with_user("iam_app")
            .expires_in(LIFETIME))
    }
}

/// A token with a short life is fetched again before it expires (once for all the connections
/// that need it, not once each), new connections log in with the new one, and the old one is
/// refused by the server by then; a failing provider is a connect error of its own kind; the
/// token appears in no Debug, Display, error or log line.
#[tokio::test]
async fn provider_tokens_are_refreshed_before_they_expire() {
    let capture = support::LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = Arc::new(PrivateCluster::start());
    cluster.sql("CREATE ROLE iam_app LOGIN PASSWORD 'not-a-token'");
    let service = Arc::new(TokenService {
        cluster: cluster.clone(),
        calls: AtomicU64::new(0),
        fail: AtomicBool::new(false),
    });
    // No user and no password in the config: both come from the provider.
    let mut c = cluster.config("iam", "placeholder", "unused", "postgres");
    c.user = None;
    c.password = None;
    c.max_open_conns = Some(4);
    c.max_idle_conns = Some(4);
    let mut config = fast_config().with_connection(c);
    config.retry_attempts = 1;
    let manager = Manager::new(config).unwrap();
    let issuer = service.clone();
    manager.set_credential_provider("iam", move |request: CredentialRequest| {
        let issuer = issuer.clone();
        async move { issuer.issue(request).await }
    });
    manager.connect().await.unwrap();
    let db = manager.database("iam").unwrap();
    let user = |row: dbmanager::Row| row.get::<String>("u");
    let first = db
        .fetch_one("SELECT current_user::text AS u", &[])
        .await
        .unwrap();
    assert_eq!(user(first).as_deref(), Some("iam_app"));
    // Four connections at once: one token for all of them.
    futures_util::future::try_join_all(
        (0..4).map(|_| db.fetch_all("SELECT pg_sleep(0.05)::text AS s", &[])),
    )
    .await
    .unwrap();
    assert_eq!(service.calls.load(Ordering::SeqCst), 1);

    // Past the refresh point: the next connection needs a new token (issuing it makes the
    // first one invalid, so a connection still using it would fail).
    tokio::time::sleep(LIFETIME).await;
    manager.reconnect("iam").await.unwrap();
    let rows = futures_util::future::try_join_all((0..4).map(|_| {
        db.fetch_all(
            "SELECT current_user::text AS u, pg_sleep(0.05)::text AS s",
            &[],
        )
    }))
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let calls = service.calls.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&calls),
        "refreshed about once per expiry, not per connection: {calls} calls"
    );
    let stats = manager.get("iam").unwrap().stats();
    assert!(
        stats.opened_total >= 5,
        "new connections were opened: {stats:?}"
    );

    // The provider fails, and the server stops taking the last token (it expired): new
    // connections cannot get credentials.
    service.fail.store(true, Ordering::SeqCst);
    tokio::time::sleep(LIFETIME).await;
    cluster.sql("ALTER ROLE iam_app PASSWORD 'expired'");
    manager.reconnect("iam").await.ok();
    let err = db.fetch_all("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
    assert!(
        err.to_string().contains("token service unavailable"),
        "{err}"
    );

    // A pool that cannot open: the connect error has the kind too, after one attempt (a
    // retry policy of one).
    let failing = Manager::new(
        fast_config().with_connection(cluster.config("iam", "iam_app", "unused", "postgres")),
    )
    .unwrap();
    failing.set_credential_provider("iam", |_request: CredentialRequest| async {
        Err::<Credentials, BoxError>("no token today".into())
    });
    let err = failing.connect().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
    match &err {
        Error::ConnectFailed { failures } => assert!(matches!(
            failures[0],
            Error::Database {
                operation: Operation::Connect,
                ..
            }
        )),
        other => panic!("{other:?}"),
    }

    let token = Credentials::token("Tok-Secret-x").with_user("u");
    let shown = format!(
        "{manager:?} {:?} {err} {err:?} {token:?} {stats:?} {}",
        manager.get("iam").unwrap(),
        capture.text()
    );
    assert!(!shown.contains("Tok-Secret"), "{shown}");
    manager.close(Duration::from_secs(5)).await;
    failing.close(Duration::from_secs(1)).await;
}

/// A provider that panics is a provider that failed: the panic never unwinds into the
/// application's statements (a checkout that refreshes the credentials) or into `reconnect`, it
/// is a connect error of kind `Credentials` naming the panic, and the provider is called again
/// (and works) as soon as it stops panicking: one panic does not leave the pool unable to fetch
/// credentials for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_provider_is_a_credentials_error_and_the_pool_recovers() {
    let db = support::TestDb::create();
    let mut c = db.config("panicky");
    // Every checkout opens a connection, so every statement needs credentials.
    c.max_idle_conns = Some(0);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    let panicking = Arc::new(AtomicBool::new(false));
    let (panics, answers) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (p, n, a) = (panicking.clone(), panics.clone(), answers.clone());
    manager.set_credential_provider("panicky", move |_request: CredentialRequest| {
        if p.load(Ordering::SeqCst) {
            n.fetch_add(1, Ordering::SeqCst);
            panic!("token cache corrupted");
        }
        a.fetch_add(1, Ordering::SeqCst);
        // Due again at once: every new connection asks the provider.
        async {
            Ok::<_, BoxError>(
                Credentials::password("Pw-Unused-By-Trust").expires_in(Duration::ZERO),
            )
        }
    });
    manager.connect().await.unwrap();
    let database = manager.database("panicky").unwrap();

    panicking.store(true, Ordering::SeqCst);
    // The server (trust authentication) still takes the previous options.
    let query = tokio::spawn({
        let database = database.clone();
        async move { database.fetch_one("SELECT 1 AS one", &[]).await }
    });
    let outcome = query.await;
    assert!(
        matches!(outcome, Ok(Ok(_))),
        "a statement while the provider panics: {outcome:?}"
    );
    assert!(
        support::eventually(Duration::from_secs(10), || panics.load(Ordering::SeqCst)
            > 0)
        .await
    );
    // A pool that cannot open: a connect error, not a panic.
    let failing = Manager::new(fast_config().with_connection(db.config("panicky"))).unwrap();
    failing.set_credential_provider("panicky", |_request: CredentialRequest| async {
        if true {
            panic!("token cache corrupted");
        }
        Ok::<_, BoxError>(Credentials::password("never"))
    });
    let connect = tokio::spawn({
        let failing = failing.clone();
        async move { failing.connect().await }
    })
    .await
    .expect("connect must not panic");
    let err = connect.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
    assert!(
        err.to_string()
            .contains("credential provider failed: panicked: token cache corrupted"),
        "{err}"
    );
    failing.close(Duration::from_secs(1)).await;

    panicking.store(false, Ordering::SeqCst);
    let before = answers.load(Ordering::SeqCst);
    for _ in 0..3 {
        let outcome = tokio::spawn({
            let database = database.clone();
            async move { database.fetch_one("SELECT 1 AS one", &[]).await }
        })
        .await;
        assert!(matches!(outcome, Ok(Ok(_))), "{outcome:?}");
    }
    assert!(
        answers.load(Ordering::SeqCst) > before,
        "the provider is asked again once it works"
    );
    manager.close(Duration::from_secs(1)).await;
}

/// SQL Server resolves the credentials in its pool's connect: a provider that fails after the
/// pool opened is reported as what it is, a connect error of kind `Credentials` with the
/// provider's message (as on the sqlx backends), not as an anonymous checkout timeout; and it
/// works again once the provider does.
#[tokio::test]
async fn sql_server_reports_a_failing_provider_as_a_credentials_error() {
    let mut c = support::mssql_config("mssql_provider");
    let user = c.user.take();
    c.password = None;
    // Every checkout needs a new connection, so every statement needs credentials.
    c.max_idle_conns = Some(0);
    c.connect_timeout = Duration::from_secs(2);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    manager.set_credential_provider("mssql_provider", move |_request: CredentialRequest| {
        let (failing, user) = (flag.load(Ordering::SeqCst), user.clone());
        async move {
            if failing {
                return Err::<Credentials, BoxError>("vault sealed".into());
            }
            Ok(Credentials::password(support::mssql_password())
                .with_user(user.unwrap_or_default())
                .expires_in(Duration::ZERO))
        }
    });
    manager.connect().await.unwrap();
    let db = manager.database("mssql_provider").unwrap();
    db.fetch_all("SELECT 1 AS one", &[]).await.unwrap();

    failing.store(true, Ordering::SeqCst);
    let err = db.fetch_all("SELECT 1 AS one", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
    assert!(
        err.to_string()
            .contains("credential provider failed: vault sealed"),
        "{err}"
    );
    let native = manager.get("mssql_provider").unwrap().mssql().unwrap();
    let err = native
        .acquire()
        .await
        .err()
        .expect("no credentials, no connection");
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");

    failing.store(false, Ordering::SeqCst);
    db.fetch_all("SELECT 1 AS one", &[]).await.unwrap();
    manager.close(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// The SQL Server and MongoDB stand-ins (see /work/shared/test-servers.md)

/// A stand-in server run by this file: started on a port of its own, stopped (and started
/// again, with other arguments) by the test; killed when dropped.
struct StandIn {
    program: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl StandIn {
    /// `env_key`'s program, else the one `scripts/test-servers.sh` installs under the cache.
    fn new(env_key: &str, installed: &str) -> Self {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let program = std::env::var(env_key)
            .unwrap_or_else(|_| format!("{home}/.cache/dbmanager-tools/{installed}"));
        Self {
            program,
            port: support::free_port(),
            child: None,
        }
    }

    fn start(&mut self, args: &[&str]) {
        let log = std::env::temp_dir().join(format!("dbm-rotation-{}.log", self.port));
        let log = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(&self.program)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run scripts/test-servers.sh start)",
                    self.program
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} did not listen",
                self.program
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then SIGKILL after five seconds; returns when the process is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg(child.id().to_string())
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The failures allowed while a stand-in restarts: transient ones, and only between `down`
/// and `up` plus the time a pool needs to notice.
fn only_restart_failures(errors: &[(Instant, Error)], down: Instant, up: Instant) {
    for (at, e) in errors {
        assert!(
            *at >= down && *at <= up + Duration::from_secs(15),
            "a failure outside the restart: {e}"
        );
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    }
}

/// SQL Server (Iridium SQL): the stand-in has no `ALTER LOGIN`, but its `sa` password is a
/// start-up argument, so a restart with another password is the server-side change (and ends
/// every session). Under 32 querying tasks: the file is rewritten, the server restarted with the
/// new password, and the pool's new connections log in with it (the bb8 manager reads the file
/// in `connect`); no reconnect is asked for. Then the file is made stale: a new connection is
/// refused, which shows it was read again rather than remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_server_password_file_is_read_by_each_new_connection() {
    let mut server = StandIn::new("DBMANAGER_TEST_MSSQL_BIN", "bin/iridium-server");
    server.start(&["--memory", "--no-tls", "-u", "sa", "-P", "Old-Ms-Pw-1"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    replace_by_rename(&file, "Old-Ms-Pw-1\n");
    let mut c = support::mssql_config("ms");
    c.port = Some(server.port);
    c.password = None;
    c.password_file = Some(file.clone());
    c.max_open_conns = Some(POOL);
    c.max_idle_conns = Some(POOL);
    c.connect_timeout = Duration::from_secs(10);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("ms").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (db, stop, ok, errors) = (
                manager.database("ms").unwrap(),
                stop.clone(),
                ok.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match db.fetch_all("SELECT 1 AS one", &[]).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.lock().unwrap().push((Instant::now(), e)),
                    }
                }
            })
        })
        .collect();
    let wait_ok = |more: u64| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + more;
            let started = Instant::now();
            while ok.load(Ordering::Relaxed) < target {
                assert!(started.elapsed() < Duration::from_secs(60), "no progress");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_ok(200).await;
    let opened_before = conn.stats().opened_total;

    replace_by_rename(&file, "New-Ms-Pw-2\n");
    wait_ok(200).await;
    assert!(
        errors.lock().unwrap().is_empty(),
        "existing sessions keep working"
    );
    let down = Instant::now();
    server.stop();
    server.start(&["--memory", "--no-tls", "-u", "sa", "-P", "New-Ms-Pw-2"]);
    let up = Instant::now();
    wait_ok(500).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    only_restart_failures(&errors.lock().unwrap(), down, up);
    let stats = conn.stats();
    assert!(stats.opened_total > opened_before, "{stats:?}");
    assert_eq!((stats.reconnects_ok, stats.reconnects_failed), (0, 0));

    // A stale file: the next new connection reads it and is refused.
    replace_by_rename(&file, "Stale-Ms-Pw\n");
    let pool = conn.mssql().unwrap();
    let held: Vec<_> = futures_util::future::join_all((0..POOL).map(|_| pool.acquire())).await;
    drop(held);
    manager.reconnect("ms").await.ok();
    let err = manager
        .database("ms")
        .unwrap()
        .fetch_all("SELECT 1 AS one", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Login failed"), "{err}");
    assert!(!err.to_string().contains("Ms-Pw"), "{err}");
    replace_by_rename(&file, "New-Ms-Pw-2\n");
    manager.reconnect("ms").await.unwrap();
    manager
        .database("ms")
        .unwrap()
        .fetch_all("SELECT 1 AS one", &[])
        .await
        .unwrap();
    manager.close(Duration::from_secs(5)).await;
}

/// MongoDB (SecantusDB with `--auth`): the driver keeps the credential inside its `Client`, so
/// the connection reopens when the password file changes. Under 32 tasks running commands
/// through `Connection::mongodb_database()` (fetched per command, so they follow the reopen):
/// the user's password is changed (`updateUser`) and the file rewritten; commands keep working;
/// the connection is reopened on the new password without being asked; then a server restart
/// ends every session, and the new ones log in with the new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_reopens_on_a_new_password_file() {
    use dbmanager::reexports::mongodb::{self, bson::doc};

    let storage = tempfile::tempdir().unwrap();
    let path = storage.path().to_str().unwrap().to_owned();
    let mut server = StandIn::new("DBMANAGER_TEST_MONGO_BIN", "secantus/bin/secantusd-py");
    let args = |auth: bool| {
        let mut a = vec![
            "--storage-path".to_owned(),
            path.clone(),
            "--standalone".to_owned(),
            "--log-level".to_owned(),
            "WARNING".to_owned(),
        ];
        if auth {
            a.push("--auth".to_owned());
        }
        a
    };
    let start = |server: &mut StandIn, auth: bool| {
        let a = args(auth);
        server.start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    // No localhost exception: create the user before turning authentication on.
    start(&mut server, false);
    let open = mongodb::Client::with_uri_str(format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=5000",
        server.port
    ))
    .await
    .unwrap();
    open.database("admin")
        .run_command(doc! { "createUser": "rot", "pwd": "Old-Mo-Pw-1", "roles": ["root"] })
        .await
        .unwrap();
    open.shutdown().await;
    server.stop();
    start(&mut server, true);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    replace_by_rename(&file, "Old-Mo-Pw-1\n");
    let mut c = support::mongo_config("mo", "app");
    c.port = Some(server.port);
    c.user = Some("rot".into());
    c.password = None;
    c.password_file = Some(file.clone());
    c.auth_source = Some("admin".into());
    c.max_open_conns = Some(POOL);
    c.connect_timeout = Duration::from_secs(10);
    let manager = Manager::new(fast_config().with_connection(c)).unwrap();
    manager.connect().await.unwrap();
    let conn = manager.get("mo").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (conn, stop, ok, errors) = (conn.clone(), stop.clone(), ok.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match conn.mongodb_database() {
                        Ok(db) => db
                            .run_command(doc! { "ping": 1 })
                            .await
                            .map(|_| ())
                            .map_err(|e| conn.error_kind(&e)),
                        Err(e) => Err(e.kind()),
                    };
                    match outcome {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(kind) => errors.lock().unwrap().push((Instant::now(), kind)),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let wait_ok = |more: u64| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + more;
            let started = Instant::now();
            while ok.load(Ordering::Relaxed) < target {
                assert!(started.elapsed() < Duration::from_secs(60), "no progress");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_ok(200).await;
    let before = conn.mongodb().unwrap();

    let admin = mongodb::Client::with_uri_str(format!(
        "mongodb://rot:Old-Mo-Pw-1@127.0.0.1:{}/?authSource=admin&serverSelectionTimeoutMS=5000",
        server.port
    ))
    .await
    .unwrap();
    admin
        .database("admin")
        .run_command(doc! { "updateUser": "rot", "pwd": "New-Mo-Pw-2" })
        .await
        .unwrap();
    admin.shutdown().await;
    replace_by_rename(&file, "New-Mo-Pw-2\n");
    // The connection reopens by itself on the new password: the client it handed out before
    // drains and is shut down.
    let started = Instant::now();
    loop {
        let ping = before
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await;
        if let Err(e) = ping
            && matches!(*e.kind, mongodb::error::ErrorKind::Shutdown)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the connection did not reopen on the new password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_ok(200).await;
    assert!(
        errors.lock().unwrap().is_empty(),
        "commands kept working through the reopen: {:?}",
        errors.lock().unwrap()
    );

    // Every session ends; the new ones must log in with the new password.
    let down = Instant::now();
    server.stop();
    start(&mut server, true);
    let up = Instant::now();
    wait_ok(500).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    for (at, kind) in errors.lock().unwrap().iter() {
        assert!(
            *at >= down && *at <= up + Duration::from_secs(15),
            "a failure outside the restart: {kind:?}"
        );
        assert_eq!(*kind, ErrorKind::Transient);
    }
    let stale = mongodb::Client::with_uri_str(format!(
        "mongodb://rot:Old-Mo-Pw-1@127.0.0.1:{}/?authSource=admin&serverSelectionTimeoutMS=3000",
        server.port
    ))
    .await
    .unwrap();
    assert!(
        stale
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .is_err(),
        "the old password no longer logs in"
    );
    stale.shutdown().await;
    let shown = format!("{manager:?} {conn:?}");
    assert!(!shown.contains("Mo-Pw"), "{shown}");
    manager.close(Duration::from_secs(5)).await;
}
