//! PHB discovery from a hand-built FDT shaped like skiboot's powernv9 tree (QEMU's own
//! dumpdtb has no `pciex@` nodes: skiboot adds them).

use p9iommu::phb::fdt::{parse_phbs, FdtError, M32Window};
use p9iommu::phb::hw::{Bdfn, PeNum, PhbId};

#[path = "support/fdt_build.rs"]
mod fdt_build;
use fdt_build::{build, cells, pci_fn, phb, Node};

fn tree() -> Vec<u8> {
    let edu = pci_fn("pci1234,11e8@0", 0x0100, 0x1234, 0x11e8, vec![]);
    let root_port = pci_fn("pci@0", 0x0000, 0x1014, 0x04c1, vec![edu]);
    build(&Node {
        name: "".into(),
        props: vec![
            ("#address-cells", cells(&[2])),
            ("#size-cells", cells(&[2])),
        ],
        children: vec![
            Node {
                name: "ibm,opal".into(),
                props: vec![],
                children: vec![],
            },
            phb("pciex@600c3c0000000", 0, 512, 0, vec![root_port]),
            phb("pciex@600c3c0100000", 1, 256, 8, vec![]),
        ],
    })
}

#[test]
fn parses_phbs_and_functions() {
    let phbs = parse_phbs(&tree()).unwrap();
    assert_eq!(phbs.len(), 2);
    let p0 = &phbs[0];
    assert_eq!(p0.opal_phb_id, PhbId(0));
    assert_eq!(p0.reg_base, 0x6_00c3_c000_0000);
    assert_eq!(
        p0.m32,
        M32Window {
            pci_addr: 0x8000_0000,
            cpu_addr: 0x6_00c0_0000_0000,
            size: 0x7fff_0000
        }
    );
    assert_eq!((p0.num_pes, p0.reserved_pe, p0.node), (512, PeNum(511), 0));
    let f: Vec<_> = p0
        .functions
        .iter()
        .map(|f| (f.bdfn, f.vendor_id, f.device_id))
        .collect();
    assert_eq!(
        f,
        vec![
            (Bdfn(0), 0x1014, 0x04c1),
            (Bdfn::new(1, 0, 0), 0x1234, 0x11e8)
        ]
    );
    let p1 = &phbs[1];
    assert_eq!(
        (
            p1.opal_phb_id,
            p1.reg_base,
            p1.num_pes,
            p1.reserved_pe,
            p1.node
        ),
        (PhbId(1), 0x6_00c3_c010_0000, 256, PeNum(255), 8)
    );
    assert!(p1.functions.is_empty());
}

#[test]
fn missing_property_is_reported() {
    let mut n = phb("pciex@600c3c0000000", 0, 512, 0, vec![]);
    n.props.retain(|(k, _)| *k != "ibm,opal-num-pes");
    let blob = build(&Node {
        name: "".into(),
        props: vec![
            ("#address-cells", cells(&[2])),
            ("#size-cells", cells(&[2])),
        ],
        children: vec![n],
    });
    assert_eq!(
        parse_phbs(&blob),
        Err(FdtError::BadProperty {
            name: "ibm,opal-num-pes"
        })
    );
    assert_eq!(parse_phbs(&[0u8; 8]), Err(FdtError::BadBlob));
}
