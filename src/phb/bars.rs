//! BAR sizing and assignment behind a PHB's root port.
//!
//! skiboot trains the links and numbers the buses but leaves BARs unassigned. This sizes
//! the memory BARs of every function on the root port's secondary bus, gives each a
//! naturally aligned PCI address in the M32 window, opens the root port's memory window
//! over them, and enables memory decode and bus mastering on the root port and the
//! functions (QEMU drops a device's DMA unless the bridge above it is a bus master too).
//! I/O BARs are left alone: the PHB has no I/O window.

use alloc::vec::Vec;

use super::fdt::M32Window;
use super::hw::{Bdfn, PciConfig, PciConfigError};

/// Configuration space offsets and bits used here (PCI Local Bus / PCI-to-PCI bridge specs).
pub mod cfg {
    /// Vendor ID (u16).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (u16).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command (u16).
    pub const COMMAND: u16 = 0x04;
    /// Header type (u8); bit 7 = multi-function.
    pub const HEADER_TYPE: u16 = 0x0e;
    /// First BAR.
    pub const BAR0: u16 = 0x10;
    /// Bridge: secondary bus number (u8).
    pub const SECONDARY_BUS: u16 = 0x19;
    /// Bridge: subordinate bus number (u8).
    pub const SUBORDINATE_BUS: u16 = 0x1a;
    /// Bridge: memory base (u16) and limit (u16 at +2), 1 MiB granules in bits 15:4.
    pub const MEMORY_BASE: u16 = 0x20;
    /// Bridge: prefetchable memory base (u16) and limit (u16 at +2).
    pub const PREF_MEMORY_BASE: u16 = 0x24;
    /// Bridge: prefetchable base upper 32 bits.
    pub const PREF_BASE_UPPER: u16 = 0x28;
    /// Bridge: prefetchable limit upper 32 bits.
    pub const PREF_LIMIT_UPPER: u16 = 0x2c;
    /// Command: memory space decode.
    pub const CMD_MEMORY: u16 = 1 << 1;
    /// Command: bus master (DMA).
    pub const CMD_BUS_MASTER: u16 = 1 << 2;
}

/// Bridge windows have a 1 MiB granule.
const BRIDGE_GRANULE: u64 = 1 << 20;
/// Smallest BAR allocation: keeps distinct functions on distinct 4 KiB pages.
const MIN_BAR_ALIGN: u64 = 0x1000;

/// A memory BAR width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Mem32,
    /// 64-bit memory BAR (uses two BAR slots).
    Mem64,
}

/// One assigned memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR number (0..=5; the low slot of a 64-bit BAR).
    pub index: u8,
    /// Width.
    pub kind: BarKind,
    /// Whether the BAR is prefetchable.
    pub prefetchable: bool,
    /// Bytes (a power of two).
    pub size: u64,
    /// Assigned PCI (bus) address.
    pub pci_addr: u64,
}

/// A function found on the secondary bus, with its assigned BARs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignedFunction {
    /// Requester ID.
    pub bdfn: Bdfn,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Memory BARs, by index.
    pub bars: Vec<Bar>,
}

impl AssignedFunction {
    /// The BAR with number `index`.
    pub fn bar(&self, index: u8) -> Option<&Bar> {
        self.bars.iter().find(|b| b.index == index)
    }
}

/// Why assignment failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// Configuration access failed.
    Config(PciConfigError),
    /// The function at the root port's BDF is not a PCI-to-PCI bridge.
    NotABridge(Bdfn),
    /// A function has a BAR layout this code does not handle (a 64-bit BAR in slot 5, a
    /// bridge below the root port).
    Unsupported(Bdfn),
    /// The BARs do not fit in the M32 window.
    NoSpace,
}

impl From<PciConfigError> for BarError {
    fn from(e: PciConfigError) -> Self {
        BarError::Config(e)
    }
}

struct Sized_ {
    func: usize,
    index: u8,
    kind: BarKind,
    prefetchable: bool,
    size: u64,
}

