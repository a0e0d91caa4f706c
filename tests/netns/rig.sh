#!/usr/bin/env bash
# The namespace test network of tests/tests/fleet_netns.rs and bench/fleet.
#
#   rig.sh up   PREFIX DEVICES [RATE_MBIT] [LOSS]    # LOSS: PERMILLE or PERMILLEbLEN (bursts)
#   rig.sh loss PREFIX HOST LOSS           # change one device's loss (0 = none)
#   rig.sh down PREFIX                     # delete every namespace PREFIX-*
#
# One namespace per host, each with one veth ("eth0") into a Linux bridge that
# lives in its own namespace PREFIX-br (IGMP snooping and an IGMPv3 querier
# on; FIRMCAST_RIG_IGMP=2 makes it IGMPv2, where the hosts fall back to v2
# and, on this bridge, some device ports lose the groups for seconds):
#
#   PREFIX-srv  10.77.0.1/16   the sender; its uplink is shaped by tbf at RATE_MBIT
#   PREFIX-rep  10.77.0.2/16   the repair server (same RATE_MBIT on its own uplink)
#   PREFIX-dN   10.77.K.M/16   device N = 1..DEVICES  (K = 1 + (N-1)/250, M = 1 + (N-1)%250)
#
# Every host has a 224.0.0.0/4 route on eth0 and offloads off on its veth
# (so TCP of the unicast baseline is segmented as on a real wire). Loss: an
# nftables input chain in each device namespace drops PERMILLE/1000 of the
# UDP and TCP packets it receives, from `numgen random`, independently per
# device (the kernel here has no netem).
#
# Burst loss: LOSS written PERMILLEbLEN (e.g. 10b16) drops runs of LEN
# consecutive UDP/TCP packets, one run in every LEN*1000/PERMILLE packets a
# device receives (so the long-run rate is still PERMILLE/1000), from an
# nftables `numgen inc` counter per device whose drop window starts at a
# random offset per device: each device loses whole runs of chunks, at
# places of its own. It is periodic, not a Gilbert-Elliott chain (nftables
# keeps no per-packet state beyond the counter); it models what matters for
# repair, losses that cluster inside blocks.
#
# Traffic stays inside these namespaces: 10.77/16 and 239.x exist only here.
# PREFIX must be short (at most 10 characters: interface names are <= 15).
set -euo pipefail

die() { echo "rig.sh: $*" >&2; exit 2; }

host_addr() { # device number -> address
    local n=$1
    echo "10.77.$((1 + (n - 1) / 250)).$((1 + (n - 1) % 250))"
}

set_loss() { # ns PERMILLE | PERMILLEbLEN
    local ns=$1 spec=$2 rule
    ip netns exec "$ns" nft delete table ip fcloss 2>/dev/null || true
    if [[ $spec =~ ^([0-9]+)b([0-9]+)$ ]]; then
        local permille=${BASH_REMATCH[1]} len=${BASH_REMATCH[2]}
        ((permille > 0 && permille <= 1000 && len > 0)) || die "bad burst loss '$spec'"
        local period=$((len * 1000 / permille))
        ((period > len)) || die "burst loss '$spec': bursts would cover everything"
        local start=$((RANDOM % (period - len + 1)))
        rule="numgen inc mod $period $start-$((start + len - 1)) drop"
    elif [[ $spec =~ ^[0-9]+$ ]]; then
        ((spec <= 1000)) || die "loss '$spec' is more than 1000 permille"
        ((spec > 0)) || return 0
        if ((spec == 1000)); then
            rule="drop" # the device hears nothing
        else
            rule="numgen random mod 1000 < $spec drop"
        fi
    else
        die "bad loss '$spec' (PERMILLE or PERMILLEbLEN, e.g. 10 or 10b16)"
    fi
    ip netns exec "$ns" nft -f - <<NFT
table ip fcloss {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto { udp, tcp } $rule
    }
}
NFT
}

add_host() { # prefix name address rate_mbit
    local p=$1 name=$2 addr=$3 rate=$4
    local ns="$p-$name" br="$p-br"
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip link set "$ns" netns "$br"
    ip -n "$br" link set "$ns" master br0
    ip -n "$br" link set "$ns" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/16" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
    if command -v ethtool >/dev/null; then
        ip netns exec "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
        ip netns exec "$br" ethtool -K "$ns" tso off gso off gro off >/dev/null 2>&1 || true
    fi
    if [[ -n $rate && $rate != 0 ]]; then
        # burst: 10 ms of the rate (at least 16 KiB); queue: 100 ms.
        local burst=$((rate * 1000 * 1000 / 8 / 100))
        ((burst < 16384)) && burst=16384
        tc -n "$ns" qdisc add dev eth0 root tbf rate "${rate}mbit" burst "$burst" latency 100ms
    fi
}

down() {
    local p=$1
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${p}-" || true); do
        ip netns delete "$ns" 2>/dev/null || true
    done
}

cmd=${1:-}
p=${2:-}
[[ -n $cmd && -n $p ]] || die "usage: rig.sh up|loss|down PREFIX ..."
[[ ${#p} -le 10 && $p =~ ^[a-z0-9]+$ ]] || die "PREFIX must be 1-10 of [a-z0-9]: $p"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"

case $cmd in
up)
    devices=${3:?devices}
    rate=${4:-0}
    loss=${5:-0}
    ((devices >= 1 && devices <= 1000)) || die "devices 1..1000"
    trap 'down "$p"' ERR
    down "$p"
    ip netns add "$p-br"
    ip -n "$p-br" link set lo up
    ip -n "$p-br" link add br0 type bridge mcast_snooping 1 mcast_querier 1 mcast_igmp_version "${FIRMCAST_RIG_IGMP:-3}" \
        mcast_query_interval 1000 mcast_startup_query_interval 100
    ip -n "$p-br" link set br0 up
    add_host "$p" srv 10.77.0.1 "$rate"
    add_host "$p" rep 10.77.0.2 "$rate"
    for ((n = 1; n <= devices; n++)); do
        add_host "$p" "d$n" "$(host_addr "$n")" ""
        set_loss "$p-d$n" "$loss"
    done
    ;;
loss)
    host=${3:?host}
    set_loss "$p-$host" "${4:?permille}"
    ;;
down)
    down "$p"
    ;;
*)
    die "unknown command $cmd"
    ;;
esac
