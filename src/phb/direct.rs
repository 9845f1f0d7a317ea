//! The direct back end: IODA3 register programming, as skiboot's `hw/phb4.c` does it.
//!
//! A bring-up and test back end (to check the OPAL back end against, and to see what the
//! hardware does without firmware in the way); OPAL stays the default. It edits the same
//! structures skiboot set up: the TVT, PESTA/PESTB and PEEV through `IODA_ADDR`/`IODA_DATA0`,
//! and the in-memory RTT and PELT-V that `RTT_BAR` and `PELTV_BAR` point at. skiboot keeps
//! its own copies (`tve_cache`, restored on a PHB reset or EEH recovery), so a PHB must never
//! be driven by both back ends at once ([`super::claim`]), and there must be ONE instance per
//! PHB, whose locks every user shares ([`super::claim::PhbSlots`]).
//!
//! Freeze clearing writes PESTA/PESTB as skiboot's `phb4_eeh_freeze_clear` does, but does
//! not clear the PHB's error registers (skiboot's `phb4_err_clear`): on hardware, prefer the
//! OPAL back end for error recovery.

use spin::Mutex;

use super::dma::{check_pe, Kill, PhbDma, PhbError, WindowParams};
use super::hw::{
    Bdfn, DmaWindowTable, FreezeState, FreezeStatus, PciErrorType, PeNum, PeltvAction, PhbMmio,
    PhysMemory, WindowId,
};
use super::regs::{
    peev_bit, peltv_bit, tve_index, DmaSync, IodaAddr, IodaTable, PhbReg, QDmaR, RtcInvalidate,
    RttBar, TceKill, TceKillCmd, Tve, PELTV_BAR_ENABLE, PELTV_BASE_MASK, PESTA_MMIO_FROZEN,
    PESTB_DMA_STOPPED, RTT_BASE_MASK,
};

/// What a fenced PHB reports for every PE (skiboot: MMIO and DMA frozen, a PHB error).
const FENCED: FreezeStatus = FreezeStatus {
    state: FreezeState::MmioDma,
    error: PciErrorType::Phb,
};

/// Default bound on register polls in the kill sequence.
pub const DEFAULT_POLL_LIMIT: u32 = 1_000_000;

/// One RTT entry: the PE number of a requester ID, stored big-endian in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rte(pub u16);

impl Rte {
    /// The entry as the PHB reads it from memory.
    pub fn to_be_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
    /// An entry read from memory.
    pub fn from_be_bytes(b: [u8; 2]) -> Rte {
        Rte(u16::from_be_bytes(b))
    }
}

/// [`PhbDma`] by direct register programming.
pub struct DirectBackend<M: PhbMmio, P: PhysMemory> {
    mmio: M,
    mem: P,
    num_pes: u32,
    poll_limit: u32,
    /// Serialises IODA_ADDR/IODA_DATA0 pairs and RTT and PELT-V updates (virtual-mode
    /// operations).
    ioda: Mutex<()>,
    /// Serialises the kill sequence (one kill queue slot, one sync). Taken only inside
    /// [`DirectBackend::kill_locked`], whose polls are bounded, so a holder never keeps it
    /// across anything but one kill.
    kill_lock: Mutex<()>,
}

impl<M: PhbMmio, P: PhysMemory> DirectBackend<M, P> {
    /// A back end for a PHB with `num_pes` PEs, polling status registers at most
    /// `poll_limit` times per wait.
    pub fn new(mmio: M, mem: P, num_pes: u32, poll_limit: u32) -> Self {
        Self {
            mmio,
            mem,
            num_pes,
            poll_limit: poll_limit.max(1),
            ioda: Mutex::new(()),
            kill_lock: Mutex::new(()),
        }
    }

    /// The register interface.
    pub fn mmio(&self) -> &M {
        &self.mmio
    }

    /// The memory interface.
    pub fn mem(&self) -> &P {
        &self.mem
    }

    /// Reads the TVE at `index` back from the PHB.
    pub fn read_tve(&self, index: u32) -> Tve {
        let _g = self.ioda.lock();
        read_tve(&self.mmio, index)
    }

    /// The PE's raw PESTA and PESTB entries (bit 63: MMIO frozen / DMA stopped; the rest
    /// describes the error that froze it), for reports.
    pub fn read_pest(&self, pe: PeNum) -> Result<(u64, u64), PhbError> {
        check_pe(pe, self.num_pes)?;
        let _g = self.ioda.lock();
        Ok((
            self.ioda_read(IodaTable::PestA, pe.0),
            self.ioda_read(IodaTable::PestB, pe.0),
        ))
    }

