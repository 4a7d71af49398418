//! Credentials that change while pools are open: `password_file` re-read when the file changed,
//! and [`CredentialProvider`]s (short-lived tokens such as AWS RDS IAM or Azure AD) called again
//! shortly before what they returned expires.
//!
//! One [`CredentialSource`] is made per pool opening. A backend asks it for the current
//! credentials whenever it opens a physical connection (or, where the driver keeps the options
//! itself, whenever a cheap check says they may have changed): a `stat` of the file compared with
//! the one it was read at (device, inode, size, modification and change times), or the cached
//! provider answer's refresh time. Nothing here ever formats a secret.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConnectionConfig, DatabaseType};
use crate::error::{BoxError, Error, ErrorKind, Operation, Result};

// ---------------------------------------------------------------------------------------------
// Public: providers and what they return

/// What a [`CredentialProvider`] returns: a password or a token, optionally a user name, and
/// when it expires.
///
/// Its `Debug` shows the user and the expiry, never the secret.
///
/// ```
/// use std::time::Duration;
/// use dbmanager::Credentials;
///
/// let c = Credentials::password("s3cret-Pw").with_user("app").expires_in(Duration::from_secs(900));
/// assert!(!format!("{c:?}").contains("s3cret-Pw"));
/// ```
#[derive(Clone)]
pub struct Credentials {
    user: Option<String>,
    secret: SecretString,
    token: bool,
    expires_at: Option<SystemTime>,
}

impl Credentials {
    /// A password (an AWS RDS IAM auth token is one: it is sent as the password).
    pub fn password(password: impl Into<String>) -> Self {
        Self {
            user: None,
            secret: SecretString::from(password.into()),
            token: false,
            expires_at: None,
        }
    }

    /// An access token for the server's token login: SQL Server's Azure AD (Entra ID) login
    /// (tiberius's `AuthMethod::AADToken`). PostgreSQL and MySQL have no token login and send
    /// it as the password; MongoDB refuses it (a configuration error).
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: true,
            ..Self::password(token)
        }
    }

    /// The user to log in as, instead of the connection's `user`.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// When the secret stops working: it is fetched again shortly before (a quarter of its
    /// remaining life before, at most one minute before).
    #[must_use]
    pub fn expires_at(mut self, when: SystemTime) -> Self {
        self.expires_at = Some(when);
        self
    }

    /// [`Credentials::expires_at`] `lifetime` from now (beyond what the clock can represent:
    /// never).
    #[must_use]
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_at = SystemTime::now().checked_add(lifetime);
        self
    }

    /// The user, if the provider named one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the secret is a token (see [`Credentials::token`]).
    pub fn is_token(&self) -> bool {
        self.token
    }

    /// When the secret expires, if the provider said.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field(if self.token { "token" } else { "password" }, &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a [`CredentialProvider`] is asked for: the connection and its configured address.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CredentialRequest {
    /// The connection's name.
    pub connection: String,
    /// Its backend.
    pub kind: DatabaseType,
    /// The configured `host`, if set (not read out of a `dsn`).
    pub host: Option<String>,
    /// The configured `port`, else the backend's default port, if it has one.
    pub port: Option<u16>,
    /// The configured `user`, if set.
    pub user: Option<String>,
    /// The configured `database`, if set.
    pub database: Option<String>,
}

/// Supplies a connection's credentials from code: called when a pool opens and again whenever a
/// new physical connection needs credentials and the last answer is about to expire (or was
/// refused by the server). Set one with [`crate::Manager::set_credential_provider`].
///
/// Any `Fn(CredentialRequest) -> impl Future<Output = Result<Credentials, BoxError>>` is one.
/// An error is a connect error of kind [`ErrorKind::Credentials`]; its message is shown, so it
/// must not contain the secret.
pub trait CredentialProvider: Send + Sync + 'static {
    /// Fetches credentials for `request`.
    fn credentials(
        &self,
        request: CredentialRequest,
    ) -> BoxFuture<'static, std::result::Result<Credentials, BoxError>>;
}

