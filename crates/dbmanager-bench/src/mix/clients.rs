//! The query mix as each client runs it. Every client runs the same statements (from
//! [`super::workload`]) and reads every column of every row into typed values, so the
//! comparison is of the clients, not of what they were asked to do.

use dbmanager::reexports::sea_orm::{
    ConnectionTrait, DbBackend, Statement, TransactionTrait, Value as OrmValue,
};
use dbmanager::reexports::sqlx::{self, PgPool};
use dbmanager::{Manager, Value};
use futures_util::future::BoxFuture;

use super::workload::{INSERT, Kind, POINT, RANGE, TX_LOCK, TX_LOG, TX_UPDATE};

pub type Outcome = Result<(), String>;

/// One way of running the mix's requests.
pub trait MixClient: Send + Sync + 'static {
    /// Runs one request of `kind` for item `id`.
    fn run(&self, kind: Kind, id: i64) -> BoxFuture<'_, Outcome>;
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// sqlx on a pool it is handed (raw) or looks up per request (dbmanager's native layer).
pub enum Sqlx {
    Raw(PgPool),
    Managed(Manager, &'static str),
}

impl Sqlx {
    fn pool(&self) -> Result<PgPool, String> {
        match self {
            Sqlx::Raw(pool) => Ok(pool.clone()),
            Sqlx::Managed(m, name) => m.postgres(name).map_err(text),
        }
    }
}

type ItemRow = (i64, String, i64);

async fn sqlx_run(pool: PgPool, kind: Kind, id: i64) -> Outcome {
    match kind {
        Kind::Point => {
            let row: Option<ItemRow> = sqlx::query_as(POINT)
                .bind(id)
                .fetch_optional(&pool)
                .await
                .map_err(text)?;
            row.ok_or("no row")?;
        }
        Kind::Range => {
            let rows: Vec<ItemRow> = sqlx::query_as(RANGE)
                .bind(id)
                .fetch_all(&pool)
                .await
                .map_err(text)?;
            expect_range(rows.len())?;
        }
        Kind::Insert => {
            sqlx::query(INSERT)
                .bind(id)
                .execute(&pool)
                .await
                .map_err(text)?;
        }
        Kind::Transaction => {
            let mut tx = pool.begin().await.map_err(text)?;
            let _: (i64,) = sqlx::query_as(TX_LOCK)
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(text)?;
            for sql in [TX_UPDATE, TX_LOG] {
                sqlx::query(sql)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(text)?;
            }
            tx.commit().await.map_err(text)?;
        }
    }
    Ok(())
}

impl MixClient for Sqlx {
    fn run(&self, kind: Kind, id: i64) -> BoxFuture<'_, Outcome> {
        let pool = self.pool();
        Box::pin(async move { sqlx_run(pool?, kind, id).await })
    }
}

fn expect_range(rows: usize) -> Outcome {
    if rows == super::workload::RANGE_ROWS as usize {
        Ok(())
    } else {
        Err(format!("the range select returned {rows} rows"))
    }
}

/// deadpool-postgres with tokio-postgres's per-connection cache of prepared statements.
pub struct Deadpool(pub deadpool_postgres::Pool);

fn item(row: &tokio_postgres::Row) -> Result<ItemRow, String> {
    Ok((
        row.try_get(0).map_err(text)?,
        row.try_get(1).map_err(text)?,
        row.try_get(2).map_err(text)?,
    ))
}

impl MixClient for Deadpool {
    fn run(&self, kind: Kind, id: i64) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let mut client = self.0.get().await.map_err(text)?;
            match kind {
                Kind::Point | Kind::Range => {
                    let sql = if kind == Kind::Point { POINT } else { RANGE };
                    let stmt = client.prepare_cached(sql).await.map_err(text)?;
                    let rows = client.query(&stmt, &[&id]).await.map_err(text)?;
                    let items = rows.iter().map(item).collect::<Result<Vec<_>, _>>()?;
                    if kind == Kind::Point && items.len() != 1 {
                        return Err("no row".into());
                    }
                    if kind == Kind::Range {
                        expect_range(items.len())?;
                    }
                }
                Kind::Insert => {
                    let stmt = client.prepare_cached(INSERT).await.map_err(text)?;
                    client.execute(&stmt, &[&id]).await.map_err(text)?;
                }
                Kind::Transaction => {
                    let tx = client.transaction().await.map_err(text)?;
                    let lock = tx.prepare_cached(TX_LOCK).await.map_err(text)?;
                    let _: i64 = tx
                        .query_one(&lock, &[&id])
                        .await
                        .map_err(text)?
                        .try_get(0)
                        .map_err(text)?;
                    for sql in [TX_UPDATE, TX_LOG] {
                        let stmt = tx.prepare_cached(sql).await.map_err(text)?;
                        tx.execute(&stmt, &[&id]).await.map_err(text)?;
                    }
                    tx.commit().await.map_err(text)?;
                }
            }
            Ok(())
        })
    }
}

