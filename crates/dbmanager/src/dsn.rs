//! Connection strings built from structured settings, with every component escaped, and the
//! password, read from `password_file` at every connect.
//!
//! Strings are built and then parsed by the driver's own parser, so what the driver sees is
//! exactly what a user could have written as `dsn`; the round-trip tests prove the escaping.

use std::path::Path;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

use crate::config::ConnectionConfig;
use crate::error::{Error, ErrorKind, Operation, Result};

/// The largest `password_file` read (a password, a token or a short certificate fits).
pub(crate) const PASSWORD_FILE_MAX: u64 = 64 * 1024;

/// A connect-time configuration error (`backends::config_error`, which this module cannot name
/// without a cycle).
fn configuration(name: &str, message: String) -> Error {
    Error::database(name, Operation::Connect, ErrorKind::Configuration, message)
}

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

/// The connection's password: `password` as given, or `password_file` read now (at every
/// connect attempt, so a rotated file is picked up), within `limit`. The file must be a regular
/// file of at most [`PASSWORD_FILE_MAX`] bytes of UTF-8; one trailing newline is removed. Errors
/// are configuration errors that name the path, never the content.
pub(crate) async fn password(
    name: &str,
    c: &ConnectionConfig,
    limit: Duration,
) -> Result<Option<SecretString>> {
    if let Some(pw) = &c.password {
        return Ok(Some(pw.clone()));
    }
    let Some(path) = &c.password_file else {
        return Ok(None);
    };
    let problem = match tokio::time::timeout(limit, read_small_file(path, PASSWORD_FILE_MAX)).await
    {
        Ok(Ok(bytes)) => match String::from_utf8(bytes) {
            Ok(mut text) => {
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                return Ok(Some(SecretString::from(text)));
            }
            Err(_) => "is not valid UTF-8".to_owned(),
        },
        Ok(Err(problem)) => problem,
        Err(_) => format!(
            "was not read within connect_timeout ({})",
            humantime::format_duration(limit)
        ),
    };
    Err(configuration(
        name,
        format!("password_file `{}`: {problem}", path.display()),
    ))
}

/// `O_NONBLOCK` where its value is known without `libc`: opening a FIFO that replaced the file
/// after its metadata was checked then fails instead of waiting for a writer. Elsewhere the
/// metadata check alone keeps FIFOs out.
const O_NONBLOCK: Option<i32> = if cfg!(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)) {
    Some(0o4000)
} else if cfg!(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)) {
    Some(0x0004)
} else {
    None
};

/// Reads a regular file of at most `max` bytes without blocking the runtime: its type and size
/// are checked before it is opened (a FIFO, a device or a directory is never read), checked again
/// on the opened handle, and at most `max + 1` bytes are read. The error describes the problem,
/// never the content.
pub(crate) async fn read_small_file(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;

    let describe = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        std::io::ErrorKind::PermissionDenied => "cannot be read (permission denied)".to_owned(),
        _ => format!("cannot be read: {e}"),
    };
    let check = |meta: &std::fs::Metadata| -> std::result::Result<(), String> {
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "a FIFO, socket or device"
            };
            return Err(format!("is not a regular file ({what})"));
        }
        if meta.len() > max {
            return Err(too_large(max));
        }
        Ok(())
    };
    // Follows symbolic links, as Kubernetes secret mounts use them.
    check(&tokio::fs::metadata(path).await.map_err(describe)?)?;
    let mut options = tokio::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    if let Some(flag) = O_NONBLOCK {
        options.custom_flags(flag);
    }
    let file = options.open(path).await.map_err(describe)?;
    check(&file.metadata().await.map_err(describe)?)?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(describe)?;
    if bytes.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(bytes)
}

fn too_large(max: u64) -> String {
    format!("is larger than the {} KiB limit", max / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseType;

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

    fn with_file(path: &Path) -> ConnectionConfig {
        let mut c = ConnectionConfig::new("t", DatabaseType::Postgres);
        c.password_file = Some(path.to_owned());
        c
    }

    #[tokio::test]
    async fn password_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        let limit = Duration::from_secs(2);
        for (content, expected) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            ("pw", "pw"),
            ("", ""),
        ] {
            std::fs::write(&file, content).unwrap();
            let pw = password("t", &with_file(&file), limit)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(pw.expose_secret(), expected);
        }
        let mut both = with_file(&file);
        both.password = Some("given".to_owned().into());
        let pw = password("t", &both, limit).await.unwrap().unwrap();
        assert_eq!(pw.expose_secret(), "given");
        let none = ConnectionConfig::new("t", DatabaseType::Postgres);
        assert!(password("t", &none, limit).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let max = PASSWORD_FILE_MAX;
        let at_limit = dir.path().join("at-limit");
        std::fs::write(&at_limit, vec![b'x'; max as usize]).unwrap();
        assert_eq!(
            read_small_file(&at_limit, max).await.unwrap().len(),
            max as usize
        );
        let over = dir.path().join("over");
        std::fs::write(&over, vec![b'x'; max as usize + 1]).unwrap();
        assert_eq!(
            read_small_file(&over, max).await.unwrap_err(),
            "is larger than the 64 KiB limit"
        );
        assert_eq!(
            read_small_file(dir.path(), max).await.unwrap_err(),
            "is not a regular file (a directory)"
        );
        assert_eq!(
            read_small_file(Path::new("/dev/zero"), max)
                .await
                .unwrap_err(),
            "is not a regular file (a FIFO, socket or device)"
        );
        assert_eq!(
            read_small_file(&dir.path().join("missing"), max)
                .await
                .unwrap_err(),
            "does not exist"
        );
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&at_limit, &link).unwrap();
            assert!(
                read_small_file(&link, max).await.is_ok(),
                "links are followed"
            );
        }
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
