//! Binding [`Value`]s into SQLite queries and decoding SQLite rows.

use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _, ValueRef as _};

use crate::backends::sqlx::rows::unsupported_column;
use crate::sql::Value;

/// The query with its parameters bound; SQLite reads `$n` as numbered parameters.
pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, Sqlite, SqliteArguments>, sqlx::Error> {
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for param in params {
        query = match param {
            Value::Null => query.bind(Option::<i64>::None),
            Value::Bool(v) => query.bind(*v),
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(v.as_slice()),
        };
    }
    Ok(query)
}

pub(super) fn decode(row: &SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        // SQLite is dynamically typed: decode by the value's storage class, not the column's.
        let storage = raw.type_info().name().to_owned();
        let value = match storage.as_str() {
            "INTEGER" | "BOOLEAN" | "INT8" => Value::Int(row.try_get(i)?),
            "REAL" => Value::Float(row.try_get(i)?),
            "TEXT" | "DATETIME" | "DATE" | "TIME" => Value::Text(row.try_get(i)?),
            "BLOB" => Value::Bytes(row.try_get(i)?),
            other => return Err(unsupported_column(column.name(), other)),
        };
        values.push(value);
    }
    Ok(values)
}
