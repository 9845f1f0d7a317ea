//! The PHB DMA driver interface ([`PhbDma`]) and the argument rules both back ends share.
//!
//! Two back ends implement it: [`OpalBackend`](super::opal::OpalBackend) (skiboot owns the
//! PHB; the default, and what a kernel on POWER9 hardware must use) and
//! [`DirectBackend`](super::direct::DirectBackend) (IODA register programming, a bring-up and
//! test back end). They accept and reject the same arguments (checked here, before either
//! back end runs) and leave the PHB in the same state: they differ in speed, never in meaning.
//! A PHB is driven by one back end at a time ([`super::claim`]).

use super::claim::Backend;
use super::hw::{Bdfn, FreezeStatus, PeNum, PeltvAction, PhbId, WindowId};
use super::hw::{DmaWindowTable, OpalError};
use super::regs::PhbReg;
use super::regs::{self, page_size_code, Tve, TveError};

/// Bus address bits the PHB decodes to index a table: bits 59:55 are not decoded, so the
/// table's reach (`levels * index bits per level + page shift`) must stay below 55 bits.
/// Linux `pnv_pci_ioda2_table_alloc_pages`: `if ((level_shift - 3) * levels + page_shift
/// >= 55) return -EINVAL;`.
pub const MAX_REACH_SHIFT: u32 = 54;

/// Why a PHB operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhbError {
    /// The PE number is not below the PHB's PE count.
    BadPe {
        /// The PE asked for.
        pe: PeNum,
        /// `ibm,opal-num-pes`.
        num_pes: u32,
    },
    /// A PE has two DMA windows, 0 and 1 (bus address bit 59).
    BadWindow(u8),
    /// The table cannot be described by a TVE.
    Table(TveError),
    /// The table's bus range does not match what the PHB decodes: it must start at its
    /// window's bus offset (0 for window 0, `1 << 59` for window 1), and be no larger than
    /// the table's reach.
    TableRange {
        /// The table's first bus address.
        bus_offset: u64,
        /// The table's window size.
        window_size: u64,
    },
    /// The table indexes bus address bits the PHB does not decode: `levels * index bits +
    /// page shift` reaches 55 (Linux's limit).
    TableReach {
        /// `levels * index bits per level + page shift`.
        reach_shift: u32,
    },
    /// A page kill with an unsupported page size or an unaligned or wrapping range.
    BadKill,
    /// OPAL returned an error.
    Opal(OpalError),
    /// A register did not reach the expected value within the poll bound.
    Timeout(PhbReg),
    /// A register read all ones: the PHB is fenced.
    Fenced(PhbReg),
    /// `RTT_BAR` is not enabled, so there is no RTT to update.
    RttDisabled,
    /// `PELTV_BAR` is not enabled, so there is no PELT-V to update.
    PeltvDisabled,
    /// The PE was still frozen after its freeze was cleared.
    StillFrozen {
        /// The PE.
        pe: PeNum,
        /// Its state after the clear.
        status: FreezeStatus,
    },
    /// The PHB is already driven by the other back end: one PHB is never programmed both
    /// through OPAL and directly.
    Claimed {
        /// The PHB.
        phb: PhbId,
        /// The back end that holds it.
        by: Backend,
    },
    /// Every slot of the claim table is taken by another PHB.
    TooManyPhbs,
}

impl From<OpalError> for PhbError {
    fn from(e: OpalError) -> Self {
        PhbError::Opal(e)
    }
}

/// A TCE cache invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// `npages` IO pages of `1 << page_shift` bytes from `bus_addr`, in `pe`'s windows.
    /// PHB4 turns this into a PE kill (erratum HW560152): more is invalidated, never less.
    Pages {
        /// PE whose windows hold the pages.
        pe: PeNum,
        /// Bus address (IOBA) of the first page.
        bus_addr: u64,
        /// IO page shift of the window.
        page_shift: u32,
        /// Number of pages.
        npages: u32,
    },
    /// Everything cached for one PE.
    Pe(PeNum),
    /// Everything cached by the PHB.
    All,
}

