//! Decoding sqlx rows into [`Row`]s: what every sqlx flavor shares.

use std::sync::Arc;

use sqlx::Column as _;

use crate::sql::{Row, Value};

/// A problem decoding a column, reported as a query error.
pub(crate) fn unsupported_column(column: &str, type_name: &str) -> sqlx::Error {
    sqlx::Error::Decode(
        format!(
            "column `{column}` has type {type_name}, which the neutral handle does not decode; cast it in SQL (e.g. `::text`) or use the native pool"
        )
        .into(),
    )
}

/// A parameter of a type the backend cannot bind.
pub(crate) fn bind_error(at: usize, value: &Value, backend: &str) -> sqlx::Error {
    sqlx::Error::Encode(
        format!(
            "parameter ${at}: {backend} has no type for a {} value",
            value.type_name()
        )
        .into(),
    )
}

/// More parameters than the protocol can carry: a statement error, found before sending (sqlx
/// reports it as a protocol error, which reads as transient).
pub(crate) fn check_parameter_count(count: usize, limit: usize) -> Result<(), sqlx::Error> {
    if count > limit {
        return Err(sqlx::Error::Encode(
            format!("{count} parameters are more than the {limit} one statement can carry").into(),
        ));
    }
    Ok(())
}

/// A statement whose placeholders cannot be bound: a query error, before the driver sees it.
pub(crate) fn placeholder_error(e: crate::sql::placeholders::PlaceholderError) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(e))
}

pub(crate) use crate::backends::columns::ColumnCache;

impl ColumnCache {
    /// The shared name list of `row`'s columns.
    pub(crate) fn names<R: sqlx::Row>(&self, row: &R) -> Arc<[String]> {
        self.names_of(row.columns().iter().map(|c| c.name()))
    }
}

/// Decodes the one row of a `fetch_optional` (no list around it, which would be one more
/// allocation per statement).
pub(crate) fn decode_row<R, F>(row: &R, cache: &ColumnCache, decode: F) -> Result<Row, sqlx::Error>
where
    R: sqlx::Row,
    F: Fn(&R) -> Result<Vec<Value>, sqlx::Error>,
{
    decode(row).map(|values| Row::new(cache.names(row), values))
}

/// Decodes a whole result, sharing one column-name list across its rows (and with earlier
/// results of the same columns, through `cache`).
pub(crate) fn decode_rows<'a, R, F>(
    rows: impl IntoIterator<Item = &'a R>,
    cache: &ColumnCache,
    decode: F,
) -> Result<Vec<Row>, sqlx::Error>
where
    R: sqlx::Row + 'a,
    F: Fn(&R) -> Result<Vec<Value>, sqlx::Error>,
{
    let mut columns: Option<Arc<[String]>> = None;
    rows.into_iter()
        .map(|r| {
            let names = columns.get_or_insert_with(|| cache.names(r)).clone();
            decode(r).map(|values| Row::new(names, values))
        })
        .collect()
}
