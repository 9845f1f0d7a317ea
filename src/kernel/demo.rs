//! The demo (`./qemu-run.sh`): the component's pieces working together on the target, narrated
//! on the console. Returns whether every step did what it should.
use alloc::format;
use alloc::string::String;

use crate::kernel::heap::HEAP;
use crate::kernel::pci::{
    self, find_edu, iova, map, pattern, Backend, DmaPage, EduRig, PciError, FILL,
};
use crate::kprintln;
use crate::phb::dma::{configure_pe, recover_freeze};
use crate::phb::{Kill, PeNum, PhbDma, WindowId};
use crate::tce::{sparse_demo, HeapMemory, TcePerm};

pub fn run() -> bool {
    kprintln!("p9iommu: demo");
    kprintln!(
        "  heap: {} KiB free of {} KiB",
        HEAP.free() >> 10,
        HEAP.size() >> 10
    );
    // Every step runs, whatever the one before it did: a failure shows where, not what is next.
    let steps = [
        sparse_tables(),
        hypercalls(),
        device_dma(),
        guest_owns_device(),
    ];
    let ok = steps.iter().all(|&passed| passed);
    kprintln!("p9iommu: demo {}", if ok { "done" } else { "FAILED" });
    ok
}

/// The seed's sparse guest: 16 GiB of RAM at 0 and 16 GiB of device memory at 0x244000000000,
/// 64K IOMMU pages, one 3-level window: levels are allocated only where something is mapped.
fn sparse_tables() -> bool {
    kprintln!(
        "  [tce] mapping the seed's sparse guest (16 GiB RAM + 16 GiB device memory, 64K pages)..."
    );
    match sparse_demo(HeapMemory::new()) {
        Ok(f) => {
            kprintln!(
                "  [tce] allocated {} KiB per view for a {} GiB window; a flat table would take {} MiB",
                f.allocated_bytes >> 10,
                f.window_size >> 30,
                f.flat_bytes >> 20
            );
            true
        }
        Err(e) => {
            kprintln!("  [tce] FAILED: {e:?}");
            false
        }
    }
}

/// A guest maps and unmaps DMA pages with the four hypercalls, through `sc 1`.
fn hypercalls() -> bool {
    crate::kernel::guests::demo()
}

/// A real PCI device's DMA through a TCE table: QEMU's edu device on PHB 0, programmed with
/// the OPAL back end (what hardware uses). Skipped when QEMU has no edu device.
/// The PE the demo puts its edu device in.
const DEMO_PE: PeNum = PeNum(1);

fn device_dma() -> bool {
    let rig = match find_edu(0) {
        Ok(Some(rig)) => rig,
        Ok(None) => {
            kprintln!("  [phb] no edu device (qemu-run.sh --edu 0): DMA step skipped");
            return true;
        }
        Err(e) => {
            kprintln!("  [phb] FAILED to set up the edu device: {e}");
            return false;
        }
    };
    let table = match pci::new_table(rig.info.node, pci::WINDOW1_BUS, pci::PAGE_SHIFT, 1 << 30, 3) {
        Ok(t) => t,
        Err(e) => {
            kprintln!("  [phb] FAILED: {e}");
            return false;
        }
    };
    // SAFETY: `table` outlives the TVE pointing at it: `clean_up` disables the window before
    // the table drops, and every transfer is waited for. One CPU, one back end.
    let phb = match unsafe { pci::backend(Backend::Opal, &rig.info) } {
        Ok(phb) => phb,
        Err(e) => {
            kprintln!("  [phb] FAILED: {e}");
            return false;
        }
    };
    let r = dma_through(&rig, &phb, &table);
    let c = rig.clean_up(&phb, DEMO_PE);
    if let Err(e) = &r {
        kprintln!("  [phb] FAILED: {e}");
    }
    if let Err(e) = &c {
        kprintln!("  [phb] FAILED: {e}");
    }
    r.is_ok() && c.is_ok()
}

