//! The fuzz harness of the PHB4/IODA3 encoders and the TCE table geometry
//! (`fuzz/fuzz_targets/phb_encoders.rs`, replayed by `tests/fuzz_corpus.rs`), checked against a
//! model written from `../shared/REFERENCE.md` alone, in skiboot's terms: fields named by IBM
//! (MSB 0) bit ranges, set with `SETFIELD`, rather than the LSB-0 shifts of [`super::regs`].
//!
//! Each input picks the arguments of:
//! - [`Tve::translated`]: accepted exactly when OPAL's `MAP_PE_DMA_WINDOW` rules (levels 1..5,
//!   level size a power of two of at least 4 KiB, IO page 4K/64K/2M/1G) and the alignment the
//!   PHB needs hold, with a level size code that fits its field and an address that fits
//!   its; the value is the model's; the decoders give the arguments back;
//! - the TVE decoders on any 64-bit value, against the model's field extraction;
//! - [`TceGeometry::new`]: accepted exactly when the model's rules hold (levels 1..5, page
//!   4K/64K/2M/1G, window a power of two of at least a page, bus offset page aligned, the window
//!   inside one half of the bus address space selected by bit 59, one level encodable), with
//!   Linux's split (`ceil(entries_shift / levels)` index bits per level, levels at least
//!   4 KiB), and Linux's limit (`levels * index bits + page shift` below 55); every accessor, the slots of an index (they put the index back together),
//!   `index_of`, and a TVE built from the geometry decoding back to it;
//! - [`WindowParams::new`] over a table with any fields: accepted exactly when the window
//!   number, PE and TVE are valid, the table's reach is below 55 bits, the table starts at its
//!   window's bus offset (0 or `1 << 59`) and fits its reach; then the PHB's decoding of every
//!   bus address of the window (index = address bits above the page, as many as the levels
//!   hold) equals the table's index, and the window lies in the half its number selects;
//! - [`TceKillCmd`] and [`IodaAddr`] encodings.

use alloc::format;
use alloc::string::String;

use super::dma::{check_window, PhbError, WindowParams};
use super::hw::{DmaWindowTable, PeNum};
use super::regs::{tve_index, IodaAddr, IodaTable, TceKillCmd, Tve, TveError};
use crate::tce::{GeometryError, TceGeometry};

/// IBM bit numbering: bits `first..=last` counted from the most significant (bit 0).
const fn ppc_bitmask(first: u32, last: u32) -> u64 {
    (u64::MAX >> first) & (u64::MAX << (63 - last))
}

/// skiboot's `SETFIELD`: `v` into the field `mask`, other bits of `word` kept.
const fn setfield(mask: u64, word: u64, v: u64) -> u64 {
    (word & !mask) | ((v << mask.trailing_zeros()) & mask)
}

/// skiboot's `GETFIELD`.
const fn getfield(mask: u64, word: u64) -> u64 {
    (word & mask) >> mask.trailing_zeros()
}

// TVE fields (REFERENCE: table address >> 12 in [63:16], levels - 1 in [15:13], log2(level
// bytes) - 11 in [12:8], IO page size code in [4:0], LSB 0), in IBM numbering.
const TVT_TABLE_ADDR: u64 = ppc_bitmask(0, 47);
const TVT_NUM_LEVELS: u64 = ppc_bitmask(48, 50);
const TVT_TABLE_SIZE: u64 = ppc_bitmask(51, 55);
const TVT_IO_PSIZE: u64 = ppc_bitmask(59, 63);

// TCE_KILL (REFERENCE: ALL bit 63, PE bit 62, ONE bit 61, PE number in the low 9 bits).
const KILL_ALL: u64 = ppc_bitmask(0, 0);
const KILL_PE: u64 = ppc_bitmask(1, 1);
const KILL_ONE: u64 = ppc_bitmask(2, 2);
const KILL_PE_NUMBER: u64 = ppc_bitmask(55, 63);

