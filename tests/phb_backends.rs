//! Both PHB back ends against fakes: exact register sequences for the direct one, exact
//! calls and skiboot's argument rules for the OPAL one, and the same PHB state from both.

#[path = "support/phb_fakes.rs"]
mod fakes;

use fakes::*;
use p9iommu::phb::direct::DirectBackend;
use p9iommu::phb::dma::{configure_pe, recover_freeze};
use p9iommu::phb::hw::{
    Bdfn, FreezeState, FreezeStatus, OpalError, PciErrorType, PeNum, PhbId, WindowId,
};
use p9iommu::phb::opal::OpalBackend;
use p9iommu::phb::regs::{PhbReg, Tve};
use p9iommu::phb::{Kill, PhbDma, PhbError};

const TCE_KILL: PhbReg = PhbReg::TCE_KILL;
const W0: WindowId = WindowId::DMA32;
const W1: WindowId = WindowId::DMA64;
const SYNC: PhbReg = PhbReg::DMA_READ_WRITE_SYNC;

fn direct<'a>(phb: &'a FakePhb, mem: &'a FakeMem) -> DirectBackend<&'a FakePhb, &'a FakeMem> {
    DirectBackend::new(phb, mem, 512, 100)
}

/// The log with TCE_KILL reads reduced to their busy bits (the register keeps the last PE
/// number, as QEMU's model does).
fn log(phb: &FakePhb) -> Vec<Op> {
    phb.take_log()
        .into_iter()
        .map(|op| match op {
            Op::R(r, v) if r == TCE_KILL => Op::R(r, v & (7 << 61)),
            op => op,
        })
        .collect()
}

/// The kill sequence skiboot's phb4_tce_kill performs for one command.
fn kill_seq(cmd: u64) -> Vec<Op> {
    vec![
        Op::R(TCE_KILL, 0),
        Op::W(TCE_KILL, cmd),
        Op::W(SYNC, 1 << 63),
        Op::R(PhbReg::Q_DMA_R, 0),
        Op::R(SYNC, 1 << 62),
    ]
}

#[test]
fn direct_map_window_writes_tve_then_kills_pe() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    let t = FakeTable {
        addr: 0x2002_4000,
        levels: 1,
        level: 0x1000,
        shift: 12,
        offset: 0,
        size: 1 << 21,
        node: 0,
    };
    d.map_window(PeNum(5), W0, &t).unwrap();
    let mut want = vec![
        Op::W(PhbReg::IODA_ADDR, (9 << 48) | 10),
        Op::W(PhbReg::IODA_DATA0, 0x0000_0002_0024_0101),
    ];
    want.extend(kill_seq((1 << 62) | 5));
    assert_eq!(log(&phb), want);
    assert_eq!(phb.tve(10).0, 0x0000_0002_0024_0101);

    d.unmap_window(PeNum(5), W0).unwrap();
    let mut want = vec![
        Op::W(PhbReg::IODA_ADDR, (9 << 48) | 10),
        Op::W(PhbReg::IODA_DATA0, 0),
    ];
    want.extend(kill_seq((1 << 62) | 5));
    assert_eq!(log(&phb), want);
    assert_eq!(d.read_tve(10), Tve::DISABLED);
    assert_eq!(
        log(&phb),
        vec![
            Op::W(PhbReg::IODA_ADDR, (9 << 48) | 10),
            Op::R(PhbReg::IODA_DATA0, 0)
        ]
    );
}

#[test]
fn direct_kill_variants_and_page_erratum() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    d.kill(Kill::All).unwrap();
    assert_eq!(log(&phb), kill_seq(1 << 63));
    d.kill(Kill::Pe(PeNum(511))).unwrap();
    assert_eq!(log(&phb), kill_seq((1 << 62) | 511));
    // HW560152: a page kill becomes a PE kill.
    d.kill(Kill::Pages {
        pe: PeNum(7),
        bus_addr: 0x1_0000,
        page_shift: 16,
        npages: 3,
    })
    .unwrap();
    assert_eq!(log(&phb), kill_seq((1 << 62) | 7));
}

#[test]
fn direct_kill_waits_for_a_free_slot() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    phb.kill_busy_reads.set(3);
    d.kill(Kill::Pe(PeNum(1))).unwrap();
    d.kill(Kill::Pe(PeNum(2))).unwrap();
    let log = phb.take_log();
    // The second kill polled TCE_KILL until the first was queued, then wrote.
    let second = log
        .iter()
        .rposition(|op| *op == Op::W(TCE_KILL, (1 << 62) | 2))
        .unwrap();
    let busy_polls = log[..second]
        .iter()
        .filter(|op| matches!(op, Op::R(r, v) if *r == TCE_KILL && v & (7 << 61) != 0))
        .count();
    assert_eq!(busy_polls, 3);
}

