#!/usr/bin/env bash
# bench/run.sh: the benchmarks `make bench` runs. BENCHMARKS.md has the figures and the targets.
#
#   1. whole servers on loopback with dnsperf, one at a time, in alternating rounds:
#      whoami (the ceiling), amtrelay (10k sources, 50 health-checked relays with fixture
#      responders up), signed (the same amtrelay with dnssec, asked with DO set) and file (the
#      same answers as static records);
#   2. memory: RSS and live heap of amtrelay with 1M IPv4 + 200k IPv6 prefixes;
#   2b. reload loop: QPS of that server while a new sources file replaces the old every second,
#      against QPS while the file stays put;
#   2c. canaries: the plugin's CPU and memory with 1,000 relay addresses and 4 canary channels of
#      1 packet/s on each, against the same relays without canaries;
#   2d. bgp (bench/bgp.sh): BIRD 2 feeding the plugin over MBGP, in two network namespaces the
#      section makes and removes: the time and CPU to take 100k and 1M IPv4 multicast routes, and
#      QPS while 1,000 routes a second flap, against QPS without flaps (root; installs bird2);
#   3. the Go micro-benchmarks of the root package, revname, table and amt;
#   4. the key ratios, as the last lines of the output.
#
# Usage: bench/run.sh [--only SECTIONS] [--quick] [--profile]
#   --only      a comma-separated subset of servers,memory,reload,canaries,bgp,go (default: all)
#   --quick     one short round and short Go benchtimes: checks that everything runs, no figures
#   --profile   also take a CPU profile of whoami and of amtrelay under dnsperf load (adds ~30 s;
#               BENCH_PROFILE=1 does the same, for `make bench`), and of the bgp server: its biggest load, and
#               under dnsperf load with and without flaps
#
# Settings (environment):
#   BENCH_OUT             where builds, inputs, logs and results go (default bench/.run, ignored by git)
#   BENCH_ROUNDS          server rounds, each whoami, amtrelay, signed, file (default 5)
#   BENCH_SECONDS         dnsperf throughput run per server per round (default 8)
#   BENCH_LATENCY_QPS     fixed query rate of the latency run (default 2000)
#   BENCH_LATENCY_SECONDS length of the latency run (default 4)
#   BENCH_DNSPERF_ARGS    client shape (default "-c 4 -T 1 -q 100")
#   BENCH_GO_BENCHTIME    -benchtime of the Go benchmarks (default 0.5s)
#   BENCH_GO_COUNT        -count of the Go benchmarks (default 1; 6 or more for benchstat)
#   BENCH_PORT            DNS port on 127.0.0.1 (default 10553)
#   BENCH_BUDGET          seconds after which remaining rounds are skipped (default 840)
#   BENCH_RELOAD_ROUNDS   reload-loop rounds, each a steady and a reloading phase (default 3; 0 skips)
#   BENCH_RELOAD_SECONDS  dnsperf run per phase (default 10)
#   BENCH_RELOAD_INTERVAL the server's sources reload interval (default 1s)
#   BENCH_CANARY_RELAYS   relay addresses of the canaries section (default 1000)
#   BENCH_CANARY_SECONDS  CPU measurement per phase of the canaries section (default 60)
#   BENCH_BGP_LOADS       route counts of the bgp section's whole-table loads, one load each, in
#                         order (default 100000,100000,100000,1000000; the 100k target takes the median)
#   BENCH_BGP_LOAD_TIMEOUT seconds a bgp load may take (default 600)
#   BENCH_BGP_ROUNDS      bgp flap rounds, each a steady and a flapping phase (default 3; 0 skips)
#   BENCH_BGP_SECONDS     dnsperf run per bgp phase (default 10)
#   BENCH_BGP_FLAP_RATE   routes changed per second while flapping (default 1000)
#   BENCH_BGP_FLAP_BASE   IPv4 routes besides the query file's sources and the flapping ones (default 100000)
#   BENCH_BGP_PORT        DNS port of the bgp server on 127.0.0.1 in its namespace (default 10753)
#
# Only loopback addresses are used: servers on 127.0.0.1, relay responders on 127.0.0.10-59 and,
# for the canaries, on 127.0.4.1 onwards. The bgp section's traffic stays in its namespaces.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/.run}
ROUNDS=${BENCH_ROUNDS:-5}
SECONDS_TP=${BENCH_SECONDS:-8}
LAT_QPS=${BENCH_LATENCY_QPS:-2000}
LAT_SECONDS=${BENCH_LATENCY_SECONDS:-4}
DNSPERF_ARGS=${BENCH_DNSPERF_ARGS:--c 4 -T 1 -q 100}
GO_BENCHTIME=${BENCH_GO_BENCHTIME:-0.5s}
GO_COUNT=${BENCH_GO_COUNT:-1}
PORT=${BENCH_PORT:-10553}
BUDGET=${BENCH_BUDGET:-840}
RELOAD_ROUNDS=${BENCH_RELOAD_ROUNDS:-3}
RELOAD_SECONDS=${BENCH_RELOAD_SECONDS:-10}
RELOAD_INTERVAL=${BENCH_RELOAD_INTERVAL:-1s}
CANARY_RELAYS=${BENCH_CANARY_RELAYS:-1000}
CANARY_SECONDS=${BENCH_CANARY_SECONDS:-60}
METRICS_ADDR=127.0.0.1:19153
READY_ADDR=127.0.0.1:18181
PPROF_ADDR=127.0.0.1:16053
WARMUP_SECONDS=20 # at most: one pass over queries.txt takes 3-10 s
# shellcheck source=bench/bgp.sh
source "$ROOT/bench/bgp.sh" # the bgp section: its settings and functions

