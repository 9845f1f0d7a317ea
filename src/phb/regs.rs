//! PHB4 (IODA3) register offsets and encodings.
//!
//! Bit numbers here are LSB 0 (`1 << 63` is the most significant bit); skiboot's
//! `phb4-regs.h` writes the same bits in IBM MSB-0 order (`PPC_BIT(0)` = our bit 63).
//! Every value in this module is a host-order `u64`: the byte swap to the big-endian
//! register happens in the [`PhbMmio`](super::hw::PhbMmio) implementation.

use bitflags::bitflags;

/// Offset of a 64-bit PHB register from the PHB register base (`reg[0]` of the `pciex@` node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhbReg(pub u32);

impl PhbReg {
    /// RTT base address register: where the PHB looks up a requester ID's PE.
    pub const RTT_BAR: PhbReg = PhbReg(0x168);
    /// PELT-V base address register: the in-memory PE lookup table vectors (which PEs an
    /// error in a PE freezes).
    pub const PELTV_BAR: PhbReg = PhbReg(0x188);
    /// DMA read/write sync: completes a TCE kill against in-flight DMA.
    pub const DMA_READ_WRITE_SYNC: PhbReg = PhbReg(0x200);
    /// RID translation cache invalidate: drops cached RTT entries (requester ID -> PE).
    pub const RTC_INVALIDATE: PhbReg = PhbReg(0x208);
    /// TCE kill: invalidates cached TCEs.
    pub const TCE_KILL: PhbReg = PhbReg(0x210);
    /// IODA table select and index for [`PhbReg::IODA_DATA0`].
    pub const IODA_ADDR: PhbReg = PhbReg(0x220);
    /// IODA table data port.
    pub const IODA_DATA0: PhbReg = PhbReg(0x228);
    /// DMA quiesce register; its TCE kill status bit says a kill is still in progress.
    pub const Q_DMA_R: PhbReg = PhbReg(0x888);

    /// The register's name as skiboot spells it, for logs and test failures.
    pub fn name(self) -> &'static str {
        match self {
            Self::RTT_BAR => "RTT_BAR",
            Self::PELTV_BAR => "PELTV_BAR",
            Self::DMA_READ_WRITE_SYNC => "DMA_READ_WRITE_SYNC",
            Self::RTC_INVALIDATE => "RTC_INVALIDATE",
            Self::TCE_KILL => "TCE_KILL",
            Self::IODA_ADDR => "IODA_ADDR",
            Self::IODA_DATA0 => "IODA_DATA0",
            Self::Q_DMA_R => "Q_DMA_R",
            _ => "?",
        }
    }
}

bitflags! {
    /// `TCE_KILL` command bits. The low 9 bits hold the PE number (PE and ONE kills); a ONE
    /// kill also carries the page's bus address in the upper bits (see [`TceKillCmd::one`]).
    /// The PHB clears ALL/PE/ONE once it has queued the kill.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TceKill: u64 {
        /// Invalidate every cached TCE of the PHB.
        const ALL = 1 << 63;
        /// Invalidate every cached TCE of one PE.
        const PE = 1 << 62;
        /// Invalidate one page.
        const ONE = 1 << 61;
        /// Page size select for a ONE kill: the size code in bits 13:12 is valid.
        const PSEL = 1 << 60;
    }
}

bitflags! {
    /// `RTC_INVALIDATE` bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RtcInvalidate: u64 {
        /// Invalidate the whole RID translation cache.
        const ALL = 1 << 63;
    }
}

bitflags! {
    /// `DMA_READ_WRITE_SYNC` bits (PHB4 uses the read sync only).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DmaSync: u64 {
        /// Start a DMA read sync.
        const READ_START = 1 << 63;
        /// The read sync has completed.
        const READ_COMPLETE = 1 << 62;
    }
}

bitflags! {
    /// `Q_DMA_R` bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct QDmaR: u64 {
        /// A TCE kill is still being processed.
        const TCE_KILL_STATUS = 1 << 56;
    }
}

bitflags! {
    /// `RTT_BAR` bits; the rest of the register is the RTT base address ([`RTT_BASE_MASK`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RttBar: u64 {
        /// The RTT is in use.
        const ENABLE = 1 << 63;
        const _ = !0;
    }
}

/// The address bits of `RTT_BAR` (bits 55:17).
pub const RTT_BASE_MASK: u64 = 0x00ff_ffff_fffe_0000;

/// `PELTV_BAR` enable (skiboot `PHB_PELTV_BAR_ENABLE`, IBM bit 0).
pub const PELTV_BAR_ENABLE: u64 = 1 << 63;
/// The address bits of `PELTV_BAR` (skiboot `PHB_PELTV_BASE_ADDRESS`, IBM bits 8:50 = our
/// bits 55:13).
pub const PELTV_BASE_MASK: u64 = 0x00ff_ffff_ffff_e000;

