//! Changing the connections of a running manager: add, remove, replace, and reload a whole
//! config. Lookups never wait for any of it: the registry is swapped whole (copy on write), and
//! a replaced connection keeps its handles, which follow the swap.

use std::sync::Arc;
use std::time::Duration;

use super::{ConnectPolicy, Manager, Registry, build_connection, driver_for};
use crate::config::{ConfigProblems, ConnectionConfig, ManagerConfig};
use crate::connection::{Connection, Generation};
use crate::error::{Error, Operation, Result};

/// What [`Manager::reload`] did, per connection, sorted by name.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReloadReport {
    /// New connections, connected.
    pub added: Vec<String>,
    /// Connections no longer configured, drained and closed.
    pub removed: Vec<String>,
    /// Connections whose settings changed, replaced by a new pool under the same name.
    pub replaced: Vec<String>,
    /// Connections left exactly as they were (not even reconnected).
    pub unchanged: Vec<String>,
    /// Connections whose only changes were `critical`, `tags` or the manager's retry settings
    /// (`retry_attempts`, `retry_delay`, `retry_max_delay`): applied in place, the pool kept as
    /// it is (not reconnected), also for a connection that is down; its later connects and
    /// reconnects use the new retry policy.
    pub updated: Vec<String>,
    /// Connections whose change failed, with why: an addition that could not connect is not
    /// added (with [`ConnectPolicy::Partial`] it is, unavailable, and is in `added` too); a
    /// replacement that could not open its new pool keeps the old one.
    pub failed: Vec<(String, Error)>,
}

impl ReloadReport {
    /// Whether every change was applied.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

fn exists(name: &str) -> Error {
    let mut problems = ConfigProblems::default();
    problems.push(
        format!("connections.{name}"),
        "a connection of that name exists already; replace it instead",
    );
    Error::Config(problems)
}

impl Manager {
    fn check_usable(&self, name: &str, operation: Operation) -> Result<()> {
        if self.is_closed()
            || self
                .inner
                .closing
                .load(std::sync::atomic::Ordering::Acquire)
                > 0
        {
            return Err(Error::closed(name, operation));
        }
        Ok(())
    }

    /// Adds a connection and connects it (with the retry policy), validated exactly like one
    /// loaded from a file (every problem at once). If it cannot connect, it is not added and
    /// the error is returned. A name that exists already is a configuration error.
    pub async fn add(&self, connection: ConnectionConfig) -> Result<()> {
        match self.add_with(connection, ConnectPolicy::FailFast).await? {
            None => Ok(()),
            // FailFast never registers a connection that did not connect.
            Some(e) => Err(e),
        }
    }

    /// [`Manager::add`] with a policy: with [`ConnectPolicy::Partial`] a connection that cannot
    /// connect is registered anyway, unavailable, as [`Manager::connect_with`] leaves one (the
    /// health loop, or `reconnect`, connects it later); its connect error is returned in
    /// `Ok(Some(..))`. `Err` means it was not added.
    async fn add_with(
        &self,
        connection: ConnectionConfig,
        policy: ConnectPolicy,
    ) -> Result<Option<Error>> {
        let name = connection.name.clone();
        self.check_usable(&name, Operation::Connect)?;
        let config = self.config();
        config.validate_connection(&connection)?;
        if self
            .inner
            .registry
            .load()
            .by_name
            .contains_key(name.as_str())
        {
            return Err(exists(&name));
        }
        let conn = build_connection(&config, &connection, self.inner.resolve, &self.inner.closed)?;
        conn.set_credential_provider(self.credential_provider(&name));
        self.install_hooks(&conn);
        if policy == ConnectPolicy::Partial {
            // As `connect_with(Partial)` at startup: registered first, so that readiness and
            // stats show it (unavailable, no attempt finished) while it connects, which can
            // take every retry's `connect_timeout` when its server hangs.
            self.register(&connection, &conn).await?;
            return Ok(conn.connect().await.0.err());
        }
        conn.connect().await.0?;
        self.register(&connection, &conn).await?;
        Ok(None)
    }

