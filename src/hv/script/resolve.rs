//! Placing a script's buffers and lists in guest memory and evaluating its expressions.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::lex::quote;
use super::parse::{no_entries, too_many_entries};
use super::{
    abi, Expect, Expr, GuestExpect, GuestExpectExpr, Item, List, Script, ScriptError,
    StatementKind, MAX_ARGS, MAX_LIST_ENTRIES, PAGE_SIZE,
};

/// A range of guest physical memory, `[base, base + size)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    /// Its first guest physical address.
    pub base: u64,
    /// Its length in bytes.
    pub size: u64,
}

/// Where a script's buffers and lists go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Preregistered (pinned) guest memory: buffers and lists without `unpinned`.
    pub pinned: Pool,
    /// Guest memory that is only a memslot: `unpinned` buffers and lists.
    pub unpinned: Pool,
    /// Buffers start at multiples of this (at least [`PAGE_SIZE`]; e.g. 64 KiB so that a
    /// buffer is never in the same IOMMU page as another). Lists take one 4 KiB-aligned page.
    pub align: u64,
}

/// A buffer placed in guest memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBuffer {
    /// The line defining it.
    pub line: usize,
    /// Its name.
    pub name: String,
    /// Its guest physical address.
    pub gpa: u64,
    /// Its size, rounded up to whole 4 KiB pages.
    pub size: u64,
    /// Whether it is in the pinned pool.
    pub pinned: bool,
}

/// A TCE list placed in guest memory: the runner writes `entries` big-endian at `gpa`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedList {
    /// The line defining it.
    pub line: usize,
    /// Its name.
    pub name: String,
    /// The guest physical address of its 4 KiB page.
    pub gpa: u64,
    /// Whether it is in the pinned pool.
    pub pinned: bool,
    /// Its entries (1 to 512).
    pub entries: Vec<u64>,
}

/// A call ready to make: a hypercall, or a guest action (`nr` has [`abi::GUEST_ACTION`] set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCall {
    /// The line it is on.
    pub line: usize,
    /// The hypercall number (r3), or `GUEST_ACTION | op` ([`abi::guest_op`]).
    pub nr: u64,
    /// Its arguments, r4 onwards (at most 8); a guest action's as [`abi::guest_op`] says.
    pub args: Vec<u64>,
    /// What a hypercall must return, if the script says (`None` for a guest action).
    pub expect: Option<Expect>,
    /// What a guest action must do, if the script says (`None` for a hypercall).
    pub guest_expect: Option<GuestExpect>,
}

impl ResolvedCall {
    /// The argument registers r4..r11, zero past the call's arguments.
    pub fn regs(&self) -> [u64; MAX_ARGS] {
        let mut r = [0; MAX_ARGS];
        for (slot, a) in r.iter_mut().zip(&self.args) {
            *slot = *a;
        }
        r
    }
}

/// A script placed in memory with every expression evaluated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Buffers in definition order.
    pub buffers: Vec<ResolvedBuffer>,
    /// Lists in definition order.
    pub lists: Vec<ResolvedList>,
    /// Calls in script order.
    pub calls: Vec<ResolvedCall>,
}

/// Hands out a pool front to back.
struct Alloc {
    pool: Pool,
    next: u64,
    end: u64,
    kind: &'static str,
}

impl Alloc {
    fn new(pool: Pool, kind: &'static str) -> Alloc {
        Alloc {
            pool,
            next: pool.base,
            end: pool.base.saturating_add(pool.size),
            kind,
        }
    }

    /// `size` bytes at a multiple of `align` (non-zero), or an error saying what is left from
    /// there.
    fn take(&mut self, what: &str, size: u64, align: u64) -> Result<u64, String> {
        let start = self.next.checked_next_multiple_of(align);
        match start.and_then(|s| Some((s, s.checked_add(size)?))) {
            Some((s, e)) if e <= self.end => {
                self.next = e;
                Ok(s)
            }
            _ => {
                let left = self.end.saturating_sub(start.unwrap_or(self.end));
                let aligned = if align > PAGE_SIZE {
                    format!(" at a multiple of {align:#x}")
                } else {
                    String::new()
                };
                Err(format!(
                    "{what} needs {size:#x} bytes{aligned} but the {} pool has {left:#x} left (of {:#x} at {:#x})",
                    self.kind, self.pool.size, self.pool.base
                ))
            }
        }
    }
}

/// Names known while resolving: the script's, so far, and the caller's.
struct Names<'s, 'y> {
    defined: BTreeMap<&'s str, u64>,
    order: Vec<&'s str>,
    symbols: &'y [(&'y str, u64)],
}

