//! The event thread: takes queued events in publish order and delivers each over the one
//! connection before the next, reconnecting and backing off while containerd is away.
//! Kept apart from the [`Publisher`](super::Publisher) API, which only queues: this is the
//! only code that does socket I/O.

use super::Shared;
use crate::containerd::events::connection::{Connection, Outcome};
use crate::containerd::events::queue::{Item, Queue};

/// Marks the thread exited even if it unwinds, so `close` never waits for a
/// thread that is gone.
struct ExitGuard<'a>(&'a Queue);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let abandoned = self.0.exited();
        if abandoned > 0 {
            log::warn!("event publisher stopped: dropping {abandoned} undelivered events");
        }
    }
}

/// The event thread: takes events in order and delivers each before the next.
pub(super) fn run(shared: &Shared) {
    let _exit = ExitGuard(&shared.queue);
    let mut conn: Option<Connection> = None;
    while let Some(item) = shared.queue.take() {
        let handed_over = !deliver(shared, &mut conn, &item) && shared.queue.handing_over();
        if handed_over {
            shared.queue.requeue(item);
        }
        shared.queue.done();
    }
}

/// Tries to deliver `item` until it is delivered, rejected, too old, or the
/// publisher is stopped; false only in the last case.
fn deliver(shared: &Shared, conn: &mut Option<Connection>, item: &Item) -> bool {
    let cfg = &shared.config;
    let queue = &shared.queue;
    let mut backoff = cfg.backoff_initial;
    let mut attempts: u32 = 0;
    loop {
        if queue.stopped() {
            if !queue.handing_over() {
                log::warn!(
                    "dropping event {}: the publisher was closed before containerd took it",
                    item.topic
                );
            }
            return false;
        }
        attempts = attempts.saturating_add(1);
        let reused = conn.is_some();
        let result = match conn {
            Some(c) => c.call(&item.request),
            None => match Connection::open(&shared.endpoint, cfg.io_timeout) {
                Ok(c) => {
                    queue.set_active(Some(c.stream()));
                    conn.insert(c).call(&item.request)
                }
                Err(e) => Err(e),
            },
        };
        let err = match result {
            Ok(Outcome::Delivered) => return true,
            Ok(Outcome::Rejected(status)) => {
                log::warn!(
                    "containerd rejected event {}: {status}; dropping it",
                    item.topic
                );
                return true;
            }
            Err(e) => e,
        };
        *conn = None;
        queue.set_active(None);
        if reused {
            // A connection that sat idle may have died with a containerd
            // restart; retry on a fresh one at once before backing off.
            log::debug!(
                "event {}: stale connection ({err}); reconnecting",
                item.topic
            );
            continue;
        }
        if item.queued_at.elapsed() > cfg.max_age {
            log::warn!(
                "dropping event {} after {attempts} attempts over {:?}: {err}",
                item.topic,
                cfg.max_age
            );
            return true;
        }
        log::debug!(
            "event {}: attempt {attempts} failed ({err}); retrying in {backoff:?}",
            item.topic
        );
        queue.sleep_unless_stopped(backoff);
        backoff = backoff.saturating_mul(2).min(cfg.backoff_max);
    }
}
