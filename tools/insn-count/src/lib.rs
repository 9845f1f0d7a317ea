//! `insn-count`: a QEMU TCG plugin (plugin API version 1, as Debian's QEMU 7.2 accepts it) that
//! gives the p9iommu kernel exact instruction counts between two marker no-ops.
//!
//! Load it with `qemu-system-ppc64 ... -plugin target/release/libinsn_count.so[,print=on]`
//! (`./qemu-run.sh bench` and `./qemu-run.sh --count ...` do).
//!
//! # What is counted
//! Per vCPU, every guest instruction that *starts executing*, at any address and in any mode
//! (hypervisor real mode, OPAL firmware, exception vectors: everything the vCPU runs), counted
//! at the start of the instruction. An instruction that raises an exception (`sc`, a faulting
//! load) therefore counts once; an instruction a translation block never reaches because an
//! earlier one left the block does not count. This is the same set of instructions a
//! `-singlestep -d nochain,exec` trace logs as `Trace` lines.
//!
//! The two markers are little-endian `ori` no-ops that neither skiboot (big-endian) nor
//! compiled code emits:
//! - start `ori 27,27,0` (0x637b0000): the vCPU's region starts after this instruction;
//! - stop `ori 28,28,0` (0x639c0000): the region ends before this instruction.
//!
//! The figure for a region is the number of instructions that started strictly between a start
//! marker and the next stop marker on the same vCPU: both markers are excluded; every other
//! instruction in between (including any other marker-free code, firmware, and the branch and
//! prologue instructions that lead to the stop marker) is included. A second start marker
//! before a stop restarts the region.
//!
//! # Where the figure goes
//! The stop marker must begin this 16-byte-aligned sequence (the kernel's
//! `arch::ppc64::icount`), which reserves a quad in the instruction stream:
//! ```text
//!     ori  28,28,0       # +0   stop marker
//!     b    1f            # +4   0x4800000c, skips the quad
//!     .quad SENTINEL     # +8   the plugin writes the count here
//! 1:
//! ```
//! When the stop marker starts executing, the plugin writes the region's count, a
//! little-endian u64, to the 8 bytes at the marker's host address + 8; the kernel then reads
//! them with an ordinary load. If no start marker preceded the stop on that vCPU, it writes
//! `u64::MAX` (the kernel's sentinel: "no count"). A stop marker that is not followed by that
//! exact `b` or is not 16-byte aligned gets nothing written (it still ends the region). The
//! write goes straight to guest RAM from the host: it is not a guest store, so QEMU's
//! self-modifying-code tracking is not involved, and the quad is never executed.
//!
//! With `print=on` the plugin also prints one line per region,
//! `insn-count: vcpu V region N: COUNT insns`, through `qemu_plugin_outs`: QEMU shows them only
//! with `-d plugin` (send them to a file with `-D FILE` to keep them off the console).
//!
//! # Profiles
//! With `profile=FILE` the plugin also records, per region, how many instructions started at
//! each address, and appends them to FILE when the region ends: a line `region N COUNT`, then
//! one line `PC COUNT` per address, highest count first. `tools/insn-count/profile.py` turns
//! that into a per-function breakdown. Profiling counts with a callback per instruction (the
//! address is the callback's data): slower, and the figures are the same.
//!
//! # vCPUs
//! With one vCPU (`-smp 1`, the kernel's benches) the counter is a TCG inline add per
//! instruction: cheap (a few percent of run time). With more, QEMU 7.2's inline adds cannot be
//! per vCPU (translated code is shared), so the plugin counts with a per-instruction callback
//! into per-vCPU counters instead: still exact per vCPU, slower.
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

// ---- the QEMU 7.2 plugin API (include/qemu/qemu-plugin.h, version 1), the parts used ----------

type PluginId = u64;

/// `qemu_info_t`.
#[repr(C)]
pub struct QemuInfo {
    target_name: *const c_char,
    _version_min: c_int,
    _version_cur: c_int,
    system_emulation: bool,
    /// `system.smp_vcpus` (valid when `system_emulation`).
    smp_vcpus: c_int,
    /// `system.max_vcpus`.
    max_vcpus: c_int,
}