    /// Puts `conn` (configured by `connection`) into the registry and the configuration; a
    /// name taken meanwhile (another add won the race) closes it and is an error.
    async fn register(&self, connection: &ConnectionConfig, conn: &Connection) -> Result<()> {
        let name = connection.name.clone();
        let mut inserted = false;
        self.inner.registry.rcu(|registry| {
            let mut next = Registry::clone(registry);
            inserted = !next.by_name.contains_key(name.as_str());
            if inserted {
                next.by_name.insert(Box::from(name.as_str()), conn.clone());
                next.names.push(name.clone());
                next.names.sort();
            }
            next
        });
        if !inserted {
            // Another add of the same name won the race.
            conn.retire(Duration::ZERO).await;
            return Err(exists(&name));
        }
        self.inner.config.rcu(|c| {
            let mut next = ManagerConfig::clone(c);
            next.connections.insert(name.clone(), connection.clone());
            next
        });
        Ok(())
    }

    /// Registers a pool the application built already (`sqlx::PgPool`, `SqlitePool`,
    /// `MySqlPool`, [`crate::MssqlPool`], a `mongodb::Client`) as the connection `name`: every
    /// layer, stats, health, metrics, spans and close work on it. A reconnect discards its idle
    /// connections and checks it, but never replaces it; once closed (by `remove` or `close`)
    /// it is not reopened. Its settings are the pool's own; the library's hook-kept counters
    /// (opens, lifetime and idle closes) stay at zero. A reload leaves it alone unless the new
    /// config names it.
    pub fn adopt(&self, name: &str, pool: impl crate::adopt::Adoptable) -> Result<()> {
        self.check_usable(name, Operation::Connect)?;
        if name.contains(crate::replicas::REPLICA_MARK) {
            let mut problems = ConfigProblems::default();
            problems.push(
                format!("connections.{name}.name"),
                crate::validate::reserved_name(),
            );
            return Err(Error::Config(problems));
        }
        if name.is_empty() {
            let mut problems = ConfigProblems::default();
            problems.push("connections", "a connection name must not be empty");
            return Err(Error::Config(problems));
        }
        if self.inner.registry.load().by_name.contains_key(name) {
            return Err(exists(name));
        }
        if pool.is_closed() {
            return Err(crate::adopt::closed_pool(name));
        }
        let config = self.config();
        let connection = ConnectionConfig::new(name, pool.kind());
        let driver = driver_for(&connection, self.inner.resolve)?;
        let settings = config.pool_settings(&connection);
        let retry = config.retry_policy();
        let conn = Connection::from_generation(
            name,
            |counters, breaker, hooks| {
                let context = crate::adopt::AdoptContext {
                    name: Arc::from(name),
                    counters: counters.clone(),
                };
                let backend = pool.adopt(&context).0;
                Generation::new(
                    driver,
                    connection.clone(),
                    settings,
                    retry,
                    counters,
                    breaker,
                    hooks,
                )
                .adopted(backend)
            },
            self.inner.closed.clone(),
        );
        let mut inserted = false;
        self.inner.registry.rcu(|registry| {
            let mut next = Registry::clone(registry);
            inserted = !next.by_name.contains_key(name);
            if inserted {
                next.by_name.insert(Box::from(name), conn.clone());
                next.names.push(name.to_owned());
                next.names.sort();
            }
            next
        });
        if !inserted {
            return Err(exists(name));
        }
        Ok(())
    }

