//! The neutral handle's `$n` placeholders on every SQL backend and layer: a placeholder that
//! cannot be bound is a query error before the statement reaches the server, and statements
//! reach each server exactly as its own lexer reads them (property tests against the real
//! servers: the values and column names that come back are the literals and identifiers that
//! were written).

mod support;

use std::time::Duration;

use dbmanager::{DefaultOrm, ErrorKind, Manager, Value};
use support::{TestDb, fast_config};

const LAYERS: [DefaultOrm; 2] = [DefaultOrm::Native, DefaultOrm::SeaOrm];

/// Statements whose placeholders cannot be bound with one parameter.
const UNBINDABLE: [&str; 4] = [
    "SELECT $2 AS x",
    // `$0` made sqlx's SQLite worker panic (an index underflow) and return no rows.
    "SELECT $0 AS x",
    // SQLite read `$1abc` as parameter 1; PostgreSQL reports trailing junk.
    "SELECT $1abc AS x",
    "SELECT $1 AS x, $3 AS y",
];

async fn refuses_unbindable(manager: &Manager, name: &str) {
    let db = manager.database(name).unwrap();
    for sql in UNBINDABLE {
        let err = db.fetch_all(sql, &[Value::Int(1)]).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Query,
            "{name} {:?}: {sql}: {err}",
            db.layer()
        );
        assert!(
            err.to_string()
                .contains(&format!("connection `{name}`: query failed")),
            "{err}"
        );
    }
    let err = db.fetch_all("SELECT $1 AS x", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Query, "{err}");
    // The pool still works.
    let row = db.fetch_one("SELECT 1 AS one", &[]).await.unwrap();
    assert_eq!(row.get::<i64>("one"), Some(1));
}

