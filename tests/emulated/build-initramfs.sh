#!/usr/bin/env bash
# Build the emulated CPE's initramfs (newc cpio, gzip): busybox, the init
# script next to this file, the kernel's MTD/virtio modules, mtd-utils with
# its shared libraries (an independent reader), libubootenv's fw_printenv and
# fw_setenv when present, the static agent at /usr/sbin/firmcast-agent, and
# the package's /etc/init.d/S80firmcast and /etc/sysctl.d/50-firmcast.conf.
#
#   tests/emulated/build-initramfs.sh ROOT AGENT OUT.cpio.gz
#
# ROOT: extracted Debian packages (scripts/setup-qemu.sh: target/emulated/mipsel/root).
set -euo pipefail
root=$1 agent=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/fcemu-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,sbin,etc/firmcast,usr/sbin,usr/bin,lib/modules,proc,sys,dev,tmp}
cp "$root/bin/busybox" "$stage/bin/busybox"
install -m 0755 "$here/init" "$stage/init"
install -m 0755 "$agent" "$stage/usr/sbin/firmcast-agent"
# The shipped BusyBox init script and sysctl, installed where the Buildroot
# package puts them: init starts the agent through them.
pkg=$here/../../packaging
mkdir -p "$stage/etc/init.d" "$stage/etc/sysctl.d" "$stage/var/run"
install -m 0755 "$pkg/buildroot/package/firmcast/S80firmcast" "$stage/etc/init.d/S80firmcast"
install -m 0644 "$pkg/files/firmcast.sysctl.conf" "$stage/etc/sysctl.d/50-firmcast.conf"

# Kernel modules: MTD devices, NAND, virtio (whole directories: small).
kver=$(ls "$root/lib/modules" | head -1)
kdir=$root/lib/modules/$kver
for d in kernel/drivers/mtd kernel/drivers/virtio kernel/drivers/ata/ata_piix.ko kernel/drivers/block/virtio_blk.ko \
         kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko \
         kernel/net/core/failover.ko kernel/lib/bch.ko kernel/lib/crc16.ko; do
    if [[ -e $kdir/$d ]]; then
        mkdir -p "$stage/lib/modules/$kver/$(dirname "$d")"
        cp -r "$kdir/$d" "$stage/lib/modules/$kver/$(dirname "$d")/"
    fi
done
find "$stage/lib/modules" -name '*.ko.xz' -exec xz -d {} +
rm -rf "$stage/lib/modules/$kver/kernel/drivers/mtd/ubi"

# mtd-utils (dynamically linked) and, below, the libraries it needs.
for f in mtd_debug mtdinfo nanddump nandwrite flash_erase; do
    [[ -f $root/usr/sbin/$f ]] && cp "$root/usr/sbin/$f" "$stage/usr/sbin/"
done
# libubootenv's fw_printenv and fw_setenv (the A/B scenario sets up and reads
# the U-Boot environment with them), when scripts/setup-qemu.sh fetched them.
for f in fw_printenv fw_setenv; do
    if [[ -f $root/usr/bin/$f ]]; then cp "$root/usr/bin/$f" "$stage/usr/bin/"; fi
done
for d in lib usr/lib; do
    for sub in "$root/$d"/*-linux-gnu*; do
        [[ -d $sub ]] || continue
        mkdir -p "$stage/$d/$(basename "$sub")"
        cp -a "$sub"/*.so* "$stage/$d/$(basename "$sub")/" 2>/dev/null || true
    done
done
for l in "$root"/lib/ld*.so*; do [[ -e $l ]] && cp -a "$l" "$stage/lib/"; done

(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