// IODA_ADDR (REFERENCE: table select in [52:48], auto-increment bit 63, index in the low bits).
const IODA_AUTOINC: u64 = ppc_bitmask(0, 0);
const IODA_TSEL: u64 = ppc_bitmask(11, 15);
const IODA_INDEX: u64 = ppc_bitmask(54, 63);

/// The IO page shifts PHB4 translates (4K, 64K, 2M, 1G).
const PAGE_SHIFTS: [u32; 4] = [12, 16, 21, 30];

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
        (0..8).fold(0, |v, _| (v << 8) | u64::from(self.u8()))
    }

    /// A shift: mostly one of `likely`, sometimes any value below 64.
    fn shift(&mut self, likely: &[u32]) -> u32 {
        let b = self.u8();
        match b as usize % 4 {
            3 => u32::from(b >> 2),
            _ => likely[(b as usize >> 2) % likely.len()],
        }
    }

    /// A number near a power of two: 2^k, 2^k ± a little, or anything.
    fn around_power(&mut self) -> u64 {
        let k = u32::from(self.u8() % 64);
        match self.u8() % 8 {
            0 => self.u64(),
            1 => (1u64 << k).wrapping_sub(u64::from(self.u8())),
            2 => (1u64 << k).wrapping_add(u64::from(self.u8()) << 12),
            _ => 1u64 << k,
        }
    }

    /// An address: a multiple of 2^k (often with bit 59 or high bits), or anything.
    fn address(&mut self) -> u64 {
        let k = u32::from(self.u8() % 64);
        let sel = self.u8();
        let base = self.u64() << k;
        match sel % 8 {
            0 => self.u64(),
            1 => base | (1 << 59),
            2 => base & ((1 << 59) - 1),
            3 => base & ((1 << 48) - 1),
            4 => (1 << 59) | ((u64::from(self.u8())) << k.min(58)),
            _ => (u64::from(self.u8()) << k) & ((1 << 60) - 1),
        }
    }
}

/// The model's TVE for a translated window, or why OPAL and the PHB refuse it.
fn model_tve(
    addr: u64,
    levels: u32,
    level_bytes: u64,
    page_shift: u32,
) -> Result<u64, &'static str> {
    if !(1..=5).contains(&levels) {
        return Err("levels");
    }
    if !level_bytes.is_power_of_two() || level_bytes < 4096 {
        return Err("level size");
    }
    let size_code = u64::from(level_bytes.trailing_zeros()) - 11;
    if size_code > getfield(TVT_TABLE_SIZE, u64::MAX) {
        return Err("level size");
    }
    if !addr.is_multiple_of(level_bytes) || (addr >> 12) > getfield(TVT_TABLE_ADDR, u64::MAX) {
        return Err("alignment");
    }
    if !PAGE_SHIFTS.contains(&page_shift) {
        return Err("page shift");
    }
    let mut v = setfield(TVT_TABLE_ADDR, 0, addr >> 12);
    v = setfield(TVT_NUM_LEVELS, v, u64::from(levels - 1));
    v = setfield(TVT_TABLE_SIZE, v, size_code);
    Ok(setfield(TVT_IO_PSIZE, v, u64::from(page_shift) - 11))
}

fn tve_error_matches(
    e: TveError,
    why: &str,
    addr: u64,
    levels: u32,
    bytes: u64,
    shift: u32,
) -> bool {
    match e {
        TveError::Levels(l) => why == "levels" && l == levels,
        TveError::LevelSize(b) => why == "level size" && b == bytes,
        TveError::Alignment(a) => why == "alignment" && a == addr,
        TveError::PageShift(s) => why == "page shift" && s == shift,
    }
}

