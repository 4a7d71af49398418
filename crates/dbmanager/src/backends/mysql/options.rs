//! MySQL connect options: the given `dsn` through sqlx's parser, or the structured fields set on
//! the options directly (nothing to escape); then the settings that apply either way.
//!
//! `sslmode` maps onto sqlx's `MySqlSslMode`: `disable` → `Disabled`; `allow` and `prefer` →
//! `Preferred` (TLS when the server offers it; sqlx has no plain-first mode); `require` →
//! `Required`; `verify-ca` → `VerifyCa`; `verify-full` → `VerifyIdentity`.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

use super::{DEFAULT_PORT, My};
use crate::backends::config_error;
use crate::backends::sqlx::sqlx_error;
use crate::config::{ConnectionConfig, SslMode};
use crate::credentials::Resolved;
use crate::dsn::{self, Accept, Known, QuerySyntax};
use crate::error::{Operation, Result};

const SSL_MODES: Accept = Accept::OneOf(&[
    "DISABLED",
    "PREFERRED",
    "REQUIRED",
    "VERIFY_CA",
    "VERIFY_IDENTITY",
]);

/// The query parameters sqlx 0.9's MySQL parser reads (it ignores any other one silently, so a
/// misspelt parameter would never take effect).
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
        name: "sslca",
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
        name: "charset",
        accept: Accept::Any,
    },
    Known {
        name: "collation",
        accept: Accept::Any,
    },
    Known {
        name: "statement-cache-capacity",
        accept: Accept::Count,
    },
    Known {
        name: "socket",
        accept: Accept::Any,
    },
    Known {
        name: "timezone",
        accept: Accept::Any,
    },
    Known {
        name: "time-zone",
        accept: Accept::Any,
    },
];

/// The driver options a `dsn` gives, checked as at load: one server, known parameters.
pub(super) fn dsn_options(name: &str, url: &SecretString) -> Result<MySqlConnectOptions> {
    let options = parsed_dsn(name, url)?;
    match charset_problem(&options) {
        Some(problem) => Err(config_error(name, format!("dsn: {problem}"))),
        None => Ok(options),
    }
}

/// The driver options a `dsn` gives, before [`charset_problem`].
pub(super) fn parsed_dsn(name: &str, url: &SecretString) -> Result<MySqlConnectOptions> {
    if crate::hosts::split_dsn(url.expose_secret()).is_some() {
        return Err(config_error(
            name,
            "dsn: a list of servers in a mysql dsn is not supported; list them in `hosts`",
        ));
    }
    dsn::check_query(name, url, QuerySyntax::Url, DSN_PARAMETERS)?;
    MySqlConnectOptions::from_str(url.expose_secret())
        .map_err(|e| sqlx_error::<My>(name, Operation::Connect, e))
}

/// sqlx sends and reads text as UTF-8 whatever the session's character set: over `utf8`
/// (`utf8mb3`) every 4-byte character (emoji) read back is a silent `?` and writing one fails,
/// over `latin1` and the like text is stored double-encoded and read as `?`. Only `utf8mb4` (with
/// a `utf8mb4_...` collation) keeps text as written.
/// The message names the parameters, never their values (it is shown as it is, not through the
/// dsn-value hiding, which would garble it: `utf8` is part of `utf8mb4`).
pub(super) fn charset_problem(options: &MySqlConnectOptions) -> Option<&'static str> {
    if !options.get_charset().eq_ignore_ascii_case("utf8mb4") {
        return Some(
            "`charset` must be utf8mb4: sqlx reads and writes text as UTF-8, and another \
             connection character set turns characters it lacks (emoji in utf8/utf8mb3) into `?`",
        );
    }
    let utf8mb4_collation = options.get_collation().is_none_or(|collation| {
        collation
            .get(..8)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("utf8mb4_"))
    });
    (!utf8mb4_collation).then_some(
        "`collation` must be a utf8mb4 collation (`utf8mb4_...`), as the connection's character \
         set is utf8mb4",
    )
}

