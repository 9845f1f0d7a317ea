//! Geometry of a multi-level TCE table, as powernv/IODA2 lays it out
//! (Linux `pnv_pci_ioda2_table_alloc_pages`).

/// Most levels a TVE can describe (its level field is 3 bits: levels - 1, 0..=4).
pub const MAX_LEVELS: u32 = 5;
/// Smallest level: 4 KiB (OPAL's minimum table size, and the TVE's smallest level code).
pub const MIN_LEVEL_SHIFT: u32 = 12;
/// Largest level the TVE's 5-bit field `log2(level bytes) - 11` can encode.
pub const MAX_LEVEL_SHIFT: u32 = 11 + 31;
/// Bit of the PCI address that selects the PE's second TVE on PHB4 (IODA3).
const TVE_SELECT_SHIFT: u32 = 59;
/// The PHB does not decode bus address bits 59:55: a table may index at most 54 bits of bus
/// address (levels x index bits per level + page shift). Linux
/// `pnv_pci_ioda2_table_alloc_pages`: `if ((level_shift - 3) * levels + page_shift >= 55)
/// return -EINVAL;`.
pub const UNDECODED_BUS_SHIFT: u32 = 55;

/// Which rule a requested geometry breaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GeometryError {
    /// Levels must be 1 to 5.
    LevelsOutOfRange { levels: u32 },
    /// The IOMMU page shift must be 12, 16, 21 or 30 (4K, 64K, 2M, 1G).
    UnsupportedPageShift { page_shift: u32 },
    /// The window size must be a nonzero power of two.
    WindowNotPowerOfTwo { window_size: u64 },
    /// The window must hold at least one IOMMU page.
    WindowSmallerThanPage { window_size: u64, page_size: u64 },
    /// The bus offset must be aligned to the IOMMU page size.
    BusOffsetMisaligned { bus_offset: u64 },
    /// The window must not wrap the 64-bit bus address space, nor straddle address bit 59
    /// (which selects between a PE's two TVEs on PHB4).
    WindowCrossesTveSelect { bus_offset: u64, window_size: u64 },
    /// One level would be larger than the TVE can encode (`log2(bytes) - 11` in 5 bits): the
    /// window needs more index bits than `levels` levels of the largest size can address.
    LevelTooLarge { level_shift: u32 },
    /// The table would index bus address bits the PHB does not decode: `levels x index bits
    /// per level + page shift` reaches 55 (Linux's rule; levels are at least 4 KiB, so five
    /// levels never fit, and four only with 4K or 64K pages).
    ReachTooLarge { reach_shift: u32 },
}

/// A validated table geometry. Construct with [`TceGeometry::new`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TceGeometry {
    bus_offset: u64,
    page_shift: u32,
    window_shift: u32,
    levels: u32,
    /// log2 of the bytes of one level.
    level_shift: u32,
}

impl TceGeometry {
    /// Validates a window of `window_size` bytes at bus address `bus_offset`, translated with
    /// `1 << page_shift` IOMMU pages through `levels` levels.
    ///
    /// Index bits per level = ceil((log2(window) - page_shift) / levels), each level at least
    /// 4 KiB; the index is split top level first, `log2(level entries)` bits per level.
    pub fn new(
        bus_offset: u64,
        page_shift: u32,
        window_size: u64,
        levels: u32,
    ) -> Result<TceGeometry, GeometryError> {
        if levels == 0 || levels > MAX_LEVELS {
            return Err(GeometryError::LevelsOutOfRange { levels });
        }
        if !matches!(page_shift, 12 | 16 | 21 | 30) {
            return Err(GeometryError::UnsupportedPageShift { page_shift });
        }
        if !window_size.is_power_of_two() {
            return Err(GeometryError::WindowNotPowerOfTwo { window_size });
        }
        let page_size = 1u64 << page_shift;
        if window_size < page_size {
            return Err(GeometryError::WindowSmallerThanPage {
                window_size,
                page_size,
            });
        }
        if bus_offset & (page_size - 1) != 0 {
            return Err(GeometryError::BusOffsetMisaligned { bus_offset });
        }
        let crosses = match bus_offset.checked_add(window_size - 1) {
            None => true,
            Some(last) => {
                (bus_offset >> TVE_SELECT_SHIFT) != (last >> TVE_SELECT_SHIFT)
                    || window_size > 1u64 << TVE_SELECT_SHIFT
            }
        };
        if crosses {
            return Err(GeometryError::WindowCrossesTveSelect {
                bus_offset,
                window_size,
            });
        }
        let window_shift = window_size.trailing_zeros();
        let entries_shift = window_shift - page_shift;
        let bits = entries_shift.div_ceil(levels);
        let level_shift = (bits + 3).max(MIN_LEVEL_SHIFT);
        if level_shift > MAX_LEVEL_SHIFT {
            return Err(GeometryError::LevelTooLarge { level_shift });
        }
        let reach_shift = (level_shift - 3) * levels + page_shift;
        if reach_shift >= UNDECODED_BUS_SHIFT {
            return Err(GeometryError::ReachTooLarge { reach_shift });
        }
        Ok(TceGeometry {
            bus_offset,
            page_shift,
            window_shift,
            levels,
            level_shift,
        })
    }

