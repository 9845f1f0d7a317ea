//! The fuzz harness of the hypercall script parser (`fuzz/fuzz_targets/hcall_script.rs`,
//! replayed by `tests/fuzz_corpus.rs`).
//!
//! Any bytes: [`parse`] and [`parse_bundle`] never panic; every error names a line of its file
//! that exists and holds a statement (code before any `#`) or is not valid UTF-8, with a
//! message; [`parse_bundle`] equals parsing, one by one, the files a model of the `#@file`
//! rule splits the bytes into; a script that parses resolves (against the kernel's layout and
//! symbols) or fails naming a statement line, and what resolves lies inside its pools, aligned,
//! without overlap, with 1 to 512 entries per list and at most 8 arguments per call, one call
//! per call statement (guest actions included, in script order); a guest action (and only a
//! guest action) has `GUEST_ACTION` set, no hypercall expectation, its action's arguments, a
//! 32-bit `insn` word and an SPR below 1024, and a hypercall no guest expectation; every
//! result prints.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{
    abi, parse, parse_bundle, Layout, Pool, Script, ScriptError, StatementKind, ACTIONS, MAX_ARGS,
    MAX_LIST_ENTRIES, PAGE_SIZE, PREAMBLE, SPR_LIMIT,
};

/// The pools, alignment and symbols the kernel resolves scripts with (`kernel::guests`:
/// pinned 4..48 MiB, unpinned 48..64 MiB, buffers 64 KiB apart).
pub const KERNEL_LAYOUT: Layout = Layout {
    pinned: Pool {
        base: 4 << 20,
        size: 44 << 20,
    },
    unpinned: Pool {
        base: 48 << 20,
        size: 16 << 20,
    },
    align: 64 << 10,
};

/// The kernel's predefined symbols.
pub const KERNEL_SYMBOLS: [(&str, u64); 2] =
    [("liobn_4k", 0x8000_0001), ("liobn_64k", 0x8000_0002)];

/// Checks one input; `Err` says which property broke.
pub fn check(data: &[u8]) -> Result<(), String> {
    let whole = parse(data);
    check_file("parse", data, &whole)?;
    if let Ok(s) = &whole {
        check_resolution(data, s)?;
    }
    let got = parse_bundle(data);
    let files = split_model(data);
    let bundled = files.len() > 1;
    let mut want: Vec<(String, Result<Script, ScriptError>)> = Vec::new();
    for (name, text) in &files {
        let r = parse(text);
        check_file("parse_bundle", text, &r)?;
        match name {
            Some(n) => want.push((n.clone(), r)),
            None if !bundled || !r.as_ref().is_ok_and(|s| s.statements.is_empty()) => {
                want.push((PREAMBLE.into(), r))
            }
            None => {}
        }
    }
    if got != want {
        let names = |v: &[(String, Result<Script, ScriptError>)]| -> Vec<String> {
            v.iter().map(|(n, _)| n.clone()).collect()
        };
        return Err(format!(
            "parse_bundle gave files {:?}, the `#@file` rule says {:?} (or their results differ)",
            names(&got),
            names(&want)
        ));
    }
    Ok(())
}

/// Runs [`check`] and panics on a broken property: the fuzz target's body.
pub fn run_one(data: &[u8]) {
    if let Err(e) = check(data) {
        panic!("{e}");
    }
}

/// The lines of `text` as `parse` numbers them (1-based: index 0 is line 1).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n')
}

/// Whether `line` holds a statement as far as an error may concern it: not valid UTF-8, or
/// something other than spaces and tabs before any `#`.
fn statement_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match core::str::from_utf8(line) {
        Err(_) => true,
        Ok(t) => t
            .split('#')
            .next()
            .is_some_and(|code| code.bytes().any(|b| b != b' ' && b != b'\t')),
    }
}

/// An error's line exists in `text` and holds a statement; its message is not empty and
/// prints as `line N: message`.
fn check_error(what: &str, text: &[u8], e: &ScriptError) -> Result<(), String> {
    let line = e
        .line
        .checked_sub(1)
        .and_then(|i| lines(text).nth(i))
        .ok_or_else(|| {
            format!(
                "{what}: error `{e}` names line {}, the file has {}",
                e.line,
                lines(text).count()
            )
        })?;
    if !statement_line(line) {
        return Err(format!(
            "{what}: error `{e}` names line {}, which holds no statement: {:?}",
            e.line,
            String::from_utf8_lossy(line)
        ));
    }
    if e.message.is_empty() || format!("{e}") != format!("line {}: {}", e.line, e.message) {
        return Err(format!("{what}: error on line {} prints as `{e}`", e.line));
    }
    Ok(())
}

