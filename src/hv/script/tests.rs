//! Host tests of the script parser and resolver.

use super::*;
use alloc::string::ToString;
use alloc::vec;

const SYMS: &[(&str, u64)] = &[("liobn_4k", 0x8000_0001), ("liobn_64k", 0x8000_0002)];

fn ok(src: &str) -> Script {
    parse(src.as_bytes()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"))
}

/// Asserts `src` fails to parse on `line` with a message containing `fragment`.
#[track_caller]
fn fails(src: &str, line: usize, fragment: &str) -> ScriptError {
    let e = match parse(src.as_bytes()) {
        Ok(s) => panic!("parsed, expected an error: {s:?}\nin:\n{src}"),
        Err(e) => e,
    };
    assert_eq!(e.line, line, "wrong line: {e}");
    assert!(e.message.contains(fragment), "`{e}` lacks `{fragment}`");
    e
}

fn layout() -> Layout {
    Layout {
        pinned: Pool {
            base: 0x100_0000,
            size: 0x10_0000,
        },
        unpinned: Pool {
            base: 0x1000_0000,
            size: 0x2_0000,
        },
        align: 0x1_0000,
    }
}

fn run(src: &str) -> Resolved {
    ok(src)
        .resolve(&layout(), SYMS)
        .unwrap_or_else(|e| panic!("{e}\nin:\n{src}"))
}

#[track_caller]
fn resolve_fails(src: &str, line: usize, fragment: &str) -> ScriptError {
    let e = match ok(src).resolve(&layout(), SYMS) {
        Ok(r) => panic!("resolved, expected an error: {r:?}"),
        Err(e) => e,
    };
    assert_eq!(e.line, line, "wrong line: {e}");
    assert!(e.message.contains(fragment), "`{e}` lacks `{fragment}`");
    e
}

fn name(n: &str) -> Term {
    Term::Name(n.into())
}

fn call_args(src: &str) -> Vec<u64> {
    run(src).calls.pop().expect("a call").args
}

// ---- statements ----

#[test]
fn buffer_statement() {
    let s = ok("buffer a 100\nbuffer b_2 64K unpinned\n");
    assert_eq!(
        s.statements,
        vec![
            Statement {
                line: 1,
                kind: StatementKind::Buffer(Buffer {
                    name: "a".into(),
                    size: 100,
                    pinned: true
                })
            },
            Statement {
                line: 2,
                kind: StatementKind::Buffer(Buffer {
                    name: "b_2".into(),
                    size: 0x1_0000,
                    pinned: false
                })
            },
        ]
    );
}

#[test]
fn list_statement() {
    let s = ok("buffer b 4K\nlist l unpinned = b|3, 7, seq(b+0x1000, 4, 0x1000)");
    let StatementKind::List(l) = &s.statements[1].kind else {
        panic!("not a list: {s:?}")
    };
    assert_eq!(l.name, "l");
    assert!(!l.pinned);
    assert_eq!(
        l.items,
        vec![
            Item::Expr(Expr {
                first: name("b"),
                rest: vec![(Op::Or, Term::Num(3))]
            }),
            Item::Expr(Expr::num(7)),
            Item::Seq {
                start: Expr {
                    first: name("b"),
                    rest: vec![(Op::Add, Term::Num(0x1000))]
                },
                count: Expr::num(4),
                step: Expr::num(0x1000),
            },
        ]
    );
    let StatementKind::List(l) = &ok("list p = 1").statements[0].kind else {
        panic!()
    };
    assert!(l.pinned);
}

#[test]
fn call_statements() {
    let s = ok("H_PUT_TCE liobn_4k 0x1000 0x200003 => H_SUCCESS via real\n\
                H_GET_TCE liobn_4k 0x1000 => H_SUCCESS 0x200003\n\
                H_STUFF_TCE liobn_4k 0 0 16 => H_PARAMETER via virtual\n\
                H_PUT_TCE_INDIRECT liobn_4k 0 0x5000 8\n\
                H_PUT_TERM_CHAR 0 1 0x41 0 => 0\n\
                0x1234 => H_FUNCTION\n\
                7 1 2 3 4 5 6 7 8 => -9\n");
    let calls: Vec<(usize, &Call)> = s.calls().collect();
    assert_eq!(calls.len(), 7);
    assert_eq!(
        *calls[0].1,
        Call {
            nr: 0x20,
            args: vec![
                name("liobn_4k").into(),
                Expr::num(0x1000),
                Expr::num(0x200003)
            ],
            expect: Some(ExpectExpr {
                code: 0,
                r4: None,
                via: Some(Mode::Real)
            }),
            guest_expect: None,
        }
    );
    assert_eq!(
        calls[1].1.expect,
        Some(ExpectExpr {
            code: 0,
            r4: Some(Expr::num(0x200003)),
            via: None
        })
    );
    assert_eq!(calls[1].1.nr, 0x1C);
    assert_eq!(calls[2].1.nr, 0x138);
    assert_eq!(calls[2].1.expect.as_ref().unwrap().code, -4);
    assert_eq!(calls[2].1.expect.as_ref().unwrap().via, Some(Mode::Virtual));
    assert_eq!((calls[3].1.nr, calls[3].1.expect.as_ref()), (0x13C, None));
    assert_eq!((calls[4].0, calls[4].1.nr), (5, 0x58));
    assert_eq!((calls[5].1.nr, calls[5].1.args.len()), (0x1234, 0));
    assert_eq!(calls[5].1.expect.as_ref().unwrap().code, -2);
    assert_eq!((calls[6].1.nr, calls[6].1.args.len()), (7, 8));
    assert_eq!(calls[6].1.expect.as_ref().unwrap().code, -9);
    // Every code name, and integers either side of zero.
    for (src, code) in [
        ("H_SUCCESS", 0),
        ("H_HARDWARE", -1),
        ("H_FUNCTION", -2),
        ("H_PARAMETER", -4),
        ("H_NO_MEM", -9),
        ("-4", -4),
        ("- 0x10", -16),
        ("42", 42),
        ("-0x8000000000000000", i64::MIN),
        ("0x7fffffffffffffff", i64::MAX),
    ] {
        let s = ok(&format!("0x99 => {src}"));
        assert_eq!(
            s.calls().next().unwrap().1.expect.as_ref().unwrap().code,
            code
        );
    }
}

#[test]
fn a_numbered_call_is_not_held_to_its_names_arity() {
    let s = ok("0x20 1\n0x1C");
    let nrs: Vec<(u64, usize)> = s.calls().map(|(_, c)| (c.nr, c.args.len())).collect();
    assert_eq!(nrs, vec![(0x20, 1), (0x1C, 0)]);
    // ... but it may expect an r4 value if it is H_GET_TCE's number.
    let s = ok("0x1c 1 2 => H_SUCCESS 5");
    assert_eq!(
        s.calls().next().unwrap().1.expect.as_ref().unwrap().r4,
        Some(Expr::num(5))
    );
}

#[test]
fn comments_blank_lines_tabs_and_crlf() {
    let s = ok("# header\n\n   \t\nbuffer\ta\t4K # trailing\r\n#@file not-in-a-bundle\n  H_GET_TCE 1 2#x\r\n");
    assert_eq!(s.statements.len(), 2);
    assert_eq!(s.statements[0].line, 4);
    assert_eq!(s.statements[1].line, 6);
    assert_eq!(ok("").statements, vec![]);
    assert_eq!(ok("# only\n\n").statements, vec![]);
}

// ---- numbers and expressions ----

#[test]
fn numbers() {
    for (src, v) in [
        ("0", 0),
        ("1234", 1234),
        ("1_000_000", 1_000_000),
        ("0x1F", 0x1f),
        ("0xdead_beef", 0xdead_beef),
        ("0x_10", 0x10),
        ("4K", 4096),
        ("64K", 0x1_0000),
        ("2M", 0x20_0000),
        ("3G", 0xC000_0000),
        ("0x10K", 0x4000),
        ("1_K", 1024),
        ("17179869183G", 0xFFFF_FFFF_C000_0000),
        ("18446744073709551615", u64::MAX),
        ("0xffff_ffff_ffff_ffff", u64::MAX),
    ] {
        assert_eq!(call_args(&format!("0x99 {src}")), vec![v], "{src}");
    }
}

#[test]
fn bad_numbers() {
    fails(
        "0x99 18446744073709551616",
        1,
        "`18446744073709551616` does not fit in 64 bits",
    );
    fails("0x99 0x1_0000_0000_0000_0000", 1, "does not fit in 64 bits");
    fails(
        "0x99 17179869184G",
        1,
        "`17179869184G` does not fit in 64 bits",
    );
    fails("0x99 0x", 1, "invalid number `0x`: no digits");
    fails("0x99 0xK", 1, "invalid number `0xK`: no digits");
    fails(
        "\n0x99 12ab",
        2,
        "invalid number `12ab`: `a` is not a decimal digit",
    );
    fails("0x99 0xfg", 1, "`g` is not a hex digit");
    fails("0x99 4k", 1, "`k` is not a decimal digit");
    fails("0x99 0X10", 1, "`X` is not a decimal digit");
    fails("buffer b 0x", 1, "no digits");
    fails("0x1_0000_0000_0000_0000 1", 1, "does not fit in 64 bits");
}

#[test]
fn arithmetic_left_to_right() {
    assert_eq!(call_args("0x99 10-4+2"), vec![8]);
    assert_eq!(call_args("0x99 1|2+1"), vec![4]); // (1|2)+1, no precedence
    assert_eq!(call_args("0x99 1+2|1"), vec![3]);
    assert_eq!(call_args("0x99 0x1000 | 3   4K+4K"), vec![0x1003, 0x2000]);
    assert_eq!(
        call_args("0x99 5-5 0xffffffffffffffff-1+1"),
        vec![0, u64::MAX]
    );
    // Constant expressions are folded at parse time; named ones are kept.
    let s = ok("0x99 1+2 liobn_4k+1");
    let (_, c) = s.calls().next().unwrap();
    assert_eq!(c.args[0], Expr::num(3));
    assert_eq!(
        c.args[1],
        Expr {
            first: name("liobn_4k"),
            rest: vec![(Op::Add, Term::Num(1))]
        }
    );
    assert_eq!(call_args("0x99 liobn_4k|0x10-1"), vec![0x8000_0010]);
}

#[test]
fn arithmetic_errors() {
    fails("0x99 1-2", 1, "`1-2` is negative (0x1 - 0x2)");
    fails(
        "0x99 0xffffffffffffffff+1",
        1,
        "overflows 64 bits (0xffffffffffffffff + 0x1)",
    );
    fails(
        "0x99 5 3+",
        1,
        "expected a number or name after `+`, found end of line",
    );
    fails(
        "0x99 3||1",
        1,
        "expected a number or name after `|`, found `|`",
    );
    fails(
        "0x99 -1",
        1,
        "expected an argument (a number or name) or `=>`, found `-`",
    );
    resolve_fails(
        "buffer b 4K\n\n0x99 b-0x2000000",
        3,
        "`b-0x2000000` is negative (0x1000000 - 0x2000000)",
    );
    resolve_fails(
        "0x99 liobn_4k+0xffffffffffffffff",
        1,
        "`liobn_4k+0xffffffffffffffff` overflows 64 bits",
    );
}

#[test]
fn seq_expands() {
    let r = run("buffer b 64K\nlist l = 1, seq(b|3, 4, 0x1000), seq(9, 0, 1), 2\nlist one = seq(5, 1, 0xffffffffffffffff)");
    assert_eq!(
        r.lists[0].entries,
        vec![1, 0x100_0003, 0x100_1003, 0x100_2003, 0x100_3003, 2]
    );
    assert_eq!(r.lists[1].entries, vec![5]);
    let r = run("list l = seq(0, 512, 1)");
    assert_eq!(r.lists[0].entries.len(), 512);
    assert_eq!(r.lists[0].entries[511], 511);
    let r = run("list l = seq(0xffffffffffffffff-2, 3, 1)");
    assert_eq!(
        r.lists[0].entries,
        vec![u64::MAX - 2, u64::MAX - 1, u64::MAX]
    );
}

#[test]
fn seq_errors() {
    fails(
        "list l = seq 1, 2, 3)",
        1,
        "expected `(` after `seq`, found `1`",
    );
    fails(
        "list l = seq(1 2, 3)",
        1,
        "expected `,` after the seq start, found `2`",
    );
    fails(
        "list l = seq(1, 2 3)",
        1,
        "expected `,` after the seq count, found `3`",
    );
    fails(
        "list l = seq(1, 2, 3",
        1,
        "expected `)` after the seq step, found end of line",
    );
    fails(
        "list l = seq(, 2, 3)",
        1,
        "expected the start of `seq(START, COUNT, STEP)`, found `,`",
    );
    fails(
        "list l = seq(0, 513, 1)",
        1,
        "list `l` has 513 entries; a list holds at most 512",
    );
    fails("list l = 1, seq(0, 512, 1)", 1, "has 513 entries");
    fails(
        "list l = seq(0, 0xffffffffffffffff, 1), 1",
        1,
        "has more than 512 entries",
    );
    fails(
        "list l = seq(1, 0, 1)",
        1,
        "list `l` has no entries; a list holds 1 to 512",
    );
    fails("0x99 seq(1, 2, 3)", 1, "found the keyword `seq`");
    resolve_fails(
        "\nlist l = seq(0, liobn_4k, 1)",
        2,
        "list `l` has 2147483649 entries",
    );
    resolve_fails(
        "list l = seq(0, liobn_4k-0x80000001, 1)",
        1,
        "list `l` has no entries",
    );
    resolve_fails(
        "list l = seq(0xffffffffffffffff, liobn_4k-0x80000001+2, 1)",
        1,
        "`seq(0xffffffffffffffff, liobn_4k-0x80000001+2, 1)` overflows 64 bits: its last entry would be 0xffffffffffffffff + 0x1 * 0x1",
    );
    resolve_fails(
        "list l = seq(0, 500, 0), seq(0, liobn_4k-0x80000001+13, 0)",
        1,
        "has 513 entries",
    );
}

// ---- parse errors ----

#[test]
fn unknown_statements() {
    fails(
        "\n\nfoo 1 2",
        3,
        "expected a statement (`buffer`, `list`, `guest`, a hypercall name or number), found `foo`",
    );
    fails("Buffer a 1", 1, "did you mean `buffer`?");
    fails("Guest spin", 1, "did you mean `guest`?");
    fails("h_put_tce 1 2 3", 1, "did you mean `H_PUT_TCE`?");
    fails("= 1", 1, "found `=`");
    fails("H_SUCCESS", 1, "found `H_SUCCESS`");
}

#[test]
fn bad_characters() {
    fails("0x99 1;2", 1, "unexpected character `;`");
    fails("\n0x99 \u{7}", 2, "unexpected character U+0007");
    fails("0x99 caf\u{e9}", 1, "unexpected character `\u{e9}`");
    fails("0x99 1 > 2", 1, "unexpected character `>`");
    fails("0x99 1\r2", 1, "unexpected character U+000D");
    // A comment may hold anything UTF-8.
    ok("0x99 # caf\u{e9}; > \u{7}");
}

#[test]
fn non_utf8_lines() {
    let e = parse(b"buffer a 4K\n0x99 \xff\xfe\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(e.message, "line is not valid UTF-8 (byte 0xff at column 6)");
    // Even in a comment.
    let e = parse(b"\n\n# caf\xe9\n").unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("byte 0xe9 at column 6"), "{e}");
}

#[test]
fn buffer_errors() {
    fails(
        "buffer",
        1,
        "expected a name after `buffer`, found end of line",
    );
    fails(
        "buffer 12 4K",
        1,
        "expected a name after `buffer`, found `12`",
    );
    fails("buffer list 4K", 1, "found the keyword `list`");
    fails(
        "buffer H_PUT_TCE 4K",
        1,
        "found the hypercall name `H_PUT_TCE`",
    );
    fails(
        "buffer H_TOO_HARD 4K",
        1,
        "found the result code `H_TOO_HARD`",
    );
    fails("buffer via 4K", 1, "found the keyword `via`");
    fails(
        "\n\nbuffer a",
        3,
        "expected a size after the buffer name, found end of line",
    );
    fails(
        "buffer a b",
        1,
        "expected a size after the buffer name, found `b`",
    );
    fails("buffer a 0", 1, "at least 1 byte, found 0");
    fails(
        "buffer a 4K+1",
        1,
        "a buffer size is a single number, found `+` after it",
    );
    fails(
        "buffer a 4K pinned",
        1,
        "expected `unpinned` or end of line after the buffer size, found `pinned`",
    );
    fails(
        "buffer a 4K unpinned 2",
        1,
        "expected end of line after `unpinned`, found `2`",
    );
}

#[test]
fn list_errors() {
    fails("list", 1, "expected a name after `list`, found end of line");
    fails(
        "list l 1, 2",
        1,
        "expected `=` or `unpinned` after the list name, found `1`",
    );
    fails(
        "list l unpinned 1",
        1,
        "expected `=` after `unpinned`, found `1`",
    );
    fails(
        "list l =",
        1,
        "expected a list item (an expression or `seq(START, COUNT, STEP)`), found end of line",
    );
    fails("list l = 1,", 1, "found end of line");
    fails("list l = 1,,2", 1, "found `,`");
    fails(
        "list l = 1 2",
        1,
        "expected `,` or end of line after a list item, found `2`",
    );
    fails("list l = 1 => H_SUCCESS", 1, "found `=>`");
    let many = (0..513)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    fails(
        &format!("\nlist l = {many}"),
        2,
        "list `l` has 513 entries; a list holds at most 512 (one 4 KiB page)",
    );
    let full = (0..512)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(run(&format!("list l = {full}")).lists[0].entries[511], 511);
}

#[test]
fn redefinition_names_both_lines() {
    fails(
        "buffer a 4K\n\nbuffer a 8K",
        3,
        "`a` is already defined on line 1",
    );
    fails(
        "buffer a 4K\nlist a = 1",
        2,
        "`a` is already defined on line 1",
    );
    fails(
        "list l = 1\n0x99\nbuffer l 1",
        3,
        "`l` is already defined on line 1",
    );
}

#[test]
fn names_are_used_only_after_their_definition() {
    fails(
        "0x99 1\nH_PUT_TCE 1 0 b|3\nbuffer b 4K",
        2,
        "`b` is used before its definition on line 3",
    );
    fails("list l = 1, l", 1, "`l` is used in its own definition");
    fails(
        "list l = seq(b, 1, 1)\nlist b = 1",
        1,
        "`b` is used before its definition on line 2",
    );
    // Found at the definition: an error between the use and the definition comes first.
    fails("0x99 b\n0x99 b\nbogus\nbuffer b 1", 3, "found `bogus`");
    fails(
        "0x99 b\n0x99 b\nbuffer b 1\nbogus",
        1,
        "`b` is used before its definition on line 3",
    );
}

#[test]
fn arity() {
    let e = fails("buffer b 4K\n\n\nH_PUT_TCE liobn_4k 0", 4, "");
    assert_eq!(
        e.to_string(),
        "line 4: H_PUT_TCE takes 3 arguments (liobn ioba tce), found 2"
    );
    fails(
        "H_PUT_TCE 1 2 3 4",
        1,
        "H_PUT_TCE takes 3 arguments (liobn ioba tce), found 4",
    );
    fails(
        "H_GET_TCE 1",
        1,
        "H_GET_TCE takes 2 arguments (liobn ioba), found 1",
    );
    fails(
        "H_STUFF_TCE 1 2 3",
        1,
        "H_STUFF_TCE takes 4 arguments (liobn ioba value count), found 3",
    );
    fails(
        "H_PUT_TCE_INDIRECT 1 2 3 => H_SUCCESS",
        1,
        "H_PUT_TCE_INDIRECT takes 4 arguments (liobn ioba list count), found 3",
    );
    fails(
        "H_PUT_TERM_CHAR",
        1,
        "H_PUT_TERM_CHAR takes 4 arguments (termno len chars_hi chars_lo), found 0",
    );
    fails(
        "0x99 1 2 3 4 5 6 7 8 9",
        1,
        "a hypercall takes at most 8 arguments (r4 to r11), found 9",
    );
    fails(
        "H_PUT_TCE 1 2 via",
        1,
        "expected an argument (a number or name) or `=>`, found the keyword `via`",
    );
    fails(
        "H_PUT_TCE 1 2 H_SUCCESS",
        1,
        "found the result code `H_SUCCESS`",
    );
    fails("0x99 (1)", 1, "found `(`");
}

#[test]
fn expectation_errors() {
    fails("0x99 =>", 1, "expected a result code after `=>` (H_SUCCESS, H_HARDWARE, H_FUNCTION, H_PARAMETER, H_NO_MEM or an integer), found end of line");
    fails("0x99 => H_BUSY", 1, "found `H_BUSY`");
    fails("0x99 => via real", 1, "found `via`");
    fails(
        "0x99 => H_TOO_HARD",
        1,
        "H_TOO_HARD is not a valid expectation: it is internal",
    );
    fails(
        "0x99 => 9999",
        1,
        "9999 (H_TOO_HARD) is not a valid expectation",
    );
    fails(
        "0x99 => -",
        1,
        "expected a number after `-`, found end of line",
    );
    fails("0x99 => -x", 1, "expected a number after `-`, found `x`");
    fails(
        "0x99 => 0x8000000000000000",
        1,
        "result code `0x8000000000000000` does not fit in 64 signed bits",
    );
    fails(
        "0x99 => -0x8000000000000001",
        1,
        "result code `-0x8000000000000001` does not fit in 64 signed bits",
    );
    fails(
        "H_PUT_TCE 1 2 3 => H_SUCCESS 3",
        1,
        "found `3`: only H_GET_TCE returns a value to check, not H_PUT_TCE",
    );
    fails("0x99 => H_SUCCESS 3", 1, "not hcall 0x99");
    fails(
        "H_GET_TCE 1 2 => H_SUCCESS via",
        1,
        "expected `real` or `virtual` after `via`, found end of line",
    );
    fails("H_GET_TCE 1 2 => H_SUCCESS via Real", 1, "found `Real`");
    fails(
        "H_GET_TCE 1 2 => H_SUCCESS 3 via real 4",
        1,
        "expected end of line after the expectation, found `4`",
    );
    fails(
        "H_GET_TCE 1 2 => H_SUCCESS 3 4",
        1,
        "expected `via` or end of line after the expectation, found `4`",
    );
    fails(
        "H_GET_TCE 1 2 => H_SUCCESS => 4",
        1,
        "expected the r4 value (an expression), found `=>`",
    );
    fails(
        "H_GET_TCE 1 2 => H_SUCCESS 3+",
        1,
        "after `+`, found end of line",
    );
}

#[test]
fn caps() {
    let calls = "0x99\n".repeat(MAX_CALLS);
    assert_eq!(ok(&calls).calls().count(), MAX_CALLS);
    fails(
        &format!("{calls}buffer b 4K\n0x99\n"),
        MAX_CALLS + 2,
        "too many calls: a script makes at most 4096",
    );
    let defs: String = (0..MAX_DEFINITIONS)
        .map(|i| format!("list l{i} = {i}\n"))
        .collect();
    assert_eq!(ok(&defs).statements.len(), MAX_DEFINITIONS);
    fails(
        &format!("{defs}buffer x 1\n"),
        MAX_DEFINITIONS + 1,
        "a script defines at most 1024",
    );
    // Long tokens are shortened when quoted.
    let long = "x".repeat(100);
    let e = fails(
        &format!("{long} 1"),
        1,
        "found `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...`",
    );
    assert!(e.message.len() < 160, "{e}");
}

// ---- bundles ----

#[test]
fn bundle_files_restart_line_numbers() {
    let b = b"# preamble comment\n\
              #@file first.hcs\n\
              buffer b 4K\n\
              H_PUT_TCE liobn_4k 0 b\n\
              #@file\tsecond.hcs  \n\
              buffer b 4K\n\
              \n\
              H_GET_TCE 1\n\
              #@filenot-a-marker\n\
              #@file third\r\n\
              0x99 \xff\n\
              #@file empty";
    let files = parse_bundle(b);
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["first.hcs", "second.hcs", "third", "empty"]);
    let first = files[0].1.as_ref().unwrap();
    assert_eq!(first.statements.len(), 2);
    assert_eq!((first.statements[0].line, first.statements[1].line), (1, 2));
    // Names are per file: `b` again is not a redefinition.
    let e = files[1].1.as_ref().unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: H_GET_TCE takes 2 arguments (liobn ioba), found 1"
    );
    let e = files[2].1.as_ref().unwrap_err();
    assert_eq!((e.line, e.message.contains("not valid UTF-8")), (1, true));
    assert_eq!(files[3].1, Ok(Script::default()));
}

