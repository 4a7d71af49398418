//! The neutral handle's executor on a sqlx pool, and its transactions.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::Pool;

use super::rows::ColumnCache;
use super::{SqlxFlavor, sqlx_error};
use crate::config::DefaultOrm;
use crate::error::{Operation, Result};
use crate::sql::{Row, Value};
use crate::sql::{SqlExecutor, SqlTransaction};
use crate::stats::PoolCounters;

/// Writes a flavor's `execute`, `fetch_all` and `fetch_optional` from its `bind` function
/// (`fn(&str, &[Value]) -> Result<sqlx::query::Query<..>, sqlx::Error>`) and its row decoder.
macro_rules! sqlx_statements {
    ($db:ty, $bind:path, $decode:path) => {
        fn execute<'c>(
            conn: &'c mut <$db as sqlx::Database>::Connection,
            sql: &'c str,
            params: &'c [$crate::sql::Value],
        ) -> impl std::future::Future<Output = Result<u64, sqlx::Error>> + Send + 'c {
            async move { Ok($bind(sql, params)?.execute(conn).await?.rows_affected()) }
        }

        fn fetch_all<'c>(
            conn: &'c mut <$db as sqlx::Database>::Connection,
            sql: &'c str,
            params: &'c [$crate::sql::Value],
            columns: &'c $crate::backends::sqlx::rows::ColumnCache,
        ) -> impl std::future::Future<Output = Result<Vec<$crate::sql::Row>, sqlx::Error>> + Send + 'c
        {
            async move {
                let rows = $bind(sql, params)?.fetch_all(conn).await?;
                $crate::backends::sqlx::rows::decode_rows(&rows, columns, $decode)
            }
        }

        fn fetch_optional<'c>(
            conn: &'c mut <$db as sqlx::Database>::Connection,
            sql: &'c str,
            params: &'c [$crate::sql::Value],
            columns: &'c $crate::backends::sqlx::rows::ColumnCache,
        ) -> impl std::future::Future<Output = Result<Option<$crate::sql::Row>, sqlx::Error>>
        + Send
        + 'c {
            async move {
                let row = $bind(sql, params)?.fetch_optional(conn).await?;
                Ok($crate::backends::sqlx::rows::decode_rows(row.as_ref(), columns, $decode)?.pop())
            }
        }
    };
}
pub(crate) use sqlx_statements;

/// Statements on the pool itself: one checkout per call.
pub(super) struct SqlxExecutor<F: SqlxFlavor> {
    pub name: Arc<str>,
    pub pool: Pool<F::DB>,
    pub counters: Arc<PoolCounters>,
    /// Column names of recent results, shared with the transactions begun here.
    pub columns: Arc<ColumnCache>,
    /// Keeps the credentials of new connections current, when they can change.
    pub refresher: Option<Arc<super::credentials::Refresher<F>>>,
    /// The server list, told of errors that may mean a failover.
    pub failover: Option<Arc<super::failover::Failover<F>>>,
}

impl<F: SqlxFlavor> SqlxExecutor<F> {
    async fn checkout(&self) -> Result<sqlx::pool::PoolConnection<F::DB>> {
        let checkout = super::credentials::acquire::<F>(
            &self.name,
            &self.pool,
            &self.counters,
            self.refresher.as_deref(),
        )
        .await;
        if let (Err(e), Some(failover)) = (&checkout, &self.failover) {
            failover.observe_checkout(e, &self.pool);
        }
        checkout
    }

    /// A statement's error, after telling the server list of it.
    fn failed(&self, operation: Operation, e: sqlx::Error) -> crate::error::Error {
        if let Some(failover) = &self.failover {
            failover.observe(&e);
        }
        sqlx_error::<F>(&self.name, operation, e)
    }
}

impl<F: SqlxFlavor> SqlExecutor for SqlxExecutor<F> {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::Native
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut conn = self.checkout().await?;
            F::execute(&mut conn, sql, params)
                .await
                .map_err(|e| self.failed(Operation::Query, e))
        })
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let mut conn = self.checkout().await?;
            F::fetch_all(&mut conn, sql, params, &self.columns)
                .await
                .map_err(|e| self.failed(Operation::Query, e))
        })
    }

    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move {
            let mut conn = self.checkout().await?;
            F::fetch_optional(&mut conn, sql, params, &self.columns)
                .await
                .map_err(|e| self.failed(Operation::Query, e))
        })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            if let Some(refresher) = &self.refresher {
                refresher.before_checkout(&self.pool).await;
            }
            let tx = self
                .pool
                .begin()
                .await
                .map_err(|e| self.failed(Operation::Begin, e))?;
            Ok(Box::new(SqlxTransaction::<F> {
                name: self.name.clone(),
                tx,
                columns: self.columns.clone(),
                failover: self.failover.clone(),
            }) as Box<dyn SqlTransaction>)
        })
    }
}

/// A sqlx transaction; sqlx rolls it back when dropped open.
struct SqlxTransaction<F: SqlxFlavor> {
    name: Arc<str>,
    tx: sqlx::Transaction<'static, F::DB>,
    columns: Arc<ColumnCache>,
    failover: Option<Arc<super::failover::Failover<F>>>,
}

impl<F: SqlxFlavor> SqlxTransaction<F> {
    /// A statement's error, after telling the server list of it.
    fn failed(&self, operation: Operation, e: sqlx::Error) -> crate::error::Error {
        if let Some(failover) = &self.failover {
            failover.observe(&e);
        }
        sqlx_error::<F>(&self.name, operation, e)
    }
}

impl<F: SqlxFlavor> SqlTransaction for SqlxTransaction<F> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            F::execute(&mut self.tx, sql, params)
                .await
                .map_err(|e| self.failed(Operation::Query, e))
        })
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            F::fetch_all(&mut self.tx, sql, params, &self.columns)
                .await
                .map_err(|e| self.failed(Operation::Query, e))
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let (name, failover) = (self.name, self.failover);
            self.tx.commit().await.map_err(|e| {
                if let Some(failover) = &failover {
                    failover.observe(&e);
                }
                sqlx_error::<F>(&name, Operation::Commit, e)
            })
        })
    }

    fn rollback(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let name = self.name;
            self.tx
                .rollback()
                .await
                .map_err(|e| sqlx_error::<F>(&name, Operation::Rollback, e))
        })
    }
}
