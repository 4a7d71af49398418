//! Binding [`Value`]s into tokio-postgres statements and decoding its rows, with the very
//! types the sqlx driver uses: each parameter is declared with the type sqlx would bind it as
//! (`Int` as `int8`, `Json` as `jsonb`, ...), so `SELECT $1` answers the same on both drivers;
//! a NULL that a placeholder names is left untyped for the server to infer, and one that none
//! names binds as text. Columns decode by type as in `backends/postgres/rows.rs`.

use std::error::Error as StdError;
use std::sync::LazyLock;

use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::Sign;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use tokio_postgres::Row as PgRow;
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use uuid::Uuid;

use crate::backends::pg_common::datetime;
use crate::backends::pg_common::numeric::{self, NUMERIC_NEG, NUMERIC_POS};
use crate::sql::{Interval, Value};

type BoxError = Box<dyn StdError + Sync + Send>;

/// The type oid 0: "unspecified", left to the server to infer from the statement.
static UNSPECIFIED: LazyLock<Type> =
    LazyLock::new(|| Type::new("unspecified".into(), 0, Kind::Pseudo, "pg_catalog".into()));

/// The type a parameter is declared with; `used`: a placeholder names it.
pub(super) fn param_type(value: &Value, at: usize, used: bool) -> Result<Type, String> {
    Ok(match value {
        Value::Null if used => UNSPECIFIED.clone(),
        Value::Null => Type::TEXT,
        Value::Bool(_) => Type::BOOL,
        Value::Int(_) => Type::INT8,
        Value::Float(_) => Type::FLOAT8,
        Value::Text(_) => Type::TEXT,
        Value::Bytes(_) => Type::BYTEA,
        Value::Decimal(_) => Type::NUMERIC,
        Value::Uuid(_) => Type::UUID,
        Value::Json(_) => Type::JSONB,
        Value::TimestampTz(_) => Type::TIMESTAMPTZ,
        Value::Timestamp(_) => Type::TIMESTAMP,
        Value::Date(_) => Type::DATE,
        Value::Time(_) => Type::TIME,
        Value::Interval(_) => Type::INTERVAL,
        Value::Array(items) => array_type(items, at)?,
    })
}

