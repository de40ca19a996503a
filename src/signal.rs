//! A counter that tasks wait on for its next change, for waits on the statement path.
//!
//! Sessions wait for two events between and during statements: the proxy shutting down
//! (between commands) and the health checks finding a server hung (while a read waits for
//! its first byte). With tokio's `watch`, every wait registers the task under a mutex and
//! every read of the value takes a read lock, so every statement took two to four locks
//! shared with every other session. Here a waiter subscribes once, when its session or
//! connection opens (one lock), and then reads the count and waits with atomics only. Firing,
//! which happens on shutdown or when a server goes down, takes the lock and wakes every
//! subscriber.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use futures_util::task::AtomicWaker;

#[derive(Default)]
struct Inner {
    count: AtomicU64,
    /// Subscribers that may be waiting. Dropped subscriptions leave dead entries, removed
    /// when the list would otherwise grow.
    waiters: Mutex<Vec<Weak<AtomicWaker>>>,
}

/// The firing side; clones share the count.
#[derive(Clone, Default)]
pub struct Signal(Arc<Inner>);

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("count", &self.count())
            .finish()
    }
}

impl Signal {
    pub fn new() -> Self {
        Self::default()
    }

    /// How often the signal has fired.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Acquire)
    }

    /// Adds one to the count and wakes every subscriber waiting.
    pub fn fire(&self) {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        let mut waiters = self.0.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|waiter| match waiter.upgrade() {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        });
    }

    /// A subscription that has seen the count as it is now.
    pub fn subscribe(&self) -> Subscription {
        let waker = Arc::new(AtomicWaker::new());
        let mut waiters = self.0.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters.len() == waiters.capacity() {
            waiters.retain(|waiter| waiter.strong_count() > 0);
        }
        waiters.push(Arc::downgrade(&waker));
        drop(waiters);
        Subscription {
            seen: self.count(),
            signal: self.clone(),
            waker,
        }
    }
}

/// One waiter's view of a `Signal`: the count it has seen.
pub struct Subscription {
    signal: Signal,
    waker: Arc<AtomicWaker>,
    seen: u64,
}

impl Subscription {
    /// The signal's current count.
    pub fn count(&self) -> u64 {
        self.signal.count()
    }

    /// Takes the current count as seen.
    pub fn mark_seen(&mut self) {
        self.seen = self.signal.count();
    }

    /// Whether the signal fired since the count was last seen.
    pub fn has_changed(&self) -> bool {
        self.signal.count() != self.seen
    }

    /// Waits until the signal fires after the count last seen, then takes the new count as
    /// seen. Returns at once if it already has.
    pub async fn changed(&mut self) {
        poll_fn(|cx| {
            // Registered before the count is read, so a `fire` between the two still wakes
            // this task.
            self.waker.register(cx.waker());
            let count = self.signal.count();
            if count != self.seen {
                self.seen = count;
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_wakes_on_the_next_fire_and_not_before() {
        let signal = Signal::new();
        let mut subscription = signal.subscribe();
        let waiting = tokio::time::timeout(Duration::from_millis(50), subscription.changed());
        assert!(waiting.await.is_err(), "nothing fired yet");

        let waiter = tokio::spawn(async move {
            subscription.changed().await;
            subscription
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.fire();
        let subscription = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(!subscription.has_changed());
        assert_eq!(subscription.count(), 1);
    }

    #[tokio::test]
    async fn a_fire_before_the_wait_is_not_missed() {
        let signal = Signal::new();
        let mut subscription = signal.subscribe();
        signal.fire();
        assert!(subscription.has_changed());
        tokio::time::timeout(Duration::from_secs(5), subscription.changed())
            .await
            .expect("already fired");
        subscription.mark_seen();
        assert!(!subscription.has_changed());
    }

    #[test]
    fn dropped_subscriptions_do_not_pile_up() {
        let signal = Signal::new();
        let kept = signal.subscribe();
        for _ in 0..10_000 {
            drop(signal.subscribe());
        }
        let waiters = signal.0.waiters.lock().unwrap().len();
        assert!(waiters < 64, "{waiters} entries for one live subscription");
        signal.fire();
        assert!(kept.has_changed());
        assert_eq!(signal.0.waiters.lock().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscriber_is_woken() {
        let signal = Signal::new();
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let mut subscription = signal.subscribe();
                tokio::spawn(async move { subscription.changed().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.fire();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .unwrap();
        }
    }
}