#[repr(C)]
pub struct Tb {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct Insn {
    _opaque: [u8; 0],
}

/// `QEMU_PLUGIN_INLINE_ADD_U64`.
const INLINE_ADD_U64: c_int = 0;
/// `QEMU_PLUGIN_CB_NO_REGS`.
const CB_NO_REGS: c_int = 0;

type TbTransCb = extern "C" fn(id: PluginId, tb: *mut Tb);
type VcpuUdataCb = extern "C" fn(vcpu_index: c_uint, userdata: *mut c_void);

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const Tb, idx: usize) -> *mut Insn;
    fn qemu_plugin_insn_data(insn: *const Insn) -> *const c_void;
    fn qemu_plugin_insn_size(insn: *const Insn) -> usize;
    fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    fn qemu_plugin_insn_haddr(insn: *const Insn) -> *mut c_void;
    fn qemu_plugin_register_vcpu_insn_exec_inline(
        insn: *mut Insn,
        op: c_int,
        ptr: *mut c_void,
        imm: u64,
    );
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: VcpuUdataCb,
        flags: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_outs(string: *const c_char);
}

/// The plugin API version this plugin is written against (QEMU checks it before install).
#[no_mangle]
pub static qemu_plugin_version: c_int = 1;

// ---- the markers --------------------------------------------------------------------------------

/// `ori 27,27,0`.
const START: u32 = 0x637b_0000;
/// `ori 28,28,0`.
const STOP: u32 = 0x639c_0000;
/// `b .+12`: the instruction after the stop marker, jumping over the reserved quad.
const SKIP_QUAD: u32 = 0x4800_000c;
/// Written when a stop marker had no start marker before it (the kernel's sentinel).
const NO_COUNT: u64 = u64::MAX;

// ---- state --------------------------------------------------------------------------------------

/// One vCPU's counters. Each is written only from its vCPU's thread (by translated code or by
/// the callbacks QEMU runs on that thread); atomics just make the sharing well-defined.
struct Vcpu {
    /// Instructions started, markers excluded.
    count: AtomicU64,
    /// `count` at the last start marker, or `NONE` outside a region.
    start: AtomicU64,
    /// Regions completed (for the printed lines).
    regions: AtomicU64,
}

const NONE: u64 = u64::MAX;

struct State {
    vcpus: Box<[Vcpu]>,
    /// `profile=FILE`: the per-address counts of the open region (all vCPUs: profile with one)
    /// and where they go.
    profile: Option<std::sync::Mutex<Profile>>,
    /// One vCPU: count with inline adds into `vcpus[0].count`; otherwise with callbacks.
    inline: bool,
    print: bool,
}

struct Profile {
    out: std::fs::File,
    pcs: std::collections::HashMap<u64, u64>,
}

static STATE: OnceLock<State> = OnceLock::new();
static WARNED_LAYOUT: AtomicBool = AtomicBool::new(false);

fn state() -> &'static State {
    STATE.get().expect("qemu_plugin_install ran")
}

fn outs(line: &str) {
    if let Ok(s) = CString::new(line) {
        // SAFETY: a NUL-terminated string that outlives the call.
        unsafe { qemu_plugin_outs(s.as_ptr()) };
    }
}

// ---- translation: instrument every instruction ------------------------------------------------