/// [`Tve::translated`] against the model, and the decoders on what it accepted.
fn check_tve(addr: u64, levels: u32, bytes: u64, shift: u32) -> Result<(), String> {
    let got = Tve::translated(addr, levels, bytes, shift);
    let want = model_tve(addr, levels, bytes, shift);
    let args = format!("Tve::translated({addr:#x}, {levels}, {bytes:#x}, {shift})");
    match (got, want) {
        (Ok(t), Ok(v)) if t.0 == v => {
            let back = (t.table_addr(), t.levels(), t.level_bytes(), t.page_shift());
            if back != (addr, levels, bytes, Some(shift)) || !t.is_enabled() {
                return Err(format!("{args} = {:#x} decodes as {back:x?}", t.0));
            }
            Ok(())
        }
        (Ok(t), Ok(v)) => Err(format!("{args} = {:#x}, the model says {v:#x}", t.0)),
        (Err(e), Err(why)) if tve_error_matches(e, why, addr, levels, bytes, shift) => Ok(()),
        (Err(e), Err(why)) => Err(format!("{args} refused with {e:?}, the model says {why}")),
        (Ok(t), Err(why)) => Err(format!("{args} = {:#x}, the model refuses ({why})", t.0)),
        (Err(e), Ok(v)) => Err(format!("{args} refused with {e:?}, the model says {v:#x}")),
    }
}

/// The TVE decoders on any value.
fn check_tve_decode(v: u64) -> Result<(), String> {
    let t = Tve(v);
    let code = getfield(TVT_IO_PSIZE, v) as u32;
    let want = (
        getfield(TVT_TABLE_ADDR, v) << 12,
        getfield(TVT_NUM_LEVELS, v) as u32 + 1,
        1u64 << (getfield(TVT_TABLE_SIZE, v) + 11),
        (code != 0).then_some(code + 11),
        getfield(TVT_TABLE_SIZE, v) != 0,
    );
    let got = (
        t.table_addr(),
        t.levels(),
        t.level_bytes(),
        t.page_shift(),
        t.is_enabled(),
    );
    if got != want {
        return Err(format!(
            "Tve({v:#x}) decodes as {got:x?}, the model says {want:x?}"
        ));
    }
    Ok(())
}

/// The model's geometry: (entries, level shift), or the rule broken.
fn model_geometry(
    bus: u64,
    shift: u32,
    window: u64,
    levels: u32,
) -> Result<(u64, u32), &'static str> {
    if !(1..=5).contains(&levels) {
        return Err("levels");
    }
    if !PAGE_SHIFTS.contains(&shift) {
        return Err("page shift");
    }
    if window == 0 || window & (window - 1) != 0 {
        return Err("window power of two");
    }
    if window < 1 << shift {
        return Err("window smaller than page");
    }
    if !bus.is_multiple_of(1 << shift) {
        return Err("bus offset");
    }
    let last = u128::from(bus) + u128::from(window) - 1;
    if last > u128::from(u64::MAX) || (last >> 59) != u128::from(bus >> 59) || window > 1 << 59 {
        return Err("bit 59");
    }
    let entries_shift = window.trailing_zeros() - shift;
    let bits = entries_shift.div_ceil(levels);
    let level_shift = (bits + 3).max(12);
    if level_shift - 11 > getfield(TVT_TABLE_SIZE, u64::MAX) as u32 {
        return Err("level too large");
    }
    // Linux pnv_pci_ioda2_table_alloc_pages: bus address bits 59:55 are not decoded.
    if (level_shift - 3) * levels + shift >= 55 {
        return Err("55 bits");
    }
    Ok((window >> shift, level_shift))
}

fn geometry_error_matches(e: GeometryError, why: &str) -> bool {
    matches!(
        (e, why),
        (GeometryError::LevelsOutOfRange { .. }, "levels")
            | (GeometryError::UnsupportedPageShift { .. }, "page shift")
            | (
                GeometryError::WindowNotPowerOfTwo { .. },
                "window power of two"
            )
            | (
                GeometryError::WindowSmallerThanPage { .. },
                "window smaller than page"
            )
            | (GeometryError::BusOffsetMisaligned { .. }, "bus offset")
            | (GeometryError::WindowCrossesTveSelect { .. }, "bit 59")
            | (GeometryError::LevelTooLarge { .. }, "level too large")
            | (GeometryError::ReachTooLarge { .. }, "55 bits")
    )
}

