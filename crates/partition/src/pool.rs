//! A small pool of threads the partitioned engine runs its groups' batch work on.
//!
//! One engine thread per node limits a member to one core of protocol work and applying,
//! however many groups it hosts and cores it has. The pool lets the groups of one batch be
//! worked on at once: each group's replica is *moved* to a worker, worked on there, and moved
//! back (no shared state, no locks around an engine, no `unsafe`), and the results come back
//! in the order of the items, whichever thread finished first. So what the engine does with
//! them, and therefore everything it emits, is the same with a pool or without one: the
//! engine stays a deterministic state machine, which the simulator checks by running the same
//! seeds both ways (`crates/sim/tests/groups.rs`).
//!
//! Workers block on a channel when idle (no spinning: on a machine shared by several members
//! a spinning worker would take the core another member's engine thread needs).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;
use std::thread::JoinHandle;

type Done<R> = (usize, std::thread::Result<R>);

/// Runs `f` over batches of items on `threads - 1` workers and the calling thread.
pub(crate) struct Pool<T, R> {
    workers: Vec<Worker<T>>,
    done_rx: mpsc::Receiver<Done<R>>,
    f: fn(T) -> R,
}

struct Worker<T> {
    tx: Option<mpsc::Sender<(usize, T)>>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static, R: Send + 'static> Pool<T, R> {
    /// `threads` in all, the caller's included: `threads - 1` workers are started (none for
    /// 0 or 1, and then every item runs on the caller). Fails only if the OS refuses a thread.
    pub(crate) fn new(threads: usize, name: &str, f: fn(T) -> R) -> std::io::Result<Self> {
        let (done_tx, done_rx) = mpsc::channel::<Done<R>>();
        let mut workers = Vec::new();
        for w in 1..threads.max(1) {
            let (tx, rx) = mpsc::channel::<(usize, T)>();
            let done = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{w}"))
                .spawn(move || {
                    while let Ok((i, item)) = rx.recv() {
                        // A panic is the engine's (a broken invariant): handed to the caller,
                        // which panics as it would have run the item itself.
                        let r = catch_unwind(AssertUnwindSafe(|| f(item)));
                        if done.send((i, r)).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push(Worker {
                tx: Some(tx),
                handle: Some(handle),
            });
        }
        Ok(Pool {
            workers,
            done_rx,
            f,
        })
    }

    /// Threads in all, the caller's included.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// `f` of every item, in the items' order. Items are dealt round-robin: the caller works
    /// on its share while the workers work on theirs.
    pub(crate) fn map(&self, items: Vec<T>) -> Vec<R> {
        if items.len() < 2 || self.workers.is_empty() {
            return items.into_iter().map(self.f).collect();
        }
        let n = items.len();
        let shares = self.threads();
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        let mut local = Vec::with_capacity(n / shares + 1);
        let mut sent = 0;
        for (i, item) in items.into_iter().enumerate() {
            let tx = match i % shares {
                0 => None,
                w => self.workers[w - 1].tx.as_ref(),
            };
            match tx {
                Some(tx) => match tx.send((i, item)) {
                    Ok(()) => sent += 1,
                    // A worker gone (it never exits while its sender lives): run it here.
                    Err(mpsc::SendError((i, item))) => local.push((i, item)),
                },
                None => local.push((i, item)),
            }
        }
        for (i, item) in local {
            out[i] = Some((self.f)(item));
        }
        for _ in 0..sent {
            match self.done_rx.recv() {
                Ok((i, Ok(r))) => out[i] = Some(r),
                Ok((_, Err(panic))) => resume_unwind(panic),
                Err(_) => unreachable!("the pool holds a sender of its own results' channel"),
            }
        }
        out.into_iter()
            .map(|r| r.expect("every item sent was answered"))
            .collect()
    }
}

impl<T, R> Drop for Pool<T, R> {
    fn drop(&mut self) {
        for w in &mut self.workers {
            // Closing its channel ends the worker's loop.
            w.tx.take();
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which thread squared `x`: items are dealt round-robin, so every thread gets some
    /// whatever the timing, and the workers' results arrive in any order.
    fn square(x: u64) -> (u64, String) {
        (
            x * x,
            std::thread::current().name().unwrap_or("caller").into(),
        )
    }

    #[test]
    fn results_come_back_in_the_items_order_from_every_thread() {
        let pool = Pool::new(3, "pool-test", square).expect("threads");
        assert_eq!(pool.threads(), 3);
        for _ in 0..3 {
            let out = pool.map((0..10).collect());
            let squares: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
            assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());
            let threads: std::collections::BTreeSet<&str> =
                out.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(
                threads.len(),
                3,
                "the caller and both workers worked: {threads:?}"
            );
        }
    }

    #[test]
    fn without_workers_every_item_runs_on_the_caller() {
        let pool = Pool::new(1, "pool-test", square).expect("threads");
        let out = pool.map(vec![1, 2, 3]);
        assert_eq!(out.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 4, 9]);
        let me = std::thread::current()
            .name()
            .unwrap_or("caller")
            .to_string();
        assert!(out.iter().all(|(_, t)| *t == me));
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_goes_on() {
        fn odd_panics(x: u64) -> u64 {
            assert!(x.is_multiple_of(2), "odd item {x}");
            x
        }
        let pool = Pool::new(2, "pool-test", odd_panics).expect("threads");
        // Item 1 goes to the worker.
        let r = catch_unwind(AssertUnwindSafe(|| pool.map(vec![0, 1])));
        assert!(r.is_err(), "the worker's panic was not passed on");
        assert_eq!(pool.map(vec![2, 4, 6]), [2, 4, 6]);
    }
}