/// Enumerates the functions on `root_port`'s secondary bus, sizes and assigns their memory
/// BARs from `m32`, programs the root port's memory window over them (and closes its
/// prefetchable window), and enables memory decode and bus mastering on the root port and
/// every function found.
pub fn assign_bars(
    cfg: &dyn PciConfig,
    root_port: Bdfn,
    m32: &M32Window,
) -> Result<Vec<AssignedFunction>, BarError> {
    if cfg.read8(root_port, cfg::HEADER_TYPE)? & 0x7f != 1 {
        return Err(BarError::NotABridge(root_port));
    }
    let bus = cfg.read8(root_port, cfg::SECONDARY_BUS)?;
    let mut funcs = Vec::new();
    let mut sized = Vec::new();
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let bdfn = Bdfn::new(bus, dev, func);
            let vendor = cfg.read16(bdfn, cfg::VENDOR_ID)?;
            if vendor == 0xffff {
                if func == 0 {
                    break;
                }
                continue;
            }
            let header = cfg.read8(bdfn, cfg::HEADER_TYPE)?;
            if header & 0x7f != 0 {
                return Err(BarError::Unsupported(bdfn));
            }
            let device_id = cfg.read16(bdfn, cfg::DEVICE_ID)?;
            size_bars(cfg, bdfn, funcs.len(), &mut sized)?;
            funcs.push(AssignedFunction {
                bdfn,
                vendor_id: vendor,
                device_id,
                bars: Vec::new(),
            });
            if func == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }

    // Largest first: every address stays naturally aligned without holes between BARs.
    sized.sort_by_key(|s| core::cmp::Reverse(s.size));
    let start = align_up(m32.pci_addr, BRIDGE_GRANULE).ok_or(BarError::NoSpace)?;
    let window_end = m32
        .pci_addr
        .checked_add(m32.size)
        .ok_or(BarError::NoSpace)?;
    let mut next = start;
    for s in &sized {
        let addr = align_up(next, s.size).ok_or(BarError::NoSpace)?;
        let end = addr.checked_add(s.size).ok_or(BarError::NoSpace)?;
        // M32 addresses must stay below 4 GiB: they go in 32-bit BARs.
        if end > window_end || end > 1 << 32 {
            return Err(BarError::NoSpace);
        }
        let f = &mut funcs[s.func];
        let off = cfg::BAR0 + 4 * u16::from(s.index);
        cfg.write32(f.bdfn, off, addr as u32)?;
        if s.kind == BarKind::Mem64 {
            cfg.write32(f.bdfn, off + 4, (addr >> 32) as u32)?;
        }
        f.bars.push(Bar {
            index: s.index,
            kind: s.kind,
            prefetchable: s.prefetchable,
            size: s.size,
            pci_addr: addr,
        });
        next = end;
    }
    for f in &mut funcs {
        f.bars.sort_by_key(|b| b.index);
    }

    // Memory window: base/limit in 1 MiB granules, limit inclusive. Empty = base > limit.
    let (base_reg, limit_reg) = if next > start {
        let limit = align_up(next, BRIDGE_GRANULE).ok_or(BarError::NoSpace)? - 1;
        if limit >= window_end {
            return Err(BarError::NoSpace);
        }
        (
            ((start >> 16) & 0xfff0) as u32,
            ((limit >> 16) & 0xfff0) as u32,
        )
    } else {
        (0xfff0, 0)
    };
    cfg.write32(root_port, cfg::MEMORY_BASE, base_reg | (limit_reg << 16))?;
    cfg.write32(root_port, cfg::PREF_MEMORY_BASE, 0x0000_fff0)?;
    cfg.write32(root_port, cfg::PREF_BASE_UPPER, 0)?;
    cfg.write32(root_port, cfg::PREF_LIMIT_UPPER, 0)?;

    enable(cfg, root_port)?;
    for f in &funcs {
        enable(cfg, f.bdfn)?;
    }
    Ok(funcs)
}

fn enable(cfg: &dyn PciConfig, bdfn: Bdfn) -> Result<(), PciConfigError> {
    let cmd = cfg.read16(bdfn, cfg::COMMAND)?;
    cfg.write16(
        bdfn,
        cfg::COMMAND,
        cmd | cfg::CMD_MEMORY | cfg::CMD_BUS_MASTER,
    )
}

/// Sizes the memory BARs of one function: write all ones, read back, restore. Memory decode
/// is off meanwhile so the probe value never decodes.
fn size_bars(
    cfg: &dyn PciConfig,
    bdfn: Bdfn,
    func: usize,
    out: &mut Vec<Sized_>,
) -> Result<(), BarError> {
    let cmd = cfg.read16(bdfn, cfg::COMMAND)?;
    cfg.write16(bdfn, cfg::COMMAND, cmd & !cfg::CMD_MEMORY)?;
    let mut index = 0u8;
    while index < 6 {
        let off = cfg::BAR0 + 4 * u16::from(index);
        let orig = cfg.read32(bdfn, off)?;
        if orig & 1 != 0 {
            // I/O BAR.
            index += 1;
            continue;
        }
        let kind = match (orig >> 1) & 3 {
            0 => BarKind::Mem32,
            2 => BarKind::Mem64,
            _ => return Err(BarError::Unsupported(bdfn)),
        };
        let prefetchable = orig & 0x8 != 0;
        cfg.write32(bdfn, off, !0)?;
        let lo = cfg.read32(bdfn, off)?;
        cfg.write32(bdfn, off, orig)?;
        let mask = if kind == BarKind::Mem64 {
            if index == 5 {
                return Err(BarError::Unsupported(bdfn));
            }
            let orig_hi = cfg.read32(bdfn, off + 4)?;
            cfg.write32(bdfn, off + 4, !0)?;
            let hi = cfg.read32(bdfn, off + 4)?;
            cfg.write32(bdfn, off + 4, orig_hi)?;
            (u64::from(hi) << 32) | u64::from(lo & !0xf)
        } else {
            u64::from(lo & !0xf) | 0xffff_ffff_0000_0000
        };
        let implemented = match kind {
            BarKind::Mem32 => lo & !0xf != 0,
            BarKind::Mem64 => mask != 0,
        };
        if implemented {
            let size = (!mask).wrapping_add(1);
            out.push(Sized_ {
                func,
                index,
                kind,
                prefetchable,
                size: size.max(MIN_BAR_ALIGN),
            });
        }
        index += if kind == BarKind::Mem64 { 2 } else { 1 };
    }
    cfg.write16(bdfn, cfg::COMMAND, cmd)?;
    Ok(())
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}