/// An array is the PostgreSQL array of its elements' type; one of only NULLs (or an empty one)
/// `text[]`.
fn array_type(items: &[Value], at: usize) -> Result<Type, String> {
    let mut first: Option<&Value> = None;
    for item in items.iter().filter(|v| !matches!(v, Value::Null)) {
        match first {
            None => first = Some(item),
            Some(f) if std::mem::discriminant(f) != std::mem::discriminant(item) => {
                return Err(format!(
                    "parameter ${at}: an array's elements must all be of one type (found a {})",
                    item.type_name()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(match first {
        None => Type::TEXT_ARRAY,
        Some(Value::Bool(_)) => Type::BOOL_ARRAY,
        Some(Value::Int(_)) => Type::INT8_ARRAY,
        Some(Value::Float(_)) => Type::FLOAT8_ARRAY,
        Some(Value::Text(_)) => Type::TEXT_ARRAY,
        Some(Value::Bytes(_)) => Type::BYTEA_ARRAY,
        Some(Value::Decimal(_)) => Type::NUMERIC_ARRAY,
        Some(Value::Uuid(_)) => Type::UUID_ARRAY,
        Some(Value::Json(_)) => Type::JSONB_ARRAY,
        Some(Value::TimestampTz(_)) => Type::TIMESTAMPTZ_ARRAY,
        Some(Value::Timestamp(_)) => Type::TIMESTAMP_ARRAY,
        Some(Value::Date(_)) => Type::DATE_ARRAY,
        Some(Value::Time(_)) => Type::TIME_ARRAY,
        Some(Value::Interval(_)) => Type::INTERVAL_ARRAY,
        Some(other) => {
            return Err(format!(
                "parameter ${at}: arrays of {} are not supported",
                other.type_name()
            ));
        }
    })
}

/// One parameter, encoded for the type it was declared with ([`param_type`]).
#[derive(Debug)]
pub(super) struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Float(v) => v.to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
            Value::Bytes(v) => v.as_slice().to_sql(ty, out),
            Value::Decimal(v) => Numeric(v).to_sql(ty, out),
            Value::Uuid(v) => v.to_sql(ty, out),
            Value::Json(v) => v.to_sql(ty, out),
            Value::TimestampTz(v) => datetime::whole_micros(v.naive_utc())
                .and_utc()
                .to_sql(ty, out),
            Value::Timestamp(v) => datetime::whole_micros(*v).to_sql(ty, out),
            Value::Date(v) => v.to_sql(ty, out),
            Value::Time(v) => v.to_sql(ty, out),
            Value::Interval(v) => {
                out.put_i64(v.microseconds);
                out.put_i32(v.days);
                out.put_i32(v.months);
                Ok(IsNull::No)
            }
            Value::Array(items) => items
                .iter()
                .map(|v| (!matches!(v, Value::Null)).then_some(Element(v)))
                .collect::<Vec<_>>()
                .to_sql(ty, out),
        }
    }

    /// The declared type decides; the server checked it against the statement.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// An array element: encoded as a parameter of the element type.
#[derive(Debug)]
struct Element<'a>(&'a Value);

impl ToSql for Element<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        Param(self.0).to_sql(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A decimal in PostgreSQL's binary `numeric` format: base-10000 digits with a weight.
#[derive(Debug)]
struct Numeric<'a>(&'a BigDecimal);

impl ToSql for Numeric<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let (int, exponent) = self.0.as_bigint_and_exponent();
        let mut text = int.magnitude().to_string();
        // `int × 10^-exponent`; a negative exponent means trailing zeros.
        let scale = if exponent < 0 {
            text.push_str(&"0".repeat(usize::try_from(-exponent)?));
            0
        } else {
            usize::try_from(exponent)?
        };
        let dscale = u16::try_from(scale)
            .ok()
            .filter(|s| *s <= 0x3FFF)
            .ok_or("numeric scale out of PostgreSQL's range")?;
        if text.len() < scale {
            text.insert_str(0, &"0".repeat(scale - text.len()));
        }
        let (whole, fraction) = text.split_at(text.len() - scale);
        let pad = (4 - whole.len() % 4) % 4;
        let whole = format!("{}{whole}", "0".repeat(pad));
        let fraction = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
        let group = |s: &str| -> Vec<i16> {
            s.as_bytes()
                .chunks(4)
                .map(|c| c.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0')))
                .collect()
        };
        let mut digits = group(&whole);
        let mut weight = i32::try_from(digits.len())? - 1;
        digits.extend(group(&fraction));
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        weight -= i32::try_from(leading)?;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        let sign = if int.sign() == Sign::Minus && !digits.is_empty() {
            NUMERIC_NEG
        } else {
            NUMERIC_POS
        };
        out.put_i16(i16::try_from(digits.len())?);
        out.put_i16(i16::try_from(weight)?);
        out.put_u16(sign);
        out.put_u16(dscale);
        for d in digits {
            out.put_i16(d);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

/// Reads a `numeric` (`pg_common::numeric`); NaN and the infinities have no decimal.
struct NumericOut(BigDecimal);

impl<'a> FromSql<'a> for NumericOut {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(NumericOut(numeric::decode(raw)?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Reads a `date`, `timestamp`/`timestamptz` or `time` with checked arithmetic
/// (`pg_common::datetime`): `infinity` and dates beyond chrono's range are clear errors, and
/// `24:00:00` is one rather than midnight.
macro_rules! datetime_out {
    ($name:ident, $t:ty, $int:ty, $read:path, [$($accepts:ident),+]) => {
        struct $name($t);

        impl<'a> FromSql<'a> for $name {
            fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let bytes = raw.try_into().map_err(|_| "date or time of a wrong size")?;
                Ok($name($read(<$int>::from_be_bytes(bytes))?))
            }

            fn accepts(ty: &Type) -> bool {
                $(*ty == Type::$accepts)||+
            }
        }
    };
}

datetime_out!(DateOut, NaiveDate, i32, datetime::date, [DATE]);
datetime_out!(
    TimestampOut,
    NaiveDateTime,
    i64,
    datetime::timestamp,
    [TIMESTAMP, TIMESTAMPTZ]
);
datetime_out!(TimeOut, NaiveTime, i64, datetime::time, [TIME]);

/// Reads an `interval`.
struct IntervalOut(Interval);

impl<'a> FromSql<'a> for IntervalOut {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let bytes: [u8; 16] = raw.try_into().map_err(|_| "interval of a wrong size")?;
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&bytes[..8]);
        let days = [bytes[8], bytes[9], bytes[10], bytes[11]];
        let months = [bytes[12], bytes[13], bytes[14], bytes[15]];
        Ok(IntervalOut(Interval {
            months: i32::from_be_bytes(months),
            days: i32::from_be_bytes(days),
            microseconds: i64::from_be_bytes(micros),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A column's raw bytes (`None` for NULL), whatever its type.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// An array element of any text type (`String` refuses the one-byte `"char"`).
struct TextOut(String);

impl<'a> FromSql<'a> for TextOut {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(TextOut(std::str::from_utf8(raw)?.to_owned()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn text(raw: &[u8]) -> Result<Value, BoxError> {
    Ok(Value::Text(std::str::from_utf8(raw)?.to_owned()))
}

fn timestamptz(v: DateTime<Utc>) -> Value {
    Value::TimestampTz(v.fixed_offset())
}

/// An array column of `T`, each element converted.
fn array<'a, T: FromSql<'a>>(
    ty: &Type,
    raw: &'a [u8],
    convert: impl Fn(T) -> Value,
) -> Result<Value, BoxError> {
    let items = Vec::<Option<T>>::from_sql(ty, raw)?;
    Ok(Value::Array(
        items
            .into_iter()
            .map(|v| v.map_or(Value::Null, &convert))
            .collect(),
    ))
}

/// The values of one row, by column type.
pub(super) fn decode(row: &PgRow) -> Result<Vec<Value>, String> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let raw = match row.try_get::<_, Raw<'_>>(i) {
            Ok(Raw(Some(raw))) => raw,
            Ok(Raw(None)) => {
                values.push(Value::Null);
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let ty = column.type_();
        let value = decode_value(ty, raw).map_err(|e| match e {
            Unsupported::Type => format!(
                "column `{}` has type {}, which the neutral handle does not decode; cast it in SQL (e.g. `::text`) or use the native pool",
                column.name(),
                type_name(ty)
            ),
            Unsupported::Value(e) => format!("column `{}`: {e}", column.name()),
        })?;
        values.push(value);
    }
    Ok(values)
}

/// A type as the server (and the sqlx driver) names it: an array as its element's name and
/// `[]` (`mood[]`, where tokio-postgres says `_mood`).
fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    }
}

enum Unsupported {
    Type,
    Value(BoxError),
}

impl From<BoxError> for Unsupported {
    fn from(e: BoxError) -> Self {
        Unsupported::Value(e)
    }
}

fn decode_value(ty: &Type, raw: &[u8]) -> Result<Value, Unsupported> {
    Ok(match *ty {
        Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
        Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
        Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
        Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
        Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
        Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
        Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
        Type::BYTEA => Value::Bytes(raw.to_vec()),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UNKNOWN => {
            text(raw)?
        }
        Type::NUMERIC => Value::Decimal(NumericOut::from_sql(ty, raw)?.0),
        // Money has the locale's fraction digits; 2 is every common one.
        Type::MONEY => Value::Decimal(BigDecimal::new(i64::from_sql(ty, raw)?.into(), 2)),
        Type::UUID => Value::Uuid(Uuid::from_sql(ty, raw)?),
        Type::JSON | Type::JSONB => Value::Json(serde_json::Value::from_sql(ty, raw)?),
        Type::TIMESTAMPTZ => timestamptz(TimestampOut::from_sql(ty, raw)?.0.and_utc()),
        Type::TIMESTAMP => Value::Timestamp(TimestampOut::from_sql(ty, raw)?.0),
        Type::DATE => Value::Date(DateOut::from_sql(ty, raw)?.0),
        Type::TIME => Value::Time(TimeOut::from_sql(ty, raw)?.0),
        // No variant carries a time of day with an offset; its text keeps both exactly.
        Type::TIMETZ => Value::Text(datetime::timetz(raw).map_err(BoxError::from)?),
        Type::INTERVAL => Value::Interval(IntervalOut::from_sql(ty, raw)?.0),
        Type::BOOL_ARRAY => array(ty, raw, Value::Bool)?,
        Type::INT2_ARRAY => array(ty, raw, |v: i16| Value::Int(v.into()))?,
        Type::INT4_ARRAY => array(ty, raw, |v: i32| Value::Int(v.into()))?,
        Type::INT8_ARRAY => array(ty, raw, Value::Int)?,
        Type::FLOAT4_ARRAY => array(ty, raw, |v: f32| Value::Float(v.into()))?,
        Type::FLOAT8_ARRAY => array(ty, raw, Value::Float)?,
        Type::TEXT_ARRAY
        | Type::VARCHAR_ARRAY
        | Type::BPCHAR_ARRAY
        | Type::NAME_ARRAY
        | Type::CHAR_ARRAY => array(ty, raw, |v: TextOut| Value::Text(v.0))?,
        Type::BYTEA_ARRAY => array(ty, raw, Value::Bytes)?,
        Type::NUMERIC_ARRAY => array(ty, raw, |v: NumericOut| Value::Decimal(v.0))?,
        Type::UUID_ARRAY => array(ty, raw, Value::Uuid)?,
        Type::JSON_ARRAY | Type::JSONB_ARRAY => array(ty, raw, Value::Json)?,
        Type::TIMESTAMPTZ_ARRAY => array(ty, raw, |v: TimestampOut| timestamptz(v.0.and_utc()))?,
        Type::TIMESTAMP_ARRAY => array(ty, raw, |v: TimestampOut| Value::Timestamp(v.0))?,
        Type::DATE_ARRAY => array(ty, raw, |v: DateOut| Value::Date(v.0))?,
        Type::TIME_ARRAY => array(ty, raw, |v: TimeOut| Value::Time(v.0))?,
        Type::INTERVAL_ARRAY => array(ty, raw, |v: IntervalOut| Value::Interval(v.0))?,
        _ if ty.name() == "citext" => text(raw)?,
        _ => return Err(Unsupported::Type),
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn round_trip(text: &str) -> BigDecimal {
        let value = BigDecimal::from_str(text).unwrap();
        let mut out = BytesMut::new();
        Numeric(&value).to_sql(&Type::NUMERIC, &mut out).unwrap();
        NumericOut::from_sql(&Type::NUMERIC, &out).unwrap().0
    }

    #[test]
    fn numerics_round_trip_through_the_binary_format() {
        for text in [
            "0",
            "1",
            "-1",
            "0.0001",
            "12345.6789",
            "-98765432109876543210.000000000123",
            "1e20",
            "1.50",
            "10000",
            "0.00000001",
        ] {
            let want = BigDecimal::from_str(text).unwrap();
            assert_eq!(round_trip(text), want, "{text}");
        }
        // The scale survives: 1.50 keeps its two fraction digits.
        assert_eq!(round_trip("1.50").to_string(), "1.50");
    }

    #[test]
    fn mixed_arrays_are_refused_with_the_parameter_number() {
        let items = [Value::Int(1), Value::Null, Value::Text("x".into())];
        let err = param_type(&Value::Array(items.to_vec()), 3, true).unwrap_err();
        assert!(
            err.starts_with("parameter $3: an array's elements"),
            "{err}"
        );
        assert_eq!(
            param_type(&Value::Array(vec![Value::Null]), 1, true),
            Ok(Type::TEXT_ARRAY)
        );
    }
}
