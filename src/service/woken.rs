//! A future polled only once something woke it. `tokio::select!` polls every branch on
//! every turn of the serving loop, and the shutdown future (two signal receivers) costs
//! about a thousand instructions a poll: twice per message, for nothing, until a signal
//! comes. Behind this gate it is polled at first and then only after its own waker
//! fired; every other poll is an atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

pub(super) struct WokenOnly<F> {
    inner: F,
    gate: Arc<Gate>,
    waker: Waker,
}

/// Whether the inner future was woken since its last poll, and the task to wake then.
struct Gate {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future + Unpin> WokenOnly<F> {
    pub(super) fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            // The first poll goes through: it registers the inner future's wakers.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        WokenOnly {
            inner,
            waker: Waker::from(gate.clone()),
            gate,
        }
    }
}

impl<F: Future + Unpin> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut task = this.gate.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_its_inner_future_is_woken() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut gated = WokenOnly::new(rx);
        // Polled many times before: pending, and the inner future not polled again.
        for _ in 0..3 {
            assert!(futures::FutureExt::now_or_never(&mut gated).is_none());
        }
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            tx.send(7).unwrap();
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), gated).await;
        assert_eq!(got.unwrap().unwrap(), 7);
    }
}
