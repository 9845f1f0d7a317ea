//! The machine side of the portable PHB driver: PHB4 registers and the RTT through
//! cache-inhibited MMIO and real-mode memory, OPAL's PCI calls, and the `edu` device's BAR0.
//!
//! Each type is an edge: its constructor is `unsafe` and names the address it trusts, and
//! after that the portable code (`crate::phb`) drives it through the safe traits.

use crate::mm::HostPhys;
use crate::phb::edu::EduMmio;
use crate::phb::hw::{
    Bdfn, EehClear, FreezeState, FreezeStatus, OpalError, OpalPci, OpalTceKillType, PciErrorType,
    PeNum, PeltvAction, PhbId, PhbMmio, PhysMemory,
};
use crate::phb::regs::PhbReg;

use super::{mmio, opal, spr};

/// One PHB's register space (`reg[0]` of its `pciex@` node), reached with big-endian
/// cache-inhibited 64-bit accesses (`mmio::read_be64`/`write_be64` do the byte swap and put a
/// `sync` before every access, which orders earlier TCE and RTT stores before a register
/// store, as the [`PhbMmio`] contract asks).
pub struct PhbRegs {
    base: u64,
}

impl PhbRegs {
    /// The registers of the PHB at real address `base`.
    ///
    /// # Safety
    /// `base` must be a PHB4 register base (as the FDT gives it), and nothing else may
    /// program the same PHB's registers concurrently in a way the caller did not plan.
    pub unsafe fn new(base: u64) -> Self {
        Self { base }
    }

    /// The register base.
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl PhbMmio for PhbRegs {
    fn read(&self, reg: PhbReg) -> u64 {
        // SAFETY: `base` is a PHB register base (constructor contract) and `reg` is one of the
        // named PHB4 register offsets inside its register space.
        unsafe { mmio::read_be64(self.base + u64::from(reg.0)) }
    }

    fn write(&self, reg: PhbReg, value: u64) {
        // SAFETY: as for `read`; `write_be64` issues `sync` before the store.
        unsafe { mmio::write_be64(self.base + u64::from(reg.0), value) }
    }
}

/// Host physical memory through the linear map (valid with the MMU on and off).
/// Used for the RTT and PELT-V that skiboot allocated and `RTT_BAR`/`PELTV_BAR` point at.
pub struct RealMemory {
    _private: (),
}

impl RealMemory {
    /// Real-mode access to physical memory.
    ///
    /// # Safety
    /// The value may be handed only to code that follows the [`PhysMemory`] contract:
    /// addresses the PHB itself was given (the RTT and PELT-V), which are RAM that no Rust
    /// reference covers.
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }
}

impl PhysMemory for RealMemory {
    fn read(&self, pa: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: real mode, and `pa..pa + len` is a PHB table in RAM (constructor
            // contract); volatile because the PHB, not Rust, owns those bytes.
            *b = unsafe { core::ptr::read_volatile((HostPhys(pa).linear() + i) as *const u8) };
        }
    }

    fn write(&self, pa: u64, buf: &[u8]) {
        for (i, &b) in buf.iter().enumerate() {
            // SAFETY: as for `read`.
            unsafe { core::ptr::write_volatile((HostPhys(pa).linear() + i) as *mut u8, b) };
        }
    }

    fn write_be16(&self, pa: u64, value: u16) {
        debug_assert!(pa.is_multiple_of(2), "RTT entries are 2-byte aligned");
        // SAFETY: as for `read`; `pa` is 2-byte aligned (an RTT entry), so this is one
        // aligned `sth`. The table is big-endian: `to_be` before the store.
        unsafe { core::ptr::write_volatile(HostPhys(pa).linear() as *mut u16, value.to_be()) };
    }
}

/// OPAL's PCI calls (skiboot `include/opal-api.h`). Arguments go in registers; the
/// configuration reads and the freeze status return values through memory, big-endian,
/// converted by `opal::pci_config_read` and `opal::pci_eeh_freeze_status`. The raw `i64`
/// return codes end here: each becomes an [`OpalError`].
#[derive(Clone, Copy)]
pub struct Opal {
    _private: (),
}

impl Opal {
    /// The OPAL PCI interface.
    ///
    /// # Safety
    /// OPAL must have been located (`opal::init`), and the caller answers for the PHB state
    /// the calls change (PE mappings, DMA windows pointing at tables that must stay alive while
    /// mapped).
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }

    /// A call whose arguments are all plain integers.
    fn call_ints(&self, token: u64, args: &[u64]) -> i64 {
        // SAFETY: `token` is one of the PCI calls below, whose arguments are integers (no
        // pointer for firmware to write through); what they change is the constructor's
        // caller's business.
        unsafe { opal::call(token, args) }
    }
}

/// A failed call's raw OPAL code as an [`OpalError`].
fn opal_error(rc: i64) -> OpalError {
    OpalError::check(rc).err().unwrap_or(OpalError::Other(rc))
}

