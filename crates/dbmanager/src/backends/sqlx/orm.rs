//! The neutral handle's executor on SeaORM's `DatabaseConnection` over the same sqlx pool.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::{
    ConnectionTrait, DbErr, RuntimeErr, Statement, TransactionTrait as _, Value as OrmValue,
};

use super::{Ended, SqlxFlavor, classify, in_order};
use crate::config::DefaultOrm;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::placeholders::{Target, prepare};
use crate::sql::{Row, Value};
use crate::sql::{SqlExecutor, SqlTransaction};

pub(super) struct SeaOrmExecutor<F: SqlxFlavor> {
    name: Arc<str>,
    db: sea_orm::DatabaseConnection,
    /// The pool under `db`, whose connections' cached statements are closed when the server
    /// has no prepared statement left (see [`super::CacheFailure::Exhausted`]).
    pool: sqlx::Pool<F::DB>,
    /// Behind a transaction-mode pooler: what every transaction runs first, and every
    /// statement runs in a transaction (see `PerTransaction`).
    setup: Option<Arc<str>>,
    flavor: PhantomData<fn() -> F>,
}

impl<F: SqlxFlavor> SeaOrmExecutor<F> {
    pub(super) fn new(
        name: Arc<str>,
        db: sea_orm::DatabaseConnection,
        pool: sqlx::Pool<F::DB>,
        setup: Option<Arc<str>>,
    ) -> Self {
        Self {
            name,
            db,
            pool,
            setup,
            flavor: PhantomData,
        }
    }

    /// A SeaORM transaction, set up for the pooler when there is one.
    async fn transaction(&self) -> Result<sea_orm::DatabaseTransaction> {
        let begun = if F::IMMEDIATE_TRANSACTIONS {
            let immediate = sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            match self.db.begin_with_options(immediate).await {
                Err(e) if sqlx_cause(&e).is_some_and(F::immediate_refused) => self.db.begin().await,
                begun => begun,
            }
        } else {
            self.db.begin().await
        };
        let tx = begun.map_err(|e| error::<F>(&self.name, Operation::Begin, e))?;
        if let Some(setup) = &self.setup {
            tx.execute_unprepared(setup)
                .await
                .map_err(|e| error::<F>(&self.name, Operation::Begin, e))?;
        }
        Ok(tx)
    }

    /// Ends the transaction a statement ran in on its own: committed when it succeeded, else
    /// rolled back (and the statement's error reported).
    async fn finish<T>(&self, tx: sea_orm::DatabaseTransaction, outcome: Result<T>) -> Result<T> {
        match outcome {
            Ok(out) => {
                tx.commit()
                    .await
                    .map_err(|e| error::<F>(&self.name, Operation::Commit, e))?;
                Ok(out)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Whether `outcome` failed because the server has no prepared statement left; if so, a
    /// pooled connection's cached statements are closed first (they count against the
    /// server-wide limit, which makes any connection's a good choice), so the statement may
    /// run once more. Cold: boxed by the callers.
    async fn freed_statements<T>(&self, outcome: &Result<T>) -> bool {
        let exhausted = outcome
            .as_ref()
            .err()
            .and_then(sqlx_cause_of)
            .and_then(super::executor::cache_failure::<F>)
            == Some(super::CacheFailure::Exhausted);
        if !exhausted {
            return false;
        }
        match self.pool.acquire().await {
            Ok(mut conn) => sqlx::Connection::clear_cached_statements(&mut *conn)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// A statement outside a transaction (`run` sends it); once more after the server ran out
    /// of prepared statements (see [`Self::freed_statements`]).
    async fn direct<T, Fut: Future<Output = Result<T>>>(&self, run: impl Fn() -> Fut) -> Result<T> {
        let outcome = run().await;
        if outcome.is_ok() || !Box::pin(self.freed_statements(&outcome)).await {
            return outcome;
        }
        run().await
    }

    async fn direct_execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.direct(|| execute::<F>(&self.name, &self.db, sql, params))
            .await
    }

    async fn direct_fetch_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.direct(|| fetch_all::<F>(&self.name, &self.db, sql, params))
            .await
    }

    /// Runs a statement outside a transaction behind a transaction-mode pooler: in a
    /// transaction of its own. (A separate future from the direct one, so that the default
    /// path's stays as small as it was.)
    async fn standalone_execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        let tx = self.transaction().await?;
        let outcome = execute::<F>(&self.name, &tx, sql, params).await;
        self.finish(tx, outcome).await
    }

    /// Like [`Self::standalone_execute`], for a query.
    async fn standalone_fetch_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let tx = self.transaction().await?;
        let outcome = fetch_all::<F>(&self.name, &tx, sql, params).await;
        self.finish(tx, outcome).await
    }
}

/// The sqlx error inside a SeaORM error, if there is one.
fn sqlx_cause(e: &DbErr) -> Option<&sqlx::Error> {
    match e {
        DbErr::Conn(RuntimeErr::SqlxError(s))
        | DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s)) => Some(s),
        _ => None,
    }
}

