//! The tokio-postgres session of PostgreSQL's LISTEN/NOTIFY listener (the loop is
//! `pg_common::listener`): a client of its own, outside the pool, whose connection task hands
//! each notification to the session as it arrives.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, poll_fn};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use super::driver_error;
use super::failover::{self, TokioPgDialer, TokioPgFailover};
use super::options::{connect_plan, with_credentials, with_password_fallback};
use super::tls::RustlsConnector;
use crate::backends::config_error;
use crate::backends::pg_common::listener::{ListenSession, NOTIFY_SQL, listen_all, run};
use crate::error::{Operation, Result};
use crate::listen::{ListenDriver, ListenSettings, ListenerTask, Notification};

pub(crate) static LISTEN: ListenDriver = ListenDriver {
    run: run_tokio_postgres,
    notify_sql: NOTIFY_SQL,
};

fn run_tokio_postgres(task: ListenerTask) -> BoxFuture<'static, ()> {
    Box::pin(run::<TokioPgSession>(task))
}

/// What the connection task hands over: a notification, or the error that ended the session.
type Received = std::result::Result<Notification, tokio_postgres::Error>;

/// A client and the task that drives its connection.
pub(crate) struct TokioPgSession {
    client: tokio_postgres::Client,
    received: mpsc::UnboundedReceiver<Received>,
    connection: JoinHandle<()>,
}

impl ListenSession for TokioPgSession {
    async fn open(
        name: &Arc<str>,
        current: &ListenSettings,
        channels: &BTreeSet<String>,
    ) -> Result<Self> {
        let (mut credentials, _) = current.credentials.current().await?;
        let c = &current.config;
        let settings = &current.settings;
        let mut plan = connect_plan(name, c, settings, &credentials, None)?;
        // As the pool opens.
        with_password_fallback(&mut plan, &mut credentials, settings.connect_timeout).await;
        let tls = RustlsConnector::new(plan.verify)
            .map_err(|e| config_error(name, format!("TLS: {e}")))?;
        let mut config = plan.config.clone();
        // With a server list, the session goes where the pool's writes go (a standby refuses
        // LISTEN), found the same way, at every reconnect.
        if let Some(servers) = failover::plan(name, c, settings, &credentials, &plan)? {
            let servers = TokioPgFailover::new(
                name,
                false,
                TokioPgDialer { tls: tls.clone() },
                servers,
                &Arc::default(),
                &current.credentials,
                settings.connect_timeout,
            );
            let (index, probe) = servers.find().await?;
            drop(probe);
            config = servers.options(index).await;
        } else {
            with_credentials(&mut config, &credentials);
        }
        let (client, mut connection) = config
            .connect(tls)
            .await
            .map_err(|e| driver_error(name, Operation::Connect, e))?;
        let (sender, received) = mpsc::unbounded_channel();
        // Polling the connection for its messages also drives the client's statements.
        let connection = tokio::spawn(async move {
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                let handed = match message {
                    Ok(AsyncMessage::Notification(n)) => sender.send(Ok(Notification {
                        channel: n.channel().to_owned(),
                        payload: n.payload().to_owned(),
                        process_id: n.process_id() as u32,
                    })),
                    // A notice (a warning from the server) is not the listener's business.
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        return;
                    }
                };
                if handed.is_err() {
                    return;
                }
            }
        });
        let mut session = Self {
            client,
            received,
            connection,
        };
        if let Some(all) = listen_all(channels) {
            session.execute(name, all).await?;
        }
        Ok(session)
    }

    async fn recv(&mut self, name: &str) -> Result<Option<Notification>> {
        // Cancel-safe: a channel's `recv` takes a message only when it returns it.
        match self.received.recv().await {
            Some(Ok(n)) => Ok(Some(n)),
            Some(Err(e)) => Err(driver_error(name, Operation::Listen, e)),
            None => Ok(None),
        }
    }

    async fn execute(&mut self, name: &str, sql: String) -> Result<()> {
        self.client
            .batch_execute(&sql)
            .await
            .map_err(|e| driver_error(name, Operation::Listen, e))
    }

    fn buffered(&mut self) -> Option<Notification> {
        self.received.try_recv().ok().and_then(Result::ok)
    }

    /// Dropping the client ends the session (its channels with it); the connection task then
    /// says goodbye to the server and ends, within `limit` or not at all.
    async fn close(self, limit: Duration) {
        drop(self.client);
        drop(self.received);
        let mut connection = self.connection;
        if tokio::time::timeout(limit, &mut connection).await.is_err() {
            connection.abort();
        }
    }
}
