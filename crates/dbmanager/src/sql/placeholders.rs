//! The neutral handle's `$n` placeholders, found by each server's own lexical rules: checked
//! against the parameters given, and rewritten into the driver's syntax where it has another.
//!
//! A statement is scanned once, outside string literals, quoted identifiers and comments as the
//! server lexes them ([`Dialect`]). Each `$n` standing alone (not inside an identifier such as
//! `a$1`) is a placeholder:
//!
//! - it must name a parameter that was given (`$1` ..= `$len`); `$0`, or `$3` with two
//!   parameters, is an error before anything reaches the driver (SQLite would bind NULL and
//!   PostgreSQL would answer with a protocol-class error);
//! - it must not run into an identifier character (`$1abc`: SQL Server would read the money
//!   literal `$1` and the alias `abc`, SQLite one parameter named `$1abc`);
//! - the server's own markers that the neutral syntax does not use are refused where they would
//!   be parameters (MySQL `?`; SQLite `?`, `:a`, `@a`, `#a`, `$a`), so the server never counts a
//!   parameter the caller did not number;
//! - a NULL parameter can be written into the text as the keyword `NULL` (`inline_nulls`), which
//!   every server types by its context, as it does a NULL literal. Drivers that can only bind a
//!   typed NULL (tiberius: NVARCHAR; SeaORM: text) would otherwise clash with a column of
//!   another type.
//!
//! SQL Server reads `$1` as the money literal 1: a placeholder left unrewritten would run
//! without an error against the wrong rows. Its rewritten text is therefore scanned a second
//! time, and any `$` + digit still standing as a token is an error.

use std::borrow::Cow;
use std::fmt;

use crate::sql::Value;

/// What a placeholder becomes in the statement the driver receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The driver reads `$n` itself (PostgreSQL, SQLite): kept as written.
    Keep,
    /// `?` per occurrence; the parameters are bound in order of appearance (MySQL).
    Question,
    /// `@Pn`, tiberius's names for the parameters in the order given (SQL Server).
    AtP,
}

/// A quoted string or identifier.
#[derive(Debug)]
pub(crate) struct Quote {
    pub open: char,
    pub close: char,
    /// The closing character written twice stands for itself (`''`, `""`, `]]`).
    pub doubling: bool,
    /// A backslash escapes the next character (MySQL strings in the default `sql_mode`).
    pub backslash: bool,
}

/// The lexical rules of one server that decide where a `$n` is a placeholder.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// The server, for error messages.
    pub name: &'static str,
    pub target: Target,
    pub quotes: &'static [Quote],
    /// A lone `E`/`e` right before `'` starts a string with backslash escapes (PostgreSQL).
    pub escape_strings: bool,
    /// `$tag$ ... $tag$` and `$$ ... $$` strings (PostgreSQL).
    pub dollar_quotes: bool,
    /// `--` starts a comment only before whitespace, a control character or the end (MySQL).
    pub dash_comment_needs_space: bool,
    /// A `\r` ends a `--` comment as well as a `\n` (SQL Server, PostgreSQL).
    pub cr_ends_line_comment: bool,
    /// `#` starts a comment to the end of the line (MySQL).
    pub hash_comments: bool,
    /// `/* /* */ */` is one comment (SQL Server, PostgreSQL); else the first `*/` ends it.
    pub nested_block_comments: bool,
    /// `/*! ... */`, `/*!NNNNN ... */` and `/*M! ... */` hold code (MySQL, MariaDB).
    pub executable_comments: bool,
    /// Starts an identifier or keyword.
    pub word_start: fn(char) -> bool,
    /// Continues one; a `$` here makes `a$1` one identifier.
    pub word_continue: fn(char) -> bool,
    /// A digit may start an identifier (MySQL `1$1`, SQLite's illegal `1$1` token); else a digit
    /// starts a number: digits, a fraction and an exponent, after which `$` starts a new token.
    pub digit_words: bool,
    /// The server's own parameter markers, refused in code: the character, and whether it is a
    /// marker only before an identifier character (SQLite `:a`) rather than always (`?`).
    pub foreign_markers: &'static [(char, bool)],
    /// `$1::x` and `$1(x)` are one parameter name to the server (SQLite's Tcl-style names).
    pub dollar_name_suffixes: bool,
}