#[test]
fn direct_kill_is_bounded() {
    for reg in [TCE_KILL, PhbReg::Q_DMA_R, SYNC] {
        let (phb, mem) = (FakePhb::new(), FakeMem::default());
        let d = direct(&phb, &mem);
        phb.stuck.set(Some(reg));
        assert_eq!(d.kill(Kill::All), Err(PhbError::Timeout(reg)));
        let polls = phb
            .take_log()
            .iter()
            .filter(|op| matches!(op, Op::R(r, _) if *r == reg))
            .count();
        assert_eq!(polls, 100, "{}", reg.name());
    }
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    phb.fenced.set(true);
    assert_eq!(
        direct(&phb, &mem).kill(Kill::All),
        Err(PhbError::Fenced(TCE_KILL))
    );
}

#[test]
fn direct_set_pe_writes_big_endian_rte_and_invalidates_rtc() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    let edu = Bdfn::new(1, 0, 0);
    d.set_pe(edu, PeNum(0x1fe)).unwrap();
    assert_eq!(mem.rte(edu), Some(0x1fe));
    // Big-endian in memory: high byte first.
    assert_eq!(mem.bytes.borrow().get(&(RTT_BASE + 0x200)), Some(&0x01));
    assert_eq!(mem.rte(Bdfn::new(1, 0, 1)), None, "only that function");
    assert_eq!(
        log(&phb),
        vec![
            Op::R(PhbReg::RTT_BAR, (1 << 63) | RTT_BASE),
            Op::W(PhbReg::RTC_INVALIDATE, 1 << 63)
        ]
    );
    assert_eq!(d.read_rte(edu).unwrap().0, 0x1fe);
    assert_eq!(phb.rtc_invalidates.get(), 1);

    phb.rtt_bar.set(RTT_BASE);
    assert_eq!(d.set_pe(edu, PeNum(1)), Err(PhbError::RttDisabled));
    assert_eq!(
        d.set_pe(edu, PeNum(512)),
        Err(PhbError::BadPe {
            pe: PeNum(512),
            num_pes: 512
        })
    );
}

#[test]
fn opal_calls_follow_skiboot_rules() {
    let opal = FakeOpal::new(3, 256);
    let o = OpalBackend::new(&opal, PhbId(3), 256);
    let t = owner_table(0x4000_0000, 1);
    o.set_pe(Bdfn::new(1, 0, 0), PeNum(4)).unwrap();
    o.map_window(PeNum(4), W1, &t).unwrap();
    o.unmap_window(PeNum(4), W1).unwrap();
    o.kill(Kill::Pages {
        pe: PeNum(4),
        bus_addr: (1 << 59) | 0x2_0000,
        page_shift: 16,
        npages: 2,
    })
    .unwrap();
    o.kill(Kill::All).unwrap();
    assert_eq!(
        opal.violations.borrow().len(),
        0,
        "{:?}",
        opal.violations.borrow()
    );
    assert_eq!(
        *opal.calls.borrow(),
        vec![
            Call::SetPe {
                phb: 3,
                pe: 4,
                bdfn: 0x100,
                cmp: (7, 1, 1),
                action: 1
            },
            Call::MapWindow {
                phb: 3,
                pe: 4,
                window_id: 9,
                levels: 1,
                addr: 0x4000_0000,
                size: 0x1_0000,
                page: 0x1_0000
            },
            Call::TceKill {
                phb: 3,
                kind: 1,
                pe: 4,
                tce_size: 0,
                addr: 0,
                npages: 0
            },
            Call::MapWindow {
                phb: 3,
                pe: 4,
                window_id: 9,
                levels: 0,
                addr: 0,
                size: 0,
                page: 0
            },
            Call::TceKill {
                phb: 3,
                kind: 1,
                pe: 4,
                tce_size: 0,
                addr: 0,
                npages: 0
            },
            Call::TceKill {
                phb: 3,
                kind: 0,
                pe: 4,
                tce_size: 0x1_0000,
                addr: (1 << 59) | 0x2_0000,
                npages: 2
            },
            Call::TceKill {
                phb: 3,
                kind: 2,
                pe: 0,
                tce_size: 0,
                addr: 0,
                npages: 0
            },
        ]
    );
}