/// The sqlx error behind one of the crate's errors that wraps a SeaORM error, if there is one.
fn sqlx_cause_of(e: &Error) -> Option<&sqlx::Error> {
    match e {
        Error::Database { source, .. } => source.downcast_ref::<DbErr>().and_then(sqlx_cause),
        _ => None,
    }
}

fn error<F: SqlxFlavor>(name: &str, operation: Operation, e: DbErr) -> Error {
    let kind = match (&e, sqlx_cause(&e)) {
        (_, Some(s)) => {
            if matches!(s, sqlx::Error::PoolClosed) {
                return Error::closed(name, operation);
            }
            classify::<F>(s)
        }
        (DbErr::ConnectionAcquire(_), None) => ErrorKind::Transient,
        _ => ErrorKind::Query,
    };
    Error::database(name, operation, kind, e)
}

/// A parameter as SeaORM binds it: the same mapping as the native layer of each flavor
/// (UUIDs as text where the flavor stores them so; arrays only where the flavor has them).
fn to_orm<F: SqlxFlavor>(value: &Value, at: usize) -> std::result::Result<OrmValue, sqlx::Error> {
    Ok(match value {
        Value::Null => OrmValue::String(None),
        Value::Bool(v) => OrmValue::Bool(Some(*v)),
        Value::Int(v) => OrmValue::BigInt(Some(*v)),
        Value::Float(v) => OrmValue::Double(Some(*v)),
        Value::Text(v) => OrmValue::String(Some(v.clone())),
        Value::Bytes(v) => OrmValue::Bytes(Some(v.clone())),
        Value::Decimal(v) if F::TEXT_DECIMALS => OrmValue::String(Some(v.to_string())),
        Value::Decimal(v) => OrmValue::BigDecimal(Some(Box::new(v.clone()))),
        Value::Uuid(v) if F::TEXT_UUIDS => OrmValue::String(Some(v.hyphenated().to_string())),
        Value::Uuid(v) => OrmValue::Uuid(Some(*v)),
        Value::Json(v) => OrmValue::Json(Some(Box::new(v.clone()))),
        Value::TimestampTz(v) => {
            OrmValue::ChronoDateTimeWithTimeZone(Some(chrono::DateTime::from_naive_utc_and_offset(
                F::orm_timestamp(v.naive_utc()),
                *v.offset(),
            )))
        }
        Value::Timestamp(v) => OrmValue::ChronoDateTime(Some(F::orm_timestamp(*v))),
        Value::Date(v) => OrmValue::ChronoDate(Some(*v)),
        Value::Time(v) => OrmValue::ChronoTime(Some(*v)),
        Value::Array(items) if F::ARRAYS => array::<F>(items, at)?,
        other @ (Value::Interval(_) | Value::Array(_)) => {
            return Err(sqlx::Error::Encode(
                format!(
                    "parameter ${at}: SeaORM cannot bind {} values here; use the native layer",
                    other.type_name()
                )
                .into(),
            ));
        }
    })
}

