//! Binding [`Value`]s into PostgreSQL queries and decoding PostgreSQL rows.

use bigdecimal::BigDecimal;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sqlx::postgres::types::{PgInterval, PgMoney};
use sqlx::postgres::{PgArguments, PgRow, PgValueRef, Postgres};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column as _, Row as _, TypeInfo as _, ValueRef as _};
use uuid::Uuid;

use crate::backends::pg_common::{POSTGRES, datetime, numeric};
use crate::backends::sqlx::SqlxFlavor as _;
use crate::backends::sqlx::rows::{placeholder_error, unsupported_column};
use crate::sql::placeholders::prepare;
use crate::sql::{Interval, Value};

/// The query with its parameters bound; `$n` placeholders are PostgreSQL's own, checked
/// against the parameters first. A NULL binds untyped, so the server types it by its context;
/// one that no placeholder names has no context, and binds as text.
pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, Postgres, PgArguments>, sqlx::Error> {
    super::Pg::check_statement(sql, params)?;
    let used = prepare(sql, &POSTGRES, params, false)
        .map_err(placeholder_error)?
        .used;
    let mut query = sqlx::query(AssertSqlSafe(typed_text(sql, params, &used, "dbmanager")));
    for (i, param) in params.iter().enumerate() {
        query = match param {
            Value::Null if used.get(i) == Some(&true) => query.bind(pg_null::UntypedNull),
            Value::Null => query.bind(Option::<&str>::None),
            Value::Bool(v) => query.bind(*v),
            Value::Int(v) => query.bind(*v),
            Value::Float(v) => query.bind(*v),
            Value::Text(v) => query.bind(v.as_str()),
            Value::Bytes(v) => query.bind(v.as_slice()),
            Value::Decimal(v) => query.bind(v),
            Value::Uuid(v) => query.bind(*v),
            Value::Json(v) => query.bind(sqlx::types::Json(v)),
            Value::TimestampTz(v) => query.bind(datetime::whole_micros(v.naive_utc()).and_utc()),
            Value::Timestamp(v) => query.bind(datetime::whole_micros(*v)),
            Value::Date(v) => query.bind(*v),
            Value::Time(v) => query.bind(*v),
            Value::Interval(v) => query.bind(PgInterval {
                months: v.months,
                days: v.days,
                microseconds: v.microseconds,
            }),
            Value::Array(items) => bind_array(query, items, i + 1)?,
        };
    }
    Ok(query)
}

/// The statement text sqlx prepares and caches: with parameters, their types follow in a
/// trailing comment (`-- dbmanager: int8, float8`).
///
/// sqlx caches a connection's prepared statements by their text alone and binds a later call's
/// parameters in the types the statement was first prepared with, unchecked: `SELECT $1` run
/// with an `Int` and then with a `Float` sent the float's bytes as an `int8` (a wrong number,
/// silently), and `INSERT INTO t (x) VALUES ($1)` into a `float8` column stored them so. With
/// the types in the text, each combination of types is a statement of its own. `marker` tells
/// the layers apart (SeaORM binds through the same cache). A statement without parameters is
/// sent as written.
pub(crate) fn typed_text(sql: &str, params: &[Value], used: &[bool], marker: &str) -> String {
    if params.is_empty() {
        return sql.to_owned();
    }
    let mut text = String::with_capacity(sql.len() + marker.len() + 6 + params.len() * 8);
    text.push_str(sql);
    text.push_str("\n-- ");
    text.push_str(marker);
    text.push(':');
    for (i, param) in params.iter().enumerate() {
        text.push_str(if i == 0 { " " } else { ", " });
        match param {
            Value::Array(items) => {
                let first = items.iter().find(|v| !matches!(v, Value::Null));
                text.push_str(first.map_or("text", |v| declared_type(v, true)));
                text.push_str("[]");
            }
            v => text.push_str(declared_type(v, used.get(i) == Some(&true))),
        }
    }
    text
}

/// The type a parameter is declared with (as [`bind`] binds it); `used`: a placeholder names it.
fn declared_type(value: &Value, used: bool) -> &'static str {
    match value {
        Value::Null if used => "unknown",
        Value::Null => "text",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int8",
        Value::Float(_) => "float8",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytea",
        Value::Decimal(_) => "numeric",
        Value::Uuid(_) => "uuid",
        Value::Json(_) => "jsonb",
        Value::TimestampTz(_) => "timestamptz",
        Value::Timestamp(_) => "timestamp",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Interval(_) => "interval",
        // Nested arrays are refused when bound.
        Value::Array(_) => "array",
    }
}

