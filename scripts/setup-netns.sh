#!/usr/bin/env bash
# Install what the network-namespace tests (tests/tests/fleet_netns.rs,
# relay_netns.rs, routed.rs) and the race (bench/fleet) need on a Debian/Ubuntu
# machine. Idempotent: running it twice installs nothing the second time.
# Needs root (as the tests do).
#
#   scripts/setup-netns.sh            # rig tools: iproute2 (ip, tc, bridge),
#                                     # nftables, ethtool, nginx and openssl (the
#                                     # relay test's HTTPS origin); for the routed tier
#                                     # the router guest: frr (zebra, pimd),
#                                     # smcroute, qemu-system-x86, busybox-static,
#                                     # cpio and Debian's amd64 kernel, *downloaded
#                                     # and extracted* (not installed) into
#                                     # target/router-vm (FIRMCAST_ROUTER_VM)
#   scripts/setup-netns.sh --bench    # plus the peers of the race: uftp,
#                                     # udpcast, GNU time, curl, python3,
#                                     # tcpdump (bench/fleet --capture)
set -euo pipefail

bench=0
[[ ${1:-} == --bench ]] && bench=1

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have tc || need+=(iproute2)
have nft || need+=(nftables)
have ethtool || need+=(ethtool)
# The relay test's HTTPS origin (tests/tests/relay_netns.rs) and its CA.
[[ -x /usr/sbin/nginx ]] || have nginx || need+=(nginx)
have openssl || need+=(openssl)
have bridge || need+=(iproute2)
[[ -x /usr/lib/frr/pimd ]] || need+=(frr)
have smcrouted || need+=(smcroute)
have qemu-system-x86_64 || need+=(qemu-system-x86)
# The guest's init needs the static busybox (ldd fails on a static binary).
{ have busybox && ! ldd "$(command -v busybox)" >/dev/null 2>&1; } || need+=(busybox-static)
have cpio || need+=(cpio)
have strings || need+=(binutils)
if ((bench)); then
    have uftp || need+=(uftp)
    have udp-sender || need+=(udpcast)
    [[ -x /usr/bin/time ]] || need+=(time)
    have curl || need+=(curl)
    have python3 || need+=(python3)
    have tcpdump || need+=(tcpdump)
fi

# The router guest's kernel (tests/netns/routed.sh): Debian's amd64 kernel,
# which has CONFIG_IP_MROUTE and CONFIG_IPV6_MROUTE, extracted, not installed.
router_kernel() {
    local vm=${FIRMCAST_ROUTER_VM:-$(cd "$(dirname "$0")/.." && pwd)/target/router-vm}
    compgen -G "$vm/root/boot/vmlinuz-*" >/dev/null && return 0
    local k deb
    k=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $k ]] || { echo "setup-netns: cannot resolve linux-image-amd64" >&2; exit 1; }
    mkdir -p "$vm/debs"
    (cd "$vm/debs" && apt-get -o APT::Sandbox::User=root download -qq "$k")
    deb=$(compgen -G "$vm/debs/${k}_*.deb" | sort | tail -1)
    dpkg-deb -x "$deb" "$vm/root"
    echo "setup-netns: router kernel $k in $vm"
}

if ((${#need[@]} == 0)); then
    router_kernel
    echo "setup-netns: nothing to install"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-netns: need ${need[*]}; run as root (the namespace tests need root anyway)" >&2
    exit 1
fi
# De-duplicate (iproute2 may be listed twice).
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "setup-netns: installing ${need[*]}"
# A stale mirror index (e.g. of a foreign architecture) must not stop the install.
apt-get update -qq || echo "setup-netns: apt-get update reported errors; installing anyway" >&2
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"
router_kernel
