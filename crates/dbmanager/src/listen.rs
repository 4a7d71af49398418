//! LISTEN/NOTIFY: the public listener and its items, and what a backend's listener task is
//! given to run with.
//!
//! The core knows nothing of any server here. A connection whose driver offers a listener
//! ([`ListenDriver`], PostgreSQL's in its own folder) starts one with [`start`]: the caller gets
//! a [`Listener`] (the stream and its controls), the driver's task gets a [`ListenerTask`] (the
//! commands, where to send items, when to stop, and the counters it keeps up to date). The task
//! owns the dedicated session, its reconnects and its re-subscriptions.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{ConnectionConfig, PoolSettings, RetryPolicy};
use crate::error::{Error, Operation, Result};
use crate::sql::{Database, Value};
use crate::stats::PoolCounters;

/// One notification, as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// The channel it was sent on.
    pub channel: String,
    /// Its payload (empty when none was given).
    pub payload: String,
    /// The server process (backend PID) of the session that sent it.
    pub process_id: u32,
}

/// An item of a [`Listener`]'s stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerEvent {
    /// A notification on a channel listened to.
    Notification(Notification),
    /// The listener's session was lost (a server restart, a killed session, a network fault);
    /// it is reconnecting with the connection's retry policy. `error` says why (it never
    /// carries a secret).
    Disconnected {
        /// Why the session was lost.
        error: String,
    },
    /// The listener has a new session and listens to every channel again; notifications sent
    /// while it was away **may have been missed**: resynchronise (re-read what the
    /// notifications were about). Every notification sent after this item arrives. Also
    /// yielded when a `replace` or `reload` of the connection moved the listener to the new
    /// configuration.
    Reconnected,
}

/// An item queued for the stream: a notification carries the subscription it arrived under.
struct Queued {
    event: ListenerEvent,
    subscription: u64,
}

/// What a listener's task is asked to do.
pub(crate) enum Command {
    Listen(String, oneshot::Sender<Result<()>>),
    Unlisten(String, oneshot::Sender<Result<()>>),
    UnlistenAll(oneshot::Sender<Result<()>>),
}

/// State shared by a listener's handles, its stream and its task.
#[derive(Default)]
struct Shared {
    /// The channels listened to (or to listen to again once reconnected), each with the number
    /// of its subscription (a channel listened to again after an `unlisten` gets a new one).
    /// Written by the task only; read by the stream to drop notifications queued for a
    /// subscription that has ended since, even when the channel is listened to again.
    channels: ArcSwap<BTreeMap<String, u64>>,
    connected: AtomicBool,
    /// Closed: the stream ends at once, whatever is still queued.
    closed: AtomicBool,
}

/// The current settings of the listener's connection, read on every (re)connect so that a
/// `replace` or `reload` of the connection is followed.
pub(crate) struct ListenSettings {
    pub config: ConnectionConfig,
    pub settings: PoolSettings,
    pub retry: RetryPolicy,
    /// Where the session's credentials come from: the open pool's source (a rotated
    /// `password_file`, a provider's cached answer), or one made for the configuration.
    pub credentials: std::sync::Arc<crate::credentials::CredentialSource>,
}

/// The connection a listener belongs to, as its task sees it.
pub(crate) trait ListenSource: Send + Sync + 'static {
    /// Its configuration now.
    fn current(&self) -> ListenSettings;
    /// Whether it is still usable (not closed, not removed).
    fn is_usable(&self) -> bool;
}

/// What a connection tells its listeners: counters bumped when it closes (the listeners end)
/// and when it is replaced (they move to the new configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConnectionSignal {
    pub closes: u64,
    pub replaces: u64,
}

/// A backend's listener: the task that runs one listener, and the statement that sends a
/// notification through the pool (two parameters: channel and payload).
pub(crate) struct ListenDriver {
    pub run: fn(ListenerTask) -> BoxFuture<'static, ()>,
    pub notify_sql: &'static str,
}

/// Everything [`start`] needs from the connection.
pub(crate) struct ListenContext {
    pub name: Arc<str>,
    pub source: Arc<dyn ListenSource>,
    pub counters: Arc<PoolCounters>,
    pub signal: watch::Receiver<ConnectionSignal>,
    pub database: Database,
}

