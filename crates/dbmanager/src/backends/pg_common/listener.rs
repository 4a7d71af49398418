//! PostgreSQL's LISTEN/NOTIFY listener loop, shared by both drivers: one dedicated session per
//! listener, outside the pool, with this crate's own reconnect loop. A driver gives the session
//! ([`ListenSession`]: open one, receive, run a statement, close); everything else is here.
//!
//! At the first error the session is dropped and the loop opens a new one, listens to every
//! channel again and reports [`ListenerEvent::Reconnected`](crate::ListenerEvent) before any
//! later notification: a driver's own silent reconnect is never used.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backends::{bounded, config_error};
use crate::config::{DatabaseType, Pooler};
use crate::error::{Error, ErrorKind, Operation, Result};
use crate::listen::{Command, ListenSettings, ListenerTask, Notification, Signal, Wake};

/// A session silent this long is pinged (bounded by `connect_timeout`): a network fault that
/// drops packets without a reset is found this way.
const PING_AFTER: Duration = Duration::from_secs(10);

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1) and `pg_notify` refuses them, so a
/// longer channel could never be notified.
const MAX_CHANNEL: usize = 63;

/// Marks the listener's statements in `pg_stat_activity`.
pub(crate) const MARK: &str = "/* dbmanager listener */";

/// `pg_notify` through the neutral handle: the same on both drivers.
pub(crate) const NOTIFY_SQL: &str = "SELECT pg_notify($1, $2)";

/// One driver's listener session: a dedicated connection that listens.
pub(crate) trait ListenSession: Send + Sized + 'static {
    /// Opens a session on the connection's current server (with a server list: the one the
    /// pool's writes go to; a standby refuses LISTEN) and listens to `channels`. Bounded by the
    /// caller.
    fn open(
        name: &Arc<str>,
        current: &ListenSettings,
        channels: &BTreeSet<String>,
    ) -> impl Future<Output = Result<Self>> + Send;

    /// The next notification; `Ok(None)` when the server closed the session. Cancel-safe: a
    /// notification is taken only once it is whole.
    fn recv(&mut self, name: &str) -> impl Future<Output = Result<Option<Notification>>> + Send;

    /// Runs `sql` (simple protocol, no rows wanted) on the session.
    fn execute(&mut self, name: &str, sql: String) -> impl Future<Output = Result<()>> + Send;

    /// A notification the session holds already (received while it ran a statement).
    fn buffered(&mut self) -> Option<Notification>;

    /// Closes the session, waiting at most `limit` for it (nothing depends on the wait).
    fn close(self, limit: Duration) -> impl Future<Output = ()> + Send;
}

struct Live<S> {
    session: S,
    last_activity: Instant,
}

/// How serving a session ended.
enum Served {
    Stop,
    Replaced,
    Lost(Error),
}

