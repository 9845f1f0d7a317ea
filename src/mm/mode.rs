//! Execution mode as a type.
//!
//! A hypercall runs first in hypervisor *real mode* (MMU off: no allocation, no waiting, only
//! physical and linear-map addresses), and whatever real mode cannot finish it declines, to be
//! completed in *virtual mode* (MMU on). Code that needs one of them says so in its signature by
//! taking a [`RealMode`] or [`VirtMode`] token; code that runs in either is generic over
//! [`ExecMode`]. The tokens are zero-sized and minted only by the entry paths (the hypercall
//! vector and the switch to virtual mode), which is why minting is `unsafe`.
//!
//! Declining is a type too: real mode's [`ExecMode::Decline`] is [`TooHard`]; virtual mode's is
//! uninhabited, so a virtual-mode result can never be "too hard".

use core::convert::Infallible;
use core::marker::PhantomData;

/// "Take the slower path": real mode could not finish and changed nothing. Never reaches a
/// guest (PAPR's H_TOO_HARD, 9999, is KVM-internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooHard;

impl TooHard {
    /// The value KVM uses for it internally (H_TOO_HARD), for logs and traces only.
    pub const CODE: i64 = 9999;
}

/// Proof that this CPU runs in hypervisor real mode on a hypercall's real-mode path. Not `Send`:
/// it speaks for the CPU that made it.
///
/// Neither token can be sent to another thread (nor shared: it is not `Sync` either):
/// ```compile_fail,E0277
/// # use p9iommu::mm::RealMode;
/// // SAFETY: a test standing for a real-mode entry path.
/// let rm = unsafe { RealMode::new_unchecked() };
/// std::thread::spawn(move || drop(rm)); // `*const ()` cannot be sent between threads
/// ```
/// while the mode's label, a plain value, can:
/// ```
/// # use p9iommu::mm::{ExecMode, RealMode};
/// # use p9iommu::mm::Mode;
/// // SAFETY: a test standing for a real-mode entry path.
/// let rm = unsafe { RealMode::new_unchecked() };
/// fn label<M: ExecMode>(_: M) -> Mode {
///     M::MODE
/// }
/// let label = label(rm);
/// std::thread::spawn(move || drop(label)).join().unwrap();
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RealMode {
    _not_send: PhantomData<*const ()>,
}

/// Proof that this CPU runs in hypervisor virtual mode (MMU on: hypervisor-virtual mappings are
/// reachable, allocation and waiting are allowed).
#[derive(Debug, Clone, Copy)]
pub struct VirtMode {
    _not_send: PhantomData<*const ()>,
}

impl RealMode {
    /// Mints the token.
    ///
    /// Only in `unsafe` (the struct's field is private, so this is the only way):
    /// ```compile_fail,E0133
    /// # use p9iommu::mm::RealMode;
    /// let rm = RealMode::new_unchecked(); // call to unsafe function
    /// # let _ = rm;
    /// ```
    /// ```
    /// # use p9iommu::mm::RealMode;
    /// // SAFETY: a test standing for a real-mode entry path.
    /// let rm = unsafe { RealMode::new_unchecked() };
    /// # let _ = rm;
    /// ```
    ///
    /// # Safety
    /// The caller is a real-mode entry path: the CPU runs with MSR[IR|DR] = 0 (or, on the host,
    /// a test standing for it) and stays so while the token is used, and a
    /// [`crate::mm::alloc_guard::RealModeScope`] is active so that any allocation fails loudly.
    #[inline(always)]
    pub const unsafe fn new_unchecked() -> Self {
        RealMode {
            _not_send: PhantomData,
        }
    }
}

impl VirtMode {
    /// Mints the token; `unsafe` as [`RealMode::new_unchecked`] is:
    /// ```compile_fail,E0133
    /// # use p9iommu::mm::VirtMode;
    /// let v = VirtMode::new_unchecked(); // call to unsafe function
    /// # let _ = v;
    /// ```
    ///
    /// # Safety
    /// The CPU runs with the hypervisor's translation on (MSR[IR|DR] = 1) while the token is
    /// used (on the host: ordinary user-space code, where every pointer is mapped).
    #[inline(always)]
    pub const unsafe fn new_unchecked() -> Self {
        VirtMode {
            _not_send: PhantomData,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::RealMode {}
    impl Sealed for super::VirtMode {}
}

/// Either mode: what code that runs in both needs to know of the one it runs in.
///
/// Sealed: [`RealMode`] and [`VirtMode`] are the only modes. A third, outside this crate, does
/// not compile, though it is `Copy` and gives every item (the missing bound is `Sealed`):
/// ```compile_fail,E0277
/// use p9iommu::mm::{ExecMode, Mode, Token, TooHard};
/// #[derive(Clone, Copy)]
/// struct HalfReal;
/// impl ExecMode for HalfReal {
///     type Decline = TooHard;
///     const MODE: Mode = Mode::Real;
///     fn decline(self) -> Option<TooHard> {
///         Some(TooHard)
///     }
///     fn token(self) -> Token {
///         unimplemented!()
///     }
/// }
/// ```
pub trait ExecMode: sealed::Sealed + Copy {
    /// Why this mode may give up: [`TooHard`] in real mode, nothing in virtual mode.
    type Decline: Copy + core::fmt::Debug;
    /// Which mode, as a label for counters and traces.
    const MODE: Mode;
    /// Real mode: the decline value; virtual mode: `None` (it must finish, and may wait and
    /// allocate to do so).
    fn decline(self) -> Option<Self::Decline>;
    /// The token itself, for the few steps that differ by mode.
    fn token(self) -> Token;
    /// The real-mode token, if this is real mode.
    #[inline(always)]
    fn real(self) -> Option<RealMode> {
        match self.token() {
            Token::Real(rm) => Some(rm),
            Token::Virt(_) => None,
        }
    }
}

/// One of the two tokens.
#[derive(Debug, Clone, Copy)]
pub enum Token {
    /// MMU off.
    Real(RealMode),
    /// MMU on.
    Virt(VirtMode),
}

impl ExecMode for RealMode {
    type Decline = TooHard;
    const MODE: Mode = Mode::Real;
    #[inline(always)]
    fn decline(self) -> Option<TooHard> {
        Some(TooHard)
    }
    #[inline(always)]
    fn token(self) -> Token {
        Token::Real(self)
    }
}

impl ExecMode for VirtMode {
    type Decline = Infallible;
    const MODE: Mode = Mode::Virtual;
    #[inline(always)]
    fn decline(self) -> Option<Infallible> {
        None
    }
    #[inline(always)]
    fn token(self) -> Token {
        Token::Virt(self)
    }
}

/// A mode as a value: a label for counters, traces and test fixtures. Handlers never branch on
/// it; they are generic over [`ExecMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// MMU off.
    Real,
    /// MMU on.
    Virtual,
}
