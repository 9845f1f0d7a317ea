//! Guest partitions run by the kernel: a test guest (`guest/`) in LPID 1 making real `sc 1`
//! hypercalls, handled in real mode at the vector and, when real mode declines, in virtual mode.
//!
//! A partition's memory is 64 MiB of guest physical space backed by host chunks that are not
//! physically contiguous: 16 chunks of 2 MiB (gpa 0..32M) and 512 of 64 KiB (gpa 32M..64M),
//! handed out in a shuffled order. They are mapped three times: in the guest's partition-scoped
//! tree (gpa -> hpa), contiguously in the hypervisor's virtual-only area (the guest's `ua`,
//! unreachable with the MMU off), and, as all RAM, in the linear map. The memslot maps gpa 0 to
//! that `ua`; preregistration pins gpa 0..32M in 2 MiB pages and 32M..48M in 64 KiB pages;
//! 48M..64M is not preregistered, so real mode declines whatever touches it.
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::ppc64::exception::TrapFrame;
use crate::arch::ppc64::guest::{self, GuestRegs};
use crate::arch::ppc64::mmu::{self, GuestTree, VirtRange};
use crate::arch::ppc64::spr::{self, Msr};
use crate::hcall::{
    rm_dispatch, vm_dispatch, Attached, Env, Guest, HcallResult, HcallReturn, KillFailed,
    MemAccess, TceInvalidate, H_PUT_TERM_CHAR,
};
use crate::hv::abi::{self, CallResult, Mailbox, H_P9_EXIT};
use crate::hv::vcpu::{reflect_privileged, Exit, RunLimit};
pub use crate::hv::vcpu::{EXIT_FAULT, EXIT_GUEST, EXIT_MACHINE, EXIT_TIMEOUT};
use crate::mm::radix::PageSize;
use crate::mm::{Backing, GuestPhys, HostPhys, Memslot, RealMode, TooHard, Ua, VirtMode};
use crate::tce::{Be64, HeapMemory, LockedVm, TceGeometry, TceTable};
use crate::{kprint, kprintln};

/// The test guest's image (built by build.rs from `guest/`).
static GUEST_ELF: &[u8] = include_bytes!(env!("P9_GUEST_ELF"));

/// A guest's time slice: 10 ms of timebase, then the hypervisor decrementer takes the CPU back.
pub const SLICE_TICKS: u64 = spr::TIMEBASE_HZ / 100;
/// A guest run's default limit: one second. A hung guest costs a test run that, not minutes;
/// the longest legitimate run here (a benchmark) takes a fraction of it.
pub const DEFAULT_RUN_LIMIT_TICKS: u64 = spr::TIMEBASE_HZ;

/// A partition's locked-memory budget: 4 MiB, eight times what its two windows' guest views
/// take (640 KiB), far less than a window of 4 KiB pages over all of a 64-bit bus would.
pub const LOCKED_LIMIT: u64 = 4 << 20;

/// The first guest's LPID ([`partition`]); the second ([`partition2`]) is `LPID + 1`.
pub const LPID: u64 = 1;
/// Guest RAM.
pub const GUEST_RAM: u64 = 64 << 20;
const LARGE: u64 = 2 << 20;
const SMALL: u64 = 64 << 10;
/// gpa 0..32M in 2 MiB chunks, then 64 KiB chunks.
const LARGE_END: u64 = 32 << 20;
/// Where the part preregistered in 64 KiB pages starts (below it: 2 MiB pages).
pub const PINNED_64K: u64 = LARGE_END;
/// End of the preregistered part (64 KiB pages from LARGE_END).
pub const PINNED_END: u64 = 48 << 20;
/// Pools for script buffers: pinned and not preregistered.
pub const PINNED_POOL: (u64, u64) = (4 << 20, PINNED_END);
pub const UNPINNED_POOL: (u64, u64) = (PINNED_END, GUEST_RAM);

/// LIOBNs the guest can use: 4 KiB pages, 256 MiB at bus 0; 64 KiB pages, 1 GiB at bus
/// `1 << 59` (where QEMU's sPAPR puts a guest's 64-bit DMA window, and PHB4's window 1 starts).
pub const LIOBN_4K: u64 = 0x8000_0001;
pub const LIOBN_64K: u64 = 0x8000_0002;
/// The symbols scripts may use.
pub const SYMBOLS: [(&str, u64); 2] = [("liobn_4k", LIOBN_4K), ("liobn_64k", LIOBN_64K)];

/// What one call of a [`Partition::run_restarting`] sequence came to.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome {
    /// A hypercall the guest made: its entry in the trace and what the guest saw.
    Hcall { trace: usize, result: CallResult },
    /// A guest action that completed or took an interrupt of the guest's own.
    Action(CallResult),
    /// The guest was stopped while making this call (the exit code); the vCPU was restarted
    /// at the next one.
    Stopped(u64),
}

/// Which path completed a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Real mode at the vector.
    Real,
    /// Virtual mode after real mode declined.
    Virtual,
    /// Not a TCE call (console, exit, unknown number).
    Other,
}

/// One hypercall as the hypervisor saw it.
#[derive(Debug, Clone, Copy)]
pub struct TraceEntry {
    pub nr: u64,
    pub r3: i64,
    pub r4: u64,
    pub path: Path,
    /// The virtual-mode handler ran with MSR[IR|DR] set and the hypervisor's PIDR (its guard),
    /// not the guest's.
    pub virt_state_ok: bool,
}

/// Host memory access for the handlers: physical through the linear map (real mode), `ua`
/// through the hypervisor's own mapping (virtual mode only), checked against the page table,
/// and guest physical through the guest's partition-scoped tree (walked in software, from
/// real mode too: its tables are in the linear map).
pub struct KernelMem {
    tree: GuestTree,
    /// `ua` reads done, and how many ran with translation on.
    pub ua_reads: AtomicU64,
    pub ua_reads_translated: AtomicU64,
}

