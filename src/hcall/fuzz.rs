//! The fuzz harness, shared by `cargo fuzz` (`fuzz/fuzz_targets/hcall_dispatch.rs`), the corpus
//! replay test (`tests/hcall_fuzz_corpus.rs`) and the differential property test.
//!
//! Input bytes choose a guest memory layout (page sizes, table levels, compound pages), then a
//! sequence of hypercalls with arbitrary-looking but mostly near-valid arguments and guest
//! memory writes. [`run_one`] runs them the kernel's way (real mode, virtual mode on
//! H_TOO_HARD) and panics if: anything panics, a call returns a code that is not PAPR's (or
//! H_TOO_HARD to the guest), real mode changed state while declining, a hardware TCE points
//! outside the guest's pinned memory or any count disagrees ([`World::check`]), or teardown does
//! not bring every count back to its baseline.

use super::sim::{vm, World, H_TOO_HARD};
use super::{HcallResult, Mode, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use crate::mm::page::PG_COMPOUND;
use crate::mm::{PageDescriptors, Pfn};
use alloc::vec::Vec;

/// Most operations decoded from one input.
pub const MAX_OPS: usize = 48;

/// Reads bytes, zeroes once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | self.u8() as u64)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The guest memory layout an input chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Page shift of the big preregistered region (12 or 16).
    pub prereg_shift: u32,
    /// (page shift, levels) of window 2's hardware tables; page shift 0 = none.
    pub w2_tables: [(u32, u32); 2],
    /// Levels of window 1's table.
    pub w1_levels: u32,
    /// RAM page (4 KiB) index marked compound, if any.
    pub compound: Option<u64>,
}

/// One decoded operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A hypercall with r4..r7.
    Call(u64, [u64; 4]),
    /// The guest writes a big-endian word at a guest physical address.
    Write(u64, u64),
}

const RAM: u64 = 2 << 20;
const W2_BUS: u64 = 1 << 31;
/// Guest physical bases: preregistered RAM, memslot-only RAM, 4K-pinned RAM.
const GPAS: [u64; 3] = [0, 0x1000_0000, 0x2000_0000];

fn pick_gpa(b: &mut Bytes<'_>) -> u64 {
    let sel = b.u8();
    match sel % 8 {
        0..=4 => GPAS[(sel as usize / 8) % 3] + ((b.u8() as u64) << 12),
        5 => GPAS[0] + ((b.u8() as u64) << 16),
        6 => b.u64(),
        _ => GPAS[(sel as usize / 8) % 3] + (b.u8() as u64) * 8,
    }
}

fn pick_liobn(b: &mut Bytes<'_>) -> u64 {
    match b.u8() % 8 {
        0..=2 => 1,
        3..=5 => 2,
        6 => 3,
        _ => b.u64(),
    }
}

fn pick_ioba(b: &mut Bytes<'_>, liobn: u64) -> u64 {
    let sel = b.u8();
    let idx = b.u8() as u64;
    match (sel % 8, liobn) {
        (7, _) => b.u64(),
        (6, _) => idx << 12 | (sel as u64 & 0x7),
        (_, 2) => W2_BUS + ((idx % 80) << 16),
        _ => idx << 12,
    }
}

fn pick_tce(b: &mut Bytes<'_>) -> u64 {
    let perm = b.u8();
    let v = pick_gpa(b);
    match perm % 8 {
        0 => 0,
        1..=5 => (v & !0xfff) | (perm as u64 % 4),
        6 => v | (perm as u64 % 4),
        _ => b.u64(),
    }
}

