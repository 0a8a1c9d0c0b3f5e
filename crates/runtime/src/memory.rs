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
}
