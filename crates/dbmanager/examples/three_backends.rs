//! Three backends in one application: PostgreSQL, SQLite and MySQL/MariaDB in one manager, the
//! same code on each through the backend-neutral handle, and each one's native sqlx pool.
//!
//! ```sh
//! POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   cargo run -p dbmanager --example three_backends --features mysql
//! ```

use std::time::Duration;

use dbmanager::reexports::sqlx;
use dbmanager::{Manager, Value};

const CONFIG: &str = r#"
dbmanager:
  retry_attempts: 2
  connections:
    orders:
      type: postgres
      dsn: ${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
    cache:
      type: sqlite
      filepath: ":memory:"
    legacy:
      type: mysql
      dsn: ${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::from_yaml_str(CONFIG)?;
    // All three connect in parallel; any failure closes what opened and lists every cause.
    manager.connect().await?;

    // The same statement, with `$n` parameters, on every backend.
    for name in manager.names() {
        let row = manager
            .database(&name)?
            .fetch_one(
                "SELECT $1 AS greeting, $2 AS answer",
                &[Value::Text(format!("hello from {name}")), Value::Int(42)],
            )
            .await?;
        let connection = manager.get(&name)?;
        // Each backend's own pool, for what the neutral handle does not cover.
        let version: String = match connection.kind() {
            dbmanager::DatabaseType::Postgres => {
                sqlx::query_scalar("SHOW server_version")
                    .fetch_one(&connection.postgres()?)
                    .await?
            }
            dbmanager::DatabaseType::Sqlite => {
                sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(&connection.sqlite()?)
                    .await?
            }
            dbmanager::DatabaseType::Mysql => {
                sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(&connection.mysql()?)
                    .await?
            }
            other => format!("({other})"),
        };
        println!(
            "{name} ({}, {version}): {} / {}",
            connection.kind(),
            row.get::<String>("greeting").unwrap_or_default(),
            row.get::<i64>("answer").unwrap_or_default(),
        );
    }

    let stats = manager.stats();
    println!("{} connections, {} healthy", stats.total, stats.healthy);
    manager.close(Duration::from_secs(5)).await;
    Ok(())
}
