//! PostgreSQL connect options: the given `dsn` through sqlx's parser (its query parameters
//! checked first), or the structured fields set on the options directly (nothing is formatted
//! into a URL, so nothing needs escaping and no field can add to another); then the settings
//! that apply either way.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{DEFAULT_PORT, Pg};
use crate::backends::config_error;
use crate::backends::pg_common::startup_settings;
use crate::backends::sqlx::sqlx_error;
use crate::config::{ConnectionConfig, PoolSettings, Pooler, SslMode};
use crate::credentials::Resolved;
use crate::dsn::{self, Accept, Known, QuerySyntax};
use crate::error::{Operation, Result};

const SSL_MODES: Accept = Accept::OneOf(&[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
]);

/// The query parameters sqlx 0.9's PostgreSQL parser reads; it logs any other one, value
/// included, at WARN.
const DSN_PARAMETERS: &[Known] = &[
    Known {
        name: "sslmode",
        accept: SSL_MODES,
    },
    Known {
        name: "ssl-mode",
        accept: SSL_MODES,
    },
    Known {
        name: "sslrootcert",
        accept: Accept::Any,
    },
    Known {
        name: "ssl-root-cert",
        accept: Accept::Any,
    },
    Known {
        name: "ssl-ca",
        accept: Accept::Any,
    },
    Known {
        name: "sslcert",
        accept: Accept::Any,
    },
    Known {
        name: "ssl-cert",
        accept: Accept::Any,
    },
    Known {
        name: "sslkey",
        accept: Accept::Any,
    },
    Known {
        name: "ssl-key",
        accept: Accept::Any,
    },
    Known {
        name: "statement-cache-capacity",
        accept: Accept::Count,
    },
    Known {
        name: "host",
        accept: Accept::Any,
    },
    Known {
        name: "hostaddr",
        accept: Accept::IpAddr,
    },
    Known {
        name: "port",
        accept: Accept::Port,
    },
    Known {
        name: "dbname",
        accept: Accept::Any,
    },
    Known {
        name: "user",
        accept: Accept::Any,
    },
    Known {
        name: "password",
        accept: Accept::Any,
    },
    Known {
        name: "application_name",
        accept: Accept::Any,
    },
    Known {
        name: "options",
        accept: Accept::Any,
    },
    Known {
        name: "options[",
        accept: Accept::Any,
    },
    // Read here (see `servers`), removed before sqlx parses the rest.
    Known {
        name: "target_session_attrs",
        accept: Accept::OneOf(&["read-write", "any"]),
    },
];

/// The driver options a `dsn` gives (its first server), checked as at load.
pub(crate) fn dsn_options(name: &str, given: &SecretString) -> Result<PgConnectOptions> {
    dsn::check_query(name, given, QuerySyntax::Url, DSN_PARAMETERS)?;
    let url = crate::backends::pg_common::servers::first_server_url(name, given.expose_secret())?;
    PgConnectOptions::from_str(url.expose_secret())
        .map_err(|e| sqlx_error::<Pg>(name, Operation::Connect, e))
}

