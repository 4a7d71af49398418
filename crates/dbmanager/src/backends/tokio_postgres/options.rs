//! The tokio-postgres connect configuration of a connection: the given `dsn` through
//! tokio-postgres's own parser (its query parameters checked first), or the structured fields
//! set on the `Config` directly (nothing is formatted into a URL, so nothing needs escaping and
//! no field can add to another); then the settings that apply either way, as the sqlx driver
//! sets them.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode as WireSslMode;

use super::tls::Verify;
use crate::backends::config_error;
use crate::backends::pg_common::servers::first_server_url;
use crate::backends::pg_common::startup_settings;
use crate::config::{ConnectionConfig, PoolSettings, Pooler, SslMode};
use crate::credentials::Resolved;
use crate::dsn::{self, Accept, Known, QuerySyntax};
use crate::error::Result;
use crate::hosts::Server;

pub(crate) use crate::backends::pg_common::DEFAULT_PORT;

/// The `sslmode`s tokio-postgres's parser takes; `verify-ca` and `verify-full` are the
/// `sslmode` field's (it applies on top of a dsn).
const DSN_SSL_MODES: Accept = Accept::OneOf(&["disable", "prefer", "require"]);

/// The query parameters tokio-postgres 0.7's URL parser reads (it refuses any other one).
const DSN_PARAMETERS: &[Known] = &[
    Known {
        name: "sslmode",
        accept: DSN_SSL_MODES,
    },
    Known {
        name: "host",
        accept: Accept::Any,
    },
    Known {
        name: "hostaddr",
        accept: Accept::Any,
    },
    Known {
        name: "port",
        accept: Accept::Any,
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
        name: "connect_timeout",
        accept: Accept::Count,
    },
    // Read by the server list (`pg_common::servers`), removed before tokio-postgres parses the
    // rest: the pool, not tokio-postgres, chooses the server (`failover.rs`).
    Known {
        name: "target_session_attrs",
        accept: Accept::OneOf(&["read-write", "any"]),
    },
    Known {
        name: "channel_binding",
        accept: Accept::OneOf(&["disable", "prefer", "require"]),
    },
];

/// Everything a new physical connection is opened with, credentials aside.
#[derive(Clone)]
pub(crate) struct ConnectPlan {
    pub config: tokio_postgres::Config,
    pub verify: Verify,
}

impl std::fmt::Debug for ConnectPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres's own Debug redacts the password.
        f.debug_struct("ConnectPlan")
            .field("config", &self.config)
            .field("verify", &self.verify)
            .finish()
    }
}

/// The driver configuration a `dsn` gives (its first server, or `server`), checked as at load.
pub(crate) fn dsn_config(
    name: &str,
    given: &SecretString,
    server: Option<&Server>,
) -> Result<tokio_postgres::Config> {
    dsn::check_query(name, given, QuerySyntax::Url, DSN_PARAMETERS)?;
    let first = first_server_url(name, given.expose_secret())?;
    let url = server.and_then(|server| with_server(first.expose_secret(), server));
    let url = url.as_deref().unwrap_or(first.expose_secret());
    tokio_postgres::Config::from_str(url).map_err(|e| {
        // Its parse errors name the option, never the value.
        config_error(name, format!("dsn: {e}"))
    })
}