#[test]
fn opal_errors_are_typed_and_bad_arguments_never_reach_opal() {
    let opal = FakeOpal::new(0, 256);
    let o = OpalBackend::new(&opal, PhbId(0), 256);
    opal.fail_next.set(Some(-6));
    assert_eq!(
        o.kill(Kill::Pe(PeNum(1))),
        Err(PhbError::Opal(OpalError::Hardware))
    );
    opal.fail_next.set(Some(-1));
    assert_eq!(
        o.set_pe(Bdfn(0x100), PeNum(1)),
        Err(PhbError::Opal(OpalError::Parameter))
    );
    let n = opal.calls.borrow().len();
    assert!(o
        .map_window(PeNum(256), W0, &owner_table(0x4000_0000, 0))
        .is_err());
    assert!(o
        .map_window(PeNum(1), W0, &owner_table(0x4000_0000, 1))
        .is_err());
    assert!(o.freeze_status(PeNum(256)).is_err());
    assert!(o
        .set_peltv(PeNum(1), PeNum(256), p9iommu::phb::hw::PeltvAction::Add)
        .is_err());
    assert!(o
        .kill(Kill::Pages {
            pe: PeNum(1),
            bus_addr: 0x800,
            page_shift: 12,
            npages: 1
        })
        .is_err());
    assert_eq!(opal.calls.borrow().len(), n);
}

/// The same operations through both back ends leave the same TVT and RTT.
#[test]
fn back_ends_agree_on_phb_state() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let opal = FakeOpal::new(0, 512);
    let d = direct(&phb, &mem);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    let tables = [
        (
            3,
            0,
            FakeTable {
                addr: 0x2002_4000,
                levels: 1,
                level: 0x1000,
                shift: 12,
                offset: 0,
                size: 1 << 21,
                node: 0,
            },
        ),
        (3, 1, owner_table(0x5000_0000, 1)),
        (
            200,
            0,
            FakeTable {
                addr: 0x8000_0000,
                levels: 2,
                level: 0x1_0000,
                shift: 16,
                offset: 0,
                size: 1 << 32,
                node: 0,
            },
        ),
        (
            511,
            1,
            FakeTable {
                addr: 0x1_0000_0000,
                levels: 2,
                level: 0x8_0000,
                shift: 21,
                offset: 1 << 59,
                size: 1 << 40,
                node: 0,
            },
        ),
    ];
    for b in [&d as &dyn PhbDma, &o] {
        configure_pe(b, Bdfn::new(1, 0, 0), PeNum(3)).unwrap();
        configure_pe(b, Bdfn::new(1, 2, 1), PeNum(200)).unwrap();
        for (pe, w, t) in &tables {
            b.map_window(PeNum(*pe), WindowId::new(*w).unwrap(), t)
                .unwrap_or_else(|e| panic!("pe {pe} w {w}: {e:?}"));
        }
        b.unmap_window(PeNum(3), W1).unwrap();
    }
    assert_eq!(
        opal.violations.borrow().len(),
        0,
        "{:?}",
        opal.violations.borrow()
    );
    for i in 0..1024 {
        assert_eq!(phb.tve(i), opal.tve(i), "TVE {i}");
    }
    assert!(phb.tve(6).is_enabled() && phb.tve(400).is_enabled() && phb.tve(1023).is_enabled());
    assert!(!phb.tve(7).is_enabled());
    for (bdfn, pe) in [(Bdfn::new(1, 0, 0), 3), (Bdfn::new(1, 2, 1), 200)] {
        assert_eq!(mem.rte(bdfn), Some(pe));
        assert_eq!(opal.rtt.borrow().get(&bdfn.0), Some(&pe));
        // The PELT-V: each PE in its own, and nothing else.
        let pe = u32::from(pe);
        assert!(mem.peltv(512, pe, pe));
        assert!(opal.peltv.borrow().contains(&(pe, pe)));
    }
    assert_eq!(opal.peltv.borrow().len(), 2);
    assert_eq!(
        mem.bytes
            .borrow()
            .keys()
            .filter(|&&a| a >= PELTV_BASE)
            .count(),
        2,
        "two PELT-V bytes written"
    );
}

