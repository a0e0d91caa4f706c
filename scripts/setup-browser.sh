#!/usr/bin/env bash
# Install Debian's Chromium for the fleet page test (tests/tests/fleet_page.rs:
# headless Chromium renders `firmcast send --http` and keeps a screenshot).
# Idempotent: running it twice installs nothing the second time. Without
# root it only says what is missing, and the test prints SKIPPED and why.
#
#   scripts/setup-browser.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "setup-browser: nothing to install"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-browser: chromium is missing; install it as root (apt-get install chromium) or the fleet page test skips" >&2
    exit 0
fi
echo "setup-browser: installing chromium"
# A stale mirror index (e.g. of a foreign architecture) must not stop the install.
apt-get update -qq || echo "setup-browser: apt-get update reported errors; installing anyway" >&2
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium
