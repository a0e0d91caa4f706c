#!/usr/bin/env bash
# Fully static, stripped firmcast-agent for ARM and MIPS routers, without
# Docker, with Debian's own rustc/cargo (bookworm-security rustc-web +
# rust-web-src: scripts/setup-cross.sh installs them). Notes per target:
# cross/README.md.
#
#   cross/build.sh                    # the four device targets (armv7, aarch64,
#                                     # mipsel, mips), prints stripped sizes
#   cross/build.sh mipsel-unknown-linux-musl armv7-unknown-linux-musleabihf
#   cross/build.sh x86_64-unknown-linux-musl
#                                     # only when named: the same static musl
#                                     # build for this x86_64 host, e.g. for
#                                     # bench/fleet --agent (not a device target)
#   cross/build.sh --test [TARGET...] # also run agent/flasher/proto unit tests
#                                     # under qemu-user-static (default: armv7, mipsel;
#                                     # aarch64, when built: the gf8 kernel's tests)
#
# Output: target/cross-build/out/<triple>/firmcast-agent (CARGO_TARGET_DIR is
# target/cross-build, separate from the host build's target/), and one
# firmcast-agent-<set> beside it per other feature set built.
#
# Feature sets (agent/Cargo.toml [features]; FIRMCAST_FEATURE_SETS, default
# "default minimal signed"; with --test "default" plus "test"):
#   default   the default device features: ab-uboot command parity
#   minimal   none of them: in-place/none activation, no parity decode
#   signed    default + device-key (every Status signed, R-STAT-4)
#   test      default + device-key + test-hooks ([test] table, simnor:): the
#             emulated tier
#   NAME=F1,F2  exactly features F1,F2 (e.g. "board=ab-uboot,parity")
#   FIRMCAST_FEATURE_SETS="default" cross/build.sh mipsel-unknown-linux-musl
#
# Environment: FIRMCAST_CROSS_PROFILE (default release), FIRMCAST_CROSS_RUSTFLAGS
# (appended to the target's RUSTFLAGS),
# FIRMCAST_PANIC_IMMEDIATE_ABORT (default 1: a panic aborts at once, printing
# nothing; 0 keeps panic messages, for debugging: cross/README.md),
# FIRMCAST_STD_FEATURES (extra std features; default optimize_for_size where
# this std has it, "" for none), FIRMCAST_SHA2_OPT_LEVEL (default 3, the
# workspace's; z: smaller and slower, to measure), FIRMCAST_MUSL_MALLOC
# (musl's allocator: default mallocng, oldmalloc to measure);
# with --test: FIRMCAST_CROSS_SIM=1 (also proto's fleet simulation, slow),
# FIRMCAST_CROSS_FEC_BENCH=1 (also proto's erasure-code measurement),
# FIRMCAST_CROSS_SHA_BENCH=1 (also SHA-256 per block against a memcpy).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# The device targets: what a bare `cross/build.sh` (and CI's --test) builds.
# x86_64-unknown-linux-musl (host benchmarks) is built only when named.
ALL=(armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl mipsel-unknown-linux-musl mips-unknown-linux-musl)
TEST_DEFAULT=(armv7-unknown-linux-musleabihf mipsel-unknown-linux-musl)
run_tests=0
targets=()
for a in "$@"; do
    case $a in
        --test) run_tests=1 ;;
        -h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *-*) targets+=("$a") ;;
        *) echo "cross/build.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done
((${#targets[@]})) || targets=("${ALL[@]}")

for tool in /usr/bin/cargo /usr/bin/rustc; do
    [[ -x $tool ]] || { echo "cross/build.sh: $tool missing: run scripts/setup-cross.sh" >&2; exit 1; }
done
[[ -d /usr/lib/rustlib/src/rust/library ]] || { echo "cross/build.sh: rust-web-src missing: run scripts/setup-cross.sh" >&2; exit 1; }

# Debian's toolchain, not rustup's proxies (first in PATH); nightly -Z flags.
export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
unset RUSTUP_TOOLCHAIN RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET
export CARGO_TARGET_DIR=$ROOT/target/cross-build
OUT=$CARGO_TARGET_DIR/out
SUPPORT=$CARGO_TARGET_DIR/support
PROFILE=${FIRMCAST_CROSS_PROFILE:-release}
mkdir -p "$OUT" "$SUPPORT"

# target -> "gnu-prefix qemu needs-dl_find_object" (qemu "-": runs natively)
spec() {
    case $1 in
        armv7-unknown-linux-musleabihf) echo "arm-linux-gnueabihf qemu-arm-static 0" ;;
        aarch64-unknown-linux-musl) echo "aarch64-linux-gnu qemu-aarch64-static 1" ;;
        mipsel-unknown-linux-musl) echo "mipsel-linux-gnu qemu-mipsel-static 1" ;;
        mips-unknown-linux-musl) echo "mips-linux-gnu qemu-mips-static 1" ;;
        x86_64-unknown-linux-musl) echo "x86_64-linux-gnu - 1" ;;
        *) echo "cross/build.sh: unsupported target $1" >&2; return 1 ;;
    esac
}

