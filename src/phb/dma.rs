//! The PHB DMA driver interface ([`PhbDma`]) and the argument rules both back ends share.
//!
//! Two back ends implement it: [`OpalBackend`](super::opal::OpalBackend) (skiboot owns the
//! PHB; what a kernel on POWER9 hardware must use) and
//! [`DirectBackend`](super::direct::DirectBackend) (IODA register programming). They accept
//! and reject the same arguments (checked here, before either back end runs) and leave the
//! PHB in the same state: they differ in speed, never in meaning.

use super::hw::Bdfn;
use super::hw::{DmaWindowTable, OpalError};
use super::regs::PhbReg;
use super::regs::{self, page_size_code, Tve, TveError};

/// Why a PHB operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhbError {
    /// The PE number is not below the PHB's PE count.
    BadPe {
        /// The PE asked for.
        pe: u32,
        /// `ibm,opal-num-pes`.
        num_pes: u32,
    },
    /// A PE has two DMA windows, 0 and 1 (bus address bit 59).
    BadWindow(u8),
    /// The table cannot be described by a TVE.
    Table(TveError),
    /// The table's bus range does not match what the PHB would index: it must lie in the
    /// window's half of the bus address space, start on a multiple of the table's reach, and
    /// be no larger than that reach.
    TableRange {
        /// The table's first bus address.
        bus_offset: u64,
        /// The table's window size.
        window_size: u64,
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
        pe: u32,
        /// Bus address (IOBA) of the first page.
        bus_addr: u64,
        /// IO page shift of the window.
        page_shift: u32,
        /// Number of pages.
        npages: u32,
    },
    /// Everything cached for one PE.
    Pe(u32),
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
pub fn check_pe(pe: u32, num_pes: u32) -> Result<(), PhbError> {
    if pe >= num_pes {
        return Err(PhbError::BadPe { pe, num_pes });
    }
    Ok(())
}

/// Checks a window number (0 or 1).
pub fn check_window(window: u8) -> Result<(), PhbError> {
    if window > 1 {
        return Err(PhbError::BadWindow(window));
    }
    Ok(())
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
    /// / 8)` bits per level, and ignores higher bits; the table indexes from its bus offset.
    /// The two agree only if the bus offset is a multiple of the table's reach and the
    /// window fits in it, so anything else is refused rather than mistranslated.
    pub fn new(
        pe: u32,
        window: u8,
        num_pes: u32,
        table: &dyn DmaWindowTable,
    ) -> Result<WindowParams, PhbError> {
        check_pe(pe, num_pes)?;
        check_window(window)?;
        let (levels, level_size, page_shift) =
            (table.levels(), table.level_size(), table.page_shift());
        let table_addr = table.top_level_phys();
        let tve =
            Tve::translated(table_addr, levels, level_size, page_shift).map_err(PhbError::Table)?;
        let (bus_offset, window_size) = (table.bus_offset(), table.window_size());
        let range_err = PhbError::TableRange {
            bus_offset,
            window_size,
        };
        let index_bits = levels * (level_size.trailing_zeros() - 3);
        let reach_shift = page_shift + index_bits;
        let reach = if reach_shift >= 64 {
            u128::MAX
        } else {
            1u128 << reach_shift
        };
        let end = bus_offset.checked_add(window_size).ok_or(range_err)?;
        if window_size == 0
            || u128::from(window_size) > reach
            || u128::from(bus_offset) % reach != 0
            || regs::window_of(bus_offset) != window
            || regs::window_of(end - 1) != window
            || (end - 1) >> 60 != 0
        {
            return Err(range_err);
        }
        Ok(WindowParams {
            tve_index: regs::tve_index(pe, window),
            levels,
            table_addr,
            level_size,
            page_shift,
            tve,
        })
    }
}

/// One PHB's DMA translation controls.
///
/// Every method takes `&self`: one instance serves all CPUs. [`PhbDma::kill`] is the
/// real-mode path (batch invalidation from the TCE hypercalls): it never allocates, never
/// blocks on a lock held across anything but another kill, and its polls are bounded.
pub trait PhbDma {
    /// `ibm,opal-num-pes`.
    fn num_pes(&self) -> u32;

    /// Maps requester `bdfn` (exactly that function) to `pe`, and drops the PHB's cached
    /// requester-ID-to-PE translation so the next DMA uses it.
    fn set_pe(&self, bdfn: Bdfn, pe: u32) -> Result<(), PhbError>;

