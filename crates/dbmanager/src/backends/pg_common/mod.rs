//! What both PostgreSQL drivers (sqlx and tokio-postgres) share: the server's lexing rules for
//! placeholder checks, the classes of its SQLSTATE codes, how settings are written into the
//! startup `options`, how a standby's replication lag is measured, the decoders of dates,
//! times and numerics, and the LISTEN/NOTIFY listener loop.

pub(crate) mod datetime;
pub(crate) mod listener;
pub(crate) mod numeric;
pub(crate) mod pgpass;
pub(crate) mod replica_lag;
pub(crate) mod servers;

use crate::config::{ConnectionConfig, ConnectionProblems};
use crate::driver::Field;
use crate::error::ErrorKind;
use crate::sql::placeholders::{Dialect, Quote, Target};

/// What a PostgreSQL `dsn` starts with, on either driver.
pub(crate) const DSN_SCHEMES: &[&str] = &["postgres://", "postgresql://"];

/// The keys both PostgreSQL drivers read, with the same meanings.
pub(crate) const FIELDS: &[Field] = &[
    Field::Host,
    Field::Hosts,
    Field::TargetSessionAttrs,
    Field::Port,
    Field::User,
    Field::Password,
    Field::PasswordFile,
    Field::Database,
    Field::Sslmode,
    Field::Schema,
    Field::InitSql,
    Field::Pooler,
    Field::Driver,
];

/// The keys required without a `dsn`.
pub(crate) const REQUIRED: &[Field] = &[Field::Host, Field::Database];

/// PostgreSQL lexing (`scan.l`), with `standard_conforming_strings` on (the default since 9.1):
/// `'...'` with `''` doubling and no backslash escapes; `E'...'` with both; `"..."`
/// identifiers; dollar-quoted strings `$$...$$` and `$tag$...$tag$`; `--` comments to the end
/// of the line (`\n` or `\r`); block comments that nest. `$` continues an identifier (`a$1`).
/// The driver reads `$n` itself: the statement is only checked, and reaches it unchanged.
pub(crate) const POSTGRES: Dialect = Dialect {
    name: "PostgreSQL",
    target: Target::Keep,
    quotes: &[
        Quote {
            open: '\'',
            close: '\'',
            doubling: true,
            backslash: false,
        },
        Quote {
            open: '"',
            close: '"',
            doubling: true,
            backslash: false,
        },
    ],
    escape_strings: true,
    dollar_quotes: true,
    dash_comment_needs_space: false,
    cr_ends_line_comment: true,
    hash_comments: false,
    nested_block_comments: true,
    executable_comments: false,
    word_start: |c| c.is_alphabetic() || c == '_' || !c.is_ascii(),
    word_continue: |c| c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii(),
    digit_words: false,
    foreign_markers: &[],
    dollar_name_suffixes: false,
};

/// PostgreSQL's default port.
pub(crate) const DEFAULT_PORT: u16 = 5432;

/// SQLSTATE classes.
pub(crate) fn classify_sqlstate(code: Option<&str>) -> ErrorKind {
    match code.unwrap_or_default() {
        // invalid_authorization_specification, invalid_password
        "28000" | "28P01" => ErrorKind::Authentication,
        // invalid_catalog_name (unknown database), insufficient_privilege on connect
        "3D000" | "42501" => ErrorKind::Configuration,
        // too_many_connections, admin/crash shutdown, cannot_connect_now, serialization
        // failure, deadlock
        "53300" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" => ErrorKind::Transient,
        // protocol_violation: the statement itself is wrong (e.g. a missing parameter).
        "08P01" => ErrorKind::Query,
        c if c.starts_with("08") => ErrorKind::Transient,
        _ => ErrorKind::Query,
    }
}

/// What PgBouncer says (always as SQLSTATE 08P01, which a PostgreSQL server uses for a
/// protocol violation: a statement's own fault) when the server behind it is gone or not
/// reachable yet, or when it is too busy: the statement may succeed on a retry.
const POOLER_TRANSIENT: [&str; 7] = [
    "server conn crashed",
    "cannot connect to server",
    "server login has been failing",
    "query_wait_timeout",
    "no more connections allowed",
    "database configuration changed",
    "shutting down",
];