impl<F, Fut> CredentialProvider for F
where
    F: Fn(CredentialRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Credentials, BoxError>> + Send + 'static,
{
    fn credentials(
        &self,
        request: CredentialRequest,
    ) -> BoxFuture<'static, std::result::Result<Credentials, BoxError>> {
        Box::pin(self(request))
    }
}

// ---------------------------------------------------------------------------------------------
// Crate: the source a backend reads

/// The credentials a new physical connection logs in with.
#[derive(Clone)]
pub(crate) struct Resolved {
    /// The provider's user, else the configured one.
    pub user: Option<String>,
    /// `user` is the provider's (it then replaces a user given in a `dsn`).
    pub provided_user: bool,
    /// The secret comes from a provider.
    pub provided: bool,
    /// The password or token (read it with [`Resolved::secret`]); a driver may fill in the one
    /// libpq would find (`PGPASSWORD`, `~/.pgpass`) when none was configured.
    pub(crate) secret: Option<SecretString>,
    /// The secret is a token (SQL Server's AAD login).
    pub token: bool,
}

impl PartialEq for Resolved {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user
            && self.provided_user == other.provided_user
            && self.provided == other.provided
            && self.token == other.token
            && self.secret() == other.secret()
    }
}

impl Resolved {
    /// The password or token, if any.
    pub(crate) fn secret(&self) -> Option<&str> {
        self.secret.as_ref().map(ExposeSecret::expose_secret)
    }

    /// Only the configured `user` and `password` (tests of option builders).
    #[cfg(test)]
    pub(crate) fn from_config(c: &ConnectionConfig) -> Self {
        Self {
            user: c.user.clone(),
            provided_user: false,
            provided: false,
            secret: c.password.clone(),
            token: false,
        }
    }
}

#[cfg(test)]
impl Resolved {
    /// A provider's token for `user` (tests of option builders).
    pub(crate) fn token(user: &str, token: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            provided_user: true,
            provided: true,
            secret: Some(SecretString::from(token.to_owned())),
            token: true,
        }
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("user", &self.user)
            .field("provided_user", &self.provided_user)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .field("token", &self.token)
            .finish()
    }
}

/// How often a pool whose credentials can change checks them in the background (a `stat`, or a
/// look at the cached provider answer's refresh time).
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// A file modified this recently may be modified again within the file system's timestamp
/// granularity without its stamp changing: it is read again at the next check.
const RACY: Duration = Duration::from_secs(2);

/// A provider answer refused by the server is dropped at most this often (a wrong provider must
/// not be called on every connect attempt of a busy pool).
const INVALIDATE_AFTER: Duration = Duration::from_secs(1);

/// Where one pool's credentials come from, and what was read last.
pub(crate) struct CredentialSource {
    name: Arc<str>,
    user: Option<String>,
    fixed: Option<SecretString>,
    file: Option<PasswordFile>,
    provider: Option<ProviderState>,
    /// Bound on reading the file or calling the provider (`connect_timeout`).
    limit: Duration,
    /// What `current` resolved last, and how often that changed.
    last: Mutex<Option<Resolved>>,
    version: AtomicU64,
    /// The backend keeps the credentials inside its client (MongoDB): the connection reopens
    /// the pool when they change.
    reopen: AtomicBool,
}

struct PasswordFile {
    path: PathBuf,
    cache: Mutex<Option<FileCache>>,
}

struct FileCache {
    stamp: Stamp,
    racy: bool,
    password: SecretString,
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    unix: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            unix: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Modified so recently that another write may not change the stamp.
    fn racy(&self) -> bool {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < RACY)
    }
}

type Fetch = Shared<BoxFuture<'static, std::result::Result<Arc<Cached>, Arc<str>>>>;

struct ProviderState {
    provider: Arc<dyn CredentialProvider>,
    request: CredentialRequest,
    cache: Mutex<Option<Arc<Cached>>>,
    /// The fetch in flight, shared by every caller that needs it (one call at a time).
    inflight: Mutex<Option<Fetch>>,
}

struct Cached {
    credentials: Credentials,
    fetched: Instant,
    /// Fetch again from then on (`None`: never expires).
    refresh_at: Option<Instant>,
}