#[test]
fn bundle_preamble() {
    // No marker: the whole input is `-`, even empty.
    assert_eq!(
        parse_bundle(b""),
        vec![(String::from("-"), Ok(Script::default()))]
    );
    let files = parse_bundle(b"\n0x99\n");
    assert_eq!(files.len(), 1);
    assert_eq!(
        (
            files[0].0.as_str(),
            files[0].1.as_ref().unwrap().statements[0].line
        ),
        ("-", 2)
    );
    // A preamble with a statement or an error is reported, one with only comments is not.
    let files = parse_bundle(b"0x99\n#@file a\n0x98\n");
    assert_eq!(
        files.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["-", "a"]
    );
    let files = parse_bundle(b"bogus\n#@file a\n");
    assert_eq!(
        (files[0].0.as_str(), files[0].1.as_ref().unwrap_err().line),
        ("-", 1)
    );
    let files = parse_bundle(b"# hello\n\n#@file a\n0x98\n");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "a");
    // A file name that is not UTF-8 is shown lossily; names from one file are unknown in the next.
    let files = parse_bundle(b"#@file \xffx\nbuffer b 4K\n#@file y\n0x99 b\n");
    assert_eq!(files[0].0, "\u{fffd}x");
    let e = files[1]
        .1
        .as_ref()
        .unwrap()
        .resolve(&layout(), &[])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1: unknown name `b` (nothing is defined)"
    );
}

