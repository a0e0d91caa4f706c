#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/simulation tests,
# and the integration tests that run the real binaries over real multicast
# on loopback. This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (intra-doc links resolve)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
echo "== build binaries (the integration tests run them)"
cargo build --workspace --bins
echo "== packaging lint (Buildroot, Yocto, OpenWrt, init scripts, man pages, Cross.toml)"
bash scripts/lint-packaging.sh
if [[ $(id -u) -eq 0 && ${FIRMCAST_SKIP_DEVICE_TIER:-0} != 1 ]]; then
    echo "== cross builds (static agent for ARM and MIPS) and unit tests under qemu-user"
    bash cross/build.sh --test
    # The emulated device tier must run, not skip, when the device tier is on.
    export FIRMCAST_REQUIRE_EMULATED=1
fi
echo "== cargo test"
cargo test --workspace -- --test-threads 2
