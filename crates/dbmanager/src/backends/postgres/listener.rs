//! PostgreSQL's LISTEN/NOTIFY listener: one dedicated session per listener, outside the pool,
//! with this crate's own reconnect loop.
//!
//! sqlx offers notifications only through `PgListener`, which takes its connection from a pool.
//! So each session is a `PgListener` on a pool of one connection made for that session alone,
//! and its auto-reconnect is never used: `eager_reconnect(false)`, and at the first error the
//! session (listener and pool) is dropped and this loop opens a new one, listens to every
//! channel again and reports [`ListenerEvent::Reconnected`](crate::ListenerEvent) before any
//! later notification. sqlx's own reconnect would be silent, and a `PgListener` made on the
//! connection's main pool would make `PgPool::close` wait for it; neither happens here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};
use tokio::time::Instant;

use super::{Pg, connect_options};
use crate::backends::sqlx::failover::{Failover, SqlxDialer};
use crate::backends::sqlx::sqlx_error;
use crate::backends::{bounded, config_error};
use crate::config::DatabaseType;
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::listen::{
    Command, ListenDriver, ListenSettings, ListenerTask, Notification, Signal, Wake,
};

pub(crate) static LISTEN: ListenDriver = ListenDriver {
    run,
    notify_sql: "SELECT pg_notify($1, $2)",
};

/// A session silent this long is pinged (bounded by `connect_timeout`): a network fault that
/// drops packets without a reset is found this way.
const PING_AFTER: Duration = Duration::from_secs(10);

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1) and `pg_notify` refuses them, so a
/// longer channel could never be notified.
const MAX_CHANNEL: usize = 63;

/// Marks the listener's statements in `pg_stat_activity`.
const MARK: &str = "/* dbmanager listener */";

struct Session {
    listener: PgListener,
    pool: PgPool,
    last_activity: Instant,
}

/// How serving a session ended.
enum Served {
    Stop,
    Replaced,
    Lost(Error),
}

fn run(task: ListenerTask) -> BoxFuture<'static, ()> {
    Box::pin(run_listener(task))
}

async fn run_listener(mut task: ListenerTask) {
    let mut session = match first_session(&mut task).await {
        Ok(session) => {
            task.set_connected(true);
            task.ready(Ok(()));
            session
        }
        Err(e) => {
            task.ready(Err(e));
            return;
        }
    };
    loop {
        let served = serve(&mut task, &mut session).await;
        // Notifications the old session buffered while it ran a statement.
        while let Some(n) = session.listener.next_buffered() {
            task.notification(notification(&n));
        }
        let limit = task.source.current().settings.connect_timeout;
        match served {
            Served::Stop => {
                task.finish();
                close_session(session, limit).await;
                return;
            }
            Served::Replaced => {
                tokio::spawn(close_session(session, limit));
                task.set_connected(false);
                log(&task, |name| {
                    tracing::info!(connection = %name, "listener moving to the replaced configuration");
                });
            }
            Served::Lost(error) => {
                tokio::spawn(close_session(session, limit));
                log(&task, |name| {
                    tracing::warn!(connection = %name, %error, "listener session lost; reconnecting");
                });
                task.disconnected(&error);
            }
        }
        session = match reconnect(&mut task).await {
            Some(session) => session,
            None => return,
        };
        task.reconnected();
        log(
            &task,
            |name| tracing::info!(connection = %name, "listener reconnected"),
        );
    }
}

fn log(task: &ListenerTask, line: impl FnOnce(&str)) {
    if task.source.current().config.enable_logging {
        line(&task.name);
    }
}

fn notification(n: &PgNotification) -> Notification {
    Notification {
        channel: n.channel().to_owned(),
        payload: n.payload().to_owned(),
        process_id: n.process_id(),
    }
}