/// The hypercall layer's invalidation (`TceInvalidate` wraps `try_invalidate`) reaches every PE sharing the table, as page kills
/// through OPAL (bus address = table offset + index << shift).
#[test]
fn table_kill_invalidates_in_every_sharing_pe() {
    use p9iommu::phb::glue::TableKill;
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    let k = TableKill::new(&o, vec![PeNum(4), PeNum(5)], 16, 1 << 59);
    k.try_invalidate(3, 2).unwrap();
    let page = |pe| Call::TceKill {
        phb: 0,
        kind: 0,
        pe,
        tce_size: 0x1_0000,
        addr: (1 << 59) | 0x3_0000,
        npages: 2,
    };
    assert_eq!(*opal.calls.borrow(), vec![page(4), page(5)]);
    assert_eq!(
        k.kill_for(1 << 60, 1),
        Kill::Pe(PeNum(0)),
        "unexpressible range: PE kill"
    );
}

const DMA_FROZEN: FreezeStatus = FreezeStatus {
    state: FreezeState::Dma,
    error: PciErrorType::NoError,
};

/// The freeze handling the in-kernel PHB tests run after every DMA that must not land, over a
/// PHB that freezes a PE on a bad DMA: the freeze is seen, reported and cleared, and the next
/// good DMA lands; without the clear it would not; a freeze that does not clear is an error.
fn freeze_recovery(b: &dyn PhbDma, dma: &dyn Fn(u64, bool) -> bool, set_stuck: &dyn Fn(bool)) {
    let (edu, pe) = (Bdfn::new(1, 0, 0), PeNum(1));
    configure_pe(b, edu, pe).unwrap();
    b.map_window(pe, W1, &owner_table(0x4000_0000, 1)).unwrap();
    let good = (1 << 59) | 0x1_0000;
    assert!(dma(good, true), "a mapped page");
    assert_eq!(recover_freeze(b, pe), Ok(None), "nothing to report");

    // A DMA through a cleared TCE: dropped, and the PE freezes.
    assert!(!dma(good, false));
    assert_eq!(b.freeze_status(pe), Ok(DMA_FROZEN));
    assert!(
        !dma(good, true),
        "a frozen PE's good DMA does not land either"
    );
    assert_eq!(recover_freeze(b, pe), Ok(Some(DMA_FROZEN)), "reported");
    assert_eq!(b.freeze_status(pe), Ok(FreezeStatus::CLEAR), "and cleared");
    assert!(dma(good, true), "the next good DMA lands");

    // A DMA through the disabled window freezes it too.
    b.unmap_window(pe, W1).unwrap();
    assert!(!dma(good, true));
    assert_eq!(recover_freeze(b, pe), Ok(Some(DMA_FROZEN)));

    // A freeze that cannot be cleared is an error, not a report.
    b.map_window(pe, W1, &owner_table(0x4000_0000, 1)).unwrap();
    assert!(!dma(good, false));
    set_stuck(true);
    assert_eq!(
        recover_freeze(b, pe),
        Err(PhbError::StillFrozen {
            pe,
            status: DMA_FROZEN
        })
    );
    assert!(!dma(good, true));
    set_stuck(false);
    assert_eq!(recover_freeze(b, pe), Ok(Some(DMA_FROZEN)));
    assert!(dma(good, true));
}

#[test]
fn freeze_recovery_direct() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    let edu = Bdfn::new(1, 0, 0);
    freeze_recovery(&d, &|bus, ok| phb.dma(&mem, edu, bus, ok), &|s| {
        phb.stuck_freeze.set(s)
    });
}

#[test]
fn freeze_recovery_opal() {
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, PhbId(0), 512);
    let edu = Bdfn::new(1, 0, 0);
    freeze_recovery(&o, &|bus, ok| opal.dma(edu, bus, ok), &|s| {
        opal.stuck_freeze.set(s)
    });
    assert!(opal.violations.borrow().is_empty());
}

#[test]
fn opal_pe_setup_calls_as_linux_makes_them() {
    let opal = FakeOpal::new(2, 256);
    let o = OpalBackend::new(&opal, PhbId(2), 256);
    configure_pe(&o, Bdfn::new(1, 0, 0), PeNum(9)).unwrap();
    o.freeze_status(PeNum(9)).unwrap();
    assert_eq!(
        opal.calls.borrow()[1..],
        [
            // OPAL_EEH_ACTION_CLEAR_FREEZE_ALL, then OPAL_ADD_PE_TO_DOMAIN.
            Call::FreezeClear {
                phb: 2,
                pe: 9,
                action: 3
            },
            Call::SetPeltv {
                phb: 2,
                parent: 9,
                child: 9,
                action: 1
            },
            Call::FreezeStatus { phb: 2, pe: 9 },
        ]
    );
}

