//! Hypercall scripts: text files that tell a test guest which sPAPR hypercalls to make and what
//! to expect.
//!
//! [`parse`] turns one file into a [`Script`] (statements with their line numbers, expressions
//! kept as written where they name something); [`Script::resolve`] places its buffers and lists
//! in guest memory ([`Layout`]) and evaluates every expression against them and the caller's
//! predefined symbols, giving a [`Resolved`] run: the lists to write into guest memory and the
//! calls to make, each with its [`Expect`]ation, or, for a guest action (something the guest
//! does itself, [`abi::GUEST_ACTION`]), its [`GuestExpect`]ation. [`parse_bundle`] splits the
//! several files the kernel receives concatenated. Neither parser panics, whatever the bytes.
//!
//! # The language
//! One statement per line; `#` starts a comment to the end of the line; blank lines are fine.
//! Tokens are separated by spaces or tabs (a line may end in `\r\n`); commas separate list
//! items. Keywords, hypercall and action names are case-sensitive as written here (SPR names
//! are not).
//!
//! ```text
//! # guest memory: a named buffer of SIZE bytes, from the pinned (preregistered) pool unless `unpinned`
//! buffer NAME SIZE [unpinned]
//! # a named TCE list: a 4 KiB guest page of its own holding these 64-bit entries (1..=512 of them)
//! list NAME [unpinned] = ITEM, ITEM, ...
//! # a hypercall, by name or number, its arguments, and optionally what it must return
//! CALL ARG ARG ... [=> CODE [VALUE] [via real|virtual]]
//! # a guest action: something the guest does itself, and optionally its outcome
//! guest ACTION ARG ... [=> OUTCOME]
//! ```
//!
//! - **NAME**: `[A-Za-z_][A-Za-z0-9_]*`, not a keyword (`buffer`, `list`, `unpinned`, `seq`,
//!   `via`, `real`, `virtual`, `guest`), hypercall name or result-code name; defined once per
//!   script (a redefinition is an error naming both lines) and used only after its
//!   definition. A name may not also be one of the caller's predefined symbols.
//! - **Numbers**: decimal or `0x` hex, `_` separators allowed, an optional size suffix `K`,
//!   `M` or `G` (×1024, ×1024², ×1024³) on any number, e.g. `64K`, `0x1_0000`, `2M`. Every
//!   number and every intermediate result must fit in 64 bits.
//! - **SIZE**: a number (at least 1; buffers are rounded up to whole 4 KiB pages).
//! - **Expressions** (ARG, ITEM, VALUE): `TERM (OP TERM)*`, evaluated left to right (no
//!   precedence), OP one of `+`, `-`, `|`; spaces around operators are optional
//!   (`buf+0x1000|3` and `buf + 0x1000 | 3` are the same single expression). A TERM is a
//!   number, a buffer or list name (its guest physical address), or a predefined symbol
//!   supplied by the runner (e.g. `liobn_4k`). A negative or overflowing result is an error.
//! - **List items**: expressions, or `seq(START, COUNT, STEP)` (each an expression), which
//!   expands to the COUNT entries START, START+STEP, START+2·STEP, ... A list has 1 to 512
//!   entries in all; the runner writes them big-endian into the list's page before the run.
//! - **CALL**: `H_PUT_TCE`, `H_GET_TCE`, `H_STUFF_TCE`, `H_PUT_TCE_INDIRECT`,
//!   `H_PUT_TERM_CHAR`, or a number (any hypercall number below `1 << 63`, e.g. to expect
//!   `H_FUNCTION`; bit 63 marks a guest action). The named calls take exactly their PAPR
//!   arguments: `H_PUT_TCE liobn ioba tce`, `H_GET_TCE liobn ioba`, `H_STUFF_TCE liobn ioba
//!   value count`, `H_PUT_TCE_INDIRECT liobn ioba list count`, `H_PUT_TERM_CHAR termno len
//!   chars_hi chars_lo`; a numbered call takes 0 to 8 arguments.
//! - **Expectation** after `=>`: CODE is `H_SUCCESS`, `H_HARDWARE`, `H_FUNCTION`,
//!   `H_PARAMETER`, `H_NO_MEM` or an integer (possibly negative, e.g. `-4`). VALUE, allowed only
//!   on `H_GET_TCE` (the one call that returns something in r4), is an expression r4 must
//!   equal. `via real` requires that real mode completed the call, `via virtual` that real mode
//!   declined (H_TOO_HARD) and virtual mode completed it. `H_TOO_HARD` itself is not a valid
//!   expectation: it never reaches a guest. Without `=>` the call's outcome is not checked.
//! - **ACTION** (`nr` = [`abi::GUEST_ACTION`] | [`abi::guest_op`]): `spin` (forever, `MSR[EE]`
//!   off), `spin_ee` (forever, the decrementer armed), `load GPA`, `store GPA VALUE`, `exec GPA`
//!   (branch and link there), `insn WORD [R3]` (execute the instruction WORD, which must fit
//!   in 32 bits, with r3 = R3, default 0), `spr SPR` (read it right after an `sc 1`), `mtspr
//!   SPR VALUE`, `user_sc` (`sc 1` from problem state, with a radix tree of the guest's own),
//!   `dma_to_device IOVA` / `dma_to_ram IOVA` (the device the guest owns reads or writes
//!   [`abi::DMA_LEN`] bytes at IOVA; the value is 0 when the transfer completed, 1 with no
//!   device, 2 if it did not finish: whether it landed is for `load`s to see).
//!   Each takes exactly these arguments, expressions except SPR: a name from
//!   [`abi::SPRS`] (`pidr`, `cfar`, ...) or a number below 1024.
//! - **OUTCOME** after `=>` on a guest action: `ok` (it completed), `ok VALUE` or just VALUE
//!   (it completed with r4 = VALUE, an expression), `program` (the guest took its own program
//!   interrupt, 0x700), `interrupt VECTOR` (its own interrupt at VECTOR, an expression),
//!   `stopped timeout` (the hypervisor stopped the guest for running past its time limit),
//!   `stopped FAULT` (the hypervisor stopped it on FAULT: `hdsi` 0xe00, `hisi` 0xe20, `hea`
//!   0xe40, `hfac` 0xf80, `hvi` 0xea0, or a vector number). These words are read as outcomes,
//!   not names (a buffer named `ok` is checked with `=> ok ok`). Result codes and `via` are
//!   for hypercalls only, outcomes for guest actions only. Without `=>` nothing is checked.
//! - **Limits**: at most 4096 calls (guest actions included) and 1024 buffers and lists per
//!   script.
//!
//! ```text
//! buffer buf 64K                    # pinned
//! buffer far 4K unpinned
//! list tl = buf|3, far|3, seq(buf+0x1000|3, 14, 0x1000)
//! H_PUT_TCE liobn_4k 0 buf|3 => H_SUCCESS via real
//! H_GET_TCE liobn_4k 0 => H_SUCCESS buf|3
//! H_PUT_TCE liobn_4k 0x1000 far|3 => H_SUCCESS via virtual
//! H_PUT_TCE_INDIRECT liobn_4k 0x10000 tl 16 => H_SUCCESS
//! H_STUFF_TCE liobn_4k 0 0 32 => H_SUCCESS
//! 0x1234 => H_FUNCTION
//! guest mtspr pidr 0x1234 => 0x1234 # the value read back
//! guest insn 0x7fe00008 => program  # `trap`: the guest's own program interrupt
//! guest load 0x7000_0000 => stopped hdsi
//! ```
//!
//! ## Bundles
//! The kernel receives several files concatenated. A line starting with `#@file` followed by
//! a space or tab (or nothing) starts a new file named by the rest of that line (trimmed):
//! line numbers restart at 1 on the next line and names are per file. Text before the first
//! `#@file` line is a file named `-`, reported only if it has a statement or an error or if
//! there is no `#@file` line at all. Elsewhere (and in [`parse`]) an `#@file` line is a
//! comment.
//!
//! ## Errors
//! The input is bytes; a line that is not valid UTF-8 is an error. Every error is a
//! [`ScriptError`] naming its line, printed as `line N: message`, where the message says what
//! was expected and quotes what was found, e.g. ``line 4: H_PUT_TCE takes 3 arguments (liobn
//! ioba tce), found 2`` or ``line 9: unknown name `bfu` (defined: buf, tl)``. Parsing stops at
//! the first error found reading top to bottom (a name used before its definition is found at
//! the definition, and reported on the line using it).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::hcall::{HcallResult, Mode, H_GET_TCE, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE};
use crate::hv::abi::{self, guest_op};