/// Closes a session: the listener's connection goes back to its own pool, which closes it.
/// `PgListener`'s drop sends `UNLISTEN *` from a task of its own before returning the
/// connection; on a session whose network went silent that task waits until the socket fails,
/// so the wait here is bounded and nothing else depends on it.
async fn close_session(session: Session, limit: Duration) {
    drop(session.listener);
    let _ = tokio::time::timeout(limit, session.pool.close()).await;
}

/// The first session, with the retry policy (only transient errors are retried), as the pool's
/// first connect does.
async fn first_session(task: &mut ListenerTask) -> Result<Session> {
    let mut failures = 0;
    loop {
        let current = task.source.current();
        let channels = task.channels();
        let name = task.name.clone();
        let attempt = tokio::select! {
            wake = task.woken() => match wake {
                Wake::Stop => return Err(Error::closed(&task.name, Operation::Listen)),
                Wake::Replaced => continue,
            },
            attempt = open_session(&name, &current, &channels) => attempt,
        };
        let error = match attempt {
            Ok(session) => return Ok(session),
            Err(e) => e,
        };
        failures += 1;
        if !error.is_retryable() || failures >= current.retry.attempts {
            return Err(error);
        }
        tokio::select! {
            wake = task.woken() => if wake == Wake::Stop {
                return Err(Error::closed(&task.name, Operation::Listen));
            },
            () = tokio::time::sleep(current.retry.backoff(failures)) => {}
        }
    }
}

/// A new session after a loss or a replace: the first attempt at once, then with the retry
/// policy's backoff, without giving up (until the listener is closed). Commands are taken
/// between attempts. `None` when the listener stops.
async fn reconnect(task: &mut ListenerTask) -> Option<Session> {
    let mut failures = 0;
    let mut wait = Duration::ZERO;
    loop {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                signal = task.next_signal() => match signal {
                    Signal::Wake(Wake::Stop) => {
                        task.finish();
                        return None;
                    }
                    Signal::Wake(Wake::Replaced) => break,
                    Signal::Command(command) => record(task, command),
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        let current = task.source.current();
        let channels = task.channels();
        let name = task.name.clone();
        let attempt = tokio::select! {
            wake = task.woken() => match wake {
                Wake::Stop => {
                    task.finish();
                    return None;
                }
                Wake::Replaced => {
                    wait = Duration::ZERO;
                    continue;
                }
            },
            attempt = open_session(&name, &current, &channels) => attempt,
        };
        match attempt {
            Ok(session) => return Some(session),
            Err(error) => {
                failures += 1;
                wait = current.retry.backoff(failures);
                task.reconnect_failed(&error);
                if current.config.enable_logging {
                    tracing::warn!(
                        connection = %task.name,
                        attempt = failures,
                        retry_in_ms = wait.as_millis() as u64,
                        %error,
                        "listener reconnect failed; retrying"
                    );
                }
            }
        }
    }
}

/// Opens a session from the connection's current settings and listens to `channels`.
async fn open_session(
    name: &Arc<str>,
    current: &ListenSettings,
    channels: &BTreeSet<String>,
) -> Result<Session> {
    if current.config.kind != DatabaseType::Postgres {
        return Err(config_error(
            name,
            "the connection is no longer PostgreSQL; its listener cannot reconnect",
        ));
    }
    let (credentials, _) = current.credentials.current().await?;
    let mut options =
        connect_options(name, &current.config, &current.settings, &credentials).await?;
    let limit = current.settings.connect_timeout;
    let failed = |e| sqlx_error::<Pg>(name, Operation::Connect, e);
    bounded(name, Operation::Connect, limit, async {
        // With a server list, the session goes where the pool's writes go (a standby refuses
        // LISTEN), found the same way, at every reconnect.
        if let Some(plan) = super::servers::plan(name, &current.config, &options)? {
            let servers = Failover::<Pg>::new(
                name,
                false,
                SqlxDialer::default(),
                plan,
                &Arc::default(),
                &current.credentials,
                limit,
            );
            let (index, probe) = servers.find().await?;
            let _ = probe.close().await;
            options = servers.options(index).await;
        }
        // A direct connection first: a pool reports a refused port as a bare timeout after
        // retrying for the whole limit, and hides an authentication error's cause no better.
        PgConnection::connect_with(&options)
            .await
            .map_err(failed)?
            .close()
            .await
            .map_err(failed)?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(limit)
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool).await.map_err(failed)?;
        listener.eager_reconnect(false);
        if !channels.is_empty() {
            let all: Vec<String> = channels.iter().map(|c| listen_sql("LISTEN", c)).collect();
            sqlx::raw_sql(AssertSqlSafe(all.join("; ")))
                .execute(&mut listener)
                .await
                .map_err(|e| sqlx_error::<Pg>(name, Operation::Listen, e))?;
        }
        Ok(Session {
            listener,
            pool,
            last_activity: Instant::now(),
        })
    })
    .await
}

