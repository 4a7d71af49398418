//! libpq's password file (`PGPASSFILE`, then `~/.pgpass`), read by both PostgreSQL drivers
//! for a connection configured without a password.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::dsn;

/// The first matching line of libpq's password file (`PGPASSFILE`, then `~/.pgpass`), as sqlx
/// looks it up for a URL without a password. A file others can read is ignored, as libpq does.
/// Nothing of the file's content is ever logged.
pub(crate) async fn lookup(
    host: &str,
    port: u16,
    user: &str,
    database: Option<&str>,
) -> Option<SecretString> {
    /// A password file larger than this is not read.
    const PGPASS_MAX: u64 = 1024 * 1024;
    let custom = std::env::var_os("PGPASSFILE").map(PathBuf::from);
    let home = std::env::home_dir().map(|home| home.join(".pgpass"));
    for path in custom.into_iter().chain(home) {
        if !private(&path).await {
            continue;
        }
        let text = match dsn::read_small_file(&path, PGPASS_MAX).await {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => SecretString::from(text),
                Err(_) => continue,
            },
            Err(problem) => {
                tracing::debug!(path = %path.display(), %problem, "password file not used");
                continue;
            }
        };
        let port = port.to_string();
        let wanted = [host, port.as_str(), database.unwrap_or_default(), user];
        if let Some(pw) = text
            .expose_secret()
            .lines()
            .find_map(|line| pgpass_line(line, &wanted))
        {
            return Some(SecretString::from(pw));
        }
    }
    None
}

/// The password libpq would use for a connection that has none: `PGPASSWORD`, else the
/// password file's first matching line (looked up within `limit`).
pub(crate) async fn fallback(
    host: &str,
    port: u16,
    user: &str,
    database: Option<&str>,
    limit: std::time::Duration,
) -> Option<SecretString> {
    // An empty one counts as unset, as in libpq.
    if let Ok(pw) = std::env::var("PGPASSWORD")
        && !pw.is_empty()
    {
        return Some(SecretString::from(pw));
    }
    tokio::time::timeout(limit, lookup(host, port, user, database))
        .await
        .ok()
        .flatten()
}

/// Whether only the owner may read `path` (libpq ignores the file otherwise).
async fn private(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match tokio::fs::metadata(path).await {
            Ok(meta) if meta.permissions().mode() & 0o077 == 0 => true,
            Ok(_) => {
                tracing::debug!(path = %path.display(), "password file ignored: others may read it");
                false
            }
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

/// `host:port:database:user:password` with `*` matching anything and `\:` / `\\` escapes; the
/// password if the first four fields match `wanted`.
fn pgpass_line(line: &str, wanted: &[&str; 4]) -> Option<String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim_start().is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut()?.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    if fields.len() != 5 {
        return None;
    }
    let matches = fields
        .iter()
        .zip(wanted)
        .all(|(field, value)| field == "*" || field == value);
    matches.then(|| fields.pop()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let wanted = ["db", "5432", "app", "bob"];
        assert_eq!(
            pgpass_line("db:5432:app:bob:pw", &wanted).as_deref(),
            Some("pw")
        );
        assert_eq!(
            pgpass_line("*:*:*:*:p\\:w\\\\x", &wanted).as_deref(),
            Some("p:w\\x")
        );
        assert_eq!(pgpass_line("*:*:*:*:a:b", &wanted).as_deref(), Some("a:b"));
        assert_eq!(pgpass_line("db:5432:app:alice:pw", &wanted), None);
        assert_eq!(pgpass_line("# db:5432:app:bob:pw", &wanted), None);
        assert_eq!(pgpass_line("db:5432:app", &wanted), None);
        assert_eq!(pgpass_line("", &wanted), None);
        let escaped = ["h:1", "5432", "", "u"];
        assert_eq!(
            pgpass_line("h\\:1:5432::u:pw\r", &escaped).as_deref(),
            Some("pw")
        );
    }
}
