//! PHB discovery from a hand-built FDT shaped like skiboot's powernv9 tree (QEMU's own
//! dumpdtb has no `pciex@` nodes: skiboot adds them).

use p9iommu::phb::fdt::{parse_phbs, FdtError, M32Window};
use p9iommu::phb::hw::{Bdfn, PeNum, PhbId};

/// A minimal FDT writer: nodes of (name, properties, children).
struct Node {
    name: &'static str,
    props: Vec<(&'static str, Vec<u8>)>,
    children: Vec<Node>,
}

fn cells(c: &[u32]) -> Vec<u8> {
    c.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn build(root: &Node) -> Vec<u8> {
    fn walk(n: &Node, st: &mut Vec<u8>, strings: &mut Vec<u8>) {
        st.extend(1u32.to_be_bytes());
        st.extend(n.name.as_bytes());
        st.push(0);
        while !st.len().is_multiple_of(4) {
            st.push(0);
        }
        for (name, val) in &n.props {
            let off = strings.len() as u32;
            strings.extend(name.as_bytes());
            strings.push(0);
            st.extend(3u32.to_be_bytes());
            st.extend((val.len() as u32).to_be_bytes());
            st.extend(off.to_be_bytes());
            st.extend(val);
            while !st.len().is_multiple_of(4) {
                st.push(0);
            }
        }
        for c in &n.children {
            walk(c, st, strings);
        }
        st.extend(2u32.to_be_bytes());
    }
    let (mut st, mut strings) = (Vec::new(), Vec::new());
    walk(root, &mut st, &mut strings);
    st.extend(9u32.to_be_bytes());
    let rsv = 40u32;
    let off_st = rsv + 16;
    let off_str = off_st + st.len() as u32;
    let total = off_str + strings.len() as u32;
    let mut out = Vec::new();
    for v in [
        0xd00d_feed,
        total,
        off_st,
        off_str,
        rsv,
        17,
        16,
        0,
        strings.len() as u32,
        st.len() as u32,
    ] {
        out.extend(u32::to_be_bytes(v));
    }
    out.extend([0u8; 16]);
    out.extend(st);
    out.extend(strings);
    out
}

fn pci_fn(name: &'static str, bdfn: u16, vendor: u32, device: u32, children: Vec<Node>) -> Node {
    Node {
        name,
        props: vec![
            ("reg", cells(&[u32::from(bdfn) << 8, 0, 0, 0, 0])),
            ("vendor-id", cells(&[vendor])),
            ("device-id", cells(&[device])),
        ],
        children,
    }
}

fn phb(name: &'static str, index: u32, pes: u32, chip: u32, children: Vec<Node>) -> Node {
    let regbase = 0x6_00c3_c000_0000u64 + 0x10_0000 * u64::from(index);
    Node {
        name,
        props: vec![
            ("compatible", b"ibm,power9-pciex\0ibm,ioda3-phb\0".to_vec()),
            ("#address-cells", cells(&[3])),
            ("#size-cells", cells(&[2])),
            (
                "reg",
                cells(&[
                    (regbase >> 32) as u32,
                    regbase as u32,
                    0,
                    0x1000,
                    0,
                    0,
                    0,
                    0x1000,
                ]),
            ),
            (
                "ranges",
                cells(&[0x0200_0000, 0, 0x8000_0000, 0x6_00c0, 0, 0, 0x7fff_0000]),
            ),
            ("ibm,opal-phbid", cells(&[0, index])),
            ("ibm,opal-num-pes", cells(&[pes])),
            ("ibm,opal-reserved-pe", cells(&[pes - 1])),
            ("ibm,chip-id", cells(&[chip])),
        ],
        children,
    }
}

fn tree() -> Vec<u8> {
    let edu = pci_fn("pci1234,11e8@0", 0x0100, 0x1234, 0x11e8, vec![]);
    let root_port = pci_fn("pci@0", 0x0000, 0x1014, 0x04c1, vec![edu]);
    build(&Node {
        name: "",
        props: vec![
            ("#address-cells", cells(&[2])),
            ("#size-cells", cells(&[2])),
        ],
        children: vec![
            Node {
                name: "ibm,opal",
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
        name: "",
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