impl Cached {
    fn fresh(&self) -> bool {
        self.refresh_at.is_none_or(|at| Instant::now() < at)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CredentialSource {
    /// The source for `c`: its provider if one is set, else `password`, else `password_file`.
    pub(crate) fn new(
        name: &Arc<str>,
        c: &ConnectionConfig,
        default_port: Option<u16>,
        provider: Option<Arc<dyn CredentialProvider>>,
        limit: Duration,
    ) -> Self {
        let provider = provider.map(|provider| ProviderState {
            provider,
            request: CredentialRequest {
                connection: name.to_string(),
                kind: c.kind,
                host: c.host.clone(),
                port: c.port.or(default_port),
                user: c.user.clone(),
                database: c.database.clone(),
            },
            cache: Mutex::new(None),
            inflight: Mutex::new(None),
        });
        let file = match (&c.password, &c.password_file) {
            (None, Some(path)) => Some(PasswordFile {
                path: path.clone(),
                cache: Mutex::new(None),
            }),
            _ => None,
        };
        Self {
            name: name.clone(),
            user: c.user.clone(),
            fixed: c.password.clone(),
            file,
            provider,
            limit,
            last: Mutex::new(None),
            version: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
        }
    }

    /// Whether the credentials can change while the pool is open.
    pub(crate) fn is_dynamic(&self) -> bool {
        self.provider.is_some() || self.file.is_some()
    }

    /// Asks the connection to reopen the pool when the credentials change (for a driver that
    /// keeps them inside its client).
    // Only the MongoDB backend calls it: a build without that backend does not.
    #[allow(dead_code)]
    pub(crate) fn reopen_when_changed(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    pub(crate) fn wants_reopen(&self) -> bool {
        self.reopen.load(Ordering::Acquire) && self.is_dynamic()
    }

    /// Counts the changes of what [`Self::current`] resolved.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The credentials to log in with now, and the version they are: the provider's (fetched
    /// again when the cached answer is due), the file's (read again when its stamp changed), or
    /// the configured password.
    pub(crate) async fn current(&self) -> Result<(Resolved, u64)> {
        let resolved = if let Some(p) = &self.provider {
            let credentials = self.provided(p).await?;
            Resolved {
                user: credentials.user.clone().or_else(|| self.user.clone()),
                provided_user: credentials.user.is_some(),
                provided: true,
                secret: Some(credentials.secret.clone()),
                token: credentials.token,
            }
        } else if let Some(file) = &self.file {
            Resolved {
                user: self.user.clone(),
                provided_user: false,
                provided: false,
                secret: Some(self.read_file(file).await?),
                token: false,
            }
        } else {
            Resolved {
                user: self.user.clone(),
                provided_user: false,
                provided: false,
                secret: self.fixed.clone(),
                token: false,
            }
        };
        let mut last = lock(&self.last);
        if last.as_ref() != Some(&resolved) {
            *last = Some(resolved.clone());
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok((resolved, self.version.load(Ordering::Acquire)))
    }

    /// A cheap check whether [`Self::current`] may now resolve something new: the provider's
    /// answer is due, or the file's stamp differs from the one it was read at (or it was read
    /// right after a write).
    pub(crate) async fn may_have_changed(&self) -> bool {
        if let Some(p) = &self.provider {
            return lock(&p.cache).as_ref().is_none_or(|c| !c.fresh());
        }
        let Some(file) = &self.file else {
            return false;
        };
        let stamp = match tokio::time::timeout(self.limit, tokio::fs::metadata(&file.path)).await {
            Ok(Ok(meta)) => Stamp::of(&meta),
            // A missing file is reported by the read that follows.
            _ => return true,
        };
        lock(&file.cache)
            .as_ref()
            .is_none_or(|c| c.racy || c.stamp != stamp)
    }

    /// The server refused what was resolved: forget it, so that the next connection fetches
    /// (or reads) again. A provider answer is dropped at most once a second.
    pub(crate) fn invalidate(&self) {
        if let Some(p) = &self.provider {
            let mut cache = lock(&p.cache);
            if cache
                .as_ref()
                .is_some_and(|c| c.fetched.elapsed() >= INVALIDATE_AFTER)
            {
                *cache = None;
            }
        }
        if let Some(file) = &self.file {
            *lock(&file.cache) = None;
        }
    }

    async fn read_file(&self, file: &PasswordFile) -> Result<SecretString> {
        let problem = match tokio::time::timeout(self.limit, read_password_file(file)).await {
            Ok(Ok(password)) => return Ok(password),
            Ok(Err(problem)) => problem,
            Err(_) => format!(
                "was not read within connect_timeout ({})",
                humantime::format_duration(self.limit)
            ),
        };
        Err(Error::database(
            &self.name,
            Operation::Connect,
            ErrorKind::Configuration,
            format!(
                "password_file {}: {problem}",
                crate::dsn::shown_path(&file.path)
            ),
        ))
    }

    async fn provided(&self, p: &ProviderState) -> Result<Credentials> {
        if let Some(cached) = lock(&p.cache).as_ref().filter(|c| c.fresh()) {
            return Ok(cached.credentials.clone());
        }
        let fetch = {
            let mut inflight = lock(&p.inflight);
            match inflight.as_ref() {
                Some(fetch) => fetch.clone(),
                None => {
                    let fetch = fetch(p, self.limit).boxed().shared();
                    *inflight = Some(fetch.clone());
                    fetch
                }
            }
        };
        let outcome = fetch.clone().await;
        {
            // The first caller back clears the slot (only if it still holds this fetch).
            let mut inflight = lock(&p.inflight);
            if inflight.as_ref().is_some_and(|f| f.ptr_eq(&fetch)) {
                *inflight = None;
            }
        }
        match outcome {
            Ok(cached) => {
                let mut cache = lock(&p.cache);
                let newer = cache.as_ref().is_none_or(|c| c.fetched <= cached.fetched);
                if newer {
                    *cache = Some(cached.clone());
                }
                Ok(cached.credentials.clone())
            }
            Err(message) => Err(Error::database(
                &self.name,
                Operation::Connect,
                ErrorKind::Credentials,
                format!("credential provider failed: {message}"),
            )),
        }
    }
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSource")
            .field("name", &self.name)
            .field("provider", &self.provider.is_some())
            .field("password_file", &self.file.as_ref().map(|f| &f.path))
            .finish()
    }
}

/// Calls the provider once, within `limit`.
fn fetch(
    p: &ProviderState,
    limit: Duration,
) -> impl Future<Output = std::result::Result<Arc<Cached>, Arc<str>>> + Send + 'static {
    let (provider, request) = (p.provider.clone(), p.request.clone());
    async move {
        let fetched = Instant::now();
        // A panic (in the call or in its future) is the provider's error: it must neither
        // unwind into the checkout or watcher that asked nor poison the shared fetch, which
        // would make every later caller panic too.
        let call =
            match std::panic::catch_unwind(AssertUnwindSafe(|| provider.credentials(request))) {
                Ok(call) => AssertUnwindSafe(call).catch_unwind(),
                Err(panic) => return Err(Arc::from(crate::error::panicked(panic.as_ref()))),
            };
        let credentials = match tokio::time::timeout(limit, call).await {
            Ok(Ok(Ok(credentials))) => credentials,
            Ok(Ok(Err(e))) => return Err(Arc::from(e.to_string())),
            Ok(Err(panic)) => return Err(Arc::from(crate::error::panicked(panic.as_ref()))),
            Err(_) => {
                return Err(Arc::from(format!(
                    "no answer within connect_timeout ({})",
                    humantime::format_duration(limit)
                )));
            }
        };
        let refresh_at = credentials.expires_at.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            let early = (left / 4).min(Duration::from_secs(60));
            fetched + (left - early)
        });
        Ok(Arc::new(Cached {
            credentials,
            fetched,
            refresh_at,
        }))
    }
}

