#!/usr/bin/env bash
# End-to-end acceptance suite for the amtrelay CoreDNS plugin.
#
# Builds ./cmd/coredns (CoreDNS + amtrelay) and ./cmd/amt-responder, then runs
# a small routed internet in network namespaces on this machine: a transit/IX
# with the root and arpa servers, net1 (the source's network: relays, reverse
# zone, AMT DNS), net2 (relays and AMT DNS nearer the user, announced by
# contrib/amt-route-control.sh only while ready) and net8 (Unbound + client),
# eBGP with BIRD 2 between them, unicast and the multicast RIB (MBGP), which
# net2's BIRD hands over iBGP to the plugin's BGP speaker in step "bgp". See
# e2e/topology.sh for the picture.
#
# Usage (root; `make e2e` runs it without arguments):
#   bash e2e/run.sh                     all steps
#   bash e2e/run.sh --only failover     the topology step, then only "failover"
#   bash e2e/run.sh --only direct,reload
#   bash e2e/run.sh --list              list the steps
#   bash e2e/run.sh --keep              keep the work dir (configs, logs) and print its path
#   bash e2e/run.sh --no-install        do not apt-get anything, fail if a tool is missing
#   E2E_PREBUILT=DIR bash e2e/run.sh    use the programs already built in DIR instead of building
# Steps: topology direct unbound failover recovery reload table all_down handshake canary
# gateway restart dnssec bgp. "topology"
# (build the network, start every server, wait for convergence) always runs;
# each other step first brings the network to the state it needs, so any one
# can run alone.
#
# Output: "PASS step" / "FAIL step: reason" per step with indented details,
# then "N passed, M failed". Exit status 0 only if every step passed. The work
# dir is kept automatically when a step fails; every line in its log/ starts with
# the Unix time it was written, which is how the timed steps read their signals.
#
# Teardown (trap on EXIT, INT, TERM): kills every process it started (by pid,
# and whatever still runs inside its namespaces), deletes its namespaces (and
# with them every veth), removes /etc/netns/amte2e-*, and checks the host's
# links, addresses and routes are exactly as before. All traffic stays inside
# the suite's namespaces. Every wait is bounded; a watchdog stops the run after
# E2E_DEADLINE seconds (default 270) of scenarios.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=amte2e # namespace prefix
ALL_STEPS=(topology direct unbound failover recovery reload table all_down handshake canary gateway restart dnssec bgp)
DEADLINE=${E2E_DEADLINE:-270}

only="" keep=0 install=1
while [ $# -gt 0 ]; do
	case $1 in
	--only) only=${2:-}; shift 2 || { echo "--only needs a step list" >&2; exit 2; } ;;
	--only=*) only=${1#--only=}; shift ;;
	--keep) keep=1; shift ;;
	--no-install) install=0; shift ;;
	--list) printf '%s\n' "${ALL_STEPS[@]}"; exit 0 ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
	esac
done
STEPS=("${ALL_STEPS[@]}")
if [ -n "$only" ]; then
	IFS=, read -r -a want <<<"$only"
	for s in "${want[@]}"; do
		[[ " ${ALL_STEPS[*]} " == *" $s "* ]] || { echo "unknown step '$s' (steps: ${ALL_STEPS[*]})" >&2; exit 2; }
	done
	# Always in the canonical order, always with topology first.
	STEPS=(topology)
	for s in "${ALL_STEPS[@]}"; do
		[ "$s" != topology ] && [[ ",$only," == *",$s,"* ]] && STEPS+=("$s")
	done
fi

[ "$(id -u)" = 0 ] || { echo "e2e/run.sh needs root (network namespaces, BIRD, port 53)" >&2; exit 2; }

# shellcheck source=e2e/lib.sh
. "$ROOT/e2e/lib.sh"

declare -A PIDS=()
CREATED_NS=()
LOOP_PIDS=()
WATCHDOG=""
WORK=""
HOST_BEFORE=""
FAILOVER_MS=""
T_START=$(now_ms)

host_state() {
	{
		ip -o link show | awk '{ print $2 }'
		ip -o addr show | awk '{ print $2, $3, $4 }'
		ip -4 route show table all
		ip -6 route show table all | grep -v '^\(local\|multicast\|anycast\)'
	} 2>/dev/null | sort
}

