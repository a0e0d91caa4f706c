#!/usr/bin/env bash
# The routed test network of tests/tests/routed.rs: devices in two subnets
# behind a multicast router, and a third subnet it routes no multicast to.
#
#   routed.sh up   PREFIX DEVICES     # DEVICES per routed subnet (1..20)
#   routed.sh show PREFIX             # the router's group/source tables and counters
#   routed.sh down PREFIX             # delete every namespace PREFIX-*
#
#   PREFIX-srv 10.78.0.1   fd78::1    ── s0 ─┐
#                                           │  PREFIX-rt, the router: unicast
#   PREFIX-aN  10.78.1.1N  fd78:1::1N ─ PREFIX-sa ── a0 ┤  forwarding on; every host's
#   PREFIX-bN  10.78.2.1N  fd78:2::1N ─ PREFIX-sb ── b0 ┤  default route points at it
#   PREFIX-c1  10.78.3.11  fd78:3::11 ─────── c0 ─┘  (no multicast routed to c0)
#
# PREFIX-sa and PREFIX-sb are the subnets' access switches: Linux bridges
# with IGMPv3/MLDv2 snooping whose port to the router is a permanent
# multicast-router port. On the router, a0 and b0 are bridges too (its
# device-facing interfaces: address .1 / ::1, snooping, the IGMPv3 and MLDv2
# querier of the subnet): their snooping tables are the router's per-interface
# group/source membership, the table a PIM router keeps from IGMP/MLD.
#
# The forwarding plane: an nftables netdev ingress chain on s0 copies every
# datagram to an SSM (232/8, ff3e::/16) or site-scope (239/8, ff15::/16)
# group that has a TTL / hop limit above 1 to a0 and b0, where the bridge
# delivers it only to the ports whose members asked for that (S,G) or group.
# So a device receives a routed group when it joined it (IGMPv3/MLDv2, with
# its source for SSM) and the sender's TTL lets it cross a router; c0 gets
# nothing, like a subnet whose router has no multicast routing enabled.
#
# Why not FRR's pimd (or smcroute) as the router: they program the kernel's
# multicast forwarding cache (MRT_INIT / MRT6_INIT), which needs a kernel
# built with CONFIG_IP_MROUTE / CONFIG_IPV6_MROUTE. Where the kernel has none
# (`ip mroute` says "kernel does support IP multicast?"), pimd 8.4 starts but
# neither forwards nor even hears IGMP reports (it reads them from the
# MRT_INIT socket) and smcrouted cannot install a route. tests/README.md says
# how the rig and the daemons relate.
#
# Traffic stays inside these namespaces: 10.78/16 and fd78::/16 exist only here.
# PREFIX must be short (at most 10 characters: interface names are <= 15).
set -euo pipefail

die() { echo "routed.sh: $*" >&2; exit 2; }

new_ns() { # ns: lo up, no DAD delays
    local ns=$1
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$ns" link set lo up
}

host() { # prefix name v4 v6 gw4 gw6: namespace PREFIX-name with eth0; its veth peer PREFIX-name stays in the root ns
    local p=$1 name=$2 a4=$3 a6=$4 gw4=$5 gw6=$6
    local ns="$p-$name"
    new_ns "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip -n "$ns" addr add "$a4/24" dev eth0
    ip -n "$ns" addr add "$a6/64" dev eth0 nodad
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$gw4" dev eth0
    ip -n "$ns" -6 route add default via "$gw6" dev eth0
    ip -n "$ns" route add 224.0.0.0/4 dev eth0
}

snooping_bridge() { # ns name: a bridge with IGMPv3/MLDv2 snooping and querier
    ip -n "$1" link add "$2" type bridge mcast_snooping 1 mcast_querier 1 \
        mcast_igmp_version 3 mcast_mld_version 2 \
        mcast_query_interval 1000 mcast_startup_query_interval 100
}