/// The driver options for a connection: the given `dsn`, or the structured fields; then the
/// structured settings on top; then `credentials` (the password from `password`,
/// `password_file` or a provider, and the provider's user).
pub(crate) async fn connect_options(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
    credentials: &Resolved,
) -> Result<PgConnectOptions> {
    let password = credentials
        .secret()
        .map(|pw| SecretString::from(pw.to_owned()));
    let mut options = match &c.dsn {
        Some(given) => {
            let mut options = dsn_options(name, given)?;
            if let Some(pw) = &password {
                options = options.password(pw.expose_secret());
            }
            options
        }
        None => from_fields(name, c, password.as_ref(), settings.connect_timeout).await?,
    };
    if let Some(mode) = c.sslmode {
        options = options.ssl_mode(ssl_mode(mode));
    }
    if let Some(app) = &c.application_name {
        options = options.application_name(app);
    }
    if c.pooler != Pooler::None {
        // A pooler answers the startup packet itself: PgBouncer refuses a client that sends a
        // parameter it does not track (`options`, `extra_float_digits`) unless its
        // `ignore_startup_parameters` lists it, and then drops it silently. The session
        // settings go as statements instead (`session_settings`), and the TCP keepalives are
        // the pooler's own (its `tcp_keepalive` settings).
        options = options.extra_float_digits(None);
        if c.pooler == Pooler::Transaction {
            // Named statements live on a server session that is ours for one transaction:
            // with the cache off and `persistent(false)` sqlx uses the unnamed statement.
            options = options.statement_cache_capacity(0);
        }
        return Ok(with_credentials(options, credentials));
    }
    // sqlx exposes no socket options, so the client side relies on the liveness ping and the
    // query timeout; the server-side keepalives among these let the server drop a silently
    // dead client.
    options = options.options(startup_settings(
        c.schema.as_deref(),
        settings.query_timeout,
    ));
    Ok(with_credentials(options, credentials))
}

/// `options` with `credentials`' password (an RDS IAM token is a password), and logging in as
/// the provider's user when it named one.
pub(crate) fn with_credentials(
    mut options: PgConnectOptions,
    credentials: &Resolved,
) -> PgConnectOptions {
    if let Some(user) = credentials
        .user
        .as_deref()
        .filter(|u| credentials.provided_user && !u.is_empty())
    {
        options = options.username(user);
    }
    if let Some(pw) = credentials.secret().filter(|pw| !pw.is_empty()) {
        options = options.password(pw);
    }
    options
}

/// The structured fields on sqlx's options, as its URL parser would have set them from
/// `postgres://user:password@host:port/database`: the environment's `PG*` defaults first, then
/// each field that is set; an empty user, password or database counts as unset; without a
/// password, `PGPASSWORD` and then the password file (`~/.pgpass`) apply.
async fn from_fields(
    name: &str,
    c: &ConnectionConfig,
    password: Option<&SecretString>,
    limit: Duration,
) -> Result<PgConnectOptions> {
    // The first server of a `hosts:` list stands for all (the password file is looked up for
    // it); `servers` sets each one's host and port.
    let servers = crate::hosts::servers(c, DEFAULT_PORT, "localhost")
        .map_err(|problem| config_error(name, problem))?;
    let Some(first) = servers.first() else {
        return Err(config_error(name, "hosts must list at least one server"));
    };
    // `new()` would look the password file up for the environment's host and user, before ours
    // are set, and could send that password to another server.
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&first.host)
        .port(first.port);
    if let Some(user) = c.user.as_deref().filter(|u| !u.is_empty()) {
        options = options.username(user);
    }
    if let Some(db) = c.database.as_deref().filter(|d| !d.is_empty()) {
        options = options.database(db);
    }
    match password.map(ExposeSecret::expose_secret) {
        Some(pw) if !pw.is_empty() => options = options.password(pw),
        _ => {
            let fallback = crate::backends::pg_common::pgpass::fallback(
                options.get_host(),
                options.get_port(),
                options.get_username(),
                options.get_database(),
                limit,
            );
            if let Some(pw) = fallback.await {
                options = options.password(pw.expose_secret());
            }
        }
    }
    Ok(options)
}