sections=servers,memory,reload,canaries,bgp,go
quick=0
profile=${BENCH_PROFILE:-0}
while (($#)); do
	case $1 in
	--only)
		(($# >= 2)) || { echo "bench/run.sh: --only needs a list of sections" >&2; exit 2; }
		sections=$2
		shift
		;;
	--quick) quick=1 ;;
	--profile) profile=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "bench/run.sh: unknown argument $1 (try --help)" >&2
		exit 2
		;;
	esac
	shift
done
run_servers=0 run_memory=0 run_reload=0 run_canaries=0 run_bgp=0 run_go=0
for section in ${sections//,/ }; do
	case $section in
	servers) run_servers=1 ;;
	memory) run_memory=1 ;;
	reload) run_reload=1 ;;
	canaries) run_canaries=1 ;;
	bgp) run_bgp=1 ;;
	go) run_go=1 ;;
	*)
		echo "bench/run.sh: unknown section $section (servers, memory, reload, canaries, bgp, go)" >&2
		exit 2
		;;
	esac
done
# the sections that start cmd/coredns
run_dns=$((run_servers || run_memory || run_reload || run_canaries || run_bgp))
if ((quick)); then
	ROUNDS=1 SECONDS_TP=2 LAT_SECONDS=1 GO_BENCHTIME=1x RELOAD_ROUNDS=1 RELOAD_SECONDS=3
	CANARY_RELAYS=50 CANARY_SECONDS=5
	BGP_LOADS=10000 BGP_ROUNDS=1 BGP_SECONDS=3 BGP_FLAP_BASE=10000
fi
((RELOAD_ROUNDS > 0)) || run_reload=0