// ---- resolution ----

const EXAMPLE: &str = "\
buffer buf 64K
buffer small 100
buffer far 4K unpinned
list tl = buf|3, seq(buf+0x1000|3, 3, 0x1000), far|1
list ul unpinned = 7
buffer after 4K
H_PUT_TCE liobn_4k 0 buf|3 => H_SUCCESS via real
H_GET_TCE liobn_4k 0 => H_SUCCESS buf|3
H_PUT_TCE_INDIRECT liobn_4k 0x10000 tl 5 => H_SUCCESS via virtual
H_STUFF_TCE liobn_64k 0 0 32 => -4
0x1234 1 2 => H_FUNCTION
H_PUT_TERM_CHAR 0 2 0x4142000000000000 0
";

#[test]
fn resolves_placement_and_values() {
    let r = run(EXAMPLE);
    let bufs: Vec<(usize, &str, u64, u64, bool)> = r
        .buffers
        .iter()
        .map(|b| (b.line, b.name.as_str(), b.gpa, b.size, b.pinned))
        .collect();
    assert_eq!(
        bufs,
        vec![
            (1, "buf", 0x100_0000, 0x1_0000, true),
            (2, "small", 0x101_0000, 0x1000, true), // 64K-aligned, size rounded to 4K
            (3, "far", 0x1000_0000, 0x1000, false),
            (6, "after", 0x102_0000, 0x1000, true), // after the list page, 64K-aligned again
        ]
    );
    assert_eq!(r.lists.len(), 2);
    let tl = &r.lists[0];
    assert_eq!(
        (tl.line, tl.name.as_str(), tl.gpa, tl.pinned),
        (4, "tl", 0x101_1000, true)
    );
    assert_eq!(
        tl.entries,
        vec![0x100_0003, 0x100_1003, 0x100_2003, 0x100_3003, 0x1000_0001]
    );
    let ul = &r.lists[1];
    assert_eq!(
        (ul.gpa, ul.pinned, ul.entries.as_slice()),
        (0x1000_1000, false, &[7][..])
    );
    let calls: Vec<(usize, u64, &[u64], Option<Expect>)> = r
        .calls
        .iter()
        .map(|c| (c.line, c.nr, c.args.as_slice(), c.expect))
        .collect();
    let exp = |code, r4, via| Some(Expect { code, r4, via });
    assert_eq!(
        calls,
        vec![
            (
                7,
                0x20,
                &[0x8000_0001, 0, 0x100_0003][..],
                exp(0, None, Some(Mode::Real))
            ),
            (
                8,
                0x1C,
                &[0x8000_0001, 0][..],
                exp(0, Some(0x100_0003), None)
            ),
            (
                9,
                0x13C,
                &[0x8000_0001, 0x1_0000, 0x101_1000, 5][..],
                exp(0, None, Some(Mode::Virtual))
            ),
            (10, 0x138, &[0x8000_0002, 0, 0, 32][..], exp(-4, None, None)),
            (11, 0x1234, &[1, 2][..], exp(-2, None, None)),
            (12, 0x58, &[0, 2, 0x4142_0000_0000_0000, 0][..], None),
        ]
    );
    assert_eq!(r.calls[4].regs(), [1, 2, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn alignment() {
    // An unaligned pool base: lists take the next 4K page, buffers the next 64K boundary.
    let l = Layout {
        pinned: Pool {
            base: 0x1234_5000,
            size: 0x10_0000,
        },
        unpinned: Pool::default(),
        align: 0x1_0000,
    };
    let r = ok("list a = 1\nbuffer b 1\nlist c = 2")
        .resolve(&l, &[])
        .unwrap();
    assert_eq!(
        (r.lists[0].gpa, r.buffers[0].gpa, r.lists[1].gpa),
        (0x1234_5000, 0x1235_0000, 0x1235_1000)
    );
    // An alignment below 4K (or 0) still gives whole pages.
    for align in [0, 1, 512] {
        let l = Layout { align, ..l };
        let r = ok("buffer a 1\nbuffer b 4097\nbuffer c 1")
            .resolve(&l, &[])
            .unwrap();
        let gpas: Vec<(u64, u64)> = r.buffers.iter().map(|b| (b.gpa, b.size)).collect();
        assert_eq!(
            gpas,
            vec![
                (0x1234_5000, 0x1000),
                (0x1234_6000, 0x2000),
                (0x1234_8000, 0x1000)
            ]
        );
    }
}

#[test]
fn pool_exhaustion_names_the_line() {
    // The unpinned pool is 128K: two 64K buffers fill it exactly.
    let src = "buffer x 64K unpinned\nbuffer y 64K unpinned\nbuffer p 4K\nlist z unpinned = 1";
    let e = resolve_fails(src, 4, "");
    assert_eq!(
        e.to_string(),
        "line 4: list `z` needs 0x1000 bytes but the unpinned pool has 0x0 left (of 0x20000 at 0x10000000)"
    );
    resolve_fails(
        "buffer big 2M",
        1,
        "buffer `big` needs 0x200000 bytes at a multiple of 0x10000 but the pinned pool has 0x100000 left (of 0x100000 at 0x1000000)",
    );
    // Alignment padding counts: 0xF0000 left at 0x1010000, not enough for 1M - 64K + 1.
    resolve_fails(
        "buffer a 1\nbuffer b 0xF0001",
        2,
        "needs 0xf1000 bytes at a multiple of 0x10000 but the pinned pool has 0xf0000 left",
    );
    resolve_fails(
        "buffer huge 0xffffffffffffffff",
        1,
        "buffer `huge` is too large (0xffffffffffffffff bytes)",
    );
    // A pool at the top of the address space does not wrap.
    let top = Layout {
        pinned: Pool {
            base: u64::MAX - 0x1fff,
            size: u64::MAX,
        },
        unpinned: Pool::default(),
        align: 0x1_0000,
    };
    let e = ok("list a = 1\nbuffer b 1").resolve(&top, &[]).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("has 0x0 left"), "{e}");
    // Nor does its last page, whose end is past u64::MAX.
    let e = ok("list a = 1\nlist b = 1").resolve(&top, &[]).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("has 0xfff left"), "{e}");
}

#[test]
fn symbols_and_names() {
    resolve_fails(
        "\nbuffer liobn_4k 4K",
        2,
        "buffer `liobn_4k` has the name of a predefined symbol; choose another name",
    );
    resolve_fails(
        "list liobn_64k = 1",
        1,
        "list `liobn_64k` has the name of a predefined symbol",
    );
    let e = resolve_fails(
        "buffer buf 4K\nlist tl = 1\n\n\n\n\n\n\nH_PUT_TCE liobn_4k 0 bfu",
        9,
        "",
    );
    assert_eq!(
        e.to_string(),
        "line 9: unknown name `bfu` (defined: buf, tl; predefined: liobn_4k, liobn_64k)"
    );
    let e = ok("buffer buf 4K\nlist tl = 1\n0x99 bfu")
        .resolve(&layout(), &[])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 3: unknown name `bfu` (defined: buf, tl)"
    );
    let e = ok("0x99 x").resolve(&layout(), &[("y", 1)]).unwrap_err();
    assert_eq!(e.message, "unknown name `x` (predefined: y)");
    let defs: String = (0..20).map(|i| format!("list l{i} = {i}\n")).collect();
    let e = ok(&format!("{defs}0x99 nope"))
        .resolve(&layout(), &[])
        .unwrap_err();
    assert!(e.message.ends_with("l14, l15, ...)"), "{e}");
    // Unknown names in each expression position.
    resolve_fails("list l = zz", 1, "unknown name `zz`");
    resolve_fails("list l = seq(1, 1, zz)", 1, "unknown name `zz`");
    resolve_fails("H_GET_TCE 1 2 => H_SUCCESS zz", 1, "unknown name `zz`");
}

/// The example in the module documentation (copied to the README) parses and resolves.
#[test]
fn documented_example() {
    let doc = include_str!("mod.rs");
    let example: String = doc
        .split("//! ```text\n")
        .nth(2)
        .and_then(|rest| rest.split("//! ```\n").next())
        .expect("the second text block")
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start())
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(example.starts_with("buffer buf 64K"), "{example}");
    let r = run(&example);
    assert_eq!(r.lists[0].entries.len(), 16);
    assert_eq!(r.calls.len(), 9);
    assert_eq!(r.calls[5].to_string(), "hcall 0x1234()");
    let guest: Vec<(String, Option<GuestExpect>)> = r.calls[6..]
        .iter()
        .map(|c| (c.to_string(), c.guest_expect))
        .collect();
    assert_eq!(
        guest,
        [
            (
                "guest mtspr(pidr, 0x1234)".into(),
                Some(GuestExpect::Ok(Some(0x1234)))
            ),
            (
                "guest insn(0x7fe00008, 0x0)".into(),
                Some(GuestExpect::Interrupt(0x700))
            ),
            (
                "guest load(0x70000000)".into(),
                Some(GuestExpect::Stopped(0xe00))
            ),
        ]
    );
}

// ---- guest actions ----

const G: u64 = abi::GUEST_ACTION;

/// The one call of `src`'s last line, resolved.
fn last_call(src: &str) -> ResolvedCall {
    run(src).calls.pop().expect("a call")
}