impl Kill {
    /// Checks the arguments the way both back ends must.
    pub fn validate(&self, num_pes: u32) -> Result<(), PhbError> {
        match *self {
            Kill::Pages {
                pe,
                bus_addr,
                page_shift,
                npages,
            } => {
                check_pe(pe, num_pes)?;
                page_size_code(page_shift).ok_or(PhbError::BadKill)?;
                if bus_addr & ((1u64 << page_shift) - 1) != 0 {
                    return Err(PhbError::BadKill);
                }
                let len = u64::from(npages) << page_shift;
                bus_addr.checked_add(len).ok_or(PhbError::BadKill)?;
                Ok(())
            }
            Kill::Pe(pe) => check_pe(pe, num_pes),
            Kill::All => Ok(()),
        }
    }
}

/// Checks a PE number against the PHB's PE count.
pub fn check_pe(pe: PeNum, num_pes: u32) -> Result<(), PhbError> {
    if pe.0 >= num_pes {
        return Err(PhbError::BadPe { pe, num_pes });
    }
    Ok(())
}

/// A window number (0 or 1) as a [`WindowId`].
pub fn check_window(window: u8) -> Result<WindowId, PhbError> {
    WindowId::new(window).ok_or(PhbError::BadWindow(window))
}

/// A validated `map_window` request: what to put in which TVE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowParams {
    /// TVE index, `pe * 2 + window` (OPAL's `window_id`).
    pub tve_index: u32,
    /// Number of levels.
    pub levels: u32,
    /// Top-level physical address.
    pub table_addr: u64,
    /// Bytes of one level.
    pub level_size: u64,
    /// IO page shift.
    pub page_shift: u32,
    /// The TVE those describe.
    pub tve: Tve,
}

impl WindowParams {
    /// Validates mapping `table` as `window` of `pe`.
    ///
    /// The PHB indexes the table with bus address bits above the page shift, `log2(level_size
    /// / 8)` bits per level, and does not decode bits 59:55; the table indexes from its bus
    /// offset. So the table's reach must stay below 55 bits ([`MAX_REACH_SHIFT`]), the table
    /// must start at its window's bus offset (0 or `1 << 59`, nothing in between) and the
    /// window must fit in the reach; anything else is refused rather than mistranslated.
    pub fn new(
        pe: PeNum,
        window: WindowId,
        num_pes: u32,
        table: &dyn DmaWindowTable,
    ) -> Result<WindowParams, PhbError> {
        check_pe(pe, num_pes)?;
        let (levels, level_size, page_shift) =
            (table.levels(), table.level_size(), table.page_shift());
        let table_addr = table.top_level_phys();
        let tve =
            Tve::translated(table_addr, levels, level_size, page_shift).map_err(PhbError::Table)?;
        // A valid TVE has 1..=5 levels of at most 2^42 bytes: at most 5 * 39 + 30 bits.
        let reach_shift = page_shift + levels * (level_size.trailing_zeros() - 3);
        if reach_shift > MAX_REACH_SHIFT {
            return Err(PhbError::TableReach { reach_shift });
        }
        let (bus_offset, window_size) = (table.bus_offset(), table.window_size());
        if bus_offset != window.bus_offset()
            || window_size == 0
            || window_size > 1u64 << reach_shift
        {
            return Err(PhbError::TableRange {
                bus_offset,
                window_size,
            });
        }
        Ok(WindowParams {
            tve_index: regs::tve_index(pe.0, window.number()),
            levels,
            table_addr,
            level_size,
            page_shift,
            tve,
        })
    }
}

/// One PHB's DMA translation and PE error (EEH) controls.
///
/// Every method takes `&self`: one instance serves all CPUs. [`PhbDma::kill`] is the
/// real-mode path (batch invalidation from the TCE hypercalls): it never allocates, never
/// blocks on a lock held across anything but another kill, and its polls are bounded.
pub trait PhbDma {
    /// `ibm,opal-num-pes`.
    fn num_pes(&self) -> u32;