/// [`TceGeometry::new`] against the model; for an accepted geometry every accessor, the slots
/// of `index`, `index_of(ioba)`, and a TVE built from it at `addr` (aligned down to a level).
fn check_geometry(
    bus: u64,
    shift: u32,
    window: u64,
    levels: u32,
    index: u64,
    ioba: u64,
    addr: u64,
) -> Result<(), String> {
    let args = format!("TceGeometry::new({bus:#x}, {shift}, {window:#x}, {levels})");
    let g = match (
        TceGeometry::new(bus, shift, window, levels),
        model_geometry(bus, shift, window, levels),
    ) {
        (Ok(g), Ok(m)) => (g, m),
        (Err(e), Err(why)) if geometry_error_matches(e, why) => return Ok(()),
        (got, want) => return Err(format!("{args} = {got:?}, the model says {want:?}")),
    };
    let (g, (entries, level_shift)) = g;
    let bits = level_shift - 3;
    let got = (
        g.bus_offset(),
        g.page_shift(),
        g.page_size(),
        g.window_size(),
        g.entries(),
        g.levels(),
        g.level_size(),
        g.level_shift(),
        g.entries_per_level(),
        g.level_bits(),
        g.tve_page_size_code(),
        g.tve_level_size_code(),
    );
    let want = (
        bus,
        shift,
        1 << shift,
        window,
        entries,
        levels,
        1 << level_shift,
        level_shift,
        1 << bits,
        bits,
        u64::from(shift) - 11,
        u64::from(level_shift) - 11,
    );
    if got != want {
        return Err(format!(
            "{args}: accessors {got:x?}, the model says {want:x?}"
        ));
    }
    // A fully populated view: at depth d, ceil(entries / 2^(bits * (levels - d))) levels.
    let full: u128 = (0..levels)
        .map(|d| {
            let span = u128::from(bits) * u128::from(levels - d);
            let per = if span >= 127 {
                u128::MAX
            } else {
                1u128 << span
            };
            u128::from(entries).div_ceil(per) << level_shift
        })
        .sum();
    if u128::from(g.full_view_bytes()) != full {
        return Err(format!(
            "{args}: full_view_bytes {:#x}, the model says {full:#x}",
            g.full_view_bytes()
        ));
    }
    let index = index % entries;
    let mut back = 0u128;
    for d in 0..levels {
        let s = g.slot(index, d);
        if s >= 1 << bits {
            return Err(format!(
                "{args}: slot({index}, {d}) = {s} in a level of {} entries",
                1u64 << bits
            ));
        }
        back |= u128::from(s) << (bits * (levels - 1 - d));
    }
    if back != u128::from(index) {
        return Err(format!(
            "{args}: the slots of index {index:#x} make {back:#x}"
        ));
    }
    let want_index = (ioba >= bus && ioba - bus < window).then(|| (ioba - bus) >> shift);
    if g.index_of(ioba) != want_index {
        return Err(format!(
            "{args}: index_of({ioba:#x}) = {:?}, the model says {want_index:?}",
            g.index_of(ioba)
        ));
    }
    let top = addr & !(g.level_size() - 1) & ((1 << 60) - 1);
    let tve = Tve::translated(top, g.levels(), g.level_size(), g.page_shift())
        .map_err(|e| format!("{args}: a TVE at {top:#x} is refused: {e:?}"))?;
    let back = (
        tve.table_addr(),
        tve.levels(),
        tve.level_bytes(),
        tve.page_shift(),
    );
    if back != (top, levels, 1 << level_shift, Some(shift)) {
        return Err(format!("{args}: its TVE at {top:#x} decodes as {back:x?}"));
    }
    Ok(())
}

/// A window table with any fields.
struct FakeTable {
    top: u64,
    levels: u32,
    level_size: u64,
    page_shift: u32,
    bus: u64,
    window: u64,
}

impl DmaWindowTable for FakeTable {
    fn top_level_phys(&self) -> u64 {
        self.top
    }
    fn levels(&self) -> u32 {
        self.levels
    }
    fn level_size(&self) -> u64 {
        self.level_size
    }
    fn page_shift(&self) -> u32 {
        self.page_shift
    }
    fn bus_offset(&self) -> u64 {
        self.bus
    }
    fn window_size(&self) -> u64 {
        self.window
    }
}

