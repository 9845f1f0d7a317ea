//! The edu driver against a fake device that runs a DMA after a few polls.

use std::cell::{Cell, RefCell};

use p9iommu::phb::edu::{reg, Edu, EduError, EduMmio};

struct FakeEdu {
    id: u32,
    live: Cell<u32>,
    regs: RefCell<[u64; 4]>,
    polls_left: Cell<u32>,
    /// Polls a command takes; u32::MAX = never completes.
    latency: u32,
    started: RefCell<Vec<(u64, u64, u64, u64)>>,
}

impl FakeEdu {
    fn new(latency: u32) -> Self {
        Self {
            id: reg::ID_VALUE,
            live: Cell::new(0),
            regs: RefCell::new([0; 4]),
            polls_left: Cell::new(0),
            latency,
            started: RefCell::new(vec![]),
        }
    }
}

impl EduMmio for FakeEdu {
    fn read32(&self, off: u32) -> u32 {
        match off {
            reg::ID => self.id,
            reg::LIVENESS => !self.live.get(),
            _ => panic!("read32 {off:#x}"),
        }
    }
    fn write32(&self, off: u32, v: u32) {
        assert_eq!(off, reg::LIVENESS);
        self.live.set(v);
    }
    fn read64(&self, off: u32) -> u64 {
        assert_eq!(off, reg::DMA_CMD);
        let mut r = self.regs.borrow_mut();
        if r[3] & reg::CMD_START != 0 {
            if self.polls_left.get() == 0 {
                r[3] &= !reg::CMD_START;
            } else if self.latency != u32::MAX {
                self.polls_left.set(self.polls_left.get() - 1);
            }
        }
        r[3]
    }
    fn write64(&self, off: u32, v: u64) {
        assert!(off >= 0x80 && off.is_multiple_of(8));
        let i = ((off - 0x80) / 8) as usize;
        self.regs.borrow_mut()[i] = v;
        if off == reg::DMA_CMD {
            let r = self.regs.borrow();
            self.started.borrow_mut().push((r[0], r[1], r[2], v));
            self.polls_left.set(self.latency);
        }
    }
}

#[test]
fn probe_checks_id_and_liveness() {
    assert!(Edu::probe(FakeEdu::new(0), 10).is_ok());
    let bad = FakeEdu {
        id: 0x0100_00ee,
        ..FakeEdu::new(0)
    };
    assert_eq!(
        Edu::probe(bad, 10).err(),
        Some(EduError::BadId(0x0100_00ee))
    );
}

#[test]
fn dma_programs_src_dst_count_cmd_and_waits() {
    let edu = Edu::probe(FakeEdu::new(5), 10).unwrap();
    edu.dma_to_device(0x1000, 0, 2048).unwrap();
    edu.dma_to_ram(16, 0x2_0010, 100).unwrap();
    assert_eq!(
        *edu.mmio().started.borrow(),
        vec![
            (0x1000, 0x4_0000, 2048, reg::CMD_START),
            (0x4_0010, 0x2_0010, 100, reg::CMD_START | reg::CMD_TO_RAM),
        ]
    );
}

#[test]
fn timeout_is_reported() {
    let edu = Edu::probe(FakeEdu::new(u32::MAX), 50).unwrap();
    assert_eq!(edu.dma_to_device(0x1000, 0, 8), Err(EduError::Timeout));
    assert_eq!(edu.dma_to_device(0x1000, 0, 8), Err(EduError::Busy));
}

#[test]
fn transfers_never_reach_the_buffer_end() {
    let edu = Edu::probe(FakeEdu::new(0), 10).unwrap();
    assert!(edu.dma_to_device(0, 0, 4095).is_ok());
    for (off, len) in [(0, 4096), (1, 4095), (4095, 1), (0, 0), (u32::MAX, 2)] {
        assert_eq!(
            edu.dma_to_device(0, off, len),
            Err(EduError::BadRange { offset: off, len })
        );
    }
    assert_eq!(edu.mmio().started.borrow().len(), 1);
}
