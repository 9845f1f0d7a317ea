//! Host fakes for the PHB traits, shared by the `phb_*` tests (`#[path]`-included).
//! Lives in `tests/support/` so cargo does not build it as a test binary of its own.
#![allow(dead_code, clippy::new_without_default)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use p9iommu::phb::hw::{
    check_config_offset, Bdfn, DmaWindowTable, EehClear, FreezeState, FreezeStatus, OpalError,
    OpalPci, OpalTceKillType, PciConfig, PciConfigError, PciErrorType, PeNum, PeltvAction, PhbId,
    PhbMmio, PhysMemory,
};
use p9iommu::phb::pe::{DefaultWindow, TableFactory};
use p9iommu::phb::regs::{
    peev_bit, peltv_bit, tve_index, IodaAddr, PhbReg, Tve, PELTV_BASE_MASK, RTT_BASE_MASK,
};

/// One register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    R(PhbReg, u64),
    W(PhbReg, u64),
}

/// A PHB4 register model: IODA TVT, PESTA/PESTB and PEEV behind IODA_ADDR/DATA0, a TCE kill
/// queue that drains after `kill_busy_reads` reads, a DMA read sync, RTT_BAR and PELTV_BAR,
/// and a log of every access. [`FakePhb::dma`] models a device's DMA: a PE freezes on a DMA
/// that does not translate, as PHB4 does (QEMU does not model this).
pub struct FakePhb {
    pub log: RefCell<Vec<Op>>,
    pub tvt: RefCell<Vec<u64>>,
    ioda_addr: Cell<u64>,
    tce_kill: Cell<u64>,
    sync: Cell<u64>,
    pub rtt_bar: Cell<u64>,
    /// Reads of TCE_KILL that still show the kill bits after a write.
    pub kill_busy_reads: Cell<u32>,
    busy_left: Cell<u32>,
    /// A register that never reaches its wanted value.
    pub stuck: Cell<Option<PhbReg>>,
    /// Every read returns all ones.
    pub fenced: Cell<bool>,
    /// Kills seen (register values), for "is it gone for both" checks.
    pub kills: RefCell<Vec<u64>>,
    pub rtc_invalidates: Cell<u32>,
    pub pesta: RefCell<Vec<u64>>,
    pub pestb: RefCell<Vec<u64>>,
    pub peev: RefCell<Vec<u64>>,
    pub peltv_bar: Cell<u64>,
    /// Writes that would clear a PEST are ignored: a freeze that does not clear.
    pub stuck_freeze: Cell<bool>,
}

pub const RTT_BASE: u64 = 0x3012_0000;
pub const PELTV_BASE: u64 = 0x3100_0000;