/// Where the PELT-V bit saying "an error in `parent` freezes `child`" lives, for a PHB with
/// `num_pes` PEs (skiboot `phb4_set_peltv`: one row of `num_pes / 8` bytes per parent, the
/// child's bit MSB first in byte `child / 8`): (byte offset from the table base, bit mask).
pub fn peltv_bit(num_pes: u32, parent: u32, child: u32) -> (u64, u8) {
    let offset = u64::from(parent) * u64::from(num_pes / 8) + u64::from(child / 8);
    (offset, 0x80 >> (child % 8))
}

/// PESTA bit: MMIO to the PE is frozen (skiboot `IODA3_PESTA_MMIO_FROZEN`, IBM bit 0).
pub const PESTA_MMIO_FROZEN: u64 = 1 << 63;
/// PESTB bit: DMA from the PE is stopped (skiboot `IODA3_PESTB_DMA_STOPPED`, IBM bit 0).
pub const PESTB_DMA_STOPPED: u64 = 1 << 63;

/// The PEEV entry holding `pe`'s "error pending" bit, and the bit (skiboot: entry `pe / 64`,
/// `PPC_BIT(pe & 0x3f)`).
pub fn peev_bit(pe: u32) -> (u32, u64) {
    (pe / 64, 1 << (63 - (pe & 0x3f)))
}
/// Entries in the RTT: one big-endian u16 PE number per 16-bit requester ID (BDF).
pub const RTT_ENTRIES: usize = 1 << 16;

/// `TCE_KILL` PE number field (bits 8:0).
pub const TCE_KILL_PE_MASK: u64 = 0x1ff;

/// IODA3 on-chip tables selectable through `IODA_ADDR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IodaTable {
    /// PE state table A.
    PestA = 7,
    /// PE state table B.
    PestB = 8,
    /// TCE validation table: two TVEs per PE.
    Tvt = 9,
    /// PE error vector: one "error pending" bit per PE, 64 PEs per entry.
    Peev = 20,
}

/// An `IODA_ADDR` value: table select in bits 52:48, auto-increment in bit 63, entry index
/// in bits 9:0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IodaAddr(pub u64);

impl IodaAddr {
    /// Auto-increment: each `IODA_DATA0` access moves to the next entry.
    pub const AUTOINC: u64 = 1 << 63;
    const TSEL_SHIFT: u32 = 48;
    const TSEL_MASK: u64 = 0x1f << Self::TSEL_SHIFT;
    /// Index field width.
    pub const INDEX_MASK: u64 = 0x3ff;

    /// Selects entry `index` of `table`. `None` if the index does not fit the 10-bit field.
    pub fn new(table: IodaTable, index: u32, autoinc: bool) -> Option<IodaAddr> {
        let index = u64::from(index);
        if index > Self::INDEX_MASK {
            return None;
        }
        let mut v = (u64::from(table as u8) << Self::TSEL_SHIFT) | index;
        if autoinc {
            v |= Self::AUTOINC;
        }
        Some(IodaAddr(v))
    }

    /// The table select field.
    pub fn table_select(self) -> u8 {
        ((self.0 & Self::TSEL_MASK) >> Self::TSEL_SHIFT) as u8
    }

    /// The entry index field.
    pub fn index(self) -> u32 {
        (self.0 & Self::INDEX_MASK) as u32
    }

    /// Whether auto-increment is set.
    pub fn autoinc(self) -> bool {
        self.0 & Self::AUTOINC != 0
    }
}

/// TVE index of a PE's window in 2-TVEs-per-PE mode: the PHB picks the window with bus
/// address bit 59.
pub fn tve_index(pe: u32, window: u8) -> u32 {
    pe * 2 + u32::from(window & 1)
}

/// The window (0 or 1) a bus address selects.
pub fn window_of(bus_addr: u64) -> u8 {
    ((bus_addr >> 59) & 1) as u8
}

/// Why a TVE could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TveError {
    /// Levels must be 1..=5.
    Levels(u32),
    /// One level must be a power of two of at least 4 KiB whose code fits 5 bits.
    LevelSize(u64),
    /// The table must be aligned to its level size (the PHB ORs the index into the base).
    Alignment(u64),
    /// IO page size must be 4K, 64K, 2M or 1G.
    PageShift(u32),
}

/// A TCE validation table entry (host order).
///
/// Translated form: table address >> 12 in bits 63:16, levels - 1 in 15:13,
/// log2(bytes of one level) - 11 in 12:8, IO page size code (shift - 11) in 4:0.
/// Zero disables the window: the PHB rejects every DMA through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tve(pub u64);

