//! The kernel's vmemmap: one page descriptor per 4 KiB frame of RAM at `0xc00c_0000_0000_0000`
//! (the frames the device tree lists: holes between memory ranges take no block), backed by
//! 64 KiB blocks allocated at scattered physical addresses and mapped in the
//! hypervisor's radix tree. Every descriptor the hypercall paths use comes from here: real mode
//! through the block walker, virtual mode through the mapping.
use alloc::vec::Vec;
use core::alloc::Layout;

use crate::arch::ppc64::mmu;
use crate::mm::page::PageDesc;
use crate::mm::radix::PageSize;
use crate::mm::vmemmap::{
    blocks_for, desc_va, BlockIndex, Lookup, VirtualWindow, Vmemmap, BLOCK_SIZE, VMEMMAP_BASE,
};
use crate::mm::{HostPhys, Pfn, VirtMode};

/// Virtual mode reaches the vmemmap through the hypervisor's page tables: the address is the
/// pointer, once the index says its blocks are there (the tables map exactly the indexed
/// blocks, so this never touches an unmapped address).
pub struct KernelWindow;

impl VirtualWindow for KernelWindow {
    fn ptr(&self, _v: VirtMode, index: &BlockIndex, va: u64, len: u64) -> Option<*const u8> {
        let present = |a: u64| !matches!(index.lookup(a, 1), Lookup::Missing);
        (present(va) && present(va + len - 1)).then_some(va as *const u8)
    }
}

/// The kernel's vmemmap.
pub type KernelVmemmap = Vmemmap<KernelWindow>;

static VMEMMAP: spin::Once<KernelVmemmap> = spin::Once::new();

/// Spare index room for blocks added later (hot-plug tests).
const SPARE_BLOCKS: usize = 64;

/// The vmemmap (built at boot).
pub fn get() -> &'static KernelVmemmap {
    VMEMMAP.get().expect("the vmemmap is built at boot")
}

/// The RAM the vmemmap describes, as frame ranges `[first, end)` (from the device tree).
static PRESENT: spin::Once<Vec<(u64, u64)>> = spin::Once::new();

/// The frames that exist, as ranges `[first, end)`: tests walk these, not `0..frames()`.
pub fn present_frames() -> &'static [(u64, u64)] {
    PRESENT.get().map_or(&[], |v| v.as_slice())
}

/// Builds the vmemmap for the frames of `ram` (physical byte ranges, holes allowed): allocates
/// the blocks that hold their descriptors and no others ([`blocks_for`]), hands them out in a
/// shuffled order (neighbouring blocks of the vmemmap are not neighbours in RAM), maps each in
/// the hypervisor's tree, indexes it, and initialises every present frame's descriptor (one
/// reference, no flags) through the mapping. Returns the vmemmap and the bytes of blocks.
pub fn init(
    v: VirtMode,
    ram: &[(u64, u64)],
) -> Result<(&'static KernelVmemmap, u64), &'static str> {
    let wanted = blocks_for(ram);
    let blocks = wanted.len();
    let frames = ram
        .iter()
        .map(|&(_, e)| e.div_ceil(4096))
        .max()
        .unwrap_or(0);
    let layout = Layout::from_size_align(BLOCK_SIZE as usize, BLOCK_SIZE as usize)
        .map_err(|_| "block layout")?;
    let mut phys: Vec<HostPhys> = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        // SAFETY: a non-zero layout; the blocks live as long as the kernel.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err("out of memory for the vmemmap");
        }
        phys.push(HostPhys::of_linear(p));
    }
    let vm = Vmemmap::new(KernelWindow, frames, blocks + SPARE_BLOCKS);
    let stride = (blocks / 2 + 1) | 1; // odd, so i -> i * stride mod blocks is a permutation
    for (i, &k) in wanted.iter().enumerate() {
        let pa = phys[(i * stride) % blocks];
        add_block(v, &vm, VMEMMAP_BASE + k * BLOCK_SIZE, pa)?;
    }
    let present: Vec<(u64, u64)> = ram.iter().map(|&(s, e)| (s >> 12, e >> 12)).collect();
    for &(first, end) in &present {
        for pfn in first..end {
            // SAFETY: the descriptor's bytes are mapped (blocks_for covers every present
            // frame) and nothing else refers to them yet.
            unsafe { (desc_va(Pfn(pfn)) as *mut PageDesc).write(PageDesc::new(1, 0)) };
        }
    }
    PRESENT.call_once(|| present);
    Ok((VMEMMAP.call_once(|| vm), blocks as u64 * BLOCK_SIZE))
}

/// Maps a block and adds it to the index (hot-plug add).
pub fn add_block(
    v: VirtMode,
    vm: &KernelVmemmap,
    va: u64,
    pa: HostPhys,
) -> Result<(), &'static str> {
    for off in (0..BLOCK_SIZE).step_by(4096) {
        mmu::map_at(v, va + off, pa.add(off), PageSize::Small).map_err(|_| "vmemmap map")?;
    }
    vm.index.add(v, va, pa).map_err(|_| "vmemmap index")
}

/// Removes a block from the index, then unmaps it (hot-plug remove); returns its physical
/// address. The memory stays allocated: with one CPU, no real-mode reader can still hold a
/// descriptor from it once this returns.
pub fn remove_block(v: VirtMode, vm: &KernelVmemmap, va: u64) -> Result<HostPhys, &'static str> {
    let pa = vm.index.remove(v, va).map_err(|_| "no such block")?;
    for off in (0..BLOCK_SIZE).step_by(4096) {
        mmu::unmap(v, va + off);
    }
    Ok(pa)
}
