//! The one error type of the crate, and the kinds callers (and the retry loop) act on.

use std::fmt;
use std::time::Duration;

use crate::config::{ConfigProblems, DatabaseType};

/// Boxed source error of a driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: the question callers and the retry loop ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// May succeed if tried again: refused or reset connections, timeouts, server shutting down,
    /// too many connections, a pool that timed out waiting.
    Transient,
    /// The server rejected the credentials. Never retried.
    Authentication,
    /// The settings are wrong (invalid config, unknown database, TLS mismatch). Never retried.
    Configuration,
    /// The manager or the connection was closed.
    Closed,
    /// No connection by that name (or no default connection).
    NotFound,
    /// The connection exists but does not offer the requested access layer.
    Unsupported,
    /// The statement itself failed (syntax, constraint, decode). Retrying won't help.
    Query,
    /// The connection's credential provider failed or did not answer within `connect_timeout`.
    /// Retried like a transient error: a token service that is briefly unreachable is the
    /// common cause.
    Credentials,
    /// A lifecycle hook of the application ([`crate::Hooks`]) failed, panicked or timed out.
    /// Not retried by the library: the hook decides.
    Hook,
}

impl ErrorKind {
    /// Lower-case name, as used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Authentication => "authentication",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Closed => "closed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Query => "query",
            ErrorKind::Credentials => "credentials",
            ErrorKind::Hook => "hook",
        }
    }

    /// Whether a retry may help.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Credentials)
    }
}

/// The operation during which an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Loading or validating configuration.
    Configure,
    /// Establishing a connection or pool.
    Connect,
    /// Health check or ping.
    Ping,
    /// Checking a connection out of the pool.
    Acquire,
    /// Running a statement.
    Query,
    /// Starting a transaction.
    Begin,
    /// Committing a transaction.
    Commit,
    /// Rolling a transaction back.
    Rollback,
    /// Reaching an access layer (native pool, SeaORM, MongoDB).
    Access,
    /// Closing.
    Close,
    /// Listening (LISTEN/UNLISTEN on a listener's own session).
    Listen,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Configure => "configure",
            Operation::Connect => "connect",
            Operation::Ping => "ping",
            Operation::Acquire => "acquire",
            Operation::Query => "query",
            Operation::Begin => "begin",
            Operation::Commit => "commit",
            Operation::Rollback => "rollback",
            Operation::Access => "access",
            Operation::Close => "close",
            Operation::Listen => "listen",
        })
    }
}

/// Every error the crate returns.
///
/// Messages name the connection and the operation and never contain a secret: driver errors are
/// wrapped as they come (they do not echo passwords) and connection strings are never formatted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has one or more problems; all of them are listed.
    #[error("{0}")]
    Config(ConfigProblems),

    /// No connection has that name.
    #[error(
        "connection `{name}` not found; known connections: {}",
        list_or_none(known)
    )]
    NotFound {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },

    /// No default connection is configured.
    #[error(
        "no default connection is set; known connections: {}",
        list_or_none(known)
    )]
    NoDefault {
        /// The names that exist.
        known: Vec<String>,
    },

    /// The connection was removed (`remove`, a reload) or closed, or its manager was closed.
    /// The message names all three: a handle kept after a `remove` must not report a manager
    /// that is still running as closed.
    #[error(
        "connection `{connection}`: {operation}: closed (the connection was removed or closed, \
         or the manager was closed)"
    )]
    Closed {
        /// Connection name (`*` for the manager itself).
        connection: String,
        /// What was attempted.
        operation: Operation,
    },

    /// The connection is configured but not connected (never connected, or its connect failed).
    #[error("connection `{connection}`: {operation}: not connected{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Unavailable {
        /// Connection name.
        connection: String,
        /// What was attempted.
        operation: Operation,
        /// The last connect error, redacted like every error.
        last_error: Option<String>,
    },

    /// The connection is up, but this request was turned away before it reached a server: the
    /// circuit breaker is open, or a read found no usable replica under
    /// `replica_fallback: error`. Transient: it may succeed once the server answers again.
    #[error("connection `{connection}`: {operation}: refused: {reason}")]
    Refused {
        /// Connection name.
        connection: String,
        /// What was attempted.
        operation: Operation,
        /// Why, in words (no secrets: names of members and states only).
        reason: String,
    },

    /// A SQL access layer was requested from a connection that is not a SQL database.
    #[error("connection `{connection}` is {backend}, not a SQL database")]
    NotSql {
        /// Connection name.
        connection: String,
        /// Its backend.
        backend: DatabaseType,
    },

    /// MongoDB was requested from a connection that is not MongoDB.
    #[error("connection `{connection}` is {backend}, not MongoDB")]
    NotMongo {
        /// Connection name.
        connection: String,
        /// Its backend.
        backend: DatabaseType,
    },

    /// The connection's backend does not offer this access layer (or the crate feature is off).
    #[error("connection `{connection}`: {layer} is not available for {backend}: {reason}")]
    Unsupported {
        /// Connection name.
        connection: String,
        /// The layer asked for.
        layer: &'static str,
        /// Its backend.
        backend: DatabaseType,
        /// Why.
        reason: &'static str,
    },

    /// The database or driver failed.
    #[error("connection `{connection}`: {operation} failed: {}", source_text(source.as_ref()))]
    Database {
        /// Connection name.
        connection: String,
        /// What was attempted.
        operation: Operation,
        /// Classification of the driver error.
        kind: ErrorKind,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// An operation did not finish in time.
    #[error("connection `{connection}`: {operation} timed out after {}", humantime::format_duration(*after))]
    Timeout {
        /// Connection name.
        connection: String,
        /// What was attempted.
        operation: Operation,
        /// The limit that fired.
        after: Duration,
    },

    /// Connecting several connections failed; each failure is listed.
    #[error("{} connection(s) failed to connect:\n{}", failures.len(), failures.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    ConnectFailed {
        /// One error per failed connection, sorted by connection name.
        failures: Vec<Error>,
    },
}