#[test]
fn direct_freeze_status_reads_peev_then_pests() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    let (ioda, data) = (PhbReg::IODA_ADDR, PhbReg::IODA_DATA0);
    // Not frozen: the PEEV entry of PE 65 (entry 1) is read, the PESTs are not.
    assert_eq!(d.freeze_status(PeNum(65)), Ok(FreezeStatus::CLEAR));
    assert_eq!(log(&phb), vec![Op::W(ioda, (20 << 48) | 1), Op::R(data, 0)]);
    phb.freeze(65);
    assert_eq!(d.freeze_status(PeNum(65)), Ok(DMA_FROZEN));
    let pestb = (1 << 63) | 0xdead_0000;
    assert_eq!(
        log(&phb),
        vec![
            Op::W(ioda, (20 << 48) | 1),
            Op::R(data, 1 << 62),
            Op::W(ioda, (7 << 48) | 65),
            Op::R(data, 0),
            Op::W(ioda, (8 << 48) | 65),
            Op::R(data, pestb),
        ]
    );
    assert_eq!(d.read_pest(PeNum(65)), Ok((0, pestb)));
    log(&phb);
    // skiboot's clear: zero PESTA then PESTB.
    d.clear_freeze(PeNum(65)).unwrap();
    assert_eq!(
        log(&phb),
        vec![
            Op::W(ioda, (7 << 48) | 65),
            Op::W(data, 0),
            Op::W(ioda, (8 << 48) | 65),
            Op::W(data, 0),
        ]
    );
    assert!(!phb.is_frozen(65));
    // MMIO frozen too.
    phb.pesta.borrow_mut()[3] = 1 << 63;
    phb.freeze(3);
    assert_eq!(
        d.freeze_status(PeNum(3)).unwrap().state,
        FreezeState::MmioDma
    );
    // A fenced PHB reads as frozen with a PHB error, as skiboot reports it.
    phb.fenced.set(true);
    assert_eq!(
        d.freeze_status(PeNum(0)),
        Ok(FreezeStatus {
            state: FreezeState::MmioDma,
            error: PciErrorType::Phb
        })
    );
    assert_eq!(
        d.set_peltv(PeNum(0), PeNum(0), p9iommu::phb::hw::PeltvAction::Add),
        Err(PhbError::Fenced(PhbReg::PELTV_BAR))
    );
    phb.fenced.set(false);
    phb.peltv_bar.set(PELTV_BASE);
    assert_eq!(
        d.set_peltv(PeNum(0), PeNum(0), p9iommu::phb::hw::PeltvAction::Add),
        Err(PhbError::PeltvDisabled)
    );
    assert_eq!(
        d.freeze_status(PeNum(512)),
        Err(PhbError::BadPe {
            pe: PeNum(512),
            num_pes: 512
        })
    );
}

#[test]
fn direct_peltv_add_and_remove_touch_one_bit() {
    use p9iommu::phb::hw::PeltvAction::{Add, Remove};
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    d.set_peltv(PeNum(5), PeNum(5), Add).unwrap();
    d.set_peltv(PeNum(5), PeNum(6), Add).unwrap();
    // Row 5 of 512 / 8 = 64 bytes; PEs 5 and 6 are bits 2 and 1 of its first byte.
    assert_eq!(mem.bytes.borrow().get(&(PELTV_BASE + 5 * 64)), Some(&0x06));
    d.set_peltv(PeNum(5), PeNum(6), Remove).unwrap();
    assert!(mem.peltv(512, 5, 5) && !mem.peltv(512, 5, 6));
    assert!(
        mem.stores.borrow().iter().all(|&(_, n)| n == 1),
        "byte stores"
    );
}

#[test]
fn direct_rtt_entry_is_one_16_bit_store() {
    let (phb, mem) = (FakePhb::new(), FakeMem::default());
    let d = direct(&phb, &mem);
    d.set_pe(Bdfn::new(1, 0, 0), PeNum(0x1fe)).unwrap();
    assert_eq!(*mem.stores.borrow(), vec![(RTT_BASE + 0x200, 2)]);
}

#[test]
fn opal_freeze_set_is_seen_and_cleared() {
    let opal = FakeOpal::new(0, 256);
    let o = OpalBackend::new(&opal, PhbId(0), 256);
    o.set_freeze(PeNum(7)).unwrap();
    assert_eq!(
        recover_freeze(&o, PeNum(7)).unwrap().map(|s| s.state),
        Some(FreezeState::MmioDma)
    );
    assert_eq!(o.freeze_status(PeNum(7)), Ok(FreezeStatus::CLEAR));
    assert!(o.set_freeze(PeNum(256)).is_err());
}