/// Serves a session: notifications, commands, pings; until it is lost or the listener stops.
async fn serve(task: &mut ListenerTask, session: &mut Session) -> Served {
    loop {
        let ping_at = session.last_activity + PING_AFTER;
        tokio::select! {
            biased;
            signal = task.next_signal() => match signal {
                Signal::Wake(Wake::Stop) => return Served::Stop,
                Signal::Wake(Wake::Replaced) => return Served::Replaced,
                Signal::Command(command) => {
                    if let Some(served) = run_command(task, session, command).await {
                        return served;
                    }
                }
            },
            // Cancel-safe: sqlx consumes a message only once it is whole.
            received = session.listener.try_recv() => {
                session.last_activity = Instant::now();
                match received {
                    Ok(Some(n)) => {
                        if !task.notification(notification(&n)) {
                            return Served::Stop;
                        }
                    }
                    Ok(None) => {
                        return Served::Lost(Error::database(
                            &task.name,
                            Operation::Listen,
                            ErrorKind::Transient,
                            "the server closed the listener's session",
                        ));
                    }
                    Err(e) => return Served::Lost(sqlx_error::<Pg>(&task.name, Operation::Listen, e)),
                }
            }
            () = tokio::time::sleep_until(ping_at) => {
                match execute(task, session, format!("{MARK} SELECT 1")).await {
                    Ok(Ok(())) => {}
                    Ok(Err(lost)) => return Served::Lost(lost),
                    Err(wake) => return served_by(wake),
                }
            }
        }
    }
}

/// `LISTEN "channel"` (or `UNLISTEN`), quoted so that case and every character survive.
fn listen_sql(verb: &str, channel: &str) -> String {
    format!("{MARK} {verb} \"{}\"", channel.replace('"', "\"\""))
}

fn check_channel(name: &str, channel: &str) -> Result<()> {
    let problem = if channel.is_empty() {
        "a channel name cannot be empty"
    } else if channel.len() > MAX_CHANNEL {
        "a channel name has at most 63 bytes"
    } else if channel.contains('\0') {
        "a channel name cannot contain a NUL character"
    } else {
        return Ok(());
    };
    Err(Error::database(
        name,
        Operation::Listen,
        ErrorKind::Query,
        problem,
    ))
}

/// Runs one statement on the session, bounded by `connect_timeout`; a close or a replace
/// meanwhile interrupts it (the session is dropped then).
async fn execute(
    task: &mut ListenerTask,
    session: &mut Session,
    sql: String,
) -> std::result::Result<Result<()>, Wake> {
    let limit = task.source.current().settings.connect_timeout;
    let name = task.name.clone();
    let statement = bounded(&name, Operation::Listen, limit, async {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut session.listener)
            .await
            .map(|_| ())
            .map_err(|e| sqlx_error::<Pg>(&name, Operation::Listen, e))
    });
    let outcome = tokio::select! {
        biased;
        wake = task.woken() => return Err(wake),
        outcome = statement => outcome,
    };
    session.last_activity = Instant::now();
    Ok(outcome)
}

