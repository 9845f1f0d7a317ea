//! A host simulation of the machine the hypercalls run on, for tests and the fuzzer.
//!
//! Host physical addresses are heap addresses (the `tce` module's `HeapMemory` convention):
//! "RAM" is one zeroed, 2 MiB-aligned buffer of atomic words, one page descriptor per 4 KiB of
//! it. Userspace addresses (ua) are a separate, fake range (`UA_BASE + offset`) so a mix-up of
//! ua and hpa shows. Reads outside the buffer return 0 (as real-mode QEMU does) and are counted.

use super::window::TceInvalidate;
use super::{Env, MemAccess};
use crate::mm::{Backing, FlatPageDescriptors, PAGE_SHIFT};
use crate::tce::Be64;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::sync::atomic::{AtomicU64, Ordering};

/// Where the simulated VMM maps guest RAM.
pub const UA_BASE: u64 = 0x7e00_0000_0000;
const RAM_ALIGN: usize = 1 << 21;

/// Simulated host RAM, its page descriptors and the guest-memory accessor.
pub struct SimHost {
    ram: *mut AtomicU64,
    words: usize,
    /// One descriptor per 4 KiB of RAM.
    pub pages: FlatPageDescriptors,
    /// Reads that fell outside RAM.
    pub stray_reads: AtomicU64,
}

// SAFETY: the buffer is only accessed through `AtomicU64`s, which are Sync; the raw pointer is
// owned by this value and freed only in Drop.
unsafe impl Send for SimHost {}
// SAFETY: as above.
unsafe impl Sync for SimHost {}

impl SimHost {
    /// `size` bytes of zeroed RAM (rounded up to 4 KiB).
    pub fn new(size: u64) -> Self {
        let size = (size.max(4096) + 4095) & !4095;
        let layout = Layout::from_size_align(size as usize, RAM_ALIGN).expect("RAM layout");
        // SAFETY: `layout` has a non-zero size.
        let ram = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
        assert!(!ram.is_null(), "simulated RAM allocation failed");
        let base = ram as u64;
        SimHost {
            ram,
            words: size as usize / 8,
            pages: FlatPageDescriptors::new(base >> PAGE_SHIFT, (size >> PAGE_SHIFT) as usize),
            stray_reads: AtomicU64::new(0),
        }
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ram` points at `words` zero-initialised, 8-aligned words allocated in `new`
        // and freed only in Drop; AtomicU64 has the layout of u64 and all-zero is valid.
        unsafe { core::slice::from_raw_parts(self.ram, self.words) }
    }

    /// RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.words as u64 * 8
    }

    /// Host physical address of RAM offset `off`.
    pub fn hpa(&self, off: u64) -> u64 {
        self.ram as u64 + off
    }

    /// RAM offset of a host physical address, if inside RAM.
    pub fn offset_of(&self, hpa: u64) -> Option<u64> {
        hpa.checked_sub(self.ram as u64)
            .filter(|o| *o < self.size())
    }

    /// The simulated ua of RAM offset `off`.
    pub fn ua(&self, off: u64) -> u64 {
        UA_BASE + off
    }

    /// Writes a big-endian u64 at RAM offset `off` (what the guest does to its memory).
    pub fn write_be64(&self, off: u64, v: u64) {
        self.words()[(off / 8) as usize].store(Be64::from_cpu(v).raw(), Ordering::Release);
    }

    fn read_off(&self, off: Option<u64>) -> Option<Be64> {
        match off {
            Some(o) if o % 8 == 0 => Some(Be64::from_raw(
                self.words()[(o / 8) as usize].load(Ordering::Acquire),
            )),
            _ => {
                self.stray_reads.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A page array for RAM `[off, off + size)` pinned in pages of `1 << shift` bytes,
    /// page `i` of the region backed by RAM page `perm(i)` (identity for contiguous).
    pub fn backing(&self, off: u64, size: u64, shift: u32, perm: impl Fn(u64) -> u64) -> Backing {
        let n = size >> shift;
        let hpas: Vec<u64> = (0..n).map(|i| self.hpa(off + (perm(i) << shift))).collect();
        Backing::Pages(hpas.into_boxed_slice())
    }

    /// The handlers' environment over this host.
    pub fn env(&self) -> Env<'_> {
        Env {
            pages: &self.pages,
            mem: self,
        }
    }
}

impl MemAccess for SimHost {
    fn phys_read_be64(&self, pa: u64) -> Be64 {
        self.read_off(self.offset_of(pa)).unwrap_or_default()
    }

    fn ua_read_be64(&self, ua: u64) -> Option<Be64> {
        self.read_off(ua.checked_sub(UA_BASE).filter(|o| *o < self.size()))
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.words * 8, RAM_ALIGN).expect("RAM layout");
        // SAFETY: `ram` was allocated in `new` with this layout and is freed once, here.
        unsafe { alloc::alloc::dealloc(self.ram.cast(), layout) };
    }
}

/// A TCE-kill recorder: counts calls and keeps the last one (atomics: callable in real mode).
#[derive(Debug, Default)]
pub struct KillLog {
    /// Calls so far.
    pub calls: AtomicU64,
    /// Cookie, first entry and count of the last call.
    pub last: [AtomicU64; 3],
}

impl TceInvalidate for KillLog {
    fn invalidate(&self, cookie: u64, first: u64, count: u64) {
        self.last[0].store(cookie, Ordering::Relaxed);
        self.last[1].store(first, Ordering::Relaxed);
        self.last[2].store(count, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl KillLog {
    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
    /// (cookie, first, count) of the last call.
    pub fn last(&self) -> (u64, u64, u64) {
        let l = |i: usize| self.last[i].load(Ordering::Relaxed);
        (l(0), l(1), l(2))
    }
}
