#!/usr/bin/env bash
# The kexec trial's set-up: a user's real path to this kernel on POWER9 (petitboot is a Linux
# that kexecs the next kernel). Prepares, once, a Debian ppc64el Linux kernel and an initramfs
# with busybox and kexec-tools, then, for each run, an initramfs that loads KERNEL with
# `kexec -l KERNEL --append=CMDLINE` and `kexec -e`.
#
#   tools/kexec-trial.sh DIR KERNEL CMDLINE
#
# DIR caches the packages and their contents. Prints two lines: the Linux kernel (vmlinux) and
# the initramfs to boot with it. Exit status 3: the packages cannot be had here (no root, no
# package source): the caller says so and skips, or fails under CI.
set -euo pipefail
dir=$1 kernel=$2 cmdline=$3
say() { echo "kexec-trial: $*" >&2; }
mkdir -p "$dir"
cache="$dir/debs"

if [ ! -f "$cache/ready" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "cannot fetch Debian's ppc64el packages here (needs root and apt-get)"
    exit 3
  fi
  say "fetching Debian's ppc64el Linux kernel, kexec-tools, busybox and libc (once; cached in $cache)..."
  if ! dpkg --print-foreign-architectures | grep -qx ppc64el; then
    dpkg --add-architecture ppc64el
  fi
  apt-get update -qq >&2 || true
  image=$(apt-cache depends linux-image-powerpc64le:ppc64el 2>/dev/null \
    | sed -n 's/.*Depends: \(linux-image-[^:]*\):ppc64el.*/\1/p' | head -n 1)
  if [ -z "$image" ]; then
    say "no ppc64el Linux kernel package found (is the ppc64el architecture reachable?)"
    exit 3
  fi
  command -v cpio >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cpio >&2
  rm -rf "$cache" && mkdir -p "$cache/root"
  (cd "$cache" && apt-get download "$image:ppc64el" kexec-tools:ppc64el busybox-static:ppc64el \
    libc6:ppc64el >&2 2>/dev/null) || { say "apt-get download failed"; exit 3; }
  for deb in "$cache"/*.deb; do dpkg-deb -x "$deb" "$cache/root"; done
  touch "$cache/ready"
fi

root=$cache/root
vmlinux=$(ls "$root"/boot/vmlinux-* 2>/dev/null | head -n 1)
[ -n "$vmlinux" ] || { say "no vmlinux in the Linux package"; exit 3; }

# The initramfs: busybox, kexec and the two libraries it needs, this kernel, and /init.
ird=$dir/initramfs
rm -rf "$ird" && mkdir -p "$ird"/{bin,sbin,proc,sys,dev,lib64,lib/powerpc64le-linux-gnu}
cp "$root/bin/busybox" "$ird/bin/busybox"
cp "$root/sbin/kexec" "$ird/sbin/kexec"
cp -L "$root/lib/powerpc64le-linux-gnu/libc.so.6" "$ird/lib/powerpc64le-linux-gnu/"
cp -L "$root/lib/powerpc64le-linux-gnu/ld64.so.2" "$ird/lib/powerpc64le-linux-gnu/"
ln -s ../lib/powerpc64le-linux-gnu/ld64.so.2 "$ird/lib64/ld64.so.2"
cp "$kernel" "$ird/p9iommu"
printf '%s' "$cmdline" >"$ird/cmdline"
cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "kexec-trial: Linux is up; kexec -l /p9iommu --append=\"$(/bin/busybox cat /cmdline)\""
if /sbin/kexec -l /p9iommu --append="$(/bin/busybox cat /cmdline)"; then
  echo "kexec-trial: kexec -e"
  /sbin/kexec -e
fi
echo "kexec-trial: FAILED to kexec"
echo "p9iommu: exit 1"
/bin/busybox poweroff -f
EOF
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initramfs.cpio.gz"
echo "$vmlinux"
echo "$dir/initramfs.cpio.gz"