/// Whether the PHB, decoding `index_bits` bits of a bus address above a page of 2^`shift`,
/// finds the table's own index (address minus `bus`, in pages) for every address of
/// `[bus, bus + window)` (`window` > 0, no wrap). Worked out for a first address `q` pages and
/// `r` bytes in: the first address needs `q` to be a multiple of the 2^index_bits entries, and
/// then either the window starts on a page and has at most 2^index_bits pages, or it stays
/// inside its first page.
fn phb_agrees(bus: u64, window: u64, shift: u32, index_bits: u32) -> bool {
    let page = 1u128 << shift;
    let entries = if index_bits >= 100 {
        u128::MAX
    } else {
        1u128 << index_bits
    };
    let (q, r) = (u128::from(bus) / page, u128::from(bus) % page);
    if q % entries != 0 {
        return false;
    }
    let w = u128::from(window);
    if r == 0 {
        (w - 1) / page < entries
    } else {
        w <= page - r
    }
}

/// [`WindowParams::new`]: refused for a bad window number, PE number or a TVE that cannot be
/// encoded, with those errors; for a table whose reach (`levels * index bits + page shift`)
/// reaches 55 bits, which the PHB does not decode; for a table not starting at its window's
/// bus offset (0 or `1 << 59`) or larger than its reach; accepted otherwise, and then the PHB
/// decodes the window as the table indexes it, inside the half bit 59 selects for the window
/// number, below 2^60.
fn check_window_params(t: &FakeTable, pe: u32, window: u8, num_pes: u32) -> Result<(), String> {
    let args = format!(
        "WindowParams::new(pe {pe}, window {window}, {num_pes} PEs, table at {:#x}: {} levels of {:#x}, page shift {}, bus {:#x}, size {:#x})",
        t.top, t.levels, t.level_size, t.page_shift, t.bus, t.window
    );
    let w = match check_window(window) {
        Ok(w) if window <= 1 && w.number() == window => w,
        Err(PhbError::BadWindow(b)) if window > 1 && b == window => return Ok(()),
        got => return Err(format!("check_window({window}) = {got:?}")),
    };
    let got = WindowParams::new(PeNum(pe), w, num_pes, t);
    let tve = model_tve(t.top, t.levels, t.level_size, t.page_shift);
    // Only read once the TVE is valid: levels 1..=5, a power-of-two level of 4K..2^42.
    let reach = || t.page_shift + t.levels * (t.level_size.trailing_zeros() - 3);
    let want_range =
        || t.bus != u64::from(window) << 59 || t.window == 0 || u128::from(t.window) > 1 << reach();
    match got {
        Err(PhbError::BadPe { pe: p, num_pes: n })
            if pe >= num_pes && (p, n) == (PeNum(pe), num_pes) =>
        {
            Ok(())
        }
        Err(PhbError::Table(e)) if pe < num_pes => match tve {
            Err(why) if tve_error_matches(e, why, t.top, t.levels, t.level_size, t.page_shift) => {
                Ok(())
            }
            _ => Err(format!(
                "{args} refused with {e:?}, the model's TVE is {tve:?}"
            )),
        },
        Err(PhbError::TableReach { reach_shift }) if pe < num_pes && tve.is_ok() => {
            if reach_shift == reach() && reach_shift >= 55 {
                Ok(())
            } else {
                Err(format!(
                    "{args} refused with reach {reach_shift}, the model says {}",
                    reach()
                ))
            }
        }
        Err(PhbError::TableRange { .. }) if pe < num_pes && tve.is_ok() && reach() < 55 => {
            if want_range() {
                Ok(())
            } else {
                Err(format!("{args} refused, but the table starts at its window's offset and fits its reach"))
            }
        }
        Ok(p) => {
            if pe >= num_pes || tve != Ok(p.tve.0) || reach() >= 55 || want_range() {
                return Err(format!(
                    "{args} accepted ({p:x?}); the model's TVE is {tve:x?}, reach {}",
                    reach()
                ));
            }
            // What the rules buy: the PHB's decoding agrees with the table's indexing, and
            // the window lies in the half its number selects, below 2^60.
            let last = t.bus + (t.window - 1);
            let index_bits = t.levels * (t.level_size.trailing_zeros() - 3);
            if !phb_agrees(t.bus, t.window, t.page_shift, index_bits)
                || last >> 60 != 0
                || (last >> 59) as u8 != window
            {
                return Err(format!(
                    "{args} accepted, but the PHB would mistranslate it"
                ));
            }
            let want = (
                tve_index(pe, window),
                t.levels,
                t.top,
                t.level_size,
                t.page_shift,
            );
            let got = (
                p.tve_index,
                p.levels,
                p.table_addr,
                p.level_size,
                p.page_shift,
            );
            if got != want || p.tve_index != pe * 2 + u32::from(window) {
                return Err(format!("{args} accepted as {got:x?}, expected {want:x?}"));
            }
            Ok(())
        }
        Err(e) => Err(format!("{args} refused with {e:?} (model: TVE {tve:?})")),
    }
}

