//! PHB discovery from the flattened device tree skiboot hands over.
//!
//! skiboot adds one `/pciex@<regbase>` node per PHB: `ibm,opal-phbid` (2 cells), `reg`
//! (register base and size, 2+2 cells), `ranges` (the M32 window: 3 PCI address cells,
//! 2 CPU address cells, 2 size cells), `ibm,opal-num-pes`, `ibm,opal-reserved-pe` and
//! `ibm,chip-id`. PCI functions are child nodes (root port, then the devices below it)
//! whose `reg` first cell is `bdfn << 8`. FDT cells are big-endian; [`be32`] names the
//! conversion.

use alloc::vec::Vec;

use super::hw::{Bdfn, PeNum, PhbId};

/// The M32 MMIO window: PCI (bus) addresses `pci_addr..pci_addr + size` appear to the CPU
/// at `cpu_addr..`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct M32Window {
    /// First PCI address.
    pub pci_addr: u64,
    /// CPU physical address of `pci_addr`.
    pub cpu_addr: u64,
    /// Bytes.
    pub size: u64,
}

impl M32Window {
    /// The CPU address a PCI address in the window is reached at.
    pub fn pci_to_cpu(&self, pci: u64) -> Option<u64> {
        let off = pci.checked_sub(self.pci_addr)?;
        (off < self.size).then(|| self.cpu_addr + off)
    }
}

/// One PCI function under a PHB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunctionInfo {
    /// Requester ID.
    pub bdfn: Bdfn,
    /// `vendor-id`.
    pub vendor_id: u16,
    /// `device-id`.
    pub device_id: u16,
}

/// One PHB as skiboot describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhbInfo {
    /// `ibm,opal-phbid`: the PHB's id in OPAL calls.
    pub opal_phb_id: PhbId,
    /// PHB register base (`reg[0]`).
    pub reg_base: u64,
    /// The 32-bit MMIO window.
    pub m32: M32Window,
    /// `ibm,opal-num-pes`.
    pub num_pes: u32,
    /// `ibm,opal-reserved-pe`: the PE every requester ID starts in.
    pub reserved_pe: PeNum,
    /// NUMA node (`ibm,chip-id`; 0 if absent).
    pub node: u32,
    /// PCI functions found below the PHB node, in tree order.
    pub functions: Vec<PciFunctionInfo>,
}

/// Why the device tree could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// The blob is not a valid FDT.
    BadBlob,
    /// A `pciex@` node lacks a property or has one of the wrong length.
    BadProperty {
        /// The property.
        name: &'static str,
    },
}

/// Reads a big-endian FDT cell.
pub fn be32(bytes: &[u8], cell: usize) -> Option<u32> {
    let b = bytes.get(cell * 4..cell * 4 + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads two big-endian FDT cells as one u64 (high cell first).
pub fn be64_cells(bytes: &[u8], cell: usize) -> Option<u64> {
    Some((u64::from(be32(bytes, cell)?) << 32) | u64::from(be32(bytes, cell + 1)?))
}

/// PCI `phys.hi` space code of a 32-bit memory range.
const SPACE_MEM32: u32 = 0x0200_0000;
const SPACE_MASK: u32 = 0x0300_0000;

/// The `compatible` string skiboot gives a POWER9 PHB4 (`hw/phb4.c`).
pub const PHB4_COMPATIBLE: &str = "ibm,power9-pciex";

/// Whether a node is a PHB4: its `compatible` list (NUL-separated strings) names
/// [`PHB4_COMPATIBLE`]. An AC922's NVLink NPU nodes are `pciex@` nodes too, with the same
/// properties, but `ibm,power9-npu-pciex`: they are not PHBs this driver may program.
pub fn is_phb4(compatible: Option<&[u8]>) -> bool {
    compatible.is_some_and(|c| {
        c.split(|&b| b == 0)
            .any(|s| s == PHB4_COMPATIBLE.as_bytes())
    })
}

/// Every PHB4 of the tree (by `compatible`), in tree order.
pub fn parse_phbs(blob: &[u8]) -> Result<Vec<PhbInfo>, FdtError> {
    let fdt = fdt::Fdt::new(blob).map_err(|_| FdtError::BadBlob)?;
    let root = fdt.find_node("/").ok_or(FdtError::BadBlob)?;
    let mut out = Vec::new();
    for node in root.children() {
        if !is_phb4(node.property("compatible").map(|p| p.value)) {
            continue;
        }
        out.push(parse_phb(node)?);
    }
    Ok(out)
}

fn prop<'a>(node: fdt::node::FdtNode<'_, 'a>, name: &'static str) -> Result<&'a [u8], FdtError> {
    node.property(name)
        .map(|p| p.value)
        .ok_or(FdtError::BadProperty { name })
}

