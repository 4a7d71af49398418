//! The `hosts:` list of a connection (`["db-1:5432", "[::1]:5433"]`) and the same list written
//! in a `dsn` (`postgres://u@db-1:5432,db-2:5433/app`): parsing each `host[:port]` entry, the
//! configuration checks with their paths (`connections.pg.hosts[1]`), and which servers a
//! connection chooses from. What is done with the list (probing, failover) is the backend's.

use std::fmt;
use std::net::Ipv6Addr;

use crate::config::{ConnectionConfig, ConnectionProblems, TargetSessionAttrs};

/// The most servers one connection may list: each is probed on every failover.
pub(crate) const MAX_HOSTS: usize = 32;

/// One server of a list: a host name or address (IPv6 without brackets) and its port, if the
/// entry names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    /// The entry with its port, the default filled in.
    pub(crate) fn with_default_port(&self, default: u16) -> Server {
        Server {
            host: self.host.clone(),
            port: self.port.unwrap_or(default),
        }
    }
}

/// One server a connection may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Server {
    /// `host:port`, `[v6]:port`: what stats, logs and metric labels show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses one `host[:port]` entry. The message never quotes the entry (a pasted
/// `user:password@host` must not reach a log).
pub(crate) fn parse_entry(entry: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(inner) = entry.strip_prefix('[') {
        let Some((address, rest)) = inner.split_once(']') else {
            return Err("has `[` without `]`; write an IPv6 address as `[::1]:5432`".to_owned());
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return Err("has brackets around something that is not an IPv6 address".to_owned());
        }
        match rest {
            "" => (address, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return Err("has text after `]` that is not `:port`".to_owned()),
            },
        }
    } else if entry.matches(':').count() > 1 {
        // A bare IPv6 address: it cannot carry a port without brackets.
        if entry.parse::<Ipv6Addr>().is_err() {
            return Err(
                "is neither `host:port` nor an IPv6 address (write one with a port as `[::1]:5432`)"
                    .to_owned(),
            );
        }
        (entry, None)
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let port = port.map(parse_port).transpose()?;
    let host = crate::dsn::plain_host(host).map_err(|problem| format!("host {problem}"))?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("has a port that is not a number from 1 to 65535".to_owned());
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err("has a port that is not a number from 1 to 65535".to_owned()),
    }
}

/// The configuration checks of `hosts` and `target_session_attrs`, each problem under its own
/// path (`hosts[1]`). Which backends read them at all is their driver's `fields`.
pub(crate) fn check(
    c: &ConnectionConfig,
    backend_port: Option<u16>,
    p: &mut ConnectionProblems<'_>,
) {
    let Some(entries) = &c.hosts else {
        return;
    };
    if c.host.is_some() {
        p.push(
            "hosts",
            "set either host or hosts, not both (a single server can be the only entry of hosts)",
        );
    }
    if entries.is_empty() {
        p.push("hosts", "must list at least one `host[:port]`");
        return;
    }
    if entries.len() > MAX_HOSTS {
        p.push(
            "hosts",
            format!(
                "lists {} servers; at most {MAX_HOSTS} are accepted",
                entries.len()
            ),
        );
        return;
    }
    // Duplicates are compared with the port they end up with: `port`, else the backend's.
    let default_port = c.port.or(backend_port).unwrap_or(0);
    let mut seen: Vec<(usize, Server)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match parse_entry(entry) {
            Ok(parsed) => {
                let server = parsed.with_default_port(default_port);
                if let Some((first, _)) = seen.iter().find(|(_, s)| *s == server) {
                    p.push(
                        &format!("hosts[{i}]"),
                        format!("names the same server as hosts[{first}]"),
                    );
                } else {
                    seen.push((i, server));
                }
            }
            Err(problem) => p.push(&format!("hosts[{i}]"), problem),
        }
    }
}

