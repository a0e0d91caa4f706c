#!/bin/bash
# The router guest's script (init runs it in the host's file system, mounted
# read-only, with tmpfs on /run and /tmp): name the four NICs by MAC, address
# them, turn forwarding on, run FRR's zebra + pimd (PIM-SM/SSM, IGMPv3 on a0
# and b0, not c0) and smcrouted (static IPv6 (S,G) routes from s0 to a0 and
# b0 for the `SOURCE GROUP` lines of STATE/groups6, multicast routing table
# 1), then write the router's tables to STATE/router.txt, again 0.5 s after
# each round (a round takes about 2 s of emulated time): pimd's IGMP sources
# and groups and its mroutes, the kernel's IPv4 routes and per-interface
# counters and its IPv6 routes of table 1, with their counters. STATE/ready
# appears once pimd runs PIM on its interfaces and smcrouted has installed
# its routes.
#
#   guest.sh STATE      # STATE: the rig's directory, shared over 9p
set -u
state=$1
log() { echo "router [$(cut -d' ' -f1 /proc/uptime) s]: $*"; }

# NICs by MAC (routed.sh gives them 52:54:00:78:00:0N).
for dev in /sys/class/net/*; do
    n=$(basename "$dev")
    case $(cat "$dev/address") in
    52:54:00:78:00:01) ip link set "$n" name s0 ;;
    52:54:00:78:00:02) ip link set "$n" name a0 ;;
    52:54:00:78:00:03) ip link set "$n" name b0 ;;
    52:54:00:78:00:04) ip link set "$n" name c0 ;;
    esac
done
ip link set lo up
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
# Stale DAD state on the renamed links: set per interface as well.
for i in s0:0.254:fe a0:1.1:1 b0:2.1:1 c0:3.1:1; do
    IFS=: read -r ifn v4 v6 <<<"$i"
    sysctl -qw "net.ipv6.conf.$ifn.accept_dad=0"
    net=${v4%%.*}
    ip addr add "10.78.$v4/24" dev "$ifn"
    if [[ $net == 0 ]]; then ip addr add "fd78::$v6/64" dev "$ifn" nodad; else ip addr add "fd78:$net::$v6/64" dev "$ifn" nodad; fi
    ip link set "$ifn" up
done

run=/run/fcrouter
mkdir -p "$run"
chown frr:frr "$run"
cat >"$run/zebra.conf" <<CONF
hostname router
log file $run/zebra.log
CONF
cat >"$run/pimd.conf" <<CONF
hostname router
log file $run/pimd.log
ip pim rp 10.78.0.254 239.0.0.0/8
!
interface s0
 ip pim
!
interface a0
 ip pim
 ip igmp
 ip igmp version 3
 ip igmp query-interval 10
!
interface b0
 ip pim
 ip igmp
 ip igmp version 3
 ip igmp query-interval 10
!
CONF
common=(-d -u frr -g frr -A 127.0.0.1 -P 0 --vty_socket "$run" -z "$run/zserv.api")
log "interfaces up; starting zebra, pimd, smcrouted"
/usr/lib/frr/zebra "${common[@]}" -f "$run/zebra.conf" -i "$run/zebra.pid" || log "zebra failed"
for ((i = 0; i < 100; i++)); do [[ -S $run/zserv.api ]] && break; sleep 0.05; done
/usr/lib/frr/pimd "${common[@]}" -f "$run/pimd.conf" -i "$run/pimd.pid" || log "pimd failed"

{
    if [[ -f $state/groups6 ]]; then
        while read -r s g; do
            [[ -n ${g:-} ]] && echo "mroute from s0 source $s group $g to a0 b0"
        done <"$state/groups6"
    fi
} >"$run/smcroute.conf"
# Table 1, not 0: pimd owns IPv4 table 0 and smcrouted opens both families
# (it stops at "IPv4 multicast routing API already in use" otherwise).
smcrouted -n -t 1 -f "$run/smcroute.conf" -u "$run/smcroute.sock" -P "$run/smcroute.pid" -l notice \
    >"$state/smcroute.log" 2>&1 &
ip -6 mrule add iif s0 lookup 1

vty() { vtysh --vty_socket "$run" -d pimd "$@" 2>&1; }
# A kernel multicast route and its counters (`ip -s`: an indented line of
# its own) on one line, so that a test can read both from one row.
one_line() { awk '/^[[:space:]]/ { printf " %s", $0; next } NR > 1 { print "" } { printf "%s", $0 } END { if (NR) print "" }'; }
# pimd's three tables from one vtysh (each start of vtysh costs seconds of
# TCG time: it builds every daemon's command tree), a heading before each,
# found by the first line FRR 8.4 prints for it.
pimd_tables() {
    vty -c "show ip igmp sources" -c "show ip igmp groups" -c "show ip mroute" | awk '
        /^Interface +Group +Source/ { print "== pimd: show ip igmp sources ==" }
        /^Total IGMP groups/ { print "== pimd: show ip igmp groups ==" }
        /^IP Multicast Routing Table/ { print "== pimd: show ip mroute ==" }
        { print }'
}
want6=$(grep -c . "$state/groups6" 2>/dev/null)
# Ready: PIM on b0 (the last), IGMP up on a0 and b0 (a join sent before its
# socket exists waits for the next query), smcrouted's routes in.
for ((i = 0; i < 300; i++)); do
    if vty -c "show ip pim interface" | grep -q b0 &&
        (($(vty -c "show ip igmp interface" | grep -cE '^(a0|b0) +up ') == 2)) &&
        (($(ip -6 mroute show table 1 | grep -c "Iif: s0") >= ${want6:-0})); then
        touch "$state/ready"
        log "pimd runs PIM on s0, a0, b0 and IGMP on a0, b0; smcrouted installed ${want6:-0} IPv6 routes"
        break
    fi
    sleep 0.1
done
[[ -f $state/ready ]] || { log "not ready"; cat "$run/pimd.log" "$state/smcroute.log"; }

round=0
while :; do
    round=$((round + 1))
    {
        echo "== router: round $round =="
        pimd_tables
        echo "== kernel: ip -s mroute =="
        ip -s mroute show | one_line
        echo "== kernel: /proc/net/ip_mr_vif (IPv4 per-interface counters) =="
        cat /proc/net/ip_mr_vif
        echo "== kernel (smcroute): ip -s -6 mroute =="
        ip -s -6 mroute show table 1 | one_line
    } >"$state/router.tmp"
    mv "$state/router.tmp" "$state/router.txt"
    # The first few, so the console shows how fresh the tables are.
    ((round <= 3)) && log "tables written (round $round)"
    sleep 0.5
done
