//! Polling a rarely-ready future only when it is the one that woke the task.
//!
//! Every connection task waits for its request work and, beside it, for the bridge's
//! shutdown signals. `tokio::select!` polls every branch on every wake-up, and polling a
//! `CancellationToken`'s future takes the token's mutex; the tokens are shared by all
//! connections, so each wake-up of each connection (several per request) contended for
//! the same two locks across runtime workers. [`OnWake`] gives the wrapped future a waker
//! of its own and polls it only after that waker fired, so a wake-up for request work
//! costs one atomic swap here. No crate we use offers this (futures' `FuturesUnordered`
//! tracks readiness the same way, for a set of futures of one type).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future polled only when it has woken the task (and on the first poll).
pub(crate) struct OnWake<F> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker the wrapped future sees (made once: it is an `Arc` of `flag`).
    waker: Waker,
}

impl<F> std::fmt::Debug for OnWake<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnWake").finish_non_exhaustive()
    }
}

/// Set by the wrapped future's waker; the task's own waker to pass the wake-up on.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OnWake<F> {
    pub(crate) fn new(future: F) -> OnWake<F> {
        let flag = Arc::new(Flag {
            // Polled the first time, so that it registers its waker.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OnWake {
            future: Box::pin(future),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake-up in between sets the flag (seen
        // now) or wakes the task (polled again).
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    /// Counts its polls; ready once the token is cancelled.
    async fn counted(token: CancellationToken, polls: Arc<std::sync::atomic::AtomicUsize>) {
        let mut cancelled = std::pin::pin!(token.cancelled());
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            cancelled.as_mut().poll(cx)
        })
        .await
    }

    #[tokio::test]
    async fn polls_the_future_only_after_its_own_wake_up() {
        let token = CancellationToken::new();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut signal = OnWake::new(counted(token.clone(), Arc::clone(&polls)));
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        // First poll registers; further polls without a wake-up of its own are skipped.
        for _ in 0..10 {
            assert!(Pin::new(&mut signal).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        token.cancel();
        assert!(Pin::new(&mut signal).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn the_wake_up_reaches_the_task() {
        let token = CancellationToken::new();
        let signal = OnWake::new(token.clone().cancelled_owned());
        let waiter = tokio::spawn(signal);
        tokio::task::yield_now().await;
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the task was woken")
            .expect("the task ran");
    }
}