/// The servers a connection chooses from, in order: `hosts`, else `host` (or `fallback_host`)
/// alone; ports default to `port`, else `default_port`.
pub(crate) fn servers(
    c: &ConnectionConfig,
    default_port: u16,
    fallback_host: &str,
) -> Result<Vec<Server>, String> {
    let port = c.port.unwrap_or(default_port);
    match &c.hosts {
        Some(entries) => entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                parse_entry(entry)
                    .map(|parsed| parsed.with_default_port(port))
                    .map_err(|problem| format!("hosts[{i}] {problem}"))
            })
            .collect(),
        None => {
            let host = c.host.as_deref().unwrap_or(fallback_host);
            let host = crate::dsn::plain_host(host).map_err(|problem| format!("host {problem}"))?;
            Ok(vec![Server {
                host: host.to_owned(),
                port,
            }])
        }
    }
}

/// Whether each new connection must accept writes: `target_session_attrs`, by default
/// `read-write` when there is more than one server to choose from.
pub(crate) fn require_writable(attrs: Option<TargetSessionAttrs>, servers: usize) -> bool {
    match attrs {
        Some(attrs) => attrs == TargetSessionAttrs::ReadWrite,
        None => servers > 1,
    }
}

/// `dsn` without its `target_session_attrs` query parameter (which a one-host parser does not
/// know), and that parameter's raw value.
pub(crate) fn strip_target_session_attrs(dsn: &str) -> (String, Option<String>) {
    const KEY: &str = "target_session_attrs";
    let Some((base, rest)) = dsn.split_once('?') else {
        return (dsn.to_owned(), None);
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k == KEY => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    if value.is_none() {
        return (dsn.to_owned(), None);
    }
    let mut out = base.to_owned();
    let kept: Vec<&str> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    (out, value)
}

/// A URL `dsn` whose authority lists several servers (`scheme://user@h1:5432,h2:5433/db`), split
/// into the same URL with the first server only (what a one-host parser takes) and the entries.
/// `None` when the authority holds no comma. Errors never quote the dsn.
pub(crate) fn split_dsn(dsn: &str) -> Option<Result<(String, Vec<HostPort>), String>> {
    let (scheme, rest) = dsn.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, list) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    if !list.contains(',') {
        return None;
    }
    let entries: Vec<&str> = list.split(',').collect();
    if entries.len() > MAX_HOSTS {
        return Some(Err(format!(
            "the dsn lists {} servers; at most {MAX_HOSTS} are accepted",
            entries.len()
        )));
    }
    let mut parsed = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match parse_entry(entry) {
            Ok(hp) => parsed.push(hp),
            Err(problem) => {
                return Some(Err(format!(
                    "server {} of the dsn's host list {problem}",
                    i + 1
                )));
            }
        }
    }
    let first = entries[0];
    Some(Ok((format!("{scheme}://{userinfo}{first}{tail}"), parsed)))
}

/// The (first) server a URL `dsn` names (`scheme://user:pw@host:port/db`), for naming and
/// showing a connection that has only a dsn; `None` when it names none (a socket directory, a
/// keyword/value string) or the entry does not parse. Only host and port are read: the user
/// information never leaves.
pub(crate) fn dsn_server(dsn: &str) -> Option<HostPort> {
    let (_, rest) = dsn.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let list = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let first = list.split(',').next()?;
    if first.is_empty() {
        return None;
    }
    parse_entry(first).ok()
}

