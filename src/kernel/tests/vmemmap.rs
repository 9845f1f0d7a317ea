//! The vmemmap and its real-mode walker on the target: the physical address the walker finds
//! with the MMU off holds the descriptor virtual mode reaches by its vmemmap address, for every
//! page of RAM; straddling descriptors, hot-plug, compound pages and reference rules; and the
//! cost of a lookup, indexed against the seed's linear walk.
use crate::arch::ppc64::icount::count_instructions;
use crate::arch::ppc64::mmu;
use crate::arch::ppc64::spr::{self, Msr};
use crate::kernel::testing::{fail, BenchResult, Figures, TestResult};
use crate::kernel::vmemmap::{self, KernelVmemmap};
use crate::mm::page::DESC_SIZE;
use crate::mm::page::{NeedVirtualMode, PageDesc, PG_COMPOUND};
use crate::mm::vmemmap::{desc_va, BlockIndex, Lookup, BLOCK_SIZE, VMEMMAP_BASE};
use crate::mm::{HostPhys, PageDescriptors, Pfn, VirtMode};
use crate::{kassert, kassert_eq, kbench, ktest};

fn setup() -> Result<(&'static KernelVmemmap, VirtMode), crate::kernel::testing::TestFailure> {
    let v = mmu::virt_mode().ok_or_else(|| fail("the kernel runs with the MMU off"))?;
    Ok((vmemmap::get(), v))
}

fn straddles(pfn: u64) -> bool {
    (desc_va(Pfn(pfn)) % BLOCK_SIZE) + DESC_SIZE > BLOCK_SIZE
}

fn walker_and_mmu_agree_on_every_page() -> TestResult {
    let (vm, v) = setup()?;
    // The frames that exist (holes between memory ranges have no descriptor).
    let present = || {
        crate::kernel::vmemmap::present_frames()
            .iter()
            .flat_map(|&(a, b)| a..b)
    };
    let frames = present().count() as u64;
    let tag = |pfn: u64| 0x7a90_0000_0000_0000 ^ (pfn * 0x9e37_79b9);
    // Real mode: write each reachable descriptor's tag at the physical address the walker finds.
    let (written, straddling, mode_was_real) = mmu::real_mode(v, |rm| {
        let real = !spr::msr().intersects(Msr::IR | Msr::DR);
        let (mut w, mut s) = (0u64, 0u64);
        for pfn in present() {
            match vm.walk(rm, Pfn(pfn)) {
                Lookup::Found(pa) => {
                    // SAFETY: a live descriptor, reached through the linear map.
                    unsafe { &*(pa.linear() as *const PageDesc) }.set_tag(tag(pfn));
                    w += 1;
                }
                Lookup::Straddles => s += 1,
                _ => {}
            }
        }
        (w, s, real)
    });
    kassert!(mode_was_real, "the walk did not run with the MMU off");
    kassert_eq!(
        written + straddling,
        frames,
        "every frame is reachable or straddles"
    );
    let expected_straddlers = present().filter(|&p| straddles(p)).count() as u64;
    kassert_eq!(straddling, expected_straddlers, "straddling descriptors");
    kassert!(
        straddling > 0,
        "24-byte descriptors must straddle some blocks"
    );
    // Virtual mode: every tag is there at the vmemmap address; write a second one back.
    for pfn in present().filter(|&p| !straddles(p)) {
        let d = vm
            .page(v, Pfn(pfn))
            .ok_or_else(|| fail("unmapped descriptor"))?;
        kassert_eq!(d.tag(), tag(pfn), "pfn {pfn:#x} through the vmemmap");
        d.set_tag(!tag(pfn));
    }
    // And read it back through the walker with the MMU off.
    let bad = mmu::real_mode(v, |rm| {
        present().find(|&pfn| {
            vm.rm_page(rm, Pfn(pfn))
                .is_some_and(|d| d.tag() != !tag(pfn))
        })
    });
    kassert_eq!(bad, None, "a descriptor differs between the two paths");
    Ok(())
}
ktest!(
    "vmemmap.walker_and_mmu_agree_on_every_page",
    walker_and_mmu_agree_on_every_page
);

fn straddling_descriptors_decline_in_real_mode() -> TestResult {
    let (vm, v) = setup()?;
    let pfn = BLOCK_SIZE / DESC_SIZE; // the first descriptor crossing a block boundary
    kassert!(straddles(pfn));
    kassert!(
        mmu::real_mode(v, |rm| vm.rm_page(rm, Pfn(pfn)).is_none()),
        "a straddling descriptor was handed to real mode"
    );
    let d = vm
        .page(v, Pfn(pfn))
        .ok_or_else(|| fail("virtual mode must reach it"))?;
    d.get();
    kassert_eq!(d.count(), 2);
    kassert_eq!(d.put(), 1);
    Ok(())
}
ktest!(
    "vmemmap.straddling_descriptors_decline_in_real_mode",
    straddling_descriptors_decline_in_real_mode
);