/// dbmanager's backend-neutral handle on the named connection, whatever its driver.
pub struct Neutral(pub Manager, pub &'static str);

fn neutral_item(row: &dbmanager::Row) -> Result<ItemRow, String> {
    match (row.get(0), row.get(1), row.get(2)) {
        (Some(id), Some(name), Some(qty)) => Ok((id, name, qty)),
        _ => Err("a row without the item's columns".into()),
    }
}

impl MixClient for Neutral {
    fn run(&self, kind: Kind, id: i64) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let db = self.0.database(self.1).map_err(text)?;
            let params = [Value::Int(id)];
            match kind {
                Kind::Point => {
                    let row = db.fetch_one(POINT, &params).await.map_err(text)?;
                    neutral_item(&row)?;
                }
                Kind::Range => {
                    let rows = db.fetch_all(RANGE, &params).await.map_err(text)?;
                    for row in &rows {
                        neutral_item(row)?;
                    }
                    expect_range(rows.len())?;
                }
                Kind::Insert => {
                    db.execute(INSERT, &params).await.map_err(text)?;
                }
                Kind::Transaction => {
                    let mut tx = db.begin().await.map_err(text)?;
                    let locked = tx.fetch_all(TX_LOCK, &params).await.map_err(text)?;
                    locked
                        .first()
                        .and_then(|r| r.get::<i64>(0))
                        .ok_or("no row to lock")?;
                    for sql in [TX_UPDATE, TX_LOG] {
                        tx.execute(sql, &params).await.map_err(text)?;
                    }
                    tx.commit().await.map_err(text)?;
                }
            }
            Ok(())
        })
    }
}

/// SeaORM's raw statements on the named connection's pool.
pub struct SeaOrm(pub Manager, pub &'static str);

fn statement(sql: &str, id: i64) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, [OrmValue::from(id)])
}

fn orm_item(row: &dbmanager::reexports::sea_orm::QueryResult) -> Result<ItemRow, String> {
    Ok((
        row.try_get_by_index(0).map_err(text)?,
        row.try_get_by_index(1).map_err(text)?,
        row.try_get_by_index(2).map_err(text)?,
    ))
}

impl MixClient for SeaOrm {
    fn run(&self, kind: Kind, id: i64) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let orm = self.0.sea_orm(self.1).map_err(text)?;
            match kind {
                Kind::Point => {
                    let row = orm
                        .query_one_raw(statement(POINT, id))
                        .await
                        .map_err(text)?
                        .ok_or("no row")?;
                    orm_item(&row)?;
                }
                Kind::Range => {
                    let rows = orm
                        .query_all_raw(statement(RANGE, id))
                        .await
                        .map_err(text)?;
                    for row in &rows {
                        orm_item(row)?;
                    }
                    expect_range(rows.len())?;
                }
                Kind::Insert => {
                    orm.execute_raw(statement(INSERT, id)).await.map_err(text)?;
                }
                Kind::Transaction => {
                    let tx = orm.begin().await.map_err(text)?;
                    let locked = tx
                        .query_one_raw(statement(TX_LOCK, id))
                        .await
                        .map_err(text)?
                        .ok_or("no row to lock")?;
                    let _: i64 = locked.try_get_by_index(0).map_err(text)?;
                    for sql in [TX_UPDATE, TX_LOG] {
                        tx.execute_raw(statement(sql, id)).await.map_err(text)?;
                    }
                    tx.commit().await.map_err(text)?;
                }
            }
            Ok(())
        })
    }
}