/// [`TceKillCmd`] and [`IodaAddr`] against the model.
fn check_kill_and_ioda(pe: u32, bus: u64, shift: u32, index: u32, table: u8) -> Result<(), String> {
    if TceKillCmd::all().0 != KILL_ALL {
        return Err(format!("TceKillCmd::all() = {:#x}", TceKillCmd::all().0));
    }
    let want_pe = setfield(KILL_PE_NUMBER, KILL_PE, u64::from(pe));
    if TceKillCmd::pe(pe).0 != want_pe {
        return Err(format!(
            "TceKillCmd::pe({pe}) = {:#x}, the model says {want_pe:#x}",
            TceKillCmd::pe(pe).0
        ));
    }
    let ok = PAGE_SHIFTS.contains(&shift) && bus.is_multiple_of(1 << shift) && bus >> 60 == 0;
    match TceKillCmd::one(pe, bus, shift) {
        None if !ok => {}
        Some(k) if ok => {
            // A 4K kill carries the address alone (its bits 13:12 are address bits); a larger
            // page sets PSEL (bit 60) and a page size code in bits 13:12, below the page.
            let code = PAGE_SHIFTS.iter().position(|&s| s == shift).unwrap_or(0) as u64;
            let mut want = setfield(KILL_PE_NUMBER, KILL_ONE, u64::from(pe)) | bus;
            if shift != 12 {
                want |= (1 << 60) | (code << 12);
            }
            if k.0 != want {
                return Err(format!(
                    "TceKillCmd::one({pe}, {bus:#x}, {shift}) = {:#x}, the model says {want:#x}",
                    k.0
                ));
            }
        }
        got => {
            return Err(format!(
                "TceKillCmd::one({pe}, {bus:#x}, {shift}) = {got:x?}, the model says valid: {ok}"
            ));
        }
    }
    let tables = [IodaTable::PestA, IodaTable::PestB, IodaTable::Tvt];
    let tsel = tables[table as usize % tables.len()];
    let autoinc = table & 0x80 != 0;
    let fits = u64::from(index) <= getfield(IODA_INDEX, u64::MAX);
    match IodaAddr::new(tsel, index, autoinc) {
        None if !fits => {}
        Some(a) if fits => {
            let mut want = setfield(IODA_TSEL, 0, tsel as u64);
            want = setfield(IODA_INDEX, want, u64::from(index));
            if autoinc {
                want |= IODA_AUTOINC;
            }
            let back = (a.table_select(), a.index(), a.autoinc());
            if a.0 != want || back != (tsel as u8, index, autoinc) {
                return Err(format!(
                    "IodaAddr::new({tsel:?}, {index}, {autoinc}) = {:#x} ({back:?}), the model says {want:#x}",
                    a.0
                ));
            }
        }
        got => {
            return Err(format!(
                "IodaAddr::new({tsel:?}, {index}, {autoinc}) = {got:x?}"
            ))
        }
    }
    Ok(())
}

