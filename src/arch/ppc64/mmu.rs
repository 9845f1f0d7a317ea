//! The hypervisor's MMU on the boot CPU: POWER9 radix with partition and process tables.
//!
//! Layout of the hypervisor's effective addresses (quadrant 3, as Linux radix has them):
//! - `0xc000_0000_0000_0000 + pa`: the linear map of all RAM the FDT lists (and, non-idempotent
//!   I/O, the PHB register and window ranges). Valid in real mode too, which ignores the top
//!   four bits: the kernel is linked there.
//! - `0xc008_0000_0000_0000..`: the virtual-only area ([`vmap`]), mapped page by page onto
//!   scattered physical memory: unreachable with the MMU off.
//!
//! Partition table entry 0 holds the hypervisor's tree and process table; entries 1.. hold
//! guests' partition-scoped trees ([`set_partition`]). PIDR is 1, whose process-table entry is
//! empty: a stray physical (quadrant 0) pointer faults with the MMU on instead of aliasing RAM.
use super::spr::{self, mfspr, mtspr, Msr};
use crate::mm::radix::{Kind, PageSize, RadixError, RadixTree};
use crate::mm::{HostPhys, RealMode, VirtMode};
use crate::tce::{HeapMemory, TceMemory};

/// SPR numbers used here.
const PTCR: u32 = 464;
const PIDR: u32 = spr::PIDR;
pub const LPIDR: u32 = 319;

/// The hypervisor's PIDR: a process-table entry left empty, so that a stray quadrant-0
/// pointer faults with the MMU on. A guest's PIDR is its own: switched on entry and exit, and
/// while a hypercall runs in virtual mode.
pub const HOST_PIDR: u64 = 1;

/// LPCR bits (ISA 3.0).
const LPCR_VPM0: u64 = 1 << 63;
const LPCR_VPM1: u64 = 1 << 62;
const LPCR_ILE: u64 = 1 << 25;
const LPCR_AIL: u64 = 3 << 23;
const LPCR_UPRT: u64 = 1 << 22;
const LPCR_HR: u64 = 1 << 20;
const LPCR_HDICE: u64 = 1 << 0;
const LPCR_LPES: u64 = 1 << 3;
const LPCR_MER: u64 = 1 << 11;

/// Where the linear map starts.
pub const LINEAR_BASE: u64 = crate::mm::addr::LINEAR_BASE;
/// The virtual-only area (Linux radix: vmalloc).
pub const VMAP_BASE: u64 = 0xc008_0000_0000_0000;
const QUADRANT_MASK: u64 = 0xc000_0000_0000_0000;

/// Most partitions the table holds (4 KiB of 16-byte entries: PATS = 0).
pub const MAX_LPID: u64 = 255;

/// Table memory: the kernel heap, reached through the linear map.
static TABLES: HeapMemory = HeapMemory::new();

struct Mmu {
    tree: RadixTree<&'static HeapMemory>,
    partition_table: HostPhys,
    /// Next free address in the virtual-only area.
    vmap_next: u64,
}

static MMU: spin::Once<spin::Mutex<Mmu>> = spin::Once::new();

/// A physical range to map.
#[derive(Debug, Clone, Copy)]
pub struct PhysRange {
    pub start: u64,
    pub len: u64,
}

/// Why the MMU could not be set up or a mapping made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmuError {
    /// A table could not be allocated or a range could not be mapped.
    Radix(RadixError),
    /// `init` was not called (or called twice).
    State,
}

impl From<RadixError> for MmuError {
    fn from(e: RadixError) -> Self {
        MmuError::Radix(e)
    }
}

fn store_be(pa: HostPhys, v: u64) {
    // SAFETY: `pa` is inside a table this module allocated from TABLES, which lives forever.
    unsafe { TABLES.store(pa.0, v.to_be()) }
}

