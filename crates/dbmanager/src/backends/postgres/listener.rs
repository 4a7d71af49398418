//! The sqlx session of PostgreSQL's LISTEN/NOTIFY listener (the loop is
//! `pg_common::listener`).
//!
//! sqlx offers notifications only through `PgListener`, which takes its connection from a pool.
//! So each session is a `PgListener` on a pool of one connection made for that session alone,
//! and its auto-reconnect is never used (`eager_reconnect(false)`): sqlx's own reconnect would
//! be silent, and a `PgListener` made on the connection's main pool would make `PgPool::close`
//! wait for it; neither happens here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use super::{Pg, connect_options};
use crate::backends::pg_common::listener::{ListenSession, NOTIFY_SQL, listen_all, run};
use crate::backends::sqlx::failover::{Failover, SqlxDialer};
use crate::backends::sqlx::sqlx_error;
use crate::error::{Operation, Result};
use crate::listen::{ListenDriver, ListenSettings, ListenerTask, Notification};

pub(crate) static LISTEN: ListenDriver = ListenDriver {
    run: run_sqlx,
    notify_sql: NOTIFY_SQL,
};

fn run_sqlx(task: ListenerTask) -> BoxFuture<'static, ()> {
    Box::pin(run::<SqlxSession>(task))
}

/// A `PgListener` on a pool of its own.
pub(crate) struct SqlxSession {
    listener: PgListener,
    pool: PgPool,
}

fn notification(n: &PgNotification) -> Notification {
    Notification {
        channel: n.channel().to_owned(),
        payload: n.payload().to_owned(),
        process_id: n.process_id(),
    }
}

impl ListenSession for SqlxSession {
    async fn open(
        name: &Arc<str>,
        current: &ListenSettings,
        channels: &BTreeSet<String>,
    ) -> Result<Self> {
        let (credentials, _) = current.credentials.current().await?;
        let mut options =
            connect_options(name, &current.config, &current.settings, &credentials).await?;
        let limit = current.settings.connect_timeout;
        let failed = |e| sqlx_error::<Pg>(name, Operation::Connect, e);
        // With a server list, the session goes where the pool's writes go (a standby refuses
        // LISTEN), found the same way, at every reconnect.
        if let Some(plan) = super::servers::plan(name, &current.config, &options)? {
            let servers = Failover::<Pg>::new(
                name,
                false,
                SqlxDialer::default(),
                plan,
                &Arc::default(),
                &current.credentials,
                limit,
            );
            let (index, probe) = servers.find().await?;
            let _ = probe.close().await;
            options = servers.options(index).await;
        }
        // A direct connection first: a pool reports a refused port as a bare timeout after
        // retrying for the whole limit, and hides an authentication error's cause no better.
        PgConnection::connect_with(&options)
            .await
            .map_err(failed)?
            .close()
            .await
            .map_err(failed)?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(limit)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool).await.map_err(failed)?;
        listener.eager_reconnect(false);
        if let Some(all) = listen_all(channels) {
            sqlx::raw_sql(AssertSqlSafe(all))
                .execute(&mut listener)
                .await
                .map_err(|e| sqlx_error::<Pg>(name, Operation::Listen, e))?;
        }
        Ok(Self { listener, pool })
    }

    async fn recv(&mut self, name: &str) -> Result<Option<Notification>> {
        // Cancel-safe: sqlx consumes a message only once it is whole.
        match self.listener.try_recv().await {
            Ok(n) => Ok(n.as_ref().map(notification)),
            Err(e) => Err(sqlx_error::<Pg>(name, Operation::Listen, e)),
        }
    }

    async fn execute(&mut self, name: &str, sql: String) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut self.listener)
            .await
            .map(|_| ())
            .map_err(|e| sqlx_error::<Pg>(name, Operation::Listen, e))
    }

    fn buffered(&mut self) -> Option<Notification> {
        self.listener.next_buffered().as_ref().map(notification)
    }

    /// The listener's connection goes back to its own pool, which closes it. `PgListener`'s
    /// drop sends `UNLISTEN *` from a task of its own before returning the connection; on a
    /// session whose network went silent that task waits until the socket fails, so the wait
    /// here is bounded and nothing else depends on it.
    async fn close(self, limit: Duration) {
        drop(self.listener);
        let _ = tokio::time::timeout(limit, self.pool.close()).await;
    }
}
