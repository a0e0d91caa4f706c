#!/usr/bin/env bash
# Build the router guest's initramfs (newc cpio, gzip): the host's static
# busybox, init (next to this file) and the kernel modules it loads, in
# dependency order (read from each module's `depends=`; no depmod needed):
# virtio PCI and net, 9p over virtio (the guest runs FRR and smcroute from the
# host's own file system, mounted read-only).
#
#   tests/netns/router/build-initramfs.sh KERNEL_ROOT OUT.cpio.gz
#
# KERNEL_ROOT: the extracted Debian amd64 kernel package (scripts/setup-netns.sh).
set -euo pipefail
root=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/fcrouter-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

busybox=$(command -v busybox) || { echo "build-initramfs: busybox missing (busybox-static)" >&2; exit 2; }
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build-initramfs: $busybox is not static (busybox-static)" >&2
    exit 2
fi
mkdir -p "$stage"/{bin,proc,sys,dev,host,state,lib/modules}
cp "$busybox" "$stage/bin/busybox"
install -m 0755 "$here/init" "$stage/init"

kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf "%f\n" | sort | tail -1)
kdir=$root/lib/modules/$kver/kernel
declare -A path=() seen=()
while IFS= read -r -d '' ko; do
    m=$(basename "$ko" .ko)
    path[${m//-/_}]=$ko
done < <(find "$kdir" -name '*.ko' -print0)
order=()
add() { # module: its dependencies first, then itself
    local m=${1//-/_} dep
    [[ -n ${seen[$m]:-} ]] && return 0
    seen[$m]=1
    [[ -n ${path[$m]:-} ]] || { echo "build-initramfs: no module $m in $kdir" >&2; exit 2; }
    for dep in $(strings -a "${path[$m]}" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add "$dep"
    done
    order+=("$m")
}
for m in virtio_pci virtio_net 9pnet_virtio 9p; do add "$m"; done
for m in "${order[@]}"; do
    cp "${path[$m]}" "$stage/lib/modules/$m.ko"
    echo "$m" >>"$stage/lib/modules/order"
done
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
