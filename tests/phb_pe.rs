//! PE ownership transitions over both back ends: default window, take, owner tables
//! (shared between groups), release with every device's table base updated.

#[path = "support/phb_fakes.rs"]
mod fakes;

use std::sync::Arc;

use fakes::*;
use p9iommu::phb::direct::DirectBackend;
use p9iommu::phb::hw::{Bdfn, DmaWindowTable, PeNum, PhbId, WindowId};
use p9iommu::phb::opal::OpalBackend;
use p9iommu::phb::pe::{PeError, PeGroup};
use p9iommu::phb::regs::{tve_index, Tve};
use p9iommu::phb::{Kill, PhbDma};

const EDU: Bdfn = Bdfn::new(1, 0, 0);
const EDU_FN1: Bdfn = Bdfn::new(1, 0, 1);

/// A device's 32-bit DMA works iff the table its driver maps IOVAs in is the one the PHB's
/// TVE for its PE's window 0 points at.
fn dma32_works(tve: Tve, group: &PeGroup<FakeTable>, bdfn: Bdfn) -> bool {
    match group.device_table(bdfn) {
        Some(t) => tve.is_enabled() && tve.table_addr() == t.top_level_phys(),
        None => false,
    }
}

fn run_ownership_cycle(phb: &dyn PhbDma, tve: &dyn Fn(u32) -> Tve) {
    let factory = FakeFactory::new();
    let mut g = PeGroup::new(
        phb,
        1,
        DEFAULT32,
        &factory,
        &[(EDU, PeNum(3)), (EDU_FN1, PeNum(3))],
    )
    .unwrap();
    assert!(g.is_kernel_owned());
    assert_eq!(g.pes(), &[PeNum(3)]);
    assert_eq!(
        *factory.nodes.borrow(),
        vec![1],
        "default table on the PHB's node"
    );
    let first = g.default_table().unwrap().clone();
    assert!(dma32_works(tve(tve_index(3, 0)), &g, EDU));
    assert!(dma32_works(tve(tve_index(3, 0)), &g, EDU_FN1));

    // Take: default window gone, records cleared.
    g.take_ownership::<()>(phb).unwrap();
    assert!(!tve(tve_index(3, 0)).is_enabled());
    assert!(g.device_table(EDU).is_none() && g.default_table().is_none());
    assert!(!dma32_works(tve(tve_index(3, 0)), &g, EDU));
    assert_eq!(g.take_ownership::<()>(phb), Err(PeError::WrongOwner));

    // Owner attaches its tables.
    let t0 = Arc::new(owner_table(0x7000_0000, 0));
    let t1 = Arc::new(owner_table(0x7100_0000, 1));
    g.attach_table::<()>(phb, WindowId::DMA32, t0.clone())
        .unwrap();
    g.attach_table::<()>(phb, WindowId::DMA64, t1.clone())
        .unwrap();
    assert_eq!(tve(tve_index(3, 0)).table_addr(), 0x7000_0000);
    assert_eq!(tve(tve_index(3, 1)).table_addr(), 0x7100_0000);

    // Release: owner windows unmapped, a fresh default table mapped, every device updated.
    g.release_ownership(phb, &factory).unwrap();
    assert!(g.is_kernel_owned());
    assert!(!tve(tve_index(3, 1)).is_enabled());
    let fresh = g.default_table().unwrap().clone();
    assert_ne!(fresh.top_level_phys(), first.top_level_phys());
    assert_eq!(tve(tve_index(3, 0)).table_addr(), fresh.top_level_phys());
    for dev in [EDU, EDU_FN1] {
        assert!(
            Arc::ptr_eq(g.device_table(dev).unwrap(), &fresh),
            "{dev:?} table base not updated"
        );
        assert!(dma32_works(tve(tve_index(3, 0)), &g, dev));
    }
    assert_eq!(Arc::strong_count(&t0), 1, "owner table released");
    assert_eq!(*factory.nodes.borrow(), vec![1, 1]);
}

#[test]
fn ownership_cycle_direct() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = DirectBackend::new(&phb, &mem, 512, 100);
    run_ownership_cycle(&d, &|i| phb.tve(i));
    assert_eq!(mem.rte(EDU), Some(3));
}

#[test]
fn ownership_cycle_opal() {
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    run_ownership_cycle(&o, &|i| opal.tve(i));
    assert!(
        opal.violations.borrow().is_empty(),
        "{:?}",
        opal.violations.borrow()
    );
}

#[test]
fn release_failure_leaves_group_retryable() {
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    let factory = FakeFactory::new();
    let mut g = PeGroup::new(&o, 0, DEFAULT32, &factory, &[(EDU, PeNum(2))]).unwrap();
    g.take_ownership::<()>(&o).unwrap();
    factory.fail.set(true);
    assert_eq!(
        g.release_ownership(&o, &factory),
        Err(PeError::Table("no memory"))
    );
    assert!(!g.is_kernel_owned() && g.device_table(EDU).is_none());
    factory.fail.set(false);
    g.release_ownership(&o, &factory).unwrap();
    assert!(dma32_works(opal.tve(tve_index(2, 0)), &g, EDU));
}

