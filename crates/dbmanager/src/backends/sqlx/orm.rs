//! The neutral handle's executor on SeaORM's `DatabaseConnection` over the same sqlx pool.

use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{ConnectionTrait, DbErr, RuntimeErr, Statement, TransactionTrait as _};

use super::{SqlxFlavor, classify, in_order};
use crate::config::DefaultOrm;
use crate::driver::{SqlExecutor, SqlTransaction};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::{Row, Value};

pub(super) struct SeaOrmExecutor<F> {
    name: Arc<str>,
    db: sea_orm::DatabaseConnection,
    flavor: PhantomData<fn() -> F>,
}

impl<F: SqlxFlavor> SeaOrmExecutor<F> {
    pub(super) fn new(name: Arc<str>, db: sea_orm::DatabaseConnection) -> Self {
        Self {
            name,
            db,
            flavor: PhantomData,
        }
    }
}

fn error<F: SqlxFlavor>(name: &str, operation: Operation, e: DbErr) -> Error {
    let kind = match &e {
        DbErr::Conn(RuntimeErr::SqlxError(s))
        | DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s)) => {
            if matches!(**s, sqlx::Error::PoolClosed) {
                return Error::closed(name, operation);
            }
            classify::<F>(s)
        }
        DbErr::ConnectionAcquire(_) => ErrorKind::Transient,
        _ => ErrorKind::Query,
    };
    Error::database(name, operation, kind, e)
}

fn to_orm(value: &Value) -> sea_orm::Value {
    match value {
        Value::Null => sea_orm::Value::String(None),
        Value::Bool(v) => sea_orm::Value::Bool(Some(*v)),
        Value::Int(v) => sea_orm::Value::BigInt(Some(*v)),
        Value::Float(v) => sea_orm::Value::Double(Some(*v)),
        Value::Text(v) => sea_orm::Value::String(Some(v.clone())),
        Value::Bytes(v) => sea_orm::Value::Bytes(Some(v.clone())),
    }
}

/// The statement in the driver's placeholder syntax; SeaORM passes SQL to sqlx as it is.
fn statement<F: SqlxFlavor>(
    name: &str,
    db: &impl ConnectionTrait,
    sql: &str,
    params: &[Value],
) -> Result<Statement> {
    let backend = db.get_database_backend();
    Ok(match F::rewrite(sql) {
        None => Statement::from_sql_and_values(backend, sql, params.iter().map(to_orm)),
        Some(rewritten) => {
            let ordered = in_order(&rewritten.order, params)
                .map_err(|e| Error::database(name, Operation::Query, ErrorKind::Query, e))?;
            Statement::from_sql_and_values(backend, rewritten.sql, ordered.into_iter().map(to_orm))
        }
    })
}

async fn execute<F: SqlxFlavor>(
    name: &str,
    db: &impl ConnectionTrait,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    db.execute_raw(statement::<F>(name, db, sql, params)?)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| error::<F>(name, Operation::Query, e))
}

async fn fetch_all<F: SqlxFlavor>(
    name: &str,
    db: &impl ConnectionTrait,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>> {
    let results = db
        .query_all_raw(statement::<F>(name, db, sql, params)?)
        .await
        .map_err(|e| error::<F>(name, Operation::Query, e))?;
    let decode_error =
        |e: sqlx::Error| Error::database(name, Operation::Query, ErrorKind::Query, e);
    let mut columns = None;
    results
        .iter()
        .map(|r| {
            let values = F::decode_orm_row(r)
                .ok_or_else(|| {
                    decode_error(sqlx::Error::Protocol(
                        "unexpected row type from SeaORM".into(),
                    ))
                })?
                .map_err(decode_error)?;
            let names = columns
                .get_or_insert_with(|| r.column_names().into_iter().collect::<Arc<[String]>>())
                .clone();
            Ok(Row::new(names, values))
        })
        .collect()
}

impl<F: SqlxFlavor> SqlExecutor for SeaOrmExecutor<F> {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::SeaOrm
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(execute::<F>(&self.name, &self.db, sql, params))
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(fetch_all::<F>(&self.name, &self.db, sql, params))
    }

    /// SeaORM reads the whole result; the first row is kept.
    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move {
            Ok(fetch_all::<F>(&self.name, &self.db, sql, params)
                .await?
                .into_iter()
                .next())
        })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let tx = self
                .db
                .begin()
                .await
                .map_err(|e| error::<F>(&self.name, Operation::Begin, e))?;
            Ok(Box::new(SeaOrmTransaction::<F> {
                name: self.name.clone(),
                tx,
                flavor: PhantomData,
            }) as Box<dyn SqlTransaction>)
        })
    }
}

struct SeaOrmTransaction<F> {
    name: Arc<str>,
    tx: sea_orm::DatabaseTransaction,
    flavor: PhantomData<fn() -> F>,
}

impl<F: SqlxFlavor> SqlTransaction for SeaOrmTransaction<F> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(execute::<F>(&self.name, &self.tx, sql, params))
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(fetch_all::<F>(&self.name, &self.tx, sql, params))
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let name = self.name;
            self.tx
                .commit()
                .await
                .map_err(|e| error::<F>(&name, Operation::Commit, e))
        })
    }

    fn rollback(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let name = self.name;
            self.tx
                .rollback()
                .await
                .map_err(|e| error::<F>(&name, Operation::Rollback, e))
        })
    }
}