/// [`classify_sqlstate`] with the server's message: PgBouncer's 08P01 errors that mean its
/// server left or is not reachable (`server conn crashed?` after a crash of the server) are
/// transient, not the statement's fault.
pub(crate) fn classify_server_error(code: Option<&str>, message: &str) -> ErrorKind {
    if code == Some("08P01") && POOLER_TRANSIENT.iter().any(|m| message.contains(m)) {
        return ErrorKind::Transient;
    }
    classify_sqlstate(code)
}

/// Whether a server error may mean the connection should look for another server of its
/// `hosts:` list: read_only_sql_transaction (the server became a standby or read-only), admin
/// or crash shutdown, cannot_connect_now (starting up, or in recovery), connection exceptions.
pub(crate) fn sqlstate_means_failover(code: &str) -> bool {
    matches!(code, "25006" | "57P01" | "57P02" | "57P03") || code.starts_with("08")
}

/// Whether a statement failed because a prepared statement the driver keeps in its
/// per-connection cache no longer matches the server: the server re-planned it after a schema
/// change and its result type changed (SQLSTATE 0A000 from `RevalidateCachedQuery`, "cached
/// plan must not change result type": a column added to a `SELECT *` table, a column's type
/// changed, a table dropped and created again with other columns), or the server session no
/// longer has it (26000, "prepared statement ... does not exist": a `DISCARD ALL` or
/// `DEALLOCATE ALL` run by the application). Either way the statement did not run (the error
/// comes at Bind) and the cache entry would fail the same way on every later use of that
/// connection: the driver's cache is cleared, and outside a transaction the statement is
/// prepared and run once more.
pub(crate) fn stale_cached_statement(code: &str, routine: Option<&str>, message: &str) -> bool {
    match code {
        // The application's own `EXECUTE` or `DEALLOCATE` of an unknown name is its error, not
        // the cache's: only a statement the driver names counts.
        "26000" => names_a_driver_statement(message),
        // 0A000 is feature_not_supported in general: only the plan cache's own check counts.
        // The routine names it whatever `lc_messages` says; the message is the fallback.
        "0A000" => {
            routine == Some("RevalidateCachedQuery")
                || message == "cached plan must not change result type"
        }
        _ => false,
    }
}

/// Whether a 26000 message ("prepared statement \"…\" does not exist") names a statement of a
/// driver's own: sqlx's `sqlx_s_<n>`, tokio-postgres's `s<n>` and its type lookups
/// (`typeinfo…`). A message without a quoted name (another `lc_messages` wording, the unnamed
/// statement) is taken to be the driver's, as before names were told apart.
fn names_a_driver_statement(message: &str) -> bool {
    let Some(name) = message.split('"').nth(1) else {
        return true;
    };
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    numbered("sqlx_s_") || numbered("s") || name.starts_with("typeinfo")
}

/// Contradictions specific to PostgreSQL: without a dsn, the password goes into the URL only with
/// a user, so a password (or password file) without one would be ignored without a word; and
/// what cannot work behind a transaction-mode pooler.
pub(crate) fn check(c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
    crate::backends::check_host(c, p, |h| crate::dsn::plain_host(h).map(drop));
    if c.pooler == crate::config::Pooler::Transaction && !c.init_sql.is_empty() {
        p.push(
            "init_sql",
            "cannot be used with `pooler: transaction`: it runs once per client connection, on whichever server session the pooler lends for it, and that session then serves other clients; set session defaults on the server (`ALTER ROLE ... SET`) or in the pooler (PgBouncer's `connect_query`), or use `pooler: session`",
        );
    }
    crate::backends::check_password_needs_user(c, p, "PostgreSQL would ignore it");
}

