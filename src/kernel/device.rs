//! Handing a PCI device to a guest, and taking it back: the hypervisor takes ownership of the
//! device's PE, points the PE's two TVEs at fresh tables and gives the guest those same tables
//! as its two windows (`guests::WINDOWS`), each with a TCE kill that reaches the PHB, and maps
//! the device's BAR into the guest's partition-scoped tree (cache-inhibited, guarded) at
//! `abi::DEVICE_BAR_GPA`. Taking it back clears the guest's windows (every TCE it left is
//! cleared and killed), unmaps the BAR and hands the PE back to the kernel, whose default
//! window is restored.
//!
//! The kill goes through OPAL_PCI_TCE_KILL, from hypervisor real mode when the hypercall is
//! handled there: on PHB4 that is what Linux's KVM does (`opal_rm_pci_tce_kill`), and it keeps
//! the PHB with the one back end that holds it (`phb::claim`).
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::ppc64::spr::{self, Msr};
use crate::hcall::{Attached, KillFailed, TceInvalidate};
use crate::hv::abi;
use crate::kernel::guests::{window_table, Partition, WINDOWS};
use crate::kernel::pci::{self, Backend, EduRig, KTable, PciError, PhbHandle};
use crate::mm::{HostPhys, VirtMode};
use crate::phb::glue::TableKill;
use crate::phb::pe::{DefaultWindow, PeGroup, TableFactory};
use crate::phb::{PeNum, PhbDma, WindowId};

/// The PE the device is put in.
pub const PE: PeNum = PeNum(1);

/// The kernel's default window while it owns the device: 256 MiB of 4 KiB pages at bus 0.
pub const DEFAULT_WINDOW: DefaultWindow = DefaultWindow {
    bus_offset: 0,
    window_size: 1 << 28,
    page_shift: 12,
    levels: 2,
};

/// Kernel tables for default windows.
pub struct Factory;

impl TableFactory for Factory {
    type Table = KTable;
    type Error = PciError;
    fn create(&self, node: u32, w: &DefaultWindow) -> Result<KTable, PciError> {
        pci::new_table(node, w.bus_offset, w.page_shift, w.window_size, w.levels)
    }
}

/// A PHB's TCE kill for one table, counted, and counted apart when it ran with the MMU off.
pub struct CountedKill {
    inner: TableKill<Arc<PhbHandle>>,
    /// Kills issued, and how many of them from real mode.
    pub kills: AtomicU64,
    pub real_mode: AtomicU64,
}

impl TceInvalidate for CountedKill {
    fn invalidate(&self, cookie: u64, first: u64, count: u64) -> Result<(), KillFailed> {
        self.kills.fetch_add(1, Ordering::Relaxed);
        if !spr::msr().intersects(Msr::IR | Msr::DR) {
            self.real_mode.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.invalidate(cookie, first, count)
    }
}

/// An edu device set up in a kernel-owned PE, ready to be handed to a guest.
pub struct Device {
    pub rig: EduRig,
    pub phb: Arc<PhbHandle>,
    pub group: PeGroup<KTable>,
    /// The kills of the guest's two windows while the guest owns the device.
    pub kills: [Arc<CountedKill>; 2],
}

/// The `nth` edu device (see `pci::find_edu`) in its own kernel-owned PE, through OPAL; `None`
/// when there is no such device (`--edu 0`, a real machine).
pub fn kernel_owned(nth: usize) -> Result<Option<Device>, String> {
    let Some(rig) = pci::find_edu(nth).map_err(|e| format!("{e:?}"))? else {
        return Ok(None);
    };
    // SAFETY: the tables stay alive while a TVE points at them (the group and the guest's
    // windows hold them), and `Device::release` leaves the PHB as it was found.
    let phb =
        Arc::new(unsafe { pci::backend(Backend::Opal, &rig.info) }.map_err(|e| format!("{e:?}"))?);
    let group = PeGroup::new(
        &*phb,
        rig.info.node,
        DEFAULT_WINDOW,
        &Factory,
        &[(rig.bdfn, PE)],
    )
    .map_err(|e| format!("{e:?}"))?;
    let kill = || {
        Arc::new(CountedKill {
            inner: TableKill::new(phb.clone(), vec![PE], 12, 0),
            kills: AtomicU64::new(0),
            real_mode: AtomicU64::new(0),
        })
    };
    let kills = [kill(), kill()];
    Ok(Some(Device {
        rig,
        phb,
        group,
        kills,
    }))
}

impl Device {
    /// Hands the device to the guest of `p` (see the module doc).
    pub fn give(&mut self, p: &mut Partition, v: VirtMode) -> Result<(), String> {
        let e = |e| format!("{e:?}");
        self.group
            .take_ownership::<PciError>(&*self.phb)
            .map_err(e)?;
        let cookie = (self.rig.info.opal_phb_id.0 << 32) | u64::from(PE.0);
        let mut attached = vec![];
        for (w, id) in [WindowId::DMA32, WindowId::DMA64].into_iter().enumerate() {
            let t = Arc::new(window_table(w).map_err(|e| String::from(e.0))?);
            self.group
                .attach_table::<PciError>(&*self.phb, id, t.clone())
                .map_err(e)?;
            let (_, bus, shift, _, _) = WINDOWS[w];
            self.kills[w] = Arc::new(CountedKill {
                inner: TableKill::new(self.phb.clone(), vec![PE], shift, bus),
                kills: AtomicU64::new(0),
                real_mode: AtomicU64::new(0),
            });
            attached.push(Attached {
                table: t,
                kill: self.kills[w].clone(),
                cookie,
            });
        }
        let [a, b]: [Attached; 2] = attached.try_into().map_err(|_| String::from("windows"))?;
        p.attach_device(v, [a, b]).map_err(|e| String::from(e.0))?;
        p.map_device_bar(HostPhys(self.rig.bar_phys))
            .map_err(|e| String::from(e.0))
    }

    /// Takes the device back from the guest of `p`: its windows cleared (and killed), its BAR
    /// unmapped, the PE the kernel's again with a fresh default table.
    pub fn take_back(&mut self, p: &mut Partition, v: VirtMode) -> Result<(), String> {
        p.unmap_device_bar();
        // A DMA the guest sent through an IOVA it had cleared freezes the PE on PHB4: report
        // it, and clear it before the kernel uses the device again.
        match crate::phb::dma::recover_freeze(&*self.phb, PE) {
            Ok(None) => {}
            Ok(Some(st)) => crate::kprintln!(
                "p9iommu: {PE} of the device LPID {} had was frozen ({:?}, {:?}): cleared",
                p.lpid,
                st.state,
                st.error
            ),
            Err(e) => return Err(format!("the PE's freeze did not clear: {e:?}")),
        }
        if !p.detach_device(v) {
            return Err("the guest's windows could not be cleared".into());
        }
        self.group
            .release_ownership(&*self.phb, &Factory)
            .map_err(|e| format!("{e:?}"))
    }

    /// Leaves the PHB as it was found: both windows off, no freeze, the device in the
    /// reserved PE.
    pub fn release(self) -> Result<(), String> {
        self.rig
            .clean_up(&*self.phb, PE)
            .map_err(|e| format!("{e:?}"))
    }

    /// The PHB the device is behind.
    pub fn phb(&self) -> &dyn PhbDma {
        &*self.phb
    }
}

/// Where the guest finds the device's BAR.
pub const BAR_GPA: u64 = abi::DEVICE_BAR_GPA;