impl MemAccess for KernelMem {
    fn phys_read_be64(&self, _: RealMode, pa: HostPhys) -> Be64 {
        // SAFETY: `pa` is inside a pinned page of guest RAM (the handlers translate through
        // preregistered memory only); the linear map reaches all RAM in both modes.
        Be64::from_raw(unsafe { core::ptr::read_volatile(pa.linear() as *const u64) })
    }

    fn ua_read_be64(&self, _: VirtMode, ua: Ua) -> Option<Be64> {
        self.ua_reads.fetch_add(1, Ordering::Relaxed);
        if spr::msr().contains(Msr::IR | Msr::DR) {
            self.ua_reads_translated.fetch_add(1, Ordering::Relaxed);
        }
        if ua.0 & 7 != 0 {
            return None;
        }
        mmu::translate(ua.0)?;
        // SAFETY: the token says translation is on, and the walk above found `ua` mapped.
        Some(Be64::from_raw(unsafe {
            core::ptr::read_volatile(ua.0 as *const u64)
        }))
    }

    fn rm_gpa_to_hpa(&self, _: RealMode, gpa: GuestPhys) -> Option<HostPhys> {
        self.tree.translate(gpa.0)
    }
}

/// TCE kills, counted (no PHB behind these windows yet). Atomics: callable in real mode.
#[derive(Default)]
pub struct KillCounter(pub AtomicU64);

impl TceInvalidate for KillCounter {
    fn invalidate(&self, _cookie: u64, _first: u64, _count: u64) -> Result<(), KillFailed> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One guest partition with one vCPU.
#[repr(C)]
pub struct Partition {
    /// The vCPU's registers; first, so the entry path's pointer is the partition's.
    pub regs: GuestRegs,
    /// Its LPID.
    pub lpid: u64,
    /// Its locked-memory budget ([`LOCKED_LIMIT`]): every window's guest view is charged
    /// to it in full when the window is created (a window that would exceed it is refused).
    pub budget: Arc<LockedVm>,
    pub guest: Guest,
    pub mem: KernelMem,
    pub kills: Arc<KillCounter>,
    pub ua: VirtRange,
    pub trace: heapless::Vec<TraceEntry, { abi::MAX_CALLS + 8 }>,
    /// H_PUT_TERM_CHAR output.
    pub console: heapless::String<4096>,
    /// The guest's state when an interrupt took the CPU back (stopped it, or ended a slice).
    pub fault: Option<GuestFault>,
    /// The run's time limit (set before [`Partition::run`]; default one second).
    pub limit: RunLimit,
    /// Slices that ended with the hypervisor decrementer, and HMIs handled, since the last
    /// [`Partition::run`] or [`Partition::run_restarting`] began.
    pub preemptions: u64,
    pub hmis: u64,
    /// Force the next hypercall down the virtual-mode path (for benchmarks of that path).
    pub force_virtual: bool,
    /// A clobber tests inject on the virtual path ([`Clobber`]); `None` otherwise.
    pub clobber: Option<Clobber>,
    /// Partition-table doubleword 1 the guest registered (0: none); a fresh vCPU starts
    /// without one.
    pub process_table: u64,
    /// Guest physical address of the BAR of the device the guest owns, or 0
    /// (`kernel::device`).
    pub device_bar: u64,
}

// `hcall_handler` and `record_fault` cast the entry path's `*mut GuestRegs` to `*mut Partition`.
const _: () = assert!(core::mem::offset_of!(Partition, regs) == 0);

/// The page descriptors: the kernel's vmemmap.
fn pages() -> &'static crate::kernel::vmemmap::KernelVmemmap {
    crate::kernel::vmemmap::get()
}

/// Why a partition could not be built.
#[derive(Debug)]
pub struct BuildError(pub &'static str);

fn alloc_chunk(size: u64) -> Result<HostPhys, BuildError> {
    let layout =
        Layout::from_size_align(size as usize, size as usize).map_err(|_| BuildError("layout"))?;
    // SAFETY: a non-zero layout; the chunk is leaked to the partition (guest RAM lives as long
    // as the kernel: partitions are few and never freed in a test run).
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(BuildError("out of memory for guest RAM"));
    }
    Ok(HostPhys::of_linear(p))
}

