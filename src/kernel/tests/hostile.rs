//! The guest boundary, tried as a hostile guest would: spinning without a hypercall, reading
//! what the hypervisor may have left in its registers, writing SPRs the hypervisor also uses,
//! hypervisor-privileged instructions, `sc 1` from problem state, partition-scoped faults.
//! Each test ends by checking that the hypervisor's own state is what it was before the test
//! (its SPRs, PIDR, LPCR, LPIDR, its MMU guard) and that a normal guest still runs with every
//! register intact.
use alloc::vec::Vec;

use crate::arch::ppc64::guest::SWITCHED_SPRS;
use crate::arch::ppc64::mmu;
use crate::arch::ppc64::spr::{self, mfspr, Msr};
use crate::hcall::{HcallResult, H_GET_TCE, H_PUT_TCE};
use crate::hv::abi::{self, guest_op, outcome, Call, CallResult};
use crate::hv::vcpu::{vector, Exit};
use crate::kernel::guests::{
    call, describe_exit, partition, CallOutcome, Partition, Path, EXIT_GUEST, EXIT_TIMEOUT,
    GUEST_RAM, LIOBN_4K, PINNED_POOL,
};
use crate::kernel::testing::{fail, TestFailure, TestResult};
use crate::{kassert, kassert_eq, ktest};

/// A guest action for the mailbox.
fn act(op: u64, args: &[u64]) -> Call {
    call(abi::GUEST_ACTION | op, args)
}

/// The hypervisor's own state that no guest may change: the switched SPRs but DEC (which
/// counts), and the partition registers, MSR, HSPRG0 and partition-table entry 0.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    sprs: Vec<(&'static str, u64)>,
}