/// Reads the file if its stamp changed since the cached read (or the cached read was racy).
async fn read_password_file(file: &PasswordFile) -> std::result::Result<SecretString, String> {
    let stamp = tokio::fs::metadata(&file.path)
        .await
        .map(|m| Stamp::of(&m))
        .ok();
    if let Some(stamp) = &stamp
        && let Some(cached) = lock(&file.cache).as_ref()
        && !cached.racy
        && cached.stamp == *stamp
    {
        return Ok(cached.password.clone());
    }
    let bytes = crate::dsn::read_small_file(&file.path, crate::dsn::PASSWORD_FILE_MAX).await?;
    let password = crate::dsn::password_text(bytes)?;
    // The stamp taken before the read: a write in between changes it, so the next check reads
    // again rather than keeping an older content under a newer stamp.
    if let Some(stamp) = stamp {
        *lock(&file.cache) = Some(FileCache {
            racy: stamp.racy(),
            stamp,
            password: password.clone(),
        });
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(
        c: &ConnectionConfig,
        provider: Option<Arc<dyn CredentialProvider>>,
    ) -> CredentialSource {
        CredentialSource::new(
            &Arc::from("t"),
            c,
            Some(5432),
            provider,
            Duration::from_secs(2),
        )
    }

    #[tokio::test]
    async fn password_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.password_file = Some(file.clone());
        for (content, expected) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            ("pw", "pw"),
            ("", ""),
        ] {
            std::fs::write(&file, content).unwrap();
            let (r, _) = source(&c, None).current().await.unwrap();
            assert_eq!(r.secret(), Some(expected));
        }
        let mut both = c.clone();
        both.password = Some("given".to_owned().into());
        let (r, _) = source(&both, None).current().await.unwrap();
        assert_eq!(r.secret(), Some("given"));
        let none = ConnectionConfig::new("t", DatabaseType::Postgres);
        assert_eq!(
            source(&none, None).current().await.unwrap().0.secret(),
            None
        );
    }

    #[tokio::test]
    async fn a_rewritten_file_is_read_again_and_bumps_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "one\n").unwrap();
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.password_file = Some(file.clone());
        let s = source(&c, None);
        let (r, v1) = s.current().await.unwrap();
        assert_eq!(r.secret(), Some("one"));
        // Same length, same second: the racy-read rule still sees it.
        std::fs::write(&file, "two\n").unwrap();
        assert!(s.may_have_changed().await);
        let (r, v2) = s.current().await.unwrap();
        assert_eq!(r.secret(), Some("two"));
        assert!(v2 > v1);
        let (_, v3) = s.current().await.unwrap();
        assert_eq!(v2, v3, "unchanged content keeps the version");
        // Replaced by rename, as Kubernetes and editors do.
        let next = dir.path().join("pw.new");
        std::fs::write(&next, "three").unwrap();
        std::fs::rename(&next, &file).unwrap();
        assert_eq!(s.current().await.unwrap().0.secret(), Some("three"));
        std::fs::remove_file(&file).unwrap();
        let err = s.current().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!err.to_string().contains("three"), "{err}");
    }

    #[tokio::test]
    async fn providers_are_cached_until_shortly_before_expiry() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let provider: Arc<dyn CredentialProvider> = Arc::new(move |req: CredentialRequest| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                assert_eq!(req.port, Some(5432));
                Ok(Credentials::password(format!("Tok-{n}"))
                    .with_user("iam")
                    .expires_in(Duration::from_millis(400)))
            }
        });
        let c = ConnectionConfig::new("t", DatabaseType::Postgres);
        let s = source(&c, Some(provider));
        let (a, b) = tokio::join!(s.current(), s.current());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one call for concurrent callers"
        );
        assert_eq!(a.unwrap().0.secret(), Some("Tok-1"));
        let (r, _) = b.unwrap();
        assert_eq!(r.user.as_deref(), Some("iam"));
        assert!(!s.may_have_changed().await);
        tokio::time::sleep(Duration::from_millis(320)).await;
        assert!(
            s.may_have_changed().await,
            "due a quarter of its life early"
        );
        assert_eq!(s.current().await.unwrap().0.secret(), Some("Tok-2"));
        assert!(!format!("{r:?} {s:?}").contains("Tok-"));
    }

    #[tokio::test]
    async fn provider_errors_are_credential_errors() {
        let provider: Arc<dyn CredentialProvider> = Arc::new(|_req: CredentialRequest| async {
            Err::<Credentials, BoxError>("vault sealed".into())
        });
        let c = ConnectionConfig::new("t", DatabaseType::Postgres);
        let err = source(&c, Some(provider)).current().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        assert!(err.to_string().contains("vault sealed"), "{err}");
    }
}
