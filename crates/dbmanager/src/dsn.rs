//! What the backends share about connection settings that come as text: the `host` field (a
//! host name or an IP address, nothing a URL could read more into), the query parameters of a
//! `dsn` (checked before the driver's parser sees them, so an unknown one is an error that names
//! it and never its value), and how a `password_file` is read (`credentials` decides when).

use std::net::Ipv6Addr;
use std::path::Path;

use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, ErrorKind, Operation, Result};

/// The largest `password_file` read at connect: the limit load-time validation applies (64 KiB;
/// a password, a token or a short certificate fits).
pub(crate) const PASSWORD_FILE_MAX: u64 = crate::config::MAX_PASSWORD_FILE_BYTES;

/// `path` as an error message shows it: in backticks, control and bidirectional-override
/// characters escaped (a path must not rewrite a terminal or a log line).
pub(crate) fn shown_path(path: &Path) -> String {
    let debug = format!("{:?}", path.display().to_string());
    let inner = debug
        .strip_prefix('"')
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or(&debug);
    format!("`{inner}`")
}

/// A connect-time configuration error (`backends::config_error`, which this module cannot name
/// without a cycle).
fn configuration(name: &str, message: String) -> Error {
    Error::database(name, Operation::Connect, ErrorKind::Configuration, message)
}

// ---------------------------------------------------------------------------------------------
// Hosts

/// Checks one `host` value: a host name, an IPv4 address, or an IPv6 address with or without
/// brackets. Returns it as the driver takes it (IPv6 without brackets).
///
/// Rejected: URL syntax (`/ ? # @`), list and instance separators (`,` `\`), whitespace and
/// control characters, and `host:port` (the port has its own field). The message never quotes
/// the value: a pasted `user:password@host` must not end up in a log.
pub(crate) fn plain_host(host: &str) -> std::result::Result<&str, String> {
    if host.is_empty() {
        return Err("is empty".to_owned());
    }
    if let Some(problem) = url_syntax(host) {
        return Err(problem);
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((address, "")) if address.parse::<Ipv6Addr>().is_ok() => Ok(address),
            Some((_, rest)) if rest.starts_with(':') => Err(HOST_PORT.to_owned()),
            _ => Err("has brackets around something that is not an IPv6 address".to_owned()),
        };
    }
    if host.contains(['[', ']']) {
        return Err("has a bracket; only an IPv6 address may be put in `[...]`".to_owned());
    }
    if host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
        return Err(HOST_PORT.to_owned());
    }
    Ok(host)
}

/// What in `host` a URL or a list would read more into: whitespace, control characters,
/// `/ ? # @`, `,` and `\`; and bidirectional overrides (the server's name goes into logs,
/// stats and metric labels: nothing that could reorder a line). The message names the
/// character, never the value.
pub(crate) fn url_syntax(host: &str) -> Option<String> {
    if host.chars().any(crate::config::is_bidi_control) {
        return Some("contains a bidirectional-override character".to_owned());
    }
    if let Some(c) = host.chars().find(|c| c.is_whitespace() || c.is_control()) {
        let what = if c.is_whitespace() {
            "whitespace"
        } else {
            "a control character"
        };
        return Some(format!(
            "contains {what}; it must be a host name or an IP address"
        ));
    }
    host.chars().find(|c| "/?#@,\\".contains(*c)).map(|c| {
        format!(
            "contains `{c}`; it must be a host name or an IP address, not a URL or a list \
             (put a complete connection string in `dsn`)"
        )
    })
}

const HOST_PORT: &str = "looks like `host:port`; set the port with `port`";

// ---------------------------------------------------------------------------------------------
// dsn query parameters

/// Where a driver's parser finds a dsn's query string.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QuerySyntax {
    /// A URL, read as the `url` crate (sqlx's PostgreSQL and MySQL parsers) reads it: ASCII tab
    /// and newline removed, leading and trailing spaces and controls trimmed, the query from the
    /// first `?` to the first `#`.
    Url,
    /// sqlx's SQLite parser: everything after the first `?`.
    Sqlite,
}

