#!/usr/bin/env bash
# The routed test network of tests/tests/routed.rs: devices in two subnets
# behind a real multicast router, and a third subnet it routes no multicast to.
#
#   routed.sh up   PREFIX DEVICES DIR   # DEVICES per routed subnet (1..20); DIR: the
#                                       # router's state (groups6 in, tables out)
#   routed.sh show PREFIX DIR           # the router's tables, as it last wrote them,
#                                       # and the switches' snooping tables
#   routed.sh down PREFIX DIR           # stop the router (by PID), delete PREFIX-*
#
#   PREFIX-srv 10.78.0.1  fd78::1    ─────────────── s0 ┐  the router: a qemu guest
#   PREFIX-aN  10.78.1.1N fd78:1::1N ─ PREFIX-sa ─── a0 ┤  (Debian's amd64 kernel,
#   PREFIX-bN  10.78.2.1N fd78:2::1N ─ PREFIX-sb ─── b0 ┤  FRR zebra + pimd and
#   PREFIX-c1  10.78.3.11 fd78:3::11 ─────────────── c0 ┘  smcrouted of this host)
#
# The router is .254 / ::fe on the sender's link and .1 / ::1 on each device
# subnet; every host's default route points at it, so NACKs, repairs and
# Status cross it by unicast. pimd runs PIM-SM on s0, a0, b0 with IGMPv3 on
# a0 and b0 (not c0: no multicast routing there), SSM on 232/8 (its default)
# and itself as static RP for 239/8. smcrouted installs static IPv6 (S,G)
# routes from s0 to a0 and b0 for the `SOURCE GROUP` lines of DIR/groups6
# (FRR 8.4 has no pim6d; smcrouted uses multicast routing table 1, pimd
# holds IPv4 table 0); the access switches' MLDv2 snooping then delivers
# only to ports that joined. PREFIX-sa and PREFIX-sb are those switches:
# Linux bridges with IGMPv3/MLDv2 snooping whose uplink to the router is a
# permanent multicast-router port (the router, .1, wins the IGMP querier
# election against the switch, .250; for MLD the switch is the querier).
#
# Why a guest: pimd and smcrouted program the kernel's multicast forwarding
# (MRT_INIT / MRT6_INIT), which needs CONFIG_IP_MROUTE / CONFIG_IPV6_MROUTE;
# test hosts' kernels may lack them (`ip mroute`: "kernel does support IP
# multicast?"), Debian's have them. The guest boots that kernel with the
# initramfs of tests/netns/router/ and runs the daemons from this host's own
# file system over 9p (tests/netns/router/guest.sh); its four NICs are taps
# in PREFIX-rt, bridged there to the links above. Kernel: FIRMCAST_ROUTER_VM
# (default target/router-vm, from scripts/setup-netns.sh).
#
# Traffic stays inside these namespaces and the guest: 10.78/16 and fd78::/16
# exist only here. PREFIX must be short (at most 10 characters).
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

here=$(cd "$(dirname "$0")" && pwd)
vm=${FIRMCAST_ROUTER_VM:-$here/../../target/router-vm}

link() { # prefix name: a cable in PREFIX-rt, bridge NAME joining tap NAMEt to the guest
    local p=$1 n=$2
    ip -n "$p-rt" link add "$n" type bridge mcast_snooping 0
    ip -n "$p-rt" tuntap add "${n}t" mode tap
    ip -n "$p-rt" link set "${n}t" master "$n"
    ip -n "$p-rt" link set "${n}t" up
    ip -n "$p-rt" link set "$n" up
}

to_link() { # prefix root-ns-veth link
    ip link set "$2" netns "$1-rt"
    ip -n "$1-rt" link set "$2" master "$3"
    ip -n "$1-rt" link set "$2" up
}

subnet() { # prefix tag net devices: switch PREFIX-sTAG uplinked to link TAG0
    local p=$1 tag=$2 net=$3 devices=$4
    local sw="$p-s$tag" n
    new_ns "$sw"
    snooping_bridge "$sw" br0
    ip -n "$sw" addr add "10.78.$net.250/24" dev br0
    ip -n "$sw" link set br0 up
    ip link add "$p-u$tag" type veth peer name "$p-r$tag"
    ip link set "$p-u$tag" netns "$sw"
    ip -n "$sw" link set "$p-u$tag" master br0
    ip -n "$sw" link set "$p-u$tag" type bridge_slave mcast_router 2
    ip -n "$sw" link set "$p-u$tag" up
    to_link "$p" "$p-r$tag" "${tag}0"
    for ((n = 1; n <= devices; n++)); do
        host "$p" "$tag$n" "10.78.$net.$((10 + n))" "fd78:$net::$((10 + n))" "10.78.$net.1" "fd78:$net::1"
        ip link set "$p-$tag$n" netns "$sw"
        ip -n "$sw" link set "$p-$tag$n" master br0
        ip -n "$sw" link set "$p-$tag$n" up
    done
}