impl OpalPci for Opal {
    fn pci_set_pe(
        &self,
        phb: PhbId,
        pe: PeNum,
        bdfn: Bdfn,
        bus_compare: u8,
        dev_compare: u8,
        func_compare: u8,
        action: u8,
    ) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_SET_PE,
            &[
                phb.0,
                pe.0.into(),
                bdfn.0.into(),
                bus_compare.into(),
                dev_compare.into(),
                func_compare.into(),
                action.into(),
            ],
        ))
    }

    fn pci_map_pe_dma_window(
        &self,
        phb: PhbId,
        pe: PeNum,
        window_id: u16,
        levels: u16,
        table_addr: u64,
        table_size: u64,
        page_size: u64,
    ) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_MAP_PE_DMA_WINDOW,
            &[
                phb.0,
                pe.0.into(),
                window_id.into(),
                levels.into(),
                table_addr,
                table_size,
                page_size,
            ],
        ))
    }

    fn pci_map_pe_dma_window_real(
        &self,
        phb: PhbId,
        pe: PeNum,
        window_id: u16,
        pci_start: u64,
        pci_size: u64,
    ) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_MAP_PE_DMA_WINDOW_REAL,
            &[phb.0, pe.0.into(), window_id.into(), pci_start, pci_size],
        ))
    }

    fn pci_tce_kill(
        &self,
        phb: PhbId,
        kill_type: OpalTceKillType,
        pe: PeNum,
        tce_size: u32,
        dma_addr: u64,
        npages: u32,
    ) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_TCE_KILL,
            &[
                phb.0,
                (kill_type as u32).into(),
                pe.0.into(),
                tce_size.into(),
                dma_addr,
                npages.into(),
            ],
        ))
    }

    fn pci_eeh_freeze_status(&self, phb: PhbId, pe: PeNum) -> Result<FreezeStatus, OpalError> {
        let (state, error) = opal::pci_eeh_freeze_status(phb.0, pe.0.into()).map_err(opal_error)?;
        Ok(FreezeStatus {
            state: FreezeState::from_raw(state),
            error: PciErrorType::from_raw(error),
        })
    }

    fn pci_eeh_freeze_clear(
        &self,
        phb: PhbId,
        pe: PeNum,
        action: EehClear,
    ) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_EEH_FREEZE_CLEAR,
            &[phb.0, pe.0.into(), (action as u8).into()],
        ))
    }

    fn pci_eeh_freeze_set(&self, phb: PhbId, pe: PeNum, action: EehClear) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_EEH_FREEZE_SET,
            &[phb.0, pe.0.into(), (action as u8).into()],
        ))
    }

    fn pci_set_peltv(
        &self,
        phb: PhbId,
        parent: PeNum,
        child: PeNum,
        action: PeltvAction,
    ) -> Result<(), OpalError> {
        OpalError::check(self.call_ints(
            opal::OPAL_PCI_SET_PELTV,
            &[
                phb.0,
                parent.0.into(),
                child.0.into(),
                (action as u8).into(),
            ],
        ))
    }

    fn pci_config_read_byte(&self, phb: PhbId, bdfn: Bdfn, offset: u16) -> Result<u8, OpalError> {
        opal::pci_config_read(phb.0, bdfn.0, offset, 1)
            .map(|v| v as u8)
            .map_err(opal_error)
    }

    fn pci_config_read_half_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
    ) -> Result<u16, OpalError> {
        opal::pci_config_read(phb.0, bdfn.0, offset, 2)
            .map(|v| v as u16)
            .map_err(opal_error)
    }

    fn pci_config_read_word(&self, phb: PhbId, bdfn: Bdfn, offset: u16) -> Result<u32, OpalError> {
        opal::pci_config_read(phb.0, bdfn.0, offset, 4).map_err(opal_error)
    }

    fn pci_config_write_byte(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
        value: u8,
    ) -> Result<(), OpalError> {
        opal::pci_config_write(phb.0, bdfn.0, offset, 1, value.into()).map_err(opal_error)
    }

    fn pci_config_write_half_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
        value: u16,
    ) -> Result<(), OpalError> {
        opal::pci_config_write(phb.0, bdfn.0, offset, 2, value.into()).map_err(opal_error)
    }

    fn pci_config_write_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
        value: u32,
    ) -> Result<(), OpalError> {
        opal::pci_config_write(phb.0, bdfn.0, offset, 4, value).map_err(opal_error)
    }
}

/// Timebase ticks `EduBar::relax` waits between command polls: 10 us at 512 MHz, so a
/// transfer (about 100 ms of virtual time in QEMU) takes some ten thousand polls.
const EDU_RELAX_TICKS: u64 = 5120;

/// The `edu` device's BAR0, at its CPU (real) address in the PHB's M32 window. Registers are
/// big-endian; `mmio`'s accessors do the byte swap.
pub struct EduBar {
    base: u64,
}

impl EduBar {
    /// BAR0 of an edu device mapped at real address `base`.
    ///
    /// # Safety
    /// `base` must be where BAR0 of an edu device decodes (assigned, memory decode on, the
    /// root port's window open over it).
    pub unsafe fn new(base: u64) -> Self {
        Self { base }
    }
}

impl EduMmio for EduBar {
    fn read32(&self, offset: u32) -> u32 {
        // SAFETY: BAR0 is 1 MiB of edu registers (constructor contract); the driver passes
        // register offsets inside it.
        unsafe { mmio::read_be32(self.base + u64::from(offset)) }
    }

    fn write32(&self, offset: u32, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { mmio::write_be32(self.base + u64::from(offset), value) }
    }

    fn read64(&self, offset: u32) -> u64 {
        // SAFETY: as for `read32`.
        unsafe { mmio::read_be64(self.base + u64::from(offset)) }
    }

    fn write64(&self, offset: u32, value: u64) {
        // SAFETY: as for `read32`.
        unsafe { mmio::write_be64(self.base + u64::from(offset), value) }
    }

    fn relax(&self) {
        let start = spr::timebase();
        while spr::timebase().wrapping_sub(start) < EDU_RELAX_TICKS {
            core::hint::spin_loop();
        }
    }
}
