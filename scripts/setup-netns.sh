#!/usr/bin/env bash
# Install what the network-namespace tests (tests/tests/fleet_netns.rs,
# tests/tests/routed.rs) and the race (bench/fleet) need on a Debian/Ubuntu machine. Idempotent: running
# it twice installs nothing the second time. Needs root (as the tests do).
#
#   scripts/setup-netns.sh            # rig tools: iproute2 (ip, tc, bridge),
#                                     # nftables, ethtool; frr and smcroute (the
#                                     # multicast routing daemons tests/README.md
#                                     # discusses for the routed tier)
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
have bridge || need+=(iproute2)
[[ -x /usr/lib/frr/pimd ]] || need+=(frr)
have smcrouted || need+=(smcroute)
if ((bench)); then
    have uftp || need+=(uftp)
    have udp-sender || need+=(udpcast)
    [[ -x /usr/bin/time ]] || need+=(time)
    have curl || need+=(curl)
    have python3 || need+=(python3)
    have tcpdump || need+=(tcpdump)
fi

if ((${#need[@]} == 0)); then
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