    /// Reads entry `index` of `table`; the caller holds `ioda`.
    fn ioda_read(&self, table: IodaTable, index: u32) -> u64 {
        self.mmio
            .write(PhbReg::IODA_ADDR, ioda_addr(table, index).0);
        self.mmio.read(PhbReg::IODA_DATA0)
    }

    /// Writes entry `index` of `table`; the caller holds `ioda`.
    fn ioda_write(&self, table: IodaTable, index: u32, value: u64) {
        self.mmio
            .write(PhbReg::IODA_ADDR, ioda_addr(table, index).0);
        self.mmio.write(PhbReg::IODA_DATA0, value);
    }

    /// The PE the RTT gives `bdfn`.
    pub fn read_rte(&self, bdfn: Bdfn) -> Result<Rte, PhbError> {
        let base = self.rtt_base()?;
        let mut b = [0u8; 2];
        self.mem.read(base + 2 * u64::from(bdfn.0), &mut b);
        Ok(Rte::from_be_bytes(b))
    }

    fn rtt_base(&self) -> Result<u64, PhbError> {
        let bar = self.mmio.read(PhbReg::RTT_BAR);
        if bar == u64::MAX {
            return Err(PhbError::Fenced(PhbReg::RTT_BAR));
        }
        if !RttBar::from_bits_retain(bar).contains(RttBar::ENABLE) {
            return Err(PhbError::RttDisabled);
        }
        Ok(bar & RTT_BASE_MASK)
    }

    fn write_tve(&self, index: u32, tve: Tve) {
        let _g = self.ioda.lock();
        self.ioda_write(IodaTable::Tvt, index, tve.0);
    }

    fn peltv_base(&self) -> Result<u64, PhbError> {
        let bar = self.mmio.read(PhbReg::PELTV_BAR);
        if bar == u64::MAX {
            return Err(PhbError::Fenced(PhbReg::PELTV_BAR));
        }
        if bar & PELTV_BAR_ENABLE == 0 {
            return Err(PhbError::PeltvDisabled);
        }
        Ok(bar & PELTV_BASE_MASK)
    }

    /// Polls `reg` until `value & mask == want`.
    fn wait(&self, reg: PhbReg, mask: u64, want: u64) -> Result<(), PhbError> {
        for _ in 0..self.poll_limit {
            let v = self.mmio.read(reg);
            if v == u64::MAX {
                return Err(PhbError::Fenced(reg));
            }
            if v & mask == want {
                return Ok(());
            }
        }
        Err(PhbError::Timeout(reg))
    }

    /// skiboot's PHB4 kill: wait for a free kill slot, queue the kill, start a DMA read
    /// sync, wait for the kill to drain (`Q_DMA_R`), then for the sync to complete.
    fn kill_locked(&self, cmd: TceKillCmd) -> Result<(), PhbError> {
        let _g = self.kill_lock.lock();
        let busy = (TceKill::ALL | TceKill::PE | TceKill::ONE).bits();
        self.wait(PhbReg::TCE_KILL, busy, 0)?;
        self.mmio.write(PhbReg::TCE_KILL, cmd.0);
        self.mmio
            .write(PhbReg::DMA_READ_WRITE_SYNC, DmaSync::READ_START.bits());
        self.wait(PhbReg::Q_DMA_R, QDmaR::TCE_KILL_STATUS.bits(), 0)?;
        let done = DmaSync::READ_COMPLETE.bits();
        self.wait(PhbReg::DMA_READ_WRITE_SYNC, done, done)
    }
}

fn ioda_addr(table: IodaTable, index: u32) -> IodaAddr {
    // The largest IODA table the driver selects, the TVT, has at most 1024 entries (512 PEs
    // x 2), the width of the index field; indices come from validated PE numbers.
    IodaAddr::new(table, index, false).unwrap_or(IodaAddr(0))
}

/// Reads entry `index` of `table` through `IODA_ADDR`/`IODA_DATA0` of `mmio`, with no lock:
/// for a caller that knows nothing else uses the IODA registers meanwhile (diagnostics).
pub fn read_ioda(mmio: &impl PhbMmio, table: IodaTable, index: u32) -> u64 {
    mmio.write(PhbReg::IODA_ADDR, ioda_addr(table, index).0);
    mmio.read(PhbReg::IODA_DATA0)
}

