//! The neutral handle on SQL Server: `$n` placeholders rewritten to `@Pn`, values bound as
//! tiberius parameters, rows decoded from tiberius's column data; the executor and its
//! transactions.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tiberius::{ColumnData, ToSql};

use super::{MssqlConnection, MssqlPool, TiberiusClient, tiberius_error};
use crate::config::DefaultOrm;
use crate::driver::{SqlExecutor, SqlTransaction};
use crate::error::{Operation, Result};
use crate::sql::placeholders::{TRANSACT_SQL, rewrite};
use crate::sql::{Row, Value};

fn rewrite_placeholders(sql: &str) -> Cow<'_, str> {
    rewrite(sql, &TRANSACT_SQL, |out, n| {
        out.push_str("@P");
        out.push_str(&n.to_string());
    })
    .sql
}

fn to_sql(value: &Value) -> Box<dyn ToSql + '_> {
    match value {
        Value::Null => Box::new(Option::<&str>::None),
        Value::Bool(v) => Box::new(*v),
        Value::Int(v) => Box::new(*v),
        Value::Float(v) => Box::new(*v),
        Value::Text(v) => Box::new(v.as_str()),
        Value::Bytes(v) => Box::new(v.as_slice()),
    }
}

async fn execute(
    client: &mut TiberiusClient,
    sql: &str,
    params: &[Value],
) -> tiberius::Result<u64> {
    let sql = rewrite_placeholders(sql);
    let boxed: Vec<_> = params.iter().map(to_sql).collect();
    let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
    Ok(client.execute(sql.as_ref(), &refs).await?.total())
}

async fn fetch_all(
    client: &mut TiberiusClient,
    sql: &str,
    params: &[Value],
) -> tiberius::Result<Vec<Row>> {
    let sql = rewrite_placeholders(sql);
    let boxed: Vec<_> = params.iter().map(to_sql).collect();
    let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
    let rows = client
        .query(sql.as_ref(), &refs)
        .await?
        .into_first_result()
        .await?;
    let mut columns: Option<Arc<[String]>> = None;
    rows.into_iter()
        .map(|row| {
            let names = columns
                .get_or_insert_with(|| row.columns().iter().map(|c| c.name().to_owned()).collect())
                .clone();
            let values = row
                .into_iter()
                .zip(names.iter())
                .map(|(data, name)| decode(data, name))
                .collect::<tiberius::Result<Vec<_>>>()?;
            Ok(Row::new(names, values))
        })
        .collect()
}

fn decode(data: ColumnData<'static>, column: &str) -> tiberius::Result<Value> {
    let value = match data {
        ColumnData::U8(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map(Value::Int),
        ColumnData::F32(v) => v.map(|v| Value::Float(v.into())),
        ColumnData::F64(v) => v.map(Value::Float),
        ColumnData::Bit(v) => v.map(Value::Bool),
        ColumnData::String(v) => v.map(|v| Value::Text(v.into_owned())),
        ColumnData::Guid(v) => v.map(|v| Value::Text(v.to_string())),
        ColumnData::Binary(v) => v.map(|v| Value::Bytes(v.into_owned())),
        ColumnData::Numeric(v) => v.map(|v| Value::Text(v.to_string())),
        _ => {
            return Err(tiberius::error::Error::Conversion(
                format!(
                    "column `{column}` has a type the neutral handle does not decode; cast it in SQL (e.g. CAST(... AS NVARCHAR(50))) or use the native pool"
                )
                .into(),
            ));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Settles the client only when the operation left the stream in sync (a cancelled or I/O-failed
/// one leaves the client unsettled, and the pool discards it).
fn settle<T>(name: &str, conn: &mut MssqlConnection, outcome: tiberius::Result<T>) -> Result<T> {
    if !matches!(outcome, Err(tiberius::error::Error::Io { .. })) {
        conn.settle();
    }
    outcome.map_err(|e| tiberius_error(name, Operation::Query, e))
}

async fn run_execute(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<u64> {
    conn.begin_operation();
    let outcome = execute(conn, sql, params).await;
    settle(name, conn, outcome)
}

async fn run_fetch(
    name: &str,
    conn: &mut MssqlConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>> {
    conn.begin_operation();
    let outcome = fetch_all(conn, sql, params).await;
    settle(name, conn, outcome)
}

async fn run_simple(name: &str, conn: &mut MssqlConnection, sql: &str) -> Result<()> {
    conn.begin_operation();
    let outcome = match conn.simple_query(sql).await {
        Ok(stream) => stream.into_results().await.map(|_| ()),
        Err(e) => Err(e),
    };
    settle(name, conn, outcome)
}

/// Statements on the bb8 pool: one checkout per call.
pub(super) struct MssqlExecutor {
    pub name: Arc<str>,
    pub pool: MssqlPool,
}

impl SqlExecutor for MssqlExecutor {
    fn layer(&self) -> DefaultOrm {
        DefaultOrm::Native
    }

    fn execute<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            run_execute(&self.name, &mut conn, sql, params).await
        })
    }

    fn fetch_all<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            run_fetch(&self.name, &mut conn, sql, params).await
        })
    }

    /// tiberius reads the whole result; the first row is kept.
    fn fetch_optional<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Option<Row>>> {
        Box::pin(async move { Ok(self.fetch_all(sql, params).await?.into_iter().next()) })
    }

    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTransaction>>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            run_simple(&self.name, &mut conn, "BEGIN TRANSACTION").await?;
            // Unsettled while open: dropped without commit or rollback, the client is discarded
            // rather than returned mid-transaction.
            conn.begin_operation();
            Ok(Box::new(MssqlTransaction {
                name: self.name.clone(),
                conn,
            }) as Box<dyn SqlTransaction>)
        })
    }
}

struct MssqlTransaction {
    name: Arc<str>,
    conn: MssqlConnection,
}

impl SqlTransaction for MssqlTransaction {
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let out = run_execute(&self.name, &mut self.conn, sql, params).await;
            self.conn.begin_operation();
            out
        })
    }

    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let out = run_fetch(&self.name, &mut self.conn, sql, params).await;
            self.conn.begin_operation();
            out
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { run_simple(&self.name, &mut self.conn, "COMMIT TRANSACTION").await })
    }

    fn rollback(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(
            async move { run_simple(&self.name, &mut self.conn, "ROLLBACK TRANSACTION").await },
        )
    }
}
