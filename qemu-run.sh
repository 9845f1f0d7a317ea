#!/usr/bin/env bash
# Build the kernel and boot it on QEMU's powernv9 machine (POWER9 under skiboot), console on stdio.
#
#   ./qemu-run.sh [options] [demo | test [FILTER] | bench [FILTER] | script FILE...]
#
# `script FILE...` boots a guest that runs the hypercall scripts FILE... (see README.md,
# "Hypercall scripts"); they reach the kernel as an initrd.
#
# `bench` loads the insn-count QEMU plugin (tools/insn-count, built during set-up): the figures
# are exact instruction counts, and without the plugin the kernel reports them unavailable.
#
# Options:
#   --smp N         cores per chip, one thread each (default 1)
#   --chips N       POWER9 chips (sockets; default 1): skiboot gives each its own chip id,
#                   XSCOM and PHBs, as on a two-socket machine
#   --mem SIZE      RAM, as QEMU's -m takes it (default 2G)
#   --edu N         attach N QEMU edu devices, one per PHB starting at PHB 0 (default 2; 0 for none)
#   --gdb           wait for gdb on localhost:1234 (target remote :1234); disables the timeout
#   --trace         log guest errors (-d guest_errors: TCE faults, invalid TVEs...) to stderr
#   --kexec         boot the way petitboot does: Debian's ppc64el Linux first, which loads this
#                   kernel with `kexec -l` and runs it with `kexec -e` (tools/kexec-trial.sh;
#                   fetches and caches the packages once, needs root and apt-get)
#   --count         load the insn-count plugin in any mode (bench always loads it)
#   --count-log F   load it and have it write one line per counted region to file F
#                   (-d plugin -D F; with --trace the guest errors go to F too)
#   --profile F     load it and append each region's instructions by address to file F
#                   (tools/insn-count/profile.py F turns them into a per-function breakdown)
#   --timeout S     kill QEMU after S seconds of wall time (default 120)
#   --quiet         do not stream the console; on failure show its last lines
#   --no-build      boot the kernel already built
#   -h, --help      this text
#
# Exit status: 0 only when the kernel reported success on its console (`p9iommu: exit 0`);
# QEMU's own status carries no pass/fail. 1 when the kernel reported failure or never finished,
# 2 for a usage or set-up error, 3 when --kexec cannot get its packages here (skipped, loudly).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
caller_dir=$PWD
cd "$root"