/// What a known parameter accepts. Values are checked here so that the driver's parser, whose
/// errors quote them, never sees a bad one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Accept {
    /// Anything.
    Any,
    /// One of these, ASCII case ignored.
    OneOf(&'static [&'static str]),
    /// Exactly one of these.
    Exactly(&'static [&'static str]),
    /// A port number (`u16`).
    Port,
    /// A count (`usize`).
    Count,
    /// An IP address.
    IpAddr,
}

impl Accept {
    fn accepts(self, value: &str) -> bool {
        match self {
            Accept::Any => true,
            Accept::OneOf(values) => values.iter().any(|v| v.eq_ignore_ascii_case(value)),
            Accept::Exactly(values) => values.contains(&value),
            Accept::Port => value.parse::<u16>().is_ok(),
            Accept::Count => value.parse::<usize>().is_ok(),
            Accept::IpAddr => value.parse::<std::net::IpAddr>().is_ok(),
        }
    }

    fn expected(self) -> String {
        match self {
            Accept::Any => "any value".to_owned(),
            Accept::OneOf(values) | Accept::Exactly(values) => {
                format!("one of {}", values.join(", "))
            }
            Accept::Port => "a port number".to_owned(),
            Accept::Count => "a whole number".to_owned(),
            Accept::IpAddr => "an IP address".to_owned(),
        }
    }
}

/// A parameter a driver's dsn parser knows. A `name` ending in `[` matches `name...]` (sqlx's
/// PostgreSQL `options[setting]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub name: &'static str,
    pub accept: Accept,
}

impl Known {
    fn matches(&self, key: &str) -> bool {
        match self.name.strip_suffix('[') {
            Some(prefix) => key
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('['))
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with(']')),
            None => key == self.name,
        }
    }
}

/// The query string of `dsn` as the driver's parser will see it.
fn query_of(dsn: &str, syntax: QuerySyntax) -> Option<String> {
    match syntax {
        QuerySyntax::Url => {
            let cleaned: String = dsn
                .trim_matches(|c: char| c <= ' ')
                .chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
                .collect();
            let before_fragment = cleaned.split('#').next().unwrap_or_default();
            before_fragment
                .split_once('?')
                .map(|(_, query)| query.to_owned())
        }
        QuerySyntax::Sqlite => dsn.split_once('?').map(|(_, query)| query.to_owned()),
    }
}

/// `application/x-www-form-urlencoded` decoding, as `url::form_urlencoded::parse` does it.
fn form_decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The dsn's query parameters as (key, value) pairs, decoded; `None` as the value for a pair
/// without `=`.
fn query_pairs(dsn: &str, syntax: QuerySyntax) -> Vec<(String, Option<String>)> {
    let Some(query) = query_of(dsn, syntax) else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (form_decode(key), Some(form_decode(value))),
            None => (form_decode(pair), None),
        })
        .collect()
}

/// `message`, a driver's error about `dsn`, without the dsn's own values: the user, the
/// password and every query parameter's value are replaced by `…` wherever they appear, as
/// written or decoded. Values shorter than three characters are left (replacing every `1` or
/// `x` would garble the message, and nothing that short is a secret).
pub(crate) fn without_values(message: &str, dsn: &str) -> String {
    let mut values: Vec<String> = query_pairs(dsn, QuerySyntax::Url)
        .into_iter()
        .filter_map(|(_, value)| value)
        .collect();
    if let Some((_, rest)) = dsn.split_once("://") {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            values.push(userinfo.to_owned());
            values.extend(userinfo.split(':').map(str::to_owned));
        }
    }
    let mut raw: Vec<String> = values
        .iter()
        .flat_map(|v| {
            let decoded = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            [v.clone(), decoded]
        })
        .filter(|v| v.chars().count() >= 3)
        .collect();
    // Longest first, so a value that contains another is replaced whole.
    raw.sort_by_key(|v| std::cmp::Reverse(v.len()));
    raw.dedup();
    let mut shown = message.to_owned();
    for value in raw {
        shown = replace_ignoring_ascii_case(&shown, &value);
    }
    shown
}