/// Collects the elements of one variant (NULLs allowed) into a typed vector.
macro_rules! elements {
    ($items:expr, $at:expr, $variant:ident, $convert:expr) => {
        $items
            .iter()
            .map(|v| match v {
                Value::Null => Ok(None),
                Value::$variant(x) => Ok(Some($convert(x))),
                other => Err(mixed_array($at, other)),
            })
            .collect::<Result<Vec<Option<_>>, sqlx::Error>>()?
    };
}

fn mixed_array(at: usize, element: &Value) -> sqlx::Error {
    sqlx::Error::Encode(
        format!(
            "parameter ${at}: an array's elements must all be of one type (found a {})",
            element.type_name()
        )
        .into(),
    )
}

/// An array binds as the PostgreSQL array of its elements' type; one of only NULLs (or an empty
/// one) as `text[]`.
fn bind_array<'q>(
    query: Query<'q, Postgres, PgArguments>,
    items: &[Value],
    at: usize,
) -> Result<Query<'q, Postgres, PgArguments>, sqlx::Error> {
    let first = items.iter().find(|v| !matches!(v, Value::Null));
    Ok(match first {
        None => query.bind(vec![Option::<String>::None; items.len()]),
        Some(Value::Bool(_)) => query.bind(elements!(items, at, Bool, |x: &bool| *x)),
        Some(Value::Int(_)) => query.bind(elements!(items, at, Int, |x: &i64| *x)),
        Some(Value::Float(_)) => query.bind(elements!(items, at, Float, |x: &f64| *x)),
        Some(Value::Text(_)) => query.bind(elements!(items, at, Text, |x: &String| x.clone())),
        Some(Value::Bytes(_)) => query.bind(elements!(items, at, Bytes, |x: &Vec<u8>| x.clone())),
        Some(Value::Decimal(_)) => {
            query.bind(elements!(items, at, Decimal, |x: &BigDecimal| x.clone()))
        }
        Some(Value::Uuid(_)) => query.bind(elements!(items, at, Uuid, |x: &Uuid| *x)),
        Some(Value::Json(_)) => query.bind(elements!(items, at, Json, |x: &serde_json::Value| {
            x.clone()
        })),
        Some(Value::TimestampTz(_)) => {
            query.bind(elements!(items, at, TimestampTz, |x: &DateTime<
                FixedOffset,
            >| {
                datetime::whole_micros(x.naive_utc()).and_utc()
            }))
        }
        Some(Value::Timestamp(_)) => {
            query.bind(elements!(items, at, Timestamp, |x: &NaiveDateTime| {
                datetime::whole_micros(*x)
            }))
        }
        Some(Value::Date(_)) => query.bind(elements!(items, at, Date, |x: &NaiveDate| *x)),
        Some(Value::Time(_)) => query.bind(elements!(items, at, Time, |x: &NaiveTime| *x)),
        Some(Value::Interval(_)) => {
            query.bind(elements!(items, at, Interval, |x: &Interval| PgInterval {
                months: x.months,
                days: x.days,
                microseconds: x.microseconds,
            }))
        }
        Some(other) => {
            return Err(sqlx::Error::Encode(
                format!(
                    "parameter ${at}: arrays of {} are not supported",
                    other.type_name()
                )
                .into(),
            ));
        }
    })
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

/// A date or time decoded with checked arithmetic (`pg_common::datetime`): sqlx's decoders
/// panic on `infinity` and on dates beyond chrono's range, and read `24:00:00` as midnight.
struct Checked<T>(T);

macro_rules! checked {
    ($t:ty, $raw:ty, |$v:ident| $convert:expr) => {
        impl sqlx::Type<Postgres> for Checked<$t> {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <$t as sqlx::Type<Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <$t as sqlx::Type<Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for Checked<$t> {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <$t as sqlx::postgres::PgHasArrayType>::array_type_info()
            }

            fn array_compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <$t as sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, Postgres> for Checked<$t> {
            fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                if value.format() == sqlx::postgres::PgValueFormat::Text {
                    // Text parses without arithmetic (and statements here get binary).
                    return <$t as sqlx::Decode<'r, Postgres>>::decode(value).map(Checked);
                }
                let $v = <$raw as sqlx::Decode<'r, Postgres>>::decode(value)?;
                Ok(Checked($convert?))
            }
        }
    };
}

/// `timetz` as text (`pg_common::datetime::timetz`): sqlx's decoder read `24:00:00` as midnight.
struct TimeTzText(String);

impl<'r> sqlx::Decode<'r, Postgres> for TimeTzText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        if value.format() == sqlx::postgres::PgValueFormat::Text {
            return <&str as sqlx::Decode<'r, Postgres>>::decode(value)
                .map(|s| TimeTzText(s.to_owned()));
        }
        let raw = <&[u8] as sqlx::Decode<'r, Postgres>>::decode(value)?;
        Ok(TimeTzText(datetime::timetz(raw)?))
    }
}

