//! The servers a PostgreSQL connection chooses from: `hosts:` or a dsn's host list
//! (`postgres://u@h1:5432,h2:5433/db`), and `target_session_attrs` from the config or the dsn,
//! as the shared sqlx failover (`backends/sqlx/failover.rs`) takes them.

use secrecy::{ExposeSecret, SecretString};
use sqlx::Postgres;
use sqlx::postgres::PgConnectOptions;

use super::DEFAULT_PORT;
use crate::backends::config_error;
use crate::backends::sqlx::failover::FailoverPlan;
use crate::config::{ConnectionConfig, TargetSessionAttrs};
use crate::error::Result;
use crate::hosts::{self, Server};

/// The dsn as sqlx's one-host parser takes it: its first server only, without
/// `target_session_attrs`. Errors never quote the dsn.
pub(crate) fn first_server_url(name: &str, dsn: &str) -> Result<SecretString> {
    let (url, _) = hosts::strip_target_session_attrs(dsn);
    match hosts::split_dsn(&url) {
        None => Ok(SecretString::from(url)),
        Some(Ok((first, _))) => Ok(SecretString::from(first)),
        Some(Err(problem)) => Err(config_error(name, format!("dsn: {problem}"))),
    }
}

/// The failover plan of a connection, if it has one: a server list (`hosts:` or the dsn's),
/// or `target_session_attrs: read-write` on its one server. `options` are the connection's
/// options for its first server; each candidate is a copy with its own host and port.
pub(crate) fn plan(
    name: &str,
    c: &ConnectionConfig,
    options: &PgConnectOptions,
) -> Result<Option<FailoverPlan<Postgres>>> {
    let (servers, attrs) = match &c.dsn {
        Some(dsn) => {
            let (url, attrs) = hosts::strip_target_session_attrs(dsn.expose_secret());
            let servers = match hosts::split_dsn(&url) {
                None => None,
                Some(Ok((_, entries))) => Some(
                    entries
                        .iter()
                        .map(|e| e.with_default_port(DEFAULT_PORT))
                        .collect::<Vec<_>>(),
                ),
                Some(Err(problem)) => return Err(config_error(name, format!("dsn: {problem}"))),
            };
            // Checked against the accepted values with the dsn's other parameters.
            let attrs = attrs.as_deref().and_then(TargetSessionAttrs::parse);
            (servers, attrs.or(c.target_session_attrs))
        }
        None => {
            let servers = match &c.hosts {
                Some(_) => Some(
                    hosts::servers(c, DEFAULT_PORT, "localhost")
                        .map_err(|problem| config_error(name, problem))?,
                ),
                None => None,
            };
            (servers, c.target_session_attrs)
        }
    };
    let only = Server {
        host: options.get_host().to_owned(),
        port: options.get_port(),
    };
    Ok(crate::backends::failover::FailoverPlan::build(
        servers,
        attrs,
        only,
        |server| options.clone().host(&server.host).port(server.port),
    ))
}
