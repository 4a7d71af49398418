//! A replica's configuration built from its connection's ([`ConnectionConfig::replica`]). It is
//! here, not in `config`, because pointing a dsn at another server is the server-list code's
//! job (`hosts`), and that code reads the configuration: `config` stays a leaf.

use secrecy::SecretString;

use crate::config::{ConnectionConfig, ManagerConfig};

impl ConnectionConfig {
    /// A replica of this connection on `host` (and `port`, else this connection's): a copy of
    /// this configuration without its own replicas, to adjust further and push onto
    /// [`ConnectionConfig::replicas`]. Its server list (`hosts`, `target_session_attrs`) is
    /// the primary's and is not copied; a `dsn` is pointed at `host` (and `port`).
    pub fn replica(&self, host: impl Into<String>, port: Option<u16>) -> ConnectionConfig {
        use secrecy::ExposeSecret as _;
        let host = host.into();
        let mut replica = self.clone();
        replica.replicas = Vec::new();
        replica.hosts = None;
        replica.target_session_attrs = None;
        if let Some(dsn) = &self.dsn
            && let Some(moved) = crate::hosts::dsn_on_server(dsn.expose_secret(), &host, port)
        {
            replica.dsn = Some(SecretString::from(moved));
            return replica;
        }
        replica.host = Some(host);
        if port.is_some() {
            replica.port = port;
        }
        replica
    }
}

/// After loading a document: a replica entry of a connection given by a `dsn` that sets its own
/// `host` (or only `port`) and no dsn of its own inherited that dsn beside its server. It is
/// made what [`ConnectionConfig::replica`] makes: the dsn pointed at that server, `host` and
/// `port` cleared (a dsn is used as is; both together would conflict). An entry whose dsn is
/// not a URL, or whose host is not a plain name or address, is left as it is (validation then
/// says the dsn conflicts with `host`).
pub(crate) fn point_inherited_dsns(config: &mut ManagerConfig) {
    use secrecy::ExposeSecret as _;
    for connection in config.connections.values_mut() {
        let Some(dsn) = connection
            .dsn
            .as_ref()
            .map(|d| d.expose_secret().to_owned())
        else {
            continue;
        };
        for replica in &mut connection.replicas {
            let inherited = replica
                .dsn
                .as_ref()
                .is_some_and(|own| own.expose_secret() == dsn);
            if !inherited || (replica.host.is_none() && replica.port.is_none()) {
                continue;
            }
            let Some(host) = replica
                .host
                .clone()
                .or_else(|| crate::hosts::dsn_server(&dsn).map(|server| server.host))
            else {
                continue;
            };
            // A host that is not a plain name or address stays where validation names it.
            if crate::dsn::plain_host(&host).is_err() {
                continue;
            }
            if let Some(moved) = crate::hosts::dsn_on_server(&dsn, &host, replica.port) {
                replica.dsn = Some(SecretString::from(moved));
                replica.host = None;
                replica.port = None;
            }
        }
    }
}