// sqlx's decoder drops the display scale (`0.00` read as `0`, `1e100` as `1E+100`) and
// calls an infinite numeric an "invalid value for PgNumericSign".
checked!(BigDecimal, &[u8], |raw| numeric::decode(raw));
checked!(NaiveDate, i32, |days| datetime::date(days));
checked!(NaiveDateTime, i64, |micros| datetime::timestamp(micros));
checked!(DateTime<Utc>, i64, |micros| datetime::timestamp(micros)
    .map(|t| t.and_utc()));
checked!(NaiveTime, i64, |micros| datetime::time(micros));

/// An element of an array of any text type (matched by name where this is used; `String`
/// refuses the one-byte `"char"`).
struct AnyText(String);

impl sqlx::Type<Postgres> for AnyText {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(_: &sqlx::postgres::PgTypeInfo) -> bool {
        true
    }
}

impl sqlx::postgres::PgHasArrayType for AnyText {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::postgres::PgHasArrayType>::array_type_info()
    }

    fn array_compatible(_: &sqlx::postgres::PgTypeInfo) -> bool {
        true
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for AnyText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <&str as sqlx::Decode<'r, Postgres>>::decode(value).map(|s| AnyText(s.to_owned()))
    }
}

/// Reads an array column of `T` into [`Value::Array`].
fn array<T>(row: &PgRow, i: usize, convert: impl Fn(T) -> Value) -> Result<Value, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + sqlx::postgres::PgHasArrayType,
{
    let items: Vec<Option<T>> = row.try_get(i)?;
    Ok(Value::Array(
        items
            .into_iter()
            .map(|v| v.map_or(Value::Null, &convert))
            .collect(),
    ))
}

fn interval(v: PgInterval) -> Value {
    Value::Interval(Interval {
        months: v.months,
        days: v.days,
        microseconds: v.microseconds,
    })
}

fn timestamptz(v: DateTime<Utc>) -> Value {
    Value::TimestampTz(v.fixed_offset())
}

/// A cell decoded from its raw value. The column's type is known where this is called (matched
/// by name), so it decodes the bytes already in hand: `try_get` would look the column up again
/// and check the type against the target's compatible list (about 200 instructions a cell).
fn cell<'r, T: sqlx::Decode<'r, Postgres>>(
    raw: PgValueRef<'r>,
    i: usize,
) -> Result<T, sqlx::Error> {
    T::decode(raw).map_err(|source| sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source,
    })
}

/// The first OID of an object a database defines (`FirstNormalObjectId`): below it, the
/// server's built-in types.
const FIRST_NORMAL_OID: u32 = 16384;