START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
log() { printf '[bench %4ss] %s\n' "$(elapsed)" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

mkdir -p "$OUT/bin" "$OUT/logs"
GEN=$OUT/gen
RESULTS=$OUT/results
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

# Processes this script started; the trap stops exactly these.
server_pid=""
responders_pid=""
replacer_pid=""
cleanup() {
	local pid
	for pid in $server_pid $responders_pid $replacer_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $server_pid $responders_pid $replacer_pid; do
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	bgp_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools and inputs

if ((run_dns)) && ! command -v dnsperf >/dev/null; then
	(($(id -u) == 0)) || die "dnsperf is missing and installing it needs root (apt-get install dnsperf)"
	log "installing dnsperf"
	apt-get update -qq >"$OUT/logs/apt.log" 2>&1
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf >>"$OUT/logs/apt.log" 2>&1 ||
		die "apt-get install dnsperf (see $OUT/logs/apt.log)"
fi

if ((run_dns)); then
	log "building cmd/coredns, cmd/amt-responder and bench/gen"
	(cd "$ROOT" && go build -o "$OUT/bin/coredns" ./cmd/coredns &&
		go build -o "$OUT/bin/amt-responder" ./cmd/amt-responder &&
		go build -o "$OUT/bin/gen" ./bench/gen) || die "build"

	# The memory table goes in a sources file when the plugin has the `sources` property, and
	# inline in the Corefile otherwise (much slower to parse, and its tokens weigh on the heap).
	memory_inline=false
	if ! grep -q '"sources"' "$ROOT/setup.go"; then
		memory_inline=true
		log "amtrelay has no sources property here: the memory table goes inline in the Corefile"
	fi
	log "generating Corefiles, zones, queries and the memory table in $GEN"
	rm -rf "$GEN"
	"$OUT/bin/gen" -out "$GEN" -listen "127.0.0.1:$PORT" -ready "$READY_ADDR" -pprof "$PPROF_ADDR" \
		-metrics "$METRICS_ADDR" -reload "$RELOAD_INTERVAL" -memory-inline="$memory_inline" \
		$( ((run_bgp)) && bgp_gen_args) || die "bench/gen"
fi

# ---------------------------------------------------------------------------------------------
# Servers

probe_query=$OUT/probe-query.txt
echo ". NS" >"$probe_query"

# answers: does the server on PORT answer one query within a second?
answers() {
	timeout 5 dnsperf -s 127.0.0.1 -p "$PORT" -d "$probe_query" -n 1 -t 1 2>/dev/null |
		grep -q 'Queries completed: *1 '
}

# start_server NAME COREFILE [WAIT_SECONDS]: start cmd/coredns in $GEN and wait until it answers.
start_server() {
	local name=$1 corefile=$2 wait=${3:-30} i
	(cd "$GEN" && exec env GODEBUG=gctrace=1 "$OUT/bin/coredns" -conf "$corefile" >"$OUT/logs/$name.log" 2>&1) &
	server_pid=$!
	for ((i = 0; i < wait * 10; i++)); do
		kill -0 "$server_pid" 2>/dev/null || die "$name exited at start-up (see $OUT/logs/$name.log)"
		if answers; then
			return 0
		fi
		sleep 0.1
	done
	die "$name did not answer within ${wait}s (see $OUT/logs/$name.log)"
}

stop_pid() { # stop_pid PID SECONDS: TERM, up to SECONDS for it to end, then KILL
	[[ -n $1 ]] || return 0
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 1 $(($2 * 10))); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

stop_server() {
	stop_pid "$server_pid" 10
	server_pid=""
}

wait_ready() {
	local i
	for ((i = 0; i < 300; i++)); do
		if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$READY_ADDR/ready" || true) == 200 ]]; then
			return 0
		fi
		sleep 0.1
	done
	die "the amtrelay server not ready within 30s (see $OUT/logs/)"
}

# dnsperf_field FILE LABEL: the first number after "LABEL:" in a dnsperf report.
dnsperf_field() {
	awk -v label="$2" 'index($0, label ":") { s = substr($0, index($0, label ":") + length(label) + 1); split(s, f, " "); print f[1] + 0; exit }' "$1"
}

# server_ticks: user + system CPU of the running server, in clock ticks
server_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$server_pid/stat"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }

# measure NAME ROUND [DNSPERF_ARG...]: one throughput run and one fixed-rate latency run against
# the running server, with DNSPERF_ARGS and the extra arguments given.
measure() {
	local name=$1 round=$2 tp=$RESULTS/$1.$2.throughput.txt lat=$RESULTS/$1.$2.latency.txt
	shift 2
	local args="$DNSPERF_ARGS $*"
	# Warm-up: one pass over the query file, so that every server is measured as it runs for days,
	# its caches (the signatures of the signed server) holding what the queries ask for.
	timeout $((WARMUP_SECONDS + 10)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$GEN/queries.txt" -e \
		$args -n 1 >/dev/null 2>&1 || true
	local ticks0 ticks1
	ticks0=$(server_ticks)
	timeout $((SECONDS_TP + 30)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$GEN/queries.txt" -e \
		$args -l "$SECONDS_TP" >"$tp" 2>&1 || die "dnsperf against $name"
	ticks1=$(server_ticks)
	# -v prints every query with its latency; at a fixed rate below every server's capacity the
	# figures are the servers' latency, not the depth of a queue.
	timeout $((LAT_SECONDS + 30)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$GEN/queries.txt" -e \
		$args -l "$LAT_SECONDS" -Q "$LAT_QPS" -v >"$lat" 2>&1 || die "dnsperf -v against $name"
	local qps sat_lat lost stats completed cpu_us
	qps=$(dnsperf_field "$tp" "Queries per second")
	completed=$(dnsperf_field "$tp" "Queries completed")
	# server CPU per answered query: on a machine where client and server share two cores the
	# client can be the bottleneck, and QPS then hides what the server itself spends
	cpu_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v n="$completed" \
		'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "nan" }')
	sat_lat=$(dnsperf_field "$tp" "Average Latency (s)")
	lost=$(awk '/Queries lost:/ { print $3; exit }' "$tp")
	# mean and p99 (nearest rank) in microseconds of the answered queries
	stats=$(awk '/^> / && $NF ~ /^[0-9.]+$/ { print $NF * 1e6 }' "$lat" | sort -n |
		awk '{ v[NR] = $1; s += $1 } END { if (NR == 0) { print "nan nan 0"; exit }
			k = int(NR * 0.99 + 0.999999); if (k < 1) k = 1; printf "%.1f %.1f %d\n", s / NR, v[k], NR }')
	printf '%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n' "$round" "$name" "$qps" "$(awk -v x="$sat_lat" 'BEGIN { print x * 1e6 }')" \
		"$lost" "$stats" "$cpu_us" | tr ' ' '\t' >>"$RESULTS/servers.tsv"
	log "round $round $name: $qps qps, server CPU $cpu_us us/query, latency at $LAT_QPS qps mean/p99/n ${stats// //} us"
	rm -f "$lat" # thousands of lines per run; the summary row keeps what matters
}

if ((run_servers)); then
	log "starting 50 fixture relay responders"
	listen_args=()
	while read -r addr; do listen_args+=(-listen "$addr"); done <"$GEN/responders.txt"
	"$OUT/bin/amt-responder" "${listen_args[@]}" 2>"$OUT/logs/responders.log" &
	responders_pid=$!
	sleep 0.5
	kill -0 "$responders_pid" 2>/dev/null || die "amt-responder (see $OUT/logs/responders.log)"

	printf 'round\tserver\tqps\tsat_mean_us\tlost\tmean_us\tp99_us\tlat_n\tcpu_us_per_query\n' >"$RESULTS/servers.tsv"
	for ((round = 1; round <= ROUNDS; round++)); do
		# Round cost is about 4 x (start + warm-up + runs); stop early rather than overrun.
		if ((round > 1 && $(elapsed) + 4 * (SECONDS_TP + LAT_SECONDS + WARMUP_SECONDS + 5) > BUDGET)); then
			log "time budget ${BUDGET}s reached: stopping after $((round - 1)) rounds"
			break
		fi
		for name in whoami amtrelay signed file; do
			start_server "$name" "Corefile.$name"
			case $name in
			amtrelay) wait_ready && measure "$name" "$round" ;;
			# DO set on every query: each answer at amt.<rev(S)> is signed.
			signed) wait_ready && measure "$name" "$round" -D ;;
			*) measure "$name" "$round" ;;
			esac
			stop_server
			if [[ $name == amtrelay || $name == signed ]] && grep -q ' down: ' "$OUT/logs/$name.log"; then
				log "WARNING: a relay went down in round $round (see $OUT/logs/$name.log)"
				cp "$OUT/logs/$name.log" "$OUT/logs/$name.round$round.log"
			fi
		done
	done
	if ((profile)); then
		for name in whoami amtrelay; do
			start_server "$name" "Corefile.$name"
			[[ $name == amtrelay ]] && wait_ready
			log "CPU profile of $name under load"
			timeout 30 dnsperf -s 127.0.0.1 -p "$PORT" -d "$GEN/queries.txt" -e $DNSPERF_ARGS -l 12 \
				>"$RESULTS/$name.profile-load.txt" 2>&1 &
			load_pid=$!
			sleep 1
			curl -s --max-time 30 -o "$RESULTS/$name.cpu.pprof" "http://$PPROF_ADDR/debug/pprof/profile?seconds=10" ||
				die "CPU profile of $name"
			wait "$load_pid" || true
			stop_server
			go tool pprof -top -nodecount 40 "$OUT/bin/coredns" "$RESULTS/$name.cpu.pprof" \
				>"$RESULTS/$name.cpu.top.txt" 2>/dev/null || true
		done
	fi
	kill -TERM "$responders_pid" 2>/dev/null || true
	wait "$responders_pid" 2>/dev/null || true
	responders_pid=""

fi

if ((run_memory)); then
	# Memory: the same binary with 8 relays and one source, then with the big table. A heap
	# profile request with gc=1 forces a collection; the gctrace line it prints (GODEBUG, set by
	# start_server) gives the live heap, and RSS is read right after.
	settle() { # settle NAME: force a GC, return its live heap in MB
		local before
		before=$(grep -c '^gc .*(forced)' "$OUT/logs/$1.log" || true)
		curl -s -o /dev/null --max-time 30 "http://$PPROF_ADDR/debug/pprof/heap?gc=1" || die "pprof of $1"
		for _ in $(seq 1 50); do
			(($(grep -c '^gc .*(forced)' "$OUT/logs/$1.log" || true) > before)) && break
			sleep 0.1
		done
		awk '/^gc .*\(forced\)/ { for (i = 1; i <= NF; i++) if ($i ~ /->.*->/) { split($i, a, "->"); live = a[3] } } END { print live + 0 }' "$OUT/logs/$1.log"
	}
	log "memory: baseline server"
	start_server memory-base Corefile.memory-base
	base_live=$(settle memory-base)
	base_rss=$(rss_kb)
	stop_server
	log "memory: 1M IPv4 + 200k IPv6 prefixes"
	t0=$(date +%s%N)
	start_server memory Corefile.memory 300
	load_ms=$((($(date +%s%N) - t0) / 1000000))
	big_live=$(settle memory)
	big_rss=$(rss_kb)
	stop_server
	prefixes=$(grep -c '^[0-9a-f]' "$GEN/sources-memory.txt" 2>/dev/null || echo 1200000)
	printf 'prefixes\t%s\nload_ms\t%s\nbase_rss_kb\t%s\nbig_rss_kb\t%s\nbase_live_mb\t%s\nbig_live_mb\t%s\n' \
		"$prefixes" "$load_ms" "$base_rss" "$big_rss" "$base_live" "$big_live" >"$RESULTS/memory.tsv"
	log "memory: RSS $base_rss kB -> $big_rss kB, live heap $base_live MB -> $big_live MB, start-up ${load_ms} ms"
fi

# ---------------------------------------------------------------------------------------------
# Reload loop: the server with the 1.2M-prefix sources file, in alternating phases:
# "steady", the file stays put (the server still stats it every interval), and "reloading", a
# new version replaces the file by rename every second, each a full parse and swap. One
# long-lived perl process does the renames, so the load the phase adds is the server's own.

# reload_count RESULT: table_reloads_total{result=RESULT} of the reload server
reload_count() {
	curl -s --max-time 5 "http://$METRICS_ADDR/metrics" |
		awk -v r="$1" 'index($0, "coredns_amtrelay_table_reloads_total{result=\"" r "\"}") == 1 { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}

# wait_idle: wait (up to 30 s) until the server spends under 5% of a CPU for a second.
wait_idle() {
	local i t0 t1
	for ((i = 0; i < 30; i++)); do
		t0=$(server_ticks)
		sleep 1
		t1=$(server_ticks)
		(((t1 - t0) * 100 < 5 * $(getconf CLK_TCK))) && return 0
	done
	log "WARNING: the server did not go idle within 30 s"
}

if ((run_reload)) && [[ ! -f $GEN/Corefile.reload ]]; then
	log "reload: skipped, amtrelay has no sources property here"
elif ((run_reload)); then
	# Two versions, each rename a new file to load: b gives one route in 1,000 other relays and
	# drops one in 1,500, so that a reload has about 2,000 routes to change, spread over the file.
	{ cat "$GEN/sources-memory.txt" && echo "# version a"; } >"$GEN/sources-reload.a.txt"
	awk 'NR % 1500 == 0 { next } NR % 1000 == 0 { print $1, "relay0", "relay1"; next } { print }
		END { print "# version b" }' "$GEN/sources-memory.txt" >"$GEN/sources-reload.b.txt"
	cp "$GEN/sources-reload.a.txt" "$GEN/sources-reload.txt"
	log "reload: amtrelay with $(grep -c '^[0-9a-f]' "$GEN/sources-reload.txt") prefixes, reload $RELOAD_INTERVAL"
	start_server reload Corefile.reload 300
	wait_idle
	reload_rss0=$(rss_kb)
	printf 'round\tphase\tqps\tcpu_us_per_query\treloads\treload_errors\n' >"$RESULTS/reload.tsv"
	for ((round = 1; round <= RELOAD_ROUNDS; round++)); do
		for phase in steady reloading; do
			if [[ $phase == reloading ]]; then
				perl -e 'my ($dir, @v) = @ARGV; for (my $i = 0; ; $i++) {
					my $src = "$dir/sources-reload.$v[$i % 2].txt";
					unlink "$dir/sources-reload.next";
					link($src, "$dir/sources-reload.next") or die "link $src: $!";
					rename("$dir/sources-reload.next", "$dir/sources-reload.txt") or die "rename: $!";
					select(undef, undef, undef, 1);
				}' "$GEN" b a 2>>"$OUT/logs/replacer.log" &
				replacer_pid=$!
			fi
			ok0=$(reload_count success) err0=$(reload_count error) ticks0=$(server_ticks)
			out=$RESULTS/reload.$round.$phase.txt
			timeout $((RELOAD_SECONDS + 30)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$GEN/queries.txt" -e \
				$DNSPERF_ARGS -l "$RELOAD_SECONDS" >"$out" 2>&1 || die "dnsperf against reload"
			ticks1=$(server_ticks)
			if [[ $phase == reloading ]]; then
				kill -TERM "$replacer_pid" 2>/dev/null || true
				wait "$replacer_pid" 2>/dev/null || true
				replacer_pid=""
			fi
			ok1=$(reload_count success) err1=$(reload_count error)
			qps=$(dnsperf_field "$out" "Queries per second")
			cpu_us=$(awk -v t=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v n="$(dnsperf_field "$out" "Queries completed")" \
				'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "nan" }')
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$phase" "$qps" "$cpu_us" $((ok1 - ok0)) $((err1 - err0)) >>"$RESULTS/reload.tsv"
			log "reload round $round $phase: $qps qps, server CPU $cpu_us us/query, $((ok1 - ok0)) reloads, $((err1 - err0)) failed"
			if [[ $phase == reloading ]]; then
				wait_idle # a load still running would fall into the next phase
			fi
		done
	done
	# RSS after the loop, against the start: what reloads of a big file leave resident.
	printf 'rss_start_kb\t%s\nrss_end_kb\t%s\n' "$reload_rss0" "$(rss_kb)" >"$RESULTS/reload-rss.tsv"
	stop_server
fi

# ---------------------------------------------------------------------------------------------
# BGP: bench/bgp.sh

if ((run_bgp)); then
	bgp_section
fi

# ---------------------------------------------------------------------------------------------
# Go benchmarks

# ---------------------------------------------------------------------------------------------
# Canaries: CANARY_RELAYS relay addresses, each with a tunnel joining 4 canary channels that a
# beacon feeds at 1 packet/s (amt-responder -beacon 1s), probed every 5 s, against the same relays
# without canaries. The figure is the server's CPU time over CANARY_SECONDS after a warm-up that
# lets every tunnel establish, as a share of one core, and its RSS.

canary_phase() { # canary_phase NAME COREFILE
	local name=$1 corefile=$2 ticks0 ticks1 up
	start_server "$name" "$corefile" 60
	wait_ready
	sleep $((CANARY_SECONDS < 20 ? 5 : 20))
	ticks0=$(server_ticks)
	sleep "$CANARY_SECONDS"
	ticks1=$(server_ticks)
	up=$(curl -s --max-time 10 "http://$METRICS_ADDR/metrics" | awk '/^coredns_amtrelay_canary_up\{/ && $NF == 1 { n++ } END { print n + 0 }')
	printf '%s\t%s\t%s\t%s\n' "$name" \
		"$(awk -v t=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v s="$CANARY_SECONDS" 'BEGIN { printf "%.4f", t / hz / s }')" \
		"$(rss_kb)" "$up" >>"$RESULTS/canaries.tsv"
	log "canaries $name: $(tail -n1 "$RESULTS/canaries.tsv" | cut -f2) of a core, RSS $(rss_kb) kB, $up canary_up series at 1"
	stop_server
}

if ((run_canaries)); then
	log "canaries: $CANARY_RELAYS fixture relay addresses with a 1 s beacon"
	listen_args=()
	relays="" names=""
	for ((i = 0; i < CANARY_RELAYS; i++)); do
		addr=127.0.$((4 + i / 250)).$((1 + i % 250))
		listen_args+=(-listen "$addr:2268")
		relays+="        relay c$i $addr"$'\n'
		names+=" c$i"
	done
	"$OUT/bin/amt-responder" -beacon 1s "${listen_args[@]}" 2>"$OUT/logs/canary-responders.log" &
	responders_pid=$!
	sleep 1
	kill -0 "$responders_pid" 2>/dev/null || die "amt-responder (see $OUT/logs/canary-responders.log)"
	for with in canaries handshake; do
		canaries=""
		if [[ $with == canaries ]]; then
			for c in 0 1 2 3; do
				canaries+="        canary 198.51.100.$((c * 64))/26 10.99.0.$((c + 1)) 232.1.1.$((c + 1))"$'\n'
			done
		fi
		cat >"$GEN/Corefile.$with" <<EOF
in-addr.arpa:$PORT {
    bind 127.0.0.1
    prometheus $METRICS_ADDR
    ready $READY_ADDR
    amtrelay {
$relays        source 198.51.100.0/24$names
$canaries        health_check 5s timeout 1s
    }
}
EOF
	done
	printf 'phase\tcore_share\trss_kb\tcanaries_up\n' >"$RESULTS/canaries.tsv"
	canary_phase canaries Corefile.canaries
	canary_phase handshake Corefile.handshake
	kill -TERM "$responders_pid" 2>/dev/null || true
	wait "$responders_pid" 2>/dev/null || true
	responders_pid=""
fi

if ((run_go)); then
	gobench() { # gobench PKG REGEXP [BENCHTIME]
		log "go test -bench '$2' $1"
		(cd "$ROOT" && go test -run '^$' -bench "$2" -benchmem -benchtime "${3:-$GO_BENCHTIME}" \
			-count "$GO_COUNT" -timeout 20m "$1") | tee -a "$RESULTS/go.txt" | grep -E '^(Benchmark|ok|FAIL|---)' >&2 ||
			die "go test -bench $1"
	}
	: >"$RESULTS/go.txt"
	gobench . .
	gobench ./revname 'Parse'
	# One process for both, so that the 2M generated prefixes are made once; one build per
	# order is enough at these sizes, and random order is left out (the table bench has it).
	gobench ./table 'Lookup|Build1M/v[46]/sorted'
	gobench ./amt 'ProbeRound$'
fi

# ---------------------------------------------------------------------------------------------
# Summary: the key ratios are the last lines.

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { # col SERVER COLUMN: that column of every round of SERVER
	awk -F'\t' -v s="$1" -v c="$2" 'NR > 1 && $2 == s { print $c }' "$RESULTS/servers.tsv"
}
# per_round_ratio A B COLUMN [FILE]: median over rounds of A's figure / B's figure in the same
# round; FILE (default servers.tsv) has the round in column 1 and the name in column 2
per_round_ratio() {
	awk -F'\t' -v a="$1" -v b="$2" -v c="$3" 'NR > 1 { v[$1, $2] = $c; r[$1] = 1 }
		END { for (k in r) if (v[k, b] > 0) print v[k, a] / v[k, b] }' "${4:-$RESULTS/servers.tsv}" | median
}
verdict() { # verdict VALUE OP TARGET
	awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "nan" || v == "") { print "n/a"; exit }
		ok = (op == ">=") ? v >= t : v <= t
		if (ok) print "met"; else printf "MISSED by %.1f%%\n", (op == ">=") ? (t - v) / t * 100 : (v - t) / t * 100 }'
}
# go_metric BENCHMARK-REGEXP UNIT: the median of that unit over the matching benchmark lines
go_metric() {
	[[ -s $RESULTS/go.txt ]] || { echo nan; return; }
	awk -v re="$1" -v unit="$2" '$1 ~ re { for (i = 3; i < NF; i++) if ($(i + 1) == unit) print $i }' "$RESULTS/go.txt" | median
}

