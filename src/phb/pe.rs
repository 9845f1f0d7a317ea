//! PE groups and their ownership, as VFIO does it on powernv.
//!
//! A [`PeGroup`] is the unit of ownership: one or more PEs and the PCI functions in them.
//! By default the kernel owns it and every PE has a default 32-bit DMA window (window 0)
//! over a table created on the PHB's NUMA node; each device records the table its 32-bit
//! DMA goes through (Linux's `set_iommu_table_base`). Taking ownership tears the default
//! window down and clears those records; the owner then attaches its own tables, which
//! may be shared between groups (`Arc`). Releasing unmaps the owner's windows, creates a
//! fresh default table, maps it, and updates the recorded table of EVERY device in the
//! group: the 2017 Linux bug (ioda2 "Update iommu table base on ownership change") left the
//! devices pointing at the table freed at take time, so their 32-bit DMA broke.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::dma::{configure_pe, kill_in_pes, Kill, PhbDma, PhbError};
use super::hw::{Bdfn, DmaWindowTable, PeNum, WindowId};

/// Geometry of the kernel's default 32-bit DMA window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultWindow {
    /// First bus address (0 for the 32-bit window).
    pub bus_offset: u64,
    /// Bytes of bus address space.
    pub window_size: u64,
    /// IO page shift.
    pub page_shift: u32,
    /// Number of table levels.
    pub levels: u32,
}

/// Creates TCE tables for default windows.
pub trait TableFactory {
    /// The table type.
    type Table: DmaWindowTable;
    /// Why creation failed (typically out of memory on that node).
    type Error;
    /// Creates an empty table for `window`, its memory on NUMA node `node`.
    fn create(&self, node: u32, window: &DefaultWindow) -> Result<Self::Table, Self::Error>;
}

/// Why a PE group operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeError<E> {
    /// The PHB refused.
    Phb(PhbError),
    /// The default table could not be created.
    Table(E),
    /// The operation needs the other owner (kernel vs. external).
    WrongOwner,
    /// A group needs at least one device.
    Empty,
}

impl<E> From<PhbError> for PeError<E> {
    fn from(e: PhbError) -> Self {
        PeError::Phb(e)
    }
}

/// Who owns a group's DMA windows.
#[derive(Debug)]
enum Owner<T> {
    /// The kernel, with its default table in window 0 of every PE.
    Kernel { default: Arc<T> },
    /// An external owner (a guest through VFIO-like ownership), with its attached tables.
    External { windows: [Option<Arc<T>>; 2] },
}

/// One PCI function of a group.
#[derive(Debug)]
struct Member<T> {
    bdfn: Bdfn,
    pe: PeNum,
    /// The table the device's 32-bit DMA goes through; `None` while externally owned.
    table: Option<Arc<T>>,
}

/// A group of PEs owned as one, and the PCI functions in them.
#[derive(Debug)]
pub struct PeGroup<T> {
    pes: Vec<PeNum>,
    members: Vec<Member<T>>,
    node: u32,
    default_window: DefaultWindow,
    owner: Owner<T>,
    /// The kernel's own 64-bit window table (window 1 of every PE), if it set one: unmapped
    /// while an external owner holds the group, mapped again on release.
    kernel_window1: Option<Arc<T>>,
}