router_port() { # prefix host ifname v4 v6: the root-ns end of host PREFIX-HOST becomes the router's IFNAME
    local p=$1 h=$2 ifn=$3 a4=$4 a6=$5
    ip link set "$p-$h" netns "$p-rt"
    ip -n "$p-rt" link set "$p-$h" name "$ifn"
    ip -n "$p-rt" addr add "$a4/24" dev "$ifn"
    ip -n "$p-rt" addr add "$a6/64" dev "$ifn" nodad
    ip -n "$p-rt" link set "$ifn" up
}

subnet() { # prefix tag net devices: switch PREFIX-sTAG, router bridge TAG0
    local p=$1 tag=$2 net=$3 devices=$4
    local sw="$p-s$tag" n
    new_ns "$sw"
    snooping_bridge "$sw" br0
    # Above the router's .1: the router wins the IGMP querier election.
    ip -n "$sw" addr add "10.78.$net.250/24" dev br0
    ip -n "$sw" link set br0 up
    ip link add "$p-u$tag" type veth peer name "${tag}0p" netns "$p-rt"
    ip link set "$p-u$tag" netns "$sw"
    ip -n "$sw" link set "$p-u$tag" master br0
    ip -n "$sw" link set "$p-u$tag" type bridge_slave mcast_router 2
    ip -n "$sw" link set "$p-u$tag" up
    snooping_bridge "$p-rt" "${tag}0"
    ip -n "$p-rt" link set "${tag}0p" master "${tag}0"
    ip -n "$p-rt" link set "${tag}0p" up
    ip -n "$p-rt" addr add "10.78.$net.1/24" dev "${tag}0"
    ip -n "$p-rt" addr add "fd78:$net::1/64" dev "${tag}0" nodad
    ip -n "$p-rt" link set "${tag}0" up
    for ((n = 1; n <= devices; n++)); do
        host "$p" "$tag$n" "10.78.$net.$((10 + n))" "fd78:$net::$((10 + n))" "10.78.$net.1" "fd78:$net::1"
        ip link set "$p-$tag$n" netns "$sw"
        ip -n "$sw" link set "$p-$tag$n" master br0
        ip -n "$sw" link set "$p-$tag$n" up
    done
}

route_multicast() { # prefix: the router's forwarding plane (see the header)
    ip netns exec "$1-rt" nft -f - <<NFT
table netdev fcroute {
    chain s0 {
        type filter hook ingress device s0 priority 0; policy accept;
        ip daddr { 232.0.0.0/8, 239.0.0.0/8 } ip ttl 2-255 counter dup to a0 dup to b0
        ip6 daddr { ff3e::/16, ff15::/16 } ip6 hoplimit 2-255 counter dup to a0 dup to b0
    }
}
NFT
}

down() {
    local p=$1 ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${p}-" || true); do
        ip netns delete "$ns" 2>/dev/null || true
    done
}

cmd=${1:-}
p=${2:-}
[[ -n $cmd && -n $p ]] || die "usage: routed.sh up|show|down PREFIX ..."
[[ ${#p} -le 10 && $p =~ ^[a-z0-9]+$ ]] || die "PREFIX must be 1-10 of [a-z0-9]: $p"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"

case $cmd in
up)
    devices=${3:?devices per subnet}
    ((devices >= 1 && devices <= 20)) || die "devices per subnet 1..20"
    trap 'down "$p"' ERR
    down "$p"
    new_ns "$p-rt"
    ip netns exec "$p-rt" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    host "$p" srv 10.78.0.1 fd78::1 10.78.0.254 fd78::fe
    router_port "$p" srv s0 10.78.0.254 fd78::fe
    host "$p" c1 10.78.3.11 fd78:3::11 10.78.3.1 fd78:3::1
    router_port "$p" c1 c0 10.78.3.1 fd78:3::1
    subnet "$p" a 1 "$devices"
    subnet "$p" b 2 "$devices"
    route_multicast "$p"
    ;;
show)
    echo "== router $p-rt: group/source membership per interface (IGMPv3/MLDv2 snooping) =="
    ip netns exec "$p-rt" bridge -d mdb show
    echo "== router $p-rt: forwarded from s0 =="
    ip netns exec "$p-rt" nft list chain netdev fcroute s0 | grep counter || true
    ;;
down)
    down "$p"
    ;;
*)
    die "unknown command $cmd"
    ;;
esac