/// The driver's error as shown. sqlx writes a PostgreSQL error as its message followed by
/// ` at line N`, where N is the line of the server's C source that raised it (postinit.c 948
/// for an unknown database), which reads like a line of the statement or of the config: that
/// suffix is left out. The error itself (the `source`) is untouched.
fn source_text(source: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    let text = source.to_string();
    let Some(sqlx::Error::Database(db)) = source.downcast_ref::<sqlx::Error>() else {
        return text;
    };
    let shown = db.to_string();
    let Some(suffix) = shown.strip_prefix(db.message()) else {
        return text;
    };
    let server_line = suffix
        .strip_prefix(" at line ")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match text.strip_suffix(suffix) {
        Some(cut) if server_line => cut.to_owned(),
        _ => text,
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

impl Error {
    /// The classification callers act on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Configuration,
            Error::NotFound { .. } | Error::NoDefault { .. } => ErrorKind::NotFound,
            Error::Closed { .. } => ErrorKind::Closed,
            Error::Unavailable { .. } | Error::Refused { .. } | Error::Timeout { .. } => {
                ErrorKind::Transient
            }
            Error::NotSql { .. } | Error::NotMongo { .. } | Error::Unsupported { .. } => {
                ErrorKind::Unsupported
            }
            Error::Database { kind, .. } => *kind,
            Error::ConnectFailed { failures } => failures
                .first()
                .map(Error::kind)
                .unwrap_or(ErrorKind::Transient),
        }
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The connection the error is about, when it is about one.
    pub fn connection(&self) -> Option<&str> {
        match self {
            Error::NotFound { name, .. } => Some(name),
            Error::Closed { connection, .. }
            | Error::Unavailable { connection, .. }
            | Error::Refused { connection, .. }
            | Error::NotSql { connection, .. }
            | Error::NotMongo { connection, .. }
            | Error::Unsupported { connection, .. }
            | Error::Database { connection, .. }
            | Error::Timeout { connection, .. } => Some(connection),
            _ => None,
        }
    }

    pub(crate) fn database(
        connection: &str,
        operation: Operation,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Database {
            connection: connection.to_owned(),
            operation,
            kind,
            source: source.into(),
        }
    }

    pub(crate) fn timeout(connection: &str, operation: Operation, after: Duration) -> Self {
        Error::Timeout {
            connection: connection.to_owned(),
            operation,
            after,
        }
    }

    pub(crate) fn closed(connection: &str, operation: Operation) -> Self {
        Error::Closed {
            connection: connection.to_owned(),
            operation,
        }
    }
}

/// A lifecycle hook's failure: which hook, and what it said.
#[derive(Debug)]
pub(crate) struct HookError {
    pub hook: &'static str,
    pub message: String,
    pub source: Option<BoxError>,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} hook failed: {}", self.hook, self.message)
    }
}

impl std::error::Error for HookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The last after-connect hook failure of a connection. A pool retries a new connection whose
/// hook failed until its acquire timeout, then reports only a timeout: a checkout that timed
/// out while a hook was failing reports the hook's error instead.
#[derive(Debug, Default)]
pub(crate) struct HookFailures {
    last: arc_swap::ArcSwapOption<(std::time::Instant, String)>,
}

impl HookFailures {
    pub(crate) fn record(&self, message: String) {
        self.last.store(Some(std::sync::Arc::new((
            std::time::Instant::now(),
            message,
        ))));
    }

    /// `error` (of an operation that started at `since`), or the hook failure behind it: a
    /// transient error (a checkout timing out) while an after-connect hook failed.
    pub(crate) fn explain(&self, error: Error, since: std::time::Instant) -> Error {
        if error.kind() != ErrorKind::Transient {
            return error;
        }
        let last = self.last.load();
        match last.as_deref() {
            Some((at, message)) if *at >= since => {
                let operation = match &error {
                    Error::Database { operation, .. }
                    | Error::Timeout { operation, .. }
                    | Error::Unavailable { operation, .. }
                    | Error::Refused { operation, .. } => *operation,
                    _ => Operation::Acquire,
                };
                let connection = error.connection().unwrap_or("*").to_owned();
                Error::Database {
                    connection,
                    operation,
                    kind: ErrorKind::Hook,
                    source: Box::new(HookError {
                        hook: "after_connect",
                        message: message.clone(),
                        source: None,
                    }),
                }
            }
            _ => error,
        }
    }
}

impl From<ConfigProblems> for Error {
    fn from(problems: ConfigProblems) -> Self {
        Error::Config(problems)
    }
}

/// "panicked: " and a panic's message: how a caught panic of application code (a hook, a
/// credential provider) is worded in its error.
pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".to_owned());
    format!("panicked: {text}")
}
