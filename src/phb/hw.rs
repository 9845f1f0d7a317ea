//! The small traits through which the portable PHB code reaches hardware and firmware.
//!
//! `arch::ppc64` implements them for the machine; host tests fake them. All of them take
//! `&self` so one instance can be shared between CPUs; implementations that need ordering
//! between CPUs provide it themselves (the drivers above them add their own locks where the
//! hardware protocol needs one).

use core::fmt;

use super::regs::PhbReg;

/// A PCI requester ID: bus in bits 15:8, device in 7:3, function in 2:0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdfn(pub u16);

impl Bdfn {
    /// Builds a BDF; `dev` and `func` are truncated to 5 and 3 bits.
    pub const fn new(bus: u8, dev: u8, func: u8) -> Bdfn {
        Bdfn(((bus as u16) << 8) | (((dev & 0x1f) as u16) << 3) | ((func & 0x7) as u16))
    }
    /// Bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Device number.
    pub const fn dev(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }
    /// Function number.
    pub const fn func(self) -> u8 {
        (self.0 & 0x7) as u8
    }
}

impl fmt::Debug for Bdfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus(), self.dev(), self.func())
    }
}

/// OPAL's id of a PHB (`ibm,opal-phbid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhbId(pub u64);

/// A PE number on one PHB (below its `ibm,opal-num-pes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeNum(pub u32);

impl fmt::Display for PeNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PE {}", self.0)
    }
}

/// One of a PE's two DMA windows (TVEs 2 * PE and 2 * PE + 1), which the PHB selects with
/// bus address bit 59: window 0 starts at bus address 0, window 1 at `1 << 59`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowId(u8);

impl WindowId {
    /// Window 0: the 32-bit window, bus offset 0.
    pub const DMA32: WindowId = WindowId(0);
    /// Window 1: the 64-bit window, bus offset `1 << 59`.
    pub const DMA64: WindowId = WindowId(1);

    /// Window `n`; `None` unless `n` is 0 or 1.
    pub const fn new(n: u8) -> Option<WindowId> {
        if n <= 1 {
            Some(WindowId(n))
        } else {
            None
        }
    }

    /// The window number, 0 or 1.
    pub const fn number(self) -> u8 {
        self.0
    }

    /// The only bus offset the PHB decodes for this window: 0 or `1 << 59`.
    pub const fn bus_offset(self) -> u64 {
        (self.0 as u64) << 59
    }

    /// The window a bus address selects (its bit 59).
    pub const fn of_bus_addr(bus_addr: u64) -> WindowId {
        WindowId(((bus_addr >> 59) & 1) as u8)
    }
}

/// A PE's freeze state, as OPAL_PCI_EEH_FREEZE_STATUS reports it (`enum OpalFreezeState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezeState {
    /// OPAL_EEH_STOPPED_NOT_FROZEN (0).
    NotFrozen,
    /// OPAL_EEH_STOPPED_MMIO_FREEZE (1): MMIO to the PE is stopped.
    Mmio,
    /// OPAL_EEH_STOPPED_DMA_FREEZE (2): DMA from the PE is stopped.
    Dma,
    /// OPAL_EEH_STOPPED_MMIO_DMA_FREEZE (3): both (also what a fenced PHB reports).
    MmioDma,
    /// OPAL_EEH_STOPPED_RESET (4).
    Reset,
    /// OPAL_EEH_STOPPED_TEMP_UNAVAIL (5).
    TempUnavailable,
    /// OPAL_EEH_STOPPED_PERM_UNAVAIL (6).
    PermUnavailable,
    /// A value `opal-api.h` does not define.
    Other(u8),
}

impl FreezeState {
    /// Decodes OPAL's byte.
    pub const fn from_raw(v: u8) -> FreezeState {
        match v {
            0 => Self::NotFrozen,
            1 => Self::Mmio,
            2 => Self::Dma,
            3 => Self::MmioDma,
            4 => Self::Reset,
            5 => Self::TempUnavailable,
            6 => Self::PermUnavailable,
            other => Self::Other(other),
        }
    }