impl<'s> Names<'s, '_> {
    fn define(&mut self, name: &'s str, gpa: u64) {
        self.defined.insert(name, gpa);
        self.order.push(name);
    }

    /// A new name must not be a predefined symbol.
    fn check_new(&self, what: &str, name: &str) -> Result<(), String> {
        if self.symbols.iter().any(|s| s.0 == name) {
            return Err(format!(
                "{what} {} has the name of a predefined symbol; choose another name",
                quote(name)
            ));
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<u64, String> {
        if let Some(v) = self.defined.get(name) {
            return Ok(*v);
        }
        if let Some(s) = self.symbols.iter().find(|s| s.0 == name) {
            return Ok(s.1);
        }
        let mut m = format!("unknown name {} (", quote(name));
        if self.order.is_empty() && self.symbols.is_empty() {
            m.push_str("nothing is defined");
        }
        if !self.order.is_empty() {
            m.push_str("defined: ");
            m.push_str(&listing(self.order.iter().copied()));
        }
        if !self.symbols.is_empty() {
            if !self.order.is_empty() {
                m.push_str("; ");
            }
            m.push_str("predefined: ");
            m.push_str(&listing(self.symbols.iter().map(|s| s.0)));
        }
        m.push(')');
        Err(m)
    }

    fn eval(&self, e: &Expr) -> Result<u64, String> {
        e.eval(|n| self.get(n), |m| m)
    }
}

/// `a, b, c`, at most 16 of them.
fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    const MAX: usize = 16;
    let mut out = String::new();
    for (i, n) in names.enumerate() {
        if i == MAX {
            out.push_str(", ...");
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(n);
    }
    out
}

impl Script {
    /// Places buffers and lists in `layout`'s pools, in script order, and evaluates every
    /// expression, looking names up among the script's buffers and lists and then `symbols`.
    /// Errors name the line: a pool running out, a script name that is also a symbol, an
    /// unknown name, arithmetic going negative or overflowing, a list with no or too many
    /// entries.
    pub fn resolve(
        &self,
        layout: &Layout,
        symbols: &[(&str, u64)],
    ) -> Result<Resolved, ScriptError> {
        let align = layout.align.max(PAGE_SIZE);
        let mut pinned = Alloc::new(layout.pinned, "pinned");
        let mut unpinned = Alloc::new(layout.unpinned, "unpinned");
        let mut names = Names {
            defined: BTreeMap::new(),
            order: Vec::new(),
            symbols,
        };
        let mut out = Resolved::default();
        for st in &self.statements {
            let line = st.line;
            let at = |message| ScriptError { line, message };
            match &st.kind {
                StatementKind::Buffer(b) => {
                    names.check_new("buffer", &b.name).map_err(at)?;
                    let what = format!("buffer {}", quote(&b.name));
                    let size = b
                        .size
                        .checked_next_multiple_of(PAGE_SIZE)
                        .ok_or_else(|| at(format!("{what} is too large ({:#x} bytes)", b.size)))?;
                    let pool = if b.pinned { &mut pinned } else { &mut unpinned };
                    let gpa = pool.take(&what, size, align).map_err(at)?;
                    names.define(&b.name, gpa);
                    out.buffers.push(ResolvedBuffer {
                        line,
                        name: b.name.clone(),
                        gpa,
                        size,
                        pinned: b.pinned,
                    });
                }
                StatementKind::List(l) => {
                    names.check_new("list", &l.name).map_err(at)?;
                    let pool = if l.pinned { &mut pinned } else { &mut unpinned };
                    let what = format!("list {}", quote(&l.name));
                    let gpa = pool.take(&what, PAGE_SIZE, PAGE_SIZE).map_err(at)?;
                    let entries = entries(l, &names).map_err(at)?;
                    names.define(&l.name, gpa);
                    out.lists.push(ResolvedList {
                        line,
                        name: l.name.clone(),
                        gpa,
                        pinned: l.pinned,
                        entries,
                    });
                }
                StatementKind::Call(c) => {
                    let args = c
                        .args
                        .iter()
                        .map(|a| names.eval(a))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(at)?;
                    if c.nr == abi::GUEST_ACTION | abi::guest_op::INSN {
                        if let (Some(&word), Some(e)) = (args.first(), c.args.first()) {
                            if word > u64::from(u32::MAX) {
                                return Err(at(format!(
                                    "guest insn: the instruction word `{e}` is {word:#x}, which does not fit in 32 bits"
                                )));
                            }
                        }
                    }
                    let expect = match &c.expect {
                        None => None,
                        Some(x) => Some(Expect {
                            code: x.code,
                            r4: x
                                .r4
                                .as_ref()
                                .map(|e| names.eval(e))
                                .transpose()
                                .map_err(at)?,
                            via: x.via,
                        }),
                    };
                    let guest_expect = match &c.guest_expect {
                        None => None,
                        Some(x) => Some(match x {
                            GuestExpectExpr::Ok(v) => GuestExpect::Ok(
                                v.as_ref().map(|e| names.eval(e)).transpose().map_err(at)?,
                            ),
                            GuestExpectExpr::Interrupt(e) => {
                                GuestExpect::Interrupt(names.eval(e).map_err(at)?)
                            }
                            GuestExpectExpr::Timeout => GuestExpect::Timeout,
                            GuestExpectExpr::Stopped(v) => GuestExpect::Stopped(*v),
                        }),
                    };
                    out.calls.push(ResolvedCall {
                        line,
                        nr: c.nr,
                        args,
                        expect,
                        guest_expect,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// A list's entries, `seq`s expanded; at most [`MAX_LIST_ENTRIES`] of them, checked before
/// any `seq` is expanded.
fn entries(l: &List, names: &Names<'_, '_>) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for item in &l.items {
        match item {
            Item::Expr(e) => out.push(names.eval(e)?),
            Item::Seq { start, count, step } => {
                let (s, n, d) = (names.eval(start)?, names.eval(count)?, names.eval(step)?);
                let total = (out.len() as u64).saturating_add(n);
                if total > MAX_LIST_ENTRIES as u64 {
                    return Err(too_many_entries(&l.name, total));
                }
                if n > 0 {
                    (n - 1)
                        .checked_mul(d)
                        .and_then(|span| s.checked_add(span))
                        .ok_or_else(|| {
                            format!(
                                "`seq({start}, {count}, {step})` overflows 64 bits: its last entry would be {s:#x} + {:#x} * {d:#x}",
                                n - 1
                            )
                        })?;
                }
                // No entry exceeds the last one, checked above, so none of these wraps.
                out.extend((0..n).map(|i| s.wrapping_add(i.wrapping_mul(d))));
            }
        }
    }
    if out.len() > MAX_LIST_ENTRIES {
        return Err(too_many_entries(&l.name, out.len() as u64));
    }
    if out.is_empty() {
        return Err(no_entries(&l.name));
    }
    Ok(out)
}
