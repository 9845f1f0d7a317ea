//! PCI platform glue shared by the demo and the in-kernel PHB tests: find the PHBs in the FDT,
//! assign BARs behind a root port and probe QEMU's `edu` device, hand out a PHB back end (OPAL
//! calls, the default, or direct IODA register programming, for bring-up and tests) under a
//! per-PHB claim, make kernel TCE tables, and hold the RAM pages a device writes with DMA.
//!
//! Target-only: it names the kernel's FDT, OPAL and real-mode memory. The portable pieces it
//! glues together live in `crate::phb` and `crate::tce`.
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;

use crate::arch::ppc64::phb::{EduBar, Opal, PhbRegs, RealMemory};
use crate::kernel::boot;
use crate::phb::bars::{assign_bars, BarError};
use crate::phb::claim::{Claim, PhbSlots};
use crate::phb::direct::{DirectBackend, DEFAULT_POLL_LIMIT};
use crate::phb::edu::{self, Direction, Edu, EduError};
use crate::phb::fdt::{parse_phbs, FdtError, PhbInfo};
use crate::phb::hw::{FreezeStatus, OpalConfig, PeltvAction};
use crate::phb::opal::OpalBackend;
use crate::phb::regs::Tve;
use crate::phb::{Bdfn, DmaWindowTable, Kill, PeNum, PhbDma, PhbError, PhbId, WindowId};

pub use crate::phb::claim::Backend;
use crate::tce::{
    GeometryError, HeapMemory, LockedVm, MayAlloc, TceError, TceGeometry, TcePerm, TceTable,
};

/// Bus address bit 59 selects a PE's second TVE: the 64-bit window (window 1).
pub const WINDOW1_BUS: u64 = 1 << 59;
/// IO page shift of the tables made here by default (and of a [`DmaPage`]).
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in a [`DmaPage`].
pub const PAGE: usize = 1 << PAGE_SHIFT;
/// Bytes per edu transfer: well inside the edu buffer (QEMU 7.2 aborts on a transfer ending
/// at its end).
pub const DMA_LEN: u32 = 2048;
/// Edu command polls per transfer; `EduBar::relax` waits 10 us each, so about 2 s.
const EDU_POLLS: u32 = 200_000;
/// Locked-memory budget per table: both views of a 1 GiB window of 4K pages fit easily.
const TABLE_BUDGET: u64 = 64 << 20;

/// A kernel TCE table: levels on the heap, accounted against a fixed budget.
pub type KTable = TceTable<HeapMemory, LockedVm>;

/// Why the PCI set-up or a DMA step failed.
#[derive(Debug)]
pub enum PciError {
    /// The FDT's PHB nodes could not be read.
    Fdt(FdtError),
    /// The PHB lists no function on bus 0 (its root port).
    NoRootPort { phb: PhbId },
    /// The PHB is driven by the other back end (or the claim table is full).
    Claim(PhbError),
    /// BAR assignment behind the root port failed.
    Bars(BarError),
    /// The FDT lists an edu device that enumeration did not find behind the root port.
    EduNotFound { root_port: Bdfn },
    /// The edu device has no BAR0.
    NoBar0,
    /// BAR0 was assigned outside the M32 window.
    Bar0OutsideM32 { pci_addr: u64 },
    /// The edu device did not answer as one.
    Probe(EduError),
    /// An edu transfer failed (the command itself, not the translation).
    Dma {
        direction: Direction,
        iova: u64,
        error: EduError,
    },
    /// A TCE table's geometry was refused.
    Geometry(GeometryError),
    /// A TCE table could not be made.
    Table(TceError),
    /// An entry could not be set.
    Map { index: u64, error: TceError },
    /// Putting a PE back as it was found failed.
    CleanUp { pe: PeNum, error: PhbError },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::Fdt(e) => write!(f, "parse_phbs: {e:?}"),
            PciError::NoRootPort { phb } => write!(f, "PHB {:#x} lists no root port", phb.0),
            PciError::Claim(e) => write!(f, "claim: {e:?}"),
            PciError::Bars(e) => write!(f, "assign_bars: {e:?}"),
            PciError::EduNotFound { root_port } => write!(f, "edu not found behind {root_port:?}"),
            PciError::NoBar0 => write!(f, "edu without BAR0"),
            PciError::Bar0OutsideM32 { pci_addr } => write!(f, "BAR0 {pci_addr:#x} outside M32"),
            PciError::Probe(e) => write!(f, "edu probe: {e:?}"),
            PciError::Dma {
                direction: Direction::ToDevice,
                iova,
                error,
            } => write!(f, "edu DMA from IOVA {iova:#x}: {error:?}"),
            PciError::Dma {
                direction: Direction::ToRam,
                iova,
                error,
            } => write!(f, "edu DMA to IOVA {iova:#x}: {error:?}"),
            PciError::Geometry(e) => write!(f, "geometry: {e:?}"),
            PciError::Table(e) => write!(f, "table: {e:?}"),
            PciError::Map { index, error } => write!(f, "map entry {index:#x}: {error:?}"),
            PciError::CleanUp { pe, error } => write!(f, "clean-up of {pe}: {error:?}"),
        }
    }
}