    /// Bus address of the window's first byte (IOBA of entry 0).
    pub const fn bus_offset(&self) -> u64 {
        self.bus_offset
    }

    /// log2 of the IOMMU page size.
    pub const fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// IOMMU page size in bytes.
    pub const fn page_size(&self) -> u64 {
        1 << self.page_shift
    }

    /// Window size in bytes.
    pub const fn window_size(&self) -> u64 {
        1 << self.window_shift
    }

    /// Number of TCEs in the window.
    pub const fn entries(&self) -> u64 {
        1 << (self.window_shift - self.page_shift)
    }

    /// Number of levels (1 = a flat table).
    pub const fn levels(&self) -> u32 {
        self.levels
    }

    /// Bytes of ONE level (every level has this size), as the TVE encodes it.
    pub const fn level_size(&self) -> u64 {
        1 << self.level_shift
    }

    /// log2 of [`Self::level_size`].
    pub const fn level_shift(&self) -> u32 {
        self.level_shift
    }

    /// Entries in one level.
    pub const fn entries_per_level(&self) -> u64 {
        1 << self.level_bits()
    }

    /// Index bits each level consumes.
    pub const fn level_bits(&self) -> u32 {
        self.level_shift - 3
    }

    /// Slot within the level at `depth` (0 = top) that `index` goes through.
    #[inline]
    pub const fn slot(&self, index: u64, depth: u32) -> u64 {
        let shift = self.span_shift(depth + 1);
        // A shift of 64 or more only happens for the top of a table whose levels address more
        // than 64 bits; every index then lies in slot 0.
        let hi = if shift >= 64 { 0 } else { index >> shift };
        hi & (self.entries_per_level() - 1)
    }

    /// log2 of the number of indices one level at `depth` covers (depth == levels: 1 entry).
    #[inline]
    pub(crate) const fn span_shift(&self, depth: u32) -> u32 {
        (self.levels - depth) * self.level_bits()
    }

    /// Levels a fully populated view holds at `depth` (0 = top).
    pub(crate) const fn levels_at_depth(&self, depth: u32) -> u64 {
        let shift = self.span_shift(depth);
        let entries_shift = self.window_shift - self.page_shift;
        if shift >= entries_shift {
            1
        } else {
            1 << (entries_shift - shift)
        }
    }

    /// Bytes of one view if every level were allocated: what the locked-memory budget is
    /// charged per view.
    pub const fn full_view_bytes(&self) -> u64 {
        let mut total = 0;
        let mut depth = 0;
        while depth < self.levels {
            total += self.levels_at_depth(depth) << self.level_shift;
            depth += 1;
        }
        total
    }

    /// The entry index of bus address `ioba`, or `None` if it lies outside the window.
    /// The index of an unaligned address is that of the page holding it.
    pub const fn index_of(&self, ioba: u64) -> Option<u64> {
        if ioba < self.bus_offset || ioba - self.bus_offset >= self.window_size() {
            None
        } else {
            Some((ioba - self.bus_offset) >> self.page_shift)
        }
    }

    /// TVE field: IO page size code (`page_shift - 11`).
    pub const fn tve_page_size_code(&self) -> u64 {
        (self.page_shift - 11) as u64
    }

