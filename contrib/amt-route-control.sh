#!/bin/sh
# amt-route-control.sh - announce an anycast AMT DNS address only while the
# local CoreDNS (with the amtrelay plugin) reports ready.
#
# The amtrelay plugin tells CoreDNS's *ready* plugin whether at least one of
# this network's AMT relays passes its health checks. With
#
#     ready 127.0.0.1:8181 {
#         monitor continuously
#     }
#
# the /ready URL turns 503 when every relay is down and 200 again when one
# comes back. This script polls that URL and announces or withdraws the
# anycast address, so resolvers reach the next-nearest AMT DNS instead of one
# whose relays are all dead.
#
# Two ways to announce/withdraw (pick one with -m):
#
#   -m addr   (default) add/remove ADDRESS on interface DEV (default lo) with
#             `ip addr`. Your BGP speaker must export the directly connected
#             route for it, e.g. in BIRD 2:
#                 protocol direct { ipv4; interface "lo"; }
#             plus an export filter on the BGP session that accepts the /32.
#             CoreDNS must then listen on the wildcard address (no `bind` of
#             the anycast address, since the address comes and goes).
#   -m birdc  keep ADDRESS permanently on lo and enable/disable one BIRD
#             protocol (-p NAME) that originates the route, e.g.
#                 protocol static amt_anycast { ipv4; route 192.0.2.53/32 via "lo"; }
#             via `birdc -s SOCKET enable|disable NAME`.
#   Any other speaker (FRR, GoBGP, ExaBGP, a router API): use -m addr or wrap
#   this script's -A/-D hooks (-m cmd) with your own announce/withdraw commands.
#   -m cmd    run the shell commands given with -A (announce) and -D (withdraw).
#
# Hysteresis: withdraw after FAILS consecutive failed polls (non-2xx, timeout,
# connection refused), announce after RISES consecutive successful polls. At
# start the current state is read (address present / protocol up) so a restart
# of this script does not flap the route; with -m cmd it starts as withdrawn.
#
# Usage:
#   amt-route-control.sh -u URL -a ADDRESS [options]
#     -u URL        readiness URL, e.g. http://127.0.0.1:8181/ready (required)
#     -a ADDRESS    anycast address with prefix length, e.g. 192.0.2.53/32 or
#                   2001:db8::53/128 (required for -m addr and -m birdc)
#     -d DEV        interface for -m addr (default lo)
#     -m MODE       addr | birdc | cmd (default addr)
#     -p PROTO      BIRD protocol name for -m birdc
#     -s SOCKET     birdc control socket (default: birdc's default)
#     -A CMD        announce command for -m cmd (run with sh -c)
#     -D CMD        withdraw command for -m cmd
#     -i INTERVAL   seconds between polls, fractions allowed (default 1)
#     -t TIMEOUT    HTTP timeout per poll in seconds (default 1)
#     -f FAILS      consecutive failures before withdrawing (default 3)
#     -r RISES      consecutive successes before announcing (default 2)
#     -n ROUNDS     stop after ROUNDS polls (default 0 = run until signalled)
#     -W            withdraw when terminated (SIGTERM/SIGINT/SIGHUP or -n)
#     -N            dry run: print the commands instead of running them
#     -q            only log state changes and errors (default also logs start)
#
# Example (systemd unit, Linux, BIRD exporting lo's /32s):
#   ExecStart=/usr/local/sbin/amt-route-control.sh -u http://127.0.0.1:8181/ready \
#       -a 192.0.2.53/32 -d lo -i 1 -f 3 -r 2 -W
#
# Needs curl (or wget) and, for -m addr, iproute2 and the right to change
# addresses (root or CAP_NET_ADMIN). POSIX sh; `sleep` must accept fractions
# for sub-second intervals (GNU coreutils and busybox do).
# Log lines go to stderr: "<UTC time> amt-route-control: <message>".

set -u

url= addr= dev=lo mode=addr proto= sock= announce_cmd= withdraw_cmd=
interval=1 timeout=1 fails=3 rises=2 rounds=0 withdraw_on_exit=0 dry=0 quiet=0

usage() {
	sed -n '/^# Usage:/,/^# Example/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

log() { printf '%s amt-route-control: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
is_number() { case $1 in '' | *[!0-9.]* | *.*.* | .) return 1 ;; *) return 0 ;; esac; }

while getopts u:a:d:m:p:s:A:D:i:t:f:r:n:WNqh opt; do
	case $opt in
	u) url=$OPTARG ;;
	a) addr=$OPTARG ;;
	d) dev=$OPTARG ;;
	m) mode=$OPTARG ;;
	p) proto=$OPTARG ;;
	s) sock=$OPTARG ;;
	A) announce_cmd=$OPTARG ;;
	D) withdraw_cmd=$OPTARG ;;
	i) interval=$OPTARG ;;
	t) timeout=$OPTARG ;;
	f) fails=$OPTARG ;;
	r) rises=$OPTARG ;;
	n) rounds=$OPTARG ;;
	W) withdraw_on_exit=1 ;;
	N) dry=1 ;;
	q) quiet=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage

[ -n "$url" ] || die "-u URL is required"
is_number "$interval" || die "-i: bad interval '$interval'"
is_number "$timeout" || die "-t: bad timeout '$timeout'"
is_uint "$fails" && [ "$fails" -ge 1 ] || die "-f: FAILS must be an integer >= 1"
is_uint "$rises" && [ "$rises" -ge 1 ] || die "-r: RISES must be an integer >= 1"
is_uint "$rounds" || die "-n: ROUNDS must be an integer >= 0"
case $mode in
addr)
	[ -n "$addr" ] || die "-m addr needs -a ADDRESS/LEN"
	case $addr in */*) ;; *) die "-a: give a prefix length, e.g. $addr/32" ;; esac
	;;
birdc) [ -n "$proto" ] || die "-m birdc needs -p PROTOCOL" ;;
cmd) [ -n "$announce_cmd" ] && [ -n "$withdraw_cmd" ] || die "-m cmd needs -A and -D" ;;
*) die "-m: unknown mode '$mode' (addr, birdc, cmd)" ;;
esac

# probe: 0 when URL answers 2xx within the timeout; otherwise sets why, which
# the withdraw log line carries (an operator needs to tell a 503 from a hang).
if command -v curl >/dev/null 2>&1; then
	probe() {
		code=$(curl -sS -o /dev/null -m "$timeout" -w '%{http_code}' "$url" 2>/dev/null)
		rc=$?
		case $rc in
		0) case $code in 2??) return 0 ;; esac; why="HTTP $code" ;;
		7) why="connection refused" ;;
		28) why="no answer within ${timeout}s" ;;
		*) why="curl exit $rc" ;;
		esac
		return 1
	}
elif command -v wget >/dev/null 2>&1; then
	probe() {
		wget -q -O /dev/null -T "$timeout" -t 1 "$url" 2>/dev/null && return 0
		why="wget exit $?"
		return 1
	}
else
	die "need curl or wget"
fi

birdc_() {
	if [ -n "$sock" ]; then birdc -s "$sock" "$@"; else birdc "$@"; fi
}

run() {
	if [ "$dry" = 1 ]; then
		log "dry run: $*"
		return 0
	fi
	"$@"
}

# is_announced: 0 when the route is currently announced.
is_announced() {
	case $mode in
	addr) [ -n "$(ip -o addr show dev "$dev" to "$addr" 2>/dev/null)" ] ;;
	birdc) birdc_ show protocols "$proto" 2>/dev/null | awk -v p="$proto" '$1 == p { s = $4 } END { exit !(s == "up") }' ;;
	cmd) return 1 ;;
	esac
}

announce() {
	case $mode in
	addr) run ip addr add "$addr" dev "$dev" ;;
	birdc) run birdc_ enable "$proto" >/dev/null ;;
	cmd) run sh -c "$announce_cmd" ;;
	esac
}

withdraw() {
	case $mode in
	addr) run ip addr del "$addr" dev "$dev" ;;
	birdc) run birdc_ disable "$proto" >/dev/null ;;
	cmd) run sh -c "$withdraw_cmd" ;;
	esac
}

what=$addr
[ "$mode" = birdc ] && what="protocol $proto"
[ "$mode" = cmd ] && what="route"

if is_announced; then state=up; else state=down; fi
[ "$quiet" = 1 ] || log "start: $what is $( [ $state = up ] && echo announced || echo withdrawn ); polling $url every ${interval}s (fails $fails, rises $rises, mode $mode)"

finish() {
	if [ "$withdraw_on_exit" = 1 ] && [ "$state" = up ]; then
		if withdraw; then log "exit: withdrew $what"; else log "exit: withdrawing $what failed"; fi
	fi
	exit 0
}
ok=0 bad=0 n=0 why=
trap finish TERM INT HUP

while [ "$rounds" -eq 0 ] || [ "$n" -lt "$rounds" ]; do
	n=$((n + 1))
	if probe; then
		ok=$((ok + 1)); bad=0
		if [ "$state" = down ] && [ "$ok" -ge "$rises" ]; then
			if announce; then state=up; log "ready for $ok polls: announced $what"
			else log "announce of $what failed; retrying next poll"; fi
		fi
	else
		bad=$((bad + 1)); ok=0
		if [ "$state" = up ] && [ "$bad" -ge "$fails" ]; then
			if withdraw; then state=down; log "not ready for $bad polls (last: $why): withdrew $what"
			else log "withdraw of $what failed; retrying next poll"; fi
		fi
	fi
	# A signal is handled once this sleep ends (at most one interval later).
	sleep "$interval"
done
finish
