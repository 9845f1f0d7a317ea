//! The kernel: boot flow, console, heap, the exception report, and the in-kernel tests and
//! benchmarks. Entered from boot/entry.S in hypervisor real mode, little-endian, on the boot CPU.
pub mod console;
mod demo;
pub mod device;
pub mod guests;
pub mod heap;
pub mod pci;
mod script;
pub mod smp;
pub mod testing;
mod tests;
pub mod vmemmap;

use core::sync::atomic::{AtomicBool, Ordering};

use alloc::vec::Vec;

use crate::arch::ppc64::exception::{self, PerCpu};
use crate::arch::ppc64::mmu::{self, PhysRange};
use crate::arch::ppc64::opal;
use crate::arch::ppc64::spr::{self, Msr};
use crate::bootinfo::{largest_free_range, BootInfo, BootInfoError, Range};
use crate::harness::{parse_cmdline, split_reboot, Mode};
use crate::kprintln;
use crate::mm::HostPhys;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The physical address the image is linked for (linker.ld's KERNEL_PHYS); it runs wherever it
/// is loaded, relocating itself (boot/entry.S).
const LINK_PHYS: u64 = 0x2000_0000;
/// Low memory kept for the vector block (copied to real address 0).
const VECTORS_END: u64 = 0x1_0000;
/// The heap stays below 4 GiB: DMA tests hand its addresses to devices with 32-bit windows.
const HEAP_CEILING: u64 = 1 << 32;

/// Facts the tests check (what the boot found).
pub struct Boot {
    pub fdt: fdt::Fdt<'static>,
    /// The initrd (physical range), kept out of the heap.
    pub initrd: Option<Range>,
    /// Real address of the FDT blob (`fdt.total_size()` bytes), for parsers that take bytes.
    pub fdt_addr: u64,
    pub heap: Range,
    pub opal_base: u64,
}

static BOOT: spin::Once<Boot> = spin::Once::new();

/// What the boot found.
pub fn boot() -> &'static Boot {
    BOOT.get().expect("the kernel has booted")
}