mod format;
#[cfg(any(test, feature = "sim"))]
pub mod fuzz;
mod lex;
mod parse;
mod resolve;
#[cfg(test)]
mod tests;

pub use format::Outcome;
pub use parse::{parse, parse_bundle, PREAMBLE};
pub use resolve::{Layout, Pool, Resolved, ResolvedBuffer, ResolvedCall, ResolvedList};

pub use crate::hcall::H_PUT_TERM_CHAR;

/// At most this many calls in one script.
pub const MAX_CALLS: usize = 4096;
/// At most this many buffers and lists (together) in one script.
pub const MAX_DEFINITIONS: usize = 1024;
/// At most this many entries in one list: one 4 KiB page of 64-bit TCEs.
pub const MAX_LIST_ENTRIES: usize = 512;
/// At most this many arguments (r4..r11) in a numbered call.
pub const MAX_ARGS: usize = 8;
/// Buffers are rounded up to, and lists take, whole pages of this size.
pub const PAGE_SIZE: u64 = 4096;

/// The hypercalls a script may name, with their PAPR argument names.
const CALLS: [(&str, u64, &[&str]); 5] = [
    ("H_PUT_TCE", H_PUT_TCE, &["liobn", "ioba", "tce"]),
    ("H_GET_TCE", H_GET_TCE, &["liobn", "ioba"]),
    (
        "H_STUFF_TCE",
        H_STUFF_TCE,
        &["liobn", "ioba", "value", "count"],
    ),
    (
        "H_PUT_TCE_INDIRECT",
        H_PUT_TCE_INDIRECT,
        &["liobn", "ioba", "list", "count"],
    ),
    (
        "H_PUT_TERM_CHAR",
        H_PUT_TERM_CHAR,
        &["termno", "len", "chars_hi", "chars_lo"],
    ),
];