smp=1 chips=1 mem=2G edu=2 gdb=0 trace=0 kexec=0 count=0 count_log= profile= timeout_s=120 quiet=0 build=1
args=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smp) smp=${2:?--smp needs a number}; shift 2 ;;
    --mem) mem=${2:?--mem needs a size}; shift 2 ;;
    --chips) chips=${2:?--chips needs a number}; shift 2 ;;
    --edu) edu=${2:?--edu needs a number}; shift 2 ;;
    --gdb) gdb=1; shift ;;
    --trace) trace=1; shift ;;
    --kexec) kexec=1; shift ;;
    --count) count=1; shift ;;
    --count-log) count=1; count_log=${2:?--count-log needs a file}; shift 2
                 case "$count_log" in /*) ;; *) count_log="$caller_dir/$count_log" ;; esac ;;
    --profile) count=1; profile=${2:?--profile needs a file}; shift 2
               case "$profile" in /*) ;; *) profile="$caller_dir/$profile" ;; esac ;;
    --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
    --quiet) quiet=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "qemu-run: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
scripts=() bundle=
case "${args[0]:-demo}" in
  demo|test|bench)
    if [ "${#args[@]}" -gt 2 ]; then echo "qemu-run: too many arguments: ${args[*]}" >&2; exit 2; fi ;;
  script)
    scripts=("${args[@]:1}")
    if [ "${#scripts[@]}" = 0 ]; then echo "qemu-run: script needs at least one FILE" >&2; exit 2; fi
    for f in "${scripts[@]}"; do
      [ -f "$f" ] && [ -r "$f" ] || { echo "qemu-run: cannot read script '$f'" >&2; exit 2; }
    done
    [ "$kexec" = 0 ] || { echo "qemu-run: --kexec does not take scripts (they travel as the initrd)" >&2; exit 2; }
    args=(script) ;;
  *) echo "qemu-run: unknown mode '${args[0]}': expected demo, test [FILTER], bench [FILTER] or script FILE..." >&2; exit 2 ;;
esac
[ "${args[0]:-demo}" = bench ] && count=1

say() { echo "qemu-run: $*" >&2; }

# --- set-up: the pinned toolchain with rust-src, and QEMU -------------------------------------
need_root_or_print() { # $1 = command a user must run
  say "missing dependency; run: $1"
  exit 2
}
if ! command -v rustup >/dev/null 2>&1; then
  need_root_or_print "curl https://sh.rustup.rs -sSf | sh   (then re-run this script)"
fi
sysroot=$(rustc --print sysroot 2>/dev/null || true)
if [ -z "$sysroot" ] || [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
  say "installing the pinned toolchain and rust-src (rust-toolchain.toml)..."
  rustup toolchain install >&2 || need_root_or_print "rustup toolchain install   (in $root)"
fi
if ! command -v qemu-system-ppc64 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing qemu-system-ppc (Debian package)..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-ppc; } >&2 \
      || need_root_or_print "apt-get install qemu-system-ppc"
  else
    need_root_or_print "sudo apt-get install qemu-system-ppc"
  fi
fi

# --- build ------------------------------------------------------------------------------------
kernel="${CARGO_TARGET_DIR:-$root/target}/ppc64le-kernel/release/kernel"
if [ "$build" = 1 ]; then
  say "building the kernel (cargo kernel)..."
  cargo kernel --quiet >&2
fi
[ -f "$kernel" ] || { say "no kernel at $kernel (drop --no-build)"; exit 2; }

# The instruction-count plugin, a host cdylib (built even with --no-build: it is set-up, and a
# no-op when up to date).
plugin="${CARGO_TARGET_DIR:-$root/tools/insn-count/target}/release/libinsn_count.so"
if [ "$count" = 1 ]; then
  say "building the instruction-count plugin..."
  cargo build --release --quiet --manifest-path "$root/tools/insn-count/Cargo.toml" >&2
  [ -f "$plugin" ] || { say "no plugin at $plugin"; exit 2; }
fi

# --- boot -------------------------------------------------------------------------------------
qemu=(qemu-system-ppc64 -M powernv9 -smp "$((smp * chips)),sockets=$chips,cores=$smp,threads=1" -m "$mem"
      -display none -serial stdio -monitor none)
if [ "$kexec" = 1 ]; then
  # Linux boots first and kexecs this kernel with the command line (tools/kexec-trial.sh).
  set +e
  trial=$("$root/tools/kexec-trial.sh" "${CARGO_TARGET_DIR:-$root/target}/kexec-trial" "$kernel" "${args[*]:-demo}")
  rc=$?
  set -e
  if [ "$rc" = 3 ]; then
    say "SKIPPED: the kexec trial cannot get Debian's ppc64el packages here (see above)"
    exit 3
  fi
  [ "$rc" = 0 ] || { say "kexec trial set-up failed"; exit 2; }
  qemu+=(-kernel "$(sed -n 1p <<<"$trial")" -initrd "$(sed -n 2p <<<"$trial")"
         -append "console=hvc0 rdinit=/init quiet")
else
  qemu+=(-kernel "$kernel" -append "${args[*]:-demo}")
fi
for ((i = 0; i < edu; i++)); do qemu+=(-device "edu,bus=pcie.$i,dma_mask=0xffffffffffffffff"); done
if [ "${#scripts[@]}" -gt 0 ]; then
  # The scripts as one initrd: each file after a `#@file NAME` line (hv::script::parse_bundle).
  bundle=$(mktemp "${TMPDIR:-/tmp}/qemu-run.XXXXXX.hcall")
  for f in "${scripts[@]}"; do printf '#@file %s\n' "$f"; cat "$f"; printf '\n'; done >"$bundle"
  qemu+=(-initrd "$bundle")
fi
log_items=()
[ "$trace" = 1 ] && log_items+=(guest_errors)
if [ "$count" = 1 ]; then
  plugin_args=$plugin
  [ -n "$profile" ] && plugin_args+=",profile=$profile"
  if [ -n "$count_log" ]; then
    qemu+=(-plugin "$plugin_args,print=on" -D "$count_log")
    log_items+=(plugin)
  else
    qemu+=(-plugin "$plugin_args")
  fi
fi
if [ "${#log_items[@]}" -gt 0 ]; then qemu+=(-d "$(IFS=,; echo "${log_items[*]}")"); fi
if [ "$gdb" = 1 ]; then
  qemu+=(-s -S)
  say "waiting for gdb: gdb -ex 'target remote :1234' $kernel"
  timeout_s=0
fi

log=$(mktemp "${TMPDIR:-/tmp}/qemu-run.XXXXXX.log")
trap 'rm -f "$log" ${bundle:+"$bundle"}' EXIT
say "booting: ${qemu[*]}"
set +e
if [ "$quiet" = 1 ]; then
  timeout --kill-after=5 "$timeout_s" "${qemu[@]}" </dev/null >"$log" 2>&1
  rc=$?
else
  timeout --kill-after=5 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
fi
set -e

show_tail() { echo "---- last console lines ----" >&2; tail -n 40 "$log" | tr -d '\r' >&2; }
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  say "TIMEOUT: QEMU killed after ${timeout_s}s"
  show_tail
  exit 1
fi
status=$(tr -d '\r' <"$log" | sed -n 's/^p9iommu: exit \([0-9]*\)$/\1/p' | tail -n 1)
if [ "$status" = 0 ]; then
  exit 0
fi
if [ -z "$status" ]; then
  say "the kernel never reported its exit status (QEMU exit code $rc)"
else
  say "the kernel reported failure (exit $status)"
fi
[ "$quiet" = 1 ] && show_tail
exit 1