fn parse_phb(node: fdt::node::FdtNode<'_, '_>) -> Result<PhbInfo, FdtError> {
    let bad = |name| FdtError::BadProperty { name };
    let opal_phb_id = be64_cells(prop(node, "ibm,opal-phbid")?, 0).ok_or(bad("ibm,opal-phbid"))?;
    let reg_base = be64_cells(prop(node, "reg")?, 0).ok_or(bad("reg"))?;
    let ranges = prop(node, "ranges")?;
    // Entries of 7 cells: phys.hi, phys.mid, phys.lo, cpu (2), size (2).
    let m32 = ranges
        .chunks_exact(28)
        .find(|e| be32(e, 0).is_some_and(|hi| hi & SPACE_MASK == SPACE_MEM32))
        .and_then(|e| {
            Some(M32Window {
                pci_addr: be64_cells(e, 1)?,
                cpu_addr: be64_cells(e, 3)?,
                size: be64_cells(e, 5)?,
            })
        })
        .ok_or(bad("ranges"))?;
    let num_pes = be32(prop(node, "ibm,opal-num-pes")?, 0).ok_or(bad("ibm,opal-num-pes"))?;
    let reserved_pe =
        be32(prop(node, "ibm,opal-reserved-pe")?, 0).ok_or(bad("ibm,opal-reserved-pe"))?;
    let node_id = node
        .property("ibm,chip-id")
        .and_then(|p| be32(p.value, 0))
        .unwrap_or(0);
    let mut functions = Vec::new();
    collect_functions(node, &mut functions);
    Ok(PhbInfo {
        opal_phb_id: PhbId(opal_phb_id),
        reg_base,
        m32,
        num_pes,
        reserved_pe: PeNum(reserved_pe),
        node: node_id,
        functions,
    })
}

fn collect_functions(node: fdt::node::FdtNode<'_, '_>, out: &mut Vec<PciFunctionInfo>) {
    for child in node.children() {
        let cell = |name| child.property(name).and_then(|p| be32(p.value, 0));
        if let (Some(reg), Some(vendor), Some(device)) =
            (cell("reg"), cell("vendor-id"), cell("device-id"))
        {
            out.push(PciFunctionInfo {
                bdfn: Bdfn((reg >> 8) as u16),
                vendor_id: vendor as u16,
                device_id: device as u16,
            });
        }
        collect_functions(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_big_endian() {
        let b = [0x00, 0x06, 0x00, 0xc3, 0xc0, 0x00, 0x00, 0x00];
        assert_eq!(be32(&b, 0), Some(0x0006_00c3));
        assert_eq!(be64_cells(&b, 0), Some(0x0006_00c3_c000_0000));
        assert_eq!(be32(&b, 2), None);
    }

    #[test]
    fn m32_translation() {
        let w = M32Window {
            pci_addr: 0x8000_0000,
            cpu_addr: 0x6_00c0_0000_0000,
            size: 0x7fff_0000,
        };
        assert_eq!(w.pci_to_cpu(0x8000_0000), Some(0x6_00c0_0000_0000));
        assert_eq!(w.pci_to_cpu(0x8010_0000), Some(0x6_00c0_0010_0000));
        assert_eq!(w.pci_to_cpu(0x7fff_ffff), None);
        assert_eq!(w.pci_to_cpu(0xffff_0000), None);
    }
}
