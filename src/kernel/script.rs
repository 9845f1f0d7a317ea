//! `qemu-run.sh script FILE...`: the hypercall scripts in the initrd, each run by the test guest
//! through `sc 1`. Every call prints its result and the path that completed it; a result that
//! does not match the script's expectation, or a script that does not parse, fails the run and
//! names the file and line.
use alloc::vec::Vec;

use crate::arch::ppc64::mmu;
use crate::hv::abi;
use crate::hv::script::{parse_bundle, Layout, Outcome, Pool, Script};
use crate::kernel::guests::{
    self, describe_exit, partition, Path, EXIT_GUEST, PINNED_POOL, SYMBOLS, UNPINNED_POOL,
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
    if let Err(e) = p.set_mailbox(abi::action::CALLS, &calls, 1) {
        kprintln!("{name}: {}", e.0);
        return false;
    }
    let code = p.run();
    let mut ok = code == EXIT_GUEST;
    if !ok {
        kprintln!("{name}: {}", describe_exit(code));
    }
    for (i, c) in resolved.calls.iter().enumerate() {
        let Some(t) = p.trace.get(i) else {
            kprintln!("{name}:{}: {c}: never made", c.line);
            ok = false;
            continue;
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
        let r = p.result(i);
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
    }
    if !p.console.is_empty() {
        kprintln!("{name}: guest console: {:?}", p.console.as_str());
        p.console.clear();
    }
    ok
}