    /// TVE field: level size code (`log2(level bytes) - 11`).
    pub const fn tve_level_size_code(&self) -> u64 {
        (self.level_shift - 11) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_level_small_window_is_one_4k_level() {
        let g = TceGeometry::new(0, 12, 1 << 20, 1).unwrap();
        assert_eq!(g.entries(), 256);
        assert_eq!(g.level_size(), 4096);
        assert_eq!(g.entries_per_level(), 512);
        assert_eq!(g.full_view_bytes(), 4096);
        assert_eq!(g.tve_level_size_code(), 1);
        assert_eq!(g.tve_page_size_code(), 1);
    }

    #[test]
    fn one_level_large_window_is_flat() {
        // 2 GiB / 4K = 2^19 entries = 4 MiB flat.
        let g = TceGeometry::new(0, 12, 1 << 31, 1).unwrap();
        assert_eq!(g.level_size(), 4 << 20);
        assert_eq!(g.full_view_bytes(), 4 << 20);
    }

    #[test]
    fn split_is_ceil_bits_per_level() {
        // 2^46 window, 64K pages: 30 index bits, 3 levels of 10 bits (8 KiB).
        let g = TceGeometry::new(0, 16, 1 << 46, 3).unwrap();
        assert_eq!(g.level_bits(), 10);
        assert_eq!(g.level_size(), 8192);
        let idx = (5 << 20) | (7 << 10) | 9;
        assert_eq!((g.slot(idx, 0), g.slot(idx, 1), g.slot(idx, 2)), (5, 7, 9));
        // 1 + 1024 + 1024*1024 levels of 8 KiB.
        assert_eq!(g.full_view_bytes(), (1 + 1024 + 1024 * 1024) * 8192);
        // 31 bits over 2 levels: 16 bits each.
        let g = TceGeometry::new(0, 12, 1 << 43, 2).unwrap();
        assert_eq!(g.level_bits(), 16);
        assert_eq!(g.levels_at_depth(0), 1);
        assert_eq!(g.levels_at_depth(1), 1 << 15);
    }

    #[test]
    fn four_levels() {
        // 64K pages, 2^52 window: 36 bits over 4 levels = 9 bits (4 KiB); 36 + 16 = 52 bits.
        let g = TceGeometry::new(0, 16, 1 << 52, 4).unwrap();
        assert_eq!(g.level_size(), 4096);
        assert_eq!(g.entries(), 1 << 36);
        assert_eq!(g.slot(g.entries() - 1, 0), 511);
        assert_eq!(g.levels_at_depth(3), 1 << 27);
        // Smallest window: one page, four 4 KiB levels each used at slot 0.
        let g = TceGeometry::new(0, 12, 4096, 4).unwrap();
        assert_eq!(g.entries(), 1);
        assert_eq!(g.full_view_bytes(), 4 * 4096);
    }

    #[test]
    fn the_55_bit_limit() {
        use GeometryError::ReachTooLarge;
        // Five levels of at least 4 KiB index 45 bits: with any page size that reaches 55.
        assert_eq!(
            TceGeometry::new(0, 12, 4096, 5),
            Err(ReachTooLarge { reach_shift: 57 })
        );
        assert_eq!(
            TceGeometry::new(0, 30, 1 << 59, 5),
            Err(ReachTooLarge { reach_shift: 75 })
        );
        // 2M pages, 2 levels: 2^53 window = 32 bits, 16 bits (512 KiB) per level: 53. At the
        // limit with 3 levels of 4K pages: 42 bits over 3 = 14 bits each, 54 bits...
        assert!(TceGeometry::new(0, 21, 1 << 53, 2).is_ok());
        let g = TceGeometry::new(1 << 59, 12, 1 << 54, 3).unwrap();
        assert_eq!((g.level_bits(), g.levels()), (14, 3));
        // ...and one window bit more: 43 bits over 3 = 15 bits each, 57 bits.
        assert_eq!(
            TceGeometry::new(1 << 59, 12, 1 << 55, 3),
            Err(ReachTooLarge { reach_shift: 57 })
        );
        // Exactly 55: 1G pages, one level of 2^28 bytes (25 index bits).
        assert_eq!(
            TceGeometry::new(0, 30, 1 << 55, 1),
            Err(ReachTooLarge { reach_shift: 55 })
        );
        assert_eq!(
            TceGeometry::new(0, 30, 1 << 54, 1).unwrap().level_shift(),
            27
        );
        // Rounding up counts: 64K pages, 2^47 window = 31 bits over 2 levels = 16 bits each:
        // 48 bits, though the window is 47; 4 levels of 4K (9 bits each, at least) + 21: 57.
        assert!(TceGeometry::new(0, 16, 1 << 47, 2).is_ok());
        assert_eq!(
            TceGeometry::new(0, 21, 1 << 22, 4),
            Err(ReachTooLarge { reach_shift: 57 })
        );
    }

    #[test]
    fn largest_windows() {
        // 2^59 bytes, 4K pages: 47 bits. One level cannot encode 2^50 bytes...
        assert_eq!(
            TceGeometry::new(0, 12, 1 << 59, 1),
            Err(GeometryError::LevelTooLarge { level_shift: 50 })
        );
        // ...and two levels of 2^27 bytes would index 60 bits, which the PHB does not decode.
        assert_eq!(
            TceGeometry::new(0, 12, 1 << 59, 2),
            Err(GeometryError::ReachTooLarge { reach_shift: 60 })
        );
        // The largest window: 2^54 bytes (4K pages, 2 levels of 2^24 bytes: 42 + 12 bits).
        let g = TceGeometry::new(0, 12, 1 << 54, 2).unwrap();
        assert_eq!(g.level_shift(), 24);
        assert_eq!(g.tve_level_size_code(), 13);
        // Largest flat table the TVE can encode: 2^42 bytes = 39 index bits.
        let g = TceGeometry::new(0, 12, 1 << 51, 1).unwrap();
        assert_eq!(g.tve_level_size_code(), 31);
        assert!(TceGeometry::new(0, 12, 1 << 52, 1).is_err());
    }

    #[test]
    fn rejected_geometries() {
        use GeometryError::*;
        let e = |b, p, w, l| TceGeometry::new(b, p, w, l).unwrap_err();
        assert_eq!(e(0, 12, 1 << 30, 0), LevelsOutOfRange { levels: 0 });
        assert_eq!(e(0, 12, 1 << 30, 6), LevelsOutOfRange { levels: 6 });
        assert_eq!(
            e(0, 13, 1 << 30, 1),
            UnsupportedPageShift { page_shift: 13 }
        );
        assert_eq!(
            e(0, 24, 1 << 30, 1),
            UnsupportedPageShift { page_shift: 24 }
        );
        assert_eq!(e(0, 12, 0, 1), WindowNotPowerOfTwo { window_size: 0 });
        assert_eq!(
            e(0, 12, 3 << 20, 1),
            WindowNotPowerOfTwo {
                window_size: 3 << 20
            }
        );
        assert!(matches!(e(0, 16, 1 << 12, 1), WindowSmallerThanPage { .. }));
        assert_eq!(
            e(0x800, 12, 1 << 20, 1),
            BusOffsetMisaligned { bus_offset: 0x800 }
        );
        assert!(matches!(
            e(1 << 58, 12, 1 << 59, 2),
            WindowCrossesTveSelect { .. }
        ));
        assert!(matches!(
            e(0, 12, 1 << 60, 2),
            WindowCrossesTveSelect { .. }
        ));
        assert!(matches!(
            e(u64::MAX - 0xfff, 12, 1 << 13, 2),
            WindowCrossesTveSelect { .. }
        ));
        // The second TVE's window at 1 << 59 is fine.
        assert!(TceGeometry::new(1 << 59, 16, 1 << 46, 3).is_ok());
    }

    #[test]
    fn index_of() {
        let g = TceGeometry::new(0x8000_0000, 16, 1 << 30, 2).unwrap();
        assert_eq!(g.index_of(0x7fff_ffff), None);
        assert_eq!(g.index_of(0x8000_0000), Some(0));
        assert_eq!(g.index_of(0x8001_ffff), Some(1));
        assert_eq!(
            g.index_of(0x8000_0000 + (1 << 30) - 1),
            Some(g.entries() - 1)
        );
        assert_eq!(g.index_of(0x8000_0000 + (1 << 30)), None);
    }
}
