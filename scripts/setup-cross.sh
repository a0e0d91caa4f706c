#!/usr/bin/env bash
# Install what cross/build.sh needs on a Debian bookworm machine (no Docker):
# the cross gccs, Debian's own rustc/cargo with the std sources
# (bookworm-security's rustc-web, used with RUSTC_BOOTSTRAP=1 and
# -Zbuild-std), qemu-user-static for the cross unit tests, and the musl
# sources: cross/build.sh builds musl once per target from Debian's source
# package (Debian's musl-dev libc.a is position-independent, and there is
# none for big-endian mips; cross/README.md).
# Idempotent: a second run installs nothing.
#
#   scripts/setup-cross.sh        # as root
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-cross: run as root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# deb-src for `apt-get source musl` (cross/build.sh builds musl from it).
src=/etc/apt/sources.list.d/firmcast-deb-src.sources
if [[ ! -f $src ]]; then
    cat >"$src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

pkgs=(
    gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu gcc-mipsel-linux-gnu gcc-mips-linux-gnu
    rustc-web cargo-web libstd-rust-web-dev rust-web-src
    gcc qemu-user-static dpkg-dev make
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    # New packages: refresh the lists (a partial mirror
    # error for one architecture is not fatal; the install says what is missing).
    apt-get -o DPkg::Lock::Timeout=600 update -qq || echo "setup-cross: apt-get update reported errors (continuing)" >&2
    echo "setup-cross: installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi

# qemu-user-static registers binfmt handlers; the cargo runner calls the
# emulator explicitly, so binfmt_misc is optional.
echo "setup-cross: $(/usr/bin/rustc --version 2>/dev/null || echo 'no /usr/bin/rustc'), $(/usr/bin/cargo --version 2>/dev/null || echo 'no /usr/bin/cargo')"
