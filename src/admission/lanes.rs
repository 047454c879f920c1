//! [`Lanes`]: the requests of one session in arrival order, run one at a time. A session's lane is "active" while
//! a worker owns it, and its pending queue is bounded (overflow is refused, never dropped).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// What [`Lanes::submit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Submit<T> {
    /// The lane was idle and is now active: the caller must run this job, then call [`Lanes::next`].
    Run(T),
    /// Queued behind the session's running request.
    Queued,
    /// The session's queue is full; the job comes back for an error reply.
    Full(T),
}

/// Per-key FIFO lanes with bounded pending queues.
#[derive(Debug)]
pub struct Lanes<K, T> {
    /// Present key = active lane (a worker runs it); the deque holds what waits behind the running job.
    inner: Arc<Mutex<HashMap<K, VecDeque<T>>>>,
    capacity: usize,
}

impl<K, T> Clone for Lanes<K, T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            capacity: self.capacity,
        }
    }
}

impl<K: Hash + Eq + Clone, T> Lanes<K, T> {
    /// `capacity`: how many jobs may wait behind a session's running one.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, VecDeque<T>>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn submit(&self, key: &K, job: T) -> Submit<T> {
        let mut lanes = self.lock();
        match lanes.get_mut(key) {
            None => {
                lanes.insert(key.clone(), VecDeque::new());
                Submit::Run(job)
            }
            Some(queue) if queue.len() >= self.capacity => Submit::Full(job),
            Some(queue) => {
                queue.push_back(job);
                Submit::Queued
            }
        }
    }

    /// The next job of an active lane, or `None` (and the lane becomes idle).
    pub fn next(&self, key: &K) -> Option<T> {
        let mut lanes = self.lock();
        let job = lanes.get_mut(key).and_then(VecDeque::pop_front);
        if job.is_none() {
            lanes.remove(key);
        }
        job
    }

    /// Take every waiting job (never a running one) for which `expired` holds, keeping the others in order.
    pub fn take_waiting(&self, mut expired: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        for queue in self.lock().values_mut() {
            if queue.iter().any(&mut expired) {
                let (gone, kept): (VecDeque<T>, VecDeque<T>) = queue.drain(..).partition(&mut expired);
                *queue = kept;
                taken.extend(gone);
            }
        }
        taken
    }

    /// Take the jobs waiting in `key`'s lane (never the running one) for which `superseded` holds, keeping the
    /// others in order.
    pub fn take_waiting_in(&self, key: &K, mut superseded: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut lanes = self.lock();
        let Some(queue) = lanes.get_mut(key) else {
            return Vec::new();
        };
        if !queue.iter().any(&mut superseded) {
            return Vec::new();
        }
        let (gone, kept): (VecDeque<T>, VecDeque<T>) = queue.drain(..).partition(&mut superseded);
        *queue = kept;
        gone.into()
    }

    /// Number of active lanes.
    pub fn active(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_waiting_jobs_are_taken_and_the_rest_keep_their_order() {
        let lanes: Lanes<&str, u32> = Lanes::new(8);
        assert_eq!(lanes.submit(&"a", 1), Submit::Run(1));
        for job in [2, 3, 4, 5] {
            assert_eq!(lanes.submit(&"a", job), Submit::Queued);
        }
        assert_eq!(lanes.submit(&"b", 10), Submit::Run(10));
        assert_eq!(lanes.submit(&"b", 11), Submit::Queued);
        // The running jobs (1, 10) are never taken, even when they match.
        let mut taken = lanes.take_waiting(|j| j % 2 == 1);
        taken.sort_unstable();
        assert_eq!(taken, vec![3, 5, 11]);
        assert_eq!(lanes.next(&"a"), Some(2));
        assert_eq!(lanes.next(&"a"), Some(4));
        assert_eq!(lanes.next(&"a"), None);
        assert_eq!(lanes.next(&"b"), None);
        assert_eq!(lanes.active(), 0);
    }

    #[test]
    fn waiting_jobs_of_one_lane_are_taken_and_the_running_one_and_other_lanes_stay() {
        let lanes: Lanes<&str, u32> = Lanes::new(8);
        assert!(lanes.take_waiting_in(&"a", |_| true).is_empty(), "no lane");
        assert_eq!(lanes.submit(&"a", 1), Submit::Run(1));
        assert!(
            lanes.take_waiting_in(&"a", |_| true).is_empty(),
            "the running job stays"
        );
        for job in [2, 3, 4] {
            assert_eq!(lanes.submit(&"a", job), Submit::Queued);
        }
        assert_eq!(lanes.submit(&"b", 5), Submit::Run(5));
        assert_eq!(lanes.submit(&"b", 7), Submit::Queued);
        assert_eq!(lanes.take_waiting_in(&"a", |j| j % 2 == 1), vec![3]);
        assert_eq!(lanes.next(&"a"), Some(2));
        assert_eq!(lanes.next(&"a"), Some(4));
        assert_eq!(lanes.next(&"b"), Some(7));
    }

    #[test]
    fn lanes_serialise_per_key_and_bound_the_queue() {
        let lanes: Lanes<&str, u32> = Lanes::new(2);
        assert_eq!(lanes.submit(&"a", 1), Submit::Run(1));
        assert_eq!(lanes.submit(&"b", 10), Submit::Run(10));
        assert_eq!(lanes.submit(&"a", 2), Submit::Queued);
        assert_eq!(lanes.submit(&"a", 3), Submit::Queued);
        assert_eq!(lanes.submit(&"a", 4), Submit::Full(4));
        assert_eq!(lanes.next(&"a"), Some(2));
        assert_eq!(lanes.submit(&"a", 5), Submit::Queued);
        assert_eq!(lanes.next(&"a"), Some(3));
        assert_eq!(lanes.next(&"a"), Some(5));
        assert_eq!(lanes.next(&"a"), None);
        assert_eq!(lanes.active(), 1);
        // Idle again: the next job runs at once.
        assert_eq!(lanes.submit(&"a", 6), Submit::Run(6));
    }
}