impl Partition {
    /// Builds LPID 1: its memory (see the module doc), TCE windows, partition-table entry, and
    /// the test guest loaded at guest physical 0.
    pub fn new(v: VirtMode, lpid: u64) -> Result<Box<Partition>, BuildError> {
        let mut chunks = Vec::new();
        // Shuffled: consecutive guest chunks come from non-adjacent host chunks.
        let large: Vec<HostPhys> = (0..LARGE_END / LARGE)
            .map(|_| alloc_chunk(LARGE))
            .collect::<Result<_, _>>()?;
        let nl = large.len();
        for i in 0..nl {
            chunks.push((i as u64 * LARGE, large[(i * 7 + 3) % nl], PageSize::Large));
        }
        let small: Vec<HostPhys> = ((LARGE_END / SMALL)..(GUEST_RAM / SMALL))
            .map(|_| alloc_chunk(SMALL))
            .collect::<Result<_, _>>()?;
        let ns = small.len();
        for i in 0..ns {
            chunks.push((
                LARGE_END + i as u64 * SMALL,
                small[(i * 37 + 11) % ns],
                PageSize::Small,
            ));
        }
        let mut tree = GuestTree::new().map_err(|_| BuildError("partition tree"))?;
        let mut vmap = Vec::new();
        for &(gpa, hpa, size) in &chunks {
            match size {
                PageSize::Large => {
                    tree.map(gpa, hpa, size)
                        .map_err(|_| BuildError("partition map"))?;
                    vmap.push((hpa, size));
                }
                _ => {
                    for k in 0..SMALL / 4096 {
                        tree.map(gpa + k * 4096, hpa.add(k * 4096), PageSize::Small)
                            .map_err(|_| BuildError("partition map"))?;
                        vmap.push((hpa.add(k * 4096), PageSize::Small));
                    }
                }
            }
        }
        let ua = mmu::vmap(v, &vmap).map_err(|_| BuildError("vmap"))?;
        let mut guest = Guest::new();
        let budget = Arc::new(LockedVm::new(LOCKED_LIMIT));
        guest.set_view_budget(crate::hcall::ViewBudget(budget.clone()));
        guest
            .mem
            .add_memslot(Memslot {
                gpa: GuestPhys(0),
                size: GUEST_RAM,
                ua: Ua(ua.base),
            })
            .map_err(|_| BuildError("memslot"))?;
        let backing = |from: u64, to: u64, step: u64| -> Result<Vec<HostPhys>, BuildError> {
            (from..to)
                .step_by(step as usize)
                .map(|g| chunk_hpa(&chunks, g))
                .collect()
        };
        let large_pages = Backing::Pages(backing(0, LARGE_END, LARGE)?.into());
        let small_pages = Backing::Pages(backing(LARGE_END, PINNED_END, SMALL)?.into());
        guest
            .mem
            .register(v, Ua(ua.base), LARGE_END, 21, large_pages, pages())
            .map_err(|_| BuildError("prereg 2M"))?;
        guest
            .mem
            .register(
                v,
                Ua(ua.base + LARGE_END),
                PINNED_END - LARGE_END,
                16,
                small_pages,
                pages(),
            )
            .map_err(|_| BuildError("prereg 64K"))?;
        let kills = Arc::new(KillCounter::default());
        create_windows(&mut guest, &kills)?;
        tree.install(lpid).map_err(|_| BuildError("install"))?;
        let mut p = Box::new(Partition {
            regs: GuestRegs::default(),
            lpid,
            budget,
            guest,
            mem: KernelMem {
                tree,
                ua_reads: AtomicU64::new(0),
                ua_reads_translated: AtomicU64::new(0),
            },
            kills,
            ua,
            trace: heapless::Vec::new(),
            console: heapless::String::new(),
            fault: None,
            limit: RunLimit {
                slice: SLICE_TICKS,
                limit: DEFAULT_RUN_LIMIT_TICKS,
            },
            preemptions: 0,
            hmis: 0,
            force_virtual: false,
            clobber: None,
            process_table: 0,
            device_bar: 0,
        });
        p.load_image()?;
        Ok(p)
    }

