//! The console: OPAL console 0, serialized by a spin lock. `kprint!`/`kprintln!` write to it.
use core::fmt::{self, Write};

use crate::arch::ppc64::opal;

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

struct OpalConsole;

impl Write for OpalConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        opal::console_write(s.as_bytes());
        Ok(())
    }
}

/// Print formatted text. Used through `kprint!`/`kprintln!`.
pub fn print(args: fmt::Arguments) {
    let _guard = LOCK.lock();
    let _ = OpalConsole.write_fmt(args);
}

/// Print on the way down (panic, exception): never waits for a lock the failing code may hold.
pub fn print_emergency(args: fmt::Arguments) {
    let _guard = LOCK.try_lock();
    let _ = OpalConsole.write_fmt(args);
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::kernel::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::kernel::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
