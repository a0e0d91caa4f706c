#!/usr/bin/env bash
# Lints what packaging/ ships, as the distributions' own tools see it:
#
#   - Buildroot: package/firmcast under Buildroot's check-package
#     (../shared/tools/check-buildroot-package, vendored utils/check-package)
#   - Yocto: meta-firmcast under oelint-adv, and its crates .inc up to date
#     with Cargo.lock (packaging/meta-firmcast/gen-crates-inc.py --check)
#   - OpenWrt: the feed Makefile parsed by make with stand-ins for the
#     OpenWrt tree (packaging/openwrt/stub): the variables and package
#     definitions the feed needs, the cargo commands, and each package's
#     install recipe run for real into a scratch directory
#   - shellcheck on the init scripts, systemd-analyze verify on the unit
#   - the man pages and completions up to date with the binaries' --help
#     (firmcast-docgen --check), and every page rendered by groff without a
#     warning
#   - the root Cross.toml parsed as cross 0.2.5 parses it
#
# Each check that cannot run here prints "SKIP: <why>"; any finding fails.
# Needs the host binaries (cargo build --workspace --bins) for the OpenWrt
# install and systemd checks. Run by scripts/test.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
P=$ROOT/packaging
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fail=0
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fc-lint-packaging.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

say() { echo "lint-packaging: $*"; }
skip() { say "SKIP: $*"; }
bad() { say "FAIL: $*"; fail=1; }

# --- Buildroot -----------------------------------------------------------
say "buildroot: check-package packaging/buildroot/package/firmcast"
brcheck=$ROOT/../shared/tools/check-buildroot-package
if [[ ! -x $brcheck ]]; then
    skip "buildroot: $brcheck not found (the vendored utils/check-package lives next to the repository)"
elif ! /usr/bin/python3 -c 'import magic' 2>/dev/null || ! command -v flake8 >/dev/null || ! command -v shellcheck >/dev/null; then
    skip "buildroot: check-package needs /usr/bin/python3 with python3-magic, flake8 and shellcheck (scripts/setup.sh)"
else
    "$brcheck" "$P/buildroot/package/firmcast" || bad "buildroot: check-package found problems"
fi

# --- Yocto ----------------------------------------------------------------
say "yocto: crates .inc matches Cargo.lock"
/usr/bin/python3 "$P/meta-firmcast/gen-crates-inc.py" --check || bad "yocto: firmcast-crates.inc is stale"
if ! command -v oelint-adv >/dev/null; then
    skip "yocto: oelint-adv not installed (pip install oelint-adv; scripts/setup.sh)"