fn host_state() -> HostState {
    let switched = [
        mfspr::<48>(),
        0, // DEC counts down: not compared
        mfspr::<272>(),
        mfspr::<273>(),
        mfspr::<274>(),
        mfspr::<275>(),
        mfspr::<29>(),
        mfspr::<61>(),
        mfspr::<157>(),
        mfspr::<17>(),
        mfspr::<896>(),
        mfspr::<159>(),
        mfspr::<815>(),
        mfspr::<153>(),
        mfspr::<19>(),
        mfspr::<18>(),
    ];
    let mut sprs: Vec<(&'static str, u64)> = SWITCHED_SPRS
        .iter()
        .zip(switched)
        .filter(|((n, _), _)| *n != spr::DEC)
        .map(|((_, name), v)| (*name, v))
        .collect();
    let pate0 = mmu::partition_entry(0).unwrap_or((0, 0));
    sprs.extend([
        ("LPCR", mfspr::<{ spr::LPCR }>()),
        ("LPIDR", mfspr::<{ mmu::LPIDR }>()),
        ("PTCR", mfspr::<464>()),
        ("HSPRG0", mfspr::<{ spr::HSPRG0 }>()),
        ("MSR", spr::msr().bits()),
        ("PATE0.0", pate0.0),
        ("PATE0.1", pate0.1),
    ]);
    HostState { sprs }
}

/// The end of every hostile test: the hypervisor's state is as it was, its guard holds, and a
/// normal guest runs with every register intact.
fn hypervisor_intact(p: &mut Partition, before: &HostState) -> TestResult {
    let after = host_state();
    for (b, a) in before.sprs.iter().zip(&after.sprs) {
        kassert_eq!(b, a, "the hypervisor's {} changed", b.0);
    }
    kassert_eq!(mfspr::<{ spr::PIDR }>(), mmu::HOST_PIDR, "the guard's PIDR");
    kassert!(mmu::host_lpcr_is_sane(), "HDICE set in the host's LPCR");
    p.limit.limit = crate::kernel::guests::DEFAULT_RUN_LIMIT_TICKS;
    let calls = [
        call(H_GET_TCE, &[LIOBN_4K, 0]),
        call(0x4242, &[1, 2, 3]),
        call(crate::hcall::H_PUT_TERM_CHAR, &[0, 0, 0, 0]),
    ];
    p.set_mailbox(abi::action::CALLS, &calls, 1)
        .map_err(|e| fail(e.0))?;
    let code = p.run();
    kassert_eq!(
        code,
        EXIT_GUEST,
        "a normal guest after: {}",
        describe_exit(code)
    );
    for i in 0..calls.len() {
        let r = p.result(i);
        kassert!(
            r.regs_ok == 1,
            "a normal guest after: register {} changed to {:#x}",
            crate::kernel::guests::reg_name(r.bad_reg),
            r.bad_value
        );
    }
    // Leave the windows as the next test expects them: empty, no level allocated.
    let v = mmu::virt_mode().ok_or_else(|| fail("the kernel runs with the MMU off"))?;
    kassert!(p.reset(v), "could not reset the guest's windows");
    Ok(())
}

fn outcomes(p: &mut Partition, calls: &[Call]) -> Result<Vec<CallOutcome>, TestFailure> {
    let o = p.run_restarting(calls).map_err(|e| fail(e.0))?;
    kassert_eq!(o.len(), calls.len(), "outcomes");
    Ok(o)
}

fn action_result(o: &CallOutcome, what: &str) -> Result<CallResult, TestFailure> {
    match o {
        CallOutcome::Action(r) => Ok(*r),
        other => Err(fail(alloc::format!("{what}: {other:?}"))),
    }
}

fn stopped_code(o: &CallOutcome, what: &str) -> Result<u64, TestFailure> {
    match o {
        CallOutcome::Stopped(c) => Ok(*c),
        other => Err(fail(alloc::format!("{what}: not stopped: {other:?}"))),
    }
}

fn spin_is_stopped(op: u64, what: &str) -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    // The guest's own count of decrementer interrupts, from zero.
    let _ = p.write_bytes(abi::DEC_COUNT_GPA, &0u64.to_le_bytes());
    let t0 = spr::timebase();
    let o = outcomes(&mut p, &[act(op, &[]), call(H_GET_TCE, &[LIOBN_4K, 0])])?;
    let ticks = spr::timebase() - t0;
    kassert_eq!(stopped_code(&o[0], what)?, EXIT_TIMEOUT, "{what}");
    kassert!(
        ticks >= p.limit.limit,
        "{what}: stopped after {ticks} ticks, before its limit"
    );
    kassert!(
        matches!(o[1], CallOutcome::Hcall { .. }),
        "{what}: the call after the stop was not made: {:?}",
        o[1]
    );
    let decs = p.read_u64(abi::DEC_COUNT_GPA).unwrap_or(0);
    if op == guest_op::SPIN_EE {
        kassert!(decs > 0, "{what}: the guest's own decrementer never fired");
    } else {
        kassert_eq!(decs, 0, "{what}: decrementer interrupts with MSR[EE] off");
    }
    crate::kprintln!(
        "\n    stopped after {} ms, {} slices, {decs} guest decrementer interrupts",
        ticks / (spr::TIMEBASE_HZ / 1000),
        p.preemptions
    );
    hypervisor_intact(&mut p, &before)
}

fn a_spinning_guest_is_stopped_at_its_time_limit() -> TestResult {
    spin_is_stopped(guest_op::SPIN, "spin with MSR[EE] off")
}
ktest!(
    "hv.hostile.spin_is_stopped_at_the_time_limit",
    a_spinning_guest_is_stopped_at_its_time_limit
);

fn a_guest_spinning_with_interrupts_on_is_stopped() -> TestResult {
    spin_is_stopped(guest_op::SPIN_EE, "spin with MSR[EE] on")
}
ktest!(
    "hv.hostile.spin_ee_is_stopped_at_the_time_limit",
    a_guest_spinning_with_interrupts_on_is_stopped
);

/// Whether `v` could be an address of the hypervisor's: its linear map, its image, its heap.
fn hypervisor_address(v: u64) -> bool {
    let b = crate::kernel::boot();
    v >> 60 == 0xc
        || (b.heap.start..b.heap.end).contains(&v)
        || (0x2000_0000..0x3000_0000).contains(&v)
}

