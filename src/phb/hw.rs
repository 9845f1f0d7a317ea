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

/// Byte access to host physical memory, for the in-memory IODA tables (the RTT) that the
/// PHB reads by physical address.
///
/// Contract: bytes are copied as they are (no swapping: the caller owns the format); the
/// implementation may be called only with addresses the PHB itself was given (`RTT_BAR`).
pub trait PhysMemory {
    /// Copies `buf.len()` bytes at physical address `pa` into `buf`.
    fn read(&self, pa: u64, buf: &mut [u8]);
    /// Copies `buf` to physical address `pa`.
    fn write(&self, pa: u64, buf: &[u8]);
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

/// The OPAL PCI calls the PHB driver uses, with raw arguments and raw `i64` return codes
/// exactly as `opal-api.h` defines them; [`OpalError::check`] types the result.
///
/// Contract: every call is usable in hypervisor real mode (the TCE kill is called from the
/// real-mode hypercall path). Values OPAL returns through memory are big-endian; the
/// implementation converts them before storing to `value` (host order).
pub trait OpalPci {
    /// OPAL_PCI_SET_PE (31).
    #[allow(clippy::too_many_arguments)]
    fn pci_set_pe(
        &self,
        phb_id: u64,
        pe: u64,
        bdfn: u64,
        bus_compare: u8,
        dev_compare: u8,
        func_compare: u8,
        action: u8,
    ) -> i64;
    /// OPAL_PCI_MAP_PE_DMA_WINDOW (44): `window_id` is the TVE index (`pe * 2 + window`);
    /// `table_size` is the size of ONE level; 0 disables the TVE.
    #[allow(clippy::too_many_arguments)]
    fn pci_map_pe_dma_window(
        &self,
        phb_id: u64,
        pe: u64,
        window_id: u16,
        levels: u16,
        table_addr: u64,
        table_size: u64,
        page_size: u64,
    ) -> i64;
    /// OPAL_PCI_MAP_PE_DMA_WINDOW_REAL (45): an untranslated (bypass) window; size 0
    /// disables it.
    fn pci_map_pe_dma_window_real(
        &self,
        phb_id: u64,
        pe: u64,
        window_id: u16,
        pci_start: u64,
        pci_size: u64,
    ) -> i64;
    /// OPAL_PCI_TCE_KILL (126).
    fn pci_tce_kill(
        &self,
        phb_id: u64,
        kill_type: u32,
        pe: u64,
        tce_size: u32,
        dma_addr: u64,
        npages: u32,
    ) -> i64;
    /// OPAL_PCI_CONFIG_READ_BYTE (13).
    fn pci_config_read_byte(&self, phb_id: u64, bdfn: u64, offset: u64, value: &mut u8) -> i64;
    /// OPAL_PCI_CONFIG_READ_HALF_WORD (14).
    fn pci_config_read_half_word(
        &self,
        phb_id: u64,
        bdfn: u64,
        offset: u64,
        value: &mut u16,
    ) -> i64;
    /// OPAL_PCI_CONFIG_READ_WORD (15).
    fn pci_config_read_word(&self, phb_id: u64, bdfn: u64, offset: u64, value: &mut u32) -> i64;
    /// OPAL_PCI_CONFIG_WRITE_BYTE (16).
    fn pci_config_write_byte(&self, phb_id: u64, bdfn: u64, offset: u64, value: u8) -> i64;
    /// OPAL_PCI_CONFIG_WRITE_HALF_WORD (17).
    fn pci_config_write_half_word(&self, phb_id: u64, bdfn: u64, offset: u64, value: u16) -> i64;
    /// OPAL_PCI_CONFIG_WRITE_WORD (18).
    fn pci_config_write_word(&self, phb_id: u64, bdfn: u64, offset: u64, value: u32) -> i64;
}

impl<T: OpalPci + ?Sized> OpalPci for &T {
    fn pci_set_pe(&self, phb: u64, pe: u64, bdfn: u64, b: u8, d: u8, f: u8, action: u8) -> i64 {
        (**self).pci_set_pe(phb, pe, bdfn, b, d, f, action)
    }
    fn pci_map_pe_dma_window(
        &self,
        phb: u64,
        pe: u64,
        window_id: u16,
        levels: u16,
        addr: u64,
        size: u64,
        page: u64,
    ) -> i64 {
        (**self).pci_map_pe_dma_window(phb, pe, window_id, levels, addr, size, page)
    }
    fn pci_map_pe_dma_window_real(&self, phb: u64, pe: u64, w: u16, start: u64, size: u64) -> i64 {
        (**self).pci_map_pe_dma_window_real(phb, pe, w, start, size)
    }
    fn pci_tce_kill(&self, phb: u64, kind: u32, pe: u64, sz: u32, addr: u64, n: u32) -> i64 {
        (**self).pci_tce_kill(phb, kind, pe, sz, addr, n)
    }
    fn pci_config_read_byte(&self, phb: u64, bdfn: u64, off: u64, v: &mut u8) -> i64 {
        (**self).pci_config_read_byte(phb, bdfn, off, v)
    }
    fn pci_config_read_half_word(&self, phb: u64, bdfn: u64, off: u64, v: &mut u16) -> i64 {
        (**self).pci_config_read_half_word(phb, bdfn, off, v)
    }
    fn pci_config_read_word(&self, phb: u64, bdfn: u64, off: u64, v: &mut u32) -> i64 {
        (**self).pci_config_read_word(phb, bdfn, off, v)
    }
    fn pci_config_write_byte(&self, phb: u64, bdfn: u64, off: u64, v: u8) -> i64 {
        (**self).pci_config_write_byte(phb, bdfn, off, v)
    }
    fn pci_config_write_half_word(&self, phb: u64, bdfn: u64, off: u64, v: u16) -> i64 {
        (**self).pci_config_write_half_word(phb, bdfn, off, v)
    }
    fn pci_config_write_word(&self, phb: u64, bdfn: u64, off: u64, v: u32) -> i64 {
        (**self).pci_config_write_word(phb, bdfn, off, v)
    }
}

/// PCI configuration access through OPAL for one PHB.
pub struct OpalConfig<'a, O: OpalPci + ?Sized> {
    opal: &'a O,
    phb_id: u64,
}