/// RAM -> device -> RAM through two entries of a 3-level table in window 1; then the
/// destination entry is cleared and its PE's TCE cache killed, and the same copy must not
/// land, while a third entry shows that the device did send the new bytes.
fn dma_through(rig: &EduRig, phb: &dyn PhbDma, table: &pci::KTable) -> Result<(), String> {
    // Entries on different leaf levels (9 index bits per 4 KiB level).
    let (a, b, c) = (1u64, (3 << 9) | 2, (77 << 9) | 5);
    let (src, dst, control) = (DmaPage::new(), DmaPage::new(), DmaPage::new());
    map(table, a, &src, TcePerm::READ).map_err(say)?;
    map(table, b, &dst, TcePerm::WRITE).map_err(say)?;
    map(table, c, &control, TcePerm::WRITE).map_err(say)?;
    configure_pe(phb, rig.bdfn, DEMO_PE).map_err(|e| format!("configure_pe: {e:?}"))?;
    phb.map_window(DEMO_PE, WindowId::DMA64, table)
        .map_err(|e| format!("map_window: {e:?}"))?;
    kprintln!(
        "  [phb] PHB {}: edu at {:?} in {DEMO_PE}, {}-level table in window 1",
        rig.info.opal_phb_id.0,
        rig.bdfn,
        table.levels()
    );

    const FIRST: u32 = 0xd3_0001;
    src.fill(|i| pattern(FIRST, i));
    rig.to_device(iova(table, a)).map_err(say)?;
    rig.to_ram(iova(table, b)).map_err(say)?;
    dst.check_copy(FIRST)
        .map_err(|m| format!("the copy through the table: {m}"))?;
    kprintln!(
        "  [phb] DMA RAM -> device -> RAM through IOVAs {:#018x} and {:#018x}: landed",
        iova(table, a),
        iova(table, b)
    );

    table.clear(b..b + 1).map_err(|e| format!("clear: {e:?}"))?;
    phb.kill(Kill::Pe(DEMO_PE))
        .map_err(|e| format!("kill: {e:?}"))?;
    const SECOND: u32 = 0xd3_0002;
    src.fill(|i| pattern(SECOND, i));
    dst.fill(|_| FILL);
    rig.to_device(iova(table, a)).map_err(say)?;
    rig.to_ram(iova(table, b)).map_err(say)?;
    dst.check(|_| FILL)
        .map_err(|m| format!("a DMA through the cleared entry: {m}"))?;
    // PHB4 freezes the PE on that TCE fault (QEMU does not): clear it before the next DMA.
    match recover_freeze(phb, DEMO_PE) {
        Ok(None) => {}
        Ok(Some(status)) => kprintln!(
            "  [phb] the blocked DMA froze {DEMO_PE} ({:?}): freeze cleared",
            status.state
        ),
        Err(e) => return Err(format!("freeze: {e:?}")),
    }
    rig.to_ram(iova(table, c)).map_err(say)?;
    control
        .check_copy(SECOND)
        .map_err(|m| format!("the control entry: {m}"))?;
    kprintln!(
        "  [phb] after clearing the TCE at {:#018x} and a PE kill, DMA did not land (the device did send: another entry still translates)",
        iova(table, b)
    );
    Ok(())
}

fn say(e: PciError) -> String {
    format!("{e}")
}

