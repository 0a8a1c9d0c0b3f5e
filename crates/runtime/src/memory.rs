//! The process-wide memory budget for what requests hold: bodies being received and images
//! being decoded. Each reserves its size (a body its declared length, an image its estimated
//! peak from the header, [`vigil_engine::preprocess::Pipeline::peak_bytes`]) before anything of
//! that size is allocated, and gives it back when done. A reservation that does not fit now is
//! refused at once ([`crate::Error::OverBudget`], 503 with Retry-After) rather than queued: the
//! memory held waiting would be the thing the budget bounds. One that could never fit is the
//! client's error (413). It owns no allocation itself and must not block.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::{Error, Result};

/// Reservations are counted in KiB, so a budget of up to 4 TiB fits the semaphore's `u32`.
const UNIT: u64 = 1024;

/// The budget; cheap to clone (all clones share it).
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total: u64,
}

/// Memory reserved from the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// A budget of `bytes`; 0 means unlimited (every reservation succeeds).
    pub fn new(bytes: u64) -> MemoryBudget {
        let units = bytes.div_ceil(UNIT).min(u64::from(u32::MAX));
        MemoryBudget {
            units: Arc::new(Semaphore::new(
                usize::try_from(units).unwrap_or(Semaphore::MAX_PERMITS),
            )),
            total: bytes,
        }
    }

    /// The whole budget in bytes (0: unlimited).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let free = self.units.available_permits() as u64 * UNIT;
        self.total.saturating_sub(free)
    }

    /// Reserves `bytes` for `what` (named in errors), or says why not: larger than the whole
    /// budget ([`Error::TooLarge`], the client's error) or more than is free now
    /// ([`Error::OverBudget`]).
    pub fn try_reserve(&self, bytes: u64, what: &str) -> Result<Reservation> {
        if self.total == 0 || bytes == 0 {
            return Ok(Reservation { _permit: None });
        }
        if bytes > self.total {
            return Err(Error::TooLarge(format!(
                "{what} needs about {} MiB, more than the server's whole memory budget of {} \
                 MiB (server.memory_budget)",
                bytes.div_ceil(1 << 20),
                self.total >> 20
            )));
        }
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        match Arc::clone(&self.units).try_acquire_many_owned(units) {
            Ok(p) => Ok(Reservation { _permit: Some(p) }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(Error::OverBudget {
                what: what.to_owned(),
                needed: bytes,
                budget: self.total,
            }),
        }
    }
}

/// Asks the C allocator to give back to the system the memory it holds free (glibc's
/// `malloc_trim`); returns whether it gave any. glibc keeps what a thread freed in that
/// thread's arena and returns only the top of each heap, so after a burst (19,000 idle
/// connections' buffers, measured in `bench/soak.py`) the freed pages stayed resident for
/// good. Elsewhere (musl, macOS) it does nothing: those allocators return memory themselves.
/// It locks each arena in turn while it walks it (about a millisecond at this server's
/// sizes), so it is called every few seconds, not per request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "FFI to glibc's malloc_trim; the workspace's one unsafe call"
)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and holds glibc's own locks while it runs.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Not glibc: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_come_back_when_dropped() {
        let budget = MemoryBudget::new(10 << 20);
        let a = budget.try_reserve(6 << 20, "an image").expect("fits");
        assert_eq!(budget.in_use(), 6 << 20);
        let err = budget.try_reserve(6 << 20, "an image").unwrap_err();
        assert!(matches!(err, Error::OverBudget { .. }), "{err}");
        assert_eq!(err.kind(), vigil_core::ErrorKind::Unavailable);
        drop(a);
        assert_eq!(budget.in_use(), 0);
        budget.try_reserve(6 << 20, "an image").expect("fits again");
        let err = budget.try_reserve(11 << 20, "a huge image").unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("server.memory_budget"), "{err}");
        // Unlimited: everything fits.
        let none = MemoryBudget::new(0);
        none.try_reserve(u64::MAX, "anything").expect("no budget");
    }

    /// Freed holes between live allocations stay resident in glibc until they are asked for:
    /// release_free_memory gives them back (and says so).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_between_live_allocations_is_given_back() {
        // 1,000 blocks of 64 KiB (below glibc's mmap threshold: they come from an arena),
        // each followed by a small live allocation, so the freed blocks cannot merge into
        // the top of the heap and be returned on their own.
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1_000)
            .map(|i| (vec![i as u8; 64 << 10], vec![i as u8; 16]))
            .collect();
        let kept: Vec<Vec<u8>> = pairs.iter_mut().map(|(_, k)| std::mem::take(k)).collect();
        drop(pairs);
        assert!(
            release_free_memory(),
            "64 MB of freed holes, nothing given back"
        );
        assert_eq!(kept.len(), 1_000);
    }
}