    /// Points `window` (0 or 1) of `pe` at `table`, then kills the PE's cached TCEs so no
    /// translation from a previous table survives.
    fn map_window(&self, pe: u32, window: u8, table: &dyn DmaWindowTable) -> Result<(), PhbError>;

    /// Disables `window` of `pe` (DMA through it is rejected), then kills the PE's cached
    /// TCEs.
    fn unmap_window(&self, pe: u32, window: u8) -> Result<(), PhbError>;

    /// Invalidates cached TCEs and waits until the invalidation is complete against
    /// in-flight DMA. Callable from hypervisor real mode.
    fn kill(&self, kill: Kill) -> Result<(), PhbError>;
}

impl<T: PhbDma + ?Sized> PhbDma for &T {
    fn num_pes(&self) -> u32 {
        (**self).num_pes()
    }
    fn set_pe(&self, bdfn: Bdfn, pe: u32) -> Result<(), PhbError> {
        (**self).set_pe(bdfn, pe)
    }
    fn map_window(&self, pe: u32, window: u8, table: &dyn DmaWindowTable) -> Result<(), PhbError> {
        (**self).map_window(pe, window, table)
    }
    fn unmap_window(&self, pe: u32, window: u8) -> Result<(), PhbError> {
        (**self).unmap_window(pe, window)
    }
    fn kill(&self, kill: Kill) -> Result<(), PhbError> {
        (**self).kill(kill)
    }
}

/// Kills `kill`'s pages (or PE) in every PE of `pes`: a table shared between PEs must be
/// invalidated in all of them, or a TCE cleared through one stays cached for the others.
/// Does not allocate; stops at the first error.
pub fn kill_in_pes(phb: &dyn PhbDma, pes: &[u32], kill: Kill) -> Result<(), PhbError> {
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

    #[test]
    fn window_params_accepts_matching_tables() {
        let p = WindowParams::new(3, 0, 512, &t(0, 1 << 30)).unwrap();
        assert_eq!(p.tve_index, 6);
        assert_eq!(p.tve, Tve::translated(0x10_0000, 2, 0x1000, 12).unwrap());
        let p = WindowParams::new(3, 1, 512, &t(1 << 59, 1 << 30)).unwrap();
        assert_eq!(p.tve_index, 7);
        // A second reach-sized slot of window 0 aliases correctly too.
        assert!(WindowParams::new(0, 0, 512, &t(1 << 30, 1 << 29)).is_ok());
    }

    #[test]
    fn window_params_rejects_mismatches() {
        let range = |off, size| PhbError::TableRange {
            bus_offset: off,
            window_size: size,
        };
        assert_eq!(
            WindowParams::new(512, 0, 512, &t(0, 4096)),
            Err(PhbError::BadPe {
                pe: 512,
                num_pes: 512
            })
        );
        assert_eq!(
            WindowParams::new(0, 2, 512, &t(0, 4096)),
            Err(PhbError::BadWindow(2))
        );
        assert_eq!(
            WindowParams::new(0, 0, 512, &t(0, 2 << 30)),
            Err(range(0, 2 << 30))
        );
        assert_eq!(
            WindowParams::new(0, 0, 512, &t(1 << 29, 4096)),
            Err(range(1 << 29, 4096))
        );
        assert_eq!(
            WindowParams::new(0, 1, 512, &t(0, 4096)),
            Err(range(0, 4096))
        );
        assert_eq!(
            WindowParams::new(0, 0, 512, &t(1 << 59, 4096)),
            Err(range(1 << 59, 4096))
        );
        assert_eq!(WindowParams::new(0, 0, 512, &t(0, 0)), Err(range(0, 0)));
        let bad = T {
            addr: 0x10_0800,
            ..t(0, 4096)
        };
        assert_eq!(
            WindowParams::new(0, 0, 512, &bad),
            Err(PhbError::Table(TveError::Alignment(0x10_0800)))
        );
    }

    #[test]
    fn kill_validation() {
        let pages = |pe, bus_addr, page_shift, npages| Kill::Pages {
            pe,
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
                pe: 256,
                num_pes: 256
            })
        );
        assert_eq!(Kill::Pe(255).validate(256), Ok(()));
        assert!(Kill::Pe(256).validate(256).is_err());
        assert_eq!(Kill::All.validate(1), Ok(()));
    }
}
