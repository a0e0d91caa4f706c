#!/usr/bin/env bash
# Install the U-Boot environment tools the interop tests compare against
# (tests/tests/uboot_env.rs): fw_printenv / fw_setenv from libubootenv.
# Idempotent: installs nothing when fw_printenv is already on the PATH.
#
#   scripts/setup-uboot.sh
set -euo pipefail

if command -v fw_printenv >/dev/null 2>&1 && command -v fw_setenv >/dev/null 2>&1; then
    echo "setup-uboot: $(command -v fw_printenv) present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-uboot: fw_printenv missing and no apt-get; install libubootenv-tool by hand (the fw_printenv interop tests will say SKIPPED)" >&2
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-uboot: libubootenv-tool (fw_printenv/fw_setenv) is missing; as root: apt-get install libubootenv-tool (until then the interop tests say SKIPPED)" >&2
    exit 0
fi
echo "setup-uboot: installing libubootenv-tool"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg (a concurrent setup script) instead of failing.
apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
# A fresh container has no package lists; a stale one may name gone versions.
# An index of some other architecture failing to download must not stop us.
if ! "${apt[@]}" install libubootenv-tool; then
    "${apt[@]}" update || echo "setup-uboot: apt-get update reported errors; trying the install anyway" >&2
    "${apt[@]}" install libubootenv-tool
fi
command -v fw_printenv >/dev/null 2>&1 || {
    echo "setup-uboot: libubootenv-tool installed but fw_printenv is not on the PATH" >&2
    exit 1
}
echo "setup-uboot: $(command -v fw_printenv) installed"
