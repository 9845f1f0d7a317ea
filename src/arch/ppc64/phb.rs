//! The machine side of the portable PHB driver: PHB4 registers and the RTT through
//! cache-inhibited MMIO and real-mode memory, OPAL's PCI calls, and the `edu` device's BAR0.
//!
//! Each type is an edge: its constructor is `unsafe` and names the address it trusts, and
//! after that the portable code (`crate::phb`) drives it through the safe traits.

use crate::mm::HostPhys;
use crate::phb::edu::EduMmio;
use crate::phb::hw::{OpalPci, PhbMmio, PhysMemory};
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
/// Used for the RTT that skiboot allocated and `RTT_BAR` points at.
pub struct RealMemory {
    _private: (),
}

impl RealMemory {
    /// Real-mode access to physical memory.
    ///
    /// # Safety
    /// The value may be handed only to code that
    /// follows the [`PhysMemory`] contract: addresses the PHB itself was given (the RTT), which
    /// are RAM that no Rust reference covers.
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
}

/// OPAL's PCI calls (skiboot `include/opal-api.h`). Arguments go in registers; only the
/// configuration reads return values through memory, big-endian, converted by
/// `opal::pci_config_read`.
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

/// A failed configuration access as the raw OPAL code; success as 0.
fn rc_of<T>(r: Result<T, i64>) -> (i64, Option<T>) {
    match r {
        Ok(v) => (opal::OPAL_SUCCESS, Some(v)),
        Err(rc) => (rc, None),
    }
}

impl OpalPci for Opal {
    fn pci_set_pe(
        &self,
        phb_id: u64,
        pe: u64,
        bdfn: u64,
        bus_compare: u8,
        dev_compare: u8,
        func_compare: u8,
        action: u8,
    ) -> i64 {
        self.call_ints(
            opal::OPAL_PCI_SET_PE,
            &[
                phb_id,
                pe,
                bdfn,
                bus_compare.into(),
                dev_compare.into(),
                func_compare.into(),
                action.into(),
            ],
        )
    }

    fn pci_map_pe_dma_window(
        &self,
        phb_id: u64,
        pe: u64,
        window_id: u16,
        levels: u16,
        table_addr: u64,
        table_size: u64,
        page_size: u64,
    ) -> i64 {
        self.call_ints(
            opal::OPAL_PCI_MAP_PE_DMA_WINDOW,
            &[
                phb_id,
                pe,
                window_id.into(),
                levels.into(),
                table_addr,
                table_size,
                page_size,
            ],
        )
    }

    fn pci_map_pe_dma_window_real(
        &self,
        phb_id: u64,
        pe: u64,
        window_id: u16,
        pci_start: u64,
        pci_size: u64,
    ) -> i64 {
        self.call_ints(
            opal::OPAL_PCI_MAP_PE_DMA_WINDOW_REAL,
            &[phb_id, pe, window_id.into(), pci_start, pci_size],
        )
    }

    fn pci_tce_kill(
        &self,
        phb_id: u64,
        kill_type: u32,
        pe: u64,
        tce_size: u32,
        dma_addr: u64,
        npages: u32,
    ) -> i64 {
        self.call_ints(
            opal::OPAL_PCI_TCE_KILL,
            &[
                phb_id,
                kill_type.into(),
                pe,
                tce_size.into(),
                dma_addr,
                npages.into(),
            ],
        )
    }

    fn pci_config_read_byte(&self, phb_id: u64, bdfn: u64, offset: u64, value: &mut u8) -> i64 {
        let (rc, v) = rc_of(opal::pci_config_read(phb_id, bdfn as u16, offset as u16, 1));
        if let Some(v) = v {
            *value = v as u8;
        }
        rc
    }

    fn pci_config_read_half_word(
        &self,
        phb_id: u64,
        bdfn: u64,
        offset: u64,
        value: &mut u16,
    ) -> i64 {
        let (rc, v) = rc_of(opal::pci_config_read(phb_id, bdfn as u16, offset as u16, 2));
        if let Some(v) = v {
            *value = v as u16;
        }
        rc
    }

    fn pci_config_read_word(&self, phb_id: u64, bdfn: u64, offset: u64, value: &mut u32) -> i64 {
        let (rc, v) = rc_of(opal::pci_config_read(phb_id, bdfn as u16, offset as u16, 4));
        if let Some(v) = v {
            *value = v;
        }
        rc
    }

    fn pci_config_write_byte(&self, phb_id: u64, bdfn: u64, offset: u64, value: u8) -> i64 {
        rc_of(opal::pci_config_write(
            phb_id,
            bdfn as u16,
            offset as u16,
            1,
            value.into(),
        ))
        .0
    }

    fn pci_config_write_half_word(&self, phb_id: u64, bdfn: u64, offset: u64, value: u16) -> i64 {
        rc_of(opal::pci_config_write(
            phb_id,
            bdfn as u16,
            offset as u16,
            2,
            value.into(),
        ))
        .0
    }

    fn pci_config_write_word(&self, phb_id: u64, bdfn: u64, offset: u64, value: u32) -> i64 {
        rc_of(opal::pci_config_write(
            phb_id,
            bdfn as u16,
            offset as u16,
            4,
            value,
        ))
        .0
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