/// Builds the hypervisor's tree (linear map of `ram`, `io` as I/O), the partition and process
/// tables, points PTCR/LPCR/PIDR at them, invalidates the TLB and turns translation on.
/// Returns the virtual-mode token: from here on the kernel runs with the MMU on.
///
/// # Safety
/// Call once, on the boot CPU, in hypervisor real mode, after the heap is up. Every address the
/// kernel uses must be a linear-map address (it is linked there; the heap hands them out).
pub unsafe fn init(ram: &[PhysRange], io: &[PhysRange]) -> Result<VirtMode, MmuError> {
    let mut tree = RadixTree::new(&TABLES)?;
    for r in ram {
        tree.map_range(r.start, HostPhys(r.start), r.len, Kind::Ram)?;
    }
    for r in io {
        let start = r.start & !0xfff;
        let len = (r.start + r.len - start + 0xfff) & !0xfff;
        tree.map_range(start, HostPhys(start), len, Kind::Io)?;
    }
    let pt = HostPhys(TABLES.alloc_level(4096, 0).map_err(RadixError::from)?);
    let prt = HostPhys(TABLES.alloc_level(4096, 0).map_err(RadixError::from)?);
    // Process table: entry 0 (PID 0, quadrant 3) is the hypervisor's tree; entry 1 (PIDR) empty.
    store_be(prt, tree.prte0());
    // Partition table entry 0: the hypervisor's tree and its process table (PRTS 0 = 4 KiB).
    store_be(pt, tree.pate0());
    store_be(pt.add(8), prt.0);
    MMU.call_once(|| {
        spin::Mutex::new(Mmu {
            tree,
            partition_table: pt,
            vmap_next: VMAP_BASE,
        })
    });

    // SAFETY: the tables above map every address the kernel uses; the sequence is the ISA's
    // (ptesync before pointing the MMU at new tables, full invalidation after).
    unsafe {
        core::arch::asm!("ptesync", options(nostack));
        mtspr::<PTCR>(pt.0); // PATS = 0: 4 KiB, 256 partitions
        mtspr::<PIDR>(HOST_PIDR);
        mtspr::<LPIDR>(0);
        let lpcr = mfspr::<{ spr::LPCR }>();
        let lpcr = (lpcr | LPCR_HR | LPCR_UPRT | LPCR_ILE)
            & !(LPCR_AIL | LPCR_HDICE | LPCR_VPM0 | LPCR_VPM1);
        mtspr::<{ spr::LPCR }>(lpcr);
        HOST_LPCR.store(lpcr, core::sync::atomic::Ordering::Relaxed);
        core::arch::asm!("isync", options(nostack));
        invalidate_all();
        spr::set_msr(spr::msr() | Msr::IR | Msr::DR);
        Ok(VirtMode::new_unchecked())
    }
}

/// The host's LPCR as `init` set it, for the secondary threads.
static HOST_LPCR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Points a secondary thread's MMU at the tables `init` built (PTCR, PIDR, LPIDR 0, the host's
/// LPCR) and turns translation on: from here it runs as the boot CPU does.
///
/// # Safety
/// Call once per secondary thread, in hypervisor real mode, after `init` ran on the boot CPU;
/// every address the thread uses is a linear-map address.
pub unsafe fn init_secondary() -> Result<VirtMode, MmuError> {
    let pt = MMU.get().ok_or(MmuError::State)?.lock().partition_table;
    // SAFETY: the boot CPU's tables map everything the kernel uses; the sequence is `init`'s.
    unsafe {
        core::arch::asm!("ptesync", options(nostack));
        mtspr::<PTCR>(pt.0);
        mtspr::<PIDR>(HOST_PIDR);
        mtspr::<LPIDR>(0);
        mtspr::<{ spr::LPCR }>(HOST_LPCR.load(core::sync::atomic::Ordering::Relaxed));
        core::arch::asm!("isync", options(nostack));
        invalidate_all();
        spr::set_msr(spr::msr() | Msr::IR | Msr::DR | Msr::ME);
        Ok(VirtMode::new_unchecked())
    }
}

/// Invalidates every translation, host and guest (tlbie IS=3, RIC=2, radix, both scopes), with
/// the ISA's completion sequence.
///
/// # Safety
/// Only drops cached translations; callable in either mode once PTCR is set.
pub unsafe fn invalidate_all() {
    // tlbie RB=r4, RS=r5, RIC=2, PRS, R=1, encoded by hand: the assembler lacks the 5-operand form.
    // SAFETY: invalidating translations is always allowed to the hypervisor.
    unsafe {
        core::arch::asm!(
            "ptesync",
            ".long 0x7CA92264", // tlbie r4, r5, RIC=2, PRS=0, R=1 (partition-scoped, LPID r5=0)
            ".long 0x7CAB2264", // PRS=1 with r5 = 0 (the hypervisor's process-scoped entries)
            "li 5, 1",
            ".long 0x7CAB2264", // PRS=1, any LPID != 0: guest entries
            ".long 0x7CA92264",
            "eieio",
            "tlbsync",
            "ptesync",
            in("r4") 3u64 << 10, // IS = 3: everything
            inout("r5") 0u64 => _,
            options(nostack)
        )
    };
}

