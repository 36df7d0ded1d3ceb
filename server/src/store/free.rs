//! Freeing what a migration dropped (a source's slots, a target's settled names) off the
//! apply path, a batch at a time: [`drop_later`].

/// Items [`drop_later`] frees between two pauses: a few tens of microseconds of work.
pub const FREE_BATCH: usize = 64;
/// The pause between two batches of [`drop_later`].
pub const FREE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Frees `garbage`, item by item, on a short-lived thread of its own (or here, if no
/// thread can start): [`FREE_BATCH`] items, then a [`FREE_PAUSE`], at nice 19
/// ([`super::background_priority`]).
///
/// Not all at once: the memory belongs to the allocator arena of the runtime's worker,
/// and glibc's `free` takes the arena's lock. A thread at nice 19 freeing a migrated
/// range in one go was preempted while holding it, again and again, and the worker
/// waited for it: runtime workers blocked in `__lll_lock_wait_private` for up to 41 ms
/// after a 1M-session move's finishes (`perf sched` on every node). A short batch right
/// after a pause mostly runs to its end. Not at normal priority either: then the freeing
/// took a core from a drain with three copies (`kelvin-bench reshard`'s `kelvin-r3`,
/// p99 during the move 1.26 s against 0.25 s).
pub fn drop_later<I>(garbage: I)
where
    I: IntoIterator + Send + 'static,
{
    let free = move || {
        super::background_priority();
        for (i, item) in garbage.into_iter().enumerate() {
            drop(item);
            if (i + 1) % FREE_BATCH == 0 {
                std::thread::sleep(FREE_PAUSE);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("kelvin-free".into())
        .spawn(free)
    {
        tracing::warn!(cause = %e, "cannot start a thread to free memory: freed here instead");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::thread::ThreadId;

    use parking_lot::Mutex;

    /// Notes its index and the thread it was dropped on.
    struct Counted(usize, Arc<Mutex<Vec<(usize, ThreadId)>>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.lock().push((self.0, std::thread::current().id()));
        }
    }

    /// Everything given to `drop_later` is freed, item by item in order across several
    /// batches, on a thread other than the caller's.
    #[test]
    fn drop_later_frees_every_item_in_order_on_another_thread() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let n = FREE_BATCH * 3 + 5;
        drop_later(
            (0..n)
                .map(|i| Counted(i, dropped.clone()))
                .collect::<Vec<_>>(),
        );
        // Bounded wait for the thread (a liveness bound, not a timing check).
        for _ in 0..1000 {
            if dropped.lock().len() == n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let dropped = dropped.lock();
        let order: Vec<usize> = dropped.iter().map(|d| d.0).collect();
        assert_eq!(order, (0..n).collect::<Vec<_>>());
        let caller = std::thread::current().id();
        assert!(dropped.iter().all(|d| d.1 != caller));
    }
}
