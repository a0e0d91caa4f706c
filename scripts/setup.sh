#!/usr/bin/env bash
# Install what firmcast needs on a fresh Debian/Ubuntu machine. Idempotent:
# running it twice installs nothing the second time.
#
#   scripts/setup.sh          # Rust toolchain check + build-essential
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)

if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need ${need_apt[*]}; run as root or install them with apt-get" >&2
        exit 1
    fi
    echo "setup: installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install Rust (rustup, stable >= 1.85) and re-run." >&2
    exit 1
fi
echo "setup: $(cargo --version), $(rustc --version)"
bash "$(dirname "$0")/setup-uboot.sh"
# Linters for the packages in packaging/ (scripts/lint-packaging.sh).
bash "$(dirname "$0")/setup-packaging.sh"
# Network-namespace tests (tier 4) need iproute2, nftables, ethtool (root only:
# without root those tests print NOT RUN and why).
if [[ $(id -u) -eq 0 ]]; then bash "$(dirname "$0")/setup-netns.sh"; fi
# The fleet page test renders the page in Debian's headless Chromium (it
# skips, saying so, where Chromium cannot be installed).
bash "$(dirname "$0")/setup-browser.sh"
# Device tier (root): cross toolchains for the static ARM/MIPS agent, and qemu
# with Debian's Malta/ARM kernels for the emulated device. Skip with
# FIRMCAST_SKIP_DEVICE_TIER=1.
if [[ $(id -u) -eq 0 && ${FIRMCAST_SKIP_DEVICE_TIER:-0} != 1 ]]; then
    bash "$(dirname "$0")/setup-cross.sh"
    bash "$(dirname "$0")/setup-qemu.sh"
fi