/// `search_path` takes identifiers: quote so that mixed case and spaces survive.
pub(crate) fn quote_identifier(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// The server settings every PostgreSQL session of a connection starts with: `search_path`
/// (`schema`), `statement_timeout` (`query_timeout`) and TCP keepalives that let the server
/// drop a silently dead client in about 15 s.
pub(crate) fn startup_settings(
    schema: Option<&str>,
    query_timeout: Option<std::time::Duration>,
) -> Vec<(&'static str, String)> {
    let mut settings: Vec<(&'static str, String)> = Vec::new();
    if let Some(schema) = schema {
        settings.push(("search_path", quote_identifier(schema)));
    }
    if let Some(timeout) = query_timeout {
        settings.push(("statement_timeout", timeout.as_millis().to_string()));
    }
    settings.extend([
        ("tcp_keepalives_idle", "5".to_owned()),
        ("tcp_keepalives_interval", "2".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
        ("tcp_user_timeout", "15000".to_owned()),
    ]);
    settings
}

/// Behind a pooler, the settings a direct connection sends in its startup packet, as `SET`
/// statements (`SET LOCAL` for one transaction when `local`): the `search_path` and the
/// server-side `statement_timeout`.
pub(crate) fn session_settings(
    c: &ConnectionConfig,
    settings: &crate::config::PoolSettings,
    local: bool,
) -> Vec<String> {
    let set = if local { "SET LOCAL" } else { "SET" };
    let mut statements = Vec::new();
    if let Some(schema) = &c.schema {
        statements.push(format!("{set} search_path TO {}", quote_identifier(schema)));
    }
    if let Some(timeout) = settings.query_timeout {
        statements.push(format!("{set} statement_timeout = {}", timeout.as_millis()));
    }
    statements
}

/// Behind a transaction-mode pooler, what each transaction of the neutral handle opens with:
/// the [`session_settings`] as `SET LOCAL`, each ending with `;` (empty when there are none).
pub(crate) fn transaction_settings(
    c: &ConnectionConfig,
    settings: &crate::config::PoolSettings,
) -> String {
    session_settings(c, settings, true)
        .into_iter()
        .map(|s| s + ";")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_classify() {
        assert_eq!(classify_sqlstate(Some("28P01")), ErrorKind::Authentication);
        assert_eq!(classify_sqlstate(Some("3D000")), ErrorKind::Configuration);
        assert_eq!(classify_sqlstate(Some("57P01")), ErrorKind::Transient);
        assert_eq!(classify_sqlstate(Some("08006")), ErrorKind::Transient);
        assert_eq!(classify_sqlstate(Some("08P01")), ErrorKind::Query);
        assert_eq!(
            classify_server_error(Some("08P01"), "server conn crashed?"),
            ErrorKind::Transient
        );
        assert_eq!(
            classify_server_error(Some("08P01"), "bind message supplies 1 parameters"),
            ErrorKind::Query
        );
        assert_eq!(
            classify_server_error(Some("42601"), "server conn crashed?"),
            ErrorKind::Query
        );
        assert_eq!(classify_sqlstate(Some("42601")), ErrorKind::Query);
        assert_eq!(classify_sqlstate(None), ErrorKind::Query);
    }

    #[test]
    fn stale_cached_statements_are_told_apart() {
        let plan = "cached plan must not change result type";
        assert!(stale_cached_statement(
            "0A000",
            Some("RevalidateCachedQuery"),
            "x"
        ));
        assert!(stale_cached_statement("0A000", None, plan));
        assert!(!stale_cached_statement(
            "0A000",
            Some("other"),
            "not supported"
        ));
        assert!(stale_cached_statement(
            "26000",
            None,
            "prepared statement does not exist"
        ));
        assert!(!stale_cached_statement("42P01", None, plan));
        let gone = |name: &str| {
            stale_cached_statement(
                "26000",
                None,
                &format!("prepared statement \"{name}\" does not exist"),
            )
        };
        for driver in ["sqlx_s_12", "s3", "typeinfo", "typeinfo_enum"] {
            assert!(gone(driver), "{driver}");
        }
        // The application's own statement names are its errors.
        for own in ["nope", "s", "sqlx_s_", "stmt1", "s1x"] {
            assert!(!gone(own), "{own}");
        }
    }
}
