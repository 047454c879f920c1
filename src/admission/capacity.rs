//! Global capacity as semaphore permits that are *moved into* the work they allow: a [`QueuedPermit`] travels
//! with an accepted request until it is answered, an [`InflightPermit`] is held while the engine works on it.
//! Dropping them (task end or cancellation) returns capacity; nothing is released by hand.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::drain::DrainRate;
use crate::metrics::{self, GaugeGuard};

/// Accepted-but-unanswered requests, and engine requests in flight.
#[derive(Debug, Clone)]
pub struct Capacity {
    max_queued: usize,
    max_inflight: usize,
    queued: Arc<Semaphore>,
    inflight: Arc<Semaphore>,
    drained: Arc<DrainRate>,
}

/// Held by an accepted request until it is answered; its drop is one completion for the [`DrainRate`].
#[derive(Debug)]
pub struct QueuedPermit {
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeGuard,
    drained: Arc<DrainRate>,
}

impl Drop for QueuedPermit {
    fn drop(&mut self) {
        self.drained.record(Instant::now());
    }
}

/// Held while the engine works on a request.
#[derive(Debug)]
pub struct InflightPermit {
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeGuard,
}

impl Capacity {
    pub fn new(max_queued: usize, max_inflight: usize) -> Self {
        Self {
            max_queued,
            max_inflight,
            queued: Arc::new(Semaphore::new(max_queued)),
            inflight: Arc::new(Semaphore::new(max_inflight)),
            drained: Arc::new(DrainRate::new()),
        }
    }

    /// A place for one more accepted request, or `None` when the server is full.
    pub fn try_accept(&self) -> Option<QueuedPermit> {
        let permit = Arc::clone(&self.queued).try_acquire_owned().ok()?;
        Some(QueuedPermit {
            _permit: permit,
            _gauge: GaugeGuard::new(metrics::REQUESTS_QUEUED),
            drained: Arc::clone(&self.drained),
        })
    }

    /// Wait for an engine slot.
    pub async fn acquire_inflight(&self) -> InflightPermit {
        let permit = Arc::clone(&self.inflight)
            .acquire_owned()
            .await
            .expect("the inflight semaphore is never closed");
        InflightPermit {
            _permit: permit,
            _gauge: GaugeGuard::new(metrics::REQUESTS_INFLIGHT),
        }
    }

    /// Accepted requests not yet answered.
    pub fn queued(&self) -> usize {
        self.max_queued.saturating_sub(self.queued.available_permits())
    }

    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Engine requests in flight.
    pub fn inflight(&self) -> usize {
        self.max_inflight.saturating_sub(self.inflight.available_permits())
    }

    pub fn max_inflight(&self) -> usize {
        self.max_inflight
    }

    /// How long a refused client should wait: the time the accepted requests need to drain at the current rate.
    pub fn retry_after(&self) -> std::time::Duration {
        self.drained.retry_after(self.queued(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_return_capacity_on_drop() {
        let adm = Capacity::new(2, 1);
        let a = adm.try_accept().unwrap();
        let _b = adm.try_accept().unwrap();
        assert!(adm.try_accept().is_none());
        assert_eq!(adm.queued(), 2);
        drop(a);
        assert!(adm.try_accept().is_some());

        let first = adm.acquire_inflight().await;
        let mut set = tokio::task::JoinSet::new();
        let adm2 = adm.clone();
        set.spawn(async move {
            let _p = adm2.acquire_inflight().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(set.len(), 1);
        assert!(set.try_join_next().is_none());
        drop(first);
        set.join_next().await.unwrap().unwrap();
    }
}