else
    # homepageping fetches HOMEPAGE over the network (not in CI);
    # bbclassextend: the agent is a device daemon, no -native use.
    for release in scarthgap latest; do
        say "yocto: oelint-adv --release $release meta-firmcast"
        out=$(oelint-adv --quiet --mode all --release "$release" \
            --suppress oelint.vars.homepageping --suppress oelint.var.bbclassextend \
            "$P"/meta-firmcast/recipes-*/*/*.bb 2>&1) || true
        if [[ -n $out ]]; then echo "$out"; bad "yocto: oelint-adv ($release) findings"; fi
    done
fi

# --- OpenWrt --------------------------------------------------------------
say "openwrt: Makefile parsed against stand-ins for the OpenWrt tree"
if ! command -v make >/dev/null; then
    skip "openwrt: make not installed"
else
    feed=$scratch/feed top=$scratch/top
    mkdir -p "$feed/utils" "$feed/lang/rust" "$top/include" "$scratch/pkgdir/bin"
    cp -r "$P/openwrt/firmcast" "$feed/utils/"
    cp "$P/openwrt/stub/rust-package.mk" "$feed/lang/rust/"
    cp "$P/openwrt/stub/rules.mk" "$top/rules.mk"
    : >"$top/include/package.mk"
    owmake() {
        make -C "$feed/utils/firmcast" -f Makefile -f "$P/openwrt/stub/check.mk" \
            TOPDIR="$top" INCLUDE_DIR="$top/include" CONFIG_PACKAGE_firmcast-cli=y \
            PKG_BUILD_DIR="$ROOT" PKG_INSTALL_DIR="$scratch/pkgdir" "$@"
    }
    if ! owmake -n -s lint-compile >"$scratch/compile.txt"; then
        bad "openwrt: Makefile does not parse"
    elif ! grep -q "/agent\"" "$scratch/compile.txt" || ! grep -q "/server\"" "$scratch/compile.txt"; then
        cat "$scratch/compile.txt"; bad "openwrt: Build/Compile does not build agent and server"
    elif [[ ! -x $BIN/firmcast-agent || ! -x $BIN/firmcast ]]; then
        skip "openwrt: install recipes: $BIN has no firmcast-agent/firmcast (cargo build --workspace --bins)"
    else
        ln -s "$BIN/firmcast-agent" "$BIN/firmcast" "$scratch/pkgdir/bin/"
        if ! owmake -s lint-install STAGE="$scratch/stage" >/dev/null; then
            bad "openwrt: a package install recipe failed"
        else
            for f in firmcast-agent/usr/sbin/firmcast-agent firmcast-agent/etc/init.d/firmcast \
                firmcast-agent/etc/firmcast/agent.toml firmcast-agent/etc/sysctl.d/50-firmcast.conf \
                firmcast-cli/usr/bin/firmcast firmcast-cli/usr/share/bash-completion/completions/firmcast; do
                [[ -e $scratch/stage/$f ]] || bad "openwrt: install recipe did not install $f"
            done
        fi
    fi
fi

# --- init scripts and the systemd unit -------------------------------------
if ! command -v shellcheck >/dev/null; then
    skip "shellcheck not installed"
else
    # The init scripts run under BusyBox ash or OpenWrt's rc.common: POSIX sh
    # (so does the emulated device's /init, tests/emulated/init).
    for f in packaging/buildroot/package/firmcast/S80firmcast packaging/openwrt/firmcast/files/firmcast.init \
        tests/emulated/init scripts/lint-packaging.sh; do
        say "shellcheck $f"
        shell="sh"; [[ $f == *.sh ]] && shell="bash"
        out=$(shellcheck -s "$shell" "$f" 2>&1) || true
        if [[ -n $out ]]; then echo "$out"; bad "shellcheck $f"; fi
    done
fi
# S80firmcast's behaviour under this host's /bin/sh, with a stand-in agent
# (sleeps, exits 3) and its paths moved into the scratch directory: start
# returns at once with the agent running, status reports it, the exit status
# is kept, stop ends a running agent.
say "S80firmcast: start/status/stop with a stand-in agent"
sv=$scratch/sysv
mkdir -p "$sv"
# shellcheck disable=SC2016 # the stand-in expands FAKE_SECS itself
printf '#!/bin/sh\nsleep "${FAKE_SECS:-1}"\nexit 3\n' >"$sv/agent" && chmod 0755 "$sv/agent"
sed -e "s|^AGENT=.*|AGENT=\"$sv/agent\"|" -e "s|/var/run/|$sv/|g" -e "s|/etc/default/|$sv/default-|" \
    packaging/buildroot/package/firmcast/S80firmcast >"$sv/S80firmcast"
sysv() { sh "$sv/S80firmcast" "$@" 2>/dev/null; }
t0=$(date +%s%N)
out=$(sysv start)
ms=$((($(date +%s%N) - t0) / 1000000))
[[ $out == "Starting firmcast: OK" ]] || bad "S80firmcast start printed: $out"
((ms < 900)) || bad "S80firmcast start took $ms ms: it must not wait for the agent"
[[ $(sysv status) == "firmcast: running, pid "* ]] || bad "S80firmcast status while running: $(sysv status)"
for _ in $(seq 30); do [[ -s $sv/firmcast.status ]] && break; sleep 0.1; done
[[ $(sysv status) == "firmcast: exited with status 3" ]] || bad "S80firmcast status after exit: $(sysv status)"
FAKE_SECS=30 sysv start >/dev/null
pid=$(cat "$sv/firmcast.pid" 2>/dev/null || true)
if [[ $(sysv stop) != "Stopping firmcast: OK" ]] || { sleep 0.3; kill -0 "$pid" 2>/dev/null; }; then
    bad "S80firmcast stop did not end the agent (pid ${pid:-none})"
    [[ -n $pid ]] && kill "$pid" 2>/dev/null
fi
say "S80firmcast: start returned in $ms ms; exit status 3 kept; stop ended pid $pid"

unit=packaging/buildroot/package/firmcast/firmcast.service
# Structural: the unit must not hold up the boot (a oneshot in
# multi-user.target waits for the whole boot window) nor count a failure
# exit as success (2 config, 3 refused, 4 flash, 5 stalled, 6 activation).
grep -Eq '^Type=(exec|simple)$' "$unit" || bad "$unit: Type= must be exec or simple (not oneshot): the boot must not wait"
grep -q '^RemainAfterExit=yes' "$unit" && bad "$unit: RemainAfterExit=yes"
if grep -E '^SuccessExitStatus=' "$unit" | grep -Eqw '[2-6]'; then bad "$unit: SuccessExitStatus lists a failure code"; fi
if ! command -v systemd-analyze >/dev/null; then
    skip "systemd-analyze not installed (no systemd here): $unit not verified"
elif [[ ! -d /lib/systemd/system ]]; then
    skip "no /lib/systemd/system to verify $unit against"
else
    # A root with the host's units, the unit and an executable where
    # ExecStart points, so verify checks this unit and nothing else.
    r=$scratch/sdroot
    mkdir -p "$r/usr/lib/systemd" "$r/etc/systemd/system" "$r/usr/sbin"
    cp -r /lib/systemd/system "$r/usr/lib/systemd/"
    cp "$unit" "$r/etc/systemd/system/"
    printf '#!/bin/sh\n' >"$r/usr/sbin/firmcast-agent" && chmod 0755 "$r/usr/sbin/firmcast-agent"
    say "systemd-analyze verify $unit"
    out=$(systemd-analyze verify --man=no --root="$r" firmcast.service 2>&1) || bad "systemd-analyze verify failed"
    if [[ -n $out ]]; then echo "$out"; bad "systemd-analyze verify: $unit"; fi
fi

# --- man pages and completions ----------------------------------------------
say "man pages and completions up to date (firmcast-docgen --check packaging)"
cargo run -q -p firmcast-packaging --bin firmcast-docgen -- --check packaging || bad "man pages/completions stale"
if ! command -v groff >/dev/null; then
    skip "groff not installed: man pages not rendered"
else
    n=0
    for page in packaging/man/*.[18]; do
        out=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || bad "groff failed on $page"
        if [[ -n $out ]]; then echo "$out"; bad "groff warnings in $page"; fi
        n=$((n + 1))
    done
    say "groff rendered $n man pages"
fi

# --- cross 0.2.5 -------------------------------------------------------------
# A mirror of cross's config structs, not the cross binary: cross parses its
# config and then installs or updates rustup toolchains and targets before
# it ever needs Docker.
say "Cross.toml as cross 0.2.5 parses it"
cargo test -q -p firmcast-packaging --test cross_toml_v0_2_5 -- --nocapture 2>&1 | grep -E "cross_toml:|test result|panicked|error" || true
cargo test -q -p firmcast-packaging --test cross_toml_v0_2_5 >/dev/null 2>&1 || bad "Cross.toml: cross 0.2.5 would not parse it"

if ((fail)); then say "FAILED"; exit 1; fi
say "all checks passed"