/// A statement ready for the driver.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Prepared<'a> {
    pub sql: Cow<'a, str>,
    /// [`Target::Question`]: per `?`, the 1-based number of the parameter it binds
    /// (`$2 ... $1 ... $2` gives `[2, 1, 2]`). Empty for the other targets, which bind the
    /// parameters as given.
    pub order: Vec<u32>,
    /// Per parameter, whether a placeholder in code names it (a parameter nothing names gives
    /// the server no context to type a NULL by).
    pub used: Vec<bool>,
}

/// A statement whose placeholders cannot be bound as written; a query error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlaceholderError(String);

impl fmt::Display for PlaceholderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlaceholderError {}

/// Where a scanned placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Code,
    /// Inside a MySQL comment that runs only on some servers (`/*!50001 ...*/`, `/*M! ...*/`).
    ConditionalCode,
}

/// Checks a statement's placeholders against `params` and writes them in the dialect's target
/// syntax; a NULL parameter becomes the keyword `NULL` when `inline_nulls` is set.
pub(crate) fn prepare<'a>(
    sql: &'a str,
    dialect: &Dialect,
    params: &[Value],
    inline_nulls: bool,
) -> Result<Prepared<'a>, PlaceholderError> {
    let interesting = |c: char| c == '$' || dialect.foreign_markers.iter().any(|(m, _)| *m == c);
    if !sql.contains(interesting) {
        return Ok(Prepared {
            sql: Cow::Borrowed(sql),
            order: Vec::new(),
            used: vec![false; params.len()],
        });
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut order = Vec::new();
    let mut used = vec![false; params.len()];
    scan(sql, dialect, |start, end, n, place| {
        let at = placeholder_at(sql, start, end);
        if place == Place::ConditionalCode {
            return Err(PlaceholderError(format!(
                "{at} is inside a {} comment that runs only on some server versions (`/*!NNNNN ... */` or `/*M! ... */`); move it out",
                dialect.name
            )));
        }
        let index = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < params.len())
            .ok_or_else(|| {
                PlaceholderError(if n == 0 {
                    format!("{at} names no parameter: parameters are numbered from $1")
                } else {
                    format!("{at} has no parameter ({} given)", params.len())
                })
            })?;
        used[index] = true;
        let null = inline_nulls && matches!(params[index], Value::Null);
        if !null && dialect.target == Target::Keep {
            return Ok(());
        }
        let buffer = out.get_or_insert_with(|| String::with_capacity(sql.len() + 16));
        buffer.push_str(&sql[copied..start]);
        copied = end;
        if null {
            buffer.push_str("NULL");
            return Ok(());
        }
        match dialect.target {
            Target::Keep => buffer.push_str(&sql[start..end]),
            Target::Question => {
                buffer.push('?');
                order.push(n);
            }
            Target::AtP => {
                buffer.push_str("@P");
                buffer.push_str(&n.to_string());
            }
        }
        Ok(())
    })?;
    let sql = match out {
        None => Cow::Borrowed(sql),
        Some(mut buffer) => {
            buffer.push_str(&sql[copied..]);
            Cow::Owned(buffer)
        }
    };
    if dialect.target == Target::AtP {
        // Belt and braces: nothing that reads as `$<digit>` may reach SQL Server as code.
        scan(&sql, dialect, |start, end, _, _| {
            Err(PlaceholderError(format!(
                "{} would reach {} as a money literal",
                placeholder_at(&sql, start, end),
                dialect.name
            )))
        })?;
    }
    Ok(Prepared { sql, order, used })
}