fn blocks_removed_and_added_again() -> TestResult {
    let (vm, v) = setup()?;
    // A block in the middle; its first whole descriptor.
    let k = vm.index.len() as u64 / 2;
    let va = VMEMMAP_BASE + k * BLOCK_SIZE;
    let pfn = (k * BLOCK_SIZE).div_ceil(DESC_SIZE);
    let d = vm.page(v, Pfn(pfn)).ok_or_else(|| fail("descriptor"))?;
    d.set_tag(0x5ca1ab1e);
    let before = mmu::real_mode(v, |rm| vm.walk(rm, Pfn(pfn)));
    let pa = vmemmap::remove_block(v, vm, va).map_err(fail)?;
    let gone = mmu::real_mode(v, |rm| {
        (vm.walk(rm, Pfn(pfn)), vm.rm_page(rm, Pfn(pfn)).is_none())
    });
    let unmapped = mmu::translate(va).is_none() && vm.page(v, Pfn(pfn)).is_none();
    vmemmap::add_block(v, vm, va, pa).map_err(fail)?;
    let after = mmu::real_mode(v, |rm| vm.walk(rm, Pfn(pfn)));
    kassert!(matches!(before, Lookup::Found(_)), "{before:?}");
    kassert_eq!(gone, (Lookup::Missing, true), "after removal");
    kassert!(unmapped, "the removed block is still mapped");
    kassert_eq!(after, before, "re-added at the same place");
    kassert_eq!(vm.page(v, Pfn(pfn)).map(PageDesc::tag), Some(0x5ca1ab1e));
    Ok(())
}
ktest!(
    "vmemmap.blocks_removed_and_added_again",
    blocks_removed_and_added_again
);

fn reference_rules_in_real_mode() -> TestResult {
    let (vm, v) = setup()?;
    // Three ordinary pages in the heap's range (owner count 1), away from straddlers.
    let base = crate::kernel::boot().heap.end / 4096 - 64;
    let (plain, compound, zero) = (Pfn(base), Pfn(base + 1), Pfn(base + 2));
    let get = |p: Pfn| vm.page(v, p).ok_or_else(|| fail("descriptor"));
    get(compound)?.set_flags(PG_COMPOUND);
    get(zero)?.put(); // count 0: a free page
    let r = mmu::real_mode(v, |rm| {
        let d = |p: Pfn| vm.rm_page(rm, p).expect("reachable");
        (
            d(plain).rm_get(),
            d(plain).rm_put(),
            d(plain).rm_put(), // the last reference: refused
            d(compound).rm_get(),
            d(compound).rm_put(),
            d(zero).rm_get(), // get on a zero count: refused
        )
    });
    let counts = (
        get(plain)?.count(),
        get(compound)?.count(),
        get(zero)?.count(),
    );
    // Virtual mode does what real mode declined, then the pages are put back as they were.
    get(compound)?.get();
    get(compound)?.put();
    get(compound)?.clear_flags(PG_COMPOUND);
    get(zero)?.get();
    let e = Err(NeedVirtualMode);
    kassert_eq!(r, (Ok(()), Ok(()), e, e, e, e));
    kassert_eq!(counts, (1, 1, 0), "real mode changed a count it refused");
    Ok(())
}
ktest!(
    "vmemmap.reference_rules_in_real_mode",
    reference_rules_in_real_mode
);

/// One lookup at 16, 256, 4096 and 65536 blocks, in real mode. `lookup` (and `linear`, the
/// seed's walk, side by side): a dense vmemmap, the last block (the walk's worst case; the
/// probe hits). `lookup_sparse`: every other block missing and the middle block sought, so the
/// probe misses and the binary search does the work.
fn bench_lookups(out: Figures) -> BenchResult {
    let v = mmu::virt_mode().expect("MMU on");
    for (kind, gap) in [("lookup", 1u64), ("lookup_sparse", 2)] {
        for n in [16u64, 256, 4096, 65536] {
            let ix = BlockIndex::new(n as usize);
            for k in 0..n {
                // Fake, scattered physical addresses: lookups never dereference them.
                let pa = HostPhys(((k * 7919) % n) * BLOCK_SIZE + (1 << 40));
                ix.add(v, VMEMMAP_BASE + k * gap * BLOCK_SIZE, pa)
                    .expect("room");
            }
            // Dense: the last block; sparse: the middle one, where the probe (which lands on the
            // last block) misses.
            let k = if gap == 1 { n - 1 } else { n / 2 };
            let va = VMEMMAP_BASE + k * gap * BLOCK_SIZE + 0x100;
            let (indexed, linear) = mmu::real_mode(v, |_| {
                let a = count_instructions(|| core::hint::black_box(&ix).lookup(va, DESC_SIZE));
                let b =
                    count_instructions(|| core::hint::black_box(&ix).lookup_linear(va, DESC_SIZE));
                (a, b)
            });
            let (ni, ri) = indexed?;
            let (nl, rl) = linear?;
            assert_eq!(ri, rl, "the two lookups disagree");
            assert!(matches!(ri, Lookup::Found(_)));
            out(&alloc::format!("vmemmap.{kind}.{n}.insns"), ni, "insns");
            if gap == 1 {
                out(&alloc::format!("vmemmap.linear.{n}.insns"), nl, "insns");
            }
        }
    }
    Ok(())
}
kbench!("vmemmap.lookup", bench_lookups);