# musl for every target, built from Debian's source package (the same
# release as Debian's musl-dev) with the target's gcc into musl_prefix, and
# linked through its gcc wrapper. Debian's own libc.a is built
# position-independent (its .lo objects): on MIPS every call then loads the
# GOT and every function sets up $gp, on ARM every global is reached through
# the GOT, and big-endian MIPS has no Debian musl at all. Flags: -fno-pie
# (Debian's gcc builds PIE by default); on MIPS -mno-shared, code for a
# static executable (no $gp set-up, direct calls) that still links with the
# abicalls objects of gcc and rustc. The default agents, Debian's libc.a ->
# this musl: cross/README.md, "Where the bytes go".
MUSL_MALLOC=${FIRMCAST_MUSL_MALLOC:-mallocng}
musl_cflags() {
    case $1 in mips*) echo "-mno-shared" ;; *) echo "-fno-pie" ;; esac
}
# The flags are part of the path: a change of them is a new linker for
# cargo, which then links again (it does not track libc.a).
musl_prefix() {
    local f
    f=$(musl_cflags "$1")
    echo "$SUPPORT/musl-$1${f// /}-$MUSL_MALLOC"
}
musl_cc() { echo "$(musl_prefix "$1")/bin/musl-gcc"; }
build_musl() {
    local t=$1 gnu=$2 prefix
    prefix=$(musl_prefix "$t")
    [[ -x $prefix/bin/musl-gcc && -f $prefix/lib/libc.a ]] && return 0
    command -v "$gnu-gcc" >/dev/null || { echo "cross/build.sh: $gnu-gcc missing: run scripts/setup-cross.sh" >&2; return 1; }
    local src=$SUPPORT/musl-src-$t
    rm -rf "$src" && mkdir -p "$src"
    echo "== musl for $t from Debian's source package"
    # apt checks the downloaded files against the signed Sources index;
    # dpkg-source's own check of the .dsc's inline signature has no keyring
    # here and only prints gpgv noise, so it is skipped (--no-check). The
    # download runs as root: apt's _apt user cannot write to this directory.
    (cd "$src" && apt-get -o APT::Sandbox::User=root source -qq --download-only musl >/dev/null &&
        dpkg-source -x --no-check --skip-patches ./musl_*.dsc musl >/dev/null)
    (cd "$src/musl" && ./configure --quiet --target="$gnu" --prefix="$prefix" --disable-shared \
        --with-malloc="$MUSL_MALLOC" \
        --enable-wrapper=gcc CROSS_COMPILE="$gnu-" CC="$gnu-gcc" CFLAGS="$(musl_cflags "$t")" >/dev/null &&
        make -s -j"$(nproc)" >/dev/null && make -s install >/dev/null)
    rm -rf "$src"
    [[ -x $prefix/bin/musl-gcc ]]
}

# libunwind.a = the cross (for x86_64: the host) gcc's libgcc_eh.a (+
# _dl_find_object where GCC 12 wants it).
make_support() {
    local t=$1 gnu=$2 dlfo=$3 cc=$4
    local dir=$SUPPORT/$t
    mkdir -p "$dir"
    if [[ ! -f $dir/libunwind.a || $ROOT/cross/dl_find_object.c -nt $dir/libunwind.a ]]; then
        local eh
        eh=$("$gnu-gcc" -print-file-name=libgcc_eh.a)
        [[ -f $eh ]] || { echo "cross/build.sh: no libgcc_eh.a for $gnu" >&2; return 1; }
        cp "$eh" "$dir/libunwind.a.tmp"
        if [[ $dlfo == 1 ]]; then
            "$cc" -O2 -c "$ROOT/cross/dl_find_object.c" -o "$dir/dl_find_object.o"
            "$gnu-ar" rs "$dir/libunwind.a.tmp" "$dir/dl_find_object.o"
        fi
        mv "$dir/libunwind.a.tmp" "$dir/libunwind.a"
    fi
}