/// The result codes an expectation may name.
const CODES: [(&str, HcallResult); 5] = [
    ("H_SUCCESS", HcallResult::Success),
    ("H_HARDWARE", HcallResult::Hardware),
    ("H_FUNCTION", HcallResult::Function),
    ("H_PARAMETER", HcallResult::Parameter),
    ("H_NO_MEM", HcallResult::NoMem),
];

/// The internal code a guest never sees.
const TOO_HARD: &str = "H_TOO_HARD";

/// Words that are never names.
const KEYWORDS: [&str; 8] = [
    "buffer", "list", "unpinned", "seq", "via", "real", "virtual", "guest",
];

/// The guest actions a script may name (`guest NAME ...`), with their arguments' names; an
/// argument ending in `?` is optional.
const ACTIONS: [(&str, u64, &[&str]); 11] = [
    ("spin", guest_op::SPIN, &[]),
    ("spin_ee", guest_op::SPIN_EE, &[]),
    ("load", guest_op::LOAD, &["gpa"]),
    ("store", guest_op::STORE, &["gpa", "value"]),
    ("exec", guest_op::EXEC, &["gpa"]),
    ("insn", guest_op::INSN, &["word", "r3?"]),
    ("spr", guest_op::SPR, &["spr"]),
    ("mtspr", guest_op::MTSPR, &["spr", "value"]),
    ("user_sc", guest_op::USER_SC, &[]),
    ("dma_to_device", guest_op::DMA_TO_DEVICE, &["iova"]),
    ("dma_to_ram", guest_op::DMA_TO_RAM, &["iova"]),
];

/// SPR numbers are below this (10 bits in mfspr/mtspr).
const SPR_LIMIT: u64 = 1024;

/// The guest's program interrupt (`=> program`).
const PROGRAM: u64 = 0x700;