/// The component's purpose: a guest owns the edu device. Its windows are the tables the PHB
/// walks for the device's PE, it maps its own pages by hypercall, drives the device through its
/// BAR, clears, and the DMA stops landing; then the kernel takes the device back.
fn guest_owns_device() -> bool {
    use crate::hcall::{H_PUT_TCE, H_STUFF_TCE};
    use crate::hv::abi::{guest_op, GUEST_ACTION};
    use crate::kernel::device;
    use crate::kernel::guests::{
        call, code_name, partition, path_name, CallOutcome, LIOBN_4K, LIOBN_64K, PINNED_64K,
        PINNED_POOL, WINDOWS,
    };
    let mut dev = match device::kernel_owned(0) {
        Ok(Some(d)) => d,
        Ok(None) => {
            kprintln!("  [guest+phb] no edu device: the guest-owned device step is skipped");
            return true;
        }
        Err(e) => {
            kprintln!("  [guest+phb] FAILED to set up the edu device: {e}");
            return false;
        }
    };
    let (Ok(mut p), Some(v)) = (partition(), crate::arch::ppc64::mmu::virt_mode()) else {
        kprintln!("  [guest+phb] FAILED: no guest partition");
        return false;
    };
    if let Err(e) = dev.give(&mut p, v) {
        kprintln!("  [guest+phb] FAILED to hand the device over: {e}");
        return false;
    }
    kprintln!(
        "  [guest+phb] edu {:?} on PHB {} handed to LPID {}: {} TVEs 2 and 3 are its windows {:#x} (4K pages at bus 0) and {:#x} (64K pages at {:#x}); its BAR at guest physical {:#x}",
        dev.rig.bdfn,
        dev.rig.info.opal_phb_id.0,
        p.lpid,
        device::PE,
        LIOBN_4K,
        LIOBN_64K,
        WINDOWS[1].1,
        p.device_bar
    );
    let act = |op: u64, args: &[u64]| call(GUEST_ACTION | op, args);
    let (src, dst) = (PINNED_POOL.0 + 0x7_0000, PINNED_POOL.0 + 0x7_1000);
    let (dst64, w64) = (PINNED_64K + 0x30_0000, WINDOWS[1].1);
    let data = 0x6775_6573_7421_0001u64;
    let steps: [(&str, crate::hv::abi::Call); 13] = [
        ("writes its source page", act(guest_op::STORE, &[src, data])),
        (
            "maps it for the device to read",
            call(H_PUT_TCE, &[LIOBN_4K, 0x1000, src | 1]),
        ),
        (
            "maps a page for the device to write",
            call(H_PUT_TCE, &[LIOBN_4K, 0x2000, dst | 2]),
        ),
        (
            "maps a 64K page in window 1",
            call(H_PUT_TCE, &[LIOBN_64K, w64 + 0x3_0000, dst64 | 2]),
        ),
        (
            "device reads IOVA 0x1000",
            act(guest_op::DMA_TO_DEVICE, &[0x1000]),
        ),
        (
            "device writes IOVA 0x2000",
            act(guest_op::DMA_TO_RAM, &[0x2000]),
        ),
        (
            "device writes in window 1",
            act(guest_op::DMA_TO_RAM, &[w64 + 0x3_0000]),
        ),
        ("reads what landed (window 0)", act(guest_op::LOAD, &[dst])),
        (
            "reads what landed (window 1)",
            act(guest_op::LOAD, &[dst64]),
        ),
        (
            "clears its window 0",
            call(H_STUFF_TCE, &[LIOBN_4K, 0, 0, 16]),
        ),
        ("zeroes the destination", act(guest_op::STORE, &[dst, 0])),
        (
            "device writes IOVA 0x2000 again",
            act(guest_op::DMA_TO_RAM, &[0x2000]),
        ),
        ("reads what landed", act(guest_op::LOAD, &[dst])),
    ];
    let calls: alloc::vec::Vec<_> = steps.iter().map(|s| s.1).collect();
    let mut ok = true;
    match p.run_restarting(&calls) {
        Ok(outcomes) => {
            for ((what, c), o) in steps.iter().zip(&outcomes) {
                match *o {
                    CallOutcome::Hcall { trace, .. } => {
                        let t = p.trace[trace];
                        kprintln!(
                            "  [guest+phb]   {what}: {} -> {} ({})",
                            crate::kernel::guests::hcall_name(c.nr),
                            code_name(t.r3),
                            path_name(t.path)
                        );
                        ok &= t.r3 == 0;
                    }
                    CallOutcome::Action(r) => {
                        kprintln!("  [guest+phb]   {what}: {:#x}", r.r4);
                        ok &= r.r3 == 0;
                    }
                    CallOutcome::Stopped(code) => {
                        kprintln!(
                            "  [guest+phb]   {what}: {}",
                            crate::kernel::guests::describe_exit(code)
                        );
                        ok = false;
                    }
                }
            }
            let value = |i: usize| match outcomes[i] {
                CallOutcome::Action(r) => r.r4,
                _ => u64::MAX,
            };
            ok &= value(7) == data && value(8) == data && value(12) == 0;
        }
        Err(e) => {
            kprintln!("  [guest+phb] FAILED: {}", e.0);
            ok = false;
        }
    }
    match recover_freeze(dev.phb(), device::PE) {
        Ok(None) => {}
        Ok(Some(st)) => kprintln!(
            "  [guest+phb] the blocked DMA froze {} ({:?}): freeze cleared",
            device::PE,
            st.state
        ),
        Err(e) => {
            kprintln!("  [guest+phb] FAILED: freeze {e:?}");
            ok = false;
        }
    }
    let (k, rm) = (
        dev.kills[0]
            .kills
            .load(core::sync::atomic::Ordering::Relaxed),
        dev.kills[0]
            .real_mode
            .load(core::sync::atomic::Ordering::Relaxed),
    );
    kprintln!(
        "  [guest+phb] the data landed where the guest's TCEs said, then nowhere; TCE kills the PHB saw for window 0: {k} ({rm} from real mode)"
    );
    let back = dev.take_back(&mut p, v);
    drop(p);
    let released = dev.release();
    match (&back, &released) {
        (Ok(()), Ok(())) => kprintln!(
            "  [guest+phb] ownership handed back: the PE is the kernel's again, with a fresh default table"
        ),
        _ => kprintln!("  [guest+phb] FAILED to take the device back: {back:?} {released:?}"),
    }
    ok && back.is_ok() && released.is_ok()
}
