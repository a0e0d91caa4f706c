#!/usr/bin/env bash
# Install the U-Boot tools the tests use:
# - fw_printenv / fw_setenv from libubootenv (tests/tests/uboot_env.rs
#   compares against them; tests/tests/uboot_boot.rs writes the factory
#   environment with fw_setenv);
# - Debian's real U-Boot for qemu's `virt` machine (u-boot-qemu:
#   /usr/lib/u-boot/qemu_arm/u-boot.bin), mkimage / mkenvimage
#   (u-boot-tools) and dtc (device-tree-compiler, mkimage -f needs it) for
#   the real-bootloader A/B scenario (tests/tests/uboot_boot.rs).
# Idempotent: installs nothing when everything is present.
#
#   scripts/setup-uboot.sh
set -euo pipefail

have() {
    command -v fw_printenv >/dev/null 2>&1 && command -v fw_setenv >/dev/null 2>&1 &&
        command -v mkimage >/dev/null 2>&1 && command -v mkenvimage >/dev/null 2>&1 &&
        command -v dtc >/dev/null 2>&1 && [[ -f /usr/lib/u-boot/qemu_arm/u-boot.bin ]]
}
pkgs=(libubootenv-tool u-boot-qemu u-boot-tools device-tree-compiler)

if have; then
    echo "setup-uboot: fw_printenv, mkimage, mkenvimage, dtc and qemu_arm's u-boot.bin present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-uboot: U-Boot tools missing and no apt-get; install ${pkgs[*]} by hand (the U-Boot tests will say SKIPPED)" >&2
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-uboot: U-Boot tools missing; as root: apt-get install ${pkgs[*]} (until then the U-Boot tests say SKIPPED)" >&2
    exit 0
fi
echo "setup-uboot: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg (a concurrent setup script) instead of failing.
apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
# A fresh container has no package lists; a stale one may name gone versions.
# An index of some other architecture failing to download must not stop us.
if ! "${apt[@]}" install "${pkgs[@]}"; then
    "${apt[@]}" update || echo "setup-uboot: apt-get update reported errors; trying the install anyway" >&2
    "${apt[@]}" install "${pkgs[@]}"
fi
have || {
    echo "setup-uboot: ${pkgs[*]} installed but a tool is still missing" >&2
    exit 1
}
echo "setup-uboot: installed ${pkgs[*]}"