impl FakePhb {
    pub fn new() -> Self {
        Self {
            log: RefCell::new(Vec::new()),
            tvt: RefCell::new(vec![0; 1024]),
            ioda_addr: Cell::new(0),
            tce_kill: Cell::new(0),
            sync: Cell::new(0),
            rtt_bar: Cell::new((1 << 63) | RTT_BASE),
            kill_busy_reads: Cell::new(0),
            busy_left: Cell::new(0),
            stuck: Cell::new(None),
            fenced: Cell::new(false),
            kills: RefCell::new(Vec::new()),
            rtc_invalidates: Cell::new(0),
            pesta: RefCell::new(vec![0; 512]),
            pestb: RefCell::new(vec![0; 512]),
            peev: RefCell::new(vec![0; 8]),
            peltv_bar: Cell::new((1 << 63) | PELTV_BASE),
            stuck_freeze: Cell::new(false),
        }
    }
    pub fn tve(&self, index: u32) -> Tve {
        Tve(self.tvt.borrow()[index as usize])
    }
    /// Whether the PE's PEEV bit is set (an error is pending: the PE is frozen).
    pub fn is_frozen(&self, pe: u32) -> bool {
        let (entry, bit) = peev_bit(pe);
        self.peev.borrow()[entry as usize] & bit != 0
    }
    /// Freezes the PE's DMA as a TCE fault does: PESTB DMA stopped, PEEV bit set.
    pub fn freeze(&self, pe: u32) {
        self.pestb.borrow_mut()[pe as usize] |= (1 << 63) | 0xdead_0000;
        self.update_peev(pe);
    }
    fn update_peev(&self, pe: u32) {
        let frozen =
            (self.pesta.borrow()[pe as usize] | self.pestb.borrow()[pe as usize]) >> 63 != 0;
        let (entry, bit) = peev_bit(pe);
        let mut peev = self.peev.borrow_mut();
        if frozen {
            peev[entry as usize] |= bit;
        } else {
            peev[entry as usize] &= !bit;
        }
    }
    /// A DMA by `bdfn` to `bus_addr`, whose TCE is valid iff `mapped`: lands (true) when the
    /// device's PE is not frozen and the PE's window for `bus_addr` is enabled and the TCE
    /// valid; otherwise is dropped, and a translation failure freezes the PE.
    pub fn dma(&self, mem: &FakeMem, bdfn: Bdfn, bus_addr: u64, mapped: bool) -> bool {
        let Some(pe) = mem.rte(bdfn) else {
            return false;
        };
        let pe = u32::from(pe);
        if self.is_frozen(pe) {
            return false;
        }
        let tve = self.tve(tve_index(pe, (bus_addr >> 59) as u8 & 1));
        if !tve.is_enabled() || !mapped {
            self.freeze(pe);
            return false;
        }
        true
    }
    fn ioda_slot(&self, a: IodaAddr) -> (u8, usize) {
        (a.table_select(), a.index() as usize)
    }
    pub fn take_log(&self) -> Vec<Op> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

impl PhbMmio for FakePhb {
    fn read(&self, reg: PhbReg) -> u64 {
        let v = if self.fenced.get() {
            u64::MAX
        } else {
            match reg {
                PhbReg::IODA_DATA0 => match self.ioda_slot(IodaAddr(self.ioda_addr.get())) {
                    (7, i) => self.pesta.borrow()[i],
                    (8, i) => self.pestb.borrow()[i],
                    (9, i) => self.tvt.borrow()[i],
                    (20, i) => self.peev.borrow()[i],
                    (t, _) => panic!("IODA table {t} is not modelled"),
                },
                PhbReg::TCE_KILL => {
                    if self.stuck.get() == Some(reg) || self.busy_left.get() > 0 {
                        self.busy_left.set(self.busy_left.get().saturating_sub(1));
                        self.tce_kill.get() | (1 << 62)
                    } else {
                        self.tce_kill.get() & !(7 << 61)
                    }
                }
                PhbReg::Q_DMA_R => {
                    if self.stuck.get() == Some(reg) {
                        1 << 56
                    } else {
                        0
                    }
                }
                PhbReg::DMA_READ_WRITE_SYNC => {
                    if self.stuck.get() == Some(reg) || self.sync.get() & (1 << 63) == 0 {
                        0
                    } else {
                        1 << 62
                    }
                }
                PhbReg::RTT_BAR => self.rtt_bar.get(),
                PhbReg::PELTV_BAR => self.peltv_bar.get(),
                PhbReg::IODA_ADDR => self.ioda_addr.get(),
                other => panic!("unexpected read of {:#x}", other.0),
            }
        };
        self.log.borrow_mut().push(Op::R(reg, v));
        v
    }

