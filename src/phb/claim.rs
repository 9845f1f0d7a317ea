//! Which back end drives a PHB, and the one direct back end per PHB.
//!
//! skiboot owns the PHB: it keeps its own copy of the TVT (`tve_cache`), PELT-V and RTT and
//! serialises its own register sequences with its PHB lock. The direct back end writes the
//! same registers and tables behind its back, so the two must never drive one PHB at the same
//! time. A [`Claim`] says which back end holds a PHB: any number of users of the SAME back end
//! may hold claims together (OPAL serialises its calls; the direct back end is one instance
//! per PHB whose locks every user shares), and a claim for the other back end is refused
//! with [`PhbError::Claimed`] until the last claim is dropped. Whoever drops the last claim
//! must leave the PHB as it found it (windows disabled, PEs back where they were), which is
//! what makes the hand-over from one back end to the other safe.
//!
//! [`PhbSlots`] keeps, per PHB, the claim state and the direct back end instance, created on
//! first use and never dropped: every user of one PHB gets the same instance by reference.
//!
//! Claims cover DMA programming (TVT, RTT, PELT-V, PEST, TCE kills). Configuration space is
//! always reached through OPAL, which serialises it itself; the kernel's IODA read-back
//! diagnostics (`kernel::pci::peek_tve`, `peek_pest`) bypass claims and say so.

use spin::{Mutex, Once};

use super::dma::PhbError;
use super::hw::PhbId;

/// The two ways of programming a PHB's DMA: they must behave the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// OPAL calls: the default, and what the firmware supports on hardware.
    Opal,
    /// IODA3 registers written directly: a bring-up and test back end.
    Direct,
}

impl Backend {
    /// Both back ends.
    pub const ALL: [Backend; 2] = [Backend::Opal, Backend::Direct];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Opal => "opal",
            Backend::Direct => "direct",
        }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    phb: Option<PhbId>,
    holder: Option<Backend>,
    users: u32,
}

const FREE: Slot = Slot {
    phb: None,
    holder: None,
    users: 0,
};

/// Claim state and direct back end instance of up to `N` PHBs.
pub struct PhbSlots<D, const N: usize> {
    slots: Mutex<[Slot; N]>,
    direct: [Once<D>; N],
}

impl<D, const N: usize> Default for PhbSlots<D, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D, const N: usize> PhbSlots<D, N> {
    /// No PHB claimed yet.
    pub const fn new() -> Self {
        Self {
            slots: Mutex::new([FREE; N]),
            direct: [const { Once::new() }; N],
        }
    }

    /// Claims `phb` for `by`: refused while the other back end holds it.
    pub fn claim(&self, phb: PhbId, by: Backend) -> Result<Claim<'_, D, N>, PhbError> {
        let mut slots = self.slots.lock();
        let index = match slots.iter().position(|s| s.phb == Some(phb)) {
            Some(i) => i,
            None => {
                let i = slots
                    .iter()
                    .position(|s| s.phb.is_none())
                    .ok_or(PhbError::TooManyPhbs)?;
                slots[i].phb = Some(phb);
                i
            }
        };
        let slot = &mut slots[index];
        match slot.holder {
            Some(other) if other != by => return Err(PhbError::Claimed { phb, by: other }),
            _ => {}
        }
        slot.holder = Some(by);
        slot.users += 1;
        Ok(Claim {
            slots: self,
            index,
            phb,
            by,
        })
    }

    /// The back end holding `phb`, if any.
    pub fn holder(&self, phb: PhbId) -> Option<Backend> {
        self.slots
            .lock()
            .iter()
            .find(|s| s.phb == Some(phb))
            .and_then(|s| s.holder)
    }

    fn release(&self, index: usize) {
        let mut slots = self.slots.lock();
        let slot = &mut slots[index];
        slot.users -= 1;
        if slot.users == 0 {
            slot.holder = None;
        }
    }
}

/// One user's hold on a PHB for one back end; dropping it releases the hold.
pub struct Claim<'a, D, const N: usize> {
    slots: &'a PhbSlots<D, N>,
    index: usize,
    phb: PhbId,
    by: Backend,
}

impl<'a, D, const N: usize> Claim<'a, D, N> {
    /// The PHB claimed.
    pub fn phb(&self) -> PhbId {
        self.phb
    }

    /// The back end it is claimed for.
    pub fn backend(&self) -> Backend {
        self.by
    }

    /// The PHB's direct back end: the one instance for this PHB, made by `init` on first use
    /// and kept for the life of `slots`. `None` unless the claim is for [`Backend::Direct`].
    pub fn direct(&self, init: impl FnOnce() -> D) -> Option<&'a D> {
        (self.by == Backend::Direct).then(|| self.slots.direct[self.index].call_once(init))
    }
}

impl<D, const N: usize> Drop for Claim<'_, D, N> {
    fn drop(&mut self) {
        self.slots.release(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn one_back_end_per_phb() {
        let slots: PhbSlots<u32, 4> = PhbSlots::new();
        let (a, b) = (PhbId(0), PhbId(1));
        let o1 = slots.claim(a, Backend::Opal).unwrap();
        let o2 = slots.claim(a, Backend::Opal).unwrap();
        assert_eq!(
            slots.claim(a, Backend::Direct).err(),
            Some(PhbError::Claimed {
                phb: a,
                by: Backend::Opal
            })
        );
        // Another PHB is independent.
        let d = slots.claim(b, Backend::Direct).unwrap();
        assert_eq!(
            slots.claim(b, Backend::Opal).err(),
            Some(PhbError::Claimed {
                phb: b,
                by: Backend::Direct
            })
        );
        drop(o1);
        assert!(
            slots.claim(a, Backend::Direct).is_err(),
            "o2 still holds it"
        );
        drop(o2);
        assert_eq!(slots.holder(a), None);
        let d2 = slots.claim(a, Backend::Direct).unwrap();
        assert_eq!(slots.holder(a), Some(Backend::Direct));
        assert_eq!((d.phb(), d2.backend()), (b, Backend::Direct));
    }

    #[test]
    fn direct_instance_is_made_once_per_phb() {
        let slots: PhbSlots<Cell<u32>, 2> = PhbSlots::new();
        let made = Cell::new(0);
        let make = |v| {
            made.set(made.get() + 1);
            Cell::new(v)
        };
        let c1 = slots.claim(PhbId(7), Backend::Direct).unwrap();
        let c2 = slots.claim(PhbId(7), Backend::Direct).unwrap();
        let i1 = c1.direct(|| make(1)).unwrap();
        let i2 = c2.direct(|| make(2)).unwrap();
        assert!(core::ptr::eq(i1, i2), "the same instance for every user");
        assert_eq!(made.get(), 1);
        drop((c1, c2));
        // Released and claimed again: still the same instance.
        let c3 = slots.claim(PhbId(7), Backend::Direct).unwrap();
        assert!(core::ptr::eq(c3.direct(|| make(3)).unwrap(), i1));
        assert_eq!(i1.get(), 1);
        // An OPAL claim gets no direct instance.
        let other = slots.claim(PhbId(8), Backend::Opal).unwrap();
        assert!(other.direct(|| make(4)).is_none());
        assert_eq!(made.get(), 1);
    }

    #[test]
    fn slots_run_out() {
        let slots: PhbSlots<(), 1> = PhbSlots::new();
        let _a = slots.claim(PhbId(1), Backend::Opal).unwrap();
        assert_eq!(
            slots.claim(PhbId(2), Backend::Opal).err(),
            Some(PhbError::TooManyPhbs)
        );
    }
}