impl Tve {
    /// A disabled TVE.
    pub const DISABLED: Tve = Tve(0);
    const ADDR_MASK: u64 = 0xffff_ffff_ffff_0000;
    const LEVELS_SHIFT: u32 = 13;
    const SIZE_SHIFT: u32 = 8;

    /// Encodes a translated window over a table of `levels` levels of `level_bytes` bytes
    /// each, whose top level is at `table_addr`, with IO pages of `1 << page_shift` bytes.
    /// Accepts exactly what OPAL's `MAP_PE_DMA_WINDOW` accepts, plus the alignment the PHB
    /// needs, so both back ends give one meaning to one table.
    pub fn translated(
        table_addr: u64,
        levels: u32,
        level_bytes: u64,
        page_shift: u32,
    ) -> Result<Tve, TveError> {
        if !(1..=5).contains(&levels) {
            return Err(TveError::Levels(levels));
        }
        if !level_bytes.is_power_of_two() || level_bytes < 0x1000 {
            return Err(TveError::LevelSize(level_bytes));
        }
        let size_code = u64::from(level_bytes.trailing_zeros() - 11);
        if size_code > 31 {
            return Err(TveError::LevelSize(level_bytes));
        }
        if table_addr & (level_bytes - 1) != 0 || table_addr >> 60 != 0 {
            return Err(TveError::Alignment(table_addr));
        }
        let page_code = page_size_code(page_shift).ok_or(TveError::PageShift(page_shift))?;
        Ok(Tve(((table_addr >> 12) << 16)
            | (u64::from(levels - 1) << Self::LEVELS_SHIFT)
            | (size_code << Self::SIZE_SHIFT)
            | u64::from(page_code)))
    }

    /// Whether the entry translates (a non-zero table size field).
    pub fn is_enabled(self) -> bool {
        self.0 & (0x1f << Self::SIZE_SHIFT) != 0
    }

    /// Top-level table address.
    pub fn table_addr(self) -> u64 {
        (self.0 & Self::ADDR_MASK) >> 4
    }

    /// Number of levels.
    pub fn levels(self) -> u32 {
        ((self.0 >> Self::LEVELS_SHIFT) & 0x7) as u32 + 1
    }

    /// Bytes of one level.
    pub fn level_bytes(self) -> u64 {
        1u64 << (((self.0 >> Self::SIZE_SHIFT) & 0x1f) + 11)
    }

    /// IO page shift, `None` for an untranslated (bypass) entry.
    pub fn page_shift(self) -> Option<u32> {
        match (self.0 & 0x1f) as u32 {
            0 => None,
            code => Some(code + 11),
        }
    }
}

/// TVE/TCE_KILL page size code (shift - 11) for the IO page sizes PHB4 supports.
pub fn page_size_code(page_shift: u32) -> Option<u32> {
    match page_shift {
        12 | 16 | 21 | 30 => Some(page_shift - 11),
        _ => None,
    }
}

/// A `TCE_KILL` register value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TceKillCmd(pub u64);

impl TceKillCmd {
    /// Invalidate the whole PHB's TCE cache.
    pub fn all() -> TceKillCmd {
        TceKillCmd(TceKill::ALL.bits())
    }

    /// Invalidate every cached TCE of `pe`.
    pub fn pe(pe: u32) -> TceKillCmd {
        TceKillCmd(TceKill::PE.bits() | (u64::from(pe) & TCE_KILL_PE_MASK))
    }