    fn write(&self, reg: PhbReg, value: u64) {
        self.log.borrow_mut().push(Op::W(reg, value));
        match reg {
            PhbReg::IODA_ADDR => self.ioda_addr.set(value),
            PhbReg::IODA_DATA0 => {
                let a = IodaAddr(self.ioda_addr.get());
                match self.ioda_slot(a) {
                    (t @ (7 | 8), i) => {
                        if !self.stuck_freeze.get() {
                            let pest = if t == 7 { &self.pesta } else { &self.pestb };
                            pest.borrow_mut()[i] = value;
                            self.update_peev(i as u32);
                        }
                    }
                    (9, i) => self.tvt.borrow_mut()[i] = value,
                    (t, _) => panic!("IODA table {t} is not modelled for writes"),
                }
                if a.autoinc() {
                    self.ioda_addr.set(a.0 + 1);
                }
            }
            PhbReg::TCE_KILL => {
                self.kills.borrow_mut().push(value);
                self.tce_kill.set(value);
                self.busy_left.set(self.kill_busy_reads.get());
            }
            PhbReg::DMA_READ_WRITE_SYNC => self.sync.set(value),
            PhbReg::RTC_INVALIDATE => self.rtc_invalidates.set(self.rtc_invalidates.get() + 1),
            other => panic!("unexpected write of {:#x}", other.0),
        }
    }
}

/// Sparse physical memory, with a log of every store (address, bytes in that one store).
#[derive(Default)]
pub struct FakeMem {
    pub bytes: RefCell<HashMap<u64, u8>>,
    pub stores: RefCell<Vec<(u64, usize)>>,
}

impl FakeMem {
    /// The RTT entry of `bdfn`, decoded from big-endian memory.
    pub fn rte(&self, bdfn: Bdfn) -> Option<u16> {
        let m = self.bytes.borrow();
        let a = (RTT_BASE & RTT_BASE_MASK) + 2 * u64::from(bdfn.0);
        Some(u16::from_be_bytes([*m.get(&a)?, *m.get(&(a + 1))?]))
    }

    /// Whether the PELT-V says an error in `parent` freezes `child` (skiboot's layout).
    pub fn peltv(&self, num_pes: u32, parent: u32, child: u32) -> bool {
        let (offset, mask) = peltv_bit(num_pes, parent, child);
        let b = self
            .bytes
            .borrow()
            .get(&((PELTV_BASE & PELTV_BASE_MASK) + offset))
            .copied()
            .unwrap_or(0);
        b & mask != 0
    }
}

impl PhysMemory for FakeMem {
    fn read(&self, pa: u64, buf: &mut [u8]) {
        let m = self.bytes.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = *m.get(&(pa + i as u64)).unwrap_or(&0);
        }
    }
    fn write(&self, pa: u64, buf: &[u8]) {
        self.stores
            .borrow_mut()
            .extend(buf.iter().enumerate().map(|(i, _)| (pa + i as u64, 1)));
        let mut m = self.bytes.borrow_mut();
        for (i, b) in buf.iter().enumerate() {
            m.insert(pa + i as u64, *b);
        }
    }
    fn write_be16(&self, pa: u64, value: u16) {
        assert_eq!(pa % 2, 0, "a 16-bit store must be aligned");
        self.stores.borrow_mut().push((pa, 2));
        let mut m = self.bytes.borrow_mut();
        for (i, b) in value.to_be_bytes().iter().enumerate() {
            m.insert(pa + i as u64, *b);
        }
    }
}

/// One OPAL call as made (arguments as the raw numbers OPAL receives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    SetPe {
        phb: u64,
        pe: u64,
        bdfn: u64,
        cmp: (u8, u8, u8),
        action: u8,
    },
    MapWindow {
        phb: u64,
        pe: u64,
        window_id: u16,
        levels: u16,
        addr: u64,
        size: u64,
        page: u64,
    },
    TceKill {
        phb: u64,
        kind: u32,
        pe: u64,
        tce_size: u32,
        addr: u64,
        npages: u32,
    },
    FreezeStatus {
        phb: u64,
        pe: u64,
    },
    FreezeClear {
        phb: u64,
        pe: u64,
        action: u8,
    },
    SetPeltv {
        phb: u64,
        parent: u64,
        child: u64,
        action: u8,
    },
}

