//! Locked-memory accounting: TCE tables are pinned memory charged to their owner.

use core::sync::atomic::{AtomicU64, Ordering};

/// The charge would exceed the owner's limit; nothing was charged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OverBudget;

/// An owner's budget of locked (pinned) memory (Linux's `mm->locked_vm`).
pub trait LockedMemoryBudget {
    /// Charges `bytes`, or refuses without charging anything.
    fn charge(&self, bytes: u64) -> Result<(), OverBudget>;
    /// Gives back `bytes` previously charged.
    fn refund(&self, bytes: u64);
}

impl<T: LockedMemoryBudget + ?Sized> LockedMemoryBudget for &T {
    fn charge(&self, bytes: u64) -> Result<(), OverBudget> {
        (**self).charge(bytes)
    }
    fn refund(&self, bytes: u64) {
        (**self).refund(bytes)
    }
}

impl<T: LockedMemoryBudget + ?Sized> LockedMemoryBudget for alloc::sync::Arc<T> {
    fn charge(&self, bytes: u64) -> Result<(), OverBudget> {
        (**self).charge(bytes)
    }
    fn refund(&self, bytes: u64) {
        (**self).refund(bytes)
    }
}

/// A lock-free budget with a fixed limit in bytes.
#[derive(Debug)]
pub struct LockedVm {
    limit: u64,
    used: AtomicU64,
}

impl LockedVm {
    /// A budget of `limit` bytes, nothing charged yet.
    pub const fn new(limit: u64) -> Self {
        LockedVm {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// The limit in bytes.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged and not refunded.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}

impl LockedMemoryBudget for LockedVm {
    fn charge(&self, bytes: u64) -> Result<(), OverBudget> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .map(|_| ())
            .map_err(|_| OverBudget)
    }

    fn refund(&self, bytes: u64) {
        let prev = self.used.fetch_sub(bytes, Ordering::SeqCst);
        debug_assert!(prev >= bytes, "refund of more than was charged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_up_to_limit() {
        let b = LockedVm::new(100);
        b.charge(60).unwrap();
        assert_eq!(b.charge(41), Err(OverBudget));
        assert_eq!(b.used(), 60);
        b.charge(40).unwrap();
        assert_eq!(b.charge(u64::MAX), Err(OverBudget));
        b.refund(100);
        assert_eq!(b.used(), 0);
    }
}