    /// Loads the guest ELF's segments at their guest physical addresses.
    fn load_image(&mut self) -> Result<(), BuildError> {
        let e = GUEST_ELF;
        let u16at = |o: usize| e.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u64at = |o: usize| {
            e.get(o..o + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let bad = BuildError("guest ELF");
        if e.get(0..4) != Some(b"\x7fELF".as_slice()) {
            return Err(bad);
        }
        let entry = u64at(24).ok_or(BuildError("guest ELF"))?;
        let phoff = u64at(32).ok_or(BuildError("guest ELF"))? as usize;
        let phnum = u16at(56).ok_or(BuildError("guest ELF"))? as usize;
        for i in 0..phnum {
            let ph = phoff + i * 56;
            if e.get(ph..ph + 4) != Some(&[1, 0, 0, 0][..]) {
                continue; // not PT_LOAD
            }
            let off = u64at(ph + 8).ok_or(BuildError("guest ELF"))? as usize;
            let paddr = u64at(ph + 24).ok_or(BuildError("guest ELF"))?;
            let filesz = u64at(ph + 32).ok_or(BuildError("guest ELF"))? as usize;
            let data = e.get(off..off + filesz).ok_or(BuildError("guest ELF"))?;
            self.write_bytes(paddr, data)?;
        }
        self.regs.pc = entry;
        Ok(())
    }

    /// Writes guest memory (through the partition's tree and the linear map).
    pub fn write_bytes(&self, gpa: u64, data: &[u8]) -> Result<(), BuildError> {
        for (i, b) in data.iter().enumerate() {
            let pa = self
                .mem
                .tree
                .translate(gpa + i as u64)
                .ok_or(BuildError("gpa outside guest RAM"))?;
            // SAFETY: guest RAM, reached through the linear map; the guest is not running.
            unsafe { core::ptr::write_volatile(pa.linear() as *mut u8, *b) };
        }
        Ok(())
    }

    /// A guest physical range of `len` bytes in `[from, to)`, at a multiple of `step`, none of
    /// whose pages has a vmemmap descriptor straddling two blocks: what a test or benchmark
    /// that expects real mode to finish needs (real mode declines straddlers, by design).
    pub fn unstraddled(&self, from: u64, to: u64, len: u64, step: u64) -> Option<u64> {
        use crate::mm::page::DESC_SIZE;
        use crate::mm::vmemmap::{desc_va, BLOCK_SIZE};
        let clean = |gpa: u64| {
            self.host_phys(gpa)
                .is_some_and(|h| (desc_va(h.pfn()) % BLOCK_SIZE) + DESC_SIZE <= BLOCK_SIZE)
        };
        (from..to.saturating_sub(len))
            .step_by(step as usize)
            .find(|&g| (g..g + len).step_by(4096).all(clean))
    }

    /// The host physical address of guest physical `gpa`.
    pub fn host_phys(&self, gpa: u64) -> Option<HostPhys> {
        self.mem.tree.translate(gpa)
    }

    /// A guest physical u64, little-endian (the mailbox and results).
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        let pa = self.mem.tree.translate(gpa)?;
        // SAFETY: guest RAM through the linear map, 8-aligned by the callers.
        Some(unsafe { core::ptr::read_volatile(pa.linear() as *const u64) })
    }

    /// Writes a big-endian u64 (a TCE list entry).
    pub fn write_be64(&self, gpa: u64, v: u64) -> Result<(), BuildError> {
        self.write_bytes(gpa, &v.to_be_bytes())
    }

    /// Writes the mailbox for one run.
    pub fn set_mailbox(
        &mut self,
        action: u64,
        calls: &[abi::Call],
        repeat: u64,
    ) -> Result<(), BuildError> {
        if calls.len() > abi::MAX_CALLS {
            return Err(BuildError("too many calls"));
        }
        let mut hdr = [0u64; 8];
        hdr[0] = abi::MAGIC;
        hdr[1] = action;
        hdr[2] = calls.len() as u64;
        hdr[3] = repeat;
        hdr[4] = 0x7000_0000; // no memory there
        hdr[5] = 0; // first
        hdr[6] = 0; // current
        hdr[7] = self.device_bar;
        for (i, w) in hdr.iter().enumerate() {
            self.write_bytes(abi::MAILBOX_GPA + 8 * i as u64, &w.to_le_bytes())?;
        }
        let base = abi::MAILBOX_GPA + core::mem::offset_of!(Mailbox, calls) as u64;
        for (i, c) in calls.iter().enumerate() {
            let at = base + (i * core::mem::size_of::<abi::Call>()) as u64;
            self.write_bytes(at, &c.nr.to_le_bytes())?;
            for (k, a) in c.args.iter().enumerate() {
                self.write_bytes(at + 8 + 8 * k as u64, &a.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// The result of call `i`.
    pub fn result(&self, i: usize) -> CallResult {
        let at = abi::RESULTS_GPA + (i * core::mem::size_of::<CallResult>()) as u64;
        let r = |k: u64| self.read_u64(at + 8 * k).unwrap_or(u64::MAX);
        CallResult {
            r3: r(0),
            r4: r(1),
            regs_ok: r(2),
            bad_reg: r(3),
            bad_value: r(4),
            insns: r(5),
        }
    }

    /// Starts the guest at its entry in guest real mode and runs it until it exits or is
    /// stopped; clears the trace first.
    pub fn run(&mut self) -> u64 {
        self.trace.clear();
        self.preemptions = 0;
        self.hmis = 0;
        self.run_from(0)
    }

    /// Starts a fresh vCPU (registers and SPRs reset, the partition's memory and windows as
    /// they are) that makes the mailbox's calls from `first` on, and runs it until it exits
    /// or is stopped: an interrupt of its own, the machine's, or its run limit. Time slices and
    /// HMIs end in the hypervisor and the guest is resumed. Appends to the trace.
    pub fn run_from(&mut self, first: u64) -> u64 {
        let first_at = abi::MAILBOX_GPA + core::mem::offset_of!(Mailbox, first) as u64;
        let current_at = abi::MAILBOX_GPA + core::mem::offset_of!(Mailbox, current) as u64;
        if self.write_bytes(first_at, &first.to_le_bytes()).is_err()
            || self.write_bytes(current_at, &first.to_le_bytes()).is_err()
        {
            return EXIT_FAULT;
        }
        self.regs = GuestRegs {
            pc: elf_entry(),
            msr: (Msr::SF | Msr::ME | Msr::RI | Msr::LE).bits(),
            lpid: self.lpid,
            lpcr: mmu::guest_lpcr(),
            sprs: initial_sprs(),
            ..GuestRegs::default()
        };
        self.regs.gpr[3] = abi::MAILBOX_GPA;
        self.fault = None;
        if self.process_table != 0 {
            // A fresh vCPU boots without the process table an earlier one registered.
            let _ = self.register_process_table(abi::proc_tbl::DEREG, 0, 0, 0);
        }
        guest::set_hcall_handler(hcall_handler);
        let start = spr::timebase();
        let code = loop {
            let Some(slice) = self.limit.next_slice(spr::timebase() - start) else {
                break EXIT_TIMEOUT;
            };
            self.regs.hdec = slice;
            // SAFETY: partition LPID 1 is installed with this guest's memory; no guest runs now.
            let code = unsafe { guest::enter(&mut self.regs) };
            match Exit::from_code(code) {
                Some(Exit::Preempt) => self.preemptions += 1,
                Some(Exit::Hmi) => {
                    self.hmis += 1;
                    crate::arch::ppc64::opal::handle_hmi();
                }
                _ => break code,
            }
            self.resume_from_fault();
        };
        if code != EXIT_GUEST {
            self.report_exit(code);
        }
        code
    }

    /// Makes `calls` in a fresh vCPU, restarting it after each stop at the call that follows
    /// (the partition's memory and windows as the stopped guest left them), and says what
    /// each call came to. The trace holds every hypercall of the whole sequence.
    pub fn run_restarting(&mut self, calls: &[abi::Call]) -> Result<Vec<CallOutcome>, BuildError> {
        self.set_mailbox(abi::action::CALLS, calls, 1)?;
        self.trace.clear();
        self.preemptions = 0;
        self.hmis = 0;
        let current_at = abi::MAILBOX_GPA + core::mem::offset_of!(Mailbox, current) as u64;
        let mut out = Vec::with_capacity(calls.len());
        let mut traced = 0;
        while out.len() < calls.len() {
            let first = out.len();
            let code = self.run_from(first as u64);
            let done = if code == EXIT_GUEST {
                calls.len()
            } else {
                let cur = self.read_u64(current_at).unwrap_or(first as u64) as usize;
                cur.clamp(first, calls.len())
            };
            for (i, c) in calls.iter().enumerate().take(done).skip(first) {
                let result = self.result(i);
                if abi::is_action(c.nr) {
                    traced += abi::action_hcalls(c.nr);
                    out.push(CallOutcome::Action(result));
                } else {
                    out.push(CallOutcome::Hcall {
                        trace: traced,
                        result,
                    });
                    traced += 1;
                }
            }
            if done < calls.len() && code != EXIT_GUEST {
                out.push(CallOutcome::Stopped(code));
                // Hypercalls the stopped call made before the stop are not its outcome.
                traced = self.trace.len();
            }
        }
        Ok(out)
    }

    /// The vCPU's state from the interrupt that took the CPU back, so that it resumes there:
    /// GPRs, CR, LR, CTR, XER, CFAR and SRR0/SRR1 as the interrupt found them, PC and MSR from
    /// HSRR0/HSRR1 (the interrupts that resume a guest are hypervisor interrupts). The
    /// switched SPRs are already in the vCPU (the exit path saved them).
    fn resume_from_fault(&mut self) {
        let Some(f) = self.fault.take() else { return };
        let f = f.frame;
        self.regs.gpr = f.gpr;
        self.regs.cr = f.cr;
        self.regs.lr = f.lr;
        self.regs.ctr = f.ctr;
        self.regs.xer = f.xer;
        self.regs.cfar = f.cfar;
        self.regs.pc = f.hsrr0;
        self.regs.msr = f.hsrr1;
        self.regs.srr0 = f.srr0;
        self.regs.srr1 = f.srr1;
    }

    /// Prints why the guest stopped and its state: the hypervisor carries on.
    fn report_exit(&self, code: u64) {
        kprintln!();
        kprintln!(
            "p9iommu: guest LPID {} ended: {}",
            self.lpid,
            describe_exit(code)
        );
        if let Some(g) = &self.fault {
            let f = &g.frame;
            // Hypervisor interrupts leave the guest's PC/MSR in HSRR0/1, others in SRR0/1.
            kprintln!(
                "    HSRR0 {:016x} HSRR1 {:016x} SRR0 {:016x} SRR1 {:016x}",
                f.hsrr0,
                f.hsrr1,
                f.srr0,
                f.srr1
            );
            kprintln!(
                "    HDAR  {:016x} HDSISR {:08x} ASDR {:016x}",
                g.hdar,
                g.hdsisr,
                g.asdr
            );
            kprintln!(
                "    DAR   {:016x} DSISR {:08x} LR {:016x} CFAR {:016x}",
                f.dar,
                f.dsisr,
                f.lr,
                f.cfar
            );
            crate::kernel::dump_gprs(&f.gpr, &mut |a| kprint!("{a}"));
        } else if code & EXIT_GUEST != 0 {
            kprintln!(
                "    the guest's SRR0 {:016x} SRR1 {:016x} (its own vector {:#x})",
                self.regs.gpr[5],
                self.regs.gpr[6],
                code & 0xffff
            );
        }
    }
}

/// The guest's TCE windows: LIOBN, bus offset, IO page shift, bytes, table levels. The same
/// layout as a PHB4 PE's two windows (TVE 2*PE at bus 0, TVE 2*PE+1 at `1 << 59`).
pub const WINDOWS: [(u64, u64, u32, u64, u32); 2] = [
    (LIOBN_4K, 0, 12, 256 << 20, 2),
    (LIOBN_64K, 1 << 59, 16, 1 << 30, 2),
];

/// A fresh hardware table for window `w` of [`WINDOWS`], no level below the top allocated.
pub fn window_table(w: usize) -> Result<TceTable<HeapMemory, LockedVm>, BuildError> {
    let (_, bus, shift, size, levels) = WINDOWS[w];
    let geo = TceGeometry::new(bus, shift, size, levels).map_err(|_| BuildError("geometry"))?;
    TceTable::new(geo, 0, HeapMemory::new(), LockedVm::new(u64::MAX))
        .map_err(|_| BuildError("table"))
}

/// The guest's TCE windows, each over a fresh hardware table of its own whose levels are not
/// allocated yet, killed into a counter (no device walks them).
fn create_windows(guest: &mut Guest, kills: &Arc<KillCounter>) -> Result<(), BuildError> {
    let own = [0, 1].map(|w| {
        window_table(w).map(|t| Attached {
            table: Arc::new(t),
            kill: kills.clone(),
            cookie: WINDOWS[w].0,
        })
    });
    let [a, b] = own;
    create_windows_over(guest, [a?, b?])
}

/// The guest's TCE windows over `tables` (one per window of [`WINDOWS`], in order).
fn create_windows_over(guest: &mut Guest, tables: [Attached; 2]) -> Result<(), BuildError> {
    for (&(liobn, bus, shift, size, _), t) in WINDOWS.iter().zip(tables) {
        guest
            .create_window(liobn, bus, shift, size)
            .map_err(|_| BuildError("window"))?;
        guest
            .attach_table(liobn, t)
            .map_err(|_| BuildError("attach"))?;
    }
    Ok(())
}

fn elf_entry() -> u64 {
    GUEST_ELF
        .get(24..32)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// The host chunk behind guest physical `gpa`; an address no chunk holds is an error, never a
/// made-up host address.
fn chunk_hpa(chunks: &[(u64, HostPhys, PageSize)], gpa: u64) -> Result<HostPhys, BuildError> {
    chunks
        .iter()
        .find(|(g, _, s)| {
            let len = if *s == PageSize::Large { LARGE } else { SMALL };
            (*g..*g + len).contains(&gpa)
        })
        .map(|(g, h, _)| h.add(gpa - g))
        .ok_or(BuildError("a preregistered guest address no chunk backs"))
}

/// A fresh vCPU's switched SPRs: nothing of the host's. DEC starts far from expiry and PPR at
/// medium priority, as a CPU comes out of reset; the rest are zero.
fn initial_sprs() -> guest::GuestSprs {
    let mut s = guest::GuestSprs::default();
    s.set(spr::DEC, 0x7fff_ffff);
    s.set(896, 4 << 50);
    s
}

/// The guest's state at an interrupt that took the CPU back from it.
pub struct GuestFault {
    /// What the vector block saved.
    pub frame: TrapFrame,
    /// The partition-scoped fault's address, cause and the guest real address it translated
    /// (HDAR, HDSISR, ASDR), read before anything else could change them.
    pub hdar: u64,
    pub hdsisr: u64,
    pub asdr: u64,
}

/// Records the guest's registers at an interrupt that takes the CPU back from it (called by
/// the report path, in real mode).
pub fn record_fault(f: &TrapFrame) {
    let regs = guest::current_regs();
    if regs.is_null() {
        return;
    }
    // SAFETY: the running vCPU's registers are the first field of its Partition (repr(C)).
    let p = unsafe { &mut *(regs as *mut Partition) };
    p.fault = Some(GuestFault {
        frame: TrapFrame { ..*f },
        hdar: spr::mfspr::<{ spr::HDAR }>(),
        hdsisr: spr::mfspr::<{ spr::HDSISR }>(),
        asdr: spr::mfspr::<{ spr::ASDR }>(),
    });
}

/// The exit code for an interrupt at `vector` taken while a guest ran.
pub fn exit_code_for(vector: u64) -> u64 {
    Exit::for_interrupt(vector).code()
}

/// The hypercall handler `p9_hcall_entry` calls: real mode, MMU off, on the host stack.
extern "C" fn hcall_handler(regs: &mut GuestRegs) -> u64 {
    // SAFETY: `regs` is the first field of a Partition (repr(C)): the vCPU the kernel entered.
    let p = unsafe { &mut *(regs as *mut GuestRegs as *mut Partition) };
    if p.regs.msr & Msr::PR.bits() != 0 {
        return from_problem_state(p);
    }
    let nr = p.regs.gpr[3];
    if matches!(nr, H_P9_EXIT | H_PUT_TERM_CHAR | abi::H_REGISTER_PROC_TBL) {
        return partition_call(p, nr);
    }
    let args = [p.regs.gpr[4], p.regs.gpr[5], p.regs.gpr[6], p.regs.gpr[7]];
    let env = Env {
        pages: pages(),
        mem: &p.mem,
    };
    // SAFETY: this is the real-mode entry path: MMU off (vector 0xC00), and rm_dispatch enters
    // the allocation guard.
    let rm = unsafe { RealMode::new_unchecked() };
    let first = if p.force_virtual {
        Err(TooHard)
    } else {
        rm_dispatch(&p.guest, &env, rm, nr, args)
    };
    match first {
        Ok(r) => {
            let path = if is_tce(nr) { Path::Real } else { Path::Other };
            p.finish(nr, r, path, false)
        }
        Err(TooHard) => virtual_mode_call(p, nr, args),
    }
}

/// `sc 1` from guest problem state reaches no handler: the guest gets a privileged-instruction
/// program interrupt, as KVM delivers it. Its registers are untouched but for the interrupt's.
#[cold]
#[inline(never)]
fn from_problem_state(p: &mut Partition) -> u64 {
    if let Some(r) = reflect_privileged(p.regs.pc, p.regs.msr) {
        p.regs.pc = r.pc;
        p.regs.msr = r.msr;
        p.regs.srr0 = r.srr0;
        p.regs.srr1 = r.srr1;
    }
    0
}

/// The partition's own calls (console output, exit), kept out of the hot path's frame.
#[cold]
#[inline(never)]
fn partition_call(p: &mut Partition, nr: u64) -> u64 {
    if nr == H_P9_EXIT {
        return EXIT_GUEST | (p.regs.gpr[4] & 0xffff_ffff);
    }
    if nr == abi::H_REGISTER_PROC_TBL {
        let a = [p.regs.gpr[4], p.regs.gpr[5], p.regs.gpr[6], p.regs.gpr[7]];
        let r = mmu::virtual_mode(|_| p.register_process_table(a[0], a[1], a[2], a[3]));
        return p.finish(nr, HcallReturn::status(r), Path::Other, false);
    }
    let len = (p.regs.gpr[5] as usize).min(16);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&p.regs.gpr[6].to_be_bytes());
    bytes[8..].copy_from_slice(&p.regs.gpr[7].to_be_bytes());
    for &b in &bytes[..len] {
        let _ = p.console.push(b as char);
    }
    p.finish(
        nr,
        HcallReturn::status(HcallResult::Success),
        Path::Other,
        false,
    )
}

/// What real mode declined: the virtual-mode handler with the MMU on (its own frame, so the
/// real-mode path does not pay for the switch's).
#[inline(never)]
fn virtual_mode_call(p: &mut Partition, nr: u64, args: [u64; 4]) -> u64 {
    let env = Env {
        pages: pages(),
        mem: &p.mem,
    };
    let (r, msr_ok) = mmu::virtual_mode(|v| {
        let ok = spr::msr().contains(Msr::IR | Msr::DR)
            && spr::mfspr::<{ spr::PIDR }>() == mmu::HOST_PIDR;
        (vm_dispatch(&p.guest, &env, v, nr, args), ok)
    });
    let code = p.finish(nr, r, Path::Virtual, msr_ok);
    if let Some(c) = p.clobber {
        p.apply_clobber(c);
    }
    code
}

/// State the hypervisor damages on purpose on the way back from the virtual path, so that a
/// test proves the guest's register check sees it (`hv.hostile.register_check_catches_*`).
/// Only ever set by tests; the real-mode path has no such hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clobber {
    /// Flip bit 0 of a GPR the entry path saves (r0..r13 but r3).
    Gpr(usize),
    /// Flip every bit of a CR field (0..=7).
    CrField(u32),
    /// Flip XER[CA] or XER[OV32].
    XerCa,
    XerOv32,
    /// Move CFAR by one instruction.
    Cfar,
    /// Flip bit 0 of SPRG2, live in the CPU.
    Sprg2,
}

impl Partition {
    fn apply_clobber(&mut self, c: Clobber) {
        match c {
            Clobber::Gpr(k) if k < 14 && k != 3 => self.regs.gpr[k] ^= 1,
            Clobber::Gpr(_) => {}
            Clobber::CrField(f) => self.regs.cr ^= 0xf << (28 - 4 * (f & 7)),
            Clobber::XerCa => self.regs.xer ^= 1 << 29,
            Clobber::XerOv32 => self.regs.xer ^= 1 << 19,
            Clobber::Cfar => self.regs.cfar ^= 4,
            Clobber::Sprg2 => {
                let v = spr::mfspr::<274>();
                // SAFETY: SPRG2 is the guest's while it runs; the hypervisor never uses it.
                unsafe { spr::mtspr::<274>(v ^ 1) };
            }
        }
    }

    /// H_REGISTER_PROC_TBL (PAPR): the guest names its radix process table, a guest real
    /// address; partition-table entry doubleword 1 then holds that (GR | base | size), never
    /// a host address. Deregistering empties it. The guest may not ask for `tlbie` of its own
    /// (GTSE) here: H_PARAMETER.
    pub fn register_process_table(
        &mut self,
        flags: u64,
        base: u64,
        page_size: u64,
        table_size: u64,
    ) -> HcallResult {
        use abi::proc_tbl;
        let dw1 = match flags & proc_tbl::OP_MASK {
            proc_tbl::DEREG => 0,
            proc_tbl::NEW => {
                let bytes = 1u64.checked_shl(table_size as u32 + 12).unwrap_or(0);
                if flags & !(proc_tbl::OP_MASK | proc_tbl::TYPE_MASK) != 0
                    || flags & proc_tbl::TYPE_MASK != proc_tbl::RADIX
                    || page_size != 0
                    || table_size > 24
                    || !base.is_multiple_of(bytes)
                    || base.checked_add(bytes).is_none_or(|end| end > GUEST_RAM)
                {
                    return HcallResult::Parameter;
                }
                (1 << 63) | base | table_size
            }
            _ => return HcallResult::Parameter,
        };
        let (dw0, _) = mmu::partition_entry(self.lpid).unwrap_or((0, 0));
        if mmu::set_partition(self.lpid, dw0, dw1).is_err() {
            return HcallResult::Hardware;
        }
        self.process_table = dw1;
        HcallResult::Success
    }
}

fn is_tce(nr: u64) -> bool {
    matches!(
        nr,
        crate::hcall::H_PUT_TCE
            | crate::hcall::H_GET_TCE
            | crate::hcall::H_STUFF_TCE
            | crate::hcall::H_PUT_TCE_INDIRECT
    )
}

impl Partition {
    fn finish(&mut self, nr: u64, r: HcallReturn, path: Path, virt_state_ok: bool) -> u64 {
        self.regs.gpr[3] = r.r3.code() as u64;
        if abi::returns_r4(nr) {
            self.regs.gpr[4] = r.r4;
        }
        let _ = self.trace.push(TraceEntry {
            nr,
            r3: r.r3.code(),
            r4: r.r4,
            path,
            virt_state_ok,
        });
        0
    }
}

/// The guest partition, built once and reused by every run.
static PARTITIONS: [spin::Once<spin::Mutex<Box<Partition>>>; 2] =
    [spin::Once::new(), spin::Once::new()];

fn partition_n(k: usize) -> Result<spin::MutexGuard<'static, Box<Partition>>, BuildError> {
    if let Some(p) = PARTITIONS[k].get() {
        return Ok(p.lock());
    }
    let v = mmu::virt_mode().ok_or(BuildError("partitions are built with the MMU on"))?;
    let p = Partition::new(v, LPID + k as u64)?;
    Ok(PARTITIONS[k].call_once(|| spin::Mutex::new(p)).lock())
}

/// The first guest partition, LPID 1 (built on first use). Runs serialise on its lock.
pub fn partition() -> Result<spin::MutexGuard<'static, Box<Partition>>, BuildError> {
    partition_n(0)
}

/// The second guest partition, LPID 2, with memory of its own (built on first use).
pub fn partition2() -> Result<spin::MutexGuard<'static, Box<Partition>>, BuildError> {
    partition_n(1)
}

/// Describes an exit code.
pub fn describe_exit(code: u64) -> alloc::string::String {
    use crate::arch::ppc64::exception::vector_name;
    use alloc::format;
    match Exit::from_code(code) {
        Some(Exit::Guest(c)) => format!("the guest exited with code {c:#x}"),
        Some(Exit::Fault(v)) => {
            format!(
                "the guest was stopped by interrupt {v:#x} ({})",
                vector_name(v)
            )
        }
        Some(Exit::Timeout) => "the guest was stopped: it ran past its time limit (timeout)".into(),
        Some(Exit::Machine(v)) => format!(
            "the guest was stopped by the machine's interrupt {v:#x} ({}), not the guest's doing",
            vector_name(v)
        ),
        Some(Exit::Preempt | Exit::Hmi) | None => format!("exit code {code:#x}"),
    }
}

/// The demo's guest: the four TCE hypercalls through `sc 1`, the fallback, a guest error.
pub fn demo() -> bool {
    let Ok(mut p) = partition() else {
        kprintln!("  [hcall] FAILED: could not build the guest partition");
        return false;
    };
    let list = PINNED_POOL.0;
    for i in 0..8u64 {
        let _ = p.write_be64(list + 8 * i, (PINNED_POOL.0 + 0x10000 + i * 0x1000) | 3);
    }
    let calls = [
        call(
            crate::hcall::H_PUT_TCE,
            &[LIOBN_4K, 0x1000, (PINNED_POOL.0 + 0x2000) | 3],
        ),
        call(
            crate::hcall::H_PUT_TCE,
            &[LIOBN_4K, 0x3000, (PINNED_POOL.0 + 0x5000) | 1],
        ),
        call(crate::hcall::H_GET_TCE, &[LIOBN_4K, 0x3000]),
        call(
            crate::hcall::H_PUT_TCE_INDIRECT,
            &[LIOBN_4K, 0x8000, list, 8],
        ),
        call(crate::hcall::H_PUT_TCE, &[LIOBN_4K, 0x1001, 0]),
        call(crate::hcall::H_STUFF_TCE, &[LIOBN_4K, 0, 0, 16]),
    ];
    if p.set_mailbox(abi::action::CALLS, &calls, 1).is_err() {
        return false;
    }
    let code = p.run();
    let mut ok = code == EXIT_GUEST;
    kprintln!(
        "  [hcall] a guest in LPID {} makes {} hypercalls by sc 1 ({}):",
        p.lpid,
        calls.len(),
        describe_exit(code)
    );
    for (i, t) in p.trace.iter().enumerate() {
        let r = p.result(i);
        kprint!("  [hcall]   {} -> {}", hcall_name(t.nr), code_name(t.r3));
        if abi::returns_r4(t.nr) {
            kprint!(" r4={:#x}", t.r4);
        }
        if r.regs_ok == 1 {
            kprintln!("  ({}; registers intact)", path_name(t.path));
        } else {
            kprintln!(
                "  ({}; register {} CHANGED to {:#x})",
                path_name(t.path),
                reg_name(r.bad_reg),
                r.bad_value
            );
        }
        ok &= r.regs_ok == 1;
    }
    let want = [0, 0, 0, 0, HcallResult::Parameter.code(), 0];
    ok &= p.trace.len() == want.len() && p.trace.iter().zip(want).all(|(t, w)| t.r3 == w);
    ok
}

/// A call for the mailbox.
pub fn call(nr: u64, args: &[u64]) -> abi::Call {
    let mut c = abi::Call { nr, args: [0; 8] };
    c.args[..args.len()].copy_from_slice(args);
    c
}

/// PAPR's name for a hypercall number.
pub fn hcall_name(nr: u64) -> &'static str {
    match nr {
        crate::hcall::H_PUT_TCE => "H_PUT_TCE",
        crate::hcall::H_GET_TCE => "H_GET_TCE",
        crate::hcall::H_STUFF_TCE => "H_STUFF_TCE",
        crate::hcall::H_PUT_TCE_INDIRECT => "H_PUT_TCE_INDIRECT",
        H_PUT_TERM_CHAR => "H_PUT_TERM_CHAR",
        H_P9_EXIT => "H_P9_EXIT",
        _ => "hcall",
    }
}