/// OPAL with skiboot's argument rules for PHB4, keeping a TVT, RTT, PE freeze states and
/// PELT-V the way skiboot does. [`FakeOpal::dma`] models a device's DMA: a PE freezes on a
/// DMA that does not translate, as PHB4 does.
pub struct FakeOpal {
    pub phb_id: u64,
    pub num_pes: u64,
    pub calls: RefCell<Vec<Call>>,
    /// Calls skiboot would have refused.
    pub violations: RefCell<Vec<String>>,
    pub tvt: RefCell<Vec<u64>>,
    pub rtt: RefCell<HashMap<u16, u16>>,
    /// Return code forced on the next call.
    pub fail_next: Cell<Option<i64>>,
    pub config: RefCell<HashMap<(u64, u64), u32>>,
    /// Frozen PEs and how.
    pub frozen: RefCell<HashMap<u32, FreezeStatus>>,
    /// (parent, child) pairs in the PELT-V.
    pub peltv: RefCell<HashSet<(u32, u32)>>,
    /// FREEZE_CLEAR succeeds but the PE stays frozen.
    pub stuck_freeze: Cell<bool>,
}

impl FakeOpal {
    pub fn new(phb_id: u64, num_pes: u64) -> Self {
        Self {
            phb_id,
            num_pes,
            calls: RefCell::new(Vec::new()),
            violations: RefCell::new(Vec::new()),
            tvt: RefCell::new(vec![0; 1024]),
            rtt: RefCell::new(HashMap::new()),
            fail_next: Cell::new(None),
            config: RefCell::new(HashMap::new()),
            frozen: RefCell::new(HashMap::new()),
            peltv: RefCell::new(HashSet::new()),
            stuck_freeze: Cell::new(false),
        }
    }
    fn refuse(&self, why: String) -> Result<(), OpalError> {
        self.violations.borrow_mut().push(why);
        Err(OpalError::Parameter)
    }
    fn forced(&self) -> Result<(), OpalError> {
        match self.fail_next.take() {
            Some(rc) => OpalError::check(rc),
            None => Ok(()),
        }
    }
    pub fn tve(&self, index: u32) -> Tve {
        Tve(self.tvt.borrow()[index as usize])
    }
    /// Freezes the PE's DMA as a TCE fault does (skiboot then reports DMA frozen, no error
    /// class).
    pub fn freeze(&self, pe: u32) {
        self.frozen.borrow_mut().insert(
            pe,
            FreezeStatus {
                state: FreezeState::Dma,
                error: PciErrorType::NoError,
            },
        );
    }
    /// See [`FakePhb::dma`].
    pub fn dma(&self, bdfn: Bdfn, bus_addr: u64, mapped: bool) -> bool {
        let Some(&pe) = self.rtt.borrow().get(&bdfn.0) else {
            return false;
        };
        let pe = u32::from(pe);
        if self.frozen.borrow().contains_key(&pe) {
            return false;
        }
        if !self
            .tve(tve_index(pe, (bus_addr >> 59) as u8 & 1))
            .is_enabled()
            || !mapped
        {
            self.freeze(pe);
            return false;
        }
        true
    }
    fn pe_ok(&self, phb: PhbId, pe: PeNum) -> bool {
        phb.0 == self.phb_id && u64::from(pe.0) < self.num_pes
    }
}