/// The Rust entry point, called by boot/entry.S with the FDT's real address and the OPAL base
/// and entry that skiboot (and kexec's purgatory) also pass in r8/r9. Everything is taken from
/// the FDT; the registers serve only to report an FDT the kernel cannot use.
#[no_mangle]
extern "C" fn kernel_entry(fdt_addr: usize, r8_opal_base: u64, r9_opal_entry: u64) -> ! {
    let fdt_ptr = HostPhys(fdt_addr as u64).linear() as *const u8;
    // SAFETY: firmware hands us a valid FDT that stays in place (its range is kept out of the
    // heap), read through the linear map.
    let parsed = unsafe { fdt::Fdt::from_ptr(fdt_ptr) }
        .map_err(|_| BootInfoError::BadFdt)
        .and_then(|fdt| BootInfo::from_fdt(&fdt).map(|info| (fdt, info)));
    let (fdt, info) = match parsed {
        Ok(p) => p,
        Err(e) => unusable_fdt(fdt_addr, e, r8_opal_base, r9_opal_entry),
    };
    opal::init(info.opal_base, info.opal_entry);
    kprintln!(
        "p9iommu: booting (FDT at {fdt_addr:#x}, OPAL at {:#x}, command line {:?})",
        info.opal_base,
        info.bootargs
    );

    // Hypervisor interrupts must arrive little-endian before any can be taken.
    let rc = opal::reinit_cpus(opal::OPAL_REINIT_CPUS_HILE_LE | opal::OPAL_REINIT_CPUS_MMU_RADIX);
    if rc != opal::OPAL_SUCCESS {
        kprintln!("p9iommu: OPAL_REINIT_CPUS failed ({rc})");
        testing::exit(false);
    }
    // SAFETY: boot CPU, real mode, no interrupt pending; low memory below VECTORS_END is kept
    // out of the heap.
    unsafe { exception::install(report_exception) };
    // The real-mode allocation guard's flag is per CPU from here on.
    crate::mm::alloc_guard::set_cpu_flag(exception::alloc_guard_flag);
    // skiboot hands over with MSR[ME] = 0: take machine checks as interrupts from now on.
    // SAFETY: setting ME only enables machine-check interrupts, whose vector is installed.
    unsafe { spr::set_msr(spr::msr() | Msr::ME) };

    // SAFETY: the linker defines both symbols (linear-map addresses of the image's bounds).
    let (image_start, image_end) = unsafe {
        (
            HostPhys::of_linear(&__image_start).0,
            HostPhys::of_linear(&__image_end).0,
        )
    };
    let mut reserved = info.reserved.clone();
    let own = [
        Range {
            start: 0,
            end: VECTORS_END,
        },
        Range {
            start: image_start,
            end: image_end,
        },
        Range {
            start: fdt_addr as u64,
            end: fdt_addr as u64 + fdt.total_size() as u64,
        },
    ];
    for r in own.into_iter().chain(info.initrd) {
        if reserved.push(r).is_err() {
            kprintln!("p9iommu: {}", BootInfoError::TooManyRanges);
            testing::exit(false);
        }
    }
    let Some(heap_range) = largest_free_range(&info.memory, &reserved, 0, HEAP_CEILING) else {
        kprintln!(
            "p9iommu: no free memory for the heap (memory {:?}, reserved {:?})",
            info.memory,
            reserved
        );
        testing::exit(false);
    };
    // SAFETY: the range is RAM that the FDT lists and nothing reserves; it is ours from now on.
    unsafe { heap::init(heap_range) };
    let (sign, delta) = if image_start >= LINK_PHYS {
        ('+', image_start - LINK_PHYS)
    } else {
        ('-', LINK_PHYS - image_start)
    };
    kprintln!(
        "p9iommu: image at {image_start:#x}..{image_end:#x} (relocated by {sign}{delta:#x} from where it is linked)"
    );
    kprintln!(
        "p9iommu: heap {:#x}..{:#x} ({} MiB), timebase {}",
        heap_range.start,
        heap_range.end,
        heap_range.len() >> 20,
        spr::timebase()
    );
    for (r, chip) in info.memory.iter().zip(&info.memory_chip) {
        match chip {
            Some(c) => kprintln!("p9iommu: memory {:#x}..{:#x} on chip {c}", r.start, r.end),
            None => kprintln!("p9iommu: memory {:#x}..{:#x}", r.start, r.end),
        }
    }
    // The hypervisor's MMU: a linear map of all RAM, the PHBs' registers and windows as I/O.
    let ram: Vec<PhysRange> = info
        .memory
        .iter()
        .map(|r| PhysRange {
            start: r.start,
            len: r.len(),
        })
        .collect();
    let io = device_ranges(&fdt);
    // SAFETY: boot CPU, real mode, heap up; the kernel is linked in the linear map and the heap
    // hands out linear-map addresses.
    let v = match unsafe { mmu::init(&ram, &io) } {
        Ok(v) => v,
        Err(e) => {
            kprintln!("p9iommu: MMU set-up failed: {e:?}");
            testing::exit(false);
        }
    };
    kprintln!(
        "p9iommu: MMU on: radix, linear map of {} MiB of RAM at {:#x}, {} I/O ranges",
        ram.iter().map(|r| r.len).sum::<u64>() >> 20,
        mmu::LINEAR_BASE,
        io.len()
    );
    let ram_bytes: Vec<(u64, u64)> = ram.iter().map(|r| (r.start, r.start + r.len)).collect();
    match vmemmap::init(v, &ram_bytes) {
        Ok((vm, bytes)) => kprintln!(
            "p9iommu: vmemmap at {:#x}: descriptors for {} present frames in {} scattered 64 KiB blocks ({} KiB)",
            crate::mm::vmemmap::VMEMMAP_BASE,
            vmemmap::present_frames().iter().map(|(a, b)| b - a).sum::<u64>(),
            vm.index.len(),
            bytes >> 10
        ),
        Err(e) => {
            kprintln!("p9iommu: vmemmap set-up failed: {e}");
            testing::exit(false);
        }
    }
    let bootargs = info.bootargs;
    BOOT.call_once(|| Boot {
        initrd: info.initrd,
        fdt,
        fdt_addr: fdt_addr as u64,
        heap: heap_range,
        opal_base: info.opal_base,
    });

    let (bootargs, reboot) = split_reboot(bootargs);
    testing::REBOOT.store(reboot, Ordering::Relaxed);
    let ok = match parse_cmdline(bootargs) {
        Ok(Mode::Demo) => demo::run(),
        Ok(Mode::Test(filter)) => testing::run_tests(filter),
        Ok(Mode::Bench(filter)) => testing::run_benches(filter),
        Ok(Mode::Script) => script::run_initrd(),
        Err(e) => {
            kprintln!("p9iommu: unknown command line word {:?}; expected `demo`, `test [FILTER]`, `bench [FILTER]` or `script`, optionally followed by `reboot`", e.word);
            false
        }
    };
    testing::exit(ok)
}