// ---- PHBs and back ends ----------------------------------------------------------------------

/// Every PHB skiboot put in the FDT, in tree order.
pub fn phbs() -> Result<Vec<PhbInfo>, PciError> {
    let b = boot();
    // SAFETY: the FDT stays in place for the kernel's life (its range is kept out of the
    // heap) and is `total_size` bytes long.
    let blob = unsafe {
        core::slice::from_raw_parts(
            crate::mm::HostPhys(b.fdt_addr).linear() as *const u8,
            b.fdt.total_size(),
        )
    };
    parse_phbs(blob).map_err(PciError::Fdt)
}

/// The direct back end as the kernel builds it.
pub type KDirect = DirectBackend<PhbRegs, RealMemory>;

/// Most PHBs the kernel drives (a two-socket POWER9 has 12).
const MAX_PHBS: usize = 16;

/// Which back end holds each PHB, and each PHB's one direct back end, for the kernel's life.
static PHBS: PhbSlots<KDirect, MAX_PHBS> = PhbSlots::new();

/// A claimed PHB back end: OPAL calls, or the PHB's one direct back end (its locks shared by
/// every handle). While any handle for one back end exists, asking for the other back end on
/// the same PHB fails with [`PhbError::Claimed`]; dropping the last handle hands the PHB
/// back, and its holder must have left it as found (windows disabled, devices back in the
/// reserved PE).
pub struct PhbHandle {
    _claim: Claim<'static, KDirect, MAX_PHBS>,
    dma: HandleDma,
}

enum HandleDma {
    Opal(OpalBackend<Opal>),
    Direct(&'static KDirect),
}

impl PhbHandle {
    /// The back end this handle drives.
    pub fn kind(&self) -> Backend {
        match self.dma {
            HandleDma::Opal(_) => Backend::Opal,
            HandleDma::Direct(_) => Backend::Direct,
        }
    }

    /// The direct back end, when that is what this handle drives (for reading IODA state:
    /// PESTs).
    pub fn direct(&self) -> Option<&'static KDirect> {
        match self.dma {
            HandleDma::Direct(d) => Some(d),
            HandleDma::Opal(_) => None,
        }
    }

    /// The OPAL back end, when that is what this handle drives (for OPAL-only calls).
    pub fn opal(&self) -> Option<&OpalBackend<Opal>> {
        match &self.dma {
            HandleDma::Opal(o) => Some(o),
            HandleDma::Direct(_) => None,
        }
    }

    fn inner(&self) -> &dyn PhbDma {
        match &self.dma {
            HandleDma::Opal(o) => o,
            HandleDma::Direct(d) => *d,
        }
    }
}