fn ssl_mode(mode: SslMode) -> PgSslMode {
    match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Allow => PgSslMode::Allow,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        SslMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::pg_common::session_settings;
    use crate::config::{DatabaseType, ManagerConfig};
    use crate::error::ErrorKind;

    const NASTY: &[&str] = &[
        "plain",
        "with space",
        "quote'\"s",
        "at@colon:slash/q?hash#pct%amp&eq=",
        "ünïcødé-日本",
        "back\\slash+plus",
    ];

    fn config(host: &str) -> ConnectionConfig {
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.host = Some(host.into());
        c.database = Some("d".into());
        c
    }

    async fn options_for(c: &ConnectionConfig) -> Result<PgConnectOptions> {
        let settings = ManagerConfig::default().pool_settings(c);
        connect_options("t", c, &settings, &Resolved::from_config(c)).await
    }

    #[tokio::test]
    async fn every_field_reaches_the_driver_as_written() {
        for user in NASTY {
            for database in NASTY {
                let mut c = config("db.example");
                c.port = Some(6543);
                c.user = Some((*user).into());
                c.database = Some((*database).into());
                c.password = Some("p@ss:w/rd?#%&= '\"é".to_owned().into());
                let o = options_for(&c).await.unwrap();
                assert_eq!(o.get_username(), *user);
                assert_eq!(o.get_database(), Some(*database));
                assert_eq!(o.get_host(), "db.example");
                assert_eq!(o.get_port(), 6543);
            }
        }
    }

    #[tokio::test]
    async fn ipv6_literal_hosts_reach_the_driver_without_brackets() {
        for host in ["::1", "[::1]"] {
            assert_eq!(options_for(&config(host)).await.unwrap().get_host(), "::1");
        }
    }

    #[tokio::test]
    async fn a_host_cannot_carry_a_path_a_query_or_a_port() {
        for host in [
            "127.0.0.1/template1?sslmode=disable&",
            "db:5433",
            "u:Pw-Hidden@db",
            "db ",
            "",
        ] {
            let err = options_for(&config(host)).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            let text = err.to_string();
            assert!(text.contains("host "), "{text}");
            assert!(
                !text.contains("Pw-Hidden") && !text.contains("template1"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn settings_become_startup_options() {
        let mut c = config("db");
        c.schema = Some("My \"Schema\"".into());
        c.query_timeout = Duration::from_millis(1500);
        c.application_name = Some("app".into());
        c.sslmode = Some(SslMode::VerifyFull);
        let o = options_for(&c).await.unwrap();
        let startup = o.get_options().unwrap_or_default();
        assert!(startup.contains("search_path="), "{startup}");
        assert!(startup.contains("statement_timeout=1500"), "{startup}");
        assert!(startup.contains("tcp_user_timeout=15000"), "{startup}");
        assert_eq!(o.get_application_name(), Some("app"));
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
    }

    #[tokio::test]
    async fn behind_a_pooler_the_settings_are_statements_not_startup_options() {
        let mut c = config("db");
        c.schema = Some("My \"Schema\"".into());
        c.query_timeout = Duration::from_millis(1500);
        c.application_name = Some("app".into());
        for pooler in [Pooler::Session, Pooler::Transaction] {
            c.pooler = pooler;
            let o = options_for(&c).await.unwrap();
            assert_eq!(o.get_options(), None, "{pooler}");
            // PgBouncer tracks `application_name` itself.
            assert_eq!(o.get_application_name(), Some("app"));
        }
        let settings = ManagerConfig::default().pool_settings(&c);
        assert_eq!(
            session_settings(&c, &settings, true),
            [
                "SET LOCAL search_path TO \"My \"\"Schema\"\"\"",
                "SET LOCAL statement_timeout = 1500"
            ]
        );
        assert_eq!(
            session_settings(&c, &settings, false)[1],
            "SET statement_timeout = 1500"
        );
    }

    #[tokio::test]
    async fn a_dsn_is_checked_then_parsed_by_sqlx() {
        let c = ConnectionConfig::from_dsn(
            "t",
            DatabaseType::Postgres,
            "postgres://u@h:7000/d?sslmode=require&options[search_path]=x",
        );
        let o = options_for(&c).await.unwrap();
        assert_eq!((o.get_host(), o.get_port()), ("h", 7000));
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Require));
        let c = ConnectionConfig::from_dsn(
            "t",
            DatabaseType::Postgres,
            "postgres://u@h/d?sslpassword=Val-Hidden",
        );
        let err = options_for(&c).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(!err.to_string().contains("Val-Hidden"), "{err}");
    }
}
