#!/usr/bin/env python3
"""Per-function breakdown of an insn-count profile (`./qemu-run.sh --profile F bench ...`).

    tools/insn-count/profile.py PROFILE [--kernel ELF] [--region N ...] [--top K]

For each region in PROFILE (all, or those given with --region), prints the region's figure and
its instructions grouped by the kernel function they belong to (the innermost
function of this project at each address, inlining included, from the debug info through
powerpc64le-linux-gnu-addr2line; `apt-get install binutils-powerpc64le-linux-gnu`), highest
first. Addresses below 0x2000 are the hypervisor's exception vectors, those below 64 MiB the
guest's code (guest real mode), anything else outside the image firmware.
"""
import argparse, collections, os, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("profile")
ap.add_argument("--kernel", default=os.path.join(root, "target/ppc64le-kernel/release/kernel"))
ap.add_argument("--region", type=int, action="append")
ap.add_argument("--top", type=int, default=25)
ap.add_argument("--groups", action="store_true",
                help="sum the functions into the hypercall path's stages (README's breakdown)")
ap.add_argument("--bias", type=lambda x: int(x, 0),
                help="run-time address minus link address (default: the first LOAD segment's "
                     "file offset: QEMU's -kernel puts the whole file at 0x20000000 and skiboot "
                     "runs it in place, so code sits that far above its link address)")
a = ap.parse_args()
if a.bias is None:
    ph = subprocess.run(["powerpc64le-linux-gnu-readelf", "-lW", a.kernel],
                        capture_output=True, text=True, check=True).stdout
    a.bias = int(next(l.split()[1] for l in ph.splitlines() if l.split()[:1] == ["LOAD"]), 16)

# Each address's innermost function of this project (through inlining, from the debug info),
# which says more than the symbol table: most of the hot path is inlined into a few symbols.
def load_names(kernel, pcs, bias):
    kpcs = sorted(pc for pc in pcs if pc & 0x0FFF_FFFF_FFFF_FFFF >= 0x2000_0000)
    text = subprocess.run(
        ["powerpc64le-linux-gnu-addr2line", "-a", "-f", "-i", "-C", "-e", kernel],
        input="".join(f"{(pc - bias) | 0xC000_0000_0000_0000:#x}\n" for pc in kpcs),
        capture_output=True, text=True,
        check=True).stdout
    names, cur, frames = {}, None, []
    def done():
        if cur is not None:
            fns = frames[0::2]
            mine = [f for f in fns if f.startswith(("p9iommu::", "<p9iommu::"))]
            names[cur] = short(mine[0] if mine else (fns[-1] if fns else "??"))
    for line in text.splitlines():
        if line.startswith("0x") and all(c in "0123456789abcdefx" for c in line):
            done()
            cur, frames = (int(line, 16) & 0x0FFF_FFFF_FFFF_FFFF) + bias, []
        else:
            frames.append(line)
    done()
    return names

# The hypercall path's stages, first match wins (README's breakdown table).
GROUPS = [
    ("sc 1 entry/exit (vector, save, restore)", ("p9_hcall_entry", "p9_guest_resume", "(exception vectors)",
                                                 "(guest)")),
    ("dispatch, counters, allocation guard", ("kernel::guests::", "rm_dispatch", "hcall::run",
                                              "hcall::dispatch", "HcallStats", "alloc_guard",
                                              "kernel::vmemmap::get")),
    ("TCE kill (a counter here; a PHB kill adds phb.kill.*)", ("handlers::kill", "KillCounter")),
    ("page references (vmemmap walker, counts, dirty)", ("mm::vmemmap", "mm::page", "handlers::desc",
                                                         "rm_can_release", "handlers::release",
                                                         "acquire", "put_ref")),
    ("validation and translation (window, memslot, prereg)", ("check_tce", "check_ioba", "find_window",
                                                              "Guest>::window", "Memslot", "PreregRegion",
                                                              "GuestMemory", "mm::addr")),
    ("table walks and exchanges (both views)", ("tce::table", "tce::entry", "tce::memory",
                                                "tce::geometry", "as hcall::window::HwTable")),
    ("guest view", ("GuestView",)),
    ("batch phases (update: control, undo log, loops)", ("hcall::handlers::", "memset", "memcpy")),
]

def group(fn):
    for g, pats in GROUPS:
        if any(p in fn for p in pats):
            return g
    return "other"

def short(n):
    return n.replace("p9iommu::", "").replace("mm::mode::", "").replace("core::", "")

def name(pc, names):
    low = pc & 0x0FFF_FFFF_FFFF_FFFF
    if low < 0x2000:
        return "(exception vectors)"
    if low < 0x0400_0000:
        return "(guest)"
    if low not in names:
        return "(firmware)"
    return names.get(low, "(firmware)")

regions, cur = [], None
with open(a.profile) as f:
    for line in f:
        w = line.split()
        if w[0] == "region":
            cur = (int(w[1]), int(w[2]), collections.Counter())
            regions.append(cur)
        else:
            cur[2][int(w[0], 16)] += int(w[1])
names = load_names(a.kernel, {pc for _, _, c in regions for pc in c}, a.bias)
for n, figure, pcs in regions:
    by = collections.Counter()
    for pc, c in pcs.items():
        by[name(pc, names)] += c
    if a.region and n not in a.region:
        continue
    print(f"region {n}: {figure} insns")
    if a.groups:
        gs = collections.Counter()
        for fn, c in by.items():
            gs[group(fn)] += c
        by = gs
    for fn, c in by.most_common(a.top):
        print(f"  {c:8} {fn}")
