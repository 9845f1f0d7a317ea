//! OPAL, skiboot's runtime interface. Calls enter firmware big-endian with the MMU off (see
//! `opal_call_raw` in boot/entry.S); every value passed through memory is big-endian and is
//! converted by name here.
use core::sync::atomic::{AtomicU64, Ordering};

pub const OPAL_CONSOLE_WRITE: u64 = 1;
pub const OPAL_CEC_POWER_DOWN: u64 = 5;
pub const OPAL_CEC_REBOOT: u64 = 6;
pub const OPAL_POLL_EVENTS: u64 = 10;
pub const OPAL_PCI_CONFIG_READ_BYTE: u64 = 13;
pub const OPAL_PCI_CONFIG_READ_HALF_WORD: u64 = 14;
pub const OPAL_PCI_CONFIG_READ_WORD: u64 = 15;
pub const OPAL_PCI_CONFIG_WRITE_BYTE: u64 = 16;
pub const OPAL_PCI_CONFIG_WRITE_HALF_WORD: u64 = 17;
pub const OPAL_PCI_CONFIG_WRITE_WORD: u64 = 18;
pub const OPAL_PCI_EEH_FREEZE_STATUS: u64 = 23;
pub const OPAL_PCI_EEH_FREEZE_CLEAR: u64 = 26;
pub const OPAL_PCI_SET_PE: u64 = 31;
pub const OPAL_PCI_SET_PELTV: u64 = 32;
pub const OPAL_PCI_MAP_PE_DMA_WINDOW: u64 = 44;
pub const OPAL_PCI_MAP_PE_DMA_WINDOW_REAL: u64 = 45;
pub const OPAL_REINIT_CPUS: u64 = 70;
pub const OPAL_PCI_EEH_FREEZE_SET: u64 = 97;
pub const OPAL_PCI_TCE_KILL: u64 = 126;
pub const OPAL_HANDLE_HMI: u64 = 98;
pub const OPAL_HANDLE_HMI2: u64 = 166;

pub const OPAL_SUCCESS: i64 = 0;
pub const OPAL_BUSY: i64 = -2;
pub const OPAL_BUSY_EVENT: i64 = -12;

/// `OPAL_REINIT_CPUS` flags: take hypervisor interrupts little-endian, radix MMU.
pub const OPAL_REINIT_CPUS_HILE_LE: u64 = 1 << 1;
pub const OPAL_REINIT_CPUS_MMU_RADIX: u64 = 1 << 3;

// Read by the trampoline in boot/entry.S; set once from the FDT before the first call.
#[no_mangle]
#[allow(non_upper_case_globals)]
static opal_base_addr: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
#[allow(non_upper_case_globals)]
static opal_entry_addr: AtomicU64 = AtomicU64::new(0);

extern "C" {
    fn opal_call_raw(token: u64, args: *const [u64; 8]) -> i64;
}

/// The physical address of kernel memory handed to OPAL (which runs with the MMU off and is
/// given physical addresses, as Linux gives it `__pa()`).
fn pa<T>(p: *const T) -> u64 {
    crate::mm::HostPhys::of_linear(p).0
}

/// Record OPAL's base and entry (from `/ibm,opal` in the FDT).
pub fn init(base: u64, entry: u64) {
    opal_base_addr.store(base, Ordering::Relaxed);
    opal_entry_addr.store(entry, Ordering::Relaxed);
}

/// Whether OPAL has been located.
pub fn is_ready() -> bool {
    opal_entry_addr.load(Ordering::Relaxed) != 0
}

/// Make an OPAL call with up to 8 arguments.
///
/// # Safety
/// The arguments must be what firmware expects for `token`: pointers are real addresses of
/// memory that stays valid (and, for outputs, writable) for the call.
pub unsafe fn call(token: u64, args: &[u64]) -> i64 {
    debug_assert!(is_ready());
    let mut a = [0u64; 8];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the trampoline follows the OPAL calling convention; the caller vouches for args.
    unsafe { opal_call_raw(token, &a) }
}

/// Poll firmware events (flushes the console, services the BMC).
pub fn poll_events() {
    // SAFETY: a null event mask pointer is allowed.
    unsafe { call(OPAL_POLL_EVENTS, &[0]) };
}

/// Write all of `bytes` to console 0, retrying while firmware is busy. Gives up (dropping the
/// rest) only after a long run of no progress, so a broken console cannot hang the kernel.
pub fn console_write(bytes: &[u8]) {
    if !is_ready() {
        return;
    }
    let mut rest = bytes;
    let mut stalls = 0u32;
    while !rest.is_empty() && stalls < 100_000 {
        // OPAL reads and writes the length big-endian.
        let mut len_be: u64 = (rest.len() as u64).to_be();
        // SAFETY: len_be and rest outlive the call; OPAL gets their physical addresses.
        let rc = unsafe {
            call(
                OPAL_CONSOLE_WRITE,
                &[0, pa(&raw mut len_be), pa(rest.as_ptr())],
            )
        };
        let written = if rc == OPAL_SUCCESS {
            u64::from_be(len_be) as usize
        } else {
            0
        };
        if written == 0 {
            stalls += 1;
            poll_events();
        } else {
            stalls = 0;
            rest = &rest[written.min(rest.len())..];
        }
        if rc != OPAL_SUCCESS && rc != OPAL_BUSY && rc != OPAL_BUSY_EVENT {
            return;
        }
    }
}

