//! The neutral handle on SQL Server: `$n` placeholders rewritten to `@Pn`, values bound as
//! tiberius parameters, rows decoded from tiberius's column data.

use std::borrow::Cow;
use std::sync::Arc;

use tiberius::{ColumnData, ToSql};

use super::value::{Row, Value};
use crate::backend::mssql::TiberiusClient;

/// Rewrites `$1` to `@P1` outside string literals, quoted identifiers and comments.
pub(crate) fn rewrite_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | '"' | '[' => {
                let close = if c == '[' { ']' } else { c };
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == close {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|(_, d)| *d == '-') => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, d)| *d == '*') => {
                out.push(c);
                let mut prev = ' ';
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '$' if chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) => {
                out.push_str("@P");
                while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                    out.push(d);
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn to_sql(value: &Value) -> Box<dyn ToSql + '_> {
    match value {
        Value::Null => Box::new(Option::<&str>::None),
        Value::Bool(v) => Box::new(*v),
        Value::Int(v) => Box::new(*v),
        Value::Float(v) => Box::new(*v),
        Value::Text(v) => Box::new(v.as_str()),
        Value::Bytes(v) => Box::new(v.as_slice()),
    }
}

pub(crate) async fn execute(
    client: &mut TiberiusClient,
    sql: &str,
    params: &[Value],
) -> tiberius::Result<u64> {
    let sql = rewrite_placeholders(sql);
    let boxed: Vec<_> = params.iter().map(to_sql).collect();
    let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
    Ok(client.execute(sql.as_ref(), &refs).await?.total())
}

pub(crate) async fn fetch_all(
    client: &mut TiberiusClient,
    sql: &str,
    params: &[Value],
) -> tiberius::Result<Vec<Row>> {
    let sql = rewrite_placeholders(sql);
    let boxed: Vec<_> = params.iter().map(to_sql).collect();
    let refs: Vec<&dyn ToSql> = boxed.iter().map(|b| b.as_ref()).collect();
    let rows = client
        .query(sql.as_ref(), &refs)
        .await?
        .into_first_result()
        .await?;
    let mut columns: Option<Arc<[String]>> = None;
    rows.into_iter()
        .map(|row| {
            let names = columns
                .get_or_insert_with(|| row.columns().iter().map(|c| c.name().to_owned()).collect())
                .clone();
            let values = row
                .into_iter()
                .zip(names.iter())
                .map(|(data, name)| decode(data, name))
                .collect::<tiberius::Result<Vec<_>>>()?;
            Ok(Row::new(names, values))
        })
        .collect()
}

fn decode(data: ColumnData<'static>, column: &str) -> tiberius::Result<Value> {
    let value = match data {
        ColumnData::U8(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map(|v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map(Value::Int),
        ColumnData::F32(v) => v.map(|v| Value::Float(v.into())),
        ColumnData::F64(v) => v.map(Value::Float),
        ColumnData::Bit(v) => v.map(Value::Bool),
        ColumnData::String(v) => v.map(|v| Value::Text(v.into_owned())),
        ColumnData::Guid(v) => v.map(|v| Value::Text(v.to_string())),
        ColumnData::Binary(v) => v.map(|v| Value::Bytes(v.into_owned())),
        ColumnData::Numeric(v) => v.map(|v| Value::Text(v.to_string())),
        _ => {
            return Err(tiberius::error::Error::Conversion(
                format!(
                    "column `{column}` has a type the neutral handle does not decode; cast it in SQL (e.g. CAST(... AS NVARCHAR(50))) or use the native pool"
                )
                .into(),
            ));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_literals_and_comments() {
        assert_eq!(rewrite_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(
            rewrite_placeholders("SELECT * FROM t WHERE a = $1 AND b = $12"),
            "SELECT * FROM t WHERE a = @P1 AND b = @P12"
        );
        assert_eq!(
            rewrite_placeholders("SELECT '$1', \"$2\", [$3], $4 -- $5\n, $6 /* $7 */"),
            "SELECT '$1', \"$2\", [$3], @P4 -- $5\n, @P6 /* $7 */"
        );
        assert_eq!(rewrite_placeholders("SELECT $x, $"), "SELECT $x, $");
    }
}
