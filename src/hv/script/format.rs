//! How calls, expectations and outcomes print on the console.

use core::fmt;

use super::{
    abi, code_name, guest_action_name, hcall_name, Expect, Expr, GuestExpect, Mode, Op,
    ResolvedCall, Term, FAULTS, PROGRAM,
};

/// What a call returned (r3, r4) and which path completed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// r3.
    pub code: i64,
    /// r4.
    pub r4: u64,
    /// `Real` if real mode completed the call, `Virtual` if it declined with H_TOO_HARD.
    pub via: Mode,
}

struct Code(i64);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match code_name(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Real => "real",
        Mode::Virtual => "virtual",
    }
}

/// `H_PUT_TCE(0x80000001, 0x1000, 0x200003)`, or `hcall 0x1234(0x1)` for a number without a
/// name; a guest action as `guest load(0x400000)`, its SPR by name if it has one
/// (`guest mtspr(pidr, 0x5)`, `guest spr(0x3ff)`).
impl fmt::Display for ResolvedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = abi::is_action(self.nr);
        let op = self.nr & !abi::GUEST_ACTION;
        let spr = action && (op == abi::guest_op::SPR || op == abi::guest_op::MTSPR);
        match (action, guest_action_name(self.nr), hcall_name(self.nr)) {
            (true, Some(n), _) => write!(f, "guest {n}")?,
            (true, None, _) => write!(f, "guest action {op:#x}")?,
            (false, _, Some(n)) => f.write_str(n)?,
            (false, _, None) => write!(f, "hcall {:#x}", self.nr)?,
        }
        f.write_str("(")?;
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match abi::SPRS.iter().find(|s| s.1 == *a) {
                Some((name, _)) if spr && i == 0 => f.write_str(name)?,
                _ => write!(f, "{a:#x}")?,
            }
        }
        f.write_str(")")
    }
}

/// `ok`, `ok 0x5`, `program`, `interrupt 0x600`, `stopped timeout`, `stopped hdsi`,
/// `stopped 0x980`: as a script writes it.
impl fmt::Display for GuestExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GuestExpect::Ok(None) => f.write_str("ok"),
            GuestExpect::Ok(Some(v)) => write!(f, "ok {v:#x}"),
            GuestExpect::Interrupt(PROGRAM) => f.write_str("program"),
            GuestExpect::Interrupt(v) => write!(f, "interrupt {v:#x}"),
            GuestExpect::Timeout => f.write_str("stopped timeout"),
            GuestExpect::Stopped(v) => match FAULTS.iter().find(|x| x.1 == v) {
                Some((name, _)) => write!(f, "stopped {name}"),
                None => write!(f, "stopped {v:#x}"),
            },
        }
    }
}

/// `H_SUCCESS`, `H_SUCCESS r4=0x200003 via real`, `-7 via virtual`: the parts the script gave.
impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Code(self.code))?;
        if let Some(v) = self.r4 {
            write!(f, " r4={v:#x}")?;
        }
        if let Some(m) = self.via {
            write!(f, " via {}", mode(m))?;
        }
        Ok(())
    }
}

/// `H_PARAMETER r4=0x0 via real`, comparable with an [`Expect`]'s form.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} r4={:#x} via {}",
            Code(self.code),
            self.r4,
            mode(self.via)
        )
    }
}

/// As written, spaces dropped, numbers in hex from 10 on: `buf+0x1000|3`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first)?;
        for (op, t) in &self.rest {
            write!(f, "{op}{t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Num(v) if *v < 10 => write!(f, "{v}"),
            Term::Num(v) => write!(f, "{v:#x}"),
            Term::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Or => "|",
        })
    }
}