impl OpalPci for FakeOpal {
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
        self.calls.borrow_mut().push(Call::SetPe {
            phb: phb.0,
            pe: pe.0.into(),
            bdfn: bdfn.0.into(),
            cmp: (b, d, f),
            action,
        });
        self.forced()?;
        if !self.pe_ok(phb, pe) || action > 1 {
            return self.refuse(format!("set_pe {phb:?} {pe:?} {bdfn:?} {action}"));
        }
        if (b, d, f) != (7, 1, 1) {
            return self.refuse("fake models exact-RID compares only".into());
        }
        self.rtt.borrow_mut().insert(bdfn.0, pe.0 as u16);
        Ok(())
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
        self.calls.borrow_mut().push(Call::MapWindow {
            phb: phb.0,
            pe: pe.0.into(),
            window_id,
            levels,
            addr,
            size,
            page,
        });
        self.forced()?;
        if !self.pe_ok(phb, pe) || u32::from(window_id >> 1) != pe.0 {
            return self.refuse(format!("map: pe {pe:?} window_id {window_id}"));
        }
        let tve = if size == 0 {
            0
        } else {
            if !(1..=5).contains(&levels) || !size.is_power_of_two() || size < 0x1000 {
                return self.refuse(format!("map: levels {levels} size {size:#x}"));
            }
            let code = match page {
                0x1000 => 1,
                0x1_0000 => 5,
                0x20_0000 => 10,
                0x4000_0000 => 19,
                _ => return self.refuse(format!("map: page {page:#x}")),
            };
            // skiboot's own encoding, written out independently of p9iommu's.
            ((addr >> 12) << 16)
                | (u64::from(levels - 1) << 13)
                | (u64::from(size.trailing_zeros() - 11) << 8)
                | code
        };
        self.tvt.borrow_mut()[window_id as usize] = tve;
        Ok(())
    }

    fn pci_map_pe_dma_window_real(
        &self,
        _: PhbId,
        _: PeNum,
        _: u16,
        _: u64,
        _: u64,
    ) -> Result<(), OpalError> {
        self.refuse("map_pe_dma_window_real not expected".into())
    }

    fn pci_tce_kill(
        &self,
        phb: PhbId,
        kind: OpalTceKillType,
        pe: PeNum,
        tce_size: u32,
        addr: u64,
        npages: u32,
    ) -> Result<(), OpalError> {
        self.calls.borrow_mut().push(Call::TceKill {
            phb: phb.0,
            kind: kind as u32,
            pe: pe.0.into(),
            tce_size,
            addr,
            npages,
        });
        self.forced()?;
        if phb.0 != self.phb_id || (kind != OpalTceKillType::All && !self.pe_ok(phb, pe)) {
            return self.refuse(format!("kill {kind:?} pe {pe:?}"));
        }
        Ok(())
    }

    fn pci_eeh_freeze_status(&self, phb: PhbId, pe: PeNum) -> Result<FreezeStatus, OpalError> {
        self.calls.borrow_mut().push(Call::FreezeStatus {
            phb: phb.0,
            pe: pe.0.into(),
        });
        self.forced()?;
        if phb.0 != self.phb_id {
            self.refuse(format!("freeze_status {phb:?}"))?;
        }
        Ok(self
            .frozen
            .borrow()
            .get(&pe.0)
            .copied()
            .unwrap_or(FreezeStatus::CLEAR))
    }

    fn pci_eeh_freeze_clear(
        &self,
        phb: PhbId,
        pe: PeNum,
        action: EehClear,
    ) -> Result<(), OpalError> {
        self.calls.borrow_mut().push(Call::FreezeClear {
            phb: phb.0,
            pe: pe.0.into(),
            action: action as u8,
        });
        self.forced()?;
        if phb.0 != self.phb_id {
            self.refuse(format!("freeze_clear {phb:?}"))?;
        }
        if action == EehClear::All && !self.stuck_freeze.get() {
            self.frozen.borrow_mut().remove(&pe.0);
        }
        Ok(())
    }

    fn pci_eeh_freeze_set(&self, phb: PhbId, pe: PeNum, action: EehClear) -> Result<(), OpalError> {
        self.forced()?;
        if !self.pe_ok(phb, pe) {
            return self.refuse(format!("freeze_set {pe:?}"));
        }
        let state = match action {
            EehClear::Mmio => FreezeState::Mmio,
            EehClear::Dma => FreezeState::Dma,
            EehClear::All => FreezeState::MmioDma,
        };
        self.frozen.borrow_mut().insert(
            pe.0,
            FreezeStatus {
                state,
                error: PciErrorType::NoError,
            },
        );
        Ok(())
    }

    fn pci_set_peltv(
        &self,
        phb: PhbId,
        parent: PeNum,
        child: PeNum,
        action: PeltvAction,
    ) -> Result<(), OpalError> {
        self.calls.borrow_mut().push(Call::SetPeltv {
            phb: phb.0,
            parent: parent.0.into(),
            child: child.0.into(),
            action: action as u8,
        });
        self.forced()?;
        if !self.pe_ok(phb, parent) || !self.pe_ok(phb, child) {
            return self.refuse(format!("set_peltv {parent:?} {child:?}"));
        }
        let mut v = self.peltv.borrow_mut();
        match action {
            PeltvAction::Add => v.insert((parent.0, child.0)),
            PeltvAction::Remove => v.remove(&(parent.0, child.0)),
        };
        Ok(())
    }

    fn pci_config_read_byte(&self, _: PhbId, bdfn: Bdfn, off: u16) -> Result<u8, OpalError> {
        Ok((self.word(bdfn, off & !3) >> ((off & 3) * 8)) as u8)
    }
    fn pci_config_read_half_word(&self, _: PhbId, bdfn: Bdfn, off: u16) -> Result<u16, OpalError> {
        Ok((self.word(bdfn, off & !3) >> ((off & 2) * 8)) as u16)
    }
    fn pci_config_read_word(&self, _: PhbId, bdfn: Bdfn, off: u16) -> Result<u32, OpalError> {
        Ok(self.word(bdfn, off))
    }
    fn pci_config_write_byte(&self, _: PhbId, _: Bdfn, _: u16, _: u8) -> Result<(), OpalError> {
        Err(OpalError::Unsupported)
    }
    fn pci_config_write_half_word(
        &self,
        _: PhbId,
        _: Bdfn,
        _: u16,
        _: u16,
    ) -> Result<(), OpalError> {
        Err(OpalError::Unsupported)
    }
    fn pci_config_write_word(
        &self,
        _: PhbId,
        bdfn: Bdfn,
        off: u16,
        v: u32,
    ) -> Result<(), OpalError> {
        self.config
            .borrow_mut()
            .insert((bdfn.0.into(), off.into()), v);
        Ok(())
    }
}