fn no_spr_shows_a_hypervisor_address_after_a_hypercall() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    // Counters and identity registers hold numbers, not addresses: not compared.
    let sprs: Vec<(&str, u64)> = abi::SPRS
        .iter()
        .copied()
        .filter(|(n, _)| !matches!(*n, "tb" | "purr" | "spurr" | "dec" | "pvr"))
        .collect();
    for force_virtual in [false, true] {
        p.force_virtual = force_virtual;
        let calls: Vec<Call> = sprs
            .iter()
            .map(|&(_, n)| act(guest_op::SPR, &[n]))
            .collect();
        let o = outcomes(&mut p, &calls);
        p.force_virtual = false;
        let o = o?;
        for ((name, _), o) in sprs.iter().zip(&o) {
            let r = action_result(o, name)?;
            kassert_eq!(
                r.r3,
                outcome::OK,
                "{name}: the read took interrupt {:#x}",
                r.r4
            );
            kassert!(
                !hypervisor_address(r.r4),
                "{name} holds {:#x} after a hypercall ({})",
                r.r4,
                if force_virtual {
                    "virtual path"
                } else {
                    "real mode"
                }
            );
        }
        // The hypercall each read made went where it was sent.
        kassert!(p.trace.iter().all(|t| t.r3 == HcallResult::Function.code()));
    }
    let cfar = sprs.iter().position(|(n, _)| *n == "cfar").unwrap_or(0);
    let o = outcomes(&mut p, &[act(guest_op::SPR, &[sprs[cfar].1])])?;
    let r = action_result(&o[0], "cfar")?;
    kassert!(
        r.r4 != 0 && r.r4 < GUEST_RAM,
        "CFAR after sc 1 is not the guest's own branch: {:#x}",
        r.r4
    );
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.no_hypervisor_address_after_a_hypercall",
    no_spr_shows_a_hypervisor_address_after_a_hypercall
);

fn guest_sprs_are_the_guests_and_the_hypervisors_stay() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    // PIDR, SPRG0-3, DEC and the rest written by the guest, read back after hypercalls of
    // both paths: the guest keeps its values, the hypervisor keeps its own.
    let writes: [(u64, u64); 9] = [
        (48, 0x1234),
        (272, 0x1111_0000_0000_0001),
        (273, 0x2222_0000_0000_0002),
        (274, 0x3333_0000_0000_0003),
        (275, 0x4444_0000_0000_0004),
        (22, 0x10),
        (17, 0x15),
        (19, 0xdead_0000),
        (815, 0x5000),
    ];
    // Each read follows a hypercall of its own (`guest spr`): in real mode, then forced down
    // the virtual path, where the hypervisor switches its own PIDR in and out.
    for force_virtual in [false, true] {
        let mut calls: Vec<Call> = writes
            .iter()
            .map(|&(n, v)| act(guest_op::MTSPR, &[n, v]))
            .collect();
        calls.extend(
            writes
                .iter()
                .filter(|(n, _)| *n != 22)
                .map(|&(n, _)| act(guest_op::SPR, &[n])),
        );
        p.force_virtual = force_virtual;
        let o = outcomes(&mut p, &calls);
        p.force_virtual = false;
        let o = o?;
        for (i, (n, v)) in writes.iter().enumerate() {
            let r = action_result(&o[i], "mtspr")?;
            kassert_eq!(r.r3, outcome::OK, "mtspr {n}: interrupt {:#x}", r.r4);
            if *n != 22 {
                kassert_eq!(r.r4, *v, "mtspr {n} read back");
            }
        }
        let want = if force_virtual {
            Path::Virtual
        } else {
            Path::Other
        };
        kassert!(
            !p.trace.is_empty() && p.trace.iter().all(|t| t.path == want),
            "the reads' hypercalls did not take the {want:?} path"
        );
        kassert!(
            !force_virtual || p.trace.iter().all(|t| t.virt_state_ok),
            "a virtual-mode handler ran without the hypervisor's PIDR or translation"
        );
        for (k, (n, v)) in writes.iter().filter(|(n, _)| *n != 22).enumerate() {
            let r = action_result(&o[writes.len() + k], "spr")?;
            kassert_eq!(r.r4, *v, "SPR {n} after a hypercall ({want:?})");
        }
    }
    // The vCPU's saved copy is the guest's.
    kassert_eq!(p.regs.sprs.get(48), Some(0x1234), "the vCPU's PIDR");
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.guest_sprs_stay_the_guests",
    guest_sprs_are_the_guests_and_the_hypervisors_stay
);