/// A homogeneous array without NULL elements: sea-query binds arrays as `Vec<T>` and panics on
/// a NULL element, so one is refused here.
fn array<F: SqlxFlavor>(items: &[Value], at: usize) -> std::result::Result<OrmValue, sqlx::Error> {
    use sea_orm::sea_query::ArrayType as T;
    if items.iter().any(|v| matches!(v, Value::Null)) {
        return Err(sqlx::Error::Encode(
            format!(
                "parameter ${at}: SeaORM cannot bind arrays with NULL elements; use the native layer"
            )
            .into(),
        ));
    }
    let first = items.iter().find(|v| !matches!(v, Value::Null));
    let (kind, null) = match first.map(|v| to_orm::<F>(v, at)).transpose()? {
        None | Some(OrmValue::String(_)) => (T::String, OrmValue::String(None)),
        Some(OrmValue::Bool(_)) => (T::Bool, OrmValue::Bool(None)),
        Some(OrmValue::BigInt(_)) => (T::BigInt, OrmValue::BigInt(None)),
        Some(OrmValue::Double(_)) => (T::Double, OrmValue::Double(None)),
        Some(OrmValue::Bytes(_)) => (T::Bytes, OrmValue::Bytes(None)),
        Some(OrmValue::BigDecimal(_)) => (T::BigDecimal, OrmValue::BigDecimal(None)),
        Some(OrmValue::Uuid(_)) => (T::Uuid, OrmValue::Uuid(None)),
        Some(OrmValue::Json(_)) => (T::Json, OrmValue::Json(None)),
        Some(OrmValue::ChronoDateTimeWithTimeZone(_)) => (
            T::ChronoDateTimeWithTimeZone,
            OrmValue::ChronoDateTimeWithTimeZone(None),
        ),
        Some(OrmValue::ChronoDateTime(_)) => (T::ChronoDateTime, OrmValue::ChronoDateTime(None)),
        Some(OrmValue::ChronoDate(_)) => (T::ChronoDate, OrmValue::ChronoDate(None)),
        Some(OrmValue::ChronoTime(_)) => (T::ChronoTime, OrmValue::ChronoTime(None)),
        Some(_) => {
            return Err(sqlx::Error::Encode(
                format!("parameter ${at}: arrays of arrays are not supported").into(),
            ));
        }
    };
    let elements = items
        .iter()
        .map(|v| match v {
            Value::Null => Ok(null.clone()),
            v => {
                let element = to_orm::<F>(v, at)?;
                if std::mem::discriminant(&element) == std::mem::discriminant(&null) {
                    Ok(element)
                } else {
                    Err(sqlx::Error::Encode(
                        format!(
                            "parameter ${at}: an array's elements must all be of one type (found a {})",
                            v.type_name()
                        )
                        .into(),
                    ))
                }
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(OrmValue::Array(kind, Some(Box::new(elements))))
}

fn orm_values<'v, F: SqlxFlavor>(
    name: &str,
    params: impl IntoIterator<Item = &'v Value>,
) -> Result<Vec<OrmValue>> {
    params
        .into_iter()
        .enumerate()
        .map(|(i, v)| to_orm::<F>(v, i + 1))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::database(name, Operation::Query, ErrorKind::Query, e))
}

/// The statement in the driver's placeholder syntax, its placeholders checked against the
/// parameters; SeaORM passes SQL to sqlx as it is.
///
/// Every SeaORM value is typed, a NULL one too (`String(None)` is text, which PostgreSQL
/// refuses for an `int` column), so a NULL parameter is written into the statement as the
/// keyword `NULL`, which the server types by its context. Where the driver reads `$n`, the
/// NULL is still bound in its place, unused, so the other numbers stay.
fn statement<F: SqlxFlavor>(
    name: &str,
    db: &impl ConnectionTrait,
    sql: &str,
    params: &[Value],
) -> Result<Statement> {
    F::check_statement(sql, params)
        .map_err(|e| Error::database(name, Operation::Query, ErrorKind::Query, e))?;
    let backend = db.get_database_backend();
    let prepared = prepare(sql, F::PLACEHOLDERS, params, true)
        .map_err(|e| Error::database(name, Operation::Query, ErrorKind::Query, e))?;
    let values = if F::PLACEHOLDERS.target == Target::Question {
        let ordered = in_order(&prepared.order, params)
            .map_err(|e| Error::database(name, Operation::Query, ErrorKind::Query, e))?;
        orm_values::<F>(name, ordered)?
    } else {
        orm_values::<F>(name, params)?
    };
    Ok(Statement::from_sql_and_values(
        backend,
        F::orm_text(prepared.sql.into_owned(), params),
        values,
    ))
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
        match self.setup {
            None => Box::pin(self.direct_execute(sql, params)),
            Some(_) => Box::pin(self.standalone_execute(sql, params)),
        }
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        match self.setup {
            None => Box::pin(self.direct_fetch_all(sql, params)),
            Some(_) => Box::pin(self.standalone_fetch_all(sql, params)),
        }
    }

    /// SeaORM reads the whole result; the first row is kept.
    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        match self.setup {
            None => {
                Box::pin(
                    async move { Ok(self.direct_fetch_all(sql, params).await?.into_iter().next()) },
                )
            }
            Some(_) => Box::pin(async move {
                Ok(self
                    .standalone_fetch_all(sql, params)
                    .await?
                    .into_iter()
                    .next())
            }),
        }
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let tx = self.transaction().await?;
            Ok(Box::new(SeaOrmTransaction::<F> {
                name: self.name.clone(),
                tx,
                ended: None,
                flavor: PhantomData,
            }) as Box<dyn SqlTransaction>)
        })
    }
}

