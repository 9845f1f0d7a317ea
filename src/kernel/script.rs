//! `qemu-run.sh script FILE...`: the hypercall scripts in the initrd, each run by the test guest
//! through `sc 1`. Every call prints its result and the path that completed it, every guest
//! action what it came to; a result that does not match the script's expectation, or a script
//! that does not parse, fails the run and names the file and line. A guest the hypervisor stops
//! (a fault, its time limit) is reported and restarted at the next line, in the same partition.
use alloc::vec::Vec;

use crate::arch::ppc64::mmu;
use crate::hv::abi;
use crate::hv::script::{parse_bundle, GuestExpect, Layout, Outcome, Pool, ResolvedCall, Script};
use crate::hv::vcpu::Exit;
use crate::kernel::guests::{
    self, describe_exit, partition, CallOutcome, Partition, Path, PINNED_POOL, SYMBOLS,
    UNPINNED_POOL,
};
use crate::kprintln;
use crate::mm::{HostPhys, Mode};

/// Runs every script of the initrd; true if all parsed and every expectation held.
pub fn run_initrd() -> bool {
    let Some(r) = crate::kernel::boot().initrd else {
        kprintln!(
            "p9iommu: script mode needs the scripts as an initrd (qemu-run.sh script FILE...)"
        );
        return false;
    };
    // SAFETY: the loader's initrd, kept out of the heap, read through the linear map.
    let bytes = unsafe {
        core::slice::from_raw_parts(HostPhys(r.start).linear() as *const u8, r.len() as usize)
    };
    let files = parse_bundle(bytes);
    let mut failed = 0usize;
    for (name, parsed) in &files {
        let ok = match parsed {
            Err(e) => {
                kprintln!("{name}:{}: error: {}", e.line, e.message);
                false
            }
            Ok(s) => run_script(name, s),
        };
        kprintln!("script {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    kprintln!("{} passed, {failed} failed", files.len() - failed);
    failed == 0 && !files.is_empty()
}

fn run_script(name: &str, s: &Script) -> bool {
    let layout = Layout {
        pinned: Pool {
            base: PINNED_POOL.0,
            size: PINNED_POOL.1 - PINNED_POOL.0,
        },
        unpinned: Pool {
            base: UNPINNED_POOL.0,
            size: UNPINNED_POOL.1 - UNPINNED_POOL.0,
        },
        align: 64 << 10,
    };
    let resolved = match s.resolve(&layout, &SYMBOLS) {
        Ok(r) => r,
        Err(e) => {
            kprintln!("{name}:{}: error: {}", e.line, e.message);
            return false;
        }
    };
    let (Ok(mut p), Some(v)) = (partition(), mmu::virt_mode()) else {
        kprintln!("{name}: the guest partition could not be built");
        return false;
    };
    if !p.reset(v) {
        kprintln!("{name}: could not clear the guest's windows");
        return false;
    }
    // The guest owns the first edu device when there is one: its windows are the tables the
    // PHB walks for the device's PE, and its BAR is in the guest's memory map.
    let mut device = match crate::kernel::device::kernel_owned(0) {
        Ok(d) => d,
        Err(e) => {
            kprintln!("{name}: the edu device could not be set up: {e}");
            return false;
        }
    };
    if let Some(d) = device.as_mut() {
        if let Err(e) = d.give(&mut p, v) {
            kprintln!("{name}: the edu device could not be handed to the guest: {e}");
            return false;
        }
    }
    let ok = run_resolved(name, &mut p, &resolved);
    let back = device.map_or(Ok(()), |mut d| {
        d.take_back(&mut p, v).and_then(|()| d.release())
    });
    if let Err(e) = &back {
        kprintln!("{name}: the edu device could not be taken back: {e}");
    }
    ok && back.is_ok()
}

fn run_resolved(name: &str, p: &mut Partition, resolved: &crate::hv::script::Resolved) -> bool {
    for l in &resolved.lists {
        for (i, e) in l.entries.iter().enumerate() {
            if p.write_be64(l.gpa + 8 * i as u64, *e).is_err() {
                kprintln!("{name}:{}: list outside guest memory", l.line);
                return false;
            }
        }
    }
    let calls: Vec<abi::Call> = resolved
        .calls
        .iter()
        .map(|c| abi::Call {
            nr: c.nr,
            args: c.regs(),
        })
        .collect();
    p.limit.limit = guests::DEFAULT_RUN_LIMIT_TICKS;
    let outcomes = match p.run_restarting(&calls) {
        Ok(o) => o,
        Err(e) => {
            kprintln!("{name}: {}", e.0);
            return false;
        }
    };
    let mut ok = true;
    for (c, o) in resolved.calls.iter().zip(&outcomes) {
        ok &= match *o {
            CallOutcome::Hcall { trace, result } => check_hcall(name, p, c, trace, &result),
            CallOutcome::Action(r) => {
                let got = if r.r3 == abi::outcome::OK {
                    GuestExpect::Ok(Some(r.r4))
                } else {
                    GuestExpect::Interrupt(r.r4)
                };
                check_guest(name, c, got)
            }
            CallOutcome::Stopped(code) => match Exit::from_code(code) {
                Some(Exit::Timeout) if abi::is_action(c.nr) => {
                    check_guest(name, c, GuestExpect::Timeout)
                }
                Some(Exit::Fault(v)) if abi::is_action(c.nr) => {
                    check_guest(name, c, GuestExpect::Stopped(v))
                }
                _ => {
                    kprintln!("{name}:{}: {c}: {}", c.line, describe_exit(code));
                    false
                }
            },
        };
    }
    if !p.console.is_empty() {
        kprintln!("{name}: guest console: {:?}", p.console.as_str());
        p.console.clear();
    }
    ok
}

/// One hypercall's line: its result and path, checked against the script's expectation and
/// the guest's register check.
fn check_hcall(
    name: &str,
    p: &Partition,
    c: &ResolvedCall,
    trace: usize,
    r: &abi::CallResult,
) -> bool {
    let Some(t) = p.trace.get(trace) else {
        kprintln!("{name}:{}: {c}: never reached the hypervisor", c.line);
        return false;
    };
    let via = if t.path == Path::Virtual {
        Mode::Virtual
    } else {
        Mode::Real
    };
    let got = Outcome {
        code: t.r3,
        r4: t.r4,
        via,
    };
    let r4 = if abi::returns_r4(c.nr) {
        alloc::format!(" r4={:#x}", t.r4)
    } else {
        alloc::string::String::new()
    };
    let shown = alloc::format!(
        "{name}:{}: {c} = {}{r4} ({})",
        c.line,
        guests::code_name(t.r3),
        guests::path_name(t.path)
    );
    let mut ok = true;
    match &c.expect {
        Some(e) if !e.accepts(&got) => {
            kprintln!("{shown}: MISMATCH, expected {e}");
            ok = false;
        }
        _ => kprintln!("{shown}"),
    }
    if r.regs_ok != 1 {
        kprintln!(
            "{name}:{}: register {} changed to {:#x} across the call",
            c.line,
            guests::reg_name(r.bad_reg),
            r.bad_value
        );
        ok = false;
    }
    ok
}

/// One guest action's line: what it came to, checked against the script's expectation. An
/// SPR the guest read after a hypercall must never hold a hypervisor address.
fn check_guest(name: &str, c: &ResolvedCall, got: GuestExpect) -> bool {
    let shown = alloc::format!("{name}:{}: {c} => {got}", c.line);
    let is_read = c.nr & !abi::GUEST_ACTION == abi::guest_op::SPR;
    if let (true, GuestExpect::Ok(Some(v))) = (is_read, got) {
        if v >> 60 == 0xc {
            kprintln!("{shown}: a hypervisor address is visible to the guest");
            return false;
        }
    }
    match &c.guest_expect {
        Some(e) if !e.accepts(&got) => {
            kprintln!("{shown}: MISMATCH, expected {e}");
            false
        }
        _ => {
            kprintln!("{shown}");
            true
        }
    }
}
