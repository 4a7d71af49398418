//! MySQL and MariaDB through sqlx: one pool, SeaORM on the same pool, the neutral handle with
//! `$n` placeholders rewritten to `?`.

mod options;
mod replica_lag;
mod rows;

use futures_util::future::BoxFuture;
use sqlx::MySql;
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError};

use crate::backends::sqlx::{self as shared, CacheFailure, OpenPlan, SqlxFlavor, sqlx_statements};
use crate::config::{ConnectionConfig, ConnectionProblems, DatabaseType, PoolSettings};
use crate::driver::{BackendPool, Driver, Field, OpenSpec};
use crate::error::{ErrorKind, Result};
use crate::sql::placeholders::{Dialect, Quote, Target};

pub(crate) const DEFAULT_PORT: u16 = 3306;

/// MySQL and MariaDB lexing (their lexers' rules, `sql_lex.cc`), for the default `sql_mode`:
///
/// - `'...'` and `"..."` are strings with backslash escapes and `''`/`""` doubling
///   (`NO_BACKSLASH_ESCAPES` and `ANSI_QUOTES` are not assumed); `` `...` `` is an identifier
///   with ```` `` ```` doubling;
/// - `#` comments, and `--` comments only before whitespace or a control character (`1--$1` is
///   1 minus minus the parameter); both end at `\n`;
/// - block comments do not nest: the first `*/` ends one;
/// - identifiers are ASCII letters and digits, `_`, `$` and any non-ASCII character, and may
///   start with a digit: `a$1`, `1$1` and `@$1` are names, not placeholders;
/// - executable comments hold code. In `/*! ... */`, which every MySQL and MariaDB runs,
///   placeholders are rewritten like any others. A conditional one, `/*!50001 ... */` (runs
///   from a version on) or MariaDB's `/*M! ... */`, runs on some servers and is skipped by
///   others, so a placeholder inside it could be counted or not: that is refused. Its content
///   is lexed as code, as a server that runs it does;
/// - a `?` in code is refused: it would be a parameter the caller did not number.
pub(crate) const MYSQL: Dialect = Dialect {
    name: "MySQL",
    target: Target::Question,
    quotes: &[
        Quote {
            open: '\'',
            close: '\'',
            doubling: true,
            backslash: true,
        },
        Quote {
            open: '"',
            close: '"',
            doubling: true,
            backslash: true,
        },
        Quote {
            open: '`',
            close: '`',
            doubling: true,
            backslash: false,
        },
    ],
    escape_strings: false,
    dollar_quotes: false,
    dash_comment_needs_space: true,
    cr_ends_line_comment: false,
    hash_comments: true,
    nested_block_comments: false,
    executable_comments: true,
    word_start: |c| mysql_word(c) || c == '@',
    word_continue: mysql_word,
    digit_words: true,
    foreign_markers: &[('?', false)],
    dollar_name_suffixes: false,
};

fn mysql_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Mysql,
    variant: None,
    system_name: "mysql",
    default_port: Some(DEFAULT_PORT),
    dsn_schemes: DSN_SCHEMES,
    fields: &[
        Field::Host,
        Field::Hosts,
        Field::TargetSessionAttrs,
        Field::Port,
        Field::User,
        Field::Password,
        Field::PasswordFile,
        Field::Database,
        Field::Sslmode,
        Field::InitSql,
    ],
    required: &[Field::Host],
    no_sea_orm: None,
    check,
    classify: shared::classify_any::<My>,
    open,
    listen: None,
    replica_lag: Some(&replica_lag::PROBE),
};

const DSN_SCHEMES: &[&str] = &["mysql://", "mariadb://"];

/// Contradictions specific to MySQL: without a dsn, a password without a user would log in as
/// sqlx's default user `root`.
fn check(c: &ConnectionConfig, p: &mut ConnectionProblems<'_>) {
    crate::backends::check_host(c, p, |h| crate::dsn::plain_host(h).map(drop));
    if let Some(parsed) =
        crate::backends::check_dsn(c, p, DSN_SCHEMES, |dsn| options::parsed_dsn("", dsn))
        && let Some(problem) = options::charset_problem(&parsed)
    {
        p.push("dsn", problem);
    }
    crate::backends::check_password_needs_user(
        c,
        p,
        "MySQL would log in as its default user `root`",
    );
}

/// The MySQL / MariaDB flavor of the shared sqlx backend.
pub(crate) struct My;

impl SqlxFlavor for My {
    type DB = MySql;

    const TEXT_UUIDS: bool = true;

    fn classify_database(e: &dyn sqlx::error::DatabaseError) -> ErrorKind {
        e.try_downcast_ref::<MySqlDatabaseError>()
            .map_or(ErrorKind::Query, |e| classify_number(e.number()))
    }

    sqlx_statements!(MySql, rows::bind, rows::decode);