{
	echo
	echo "== bench/run.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, results in $RESULTS =="
	if [[ -s $RESULTS/servers.tsv ]] && (($(wc -l <"$RESULTS/servers.tsv") > 1)); then
		n=$(($(wc -l <"$RESULTS/servers.tsv") - 1))
		echo "servers ($((n / 4)) rounds; medians: QPS, server CPU per query, latency at $LAT_QPS qps):"
		for s in whoami amtrelay signed file; do
			printf '  %-9s %9.0f qps   CPU %7.2f us/query   mean %9.1f us   p99 %9.1f us\n' "$s" \
				"$(col $s 3 | median)" "$(col $s 9 | median)" "$(col $s 6 | median)" "$(col $s 7 | median)"
		done
	fi
	if [[ -s $RESULTS/canaries.tsv ]]; then
		awk -F'\t' -v n="$CANARY_RELAYS" 'NR > 1 { share[$1] = $2; rss[$1] = $3; up[$1] = $4 }
			END { printf "canaries: %d relays x 4 at 1 pkt/s   %.2f%% of a core (< 5%%: %s), RSS %d MB; without canaries %.2f%%, RSS %d MB; canary_up %d of %d\n",
				n, share["canaries"] * 100, share["canaries"] < 0.05 ? "met" : "MISSED", rss["canaries"] / 1024,
				share["handshake"] * 100, rss["handshake"] / 1024, up["canaries"], n * 4 }' "$RESULTS/canaries.tsv"
	fi
	if [[ -s $RESULTS/memory.tsv ]]; then
		awk -F'\t' '{ m[$1] = $2 } END {
			d = (m["big_rss_kb"] - m["base_rss_kb"]) * 1024 / m["prefixes"]
			h = (m["big_live_mb"] - m["base_live_mb"]) * 1048576 / m["prefixes"]
			printf "memory: %d prefixes: RSS %.0f MB (baseline %.0f MB), %.0f B/prefix of RSS, %.0f B/prefix of live heap; answering after %.1f s\n",
				m["prefixes"], m["big_rss_kb"] / 1024, m["base_rss_kb"] / 1024, d, h, m["load_ms"] / 1000 }' "$RESULTS/memory.tsv"
	fi
	if [[ -s $RESULTS/reload.tsv ]] && (($(wc -l <"$RESULTS/reload.tsv") > 1)); then
		awk -F'\t' 'NR > 1 { n[$2]++; q[$2] = q[$2] " " $3; c[$2] = c[$2] " " $4; l[$2] += $5; e[$2] += $6 }
			END { for (p in n) printf "%s\t%s\t%s\t%d\t%d\t%d\n", p, q[p], c[p], n[p], l[p], e[p] }' "$RESULTS/reload.tsv" |
			while IFS=$'\t' read -r phase qs cs rounds loads errors; do
				printf 'reload loop, %-9s (%d rounds of %ss): %6.0f qps, CPU %6.2f us/query (medians), %d reloads, %d failed\n' \
					"$phase" "$rounds" "$RELOAD_SECONDS" "$(tr ' ' '\n' <<<"$qs" | grep . | median)" \
					"$(tr ' ' '\n' <<<"$cs" | grep . | median)" "$loads" "$errors"
			done
	fi
	if [[ -s $RESULTS/reload-rss.tsv ]]; then
		awk -F'\t' '{ m[$1] = $2 } END { printf "reload loop: server RSS %.0f MB before, %.0f MB after\n", m["rss_start_kb"] / 1024, m["rss_end_kb"] / 1024 }' \
			"$RESULTS/reload-rss.tsv"
	fi
	bgp_summary
} | tee "$RESULTS/summary.txt"

