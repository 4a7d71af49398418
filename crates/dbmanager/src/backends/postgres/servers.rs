//! The sqlx failover plan of a PostgreSQL connection: its server list
//! (`pg_common::servers`) as sqlx connect options, one copy per server.

use sqlx::Postgres;
use sqlx::postgres::PgConnectOptions;

use crate::backends::failover::FailoverPlan as Plan;
use crate::backends::pg_common::servers::server_list;
use crate::backends::sqlx::failover::FailoverPlan;
use crate::config::ConnectionConfig;
use crate::error::Result;
use crate::hosts::Server;

/// The failover plan of a connection, if it has one: a server list (`hosts:` or the dsn's),
/// or `target_session_attrs: read-write` on its one server. `options` are the connection's
/// options for its first server; each candidate is a copy with its own host and port.
pub(crate) fn plan(
    name: &str,
    c: &ConnectionConfig,
    options: &PgConnectOptions,
) -> Result<Option<FailoverPlan<Postgres>>> {
    let (servers, attrs) = server_list(name, c)?;
    let only = Server {
        host: options.get_host().to_owned(),
        port: options.get_port(),
    };
    Ok(Plan::build(servers, attrs, only, |server| {
        options.clone().host(&server.host).port(server.port)
    }))
}