/// `mtspr` words of hypervisor-privileged SPRs, `hrfid`, `tlbie`, `slbia`-like cases: none may
/// reach the hypervisor's state. QEMU gives most to the guest's own 0x700; a POWER9 may raise
/// HEAI (0xE40) for some, which stops the guest. Both are fine: what matters is after.
fn privileged_instructions_change_nothing_of_the_hypervisor() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    let words: [(&str, u32, u64); 9] = [
        ("mtspr LPIDR", abi::mtspr_word(319, 3), 7),
        ("mtspr LPCR", abi::mtspr_word(318, 3), 0),
        ("mtspr HDEC", abi::mtspr_word(310, 3), 0x7fff_ffff),
        ("mtspr PTCR", abi::mtspr_word(464, 3), 0),
        ("mtspr HSPRG0", abi::mtspr_word(304, 3), 0),
        ("mtspr HRMOR", abi::mtspr_word(313, 3), 0x1000_0000),
        ("hrfid", 0x4c00_0224, 0),
        ("tlbie r3,r0 (RIC=2 IS=3)", 0x7c09_1a64, 3 << 10),
        ("mtmsrd HV", 0x7c60_0164, 1 << 60),
    ];
    let calls: Vec<Call> = words
        .iter()
        .map(|&(_, w, r3)| act(guest_op::INSN, &[u64::from(w), r3]))
        .collect();
    let o = outcomes(&mut p, &calls)?;
    crate::kprintln!();
    for ((what, _, _), o) in words.iter().zip(&o) {
        let shown = match o {
            CallOutcome::Action(r) if r.r3 == outcome::INTERRUPT => {
                alloc::format!("the guest's own interrupt {:#x}", r.r4)
            }
            CallOutcome::Action(r) => alloc::format!("no effect (r3 {:#x})", r.r4),
            CallOutcome::Stopped(c) => describe_exit(*c),
            CallOutcome::Hcall { .. } => return Err(fail(alloc::format!("{what}: a hypercall?"))),
        };
        crate::kprintln!("    {what}: {shown}");
        if let CallOutcome::Stopped(c) = o {
            kassert!(
                matches!(Exit::from_code(*c), Some(Exit::Fault(_))),
                "{what}: {}",
                describe_exit(*c)
            );
        }
    }
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.privileged_instructions_change_nothing",
    privileged_instructions_change_nothing_of_the_hypervisor
);

fn partition_scoped_faults_stop_the_guest_with_hdar_hdsisr_asdr() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    let far = 0x7000_0000; // no memory there
    let o = outcomes(
        &mut p,
        &[
            act(guest_op::LOAD, &[far]),
            act(guest_op::STORE, &[far + 0x1008, 5]),
            act(guest_op::EXEC, &[far + 0x2000]),
            act(guest_op::LOAD, &[PINNED_POOL.0]),
        ],
    )?;
    for (i, (what, vec)) in [
        ("load", vector::HDSI),
        ("store", vector::HDSI),
        ("exec", vector::HISI),
    ]
    .into_iter()
    .enumerate()
    {
        let code = stopped_code(&o[i], what)?;
        kassert_eq!(Exit::from_code(code), Some(Exit::Fault(vec)), "{what}");
    }
    let r = action_result(&o[3], "a load from the guest's own memory")?;
    kassert_eq!(r.r3, outcome::OK);
    // Run the load alone again to inspect its report.
    let o = outcomes(&mut p, &[act(guest_op::LOAD, &[far + 0x18])])?;
    stopped_code(&o[0], "load")?;
    let g = p
        .fault
        .as_ref()
        .ok_or_else(|| fail("no fault recorded for the stopped load"))?;
    kassert_eq!(g.hdar, far + 0x18, "HDAR");
    kassert!(g.hdsisr != 0, "HDSISR empty");
    kassert_eq!(g.asdr & !0xfff, far & !0xfff, "ASDR (the guest real page)");
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.partition_scoped_faults_are_reported",
    partition_scoped_faults_stop_the_guest_with_hdar_hdsisr_asdr
);

fn a_stopped_guest_restarts_with_its_memory_and_windows() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    p.limit.limit = spr::TIMEBASE_HZ / 10;
    let pin = PINNED_POOL.0 + 0x8_0000;
    let o = outcomes(
        &mut p,
        &[
            act(guest_op::STORE, &[pin, 0x600d]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x9000, pin | 3]),
            act(guest_op::SPIN, &[]),
            act(guest_op::LOAD, &[0x7000_0000]),
            call(H_GET_TCE, &[LIOBN_4K, 0x9000]),
            act(guest_op::LOAD, &[pin]),
            call(H_PUT_TCE, &[LIOBN_4K, 0x9000, 0]),
        ],
    )?;
    kassert_eq!(stopped_code(&o[2], "spin")?, EXIT_TIMEOUT);
    stopped_code(&o[3], "unmapped load")?;
    match o[4] {
        CallOutcome::Hcall { trace, result } => {
            kassert_eq!(result.r3, 0, "H_GET_TCE after two stops");
            kassert_eq!(result.r4, pin | 3, "the TCE the first vCPU put");
            kassert_eq!(p.trace[trace].r4, pin | 3);
        }
        ref other => return Err(fail(alloc::format!("H_GET_TCE: {other:?}"))),
    }
    kassert_eq!(
        action_result(&o[5], "load")?.r4,
        0x600d,
        "the guest's memory"
    );
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.stopped_guest_restarts_with_its_state",
    a_stopped_guest_restarts_with_its_memory_and_windows
);

fn the_partition_has_state_of_its_own() -> TestResult {
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    let (dw0, dw1) =
        mmu::partition_entry(p.lpid).ok_or_else(|| fail("no partition-table entry"))?;
    kassert!(dw0 >> 63 == 1, "entry 1 is not a radix partition: {dw0:#x}");
    kassert!(
        dw1 == 0 || dw1 & 0x0fff_ffff_ffff_f000 < GUEST_RAM,
        "partition-table entry 1 names a process table outside the guest: {dw1:#x}"
    );
    let guest_lpcr = mmu::guest_lpcr();
    kassert!(guest_lpcr & 1 == 1, "the guest's LPCR lacks HDICE");
    kassert!(mmu::host_lpcr_is_sane(), "the host's LPCR has HDICE");
    kassert_eq!(
        guest_lpcr & !1,
        mfspr::<{ spr::LPCR }>() & !(1 | (1 << 3) | (1 << 11)),
        "the guest's LPCR differs from the host's beyond HDICE, LPES and MER"
    );
    // A guest run leaves LPIDR 0 and the host's MSR.
    let o = outcomes(&mut p, &[call(0x4242, &[])])?;
    kassert!(matches!(o[0], CallOutcome::Hcall { .. }));
    kassert_eq!(mfspr::<{ mmu::LPIDR }>(), 0, "LPIDR after the run");
    kassert!(spr::msr().contains(Msr::IR | Msr::DR | Msr::HV));
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.partition_state_is_its_own",
    the_partition_has_state_of_its_own
);