    /// Removes a connection: lookups by its name fail with `NotFound` at once; checkouts in
    /// flight get until `deadline` to finish, then its pool is closed; every handle on it then
    /// fails with `Closed`. Removing the default connection leaves no default
    /// ([`Manager::default_connection`] is `NoDefault` until [`Manager::set_default`]).
    /// Returns how many pooled connections (its read replicas' included) were still checked
    /// out at the deadline. On a closed (or closing) manager it is `Closed`, as `add` and
    /// `replace` are: close already closed every pool, and the registry stays as it was.
    pub async fn remove(&self, name: &str, deadline: Duration) -> Result<u32> {
        self.check_usable(name, Operation::Close)?;
        let mut removed: Option<Connection> = None;
        self.inner.registry.rcu(|registry| {
            let mut next = Registry::clone(registry);
            removed = next.by_name.remove(name);
            next.names.retain(|n| n != name);
            next
        });
        let Some(conn) = removed else {
            return Err(Error::NotFound {
                name: name.to_owned(),
                known: self.names(),
            });
        };
        self.inner.default.rcu(|default| {
            default
                .as_ref()
                .filter(|d| d.name() != name)
                .map(|d| Arc::new(Connection::clone(d)))
        });
        self.inner.config.rcu(|c| {
            let mut next = ManagerConfig::clone(c);
            next.connections.remove(name);
            if next.default_connection.as_deref() == Some(name) {
                next.default_connection = None;
            }
            next
        });
        Ok(conn.retire(deadline).await.total_in_use())
    }

    /// Replaces a connection's configuration under the same name: the new pool is opened
    /// first (with the retry policy), swapped in atomically, then the old one is drained up to
    /// `deadline`. Checkouts in flight finish on the old pool; new ones go to the new pool;
    /// handles obtained before ([`Connection`], [`crate::Database`]) follow the swap, and a
    /// statement that raced it runs on the new pool. If the new pool cannot be opened, nothing
    /// changes. Stats and metrics keep the name and keep counting.
    pub async fn replace(&self, connection: ConnectionConfig, deadline: Duration) -> Result<()> {
        let name = connection.name.clone();
        self.check_usable(&name, Operation::Connect)?;
        let config = self.config();
        config.validate_connection(&connection)?;
        let conn = self.get(&name)?;
        let generation = self.generation_for(&config, &conn, &connection)?;
        conn.replace(generation, deadline).await?;
        conn.replace_replicas(&config, deadline).await;
        self.record_replaced(&conn);
        Ok(())
    }

    /// Makes [`Manager::config`] say what `conn` runs with after a replace: its configuration
    /// now (replaces racing on one name all record the one that won), and nothing if it was
    /// removed meanwhile (a removed connection must not come back into the configuration).
    fn record_replaced(&self, conn: &Connection) {
        let connection = conn.config();
        self.inner.config.rcu(|c| {
            let mut next = ManagerConfig::clone(c);
            let registered = self
                .inner
                .registry
                .load()
                .by_name
                .get(conn.name())
                .is_some_and(|c| c.is(conn));
            if registered {
                next.connections
                    .insert(connection.name.clone(), connection.clone());
            }
            next
        });
    }

    fn generation_for(
        &self,
        config: &ManagerConfig,
        conn: &Connection,
        connection: &ConnectionConfig,
    ) -> Result<Generation> {
        let driver = driver_for(connection, self.inner.resolve)?;
        Ok(Generation::new(
            driver,
            connection.clone(),
            config.pool_settings(connection),
            config.retry_policy(),
            conn.counters(),
            conn.breaker(),
            conn.hook_state(),
        ))
    }

    /// Applies a whole new configuration: connections are matched by name; new ones are added,
    /// missing ones removed (drained up to `deadline`), changed ones (any setting that shapes
    /// the pool, the global defaults they inherit included) replaced, and the others left
    /// untouched, not even reconnected. An invalid config changes nothing and returns every
    /// problem. The manager-wide settings (retry, health loop, default connection) take the
    /// new values.
    pub async fn reload(&self, new: ManagerConfig, deadline: Duration) -> Result<ReloadReport> {
        self.reload_with(new, deadline, ConnectPolicy::FailFast)
            .await
    }