impl FakeOpal {
    fn word(&self, bdfn: Bdfn, off: u16) -> u32 {
        *self
            .config
            .borrow()
            .get(&(bdfn.0.into(), off.into()))
            .unwrap_or(&0xffff_ffff)
    }
}

/// A TCE table as the PHB sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct FakeTable {
    pub addr: u64,
    pub levels: u32,
    pub level: u64,
    pub shift: u32,
    pub offset: u64,
    pub size: u64,
    pub node: u32,
}

impl DmaWindowTable for FakeTable {
    fn top_level_phys(&self) -> u64 {
        self.addr
    }
    fn levels(&self) -> u32 {
        self.levels
    }
    fn level_size(&self) -> u64 {
        self.level
    }
    fn page_shift(&self) -> u32 {
        self.shift
    }
    fn bus_offset(&self) -> u64 {
        self.offset
    }
    fn window_size(&self) -> u64 {
        self.size
    }
}

/// Hands out tables at fresh addresses, one per call, recording the node asked for.
pub struct FakeFactory {
    next: Cell<u64>,
    pub nodes: RefCell<Vec<u32>>,
    pub fail: Cell<bool>,
}

impl FakeFactory {
    pub fn new() -> Self {
        Self {
            next: Cell::new(0x4000_0000),
            nodes: RefCell::new(Vec::new()),
            fail: Cell::new(false),
        }
    }
}

impl TableFactory for FakeFactory {
    type Table = FakeTable;
    type Error = &'static str;
    fn create(&self, node: u32, w: &DefaultWindow) -> Result<FakeTable, &'static str> {
        if self.fail.get() {
            return Err("no memory");
        }
        self.nodes.borrow_mut().push(node);
        let addr = self.next.get();
        self.next.set(addr + 0x10_0000);
        Ok(FakeTable {
            addr,
            levels: w.levels,
            level: 0x1_0000,
            shift: w.page_shift,
            offset: w.bus_offset,
            size: w.window_size,
            node,
        })
    }
}