# ---------------------------------------------------------------- install, build
install_packages() {
	local -A need=([bird]=bird2 [birdc]=bird2 [unbound]=unbound [dig]=bind9-dnsutils
		[kdig]=knot-dnsutils [ip]=iproute2 [curl]=curl [sysctl]=procps
		[dnssec-keygen]=bind9-utils [dnssec-signzone]=bind9-utils [dnssec-dsfromkey]=bind9-utils [delv]=bind9-dnsutils)
	local cmd pkgs=()
	for cmd in "${!need[@]}"; do
		command -v "$cmd" >/dev/null 2>&1 || pkgs+=("${need[$cmd]}")
	done
	[ ${#pkgs[@]} -gt 0 ] || return 0
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	if [ "$install" = 0 ]; then
		echo "missing: ${pkgs[*]} (and --no-install given)" >&2
		return 1
	fi
	say "installing ${pkgs[*]}"
	# Keep the packages' own services (unbound, bird) from starting: there is
	# usually no init system here, but a policy-rc.d makes sure either way.
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [ ! -e $policy ]; then
		printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && made_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
	} >"${TMPDIR:-/tmp}/amt-e2e-apt.log" 2>&1 || rc=$?
	[ $made_policy = 0 ] || rm -f $policy
	if [ $rc -ne 0 ]; then
		echo "apt-get failed (rc $rc); see ${TMPDIR:-/tmp}/amt-e2e-apt.log" >&2
		tail -n 20 "${TMPDIR:-/tmp}/amt-e2e-apt.log" >&2
		return 1
	fi
}

# The suite's programs: the server, the fixture relay, the gateway-side tool, the multicast sender.
PROGRAMS=(cmd/coredns cmd/amt-responder cmd/amtdiscover cmd/amtrelay-ds e2e/mcastsend)

build() {
	local go=${GO:-go} pkg
	: >"$WORK/log/build.log"
	for pkg in "${PROGRAMS[@]}"; do
		(cd "$ROOT" && "$go" build -o "$BIN/${pkg##*/}" "./$pkg") >>"$WORK/log/build.log" 2>&1 || {
			echo "go build ./$pkg failed:" >&2
			tail -n 30 "$WORK/log/build.log" >&2
			return 1
		}
	done
	# Not a pipe into grep -q: under pipefail, grep quitting early would SIGPIPE coredns and fail.
	local plugins
	plugins=$("$BIN/coredns" -plugins 2>/dev/null)
	grep -qx 'amtrelay' <<<"$plugins" || {
		echo "built coredns has no amtrelay plugin" >&2
		return 1
	}
}

# ---------------------------------------------------------------- teardown
remove_namespaces() { # remove_namespaces NS...: kill what runs inside, delete
	local ns pid i
	for ns in "$@"; do
		ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qx "$ns" || { rm -rf "/etc/netns/$ns"; continue; }
		for ((i = 0; i < 3; i++)); do
			pid=$(ip netns pids "$ns" 2>/dev/null)
			[ -n "$pid" ] || break
			# shellcheck disable=SC2086
			kill -KILL $pid 2>/dev/null
			sleep 0.1
		done
		ip netns del "$ns" 2>/dev/null || echo "teardown: could not delete namespace $ns" >&2
		rm -rf "/etc/netns/$ns"
	done
	rmdir /etc/netns 2>/dev/null || true
}

teardown() {
	local rc=$?
	trap - EXIT INT TERM
	[ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
	local pid name
	for pid in "${LOOP_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null; done
	for ((i = 0; i < 30; i++)); do
		local alive=0
		for name in "${!PIDS[@]}"; do kill -0 "${PIDS[$name]}" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for name in "${!PIDS[@]}"; do kill -KILL "${PIDS[$name]}" 2>/dev/null; done
	wait 2>/dev/null
	remove_namespaces "${CREATED_NS[@]}"
	if [ -n "$HOST_BEFORE" ]; then
		local after
		after=$(host_state)
		if [ "$after" != "$HOST_BEFORE" ]; then
			echo "teardown: the host's links/addresses/routes differ from before the run:" >&2
			diff <(echo "$HOST_BEFORE") <(echo "$after") >&2
			rc=1
		fi
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "$keep" = 1 ] || [ "$rc" -ne 0 ]; then
			echo "work dir kept: $WORK (configs in conf/, logs in log/)"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

on_signal() {
	echo "interrupted by SIG$1; tearing down" >&2
	exit 130
}

# ---------------------------------------------------------------- main
install_packages || exit 1

# Leftovers of a run that was killed with SIGKILL: its namespaces (and the
# processes in them) are ours to remove.
stale=$(ip netns list 2>/dev/null | awk -v p="$P-" 'index($1, p) == 1 { print $1 }')
if [ -n "$stale" ]; then
	echo "removing namespaces left by an earlier run: $stale"
	# shellcheck disable=SC2086
	remove_namespaces $stale
fi

HOST_BEFORE=$(host_state)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/amt-e2e.XXXXXX")
BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/log" "$WORK/conf" "$WORK/zones" "$WORK/run" "$WORK/unbound"
trap teardown EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

T_BUILD=$(now_ms)
if [ -n "${E2E_PREBUILT:-}" ]; then
	# Development aid: use already built programs from a dir.
	for pkg in "${PROGRAMS[@]}"; do cp "$E2E_PREBUILT/${pkg##*/}" "$BIN/" || exit 1; done
else
	build || exit 1
fi
T_BUILD=$(($(now_ms) - T_BUILD))
say "built ${PROGRAMS[*]##*/} in $(fmt_ms "$T_BUILD")"

# Watchdog: the scenarios must finish within DEADLINE seconds.
(
	trap 'kill $s 2>/dev/null; exit 0' TERM
	sleep "$DEADLINE" &
	s=$!
	wait $s
	echo "watchdog: suite still running after ${DEADLINE}s; stopping it" >&2
	kill -TERM $$
) &
WATCHDOG=$!

# shellcheck source=e2e/topology.sh
. "$ROOT/e2e/topology.sh"
# shellcheck source=e2e/scenarios.sh
. "$ROOT/e2e/scenarios.sh"

passed=0 failed=0 topology_ok=1
T_SCEN=$(now_ms)
for step in "${STEPS[@]}"; do
	STEP_REASON="" STEP_FAILED=""
	say "--- $step"
	t=$(now_ms)
	if [ "$topology_ok" = 0 ]; then
		STEP_REASON="not run: topology setup failed"
		rc=1
	else
		"step_$step"
		rc=$?
	fi
	t=$(($(now_ms) - t))
	if [ $rc -eq 0 ] && [ -z "$STEP_FAILED" ]; then
		say "PASS $step ($(fmt_ms "$t"))"
		passed=$((passed + 1))
	else
		say "FAIL $step: ${STEP_REASON:-step returned $rc} ($(fmt_ms "$t"))"
		failed=$((failed + 1))
		[ "$step" = topology ] && topology_ok=0
	fi
done
say "timings: build $(fmt_ms "$T_BUILD"), steps $(fmt_ms $(($(now_ms) - T_SCEN))), total $(fmt_ms $(($(now_ms) - T_START)))${FAILOVER_MS:+, failover $(fmt_ms "$FAILOVER_MS")}"
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