/// Reboot the machine (on a POWER9 box: back to petitboot, for the next trial). Under QEMU this
/// restarts the emulated machine, so the QEMU runs power off instead.
pub fn reboot() -> ! {
    loop {
        // SAFETY: CEC_REBOOT takes no argument.
        let rc = unsafe { call(OPAL_CEC_REBOOT, &[]) };
        if rc != OPAL_BUSY && rc != OPAL_BUSY_EVENT {
            break;
        }
        poll_events();
    }
    loop {
        poll_events();
    }
}

/// Power the machine off. Under QEMU (with its default BMC) this ends the emulator.
pub fn power_down() -> ! {
    loop {
        // SAFETY: CEC_POWER_DOWN takes a plain integer.
        let rc = unsafe { call(OPAL_CEC_POWER_DOWN, &[0]) };
        if rc != OPAL_BUSY && rc != OPAL_BUSY_EVENT {
            break;
        }
        poll_events();
    }
    loop {
        poll_events();
    }
}

/// Let firmware handle a hypervisor maintenance interrupt on this CPU (OPAL_HANDLE_HMI2,
/// or OPAL_HANDLE_HMI on firmware without it, as Linux does); returns OPAL's code. The HMI2
/// output flags (timebase lost or resynced) are not acted on: this kernel keeps no time of
/// day.
pub fn handle_hmi() -> i64 {
    let mut flags = 0u64;
    // SAFETY: HMI2 takes the real address of a u64 it writes; `flags` lives across the call.
    let rc = unsafe { call(OPAL_HANDLE_HMI2, &[pa(&flags)]) };
    core::hint::black_box(&mut flags);
    if rc == OPAL_SUCCESS {
        return rc;
    }
    // SAFETY: HMI takes no argument.
    unsafe { call(OPAL_HANDLE_HMI, &[]) }
}

/// Ask firmware to reconfigure all CPUs (e.g. to take hypervisor interrupts little-endian).
pub fn reinit_cpus(flags: u64) -> i64 {
    loop {
        // SAFETY: REINIT_CPUS takes a plain integer.
        let rc = unsafe { call(OPAL_REINIT_CPUS, &[flags]) };
        if rc != OPAL_BUSY && rc != OPAL_BUSY_EVENT {
            return rc;
        }
        poll_events();
    }
}

/// Read 1, 2 or 4 bytes of a PCI function's config space (`bdfn` = bus << 8 | dev << 3 | fn).
pub fn pci_config_read(phb_id: u64, bdfn: u16, offset: u16, size: u8) -> Result<u32, i64> {
    let (rc, value) = match size {
        1 => {
            let mut v: u8 = 0;
            // SAFETY: `v` outlives the call and is one byte, as firmware writes.
            let rc = unsafe {
                call(
                    OPAL_PCI_CONFIG_READ_BYTE,
                    &[phb_id, bdfn.into(), offset.into(), pa(&raw mut v)],
                )
            };
            (rc, u32::from(v))
        }
        2 => {
            let mut v_be: u16 = 0;
            // SAFETY: as above, two bytes, written big-endian.
            let rc = unsafe {
                call(
                    OPAL_PCI_CONFIG_READ_HALF_WORD,
                    &[phb_id, bdfn.into(), offset.into(), pa(&raw mut v_be)],
                )
            };
            (rc, u32::from(u16::from_be(v_be)))
        }
        _ => {
            let mut v_be: u32 = 0;
            // SAFETY: as above, four bytes, written big-endian.
            let rc = unsafe {
                call(
                    OPAL_PCI_CONFIG_READ_WORD,
                    &[phb_id, bdfn.into(), offset.into(), pa(&raw mut v_be)],
                )
            };
            (rc, u32::from_be(v_be))
        }
    };
    if rc == OPAL_SUCCESS {
        Ok(value)
    } else {
        Err(rc)
    }
}

/// OPAL_PCI_EEH_FREEZE_STATUS(phb_id, pe_number, u8 *freeze_state, __be16 *pci_error_type,
/// __be64 *phb_status): the PE's freeze state byte and PCI error type (converted from
/// big-endian). The deprecated `phb_status` is NULL, as Linux passes it (skiboot logs an error
/// for any other value).
pub fn pci_eeh_freeze_status(phb_id: u64, pe: u64) -> Result<(u8, u16), i64> {
    let mut state: u8 = 0;
    let mut error_type_be: u16 = 0;
    // SAFETY: both out-parameters outlive the call and are the sizes firmware writes (one
    // byte; two bytes, big-endian); OPAL gets their physical addresses; NULL is accepted for
    // the third.
    let rc = unsafe {
        call(
            OPAL_PCI_EEH_FREEZE_STATUS,
            &[
                phb_id,
                pe,
                pa(&raw mut state),
                pa(&raw mut error_type_be),
                0,
            ],
        )
    };
    if rc == OPAL_SUCCESS {
        Ok((state, u16::from_be(error_type_be)))
    } else {
        Err(rc)
    }
}

/// Write 1, 2 or 4 bytes of a PCI function's config space. Values go in a register, so no
/// byte swap is involved.
pub fn pci_config_write(
    phb_id: u64,
    bdfn: u16,
    offset: u16,
    size: u8,
    value: u32,
) -> Result<(), i64> {
    let token = match size {
        1 => OPAL_PCI_CONFIG_WRITE_BYTE,
        2 => OPAL_PCI_CONFIG_WRITE_HALF_WORD,
        _ => OPAL_PCI_CONFIG_WRITE_WORD,
    };
    // SAFETY: all arguments are plain integers.
    let rc = unsafe { call(token, &[phb_id, bdfn.into(), offset.into(), value.into()]) };
    if rc == OPAL_SUCCESS {
        Ok(())
    } else {
        Err(rc)
    }
}