    /// From the two PE state bits (PESTA MMIO frozen, PESTB DMA stopped), as skiboot's
    /// `phb4_eeh_freeze_status` combines them.
    pub const fn from_bits(mmio: bool, dma: bool) -> FreezeState {
        match (mmio, dma) {
            (false, false) => Self::NotFrozen,
            (true, false) => Self::Mmio,
            (false, true) => Self::Dma,
            (true, true) => Self::MmioDma,
        }
    }

    /// Whether the PE is in any state but "not frozen".
    pub const fn is_frozen(self) -> bool {
        !matches!(self, Self::NotFrozen)
    }
}

/// The error class OPAL_PCI_EEH_FREEZE_STATUS reports (`enum OpalPciStatusToken`). skiboot
/// reports [`PciErrorType::NoError`] for an ordinary PE freeze and [`PciErrorType::Phb`] for a
/// fenced or dead PHB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciErrorType {
    /// OPAL_EEH_NO_ERROR (0).
    NoError,
    /// OPAL_EEH_IOC_ERROR (1).
    Ioc,
    /// OPAL_EEH_PHB_ERROR (2).
    Phb,
    /// OPAL_EEH_PE_ERROR (3).
    Pe,
    /// OPAL_EEH_PE_MMIO_ERROR (4).
    PeMmio,
    /// OPAL_EEH_PE_DMA_ERROR (5).
    PeDma,
    /// A value `opal-api.h` does not define.
    Other(u16),
}

impl PciErrorType {
    /// Decodes OPAL's (host-order) half word.
    pub const fn from_raw(v: u16) -> PciErrorType {
        match v {
            0 => Self::NoError,
            1 => Self::Ioc,
            2 => Self::Phb,
            3 => Self::Pe,
            4 => Self::PeMmio,
            5 => Self::PeDma,
            other => Self::Other(other),
        }
    }
}

/// A PE's freeze state and the error class behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreezeStatus {
    /// Frozen, and what is stopped.
    pub state: FreezeState,
    /// The error class.
    pub error: PciErrorType,
}

impl FreezeStatus {
    /// Not frozen, no error.
    pub const CLEAR: FreezeStatus = FreezeStatus {
        state: FreezeState::NotFrozen,
        error: PciErrorType::NoError,
    };

    /// Whether the PE is frozen.
    pub const fn is_frozen(&self) -> bool {
        self.state.is_frozen()
    }
}

/// OPAL_PCI_EEH_FREEZE_CLEAR (and FREEZE_SET) actions (`enum OpalEehFreezeActionToken`: the
/// set actions have the same values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EehClear {
    /// OPAL_EEH_ACTION_CLEAR_FREEZE_MMIO.
    Mmio = 1,
    /// OPAL_EEH_ACTION_CLEAR_FREEZE_DMA.
    Dma = 2,
    /// OPAL_EEH_ACTION_CLEAR_FREEZE_ALL.
    All = 3,
}

/// OPAL_PCI_SET_PELTV actions (`enum OpalPeltvAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PeltvAction {
    /// OPAL_REMOVE_PE_FROM_DOMAIN.
    Remove = 0,
    /// OPAL_ADD_PE_TO_DOMAIN.
    Add = 1,
}

/// 64-bit access to one PHB's registers.
///
/// Contract: `reg` is an offset from the PHB register base; values are host order. The
/// registers are big-endian, so the implementation byte-swaps (`u64::from_be` after the
/// load, `u64::to_be` before the store). It uses cache-inhibited accesses that work in
/// hypervisor real mode (the TCE kill runs there), and `write` orders every earlier store to
/// memory (TCE and RTT updates) before the register store: a `sync` first.
pub trait PhbMmio {
    /// Reads a register.
    fn read(&self, reg: PhbReg) -> u64;
    /// Writes a register, after all earlier memory stores.
    fn write(&self, reg: PhbReg, value: u64);
}

