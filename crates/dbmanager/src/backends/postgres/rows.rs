//! Binding [`Value`]s into PostgreSQL queries and decoding PostgreSQL rows.

use sqlx::postgres::{PgArguments, PgRow, Postgres};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _, ValueRef as _};

use crate::backends::sqlx::rows::unsupported_column;
use crate::sql::Value;

/// The query with its parameters bound; `$n` placeholders are PostgreSQL's own.
pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, Postgres, PgArguments>, sqlx::Error> {
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for param in params {
        query = match param {
            Value::Null => query.bind(pg_null::UntypedNull),
            Value::Bool(v) => query.bind(*v),
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(v.as_slice()),
        };
    }
    Ok(query)
}

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

pub(super) fn decode(row: &PgRow) -> Result<Vec<Value>, sqlx::Error> {
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