pub(super) fn decode(row: &PgRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let value = match column.type_info().name() {
            "BOOL" => Value::Bool(cell(raw, i)?),
            "INT2" => Value::Int(cell::<i16>(raw, i)?.into()),
            "INT4" => Value::Int(cell::<i32>(raw, i)?.into()),
            "INT8" => Value::Int(cell(raw, i)?),
            "OID" => Value::Int(cell::<sqlx::postgres::types::Oid>(raw, i)?.0.into()),
            "FLOAT4" => Value::Float(cell::<f32>(raw, i)?.into()),
            "FLOAT8" => Value::Float(cell(raw, i)?),
            "BYTEA" => Value::Bytes(cell(raw, i)?),
            // sqlx names `bpchar` `CHAR`, and the one-byte `"char"` `"CHAR"`.
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "\"CHAR\"" | "UNKNOWN" | "CITEXT" => {
                Value::Text(cell(raw, i)?)
            }
            "NUMERIC" => Value::Decimal(cell::<Checked<BigDecimal>>(raw, i)?.0),
            // Money has the locale's fraction digits; 2 is every common one.
            "MONEY" => Value::Decimal(cell::<PgMoney>(raw, i)?.to_bigdecimal(2)),
            "UUID" => Value::Uuid(cell(raw, i)?),
            "JSON" | "JSONB" => Value::Json(cell(raw, i)?),
            "TIMESTAMPTZ" => timestamptz(cell::<Checked<DateTime<Utc>>>(raw, i)?.0),
            "TIMESTAMP" => Value::Timestamp(cell::<Checked<NaiveDateTime>>(raw, i)?.0),
            "DATE" => Value::Date(cell::<Checked<NaiveDate>>(raw, i)?.0),
            "TIME" => Value::Time(cell::<Checked<NaiveTime>>(raw, i)?.0),
            // No variant carries a time of day with an offset; its text keeps both exactly.
            "TIMETZ" => Value::Text(cell::<TimeTzText>(raw, i)?.0),
            "INTERVAL" => interval(cell(raw, i)?),
            "BOOL[]" => array(row, i, Value::Bool)?,
            "INT2[]" => array(row, i, |v: i16| Value::Int(v.into()))?,
            "INT4[]" => array(row, i, |v: i32| Value::Int(v.into()))?,
            "INT8[]" => array(row, i, Value::Int)?,
            "FLOAT4[]" => array(row, i, |v: f32| Value::Float(v.into()))?,
            "FLOAT8[]" => array(row, i, Value::Float)?,
            "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "CHAR[]" | "\"CHAR\"[]" | "NAME[]" => {
                array(row, i, |v: AnyText| Value::Text(v.0))?
            }
            "BYTEA[]" => array(row, i, Value::Bytes)?,
            "NUMERIC[]" => array(row, i, |v: Checked<BigDecimal>| Value::Decimal(v.0))?,
            "UUID[]" => array(row, i, Value::Uuid)?,
            "JSON[]" | "JSONB[]" => array(row, i, Value::Json)?,
            "TIMESTAMPTZ[]" => array(row, i, |v: Checked<DateTime<Utc>>| timestamptz(v.0))?,
            "TIMESTAMP[]" => array(row, i, |v: Checked<NaiveDateTime>| Value::Timestamp(v.0))?,
            "DATE[]" => array(row, i, |v: Checked<NaiveDate>| Value::Date(v.0))?,
            "TIME[]" => array(row, i, |v: Checked<NaiveTime>| Value::Time(v.0))?,
            "INTERVAL[]" => array(row, i, interval)?,
            other => {
                // Named as the server and tokio-postgres name it: sqlx upper-cases the names of
                // the built-in types (`INET`, `INT4RANGE[]`), not those of the database's own.
                let builtin = column
                    .type_info()
                    .oid()
                    .is_some_and(|oid| oid.0 < FIRST_NORMAL_OID);
                let name = if builtin {
                    other.to_ascii_lowercase()
                } else {
                    other.to_owned()
                };
                return Err(unsupported_column(column.name(), &name));
            }
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::sql::placeholders::generate::{Lang, PARAMS, expected, input, statement};
    use crate::sql::placeholders::{Dialect, Target};

    fn ints(n: u32) -> Vec<Value> {
        (1..=n).map(|i| Value::Int(i.into())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Every generated statement is accepted and reaches the driver unchanged (borrowed,
        /// not copied); with NULL parameters written as `NULL`, exactly the placeholders in
        /// code change.
        #[test]
        fn statements_reach_the_driver_unchanged(frags in statement(Lang::Postgres, 10)) {
            let sql = input(&frags);
            let prepared = prepare(&sql, &POSTGRES, &ints(PARAMS), false).map_err(|e| e.to_string());
            prop_assert!(matches!(prepared.as_ref().map(|p| &p.sql), Ok(Cow::Borrowed(s)) if *s == sql), "{prepared:?}");
            prop_assert_eq!(prepared.map(|p| p.order), Ok(Vec::new()));
            let (want, _) = expected(&frags, |n| format!("${n}"));
            prop_assert_eq!(want, sql);
        }

        /// The same rules with `?` written for each placeholder found: exactly the ones in
        /// code, in order (literals, identifiers and comments hold `$1`s too).
        #[test]
        fn placeholders_are_found_exactly_where_the_server_reads_code(frags in statement(Lang::Postgres, 10)) {
            const FINDING: Dialect = Dialect { target: Target::Question, ..POSTGRES };
            let found = prepare(&input(&frags), &FINDING, &ints(PARAMS), false)
                .map(|p| (p.sql.into_owned(), p.order))
                .map_err(|e| e.to_string());
            prop_assert_eq!(found, Ok(expected(&frags, |_| "?".to_owned())));
        }
    }

    #[test]
    fn postgres_lexing_cases() {
        let p = ints(2);
        let check = |sql: &str| {
            prepare(sql, &POSTGRES, &p, false)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        // Inside dollar quotes, E-strings, nested comments and identifiers nothing is a
        // placeholder, so nothing there needs a parameter.
        for sql in [
            "SELECT $$ $3 $$, $q$ $3 $$ $q$, E'\\' $3 ', $1",
            "SELECT /* /* */ $3 */ $1, \"a$3\", a$3, 'x''$3'",
            "SELECT 1 --$3\r, $2",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
        for sql in [
            "SELECT $3",
            "SELECT E'\\'' $3 '",
            "SELECT $1abc",
            "SELECT $$x$$$3",
        ] {
            assert!(check(sql).is_err(), "{sql}");
        }
    }
}