/// Partition-table entry `lpid` as the hardware reads it (host-endian), for checks.
pub fn partition_entry(lpid: u64) -> Option<(u64, u64)> {
    if lpid > MAX_LPID {
        return None;
    }
    let mmu = MMU.get()?.lock();
    let e = mmu.partition_table.add(16 * lpid);
    // SAFETY: inside the partition table this module allocated, which lives forever.
    Some(unsafe {
        (
            u64::from_be(TABLES.load(e.0)),
            u64::from_be(TABLES.load(e.add(8).0)),
        )
    })
}

/// Writes partition-table entry `lpid` (doubleword 0 = the guest's partition-scoped tree as
/// [`RadixTree::pate0`] gives it, doubleword 1 = its process table | size) and invalidates.
/// `dw0 = 0` removes the partition.
pub fn set_partition(lpid: u64, dw0: u64, dw1: u64) -> Result<(), MmuError> {
    if lpid == 0 || lpid > MAX_LPID {
        return Err(MmuError::State);
    }
    let mmu = MMU.get().ok_or(MmuError::State)?.lock();
    let e = mmu.partition_table.add(16 * lpid);
    store_be(e, dw0);
    store_be(e.add(8), dw1);
    // SAFETY: only drops cached translations after the entry changed.
    unsafe { invalidate_all() };
    Ok(())
}

/// A range of the virtual-only area, mapped onto `chunks` in order. Virtual-only: with the MMU
/// off the addresses mean nothing, which is the point.
#[derive(Debug, Clone, Copy)]
pub struct VirtRange {
    /// First effective address.
    pub base: u64,
    /// Bytes.
    pub len: u64,
}

/// Maps `chunks` (each a naturally aligned physical block of the given size) back to back at the
/// next free, 1 GiB-aligned place of the virtual-only area. Chunks of 2 MiB must come where the
/// running offset is 2 MiB-aligned (put them first).
pub fn vmap(_v: VirtMode, chunks: &[(HostPhys, PageSize)]) -> Result<VirtRange, MmuError> {
    let mut mmu = MMU.get().ok_or(MmuError::State)?.lock();
    let base = mmu.vmap_next;
    let mut off = 0u64;
    for &(pa, size) in chunks {
        let ea = base + off;
        mmu.tree.map(ea & !QUADRANT_MASK, pa, size, Kind::Ram)?;
        off += size.bytes();
    }
    mmu.vmap_next = (base + off + (1 << 30)) & !((1 << 30) - 1);
    // New valid entries need only the ordering barrier, no invalidation.
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("ptesync", options(nostack)) };
    Ok(VirtRange { base, len: off })
}

/// Maps the hypervisor effective address `ea` (quadrant 3) to `pa` with one leaf of `size`.
pub fn map_at(_v: VirtMode, ea: u64, pa: HostPhys, size: PageSize) -> Result<(), MmuError> {
    let mut mmu = MMU.get().ok_or(MmuError::State)?.lock();
    mmu.tree.map(ea & !QUADRANT_MASK, pa, size, Kind::Ram)?;
    // SAFETY: a barrier: a new valid entry needs no invalidation.
    unsafe { core::arch::asm!("ptesync", options(nostack)) };
    Ok(())
}

/// Removes the leaf mapping `ea` and invalidates the TLB; returns what it mapped.
pub fn unmap(_v: VirtMode, ea: u64) -> Option<HostPhys> {
    let mut mmu = MMU.get()?.lock();
    let (pa, _) = mmu.tree.unmap(ea & !QUADRANT_MASK)?;
    // SAFETY: only drops cached translations after the entry went.
    unsafe { invalidate_all() };
    Some(pa)
}

/// Runs `f` in hypervisor real mode (MMU off, allocation refused), then turns translation back
/// on. For code that must prove what works without the MMU (the vmemmap walker's tests).
pub fn real_mode<R>(_v: VirtMode, f: impl FnOnce(RealMode) -> R) -> R {
    let msr = spr::msr();
    let _scope = crate::mm::alloc_guard::RealModeScope::enter();
    // SAFETY: the kernel's code, stack and data are linear-map addresses, valid with the MMU
    // off; the closure gets a RealMode token and the allocation guard is active.
    unsafe {
        spr::set_msr(msr - (Msr::IR | Msr::DR));
        let r = f(RealMode::new_unchecked());
        spr::set_msr(msr);
        r
    }
}

