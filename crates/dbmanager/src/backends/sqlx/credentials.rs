//! Rotating credentials on a sqlx pool.
//!
//! sqlx has no hook before a connection logs in: the pool logs every new connection in with the
//! options it holds, which `Pool::set_connect_options` replaces. So the options are refreshed
//! whenever the credential source may have changed, on three triggers:
//!
//! 1. a watcher task per pool checks the source every `credentials::POLL` (a `stat` of the
//!    password file, or the provider answer's refresh time) and installs new options when what
//!    it resolves changed: this covers every layer (the raw pool, SeaORM, sqlx's own
//!    background connects);
//! 2. a checkout through the library that may open a connection (none idle, room for one
//!    more) checks the same way first, so a new connection right after a rotation already uses
//!    the new password;
//! 3. a checkout refused by the server (an authentication error) forgets the cached
//!    credentials, resolves them again and, if the pool's options changed since the checkout
//!    began, checks out once more.
//!
//! Connections already open are left alone (the server keeps their sessions).

use std::sync::{Arc, Mutex};

use sqlx::Pool;
use sqlx::pool::PoolConnection;

use super::{SqlxFlavor, hooks};
use crate::credentials::CredentialSource;
use crate::error::{Error, ErrorKind, Result};
use crate::stats::PoolCounters;

type Options<F> =
    <<<F as SqlxFlavor>::DB as sqlx::Database>::Connection as sqlx::Connection>::Options;

/// Installs a pool's current credentials into its connect options.
pub(crate) struct Refresher<F: SqlxFlavor> {
    name: Arc<str>,
    /// The connection's `enable_logging`.
    log: bool,
    source: Arc<CredentialSource>,
    /// The options the pool was opened with; credentials are set on a copy.
    base: Options<F>,
    /// With a server list, the current server's options are the base instead.
    failover: Option<Arc<super::failover::Failover<F>>>,
    /// The source version the pool's options hold.
    applied: Mutex<u64>,
}

impl<F: SqlxFlavor> Refresher<F> {
    /// A refresher for a pool opened with `base`, which holds the source's current version.
    pub(crate) fn new(
        name: &Arc<str>,
        log: bool,
        source: &Arc<CredentialSource>,
        base: Options<F>,
        failover: Option<Arc<super::failover::Failover<F>>>,
    ) -> Self {
        Self {
            name: name.clone(),
            log,
            applied: Mutex::new(source.version()),
            source: source.clone(),
            base,
            failover,
        }
    }

    /// Resolves the credentials and, if they changed since the pool's options were set,
    /// installs new options. Returns whether it did.
    pub(crate) async fn refresh(&self, pool: &Pool<F::DB>) -> Result<bool> {
        let (resolved, version) = self.source.current().await?;
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two refreshes may race: the newer version wins.
        if version <= *applied {
            return Ok(false);
        }
        match &self.failover {
            None => pool.set_connect_options(F::with_credentials(self.base.clone(), &resolved)),
            // The current server's options; again if a switch came in between, so that these
            // credentials never put the pool back on the old server.
            Some(failover) => loop {
                let (index, base) = failover.current_options();
                pool.set_connect_options(F::with_credentials(base, &resolved));
                if failover.current_index() == index {
                    break;
                }
            },
        }
        *applied = version;
        Ok(true)
    }

    /// The source version the pool's options hold now.
    fn applied(&self) -> u64 {
        *self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Trigger 2: before a checkout that may open a connection (none idle, room for one more;
    /// a saturated pool waits for a release instead, and pays nothing here).
    pub(crate) async fn before_checkout(&self, pool: &Pool<F::DB>) {
        let may_open = pool.num_idle() == 0 && pool.size() < pool.options().get_max_connections();
        if may_open && self.source.may_have_changed().await {
            // A failure here (the file is being replaced) leaves the options as they are; the
            // watcher reports it.
            let _ = self.refresh(pool).await;
        }
    }
}

/// Checks a connection out through the library, keeping the credentials current (triggers 2
/// and 3 above).
pub(crate) async fn acquire<F: SqlxFlavor>(
    name: &str,
    pool: &Pool<F::DB>,
    counters: &PoolCounters,
    refresher: Option<&Refresher<F>>,
) -> Result<PoolConnection<F::DB>, Error> {
    let Some(refresher) = refresher else {
        return hooks::acquire::<F>(name, pool, counters).await;
    };
    refresher.before_checkout(pool).await;
    let tried = refresher.applied();
    match hooks::acquire::<F>(name, pool, counters).await {
        Err(e) if e.kind() == ErrorKind::Authentication => {
            refresher.source.invalidate();
            match refresher.refresh(pool).await {
                // New options since this checkout began (installed here, or by the watcher
                // while the refused login was under way): one more try with them.
                Ok(_) if refresher.applied() != tried => {
                    hooks::acquire::<F>(name, pool, counters).await
                }
                Ok(_) => Err(e),
                // The provider failing is the better explanation.
                Err(credentials) => Err(credentials),
            }
        }
        other => other,
    }
}

/// Trigger 1: checks the source every `POLL` while the pool lives. Ends when the pool is closed
/// or its backend dropped (the slot is cleared then).
pub(crate) fn watch<F: SqlxFlavor>(
    refresher: Arc<Refresher<F>>,
    slot: super::hooks::PoolSlot<F::DB>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(crate::credentials::POLL).await;
            let Some(pool) = slot.load_full() else {
                return;
            };
            if pool.is_closed() {
                return;
            }
            if !refresher.source.may_have_changed().await {
                continue;
            }
            match refresher.refresh(&pool).await {
                Ok(changed) => {
                    if changed && refresher.log {
                        tracing::info!(connection = %refresher.name, "new credentials for new connections");
                    }
                    failing = false;
                }
                Err(e) => {
                    // Once per failing stretch, not every second.
                    if !failing && refresher.log {
                        tracing::warn!(connection = %refresher.name, error = %e, "credentials not refreshed; new connections keep the previous ones");
                    }
                    failing = true;
                }
            }
        }
    })
}
