#!/usr/bin/env bash
# Build one firmware slot image for the real-U-Boot scenario: a FIT with
# Debian's armmp kernel and an initramfs (busybox, tests/uboot/init, the
# virtio modules, the agent and its config).
#
#   tests/uboot/build-slot.sh ROOT AGENT ETC VERSION BEHAVIOUR OUT.itb
#
# ROOT: extracted armhf packages (scripts/setup-qemu.sh); ETC: a directory
# copied to /etc/firmcast (agent.toml, operator.pub); BEHAVIOUR: good|dead.
set -euo pipefail
root=$1 agent=$2 etc=$3 version=$4 behaviour=$5 out=$6
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/fcub-slot.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,etc/firmcast,usr/sbin,lib/modules,proc,sys,dev,tmp}
cp "$root/bin/busybox" "$stage/bin/busybox"
install -m 0755 "$here/init" "$stage/init"
install -m 0755 "$agent" "$stage/usr/sbin/firmcast-agent"
cp "$etc"/* "$stage/etc/firmcast/"
echo "$version" >"$stage/etc/fw-version"
echo "FC_BEHAVIOUR=$behaviour" >"$stage/etc/slot.env"
printf '/dev/vda 0x100000 0x4000\n/dev/vda 0x110000 0x4000\n' >"$stage/etc/fw_env.config"
kver=$(ls "$root/lib/modules" | head -1)
kdir=$root/lib/modules/$kver
for m in drivers/virtio/virtio_mmio drivers/block/virtio_blk drivers/net/virtio_net \
         drivers/net/net_failover net/core/failover; do
    mkdir -p "$stage/lib/modules/$kver/kernel/$(dirname "$m")"
    for f in "$kdir/kernel/$m".ko*; do cp "$f" "$stage/lib/modules/$kver/kernel/$(dirname "$m")/"; done
done
find "$stage/lib/modules" -name '*.ko.xz' -exec xz -d {} +
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$stage.cpio.gz"
kernel=$(ls "$root"/boot/vmlinuz-* | head -1)
cat >"$stage.its" <<ITS
/dts-v1/;
/ {
    description = "firmcast test slot $version ($behaviour)";
    #address-cells = <1>;
    images {
        kernel {
            data = /incbin/("$kernel");
            type = "kernel"; arch = "arm"; os = "linux"; compression = "none";
            load = <0x40008000>; entry = <0x40008000>;
        };
        ramdisk {
            data = /incbin/("$stage.cpio.gz");
            type = "ramdisk"; arch = "arm"; os = "linux"; compression = "none";
        };
    };
    configurations {
        default = "conf-1";
        conf-1 { kernel = "kernel"; ramdisk = "ramdisk"; };
    };
};
ITS
mkimage -q -f "$stage.its" "$out.tmp"
rm -f "$stage.its" "$stage.cpio.gz"
mv "$out.tmp" "$out"
