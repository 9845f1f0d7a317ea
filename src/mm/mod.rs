//! Guest memory as the hypervisor's TCE code sees it.
//!
//! - [`page`]: host page descriptors with atomic reference counts; the real-mode get/put rules.
//! - [`guest`]: memslots (guest physical -> ua) and preregistered, pinned regions (ua -> host
//!   physical pages).
//! - [`alloc_guard`]: the global-allocator wrapper that enforces "real mode allocates nothing".

pub mod alloc_guard;
pub mod guest;
pub mod page;

pub use guest::{Backing, GuestMemory, HostPage, MemError, Memslot, PreregRegion, Registered};
pub use page::{FlatPageDescriptors, PageDesc, PageDescriptors, PAGE_SHIFT};