/// Starts a listener: spawns the driver's task and waits for its first session (connected with
/// the retry policy), or its error.
pub(crate) async fn start(
    context: ListenContext,
    driver: &'static ListenDriver,
) -> Result<Listener> {
    let name = context.name.clone();
    let shared = Arc::new(Shared::default());
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let (ready_tx, ready_rx) = oneshot::channel();
    let seen = *context.signal.borrow();
    context
        .counters
        .listeners
        .open
        .fetch_add(1, Ordering::Relaxed);
    let task = ListenerTask {
        name: name.clone(),
        source: context.source,
        commands: commands_rx,
        events: Some(events_tx),
        close: close_rx,
        signal: context.signal,
        seen,
        _done: done_tx,
        ready: Some(ready_tx),
        shared: shared.clone(),
        counters: context.counters,
        counted_connected: false,
        counted_channels: 0,
        last_subscription: 0,
    };
    let listener = Listener {
        handle: ListenerHandle {
            inner: Arc::new(Inner {
                name: name.clone(),
                commands: commands_tx,
                close: close_tx,
                done: done_rx,
                shared,
                database: context.database,
                notify_sql: driver.notify_sql,
            }),
        },
        events: events_rx,
    };
    tokio::spawn((driver.run)(task));
    match ready_rx.await {
        Ok(Ok(())) => Ok(listener),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::closed(&name, Operation::Listen)),
    }
}

struct Inner {
    name: Arc<str>,
    commands: mpsc::UnboundedSender<Command>,
    close: watch::Sender<bool>,
    done: watch::Receiver<()>,
    shared: Arc<Shared>,
    database: Database,
    notify_sql: &'static str,
}

/// A LISTEN/NOTIFY listener of one connection (PostgreSQL): a [`Stream`](futures_util::Stream)
/// of [`ListenerEvent`]s, and its controls.
///
/// It has its own dedicated server session, **outside the pool** (not counted in
/// `max_open_conns`), opened from the connection's current configuration. When that session is
/// lost it reconnects with the connection's retry policy (without giving up: it keeps trying
/// every `retry_max_delay` until closed), listens to every channel again, and yields
/// [`ListenerEvent::Reconnected`] before any later notification. Closing it, or its
/// connection or manager, ends the stream. Dropping it closes it in the background.
///
/// Notifications are buffered in memory until read.
pub struct Listener {
    handle: ListenerHandle,
    events: mpsc::UnboundedReceiver<Queued>,
}

/// Controls of a [`Listener`] for other tasks: cheap to clone; every clone controls the same
/// listener. It does not keep the listener open: dropping the [`Listener`] closes it.
#[derive(Clone)]
pub struct ListenerHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("connection", &self.inner.name)
            .field("connected", &self.is_connected())
            .field("channels", &self.channels())
            .finish()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.handle
            .inner
            .shared
            .closed
            .store(true, Ordering::Release);
        self.handle.inner.close.send_replace(true);
    }
}

impl Listener {
    /// A handle to control this listener from other tasks.
    pub fn handle(&self) -> ListenerHandle {
        self.handle.clone()
    }