    /// Invalidate one IO page of `pe` at `bus_addr`. Not used by the driver (PHB4 erratum
    /// HW560152 can drop page kills), kept so the encoding is named and tested.
    /// `None` if the page size is unsupported or the address is not page aligned.
    pub fn one(pe: u32, bus_addr: u64, page_shift: u32) -> Option<TceKillCmd> {
        page_size_code(page_shift)?;
        let align = (1u64 << page_shift) - 1;
        if bus_addr & (align | 0xf000_0000_0000_0000) != 0 {
            return None;
        }
        let size = match page_shift {
            12 => 0,
            16 => TceKill::PSEL.bits() | 0x1000,
            21 => TceKill::PSEL.bits() | 0x2000,
            _ => TceKill::PSEL.bits() | 0x3000,
        };
        Some(TceKillCmd(
            TceKill::ONE.bits() | size | bus_addr | (u64::from(pe) & TCE_KILL_PE_MASK),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tve_reference_example() {
        // REFERENCE: one level of 4 KiB at 0x20024000, 4K pages.
        let tve = Tve::translated(0x2002_4000, 1, 0x1000, 12).unwrap();
        assert_eq!(tve.0, 0x0000_0002_0024_0101);
        assert_eq!(tve.table_addr(), 0x2002_4000);
        assert_eq!(tve.levels(), 1);
        assert_eq!(tve.level_bytes(), 0x1000);
        assert_eq!(tve.page_shift(), Some(12));
        assert!(tve.is_enabled());
        assert!(!Tve::DISABLED.is_enabled());
    }

    #[test]
    fn tve_fields_round_trip() {
        for (addr, levels, bytes, shift) in [
            (0x4000_0000u64, 3u32, 0x1_0000u64, 16u32),
            (0x1_2340_0000, 5, 0x10_0000, 21),
            (1 << 42, 2, 1 << 42, 30),
        ] {
            let tve = Tve::translated(addr, levels, bytes, shift).unwrap();
            assert_eq!(
                (
                    tve.table_addr(),
                    tve.levels(),
                    tve.level_bytes(),
                    tve.page_shift()
                ),
                (addr, levels, bytes, Some(shift))
            );
        }
        // levels - 1 lands in bits 15:13, size code in 12:8, page code in 4:0.
        let tve = Tve::translated(0, 3, 0x1_0000, 16).unwrap();
        assert_eq!(tve.0, (2 << 13) | (5 << 8) | 5);
    }

    #[test]
    fn tve_rejects_what_opal_rejects() {
        assert_eq!(Tve::translated(0, 0, 0x1000, 12), Err(TveError::Levels(0)));
        assert_eq!(Tve::translated(0, 6, 0x1000, 12), Err(TveError::Levels(6)));
        assert_eq!(
            Tve::translated(0, 1, 0x800, 12),
            Err(TveError::LevelSize(0x800))
        );
        assert_eq!(
            Tve::translated(0, 1, 0x3000, 12),
            Err(TveError::LevelSize(0x3000))
        );
        assert_eq!(
            Tve::translated(0x1000, 1, 0x2000, 12),
            Err(TveError::Alignment(0x1000))
        );
        assert_eq!(
            Tve::translated(0, 1, 0x1000, 13),
            Err(TveError::PageShift(13))
        );
    }

    #[test]
    fn tve_index_uses_bit_59() {
        assert_eq!(tve_index(0, 0), 0);
        assert_eq!(tve_index(5, 1), 11);
        assert_eq!(tve_index(511, 1), 1023);
        assert_eq!(window_of(0x8000_0000), 0);
        assert_eq!(window_of(1 << 59), 1);
        assert_eq!(window_of((1 << 59) | 0x1000), 1);
    }

    #[test]
    fn ioda_addr_encoding() {
        let a = IodaAddr::new(IodaTable::Tvt, 11, false).unwrap();
        assert_eq!(a.0, 0x0009_0000_0000_000b);
        assert_eq!((a.table_select(), a.index(), a.autoinc()), (9, 11, false));
        let b = IodaAddr::new(IodaTable::Tvt, 0, true).unwrap();
        assert_eq!(b.0, 0x8009_0000_0000_0000);
        assert!(b.autoinc());
        assert_eq!(IodaAddr::new(IodaTable::Tvt, 1024, false), None);
    }

    #[test]
    fn tce_kill_encoding() {
        assert_eq!(TceKillCmd::all().0, 0x8000_0000_0000_0000);
        assert_eq!(TceKillCmd::pe(5).0, 0x4000_0000_0000_0005);
        assert_eq!(TceKillCmd::pe(511).0, 0x4000_0000_0000_01ff);
        assert_eq!(
            TceKillCmd::one(3, 0x1000, 12).unwrap().0,
            0x2000_0000_0000_1003
        );
        assert_eq!(
            TceKillCmd::one(3, 0x3_0000, 16).unwrap().0,
            0x3000_0000_0003_1003
        );
        assert_eq!(TceKillCmd::one(3, 0x1800, 12), None);
        assert_eq!(TceKillCmd::one(3, 0x1000, 13), None);
    }

    #[test]
    fn eeh_table_bits() {
        // skiboot phb4_set_peltv with 512 PEs: parent 1's row starts at byte 64.
        assert_eq!(peltv_bit(512, 1, 1), (64, 0x40));
        assert_eq!(peltv_bit(512, 0, 0), (0, 0x80));
        assert_eq!(peltv_bit(256, 255, 255), (255 * 32 + 31, 0x01));
        assert_eq!(peev_bit(0), (0, 1 << 63));
        assert_eq!(peev_bit(65), (1, 1 << 62));
        assert_eq!(peev_bit(511), (7, 1));
        assert_eq!(
            IodaAddr::new(IodaTable::Peev, 3, false).unwrap().0,
            0x0014_0000_0000_0003
        );
        assert_eq!(
            IodaAddr::new(IodaTable::PestB, 1, false).unwrap().0,
            0x0008_0000_0000_0001
        );
    }

    #[test]
    fn rtt_bar_base() {
        let bar = 0x8000_0000_3012_0000u64;
        assert!(RttBar::from_bits_retain(bar).contains(RttBar::ENABLE));
        assert_eq!(bar & RTT_BASE_MASK, 0x3012_0000);
    }
}
