//! Branches of the connection loop's `select!` that seldom fire (CLIENT KILL and
//! shutdown, the query buffer's resize timer, messages pushed to the client), polled only
//! after they woke.
//!
//! `select!` polls every branch each time the loop waits: once per request for a client
//! that sends one request at a time. Polling a waiting `Notified` takes its lock, a
//! `Sleep` goes to the timer, a channel registers its waker again: together some 1,300
//! instructions per request, more than the GET itself. A [`Gate`] hands the future it
//! guards a waker of its own, which marks the gate open (and wakes the task): the future
//! is polled on the gate's first poll, after that waker fired, and after it was ready
//! (it may be ready again: a channel holding more messages); otherwise the gate answers
//! `Pending` for the price of registering the task's waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pub struct Gate {
    shared: Arc<Shared>,
    /// Wakes `shared`: what the guarded future registers.
    waker: Waker,
}

struct Shared {
    open: AtomicBool,
    /// The task polling the gate.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Gate {
    /// Open: the first poll polls the future.
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            open: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(shared.clone());
        Gate { shared, waker }
    }

    /// Polls the future at the next poll whatever it registered: after it was changed
    /// from outside (a timer given a new deadline).
    pub fn open(&self) {
        self.shared.open.store(true, Ordering::Release);
    }

    /// `fut` behind the gate. The gate outlives it: a future made anew each turn
    /// (a channel's receive) leaves its waker registered with the channel, and a
    /// message sent meanwhile opens the gate for the next one.
    pub fn on<F: Future + Unpin>(&self, fut: F) -> On<'_, F> {
        On { gate: self, fut }
    }
}

pub struct On<'a, F> {
    gate: &'a Gate,
    fut: F,
}

impl<F: Future + Unpin> Future for On<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let shared = &this.gate.shared;
        // Registered before the flag is read: a wake in between finds this task.
        shared.task.register(cx.waker());
        if !shared.open.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.fut).poll(&mut Context::from_waker(&this.gate.waker));
        if polled.is_ready() {
            shared.open.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn recv(gate: &Gate, rx: &mut tokio::sync::mpsc::Receiver<u32>) -> Option<u32> {
        let recv = gate.on(std::future::poll_fn(|cx| rx.poll_recv(cx)));
        tokio::time::timeout(Duration::from_secs(5), recv)
            .await
            .expect("a message was sent")
    }

    #[tokio::test]
    async fn a_gated_channel_loses_no_message() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
        let gate = Gate::new();
        // Closed at its first poll with nothing there, then opened by a send from
        // another task.
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = sender.send(1).await;
        });
        assert_eq!(recv(&gate, &mut rx).await, Some(1));
        // Two queued: the second is taken though no new wake comes for it.
        tx.send(2).await.unwrap();
        tx.send(3).await.unwrap();
        assert_eq!(recv(&gate, &mut rx).await, Some(2));
        assert_eq!(recv(&gate, &mut rx).await, Some(3));
        // Nothing there: pending, and a later send opens it.
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            gate.on(std::future::poll_fn(|cx| rx.poll_recv(cx))),
        )
        .await;
        assert!(waiting.is_err());
        tx.send(4).await.unwrap();
        assert_eq!(recv(&gate, &mut rx).await, Some(4));
    }

    #[tokio::test]
    async fn a_gated_stop_wakes_on_a_kill_or_a_shutdown() {
        // The connection loop's `stop`: CLIENT KILL's Notify or the node's shutdown.
        for shutdown in [false, true] {
            let kill = tokio::sync::Notify::new();
            let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
            let stop = async {
                tokio::select! {
                    _ = kill.notified() => {}
                    _ = shutdown_rx.changed() => {}
                }
            };
            tokio::pin!(stop);
            let gate = Gate::new();
            let first = tokio::time::timeout(Duration::from_millis(20), gate.on(&mut stop));
            assert!(first.await.is_err());
            // Signalled after the gate closed: only the waker it handed out can open it.
            match shutdown {
                true => shutdown_tx.send(true).expect("the receiver is alive"),
                false => kill.notify_one(),
            }
            tokio::time::timeout(Duration::from_secs(5), gate.on(&mut stop))
                .await
                .expect("the stop signal wakes the gate");
        }
    }

    #[tokio::test]
    async fn a_gated_timer_fires_after_a_reset() {
        let gate = Gate::new();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let first = tokio::time::timeout(Duration::from_millis(20), gate.on(&mut sleep)).await;
        assert!(first.is_err());
        sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_millis(10));
        gate.open();
        tokio::time::timeout(Duration::from_secs(5), gate.on(&mut sleep))
            .await
            .unwrap();
    }
}