/// 32-bit default window: 1 GiB of 4K pages in 2 levels of 64 KiB (reach 2^38).
pub const DEFAULT32: DefaultWindow = DefaultWindow {
    bus_offset: 0,
    window_size: 1 << 30,
    page_shift: 12,
    levels: 2,
};

/// An owner's table: 1 level of 64 KiB, 64K pages (reach 2^29 = 512 MiB).
pub fn owner_table(addr: u64, window: u8) -> FakeTable {
    FakeTable {
        addr,
        levels: 1,
        level: 0x1_0000,
        shift: 16,
        offset: u64::from(window) << 59,
        size: 1 << 29,
        node: 0,
    }
}

/// Configuration space of a root port and endpoint functions, with BAR sizing behaviour.
pub struct FakeConfig {
    /// (bdfn, offset) -> word.
    pub space: RefCell<HashMap<(u16, u16), u32>>,
    /// (bdfn, bar index) -> size mask of the BAR (writable address bits), flags in low bits.
    pub bar_masks: HashMap<(u16, u8), u32>,
    pub writes: RefCell<Vec<(Bdfn, u16, u32)>>,
}

impl FakeConfig {
    pub fn word(&self, bdfn: Bdfn, off: u16) -> u32 {
        *self
            .space
            .borrow()
            .get(&(bdfn.0, off & !3))
            .unwrap_or(&0xffff_ffff)
    }
    fn put(&self, bdfn: Bdfn, off: u16, v: u32) {
        let aligned = off & !3;
        let v = match self
            .bar_masks
            .get(&(bdfn.0, ((aligned.wrapping_sub(0x10)) / 4) as u8))
        {
            Some(mask) if (0x10..0x28).contains(&aligned) => {
                (v & mask) | (self.word(bdfn, aligned) & !mask)
            }
            _ => v,
        };
        self.space.borrow_mut().insert((bdfn.0, aligned), v);
    }
    fn exists(&self, bdfn: Bdfn) -> bool {
        self.space.borrow().contains_key(&(bdfn.0, 0))
    }
}

impl PciConfig for FakeConfig {
    fn read8(&self, b: Bdfn, off: u16) -> Result<u8, PciConfigError> {
        check_config_offset(off, 1)?;
        Ok((self.word(b, off) >> ((off & 3) * 8)) as u8)
    }
    fn read16(&self, b: Bdfn, off: u16) -> Result<u16, PciConfigError> {
        check_config_offset(off, 2)?;
        Ok((self.word(b, off) >> ((off & 2) * 8)) as u16)
    }
    fn read32(&self, b: Bdfn, off: u16) -> Result<u32, PciConfigError> {
        check_config_offset(off, 4)?;
        Ok(self.word(b, off))
    }
    fn write8(&self, b: Bdfn, off: u16, v: u8) -> Result<(), PciConfigError> {
        check_config_offset(off, 1)?;
        let sh = (off & 3) * 8;
        let w = (self.word(b, off) & !(0xff << sh)) | (u32::from(v) << sh);
        self.write32(b, off & !3, w)
    }
    fn write16(&self, b: Bdfn, off: u16, v: u16) -> Result<(), PciConfigError> {
        check_config_offset(off, 2)?;
        let sh = (off & 2) * 8;
        let w = (self.word(b, off) & !(0xffff << sh)) | (u32::from(v) << sh);
        self.write32(b, off & !3, w)
    }
    fn write32(&self, b: Bdfn, off: u16, v: u32) -> Result<(), PciConfigError> {
        check_config_offset(off, 4)?;
        if !self.exists(b) {
            return Err(PciConfigError::NoDevice(b));
        }
        self.writes.borrow_mut().push((b, off, v));
        self.put(b, off, v);
        Ok(())
    }
}