extern "C" fn on_tb_trans(_id: PluginId, tb: *mut Tb) {
    let st = state();
    // SAFETY: `tb` is the block QEMU is translating, valid for this callback.
    let n = unsafe { qemu_plugin_tb_n_insns(tb) };
    for i in 0..n {
        // SAFETY: `i` < the block's instruction count.
        let insn = unsafe { qemu_plugin_tb_get_insn(tb, i) };
        match word(insn) {
            Some(START) => {
                // SAFETY: `insn` belongs to the block being translated; the callback and its
                // (unused) userdata stay valid for the life of the translation.
                unsafe {
                    qemu_plugin_register_vcpu_insn_exec_cb(
                        insn,
                        on_start,
                        CB_NO_REGS,
                        std::ptr::null_mut(),
                    )
                };
            }
            Some(STOP) => {
                let quad = reserved_quad(insn);
                if quad.is_null() && !WARNED_LAYOUT.swap(true, Ordering::Relaxed) {
                    // SAFETY: as above.
                    let pc = unsafe { qemu_plugin_insn_vaddr(insn) };
                    outs(&format!(
                        "insn-count: stop marker at {pc:#x} is not followed by a reserved quad: \
                         its counts are not written to guest memory\n"
                    ));
                }
                // SAFETY: as for START; `quad` is null or points into guest RAM (see
                // `reserved_quad`), which outlives the translated block.
                unsafe {
                    qemu_plugin_register_vcpu_insn_exec_cb(insn, on_stop, CB_NO_REGS, quad.cast())
                };
            }
            _ if st.profile.is_some() => {
                // SAFETY: as for START; the userdata is the instruction's address, not a pointer.
                unsafe {
                    let pc = qemu_plugin_insn_vaddr(insn);
                    qemu_plugin_register_vcpu_insn_exec_cb(
                        insn,
                        on_insn_profile,
                        CB_NO_REGS,
                        pc as usize as *mut c_void,
                    )
                };
            }
            _ if st.inline => {
                // SAFETY: `count` is a static's field: it outlives every translated block.
                unsafe {
                    qemu_plugin_register_vcpu_insn_exec_inline(
                        insn,
                        INLINE_ADD_U64,
                        st.vcpus[0].count.as_ptr().cast(),
                        1,
                    )
                };
            }
            _ => {
                // SAFETY: as for START.
                unsafe {
                    qemu_plugin_register_vcpu_insn_exec_cb(
                        insn,
                        on_insn,
                        CB_NO_REGS,
                        std::ptr::null_mut(),
                    )
                };
            }
        }
    }
}

/// The instruction's 32-bit word as a little-endian guest stores it (`None` for other sizes).
fn word(insn: *const Insn) -> Option<u32> {
    // SAFETY: `insn` is an instruction of the block being translated.
    let (data, size) = unsafe { (qemu_plugin_insn_data(insn), qemu_plugin_insn_size(insn)) };
    if size != 4 || data.is_null() {
        return None;
    }
    // SAFETY: QEMU holds the instruction's `size` (= 4) bytes at `data`.
    let bytes = unsafe { std::ptr::read_unaligned(data.cast::<[u8; 4]>()) };
    Some(u32::from_le_bytes(bytes))
}

/// The host address of the quad a stop marker reserves (marker + 8), or null when the marker
/// is not in the expected layout: 16-byte aligned, followed by `b .+12`, backed by RAM.
fn reserved_quad(insn: *const Insn) -> *mut u8 {
    // SAFETY: `insn` is an instruction of the block being translated.
    let (pc, host) = unsafe { (qemu_plugin_insn_vaddr(insn), qemu_plugin_insn_haddr(insn)) };
    if host.is_null() || pc % 16 != 0 {
        return std::ptr::null_mut();
    }
    let host = host.cast::<u8>();
    // SAFETY: `host` points at the marker in guest RAM; the marker is 16-byte aligned, so
    // bytes +4..+16 lie in the same (at least 4 KiB) guest page, hence in the same host
    // mapping.
    let next = unsafe { std::ptr::read_unaligned(host.add(4).cast::<[u8; 4]>()) };
    if u32::from_le_bytes(next) != SKIP_QUAD {
        return std::ptr::null_mut();
    }
    // SAFETY: as above, +8 is inside the same page.
    unsafe { host.add(8) }
}

// ---- execution ----------------------------------------------------------------------------------

fn vcpu(index: c_uint) -> Option<&'static Vcpu> {
    state().vcpus.get(index as usize)
}