impl<'a, O: OpalPci + ?Sized> OpalConfig<'a, O> {
    /// Configuration access to the PHB OPAL knows as `phb_id` (`ibm,opal-phbid`).
    pub fn new(opal: &'a O, phb_id: u64) -> Self {
        Self { opal, phb_id }
    }
}

impl<O: OpalPci + ?Sized> PciConfig for OpalConfig<'_, O> {
    fn read8(&self, bdfn: Bdfn, offset: u16) -> Result<u8, PciConfigError> {
        check_config_offset(offset, 1)?;
        let mut v = 0;
        let rc = self
            .opal
            .pci_config_read_byte(self.phb_id, bdfn.0.into(), offset.into(), &mut v);
        OpalError::check(rc).map_err(PciConfigError::Opal)?;
        Ok(v)
    }
    fn read16(&self, bdfn: Bdfn, offset: u16) -> Result<u16, PciConfigError> {
        check_config_offset(offset, 2)?;
        let mut v = 0;
        let rc =
            self.opal
                .pci_config_read_half_word(self.phb_id, bdfn.0.into(), offset.into(), &mut v);
        OpalError::check(rc).map_err(PciConfigError::Opal)?;
        Ok(v)
    }
    fn read32(&self, bdfn: Bdfn, offset: u16) -> Result<u32, PciConfigError> {
        check_config_offset(offset, 4)?;
        let mut v = 0;
        let rc = self
            .opal
            .pci_config_read_word(self.phb_id, bdfn.0.into(), offset.into(), &mut v);
        OpalError::check(rc).map_err(PciConfigError::Opal)?;
        Ok(v)
    }
    fn write8(&self, bdfn: Bdfn, offset: u16, value: u8) -> Result<(), PciConfigError> {
        check_config_offset(offset, 1)?;
        let rc = self
            .opal
            .pci_config_write_byte(self.phb_id, bdfn.0.into(), offset.into(), value);
        OpalError::check(rc).map_err(PciConfigError::Opal)
    }
    fn write16(&self, bdfn: Bdfn, offset: u16, value: u16) -> Result<(), PciConfigError> {
        check_config_offset(offset, 2)?;
        let rc =
            self.opal
                .pci_config_write_half_word(self.phb_id, bdfn.0.into(), offset.into(), value);
        OpalError::check(rc).map_err(PciConfigError::Opal)
    }
    fn write32(&self, bdfn: Bdfn, offset: u16, value: u32) -> Result<(), PciConfigError> {
        check_config_offset(offset, 4)?;
        let rc = self
            .opal
            .pci_config_write_word(self.phb_id, bdfn.0.into(), offset.into(), value);
        OpalError::check(rc).map_err(PciConfigError::Opal)
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
    fn config_offsets() {
        assert!(check_config_offset(0xffc, 4).is_ok());
        assert!(check_config_offset(0xffe, 4).is_err());
        assert!(check_config_offset(0x1000, 1).is_err());
        assert!(check_config_offset(0x11, 2).is_err());
        assert!(check_config_offset(0xfff, 1).is_ok());
    }
}
