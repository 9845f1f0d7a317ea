//! TCE entries: the host-order value and its big-endian image as the PHB reads it.

use bitflags::bitflags;

/// A TCE exactly as stored in a table: big-endian, whatever the CPU's endianness.
///
/// The PHB reads tables big-endian; the CPU here is little-endian. Every conversion between
/// the stored image and a host-order value goes through [`Be64::from_cpu`] / [`Be64::to_cpu`].
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Be64(u64);

impl Be64 {
    /// The stored image of the host-order value `v`.
    #[inline]
    pub const fn from_cpu(v: u64) -> Self {
        Be64(v.to_be())
    }

    /// The host-order value of this stored image.
    #[inline]
    pub const fn to_cpu(self) -> u64 {
        u64::from_be(self.0)
    }

    /// Wraps 8 bytes as loaded from memory (already in table byte order).
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        Be64(raw)
    }

    /// The 8 bytes to store in memory (table byte order).
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }
}

bitflags! {
    /// Access a leaf TCE grants to the device. Neither bit means "not mapped".
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct TcePerm: u64 {
        /// The device may read host memory (DMA to the device).
        const READ = 0x1;
        /// The device may write host memory (DMA from the device).
        const WRITE = 0x2;
    }
}

/// Low bits of an indirect entry: the PHB requires both permission bits on a level pointer.
pub const TCE_INDIRECT: u64 = 0x3;

/// Bits of a TCE below the smallest IOMMU page: permissions (and reserved bits).
const TCE_FLAGS_MASK: u64 = 0xfff;

/// A leaf TCE in host order: page-aligned host physical address | permissions.
///
/// A TCE without permission bits is empty ("none") and is always represented as 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Tce(u64);

impl Tce {
    /// The empty TCE: the device gets no access.
    pub const NONE: Tce = Tce(0);

    /// A TCE mapping `hpa` with `perm`. Bits of `hpa` below 4 KiB are dropped (the table
    /// operations check alignment to their own IOMMU page size). An empty `perm` gives
    /// [`Tce::NONE`].
    #[inline]
    pub const fn new(hpa: u64, perm: TcePerm) -> Tce {
        if perm.is_empty() {
            Tce::NONE
        } else {
            Tce((hpa & !TCE_FLAGS_MASK) | perm.bits())
        }
    }

    /// Interprets a host-order value read from a table or passed by a guest.
    /// Unknown low bits are dropped; no permission bits gives [`Tce::NONE`].
    #[inline]
    pub const fn from_bits(v: u64) -> Tce {
        Tce::new(v, TcePerm::from_bits_truncate(v))
    }

    /// The host-order value (`hpa | perm`).
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The host physical address this TCE maps.
    #[inline]
    pub const fn hpa(self) -> u64 {
        self.0 & !TCE_FLAGS_MASK
    }

    /// The access granted.
    #[inline]
    pub const fn perm(self) -> TcePerm {
        TcePerm::from_bits_truncate(self.0)
    }

    /// True if the device gets no access through this entry.
    #[inline]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The stored (big-endian) image.
    #[inline]
    pub const fn to_be(self) -> Be64 {
        Be64::from_cpu(self.0)
    }

    /// The TCE a stored image holds.
    #[inline]
    pub const fn from_be(be: Be64) -> Tce {
        Tce::from_bits(be.to_cpu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn be64_image_is_big_endian() {
        let be = Be64::from_cpu(0x0102_0304_0506_0708);
        assert_eq!(be.raw().to_ne_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(be.to_cpu(), 0x0102_0304_0506_0708);
        assert_eq!(Be64::from_raw(be.raw()), be);
    }

    #[test]
    fn tce_fields() {
        let t = Tce::new(0x2002_3000, TcePerm::READ | TcePerm::WRITE);
        assert_eq!(t.bits(), 0x2002_3003);
        assert_eq!(t.hpa(), 0x2002_3000);
        assert_eq!(t.perm(), TcePerm::READ | TcePerm::WRITE);
        assert!(!t.is_none());
        assert_eq!(Tce::from_be(t.to_be()), t);
        assert_eq!(t.to_be().raw().to_ne_bytes()[7], 0x03);
    }

    #[test]
    fn tce_without_permission_is_none() {
        assert!(Tce::new(0x1000, TcePerm::empty()).is_none());
        assert_eq!(Tce::from_bits(0x5000), Tce::NONE);
        assert_eq!(Tce::new(0x1fff, TcePerm::WRITE).bits(), 0x1002);
    }
}