{
	echo "== key ratios (targets in BENCHMARKS.md) =="
	if [[ -s $RESULTS/servers.tsv ]] && (($(wc -l <"$RESULTS/servers.tsv") > 1)); then
		r=$(per_round_ratio amtrelay whoami 3)
		printf 'amtrelay/whoami QPS       %6.3f  (>= 0.95: %s)\n' "$r" "$(verdict "$r" '>=' 0.95)"
		r=$(per_round_ratio amtrelay file 3)
		printf 'amtrelay/file QPS         %6.3f  (>= 1.00: %s)\n' "$r" "$(verdict "$r" '>=' 1.0)"
		r=$(per_round_ratio amtrelay whoami 7)
		printf 'amtrelay/whoami p99       %6.3f  (<= 1.10: %s)\n' "$r" "$(verdict "$r" '<=' 1.1)"
		r=$(per_round_ratio file whoami 3)
		printf 'file/whoami QPS           %6.3f\n' "$r"
		r=$(per_round_ratio signed amtrelay 3)
		printf 'signed(DO)/amtrelay QPS   %6.3f  (>= 0.80: %s)\n' "$r" "$(verdict "$r" '>=' 0.8)"
		printf 'server CPU/query signed(DO)/amtrelay %6.3f\n' "$(per_round_ratio signed amtrelay 9)"
		printf 'server CPU/query amtrelay/whoami %6.3f   amtrelay/file %6.3f\n' \
			"$(per_round_ratio amtrelay whoami 9)" "$(per_round_ratio amtrelay file 9)"
	fi
	if [[ -s $RESULTS/reload.tsv ]] && (($(wc -l <"$RESULTS/reload.tsv") > 1)); then
		r=$(per_round_ratio reloading steady 3 "$RESULTS/reload.tsv")
		printf 'reloading/steady QPS      %6.3f  (>= 0.95, reload %s: %s)\n' "$r" "$RELOAD_INTERVAL" "$(verdict "$r" '>=' 0.95)"
	fi
	bgp_ratios
	if [[ -s $RESULTS/memory.tsv ]]; then
		r=$(awk -F'\t' '{ m[$1] = $2 } END { printf "%.1f", (m["big_live_mb"] - m["base_live_mb"]) * 1048576 / m["prefixes"] }' "$RESULTS/memory.tsv")
		printf 'server live heap B/prefix %6.1f  (<= 100: %s)\n' "$r" "$(verdict "$r" '<=' 100)"
	fi
	if [[ -s $RESULTS/go.txt ]]; then
		r=$(go_metric '^BenchmarkVsFile/' allocs-ratio)
		printf 'allocs amtrelay/file      %6.3f  median over paths (<= 1.00: %s)\n' "$r" "$(verdict "$r" '<=' 1.0)"
		r=$(awk '$1 ~ /^BenchmarkVsFile\// { for (i = 3; i < NF; i++) if ($(i + 1) == "allocs-ratio" && $i > m) m = $i } END { print m + 0 }' "$RESULTS/go.txt")
		printf 'allocs amtrelay/file      %6.3f  worst path (<= 1.00: %s)\n' "$r" "$(verdict "$r" '<=' 1.0)"
		for fam in v4 v6; do
			r=$(go_metric "^BenchmarkLookup/${fam}_1M/hit" cpu-ns/op)
			printf 'lookup 1M %s cpu-ns       %6.1f  (<= 100: %s)\n' "$fam" "$r" "$(verdict "$r" '<=' 100)"
		done
		for fam in v4 v6; do
			r=$(go_metric "^BenchmarkBuild1M/$fam/sorted" B/prefix)
			printf 'table %s B/prefix         %6.1f  (<= 100: %s)\n' "$fam" "$r" "$(verdict "$r" '<=' 100)"
		done
		for fam in v4 v6; do
			r=$(go_metric "^BenchmarkBuild1M/$fam/sorted" cpu-s/op)
			printf 'build 1M %s cpu-s         %6.2f  (< 2: %s)\n' "$fam" "$r" "$(verdict "$r" '<=' 2)"
		done
		r=$(go_metric '^BenchmarkProbeRound' cpu-ns/round)
		r=$(awk -v x="$r" 'BEGIN { printf "%.3f", x / 5e9 * 100 }')
		printf 'probe 1000 relays/5s %%core %6.3f  (< 2: %s)\n' "$r" "$(verdict "$r" '<=' 2)"
	fi
} | tee -a "$RESULTS/summary.txt"
