//! `dbmanager`: check a config (validate, connect, health table, exit code), serve a status
//! page, health, readiness, metrics and stats for it, or print its schema or effective values.

mod check;
mod config;
mod http;
mod load;
mod progress;
mod reload;
mod serve;
mod status;
mod tags;
mod telemetry;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code when every connection is up.
pub const EXIT_OK: u8 = 0;
/// Exit code when any connection failed.
pub const EXIT_DOWN: u8 = 1;
/// Exit code when the configuration is invalid.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "dbmanager",
    version,
    about = "Owns all of an application's database connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config, connect every connection, print a health table.
    ///
    /// Exit code: 0 all up, 1 any down, 2 invalid config (or no connection to check).
    Check {
        /// YAML config (root key `dbmanager:`). Without it, an embedded quick-start config with
        /// one SQLite connection in `$DBMANAGER_DATA_DIR` (default `./data`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// JSON output: the same as `--format json` (and as `config show --json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Only the connections whose tags include KEY=VALUE (repeat the flag: all must match).
        /// The whole file is still validated; selecting nothing is an error (exit code 2).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tags::parse)]
        tag: Vec<(String, String)>,
    },
    /// Connect, run the health loop, and serve a status page (`/`), `/healthz`, `/readyz`,
    /// `/metrics`, `/stats`.
    ///
    /// Stops gracefully on SIGINT or SIGTERM. Reloads the config file on SIGHUP and when it
    /// changes; a file that does not load keeps the running config (`/stats` has `last_reload`).
    Serve {
        /// YAML config; without it, the embedded quick-start config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:9187")]
        listen: std::net::SocketAddr,
        /// A client must send a request's headers within this many seconds, and take each
        /// part of a response within as long (one that stops reading is disconnected).
        #[arg(long, default_value_t = 10.0)]
        header_read_timeout: f64,
        /// Connections served at once.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
        max_connections: u32,
        /// Seconds shutdown waits for open HTTP connections to finish (0: close them at once).
        #[arg(long, default_value_t = 5.0)]
        drain: f64,
        /// Seconds between the status page's samples (pool in use, health-check latency); it
        /// keeps the last 10 minutes, at most 600 samples per connection.
        #[arg(long, default_value_t = 5.0)]
        sample_interval: f64,
        /// Serve only the connections whose tags include KEY=VALUE (repeat the flag: all must
        /// match); the others are not connected, and are absent from `/stats`, `/metrics` and
        /// the status page. A reload applies the same filter to the new file.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tags::parse)]
        tag: Vec<(String, String)>,
    },
    /// Configuration tooling: the JSON Schema of the YAML, the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the JSON Schema (draft-07) of the YAML config, for editors:
    /// `dbmanager config schema > dbmanager.schema.json`, then put
    /// `# yaml-language-server: $schema=dbmanager.schema.json` at the top of the config.
    Schema,
    /// Print the effective configuration after defaults, `DBMANAGER__*` overrides and `${VAR}`
    /// expansion, secrets redacted, each value with its origin (default, file line, env var).
    ///
    /// Exit code: 0 valid, 2 invalid config (every problem printed).
    Show {
        /// YAML config; without it, the embedded quick-start config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// JSON (the effective document and one entry per setting) instead of annotated YAML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let telemetry = telemetry::init();
    let cli = Cli::parse();
    // Nothing to connect: no runtime needed.
    if let Command::Config { action } = &cli.command {
        let code = match action {
            ConfigAction::Schema => config::schema(),
            ConfigAction::Show { config, json } => config::show(config.as_deref(), *json),
        };
        drop(telemetry);
        return ExitCode::from(code);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_DOWN);
        }
    };
    let code = match cli.command {
        Command::Check {
            config,
            format,
            json,
            tag,
        } => runtime.block_on(check::run(
            config.as_deref(),
            json || matches!(format, Format::Json),
            &tags::TagFilter::new(tag),
        )),
        Command::Serve {
            config,
            listen,
            header_read_timeout,
            max_connections,
            drain,
            sample_interval,
            tag,
        } => {
            let seconds = |s: f64, flag: &str| {
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                    .ok_or_else(|| {
                        format!("error: --{flag} must be more than 0 and at most 3600 seconds")
                    })
            };
            // 0 is a valid drain: close open HTTP connections at once.
            let drain = if drain == 0.0 {
                Ok(Duration::ZERO)
            } else {
                seconds(drain, "drain")
            };
            let sample_interval = seconds(sample_interval, "sample-interval").and_then(|d| {
                (d >= Duration::from_millis(100))
                    .then_some(d)
                    .ok_or_else(|| "error: --sample-interval must be at least 0.1 seconds".into())
            });
            match (
                seconds(header_read_timeout, "header-read-timeout"),
                drain,
                sample_interval,
            ) {
                (Ok(header_read_timeout), Ok(drain), Ok(sample_interval)) => {
                    let limits = http::Limits {
                        header_read_timeout,
                        max_connections: max_connections as usize,
                        drain,
                    };
                    runtime.block_on(serve::run(
                        config.as_deref(),
                        listen,
                        limits,
                        sample_interval,
                        tags::TagFilter::new(tag),
                    ))
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    eprintln!("{e}");
                    EXIT_CONFIG
                }
            }
        }
        // Handled above.
        Command::Config { .. } => EXIT_OK,
    };
    drop(runtime);
    drop(telemetry);
    ExitCode::from(code)
}
