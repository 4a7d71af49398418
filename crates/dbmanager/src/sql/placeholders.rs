//! Rewriting the neutral handle's `$n` placeholders into a backend's own syntax, outside string
//! literals, quoted identifiers and comments.

use std::borrow::Cow;

/// The lexical rules of a SQL dialect that decide where a `$n` is a placeholder.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// Opening and closing characters of quoted strings and identifiers.
    pub quotes: &'static [(char, char)],
    /// A backslash escapes the next character inside quotes (MySQL's default `sql_mode`).
    pub backslash_escapes: bool,
    /// `#` starts a comment to the end of the line (MySQL).
    pub hash_comments: bool,
    /// `--` starts a comment only when followed by whitespace (MySQL); else always.
    pub dash_comment_needs_space: bool,
}

/// The rewritten statement and, per placeholder in order of appearance, the 1-based number it
/// had (`$2 ... $1 ... $2` gives `[2, 1, 2]`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rewritten<'a> {
    pub sql: Cow<'a, str>,
    pub order: Vec<u32>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Replaces every `$n` placeholder by what `write` appends for `n`.
pub(crate) fn rewrite<'a>(
    sql: &'a str,
    dialect: &Dialect,
    mut write: impl FnMut(&mut String, u32),
) -> Rewritten<'a> {
    if !sql.contains('$') {
        return Rewritten {
            sql: Cow::Borrowed(sql),
            order: Vec::new(),
        };
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut order = Vec::new();
    let mut chars = sql.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(&(_, close)) = dialect.quotes.iter().find(|(open, _)| *open == c) {
            out.push(c);
            while let Some(d) = chars.next() {
                out.push(d);
                if dialect.backslash_escapes && d == '\\' && close != '`' {
                    if let Some(escaped) = chars.next() {
                        out.push(escaped);
                    }
                    continue;
                }
                if d == close {
                    break;
                }
            }
            prev = Some(close);
            continue;
        }
        let line_comment = (c == '#' && dialect.hash_comments)
            || (c == '-'
                && chars.peek() == Some(&'-')
                && (!dialect.dash_comment_needs_space || {
                    let mut ahead = chars.clone();
                    ahead.next();
                    ahead.peek().is_none_or(|d| d.is_whitespace())
                }));
        if line_comment {
            out.push(c);
            for d in chars.by_ref() {
                out.push(d);
                if d == '\n' {
                    break;
                }
            }
            prev = Some('\n');
            continue;
        }
        if c == '/' && chars.peek() == Some(&'*') {
            out.push(c);
            let mut last = ' ';
            for d in chars.by_ref() {
                out.push(d);
                if last == '*' && d == '/' {
                    break;
                }
                last = d;
            }
            prev = Some('/');
            continue;
        }
        let starts_placeholder = c == '$'
            && chars.peek().is_some_and(|d| d.is_ascii_digit())
            // `a$1` is an identifier in PostgreSQL, MySQL and SQL Server alike.
            && !prev.is_some_and(is_ident_char);
        if starts_placeholder {
            let mut n: u32 = 0;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(d);
                chars.next();
            }
            write(&mut out, n);
            order.push(n);
            prev = Some('0');
            continue;
        }
        out.push(c);
        prev = Some(c);
    }
    Rewritten {
        sql: Cow::Owned(out),
        order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Dialect = Dialect {
        quotes: &[('\'', '\'')],
        backslash_escapes: false,
        hash_comments: false,
        dash_comment_needs_space: false,
    };

    #[test]
    fn statements_without_dollars_are_borrowed() {
        let r = rewrite("SELECT 1", &PLAIN, |_, _| {});
        assert!(matches!(r.sql, Cow::Borrowed(_)));
        assert!(r.order.is_empty());
    }

    #[test]
    fn unterminated_quotes_and_comments_end_the_statement_without_panicking() {
        for sql in [
            "SELECT '$1",
            "SELECT /* $1",
            "SELECT -- $1",
            "$",
            "$$1",
            "'",
        ] {
            let r = rewrite(sql, &PLAIN, |out, _| out.push('?'));
            assert!(r.sql.len() >= sql.len().saturating_sub(2), "{sql}");
        }
    }
}

#[cfg(test)]
pub(crate) mod generate;