/// Checks one input; `Err` says which property broke.
pub fn check(data: &[u8]) -> Result<(), String> {
    let mut b = Bytes(data);
    // TVE encode: levels 0..7, level sizes near powers of two, aligned-ish addresses.
    let levels = u32::from(b.u8() % 8);
    let bytes = b.around_power();
    let addr = b.address();
    let shift = b.shift(&PAGE_SHIFTS);
    check_tve(addr, levels, bytes, shift)?;
    check_tve_decode(b.u64())?;
    // Geometry: a window of 2^k, k near the page shift's reach, at an aligned-ish bus offset.
    let gshift = b.shift(&PAGE_SHIFTS);
    let glevels = u32::from(b.u8() % 7);
    let gwindow = b.around_power();
    let gbus = b.address();
    let (index, ioba, top) = (
        b.u64(),
        gbus.wrapping_add(b.u64() % (gwindow | 1)),
        b.address(),
    );
    check_geometry(gbus, gshift, gwindow, glevels, index, ioba, top)?;
    // A table shaped by a geometry when one is valid, with any fields otherwise.
    let sel = b.u8();
    let mut t = FakeTable {
        top: b.address(),
        levels: u32::from(b.u8() % 7),
        level_size: b.around_power(),
        page_shift: b.shift(&PAGE_SHIFTS),
        bus: b.address(),
        window: b.around_power(),
    };
    if sel % 4 != 0 {
        if let Ok(g) = TceGeometry::new(gbus, gshift, gwindow, glevels.max(1)) {
            t = FakeTable {
                top: t.top & !(g.level_size() - 1),
                levels: g.levels(),
                level_size: g.level_size(),
                page_shift: g.page_shift(),
                bus: g.bus_offset(),
                window: g.window_size(),
            };
        }
    }
    let pe = u32::from(b.u8()) | (u32::from(b.u8() & 3) << 8);
    let num_pes = [256, 512, 0, u32::from(b.u8()) + 1][sel as usize >> 6];
    let window = if sel & 0x20 != 0 {
        b.u8() % 4
    } else {
        (t.bus >> 59) as u8 & 1
    };
    check_window_params(&t, pe, window, num_pes)?;
    let kill_bus = b.address();
    let kill_shift = b.shift(&PAGE_SHIFTS);
    let index = u32::from(b.u8()) << (b.u8() % 4);
    check_kill_and_ioda(pe, kill_bus, kill_shift, index, b.u8())
}

/// Runs [`check`] and panics on a broken property: the fuzz target's body.
pub fn run_one(data: &[u8]) {
    if let Err(e) = check(data) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_agrees_with_the_reference_example() {
        // REFERENCE: one level of 4 KiB at 0x20024000, 4K pages -> 0x0000000200240101.
        assert_eq!(
            model_tve(0x2002_4000, 1, 0x1000, 12),
            Ok(0x0000_0002_0024_0101)
        );
        assert_eq!(TVT_IO_PSIZE, 0x1f);
        assert_eq!(TVT_TABLE_SIZE, 0x1f << 8);
        assert_eq!(KILL_ONE, 1 << 61);
        assert_eq!(IODA_TSEL, 0x1f << 48);
    }

    #[test]
    fn phb_agreement_model() {
        // 1 MiB of 4K pages over 2 levels of 9 bits: reach 2^30.
        assert!(phb_agrees(0, 1 << 20, 12, 18));
        assert!(phb_agrees(1 << 30, 1 << 30, 12, 18));
        assert!(!phb_agrees(1 << 20, 1 << 20, 12, 18));
        assert!(!phb_agrees(0, (1 << 30) + 4096, 12, 18));
        // Inside one page, an unaligned start decodes the same.
        assert!(phb_agrees(0x800, 0x800, 12, 18));
        assert!(!phb_agrees(0x800, 0x801, 12, 18));
    }

    #[test]
    fn random_inputs_pass() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 160];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            check(&buf).unwrap();
        }
    }
}