#[test]
fn guest_action_statements() {
    let r = run("buffer b 64K\n\
                 guest spin\n\
                 guest spin_ee\n\
                 guest load b+8\n\
                 guest store b 0x1234\n\
                 guest exec b\n\
                 guest insn 0x7c0004ac\n\
                 guest insn 0x7c0004ac liobn_4k|1\n\
                 guest spr pidr\n\
                 guest spr CFAR\n\
                 guest spr 1023\n\
                 guest mtspr amr 0xc000_0000_0000_0000\n\
                 guest mtspr 0x3ff b\n");
    let got: Vec<(usize, u64, Vec<u64>)> = r
        .calls
        .iter()
        .map(|c| {
            assert_eq!((c.expect, c.guest_expect), (None, None), "{c}");
            (c.line, c.nr, c.args.clone())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (2, G | guest_op::SPIN, vec![]),
            (3, G | guest_op::SPIN_EE, vec![]),
            (4, G | guest_op::LOAD, vec![0x100_0008]),
            (5, G | guest_op::STORE, vec![0x100_0000, 0x1234]),
            (6, G | guest_op::EXEC, vec![0x100_0000]),
            (7, G | guest_op::INSN, vec![0x7c00_04ac, 0]),
            (8, G | guest_op::INSN, vec![0x7c00_04ac, 0x8000_0001]),
            (9, G | guest_op::SPR, vec![48]),
            (10, G | guest_op::SPR, vec![28]),
            (11, G | guest_op::SPR, vec![1023]),
            (12, G | guest_op::MTSPR, vec![29, 0xc000_0000_0000_0000]),
            (13, G | guest_op::MTSPR, vec![1023, 0x100_0000]),
        ]
    );
    assert!(r.calls.iter().all(|c| abi::is_action(c.nr)));
    // As parsed: `insn`'s r3 defaults to 0, an SPR is its number, expressions stay as written.
    let s = ok("buffer b 4K\nguest insn b+4\nguest mtspr dscr b");
    let calls: Vec<&Call> = s.calls().map(|(_, c)| c).collect();
    assert_eq!(
        *calls[0],
        Call {
            nr: G | guest_op::INSN,
            args: vec![
                Expr {
                    first: name("b"),
                    rest: vec![(Op::Add, Term::Num(4))]
                },
                Expr::num(0)
            ],
            expect: None,
            guest_expect: None,
        }
    );
    assert_eq!(calls[1].args, vec![Expr::num(17), name("b").into()]);
    // Every SPR the ABI names, in any case.
    for &(spr, nr) in abi::SPRS.iter() {
        for written in [spr.to_string(), spr.to_ascii_uppercase()] {
            assert_eq!(
                last_call(&format!("guest spr {written}")).args,
                vec![nr],
                "{written}"
            );
            assert_eq!(
                last_call(&format!("guest mtspr {written} 7")).args,
                vec![nr, 7]
            );
        }
    }
    assert_eq!(last_call("guest spr 0").args, vec![0]);
    assert_eq!(
        last_call("guest insn 0xffff_ffff 5").args,
        vec![u32::MAX.into(), 5]
    );
}

#[test]
fn guest_actions_are_calls_in_script_order() {
    let src =
        "0x99\nguest spin\nbuffer b 4K\nH_GET_TCE 1 2 => H_SUCCESS 3\nguest load b => ok\n0x98";
    let parsed: Vec<(usize, u64)> = ok(src).calls().map(|(l, c)| (l, c.nr)).collect();
    let resolved: Vec<(usize, u64)> = run(src).calls.iter().map(|c| (c.line, c.nr)).collect();
    let want = vec![
        (1, 0x99),
        (2, G | guest_op::SPIN),
        (4, 0x1C),
        (5, G | guest_op::LOAD),
        (6, 0x98),
    ];
    assert_eq!(parsed, want);
    assert_eq!(resolved, want);
    let r = run(src);
    assert_eq!(
        (r.calls[2].expect.is_some(), r.calls[2].guest_expect),
        (true, None)
    );
    assert_eq!(
        (r.calls[3].expect, r.calls[3].guest_expect),
        (None, Some(GuestExpect::Ok(None)))
    );
    assert_eq!(r.calls[3].regs(), [0x100_0000, 0, 0, 0, 0, 0, 0, 0]);
    // The call limit counts guest actions.
    let actions = "guest spin\n".repeat(MAX_CALLS / 2);
    let calls = "0x99\n".repeat(MAX_CALLS / 2);
    let full = format!("{actions}{calls}");
    assert_eq!(ok(&full).calls().count(), MAX_CALLS);
    fails(
        &format!("{full}guest spin\n"),
        MAX_CALLS + 1,
        "too many calls: a script makes at most 4096 (guest actions included)",
    );
    fails(&format!("{full}0x99\n"), MAX_CALLS + 1, "too many calls");
}

#[test]
fn guest_outcomes() {
    for (outcome, want) in [
        ("ok", GuestExpect::Ok(None)),
        ("ok 5", GuestExpect::Ok(Some(5))),
        ("ok b+1", GuestExpect::Ok(Some(0x100_0001))),
        ("0x1234", GuestExpect::Ok(Some(0x1234))),
        ("b|3", GuestExpect::Ok(Some(0x100_0003))),
        ("liobn_4k", GuestExpect::Ok(Some(0x8000_0001))),
        ("0", GuestExpect::Ok(Some(0))),
        ("program", GuestExpect::Interrupt(0x700)),
        ("interrupt 0x600", GuestExpect::Interrupt(0x600)),
        ("interrupt 0x300+0x80", GuestExpect::Interrupt(0x380)),
        ("interrupt 0x700", GuestExpect::Interrupt(0x700)),
        ("stopped timeout", GuestExpect::Timeout),
        ("stopped hdsi", GuestExpect::Stopped(0xe00)),
        ("stopped hisi", GuestExpect::Stopped(0xe20)),
        ("stopped hea", GuestExpect::Stopped(0xe40)),
        ("stopped hfac", GuestExpect::Stopped(0xf80)),
        ("stopped hvi", GuestExpect::Stopped(0xea0)),
        ("stopped 0x980", GuestExpect::Stopped(0x980)),
        ("stopped 2432", GuestExpect::Stopped(0x980)),
    ] {
        let c = last_call(&format!("buffer b 4K\nguest load b => {outcome}"));
        assert_eq!((c.expect, c.guest_expect), (None, Some(want)), "{outcome}");
    }
    // The shorthand the brief's example uses.
    assert_eq!(
        last_call("guest spr pidr => 0x1234").guest_expect,
        Some(GuestExpect::Ok(Some(0x1234)))
    );
    // As parsed.
    let outcomes: Vec<Option<GuestExpectExpr>> = ok("guest spin\n\
             guest spin => ok\n\
             guest spin => ok 5\n\
             guest spin => 5\n\
             guest spin => program\n\
             guest spin => interrupt liobn_4k\n\
             guest spin => stopped timeout\n\
             guest spin => stopped hvi\n")
    .calls()
    .map(|(_, c)| c.guest_expect.clone())
    .collect();
    assert_eq!(
        outcomes,
        vec![
            None,
            Some(GuestExpectExpr::Ok(None)),
            Some(GuestExpectExpr::Ok(Some(Expr::num(5)))),
            Some(GuestExpectExpr::Ok(Some(Expr::num(5)))),
            Some(GuestExpectExpr::Interrupt(Expr::num(0x700))),
            Some(GuestExpectExpr::Interrupt(name("liobn_4k").into())),
            Some(GuestExpectExpr::Timeout),
            Some(GuestExpectExpr::Stopped(0xea0)),
        ]
    );
    // Outcome words come before names: a buffer named `ok` is compared with `ok ok`.
    let r = run("buffer ok 4K\nbuffer program 4K\nguest load ok => ok\nguest load ok => ok ok\nguest load 0 => ok program\nguest load 0 => program");
    let got: Vec<Option<GuestExpect>> = r.calls.iter().map(|c| c.guest_expect).collect();
    assert_eq!(
        got,
        vec![
            Some(GuestExpect::Ok(None)),
            Some(GuestExpect::Ok(Some(0x100_0000))),
            Some(GuestExpect::Ok(Some(0x101_0000))),
            Some(GuestExpect::Interrupt(0x700)),
        ]
    );
}

#[test]
fn guest_expect_accepts() {
    use GuestExpect::*;
    let all = [
        Ok(None),
        Ok(Some(5)),
        Ok(Some(6)),
        Interrupt(0x700),
        Interrupt(0x600),
        Timeout,
        Stopped(0xe00),
        Stopped(0xe20),
        Stopped(0x700),
    ];
    for want in all {
        for got in all {
            let accepted = match (want, got) {
                (Ok(None), Ok(_)) => true,
                _ => want == got,
            };
            assert_eq!(want.accepts(&got), accepted, "{want:?} {got:?}");
        }
    }
    assert!(Ok(None).accepts(&Ok(Some(5))));
    assert!(!Ok(Some(5)).accepts(&Ok(None)));
    assert!(!Ok(Some(5)).accepts(&Ok(Some(6))));
    assert!(!Interrupt(0x700).accepts(&Stopped(0x700)));
    assert!(!Timeout.accepts(&Stopped(0)));
}

#[test]
fn guest_action_errors() {
    let actions =
        "(spin, spin_ee, load, store, exec, insn, spr, mtspr, user_sc, dma_to_device, dma_to_ram)";
    fails(
        "guest",
        1,
        &format!("expected a guest action after `guest` {actions}, found end of line"),
    );
    fails(
        "\nguest jump 0",
        2,
        &format!("expected a guest action after `guest` {actions}, found `jump`"),
    );
    fails("guest 5", 1, "found `5`");
    fails("guest => ok", 1, "found `=>`");
    fails("guest Load 0", 1, "did you mean `load`?");
    // Each form takes exactly its arguments.
    let e = fails("buffer b 4K\nguest store b", 2, "");
    assert_eq!(
        e.to_string(),
        "line 2: guest store takes 2 arguments (gpa value), found 1"
    );
    for (src, message) in [
        ("guest spin 1", "guest spin takes no arguments, found 1"),
        (
            "guest spin_ee 1 2 => ok",
            "guest spin_ee takes no arguments, found 2",
        ),
        ("guest load", "guest load takes 1 argument (gpa), found 0"),
        (
            "guest load 1 2",
            "guest load takes 1 argument (gpa), found 2",
        ),
        (
            "guest store 1 2 3",
            "guest store takes 2 arguments (gpa value), found 3",
        ),
        (
            "guest exec => ok",
            "guest exec takes 1 argument (gpa), found 0",
        ),
        (
            "guest insn",
            "guest insn takes 1 or 2 arguments (word [r3]), found 0",
        ),
        (
            "guest insn 1 2 3",
            "guest insn takes 1 or 2 arguments (word [r3]), found 3",
        ),
        ("guest spr", "guest spr takes 1 argument (spr), found 0"),
        (
            "guest spr pidr 1",
            "guest spr takes 1 argument (spr), found 2",
        ),
        (
            "guest mtspr pidr",
            "guest mtspr takes 2 arguments (spr value), found 1",
        ),
        (
            "guest mtspr pidr 1 2",
            "guest mtspr takes 2 arguments (spr value), found 3",
        ),
    ] {
        fails(src, 1, message);
    }
    // SPRs.
    let e = fails(
        "guest spr foo",
        1,
        "unknown SPR `foo` (known: xer, dscr, dsisr,",
    );
    assert!(
        e.message.ends_with("ppr; or an SPR number below 1024)"),
        "{e}"
    );
    for &(spr, _) in abi::SPRS.iter() {
        assert!(e.message.contains(spr), "{e} lacks {spr}");
    }
    fails("buffer b 4K\nguest mtspr b 1", 2, "unknown SPR `b`");
    fails("guest spr via", 1, "unknown SPR `via`");
    fails(
        "guest spr 1024",
        1,
        "SPR number `1024` is out of range: SPRs are 0 to 1023",
    );
    fails(
        "guest mtspr 0x400 1",
        1,
        "SPR number `0x400` is out of range",
    );
    fails(
        "guest spr pidr+1",
        1,
        "an SPR is a name or a single number, found `+` after it",
    );
    fails(
        "guest spr (",
        1,
        "expected an SPR (a name or a number below 1024), found `(`",
    );
    fails("guest spr 0xg", 1, "`g` is not a hex digit");
    // An instruction word is 32 bits, checked once the expression has a value.
    resolve_fails(
        "guest insn 0x1_0000_0000",
        1,
        "guest insn: the instruction word `0x100000000` is 0x100000000, which does not fit in 32 bits",
    );
    resolve_fails(
        "buffer b 4K\n\nguest insn b+0xffffffff 1 => program",
        3,
        "the instruction word `b+0xffffffff` is 0x100ffffff, which does not fit in 32 bits",
    );
    resolve_fails(
        "guest insn liobn_4k|0x100000000",
        1,
        "does not fit in 32 bits",
    );
    // Expressions fail as anywhere else.
    fails("guest load 1-2", 1, "`1-2` is negative");
    fails("guest store 1 2+", 1, "after `+`, found end of line");
    resolve_fails("guest load zz", 1, "unknown name `zz`");
    resolve_fails("guest spin => zz", 1, "unknown name `zz`");
    resolve_fails("guest spin => ok zz", 1, "unknown name `zz`");
    resolve_fails("guest spin => interrupt zz", 1, "unknown name `zz`");
    // `guest` is a keyword.
    fails(
        "buffer guest 4K",
        1,
        "expected a name after `buffer`, found the keyword `guest`",
    );
    fails("list guest = 1", 1, "found the keyword `guest`");
    fails("0x99 guest", 1, "found the keyword `guest`");
    fails("guest load guest", 1, "found the keyword `guest`");
    fails("guest spin => guest", 1, "found the keyword `guest`");
    // Action and outcome words are not keywords.
    run("buffer load 4K\nbuffer spr 4K\nbuffer stopped 4K\nbuffer hdsi 4K\nguest load load+spr => stopped hdsi\nH_PUT_TCE liobn_4k 0 hdsi|3");
    // A numbered call may not pose as a guest action.
    fails(
        "0x8000000000000003 0x1000",
        1,
        "hypercall number `0x8000000000000003` has bit 63 set, which marks a guest action; write the action as `guest ACTION ...`",
    );
    ok("0x7fffffffffffffff");
}

#[test]
fn guest_and_hypercall_expectations_do_not_mix() {
    let outcomes = "(`ok`, `ok VALUE`, VALUE, `program`, `interrupt VECTOR`, `stopped timeout` or `stopped FAULT`)";
    // Hypercall expectations on a guest action.
    fails(
        "guest spin => H_SUCCESS",
        1,
        &format!("`H_SUCCESS` is a hypercall result code, not a guest action's outcome: expected a guest action outcome after `=>` {outcomes}"),
    );
    fails(
        "guest load 0 => H_PARAMETER",
        1,
        "`H_PARAMETER` is a hypercall result code",
    );
    fails(
        "guest load 0 => H_TOO_HARD",
        1,
        "`H_TOO_HARD` is a hypercall result code",
    );
    for src in [
        "guest spin => via real",
        "guest spin => ok via real",
        "guest load 0 => 5 via virtual",
        "guest spin => program via real",
        "guest spin => stopped hdsi via virtual",
        "guest spin => ok 1+2 via real",
    ] {
        fails(
            src,
            1,
            "`via real|virtual` is for hypercalls only: a guest action does not go through the hypervisor's real or virtual mode",
        );
    }
    fails(
        "guest spin => -4",
        1,
        &format!("expected a guest action outcome after `=>` {outcomes}, found `-`"),
    );
    fails("guest spin =>", 1, "found end of line");
    fails("guest spin => => ok", 1, "found `=>`");
    fails(
        "guest spin => stopped",
        1,
        "expected `timeout`, a fault (hdsi, hisi, hea, hfac, hvi) or a vector number after `stopped`, found end of line",
    );
    fails(
        "guest spin => stopped HDSI",
        1,
        "after `stopped`, found `HDSI`",
    );
    fails("guest spin => stopped 0xg", 1, "`g` is not a hex digit");
    fails(
        "guest spin => stopped timeout 1",
        1,
        "expected end of line after the outcome, found `1`",
    );
    fails("guest spin => stopped 0xe00+0x20", 1, "found `+`");
    fails(
        "guest spin => interrupt",
        1,
        "expected the vector after `interrupt` (an expression), found end of line",
    );
    fails(
        "guest spin => program 0x700",
        1,
        "expected end of line after the outcome, found `0x700`",
    );
    fails(
        "guest spin => ok 1 2",
        1,
        "expected end of line after the outcome, found `2`",
    );
    fails("guest spin => 1 2", 1, "found `2`");
    // `timeout` alone is a name (the shorthand `=> VALUE`), not an outcome.
    resolve_fails("guest spin => timeout", 1, "unknown name `timeout`");
    // Guest outcomes on a hypercall.
    fails(
        "0x99 => ok",
        1,
        "`ok` is a guest action's outcome, not a hypercall's: expected a result code after `=>` (H_SUCCESS, H_HARDWARE, H_FUNCTION, H_PARAMETER, H_NO_MEM or an integer)",
    );
    for src in [
        "H_GET_TCE 1 2 => ok 5",
        "H_PUT_TCE 1 2 3 => program",
        "0x99 => interrupt 0x700",
        "H_STUFF_TCE 1 2 3 4 => stopped hdsi",
        "0x99 => stopped timeout",
    ] {
        fails(src, 1, "is a guest action's outcome, not a hypercall's");
    }
}

#[test]
fn guest_formatting() {
    let r = run("buffer b 4K\n\
                 guest load 0x400000\n\
                 guest spr cfar\n\
                 guest spr 0x1c\n\
                 guest spr 0x3ff\n\
                 guest insn 0x7c0004ac\n\
                 guest spin\n\
                 guest spin_ee\n\
                 guest mtspr PIDR 0x1234\n\
                 guest mtspr 1000 1\n\
                 guest store b 5\n\
                 guest exec 0");
    let shown: Vec<String> = r.calls.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "guest load(0x400000)",
            "guest spr(cfar)",
            "guest spr(cfar)",
            "guest spr(0x3ff)",
            "guest insn(0x7c0004ac, 0x0)",
            "guest spin()",
            "guest spin_ee()",
            "guest mtspr(pidr, 0x1234)",
            "guest mtspr(0x3e8, 0x1)",
            "guest store(0x1000000, 0x5)",
            "guest exec(0x0)",
        ]
    );
    // An action no script can name still prints.
    let odd = ResolvedCall {
        line: 1,
        nr: G | 0x99,
        args: vec![28],
        expect: None,
        guest_expect: None,
    };
    assert_eq!(odd.to_string(), "guest action 0x99(0x1c)");
    assert_eq!(
        (
            guest_action_name(G | guest_op::LOAD),
            guest_action_name(guest_op::LOAD),
            guest_action_name(G | 0x99),
            guest_action_name(G | guest_op::MTSPR),
        ),
        (Some("load"), None, None, Some("mtspr"))
    );
    // Outcomes print as a script writes them, and read back.
    for (x, text) in [
        (GuestExpect::Ok(None), "ok"),
        (GuestExpect::Ok(Some(5)), "ok 0x5"),
        (GuestExpect::Ok(Some(u64::MAX)), "ok 0xffffffffffffffff"),
        (GuestExpect::Interrupt(0x700), "program"),
        (GuestExpect::Interrupt(0x600), "interrupt 0x600"),
        (GuestExpect::Interrupt(0), "interrupt 0x0"),
        (GuestExpect::Timeout, "stopped timeout"),
        (GuestExpect::Stopped(0xe00), "stopped hdsi"),
        (GuestExpect::Stopped(0xe20), "stopped hisi"),
        (GuestExpect::Stopped(0xe40), "stopped hea"),
        (GuestExpect::Stopped(0xf80), "stopped hfac"),
        (GuestExpect::Stopped(0xea0), "stopped hvi"),
        (GuestExpect::Stopped(0x980), "stopped 0x980"),
    ] {
        assert_eq!(x.to_string(), text);
        assert_eq!(
            last_call(&format!("guest spin => {x}")).guest_expect,
            Some(x),
            "{text}"
        );
    }
}