/// Runs `f` with translation on (from a real-mode path such as the hypercall vector), then
/// drops back to real mode. PIDR is the hypervisor's while `f` runs (a guest's may be live
/// when a hypercall switches) and is put back after.
pub fn virtual_mode<R>(f: impl FnOnce(VirtMode) -> R) -> R {
    let msr = spr::msr();
    let pidr = mfspr::<PIDR>();
    // SAFETY: the hypervisor's tables map all kernel memory (code, stacks, heap) at the linear
    // addresses in use; translation on is the state the token stands for. PIDR changes take
    // effect at the context-synchronising `hrfid` of `set_msr`.
    unsafe {
        mtspr::<PIDR>(HOST_PIDR);
        spr::set_msr(msr | Msr::IR | Msr::DR);
        let r = f(VirtMode::new_unchecked());
        spr::set_msr(msr);
        mtspr::<PIDR>(pidr);
        r
    }
}

/// LPCR for a guest partition: the host's, with the hypervisor decrementer interrupt enabled
/// (HDICE: a guest never keeps the CPU past its time slice), external interrupts to the
/// hypervisor (LPES = 0) and no mediated external request pending (MER = 0).
pub fn guest_lpcr() -> u64 {
    (mfspr::<{ spr::LPCR }>() | LPCR_HDICE) & !(LPCR_LPES | LPCR_MER)
}

/// LPCR of the host: HDICE clear (the hypervisor decrementer never interrupts the hypervisor).
pub fn host_lpcr_is_sane() -> bool {
    mfspr::<{ spr::LPCR }>() & LPCR_HDICE == 0
}

/// The physical address behind a hypervisor effective address, by software walk.
pub fn translate(ea: u64) -> Option<HostPhys> {
    if ea & QUADRANT_MASK != QUADRANT_MASK {
        return None;
    }
    let mmu = MMU.get()?.lock();
    mmu.tree.translate(ea & !QUADRANT_MASK).map(|(pa, _)| pa)
}

/// A guest's partition-scoped tree (guest physical -> host physical), in kernel memory.
pub struct GuestTree {
    tree: RadixTree<&'static HeapMemory>,
}

impl GuestTree {
    /// An empty tree.
    pub fn new() -> Result<Self, MmuError> {
        let tree = RadixTree::new(&TABLES)?;
        Ok(GuestTree { tree })
    }

    /// Maps guest physical `gpa` to `hpa` with one leaf.
    pub fn map(&mut self, gpa: u64, hpa: HostPhys, size: PageSize) -> Result<(), MmuError> {
        Ok(self.tree.map(gpa, hpa, size, Kind::Guest)?)
    }

    /// Maps a device's registers at `gpa` (4 KiB pages over `len` bytes of `hpa`),
    /// cache-inhibited and guarded, and drops any translation cached for the partition.
    pub fn map_io(&mut self, lpid: u64, gpa: u64, hpa: HostPhys, len: u64) -> Result<(), MmuError> {
        for off in (0..len).step_by(4096) {
            self.tree
                .map(gpa + off, hpa.add(off), PageSize::Small, Kind::GuestIo)?;
        }
        let _ = lpid;
        // SAFETY: a barrier: new valid entries need no invalidation.
        unsafe { core::arch::asm!("ptesync", options(nostack)) };
        Ok(())
    }

    /// Removes the 4 KiB mappings over `[gpa, gpa + len)` and invalidates the TLB: the
    /// partition reaches the device no more.
    pub fn unmap_range(&mut self, gpa: u64, len: u64) {
        for off in (0..len).step_by(4096) {
            self.tree.unmap(gpa + off);
        }
        // SAFETY: only drops cached translations after the entries went.
        unsafe { invalidate_all() };
    }

    /// The host physical address of `gpa`, by software walk (what the MMU would find).
    pub fn translate(&self, gpa: u64) -> Option<HostPhys> {
        self.tree.translate(gpa).map(|(pa, _)| pa)
    }

    /// Installs this tree as partition `lpid`, with no process table: the guest runs in real
    /// mode and has registered none (doubleword 1 would hold a *guest* real address, so a host
    /// address never goes there).
    pub fn install(&self, lpid: u64) -> Result<(), MmuError> {
        set_partition(lpid, self.tree.pate0(), 0)
    }
}

/// The virtual-mode token, if translation is on right now (checked, so this is safe).
pub fn virt_mode() -> Option<VirtMode> {
    let on = spr::msr().contains(Msr::IR | Msr::DR);
    // SAFETY: MSR[IR|DR] are set: this CPU runs translated.
    on.then(|| unsafe { VirtMode::new_unchecked() })
}