impl PhbDma for PhbHandle {
    fn num_pes(&self) -> u32 {
        self.inner().num_pes()
    }
    fn set_pe(&self, bdfn: Bdfn, pe: PeNum) -> Result<(), PhbError> {
        self.inner().set_pe(bdfn, pe)
    }
    fn set_peltv(&self, parent: PeNum, child: PeNum, action: PeltvAction) -> Result<(), PhbError> {
        self.inner().set_peltv(parent, child, action)
    }
    fn freeze_status(&self, pe: PeNum) -> Result<FreezeStatus, PhbError> {
        self.inner().freeze_status(pe)
    }
    fn clear_freeze(&self, pe: PeNum) -> Result<(), PhbError> {
        self.inner().clear_freeze(pe)
    }
    fn map_window(
        &self,
        pe: PeNum,
        window: WindowId,
        table: &dyn DmaWindowTable,
    ) -> Result<(), PhbError> {
        self.inner().map_window(pe, window, table)
    }
    fn unmap_window(&self, pe: PeNum, window: WindowId) -> Result<(), PhbError> {
        self.inner().unmap_window(pe, window)
    }
    fn kill(&self, kill: Kill) -> Result<(), PhbError> {
        self.inner().kill(kill)
    }
}

/// `kind`'s back end for the PHB `info` describes, claimed for `kind`: refused while the
/// other back end holds the PHB.
///
/// # Safety
/// The caller keeps every table alive while a TVE points at it (through this back end or any
/// other), and leaves the PHB as it found it before dropping the last handle.
pub unsafe fn backend(kind: Backend, info: &PhbInfo) -> Result<PhbHandle, PciError> {
    let claim = PHBS
        .claim(info.opal_phb_id, kind)
        .map_err(PciError::Claim)?;
    let dma = match kind {
        Backend::Opal => {
            // SAFETY: the kernel located OPAL at boot; table lifetimes are the caller's.
            HandleDma::Opal(OpalBackend::new(
                unsafe { Opal::new() },
                info.opal_phb_id,
                info.num_pes,
            ))
        }
        Backend::Direct => {
            let make = || {
                // SAFETY: `reg_base` is the PHB's register base from its `pciex@` node; the
                // claim keeps OPAL's PHB programming away while this instance is used, and
                // this is the PHB's only instance (made once, kept in `PHBS`).
                let regs = unsafe { PhbRegs::new(info.reg_base) };
                // SAFETY: the direct back end touches only the RTT and PELT-V that `RTT_BAR`
                // and `PELTV_BAR` point at.
                let mem = unsafe { RealMemory::new() };
                DirectBackend::new(regs, mem, info.num_pes, DEFAULT_POLL_LIMIT)
            };
            // A Direct claim always yields the instance.
            match claim.direct(make) {
                Some(d) => HandleDma::Direct(d),
                None => return Err(PciError::Claim(PhbError::TooManyPhbs)),
            }
        }
    };
    Ok(PhbHandle { _claim: claim, dma })
}

/// The TVE at `index`, read through `IODA_ADDR`/`IODA_DATA0` whichever back end holds the
/// PHB: a diagnostic for tests, which check what the PHB itself holds.
///
/// # Safety
/// Nothing else may use the PHB's IODA registers during the call (no other CPU, no OPAL call
/// in flight).
pub unsafe fn peek_tve(info: &PhbInfo, index: u32) -> Tve {
    // SAFETY: `reg_base` is the PHB's register base; the caller keeps the IODA registers to
    // itself for the two accesses.
    let regs = unsafe { PhbRegs::new(info.reg_base) };
    crate::phb::direct::read_tve(&regs, index)
}

/// `pe`'s PESTA and PESTB entries (bit 63: MMIO frozen / DMA stopped; the rest describes the
/// error), read as [`peek_tve`] reads the TVT: a diagnostic for freeze reports.
///
/// # Safety
/// As for [`peek_tve`].
pub unsafe fn peek_pest(info: &PhbInfo, pe: PeNum) -> (u64, u64) {
    use crate::phb::direct::read_ioda;
    use crate::phb::regs::IodaTable;
    // SAFETY: as in `peek_tve`.
    let regs = unsafe { PhbRegs::new(info.reg_base) };
    (
        read_ioda(&regs, IodaTable::PestA, pe.0),
        read_ioda(&regs, IodaTable::PestB, pe.0),
    )
}

// ---- the edu device --------------------------------------------------------------------------

