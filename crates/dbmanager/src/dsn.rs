//! Connection strings built from structured settings, with every component escaped.
//!
//! Strings are built and then parsed by the driver's own parser, so what the driver sees is
//! exactly what a user could have written as `dsn`; the round-trip tests prove the escaping.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

use crate::config::ConnectionConfig;

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// `host` as it goes into a URL authority: IPv6 literals in brackets.
pub(crate) fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// `scheme://user:password@host:port/database` with each part escaped; an empty or absent
/// password leaves `user@` (an empty password must not swallow what follows).
pub(crate) fn url(
    scheme: &str,
    c: &ConnectionConfig,
    password: Option<&SecretString>,
    default_port: u16,
) -> SecretString {
    let mut out = format!("{scheme}://");
    if let Some(user) = c.user.as_deref().filter(|u| !u.is_empty()) {
        out.push_str(&encode(user));
        if let Some(pw) = password
            .map(|p| p.expose_secret())
            .filter(|p| !p.is_empty())
        {
            out.push(':');
            out.push_str(&encode(pw));
        }
        out.push('@');
    }
    out.push_str(&url_host(c.host.as_deref().unwrap_or("localhost")));
    out.push(':');
    out.push_str(&c.port.unwrap_or(default_port).to_string());
    out.push('/');
    if let Some(db) = &c.database {
        out.push_str(&encode(db));
    }
    SecretString::from(out)
}

/// Reads the password from `password`, or from `password_file` (one trailing newline removed).
pub(crate) fn resolve_password(c: &ConnectionConfig) -> std::io::Result<Option<SecretString>> {
    if let Some(pw) = &c.password {
        return Ok(Some(pw.clone()));
    }
    let Some(file) = &c.password_file else {
        return Ok(None);
    };
    let mut text = std::fs::read_to_string(file)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(SecretString::from(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(
            encode("p@ss:w/rd?#%&= "),
            "p%40ss%3Aw%2Frd%3F%23%25%26%3D%20"
        );
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("[::1]"), "[::1]");
        assert_eq!(url_host("db"), "db");
    }
}

#[cfg(all(test, feature = "postgres"))]
mod postgres_round_trip {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;

    use super::*;
    use crate::config::DatabaseType;

    const NASTY: &[&str] = &[
        "plain",
        "with space",
        "quote'\"s",
        "at@colon:slash/q?hash#pct%amp&eq=",
        "ünïcødé-日本",
        "back\\slash+plus",
    ];

    fn config(user: &str, database: &str, host: &str, port: u16) -> ConnectionConfig {
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.user = Some(user.into());
        c.database = Some(database.into());
        c.host = Some(host.into());
        c.port = Some(port);
        c
    }

    #[test]
    fn the_driver_parses_back_every_field() {
        for user in NASTY {
            for database in NASTY {
                for password in NASTY.iter().chain(&[""]) {
                    let c = config(user, database, "db.example", 6543);
                    let url = url(
                        "postgres",
                        &c,
                        Some(&SecretString::from(password.to_string())),
                        5432,
                    );
                    let parsed = PgConnectOptions::from_str(url.expose_secret()).unwrap();
                    assert_eq!(parsed.get_username(), *user);
                    assert_eq!(parsed.get_database(), Some(*database));
                    assert_eq!(parsed.get_host(), "db.example");
                    assert_eq!(parsed.get_port(), 6543);
                    let debug = format!("{parsed:?}");
                    if password.is_empty() {
                        assert!(debug.contains("password: None"), "{debug}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_empty_password_does_not_swallow_the_database() {
        let c = config("bob", "app", "h", 5432);
        let url = url(
            "postgres",
            &c,
            Some(&SecretString::from(String::new())),
            5432,
        );
        assert_eq!(url.expose_secret(), "postgres://bob@h:5432/app");
    }
}
