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
use crate::backends::sqlx::rows::{
    bind_error, check_parameter_count, placeholder_error, unsupported_column,
};
use crate::sql::placeholders::{Dialect, Quote, Target, prepare};
use crate::sql::{Value, parse_timestamp, parse_timestamptz};

const fn doubled(open: char, close: char) -> Quote {
    Quote {
        open,
        close,
        doubling: true,
        backslash: false,
    }
}

/// SQLite lexing (`tokenize.c`): `'...'`, `"..."` and `` `...` `` with doubling, `[...]` without
/// any escape; `--` comments to `\n`; block comments that do not nest. Identifier characters
/// are ASCII letters and digits, `_`, `$` and non-ASCII; a token that starts with a digit and
/// runs into them is illegal. SQLite's own markers (`?`, `?N`, `:a`, `@a`, `#a`, `$a`) are
/// refused (sqlx binds `?` by position and refuses names as a protocol error), and so is `$1::`
/// or `$1(`, which SQLite reads as one Tcl-style name. The statement reaches the driver
/// unchanged: SQLite reads `$n` itself.
pub(crate) const SQLITE: Dialect = Dialect {
    name: "SQLite",
    target: Target::Keep,
    quotes: &[
        doubled('\'', '\''),
        doubled('"', '"'),
        doubled('`', '`'),
        Quote {
            open: '[',
            close: ']',
            doubling: false,
            backslash: false,
        },
    ],
    escape_strings: false,
    dollar_quotes: false,
    dash_comment_needs_space: false,
    cr_ends_line_comment: false,
    hash_comments: false,
    nested_block_comments: false,
    executable_comments: false,
    word_start: |c| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii(),
    word_continue: |c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii(),
    digit_words: true,
    foreign_markers: &[
        ('?', false),
        (':', true),
        ('@', true),
        ('#', true),
        ('$', true),
    ],
    dollar_name_suffixes: true,
};

/// The query with its parameters bound; SQLite reads `$n` as numbered parameters, checked
/// against the parameters first (SQLite would bind NULL to a missing one).
pub(super) fn bind<'q>(
    sql: &'q str,
    params: &[Value],
) -> Result<Query<'q, Sqlite, SqliteArguments>, sqlx::Error> {
    super::Lite::check_statement(sql, params)?;
    prepare(sql, &SQLITE, params, false).map_err(placeholder_error)?;
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

/// The largest parameter number the bundled SQLite accepts (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;

/// More parameters than SQLite accepts: refused before the statement is sent. (A placeholder
/// with no parameter, which SQLite would bind as NULL, and `$0`, which panicked sqlx's worker,
/// are refused by the placeholder check in [`bind`] and in the SeaORM statement.)
///
/// A NaN float is refused too: SQLite stores a NaN it is given as NULL, without an error.
pub(super) fn check_placeholders(sql: &str, params: &[Value]) -> Result<(), sqlx::Error> {
    let _ = sql;
    check_parameter_count(params.len(), MAX_PARAMETERS)?;
    match params
        .iter()
        .position(|v| matches!(v, Value::Float(f) if f.is_nan()))
    {
        Some(i) => Err(sqlx::Error::Encode(
            format!(
                "parameter ${}: SQLite has no NaN (it would store NULL); bind Value::Null for no value",
                i + 1
            )
            .into(),
        )),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::sql::placeholders::generate::{Lang, PARAMS, expected, input, statement};

    fn ints(n: u32) -> Vec<Value> {
        (1..=n).map(|i| Value::Int(i.into())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Every generated statement is accepted and reaches the driver unchanged (borrowed,
        /// not copied); with NULL parameters written as `NULL`, exactly the placeholders in
        /// code change.
        #[test]
        fn statements_reach_the_driver_unchanged(frags in statement(Lang::Sqlite, 10)) {
            let sql = input(&frags);
            let prepared = prepare(&sql, &SQLITE, &ints(PARAMS), false).map_err(|e| e.to_string());
            prop_assert!(matches!(prepared.as_ref().map(|p| &p.sql), Ok(Cow::Borrowed(s)) if *s == sql), "{prepared:?}");
            prop_assert_eq!(prepared.map(|p| p.order), Ok(Vec::new()));
            let (want, _) = expected(&frags, |n| format!("${n}"));
            prop_assert_eq!(want, sql);
        }

        /// The same rules with `?` written for each placeholder found: exactly the ones in
        /// code, in order (literals, identifiers and comments hold `$1`s too).
        #[test]
        fn placeholders_are_found_exactly_where_the_server_reads_code(frags in statement(Lang::Sqlite, 10)) {
            const FINDING: Dialect = Dialect { target: Target::Question, ..SQLITE };
            let found = prepare(&input(&frags), &FINDING, &ints(PARAMS), false)
                .map(|p| (p.sql.into_owned(), p.order))
                .map_err(|e| e.to_string());
            prop_assert_eq!(found, Ok(expected(&frags, |_| "?".to_owned())));
        }
    }
}
