//! A fake driver for testing the manager's own logic (retry, health state machine, close
//! deadline, default switching) without any server: fast and deterministic.
//!
//! Each connection's `host` names a [`FakeServer`] in a process-wide table; a test creates the
//! server, sets its knobs, and the fake pool reads them on every call.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{ConnectionConfig, ConnectionProblems, DatabaseType, DefaultOrm};
use crate::driver::{BackendPool, Driver, Field, OpenSpec};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::sql::SqlExecutor;
use crate::stats::PoolGauges;

/// No extra checks.
fn no_check(_: &ConnectionConfig, _: &mut ConnectionProblems<'_>) {}

/// The knobs of one fake server.
#[derive(Debug, Default)]
pub(crate) struct FakeServer {
    /// Connect attempts that fail before one succeeds.
    pub connect_failures: AtomicU32,
    /// Kind of those failures (`Transient` unless set).
    pub connect_error: Mutex<Option<ErrorKind>>,
    /// Connect attempts made.
    pub connects: AtomicU32,
    /// Each connect attempt takes this long (ms).
    pub connect_delay_ms: AtomicU64,
    /// Pings fail while set.
    pub down: AtomicBool,
    /// Each ping takes this long (ms).
    pub ping_delay_ms: AtomicU64,
    /// Connections checked out and never returned: close waits for them.
    pub stuck_in_use: AtomicU32,
    /// Pools closed.
    pub closes: AtomicU32,
    /// Idle discards requested (reconnects).
    pub discards: AtomicU32,
}

fn servers() -> &'static Mutex<HashMap<String, Arc<FakeServer>>> {
    static SERVERS: OnceLock<Mutex<HashMap<String, Arc<FakeServer>>>> = OnceLock::new();
    SERVERS.get_or_init(Mutex::default)
}

impl FakeServer {
    /// A fresh server reachable as `host`.
    pub(crate) fn start(host: &str) -> Arc<FakeServer> {
        let server = Arc::new(FakeServer::default());
        if let Ok(mut table) = servers().lock() {
            table.insert(host.to_owned(), server.clone());
        }
        server
    }

    fn find(host: &str) -> Option<Arc<FakeServer>> {
        servers().lock().ok()?.get(host).cloned()
    }
}

/// Serves connections of any SQL type in the manager-logic tests.
pub(crate) static DRIVER: Driver = Driver {
    kind: DatabaseType::Postgres,
    variant: None,
    system_name: "fake",
    default_port: Some(1),
    dsn_schemes: &[],
    fields: &Field::ALL,
    required: &[Field::Host],
    no_sea_orm: None,
    check: no_check,
    classify: |_| None,
    open,
    listen: None,
    replica_lag: None,
};

/// Every type resolves to the fake driver.
pub(crate) fn resolve(_: &crate::config::ConnectionConfig) -> Option<&'static Driver> {
    Some(&DRIVER)
}

fn open<'a>(spec: &'a OpenSpec<'a>) -> BoxFuture<'a, Result<Box<dyn BackendPool>>> {
    Box::pin(async move {
        let host = spec.config.host.as_deref().unwrap_or_default();
        let Some(server) = FakeServer::find(host) else {
            return Err(Error::database(
                spec.name,
                Operation::Connect,
                ErrorKind::Configuration,
                format!("no fake server `{host}`"),
            ));
        };
        server.connects.fetch_add(1, SeqCst);
        let delay = server.connect_delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let failing = server
            .connect_failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            let kind = server
                .connect_error
                .lock()
                .ok()
                .and_then(|k| *k)
                .unwrap_or(ErrorKind::Transient);
            return Err(Error::database(
                spec.name,
                Operation::Connect,
                kind,
                "fake connect failure",
            ));
        }
        Ok(Box::new(FakePool {
            name: spec.name.clone(),
            server,
            max_open: spec.settings.max_open,
        }) as Box<dyn BackendPool>)
    })
}

struct FakePool {
    name: Arc<str>,
    server: Arc<FakeServer>,
    max_open: u32,
}

impl BackendPool for FakePool {
    fn gauges(&self) -> PoolGauges {
        let in_use = self.server.stuck_in_use.load(SeqCst);
        PoolGauges {
            open: in_use + 1,
            idle: 1,
            max_open: self.max_open,
            driver_counts: None,
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let delay = self.server.ping_delay_ms.load(SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if self.server.down.load(SeqCst) {
                return Err(Error::database(
                    &self.name,
                    Operation::Ping,
                    ErrorKind::Transient,
                    "fake server down",
                ));
            }
            Ok(())
        })
    }

    fn discard_idle(&self) -> BoxFuture<'_, ()> {
        self.server.discards.fetch_add(1, SeqCst);
        Box::pin(async {})
    }

    fn trim_idle(&self, _max_idle: u32) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Waits for stuck connections forever: only the caller's deadline ends it.
    fn close(&self) -> BoxFuture<'_, ()> {
        self.server.closes.fetch_add(1, SeqCst);
        Box::pin(async move {
            while self.server.stuck_in_use.load(SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    fn layer(&self, type_id: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        (type_id == TypeId::of::<Arc<FakeServer>>()).then_some(&self.server as _)
    }

    fn sql(&self, _layer: DefaultOrm) -> std::result::Result<Arc<dyn SqlExecutor>, &'static str> {
        Err("the fake driver runs no SQL")
    }
}