ensure_initramfs() { # the guest's initramfs, rebuilt when its sources are newer
    local kroot=$vm/root out=$vm/initramfs.cpio.gz
    compgen -G "$kroot/boot/vmlinuz-*" >/dev/null || die "no router kernel in $kroot/boot (scripts/setup-netns.sh)"
    if [[ ! -f $out || $here/router/init -nt $out || $here/router/build-initramfs.sh -nt $out ]]; then
        bash "$here/router/build-initramfs.sh" "$kroot" "$out"
    fi
}

start_router() { # prefix dir
    local p=$1 d=$2 kernel accel i nics=()
    kernel=$(compgen -G "$vm/root/boot/vmlinuz-*" | sort | tail -1)
    # TCG, not KVM: nested KVM on test hosts hangs this kernel at boot (EDD
    # probe) or refuses -cpu host; TCG boots it in seconds everywhere.
    accel=(-accel tcg -cpu max)
    local names=(s0 a0 b0 c0)
    for i in 1 2 3 4; do
        nics+=(-netdev "tap,id=n$i,ifname=${names[i - 1]}t,script=no,downscript=no"
            -device "virtio-net-pci,netdev=n$i,mac=52:54:00:78:00:0$i")
    done
    rm -f "$d/ready" "$d/router.txt"
    ip netns exec "$p-rt" qemu-system-x86_64 "${accel[@]}" -m 256 -smp 1 -nodefaults -no-user-config \
        -kernel "$kernel" -initrd "$vm/initramfs.cpio.gz" \
        -append "console=ttyS0 panic=-1 quiet mitigations=off fcrouter=$here/router/guest.sh" \
        -display none -serial "file:$d/console.log" -no-reboot \
        -virtfs "local,path=/,mount_tag=host,security_model=none,readonly=on" \
        -virtfs "local,path=$d,mount_tag=state,security_model=none" \
        "${nics[@]}" -daemonize -pidfile "$d/qemu.pid"
    for ((i = 0; i < 1200; i++)); do
        [[ -f $d/ready && -f $d/router.txt ]] && return 0
        sleep 0.1
    done
    die "the router guest never came up: $(tail -20 "$d/console.log")"
}

down() { # prefix dir
    local p=$1 d=$2 ns pid
    if [[ -s $d/qemu.pid ]]; then
        pid=$(cat "$d/qemu.pid")
        if [[ $pid =~ ^[0-9]+$ ]]; then kill "$pid" 2>/dev/null || true; fi
        rm -f "$d/qemu.pid"
    fi
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
    d=${4:?state dir}
    ((devices >= 1 && devices <= 20)) || die "devices per subnet 1..20"
    [[ -d $d ]] || die "no directory $d"
    ensure_initramfs
    trap 'down "$p" "$d"' ERR
    down "$p" "$d"
    new_ns "$p-rt"
    for l in s0 a0 b0 c0; do link "$p" "$l"; done
    host "$p" srv 10.78.0.1 fd78::1 10.78.0.254 fd78::fe
    to_link "$p" "$p-srv" s0
    host "$p" c1 10.78.3.11 fd78:3::11 10.78.3.1 fd78:3::1
    to_link "$p" "$p-c1" c0
    subnet "$p" a 1 "$devices"
    subnet "$p" b 2 "$devices"
    start_router "$p" "$d"
    ;;
show)
    d=${3:?state dir}
    cat "$d/router.txt"
    for sw in sa sb; do
        echo "== switch $p-$sw: bridge -d mdb show (IGMPv3/MLDv2 snooping) =="
        ip netns exec "$p-$sw" bridge -d mdb show | grep -v -e ' grp ff02:' -e ' grp 224\.0\.0\.' || true
    done
    ;;
down)
    down "$p" "${3:?state dir}"
    ;;
*)
    die "unknown command $cmd"
    ;;
esac