/// PAPR's name for a return code.
pub fn code_name(r3: i64) -> &'static str {
    HcallResult::from_code(r3).map_or("?", HcallResult::name)
}

/// How a path is printed.
pub fn path_name(p: Path) -> &'static str {
    match p {
        Path::Real => "real mode",
        Path::Virtual => "virtual mode after H_TOO_HARD",
        Path::Other => "hypervisor",
    }
}

/// The name of a register in [`CallResult::bad_reg`] numbering.
pub fn reg_name(k: u64) -> alloc::string::String {
    abi::checked_reg_name(k).map_or_else(|| alloc::format!("#{k}"), Into::into)
}

impl Partition {
    /// Hands the guest a device: its windows are replaced by windows over `tables`, the
    /// hardware tables a PHB walks for the device's PE (window 0 and window 1, geometry as
    /// [`WINDOWS`]), each with the kill that reaches that PHB and the cookie naming the PE.
    /// The guest's old windows are cleared and removed first; the new tables must be empty.
    pub fn attach_device(&mut self, v: VirtMode, tables: [Attached; 2]) -> Result<(), BuildError> {
        if !self.clear_and_remove_windows(v) {
            return Err(BuildError("could not clear the guest's windows"));
        }
        create_windows_over(&mut self.guest, tables)
    }