    /// The next item; `None` once the listener or its connection is closed.
    pub async fn recv(&mut self) -> Option<ListenerEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ListenerEvent>> {
        let shared = &self.handle.inner.shared;
        loop {
            if shared.closed.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            match self.events.poll_recv(cx) {
                Poll::Ready(Some(Queued {
                    event: ListenerEvent::Notification(n),
                    subscription,
                })) if shared.channels.load().get(&n.channel) != Some(&subscription) => {
                    // Queued before an `unlisten` of its channel returned (and maybe listened
                    // to again since: it belongs to the subscription that ended).
                    continue;
                }
                Poll::Ready(item) => return Poll::Ready(item.map(|q| q.event)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// See [`ListenerHandle::listen`].
    pub async fn listen(&self, channel: &str) -> Result<()> {
        self.handle.listen(channel).await
    }

    /// See [`ListenerHandle::unlisten`].
    pub async fn unlisten(&self, channel: &str) -> Result<()> {
        self.handle.unlisten(channel).await
    }

    /// See [`ListenerHandle::unlisten_all`].
    pub async fn unlisten_all(&self) -> Result<()> {
        self.handle.unlisten_all().await
    }

    /// See [`ListenerHandle::notify`].
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        self.handle.notify(channel, payload).await
    }

    /// See [`ListenerHandle::channels`].
    pub fn channels(&self) -> Vec<String> {
        self.handle.channels()
    }

    /// See [`ListenerHandle::is_connected`].
    pub fn is_connected(&self) -> bool {
        self.handle.is_connected()
    }

    /// See [`ListenerHandle::close`].
    pub async fn close(&self, deadline: Duration) {
        self.handle.close(deadline).await
    }
}

impl futures_util::Stream for Listener {
    type Item = ListenerEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ListenerEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl ListenerHandle {
    /// The connection's name.
    pub fn connection(&self) -> &str {
        &self.inner.name
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<()>>) -> Command,
    ) -> Result<()> {
        let closed = || Error::closed(&self.inner.name, Operation::Listen);
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(command(tx))
            .map_err(|_| closed())?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Listens to `channel` (case-sensitive, at most 63 bytes). Returns once the server listens
    /// to it; while the session is down, once the channel is recorded (the reconnect listens to
    /// it and yields [`ListenerEvent::Reconnected`]). Listening twice is harmless.
    pub async fn listen(&self, channel: &str) -> Result<()> {
        let channel = channel.to_owned();
        self.ask(|ack| Command::Listen(channel, ack)).await
    }

    /// Stops listening to `channel`: once this returns, the stream yields no more of its
    /// notifications, even ones already queued.
    pub async fn unlisten(&self, channel: &str) -> Result<()> {
        let channel = channel.to_owned();
        self.ask(|ack| Command::Unlisten(channel, ack)).await
    }

    /// Stops listening to every channel.
    pub async fn unlisten_all(&self) -> Result<()> {
        self.ask(Command::UnlistenAll).await
    }

    /// Sends `payload` on `channel` through the connection's pool, with bound parameters (on
    /// PostgreSQL, `SELECT pg_notify($1, $2)`): delivered when its transaction commits, here at
    /// once. Not through the listener's own session, so it works while that one reconnects.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        let params = [Value::from(channel), Value::from(payload)];
        self.inner
            .database
            .execute(self.inner.notify_sql, &params)
            .await
            .map(|_| ())
    }

    /// The channels listened to (or recorded to listen to on reconnect), sorted.
    pub fn channels(&self) -> Vec<String> {
        self.inner.shared.channels.load().keys().cloned().collect()
    }

    /// Whether the listener's session is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Acquire)
    }

    /// Closes the listener: its stream ends at once (items still queued are dropped), and its
    /// session is closed, waiting for that up to `deadline`. Idempotent.
    pub async fn close(&self, deadline: Duration) {
        self.inner.shared.closed.store(true, Ordering::Release);
        self.inner.close.send_replace(true);
        let mut done = self.inner.done.clone();
        // The task drops the sender when it ends.
        let _ =
            tokio::time::timeout(deadline, async { while done.changed().await.is_ok() {} }).await;
    }
}

/// Why a listener's task stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Closed: the listener, its connection or its manager; or every handle was dropped.
    Stop,
    /// The connection was replaced: reconnect with its new configuration.
    Replaced,
}

/// What wakes a listener's task that also takes commands.
pub(crate) enum Signal {
    Wake(Wake),
    Command(Command),
}

/// Resolves when `events` (if any) has no receiver left.
async fn unread(events: Option<mpsc::UnboundedSender<Queued>>) {
    if let Some(events) = events {
        events.closed().await;
    }
}

/// What a backend's listener task runs with. Dropping it ends the listener: the stream ends and
/// the gauges it added to its connection's stats are taken back.
pub(crate) struct ListenerTask {
    pub name: Arc<str>,
    pub source: Arc<dyn ListenSource>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: Option<mpsc::UnboundedSender<Queued>>,
    close: watch::Receiver<bool>,
    signal: watch::Receiver<ConnectionSignal>,
    seen: ConnectionSignal,
    /// Dropped when the task ends: wakes [`ListenerHandle::close`].
    _done: watch::Sender<()>,
    ready: Option<oneshot::Sender<Result<()>>>,
    shared: Arc<Shared>,
    counters: Arc<PoolCounters>,
    counted_connected: bool,
    counted_channels: u64,
    /// The number of the latest subscription (they start at 1; 0 marks other items).
    last_subscription: u64,
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.finish();
        let l = &self.counters.listeners;
        l.open.fetch_sub(1, Ordering::Relaxed);
        if self.counted_connected {
            l.connected.fetch_sub(1, Ordering::Relaxed);
        }
        l.channels
            .fetch_sub(self.counted_channels, Ordering::Relaxed);
    }
}