    /// Maps requester `bdfn` (exactly that function) to `pe`, and drops the PHB's cached
    /// requester-ID-to-PE translation so the next DMA uses it. [`configure_pe`] also sets the
    /// PE's error domain up.
    fn set_pe(&self, bdfn: Bdfn, pe: PeNum) -> Result<(), PhbError>;

    /// Adds `child` to (or removes it from) the PELT-V of `parent`: the PEs an error in
    /// `parent` freezes (OPAL_PCI_SET_PELTV).
    fn set_peltv(&self, parent: PeNum, child: PeNum, action: PeltvAction) -> Result<(), PhbError>;

    /// The PE's freeze state (OPAL_PCI_EEH_FREEZE_STATUS). A fenced PHB reads as every PE
    /// frozen with [`super::hw::PciErrorType::Phb`], as skiboot reports it.
    fn freeze_status(&self, pe: PeNum) -> Result<FreezeStatus, PhbError>;

    /// Clears the PE's MMIO and DMA freeze (OPAL_PCI_EEH_FREEZE_CLEAR, clear all).
    fn clear_freeze(&self, pe: PeNum) -> Result<(), PhbError>;

    /// Points `window` of `pe` at `table`, then kills the PE's cached TCEs so no
    /// translation from a previous table survives.
    fn map_window(
        &self,
        pe: PeNum,
        window: WindowId,
        table: &dyn DmaWindowTable,
    ) -> Result<(), PhbError>;

    /// Disables `window` of `pe` (DMA through it is rejected), then kills the PE's cached
    /// TCEs.
    fn unmap_window(&self, pe: PeNum, window: WindowId) -> Result<(), PhbError>;

    /// Invalidates cached TCEs and waits until the invalidation is complete against
    /// in-flight DMA. Callable from hypervisor real mode.
    fn kill(&self, kill: Kill) -> Result<(), PhbError>;
}

/// `PhbDma` for a pointer to a back end: every method forwarded.
macro_rules! forward_phb_dma {
    ($($ptr:ty),*) => {$(
        impl<T: PhbDma + ?Sized> PhbDma for $ptr {
            fn num_pes(&self) -> u32 {
                (**self).num_pes()
            }
            fn set_pe(&self, bdfn: Bdfn, pe: PeNum) -> Result<(), PhbError> {
                (**self).set_pe(bdfn, pe)
            }
            fn set_peltv(&self, parent: PeNum, child: PeNum, action: PeltvAction) -> Result<(), PhbError> {
                (**self).set_peltv(parent, child, action)
            }
            fn freeze_status(&self, pe: PeNum) -> Result<FreezeStatus, PhbError> {
                (**self).freeze_status(pe)
            }
            fn clear_freeze(&self, pe: PeNum) -> Result<(), PhbError> {
                (**self).clear_freeze(pe)
            }
            fn map_window(
                &self,
                pe: PeNum,
                window: WindowId,
                table: &dyn DmaWindowTable,
            ) -> Result<(), PhbError> {
                (**self).map_window(pe, window, table)
            }
            fn unmap_window(&self, pe: PeNum, window: WindowId) -> Result<(), PhbError> {
                (**self).unmap_window(pe, window)
            }
            fn kill(&self, kill: Kill) -> Result<(), PhbError> {
                (**self).kill(kill)
            }
        }
    )*};
}

// A shared back end (`Arc`): a kill kept by several tables, for as long as any is attached.
forward_phb_dma!(&T, alloc::sync::Arc<T>);

/// Sets a PE up as Linux's `pnv_ioda_configure_pe` does for a PE of its own: maps `bdfn` to
/// `pe`, clears any freeze left on the PE, and adds the PE to its own PELT-V (so an error in
/// the PE freezes the PE, and no other).
pub fn configure_pe(phb: &dyn PhbDma, bdfn: Bdfn, pe: PeNum) -> Result<(), PhbError> {
    phb.set_pe(bdfn, pe)?;
    phb.clear_freeze(pe)?;
    phb.set_peltv(pe, pe, PeltvAction::Add)
}

