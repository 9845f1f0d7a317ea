//! Guest memory as the hypervisor's TCE code sees it.
//!
//! - [`addr`]: the address kinds (guest physical, ua, host physical, frame, bus) as types.
//! - [`mode`]: real and virtual mode as types (tokens), and real mode's "decline".
//! - [`page`]: host page descriptors with atomic reference counts; the real-mode get/put rules.
//! - [`guest`]: memslots (guest physical -> ua) and preregistered, pinned regions (ua -> host
//!   physical pages).
//! - [`radix`]: POWER9 radix page tables (the hypervisor's tree, a guest's partition-scoped tree).
//! - [`vmemmap`]: page descriptors in a vmemmap and the real-mode block walker.
//! - [`alloc_guard`]: the global-allocator wrapper that enforces "real mode allocates nothing".

pub mod addr;
pub mod alloc_guard;
pub mod guest;
pub mod mode;
pub mod page;
pub mod radix;
pub mod vmemmap;

pub use addr::{GuestPhys, HostPhys, Ioba, Pfn, Ua};
pub use mode::{ExecMode, Mode, RealMode, Token, TooHard, VirtMode};

pub use guest::{
    Backing, GuestMemory, HostPage, MemError, Memslot, PinnedPage, PreregRegion, Registered,
};
pub use page::{FlatPageDescriptors, PageDesc, PageDescriptors, PAGE_SHIFT};