/// The listener task of one listener on a driver whose sessions are `S`.
pub(crate) async fn run<S: ListenSession>(mut task: ListenerTask) {
    let mut live = match first_session::<S>(&mut task).await {
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
        let served = serve(&mut task, &mut live).await;
        // Whether the application was told the session is gone (a replace moves the listener
        // without telling, unless the new configuration's session cannot be opened).
        let mut announced = true;
        // Notifications the old session held when it ended.
        while let Some(n) = live.session.buffered() {
            task.notification(n);
        }
        let limit = task.source.current().settings.connect_timeout;
        match served {
            Served::Stop => {
                task.finish();
                live.session.close(limit).await;
                return;
            }
            Served::Replaced => {
                tokio::spawn(live.session.close(limit));
                task.set_connected(false);
                announced = false;
                log(&task, |name| {
                    tracing::info!(connection = %name, "listener moving to the replaced configuration");
                });
            }
            Served::Lost(error) => {
                tokio::spawn(live.session.close(limit));
                log(&task, |name| {
                    tracing::warn!(connection = %name, %error, "listener session lost; reconnecting");
                });
                task.disconnected(&error);
            }
        }
        live = match reconnect::<S>(&mut task, announced).await {
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

/// The first session, with the retry policy (only transient errors are retried), as the pool's
/// first connect does.
async fn first_session<S: ListenSession>(task: &mut ListenerTask) -> Result<Live<S>> {
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
            attempt = open_session::<S>(&name, &current, &channels) => attempt,
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
/// between attempts. `None` when the listener stops. Unless `announced`, the first failure
/// yields `Disconnected` (after a replace whose new configuration has no session to give: a
/// server that is down, or a connection that is no longer PostgreSQL).
async fn reconnect<S: ListenSession>(
    task: &mut ListenerTask,
    mut announced: bool,
) -> Option<Live<S>> {
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
            attempt = open_session::<S>(&name, &current, &channels) => attempt,
        };
        match attempt {
            Ok(session) => return Some(session),
            Err(error) => {
                failures += 1;
                wait = current.retry.backoff(failures);
                if !announced {
                    task.disconnected(&error);
                    announced = true;
                }
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

/// Opens a session from the connection's current settings, bounded by `connect_timeout`.
async fn open_session<S: ListenSession>(
    name: &Arc<str>,
    current: &ListenSettings,
    channels: &BTreeSet<String>,
) -> Result<Live<S>> {
    if current.config.kind != DatabaseType::Postgres {
        return Err(config_error(
            name,
            "the connection is no longer PostgreSQL; its listener cannot reconnect",
        ));
    }
    // As `listener()` refuses: a LISTEN through a transaction-mode pooler would hear nothing
    // once its transaction ended (a replace or reload may bring the setting).
    if current.config.pooler == Pooler::Transaction {
        return Err(config_error(
            name,
            "the connection is now behind a transaction-mode pooler (`pooler: transaction`), where a LISTEN hears nothing; its listener cannot reconnect",
        ));
    }
    let limit = current.settings.connect_timeout;
    let session = bounded(
        name,
        Operation::Connect,
        limit,
        S::open(name, current, channels),
    )
    .await?;
    Ok(Live {
        session,
        last_activity: Instant::now(),
    })
}

/// The statement that listens to every channel of `channels` at once, if there is one.
pub(crate) fn listen_all(channels: &BTreeSet<String>) -> Option<String> {
    if channels.is_empty() {
        return None;
    }
    let all: Vec<String> = channels.iter().map(|c| listen_sql("LISTEN", c)).collect();
    Some(all.join("; "))
}

/// Serves a session: notifications, commands, pings; until it is lost or the listener stops.
async fn serve<S: ListenSession>(task: &mut ListenerTask, live: &mut Live<S>) -> Served {
    let name = task.name.clone();
    loop {
        let ping_at = live.last_activity + PING_AFTER;
        tokio::select! {
            biased;
            signal = task.next_signal() => match signal {
                Signal::Wake(Wake::Stop) => return Served::Stop,
                Signal::Wake(Wake::Replaced) => return Served::Replaced,
                Signal::Command(command) => {
                    if let Some(served) = run_command(task, live, command).await {
                        return served;
                    }
                }
            },
            received = live.session.recv(&name) => {
                live.last_activity = Instant::now();
                match received {
                    Ok(Some(n)) => {
                        if !task.notification(n) {
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
                    Err(e) => return Served::Lost(e),
                }
            }
            () = tokio::time::sleep_until(ping_at) => {
                match execute(task, live, format!("{MARK} SELECT 1")).await {
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
async fn execute<S: ListenSession>(
    task: &mut ListenerTask,
    live: &mut Live<S>,
    sql: String,
) -> std::result::Result<Result<()>, Wake> {
    let limit = task.source.current().settings.connect_timeout;
    let name = task.name.clone();
    let statement = bounded(
        &name,
        Operation::Listen,
        limit,
        live.session.execute(&name, sql),
    );
    let outcome = tokio::select! {
        biased;
        wake = task.woken() => return Err(wake),
        outcome = statement => outcome,
    };
    live.last_activity = Instant::now();
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
async fn run_command<S: ListenSession>(
    task: &mut ListenerTask,
    live: &mut Live<S>,
    command: Command,
) -> Option<Served> {
    let (sql, ack, undo) = match command {
        Command::Listen(channel, ack) => {
            if let Err(e) = check_channel(&task.name, &channel) {
                let _ = ack.send(Err(e));
                return None;
            }
            let mut channels = task.channels();
            if !channels.insert(channel.clone()) {
                let _ = ack.send(Ok(()));
                return None;
            }
            // Recorded first: a notification that follows the LISTEN at once is kept.
            task.set_channels(channels);
            (listen_sql("LISTEN", &channel), ack, Some(channel))
        }
        Command::Unlisten(channel, ack) => {
            let mut channels = task.channels();
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
    match execute(task, live, sql).await {
        Ok(Ok(())) => {
            if undo.is_none() {
                // After an UNLISTEN: what the session received before it was of the ended
                // subscription; taken now (and dropped, unless of another channel), it cannot
                // pass for a notification of the channel listened to again later.
                while let Some(n) = live.session.buffered() {
                    task.notification(n);
                }
            }
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
                let mut channels = task.channels();
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
    let mut channels = task.channels();
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
