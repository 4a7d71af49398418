//! Binding [`Value`]s into MySQL queries (placeholders rewritten to `?`, parameters reordered to
//! match) and decoding MySQL rows.

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::mysql::types::{MySqlTime, MySqlTimeSign};
use sqlx::mysql::{MySql, MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _, ValueRef as _};

use super::MYSQL;
use crate::backends::sqlx::in_order;
use crate::backends::sqlx::rows::{
    bind_error, check_parameter_count, placeholder_error, unsupported_column,
};
use crate::sql::placeholders::prepare;
use crate::sql::{Interval, Value};

pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, MySql, MySqlArguments>, sqlx::Error> {
    // A NULL goes into the text as the keyword, typed by its context (bound, it would be a
    // string: `COALESCE(?, 5)` would be text).
    let prepared = prepare(sql, &MYSQL, params, true).map_err(placeholder_error)?;
    let ordered = in_order(&prepared.order, params)?;
    // A prepared statement takes at most 65535 placeholders.
    check_parameter_count(ordered.len(), u16::MAX as usize)?;
    let mut query = sqlx::query(AssertSqlSafe(prepared.sql.into_owned()));
    for (param, n) in ordered.into_iter().zip(&prepared.order) {
        let at = usize::try_from(*n).unwrap_or(usize::MAX);
        query = match param {
            // Written into the statement as `NULL` by `prepare`, so never bound.
            Value::Null => query.bind(Option::<&str>::None),
            Value::Bool(v) => query.bind(*v),
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(v.as_slice()),
            Value::Decimal(v) => query.bind(v),
            // No UUID type on MySQL (MariaDB's UUID type takes text): the hyphenated text.
            Value::Uuid(v) => query.bind(v.hyphenated().to_string()),
            Value::Json(v) => query.bind(sqlx::types::Json(v)),
            // The session runs at UTC (sqlx sets time_zone '+00:00'), so the UTC date and time
            // is the instant. Bound as a DATETIME: the server turns a TIMESTAMP parameter
            // outside 1970-2038 into NULL (stored so, without an error); a DATETIME one a
            // TIMESTAMP column refuses there, and a DATETIME column keeps.
            Value::TimestampTz(v) => query.bind(v.naive_utc()),
            Value::Timestamp(v) => query.bind(*v),
            Value::Date(v) => query.bind(*v),
            Value::Time(v) => query.bind(*v),
            Value::Interval(v) => query.bind(mysql_time(v).ok_or_else(|| {
                sqlx::Error::Encode(
                    format!(
                        "parameter ${at}: MySQL TIME holds at most ±838:59:59.999999 and no months"
                    )
                    .into(),
                )
            })?),
            other @ Value::Array(_) => return Err(bind_error(at, other, "MySQL")),
        };
    }
    Ok(query)
}

/// An interval as MySQL's signed TIME (days folded into hours).
fn mysql_time(v: &Interval) -> Option<MySqlTime> {
    if v.months != 0 {
        return None;
    }
    let micros = i128::from(v.days) * 86_400_000_000 + i128::from(v.microseconds);
    let sign = if micros < 0 {
        MySqlTimeSign::Negative
    } else {
        MySqlTimeSign::Positive
    };
    let abs = micros.unsigned_abs();
    let hours = u32::try_from(abs / 3_600_000_000).ok()?;
    let minutes = u8::try_from(abs / 60_000_000 % 60).ok()?;
    let seconds = u8::try_from(abs / 1_000_000 % 60).ok()?;
    let microseconds = u32::try_from(abs % 1_000_000).ok()?;
    MySqlTime::new(sign, hours, minutes, seconds, microseconds).ok()
}

/// A TIME column: a time of day when it is one, else the signed span it is. (sqlx's
/// conversion to `NaiveTime` ignores the sign: `-01:00:00` would read as one in the morning.)
fn time_value(t: MySqlTime) -> Value {
    if t.is_valid_time_of_day()
        && let Ok(time) = NaiveTime::try_from(t)
    {
        return Value::Time(time);
    }
    let micros = ((i64::from(t.hours()) * 60 + i64::from(t.minutes())) * 60
        + i64::from(t.seconds()))
        * 1_000_000
        + i64::from(t.microseconds());
    let signed = if matches!(t.sign(), MySqlTimeSign::Negative) {
        -micros
    } else {
        micros
    };
    Value::Interval(Interval::from_microseconds(signed))
}

/// A `DATE`, `DATETIME` or `TIMESTAMP` cell that sqlx calls NULL but the server sent a value
/// for: MySQL's zero date (`0000-00-00`, allowed without `NO_ZERO_DATE`), which would otherwise
/// read as NULL, a value the row does not hold.
fn is_zero_date(row: &MySqlRow, i: usize, type_name: &str) -> bool {
    matches!(type_name, "DATE" | "DATETIME" | "TIMESTAMP")
        && row
            .try_get_raw(i)
            .is_ok_and(|raw| <&[u8] as sqlx::Decode<'_, MySql>>::decode(raw).is_ok())
}

pub(super) fn decode(row: &MySqlRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            if is_zero_date(row, i, column.type_info().name()) {
                return Err(sqlx::Error::ColumnDecode {
                    index: i.to_string(),
                    source: format!(
                        "column `{}` holds a zero date (0000-00-00), which has no calendar value; \
                         select NULLIF(col, 0) for NULL or CAST(col AS CHAR) for its text",
                        column.name()
                    )
                    .into(),
                });
            }
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
            "DECIMAL" => Value::Decimal(row.try_get(i)?),
            "JSON" => Value::Json(row.try_get(i)?),
            "DATETIME" => Value::Timestamp(row.try_get(i)?),
            "TIMESTAMP" => Value::TimestampTz(row.try_get::<DateTime<Utc>, _>(i)?.fixed_offset()),
            "DATE" => Value::Date(row.try_get(i)?),
            "TIME" => time_value(row.try_get(i)?),
            other => return Err(unsupported_column(column.name(), other)),
        };
        values.push(value);
    }
    Ok(values)
}
