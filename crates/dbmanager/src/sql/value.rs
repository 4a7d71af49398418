//! Backend-neutral parameter and column values, and rows made of them.

use std::str::FromStr;
use std::sync::Arc;

use bigdecimal::BigDecimal;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use uuid::Uuid;

/// A parameter or column value.
///
/// Each backend maps its column types onto these (the table is in the README); a column of a
/// type no variant covers is an error asking for a cast in SQL. Where a backend has no native
/// type (SQLite's UUIDs, decimals and JSON; MariaDB's JSON), the value is stored and read back
/// as [`Value::Text`], and [`Row::get`] parses it into the typed value, so reading
/// `row.get::<Uuid>(..)` works the same on every backend.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// Any integer column (smallint, int, bigint).
    Int(i64),
    /// Any floating point column.
    Float(f64),
    /// Text.
    Text(String),
    /// Binary.
    Bytes(Vec<u8>),
    /// An exact decimal of any precision (`numeric`, `DECIMAL`); never goes through a float.
    Decimal(BigDecimal),
    /// A UUID.
    Uuid(Uuid),
    /// A JSON document.
    Json(serde_json::Value),
    /// An instant with its offset (`timestamptz`, `DATETIMEOFFSET`, MySQL `TIMESTAMP`).
    /// PostgreSQL and MySQL store the instant and return it at UTC; SQL Server keeps the offset.
    /// Equality compares instants.
    TimestampTz(DateTime<FixedOffset>),
    /// A date and time without a time zone (`timestamp`, `DATETIME2`, MySQL `DATETIME`).
    Timestamp(NaiveDateTime),
    /// A calendar date.
    Date(NaiveDate),
    /// A time of day.
    Time(NaiveTime),
    /// A span of time (PostgreSQL `interval`; MySQL `TIME` values outside a day).
    Interval(Interval),
    /// A one-dimensional array (PostgreSQL); elements may be NULL.
    Array(Vec<Value>),
}

/// A span of time in PostgreSQL's three parts: months and days are not fixed lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interval {
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Microseconds.
    pub microseconds: i64,
}

impl Interval {
    /// A span of microseconds only.
    pub fn from_microseconds(microseconds: i64) -> Self {
        Self {
            months: 0,
            days: 0,
            microseconds,
        }
    }
}

impl Value {
    /// The variant's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Decimal(_) => "decimal",
            Value::Uuid(_) => "uuid",
            Value::Json(_) => "json",
            Value::TimestampTz(_) => "timestamptz",
            Value::Timestamp(_) => "timestamp",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Interval(_) => "interval",
            Value::Array(_) => "array",
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(as $cast:ty)?),+ $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(v $(as $cast)?) }
        })+
    };
}

value_from! {
    bool => Bool,
    i8 => Int as i64,
    i16 => Int as i64,
    i32 => Int as i64,
    i64 => Int,
    u8 => Int as i64,
    u16 => Int as i64,
    u32 => Int as i64,
    f32 => Float as f64,
    f64 => Float,
    String => Text,
    BigDecimal => Decimal,
    Uuid => Uuid,
    serde_json::Value => Json,
    DateTime<FixedOffset> => TimestampTz,
    NaiveDateTime => Timestamp,
    NaiveDate => Date,
    NaiveTime => Time,
    Interval => Interval,
}

impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::TimestampTz(v.fixed_offset())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Array(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Conversion out of a [`Value`], for [`Row::get`].
pub trait FromValue: Sized {
    /// `None` when the value has another type.
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Option<Self> {
        Some(value.clone())
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).and_then(|v| i32::try_from(v).ok())
    }
}

impl FromValue for f64 {
    /// A float, or an integer a float holds exactly (beyond 2^53 not every one is: `None`
    /// rather than a nearby number).
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Float(v) => Some(*v),
            Value::Int(v) => {
                let f = *v as f64;
                (f as i128 == i128::from(*v)).then_some(f)
            }
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(v) => Some(*v),
            // SQLite has no boolean storage class.
            Value::Int(v) => Some(*v != 0),
            _ => None,
        }
    }
}

impl FromValue for String {
    /// Text, or the exact text form of a decimal, UUID or JSON value.
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v.clone()),
            Value::Decimal(v) => Some(v.to_string()),
            Value::Uuid(v) => Some(v.to_string()),
            Value::Json(v) => Some(v.to_string()),
            _ => None,
        }
    }
}

/// Typed values a backend may store as text (SQLite, MariaDB JSON) are parsed from it.
macro_rules! from_value_or_text {
    ($t:ty, $variant:ident, |$text:ident| $parse:expr) => {
        impl FromValue for $t {
            fn from_value(value: &Value) -> Option<Self> {
                match value {
                    Value::$variant(v) => Some(v.clone()),
                    Value::Text($text) => $parse,
                    _ => None,
                }
            }
        }
    };
}

from_value_or_text!(BigDecimal, Decimal, |t| BigDecimal::from_str(t.trim()).ok());
from_value_or_text!(Uuid, Uuid, |t| Uuid::parse_str(t.trim()).ok());
from_value_or_text!(serde_json::Value, Json, |t| serde_json::from_str(t).ok());
from_value_or_text!(DateTime<FixedOffset>, TimestampTz, |t| parse_timestamptz(t));
from_value_or_text!(NaiveDateTime, Timestamp, |t| parse_timestamp(t));
from_value_or_text!(NaiveDate, Date, |t| NaiveDate::from_str(t.trim()).ok());
from_value_or_text!(NaiveTime, Time, |t| NaiveTime::from_str(t.trim()).ok());

