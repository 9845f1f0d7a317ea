#!/usr/bin/env bash
# Check the insn-count plugin against ground truth: a full instruction trace.
#
#   tools/insn-count/check-trace.sh [--keep DIR] [--ranges R] [BENCH_FILTER ...]
#
# For each bench filter (default: tce.ops hcall.real_mode), in the kernel already built by
# `cargo kernel` (or ./qemu-run.sh):
#   1. a normal bench boot with the plugin printing its raw count per region
#      (./qemu-run.sh --count-log): the figures the benches are computed from;
#   2. the same boot under `-singlestep -d nochain,exec -dfilter R`, where QEMU logs one
#      `Trace` line per executed instruction in the ranges R, with the plugin loaded too (the
#      benches only run their regions when counts are available) and printing into the same
#      log;
# then, region by region, it counts the `Trace` lines strictly between the start marker
# (`ori 27,27,0`) and the next stop marker (`ori 28,28,0`), whose addresses it looks up with
# powerpc64le-linux-gnu-objdump (apt-get install binutils-powerpc64le-linux-gnu), and prints
#   region  plugin(normal run)  plugin(single-step run)  trace
# Exit status 0 when all three agree for every region, 1 otherwise.
#
# Regions are numbered in the order the kernel measures them: each count_instructions call is
# one region, and the first call of a boot is followed by the empty-pair calibration (a small
# region of its own, 8 instructions today). Bench lines print (region - calibration) / N.
#
# R defaults to the vectors (0..0xffff) and the kernel image (0x20000000..__image_end): the
# firmware is left out because logging skiboot's own boot would take gigabytes, so a region
# that calls OPAL (phb.kill.opal) shows fewer trace lines than plugin counts; widen R with
# --ranges (QEMU -dfilter syntax: A..B,C+LEN) to include it. A trace of hcall.real_mode takes
# about 30 s and 400 MB; logs are deleted unless --keep DIR is given.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
keep= ranges=
filters=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=${2:?--keep needs a directory}; shift 2 ;;
    --ranges) ranges=${2:?--ranges needs -dfilter ranges}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "check-trace: unknown option $1" >&2; exit 2 ;;
    *) filters+=("$1"); shift ;;
  esac
done
[ "${#filters[@]}" -gt 0 ] || filters=(tce.ops hcall.real_mode)

kernel="${CARGO_TARGET_DIR:-$root/target}/ppc64le-kernel/release/kernel"
plugin="${CARGO_TARGET_DIR:-$root/tools/insn-count/target}/release/libinsn_count.so"
objdump=powerpc64le-linux-gnu-objdump
nm=powerpc64le-linux-gnu-nm
command -v "$objdump" >/dev/null || { echo "check-trace: needs $objdump (apt-get install binutils-powerpc64le-linux-gnu)" >&2; exit 2; }
[ -f "$kernel" ] || { echo "check-trace: no kernel at $kernel (run cargo kernel)" >&2; exit 2; }

# Marker addresses, as the 16-digit PCs the exec log prints.
markers() { # $1 = register number
  "$objdump" -d "$kernel" | awk -v re="ori[ \t]+r$1,r$1,0\$" '$0 ~ re { sub(":", "", $1); printf "%016s\n", $1 }' | tr ' ' 0
}
starts=$(markers 27 | paste -sd, -)
stops=$(markers 28 | paste -sd, -)
[ -n "$starts" ] && [ -n "$stops" ] || { echo "check-trace: no markers in $kernel" >&2; exit 2; }
if [ -z "$ranges" ]; then
  end=$("$nm" "$kernel" | awk '$3 == "__image_end" { print $1 }')
  ranges="0..0xffff,0x20000000..0x$end"
fi
echo "kernel $kernel"
echo "start marker(s) at $starts, stop marker(s) at $stops, traced ranges $ranges"

work=${keep:-$(mktemp -d "${TMPDIR:-/tmp}/check-trace.XXXXXX")}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

status=0
for f in "${filters[@]}"; do
  echo "== bench $f"
  # 1. Normal run (builds the plugin if needed).
  "$root/qemu-run.sh" --no-build --quiet --count-log "$work/$f.plugin.log" bench "$f" >/dev/null 2>&1 \
    || { echo "check-trace: the plugin run of bench $f failed" >&2; status=1; continue; }
  # 2. Single-step trace of the same boot (the machine qemu-run.sh boots).
  timeout 900 qemu-system-ppc64 -M powernv9 -smp 1 -m 2G -display none -serial stdio -monitor none \
    -kernel "$kernel" -append "bench $f" \
    -device edu,bus=pcie.0,dma_mask=0xffffffffffffffff -device edu,bus=pcie.1,dma_mask=0xffffffffffffffff \
    -plugin "$plugin,print=on" -singlestep -d plugin,nochain,exec -dfilter "$ranges" \
    -D "$work/$f.trace.log" </dev/null | tr -d '\r' | grep '^bench ' | sed 's/^/   /' || true

  grep -o '[0-9]* insns$' "$work/$f.plugin.log" | cut -d' ' -f1 >"$work/$f.normal"
  # Trace lines: "Trace 0: HOST [CS_BASE/PC/FLAGS/CFLAGS] SYMBOL"; plugin lines interleaved.
  awk -v starts="$starts" -v stops="$stops" -v traced="$work/$f.traced" -v single="$work/$f.single" '
    BEGIN { n = split(starts, a, ","); for (i = 1; i <= n; i++) S[a[i]] = 1
            n = split(stops, b, ","); for (i = 1; i <= n; i++) T[b[i]] = 1 }
    /^insn-count: .* insns$/ { print $(NF - 1) > single; next }
    /^Trace / {
      split($0, p, /[][\/]/); pc = p[3]
      if (pc in S) { counting = 1; k = 0; next }
      if (pc in T) { if (counting) print k > traced; counting = 0; next }
      if (counting) k++
    }' "$work/$f.trace.log"
  touch "$work/$f.traced" "$work/$f.single"
  printf '   %-6s %12s %12s %12s\n' region plugin plugin-1step trace
  paste -d' ' "$work/$f.normal" "$work/$f.single" "$work/$f.traced" | awk -v bench="$f" '
    { ok = ($1 == $2 && $2 == $3 && NF == 3); if (!ok) bad++
      printf "   %-6d %12s %12s %12s %s\n", NR - 1, $1, $2, $3, ok ? "" : "MISMATCH" }
    END { if (bad || NR == 0) { print "   " bench ": " (NR ? bad " mismatching regions" : "no regions"); exit 1 } }' \
    || status=1
done
exit $status