/// Byte access to host physical memory, for the in-memory IODA tables (the RTT and the
/// PELT-V) that the PHB reads by physical address.
///
/// Contract: bytes are copied as they are (no swapping: the caller owns the format), except
/// by [`PhysMemory::write_be16`], which converts; the implementation may be called only with
/// addresses the PHB itself was given (`RTT_BAR`, `PELTV_BAR`).
pub trait PhysMemory {
    /// Copies `buf.len()` bytes at physical address `pa` into `buf`.
    fn read(&self, pa: u64, buf: &mut [u8]);
    /// Copies `buf` to physical address `pa`.
    fn write(&self, pa: u64, buf: &[u8]);
    /// Stores `value` big-endian at the 2-byte-aligned physical address `pa` in ONE 16-bit
    /// store (`u16::to_be` before the store), so a PHB reading the entry concurrently sees
    /// the old value or the new one, never half of each.
    fn write_be16(&self, pa: u64, value: u16);
}

impl<T: PhbMmio + ?Sized> PhbMmio for &T {
    fn read(&self, reg: PhbReg) -> u64 {
        (**self).read(reg)
    }
    fn write(&self, reg: PhbReg, value: u64) {
        (**self).write(reg, value)
    }
}

impl<T: PhysMemory + ?Sized> PhysMemory for &T {
    fn read(&self, pa: u64, buf: &mut [u8]) {
        (**self).read(pa, buf)
    }
    fn write(&self, pa: u64, buf: &[u8]) {
        (**self).write(pa, buf)
    }
    fn write_be16(&self, pa: u64, value: u16) {
        (**self).write_be16(pa, value)
    }
}

/// Why a PCI configuration access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciConfigError {
    /// The offset is outside the 4 KiB configuration space or not aligned to the size.
    BadOffset(u16),
    /// OPAL refused the access.
    Opal(OpalError),
    /// No function answers at that BDF (fakes, or back ends that can tell).
    NoDevice(Bdfn),
}

/// PCI configuration space access at (BDF, offset). Values are host order (configuration
/// space is little-endian; the implementation converts).
pub trait PciConfig {
    /// Reads a byte.
    fn read8(&self, bdfn: Bdfn, offset: u16) -> Result<u8, PciConfigError>;
    /// Reads a half word (offset 2-aligned).
    fn read16(&self, bdfn: Bdfn, offset: u16) -> Result<u16, PciConfigError>;
    /// Reads a word (offset 4-aligned).
    fn read32(&self, bdfn: Bdfn, offset: u16) -> Result<u32, PciConfigError>;
    /// Writes a byte.
    fn write8(&self, bdfn: Bdfn, offset: u16, value: u8) -> Result<(), PciConfigError>;
    /// Writes a half word (offset 2-aligned).
    fn write16(&self, bdfn: Bdfn, offset: u16, value: u16) -> Result<(), PciConfigError>;
    /// Writes a word (offset 4-aligned).
    fn write32(&self, bdfn: Bdfn, offset: u16, value: u32) -> Result<(), PciConfigError>;
}

/// Checks a configuration offset against the access size: inside 4 KiB and aligned.
pub fn check_config_offset(offset: u16, size: u16) -> Result<(), PciConfigError> {
    if !offset.is_multiple_of(size) || offset > 0x1000 - size {
        return Err(PciConfigError::BadOffset(offset));
    }
    Ok(())
}

/// An OPAL return code other than success (`include/opal-api.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpalError {
    /// OPAL_PARAMETER (-1).
    Parameter,
    /// OPAL_BUSY (-2).
    Busy,
    /// OPAL_PARTIAL (-3).
    Partial,
    /// OPAL_CONSTRAINED (-4).
    Constrained,
    /// OPAL_CLOSED (-5).
    Closed,
    /// OPAL_HARDWARE (-6).
    Hardware,
    /// OPAL_UNSUPPORTED (-7).
    Unsupported,
    /// OPAL_PERMISSION (-8).
    Permission,
    /// OPAL_NO_MEM (-9).
    NoMem,
    /// OPAL_RESOURCE (-10).
    Resource,
    /// OPAL_INTERNAL_ERROR (-11).
    Internal,
    /// OPAL_BUSY_EVENT (-12).
    BusyEvent,
    /// OPAL_HARDWARE_FROZEN (-13).
    HardwareFrozen,
    /// OPAL_WRONG_STATE (-14).
    WrongState,
    /// Any other code.
    Other(i64),
}