/// One PHB with an edu device below its root port, BARs assigned and the device probed.
pub struct EduRig {
    pub info: PhbInfo,
    /// The edu device's requester ID.
    pub bdfn: Bdfn,
    pub edu: Edu<EduBar>,
    /// Where BAR0 decodes (a real address in the PHB's M32 window).
    pub bar_phys: u64,
}

fn is_edu(vendor_id: u16, device_id: u16) -> bool {
    vendor_id == edu::VENDOR_ID && device_id == edu::DEVICE_ID
}

/// The `nth` PHB (in tree order) whose FDT node lists an edu device, with BARs assigned
/// behind its root port, memory decode and bus mastering on, and the device probed; `None`
/// when fewer PHBs have one (`qemu-run.sh --edu N` attaches one per PHB).
pub fn find_edu(nth: usize) -> Result<Option<EduRig>, PciError> {
    let Some(info) = phbs()?
        .into_iter()
        .filter(|p| p.functions.iter().any(|f| is_edu(f.vendor_id, f.device_id)))
        .nth(nth)
    else {
        return Ok(None);
    };
    let root_port = info
        .functions
        .iter()
        .find(|f| f.bdfn.bus() == 0)
        .ok_or(PciError::NoRootPort {
            phb: info.opal_phb_id,
        })?
        .bdfn;
    // SAFETY: the kernel located OPAL at boot; only configuration accesses are made here,
    // which point no TVE at any table.
    let opal = unsafe { Opal::new() };
    let cfg = OpalConfig::new(&opal, info.opal_phb_id);
    let funcs = assign_bars(&cfg, root_port, &info.m32).map_err(PciError::Bars)?;
    let f = funcs
        .iter()
        .find(|f| is_edu(f.vendor_id, f.device_id))
        .ok_or(PciError::EduNotFound { root_port })?;
    let bar0 = f.bar(0).ok_or(PciError::NoBar0)?;
    let cpu = info
        .m32
        .pci_to_cpu(bar0.pci_addr)
        .ok_or(PciError::Bar0OutsideM32 {
            pci_addr: bar0.pci_addr,
        })?;
    // SAFETY: `cpu` is where the M32 window shows BAR0, which assign_bars just assigned with
    // memory decode on and the root port's window open over it.
    let bar = unsafe { EduBar::new(cpu) };
    let edu = Edu::probe(bar, EDU_POLLS).map_err(PciError::Probe)?;
    Ok(Some(EduRig {
        bdfn: f.bdfn,
        info,
        edu,
        bar_phys: cpu,
    }))
}

impl EduRig {
    /// The device reads [`DMA_LEN`] bytes at `iova` into the start of its buffer, and the
    /// transfer is waited for.
    pub fn to_device(&self, iova: u64) -> Result<(), PciError> {
        self.edu
            .dma_to_device(iova, 0, DMA_LEN)
            .map_err(|error| PciError::Dma {
                direction: Direction::ToDevice,
                iova,
                error,
            })
    }

    /// The device writes the first [`DMA_LEN`] bytes of its buffer at `iova`, and the
    /// transfer is waited for.
    pub fn to_ram(&self, iova: u64) -> Result<(), PciError> {
        self.edu
            .dma_to_ram(0, iova, DMA_LEN)
            .map_err(|error| PciError::Dma {
                direction: Direction::ToRam,
                iova,
                error,
            })
    }

    /// Disables both windows of `pe`, clears any freeze left on it, and returns the device to
    /// the reserved PE (where skiboot leaves every requester ID). Tries every step and
    /// reports the first failure.
    pub fn clean_up(&self, phb: &dyn PhbDma, pe: PeNum) -> Result<(), PciError> {
        let r = [
            phb.unmap_window(pe, WindowId::DMA32),
            phb.unmap_window(pe, WindowId::DMA64),
            phb.clear_freeze(pe),
            phb.set_pe(self.bdfn, self.info.reserved_pe),
        ];
        match r.iter().find_map(|r| r.err()) {
            Some(error) => Err(PciError::CleanUp { pe, error }),
            None => Ok(()),
        }
    }
}

// ---- DMA memory ------------------------------------------------------------------------------

#[repr(C, align(4096))]
struct PageBuf(UnsafeCell<[u8; PAGE]>);