/// `text` with every occurrence of `value` replaced by `…`, ASCII letters matched in either
/// case (drivers lower-case some values they quote). ASCII case folding keeps byte offsets.
fn replace_ignoring_ascii_case(text: &str, value: &str) -> String {
    let (folded, needle) = (text.to_ascii_lowercase(), value.to_ascii_lowercase());
    let mut shown = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = folded[from..].find(&needle) {
        shown.push_str(&text[from..from + found]);
        shown.push('…');
        from += found + needle.len();
    }
    shown.push_str(&text[from..]);
    shown
}

/// A key that can be named in an error: a parameter name, not something pasted by mistake.
fn nameable(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.[]".contains(c))
}

/// Checks every query parameter of `dsn` against the driver's `known` ones: an unknown
/// parameter or a bad value is a configuration error naming the parameter, never its value
/// (sqlx logs unknown PostgreSQL parameters with their values, and its errors quote bad ones).
/// Returns the parameters, decoded, for the caller to read.
pub(crate) fn check_query(
    name: &str,
    dsn: &SecretString,
    syntax: QuerySyntax,
    known: &[Known],
) -> Result<Vec<(String, String)>> {
    let mut checked = Vec::new();
    for (key, value) in query_pairs(dsn.expose_secret(), syntax) {
        let Some(value) = value else {
            return Err(configuration(
                name,
                "dsn: a query parameter has no `=value` (it is not shown: it may be a secret)"
                    .to_owned(),
            ));
        };
        let Some(spec) = known.iter().find(|k| k.matches(&key)) else {
            let accepted: Vec<String> = known
                .iter()
                .map(|k| match k.name.strip_suffix('[') {
                    Some(prefix) => format!("{prefix}[...]"),
                    None => k.name.to_owned(),
                })
                .collect();
            let accepted = accepted.join(", ");
            let which = if nameable(&key) {
                format!("unknown parameter `{key}`")
            } else {
                "an unknown parameter (its name is not shown)".to_owned()
            };
            return Err(configuration(
                name,
                format!("dsn: {which}; accepted: {accepted}"),
            ));
        };
        if !spec.accept.accepts(&value) {
            return Err(configuration(
                name,
                format!(
                    "dsn: parameter `{key}` has an invalid value (not shown); expected {}",
                    spec.accept.expected()
                ),
            ));
        }
        checked.push((key, value));
    }
    Ok(checked)
}

// ---------------------------------------------------------------------------------------------
// Passwords

