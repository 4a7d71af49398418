//! The backends, one folder each, behind the seam of [`crate::driver`]. Each folder's `DRIVER`
//! is listed in the registry; nothing outside this folder knows one backend from another.

#[cfg(any(
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "tokio-postgres"
))]
pub(crate) mod columns;
#[cfg(any(
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "tokio-postgres"
))]
pub(crate) mod failover;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(feature = "mongodb")]
pub(crate) mod mongodb;
#[cfg(feature = "mssql")]
pub(crate) mod mssql;
#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(any(feature = "postgres", feature = "tokio-postgres"))]
pub(crate) mod pg_common;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub(crate) mod sqlx;
#[cfg(feature = "tokio-postgres")]
pub(crate) mod tokio_postgres;

use std::time::Duration;

pub(crate) use crate::deadline::bounded;
use crate::error::{Error, ErrorKind, Operation};

/// A pooled connection used within this window is handed out without a ping (HikariCP's
/// 500 ms); one idle longer is pinged first, and a failed ping discards it.
pub(crate) const LIVENESS_WINDOW: Duration = Duration::from_millis(500);

/// A `host` the backend cannot use is a configuration problem when the configuration is loaded
/// (under `host`, with every other problem), not a failed connect later. `parse` is the
/// backend's own reading of it, the one its connect uses; its message never quotes the value.
pub(crate) fn check_host(
    c: &crate::config::ConnectionConfig,
    p: &mut crate::config::ConnectionProblems<'_>,
    parse: impl FnOnce(&str) -> std::result::Result<(), String>,
) {
    if let Some(host) = &c.host
        && let Err(problem) = parse(host)
    {
        p.push("host", problem);
    }
}

/// Without a `dsn` and without a `user`, a `password` or `password_file` would not be used as
/// written: a problem under each key that is set, saying what the server would do
/// (`consequence`).
pub(crate) fn check_password_needs_user(
    c: &crate::config::ConnectionConfig,
    p: &mut crate::config::ConnectionProblems<'_>,
    consequence: &str,
) {
    if c.dsn.is_some() || c.user.is_some() {
        return;
    }
    for (set, key) in [
        (c.password.is_some(), "password"),
        (c.password_file.is_some(), "password_file"),
    ] {
        if set {
            p.push(
                key,
                format!("set without user; {consequence} (set user, or remove {key})"),
            );
        }
    }
}

/// A `dsn` its driver cannot parse is a problem of the configuration when it is loaded, with the
/// others, not a failed connect later. `parse` is the driver's own dsn parsing (the one its
/// connect uses), whose errors never quote the dsn. Returns what `parse` gave, for checks of
/// the parsed dsn.
pub(crate) fn check_dsn<T>(
    c: &crate::config::ConnectionConfig,
    p: &mut crate::config::ConnectionProblems<'_>,
    schemes: &[&str],
    parse: impl FnOnce(&secrecy::SecretString) -> crate::error::Result<T>,
) -> Option<T> {
    use secrecy::ExposeSecret as _;
    let dsn = c.dsn.as_ref()?;
    // A dsn of another scheme is reported as that already.
    if !schemes.iter().any(|s| dsn.expose_secret().starts_with(s)) {
        return None;
    }
    match parse(dsn) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let reason =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            let reason = reason.strip_prefix("dsn: ").unwrap_or(&reason);
            // The dsn is secret as a whole, and drivers quote the part they refuse (MongoDB's
            // parser an option's value): none of its values are shown.
            p.push(
                "dsn",
                crate::dsn::without_values(reason, dsn.expose_secret()),
            );
            None
        }
    }
}

/// A connect-time configuration error.
pub(crate) fn config_error(name: &str, message: impl Into<String>) -> Error {
    Error::database(
        name,
        Operation::Connect,
        ErrorKind::Configuration,
        message.into(),
    )
}
