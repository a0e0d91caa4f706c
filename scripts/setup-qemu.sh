#!/usr/bin/env bash
# Install what the emulated device tier (tests/tests/emulated.rs) needs on a
# Debian bookworm machine: qemu-system-mips (qemu-system-mipsel), and, as
# *downloaded and extracted* packages (never installed into the host), Debian's
# 4kc-malta mipsel kernel with its modules, busybox-static:mipsel,
# mtd-utils:mipsel and libubootenv-tool:mipsel (fw_printenv, fw_setenv) with
# their shared libraries. They land in
# target/emulated/mipsel/root (override with FIRMCAST_EMU_DIR).
# Also the armhf armmp kernel (nandsim only) for the ARM virt guest.
# Idempotent: a second run downloads nothing.
#
#   scripts/setup-qemu.sh          # as root (apt-get install qemu-system-mips)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600)

emu=${FIRMCAST_EMU_DIR:-$PWD/target/emulated}

need=()
for p in qemu-system-mips qemu-system-arm qemu-utils xz-utils cpio busybox-static; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ! dpkg --print-foreign-architectures | grep -qx mipsel || ! dpkg --print-foreign-architectures | grep -qx armhf; then
    [[ $(id -u) -eq 0 ]] || { echo "setup-qemu: run as root" >&2; exit 1; }
    dpkg --add-architecture mipsel
    dpkg --add-architecture armhf
    "${APT[@]}" update -qq || true
fi
if ((${#need[@]})); then
    [[ $(id -u) -eq 0 ]] || { echo "setup-qemu: need ${need[*]}; run as root" >&2; exit 1; }
    echo "setup-qemu: installing ${need[*]}"
    "${APT[@]}" install -y -qq --no-install-recommends "${need[@]}"
fi

# fetch ARCH ROOTDIR PKG...: apt-get download each package (once) and extract it.
fetch() {
    local arch=$1 root=$2
    shift 2
    mkdir -p "$emu/debs-$arch" "$root"
    for p in "$@"; do
        if [[ -f "$emu/debs-$arch/.$p.done" ]]; then continue; fi
        (cd "$emu/debs-$arch" && "${APT[@]}" -o APT::Sandbox::User=root download -qq "$p:$arch")
        local deb
        deb=$(ls -t "$emu/debs-$arch/${p}_"*"_$arch.deb" | head -1)
        dpkg-deb -x "$deb" "$root"
        touch "$emu/debs-$arch/.$p.done"
    done
}

# The kernel image package behind the metapackage (e.g. linux-image-6.1.0-50-4kc-malta).
kpkg() {
    apt-cache depends "$1" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' | sed 's/:.*//'
}

mips_root=$emu/mipsel/root
if [[ ! -f $emu/mipsel/.done ]]; then
    k=$(kpkg linux-image-4kc-malta:mipsel)
    [[ -n $k ]] || { echo "setup-qemu: cannot resolve linux-image-4kc-malta:mipsel" >&2; exit 1; }
    fetch mipsel "$mips_root" "$k" busybox-static mtd-utils libc6 libiniparser1 liblzo2-2 \
        libselinux1 libpcre2-8-0 libssl3 libuuid1 libzstd1 zlib1g
    touch "$emu/mipsel/.done"
fi
# The real fw_printenv/fw_setenv (libubootenv) for the A/B scenario; fetched
# outside the .done guard so that an existing guest root gains them too.
fetch mipsel "$mips_root" libubootenv-tool libubootenv0.1

arm_root=$emu/armhf/root
if [[ ${FIRMCAST_EMU_ARM:-1} == 1 && ! -f $emu/armhf/.done ]]; then
    k=$(kpkg linux-image-armmp:armhf)
    if [[ -n $k ]]; then
        fetch armhf "$arm_root" "$k" busybox-static mtd-utils libc6 libiniparser1 liblzo2-2 \
            libselinux1 libpcre2-8-0 libssl3 libuuid1 libzstd1 zlib1g
        touch "$emu/armhf/.done"
    fi
fi

echo "setup-qemu: $(qemu-system-mipsel --version | head -1); guest files in $emu"
ls "$mips_root"/boot/vmlinu* 2>/dev/null || true
