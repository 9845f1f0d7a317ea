//! BAR sizing and assignment against a fake configuration space.

#[path = "support/phb_fakes.rs"]
mod fakes;

use std::cell::RefCell;
use std::collections::HashMap;

use fakes::FakeConfig;
use p9iommu::phb::bars::{assign_bars, BarError, BarKind};
use p9iommu::phb::fdt::M32Window;
use p9iommu::phb::hw::{Bdfn, PciConfig};

const ROOT: Bdfn = Bdfn::new(0, 0, 0);
const EDU: Bdfn = Bdfn::new(1, 0, 0);
const OTHER: Bdfn = Bdfn::new(1, 3, 0);
const M32: M32Window = M32Window {
    pci_addr: 0x8000_0000,
    cpu_addr: 0x6_00c0_0000_0000,
    size: 0x7fff_0000,
};

/// Root port (bus 0 -> 1), edu (1 MiB 32-bit BAR0), a device with a 16 KiB 64-bit
/// prefetchable BAR0/1 and a 4 KiB 32-bit BAR2 and an I/O BAR3.
fn space() -> FakeConfig {
    let mut s = HashMap::new();
    s.insert((ROOT.0, 0x00), 0x04c1_1014);
    s.insert((ROOT.0, 0x04), 0);
    s.insert((ROOT.0, 0x0c), 0x0001_0000);
    s.insert((ROOT.0, 0x18), 0x0001_0100);
    for r in [0x20, 0x24, 0x28, 0x2c] {
        s.insert((ROOT.0, r), 0);
    }
    s.insert((EDU.0, 0x00), 0x11e8_1234);
    s.insert((EDU.0, 0x04), 0);
    s.insert((EDU.0, 0x0c), 0);
    s.insert((OTHER.0, 0x00), 0xbeef_1af4);
    s.insert((OTHER.0, 0x04), 0);
    s.insert((OTHER.0, 0x0c), 0);
    for b in 0..6u16 {
        s.insert((EDU.0, 0x10 + 4 * b), 0);
        s.insert((OTHER.0, 0x10 + 4 * b), 0);
    }
    s.insert((OTHER.0, 0x10), 0xc); // 64-bit, prefetchable
    s.insert((OTHER.0, 0x1c), 0x1); // I/O
    let mut masks = HashMap::new();
    masks.insert((EDU.0, 0), 0xfff0_0000);
    masks.insert((OTHER.0, 0), 0xffff_c000);
    masks.insert((OTHER.0, 1), 0xffff_ffff);
    masks.insert((OTHER.0, 2), 0xffff_f000);
    masks.insert((OTHER.0, 3), 0xffff_fffc);
    FakeConfig {
        space: RefCell::new(s),
        bar_masks: masks,
        writes: RefCell::new(Vec::new()),
    }
}

#[test]
fn sizes_assigns_and_opens_the_bridge() {
    let cfg = space();
    let funcs = assign_bars(&cfg, ROOT, &M32).unwrap();
    assert_eq!(
        funcs.iter().map(|f| f.bdfn).collect::<Vec<_>>(),
        vec![EDU, OTHER]
    );
    let edu = &funcs[0];
    assert_eq!((edu.vendor_id, edu.device_id), (0x1234, 0x11e8));
    let bar0 = edu.bar(0).unwrap();
    assert_eq!(
        (bar0.kind, bar0.size, bar0.pci_addr),
        (BarKind::Mem32, 1 << 20, 0x8000_0000)
    );
    assert_eq!(cfg.read32(EDU, 0x10).unwrap(), 0x8000_0000);
    assert_eq!(M32.pci_to_cpu(bar0.pci_addr), Some(0x6_00c0_0000_0000));

    let o = &funcs[1];
    let b64 = o.bar(0).unwrap();
    assert_eq!(
        (b64.kind, b64.size, b64.prefetchable),
        (BarKind::Mem64, 0x4000, true)
    );
    let b2 = o.bar(2).unwrap();
    assert_eq!(b2.size, 0x1000);
    assert!(o.bar(3).is_none(), "I/O BAR left alone");
    assert_eq!(cfg.read32(OTHER, 0x1c).unwrap(), 1);
    // Natural alignment, no overlap, all inside the window.
    let mut all: Vec<_> = funcs.iter().flat_map(|f| f.bars.iter()).collect();
    all.sort_by_key(|b| b.pci_addr);
    for b in &all {
        assert_eq!(b.pci_addr % b.size, 0);
    }
    for w in all.windows(2) {
        assert!(w[0].pci_addr + w[0].size <= w[1].pci_addr);
    }
    assert_eq!(
        cfg.read32(OTHER, 0x10).unwrap(),
        (b64.pci_addr as u32) | 0xc
    );
    assert_eq!(cfg.read32(OTHER, 0x14).unwrap(), 0);

    // Root port memory window: 0x8000_0000 ..= 0x801f_ffff (1 MiB granules).
    assert_eq!(cfg.read16(ROOT, 0x20).unwrap(), 0x8000);
    assert_eq!(cfg.read16(ROOT, 0x22).unwrap(), 0x8010);
    assert_eq!(
        cfg.read32(ROOT, 0x24).unwrap(),
        0x0000_fff0,
        "prefetchable window closed"
    );
    for f in [ROOT, EDU, OTHER] {
        assert_eq!(
            cfg.read16(f, 0x04).unwrap() & 0x6,
            0x6,
            "{f:?} memory + bus master"
        );
    }
}

#[test]
fn sizing_restores_bars_and_disables_decode_meanwhile() {
    let cfg = space();
    assign_bars(&cfg, ROOT, &M32).unwrap();
    let w = cfg.writes.borrow();
    let probe = w
        .iter()
        .position(|&(b, off, v)| b == EDU && off == 0x10 && v == !0)
        .unwrap();
    let cmd_before = w[..probe]
        .iter()
        .rev()
        .find(|&&(b, off, _)| b == EDU && off == 0x04)
        .unwrap();
    assert_eq!(cmd_before.2 & 0x2, 0, "memory decode off while probing");
    assert_eq!(w[probe + 1], (EDU, 0x10, 0), "original value restored");
}

#[test]
fn refuses_what_does_not_fit() {
    let cfg = space();
    let tiny = M32Window {
        pci_addr: 0x8000_0000,
        cpu_addr: 0,
        size: 0x8_0000,
    };
    assert_eq!(assign_bars(&cfg, ROOT, &tiny), Err(BarError::NoSpace));
    assert_eq!(assign_bars(&cfg, EDU, &M32), Err(BarError::NotABridge(EDU)));
}
