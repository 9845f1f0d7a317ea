//! QEMU's `edu` device (hw/misc/edu.c): a DMA engine with a 4 KiB buffer, used to make
//! real DMA through the PHB's TCE translation.
//!
//! BAR0 registers are big-endian on ppc64; [`EduMmio`] implementations do the byte swap.
//! A transfer moves bytes between an IOVA (bus address, translated by the PHB) and the
//! device buffer at device address 0x40000.

/// BAR0 register access.
///
/// Contract: offsets are from BAR0; values are host order, the implementation converts
/// from/to the big-endian registers. Offsets below 0x80 accept only 32-bit accesses.
/// `relax` is called between status polls (e.g. to let time pass); it may do nothing.
pub trait EduMmio {
    /// 32-bit read.
    fn read32(&self, offset: u32) -> u32;
    /// 32-bit write.
    fn write32(&self, offset: u32, value: u32);
    /// 64-bit read (offsets >= 0x80).
    fn read64(&self, offset: u32) -> u64;
    /// 64-bit write (offsets >= 0x80).
    fn write64(&self, offset: u32, value: u64);
    /// Called between polls of the command register.
    fn relax(&self) {}
}

/// Register offsets and values.
pub mod reg {
    /// Identification: 0x010000ed for edu version 1.0.
    pub const ID: u32 = 0x00;
    /// Liveness check: reads back the bitwise inverse of what was written.
    pub const LIVENESS: u32 = 0x04;
    /// DMA source address.
    pub const DMA_SRC: u32 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u32 = 0x88;
    /// DMA byte count.
    pub const DMA_COUNT: u32 = 0x90;
    /// DMA command.
    pub const DMA_CMD: u32 = 0x98;
    /// Command: start (reads as 1 while the transfer runs).
    pub const CMD_START: u64 = 1 << 0;
    /// Command: direction device -> RAM (clear: RAM -> device).
    pub const CMD_TO_RAM: u64 = 1 << 1;
    /// Command: raise an interrupt on completion.
    pub const CMD_IRQ: u64 = 1 << 2;
    /// The ID value this driver supports.
    pub const ID_VALUE: u32 = 0x0100_00ed;
    /// Device address of the DMA buffer.
    pub const BUFFER: u64 = 0x4_0000;
    /// Size of the DMA buffer.
    pub const BUFFER_SIZE: u32 = 0x1000;
}

/// PCI vendor ID of the edu device.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device ID of the edu device.
pub const DEVICE_ID: u16 = 0x11e8;

/// Largest transfer: QEMU 7.2 aborts the emulator on a transfer that ends exactly at the
/// end of the buffer, so every transfer must end before it.
pub const MAX_TRANSFER: u32 = reg::BUFFER_SIZE - 1;

/// Why an edu operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EduError {
    /// The ID register did not read 0x010000ed.
    BadId(u32),
    /// The liveness register did not invert the written value.
    NotAlive,
    /// A transfer is already running.
    Busy,
    /// Empty transfer, or one that does not end strictly inside the device buffer.
    BadRange {
        /// Offset in the device buffer.
        offset: u32,
        /// Bytes.
        len: u32,
    },
    /// The command did not complete within the poll bound.
    Timeout,
}

/// Direction of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// RAM (through the IOMMU) -> device buffer.
    ToDevice,
    /// Device buffer -> RAM (through the IOMMU).
    ToRam,
}

/// A probed edu device.
pub struct Edu<M: EduMmio> {
    mmio: M,
    max_polls: u32,
}

impl<M: EduMmio> Edu<M> {
    /// Checks the ID and liveness registers; waits at most `max_polls` command polls per
    /// transfer.
    pub fn probe(mmio: M, max_polls: u32) -> Result<Self, EduError> {
        let id = mmio.read32(reg::ID);
        if id != reg::ID_VALUE {
            return Err(EduError::BadId(id));
        }
        let probe = 0x5a5a_0ff0;
        mmio.write32(reg::LIVENESS, probe);
        if mmio.read32(reg::LIVENESS) != !probe {
            return Err(EduError::NotAlive);
        }
        Ok(Self {
            mmio,
            max_polls: max_polls.max(1),
        })
    }

    /// The register interface.
    pub fn mmio(&self) -> &M {
        &self.mmio
    }

    /// DMA `len` bytes from `iova` into the device buffer at `offset`.
    pub fn dma_to_device(&self, iova: u64, offset: u32, len: u32) -> Result<(), EduError> {
        self.transfer(Direction::ToDevice, iova, offset, len)
    }

    /// DMA `len` bytes from the device buffer at `offset` to `iova`.
    pub fn dma_to_ram(&self, offset: u32, iova: u64, len: u32) -> Result<(), EduError> {
        self.transfer(Direction::ToRam, iova, offset, len)
    }

    /// Runs one transfer and waits for it. A transfer whose IOVA the PHB rejects still
    /// completes on the device side (the PHB drops the access); checking the memory is
    /// the caller's business.
    pub fn transfer(
        &self,
        dir: Direction,
        iova: u64,
        offset: u32,
        len: u32,
    ) -> Result<(), EduError> {
        if len == 0
            || len > MAX_TRANSFER
            || offset.checked_add(len).is_none_or(|e| e > MAX_TRANSFER)
        {
            return Err(EduError::BadRange { offset, len });
        }
        if self.mmio.read64(reg::DMA_CMD) & reg::CMD_START != 0 {
            return Err(EduError::Busy);
        }
        let dev = reg::BUFFER + u64::from(offset);
        let (src, dst, cmd) = match dir {
            Direction::ToDevice => (iova, dev, reg::CMD_START),
            Direction::ToRam => (dev, iova, reg::CMD_START | reg::CMD_TO_RAM),
        };
        self.mmio.write64(reg::DMA_SRC, src);
        self.mmio.write64(reg::DMA_DST, dst);
        self.mmio.write64(reg::DMA_COUNT, u64::from(len));
        self.mmio.write64(reg::DMA_CMD, cmd);
        self.wait_idle()
    }

    /// Polls the command register until the start bit clears.
    pub fn wait_idle(&self) -> Result<(), EduError> {
        for _ in 0..self.max_polls {
            if self.mmio.read64(reg::DMA_CMD) & reg::CMD_START == 0 {
                return Ok(());
            }
            self.mmio.relax();
        }
        Err(EduError::Timeout)
    }
}