/// The interrupts on which the hypervisor stops a guest that a script may name
/// (`=> stopped FAULT`).
const FAULTS: [(&str, u64); 5] = [
    ("hdsi", 0xe00),
    ("hisi", 0xe20),
    ("hea", 0xe40),
    ("hfac", 0xf80),
    ("hvi", 0xea0),
];

/// The words that start a guest action's outcome.
const OUTCOMES: [&str; 4] = ["ok", "program", "interrupt", "stopped"];

/// The name of hypercall `nr`, if a script can name it.
pub fn hcall_name(nr: u64) -> Option<&'static str> {
    CALLS.iter().find(|c| c.1 == nr).map(|c| c.0)
}

/// The name of guest action `nr` (`load`, `spr`, ...), if it is one a script can name.
pub fn guest_action_name(nr: u64) -> Option<&'static str> {
    if !abi::is_action(nr) {
        return None;
    }
    ACTIONS
        .iter()
        .find(|a| a.1 == nr & !abi::GUEST_ACTION)
        .map(|a| a.0)
}

/// The name of result code `code` (`H_SUCCESS` ... `H_NO_MEM`, and `H_TOO_HARD`).
pub fn code_name(code: i64) -> Option<&'static str> {
    if code == crate::mm::TooHard::CODE {
        return Some(TOO_HARD);
    }
    CODES.iter().find(|c| c.1.code() == code).map(|c| c.0)
}

/// A parse or resolution error: the line (1-based, within its file) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// 1-based line number within the file.
    pub line: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl core::error::Error for ScriptError {}

/// A parsed script: its statements in order, each with its line number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// Buffers, lists and calls, in file order.
    pub statements: Vec<Statement>,
}

impl Script {
    /// The calls and guest actions, in order, with their line numbers.
    pub fn calls(&self) -> impl Iterator<Item = (usize, &Call)> {
        self.statements.iter().filter_map(|s| match &s.kind {
            StatementKind::Call(c) => Some((s.line, c)),
            _ => None,
        })
    }
}

/// One statement and the line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// 1-based line number.
    pub line: usize,
    /// What the statement says.
    pub kind: StatementKind,
}

/// The three statement forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatementKind {
    /// `buffer NAME SIZE [unpinned]`.
    Buffer(Buffer),
    /// `list NAME [unpinned] = ITEM, ...`.
    List(List),
    /// `CALL ARG ... [=> CODE [VALUE] [via real|virtual]]`, or
    /// `guest ACTION ARG ... [=> OUTCOME]`.
    Call(Call),
}

/// `buffer NAME SIZE [unpinned]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Its name.
    pub name: String,
    /// Its size in bytes as written (at least 1).
    pub size: u64,
    /// From the preregistered pool (no `unpinned`).
    pub pinned: bool,
}

/// `list NAME [unpinned] = ITEM, ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct List {
    /// Its name.
    pub name: String,
    /// From the preregistered pool (no `unpinned`).
    pub pinned: bool,
    /// The items as written (at least one).
    pub items: Vec<Item>,
}

/// One list item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// One entry.
    Expr(Expr),
    /// `seq(START, COUNT, STEP)`: COUNT entries START, START+STEP, ...
    Seq {
        /// The first entry.
        start: Expr,
        /// How many entries.
        count: Expr,
        /// The difference between consecutive entries.
        step: Expr,
    },
}

/// A hypercall statement, or a guest action (`nr` has [`abi::GUEST_ACTION`] set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The hypercall number (from its name or as written), or `GUEST_ACTION | op`.
    pub nr: u64,
    /// Its arguments, r4 onwards. A guest action's are as [`abi::guest_op`] says: `insn` has
    /// both (R3 defaults to 0), and an SPR is its number.
    pub args: Vec<Expr>,
    /// What a hypercall must return, if the script says (`None` for a guest action).
    pub expect: Option<ExpectExpr>,
    /// What a guest action must do, if the script says (`None` for a hypercall).
    pub guest_expect: Option<GuestExpectExpr>,
}

/// A guest action's outcome as written (its values still expressions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestExpectExpr {
    /// `ok [VALUE]`, or `VALUE`.
    Ok(Option<Expr>),
    /// `interrupt VECTOR`, or `program` (0x700).
    Interrupt(Expr),
    /// `stopped timeout`.
    Timeout,
    /// `stopped FAULT`: the vector.
    Stopped(u64),
}

