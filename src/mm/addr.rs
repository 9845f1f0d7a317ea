//! The kinds of address a hypervisor handles, as distinct types.
//!
//! Mixing them up is the classic real-mode bug: a hypervisor-virtual address dereferenced with
//! the MMU off reads whatever RAM sits at that number (on QEMU: zeroes, silently; on hardware: a
//! machine check). Each kind is its own type, and only [`HostPhys`] (through the linear map)
//! becomes something real-mode code can dereference:
//!
//! | type | what it is | reachable with the MMU off |
//! |---|---|---|
//! | [`GuestPhys`] | a guest's physical address (gpa) | no: translate it first |
//! | [`Ua`] | where the hypervisor maps a guest's RAM (Linux: the VMM's userspace address) | no |
//! | [`HostPhys`] | host physical address (hpa) | yes, as [`HostPhys::linear`] |
//! | [`Pfn`] | host page frame number (`hpa >> 12`) | — |
//! | [`Ioba`] | an I/O bus address a device puts on the bus | — |
//!
//! The **linear map** maps all RAM at [`LINEAR_BASE`]` + pa`. Hypervisor real mode ignores the
//! top four bits of an effective address, so a linear-map pointer is valid with the MMU on and
//! off: it is the only kind of pointer real-mode code may follow. On the host (tests, fuzzing)
//! the "linear map" is the identity: simulated physical addresses are heap pointers.

use core::fmt;

/// Where the linear map starts (Linux radix: `PAGE_OFFSET`, quadrant 3). Identity on the host.
#[cfg(target_os = "none")]
pub const LINEAR_BASE: u64 = 0xc000_0000_0000_0000;
/// Where the linear map starts (Linux radix: `PAGE_OFFSET`, quadrant 3). Identity on the host.
#[cfg(not(target_os = "none"))]
pub const LINEAR_BASE: u64 = 0;

/// The bits hypervisor real mode ignores in an effective address.
pub const REAL_MODE_IGNORED: u64 = 0xf000_0000_0000_0000;

/// Host page size the descriptors and frame numbers use.
pub const PAGE_SHIFT: u32 = 12;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident, $short:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            #[inline(always)]
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + off`, if it does not wrap.
            #[inline(always)]
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self + off` (wrapping is a caller bug: debug builds check it).
            #[inline(always)]
            #[allow(clippy::should_implement_trait)]
            pub const fn add(self, off: u64) -> Self {
                Self(self.0 + off)
            }

            /// Bytes from `base` up to `self`, if `self >= base`.
            #[inline(always)]
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($short, " {:#x}"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address!(
    /// A guest physical address: meaningful only through the guest's memslots or its
    /// partition-scoped page table.
    GuestPhys,
    "gpa"
);
address!(
    /// A hypervisor-virtual address of guest RAM (what Linux's KVM calls `ua`, the VMM's
    /// userspace address). Backed by scattered pages: it has no meaning with the MMU off, and
    /// only code holding a [`super::mode::VirtMode`] token may read through it.
    Ua,
    "ua"
);
address!(
    /// A host physical address.
    ///
    /// Its own type: a [`Ua`] (or any other kind) is not one, without an explicit conversion.
    /// ```compile_fail,E0308
    /// # use p9iommu::mm::{HostPhys, Ua};
    /// fn frame_of(pa: HostPhys) -> u64 {
    ///     pa.pfn().get()
    /// }
    /// frame_of(Ua(0x1000)); // expected `HostPhys`, found `Ua`
    /// ```
    /// ```
    /// # use p9iommu::mm::HostPhys;
    /// # fn frame_of(pa: HostPhys) -> u64 {
    /// #     pa.pfn().get()
    /// # }
    /// assert_eq!(frame_of(HostPhys(0x1000)), 1);
    /// ```
    HostPhys,
    "hpa"
);
address!(
    /// A host page frame number.
    Pfn,
    "pfn"
);
address!(
    /// An I/O bus address (IOBA): what a device puts on the bus, translated by a TCE table.
    Ioba,
    "ioba"
);

impl HostPhys {
    /// The linear-map address of this physical address: valid with the MMU on and off.
    ///
    /// The only address kind that becomes a pointer: [`GuestPhys`] and [`Ua`] have no such
    /// method (nor any other that gives a pointer).
    /// ```compile_fail,E0599
    /// # use p9iommu::mm::GuestPhys;
    /// let p = GuestPhys(0x1000).linear() as *const u64; // no method `linear` on `GuestPhys`
    /// # let _ = p;
    /// ```
    /// ```compile_fail,E0599
    /// # use p9iommu::mm::Ua;
    /// let p = Ua(0x1000).linear() as *const u64; // no method `linear` on `Ua`
    /// # let _ = p;
    /// ```
    /// ```
    /// # use p9iommu::mm::HostPhys;
    /// let p = HostPhys(0x1000).linear() as *const u64;
    /// # let _ = p;
    /// ```
    #[inline(always)]
    pub const fn linear(self) -> usize {
        (self.0 | LINEAR_BASE) as usize
    }

    /// The physical address behind a linear-map address (a kernel static, stack or heap
    /// pointer). On the target every address the kernel's own memory has is a linear-map
    /// address; the top four bits are dropped.
    #[inline(always)]
    pub fn of_linear<T: ?Sized>(p: *const T) -> Self {
        HostPhys((p as *const u8 as u64).wrapping_sub(LINEAR_BASE))
    }

    /// The frame holding this address.
    #[inline(always)]
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl Pfn {
    /// The first byte of the frame.
    #[inline(always)]
    pub const fn hpa(self) -> HostPhys {
        HostPhys(self.0 << PAGE_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_offsets() {
        let a = HostPhys(0x1234_5678);
        assert_eq!(a.pfn(), Pfn(0x12345));
        assert_eq!(a.pfn().hpa(), HostPhys(0x1234_5000));
        assert_eq!(a.add(8).offset_from(a), Some(8));
        assert_eq!(a.offset_from(a.add(8)), None);
        assert_eq!(Ua(u64::MAX).checked_add(1), None);
        assert_eq!(format!("{:?}", GuestPhys(0x1000)), "gpa 0x1000");
    }

    #[test]
    fn linear_round_trips() {
        let x = 7u64;
        let p = HostPhys::of_linear(&x);
        assert_eq!(p.linear(), &x as *const u64 as usize);
    }
}
