#!/usr/bin/env bash
# The tools scripts/lint-packaging.sh runs the shipped packages through:
# the shell linter, flake8 and python3-magic (Buildroot's check-package),
# groff (man pages), systemd-analyze (the unit), oelint-adv (the Yocto
# recipe, from PyPI). Idempotent; as non-root it only says what is missing (the
# lint then prints SKIP for those checks).
set -euo pipefail

need_apt=()
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v flake8 >/dev/null 2>&1 || need_apt+=(flake8)
/usr/bin/python3 -c 'import magic' 2>/dev/null || need_apt+=(python3-magic)
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v pip3 >/dev/null 2>&1 || command -v oelint-adv >/dev/null 2>&1 || need_apt+=(python3-pip)

if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-packaging: missing ${need_apt[*]} (install as root); their checks will be skipped" >&2
    else
        echo "setup-packaging: installing ${need_apt[*]}"
        flock /tmp/apt.lock apt-get update -qq
        DEBIAN_FRONTEND=noninteractive flock /tmp/apt.lock apt-get install -y -qq "${need_apt[@]}"
    fi
fi
if ! command -v oelint-adv >/dev/null 2>&1; then
    echo "setup-packaging: installing oelint-adv (PyPI)"
    pip3 install -q oelint-adv || pip3 install -q --break-system-packages oelint-adv ||
        echo "setup-packaging: oelint-adv not installed; the Yocto lint will be skipped" >&2
fi
