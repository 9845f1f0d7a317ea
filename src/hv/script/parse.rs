//! From bytes to [`Script`]s: lines, statements, expressions, bundles.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::lex::{self, describe, is_number, number, quote, Tok};
use super::{
    abi, hcall_name, Buffer, Call, ExpectExpr, Expr, GuestExpectExpr, Item, List, Mode, Op, Script,
    ScriptError, Statement, StatementKind, Term, ACTIONS, CALLS, CODES, FAULTS, H_GET_TCE,
    KEYWORDS, MAX_ARGS, MAX_CALLS, MAX_DEFINITIONS, MAX_LIST_ENTRIES, OUTCOMES, PROGRAM, SPR_LIMIT,
    TOO_HARD,
};

/// The file name of the text before a bundle's first `#@file` line.
pub const PREAMBLE: &str = "-";

/// Parses one script. Stops at the first error; never panics, whatever the bytes.
pub fn parse(text: &[u8]) -> Result<Script, ScriptError> {
    let mut p = Parser::default();
    for (idx, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = idx + 1;
        let at = |message| ScriptError { line, message };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = core::str::from_utf8(raw).map_err(|e| {
            let bad = raw.get(e.valid_up_to()).copied().unwrap_or_default();
            at(format!(
                "line is not valid UTF-8 (byte {bad:#04x} at column {})",
                e.valid_up_to() + 1
            ))
        })?;
        let code = text.split('#').next().unwrap_or_default();
        let toks = lex::tokens(code).map_err(at)?;
        if !toks.is_empty() {
            p.line = line;
            p.statement(&toks)?;
        }
    }
    Ok(Script {
        statements: p.statements,
    })
}

/// Splits a bundle at its `#@file NAME` lines and parses each file; returns each file's name
/// and result, in order. The text before the first `#@file` line is the file `-`, listed only
/// if there is no `#@file` line or it has a statement or an error.
pub fn parse_bundle(bytes: &[u8]) -> Vec<(String, Result<Script, ScriptError>)> {
    let mut files: Vec<(Option<String>, &[u8])> = Vec::new();
    let mut name = None;
    let mut start = 0;
    let mut pos: usize = 0;
    for line in bytes.split(|&b| b == b'\n') {
        let line_start = pos;
        pos = pos.saturating_add(line.len() + 1);
        if let Some(next) = file_marker(line) {
            files.push((
                name.take(),
                bytes.get(start..line_start).unwrap_or_default(),
            ));
            name = Some(next);
            start = pos.min(bytes.len());
        }
    }
    files.push((name, bytes.get(start..).unwrap_or_default()));
    let bundled = files.len() > 1;
    let mut out = Vec::with_capacity(files.len());
    for (name, text) in files {
        let result = parse(text);
        match name {
            Some(name) => out.push((name, result)),
            None => {
                let empty = result.as_ref().is_ok_and(|s| s.statements.is_empty());
                if !bundled || !empty {
                    out.push((PREAMBLE.into(), result));
                }
            }
        }
    }
    out
}

/// The file name if `line` is a `#@file NAME` line.
fn file_marker(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"#@file")?;
    if !matches!(rest.first(), None | Some(b' ' | b'\t' | b'\r')) {
        return None;
    }
    Some(String::from_utf8_lossy(rest).trim().into())
}

/// The tokens of one statement and how far it has been read.
struct Cursor<'t, 'a> {
    toks: &'t [Tok<'a>],
    pos: usize,
}

impl<'a> Cursor<'_, 'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: Tok<'_>) -> bool {
        let hit = self.peek() == Some(tok);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn end(&self, expected: &str) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            found => Err(format!(
                "expected {expected}, found {}",
                describe(found.as_ref())
            )),
        }
    }

    /// Consumes `tok` or says what was found instead.
    fn expect(&mut self, tok: Tok<'_>, what: &str) -> Result<(), String> {
        match self.next() {
            Some(t) if t == tok => Ok(()),
            found => Err(format!(
                "expected {} {what}, found {}",
                describe(Some(&tok)),
                describe(found.as_ref())
            )),
        }
    }
}

/// What kind of reserved word `w` is, if it is one.
fn reserved(w: &str) -> Option<&'static str> {
    if KEYWORDS.contains(&w) {
        Some("the keyword")
    } else if CALLS.iter().any(|c| c.0 == w) {
        Some("the hypercall name")
    } else if w == TOO_HARD || CODES.iter().any(|c| c.0 == w) {
        Some("the result code")
    } else {
        None
    }
}