/// A `password_file`'s content as the password: UTF-8, one trailing newline (`\n` or `\r\n`)
/// removed. The error describes the problem, never the content.
pub(crate) fn password_text(bytes: Vec<u8>) -> std::result::Result<SecretString, String> {
    let mut text = String::from_utf8(bytes).map_err(|_| "is not valid UTF-8".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(SecretString::from(text))
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

    #[test]
    fn a_drivers_message_is_shown_without_the_dsns_values() {
        let dsn = "mongodb://app:p%40ss-word@h1:27017/db?authMechanism=Weird-Mech&w=1";
        let message = "bad mechanism WEIRD-MECH for app / p@ss-word at h1:27017, w=1";
        assert_eq!(
            without_values(message, dsn),
            "bad mechanism … for … / … at h1:27017, w=1"
        );
    }

    #[test]
    fn plain_hosts_pass_and_ipv6_loses_its_brackets() {
        for (host, expected) in [
            ("db.example", "db.example"),
            ("127.0.0.1", "127.0.0.1"),
            ("localhost", "localhost"),
            ("bücher.example", "bücher.example"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("fe80::1:2", "fe80::1:2"),
            ("[2001:db8::7]", "2001:db8::7"),
        ] {
            assert_eq!(plain_host(host), Ok(expected), "{host}");
        }
    }

    #[test]
    fn url_syntax_ports_and_lists_are_refused_without_quoting_the_host() {
        for host in [
            "",
            "127.0.0.1/template1?sslmode=disable&",
            "h?x=1",
            "h#f",
            "user:Pw-Hidden@h",
            "a,b",
            "srv\\inst",
            "h ",
            " h",
            "h\tx",
            "h\u{0}",
            "db:5433",
            "[::1]:5432",
            "[db]",
            "[::1",
            "a]b",
            "a:b:c",
        ] {
            let err = plain_host(host).unwrap_err();
            assert!(
                !err.contains("Pw-Hidden") && !err.contains("template1"),
                "{err}"
            );
        }
        assert!(plain_host("db:5433").unwrap_err().contains("`port`"));
        assert!(plain_host("a/b").unwrap_err().contains("`/`"));
    }

    const PG_LIKE: &[Known] = &[
        Known {
            name: "sslmode",
            accept: Accept::OneOf(&["disable", "require"]),
        },
        Known {
            name: "port",
            accept: Accept::Port,
        },
        Known {
            name: "options[",
            accept: Accept::Any,
        },
        Known {
            name: "application_name",
            accept: Accept::Any,
        },
    ];

    fn check(dsn: &str, syntax: QuerySyntax) -> Result<Vec<(String, String)>> {
        check_query("c", &SecretString::from(dsn.to_owned()), syntax, PG_LIKE)
    }

    #[test]
    fn known_parameters_are_decoded_and_returned() {
        let params = check(
            "postgres://u:p%3Fw@h/d?sslmode=DISABLE&options[search_path]=a%20b&application_name=x+y#frag&bogus=1",
            QuerySyntax::Url,
        )
        .unwrap();
        assert_eq!(
            params,
            [
                ("sslmode".to_owned(), "DISABLE".to_owned()),
                ("options[search_path]".to_owned(), "a b".to_owned()),
                ("application_name".to_owned(), "x y".to_owned()),
            ]
        );
        assert!(
            check("postgres://h/d", QuerySyntax::Url)
                .unwrap()
                .is_empty()
        );
        assert!(
            check("postgres://h/d?", QuerySyntax::Url)
                .unwrap()
                .is_empty()
        );
        // The url crate drops tabs and newlines anywhere.
        assert_eq!(
            check("postgres://h/d?ssl\tmode=require", QuerySyntax::Url).unwrap(),
            [("sslmode".to_owned(), "require".to_owned())]
        );
    }

    #[test]
    fn unknown_parameters_and_bad_values_name_the_key_never_the_value() {
        for (dsn, key) in [
            ("postgres://h/d?sslpassword=Val-Hidden", "`sslpassword`"),
            ("postgres://h/d?pasword=Val-Hidden", "`pasword`"),
            ("postgres://h/d?ssl%70assword=Val-Hidden", "`sslpassword`"),
            ("postgres://h/d?sslmode=Val-Hidden", "`sslmode`"),
            ("postgres://h/d?port=Val-Hidden", "`port`"),
            ("postgres://h/d?options=Val-Hidden", "`options`"),
            ("postgres://h/d?options[=Val-Hidden", "`options[`"),
        ] {
            let err = check(dsn, QuerySyntax::Url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Configuration);
            let text = format!("{err} {err:?}");
            assert!(text.contains(key), "{text}");
            assert!(!text.contains("Val-Hidden"), "{text}");
        }
        for dsn in [
            "postgres://h/d?Val-Hidden",
            "postgres://h/d?sslmode=disable&Val%20Hidden=1",
            "postgres://h/d?Val-Hidden-but-far-too-long-to-be-a-parameter-name-of-any-driver-at-all=1",
        ] {
            let err = check(dsn, QuerySyntax::Url).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains("Val-Hidden") && !text.contains("Val Hidden"),
                "{text}"
            );
        }
    }

    #[test]
    fn sqlite_queries_start_at_the_first_question_mark() {
        assert_eq!(
            check("sqlite:/a#b.db?port=1", QuerySyntax::Sqlite).unwrap(),
            [("port".to_owned(), "1".to_owned())]
        );
        assert!(
            check("sqlite:/a#b.db?port=1", QuerySyntax::Url)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn shown_paths_escape_control_and_bidi_characters() {
        assert_eq!(shown_path(Path::new("/run/pw")), "`/run/pw`");
        assert_eq!(
            shown_path(Path::new("/tmp/a\u{1b}[2Jb\u{202e}c")),
            "`/tmp/a\\u{1b}[2Jb\\u{202e}c`"
        );
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