/// The plan for a connection: the given `dsn`, or the structured fields; then the structured
/// settings on top; then `credentials`. `server` is one server of the connection's list
/// (`hosts:` or the dsn's); without one, the dsn's first server or `host`.
pub(crate) fn connect_plan(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
    credentials: &Resolved,
    server: Option<&Server>,
) -> Result<ConnectPlan> {
    let mut config = match &c.dsn {
        Some(given) => dsn_config(name, given, server)?,
        None => from_fields(name, c, server)?,
    };
    let mode = c.sslmode.unwrap_or(match config.get_ssl_mode() {
        WireSslMode::Disable => SslMode::Disable,
        WireSslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    });
    let (wire, verify) = ssl_mode(mode);
    config.ssl_mode(wire);
    if let Some(app) = &c.application_name {
        config.application_name(app);
    }
    // Behind a pooler the settings are statements (see `pg_common::session_settings`):
    // PgBouncer refuses a client whose startup packet carries `options`.
    if c.pooler == Pooler::None {
        // sqlx's session defaults first, so that a dsn's `options` override them.
        let defaults: Vec<(&str, String)> = SQLX_SESSION_DEFAULTS
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        let mut text = options_text(None, &defaults);
        if let Some(given) = config.get_options().filter(|g| !g.is_empty()) {
            text = format!("{text} {given}");
        }
        let startup = startup_settings(c.schema.as_deref(), settings.query_timeout);
        config.options(options_text(Some(&text), &startup));
    }
    if c.dsn.is_none() || config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.connect_timeout);
    }
    // Unlike sqlx, tokio-postgres sets socket options: the client notices a silently dead
    // server in about 15 s too, not only the server a dead client.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    config.tcp_user_timeout(Duration::from_secs(15));
    with_credentials(&mut config, credentials);
    Ok(ConnectPlan { config, verify })
}

/// Sets `credentials`' password (an RDS IAM token is a password), and the provider's user when
/// it named one.
pub(crate) fn with_credentials(config: &mut tokio_postgres::Config, credentials: &Resolved) {
    if let Some(user) = credentials
        .user
        .as_deref()
        .filter(|u| credentials.provided_user && !u.is_empty())
    {
        config.user(user);
    }
    if let Some(pw) = credentials.secret().filter(|pw| !pw.is_empty()) {
        config.password(pw);
    }
}

/// The structured fields, as the sqlx driver reads them: an empty user or database counts as
/// unset; without a user, `PGUSER` and then the login name apply (tokio-postgres has no
/// default of its own). Without a password, `PGPASSWORD` and then `~/.pgpass` apply (read when
/// the pool opens, [`with_password_fallback`]).
fn from_fields(
    name: &str,
    c: &ConnectionConfig,
    server: Option<&Server>,
) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::new();
    match server {
        Some(server) => config.host(&server.host).port(server.port),
        None => {
            let host = dsn::plain_host(c.host.as_deref().unwrap_or("localhost"))
                .map_err(|problem| config_error(name, format!("host {problem}")))?;
            config.host(host).port(c.port.unwrap_or(DEFAULT_PORT))
        }
    };
    let user = c
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("PGUSER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".to_owned());
    config.user(&user);
    if let Some(db) = c.database.as_deref().filter(|d| !d.is_empty()) {
        config.dbname(db);
    }
    if let Some(pw) = c.password.as_ref().map(ExposeSecret::expose_secret) {
        config.password(pw);
    }
    Ok(config)
}

