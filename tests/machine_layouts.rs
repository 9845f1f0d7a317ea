//! Device trees shaped like the POWER9 machines people own, which QEMU's powernv9 does not
//! show: a two-socket Talos II / Blackbird (RAM at 0 and at 0x2000_0000_0000, the second chip's
//! memory, ~20 firmware reservations that kexec-tools repeats in the reservation map) and an
//! AC922 (NVLink NPU `pciex@` nodes beside the PHB4s). Synthesised from the facts in the issue
//! that asked for them: a Talos II's Linux log (`node 8: [mem 0x0000200000000000-
//! 0x00002007ffffffff]`), skiboot's node shapes (`hw/phb4.c`, `hw/npu2.c`).

#[path = "support/fdt_build.rs"]
mod fdt_build;
use fdt_build::{build_with_reservations, cells, phb, Node};

use p9iommu::bootinfo::{BootInfo, BootInfoError, MAX_RANGES};
use p9iommu::mm::vmemmap::{blocks_for, BLOCK_SIZE};
use p9iommu::phb::fdt::{is_phb4, parse_phbs};

const GIB: u64 = 1 << 30;
/// Where the second chip's memory starts on a two-socket POWER9.
const CHIP8_RAM: u64 = 0x2000_0000_0000;

fn cells64(v: &[u64]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| [(*x >> 32) as u32, *x as u32])
        .flat_map(u32::to_be_bytes)
        .collect()
}