/// One 4 KiB page of heap RAM that a device writes behind the compiler's back: accessed only
/// through volatile loads and stores of the cell's raw pointer. A new page holds [`FILL`].
pub struct DmaPage(Box<PageBuf>);

/// The byte a new page holds everywhere until something writes it.
pub const FILL: u8 = 0xee;

/// A recognisable byte pattern: `seed` distinguishes transfers, so a stale copy from an
/// earlier one never passes for a new one.
pub fn pattern(seed: u32, i: usize) -> u8 {
    let x = (i as u32).wrapping_mul(0x9e37_79b1) ^ seed.wrapping_mul(0x85eb_ca6b);
    (x >> 24) as u8 ^ (i as u8)
}

/// The first byte of a page that differs from what was wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub offset: usize,
    pub got: u8,
    pub want: u8,
    /// How many later bytes differ too.
    pub more: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "byte {:#x} is {:#04x}, want {:#04x} ({} more differ)",
            self.offset, self.got, self.want, self.more
        )
    }
}

impl Default for DmaPage {
    fn default() -> Self {
        Self::new()
    }
}

impl DmaPage {
    /// A page filled with [`FILL`].
    pub fn new() -> Self {
        // SAFETY: an all-zero byte array is a valid `PageBuf`.
        let b = unsafe { Box::<PageBuf>::new_zeroed().assume_init() };
        let p = DmaPage(b);
        p.fill(|_| FILL);
        p
    }

    /// The physical address (the page is heap memory, in the linear map).
    pub fn pa(&self) -> u64 {
        crate::mm::HostPhys::of_linear(self.0 .0.get()).0
    }

    /// Writes `f(i)` at every offset `i`.
    pub fn fill(&self, f: impl Fn(usize) -> u8) {
        let base = self.0 .0.get() as *mut u8;
        for i in 0..PAGE {
            // SAFETY: `i` is inside the page; the cell allows writes through a shared reference.
            unsafe { base.add(i).write_volatile(f(i)) };
        }
    }

    /// Checks every byte against `want(offset)`.
    pub fn check(&self, want: impl Fn(usize) -> u8) -> Result<(), Mismatch> {
        let base = self.0 .0.get() as *const u8;
        let mut bad = (0..PAGE).filter_map(|i| {
            // SAFETY: `i` is inside the page.
            let got = unsafe { base.add(i).read_volatile() };
            (got != want(i)).then_some((i, got))
        });
        match bad.next() {
            Some((offset, got)) => Err(Mismatch {
                offset,
                got,
                want: want(offset),
                more: bad.count(),
            }),
            None => Ok(()),
        }
    }

    /// Checks that the first [`DMA_LEN`] bytes hold `seed`'s [`pattern`] (one transfer
    /// landed here) and the rest still holds [`FILL`].
    pub fn check_copy(&self, seed: u32) -> Result<(), Mismatch> {
        self.check(|i| {
            if i < DMA_LEN as usize {
                pattern(seed, i)
            } else {
                FILL
            }
        })
    }
}

// ---- tables ----------------------------------------------------------------------------------

/// A kernel TCE table on NUMA node `node` translating `window_size` bytes of bus addresses
/// from `bus_offset` with `levels` levels of `1 << page_shift`-byte IO pages.
pub fn new_table(
    node: u32,
    bus_offset: u64,
    page_shift: u32,
    window_size: u64,
    levels: u32,
) -> Result<KTable, PciError> {
    let geo = TceGeometry::new(bus_offset, page_shift, window_size, levels)
        .map_err(PciError::Geometry)?;
    TceTable::new(geo, node, HeapMemory::new(), LockedVm::new(TABLE_BUDGET))
        .map_err(PciError::Table)
}

/// The IOVA (bus address) of entry `index`.
pub fn iova(table: &KTable, index: u64) -> u64 {
    table.bus_offset() + (index << table.page_shift())
}

/// Points entry `index` at `page` with `perm`.
pub fn map(table: &KTable, index: u64, page: &DmaPage, perm: TcePerm) -> Result<(), PciError> {
    table
        .set(index..index + 1, page.pa(), perm, MayAlloc::Yes)
        .map_err(|error| PciError::Map { index, error })
}