# Rust's mips*-musl targets are soft-float; Debian's gcc, and so musl and
# libgcc, are hard-float (fpxx). Mixing links but computes garbage: build
# Rust hard-float.
float_rustflags() {
    case $1 in mips*) echo "-C target-feature=-soft-float,+fpxx,+nooddspreg" ;; esac
}

# ARMv7: Thumb-2 instead of A32 for the Rust code (std included): the
# same instructions in mostly 16-bit encodings; the default set is ~19%
# smaller. musl is Thumb-2 too (Debian's arm-linux-gnueabihf-gcc default).
# MIPS: LLVM's delay-slot filler may also take the instruction for a
# branch's delay slot from the branch's successor block (off by default in
# LLVM; gcc always does it): 5,923 -> 3,760 `nop`s, 4,528 bytes of the
# mipsel agent.
isa_rustflags() {
    case $1 in
        armv7-*) echo "-C target-feature=+thumb-mode" ;;
        mips*) echo "-C llvm-args=-disable-mips-df-succbb-search=false" ;;
    esac
}

env_name() { echo "$1" | tr 'a-z-' 'A-Z_'; }

setup_target() {
    local t=$1 mode=${2:-test} gnu qemu dlfo
    read -r gnu qemu dlfo <<<"$(spec "$t")"
    build_musl "$t" "$gnu"
    local cc
    cc=$(musl_cc "$t")
    [[ -x $cc ]] || { echo "cross/build.sh: $cc missing: run scripts/setup-cross.sh" >&2; return 1; }
    make_support "$t" "$gnu" "$dlfo" "$cc"
    local E
    E=$(env_name "$t")
    export "CARGO_TARGET_${E}_LINKER=$cc"
    # -z norelro: GNU_RELRO must end on a max-page-size (64 KiB on MIPS)
    # boundary, so the linker pads the file up to 64 KiB before the data
    # segment (the mipsel agent was 657,428 bytes, 61 KiB of them padding).
    # A static non-PIE binary has no dynamic relocations for RELRO to protect.
    # -Z location-detail=none: panics keep their message but not the file
    # and line (a stripped device binary has no use for them).
    # -C force-unwind-tables=no (the device build, panic=abort; not the unit
    # tests, which unwind): nothing unwinds, and .eh_frame was 48 KB of the
    # mipsel agent.
    local unwind=
    [[ $mode == build ]] && unwind="-C force-unwind-tables=no ${immabort_rustflags:-}"
    export "CARGO_TARGET_${E}_RUSTFLAGS=-C target-feature=+crt-static -C link-self-contained=no -C relocation-model=static -C link-arg=-Wl,-z,norelro -L native=$SUPPORT/$t $(float_rustflags "$t") $(isa_rustflags "$t") -Z location-detail=none $unwind ${FIRMCAST_CROSS_RUSTFLAGS:-}"
    if [[ $qemu != - ]]; then
        export "CARGO_TARGET_${E}_RUNNER=$qemu"
    fi
    export "CC_${t//-/_}=$cc" "AR_${t//-/_}=$gnu-ar"
    GNU=$gnu
}

# std without the `backtrace` feature (cargo's build-std default): a stripped
# device binary cannot symbolize a backtrace anyway, and gimli, addr2line,
# rustc-demangle and miniz_oxide cost ~100 KiB. Panic messages stay. The
# features std declares differ between Rust releases (1.85 has the
# std_detect_* ones, 1.96 has none of them), so ask the std sources.
STD_TOML=/usr/lib/rustlib/src/rust/library/std/Cargo.toml
std_feature_list=()
for f in std_detect_file_io std_detect_dlsym_getauxval; do
    grep -q "^$f = " "$STD_TOML" && std_feature_list+=("$f")
