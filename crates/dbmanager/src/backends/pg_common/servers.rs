//! The servers a PostgreSQL connection chooses from, whichever driver: `hosts:` or a dsn's host
//! list (`postgres://u@h1:5432,h2:5433/db`), and `target_session_attrs` from the config or the
//! dsn. Each driver makes its connect options per server from them (`backends/failover.rs`).

use secrecy::{ExposeSecret, SecretString};

use super::DEFAULT_PORT;
use crate::backends::config_error;
use crate::config::{ConnectionConfig, TargetSessionAttrs};
use crate::error::Result;
use crate::hosts::{self, Server};

/// The dsn as a one-host parser takes it: its first server only, without
/// `target_session_attrs`. Errors never quote the dsn.
pub(crate) fn first_server_url(name: &str, dsn: &str) -> Result<SecretString> {
    let (url, _) = hosts::strip_target_session_attrs(dsn);
    match hosts::split_dsn(&url) {
        None => Ok(SecretString::from(url)),
        Some(Ok((first, _))) => Ok(SecretString::from(first)),
        Some(Err(problem)) => Err(config_error(name, format!("dsn: {problem}"))),
    }
}

/// A connection's server list (`None`: it names one server) and its `target_session_attrs`
/// (the dsn's, else the config's).
pub(crate) fn server_list(
    name: &str,
    c: &ConnectionConfig,
) -> Result<(Option<Vec<Server>>, Option<TargetSessionAttrs>)> {
    match &c.dsn {
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
            Ok((servers, attrs.or(c.target_session_attrs)))
        }
        None => {
            let servers = match &c.hosts {
                Some(_) => Some(
                    hosts::servers(c, DEFAULT_PORT, "localhost")
                        .map_err(|problem| config_error(name, problem))?,
                ),
                None => None,
            };
            Ok((servers, c.target_session_attrs))
        }
    }
}