/// Reads `pe`'s freeze state and, if it is frozen, clears the freeze and checks that it is
/// gone. Returns the state that was found when the PE was frozen (for the caller to report),
/// `None` when it was not; a freeze that does not clear is [`PhbError::StillFrozen`].
pub fn recover_freeze(phb: &dyn PhbDma, pe: PeNum) -> Result<Option<FreezeStatus>, PhbError> {
    let found = phb.freeze_status(pe)?;
    if !found.is_frozen() {
        return Ok(None);
    }
    phb.clear_freeze(pe)?;
    let after = phb.freeze_status(pe)?;
    if after.is_frozen() {
        return Err(PhbError::StillFrozen { pe, status: after });
    }
    Ok(Some(found))
}

/// Kills `kill`'s pages (or PE) in every PE of `pes`: a table shared between PEs must be
/// invalidated in all of them, or a TCE cleared through one stays cached for the others.
/// Does not allocate; stops at the first error.
pub fn kill_in_pes(phb: &dyn PhbDma, pes: &[PeNum], kill: Kill) -> Result<(), PhbError> {
    for &pe in pes {
        let k = match kill {
            Kill::Pages {
                bus_addr,
                page_shift,
                npages,
                ..
            } => Kill::Pages {
                pe,
                bus_addr,
                page_shift,
                npages,
            },
            Kill::Pe(_) => Kill::Pe(pe),
            Kill::All => return phb.kill(Kill::All),
        };
        phb.kill(k)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T {
        addr: u64,
        levels: u32,
        level: u64,
        shift: u32,
        off: u64,
        size: u64,
    }
    impl DmaWindowTable for T {
        fn top_level_phys(&self) -> u64 {
            self.addr
        }
        fn levels(&self) -> u32 {
            self.levels
        }
        fn level_size(&self) -> u64 {
            self.level
        }
        fn page_shift(&self) -> u32 {
            self.shift
        }
        fn bus_offset(&self) -> u64 {
            self.off
        }
        fn window_size(&self) -> u64 {
            self.size
        }
    }

    fn t(off: u64, size: u64) -> T {
        // 2 levels of 4 KiB (512 entries each), 4K pages: reach 2^(12+18) = 1 GiB.
        T {
            addr: 0x10_0000,
            levels: 2,
            level: 0x1000,
            shift: 12,
            off,
            size,
        }
    }

    const W0: WindowId = WindowId::DMA32;
    const W1: WindowId = WindowId::DMA64;

    #[test]
    fn window_params_accepts_matching_tables() {
        let p = WindowParams::new(PeNum(3), W0, 512, &t(0, 1 << 30)).unwrap();
        assert_eq!(p.tve_index, 6);
        assert_eq!(p.tve, Tve::translated(0x10_0000, 2, 0x1000, 12).unwrap());
        let p = WindowParams::new(PeNum(3), W1, 512, &t(1 << 59, 1 << 30)).unwrap();
        assert_eq!(p.tve_index, 7);
        // A window smaller than the reach is fine.
        assert!(WindowParams::new(PeNum(0), W0, 512, &t(0, 4096)).is_ok());
    }

    #[test]
    fn window_params_rejects_mismatches() {
        let range = |off, size| PhbError::TableRange {
            bus_offset: off,
            window_size: size,
        };
        assert_eq!(
            WindowParams::new(PeNum(512), W0, 512, &t(0, 4096)),
            Err(PhbError::BadPe {
                pe: PeNum(512),
                num_pes: 512
            })
        );
        assert_eq!(check_window(2), Err(PhbError::BadWindow(2)));
        assert_eq!(check_window(1), Ok(W1));
        assert_eq!(
            WindowParams::new(PeNum(0), W0, 512, &t(0, 2 << 30)),
            Err(range(0, 2 << 30))
        );
        assert_eq!(
            WindowParams::new(PeNum(0), W1, 512, &t(0, 4096)),
            Err(range(0, 4096))
        );
        assert_eq!(
            WindowParams::new(PeNum(0), W0, 512, &t(1 << 59, 4096)),
            Err(range(1 << 59, 4096))
        );
        assert_eq!(
            WindowParams::new(PeNum(0), W0, 512, &t(0, 0)),
            Err(range(0, 0))
        );
        let bad = T {
            addr: 0x10_0800,
            ..t(0, 4096)
        };
        assert_eq!(
            WindowParams::new(PeNum(0), W0, 512, &bad),
            Err(PhbError::Table(TveError::Alignment(0x10_0800)))
        );
    }

    #[test]
    fn window_bus_offset_is_zero_or_bit_59() {
        let range = |off, size| PhbError::TableRange {
            bus_offset: off,
            window_size: size,
        };
        // The second reach-sized slot of window 0 would alias the first: refused now.
        for off in [1u64 << 30, 1 << 29, 1 << 32, (1 << 59) - (1 << 30), 0x1000] {
            assert_eq!(
                WindowParams::new(PeNum(0), W0, 512, &t(off, 1 << 29)),
                Err(range(off, 1 << 29)),
                "{off:#x}"
            );
        }
        // Just past 1 << 59, and 1 << 60 (bit 59 clear again): refused for window 1.
        for off in [(1u64 << 59) + (1 << 30), 1 << 60, (1 << 59) | (1 << 60)] {
            assert_eq!(
                WindowParams::new(PeNum(0), W1, 512, &t(off, 1 << 29)),
                Err(range(off, 1 << 29)),
                "{off:#x}"
            );
        }
    }

    #[test]
    fn window_params_55_bit_limit() {
        let table = |levels, level_shift: u32, shift, off, size| T {
            addr: 1 << 42,
            levels,
            level: 1 << level_shift,
            shift,
            off,
            size,
        };
        // At the limit: 2 levels of 2^22 bytes (19 index bits each) + 64K pages = 54 bits.
        let at = table(2, 22, 16, 1 << 59, 1 << 54);
        assert!(WindowParams::new(PeNum(1), W1, 512, &at).is_ok());
        // One more level bit: 56 bits, refused whatever the window size.
        let past = table(2, 23, 16, 1 << 59, 1 << 30);
        assert_eq!(
            WindowParams::new(PeNum(1), W1, 512, &past),
            Err(PhbError::TableReach { reach_shift: 56 })
        );
        // Exactly 55: 1 level of 2^28 bytes (25 bits) + 1G pages; 54 with 2^27 bytes.
        assert_eq!(
            WindowParams::new(PeNum(1), W0, 512, &table(1, 28, 30, 0, 1 << 30)),
            Err(PhbError::TableReach { reach_shift: 55 })
        );
        assert!(WindowParams::new(PeNum(1), W0, 512, &table(1, 27, 30, 0, 1 << 54)).is_ok());
        // Inside the reach, a window larger than the reach is still refused.
        assert_eq!(
            WindowParams::new(PeNum(1), W1, 512, &table(2, 22, 16, 1 << 59, 1 << 55)),
            Err(PhbError::TableRange {
                bus_offset: 1 << 59,
                window_size: 1 << 55
            })
        );
    }

    /// A PHB whose PEs freeze on demand; `stuck` makes a clear not take.
    struct Freezer {
        frozen: core::cell::Cell<Option<FreezeStatus>>,
        stuck: bool,
        clears: core::cell::Cell<u32>,
        calls: core::cell::RefCell<alloc::vec::Vec<&'static str>>,
    }
    impl Freezer {
        fn new(frozen: Option<FreezeStatus>, stuck: bool) -> Self {
            Self {
                frozen: core::cell::Cell::new(frozen),
                stuck,
                clears: core::cell::Cell::new(0),
                calls: core::cell::RefCell::new(alloc::vec::Vec::new()),
            }
        }
    }
    impl PhbDma for Freezer {
        fn num_pes(&self) -> u32 {
            8
        }
        fn set_pe(&self, _: Bdfn, _: PeNum) -> Result<(), PhbError> {
            self.calls.borrow_mut().push("set_pe");
            Ok(())
        }
        fn set_peltv(&self, p: PeNum, c: PeNum, a: PeltvAction) -> Result<(), PhbError> {
            assert_eq!((p, c, a), (PeNum(2), PeNum(2), PeltvAction::Add));
            self.calls.borrow_mut().push("set_peltv");
            Ok(())
        }
        fn freeze_status(&self, _: PeNum) -> Result<FreezeStatus, PhbError> {
            Ok(self.frozen.get().unwrap_or(FreezeStatus::CLEAR))
        }
        fn clear_freeze(&self, _: PeNum) -> Result<(), PhbError> {
            self.calls.borrow_mut().push("clear_freeze");
            self.clears.set(self.clears.get() + 1);
            if !self.stuck {
                self.frozen.set(None);
            }
            Ok(())
        }
        fn map_window(
            &self,
            _: PeNum,
            _: WindowId,
            _: &dyn DmaWindowTable,
        ) -> Result<(), PhbError> {
            unreachable!()
        }
        fn unmap_window(&self, _: PeNum, _: WindowId) -> Result<(), PhbError> {
            unreachable!()
        }
        fn kill(&self, _: Kill) -> Result<(), PhbError> {
            unreachable!()
        }
    }

    const DMA_FROZEN: FreezeStatus = FreezeStatus {
        state: super::super::hw::FreezeState::Dma,
        error: super::super::hw::PciErrorType::NoError,
    };

    #[test]
    fn configure_pe_clears_freeze_then_joins_own_peltv() {
        let phb = Freezer::new(Some(DMA_FROZEN), false);
        configure_pe(&phb, Bdfn(0x100), PeNum(2)).unwrap();
        assert_eq!(*phb.calls.borrow(), ["set_pe", "clear_freeze", "set_peltv"]);
        assert_eq!(phb.freeze_status(PeNum(2)), Ok(FreezeStatus::CLEAR));
    }

    #[test]
    fn recover_freeze_reports_clears_and_refuses_a_stuck_freeze() {
        let calm = Freezer::new(None, false);
        assert_eq!(recover_freeze(&calm, PeNum(1)), Ok(None));
        assert_eq!(calm.clears.get(), 0, "nothing to clear");
        let frozen = Freezer::new(Some(DMA_FROZEN), false);
        assert_eq!(recover_freeze(&frozen, PeNum(1)), Ok(Some(DMA_FROZEN)));
        assert_eq!(frozen.clears.get(), 1);
        assert_eq!(frozen.freeze_status(PeNum(1)), Ok(FreezeStatus::CLEAR));
        let stuck = Freezer::new(Some(DMA_FROZEN), true);
        assert_eq!(
            recover_freeze(&stuck, PeNum(1)),
            Err(PhbError::StillFrozen {
                pe: PeNum(1),
                status: DMA_FROZEN
            })
        );
    }

    #[test]
    fn kill_validation() {
        let pages = |pe, bus_addr, page_shift, npages| Kill::Pages {
            pe: PeNum(pe),
            bus_addr,
            page_shift,
            npages,
        };
        assert!(pages(1, 0x1_0000, 16, 4).validate(256).is_ok());
        assert_eq!(
            pages(1, 0x1000, 16, 1).validate(256),
            Err(PhbError::BadKill)
        );
        assert_eq!(
            pages(1, 0x1000, 13, 1).validate(256),
            Err(PhbError::BadKill)
        );
        assert_eq!(
            pages(1, !0xfff, 12, 2).validate(256),
            Err(PhbError::BadKill)
        );
        assert_eq!(
            pages(256, 0, 12, 1).validate(256),
            Err(PhbError::BadPe {
                pe: PeNum(256),
                num_pes: 256
            })
        );
        assert_eq!(Kill::Pe(PeNum(255)).validate(256), Ok(()));
        assert!(Kill::Pe(PeNum(256)).validate(256).is_err());
        assert_eq!(Kill::All.validate(1), Ok(()));
    }
}