    /// Takes the device back: clears the guest's windows (every TCE it left is cleared and
    /// killed on the PHB) and gives it windows of its own again. False if something refused.
    pub fn detach_device(&mut self, v: VirtMode) -> bool {
        self.reset(v)
    }

    /// Maps a device's BAR (its first [`abi::DEVICE_BAR_LEN`] bytes at `bar`) into the guest's
    /// partition-scoped tree at [`abi::DEVICE_BAR_GPA`], cache-inhibited and guarded, and
    /// tells the guest where it is (the mailbox's `device_bar`).
    pub fn map_device_bar(&mut self, bar: HostPhys) -> Result<(), BuildError> {
        self.mem
            .tree
            .map_io(self.lpid, abi::DEVICE_BAR_GPA, bar, abi::DEVICE_BAR_LEN)
            .map_err(|_| BuildError("mapping the device's BAR"))?;
        self.device_bar = abi::DEVICE_BAR_GPA;
        Ok(())
    }

    /// Unmaps the device's BAR: the guest reaches the device no more.
    pub fn unmap_device_bar(&mut self) {
        if self.device_bar != 0 {
            self.mem
                .tree
                .unmap_range(abi::DEVICE_BAR_GPA, abi::DEVICE_BAR_LEN);
            self.device_bar = 0;
        }
    }

    fn clear_and_remove_windows(&mut self, v: VirtMode) -> bool {
        let env = Env {
            pages: pages(),
            mem: &self.mem,
        };
        let windows: Vec<(u64, u64, u64)> = self
            .guest
            .windows()
            .iter()
            .map(|w| (w.liobn(), w.bus_offset(), w.entries()))
            .collect();
        windows.into_iter().all(|(liobn, bus, n)| {
            let r = vm_dispatch(
                &self.guest,
                &env,
                v,
                crate::hcall::H_STUFF_TCE,
                [liobn, bus, 0, n],
            );
            r.r3 == HcallResult::Success
        }) && {
            let liobns: Vec<u64> = self.guest.windows().iter().map(|w| w.liobn()).collect();
            liobns
                .into_iter()
                .all(|l| self.guest.remove_window(l).is_ok())
        }
    }

    /// Clears every window (virtual mode, as the hypervisor itself) and replaces the windows
    /// with fresh ones, so that a run starts from empty tables with no level allocated; returns
    /// false if something refused.
    pub fn reset(&mut self, v: VirtMode) -> bool {
        self.clear_and_remove_windows(v) && create_windows(&mut self.guest, &self.kills).is_ok()
    }
}
