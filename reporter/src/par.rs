//! Data parallelism for the reporter's CPU work (snapshot encoding and decoding,
//! parsing and signature checks): a slice mapped on scoped threads, one per core.
//!
//! Call it from a blocking context (`tokio::task::spawn_blocking`), never directly on
//! an async worker thread.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` applied to every item, on up to one thread per core; results in item order.
///
/// Threads take the next unclaimed item, so uneven items still spread evenly. A
/// panic in `f` is re-raised here.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        slots[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_in_order_on_several_threads() {
        let items: Vec<u64> = (0..100).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let out = super::map(&items, |x| {
            threads.lock().unwrap().insert(std::thread::current().id());
            // Long enough that no thread can take every item before the others start.
            std::thread::sleep(std::time::Duration::from_millis(1));
            x * 2
        });
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(threads.lock().unwrap().len() > 1);
        }
        assert!(super::map(&[] as &[u8], |_| 0).is_empty());
    }
}