#[tokio::test]
async fn sqlite_refuses_placeholders_without_a_parameter_on_both_layers() {
    for layer in LAYERS {
        let mut c = dbmanager::ConnectionConfig::sqlite("lite", ":memory:");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        refuses_unbindable(&manager, "lite").await;
        // SQLite's own markers would be bound by position or refused by sqlx as a
        // protocol-class (retryable) error.
        let db = manager.database("lite").unwrap();
        for sql in [
            "SELECT ? AS x",
            "SELECT :a AS x",
            "SELECT @a AS x",
            "SELECT $a AS x",
        ] {
            let err = db.fetch_all(sql, &[Value::Int(1)]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Query, "{sql}: {err}");
        }
        manager.close(Duration::from_secs(5)).await;
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mariadb_refuses_placeholders_without_a_parameter_on_both_layers() {
    let db = support::mysql::MysqlTestDb::create();
    for layer in LAYERS {
        let mut c = db.config("my");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        refuses_unbindable(&manager, "my").await;
        let db = manager.database("my").unwrap();
        for sql in ["SELECT ? AS x", "SELECT 1 /*!50001 + $1 */ AS x"] {
            let err = db.fetch_all(sql, &[Value::Int(1)]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Query, "{sql}: {err}");
        }
        manager.close(Duration::from_secs(5)).await;
    }
}

#[cfg(feature = "mssql")]
#[tokio::test]
async fn sql_server_refuses_placeholders_without_a_parameter() {
    let manager = Manager::new(fast_config().with_connection(support::mssql_config("ms"))).unwrap();
    manager.connect().await.unwrap();
    refuses_unbindable(&manager, "ms").await;
    manager.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn postgres_refuses_placeholders_without_a_parameter_on_both_layers() {
    let db = TestDb::create();
    for layer in LAYERS {
        let mut c = db.config("pg");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        manager.connect().await.unwrap();
        // The server's own answer ("bind message supplies 1 parameters, but prepared statement
        // requires 2", SQLSTATE 08P01) was classified as transient: retried in vain.
        refuses_unbindable(&manager, "pg").await;
        manager.close(Duration::from_secs(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Statements reach each server as its lexer reads them: random select lists of string
// literals (values), quoted identifiers (column names) and placeholders, with comments full of
// quotes, `$1`s, `?`s and comment markers between the tokens. If any placeholder were rewritten
// in the wrong place, or a literal or identifier changed, a value or a name would differ.
// ---------------------------------------------------------------------------------------------

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Postgres,
    MariaDb,
    Sqlite,
    /// The SQL Server substitute: no nested comments, `[...]` aliases.
    Iridium,
}

/// One select-list item: its text, and the column name and value it must produce.
#[derive(Debug, Clone)]
struct Item {
    sql: String,
    name: String,
    value: Value,
    /// MySQL: the item sits inside an executable comment `/*! , ... */`.
    executable: bool,
}

const CONTENT: &[&str] = &[
    "a", "Z", " ", "$1", "$2", "$", "'", "\"", "?", "--", "/*", "*/", "#", "\\", ":a", "@a", "é",
    "]", "`", "\n", "!", "$$", "E'",
];

fn content(exclude: fn(&str) -> bool) -> BoxedStrategy<String> {
    let pool: Vec<&'static str> = CONTENT.iter().copied().filter(|s| !exclude(s)).collect();
    proptest::collection::vec(proptest::sample::select(pool), 0..6)
        .prop_map(|v| v.concat())
        .boxed()
}

fn doubled(open: &str, close: char, body: &str) -> String {
    format!(
        "{open}{}{close}",
        body.replace(close, &format!("{close}{close}"))
    )
}

/// A string literal of `server` whose value is `body`.
fn string_literal(server: Server, body: String) -> BoxedStrategy<(String, String)> {
    let backslashed = move |quote: char, b: &str, backslash_quote: bool| {
        let mut s = String::from(quote);
        for c in b.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                c if c == quote && backslash_quote => s.push_str(&format!("\\{c}")),
                c if c == quote => s.push_str(&format!("{c}{c}")),
                c => s.push(c),
            }
        }
        s.push(quote);
        s
    };
    let b = body.clone();
    match server {
        Server::Postgres => prop_oneof![
            Just(doubled("'", '\'', &b)),
            any::<bool>().prop_map({
                let b = b.clone();
                move |q| format!("E{}", backslashed('\'', &b, q))
            }),
            prop_oneof![Just(""), Just("q")].prop_map({
                let b = b.clone();
                move |tag| {
                    let d = format!("${tag}$");
                    if b.contains(&d) || b.ends_with('$') {
                        // The body would end the string early: a plain literal instead.
                        doubled("'", '\'', &b)
                    } else {
                        format!("{d}{b}{d}")
                    }
                }
            }),
        ]
        .prop_map(move |lit| (lit, body.clone()))
        .boxed(),
        Server::MariaDb => (any::<bool>(), any::<bool>())
            .prop_map(move |(dq, bq)| {
                (
                    backslashed(if dq { '"' } else { '\'' }, &body, bq),
                    body.clone(),
                )
            })
            .boxed(),
        Server::Sqlite => Just((doubled("'", '\'', &body), body)).boxed(),
        Server::Iridium => Just((doubled("N'", '\'', &body), body)).boxed(),
    }
}

/// A quoted alias of `server` naming the column `name`.
fn alias(server: Server, body: String) -> String {
    // Never empty, never ending in a space (MySQL trims those).
    let name = format!("c{body}x");
    match server {
        Server::Postgres => doubled("\"", '"', &name),
        Server::MariaDb => doubled("`", '`', &name),
        Server::Sqlite => doubled("\"", '"', &name),
        Server::Iridium => doubled("[", ']', &name),
    }
}

fn column_name(body: &str) -> String {
    format!("c{body}x")
}

/// A comment (or whitespace) between two tokens.
fn noise(server: Server) -> BoxedStrategy<String> {
    // MySQL needs a space after `--`; so does the SQL Server substitute (SQL Server does not).
    let line = content(|s| s.contains('\n')).prop_map(move |c| {
        if matches!(server, Server::MariaDb | Server::Iridium) {
            format!(" -- {c}\n")
        } else {
            format!(" --{c}\n")
        }
    });
    let flat_body = content(|s| s.contains('*') || s.contains('/') || s == "!");
    let block = flat_body.clone().prop_map(|c| format!(" /* {c} */ "));
    let slash = flat_body.clone().prop_map(|c| format!(" /*/ {c} */ "));
    let mut options = vec![
        Just(" ".to_owned()).boxed(),
        line.boxed(),
        block.boxed(),
        slash.boxed(),
    ];
    match server {
        Server::Postgres => {
            options.push(
                (flat_body.clone(), flat_body)
                    .prop_map(|(a, b)| format!(" /* {a} /* {b} */ $1 ' */ "))
                    .boxed(),
            );
        }
        Server::MariaDb => {
            options.push(
                content(|s| s.contains('\n'))
                    .prop_map(|c| format!(" #{c}\n"))
                    .boxed(),
            );
            options.push(flat_body.prop_map(|c| format!(" /* /* {c} */ ")).boxed());
        }
        Server::Sqlite | Server::Iridium => {}
    }
    proptest::strategy::Union::new(options).boxed()
}

fn item(server: Server, params: Vec<Value>) -> BoxedStrategy<Item> {
    let value_expr = content(|_| false)
        .prop_flat_map(move |b| string_literal(server, b))
        .prop_map(|(sql, v)| (sql, Value::Text(v)))
        .boxed();
    let placeholder = (1..=params.len()).prop_map(move |n| {
        let sql = if server == Server::Postgres {
            format!("CAST(${n} AS text)")
        } else {
            format!("${n}")
        };
        (sql, params[n - 1].clone())
    });
    let executable = if server == Server::MariaDb {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    };
    // The substitute's parser takes no comment between an expression, `AS` and the alias.
    let inner_noise = move || {
        if server == Server::Iridium {
            Just(" ".to_owned()).boxed()
        } else {
            noise(server)
        }
    };
    (
        prop_oneof![value_expr, placeholder],
        inner_noise(),
        inner_noise(),
        content(|s| s.contains('\n') || s == "\\"),
        executable,
    )
        .prop_map(move |((expr, value), n1, n2, name, executable)| Item {
            sql: format!("{expr}{n1}AS{n2}{}", alias(server, name.clone())),
            name: column_name(&name),
            value,
            executable,
        })
        .boxed()
}

fn select(server: Server, params: Vec<Value>) -> impl Strategy<Value = (String, Vec<Item>)> {
    (
        item(server, params.clone()),
        proptest::collection::vec((noise(server), item(server, params)), 0..5),
    )
        .prop_map(|(first, rest)| {
            let mut sql = format!("SELECT {}", first.sql);
            let mut items = vec![first];
            for (noise, mut item) in rest {
                if item.executable {
                    sql.push_str(&format!("{noise}/*! , {} */ ", item.sql));
                } else {
                    sql.push_str(&format!("{noise}, {}", item.sql));
                }
                item.executable = false;
                items.push(item);
            }
            (sql, items)
        })
}

/// Runs `cases` random select lists through `db`, comparing every name and value.
fn statements_reach_the_server_as_written(
    runtime: &tokio::runtime::Runtime,
    db: &dbmanager::Database,
    server: Server,
    cases: u32,
) {
    let params = vec![
        Value::Text("p1 '$2' -- ?".into()),
        Value::Null,
        Value::Text("p3 /* $1 */ é".into()),
    ];
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&select(server, params.clone()), |(sql, items)| {
        let rows = runtime
            .block_on(db.fetch_all(&sql, &params))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{sql}")))?;
        prop_assert_eq!(rows.len(), 1, "{}", sql);
        let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
        let values: Vec<Value> = items.iter().map(|i| i.value.clone()).collect();
        prop_assert_eq!(rows[0].columns(), &names[..], "{}", sql);
        let got: Vec<Value> = (0..names.len())
            .map(|i| rows[0].value(i).cloned().unwrap_or(Value::Null))
            .collect();
        prop_assert_eq!(got, values, "{}", sql);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{server:?} {:?}: {e}", db.layer());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn postgres_receives_statements_as_written_on_both_layers() {
    let rt = runtime();
    let db = TestDb::create();
    for layer in LAYERS {
        let mut c = db.config("pg");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        rt.block_on(manager.connect()).unwrap();
        let handle = manager.database("pg").unwrap();
        statements_reach_the_server_as_written(&rt, &handle, Server::Postgres, 96);
        rt.block_on(manager.close(Duration::from_secs(5)));
    }
}

#[test]
fn sqlite_receives_statements_as_written_on_both_layers() {
    let rt = runtime();
    for layer in LAYERS {
        let mut c = dbmanager::ConnectionConfig::sqlite("lite", ":memory:");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        rt.block_on(manager.connect()).unwrap();
        let handle = manager.database("lite").unwrap();
        statements_reach_the_server_as_written(&rt, &handle, Server::Sqlite, 96);
        rt.block_on(manager.close(Duration::from_secs(5)));
    }
}

#[cfg(feature = "mysql")]
#[test]
fn mariadb_receives_statements_as_its_lexer_reads_them_on_both_layers() {
    let rt = runtime();
    let db = support::mysql::MysqlTestDb::create();
    for layer in LAYERS {
        let mut c = db.config("my");
        c.default_orm = layer;
        let manager = Manager::new(fast_config().with_connection(c)).unwrap();
        rt.block_on(manager.connect()).unwrap();
        let handle = manager.database("my").unwrap();
        statements_reach_the_server_as_written(&rt, &handle, Server::MariaDb, 96);
        rt.block_on(manager.close(Duration::from_secs(5)));
    }
}

/// What the substitute lexes like SQL Server: `''` strings, `[...]` with `]]`, `--` and flat
/// `/* */` comments (with `/*/`). Nested comments, where the substitute and SQL Server differ,
/// are covered by the unit property test in `backends/mssql/sql.rs`.
#[cfg(feature = "mssql")]
#[test]
fn sql_server_receives_statements_as_written() {
    let rt = runtime();
    let manager = Manager::new(fast_config().with_connection(support::mssql_config("ms"))).unwrap();
    rt.block_on(manager.connect()).unwrap();
    let handle = manager.database("ms").unwrap();
    statements_reach_the_server_as_written(&rt, &handle, Server::Iridium, 64);
    rt.block_on(manager.close(Duration::from_secs(5)));
}