/// The words of a statement that stand in code (not in literals, quoted identifiers or
/// comments), in order: keywords and unquoted identifiers.
// Only the SQL Server backend asks (which statements may end a transaction).
#[allow(dead_code)]
pub(crate) fn code_words<'a>(sql: &'a str, dialect: &Dialect) -> Vec<&'a str> {
    let mut words = Vec::new();
    let mut lexer = Lexer::new(sql, dialect);
    // Placeholder and marker problems are not this caller's concern.
    let _ = lexer.run(&mut |_, _, _, _| Ok(()), &mut |w| words.push(w), true);
    words
}

fn placeholder_at(sql: &str, start: usize, end: usize) -> String {
    let text: String = sql[start..end].chars().take(24).collect();
    format!("placeholder `{text}` at byte {start}")
}

/// Calls `found(start, end, n, place)` for each placeholder `$n` in code, in order.
fn scan(
    sql: &str,
    dialect: &Dialect,
    mut found: impl FnMut(usize, usize, u32, Place) -> Result<(), PlaceholderError>,
) -> Result<(), PlaceholderError> {
    Lexer::new(sql, dialect).run(&mut found, &mut |_| {}, false)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Executable {
    No,
    Always,
    Conditional,
}

struct Lexer<'s, 'd> {
    sql: &'s str,
    d: &'d Dialect,
    i: usize,
}

impl<'s, 'd> Lexer<'s, 'd> {
    fn new(sql: &'s str, d: &'d Dialect) -> Self {
        Self { sql, d, i: 0 }
    }

    fn at(&self, i: usize) -> Option<char> {
        self.sql.get(i..).and_then(|s| s.chars().next())
    }

    fn starts(&self, i: usize, s: &str) -> bool {
        self.sql
            .as_bytes()
            .get(i..)
            .is_some_and(|b| b.starts_with(s.as_bytes()))
    }

    /// The index just past the run of characters from `i` that satisfy `f`.
    fn run_of(&self, mut i: usize, f: impl Fn(char) -> bool) -> usize {
        while let Some(c) = self.at(i).filter(|c| f(*c)) {
            i += c.len_utf8();
        }
        i
    }

    fn run(
        &mut self,
        found: &mut dyn FnMut(usize, usize, u32, Place) -> Result<(), PlaceholderError>,
        word: &mut dyn FnMut(&'s str),
        lenient: bool,
    ) -> Result<(), PlaceholderError> {
        let d = self.d;
        let mut executable = Executable::No;
        while let Some(c) = self.at(self.i) {
            let next = self.at(self.i + c.len_utf8());
            if let Some(q) = d.quotes.iter().find(|q| q.open == c) {
                self.i = self.skip_quoted(self.i + c.len_utf8(), q.close, q.doubling, q.backslash);
                continue;
            }
            if c == '-' && next == Some('-') && self.dash_comment_at(self.i + 2) {
                self.i = self.skip_line(self.i + 2);
                continue;
            }
            if c == '#' && d.hash_comments {
                self.i = self.skip_line(self.i + 1);
                continue;
            }
            if c == '/' && next == Some('*') {
                if d.executable_comments {
                    let marker = if self.starts(self.i + 2, "!") {
                        Some((3, Executable::Always))
                    } else if self.starts(self.i + 2, "M!") {
                        Some((4, Executable::Conditional))
                    } else {
                        None
                    };
                    if let Some((len, kind)) = marker {
                        let version_end = self.run_of(self.i + len, |c| c.is_ascii_digit());
                        executable = if version_end > self.i + len {
                            Executable::Conditional
                        } else {
                            kind
                        };
                        self.i = version_end;
                        continue;
                    }
                }
                self.i = self.skip_block_comment(self.i + 2);
                continue;
            }
            if c == '*' && next == Some('/') && executable != Executable::No {
                executable = Executable::No;
                self.i += 2;
                continue;
            }
            if c == '$' {
                if next.is_some_and(|n| n.is_ascii_digit()) {
                    let start = self.i;
                    let end = self.run_of(start + 1, |c| c.is_ascii_digit());
                    let n = self.sql[start + 1..end].bytes().fold(0u32, |n, b| {
                        n.saturating_mul(10).saturating_add(u32::from(b - b'0'))
                    });
                    self.i = end;
                    if !lenient {
                        self.check_after_placeholder(start, end)?;
                    }
                    let place = if executable == Executable::Conditional {
                        Place::ConditionalCode
                    } else {
                        Place::Code
                    };
                    found(start, end, n, place)?;
                    continue;
                }
                if d.dollar_quotes
                    && let Some(end) = self.skip_dollar_quoted(self.i)
                {
                    self.i = end;
                    continue;
                }
            }
            if (d.word_start)(c) || (d.digit_words && c.is_ascii_digit()) {
                let start = self.i;
                self.i = self.run_of(self.i + c.len_utf8(), d.word_continue);
                let w = &self.sql[start..self.i];
                if d.escape_strings && (w == "E" || w == "e") && self.at(self.i) == Some('\'') {
                    self.i = self.skip_quoted(self.i + 1, '\'', true, true);
                    continue;
                }
                word(w);
                continue;
            }
            if c.is_ascii_digit() {
                self.i = self.skip_number(self.i);
                continue;
            }
            if !lenient
                && let Some(&(marker, needs_word)) = d.foreign_markers.iter().find(|(m, _)| *m == c)
                && (!needs_word || next.is_some_and(|n| (d.word_continue)(n)))
            {
                let text: String = self.sql[self.i..].chars().take(12).collect();
                return Err(PlaceholderError(format!(
                    "`{marker}` at byte {} (`{text}`) is a {} parameter marker; write parameters as $1, $2, ... (or put the text in a string literal)",
                    self.i, d.name
                )));
            }
            self.i += c.len_utf8();
        }
        Ok(())
    }

    /// `--` at `i - 2` starts a comment.
    fn dash_comment_at(&self, i: usize) -> bool {
        !self.d.dash_comment_needs_space
            || self
                .at(i)
                .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    }

    fn check_after_placeholder(&self, start: usize, end: usize) -> Result<(), PlaceholderError> {
        let d = self.d;
        let Some(after) = self.at(end) else {
            return Ok(());
        };
        let glued = (d.word_continue)(after) || after == '$';
        let suffix = d.dollar_name_suffixes && (after == '(' || self.starts(end, "::"));
        if glued || suffix {
            return Err(PlaceholderError(format!(
                "{} runs into `{after}`, which {} would read as part of it; put a space or an operator after it{}",
                placeholder_at(self.sql, start, end),
                d.name,
                if suffix {
                    " (and use CAST(... AS ...) rather than `::`)"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    /// From just past the opening quote to just past the closing one (or the end).
    fn skip_quoted(&self, mut i: usize, close: char, doubling: bool, backslash: bool) -> usize {
        while let Some(c) = self.at(i) {
            i += c.len_utf8();
            if backslash && c == '\\' {
                if let Some(escaped) = self.at(i) {
                    i += escaped.len_utf8();
                }
                continue;
            }
            if c == close {
                if doubling && self.at(i) == Some(close) {
                    i += close.len_utf8();
                    continue;
                }
                return i;
            }
        }
        i
    }

    /// From just past the comment's opener to its terminator, which the code then reads.
    fn skip_line(&self, i: usize) -> usize {
        let cr = self.d.cr_ends_line_comment;
        self.run_of(i, |c| c != '\n' && !(cr && c == '\r'))
    }

    /// From just past `/*` to just past the matching `*/` (or the end). Openers and closers
    /// are read as pairs from left to right, so `/*/` opens and does not close.
    fn skip_block_comment(&self, mut i: usize) -> usize {
        let mut depth = 1usize;
        while let Some(c) = self.at(i) {
            if self.d.nested_block_comments && self.starts(i, "/*") {
                depth += 1;
                i += 2;
            } else if self.starts(i, "*/") {
                i += 2;
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            } else {
                i += c.len_utf8();
            }
        }
        i
    }

    /// A PostgreSQL dollar-quoted string at `i` (`$$...$$`, `$tag$...$tag$`); its end.
    fn skip_dollar_quoted(&self, i: usize) -> Option<usize> {
        let tag_start = i + 1;
        let tag_end = match self.at(tag_start) {
            Some('$') => tag_start,
            Some(c) if (self.d.word_start)(c) => {
                self.run_of(tag_start, |c| c != '$' && (self.d.word_continue)(c))
            }
            _ => return None,
        };
        if self.at(tag_end) != Some('$') {
            return None;
        }
        let delimiter = &self.sql[i..=tag_end];
        let body = tag_end + 1;
        Some(
            self.sql[body..]
                .find(delimiter)
                .map_or(self.sql.len(), |at| body + at + delimiter.len()),
        )
    }

    /// A number: digits, a fraction and an exponent (`1`, `1.5`, `1e5`, `1.5E+3`, `1e`).
    fn skip_number(&self, i: usize) -> usize {
        let digits = |c: char| c.is_ascii_digit();
        let mut i = self.run_of(i, digits);
        if self.at(i) == Some('.') {
            i = self.run_of(i + 1, digits);
        }
        if matches!(self.at(i), Some('e' | 'E')) {
            i += 1;
            if matches!(self.at(i), Some('+' | '-')) {
                i += 1;
            }
            i = self.run_of(i, digits);
        }
        i
    }
}

#[cfg(test)]
pub(crate) mod generate;

#[cfg(test)]
mod tests {
    use super::*;

    fn alnum(c: char) -> bool {
        c.is_alphanumeric() || c == '_'
    }

    fn alnum_dollar(c: char) -> bool {
        alnum(c) || c == '$'
    }

    const PLAIN: Dialect = Dialect {
        name: "test",
        target: Target::Question,
        quotes: &[Quote {
            open: '\'',
            close: '\'',
            doubling: true,
            backslash: false,
        }],
        escape_strings: false,
        dollar_quotes: false,
        dash_comment_needs_space: false,
        cr_ends_line_comment: false,
        hash_comments: false,
        nested_block_comments: false,
        executable_comments: false,
        word_start: alnum,
        word_continue: alnum_dollar,
        digit_words: false,
        foreign_markers: &[],
        dollar_name_suffixes: false,
    };

    #[test]
    fn statements_without_dollars_are_borrowed() {
        let r = prepare("SELECT 1", &PLAIN, &[], true).unwrap();
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
            "é$",
            "$é",
            "1e+",
        ] {
            let _ = prepare(sql, &PLAIN, &[Value::Int(1)], true);
            let _ = code_words(sql, &PLAIN);
        }
    }

    #[test]
    fn unbindable_placeholders_are_errors() {
        let one = [Value::Int(1)];
        let err = prepare("SELECT $2", &PLAIN, &one, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "placeholder `$2` at byte 7 has no parameter (1 given)"
        );
        let err = prepare("SELECT $0", &PLAIN, &one, false).unwrap_err();
        assert!(err.to_string().contains("numbered from $1"), "{err}");
        let err = prepare("SELECT $99999999999", &PLAIN, &one, false).unwrap_err();
        assert!(err.to_string().contains("has no parameter"), "{err}");
        let err = prepare("SELECT $1abc", &PLAIN, &one, false).unwrap_err();
        assert!(err.to_string().contains("runs into `a`"), "{err}");
        assert_eq!(
            prepare("SELECT a$1, $1", &PLAIN, &one, false).unwrap().sql,
            "SELECT a$1, ?"
        );
    }

    #[test]
    fn code_words_skip_literals_and_comments() {
        assert_eq!(
            code_words(
                "SELECT 'ROLLBACK' -- COMMIT\n, x$1 /* BEGIN */ FROM t",
                &PLAIN
            ),
            ["SELECT", "x$1", "FROM", "t"]
        );
    }
}