/// Counting callback, used with more than one vCPU.
extern "C" fn on_insn(vcpu_index: c_uint, _: *mut c_void) {
    if let Some(v) = vcpu(vcpu_index) {
        // Only this vCPU's thread writes its counter: load + store is enough.
        v.count
            .store(v.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Profiling callback: counts, and inside a region records the address (the userdata).
extern "C" fn on_insn_profile(vcpu_index: c_uint, pc: *mut c_void) {
    let Some(v) = vcpu(vcpu_index) else { return };
    v.count
        .store(v.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    if v.start.load(Ordering::Relaxed) == NONE {
        return;
    }
    if let Some(p) = &state().profile {
        if let Ok(mut p) = p.lock() {
            *p.pcs.entry(pc as usize as u64).or_insert(0) += 1;
        }
    }
}

extern "C" fn on_start(vcpu_index: c_uint, _: *mut c_void) {
    if let Some(v) = vcpu(vcpu_index) {
        v.start
            .store(v.count.load(Ordering::Relaxed), Ordering::Relaxed);
        // A start restarts the region: so does its profile.
        if let Some(Ok(mut p)) = state().profile.as_ref().map(|p| p.lock()) {
            p.pcs.clear();
        }
    }
}

extern "C" fn on_stop(vcpu_index: c_uint, quad: *mut c_void) {
    let Some(v) = vcpu(vcpu_index) else { return };
    let start = v.start.swap(NONE, Ordering::Relaxed);
    let figure = if start == NONE {
        NO_COUNT
    } else {
        v.count.load(Ordering::Relaxed) - start
    };
    if !quad.is_null() {
        // SAFETY: `quad` was checked at translation (`reserved_quad`) to be the 8 reserved bytes
        // after a stop marker in guest RAM. The guest reads them only after the marker.
        unsafe { std::ptr::write_volatile(quad.cast::<[u8; 8]>(), figure.to_le_bytes()) };
    }
    let n = v.regions.fetch_add(1, Ordering::Relaxed);
    if let Some(p) = &state().profile {
        if let Ok(mut p) = p.lock() {
            use std::io::Write;
            let mut pcs: Vec<(u64, u64)> = p.pcs.drain().collect();
            pcs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut text = format!("region {n} {figure}\n");
            for (pc, c) in pcs {
                text.push_str(&format!("{pc:#x} {c}\n"));
            }
            if p.out.write_all(text.as_bytes()).is_err() {
                outs("insn-count: could not write the profile\n");
            }
        }
    }
    if state().print {
        if figure == NO_COUNT {
            outs(&format!(
                "insn-count: vcpu {vcpu_index} region {n}: stop marker without a start marker\n"
            ));
        } else {
            outs(&format!(
                "insn-count: vcpu {vcpu_index} region {n}: {figure} insns\n"
            ));
        }
    }
}

// ---- installation -------------------------------------------------------------------------------

/// Called by QEMU once, before the guest starts. Arguments: `print=on|off` (default off).
///
/// # Safety
/// QEMU passes a valid `info` and `argc` valid C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    info: *const QemuInfo,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let mut print = false;
    let mut profile = None;
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: QEMU passes `argc` valid NUL-terminated strings.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        match arg.split_once('=') {
            Some(("print", "on" | "true" | "yes")) => print = true,
            Some(("print", "off" | "false" | "no")) => print = false,
            Some(("profile", path)) => match std::fs::File::create(path) {
                Ok(out) => {
                    profile = Some(std::sync::Mutex::new(Profile {
                        out,
                        pcs: Default::default(),
                    }))
                }
                Err(e) => {
                    eprintln!("insn-count: cannot create the profile {path:?}: {e}");
                    return -1;
                }
            },
            _ => {
                eprintln!("insn-count: unknown argument {arg:?} (expected print=on|off or profile=FILE)");
                return -1;
            }
        }
    }
    // SAFETY: QEMU passes a valid `qemu_info_t` for the duration of the call.
    let info = unsafe { &*info };
    // SAFETY: `target_name` is a NUL-terminated string.
    let target = unsafe { CStr::from_ptr(info.target_name) }.to_string_lossy();
    if !target.starts_with("ppc") {
        eprintln!("insn-count: the markers are POWER instructions; target is {target}");
        return -1;
    }
    let vcpus = if info.system_emulation {
        info.max_vcpus.max(info.smp_vcpus).max(1) as usize
    } else {
        // User mode: threads come and go; give them room (more are ignored).
        64
    };
    let state = State {
        vcpus: (0..vcpus)
            .map(|_| Vcpu {
                count: AtomicU64::new(0),
                start: AtomicU64::new(NONE),
                regions: AtomicU64::new(0),
            })
            .collect(),
        inline: info.system_emulation && vcpus == 1 && profile.is_none(),
        print,
        profile,
    };
    if STATE.set(state).is_err() {
        eprintln!("insn-count: loaded twice");
        return -1;
    }
    // SAFETY: `id` is this plugin's id; the callback is a plain function.
    unsafe { qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans) };
    0
}