impl ListenerTask {
    /// Reports the first session's outcome to the caller of `listener()`.
    pub fn ready(&mut self, outcome: Result<()>) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(outcome);
        }
    }

    /// Whether the task must stop now, or (`Replaced`) reconnect; `None` to carry on.
    pub fn pending(&mut self) -> Option<Wake> {
        let closed = *self.close.borrow_and_update()
            || self.close.has_changed().is_err()
            || self.signal.has_changed().is_err()
            || self.events.as_ref().is_none_or(|e| e.is_closed())
            || !self.source.is_usable();
        let now = *self.signal.borrow_and_update();
        if closed || now.closes != self.seen.closes {
            return Some(Wake::Stop);
        }
        if now.replaces != self.seen.replaces {
            self.seen = now;
            return Some(Wake::Replaced);
        }
        None
    }

    /// Resolves when [`Self::pending`] has something to say (cancel-safe).
    pub async fn woken(&mut self) -> Wake {
        loop {
            if let Some(wake) = self.pending() {
                return wake;
            }
            let events = self.events.clone();
            tokio::select! {
                _ = self.close.changed() => {}
                _ = self.signal.changed() => {}
                () = unread(events) => {}
            }
        }
    }

    /// Like [`Self::woken`], and also resolves with the next command (cancel-safe).
    pub async fn next_signal(&mut self) -> Signal {
        loop {
            if let Some(wake) = self.pending() {
                return Signal::Wake(wake);
            }
            let events = self.events.clone();
            tokio::select! {
                _ = self.close.changed() => {}
                _ = self.signal.changed() => {}
                () = unread(events) => {}
                command = self.commands.recv() => {
                    return match command {
                        Some(command) => Signal::Command(command),
                        // Every handle is gone.
                        None => Signal::Wake(Wake::Stop),
                    };
                }
            }
        }
    }

    /// Ends the stream at once (whatever the session's cleanup still does).
    pub fn finish(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.connected.store(false, Ordering::Release);
        self.events = None;
    }

    /// The channels to listen to.
    pub fn channels(&self) -> BTreeSet<String> {
        self.shared.channels.load().keys().cloned().collect()
    }

    /// Records the channels to listen to: a channel kept keeps its subscription, a channel
    /// added (again) starts a new one.
    pub fn set_channels(&mut self, channels: BTreeSet<String>) {
        let n = channels.len() as u64;
        let gauge = &self.counters.listeners.channels;
        gauge.fetch_add(n, Ordering::Relaxed);
        gauge.fetch_sub(self.counted_channels, Ordering::Relaxed);
        self.counted_channels = n;
        let old = self.shared.channels.load_full();
        let subscriptions = channels
            .into_iter()
            .map(|channel| {
                let subscription = old.get(&channel).copied().unwrap_or_else(|| {
                    self.last_subscription += 1;
                    self.last_subscription
                });
                (channel, subscription)
            })
            .collect();
        self.shared.channels.store(Arc::new(subscriptions));
    }

    /// Records whether the session is up.
    pub fn set_connected(&mut self, connected: bool) {
        self.shared.connected.store(connected, Ordering::Release);
        if connected != self.counted_connected {
            let gauge = &self.counters.listeners.connected;
            if connected {
                gauge.fetch_add(1, Ordering::Relaxed);
            } else {
                gauge.fetch_sub(1, Ordering::Relaxed);
            }
            self.counted_connected = connected;
        }
    }

    /// Yields a notification if its channel is listened to; `false` once nobody reads.
    pub fn notification(&mut self, notification: Notification) -> bool {
        self.counters
            .listeners
            .notifications
            .fetch_add(1, Ordering::Relaxed);
        let Some(&subscription) = self.shared.channels.load().get(&notification.channel) else {
            return true;
        };
        self.queue(Queued {
            event: ListenerEvent::Notification(notification),
            subscription,
        })
    }

    /// Records a lost session and yields [`ListenerEvent::Disconnected`].
    pub fn disconnected(&mut self, error: &Error) {
        self.set_connected(false);
        self.counters.listeners.set_last_error(error);
        self.emit(ListenerEvent::Disconnected {
            error: error.to_string(),
        });
    }

    /// Records a failed reconnect attempt.
    pub fn reconnect_failed(&self, error: &Error) {
        let l = &self.counters.listeners;
        l.reconnect_failures.fetch_add(1, Ordering::Relaxed);
        l.set_last_error(error);
    }

    /// Records a new session (after a loss or a replace) and yields
    /// [`ListenerEvent::Reconnected`].
    pub fn reconnected(&mut self) {
        self.set_connected(true);
        let l = &self.counters.listeners;
        l.reconnects.fetch_add(1, Ordering::Relaxed);
        l.last_error.store(None);
        self.emit(ListenerEvent::Reconnected);
    }

    fn emit(&mut self, event: ListenerEvent) -> bool {
        self.queue(Queued {
            event,
            subscription: 0,
        })
    }

    fn queue(&mut self, item: Queued) -> bool {
        self.events
            .as_ref()
            .is_some_and(|events| events.send(item).is_ok())
    }
}
