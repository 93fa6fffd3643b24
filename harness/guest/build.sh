#!/usr/bin/env bash
# Builds the Linux guest that the USB tests boot in QEMU: Debian's kernel (extracted from its
# package, never installed), a busybox initramfs with the USB host modules, dfu-util and the
# libraries it needs, plus any extra files (our `hil` binary, images) with their libraries.
# No network in the guest: it talks to the host only through serial ports and usbredir.
#
#   harness/guest/build.sh OUT_DIR [EXTRA_FILE:GUEST_PATH ...]
#
# Writes OUT_DIR/kernel and OUT_DIR/initramfs.cpio.gz. The kernel package is downloaded once into
# $HIL_GUEST_CACHE (default OUT_DIR). Needs: apt-get (download only), dpkg-deb, busybox-static,
# dfu-util, cpio, gzip (.ci/run installs them).
set -euo pipefail
out=$(realpath -m "$1"); shift
mkdir -p "$out"
work="$out/work"
rm -rf "$work"; mkdir -p "$work/root"
root="$work/root"

need() { command -v "$1" >/dev/null 2>&1 || { echo "guest build: $1 is missing ($2)" >&2; exit 3; }; }
need busybox "apt-get install busybox-static"
need dfu-util "apt-get install dfu-util"
need cpio "apt-get install cpio"
need dpkg-deb "dpkg"

# The kernel: the versioned package behind linux-image-amd64, downloaded once into the cache.
cache=$(realpath -m "${HIL_GUEST_CACHE:-$out}")
mkdir -p "$cache"
if [ ! -s "$cache/kernel" ] || [ ! -e "$cache/modules/cdc-acm.ko" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { echo "guest build: apt-cache knows no linux-image-amd64 (run apt-get update)" >&2; exit 3; }
  (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "guest build: apt-get download $pkg failed" >&2; exit 3; }
  dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kpkg"
  cp "$work"/kpkg/boot/vmlinuz-* "$cache/kernel"
  rm -rf "$cache/modules"; mkdir -p "$cache/modules"
  for m in usb-common usbcore xhci-hcd xhci-pci cdc-acm; do
    f=$(find "$work/kpkg/lib/modules" -name "$m.ko*" | head -n1)
    [ -n "$f" ] || { echo "guest build: module $m not in $pkg" >&2; exit 3; }
    cp "$f" "$cache/modules/"
  done
  rm -rf "$work/kpkg" "$work"/*.deb
fi

[ "$cache" = "$out" ] || cp "$cache/kernel" "$out/kernel"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,work}
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$cache"/modules/* "$root/lib/modules/"

# A dynamically linked program and the libraries ldd names, at their paths.
copy_with_libs() {
  local src=$1 dst=$2
  mkdir -p "$root/$(dirname "$dst")"
  cp "$src" "$root/$dst"
  { ldd "$src" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
    mkdir -p "$root/$(dirname "$lib")"
    cp -L "$lib" "$root/$lib"
  done
}
copy_with_libs "$(command -v dfu-util)" /bin/dfu-util
for extra in "$@"; do
  copy_with_libs "${extra%%:*}" "${extra#*:}"
done

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in usb-common usbcore xhci-hcd xhci-pci cdc-acm; do
  insmod /lib/modules/$m.ko* || echo "guest: insmod $m failed"
done
echo "guest: modules loaded"
# Commands come on the second serial port, one per line; each ends with its exit status.
stty -F /dev/ttyS1 raw -echo
exec < /dev/ttyS1 > /dev/ttyS1 2>&1
echo "__GUEST_READY"
while read -r line; do
  sh -c "$line"
  echo "__RC=$?"
done
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initramfs.cpio.gz")
rm -rf "$work"
echo "guest: $out/kernel $out/initramfs.cpio.gz"