#[test]
fn shared_table_serves_two_groups_and_kills_reach_both() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = DirectBackend::new(&phb, &mem, 512, 100);
    let factory = FakeFactory::new();
    let mut a = PeGroup::new(&d, 0, DEFAULT32, &factory, &[(EDU, PeNum(4))]).unwrap();
    let mut b = PeGroup::new(
        &d,
        0,
        DEFAULT32,
        &factory,
        &[(Bdfn::new(1, 1, 0), PeNum(5))],
    )
    .unwrap();
    a.take_ownership::<()>(&d).unwrap();
    b.take_ownership::<()>(&d).unwrap();
    let shared = Arc::new(owner_table(0x7000_0000, 0));
    a.attach_table::<()>(&d, WindowId::DMA32, shared.clone())
        .unwrap();
    b.attach_table::<()>(&d, WindowId::DMA32, shared.clone())
        .unwrap();
    assert_eq!(phb.tve(tve_index(4, 0)), phb.tve(tve_index(5, 0)));
    assert_eq!(Arc::strong_count(&shared), 3);

    // A TCE cleared in the shared table is killed in every PE using it.
    phb.kills.borrow_mut().clear();
    let pes: Vec<PeNum> = a.pes().iter().chain(b.pes()).copied().collect();
    p9iommu::phb::dma::kill_in_pes(
        &d,
        &pes,
        Kill::Pages {
            pe: PeNum(0),
            bus_addr: 0x1_0000,
            page_shift: 16,
            npages: 1,
        },
    )
    .unwrap();
    assert_eq!(*phb.kills.borrow(), vec![(1 << 62) | 4, (1 << 62) | 5]);

    // Detaching from one group leaves the other translating.
    a.detach_table::<()>(&d, WindowId::DMA32).unwrap();
    assert!(!phb.tve(tve_index(4, 0)).is_enabled());
    assert_eq!(phb.tve(tve_index(5, 0)).table_addr(), 0x7000_0000);
}

/// Setting a group up sets each PE's error domain up as Linux's `pnv_ioda_configure_pe`
/// does: a freeze left on the PE is cleared, and the PE joins its own PELT-V.
#[test]
fn group_setup_clears_freeze_and_joins_own_peltv() {
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    opal.freeze(6);
    let _g = PeGroup::new(&o, 0, DEFAULT32, &FakeFactory::new(), &[(EDU, PeNum(6))]).unwrap();
    assert!(opal.frozen.borrow().is_empty());
    assert_eq!(*opal.peltv.borrow(), [(6, 6)].into_iter().collect());
    assert!(opal.violations.borrow().is_empty());

    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = DirectBackend::new(&phb, &mem, 512, 100);
    phb.freeze(6);
    let _g = PeGroup::new(&d, 0, DEFAULT32, &FakeFactory::new(), &[(EDU, PeNum(6))]).unwrap();
    assert!(!phb.is_frozen(6));
    assert!(mem.peltv(512, 6, 6));
    assert!(!mem.peltv(512, 6, 7) && !mem.peltv(512, 7, 6));
}

/// The seed's SAS adapter: a device that DMAs through the kernel's 32-bit table *and* a 64-bit
/// window. An owner's tables replace both; on release the device's 32-bit record points at the
/// fresh default table (the seed's fix) and the kernel's 64-bit table is mapped again, the
/// same one it had.
fn run_both_windows_cycle(phb: &dyn PhbDma, tve: &dyn Fn(u32) -> Tve) {
    let factory = FakeFactory::new();
    let mut g = PeGroup::new(phb, 0, DEFAULT32, &factory, &[(EDU, PeNum(5))]).unwrap();
    let k64 = Arc::new(owner_table(0x7200_0000, 1));
    g.set_kernel_window1::<()>(phb, k64.clone()).unwrap();
    assert_eq!(tve(tve_index(5, 1)).table_addr(), 0x7200_0000);
    assert!(Arc::ptr_eq(g.window_table(WindowId::DMA64).unwrap(), &k64));
    assert!(dma32_works(tve(tve_index(5, 0)), &g, EDU));

    g.take_ownership::<()>(phb).unwrap();
    assert!(!tve(tve_index(5, 0)).is_enabled() && !tve(tve_index(5, 1)).is_enabled());
    assert_eq!(
        g.set_kernel_window1::<()>(phb, k64.clone()),
        Err(PeError::WrongOwner)
    );
    let t1 = Arc::new(owner_table(0x7300_0000, 1));
    g.attach_table::<()>(phb, WindowId::DMA64, t1.clone())
        .unwrap();
    assert_eq!(tve(tve_index(5, 1)).table_addr(), 0x7300_0000);

    g.release_ownership(phb, &factory).unwrap();
    assert_eq!(
        tve(tve_index(5, 1)).table_addr(),
        0x7200_0000,
        "the kernel's 64-bit table is back"
    );
    assert!(Arc::ptr_eq(g.window_table(WindowId::DMA64).unwrap(), &k64));
    assert!(dma32_works(tve(tve_index(5, 0)), &g, EDU));
    assert_eq!(Arc::strong_count(&t1), 1, "the owner's table released");
}

#[test]
fn both_kernel_windows_survive_an_ownership_round_trip() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = DirectBackend::new(&phb, &mem, 512, 100);
    run_both_windows_cycle(&d, &|i| phb.tve(i));
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    run_both_windows_cycle(&o, &|i| opal.tve(i));
    assert!(
        opal.violations.borrow().is_empty(),
        "{:?}",
        opal.violations.borrow()
    );
}
