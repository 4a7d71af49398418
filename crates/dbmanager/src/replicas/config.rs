//! A replica's configuration built from its connection's ([`ConnectionConfig::replica`]). It is
//! here, not in `config`, because pointing a dsn at another server is the server-list code's
//! job (`hosts`), and that code reads the configuration: `config` stays a leaf.

use secrecy::SecretString;

use crate::config::ConnectionConfig;

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
