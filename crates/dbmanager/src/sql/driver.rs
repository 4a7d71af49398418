//! Binding [`Value`]s into sqlx queries and decoding sqlx rows into [`Row`]s, per backend.

use std::sync::Arc;

use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};

use super::value::{Row, Value};

/// A problem decoding a column, reported as a query error.
pub(crate) fn unsupported_column(column: &str, type_name: &str) -> sqlx::Error {
    sqlx::Error::Decode(
        format!(
            "column `{column}` has type {type_name}, which the neutral handle does not decode; cast it in SQL (e.g. `::text`) or use the native pool"
        )
        .into(),
    )
}

fn column_names<R: sqlx::Row>(row: &R) -> Arc<[String]> {
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// Decodes a whole result, sharing one column-name list across its rows.
pub(crate) fn decode_rows<'a, R, F>(
    rows: impl IntoIterator<Item = &'a R>,
    decode: F,
) -> Result<Vec<Row>, sqlx::Error>
where
    R: sqlx::Row + 'a,
    F: Fn(&R) -> Result<Vec<Value>, sqlx::Error>,
{
    let mut columns: Option<Arc<[String]>> = None;
    rows.into_iter()
        .map(|r| {
            let names = columns.get_or_insert_with(|| column_names(r)).clone();
            decode(r).map(|values| Row::new(names, values))
        })
        .collect()
}

/// Generates `execute` and `fetch_all` over any sqlx executor of one backend.
macro_rules! sqlx_backend {
    ($module:ident, $db:ty, $null:expr, $decode:path) => {
        pub(crate) mod $module {
            use super::super::value::{Row, Value};
            use sqlx::AssertSqlSafe;

            fn bind<'q>(
                sql: &'q str,
                params: &'q [Value],
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for param in params {
                    query = match param {
                        Value::Null => query.bind($null),
                        Value::Bool(v) => query.bind(*v),
                        Value::Int(v) => query.bind(*v),
                        Value::Float(v) => query.bind(*v),
                        Value::Text(v) => query.bind(v.as_str()),
                        Value::Bytes(v) => query.bind(v.as_slice()),
                    };
                }
                query
            }

            pub(crate) async fn execute<'e, E>(
                executor: E,
                sql: &str,
                params: &[Value],
            ) -> Result<u64, sqlx::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                Ok(bind(sql, params).execute(executor).await?.rows_affected())
            }

            pub(crate) async fn fetch_all<'e, E>(
                executor: E,
                sql: &str,
                params: &[Value],
            ) -> Result<Vec<Row>, sqlx::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let rows = bind(sql, params).fetch_all(executor).await?;
                super::decode_rows(&rows, $decode)
            }

            pub(crate) async fn fetch_optional<'e, E>(
                executor: E,
                sql: &str,
                params: &[Value],
            ) -> Result<Option<Row>, sqlx::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let row = bind(sql, params).fetch_optional(executor).await?;
                Ok(super::decode_rows(row.as_ref(), $decode)?.pop())
            }
        }
    };
}

#[cfg(feature = "postgres")]
mod pg_null {
    use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, Postgres, types::Oid};

    /// NULL with an unspecified parameter type, so the server infers it from context
    /// (a typed NULL would clash with a column of another type).
    pub(crate) struct UntypedNull;

    impl sqlx::Type<Postgres> for UntypedNull {
        fn type_info() -> PgTypeInfo {
            PgTypeInfo::with_oid(Oid(0))
        }
    }

    impl sqlx::Encode<'_, Postgres> for UntypedNull {
        fn encode_by_ref(
            &self,
            _buf: &mut PgArgumentBuffer,
        ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
            Ok(sqlx::encode::IsNull::Yes)
        }
    }
}

#[cfg(feature = "postgres")]
pub(crate) fn decode_pg_row(row: &sqlx::postgres::PgRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            values.push(Value::Null);
            continue;
        }
        let value = match column.type_info().name() {
            "BOOL" => Value::Bool(row.try_get(i)?),
            "INT2" => Value::Int(row.try_get::<i16, _>(i)?.into()),
            "INT4" => Value::Int(row.try_get::<i32, _>(i)?.into()),
            "INT8" => Value::Int(row.try_get(i)?),
            "OID" => Value::Int(row.try_get::<sqlx::postgres::types::Oid, _>(i)?.0.into()),
            "FLOAT4" => Value::Float(row.try_get::<f32, _>(i)?.into()),
            "FLOAT8" => Value::Float(row.try_get(i)?),
            "BYTEA" => Value::Bytes(row.try_get(i)?),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "CITEXT" => {
                Value::Text(row.try_get(i)?)
            }
            other => {
                return Err(unsupported_column(column.name(), other));
            }
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(feature = "sqlite")]
pub(crate) fn decode_sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
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

#[cfg(feature = "postgres")]
sqlx_backend!(
    postgres,
    sqlx::Postgres,
    super::pg_null::UntypedNull,
    super::decode_pg_row
);
#[cfg(feature = "sqlite")]
sqlx_backend!(
    sqlite,
    sqlx::Sqlite,
    Option::<i64>::None,
    super::decode_sqlite_row
);