#[derive(Default)]
struct Parser {
    statements: Vec<Statement>,
    /// Buffer and list names, with the line defining each.
    defined: BTreeMap<String, usize>,
    /// Names used where no buffer or list of that name was defined yet (each a predefined
    /// symbol, or an error if defined later), with the first line using each.
    undefined_uses: BTreeMap<String, usize>,
    calls: usize,
    /// The line being parsed.
    line: usize,
}

impl Parser {
    fn statement(&mut self, toks: &[Tok<'_>]) -> Result<(), ScriptError> {
        let at = |line, message| ScriptError { line, message };
        let kind = self.statement_kind(toks).map_err(|m| at(self.line, m))?;
        match &kind {
            StatementKind::Buffer(Buffer { name, .. }) | StatementKind::List(List { name, .. }) => {
                // A name used before this line was taken for a predefined symbol: it was not.
                if let Some(&used) = self.undefined_uses.get(name) {
                    return Err(at(
                        used,
                        if used == self.line {
                            format!("{} is used in its own definition", quote(name))
                        } else {
                            format!(
                                "{} is used before its definition on line {}",
                                quote(name),
                                self.line
                            )
                        },
                    ));
                }
                // Usable from the next line on.
                self.defined.insert(name.clone(), self.line);
            }
            StatementKind::Call(_) => self.calls += 1,
        }
        self.statements.push(Statement {
            line: self.line,
            kind,
        });
        Ok(())
    }

    fn statement_kind(&mut self, toks: &[Tok<'_>]) -> Result<StatementKind, String> {
        let mut c = Cursor { toks, pos: 0 };
        match c.next() {
            Some(Tok::Word("buffer")) => self.buffer(&mut c),
            Some(Tok::Word("list")) => self.list(&mut c),
            Some(Tok::Word("guest")) => self.guest(&mut c),
            Some(Tok::Word(w)) if is_number(w) => {
                let nr = number(w)?;
                if abi::is_action(nr) {
                    return Err(format!(
                        "hypercall number {} has bit 63 set, which marks a guest action; write the action as `guest ACTION ...`",
                        quote(w)
                    ));
                }
                self.call(&mut c, nr)
            }
            Some(Tok::Word(w)) => match CALLS.iter().find(|k| k.0 == w) {
                Some(k) => self.call(&mut c, k.1),
                None => Err(unknown_statement(Some(&Tok::Word(w)))),
            },
            found => Err(unknown_statement(found.as_ref())),
        }
    }

    /// A name being defined: not reserved, not defined before.
    fn new_name(&self, c: &mut Cursor<'_, '_>, after: &str) -> Result<String, String> {
        match c.peek() {
            Some(Tok::Word(w)) if !is_number(w) => {
                if let Some(kind) = reserved(w) {
                    return Err(format!(
                        "expected a name after {after}, found {kind} {}",
                        quote(w)
                    ));
                }
                if let Some(prev) = self.defined.get(w) {
                    return Err(format!("{} is already defined on line {prev}", quote(w)));
                }
                if self.defined.len() >= MAX_DEFINITIONS {
                    return Err(format!(
                        "too many buffers and lists: a script defines at most {MAX_DEFINITIONS}"
                    ));
                }
                c.next();
                Ok(w.into())
            }
            found => Err(format!(
                "expected a name after {after}, found {}",
                describe(found.as_ref())
            )),
        }
    }

    /// `buffer NAME SIZE [unpinned]`, after `buffer`.
    fn buffer(&mut self, c: &mut Cursor<'_, '_>) -> Result<StatementKind, String> {
        let name = self.new_name(c, "`buffer`")?;
        let size = match c.next() {
            Some(Tok::Word(w)) if is_number(w) => number(w)?,
            found => {
                return Err(format!(
                    "expected a size after the buffer name, found {}",
                    describe(found.as_ref())
                ))
            }
        };
        if size == 0 {
            return Err("a buffer needs a size of at least 1 byte, found 0".into());
        }
        if let Some(Tok::Op(_)) = c.peek() {
            return Err(format!(
                "a buffer size is a single number, found {} after it",
                describe(c.peek().as_ref())
            ));
        }
        let pinned = !c.eat(Tok::Word("unpinned"));
        c.end(if pinned {
            "`unpinned` or end of line after the buffer size"
        } else {
            "end of line after `unpinned`"
        })?;
        Ok(StatementKind::Buffer(Buffer { name, size, pinned }))
    }

    /// `list NAME [unpinned] = ITEM, ...`, after `list`.
    fn list(&mut self, c: &mut Cursor<'_, '_>) -> Result<StatementKind, String> {
        let name = self.new_name(c, "`list`")?;
        let pinned = !c.eat(Tok::Word("unpinned"));
        c.expect(
            Tok::Eq,
            if pinned {
                "or `unpinned` after the list name"
            } else {
                "after `unpinned`"
            },
        )?;
        let mut items = Vec::new();
        // Entries counted so far, and whether some seq count is not known before resolution.
        let mut entries: u64 = 0;
        let mut all_known = true;
        loop {
            let item = if c.eat(Tok::Word("seq")) {
                c.expect(Tok::LParen, "after `seq`")?;
                let start = self.expr(c, "the start of `seq(START, COUNT, STEP)`")?;
                c.expect(Tok::Comma, "after the seq start")?;
                let count = self.expr(c, "the count of `seq(START, COUNT, STEP)`")?;
                c.expect(Tok::Comma, "after the seq count")?;
                let step = self.expr(c, "the step of `seq(START, COUNT, STEP)`")?;
                c.expect(Tok::RParen, "after the seq step")?;
                Item::Seq { start, count, step }
            } else {
                Item::Expr(self.expr(
                    c,
                    "a list item (an expression or `seq(START, COUNT, STEP)`)",
                )?)
            };
            let n = match &item {
                Item::Expr(_) => Some(1),
                Item::Seq { count, .. } => count.as_num(),
            };
            all_known &= n.is_some();
            entries = entries.saturating_add(n.unwrap_or(1));
            if entries > MAX_LIST_ENTRIES as u64 {
                return Err(too_many_entries(&name, entries));
            }
            items.push(item);
            match c.next() {
                None => break,
                Some(Tok::Comma) => {}
                found => {
                    return Err(format!(
                        "expected `,` or end of line after a list item, found {}",
                        describe(found.as_ref())
                    ))
                }
            }
        }
        if all_known && entries == 0 {
            return Err(no_entries(&name));
        }
        Ok(StatementKind::List(List {
            name,
            pinned,
            items,
        }))
    }

    /// Refuses one call (or guest action) more than [`MAX_CALLS`].
    fn count_call(&self) -> Result<(), String> {
        if self.calls >= MAX_CALLS {
            return Err(format!(
                "too many calls: a script makes at most {MAX_CALLS} (guest actions included)"
            ));
        }
        Ok(())
    }

    /// `CALL ARG ... [=> EXPECTATION]`, after the call's name or number.
    fn call(&mut self, c: &mut Cursor<'_, '_>, nr: u64) -> Result<StatementKind, String> {
        self.count_call()?;
        let mut args = Vec::new();
        while c.peek().is_some_and(|t| t != Tok::Arrow) {
            args.push(self.expr(c, "an argument (a number or name) or `=>`")?);
        }
        match CALLS.iter().find(|k| k.1 == nr) {
            // A call by number is not held to its name's arity: that is what numbers are for.
            Some((name, _, params)) if !is_number_call(c) && args.len() != params.len() => {
                return Err(format!(
                    "{name} takes {} arguments ({}), found {}",
                    params.len(),
                    params.join(" "),
                    args.len()
                ))
            }
            _ if args.len() > MAX_ARGS => {
                return Err(format!(
                    "a hypercall takes at most {MAX_ARGS} arguments (r4 to r11), found {}",
                    args.len()
                ))
            }
            _ => {}
        }
        let expect = if c.eat(Tok::Arrow) {
            Some(self.expectation(c, nr)?)
        } else {
            None
        };
        Ok(StatementKind::Call(Call {
            nr,
            args,
            expect,
            guest_expect: None,
        }))
    }

    /// `guest ACTION ARG ... [=> OUTCOME]`, after `guest`.
    fn guest(&mut self, c: &mut Cursor<'_, '_>) -> Result<StatementKind, String> {
        self.count_call()?;
        let (name, op, params) = match c.next() {
            Some(Tok::Word(w)) => match ACTIONS.iter().find(|a| a.0 == w) {
                Some(&a) => a,
                None => return Err(unknown_action(Some(&Tok::Word(w)))),
            },
            found => return Err(unknown_action(found.as_ref())),
        };
        let spr = op == abi::guest_op::SPR || op == abi::guest_op::MTSPR;
        let mut args = Vec::new();
        while c.peek().is_some_and(|t| t != Tok::Arrow) {
            if spr && args.is_empty() {
                args.push(Expr::num(spr_arg(c)?));
            } else {
                args.push(self.expr(c, "an argument (a number or name) or `=>`")?);
            }
        }
        let required = params.iter().filter(|p| !p.ends_with('?')).count();
        if !(required..=params.len()).contains(&args.len()) {
            let count = match (required, params.len()) {
                (0, 0) => {
                    return Err(format!(
                        "guest {name} takes no arguments, found {}",
                        args.len()
                    ))
                }
                (1, 1) => String::from("1 argument"),
                (r, n) if r == n => format!("{n} arguments"),
                (r, n) => format!("{r} or {n} arguments"),
            };
            let names: Vec<String> = params
                .iter()
                .map(|p| match p.strip_suffix('?') {
                    Some(p) => format!("[{p}]"),
                    None => String::from(*p),
                })
                .collect();
            return Err(format!(
                "guest {name} takes {count} ({}), found {}",
                names.join(" "),
                args.len()
            ));
        }
        // Optional arguments default to 0 (insn's r3).
        args.resize_with(params.len(), || Expr::num(0));
        let guest_expect = if c.eat(Tok::Arrow) {
            Some(self.outcome(c)?)
        } else {
            None
        };
        Ok(StatementKind::Call(Call {
            nr: abi::GUEST_ACTION | op,
            args,
            expect: None,
            guest_expect,
        }))
    }

    /// What follows `=>` on a guest action: `ok [VALUE]`, `VALUE`, `program`, `interrupt
    /// VECTOR`, `stopped timeout|FAULT`.
    fn outcome(&mut self, c: &mut Cursor<'_, '_>) -> Result<GuestExpectExpr, String> {
        const EXPECTED: &str =
            "a guest action outcome after `=>` (`ok`, `ok VALUE`, VALUE, `program`, `interrupt VECTOR`, `stopped timeout` or `stopped FAULT`)";
        let x = match c.peek() {
            Some(Tok::Word("ok")) => {
                c.next();
                match c.peek() {
                    None | Some(Tok::Word("via")) => GuestExpectExpr::Ok(None),
                    Some(_) => GuestExpectExpr::Ok(Some(
                        self.expr(c, "the value after `ok` (an expression) or end of line")?,
                    )),
                }
            }
            Some(Tok::Word("program")) => {
                c.next();
                GuestExpectExpr::Interrupt(Expr::num(PROGRAM))
            }
            Some(Tok::Word("interrupt")) => {
                c.next();
                GuestExpectExpr::Interrupt(
                    self.expr(c, "the vector after `interrupt` (an expression)")?,
                )
            }
            Some(Tok::Word("stopped")) => {
                c.next();
                let found = c.next();
                match found {
                    Some(Tok::Word("timeout")) => GuestExpectExpr::Timeout,
                    Some(Tok::Word(w)) if is_number(w) => GuestExpectExpr::Stopped(number(w)?),
                    _ => match FAULTS.iter().find(|f| found == Some(Tok::Word(f.0))) {
                        Some(f) => GuestExpectExpr::Stopped(f.1),
                        None => {
                            return Err(format!(
                                "expected `timeout`, a fault ({}) or a vector number after `stopped`, found {}",
                                fault_names(),
                                describe(found.as_ref())
                            ))
                        }
                    },
                }
            }
            Some(Tok::Word(w)) if w == TOO_HARD || CODES.iter().any(|k| k.0 == w) => {
                return Err(format!(
                    "{} is a hypercall result code, not a guest action's outcome: expected {EXPECTED}",
                    quote(w)
                ))
            }
            Some(Tok::Word("via")) => return Err(no_via()),
            Some(Tok::Word(_)) => GuestExpectExpr::Ok(Some(self.expr(c, EXPECTED)?)),
            found => {
                return Err(format!(
                    "expected {EXPECTED}, found {}",
                    describe(found.as_ref())
                ))
            }
        };
        if c.peek() == Some(Tok::Word("via")) {
            return Err(no_via());
        }
        c.end("end of line after the outcome")?;
        Ok(x)
    }

    /// What follows `=>`: `CODE [VALUE] [via real|virtual]`.
    fn expectation(&mut self, c: &mut Cursor<'_, '_>, nr: u64) -> Result<ExpectExpr, String> {
        const EXPECTED: &str =
            "a result code after `=>` (H_SUCCESS, H_HARDWARE, H_FUNCTION, H_PARAMETER, H_NO_MEM or an integer)";
        let code = match c.next() {
            Some(Tok::Word(TOO_HARD)) => return Err(too_hard(TOO_HARD)),
            Some(Tok::Word(w)) if is_number(w) => i64::try_from(number(w)?)
                .map_err(|_| format!("result code {} does not fit in 64 signed bits", quote(w)))?,
            Some(Tok::Op(Op::Sub)) => match c.next() {
                Some(Tok::Word(w)) if is_number(w) => {
                    0i64.checked_sub_unsigned(number(w)?).ok_or_else(|| {
                        format!(
                            "result code {} does not fit in 64 signed bits",
                            quote(&format!("-{w}"))
                        )
                    })?
                }
                found => {
                    return Err(format!(
                        "expected a number after `-`, found {}",
                        describe(found.as_ref())
                    ))
                }
            },
            Some(Tok::Word(w)) if OUTCOMES.contains(&w) => {
                return Err(format!(
                    "{} is a guest action's outcome, not a hypercall's: expected {EXPECTED}",
                    quote(w)
                ))
            }
            Some(Tok::Word(w)) => match CODES.iter().find(|k| k.0 == w) {
                Some(k) => k.1.code(),
                None => return Err(format!("expected {EXPECTED}, found {}", quote(w))),
            },
            found => {
                return Err(format!(
                    "expected {EXPECTED}, found {}",
                    describe(found.as_ref())
                ))
            }
        };
        if code == crate::mm::TooHard::CODE {
            return Err(too_hard(&format!("{code} (H_TOO_HARD)")));
        }
        let r4 = match c.peek() {
            None | Some(Tok::Word("via")) => None,
            Some(found) if nr != H_GET_TCE => {
                let name = hcall_name(nr).map_or_else(|| format!("hcall {nr:#x}"), String::from);
                return Err(format!(
                    "expected `via` or end of line after the result code, found {}: only H_GET_TCE returns a value to check, not {name}",
                    describe(Some(&found))
                ));
            }
            Some(_) => Some(self.expr(c, "the r4 value (an expression)")?),
        };
        let via = if c.eat(Tok::Word("via")) {
            match c.next() {
                Some(Tok::Word("real")) => Some(Mode::Real),
                Some(Tok::Word("virtual")) => Some(Mode::Virtual),
                found => {
                    return Err(format!(
                        "expected `real` or `virtual` after `via`, found {}",
                        describe(found.as_ref())
                    ))
                }
            }
        } else {
            None
        };
        c.end(if via.is_some() {
            "end of line after the expectation"
        } else {
            "`via` or end of line after the expectation"
        })?;
        Ok(ExpectExpr { code, r4, via })
    }

    /// `TERM (OP TERM)*`; folded to one number if it names nothing.
    fn expr(&mut self, c: &mut Cursor<'_, '_>, what: &str) -> Result<Expr, String> {
        let first = self.term(c, what)?;
        let mut rest = Vec::new();
        while let Some(Tok::Op(op)) = c.peek() {
            c.next();
            let after = format!("a number or name after {}", describe(Some(&Tok::Op(op))));
            rest.push((op, self.term(c, &after)?));
        }
        let e = Expr { first, rest };
        if e.rest.is_empty() || e.terms().any(|t| matches!(t, Term::Name(_))) {
            return Ok(e);
        }
        e.eval(|_| Ok(0), |m| m).map(Expr::num)
    }

    fn term(&mut self, c: &mut Cursor<'_, '_>, what: &str) -> Result<Term, String> {
        match c.peek() {
            Some(Tok::Word(w)) if is_number(w) => {
                c.next();
                Ok(Term::Num(number(w)?))
            }
            Some(Tok::Word(w)) => {
                if let Some(kind) = reserved(w) {
                    return Err(format!("expected {what}, found {kind} {}", quote(w)));
                }
                c.next();
                if !self.defined.contains_key(w) && !self.undefined_uses.contains_key(w) {
                    self.undefined_uses.insert(w.into(), self.line);
                }
                Ok(Term::Name(w.into()))
            }
            found => Err(format!(
                "expected {what}, found {}",
                describe(found.as_ref())
            )),
        }
    }
}

/// Whether the statement being parsed started with a number.
fn is_number_call(c: &Cursor<'_, '_>) -> bool {
    matches!(c.toks.first(), Some(Tok::Word(w)) if is_number(w))
}

/// An SPR: a name from [`abi::SPRS`] (any case) or a number below [`SPR_LIMIT`], alone.
fn spr_arg(c: &mut Cursor<'_, '_>) -> Result<u64, String> {
    let n = match c.next() {
        Some(Tok::Word(w)) if is_number(w) => {
            let n = number(w)?;
            if n >= SPR_LIMIT {
                return Err(format!(
                    "SPR number {} is out of range: SPRs are 0 to {}",
                    quote(w),
                    SPR_LIMIT - 1
                ));
            }
            n
        }
        Some(Tok::Word(w)) => abi::spr_number(w).ok_or_else(|| {
            let known: Vec<&str> = abi::SPRS.iter().map(|s| s.0).collect();
            format!(
                "unknown SPR {} (known: {}; or an SPR number below {SPR_LIMIT})",
                quote(w),
                known.join(", ")
            )
        })?,
        found => {
            return Err(format!(
                "expected an SPR (a name or a number below {SPR_LIMIT}), found {}",
                describe(found.as_ref())
            ))
        }
    };
    if let Some(op @ Tok::Op(_)) = c.peek() {
        return Err(format!(
            "an SPR is a name or a single number, found {} after it",
            describe(Some(&op))
        ));
    }
    Ok(n)
}

fn action_names() -> String {
    let names: Vec<&str> = ACTIONS.iter().map(|a| a.0).collect();
    names.join(", ")
}

fn fault_names() -> String {
    let names: Vec<&str> = FAULTS.iter().map(|f| f.0).collect();
    names.join(", ")
}

fn unknown_action(found: Option<&Tok<'_>>) -> String {
    let mut m = format!(
        "expected a guest action after `guest` ({}), found {}",
        action_names(),
        describe(found)
    );
    if let Some(Tok::Word(w)) = found {
        if let Some(a) = ACTIONS.iter().find(|a| a.0.eq_ignore_ascii_case(w)) {
            m.push_str(&format!(
                " (names are case-sensitive: did you mean `{}`?)",
                a.0
            ));
        }
    }
    m
}

fn no_via() -> String {
    String::from(
        "`via real|virtual` is for hypercalls only: a guest action does not go through the hypervisor's real or virtual mode",
    )
}

fn unknown_statement(found: Option<&Tok<'_>>) -> String {
    let mut m = format!(
        "expected a statement (`buffer`, `list`, `guest`, a hypercall name or number), found {}",
        describe(found)
    );
    if let Some(Tok::Word(w)) = found {
        let mut known = KEYWORDS.iter().copied().chain(CALLS.iter().map(|k| k.0));
        if let Some(k) = known.find(|k| k.eq_ignore_ascii_case(w)) {
            m.push_str(&format!(" (names are case-sensitive: did you mean `{k}`?)"));
        }
    }
    m
}

fn too_hard(what: &str) -> String {
    format!(
        "{what} is not a valid expectation: it is internal (real mode declining the call) and never reaches a guest; expect the code virtual mode returns, with `via virtual`"
    )
}

pub(super) fn too_many_entries(name: &str, entries: u64) -> String {
    let n = if entries == u64::MAX {
        String::from("more than 512")
    } else {
        format!("{entries}")
    };
    format!(
        "list {} has {n} entries; a list holds at most {MAX_LIST_ENTRIES} (one 4 KiB page)",
        quote(name)
    )
}

pub(super) fn no_entries(name: &str) -> String {
    format!(
        "list {} has no entries; a list holds 1 to {MAX_LIST_ENTRIES}",
        quote(name)
    )
}