done
# Panics abort without formatting or printing anything (the default: the
# unwinder and panic formatting are ~74 KB of the mipsel agent; what an
# operator still sees of a panic is in cross/README.md): older std has a
# panic_immediate_abort feature, newer rustc (1.9x) the panic strategy
# `immediate-abort` instead (device build only: the unit tests unwind).
immabort_rustflags=
if [[ ${FIRMCAST_PANIC_IMMEDIATE_ABORT:-1} == 1 ]]; then
    if grep -q '^panic_immediate_abort = ' "$STD_TOML"; then
        std_feature_list+=(panic_immediate_abort)
    else
        immabort_rustflags="-Zunstable-options -Cpanic=immediate-abort"
    fi
fi
# Extra std features, space-separated. By default std's optimize_for_size
# (smaller algorithms in std, none of them on the agent's hot path) when
# this std declares it.
if [[ -z ${FIRMCAST_STD_FEATURES+set} ]]; then
    FIRMCAST_STD_FEATURES=
    grep -q '^optimize_for_size = ' "$STD_TOML" && FIRMCAST_STD_FEATURES=optimize_for_size
fi
for f in ${FIRMCAST_STD_FEATURES}; do
    grep -q "^$f = " "$STD_TOML" ||
        { echo "cross/build.sh: this std has no $f feature" >&2; exit 2; }
    std_feature_list+=("$f")
done
std_features=("-Zbuild-std-features=$(IFS=,; echo "${std_feature_list[*]}")")
# Smallest code for the device binary; only the cross build, not the host's
# release profile (override with CARGO_PROFILE_RELEASE_OPT_LEVEL).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${CARGO_PROFILE_RELEASE_OPT_LEVEL:-z}
# sha2 keeps the workspace's opt-level 3 (its compression function is the
# agent's hottest loop); cargo reads per-package profile overrides only from
# a config, not from the environment.
profile_config=()
if [[ -n ${FIRMCAST_SHA2_OPT_LEVEL:-} ]]; then
    case $FIRMCAST_SHA2_OPT_LEVEL in
        [0-3]) profile_config=(--config "profile.release.package.sha2.opt-level=$FIRMCAST_SHA2_OPT_LEVEL") ;;
        s | z) profile_config=(--config "profile.release.package.sha2.opt-level='$FIRMCAST_SHA2_OPT_LEVEL'") ;;
        *) echo "cross/build.sh: FIRMCAST_SHA2_OPT_LEVEL must be 0-3, s or z" >&2; exit 2 ;;
    esac
fi

# "name" or "name=f1,f2" -> the cargo feature arguments of that set.
set_args() {
    case $1 in
        default) ;;
        minimal) echo "--no-default-features" ;;
        signed) echo "--features device-key" ;;
        test) echo "--features device-key,test-hooks" ;;
        *=*) echo "--no-default-features --features ${1#*=}" ;;
        *) echo "cross/build.sh: unknown feature set $1 (default, minimal, signed, test, NAME=F1,F2)" >&2; return 1 ;;
    esac
}
# CI (--test) builds what it runs: default, and test for the emulated tier.
if ((run_tests)); then
    read -r -a sets <<<"${FIRMCAST_FEATURE_SETS:-default}"
    [[ " ${sets[*]} " != *" test "* ]] && sets+=(test)
else
    read -r -a sets <<<"${FIRMCAST_FEATURE_SETS:-default minimal signed}"
fi
for set in "${sets[@]}"; do set_args "$set" >/dev/null || exit 2; done

declare -A size
for t in "${targets[@]}"; do
    setup_target "$t" build
    for set in "${sets[@]}"; do
        # The emulated tier runs only armv7 and mipsel: the test set only there.
        if [[ $set == test ]] && [[ " ${TEST_DEFAULT[*]} " != *" $t "* ]]; then
            continue
        fi
        name=${set%%=*}
        bin=firmcast-agent
        [[ $name == default ]] || bin=firmcast-agent-$name
        start=$(date +%s)
        echo "== $bin for $t ($PROFILE, features: $set)"
        read -r -a fargs <<<"$(set_args "$set")"
        "$CARGO" build "${profile_config[@]}" --profile "$PROFILE" -p firmcast-agent --bin firmcast-agent --target "$t" \
            "${fargs[@]}" -Zbuild-std=std,panic_abort "${std_features[@]}"
        mkdir -p "$OUT/$t"
        f=$OUT/$t/$bin
        "$GNU-strip" -o "$f" "$CARGO_TARGET_DIR/$t/$PROFILE/firmcast-agent"
        if "$GNU-readelf" -l "$f" | grep -q INTERP || "$GNU-readelf" -d "$f" 2>/dev/null | grep -q NEEDED; then
            echo "cross/build.sh: $f is not fully static" >&2
            exit 1
        fi
        size[$t/$name]=$(stat -c %s "$f")
        echo "   $f: ${size[$t/$name]} bytes ($((size[$t/$name] / 1024)) KiB), $(($(date +%s) - start)) s"
    done
