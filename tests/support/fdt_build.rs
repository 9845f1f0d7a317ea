//! A minimal FDT writer for host tests: nodes of (name, properties, children), a reservation
//! map, and the node shapes skiboot gives a POWER9 (PHB4, PCI function).
#![allow(dead_code)]

/// A minimal FDT writer: nodes of (name, properties, children).
pub struct Node {
    pub name: String,
    pub props: Vec<(&'static str, Vec<u8>)>,
    pub children: Vec<Node>,
}

pub fn cells(c: &[u32]) -> Vec<u8> {
    c.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The blob of the tree under `root`, without reservations.
pub fn build(root: &Node) -> Vec<u8> {
    build_with_reservations(root, &[])
}

/// The blob of the tree under `root`, with `(address, size)` entries in its reservation map.
pub fn build_with_reservations(root: &Node, rsvmap: &[(u64, u64)]) -> Vec<u8> {
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
    let off_st = rsv + 16 * (rsvmap.len() as u32 + 1);
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
    for &(a, s) in rsvmap {
        out.extend(a.to_be_bytes());
        out.extend(s.to_be_bytes());
    }
    out.extend([0u8; 16]);
    out.extend(st);
    out.extend(strings);
    out
}

pub fn pci_fn(
    name: &'static str,
    bdfn: u16,
    vendor: u32,
    device: u32,
    children: Vec<Node>,
) -> Node {
    Node {
        name: name.into(),
        props: vec![
            ("reg", cells(&[u32::from(bdfn) << 8, 0, 0, 0, 0])),
            ("vendor-id", cells(&[vendor])),
            ("device-id", cells(&[device])),
        ],
        children,
    }
}

pub fn phb(name: &'static str, index: u32, pes: u32, chip: u32, children: Vec<Node>) -> Node {
    let regbase = 0x6_00c3_c000_0000u64 + 0x10_0000 * u64::from(index);
    Node {
        name: name.into(),
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