fn problem_state_sc_gets_a_program_interrupt() -> TestResult {
    use abi::proc_tbl::{GTSE, NEW, RADIX};
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    let table = abi::GUEST_PROCESS_TABLE_GPA;
    let reg = abi::H_REGISTER_PROC_TBL;
    let o = outcomes(
        &mut p,
        &[
            // Refused: tlbie of its own, a hash table, a misaligned or outside table.
            call(reg, &[NEW | RADIX | GTSE, table, 0, 0]),
            call(reg, &[NEW | 0x2, table, 0, 0]),
            call(reg, &[NEW | RADIX, table + 8, 0, 0]),
            call(reg, &[NEW | RADIX, GUEST_RAM, 0, 0]),
            act(guest_op::USER_SC, &[]),
        ],
    )?;
    for (i, o) in o.iter().take(4).enumerate() {
        match o {
            CallOutcome::Hcall { result, .. } => kassert_eq!(
                result.r3 as i64,
                HcallResult::Parameter.code(),
                "bad registration {i}"
            ),
            other => return Err(fail(alloc::format!("registration {i}: {other:?}"))),
        }
    }
    let r = action_result(&o[4], "user_sc")?;
    kassert!(
        r.r3 == outcome::INTERRUPT && r.r4 == vector::PROGRAM,
        "sc 1 from problem state: outcome {} value {:#x}, not the guest's program interrupt",
        r.r3,
        r.r4
    );
    // The registered table is a guest real address, GR set; nothing of the host's.
    let (_, dw1) = mmu::partition_entry(p.lpid).ok_or_else(|| fail("no partition-table entry"))?;
    kassert_eq!(
        dw1,
        (1 << 63) | table,
        "partition-table entry 1, doubleword 1"
    );
    // The problem-state call reached no handler: only the registrations are in the trace.
    kassert_eq!(p.trace.len(), 5, "hypercalls seen: {:?}", p.trace);
    hypervisor_intact(&mut p, &before)?;
    let (_, dw1) = mmu::partition_entry(p.lpid).unwrap_or((0, 1));
    kassert_eq!(dw1, 0, "a fresh vCPU still had the old process table");
    Ok(())
}
ktest!(
    "hv.hostile.problem_state_sc_is_a_program_interrupt",
    problem_state_sc_gets_a_program_interrupt
);

/// The guest's register check, mutated once for good: the hypervisor damages one piece of
/// state on its way back from the virtual path, and the check must name it, whether the
/// pattern had the bits set (call 0) or clear (call 1).
fn the_register_check_catches_every_clobber() -> TestResult {
    use crate::kernel::guests::Clobber;
    let mut p = partition().map_err(|e| fail(e.0))?;
    let before = host_state();
    let cases = [
        (Clobber::Gpr(0), 0),
        (Clobber::Gpr(13), 13),
        (Clobber::CrField(2), 32),
        (Clobber::CrField(7), 32),
        (Clobber::XerCa, 35),
        (Clobber::XerOv32, 35),
        (Clobber::Cfar, 38),
        (Clobber::Sprg2, 42),
    ];
    let calls = [call(0x4242, &[]), call(0x4242, &[])];
    p.force_virtual = true;
    let mut r = Ok(());
    for (c, reg) in cases {
        p.clobber = Some(c);
        let o = p.run_restarting(&calls);
        p.clobber = None;
        let Ok(o) = o else {
            r = Err(fail("the run could not be set up"));
            break;
        };
        for (i, o) in o.iter().enumerate() {
            match o {
                CallOutcome::Hcall { result, .. } if result.regs_ok == 0 => {
                    if result.bad_reg != reg {
                        r = Err(fail(alloc::format!(
                            "{c:?}, call {i}: the check named {} instead of {}",
                            crate::kernel::guests::reg_name(result.bad_reg),
                            crate::kernel::guests::reg_name(reg)
                        )));
                    }
                }
                other => {
                    r = Err(fail(alloc::format!(
                        "{c:?}, call {i}: not caught: {other:?}"
                    )))
                }
            }
        }
    }
    p.force_virtual = false;
    r?;
    hypervisor_intact(&mut p, &before)
}
ktest!(
    "hv.hostile.register_check_catches_every_clobber",
    the_register_check_catches_every_clobber
);