/// What a guest action must do, or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExpect {
    /// Completed; with `Some(v)`, its value must be `v` (an outcome always has `Some`).
    Ok(Option<u64>),
    /// The guest took an interrupt of its own at this vector (`program` is 0x700).
    Interrupt(u64),
    /// The hypervisor stopped the guest: it ran past its time limit.
    Timeout,
    /// The hypervisor stopped the guest on this interrupt vector.
    Stopped(u64),
}

impl GuestExpect {
    /// Whether a guest action's outcome `got` is what this expects: `Ok(None)` accepts any
    /// completion, everything else only itself.
    pub fn accepts(&self, got: &GuestExpect) -> bool {
        match (self, got) {
            (GuestExpect::Ok(None), GuestExpect::Ok(_)) => true,
            _ => self == got,
        }
    }
}

/// An expectation as written (its r4 value still an expression).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectExpr {
    /// The r3 code.
    pub code: i64,
    /// The value r4 must hold (H_GET_TCE only).
    pub r4: Option<Expr>,
    /// The path that must complete the call.
    pub via: Option<Mode>,
}

/// A resolved expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The r3 code.
    pub code: i64,
    /// The value r4 must hold.
    pub r4: Option<u64>,
    /// `Real`: real mode completed the call; `Virtual`: real mode declined with H_TOO_HARD
    /// and virtual mode completed it.
    pub via: Option<Mode>,
}

impl Expect {
    /// Whether a call's outcome is what this expects.
    pub fn accepts(&self, o: &Outcome) -> bool {
        self.code == o.code
            && self.r4.is_none_or(|v| v == o.r4)
            && self.via.is_none_or(|m| m == o.via)
    }
}

/// An expression: `TERM (OP TERM)*`, evaluated left to right. Expressions made only of
/// numbers are folded at parse time into a single number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    /// The first term.
    pub first: Term,
    /// The operators and terms that follow, in order.
    pub rest: Vec<(Op, Term)>,
}

impl Expr {
    /// The expression made of one number.
    pub const fn num(v: u64) -> Expr {
        Expr {
            first: Term::Num(v),
            rest: Vec::new(),
        }
    }

    /// Its value, if it is a single number.
    pub fn as_num(&self) -> Option<u64> {
        match (&self.first, self.rest.is_empty()) {
            (Term::Num(v), true) => Some(*v),
            _ => None,
        }
    }

    /// Its terms, first to last.
    fn terms(&self) -> impl Iterator<Item = &Term> {
        core::iter::once(&self.first).chain(self.rest.iter().map(|(_, t)| t))
    }

    /// Evaluates left to right, looking names up with `lookup`. Errors say which step went
    /// negative or overflowed.
    pub(crate) fn eval<E>(
        &self,
        mut lookup: impl FnMut(&str) -> Result<u64, E>,
        arith: impl Fn(String) -> E,
    ) -> Result<u64, E> {
        let mut term = |t: &Term| match t {
            Term::Num(v) => Ok(*v),
            Term::Name(n) => lookup(n),
        };
        let mut acc = term(&self.first)?;
        for (op, t) in &self.rest {
            let v = term(t)?;
            acc = match op {
                Op::Add => acc.checked_add(v).ok_or_else(|| {
                    arith(alloc::format!(
                        "`{self}` overflows 64 bits ({acc:#x} + {v:#x})"
                    ))
                })?,
                Op::Sub => acc.checked_sub(v).ok_or_else(|| {
                    arith(alloc::format!("`{self}` is negative ({acc:#x} - {v:#x})"))
                })?,
                Op::Or => acc | v,
            };
        }
        Ok(acc)
    }
}

impl From<Term> for Expr {
    fn from(t: Term) -> Expr {
        Expr {
            first: t,
            rest: Vec::new(),
        }
    }
}

/// An operator between two terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `|` (bitwise or)
    Or,
}

/// A term: a number or a name (a buffer, a list, or a predefined symbol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// A number.
    Num(u64),
    /// A buffer or list name (its guest physical address) or a predefined symbol.
    Name(String),
}