/// Decodes an input into a layout and operations.
pub fn decode(data: &[u8]) -> (Layout, Vec<Op>) {
    let mut b = Bytes(data);
    let l0 = b.u8();
    let l1 = b.u8();
    let layout = Layout {
        prereg_shift: if l0 & 1 == 0 { 16 } else { 12 },
        w2_tables: [
            [(12, 1), (12, 3), (16, 2), (0, 0)][(l0 as usize >> 1) % 4],
            [(0, 0), (12, 2)][(l0 as usize >> 3) % 2],
        ],
        w1_levels: 1 + (l0 as u32 >> 4) % 3,
        compound: (l1 & 0x80 != 0).then_some(l1 as u64 & 0x7f),
    };
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        let kind = b.u8();
        let liobn = pick_liobn(&mut b);
        let op = match kind % 6 {
            0 | 1 => Op::Call(
                H_PUT_TCE,
                [liobn, pick_ioba(&mut b, liobn), pick_tce(&mut b), 0],
            ),
            2 => Op::Call(H_GET_TCE, [liobn, pick_ioba(&mut b, liobn), 0, 0]),
            3 => {
                let ioba = pick_ioba(&mut b, liobn);
                let v = if b.u8() % 4 == 0 { pick_tce(&mut b) } else { 0 };
                Op::Call(H_STUFF_TCE, [liobn, ioba, v, b.u8() as u64 % 40])
            }
            4 => {
                let ioba = pick_ioba(&mut b, liobn);
                let list = pick_gpa(&mut b);
                let n = if kind & 0x80 != 0 {
                    600
                } else {
                    b.u8() as u64 % 24
                };
                Op::Call(
                    H_PUT_TCE_INDIRECT,
                    [liobn, ioba, list & !0xff8 | (list & 0x8), n],
                )
            }
            _ => Op::Write(pick_gpa(&mut b) & !7, pick_tce(&mut b)),
        };
        ops.push(op);
    }
    (layout, ops)
}

/// Builds the world a layout describes.
///
/// RAM 0..1M: gpa 0.., preregistered with `prereg_shift` pages; RAM 1M..1.5M: gpa 256M.., a
/// memslot only; RAM 1.5M..2M: gpa 512M.., preregistered with 4 KiB pages. Window 1: 4 KiB
/// pages at bus 0 (1 MiB); window 2: 64 KiB pages at 2 GiB (4 MiB); window 3: no table.
pub fn build(l: &Layout) -> World {
    let mut w = World::new(RAM);
    w.memslot(GPAS[0], 1 << 20, 0).expect("memslot");
    w.memslot(GPAS[1], 512 << 10, 1 << 20).expect("memslot");
    w.memslot(GPAS[2], 512 << 10, 3 << 19).expect("memslot");
    w.prereg(0, 1 << 20, l.prereg_shift).expect("prereg");
    w.prereg(3 << 19, 512 << 10, 12).expect("prereg");
    w.window(1, 0, 12, 1 << 20, &[(12, l.w1_levels)])
        .expect("window 1");
    let tables: Vec<(u32, u32)> = l.w2_tables.iter().copied().filter(|t| t.0 != 0).collect();
    w.window(2, W2_BUS, 16, 4 << 20, &tables).expect("window 2");
    w.window(3, 0, 12, 256 << 10, &[]).expect("window 3");
    if let Some(p) = l.compound {
        let pfn = Pfn(w.host.pages.base_pfn() + p);
        w.host
            .pages
            .page(vm(), pfn)
            .expect("page")
            .set_flags(PG_COMPOUND);
    }
    w
}

fn known(code: i64) -> bool {
    HcallResult::from_code(code).is_some()
}

/// Runs one input; panics on any broken property (see the module doc).
pub fn run_one(data: &[u8]) {
    let (layout, ops) = decode(data);
    let mut w = build(&layout);
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Write(gpa, v) => {
                w.write_guest(gpa, v);
            }
            Op::Call(nr, args) => {
                let before = w.snapshot();
                let rm = w.call(Mode::Real, nr, args);
                let r = if rm.0 == H_TOO_HARD {
                    assert_eq!(
                        w.snapshot(),
                        before,
                        "op {n} {op:x?}: real mode declined but changed state"
                    );
                    w.call(Mode::Virtual, nr, args)
                } else {
                    rm
                };
                assert!(known(r.0), "op {n} {op:x?}: returned {}", r.0);
                if let Err(e) = w.check() {
                    panic!("op {n} {op:x?}: {e}");
                }
            }
        }
    }
    if let Err(e) = w.teardown() {
        panic!("teardown: {e}");
    }
}