impl<T: DmaWindowTable> PeGroup<T> {
    /// Builds a kernel-owned group: maps each `(function, PE)` of `devices` on the PHB and
    /// sets each PE's error domain up ([`configure_pe`]: freeze cleared, the PE in its own
    /// PELT-V), creates the default table on `node` and maps it as window 0 of every PE, and records
    /// it as every device's table.
    pub fn new<F: TableFactory<Table = T>>(
        phb: &dyn PhbDma,
        node: u32,
        default_window: DefaultWindow,
        factory: &F,
        devices: &[(Bdfn, PeNum)],
    ) -> Result<Self, PeError<F::Error>> {
        if devices.is_empty() {
            return Err(PeError::Empty);
        }
        let mut pes: Vec<PeNum> = devices.iter().map(|&(_, pe)| pe).collect();
        pes.sort_unstable();
        pes.dedup();
        for &(bdfn, pe) in devices {
            configure_pe(phb, bdfn, pe)?;
        }
        let members = devices
            .iter()
            .map(|&(bdfn, pe)| Member {
                bdfn,
                pe,
                table: None,
            })
            .collect();
        let mut group = PeGroup {
            pes,
            members,
            node,
            default_window,
            owner: Owner::External {
                windows: [None, None],
            },
            kernel_window1: None,
        };
        group.install_default(phb, factory)?;
        Ok(group)
    }

    /// The group's PE numbers, ascending.
    pub fn pes(&self) -> &[PeNum] {
        &self.pes
    }

