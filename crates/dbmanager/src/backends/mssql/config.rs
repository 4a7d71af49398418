//! tiberius options from the connection's config.

use secrecy::ExposeSecret;
use tiberius::{AuthMethod, Config, EncryptionLevel};

use super::DEFAULT_PORT;
use crate::backends::config_error;
use crate::config::{ConnectionConfig, PoolSettings, SslMode};
use crate::credentials::Resolved;
use crate::dsn;
use crate::error::Result;

/// Splits `host\instance` and checks both parts: the host as every backend's (a name or an IP
/// address, no port), the instance a non-empty name without separators or whitespace. Messages
/// never quote the value.
pub(super) fn host_and_instance(host: &str) -> std::result::Result<(&str, Option<&str>), String> {
    let (host, instance) = match host.split_once('\\') {
        Some((h, i)) => (h, Some(i)),
        None => (host, None),
    };
    let host = dsn::plain_host(host)?;
    if let Some(instance) = instance {
        if instance.is_empty() {
            return Err("has an empty instance name after `\\`".to_owned());
        }
        if let Some(c) = instance
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || "\\/?#@,:[]".contains(*c))
        {
            let what = if c.is_whitespace() || c.is_control() {
                "whitespace or a control character".to_owned()
            } else {
                format!("`{c}`")
            };
            return Err(format!("has an instance name with {what}"));
        }
    }
    Ok((host, instance))
}

/// tiberius options: the ADO.NET `dsn` through tiberius's own parser, or the structured fields
/// set directly (no string escaping involved); then the settings that apply either way; then
/// `credentials` (see [`authenticate`]).
pub(crate) async fn connect_config(
    name: &str,
    c: &ConnectionConfig,
    settings: &PoolSettings,
    credentials: &Resolved,
) -> Result<Config> {
    let mut config = match &c.dsn {
        Some(ado) => Config::from_ado_string(ado.expose_secret())
            .map_err(|e| config_error(name, format!("invalid dsn: {e}")))?,
        None => {
            let mut config = Config::new();
            let (host, instance) = host_and_instance(c.host.as_deref().unwrap_or("localhost"))
                .map_err(|problem| config_error(name, format!("host {problem}")))?;
            config.host(host);
            if let Some(instance) = instance {
                config.instance_name(instance);
            }
            if c.port.is_some() || instance.is_none() {
                config.port(c.port.unwrap_or(DEFAULT_PORT));
            }
            if let Some(db) = &c.database {
                config.database(db);
            }
            config
        }
    };
    authenticate(&mut config, credentials);
    let mode = match (&c.dsn, c.sslmode) {
        (_, Some(mode)) => Some(mode),
        (None, None) => Some(SslMode::Prefer),
        (Some(_), None) => None,
    };
    if let Some(mode) = mode {
        let (level, verify) = encryption(mode);
        config.encryption(level);
        if !verify || c.trust_server_certificate {
            config.trust_cert();
        }
    }
    if let Some(app) = &c.application_name {
        config.application_name(app);
    }
    config.command_timeout(settings.query_timeout);
    config.handshake_timeout(Some(settings.connect_timeout));
    Ok(config)
}

/// Sets the login: a token as Azure AD (Entra ID) token authentication; else, with a user, SQL
/// Server authentication with the password (empty when none is set). Without either, a `dsn`'s
/// own credentials stay.
pub(crate) fn authenticate(config: &mut Config, credentials: &Resolved) {
    match (credentials.token, credentials.secret(), &credentials.user) {
        (true, Some(token), _) => config.authentication(AuthMethod::aad_token(token)),
        (false, password, Some(user)) => {
            config.authentication(AuthMethod::sql_server(user, password.unwrap_or("")));
        }
        _ => {}
    }
}

/// `sslmode` → TDS encryption level, and whether the certificate is verified by default.
fn encryption(mode: SslMode) -> (EncryptionLevel, bool) {
    match mode {
        SslMode::Disable => (EncryptionLevel::NotSupported, false),
        // TDS "off" still encrypts the login packet; nothing to verify against.
        SslMode::Allow => (EncryptionLevel::Off, false),
        SslMode::Prefer => (EncryptionLevel::On, true),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            (EncryptionLevel::Required, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseType, ManagerConfig};
    use crate::error::ErrorKind;

    fn base() -> ConnectionConfig {
        let mut c = ConnectionConfig::new("ms", DatabaseType::Mssql);
        c.host = Some("db.example".into());
        c
    }

    async fn config_of(c: &ConnectionConfig) -> Result<Config> {
        let settings = ManagerConfig::default().pool_settings(c);
        connect_config("ms", c, &settings, &Resolved::from_config(c)).await
    }

    #[tokio::test]
    async fn named_instances_are_split_from_the_host() {
        assert_eq!(
            host_and_instance("srv\\SQLEXPRESS"),
            Ok(("srv", Some("SQLEXPRESS")))
        );
        assert_eq!(host_and_instance("srv"), Ok(("srv", None)));
        assert_eq!(host_and_instance("[::1]\\I"), Ok(("::1", Some("I"))));
        let mut c = base();
        c.host = Some("srv\\SQLEXPRESS".into());
        // No port: the SQL Server Browser (UDP 1434) resolves the instance.
        assert_eq!(config_of(&c).await.unwrap().get_addr(), "srv:1434");
    }

    #[tokio::test]
    async fn hosts_with_ports_url_syntax_or_broken_instances_are_refused() {
        for host in [
            "db:1433",
            "db,1433",
            "tcp:db",
            "db/x",
            "sa:Pw-Hidden@db",
            "db\\",
            "\\I",
            "db\\a\\b",
            "db\\in stance",
            "db\\I:1",
            "db:1\\I",
            "",
        ] {
            let mut c = base();
            c.host = Some(host.into());
            let err = config_of(&c).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration, "{host}");
            let text = err.to_string();
            assert!(text.contains("host "), "{text}");
            assert!(!text.contains("Pw-Hidden"), "{text}");
        }
    }

    #[tokio::test]
    async fn host_and_port_reach_the_config() {
        let mut c = base();
        c.port = Some(14330);
        assert_eq!(config_of(&c).await.unwrap().get_addr(), "db.example:14330");
    }

    #[tokio::test]
    async fn a_given_ado_string_is_parsed_by_tiberius() {
        let c = ConnectionConfig::from_dsn(
            "ms",
            DatabaseType::Mssql,
            "server=tcp:ado.example,1500;database=app;user id=sa;password='p;w'",
        );
        assert_eq!(config_of(&c).await.unwrap().get_addr(), "ado.example:1500");
        let bad = ConnectionConfig::from_dsn("ms", DatabaseType::Mssql, "server=tcp:x,notaport");
        let err = config_of(&bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
    }

    #[tokio::test]
    async fn a_provider_token_is_an_azure_ad_login() {
        let c = base();
        let settings = ManagerConfig::default().pool_settings(&c);
        let config = connect_config("ms", &c, &settings, &Resolved::token("u", "Tok-Hidden"))
            .await
            .unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("AADToken"), "{shown}");
        assert!(!shown.contains("Tok-Hidden"), "{shown}");
    }

    #[test]
    fn sslmode_maps_to_encryption() {
        assert!(matches!(
            encryption(SslMode::Disable),
            (EncryptionLevel::NotSupported, false)
        ));
        assert!(matches!(
            encryption(SslMode::Require),
            (EncryptionLevel::Required, true)
        ));
        assert!(matches!(
            encryption(SslMode::VerifyFull),
            (EncryptionLevel::Required, true)
        ));
    }
}