/// The fuzz harness's properties hold for scripts with guest actions.
#[test]
fn fuzz_check_covers_guest_actions() {
    for src in [
        "buffer b 4K\nguest load b => ok b\nguest spr pidr => 0x1234\nH_GET_TCE liobn_4k 0 => H_SUCCESS 0\nguest insn 0x7fe00008 1 => program\nguest spin => stopped timeout",
        "guest insn 0x1_0000_0000",
        "guest mtspr tar 0 => stopped hfac\nguest spin_ee => interrupt 0x900",
        "#@file a\nguest exec 0 => stopped hisi\n#@file b\nguest spr 2000",
    ] {
        super::fuzz::check(src.as_bytes()).unwrap_or_else(|e| panic!("{e}\nin:\n{src}"));
    }
}

// ---- formatting ----

#[test]
fn formatting() {
    let r = run("buffer b 4K\nH_PUT_TCE liobn_4k 0x1000 b|3\n0x1234\n0x20 0 1\nH_GET_TCE 1 0 => H_SUCCESS 0x200003 via real");
    let shown: Vec<String> = r.calls.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "H_PUT_TCE(0x80000001, 0x1000, 0x1000003)",
            "hcall 0x1234()",
            "H_PUT_TCE(0x0, 0x1)",
            "H_GET_TCE(0x1, 0x0)",
        ]
    );
    let e = r.calls[3].expect.unwrap();
    assert_eq!(e.to_string(), "H_SUCCESS r4=0x200003 via real");
    let e2 = Expect {
        code: -7,
        r4: None,
        via: Some(Mode::Virtual),
    };
    assert_eq!(e2.to_string(), "-7 via virtual");
    let o = Outcome {
        code: -4,
        r4: 0,
        via: Mode::Real,
    };
    assert_eq!(o.to_string(), "H_PARAMETER r4=0x0 via real");
    let good = Outcome {
        code: 0,
        r4: 0x200003,
        via: Mode::Real,
    };
    assert!(e.accepts(&good));
    assert!(!e.accepts(&o));
    assert!(!e.accepts(&Outcome { r4: 0, ..good }));
    assert!(!e.accepts(&Outcome {
        via: Mode::Virtual,
        ..good
    }));
    let any = Expect {
        code: 0,
        r4: None,
        via: None,
    };
    assert!(any.accepts(&Outcome {
        r4: 5,
        via: Mode::Virtual,
        ..good
    }));
    assert_eq!(
        Expr {
            first: name("buf"),
            rest: vec![
                (Op::Add, Term::Num(0x1000)),
                (Op::Or, Term::Num(3)),
                (Op::Sub, name("x"))
            ]
        }
        .to_string(),
        "buf+0x1000|3-x"
    );
    assert_eq!(
        (hcall_name(0x58), hcall_name(0x59)),
        (Some("H_PUT_TERM_CHAR"), None)
    );
    assert_eq!(
        (code_name(-9), code_name(9999), code_name(-3)),
        (Some("H_NO_MEM"), Some("H_TOO_HARD"), None)
    );
}

// ---- properties ----

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn line_count(text: &[u8]) -> usize {
        text.split(|&b| b == b'\n').count()
    }

    #[track_caller]
    fn check(text: &[u8], r: &Result<Script, ScriptError>) {
        if let Err(e) = r {
            assert!(
                (1..=line_count(text)).contains(&e.line),
                "{e} for {} lines",
                line_count(text)
            );
            assert!(!e.message.is_empty());
        }
    }

    const WORDS: &[&str] = &[
        "buffer",
        "list",
        "unpinned",
        "seq",
        "(",
        ")",
        ",",
        "=",
        "=>",
        "via",
        "real",
        "virtual",
        "H_PUT_TCE",
        "H_GET_TCE",
        "H_STUFF_TCE",
        "H_PUT_TCE_INDIRECT",
        "H_PUT_TERM_CHAR",
        "H_SUCCESS",
        "H_PARAMETER",
        "H_TOO_HARD",
        "guest",
        "spin",
        "load",
        "insn",
        "spr",
        "mtspr",
        "pidr",
        "1024",
        "0x100000000",
        "ok",
        "program",
        "interrupt",
        "stopped",
        "timeout",
        "hdsi",
        "-",
        "+",
        "|",
        "a",
        "b",
        "l",
        "liobn",
        "0",
        "1",
        "0x1000",
        "4K",
        "2G",
        "0xffffffffffffffff",
        "512",
        "9999",
        "#",
        "\n",
        "\n",
        "\n",
        "\t",
        "#@file f\n",
        "\u{e9}",
        "\r\n",
        "\u{ff}",
    ];

    const STARTS: &[&str] = &[
        "buffer a 4K",
        "buffer b",
        "list l =",
        "list m unpinned = seq(",
        "H_PUT_TCE liobn 0",
        "H_GET_TCE liobn 0 =>",
        "H_STUFF_TCE",
        "H_PUT_TCE_INDIRECT liobn 0 l",
        "0x99",
        "guest load a",
        "guest store",
        "guest insn 0xffffffff",
        "guest spr",
        "guest mtspr pidr",
        "guest spin =>",
        "guest spin => stopped",
        "#@file f",
        "",
    ];

    /// Lines made of the language's own tokens, each starting like a statement, so that
    /// parsing gets past the first word.
    fn soup() -> impl Strategy<Value = String> {
        let word = (
            0..WORDS.len(),
            prop_oneof![4 => Just(true), 1 => Just(false)],
        );
        let line = (0..STARTS.len(), proptest::collection::vec(word, 0..8));
        proptest::collection::vec(line, 0..12).prop_map(|lines| {
            let mut s = String::new();
            for (start, words) in lines {
                s.push_str(STARTS[start]);
                s.push(' ');
                for (i, space) in words {
                    s.push_str(WORDS[i]);
                    if space {
                        s.push(' ');
                    }
                }
                s.push('\n');
            }
            s
        })
    }

    /// An expression over numbers and `names`.
    fn expr(names: &'static [&'static str]) -> impl Strategy<Value = String> {
        let term = move || {
            prop_oneof![
                1 => any::<u64>().prop_map(|v| format!("{v:#x}")),
                3 => (0..64u64).prop_map(|v| v.to_string()),
                3 => proptest::sample::select(names).prop_map(String::from),
            ]
        };
        let op = prop_oneof![3 => Just("+"), 1 => Just("-"), 2 => Just("|")];
        (term(), proptest::collection::vec((op, term()), 0..3)).prop_map(|(first, rest)| {
            rest.into_iter()
                .fold(first, |acc, (op, t)| format!("{acc}{op}{t}"))
        })
    }

    /// A well-formed script: buffers `a` and `b`, lists `l` and `m`, then calls; its
    /// arithmetic, sizes and counts may still fail to resolve.
    fn script() -> impl Strategy<Value = Vec<String>> {
        const AB: &[&str] = &["liobn", "a", "b"];
        const ALL: &[&str] = &["liobn", "a", "b", "l", "m"];
        let size = || {
            prop_oneof![
                3 => prop_oneof![Just(1u64), Just(0x1000), Just(0x1_0000), Just(0x4_0000)],
                1 => any::<u64>(),
            ]
        };
        let pin = || prop_oneof![Just(""), Just(" unpinned")];
        let item = || {
            prop_oneof![
                3 => expr(AB),
                1 => (expr(AB), 0..300u64, expr(AB))
                    .prop_map(|(s, n, d)| format!("seq({s}, {n}, {d})")),
            ]
        };
        let items = move || proptest::collection::vec(item(), 1..4).prop_map(|i| i.join(", "));
        let code = prop_oneof![
            Just("H_SUCCESS"),
            Just("H_PARAMETER"),
            Just("-9"),
            Just("3")
        ];
        let via = prop_oneof![Just(""), Just(" via real"), Just(" via virtual")];
        let call = prop_oneof![
            (expr(ALL), expr(ALL), expr(ALL), code.clone(), via.clone())
                .prop_map(|(a, b, c, k, v)| format!("H_PUT_TCE {a} {b} {c} => {k}{v}")),
            (expr(ALL), expr(ALL), code, expr(ALL), via)
                .prop_map(|(a, b, k, r4, v)| format!("H_GET_TCE {a} {b} => {k} {r4}{v}")),
            (any::<u16>(), proptest::collection::vec(expr(ALL), 0..9))
                .prop_map(|(nr, args)| format!("{nr:#x} {}", args.join(" "))),
            (guest_action(), outcome()).prop_map(|(a, o)| format!("guest {a}{o}")),
        ];
        (
            (size(), pin(), size(), pin()),
            (pin(), items(), pin(), items()),
            proptest::collection::vec(call, 0..6),
        )
            .prop_map(|((sa, pa, sb, pb), (pl, il, pm, im), calls)| {
                let mut lines = vec![
                    format!("buffer a {sa:#x}{pa}"),
                    format!("buffer b {sb:#x}{pb}"),
                    format!("list l{pl} = {il}"),
                    format!("list m{pm} = {im}"),
                ];
                lines.extend(calls);
                lines
            })
    }

    /// A guest action and its arguments.
    fn guest_action() -> impl Strategy<Value = String> {
        const ALL: &[&str] = &["liobn", "a", "b", "l", "m"];
        let spr = prop_oneof![
            3 => proptest::sample::select(&abi::SPRS[..]).prop_map(|s| s.0.to_string()),
            1 => (0..1024u64).prop_map(|n| format!("{n:#x}")),
        ];
        let word = prop_oneof![
            3 => any::<u32>().prop_map(|w| format!("{w:#x}")),
            1 => expr(ALL),
        ];
        prop_oneof![
            Just("spin".to_string()),
            Just("spin_ee".to_string()),
            expr(ALL).prop_map(|g| format!("load {g}")),
            (expr(ALL), expr(ALL)).prop_map(|(g, v)| format!("store {g} {v}")),
            expr(ALL).prop_map(|g| format!("exec {g}")),
            word.clone().prop_map(|w| format!("insn {w}")),
            (word, expr(ALL)).prop_map(|(w, r3)| format!("insn {w} {r3}")),
            spr.clone().prop_map(|s| format!("spr {s}")),
            (spr, expr(ALL)).prop_map(|(s, v)| format!("mtspr {s} {v}")),
        ]
    }

    /// Nothing, or `=> OUTCOME`.
    fn outcome() -> impl Strategy<Value = String> {
        const ALL: &[&str] = &["liobn", "a", "b", "l", "m"];
        prop_oneof![
            Just(String::new()),
            Just(" => ok".to_string()),
            expr(ALL).prop_map(|v| format!(" => ok {v}")),
            expr(ALL).prop_map(|v| format!(" => {v}")),
            Just(" => program".to_string()),
            expr(ALL).prop_map(|v| format!(" => interrupt {v}")),
            Just(" => stopped timeout".to_string()),
            proptest::sample::select(&["hdsi", "hisi", "hea", "hfac", "hvi", "0x980"][..])
                .prop_map(|f| format!(" => stopped {f}")),
        ]
    }

    /// Mostly plausible layouts (page-aligned pools of up to 4 MiB, power-of-two alignments),
    /// sometimes arbitrary ones.
    fn any_layout() -> impl Strategy<Value = Layout> {
        let pool = || {
            prop_oneof![
                3 => (0..1u64 << 40, 0..0x400u64)
                    .prop_map(|(page, pages)| Pool { base: page << 12, size: pages << 12 }),
                1 => (any::<u64>(), any::<u64>()).prop_map(|(base, size)| Pool { base, size }),
            ]
        };
        let align = prop_oneof![
            3 => (0..22u32).prop_map(|s| 1u64 << s),
            1 => any::<u64>(),
        ];
        (pool(), pool(), align).prop_map(|(pinned, unpinned, align)| Layout {
            pinned,
            unpinned,
            align,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            check(&bytes, &parse(&bytes));
            for (_, r) in parse_bundle(&bytes) {
                check(&bytes, &r);
            }
        }

        #[test]
        fn token_soup_never_panics(text in soup(), l in any_layout()) {
            let r = parse(text.as_bytes());
            check(text.as_bytes(), &r);
            if let Ok(s) = r {
                if let Err(e) = s.resolve(&l, &[("liobn", 7)]) {
                    prop_assert!((1..=line_count(text.as_bytes())).contains(&e.line), "{}", e);
                }
            }
            for (_, r) in parse_bundle(text.as_bytes()) {
                check(text.as_bytes(), &r);
            }
            if let Err(e) = super::super::fuzz::check(text.as_bytes()) {
                prop_assert!(false, "{}", e);
            }
        }

        /// Well-formed statements: whatever resolves is placed inside its pool, aligned, without
        /// overlap, with 1 to 512 entries per list and at most 8 arguments per call.
        #[test]
        fn resolution_respects_the_layout(lines in script(), l in any_layout()) {
            let text = lines.join("\n");
            let r = parse(text.as_bytes());
            check(text.as_bytes(), &r);
            let Ok(script) = r else { return Ok(()) };
            let res = match script.resolve(&l, &[("liobn", 0x8000_0001)]) {
                Ok(res) => res,
                Err(e) => {
                    prop_assert!((1..=lines.len()).contains(&e.line), "{}", e);
                    return Ok(());
                }
            };
            let mut spans: Vec<(u64, u64, bool)> = Vec::new();
            for b in &res.buffers {
                prop_assert_eq!(b.gpa % l.align.max(PAGE_SIZE), 0);
                prop_assert_eq!(b.size % PAGE_SIZE, 0);
                spans.push((b.gpa, b.size, b.pinned));
            }
            for li in &res.lists {
                prop_assert_eq!(li.gpa % PAGE_SIZE, 0);
                prop_assert!((1..=MAX_LIST_ENTRIES).contains(&li.entries.len()));
                spans.push((li.gpa, PAGE_SIZE, li.pinned));
            }
            for &(gpa, size, pinned) in &spans {
                let pool = if pinned { l.pinned } else { l.unpinned };
                prop_assert!(gpa >= pool.base && gpa - pool.base + size <= pool.size, "{:#x}+{:#x} outside {:?}", gpa, size, pool);
            }
            // Within a pool, nothing overlaps (the caller's two pools may).
            spans.sort_by_key(|&(gpa, _, pinned)| (pinned, gpa));
            for w in spans.windows(2) {
                prop_assert!(w[0].2 != w[1].2 || w[0].0 + w[0].1 <= w[1].0, "overlap {:?}", w);
            }
            prop_assert_eq!(res.calls.len(), script.calls().count());
            prop_assert!(res.calls.iter().all(|c| c.args.len() <= MAX_ARGS));
            // Guest actions in script order with the calls, each with only its kind of
            // expectation; an insn word fits in 32 bits.
            let order: Vec<(usize, u64)> = script.calls().map(|(l, c)| (l, c.nr)).collect();
            let resolved: Vec<(usize, u64)> = res.calls.iter().map(|c| (c.line, c.nr)).collect();
            prop_assert_eq!(order, resolved);
            for c in &res.calls {
                if abi::is_action(c.nr) {
                    prop_assert!(c.expect.is_none());
                    if c.nr == abi::GUEST_ACTION | guest_op::INSN {
                        prop_assert!(c.args[0] <= u64::from(u32::MAX));
                    }
                } else {
                    prop_assert!(c.guest_expect.is_none());
                }
                let _ = format!("{c} {:?}", c.guest_expect.map(|x| x.to_string()));
            }
        }

        /// Any u64 reads back from decimal, hex and hex with separators.
        #[test]
        fn numbers_round_trip(v in any::<u64>()) {
            let hex = format!("{v:x}");
            let grouped: String = hex.chars().flat_map(|c| [c, '_']).collect();
            let src = format!("0x99 {v} 0x{hex} 0x{grouped}");
            prop_assert_eq!(call_args(&src), vec![v, v, v]);
        }

        /// Expressions evaluate left to right with checked arithmetic, like this model.
        #[test]
        fn expressions_match_a_model(first in any::<u64>(), rest in proptest::collection::vec((0..3u8, any::<u64>()), 0..6), small in any::<bool>()) {
            let cut = |v: u64| if small { v % 16 } else { v };
            let mut src = format!("0x99 {}", cut(first));
            let mut model = Some(cut(first));
            for (op, v) in &rest {
                let v = cut(*v);
                let (c, m) = match op {
                    0 => ('+', model.and_then(|a| a.checked_add(v))),
                    1 => ('-', model.and_then(|a| a.checked_sub(v))),
                    _ => ('|', model.map(|a| a | v)),
                };
                src.push(c);
                src.push_str(&v.to_string());
                model = m;
            }
            match (model, parse(src.as_bytes())) {
                (Some(v), Ok(_)) => prop_assert_eq!(call_args(&src), vec![v]),
                (None, Err(e)) => prop_assert!(e.message.contains("negative") || e.message.contains("overflows"), "{}", e),
                (m, r) => prop_assert!(false, "model {:?}, parser {:?}", m, r),
            }
        }
    }
}