/// The PHB4s' register spaces and PCI windows (`reg` and `ranges` of every node
/// `phb::fdt::is_phb4` accepts): what the kernel touches as I/O with the MMU on.
fn device_ranges(fdt: &fdt::Fdt<'_>) -> Vec<PhysRange> {
    let mut out = Vec::new();
    let phb4 = |n: &fdt::node::FdtNode<'_, '_>| {
        crate::phb::fdt::is_phb4(n.property("compatible").map(|p| p.value))
    };
    for node in fdt.all_nodes().filter(phb4) {
        if let Some(reg) = node.reg() {
            out.extend(reg.map(|r| PhysRange {
                start: r.starting_address as u64,
                len: r.size.unwrap_or(0) as u64,
            }));
        }
        // ranges: 3 cells of PCI address, 2 of CPU address, 2 of size.
        if let Some(p) = node.property("ranges") {
            for e in p.value.chunks_exact(28) {
                let cell =
                    |i: usize| u64::from(u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]));
                out.push(PhysRange {
                    start: (cell(12) << 32) | cell(16),
                    len: (cell(20) << 32) | cell(24),
                });
            }
        }
    }
    out.retain(|r| r.len != 0);
    out
}

/// The FDT cannot be used. Report it through the OPAL entry firmware passed in registers when
/// there is one; with none there is no console, and spinning is all that is left.
fn unusable_fdt(fdt_addr: usize, e: BootInfoError, opal_base: u64, opal_entry: u64) -> ! {
    if opal_entry != 0 {
        opal::init(opal_base, opal_entry);
        kprintln!("p9iommu: unusable device tree at {fdt_addr:#x}: {e}");
        testing::exit(false);
    }
    loop {
        core::hint::spin_loop();
    }
}

static FAILING: AtomicBool = AtomicBool::new(false);

/// Report a fatal condition (once), naming the running test, then power off with failure.
fn fail(what: core::fmt::Arguments) -> ! {
    if FAILING.swap(true, Ordering::SeqCst) {
        // A fault while reporting a fault: stop without touching anything else.
        opal::power_down();
    }
    if let Some(t) = testing::current_test() {
        console::print_emergency(format_args!(
            "FAILED\n    {what}\n    (test {t} stopped the kernel)\n"
        ));
    } else {
        console::print_emergency(format_args!("p9iommu: {what}\n"));
    }
    testing::exit(false)
}

/// Every interrupt lands here today: none is expected, so each is a report and a failed run.
extern "C" fn report_exception(pc: &mut PerCpu) -> ! {
    let f = &pc.frame;
    let vector = f.vector;
    if crate::arch::ppc64::guest::in_guest() {
        // An interrupt while a guest runs ends its run (for a while, or for good: the run
        // loop decides from the code), never the kernel.
        guests::record_fault(f);
        // SAFETY: a guest runs on this CPU and this is the interrupt path.
        unsafe { crate::arch::ppc64::guest::exit_from_fault(guests::exit_code_for(vector)) };
    }
    let p = console::print_emergency;
    if FAILING.load(Ordering::SeqCst) {
        opal::power_down();
    }
    if testing::current_test().is_some() {
        p(format_args!("FAILED\n"));
    }
    p(format_args!(
        "    unexpected exception: vector {vector:#x} ({})\n",
        exception::vector_name(vector)
    ));
    p(format_args!(
        "    SRR0  {:016x} SRR1  {:016x}\n",
        f.srr0, f.srr1
    ));
    p(format_args!(
        "    HSRR0 {:016x} HSRR1 {:016x}\n",
        f.hsrr0, f.hsrr1
    ));
    p(format_args!(
        "    DAR   {:016x} DSISR {:016x}\n",
        f.dar, f.dsisr
    ));
    p(format_args!(
        "    LR    {:016x} CTR   {:016x} CR {:08x} XER {:08x}\n",
        f.lr, f.ctr, f.cr, f.xer
    ));
    dump_gprs(&f.gpr, &mut |a| p(a));
    FAILING.store(true, Ordering::SeqCst);
    testing::exit(false)
}

/// Prints 32 GPRs, four a line, indented (the exception report and the guest-exit report).
pub fn dump_gprs(gpr: &[u64; 32], out: &mut dyn FnMut(core::fmt::Arguments)) {
    for row in gpr.chunks_exact(4).enumerate() {
        let (i, g) = (row.0 * 4, row.1);
        out(format_args!(
            "    r{:<2} {:016x} r{:<2} {:016x} r{:<2} {:016x} r{:<2} {:016x}\n",
            i,
            g[0],
            i + 1,
            g[1],
            i + 2,
            g[2],
            i + 3,
            g[3]
        ));
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => fail(format_args!(
            "panicked at {}:{}: {}",
            l.file(),
            l.line(),
            info.message()
        )),
        None => fail(format_args!("panicked: {}", info.message())),
    }
}
