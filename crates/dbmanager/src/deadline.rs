//! Bounding an operation in time, as every layer does the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_util::FutureExt as _;
use tokio::time::{Instant, Sleep};

use crate::error::{Error, Operation, Result};

/// Runs `attempt` under a timeout, turning the elapsed timeout into a transient error.
///
/// A `map` on the timeout rather than an `async fn`: no wrapper future around it, so it is not
/// copied once more on the query path.
pub(crate) fn bounded<T, F>(
    name: &str,
    operation: Operation,
    limit: Duration,
    attempt: F,
) -> impl Future<Output = Result<T>>
where
    F: Future<Output = Result<T>>,
{
    tokio::time::timeout(limit, attempt)
        .map(move |r| r.unwrap_or_else(|_| Err(Error::timeout(name, operation, limit))))
}

/// Timers kept for reuse by the operations of one pool.
///
/// Why: a fresh [`tokio::time::Sleep`] enters the runtime's timer wheel under the wheel's lock
/// when first polled and leaves it under the lock again when dropped: about 0.6k to 1k
/// instructions on every statement that waits for the network (a `SELECT 1` costs about 40k).
/// A kept timer is not even re-armed when its deadline is earlier than the new one (the usual
/// case: the same limit from a later start): when it fires, the operation's own deadline is
/// checked and the timer moved to it. So a busy pool touches the wheel about once per limit
/// per kept timer instead of twice per statement.
///
/// A kept timer belongs to the runtime it was made on, so it is reused only on that one.
pub(crate) struct Timers {
    kept: OnceLock<ArrayQueue<Kept>>,
    capacity: usize,
}

struct Kept {
    runtime: tokio::runtime::Id,
    sleep: Pin<Box<Sleep>>,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("kept", &self.kept.get().map_or(0, ArrayQueue::len))
            .finish()
    }
}

