//! Differential property test: for random layouts and hypercall sequences, "real mode, then
//! virtual mode on H_TOO_HARD" ends with the same return codes, tables and counts as "virtual
//! mode only", and real mode changes nothing when it declines.

use p9iommu::hcall::fuzz::{build, decode, Op};
use p9iommu::hcall::sim::H_TOO_HARD;
use p9iommu::hcall::Mode;
use p9iommu::mm::alloc_guard::GuardedAllocator;
use proptest::prelude::*;

#[global_allocator]
static ALLOC: GuardedAllocator<std::alloc::System> = GuardedAllocator::new(std::alloc::System);

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn real_then_virtual_equals_virtual_only(data in proptest::collection::vec(any::<u8>(), 2..400)) {
        let (layout, ops) = decode(&data);
        let mut fast = build(&layout);
        let mut slow = build(&layout);
        let mut declined = 0;
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Write(gpa, v) => {
                    prop_assert_eq!(fast.write_guest(gpa, v), slow.write_guest(gpa, v));
                }
                Op::Call(nr, args) => {
                    let before = fast.snapshot();
                    let mut a = fast.call(Mode::Real, nr, args);
                    if a.0 == H_TOO_HARD {
                        declined += 1;
                        prop_assert_eq!(&fast.snapshot(), &before, "op {}: declined but changed", n);
                        a = fast.call(Mode::Virtual, nr, args);
                    }
                    let b = slow.call(Mode::Virtual, nr, args);
                    prop_assert_eq!(a, b, "op {} {:x?}", n, op);
                    prop_assert_eq!(fast.snapshot(), slow.snapshot(), "op {} {:x?}", n, op);
                }
            }
        }
        let _ = declined;
        prop_assert_eq!(fast.teardown(), Ok(()));
        prop_assert_eq!(slow.teardown(), Ok(()));
    }
}