    const PLACEHOLDERS: &'static Dialect = &MYSQL;

    fn with_credentials(
        options: sqlx::mysql::MySqlConnectOptions,
        credentials: &crate::credentials::Resolved,
    ) -> sqlx::mysql::MySqlConnectOptions {
        options::with_credentials(options, credentials)
    }

    /// `read_only` (which `super_read_only` implies) and `innodb_read_only`, as a replica or a
    /// demoted primary has them. A user with `SUPER` (or MariaDB's `READ ONLY ADMIN`) could
    /// still write to such a server; it is not used for writes all the same.
    async fn is_writable(conn: &mut MySqlConnection) -> std::result::Result<bool, sqlx::Error> {
        let read_only: i64 = sqlx::query_scalar(
            "SELECT CAST(@@global.read_only + @@global.innodb_read_only AS SIGNED)",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(read_only == 0)
    }

    fn means_failover(e: &dyn sqlx::error::DatabaseError) -> bool {
        // --read-only (ER_OPTION_PREVENTS_STATEMENT), a read-only transaction, InnoDB read-only
        // mode, server shutdown, connection killed.
        e.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1290 | 1792 | 1836 | 1053 | 1927))
    }

    /// A deadlock (1213) and a full lock table (1206) roll the whole transaction back (the
    /// answer is known: one round trip, only after such an error); a lock wait timeout (1205)
    /// only the statement, unless `innodb_rollback_on_timeout` is on. The session then runs its
    /// next statements in autocommit.
    fn ends_transaction(e: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
        match e.try_downcast_ref::<MySqlDatabaseError>()?.number() {
            1213 | 1206 => Some("SELECT 1 AS ended"),
            1205 => Some("SELECT CAST(@@global.innodb_rollback_on_timeout AS SIGNED) AS ended"),
            _ => None,
        }
    }

    /// 1461: `max_prepared_stmt_count` statements are prepared server-wide (sqlx keeps up to
    /// 100 per connection in its cache, all prepared on the server).
    fn cache_failure(e: &dyn sqlx::error::DatabaseError) -> Option<CacheFailure> {
        e.try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| e.number() == 1461)
            .then_some(CacheFailure::Exhausted)
    }

    async fn session_init(
        probe: &mut MySqlConnection,
        settings: &PoolSettings,
    ) -> std::result::Result<Vec<String>, sqlx::Error> {
        let Some(limit) = settings.query_timeout else {
            return Ok(Vec::new());
        };
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut *probe)
            .await?;
        Ok(vec![options::statement_timeout(&version, limit)])
    }

    #[cfg(feature = "sea-orm")]
    fn sea_orm(pool: sqlx::MySqlPool) -> sea_orm::DatabaseConnection {
        pool.into()
    }

    #[cfg(feature = "sea-orm")]
    fn decode_orm_row(
        result: &sea_orm::QueryResult,
    ) -> Option<std::result::Result<Vec<crate::sql::Value>, sqlx::Error>> {
        result.try_as_mysql_row().map(rows::decode)
    }
}

/// Server error numbers (the client-side 2006/2013 "gone away" and "lost connection" reach
/// sqlx as I/O errors, which are transient already).
fn classify_number(number: u16) -> ErrorKind {
    match number {
        // access denied (password, unix socket plugin), password expired
        1045 | 1698 | 1862 | 1820 => ErrorKind::Authentication,
        // unknown database, no access to the database
        1049 | 1044 => ErrorKind::Configuration,
        // too many connections, the server-wide and the per-account user connection limits,
        // server shutting down, lock wait timeout, deadlock, connection killed, lost
        // connection / gone away
        1040 | 1203 | 1226 | 1053 | 1205 | 1213 | 1927 | 2006 | 2013 => ErrorKind::Transient,
        _ => ErrorKind::Query,
    }
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move {
        let (credentials, _) = spec.credentials.current().await?;
        let options = options::connect_options(spec.name, spec.config, &credentials).await?;
        let failover = options::failover_plan(spec.name, spec.config, &options)?;
        let plan = OpenPlan {
            options,
            keep_probe: false,
            init: Vec::new(),
            failover,
            per_transaction: None,
        };
        shared::open::<My>(spec, plan).await
    })
}

impl crate::adopt::Sealed for sqlx::MySqlPool {}

impl crate::adopt::Adoptable for sqlx::MySqlPool {
    fn kind(&self) -> DatabaseType {
        DatabaseType::Mysql
    }

    fn adopt(self, context: &crate::adopt::AdoptContext) -> crate::adopt::Adopted {
        crate::adopt::Adopted(shared::adopt::<My>(&context.name, &context.counters, self))
    }