impl Timers {
    /// Keeps at most `capacity` idle timers: about the number of operations in flight at once.
    /// Nothing is allocated until one is kept.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            kept: OnceLock::new(),
            capacity: capacity.max(1),
        }
    }

    /// For the operations of a pool of `max_open` connections: statements also wait for a
    /// connection under their timer, so several per connection may be in flight.
    pub(crate) fn for_pool(max_open: u32) -> Self {
        let per_pool = usize::try_from(max_open).unwrap_or(usize::MAX);
        Self::new(per_pool.saturating_mul(4).clamp(16, 256))
    }

    fn queue(&self) -> &ArrayQueue<Kept> {
        self.kept.get_or_init(|| ArrayQueue::new(self.capacity))
    }

    /// A timer for `deadline` on the current runtime: a kept one re-armed, or a new one.
    /// `None` outside a runtime (no timer can run there).
    fn take(&self, deadline: Instant) -> Option<Kept> {
        let runtime = tokio::runtime::Handle::try_current().ok()?.id();
        if let Some(kept) = self.kept.get() {
            // A timer of another runtime (one that may have ended) is dropped, not re-armed.
            while let Some(mut timer) = kept.pop() {
                if timer.runtime == runtime {
                    // Firing early is harmless (see `Bounded::poll`); firing late is not.
                    if timer.sleep.deadline() > deadline {
                        timer.sleep.as_mut().reset(deadline);
                    }
                    return Some(timer);
                }
            }
        }
        Some(Kept {
            runtime,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        })
    }

    fn keep(&self, timer: Kept) {
        // Full: enough are kept; this one is dropped (and leaves the wheel).
        let _ = self.queue().push(timer);
    }

    /// `work` bounded by `deadline`: `None` when the deadline passed first. A timer is taken
    /// only if `work` is not ready at its first poll, and kept again when the future ends.
    pub(crate) fn bound<F: Future>(&self, deadline: Instant, work: F) -> Bounded<'_, F> {
        Bounded {
            work,
            timers: self,
            deadline,
            timer: None,
        }
    }

    /// Runs `attempt` under a timeout, turning the elapsed timeout into a transient error, as
    /// [`bounded`] does, for an operation that started at `started` (a clock reading the caller
    /// already has: the timer then reads none of its own). It fails `limit` after `started`.
    pub(crate) fn bounded_from<'t, T, F>(
        &'t self,
        name: &'t str,
        operation: Operation,
        limit: Duration,
        started: Instant,
        attempt: F,
    ) -> impl Future<Output = Result<T>> + 't
    where
        F: Future<Output = Result<T>> + 't,
    {
        // A limit beyond the clock's range: no deadline (`far_future` is tokio's own answer,
        // and a year is as good as never for a statement).
        let deadline = started
            .checked_add(limit)
            .or_else(|| started.checked_add(Duration::from_secs(365 * 24 * 3600)))
            .unwrap_or(started);
        self.bound(deadline, attempt)
            .map(move |r| r.unwrap_or_else(|| Err(Error::timeout(name, operation, limit))))
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Timers::bound`].
    pub(crate) struct Bounded<'t, F> {
        #[pin]
        work: F,
        timers: &'t Timers,
        deadline: Instant,
        timer: Option<Kept>,
    }

    impl<'t, F> PinnedDrop for Bounded<'t, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(timer) = this.timer.take() {
                this.timers.keep(timer);
            }
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.timer.is_none() {
            *this.timer = this.timers.take(*this.deadline);
        }
        let Some(timer) = this.timer.as_mut() else {
            return Poll::Pending;
        };
        loop {
            // Outside the task's budget: `work` may have spent it, and a deadline must still be
            // seen (tokio's own `Timeout` does the same).
            let mut elapsed = tokio::task::unconstrained(timer.sleep.as_mut());
            if Pin::new(&mut elapsed).poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A kept timer may still be set for an earlier operation's deadline.
            if timer.sleep.deadline() >= *this.deadline || Instant::now() >= *this.deadline {
                return Poll::Ready(None);
            }
            timer.sleep.as_mut().reset(*this.deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Timers;

    fn kept(timers: &Timers) -> usize {
        timers
            .kept
            .get()
            .map_or(0, crossbeam_queue::ArrayQueue::len)
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_operation_takes_no_timer() {
        let timers = Timers::new(4);
        let out = timers
            .bound(Instant::now() + Duration::from_secs(1), async { 7 })
            .await;
        assert_eq!(out, Some(7));
        assert_eq!(kept(&timers), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_timer_fires_at_its_new_deadline_not_its_old_one() {
        let timers = Timers::new(4);
        // First use: armed for 100 ms, the work ends after 10 ms; the timer is kept.
        let started = Instant::now();
        let out = timers
            .bound(
                started + Duration::from_millis(100),
                tokio::time::sleep(Duration::from_millis(10)),
            )
            .await;
        assert_eq!(out, Some(()));
        assert_eq!(kept(&timers), 1);
        // Second use: the same timer, moved to 1 s later. Its old deadline (100 ms) passes while
        // it waits: it must not fire then.
        let second = Instant::now();
        let out = timers
            .bound(
                second + Duration::from_secs(1),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(out, None);
        assert_eq!(second.elapsed(), Duration::from_secs(1));
        assert_eq!(kept(&timers), 1, "one timer served both");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fired_is_armed_again() {
        let timers = Timers::new(4);
        for round in 0..3 {
            let started = Instant::now();
            let limit = Duration::from_millis(50 * (round + 1));
            let out = timers
                .bound(started + limit, std::future::pending::<()>())
                .await;
            assert_eq!(out, None);
            assert_eq!(started.elapsed(), limit, "round {round}");
        }
        // And an earlier deadline than the kept one's last.
        let started = Instant::now();
        let out = timers
            .bound(
                started + Duration::from_millis(5),
                std::future::pending::<()>(),
            )
            .await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        assert_eq!(kept(&timers), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_operation_gives_its_timer_back() {
        let timers = Timers::new(4);
        let mut work = Box::pin(timers.bound(
            Instant::now() + Duration::from_secs(1),
            std::future::pending::<()>(),
        ));
        assert!(futures_util::poll!(work.as_mut()).is_pending());
        assert_eq!(kept(&timers), 0, "in use");
        drop(work);
        assert_eq!(kept(&timers), 1);
    }

    /// Work that wakes its task over and over still ends at the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_busy_operation_still_times_out() {
        let timers = Timers::new(4);
        let started = Instant::now();
        let busy = std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            std::task::Poll::<()>::Pending
        });
        let limit = Duration::from_millis(30);
        let busy = timers.bound(started + limit, busy);
        // The busy task never parks, so the paused clock never auto-advances: advance it from
        // another task.
        let clock = tokio::spawn(async {
            for _ in 0..100 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(busy.await, None);
        assert!(started.elapsed() >= limit);
        clock.abort();
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Polled from another task (another waker), the timer wakes that one.
    #[tokio::test(start_paused = true)]
    async fn the_timer_wakes_the_latest_task() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let timers = Timers::new(4);
        let mut work = Box::pin(timers.bound(
            Instant::now() + Duration::from_millis(10),
            std::future::pending::<()>(),
        ));
        let (first, second) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let waker = std::task::Waker::from(first.clone());
        assert!(
            work.as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
                .is_pending()
        );
        let waker = std::task::Waker::from(second.clone());
        assert!(
            work.as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
                .is_pending()
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(second.0.load(SeqCst), 1, "the latest waker is woken");
        assert_eq!(first.0.load(SeqCst), 0);
        assert!(matches!(
            work.as_mut()
                .poll(&mut std::task::Context::from_waker(&waker)),
            std::task::Poll::Ready(None)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_capacity_timers_are_kept() {
        let timers = Timers::new(2);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut all: Vec<_> = (0..5)
            .map(|_| Box::pin(timers.bound(deadline, std::future::pending::<()>())))
            .collect();
        for work in &mut all {
            assert!(futures_util::poll!(work.as_mut()).is_pending());
        }
        drop(all);
        assert_eq!(kept(&timers), 2);
    }

    /// A timer kept on a runtime that has ended is not used on another one (polling it there
    /// would panic: its timer driver is gone).
    #[test]
    fn a_timer_of_an_ended_runtime_is_not_reused() {
        let timers = Timers::new(4);
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let started = Instant::now();
                let out = timers
                    .bound(
                        started + Duration::from_millis(20),
                        std::future::pending::<()>(),
                    )
                    .await;
                assert_eq!(out, None);
                assert!(started.elapsed() >= Duration::from_millis(20));
            });
            drop(runtime);
        }
        assert_eq!(kept(&timers), 1, "the first runtime's timer was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_past_the_clock_range_never_fires() {
        let timers = Timers::new(1);
        let work = timers.bounded_from(
            "c",
            crate::error::Operation::Query,
            Duration::MAX,
            Instant::now(),
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(1)
            },
        );
        assert_eq!(work.await.unwrap(), 1);
    }
}
