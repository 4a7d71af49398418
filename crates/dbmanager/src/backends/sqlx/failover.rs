//! The sqlx side of a server list (`hosts:`, `target_session_attrs`; the design and everything
//! driver-neutral is `backends/failover.rs`): how a flavor's direct connection probes one
//! server, and how its pool is pointed at another.
//!
//! sqlx's connect options name one server, and a pool re-reads them before every connect
//! attempt (`Pool::set_connect_options`), so one pool serves the whole life of the connection
//! and every handle on it (neutral handle, native pool, SeaORM) follows a switch: checkouts
//! already waiting connect to the new server on their next attempt, and the pool's hooks
//! (`hooks.rs`) close connections opened before the switch at their next checkout or release.

use std::marker::PhantomData;

use sqlx::{Connection as _, Database, Pool};

use super::{SqlxFlavor, classify};
use crate::backends::failover::{Dialer, Probe, SwitchTarget};
use crate::credentials::Resolved;
use crate::error::{Error, ErrorKind};

type Options<F> = <<<F as SqlxFlavor>::DB as Database>::Connection as sqlx::Connection>::Options;
type Conn<F> = <<F as SqlxFlavor>::DB as Database>::Connection;

/// What a flavor's backend hands to [`super::open`] for a server list.
pub(crate) type FailoverPlan<DB> = crate::backends::failover::FailoverPlan<
    <<DB as Database>::Connection as sqlx::Connection>::Options,
>;

/// The server list of one sqlx pool and which server its options point at.
pub(crate) type Failover<F> = crate::backends::failover::Failover<SqlxDialer<F>>;

/// A flavor's direct connections, for probes.
pub(crate) struct SqlxDialer<F>(PhantomData<fn() -> F>);

impl<F> Default for SqlxDialer<F> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<F: SqlxFlavor> Dialer for SqlxDialer<F> {
    type Options = Options<F>;
    type Conn = Conn<F>;

    fn with_credentials(options: Options<F>, credentials: &Resolved) -> Options<F> {
        F::with_credentials(options, credentials)
    }

    async fn probe(&self, options: &Options<F>, require_writable: bool) -> Probe<Conn<F>> {
        let attempt = async {
            let mut conn = Conn::<F>::connect_with(options).await?;
            if require_writable && !F::is_writable(&mut conn).await? {
                let _ = conn.close().await;
                return Ok(None);
            }
            Ok(Some(conn))
        };
        match attempt.await {
            Ok(Some(conn)) => Probe::Qualifies(conn),
            Ok(None) => Probe::ReadOnly,
            Err(e) => Probe::Failed(classify::<F>(&e), e.to_string()),
        }
    }

    async fn close(conn: Conn<F>) {
        let _ = conn.close().await;
    }
}

/// A probe task points the pool in the slot (cleared when the backend is dropped) at the new
/// server's options.
impl<DB: Database> SwitchTarget<<DB::Connection as sqlx::Connection>::Options>
    for super::hooks::PoolSlot<DB>
{
    fn is_open(&self) -> bool {
        self.load().as_ref().is_some_and(|pool| !pool.is_closed())
    }

    fn point_at(&self, options: <DB::Connection as sqlx::Connection>::Options) {
        if let Some(pool) = self.load().as_ref() {
            pool.set_connect_options(options);
        }
    }
}

impl<F: SqlxFlavor> Failover<F> {
    /// Asks for a probe when `e` may mean the server is gone or no longer accepts writes.
    /// Never waits.
    pub(crate) fn observe(&self, e: &sqlx::Error) {
        if may_mean_failover::<F>(e) {
            self.request_probe();
        }
    }

    /// Asks for a probe when a failed checkout from `pool` may mean the server is gone: not
    /// when every connection of a full pool is checked out (a timeout then says the pool is
    /// too small, not that the server left).
    pub(crate) fn observe_checkout(&self, e: &Error, pool: &Pool<F::DB>) {
        let saturated = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
        if e.kind() == ErrorKind::Transient && !saturated {
            self.request_probe();
        }
    }

    /// Checks a new pooled connection (the pool's after-connect): with `read-write`, a
    /// read-only server's connection is refused (the pool then tries again, on the options a
    /// probe will have pointed elsewhere).
    pub(crate) async fn check_new(
        &self,
        conn: &mut Conn<F>,
    ) -> std::result::Result<(), sqlx::Error> {
        if !self.require_writable() || F::is_writable(conn).await? {
            return Ok(());
        }
        Err(sqlx::Error::Protocol(self.refuse_read_only().into()))
    }
}

/// Whether `e` may mean the pool's server is gone or no longer accepts writes: connection
/// failures, a checkout that timed out, and the server errors the flavor names (shutdown,
/// read-only transaction).
fn may_mean_failover<F: SqlxFlavor>(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => F::means_failover(db.as_ref()),
        other => classify::<F>(other) == ErrorKind::Transient,
    }
}