done

if ((run_tests)); then
    tt=()
    for t in "${targets[@]}"; do
        for d in "${TEST_DEFAULT[@]}"; do [[ $t == "$d" ]] && tt+=("$t"); done
    done
    ((${#tt[@]})) || tt=("${TEST_DEFAULT[@]}")
    for t in "${tt[@]}"; do
        setup_target "$t"
        echo "== unit tests for $t under $(spec "$t" | cut -d' ' -f2)"
        # --ignore-rust-version: proptest (a proto dev-dependency) declares
        # rustc 1.88; Debian's 1.85 (older mirrors) builds it fine. proto's fleet simulation
        # (tests/sim.rs) takes minutes under qemu-user: FIRMCAST_CROSS_SIM=1.
        "$CARGO" test --ignore-rust-version --target "$t" -Zbuild-std \
            -p firmcast-agent -p firmcast-flasher -p firmcast-proto --lib -- --test-threads 2
        "$CARGO" test --ignore-rust-version --target "$t" -Zbuild-std -p firmcast-proto --test wire_props
        if [[ ${FIRMCAST_CROSS_SIM:-0} == 1 ]]; then
            "$CARGO" test --ignore-rust-version --target "$t" -Zbuild-std -p firmcast-proto --test sim
        fi
        # The erasure-code measurement of issue 6 under qemu-user (decode
        # time per block relative to a memcpy in the same run): FIRMCAST_CROSS_FEC_BENCH=1.
        if [[ ${FIRMCAST_CROSS_FEC_BENCH:-0} == 1 ]]; then
            "$CARGO" run --ignore-rust-version --target "$t" -Zbuild-std=std,panic_abort --release \
                -p firmcast-proto --example fec_bench
        fi
        # SHA-256 per block relative to a memcpy, at sha2's opt-level (the
        # workspace's 3, or FIRMCAST_SHA2_OPT_LEVEL): FIRMCAST_CROSS_SHA_BENCH=1.
        if [[ ${FIRMCAST_CROSS_SHA_BENCH:-0} == 1 ]]; then
            "$CARGO" run --ignore-rust-version --target "$t" -Zbuild-std=std,panic_abort --release \
                "${profile_config[@]}" -p firmcast-proto --example sha_bench
        fi
    done
    # The parity code's NEON kernel (gf8) runs only on aarch64, which has no
    # emulated device: its unit tests under qemu-user when aarch64 is built.
    a64=aarch64-unknown-linux-musl
    if [[ " ${targets[*]} " == *" $a64 "* ]]; then
        setup_target "$a64"
        echo "== gf8 unit tests for $a64 under $(spec "$a64" | cut -d' ' -f2)"
        "$CARGO" test --ignore-rust-version --target "$a64" -Zbuild-std -p firmcast-gf8 --lib
    fi
fi

# The budget applies to the default device features: issue 17's 350 KB on
# armv7 and 500 KB on mipsel (where the bytes go: cross/README.md).
ARMV7_BUDGET=350000 MIPSEL_BUDGET=500000
echo "== stripped sizes per feature set (budget, default set: armv7 <= $ARMV7_BUDGET bytes, mipsel <= $MIPSEL_BUDGET bytes)"
over=0
for t in "${targets[@]}"; do
    for set in "${sets[@]}"; do
        name=${set%%=*}
        [[ -n ${size[$t/$name]:-} ]] || continue
        printf '   %-34s %-8s %8d bytes %5d KiB\n' "$t" "$name" "${size[$t/$name]}" $((size[$t/$name] / 1024))
        if [[ $name == default ]]; then
            case $t in
                armv7-*) ((size[$t/$name] <= ARMV7_BUDGET)) || { echo "   over budget: $t default" >&2; over=1; } ;;
                mipsel-*) ((size[$t/$name] <= MIPSEL_BUDGET)) || { echo "   over budget: $t default" >&2; over=1; } ;;
            esac
        fi
    done
done
exit $over