impl FromValue for DateTime<Utc> {
    fn from_value(value: &Value) -> Option<Self> {
        DateTime::<FixedOffset>::from_value(value).map(|v| v.with_timezone(&Utc))
    }
}

impl FromValue for Interval {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Interval(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromValue for Vec<Value> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Array(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS[.f]+HH:MM`; a year outside 0000-9999 with its
/// sign (`-0044-03-15T...`, `+10000-...`), as chrono writes it (RFC 3339 has four digits only:
/// such an instant written to SQLite read back as text).
pub(crate) fn parse_timestamptz(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%F %T%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(text, "%FT%T%.f%:z"))
        .ok()
}

/// `YYYY-MM-DD HH:MM:SS[.f]` or with a `T`.
pub(crate) fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%F %T%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%FT%T%.f"))
        .ok()
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bytes(v) => Some(v.clone()),
            // A UUID stored as 16 bytes reads back as bytes too.
            Value::Uuid(v) => Some(v.as_bytes().to_vec()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row: column names shared across the rows of a result, and the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        Self { columns, values }
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The value of a column by position or name.
    pub fn value(&self, column: impl ColumnRef) -> Option<&Value> {
        column
            .position(&self.columns)
            .and_then(|i| self.values.get(i))
    }

    /// The value of a column converted to `T`; `None` if the column is missing or of another type.
    pub fn get<T: FromValue>(&self, column: impl ColumnRef) -> Option<T> {
        self.value(column).and_then(T::from_value)
    }
}

/// A column by position (`usize`) or by name (`&str`).
pub trait ColumnRef {
    /// The column's position among `columns`.
    fn position(&self, columns: &[String]) -> Option<usize>;
}

impl ColumnRef for usize {
    fn position(&self, columns: &[String]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
}

impl ColumnRef for &str {
    fn position(&self, columns: &[String]) -> Option<usize> {
        columns.iter().position(|c| c == self)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn row(values: Vec<Value>) -> Row {
        let names: Arc<[String]> = (0..values.len()).map(|i| format!("c{i}")).collect();
        Row::new(names, values)
    }

    #[test]
    fn typed_values_read_back_from_their_variant_and_from_text() {
        let id = Uuid::from_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let d = BigDecimal::from_str("123456789012345678901234567890.000000001").unwrap();
        let at = DateTime::parse_from_rfc3339("1969-07-20T20:17:40.5+05:30").unwrap();
        let r = row(vec![
            Value::Uuid(id),
            Value::Text(id.to_string()),
            Value::Decimal(d.clone()),
            Value::Text(d.to_string()),
            Value::TimestampTz(at),
            Value::Text("1969-07-20T14:47:40.5Z".into()),
            Value::Text("2024-02-29 23:59:59.999999".into()),
            Value::Text("{\"a\":[1,2]}".into()),
        ]);
        assert_eq!(r.get::<Uuid>(0), Some(id));
        assert_eq!(r.get::<Uuid>(1), Some(id));
        assert_eq!(r.get::<BigDecimal>(2), Some(d.clone()));
        assert_eq!(r.get::<BigDecimal>(3), Some(d));
        assert_eq!(r.get::<DateTime<FixedOffset>>(4), Some(at));
        // Equality of instants: the same moment written at another offset.
        assert_eq!(r.get::<DateTime<FixedOffset>>(5), Some(at));
        assert_eq!(r.get::<DateTime<Utc>>(4), Some(at.with_timezone(&Utc)));
        assert_eq!(
            r.get::<NaiveDateTime>(6),
            NaiveDateTime::parse_from_str("2024-02-29 23:59:59.999999", "%F %T%.f").ok()
        );
        assert_eq!(
            r.get::<serde_json::Value>(7),
            Some(serde_json::json!({"a": [1, 2]}))
        );
        assert_eq!(r.get::<String>(0), Some(id.to_string()));
        assert_eq!(r.get::<Uuid>(6), None, "text that is no UUID is not one");
        // Years beyond RFC 3339's four digits, as chrono writes them (SQLite's text).
        for year in [-44, 10_000] {
            let at = NaiveDate::from_ymd_opt(year, 3, 15)
                .and_then(|d| d.and_hms_micro_opt(1, 2, 3, 4))
                .unwrap()
                .and_utc()
                .fixed_offset();
            let text = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
            assert_eq!(parse_timestamptz(&text), Some(at), "{text}");
        }
    }

    #[test]
    fn integers_read_as_floats_only_when_exact() {
        let exact = (1i64 << 53) * 3;
        let r = row(vec![
            Value::Int(-7),
            Value::Int(exact),
            Value::Int((1 << 53) + 1),
            Value::Int(i64::MAX),
            Value::Int(i64::MIN),
        ]);
        assert_eq!(r.get::<f64>(0), Some(-7.0));
        assert_eq!(r.get::<f64>(1), Some(exact as f64));
        assert_eq!(r.get::<f64>(2), None, "2^53 + 1 is no f64");
        assert_eq!(r.get::<f64>(3), None, "i64::MAX would read as 2^63");
        assert_eq!(r.get::<f64>(4), Some(-9_223_372_036_854_775_808.0));
    }

    #[test]
    fn conversions_into_values_pick_the_variant() {
        assert_eq!(
            Value::from(vec![Value::Int(1), Value::Null]),
            Value::Array(vec![Value::Int(1), Value::Null])
        );
        assert_eq!(Value::from(vec![1u8, 2]), Value::Bytes(vec![1, 2]));
        let utc = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        assert_eq!(Value::from(utc), Value::TimestampTz(utc.fixed_offset()));
        assert_eq!(Value::from(Option::<Uuid>::None), Value::Null);
    }
}
