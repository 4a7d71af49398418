//! Binding [`Value`]s into MySQL queries (placeholders rewritten to `?`, parameters reordered to
//! match) and decoding MySQL rows.

use sqlx::mysql::{MySql, MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _, ValueRef as _};

use super::My;
use crate::backends::sqlx::rows::unsupported_column;
use crate::backends::sqlx::{SqlxFlavor, in_order};
use crate::sql::Value;

pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, MySql, MySqlArguments>, sqlx::Error> {
    let Some(rewritten) = My::rewrite(sql) else {
        return Ok(sqlx::query(AssertSqlSafe(sql)));
    };
    let ordered = in_order(&rewritten.order, params)?;
    let mut query = sqlx::query(AssertSqlSafe(rewritten.sql.into_owned()));
    for param in ordered {
        query = match param {
            Value::Null => query.bind(Option::<&str>::None),
            Value::Bool(v) => query.bind(*v),
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(v.as_slice()),
        };
    }
    Ok(query)
}

pub(super) fn decode(row: &MySqlRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            values.push(Value::Null);
            continue;
        }
        let value = match column.type_info().name() {
            "BOOLEAN" => Value::Bool(row.try_get(i)?),
            "TINYINT" => Value::Int(row.try_get::<i8, _>(i)?.into()),
            "SMALLINT" => Value::Int(row.try_get::<i16, _>(i)?.into()),
            "MEDIUMINT" | "INT" => Value::Int(row.try_get::<i32, _>(i)?.into()),
            "BIGINT" => Value::Int(row.try_get(i)?),
            "TINYINT UNSIGNED" => Value::Int(row.try_get::<u8, _>(i)?.into()),
            "SMALLINT UNSIGNED" | "YEAR" => Value::Int(row.try_get::<u16, _>(i)?.into()),
            "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => Value::Int(row.try_get::<u32, _>(i)?.into()),
            "BIGINT UNSIGNED" | "BIT" => {
                let v: u64 = row.try_get(i)?;
                // Above i64::MAX the exact digits are kept as text rather than wrapped.
                i64::try_from(v).map_or_else(|_| Value::Text(v.to_string()), Value::Int)
            }
            "FLOAT" => Value::Float(row.try_get::<f32, _>(i)?.into()),
            "DOUBLE" => Value::Float(row.try_get(i)?),
            "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "SET" => Value::Text(row.try_get(i)?),
            // A `_bin` collated text column carries the BINARY flag too: text when it decodes
            // as text, bytes otherwise.
            "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                match row.try_get::<String, _>(i) {
                    Ok(text) => Value::Text(text),
                    Err(_) => Value::Bytes(row.try_get(i)?),
                }
            }
            other => return Err(unsupported_column(column.name(), other)),
        };
        values.push(value);
    }
    Ok(values)
}