/// `dsn` (a URL) pointed at one server, `host` and `port` (else the port of the dsn's first
/// server), without a `target_session_attrs`: the dsn of a replica on that server. User
/// information, path and other parameters are kept. `None` when `dsn` is not a URL.
pub(crate) fn dsn_on_server(dsn: &str, host: &str, port: Option<u16>) -> Option<String> {
    let (dsn, _) = strip_target_session_attrs(dsn);
    let (scheme, rest) = dsn.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    let port = port.or_else(|| dsn_server(&dsn).and_then(|server| server.port));
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let server = match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    Some(format!("{scheme}://{userinfo}{server}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_and_without_ports() {
        let hp = |host: &str, port: Option<u16>| HostPort {
            host: host.to_owned(),
            port,
        };
        for (entry, expected) in [
            ("db-1", hp("db-1", None)),
            ("db-1:5433", hp("db-1", Some(5433))),
            ("127.0.0.1:1", hp("127.0.0.1", Some(1))),
            ("[::1]:5432", hp("::1", Some(5432))),
            ("[::1]", hp("::1", None)),
            ("::1", hp("::1", None)),
            ("fe80::1:2", hp("fe80::1:2", None)),
        ] {
            assert_eq!(parse_entry(entry), Ok(expected), "{entry}");
        }
    }

    #[test]
    fn bad_entries_are_refused_without_quoting_them() {
        for entry in [
            "",
            ":5432",
            "db:",
            "db:0",
            "db:65536",
            "db:54x",
            "db:+5",
            "db:99999999999999999999",
            "[::1]:",
            "[::1]x",
            "[db]:5432",
            "[::1",
            "a:b:c",
            "u:Pw-Hidden@db",
            "db/Pw-Hidden",
            "db 1",
            "db\u{0}",
            "\u{202e}db",
            "a,b",
        ] {
            let err = parse_entry(entry).unwrap_err();
            assert!(!err.contains("Pw-Hidden"), "{err}");
        }
    }

    #[test]
    fn servers_fill_in_the_port() {
        let mut c = ConnectionConfig::new("t", crate::config::DatabaseType::Postgres);
        c.hosts = Some(vec!["a".into(), "b:7".into(), "[::1]".into()]);
        c.port = Some(6000);
        let s: Vec<String> = servers(&c, 5432, "localhost")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(s, ["a:6000", "b:7", "[::1]:6000"]);
        assert!(require_writable(None, 3));
        assert!(!require_writable(Some(TargetSessionAttrs::Any), 3));
        assert!(!require_writable(None, 1));
        assert!(require_writable(Some(TargetSessionAttrs::ReadWrite), 1));
    }

    #[test]
    fn target_session_attrs_leaves_the_dsn() {
        let (url, value) =
            strip_target_session_attrs("postgres://h/d?sslmode=disable&target_session_attrs=any");
        assert_eq!(url, "postgres://h/d?sslmode=disable");
        assert_eq!(value.as_deref(), Some("any"));
        let (url, value) =
            strip_target_session_attrs("postgres://h/d?target_session_attrs=read-write");
        assert_eq!(url, "postgres://h/d");
        assert_eq!(value.as_deref(), Some("read-write"));
        let (url, value) = strip_target_session_attrs("postgres://h/d?sslmode=disable");
        assert_eq!(url, "postgres://h/d?sslmode=disable");
        assert_eq!(value, None);
    }

    #[test]
    fn a_dsn_host_list_is_split() {
        let Some(Ok((url, entries))) =
            split_dsn("postgres://u:p@w@h1:5432,[::1]:5433,h3/db?sslmode=disable")
        else {
            panic!("a list");
        };
        assert_eq!(url, "postgres://u:p@w@h1:5432/db?sslmode=disable");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].host, "::1");
        assert_eq!(entries[2].port, None);
        assert!(split_dsn("postgres://u@h1:5432/db").is_none());
        assert!(split_dsn("postgres://h1,h2").is_some_and(|r| r.is_ok()));
        let server = |dsn: &str| dsn_server(dsn).map(|hp| (hp.host, hp.port));
        assert_eq!(
            server("postgres://u:p@w@db-2:5433/app?sslmode=disable"),
            Some(("db-2".to_owned(), Some(5433)))
        );
        assert_eq!(
            server("mysql://root@[::1]/app"),
            Some(("::1".to_owned(), None))
        );
        assert_eq!(
            server("postgres://u@h1:5,h2:6/db"),
            Some(("h1".to_owned(), Some(5)))
        );
        assert_eq!(server("postgres:///db?host=/run/pg"), None);
        assert_eq!(server("host=db-2 port=5433"), None);
        assert_eq!(
            dsn_on_server(
                "postgres://u:p@w@h1:5433,h2/db?sslmode=disable&target_session_attrs=read-write",
                "db-3",
                None
            )
            .as_deref(),
            Some("postgres://u:p@w@db-3:5433/db?sslmode=disable")
        );
        assert_eq!(
            dsn_on_server("mysql://root@h1/app", "::1", Some(3307)).as_deref(),
            Some("mysql://root@[::1]:3307/app")
        );
        assert_eq!(dsn_on_server("host=h1", "db-3", None), None);
        let err = split_dsn("postgres://u:Pw-Hidden@h1,h2:x/db")
            .unwrap()
            .unwrap_err();
        assert!(!err.contains("Pw-Hidden"), "{err}");
    }
}