    /// The group's functions.
    pub fn devices(&self) -> impl Iterator<Item = Bdfn> + '_ {
        self.members.iter().map(|m| m.bdfn)
    }

    /// The PE of `bdfn`, if it is in the group.
    pub fn pe_of(&self, bdfn: Bdfn) -> Option<PeNum> {
        self.members.iter().find(|m| m.bdfn == bdfn).map(|m| m.pe)
    }

    /// NUMA node the group's default tables are created on (the PHB's).
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Whether the kernel owns the group.
    pub fn is_kernel_owned(&self) -> bool {
        matches!(self.owner, Owner::Kernel { .. })
    }

    /// The kernel's default table, while the kernel owns the group.
    pub fn default_table(&self) -> Option<&Arc<T>> {
        match &self.owner {
            Owner::Kernel { default } => Some(default),
            Owner::External { .. } => None,
        }
    }

    /// The table in `window` (the default table in window 0 while kernel-owned).
    pub fn window_table(&self, window: WindowId) -> Option<&Arc<T>> {
        match (&self.owner, window) {
            (Owner::Kernel { default }, WindowId::DMA32) => Some(default),
            (Owner::Kernel { .. }, _) => self.kernel_window1.as_ref(),
            (Owner::External { windows }, w) => windows[usize::from(w.number())].as_ref(),
        }
    }

    /// The table `bdfn`'s 32-bit DMA goes through (what a driver maps its IOVAs in).
    /// `None` if the device is not in the group or the group is externally owned.
    pub fn device_table(&self, bdfn: Bdfn) -> Option<&Arc<T>> {
        self.members.iter().find(|m| m.bdfn == bdfn)?.table.as_ref()
    }

    /// While the kernel owns the group, maps `table` as window 1 (the 64-bit window) of
    /// every PE, for devices that DMA through both windows (the seed's SAS adapter). The group
    /// keeps it across an external owner's tenure and maps it again on release.
    pub fn set_kernel_window1<E>(
        &mut self,
        phb: &dyn PhbDma,
        table: Arc<T>,
    ) -> Result<(), PeError<E>> {
        if !self.is_kernel_owned() {
            return Err(PeError::WrongOwner);
        }
        self.kernel_window1 = None;
        self.map_everywhere(phb, WindowId::DMA64, &table)?;
        self.kernel_window1 = Some(table);
        Ok(())
    }

    /// Gives the group to an external owner: unmaps the kernel's windows of every PE, drops
    /// the default table and clears every device's recorded table (the kernel's 64-bit table,
    /// if any, is kept for the release).
    pub fn take_ownership<E>(&mut self, phb: &dyn PhbDma) -> Result<(), PeError<E>> {
        if !self.is_kernel_owned() {
            return Err(PeError::WrongOwner);
        }
        for &pe in &self.pes {
            phb.unmap_window(pe, WindowId::DMA32)?;
            if self.kernel_window1.is_some() {
                phb.unmap_window(pe, WindowId::DMA64)?;
            }
        }
        for m in &mut self.members {
            m.table = None;
        }
        self.owner = Owner::External {
            windows: [None, None],
        };
        Ok(())
    }

    /// Attaches an owner's table as `window` of every PE (replacing what was there). On
    /// failure the window is left unmapped on every PE.
    pub fn attach_table<E>(
        &mut self,
        phb: &dyn PhbDma,
        window: WindowId,
        table: Arc<T>,
    ) -> Result<(), PeError<E>> {
        let Owner::External { windows } = &mut self.owner else {
            return Err(PeError::WrongOwner);
        };
        let slot = &mut windows[usize::from(window.number())];
        *slot = None;
        for &pe in &self.pes {
            if let Err(e) = phb.map_window(pe, window, &*table) {
                for &done in &self.pes {
                    // Best effort: the caller learns of the first error.
                    let _ = phb.unmap_window(done, window);
                }
                return Err(e.into());
            }
        }
        *slot = Some(table);
        Ok(())
    }

    /// Detaches the owner's table from `window` of every PE and returns it.
    pub fn detach_table<E>(
        &mut self,
        phb: &dyn PhbDma,
        window: WindowId,
    ) -> Result<Option<Arc<T>>, PeError<E>> {
        let Owner::External { windows } = &mut self.owner else {
            return Err(PeError::WrongOwner);
        };
        if windows[usize::from(window.number())].is_none() {
            return Ok(None);
        }
        for &pe in &self.pes {
            phb.unmap_window(pe, window)?;
        }
        Ok(windows[usize::from(window.number())].take())
    }

    /// Returns the group to the kernel: unmaps the owner's windows, creates a fresh default
    /// table on the group's node, maps it as window 0 of every PE, updates the recorded
    /// table of every device, and maps the kernel's 64-bit table again if it had one. If the
    /// default table cannot be created the group stays externally owned with no windows, and
    /// the call can be retried.
    pub fn release_ownership<F: TableFactory<Table = T>>(
        &mut self,
        phb: &dyn PhbDma,
        factory: &F,
    ) -> Result<(), PeError<F::Error>> {
        if self.is_kernel_owned() {
            return Err(PeError::WrongOwner);
        }
        for window in [WindowId::DMA32, WindowId::DMA64] {
            self.detach_table(phb, window)?;
        }
        self.install_default(phb, factory)?;
        if let Some(t) = self.kernel_window1.clone() {
            self.map_everywhere(phb, WindowId::DMA64, &t)?;
        }
        Ok(())
    }

    /// Maps `table` as `window` of every PE; on failure, unmaps it from all of them.
    fn map_everywhere(
        &self,
        phb: &dyn PhbDma,
        window: WindowId,
        table: &T,
    ) -> Result<(), PhbError> {
        for &pe in &self.pes {
            if let Err(e) = phb.map_window(pe, window, table) {
                for &done in &self.pes {
                    // Best effort: the caller learns of the first error.
                    let _ = phb.unmap_window(done, window);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Invalidates `kill` in every PE of the group (a table shared by the PEs must be
    /// killed in all of them). Does not allocate.
    pub fn kill(&self, phb: &dyn PhbDma, kill: Kill) -> Result<(), PhbError> {
        kill_in_pes(phb, &self.pes, kill)
    }

    fn install_default<F: TableFactory<Table = T>>(
        &mut self,
        phb: &dyn PhbDma,
        factory: &F,
    ) -> Result<(), PeError<F::Error>> {
        let table = Arc::new(
            factory
                .create(self.node, &self.default_window)
                .map_err(PeError::Table)?,
        );
        for &pe in &self.pes {
            if let Err(e) = phb.map_window(pe, WindowId::DMA32, &*table) {
                for &done in &self.pes {
                    let _ = phb.unmap_window(done, WindowId::DMA32);
                }
                return Err(e.into());
            }
        }
        // Every device, not only the ones added now: this is the seed's fix.
        for m in &mut self.members {
            m.table = Some(table.clone());
        }
        self.owner = Owner::Kernel { default: table };
        Ok(())
    }
}