/// A parse result: an error passes [`check_error`]; a script's statements are in line order,
/// each on a statement line.
fn check_file(what: &str, text: &[u8], r: &Result<Script, ScriptError>) -> Result<(), String> {
    match r {
        Err(e) => check_error(what, text, e),
        Ok(s) => {
            let mut last = 0;
            for st in &s.statements {
                let line = st.line.checked_sub(1).and_then(|i| lines(text).nth(i));
                if st.line <= last || !line.is_some_and(statement_line) {
                    return Err(format!(
                        "{what}: a statement on line {} (after line {last}) is not on a statement line",
                        st.line
                    ));
                }
                last = st.line;
            }
            Ok(())
        }
    }
}

/// Resolves `s` the kernel's way and checks the result (see the module documentation).
fn check_resolution(text: &[u8], s: &Script) -> Result<(), String> {
    let l = KERNEL_LAYOUT;
    let res = match s.resolve(&l, &KERNEL_SYMBOLS) {
        Ok(res) => res,
        Err(e) => return check_error("resolve", text, &e),
    };
    let mut spans: Vec<(u64, u64, bool, usize)> = Vec::new();
    for b in &res.buffers {
        if b.gpa % l.align != 0 || b.size % PAGE_SIZE != 0 || b.size == 0 {
            return Err(format!(
                "buffer `{}` placed at {:#x} size {:#x}",
                b.name, b.gpa, b.size
            ));
        }
        spans.push((b.gpa, b.size, b.pinned, b.line));
    }
    for li in &res.lists {
        if li.gpa % PAGE_SIZE != 0 || !(1..=MAX_LIST_ENTRIES).contains(&li.entries.len()) {
            return Err(format!(
                "list `{}` at {:#x} with {} entries",
                li.name,
                li.gpa,
                li.entries.len()
            ));
        }
        spans.push((li.gpa, PAGE_SIZE, li.pinned, li.line));
    }
    for &(gpa, size, pinned, line) in &spans {
        let pool = if pinned { l.pinned } else { l.unpinned };
        if gpa < pool.base || gpa - pool.base > pool.size.saturating_sub(size) {
            return Err(format!("line {line}: {gpa:#x}+{size:#x} outside {pool:?}"));
        }
    }
    spans.sort_unstable_by_key(|&(gpa, _, pinned, _)| (pinned, gpa));
    for w in spans.windows(2) {
        if w[0].2 == w[1].2 && w[0].0 + w[0].1 > w[1].0 {
            return Err(format!("lines {} and {} overlap", w[0].3, w[1].3));
        }
    }
    let calls: Vec<(usize, u64)> = s
        .statements
        .iter()
        .filter_map(|st| match &st.kind {
            StatementKind::Call(c) => Some((st.line, c.nr)),
            _ => None,
        })
        .collect();
    let resolved: Vec<(usize, u64)> = res.calls.iter().map(|c| (c.line, c.nr)).collect();
    if resolved != calls || res.calls.iter().any(|c| c.args.len() > MAX_ARGS) {
        return Err(format!(
            "{} calls resolved from {} statements (or not in their order)",
            res.calls.len(),
            calls.len()
        ));
    }
    for c in &res.calls {
        if abi::is_action(c.nr) {
            let op = c.nr & !abi::GUEST_ACTION;
            let arity = ACTIONS.iter().find(|a| a.1 == op).map(|a| a.2.len());
            let spr = op == abi::guest_op::SPR || op == abi::guest_op::MTSPR;
            let first = c.args.first().copied().unwrap_or_default();
            if c.expect.is_some()
                || arity != Some(c.args.len())
                || (op == abi::guest_op::INSN && first > u64::from(u32::MAX))
                || (spr && first >= SPR_LIMIT)
            {
                return Err(format!("line {}: guest action {c:?}", c.line));
            }
        } else if c.guest_expect.is_some() {
            return Err(format!("line {}: hypercall {c:?}", c.line));
        }
        let _ = format!("{c}");
        if let Some(x) = &c.expect {
            let _ = format!("{x}");
        }
        if let Some(x) = &c.guest_expect {
            let _ = format!("{x}");
        }
    }
    Ok(())
}

/// The `#@file` rule, written again: a line starting with `#@file` followed by a space, a tab,
/// a carriage return or nothing starts a new file named by the rest of the line (lossy UTF-8,
/// trimmed); the text before the first such line is a file without a name.
fn split_model(data: &[u8]) -> Vec<(Option<String>, Vec<u8>)> {
    let mut files: Vec<(Option<String>, Vec<u8>)> = alloc::vec![(None, Vec::new())];
    for line in lines(data) {
        let marker = line
            .strip_prefix(b"#@file")
            .filter(|rest| matches!(rest.first(), None | Some(b' ' | b'\t' | b'\r')));
        match marker {
            Some(rest) => files.push((
                Some(String::from_utf8_lossy(rest).trim().into()),
                Vec::new(),
            )),
            None => {
                let text = &mut files.last_mut().expect("one file at least").1;
                text.extend_from_slice(line);
                text.push(b'\n');
            }
        }
    }
    files
}