/// The TVE at `index`, as [`read_ioda`] reads it.
pub fn read_tve(mmio: &impl PhbMmio, index: u32) -> Tve {
    Tve(read_ioda(mmio, IodaTable::Tvt, index))
}

impl<M: PhbMmio, P: PhysMemory> PhbDma for DirectBackend<M, P> {
    fn num_pes(&self) -> u32 {
        self.num_pes
    }

    fn set_pe(&self, bdfn: Bdfn, pe: PeNum) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        let _g = self.ioda.lock();
        let base = self.rtt_base()?;
        // One 16-bit store: the PHB never sees half an entry.
        self.mem
            .write_be16(base + 2 * u64::from(bdfn.0), pe.0 as u16);
        // The MMIO store is ordered after the RTT store (PhbMmio contract).
        self.mmio
            .write(PhbReg::RTC_INVALIDATE, RtcInvalidate::ALL.bits());
        Ok(())
    }

    fn set_peltv(&self, parent: PeNum, child: PeNum, action: PeltvAction) -> Result<(), PhbError> {
        check_pe(parent, self.num_pes)?;
        check_pe(child, self.num_pes)?;
        let _g = self.ioda.lock();
        // skiboot sizes the rows by its max_num_pes, which is the `ibm,opal-num-pes` it
        // reports on PHB4 (`p->num_pes = p->max_num_pes`).
        let (offset, mask) = peltv_bit(self.num_pes, parent.0, child.0);
        let pa = self.peltv_base()? + offset;
        let mut b = [0u8];
        self.mem.read(pa, &mut b);
        b[0] = match action {
            PeltvAction::Add => b[0] | mask,
            PeltvAction::Remove => b[0] & !mask,
        };
        // One byte store.
        self.mem.write(pa, &b);
        Ok(())
    }

    fn freeze_status(&self, pe: PeNum) -> Result<FreezeStatus, PhbError> {
        check_pe(pe, self.num_pes)?;
        let _g = self.ioda.lock();
        // skiboot phb4_eeh_freeze_status: no PEEV bit, no freeze; else PESTA/PESTB bit 0.
        let (entry, bit) = peev_bit(pe.0);
        let peev = self.ioda_read(IodaTable::Peev, entry);
        if peev == u64::MAX {
            return Ok(FENCED);
        }
        if peev & bit == 0 {
            return Ok(FreezeStatus::CLEAR);
        }
        let a = self.ioda_read(IodaTable::PestA, pe.0);
        let b = self.ioda_read(IodaTable::PestB, pe.0);
        if a == u64::MAX && b == u64::MAX {
            return Ok(FENCED);
        }
        Ok(FreezeStatus {
            state: FreezeState::from_bits(a & PESTA_MMIO_FROZEN != 0, b & PESTB_DMA_STOPPED != 0),
            error: PciErrorType::NoError,
        })
    }

    fn clear_freeze(&self, pe: PeNum) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        let _g = self.ioda.lock();
        // skiboot phb4_eeh_freeze_clear with OPAL_EEH_ACTION_CLEAR_FREEZE_ALL.
        self.ioda_write(IodaTable::PestA, pe.0, 0);
        self.ioda_write(IodaTable::PestB, pe.0, 0);
        Ok(())
    }

    fn map_window(
        &self,
        pe: PeNum,
        window: WindowId,
        table: &dyn DmaWindowTable,
    ) -> Result<(), PhbError> {
        let p = WindowParams::new(pe, window, self.num_pes, table)?;
        self.write_tve(p.tve_index, p.tve);
        self.kill_locked(TceKillCmd::pe(pe.0))
    }

    fn unmap_window(&self, pe: PeNum, window: WindowId) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        self.write_tve(tve_index(pe.0, window.number()), Tve::DISABLED);
        self.kill_locked(TceKillCmd::pe(pe.0))
    }

    fn kill(&self, kill: Kill) -> Result<(), PhbError> {
        kill.validate(self.num_pes)?;
        let cmd = match kill {
            // HW560152: page kills can be dropped when the queue backs up; kill the PE.
            Kill::Pages { pe, .. } | Kill::Pe(pe) => TceKillCmd::pe(pe.0),
            Kill::All => TceKillCmd::all(),
        };
        self.kill_locked(cmd)
    }
}