    /// [`Manager::reload`] with a policy for the connections it adds. With
    /// [`ConnectPolicy::Partial`] an added connection that cannot connect is registered anyway,
    /// unavailable, as at startup with [`Manager::connect_with`]: readiness, stats and metrics
    /// show it, and the health loop connects it once its server answers. It is listed in
    /// `added` and, with its connect error, in `failed`. A replacement that cannot connect
    /// keeps the old pool under either policy.
    pub async fn reload_with(
        &self,
        new: ManagerConfig,
        deadline: Duration,
        policy: ConnectPolicy,
    ) -> Result<ReloadReport> {
        self.check_usable("*", Operation::Configure)?;
        new.validate()?;
        let old = self.config();
        let mut report = ReloadReport::default();
        let mut to_replace = Vec::new();
        for (name, c) in &new.connections {
            match self.get(name) {
                Err(_) => {}
                Ok(conn) => {
                    let (settings, retry) = (new.pool_settings(c), new.retry_policy());
                    if conn.has_settings(c, &settings, &retry) {
                        report.unchanged.push(name.clone());
                    } else if conn.relabel(c, &settings, &retry) {
                        // Only `critical`, `tags` or the retry policy: no new pool, which a
                        // connection that is down could not open (and marking it non-critical
                        // must still work), and an in-memory database would lose its data to.
                        self.record_replaced(&conn);
                        report.updated.push(name.clone());
                    } else {
                        to_replace.push((conn, c.clone()));
                    }
                }
            }
        }
        let to_add: Vec<&ConnectionConfig> = new
            .connections
            .values()
            .filter(|c| !old.connections.contains_key(&c.name) && self.get(&c.name).is_err())
            .collect();
        // Adopted pools are the application's: a config that does not name them leaves them.
        let to_remove: Vec<String> = self
            .connections()
            .into_iter()
            .filter(|c| !c.is_adopted() && !new.connections.contains_key(c.name()))
            .map(|c| c.name().to_owned())
            .collect();

        // The manager-wide values first: additions and replacements are built from them.
        self.inner.config.rcu(|c| {
            let mut next = new.clone();
            // Connections keep their current entries until their change lands.
            next.connections = c.connections.clone();
            next
        });

        let added = futures_util::future::join_all(to_add.iter().map(|c| async move {
            let outcome = self.add_with(ConnectionConfig::clone(c), policy).await;
            (c.name.clone(), outcome)
        }));
        let replaced = futures_util::future::join_all(to_replace.iter().map(|(conn, c)| {
            let config = &new;
            async move {
                let outcome = match self.generation_for(config, conn, c) {
                    Ok(generation) => match conn.replace(generation, deadline).await {
                        Ok(_) => {
                            conn.replace_replicas(config, deadline).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                if outcome.is_ok() {
                    self.record_replaced(conn);
                }
                (c.name.clone(), outcome)
            }
        }));
        let removed = futures_util::future::join_all(
            to_remove
                .iter()
                .map(|n| async move { (n.clone(), self.remove(n, deadline).await) }),
        );
        let (added, replaced, removed) =
            futures_util::future::join3(added, replaced, removed).await;
        for (name, outcome) in added {
            match outcome {
                Ok(None) => report.added.push(name),
                Ok(Some(e)) => {
                    report.added.push(name.clone());
                    report.failed.push((name, e));
                }
                Err(e) => report.failed.push((name, e)),
            }
        }
        for (name, outcome) in replaced {
            match outcome {
                Ok(()) => report.replaced.push(name),
                Err(e) => report.failed.push((name, e)),
            }
        }
        for (name, outcome) in removed {
            match outcome {
                Ok(_) => report.removed.push(name),
                Err(e) => report.failed.push((name, e)),
            }
        }
        let default = new
            .default_connection
            .as_deref()
            .and_then(|d| self.get(d).ok());
        if default.is_none() && new.default_connection.is_some() {
            // The default it names could not be added: the configuration must not name a
            // connection the manager does not have (a reload built from it would be refused).
            self.inner.config.rcu(|c| {
                let mut next = ManagerConfig::clone(c);
                next.default_connection = None;
                next
            });
        }
        self.inner.default.store(default.map(Arc::new));
        if old.health_check_interval != new.health_check_interval
            || old.enable_auto_reconnect != new.enable_auto_reconnect
        {
            self.stop_health_loop();
            self.start_health_loop();
        }
        for list in [
            &mut report.added,
            &mut report.removed,
            &mut report.replaced,
            &mut report.unchanged,
            &mut report.updated,
        ] {
            list.sort();
        }
        report.failed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(report)
    }
}
