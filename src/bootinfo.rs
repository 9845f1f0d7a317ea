//! What the kernel learns from the flattened device tree at boot: where OPAL is, which memory
//! exists and which of it firmware reserved, and the command line. Everything comes from the FDT
//! (nothing QEMU-only), so the same image boots by kexec on POWER9 hardware.
#![forbid(unsafe_code)]
use fdt::Fdt;

/// A physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most memory and reservation ranges a boot can describe (each kind); more is an error
/// ([`BootInfoError::TooManyRanges`]), not a silent cut. The kernel reads the tree before it
/// has a heap, so the bound is fixed: a Talos II lists about 20 `/reserved-memory` nodes, which
/// kexec-tools repeats in the reservation map, and the kernel adds its own few; 256 leaves
/// room for machines several times larger.
pub const MAX_RANGES: usize = 256;

/// The boot facts the kernel needs.
#[derive(Debug)]
pub struct BootInfo<'a> {
    pub opal_base: u64,
    pub opal_entry: u64,
    pub memory: heapless::Vec<Range, MAX_RANGES>,
    /// The chip each `memory` range belongs to (its node's `ibm,chip-id`), where the tree
    /// says: the hypervisor's per-chip allocations start from this.
    pub memory_chip: heapless::Vec<Option<u32>, MAX_RANGES>,
    pub reserved: heapless::Vec<Range, MAX_RANGES>,
    pub bootargs: &'a str,
    /// The initrd the loader placed (`/chosen` `linux,initrd-start`/`-end`), if any: the kernel
    /// must keep it out of its heap. It carries hypercall scripts (`qemu-run.sh script`).
    pub initrd: Option<Range>,
}

/// Why the FDT could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    BadFdt,
    NoOpal,
    NoMemory,
    /// More than [`MAX_RANGES`] memory or reserved ranges.
    TooManyRanges,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::BadFdt => f.write_str("the blob is not a flattened device tree"),
            BootInfoError::NoOpal => f.write_str("no /ibm,opal node with its base and entry"),
            BootInfoError::NoMemory => f.write_str("no memory node"),
            BootInfoError::TooManyRanges => write!(
                f,
                "more than {MAX_RANGES} memory or reserved ranges (raise bootinfo::MAX_RANGES)"
            ),
        }
    }
}

impl<'a> BootInfo<'a> {
    /// Read the boot facts from an FDT blob.
    pub fn from_fdt(fdt: &Fdt<'a>) -> Result<Self, BootInfoError> {
        let opal = fdt.find_node("/ibm,opal").ok_or(BootInfoError::NoOpal)?;
        let prop = |name| {
            opal.property(name)
                .and_then(|p| p.as_usize())
                .map(|v| v as u64)
        };
        let opal_base = prop("opal-base-address").ok_or(BootInfoError::NoOpal)?;
        let opal_entry = prop("opal-entry-address").ok_or(BootInfoError::NoOpal)?;

        let mut memory = heapless::Vec::new();
        let mut memory_chip = heapless::Vec::new();
        for node in fdt.all_nodes() {
            let is_memory = node
                .property("device_type")
                .and_then(|p| p.as_str())
                .is_some_and(|t| t == "memory");
            if !is_memory {
                continue;
            }
            let chip = node
                .property("ibm,chip-id")
                .and_then(|p| p.as_usize())
                .map(|c| c as u32);
            for reg in node.reg().into_iter().flatten() {
                let start = reg.starting_address as u64;
                let end = start + reg.size.unwrap_or(0) as u64;
                memory
                    .push(Range { start, end })
                    .map_err(|_| BootInfoError::TooManyRanges)?;
                memory_chip
                    .push(chip)
                    .map_err(|_| BootInfoError::TooManyRanges)?;
            }
        }
        if memory.is_empty() {
            return Err(BootInfoError::NoMemory);
        }

        let mut reserved = heapless::Vec::new();
        for r in fdt.memory_reservations() {
            let start = r.address() as u64;
            let end = start + r.size() as u64;
            reserved
                .push(Range { start, end })
                .map_err(|_| BootInfoError::TooManyRanges)?;
        }
        if let Some(rm) = fdt.find_node("/reserved-memory") {
            for child in rm.children() {
                for reg in child.reg().into_iter().flatten() {
                    let start = reg.starting_address as u64;
                    let end = start + reg.size.unwrap_or(0) as u64;
                    reserved
                        .push(Range { start, end })
                        .map_err(|_| BootInfoError::TooManyRanges)?;
                }
            }
        }
        let bootargs = fdt.chosen().bootargs().unwrap_or("");
        let chosen = fdt.find_node("/chosen");
        // One or two cells, big-endian (QEMU writes one, Linux loaders often two).
        let cell = |name: &str| {
            let v = chosen?.property(name)?.value;
            match v.len() {
                4 => Some(u64::from(u32::from_be_bytes(v.try_into().ok()?))),
                8 => Some(u64::from_be_bytes(v.try_into().ok()?)),
                _ => None,
            }
        };
        let initrd = match (cell("linux,initrd-start"), cell("linux,initrd-end")) {
            (Some(start), Some(end)) if end > start => Some(Range { start, end }),
            _ => None,
        };
        Ok(BootInfo {
            initrd,
            opal_base,
            opal_entry,
            memory,
            memory_chip,
            reserved,
            bootargs,
        })
    }
}

