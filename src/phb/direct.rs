//! The direct back end: IODA3 register programming, as skiboot's `hw/phb4.c` does it.
//!
//! Used when the kernel owns the PHB registers (and to check the OPAL back end against).
//! It edits the same structures skiboot set up: the TVT through `IODA_ADDR`/`IODA_DATA0`
//! and the in-memory RTT that `RTT_BAR` points at.

use spin::Mutex;

use super::dma::{check_pe, check_window, Kill, PhbDma, PhbError, WindowParams};
use super::hw::{Bdfn, DmaWindowTable, PhbMmio, PhysMemory};
use super::regs::{
    tve_index, DmaSync, IodaAddr, IodaTable, PhbReg, QDmaR, RtcInvalidate, RttBar, TceKill,
    TceKillCmd, Tve, RTT_BASE_MASK,
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
    /// Serialises IODA_ADDR/IODA_DATA0 pairs and RTT updates (virtual-mode operations).
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
        self.mmio.write(PhbReg::IODA_ADDR, tvt_addr(index).0);
        Tve(self.mmio.read(PhbReg::IODA_DATA0))
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
        self.mmio.write(PhbReg::IODA_ADDR, tvt_addr(index).0);
        self.mmio.write(PhbReg::IODA_DATA0, tve.0);
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

fn tvt_addr(index: u32) -> IodaAddr {
    // The TVT has at most 1024 entries (512 PEs x 2), the width of the index field;
    // indices come from validated PE numbers.
    IodaAddr::new(IodaTable::Tvt, index, false).unwrap_or(IodaAddr(0))
}

impl<M: PhbMmio, P: PhysMemory> PhbDma for DirectBackend<M, P> {
    fn num_pes(&self) -> u32 {
        self.num_pes
    }

    fn set_pe(&self, bdfn: Bdfn, pe: u32) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        let _g = self.ioda.lock();
        let base = self.rtt_base()?;
        self.mem
            .write(base + 2 * u64::from(bdfn.0), &Rte(pe as u16).to_be_bytes());
        // The MMIO store is ordered after the RTT store (PhbMmio contract).
        self.mmio
            .write(PhbReg::RTC_INVALIDATE, RtcInvalidate::ALL.bits());
        Ok(())
    }

    fn map_window(&self, pe: u32, window: u8, table: &dyn DmaWindowTable) -> Result<(), PhbError> {
        let p = WindowParams::new(pe, window, self.num_pes, table)?;
        self.write_tve(p.tve_index, p.tve);
        self.kill_locked(TceKillCmd::pe(pe))
    }

    fn unmap_window(&self, pe: u32, window: u8) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        check_window(window)?;
        self.write_tve(tve_index(pe, window), Tve::DISABLED);
        self.kill_locked(TceKillCmd::pe(pe))
    }

    fn kill(&self, kill: Kill) -> Result<(), PhbError> {
        kill.validate(self.num_pes)?;
        let cmd = match kill {
            // HW560152: page kills can be dropped when the queue backs up; kill the PE.
            Kill::Pages { pe, .. } | Kill::Pe(pe) => TceKillCmd::pe(pe),
            Kill::All => TceKillCmd::all(),
        };
        self.kill_locked(cmd)
    }
}