    fn is_closed(&self) -> bool {
        sqlx::Pool::is_closed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(sql: &str) -> (String, Vec<u32>) {
        let params = vec![crate::sql::Value::Int(0); 3];
        let r = crate::sql::placeholders::prepare(sql, &MYSQL, &params, true).unwrap();
        (r.sql.into_owned(), r.order)
    }

    #[test]
    fn placeholders_follow_mysql_lexing_and_keep_their_order() {
        assert_eq!(
            mysql("SELECT $2, $1, $2"),
            ("SELECT ?, ?, ?".to_owned(), vec![2, 1, 2])
        );
        assert_eq!(
            mysql("SELECT `$1`, '\\'$1', \"$1\", $1 # $2\n, $3"),
            (
                "SELECT `$1`, '\\'$1', \"$1\", ? # $2\n, ?".to_owned(),
                vec![1, 3]
            )
        );
        // `--` is a comment only before whitespace; `1--$1` is 1 minus minus $1.
        assert_eq!(
            mysql("SELECT 1--$1\n-- $2\n"),
            ("SELECT 1--?\n-- $2\n".to_owned(), vec![1])
        );
        assert_eq!(
            mysql("SELECT /* $1 */ $1"),
            ("SELECT /* $1 */ ?".to_owned(), vec![1])
        );
        assert_eq!(
            mysql("SELECT 'a\\\\', $1"),
            ("SELECT 'a\\\\', ?".to_owned(), vec![1])
        );
        assert_eq!(mysql("SELECT a$1 FROM t").1, Vec::<u32>::new());
    }

    use crate::sql::Value;
    use crate::sql::placeholders::generate::{Lang, PARAMS, expected, input, statement};
    use proptest::prelude::*;

    /// The statement MySQL receives and the parameter numbers bound in order, or why none is
    /// sent.
    fn sent(sql: &str, params: &[Value]) -> std::result::Result<(String, Vec<u32>), String> {
        crate::sql::placeholders::prepare(sql, My::PLACEHOLDERS, params, true)
            .map(|r| (r.sql.into_owned(), r.order))
            .map_err(|e| e.to_string())
    }

    fn ints(n: u32) -> Vec<Value> {
        (1..=n).map(|i| Value::Int(i.into())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Strings with backslash escapes and `''`, backtick identifiers, `#` and `-- `
        /// comments, block comments that do not nest, executable comments `/*! ... */` (code:
        /// rewritten) and conditional ones without placeholders, words with `$` inside
        /// (`1$1` included), and placeholders.
        #[test]
        fn mysql_rewrites_exactly_the_placeholders_mysql_reads_as_code(
            frags in statement(Lang::MySql, 10)
        ) {
            let want = expected(&frags, |_| "?".to_owned());
            prop_assert_eq!(sent(&input(&frags), &ints(PARAMS)), Ok(want));
        }
    }

    #[test]
    fn mysql_lexing_cases() {
        let p = ints(2);
        let ok = |sql: &str| sent(sql, &p).unwrap();
        // Block comments do not nest: the first `*/` ends the comment.
        assert_eq!(
            ok("SELECT /* /* */ $1"),
            ("SELECT /* /* */ ?".into(), vec![1])
        );
        // An executable comment is code on every MySQL and MariaDB.
        assert_eq!(
            ok("SELECT 1 /*! + $2 */, $1"),
            ("SELECT 1 /*! + ? */, ?".into(), vec![2, 1])
        );
        assert_eq!(
            ok("SELECT /*! '*/' */ $1"),
            ("SELECT /*! '*/' */ ?".into(), vec![1])
        );
        assert_eq!(
            ok("SELECT 'a\\'$1', 'b''$2', \"c\\\"$1\", $2"),
            ("SELECT 'a\\'$1', 'b''$2', \"c\\\"$1\", ?".into(), vec![2])
        );
        assert_eq!(
            ok("SELECT 1--\u{1}$1"),
            ("SELECT 1--\u{1}$1".into(), vec![])
        );
    }

    #[test]
    fn mysql_refuses_what_it_cannot_bind() {
        let p = ints(2);
        for sql in [
            "SELECT $3",
            "SELECT $0",
            // MySQL's own marker would add a parameter nobody numbered.
            "SELECT ?, $1",
            // Whether a conditional comment runs depends on the server's version.
            "SELECT 1 /*!50001 + $1 */",
            "SELECT 1 /*M! + $1 */",
            "SELECT $1abc",
        ] {
            let err = sent(sql, &p).unwrap_err();
            assert!(!err.is_empty(), "{sql}");
        }
    }

    #[test]
    fn error_numbers_classify() {
        assert_eq!(classify_number(1045), ErrorKind::Authentication);
        assert_eq!(classify_number(1049), ErrorKind::Configuration);
        assert_eq!(classify_number(1040), ErrorKind::Transient);
        assert_eq!(classify_number(1226), ErrorKind::Transient);
        assert_eq!(classify_number(2013), ErrorKind::Transient);
        assert_eq!(classify_number(1064), ErrorKind::Query);
    }
}