impl OpalError {
    /// Maps a raw OPAL return code: `Ok` for OPAL_SUCCESS (0).
    pub fn check(rc: i64) -> Result<(), OpalError> {
        Err(match rc {
            0 => return Ok(()),
            -1 => Self::Parameter,
            -2 => Self::Busy,
            -3 => Self::Partial,
            -4 => Self::Constrained,
            -5 => Self::Closed,
            -6 => Self::Hardware,
            -7 => Self::Unsupported,
            -8 => Self::Permission,
            -9 => Self::NoMem,
            -10 => Self::Resource,
            -11 => Self::Internal,
            -12 => Self::BusyEvent,
            -13 => Self::HardwareFrozen,
            -14 => Self::WrongState,
            other => Self::Other(other),
        })
    }
}

/// OPAL_PCI_TCE_KILL kill types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum OpalTceKillType {
    /// Pages of one PE.
    Pages = 0,
    /// Everything of one PE.
    Pe = 1,
    /// Everything of the PHB.
    All = 2,
}

/// The OPAL PCI calls the PHB driver uses (skiboot `include/opal-api.h`), typed: the token
/// numbers, the raw `i64` return codes and the physical addresses of out-parameters stay in
/// the implementation (`arch::ppc64`), which maps every return code with
/// [`OpalError::check`].
///
/// Contract: every call is usable in hypervisor real mode (the TCE kill is called from the
/// real-mode hypercall path). Values OPAL returns through memory are big-endian; the
/// implementation converts them to host order.
pub trait OpalPci {
    /// OPAL_PCI_SET_PE (31).
    #[allow(clippy::too_many_arguments)]
    fn pci_set_pe(
        &self,
        phb: PhbId,
        pe: PeNum,
        bdfn: Bdfn,
        bus_compare: u8,
        dev_compare: u8,
        func_compare: u8,
        action: u8,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_MAP_PE_DMA_WINDOW (44): `window_id` is the TVE index (`pe * 2 + window`);
    /// `table_size` is the size of ONE level; 0 disables the TVE.
    #[allow(clippy::too_many_arguments)]
    fn pci_map_pe_dma_window(
        &self,
        phb: PhbId,
        pe: PeNum,
        window_id: u16,
        levels: u16,
        table_addr: u64,
        table_size: u64,
        page_size: u64,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_MAP_PE_DMA_WINDOW_REAL (45): an untranslated (bypass) window; size 0
    /// disables it.
    fn pci_map_pe_dma_window_real(
        &self,
        phb: PhbId,
        pe: PeNum,
        window_id: u16,
        pci_start: u64,
        pci_size: u64,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_TCE_KILL (126).
    fn pci_tce_kill(
        &self,
        phb: PhbId,
        kill_type: OpalTceKillType,
        pe: PeNum,
        tce_size: u32,
        dma_addr: u64,
        npages: u32,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_EEH_FREEZE_STATUS (23): `(phb_id, pe_number, u8 *freeze_state, __be16
    /// *pci_error_type, __be64 *phb_status)`; the deprecated `phb_status` is passed as NULL.
    fn pci_eeh_freeze_status(&self, phb: PhbId, pe: PeNum) -> Result<FreezeStatus, OpalError>;
    /// OPAL_PCI_EEH_FREEZE_CLEAR (26).
    fn pci_eeh_freeze_clear(
        &self,
        phb: PhbId,
        pe: PeNum,
        action: EehClear,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_EEH_FREEZE_SET (97): freezes the PE as an error would (used by the hardware
    /// checks to see the freeze status and clear paths without a failing device).
    fn pci_eeh_freeze_set(&self, phb: PhbId, pe: PeNum, action: EehClear) -> Result<(), OpalError>;
    /// OPAL_PCI_SET_PELTV (32): `child` joins (or leaves) the PEs that `parent`'s errors
    /// freeze.
    fn pci_set_peltv(
        &self,
        phb: PhbId,
        parent: PeNum,
        child: PeNum,
        action: PeltvAction,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_CONFIG_READ_BYTE (13).
    fn pci_config_read_byte(&self, phb: PhbId, bdfn: Bdfn, offset: u16) -> Result<u8, OpalError>;
    /// OPAL_PCI_CONFIG_READ_HALF_WORD (14).
    fn pci_config_read_half_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
    ) -> Result<u16, OpalError>;
    /// OPAL_PCI_CONFIG_READ_WORD (15).
    fn pci_config_read_word(&self, phb: PhbId, bdfn: Bdfn, offset: u16) -> Result<u32, OpalError>;
    /// OPAL_PCI_CONFIG_WRITE_BYTE (16).
    fn pci_config_write_byte(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
        value: u8,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_CONFIG_WRITE_HALF_WORD (17).
    fn pci_config_write_half_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
        value: u16,
    ) -> Result<(), OpalError>;
    /// OPAL_PCI_CONFIG_WRITE_WORD (18).
    fn pci_config_write_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        offset: u16,
        value: u32,
    ) -> Result<(), OpalError>;
}

impl<T: OpalPci + ?Sized> OpalPci for &T {
    fn pci_set_pe(
        &self,
        phb: PhbId,
        pe: PeNum,
        bdfn: Bdfn,
        b: u8,
        d: u8,
        f: u8,
        action: u8,
    ) -> Result<(), OpalError> {
        (**self).pci_set_pe(phb, pe, bdfn, b, d, f, action)
    }
    fn pci_map_pe_dma_window(
        &self,
        phb: PhbId,
        pe: PeNum,
        window_id: u16,
        levels: u16,
        addr: u64,
        size: u64,
        page: u64,
    ) -> Result<(), OpalError> {
        (**self).pci_map_pe_dma_window(phb, pe, window_id, levels, addr, size, page)
    }
    fn pci_map_pe_dma_window_real(
        &self,
        phb: PhbId,
        pe: PeNum,
        w: u16,
        start: u64,
        size: u64,
    ) -> Result<(), OpalError> {
        (**self).pci_map_pe_dma_window_real(phb, pe, w, start, size)
    }
    fn pci_tce_kill(
        &self,
        phb: PhbId,
        kind: OpalTceKillType,
        pe: PeNum,
        sz: u32,
        addr: u64,
        n: u32,
    ) -> Result<(), OpalError> {
        (**self).pci_tce_kill(phb, kind, pe, sz, addr, n)
    }
    fn pci_eeh_freeze_status(&self, phb: PhbId, pe: PeNum) -> Result<FreezeStatus, OpalError> {
        (**self).pci_eeh_freeze_status(phb, pe)
    }
    fn pci_eeh_freeze_clear(
        &self,
        phb: PhbId,
        pe: PeNum,
        action: EehClear,
    ) -> Result<(), OpalError> {
        (**self).pci_eeh_freeze_clear(phb, pe, action)
    }
    fn pci_set_peltv(
        &self,
        phb: PhbId,
        parent: PeNum,
        child: PeNum,
        action: PeltvAction,
    ) -> Result<(), OpalError> {
        (**self).pci_set_peltv(phb, parent, child, action)
    }
    fn pci_eeh_freeze_set(&self, phb: PhbId, pe: PeNum, action: EehClear) -> Result<(), OpalError> {
        (**self).pci_eeh_freeze_set(phb, pe, action)
    }
    fn pci_config_read_byte(&self, phb: PhbId, bdfn: Bdfn, off: u16) -> Result<u8, OpalError> {
        (**self).pci_config_read_byte(phb, bdfn, off)
    }
    fn pci_config_read_half_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        off: u16,
    ) -> Result<u16, OpalError> {
        (**self).pci_config_read_half_word(phb, bdfn, off)
    }
    fn pci_config_read_word(&self, phb: PhbId, bdfn: Bdfn, off: u16) -> Result<u32, OpalError> {
        (**self).pci_config_read_word(phb, bdfn, off)
    }
    fn pci_config_write_byte(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        off: u16,
        v: u8,
    ) -> Result<(), OpalError> {
        (**self).pci_config_write_byte(phb, bdfn, off, v)
    }
    fn pci_config_write_half_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        off: u16,
        v: u16,
    ) -> Result<(), OpalError> {
        (**self).pci_config_write_half_word(phb, bdfn, off, v)
    }
    fn pci_config_write_word(
        &self,
        phb: PhbId,
        bdfn: Bdfn,
        off: u16,
        v: u32,
    ) -> Result<(), OpalError> {
        (**self).pci_config_write_word(phb, bdfn, off, v)
    }
}

/// PCI configuration access through OPAL for one PHB.
pub struct OpalConfig<'a, O: OpalPci + ?Sized> {
    opal: &'a O,
    phb: PhbId,
}

impl<'a, O: OpalPci + ?Sized> OpalConfig<'a, O> {
    /// Configuration access to the PHB OPAL knows as `phb` (`ibm,opal-phbid`).
    pub fn new(opal: &'a O, phb: PhbId) -> Self {
        Self { opal, phb }
    }
}

impl<O: OpalPci + ?Sized> PciConfig for OpalConfig<'_, O> {
    fn read8(&self, bdfn: Bdfn, offset: u16) -> Result<u8, PciConfigError> {
        check_config_offset(offset, 1)?;
        self.opal
            .pci_config_read_byte(self.phb, bdfn, offset)
            .map_err(PciConfigError::Opal)
    }
    fn read16(&self, bdfn: Bdfn, offset: u16) -> Result<u16, PciConfigError> {
        check_config_offset(offset, 2)?;
        self.opal
            .pci_config_read_half_word(self.phb, bdfn, offset)
            .map_err(PciConfigError::Opal)
    }
    fn read32(&self, bdfn: Bdfn, offset: u16) -> Result<u32, PciConfigError> {
        check_config_offset(offset, 4)?;
        self.opal
            .pci_config_read_word(self.phb, bdfn, offset)
            .map_err(PciConfigError::Opal)
    }
    fn write8(&self, bdfn: Bdfn, offset: u16, value: u8) -> Result<(), PciConfigError> {
        check_config_offset(offset, 1)?;
        self.opal
            .pci_config_write_byte(self.phb, bdfn, offset, value)
            .map_err(PciConfigError::Opal)
    }
    fn write16(&self, bdfn: Bdfn, offset: u16, value: u16) -> Result<(), PciConfigError> {
        check_config_offset(offset, 2)?;
        self.opal
            .pci_config_write_half_word(self.phb, bdfn, offset, value)
            .map_err(PciConfigError::Opal)
    }
    fn write32(&self, bdfn: Bdfn, offset: u16, value: u32) -> Result<(), PciConfigError> {
        check_config_offset(offset, 4)?;
        self.opal
            .pci_config_write_word(self.phb, bdfn, offset, value)
            .map_err(PciConfigError::Opal)
    }
}

/// What the PHB needs to know about a TCE table to point a TVE at it.
///
/// Implemented by the `tce` module's table; the PHB code depends only on this.
pub trait DmaWindowTable {
    /// Physical address of the top level (naturally aligned to [`Self::level_size`]).
    fn top_level_phys(&self) -> u64;
    /// Number of levels, 1..=5.
    fn levels(&self) -> u32;
    /// Bytes of one level (every level has the same size).
    fn level_size(&self) -> u64;
    /// IO page shift (12, 16, 21 or 30).
    fn page_shift(&self) -> u32;
    /// First bus address of the window.
    fn bus_offset(&self) -> u64;
    /// Bytes of bus address space the window covers.
    fn window_size(&self) -> u64;
}

impl<T: DmaWindowTable + ?Sized> DmaWindowTable for alloc::sync::Arc<T> {
    fn top_level_phys(&self) -> u64 {
        (**self).top_level_phys()
    }
    fn levels(&self) -> u32 {
        (**self).levels()
    }
    fn level_size(&self) -> u64 {
        (**self).level_size()
    }
    fn page_shift(&self) -> u32 {
        (**self).page_shift()
    }
    fn bus_offset(&self) -> u64 {
        (**self).bus_offset()
    }
    fn window_size(&self) -> u64 {
        (**self).window_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdfn_fields() {
        let b = Bdfn::new(1, 0x1f, 7);
        assert_eq!(b.0, 0x01ff);
        assert_eq!((b.bus(), b.dev(), b.func()), (1, 0x1f, 7));
        assert_eq!(Bdfn(0x0100), Bdfn::new(1, 0, 0));
        assert_eq!(alloc::format!("{:?}", Bdfn::new(1, 2, 3)), "01:02.3");
    }

    #[test]
    fn opal_codes() {
        assert_eq!(OpalError::check(0), Ok(()));
        assert_eq!(OpalError::check(-1), Err(OpalError::Parameter));
        assert_eq!(OpalError::check(-6), Err(OpalError::Hardware));
        assert_eq!(OpalError::check(-12), Err(OpalError::BusyEvent));
        assert_eq!(OpalError::check(-99), Err(OpalError::Other(-99)));
        assert_eq!(OpalError::check(5), Err(OpalError::Other(5)));
    }

    #[test]
    fn window_ids_and_freeze_codes() {
        assert_eq!(WindowId::new(0), Some(WindowId::DMA32));
        assert_eq!(WindowId::new(1), Some(WindowId::DMA64));
        assert_eq!(WindowId::new(2), None);
        assert_eq!(WindowId::DMA64.bus_offset(), 1 << 59);
        assert_eq!(WindowId::DMA32.bus_offset(), 0);
        assert_eq!(WindowId::of_bus_addr((1 << 59) | 0x1000), WindowId::DMA64);
        assert_eq!(WindowId::of_bus_addr(1 << 60), WindowId::DMA32);
        // opal-api.h: enum OpalFreezeState, enum OpalPciStatusToken.
        assert_eq!(FreezeState::from_raw(0), FreezeState::NotFrozen);
        assert_eq!(FreezeState::from_raw(2), FreezeState::Dma);
        assert_eq!(FreezeState::from_raw(3), FreezeState::MmioDma);
        assert_eq!(FreezeState::from_raw(6), FreezeState::PermUnavailable);
        assert_eq!(FreezeState::from_raw(9), FreezeState::Other(9));
        assert!(!FreezeState::NotFrozen.is_frozen() && FreezeState::Reset.is_frozen());
        assert_eq!(FreezeState::from_bits(true, false), FreezeState::Mmio);
        assert_eq!(FreezeState::from_bits(false, false), FreezeState::NotFrozen);
        assert_eq!(PciErrorType::from_raw(2), PciErrorType::Phb);
        assert_eq!(PciErrorType::from_raw(5), PciErrorType::PeDma);
        assert_eq!(PciErrorType::from_raw(77), PciErrorType::Other(77));
        assert_eq!((EehClear::All as u8, PeltvAction::Add as u8), (3, 1));
    }

    #[test]
    fn config_offsets() {
        assert!(check_config_offset(0xffc, 4).is_ok());
        assert!(check_config_offset(0xffe, 4).is_err());
        assert!(check_config_offset(0x1000, 1).is_err());
        assert!(check_config_offset(0x11, 2).is_err());
        assert!(check_config_offset(0xfff, 1).is_ok());
    }
}
