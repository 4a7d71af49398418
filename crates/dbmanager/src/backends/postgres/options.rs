//! PostgreSQL connect options: the given `dsn` or one built from the fields, then the
//! structured settings on top.

use std::str::FromStr;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{DEFAULT_PORT, Pg};
use crate::backends::sqlx::sqlx_error;
use crate::config::{ConnectionConfig, PoolSettings, SslMode};
use crate::dsn;
use crate::error::{Operation, Result};

/// The driver options for a connection: the given `dsn` or one built from the fields, parsed by
/// sqlx's own parser, then the structured settings applied on top. The password (or
/// `password_file`, read now) is resolved within `connect_timeout`.
pub(crate) async fn connect_options(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
) -> Result<PgConnectOptions> {
    let password = dsn::password(name, c, settings.connect_timeout).await?;
    let url = match &c.dsn {
        Some(given) => given.clone(),
        None => dsn::url("postgres", c, password.as_ref(), DEFAULT_PORT),
    };
    let mut options = PgConnectOptions::from_str(url.expose_secret())
        .map_err(|e| sqlx_error::<Pg>(name, Operation::Connect, e))?;
    if c.dsn.is_some()
        && let Some(pw) = &password
    {
        options = options.password(pw.expose_secret());
    }
    // sqlx keeps the brackets of an IPv6 literal from the URL, which the socket layer rejects.
    if c.dsn.is_none()
        && let Some(host) = c.host.as_deref().filter(|h| h.contains(':'))
    {
        options = options.host(host.trim_start_matches('[').trim_end_matches(']'));
    }
    if let Some(mode) = c.sslmode {
        options = options.ssl_mode(ssl_mode(mode));
    }
    if let Some(app) = &c.application_name {
        options = options.application_name(app);
    }
    let mut server_settings: Vec<(&str, String)> = Vec::new();
    if let Some(schema) = &c.schema {
        server_settings.push(("search_path", quote_identifier(schema)));
    }
    if let Some(timeout) = settings.query_timeout {
        server_settings.push(("statement_timeout", timeout.as_millis().to_string()));
    }
    // sqlx exposes no socket options, so the client side relies on the liveness ping and the
    // query timeout; these let the server drop a silently dead client in about 15 s.
    server_settings.extend([
        ("tcp_keepalives_idle", "5".to_owned()),
        ("tcp_keepalives_interval", "2".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
        ("tcp_user_timeout", "15000".to_owned()),
    ]);
    if !server_settings.is_empty() {
        options = options.options(server_settings);
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

/// `search_path` takes identifiers: quote so that mixed case and spaces survive.
fn quote_identifier(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseType, ManagerConfig};

    #[tokio::test]
    async fn ipv6_literal_hosts_reach_the_driver_without_brackets() {
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.host = Some("::1".into());
        c.database = Some("d".into());
        let settings = ManagerConfig::default().pool_settings(&c);
        let options = connect_options("t", &c, &settings).await.unwrap();
        assert_eq!(options.get_host(), "::1");
    }
}