/// Without a password anywhere: libpq's (and sqlx's) fallbacks, `PGPASSWORD`, else the
/// password file's line for the plan's first server, user and database (see
/// `pg_common::pgpass`), which stands for every server of a list (as on sqlx). Set in the plan
/// and in `credentials` (a server list's candidates are built from them).
pub(crate) async fn with_password_fallback(
    plan: &mut ConnectPlan,
    credentials: &mut Resolved,
    limit: Duration,
) {
    let config = &plan.config;
    if config.get_password().is_some() {
        return;
    }
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.to_string_lossy().into_owned(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(DEFAULT_PORT);
    let found = crate::backends::pg_common::pgpass::fallback(
        &host,
        port,
        config.get_user().unwrap_or_default(),
        config.get_dbname(),
        limit,
    )
    .await;
    if let Some(pw) = found {
        plan.config.password(pw.expose_secret());
        credentials.secret = Some(pw);
    }
}

/// A URL `dsn` with its authority's server (or server list) replaced by `server`: the URL a
/// one-host parser takes for one server of the list. `None` when `dsn` is not a URL.
fn with_server(dsn: &str, server: &Server) -> Option<String> {
    let (scheme, rest) = dsn.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    Some(format!("{scheme}://{userinfo}{server}{tail}"))
}

/// libpq's `sslmode` on tokio-postgres (which knows disable, prefer and require) plus what the
/// TLS connector verifies. `allow` (plain first, TLS if the server insists) has no
/// tokio-postgres equivalent: it behaves as `prefer`.
pub(crate) fn ssl_mode(mode: SslMode) -> (WireSslMode, Verify) {
    match mode {
        SslMode::Disable => (WireSslMode::Disable, Verify::Nothing),
        SslMode::Require => (WireSslMode::Require, Verify::Nothing),
        SslMode::VerifyCa => (WireSslMode::Require, Verify::Chain),
        SslMode::VerifyFull => (WireSslMode::Require, Verify::Full),
        _ => (WireSslMode::Prefer, Verify::Nothing),
    }
}

/// The startup `options` value: the dsn's own, then `-c key=value` per setting, spaces and
/// backslashes escaped as the server splits the value (what sqlx writes too).
fn options_text(given: Option<&str>, settings: &[(&str, String)]) -> String {
    let mut text = given.unwrap_or_default().to_owned();
    for (key, value) in settings {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str("-c ");
        for ch in format!("{key}={value}").chars() {
            if matches!(ch, ' ' | '\\') {
                text.push('\\');
            }
            text.push(ch);
        }
    }
    text
}

/// What sqlx sends in every startup packet and tokio-postgres does not: tokio-postgres
/// connections set them too, so that a statement converting between `timestamptz` and
/// `timestamp`, `date` or text answers the same on both drivers whatever the server's default
/// `TimeZone` (`init_sql` and a dsn's `options` still override them).
pub(crate) const SQLX_SESSION_DEFAULTS: &[(&str, &str)] =
    &[("TimeZone", "UTC"), ("DateStyle", "ISO, MDY")];

/// [`SQLX_SESSION_DEFAULTS`] as `SET` statements (`SET LOCAL` when `local`), for a connection
/// behind a pooler, whose startup packet carries no `options`.
pub(crate) fn sqlx_session_defaults(local: bool) -> Vec<String> {
    let set = if local { "SET LOCAL" } else { "SET" };
    SQLX_SESSION_DEFAULTS
        .iter()
        .map(|(key, value)| format!("{set} {key} = '{value}'"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseType, ManagerConfig};
    use crate::error::ErrorKind;
    use tokio_postgres::config::Host;

    fn config(host: &str) -> ConnectionConfig {
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.host = Some(host.into());
        c.database = Some("d".into());
        c.user = Some("u".into());
        c
    }

    fn plan(c: &ConnectionConfig) -> Result<ConnectPlan> {
        let settings = ManagerConfig::default().pool_settings(c);
        connect_plan("t", c, &settings, &Resolved::from_config(c), None)
    }

    #[test]
    fn every_field_reaches_the_driver_as_written() {
        for value in ["with space", "quote'\"s", "at@colon:slash/q?hash#", "ünï"] {
            let mut c = config("db.example");
            c.port = Some(6543);
            c.user = Some(value.into());
            c.database = Some(value.into());
            c.password = Some("p@ss:w/rd?#%&= '\"é".to_owned().into());
            let p = plan(&c).unwrap();
            assert_eq!(p.config.get_user(), Some(value));
            assert_eq!(p.config.get_dbname(), Some(value));
            assert_eq!(p.config.get_hosts(), &[Host::Tcp("db.example".into())]);
            assert_eq!(p.config.get_ports(), &[6543]);
            assert_eq!(
                p.config.get_password(),
                Some("p@ss:w/rd?#%&= '\"é".as_bytes())
            );
        }
    }

    #[test]
    fn a_host_cannot_carry_a_path_or_a_port() {
        for host in ["db:5433", "u:Pw-Hidden@db", "h/x?sslmode=disable", ""] {
            let err = plan(&config(host)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            assert!(!err.to_string().contains("Pw-Hidden"), "{err}");
        }
    }

    #[test]
    fn settings_become_startup_options_escaped() {
        let mut c = config("db");
        c.schema = Some("My \"Schema\" x\\y".into());
        c.query_timeout = Duration::from_millis(1500);
        c.application_name = Some("app".into());
        let p = plan(&c).unwrap();
        let options = p.config.get_options().unwrap_or_default();
        // sqlx's session defaults first, then the settings.
        assert!(
            options.starts_with(
                r#"-c TimeZone=UTC -c DateStyle=ISO,\ MDY -c search_path="My\ ""Schema""\ x\\y""#
            ),
            "{options}"
        );
        assert!(options.contains("-c statement_timeout=1500"), "{options}");
        assert!(options.contains("-c tcp_user_timeout=15000"), "{options}");
        assert_eq!(p.config.get_application_name(), Some("app"));
    }

    #[test]
    fn behind_a_pooler_no_startup_options_are_sent() {
        let mut c = config("db");
        c.schema = Some("s".into());
        c.application_name = Some("app".into());
        for pooler in [Pooler::Session, Pooler::Transaction] {
            c.pooler = pooler;
            let p = plan(&c).unwrap();
            assert_eq!(p.config.get_options(), None, "{pooler}");
            // PgBouncer tracks `application_name` itself.
            assert_eq!(p.config.get_application_name(), Some("app"));
        }
    }

    #[test]
    fn sslmodes_keep_their_libpq_meaning() {
        let cases = [
            (None, WireSslMode::Prefer, Verify::Nothing),
            (
                Some(SslMode::Disable),
                WireSslMode::Disable,
                Verify::Nothing,
            ),
            (Some(SslMode::Allow), WireSslMode::Prefer, Verify::Nothing),
            (Some(SslMode::Prefer), WireSslMode::Prefer, Verify::Nothing),
            (
                Some(SslMode::Require),
                WireSslMode::Require,
                Verify::Nothing,
            ),
            (Some(SslMode::VerifyCa), WireSslMode::Require, Verify::Chain),
            (
                Some(SslMode::VerifyFull),
                WireSslMode::Require,
                Verify::Full,
            ),
        ];
        for (mode, wire, verify) in cases {
            let mut c = config("db");
            c.sslmode = mode;
            let p = plan(&c).unwrap();
            assert_eq!(p.config.get_ssl_mode(), wire, "{mode:?}");
            assert_eq!(p.verify, verify, "{mode:?}");
        }
    }

    #[test]
    fn a_dsn_is_checked_then_parsed_by_tokio_postgres() {
        let c = ConnectionConfig::from_dsn(
            "t",
            DatabaseType::Postgres,
            "postgres://u:pw@h:7000/d?sslmode=require&application_name=x",
        );
        let p = plan(&c).unwrap();
        assert_eq!(p.config.get_ports(), &[7000]);
        assert_eq!(p.config.get_dbname(), Some("d"));
        assert_eq!(p.config.get_ssl_mode(), WireSslMode::Require);
        let mut verify = c.clone();
        verify.sslmode = Some(SslMode::VerifyFull);
        assert_eq!(plan(&verify).unwrap().verify, Verify::Full);
        for bad in [
            "postgres://u@h/d?sslmode=verify-full",
            "postgres://u@h/d?sslpassword=Val-Hidden",
        ] {
            let c = ConnectionConfig::from_dsn("t", DatabaseType::Postgres, bad);
            let err = plan(&c).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            assert!(!err.to_string().contains("Val-Hidden"), "{err}");
        }
    }
    #[test]
    fn one_server_replaces_the_list() {
        let v6 = Server {
            host: "::1".into(),
            port: 5433,
        };
        assert_eq!(
            with_server("postgres://u:p@w@h1:5432,h2/db?sslmode=disable", &v6).as_deref(),
            Some("postgres://u:p@w@[::1]:5433/db?sslmode=disable")
        );
        assert_eq!(
            with_server("postgres://h1", &v6).as_deref(),
            Some("postgres://[::1]:5433")
        );
        assert_eq!(with_server("host=h1", &v6), None);
    }
}