/// The largest range of `memory` that overlaps none of `reserved`, clipped to `[floor, ceiling)`.
/// The kernel puts its heap there (after adding its own image and vectors to `reserved`).
pub fn largest_free_range(
    memory: &[Range],
    reserved: &[Range],
    floor: u64,
    ceiling: u64,
) -> Option<Range> {
    let mut best: Option<Range> = None;
    for m in memory {
        // Walk the gaps between reservations inside this memory range.
        let mut cursor = m.start.max(floor);
        let end = m.end.min(ceiling);
        while cursor < end {
            // The first reservation that overlaps [cursor, end).
            let blocking = reserved
                .iter()
                .filter(|r| !r.is_empty() && r.start < end && r.end > cursor)
                .min_by_key(|r| r.start);
            let gap_end = blocking.map_or(end, |r| r.start.max(cursor));
            if gap_end > cursor && best.is_none_or(|b| gap_end - cursor > b.len()) {
                best = Some(Range {
                    start: cursor,
                    end: gap_end,
                });
            }
            match blocking {
                Some(r) => cursor = cursor.max(r.end),
                None => break,
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    #[test]
    fn free_range_avoids_every_reservation() {
        let mem = [r(0, 0x4000_0000)];
        let res = [
            r(0, 0x10000),
            r(0x2000_0000, 0x2100_0000),
            r(0x3000_0000, 0x3200_0000),
        ];
        let got = largest_free_range(&mem, &res, 0, u64::MAX).unwrap();
        assert_eq!(got, r(0x10000, 0x2000_0000));
        for x in &res {
            assert!(
                got.end <= x.start || got.start >= x.end,
                "{got:?} overlaps {x:?}"
            );
        }
    }

    #[test]
    fn free_range_honours_floor_ceiling_and_overlapping_reservations() {
        let mem = [r(0, 0x1000), r(0x10_0000, 0x20_0000)];
        let res = [r(0x10_0000, 0x14_0000), r(0x13_0000, 0x18_0000)];
        assert_eq!(
            largest_free_range(&mem, &res, 0, u64::MAX),
            Some(r(0x18_0000, 0x20_0000))
        );
        assert_eq!(
            largest_free_range(&mem, &res, 0, 0x19_0000),
            Some(r(0x18_0000, 0x19_0000))
        );
        assert_eq!(
            largest_free_range(&mem, &[r(0, u64::MAX)], 0, u64::MAX),
            None
        );
    }
}
