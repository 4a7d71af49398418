//! Binding [`Value`]s into SQLite queries and decoding SQLite rows.
//!
//! SQLite stores what it has no type for as text: decimals exactly (`1.50` stays `1.50`),
//! UUIDs hyphenated, JSON as its text, timestamps with an offset as RFC 3339, timestamps without
//! one as `YYYY-MM-DD HH:MM:SS[.f]`, dates and times in ISO 8601. A column declared `DATETIME`,
//! `TIMESTAMP`, `DATE`, `TIME` or `BOOLEAN` reads back typed; other text reads back as
//! [`Value::Text`], which `Row::get` parses into the typed value.

use chrono::{NaiveDate, NaiveTime};
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _, ValueRef as _};

use crate::backends::sqlx::SqlxFlavor as _;
use crate::backends::sqlx::rows::{bind_error, check_parameter_count, unsupported_column};
use crate::sql::placeholders::{Dialect, rewrite};
use crate::sql::{Value, parse_timestamp, parse_timestamptz};

/// The query with its parameters bound; SQLite reads `$n` as numbered parameters.
pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, Sqlite, SqliteArguments>, sqlx::Error> {
    super::Lite::check_statement(sql, params)?;
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for (i, param) in params.iter().enumerate() {
        query = match param {
            Value::Null => query.bind(Option::<i64>::None),
            Value::Bool(v) => query.bind(*v),
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(v.as_slice()),
            Value::Decimal(v) => query.bind(v.to_string()),
            Value::Uuid(v) => query.bind(v.hyphenated().to_string()),
            Value::Json(v) => query.bind(v.to_string()),
            Value::TimestampTz(v) => query.bind(*v),
            Value::Timestamp(v) => query.bind(*v),
            Value::Date(v) => query.bind(*v),
            Value::Time(v) => query.bind(*v),
            other @ (Value::Interval(_) | Value::Array(_)) => {
                return Err(bind_error(i + 1, other, "SQLite"));
            }
        };
    }
    Ok(query)
}

/// SQLite's lexing: `'...'` strings, `"..."`, `` `...` `` and `[...]` identifiers.
const SQLITE: Dialect = Dialect {
    quotes: &[('\'', '\''), ('"', '"'), ('`', '`'), ('[', ']')],
    backslash_escapes: false,
    hash_comments: false,
    dash_comment_needs_space: false,
};

/// The largest parameter number the bundled SQLite accepts (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;

/// SQLite binds a missing parameter as NULL without a word, and sqlx's worker panics on `$0`:
/// both are refused here, before the statement is sent.
pub(super) fn check_placeholders(sql: &str, params: &[Value]) -> Result<(), sqlx::Error> {
    check_parameter_count(params.len(), MAX_PARAMETERS)?;
    if !sql.contains('$') {
        return Ok(());
    }
    let found = rewrite(sql, &SQLITE, |out, n| {
        out.push('$');
        out.push_str(&n.to_string());
    })
    .order;
    for n in found {
        let bound = usize::try_from(n).is_ok_and(|n| n >= 1 && n <= params.len());
        if !bound {
            return Err(sqlx::Error::Encode(
                format!("placeholder ${n} has no parameter ({} given)", params.len()).into(),
            ));
        }
    }
    Ok(())
}

/// Text under a date/time declared type, parsed; text that does not parse stays text.
fn declared_text(declared: &str, text: String) -> Value {
    let parsed = match declared {
        "DATETIME" => parse_timestamptz(&text)
            .map(Value::TimestampTz)
            .or_else(|| parse_timestamp(&text).map(Value::Timestamp)),
        "DATE" => text.trim().parse::<NaiveDate>().ok().map(Value::Date),
        "TIME" => text.trim().parse::<NaiveTime>().ok().map(Value::Time),
        _ => None,
    };
    parsed.unwrap_or(Value::Text(text))
}

pub(super) fn decode(row: &SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        // SQLite is dynamically typed: decode by the value's storage class, refined by the
        // column's declared type where that names one.
        let storage = raw.type_info().name().to_owned();
        let declared = column.type_info().name();
        let value = match storage.as_str() {
            "INTEGER" | "BOOLEAN" | "INT8" if declared == "BOOLEAN" => {
                Value::Bool(row.try_get::<i64, _>(i)? != 0)
            }
            "INTEGER" | "BOOLEAN" | "INT8" => Value::Int(row.try_get(i)?),
            "REAL" => Value::Float(row.try_get(i)?),
            "TEXT" | "DATETIME" | "DATE" | "TIME" => declared_text(declared, row.try_get(i)?),
            "BLOB" => Value::Bytes(row.try_get(i)?),
            other => return Err(unsupported_column(column.name(), other)),
        };
        values.push(value);
    }
    Ok(values)
}
