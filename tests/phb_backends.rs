//! Both PHB back ends against fakes: exact register sequences for the direct one, exact
//! calls and skiboot's argument rules for the OPAL one, and the same PHB state from both.

#[path = "support/phb_fakes.rs"]
mod fakes;

use fakes::*;
use p9iommu::phb::direct::DirectBackend;
use p9iommu::phb::hw::{Bdfn, OpalError};
use p9iommu::phb::opal::OpalBackend;
use p9iommu::phb::regs::{PhbReg, Tve};
use p9iommu::phb::{Kill, PhbDma, PhbError};

const TCE_KILL: PhbReg = PhbReg::TCE_KILL;
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
    d.map_window(5, 0, &t).unwrap();
    let mut want = vec![
        Op::W(PhbReg::IODA_ADDR, (9 << 48) | 10),
        Op::W(PhbReg::IODA_DATA0, 0x0000_0002_0024_0101),
    ];
    want.extend(kill_seq((1 << 62) | 5));
    assert_eq!(log(&phb), want);
    assert_eq!(phb.tve(10).0, 0x0000_0002_0024_0101);

    d.unmap_window(5, 0).unwrap();
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
    d.kill(Kill::Pe(511)).unwrap();
    assert_eq!(log(&phb), kill_seq((1 << 62) | 511));
    // HW560152: a page kill becomes a PE kill.
    d.kill(Kill::Pages {
        pe: 7,
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
    d.kill(Kill::Pe(1)).unwrap();
    d.kill(Kill::Pe(2)).unwrap();
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
    d.set_pe(edu, 0x1fe).unwrap();
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
    assert_eq!(d.set_pe(edu, 1), Err(PhbError::RttDisabled));
    assert_eq!(
        d.set_pe(edu, 512),
        Err(PhbError::BadPe {
            pe: 512,
            num_pes: 512
        })
    );
}

#[test]
fn opal_calls_follow_skiboot_rules() {
    let opal = FakeOpal::new(3, 256);
    let o = OpalBackend::new(&opal, 3, 256);
    let t = owner_table(0x4000_0000, 1);
    o.set_pe(Bdfn::new(1, 0, 0), 4).unwrap();
    o.map_window(4, 1, &t).unwrap();
    o.unmap_window(4, 1).unwrap();
    o.kill(Kill::Pages {
        pe: 4,
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
    let o = OpalBackend::new(&opal, 0, 256);
    opal.fail_next.set(Some(-6));
    assert_eq!(
        o.kill(Kill::Pe(1)),
        Err(PhbError::Opal(OpalError::Hardware))
    );
    opal.fail_next.set(Some(-1));
    assert_eq!(
        o.set_pe(Bdfn(0x100), 1),
        Err(PhbError::Opal(OpalError::Parameter))
    );
    let n = opal.calls.borrow().len();
    assert!(o.map_window(256, 0, &owner_table(0x4000_0000, 0)).is_err());
    assert!(o.map_window(1, 0, &owner_table(0x4000_0000, 1)).is_err());
    assert!(o
        .kill(Kill::Pages {
            pe: 1,
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
    let o = OpalBackend::new(&opal, 0, 512);
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
                levels: 3,
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
                level: 0x10_0000,
                shift: 21,
                offset: 1 << 59,
                size: 1 << 40,
                node: 0,
            },
        ),
    ];
    for b in [&d as &dyn PhbDma, &o] {
        b.set_pe(Bdfn::new(1, 0, 0), 3).unwrap();
        b.set_pe(Bdfn::new(1, 2, 1), 200).unwrap();
        for (pe, w, t) in &tables {
            b.map_window(*pe, *w, t)
                .unwrap_or_else(|e| panic!("pe {pe} w {w}: {e:?}"));
        }
        b.unmap_window(3, 1).unwrap();
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
    }
}

/// The hypercall layer's invalidation (`TceInvalidate` wraps `try_invalidate`) reaches every PE sharing the table, as page kills
/// through OPAL (bus address = table offset + index << shift).
#[test]
fn table_kill_invalidates_in_every_sharing_pe() {
    use p9iommu::phb::glue::TableKill;
    let opal = FakeOpal::new(0, 512);
    let o = OpalBackend::new(&opal, 0, 512);
    let k = TableKill::new(&o, vec![4, 5], 16, 1 << 59);
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
        Kill::Pe(0),
        "unexpressible range: PE kill"
    );
}
