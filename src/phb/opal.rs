//! The OPAL back end: skiboot owns the PHB and programs it on our behalf. The default.

use super::dma::{check_pe, Kill, PhbDma, PhbError, WindowParams};
use super::hw::{
    Bdfn, DmaWindowTable, EehClear, FreezeStatus, OpalPci, OpalTceKillType, PeNum, PeltvAction,
    PhbId, WindowId,
};

/// OPAL_PCI_SET_PE compare modes: all 16 bits of the RID (bus all bits, device, function).
const BUS_COMPARE_ALL: u8 = 7;
const DEV_COMPARE: u8 = 1;
const FUNC_COMPARE: u8 = 1;
/// OPAL_MAP_PE.
const ACTION_MAP: u8 = 1;

/// [`PhbDma`] through OPAL calls.
pub struct OpalBackend<O: OpalPci> {
    opal: O,
    phb: PhbId,
    num_pes: u32,
}

impl<O: OpalPci> OpalBackend<O> {
    /// The PHB OPAL knows as `phb` (`ibm,opal-phbid`), with `num_pes` PEs.
    pub fn new(opal: O, phb: PhbId, num_pes: u32) -> Self {
        Self { opal, phb, num_pes }
    }

    /// The OPAL interface, for configuration access ([`super::hw::OpalConfig`]).
    pub fn opal(&self) -> &O {
        &self.opal
    }

    /// The OPAL PHB id.
    pub fn phb_id(&self) -> PhbId {
        self.phb
    }

    /// Freezes `pe`'s MMIO and DMA as an error would (OPAL_PCI_EEH_FREEZE_SET, set all): for
    /// checking the freeze paths on hardware without a failing device. OPAL-only: the direct
    /// back end has no reason to freeze PEs.
    pub fn set_freeze(&self, pe: PeNum) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        Ok(self.opal.pci_eeh_freeze_set(self.phb, pe, EehClear::All)?)
    }

    fn kill_pe(&self, pe: PeNum) -> Result<(), PhbError> {
        Ok(self
            .opal
            .pci_tce_kill(self.phb, OpalTceKillType::Pe, pe, 0, 0, 0)?)
    }
}

impl<O: OpalPci> PhbDma for OpalBackend<O> {
    fn num_pes(&self) -> u32 {
        self.num_pes
    }

    fn set_pe(&self, bdfn: Bdfn, pe: PeNum) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        Ok(self.opal.pci_set_pe(
            self.phb,
            pe,
            bdfn,
            BUS_COMPARE_ALL,
            DEV_COMPARE,
            FUNC_COMPARE,
            ACTION_MAP,
        )?)
    }

    fn set_peltv(&self, parent: PeNum, child: PeNum, action: PeltvAction) -> Result<(), PhbError> {
        check_pe(parent, self.num_pes)?;
        check_pe(child, self.num_pes)?;
        Ok(self.opal.pci_set_peltv(self.phb, parent, child, action)?)
    }

    fn freeze_status(&self, pe: PeNum) -> Result<FreezeStatus, PhbError> {
        check_pe(pe, self.num_pes)?;
        Ok(self.opal.pci_eeh_freeze_status(self.phb, pe)?)
    }

    fn clear_freeze(&self, pe: PeNum) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        Ok(self
            .opal
            .pci_eeh_freeze_clear(self.phb, pe, EehClear::All)?)
    }

    fn map_window(
        &self,
        pe: PeNum,
        window: WindowId,
        table: &dyn DmaWindowTable,
    ) -> Result<(), PhbError> {
        let p = WindowParams::new(pe, window, self.num_pes, table)?;
        self.opal.pci_map_pe_dma_window(
            self.phb,
            pe,
            p.tve_index as u16,
            p.levels as u16,
            p.table_addr,
            p.level_size,
            1u64 << p.page_shift,
        )?;
        self.kill_pe(pe)
    }

    fn unmap_window(&self, pe: PeNum, window: WindowId) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        let index = super::regs::tve_index(pe.0, window.number()) as u16;
        self.opal
            .pci_map_pe_dma_window(self.phb, pe, index, 0, 0, 0, 0)?;
        self.kill_pe(pe)
    }

    fn kill(&self, kill: Kill) -> Result<(), PhbError> {
        kill.validate(self.num_pes)?;
        match kill {
            Kill::Pages {
                pe,
                bus_addr,
                page_shift,
                npages,
            } => Ok(self.opal.pci_tce_kill(
                self.phb,
                OpalTceKillType::Pages,
                pe,
                1u32 << page_shift,
                bus_addr,
                npages,
            )?),
            Kill::Pe(pe) => self.kill_pe(pe),
            Kill::All => {
                Ok(self
                    .opal
                    .pci_tce_kill(self.phb, OpalTceKillType::All, PeNum(0), 0, 0, 0)?)
            }
        }
    }
}