struct SeaOrmTransaction<F> {
    name: Arc<str>,
    tx: sea_orm::DatabaseTransaction,
    /// Set when a statement's error made the server end the transaction (see [`Ended`]).
    ended: Option<Ended>,
    flavor: PhantomData<fn() -> F>,
}

impl<F: SqlxFlavor> SeaOrmTransaction<F> {
    /// Notes whether a statement's error ended the transaction; returns the error.
    async fn checked<T>(&mut self, outcome: Result<T>) -> Result<T> {
        let Err(e) = outcome else {
            return outcome;
        };
        let Some(cause) = sqlx_cause_of(&e) else {
            return Err(e);
        };
        let ended = match Ended::question::<F>(cause) {
            None => false,
            Some(sql) => Ended::answer(
                fetch_all::<F>(&self.name, &self.tx, sql, &[])
                    .await
                    .map(|rows| rows.into_iter().next()),
            ),
        };
        if ended {
            self.ended = Some(Ended::by::<F>(cause));
        }
        Err(e)
    }
}

impl<F: SqlxFlavor> SqlTransaction for SeaOrmTransaction<F> {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            Ended::refuse(self.ended.as_ref(), &self.name, Operation::Query)?;
            let outcome = execute::<F>(&self.name, &self.tx, sql, params).await;
            self.checked(outcome).await
        })
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            Ended::refuse(self.ended.as_ref(), &self.name, Operation::Query)?;
            let outcome = fetch_all::<F>(&self.name, &self.tx, sql, params).await;
            self.checked(outcome).await
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(ended) = self.ended {
                // Ends SeaORM's transaction too, so the connection goes back clean.
                let _ = self.tx.rollback().await;
                return Err(ended.error(&self.name, Operation::Commit));
            }
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