fn node(name: String, props: Vec<(&'static str, Vec<u8>)>, children: Vec<Node>) -> Node {
    Node {
        name,
        props,
        children,
    }
}

fn memory(base: u64, size: u64, chip: u32) -> Node {
    node(
        format!("memory@{base:x}"),
        vec![
            ("device_type", b"memory\0".to_vec()),
            ("reg", cells64(&[base, size])),
            ("ibm,chip-id", cells(&[chip])),
        ],
        vec![],
    )
}

/// The firmware reservations of a booted POWER9 (skiboot, its heap and console buffers, the
/// OCC and HOMER images of each chip, ...): 20 of them, spread over both chips' memory.
fn reservations() -> Vec<(u64, u64)> {
    let mut r = vec![(0x3000_0000, 0x0300_0000), (0x3100_0000, 0x0040_0000)];
    for chip_base in [0, CHIP8_RAM] {
        let top = chip_base + 32 * GIB;
        for k in 0..9u64 {
            r.push((top - (k + 1) * 0x40_0000, 0x40_0000));
        }
    }
    r
}

/// A flattened tree with the given memory nodes, reservations (in `/reserved-memory` and,
/// as kexec-tools writes them, again in the reservation map) and top-level PCI nodes.
fn machine(mem: Vec<Node>, pci: Vec<Node>) -> Vec<u8> {
    let rsv = reservations();
    let reserved: Vec<Node> = rsv
        .iter()
        .map(|&(a, s)| {
            node(
                format!("ibm,firmware-region@{a:x}"),
                vec![("reg", cells64(&[a, s]))],
                vec![],
            )
        })
        .collect();
    let mut children = vec![
        node(
            "ibm,opal".into(),
            vec![
                ("opal-base-address", cells64(&[0x3000_0000])),
                ("opal-entry-address", cells64(&[0x3000_0010])),
            ],
            vec![],
        ),
        node(
            "reserved-memory".into(),
            vec![
                ("#address-cells", cells(&[2])),
                ("#size-cells", cells(&[2])),
                ("ranges", vec![]),
            ],
            reserved,
        ),
        node(
            "chosen".into(),
            vec![("bootargs", b"test\0".to_vec())],
            vec![],
        ),
    ];
    children.extend(mem);
    children.extend(pci);
    build_with_reservations(
        &node(
            String::new(),
            vec![
                ("#address-cells", cells(&[2])),
                ("#size-cells", cells(&[2])),
            ],
            children,
        ),
        &rsv,
    )
}

/// An NVLink NPU node as skiboot writes it on an AC922: a `pciex@` node with a PHB's
/// properties, but not a PHB4.
fn npu(name: &'static str, index: u32, chip: u32) -> Node {
    let mut n = phb(name, index, 16, chip, vec![]);
    for (k, v) in &mut n.props {
        if *k == "compatible" {
            *v = b"ibm,power9-npu-pciex\0ibm,ioda2-npu2-phb\0".to_vec();
        }
    }
    n
}

#[test]
fn two_socket_power9_layout() {
    let blob = machine(
        vec![memory(0, 32 * GIB, 0), memory(CHIP8_RAM, 32 * GIB, 8)],
        vec![
            phb("pciex@600c3c0000000", 0, 512, 0, vec![]),
            phb("pciex@600c3c0100000", 1, 512, 0, vec![]),
            phb("pciex@620c3c0000000", 6, 512, 8, vec![]),
        ],
    );
    let fdt = fdt::Fdt::new(&blob).expect("a valid blob");
    let info = BootInfo::from_fdt(&fdt).expect("a two-socket tree is usable");
    let ram: Vec<(u64, u64)> = info.memory.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(ram, [(0, 32 * GIB), (CHIP8_RAM, CHIP8_RAM + 32 * GIB)]);
    assert_eq!(
        info.memory_chip.as_slice(),
        [Some(0), Some(8)],
        "memory per chip"
    );
    assert_eq!(
        info.reserved.len(),
        2 * reservations().len(),
        "/reserved-memory and the reservation map, both kept"
    );

    // The vmemmap takes descriptors for present RAM only.
    let blocks = blocks_for(&ram);
    let bytes = blocks.len() as u64 * BLOCK_SIZE;
    let present_frames = 64 * GIB / 4096;
    let needed = present_frames * 24;
    let dense = (CHIP8_RAM + 32 * GIB) / 4096 * 24;
    println!(
        "two-socket POWER9, 64 GiB at 0 and {CHIP8_RAM:#x}: vmemmap {bytes} bytes ({} MiB) in \
         {} blocks for {present_frames} present frames; sized by the highest address it would \
         be {dense} bytes ({} GiB)",
        bytes >> 20,
        blocks.len(),
        dense >> 30
    );
    assert!(bytes >= needed && bytes <= needed + 2 * BLOCK_SIZE);
    assert!(bytes < dense / 500);

    let phbs = parse_phbs(&blob).expect("PHBs");
    let nodes: Vec<u32> = phbs.iter().map(|p| p.node).collect();
    assert_eq!(nodes, [0, 0, 8], "each PHB4 with its chip");
}

#[test]
fn ac922_discovery_finds_exactly_the_phb4s() {
    // NPU nodes sorted first, as a tree may list them: discovery must not depend on order.
    let blob = machine(
        vec![memory(0, 256 * GIB, 0), memory(CHIP8_RAM, 256 * GIB, 8)],
        vec![
            npu("pciex@6030200000000", 7, 0),
            npu("pciex@6230200000000", 8, 8),
            phb("pciex@600c3c0000000", 0, 512, 0, vec![]),
            phb("pciex@600c3c0100000", 1, 512, 0, vec![]),
            phb("pciex@620c3c0000000", 3, 512, 8, vec![]),
            phb("pciex@620c3c0100000", 4, 512, 8, vec![]),
        ],
    );
    let phbs = parse_phbs(&blob).expect("PHBs");
    let ids: Vec<u64> = phbs.iter().map(|p| p.opal_phb_id.0).collect();
    assert_eq!(ids, [0, 1, 3, 4], "the PHB4s, and no NPU");
    assert!(!is_phb4(Some(
        b"ibm,power9-npu-pciex\0ibm,ioda2-npu2-phb\0"
    )));
    assert!(is_phb4(Some(b"ibm,power9-pciex\0ibm,ioda3-phb\0")));
    assert!(!is_phb4(None));
    let fdt = fdt::Fdt::new(&blob).expect("a valid blob");
    let info = BootInfo::from_fdt(&fdt).expect("an AC922-shaped tree is usable");
    let ram: Vec<(u64, u64)> = info.memory.iter().map(|r| (r.start, r.end)).collect();
    let bytes = blocks_for(&ram).len() as u64 * BLOCK_SIZE;
    println!(
        "AC922-shaped, 512 GiB on two chips: vmemmap {} MiB",
        bytes >> 20
    );
    assert!(bytes <= 512 * GIB / 4096 * 24 + 4 * BLOCK_SIZE);
}

#[test]
fn too_many_ranges_is_a_clear_error() {
    let mem: Vec<Node> = (0..MAX_RANGES as u64 + 1)
        .map(|k| memory(k * GIB, GIB / 2, 0))
        .collect();
    let blob = machine(mem, vec![]);
    let fdt = fdt::Fdt::new(&blob).expect("a valid blob");
    let e = BootInfo::from_fdt(&fdt).expect_err("more ranges than the bound");
    assert_eq!(e, BootInfoError::TooManyRanges);
    let msg = e.to_string();
    assert!(msg.contains(&MAX_RANGES.to_string()), "{msg}");
}
