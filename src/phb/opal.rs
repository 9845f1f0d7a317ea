//! The OPAL back end: skiboot owns the PHB and programs it on our behalf.

use super::dma::{check_pe, Kill, PhbDma, PhbError, WindowParams};
use super::hw::{Bdfn, DmaWindowTable, OpalError, OpalPci, OpalTceKillType};

/// OPAL_PCI_SET_PE compare modes: all 16 bits of the RID (bus all bits, device, function).
const BUS_COMPARE_ALL: u8 = 7;
const DEV_COMPARE: u8 = 1;
const FUNC_COMPARE: u8 = 1;
/// OPAL_MAP_PE.
const ACTION_MAP: u8 = 1;

/// [`PhbDma`] through OPAL calls.
pub struct OpalBackend<O: OpalPci> {
    opal: O,
    phb_id: u64,
    num_pes: u32,
}

impl<O: OpalPci> OpalBackend<O> {
    /// The PHB OPAL knows as `phb_id` (`ibm,opal-phbid`), with `num_pes` PEs.
    pub fn new(opal: O, phb_id: u64, num_pes: u32) -> Self {
        Self {
            opal,
            phb_id,
            num_pes,
        }
    }

    /// The OPAL interface, for configuration access ([`super::hw::OpalConfig`]).
    pub fn opal(&self) -> &O {
        &self.opal
    }

    /// The OPAL PHB id.
    pub fn phb_id(&self) -> u64 {
        self.phb_id
    }

    fn kill_pe(&self, pe: u32) -> Result<(), PhbError> {
        let rc =
            self.opal
                .pci_tce_kill(self.phb_id, OpalTceKillType::Pe as u32, pe.into(), 0, 0, 0);
        Ok(OpalError::check(rc)?)
    }
}

impl<O: OpalPci> PhbDma for OpalBackend<O> {
    fn num_pes(&self) -> u32 {
        self.num_pes
    }

    fn set_pe(&self, bdfn: Bdfn, pe: u32) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        let rc = self.opal.pci_set_pe(
            self.phb_id,
            pe.into(),
            bdfn.0.into(),
            BUS_COMPARE_ALL,
            DEV_COMPARE,
            FUNC_COMPARE,
            ACTION_MAP,
        );
        Ok(OpalError::check(rc)?)
    }

    fn map_window(&self, pe: u32, window: u8, table: &dyn DmaWindowTable) -> Result<(), PhbError> {
        let p = WindowParams::new(pe, window, self.num_pes, table)?;
        let rc = self.opal.pci_map_pe_dma_window(
            self.phb_id,
            pe.into(),
            p.tve_index as u16,
            p.levels as u16,
            p.table_addr,
            p.level_size,
            1u64 << p.page_shift,
        );
        OpalError::check(rc)?;
        self.kill_pe(pe)
    }

    fn unmap_window(&self, pe: u32, window: u8) -> Result<(), PhbError> {
        check_pe(pe, self.num_pes)?;
        super::dma::check_window(window)?;
        let index = super::regs::tve_index(pe, window) as u16;
        let rc = self
            .opal
            .pci_map_pe_dma_window(self.phb_id, pe.into(), index, 0, 0, 0, 0);
        OpalError::check(rc)?;
        self.kill_pe(pe)
    }

    fn kill(&self, kill: Kill) -> Result<(), PhbError> {
        kill.validate(self.num_pes)?;
        let rc = match kill {
            Kill::Pages {
                pe,
                bus_addr,
                page_shift,
                npages,
            } => self.opal.pci_tce_kill(
                self.phb_id,
                OpalTceKillType::Pages as u32,
                pe.into(),
                1u32 << page_shift,
                bus_addr,
                npages,
            ),
            Kill::Pe(pe) => return self.kill_pe(pe),
            Kill::All => {
                self.opal
                    .pci_tce_kill(self.phb_id, OpalTceKillType::All as u32, 0, 0, 0, 0)
            }
        };
        Ok(OpalError::check(rc)?)
    }
}