/// The driver options: the `dsn` (its query parameters checked first) or the structured fields;
/// then `credentials` (the password from `password`, `password_file` or a provider, and the
/// provider's user).
pub(super) async fn connect_options(
    name: &str,
    c: &ConnectionConfig,
    credentials: &Resolved,
) -> Result<MySqlConnectOptions> {
    let mut options = match &c.dsn {
        Some(url) => dsn_options(name, url)?,
        None => {
            // The first server of a `hosts:` list stands for all; `failover_plan` sets each
            // one's host and port.
            let servers = crate::hosts::servers(c, DEFAULT_PORT, "localhost")
                .map_err(|problem| config_error(name, problem))?;
            let Some(first) = servers.first() else {
                return Err(config_error(name, "hosts must list at least one server"));
            };
            let mut options = MySqlConnectOptions::new()
                .host(&first.host)
                .port(first.port);
            if let Some(user) = &c.user {
                options = options.username(user);
            }
            if let Some(db) = &c.database {
                options = options.database(db);
            }
            options
        }
    };
    if let Some(mode) = c.sslmode {
        options = options.ssl_mode(ssl_mode(mode));
    }
    // A provider's token (AWS RDS IAM) goes through `mysql_clear_password`, which is allowed
    // only where TLS is required, so the token never crosses the network in the clear.
    let tls_required = matches!(
        c.sslmode,
        Some(SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    );
    if credentials.provided && tls_required {
        options = options.enable_cleartext_plugin(true);
    }
    Ok(with_credentials(options, credentials))
}

/// `options` with `credentials`' password (an RDS IAM token is a password), and logging in as
/// the provider's user when it named one.
pub(super) fn with_credentials(
    mut options: MySqlConnectOptions,
    credentials: &Resolved,
) -> MySqlConnectOptions {
    if let Some(user) = credentials
        .user
        .as_deref()
        .filter(|_| credentials.provided_user)
    {
        options = options.username(user);
    }
    if let Some(pw) = credentials.secret() {
        options = options.password(pw);
    }
    options
}

fn ssl_mode(mode: SslMode) -> MySqlSslMode {
    match mode {
        SslMode::Disable => MySqlSslMode::Disabled,
        SslMode::Allow | SslMode::Prefer => MySqlSslMode::Preferred,
        SslMode::Require => MySqlSslMode::Required,
        SslMode::VerifyCa => MySqlSslMode::VerifyCa,
        SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
    }
}

/// The session's statement bound: MariaDB's `max_statement_time` (seconds, every statement),
/// MySQL's `max_execution_time` (milliseconds, `SELECT` only), each clamped to the server's
/// maximum so that a huge `query_timeout` means "no practical bound" instead of an error.
pub(super) fn statement_timeout(version: &str, limit: Duration) -> String {
    if version.to_ascii_lowercase().contains("mariadb") {
        const MAX_SECONDS: f64 = 31_536_000.0;
        let seconds = limit.as_secs_f64().min(MAX_SECONDS);
        format!("SET SESSION max_statement_time = {seconds:.6}")
    } else {
        let ms = u64::try_from(limit.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, u64::from(u32::MAX));
        format!("SET SESSION max_execution_time = {ms}")
    }
}

/// The failover plan of a connection with a `hosts:` list or `target_session_attrs`
/// (`backends/sqlx/failover.rs`): a copy of `options` per server.
pub(crate) fn failover_plan(
    name: &str,
    c: &ConnectionConfig,
    options: &MySqlConnectOptions,
) -> Result<Option<crate::backends::sqlx::failover::FailoverPlan<sqlx::MySql>>> {
    let servers = match (&c.hosts, &c.dsn) {
        (Some(_), None) => Some(
            crate::hosts::servers(c, DEFAULT_PORT, "localhost")
                .map_err(|problem| config_error(name, problem))?,
        ),
        _ => None,
    };
    let only = crate::hosts::Server {
        host: options.get_host().to_owned(),
        port: options.get_port(),
    };
    Ok(crate::backends::failover::FailoverPlan::build(
        servers,
        c.target_session_attrs,
        only,
        |server| options.clone().host(&server.host).port(server.port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseType;

    #[tokio::test]
    async fn structured_fields_reach_the_options_unescaped() {
        let mut c = ConnectionConfig::new("m", DatabaseType::Mysql);
        c.host = Some("db.example".into());
        c.port = Some(3307);
        c.user = Some("u@x".into());
        c.database = Some("a/b?c".into());
        c.password = Some("p@ss:w/rd?#%&= '\"é".to_owned().into());
        c.sslmode = Some(SslMode::VerifyFull);
        let o = connect_options("m", &c, &Resolved::from_config(&c))
            .await
            .unwrap();
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 3307);
        assert_eq!(o.get_username(), "u@x");
        assert_eq!(o.get_database(), Some("a/b?c"));
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::VerifyIdentity));
    }

    #[tokio::test]
    async fn hosts_are_plain_and_dsn_parameters_known() {
        for host in ["[::1]", "::1"] {
            let mut c = ConnectionConfig::new("m", DatabaseType::Mysql);
            c.host = Some(host.into());
            let o = connect_options("m", &c, &Resolved::from_config(&c))
                .await
                .unwrap();
            assert_eq!(o.get_host(), "::1");
        }
        for host in ["db:3307", "db/x", "u:Pw-Hidden@db"] {
            let mut c = ConnectionConfig::new("m", DatabaseType::Mysql);
            c.host = Some(host.into());
            let err = connect_options("m", &c, &Resolved::from_config(&c))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Configuration);
            assert!(!err.to_string().contains("Pw-Hidden"), "{err}");
        }
        let c = ConnectionConfig::from_dsn(
            "m",
            DatabaseType::Mysql,
            "mysql://u@h/d?ssl-mode=disabled&charset=utf8mb4",
        );
        let o = connect_options("m", &c, &Resolved::from_config(&c))
            .await
            .unwrap();
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));
        let c = ConnectionConfig::from_dsn(
            "m",
            DatabaseType::Mysql,
            "mysql://u@h/d?pasword=Val-Hidden",
        );
        let err = connect_options("m", &c, &Resolved::from_config(&c))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`pasword`"), "{err}");
        assert!(!err.to_string().contains("Val-Hidden"), "{err}");
    }

    /// A connection character set other than utf8mb4 loses 4-byte characters as `?` (sqlx
    /// reads and writes UTF-8 whatever the session's charset): refused, naming the parameter.
    #[tokio::test]
    async fn only_a_utf8mb4_connection_charset_is_accepted() {
        let options = |query: &str| {
            let c = ConnectionConfig::from_dsn(
                "m",
                DatabaseType::Mysql,
                format!("mysql://u@h/d?{query}"),
            );
            let credentials = Resolved::from_config(&c);
            async move { connect_options("m", &c, &credentials).await }
        };
        for ok in [
            "",
            "charset=utf8mb4",
            "charset=UTF8MB4",
            "charset=utf8mb4&collation=utf8mb4_unicode_ci",
        ] {
            options(ok).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, parameter) in [
            ("charset=utf8", "`charset`"),
            ("charset=utf8mb3", "`charset`"),
            ("charset=latin1", "`charset`"),
            ("collation=utf8mb3_general_ci", "`collation`"),
            ("charset=utf8mb4&collation=latin1_swedish_ci", "`collation`"),
        ] {
            let err = options(bad).await.unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Configuration, "{bad}");
            assert!(err.to_string().contains(parameter), "{bad}: {err}");
        }
    }

    #[test]
    fn statement_timeouts_follow_the_server_flavor_and_clamp() {
        assert_eq!(
            statement_timeout("10.11.6-MariaDB-0+deb12u1", Duration::from_millis(1500)),
            "SET SESSION max_statement_time = 1.500000"
        );
        assert_eq!(
            statement_timeout("8.0.36", Duration::from_millis(1500)),
            "SET SESSION max_execution_time = 1500"
        );
        assert_eq!(
            statement_timeout("8.0.36", Duration::MAX),
            "SET SESSION max_execution_time = 4294967295"
        );
        assert_eq!(
            statement_timeout("11.4.2-MariaDB", Duration::MAX),
            "SET SESSION max_statement_time = 31536000.000000"
        );
    }
}