/// Whether a statement's error means the session is gone (rather than the statement failed).
fn session_lost(error: &Error) -> bool {
    error.is_retryable() || error.kind() == ErrorKind::Closed
}

fn served_by(wake: Wake) -> Served {
    match wake {
        Wake::Stop => Served::Stop,
        Wake::Replaced => Served::Replaced,
    }
}

/// Runs a command on a live session. The acknowledgement is `Ok` once the server listens (or
/// stopped listening); when the session turns out to be lost or is replaced meanwhile, the
/// channel set is what the reconnect will listen to, the caller gets `Ok`, and how serving the
/// session ended is returned.
async fn run_command(
    task: &mut ListenerTask,
    session: &mut Session,
    command: Command,
) -> Option<Served> {
    let (sql, ack, undo) = match command {
        Command::Listen(channel, ack) => {
            if let Err(e) = check_channel(&task.name, &channel) {
                let _ = ack.send(Err(e));
                return None;
            }
            let mut channels = (*task.channels()).clone();
            if !channels.insert(channel.clone()) {
                let _ = ack.send(Ok(()));
                return None;
            }
            // Recorded first: a notification that follows the LISTEN at once is kept.
            task.set_channels(channels);
            (listen_sql("LISTEN", &channel), ack, Some(channel))
        }
        Command::Unlisten(channel, ack) => {
            let mut channels = (*task.channels()).clone();
            if !channels.remove(&channel) {
                let _ = ack.send(Ok(()));
                return None;
            }
            task.set_channels(channels);
            (listen_sql("UNLISTEN", &channel), ack, None)
        }
        Command::UnlistenAll(ack) => {
            task.set_channels(BTreeSet::new());
            (format!("{MARK} UNLISTEN *"), ack, None)
        }
    };
    match execute(task, session, sql).await {
        Ok(Ok(())) => {
            let _ = ack.send(Ok(()));
            None
        }
        Ok(Err(lost)) if session_lost(&lost) => {
            let _ = ack.send(Ok(()));
            Some(Served::Lost(lost))
        }
        Err(Wake::Replaced) => {
            let _ = ack.send(Ok(()));
            Some(Served::Replaced)
        }
        Err(Wake::Stop) => {
            let _ = ack.send(Err(Error::closed(&task.name, Operation::Listen)));
            Some(Served::Stop)
        }
        Ok(Err(e)) => {
            // The server refused the statement; the session is fine.
            if let Some(channel) = undo {
                let mut channels = (*task.channels()).clone();
                channels.remove(&channel);
                task.set_channels(channels);
            }
            let _ = ack.send(Err(e));
            None
        }
    }
}

/// Records a command while the session is down: the reconnect listens to the channel set.
fn record(task: &mut ListenerTask, command: Command) {
    let mut channels = (*task.channels()).clone();
    let (outcome, ack) = match command {
        Command::Listen(channel, ack) => {
            let checked = check_channel(&task.name, &channel);
            if checked.is_ok() {
                channels.insert(channel);
            }
            (checked, ack)
        }
        Command::Unlisten(channel, ack) => {
            channels.remove(&channel);
            (Ok(()), ack)
        }
        Command::UnlistenAll(ack) => {
            channels.clear();
            (Ok(()), ack)
        }
    };
    task.set_channels(channels);
    let _ = ack.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_quoted_and_checked() {
        assert_eq!(
            listen_sql("LISTEN", "Mixed \"q\"; DROP"),
            "/* dbmanager listener */ LISTEN \"Mixed \"\"q\"\"; DROP\""
        );
        assert!(check_channel("t", "ok_channel").is_ok());
        assert!(check_channel("t", &"x".repeat(63)).is_ok());
        for bad in ["", "a\0b"] {
            assert_eq!(
                check_channel("t", bad).unwrap_err().kind(),
                ErrorKind::Query
            );
        }
        assert!(check_channel("t", &"x".repeat(64)).is_err());
    }
}
