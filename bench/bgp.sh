# bench/bgp.sh: the bgp section of bench/run.sh, which sources it (its settings are documented
# there, and its helpers, log, die, stop_pid, stop_server, server_ticks, rss_kb, dnsperf_field,
# median and per_round_ratio, are used here).
#
# BIRD 2 feeds the plugin's BGP speaker over MBGP (ipv4 multicast, ipv6 multicast) across a veth
# pair between two network namespaces that this section makes and removes: BIRD in one, and
# cmd/coredns, dnsperf and the HTTP pollers in the other, each namespace with its own loopback.
# Nothing touches the host namespace's links or routes, and BIRD has no kernel protocol. BIRD's
# control socket is a file, so birdc and the flapper talk to it from the host namespace.
#
#   loads: for each N of BENCH_BGP_LOADS (a count given k times is loaded k times), BIRD starts
#     with N IPv4 multicast routes (bench/gen's bird-load-N.conf) and its bgp protocol disabled; the
#     server starts, passive; then `birdc enable speaker`, with a waker on BIRD's socket until the
#     table is complete (bird_waker_start says why). Timed from the plugin's "established" log line
#     (each line is stamped as it is read) and from BIRD's "Sending END-OF-RIB" (its log has Unix
#     times in ms) to coredns_amtrelay_sources reaching N (polled every 100 ms) and to /ready 200
#     (every 50 ms), both polled from one perl process in the server's namespace, which also reads
#     the server's CPU time and RSS at each. The server's CPU for the load is from the enable to the
#     complete table; what the polling itself costs the server is measured before the enable, over 3 s
#     of polling an idle server (the metrics endpoint costs a few ms of CPU a request).
#   flaps: BIRD with queries.txt's host sources as /32 and /128 routes carrying their relays'
#     communities, BENCH_BGP_FLAP_BASE more IPv4 routes and 4 static protocols of 500 routes each;
#     dnsperf (DNSPERF_ARGS) in alternating phases, steady and flapping, BENCH_BGP_ROUNDS rounds of
#     BENCH_BGP_SECONDS. While flapping, one perl process on BIRD's control socket disables or
#     enables one of the 4 protocols every 500/BENCH_BGP_FLAP_RATE s: 500 withdrawals or 500
#     announcements each time. Its CPU and BIRD's are reported apart from the server's.
#
# Each load and phase also reports the CPU that other processes took meanwhile (machine_ticks).

BGP_LOADS=${BENCH_BGP_LOADS:-100000,100000,100000,1000000}
BGP_ROUNDS=${BENCH_BGP_ROUNDS:-3}
BGP_SECONDS=${BENCH_BGP_SECONDS:-10}
BGP_FLAP_RATE=${BENCH_BGP_FLAP_RATE:-1000}
BGP_FLAP_BASE=${BENCH_BGP_FLAP_BASE:-100000}
BGP_PORT=${BENCH_BGP_PORT:-10753}
BGP_LOAD_TIMEOUT=${BENCH_BGP_LOAD_TIMEOUT:-600}
BGP_METRICS=127.0.0.1:19253
BGP_PPROF=127.0.0.1:16153
BGP_READY=127.0.0.1:18281
BGP_SPEAKER=100.64.253.1
BGP_BIRD=100.64.253.2
BGP_FLAP_PROTOCOLS=4

# The namespaces and processes of this section; bgp_cleanup (from run.sh's trap) ends exactly these.
bgp_ns_bird="" bgp_ns_dns="" bird_pid="" flapper_pid="" bgp_stamp_pid="" waker_pid=""
bgp_load_runs=0

# bgp_gen_args: bench/gen's flags for the bgp inputs.
bgp_gen_args() {
	echo -bgp-loads "$BGP_LOADS" -bgp-listen "127.0.0.1:$BGP_PORT" -bgp-metrics "$BGP_METRICS" -bgp-pprof "$BGP_PPROF" \
		-bgp-ready "$BGP_READY" -bgp-speaker "$BGP_SPEAKER" -bgp-bird "$BGP_BIRD" \
		-bgp-flap-base "$BGP_FLAP_BASE" -bgp-flap-protocols "$BGP_FLAP_PROTOCOLS"
}

bgp_del_ns() { # bgp_del_ns NS: end what runs in it (only this section's processes), delete it
	local pid
	[[ -n $1 ]] || return 0
	for pid in $(ip netns pids "$1" 2>/dev/null); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	for _ in $(seq 1 50); do
		[[ -z $(ip netns pids "$1" 2>/dev/null) ]] && break
		sleep 0.1
	done
	ip netns del "$1" 2>/dev/null || true
}

bgp_cleanup() {
	stop_pid "$flapper_pid" 5
	stop_pid "$waker_pid" 5
	stop_pid "$bird_pid" 5
	stop_pid "$bgp_stamp_pid" 5
	flapper_pid="" waker_pid="" bird_pid="" bgp_stamp_pid=""
	bgp_del_ns "$bgp_ns_dns"
	bgp_del_ns "$bgp_ns_bird"
	bgp_ns_dns="" bgp_ns_bird=""
}

bgp_tools() {
	command -v ip >/dev/null || die "bgp: ip (iproute2) is missing"
	if ! command -v bird >/dev/null || ! command -v birdc >/dev/null; then
		log "installing bird2 (its service is not started)"
		local made=0 rc=0
		# policy-rc.d forbids starting services while apt-get installs, as make bgp-interop does
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made=1
		fi
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bird2; } >>"$OUT/logs/apt.log" 2>&1 || rc=$?
		((made == 0)) || rm -f /usr/sbin/policy-rc.d
		((rc == 0)) || die "apt-get install bird2 (see $OUT/logs/apt.log)"
	fi
}

bgp_netns_up() {
	local ns=amtbench-$$
	ip netns add "$ns-bird" || die "ip netns add $ns-bird"
	bgp_ns_bird=$ns-bird
	ip netns add "$ns-dns" || die "ip netns add $ns-dns"
	bgp_ns_dns=$ns-dns
	# the veth ends are made in the namespaces: the host namespace never has them
	{ ip -n "$bgp_ns_bird" link set lo up && ip -n "$bgp_ns_dns" link set lo up &&
		ip link add abench-s netns "$bgp_ns_dns" type veth peer name abench-r netns "$bgp_ns_bird" &&
		ip -n "$bgp_ns_dns" addr add "$BGP_SPEAKER/30" dev abench-s &&
		ip -n "$bgp_ns_bird" addr add "$BGP_BIRD/30" dev abench-r &&
		ip -n "$bgp_ns_dns" link set abench-s up && ip -n "$bgp_ns_bird" link set abench-r up; } ||
		die "bgp: setting up the namespaces"
}

bgp_birdc() { timeout 60 birdc -s "$OUT/bird.ctl" "$@"; }

# bird_start CONF: BIRD in its namespace with CONF from $GEN, up and answering within 60 s.
bird_start() {
	rm -f "$GEN/bird.log" "$OUT/bird.ctl"
	ip netns exec "$bgp_ns_bird" bird -f -c "$GEN/$1" -s "$OUT/bird.ctl" >>"$OUT/logs/bird.out" 2>&1 &
	bird_pid=$!
	for _ in $(seq 1 600); do
		kill -0 "$bird_pid" 2>/dev/null || die "BIRD exited at start-up (see $OUT/logs/bird.out)"
		bgp_birdc show status 2>/dev/null | grep -q 'Daemon is up' && return 0
		sleep 0.1
	done
	die "BIRD did not answer within 60 s"
}

# bird_wait_routes TABLE N: wait until BIRD's TABLE has N routes.
bird_wait_routes() {
	local n=-1 i
	for ((i = 0; i < BGP_LOAD_TIMEOUT * 2; i++)); do
		n=$(bgp_birdc show route table "$1" count 2>/dev/null | awk '/ routes for / { print $1; exit }')
		[[ $n == "$2" ]] && return 0
		sleep 0.5
	done
	die "BIRD's $1 has ${n:-no} routes, not $2, after ${BGP_LOAD_TIMEOUT}s"
}

bird_stop() { # bird_stop NAME: stop BIRD, keep its log as logs/bird.NAME.log
	stop_pid "$bird_pid" 5
	bird_pid=""
	mv -f "$GEN/bird.log" "$OUT/logs/bird.$1.log" 2>/dev/null || true
}

bird_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$bird_pid/stat"; }

# machine_ticks: the CPU time all processes and the kernel spent, steal excluded; children_ticks:
# that of this shell's children it waited for (dnsperf, birdc, the pollers, the flapper once
# reaped). With the server's, BIRD's and the flapper's, they give what other processes took, which
# says whether a run was disturbed: the machine may be shared.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
children_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"; }

bgp_answers() {
	timeout 5 ip netns exec "$bgp_ns_dns" dnsperf -s 127.0.0.1 -p "$BGP_PORT" -d "$probe_query" -n 1 -t 1 2>/dev/null |
		grep -q 'Queries completed: *1 '
}

# bgp_start_server NAME COREFILE: cmd/coredns in the server's namespace, its output stamped with
# the Unix time each line is read at, answering within 30 s. It sets server_pid, so that
# run.sh's stop_server, server_ticks and rss_kb apply.
bgp_start_server() {
	local name=$1 corefile=$2 fifo=$OUT/bgp-log.fifo
	rm -f "$fifo"
	mkfifo "$fifo"
	perl -MTime::HiRes=time -ne 'BEGIN { $| = 1 } printf "%.6f %s", time, $_' <"$fifo" >"$OUT/logs/$name.log" &
	bgp_stamp_pid=$!
	# ip netns exec execs coredns: server_pid is the server's
	(cd "$GEN" && exec ip netns exec "$bgp_ns_dns" "$OUT/bin/coredns" -conf "$corefile") >"$fifo" 2>&1 &
	server_pid=$!
	for _ in $(seq 1 300); do
		kill -0 "$server_pid" 2>/dev/null || die "$name exited at start-up (see $OUT/logs/$name.log)"
		bgp_answers && return 0
		sleep 0.1
	done
	die "$name did not answer within 30s (see $OUT/logs/$name.log)"
}

bgp_stop_server() {
	stop_server
	stop_pid "$bgp_stamp_pid" 5 # it ends at the end of the server's output anyway
	bgp_stamp_pid=""
}

# bgp_wait_table N TIMEOUT: poll from inside the server's namespace until coredns_amtrelay_sources
# is at least N and /ready answers 200. Prints two lines, "complete TIME TICKS RSS_KB" and "ready
# TIME TICKS RSS_KB" (TIME a Unix time, TICKS the server's CPU then), "- - -" for one not reached.
bgp_wait_table() {
	ip netns exec "$bgp_ns_dns" perl -MHTTP::Tiny -MTime::HiRes=time,sleep -e '
		my ($metrics, $ready, $want, $pid, $timeout) = @ARGV;
		my $http = HTTP::Tiny->new(timeout => 5, keep_alive => 1);
		sub proc {
			open(my $f, "<", "/proc/$pid/stat") or return ("-", "-");
			my $s = <$f>;
			$s =~ s/^.*\) //;
			my @f = split / /, $s;
			open($f, "<", "/proc/$pid/status") or return ("-", "-");
			my ($rss) = map { /^VmRSS:\s+(\d+)/ ? $1 : () } <$f>;
			return ($f[11] + $f[12], $rss);
		}
		my (@complete, @ready);
		my ($start, $next_metrics, $next_ready) = (time, 0, 0);
		while (time - $start < $timeout && !(@complete && @ready)) {
			if (!@complete && time >= $next_metrics) {
				$next_metrics = time + 0.1;
				my $r = $http->get("http://$metrics/metrics");
				if ($r->{success} && $r->{content} =~ /^coredns_amtrelay_sources (\S+)/m && $1 >= $want) {
					@complete = (time, proc());
				}
			}
			if (!@ready && time >= $next_ready) {
				$next_ready = time + 0.05;
				@ready = (time, proc()) if $http->get("http://$ready/ready")->{status} == 200;
			}
			sleep 0.005;
		}
		printf "complete %s\nready %s\n", map { @$_ ? sprintf("%.6f %s %s", @$_) : "- - -" } \@complete, \@ready;
	' "$BGP_METRICS" "$BGP_READY" "$1" "$server_pid" "$2"
}

# bgp_wait_table_bg N TIMEOUT: bgp_wait_table into $OUT/bgp-wait.out, waited for with wait, which a
# signal interrupts (a foreground command or a command substitution would hold run.sh's trap back
# until it ended); the poller runs in the server's namespace, where bgp_cleanup ends it.
bgp_wait_table_bg() {
	bgp_wait_table "$@" >"$OUT/bgp-wait.out" &
	wait $! || true
}

bgp_metric() { # bgp_metric NAME: the first sample of that metric line (NAME may carry labels)
	ip netns exec "$bgp_ns_dns" curl -s --max-time 5 "http://$BGP_METRICS/metrics" |
		awk -v m="$1" 'index($0, m " ") == 1 { print $2 + 0; f = 1; exit } END { if (!f) print "nan" }'
}

# bgp_load N: the whole-table load of N routes; a row of bgp-load.tsv.
bgp_load() {
	bgp_load_runs=$((bgp_load_runs + 1))
	local n=$1 name=bgp-load-$1.$bgp_load_runs t_enable ticks0 rss0 bird0 est eor out complete ready idle
	log "bgp load: BIRD with $n routes"
	bird_start "bird-load-$n.conf"
	bird_wait_routes mcast4 "$n"
	bgp_start_server "$name" Corefile.bgp-load
	sleep 1
	# what the server spends idle under the pollers, per second: 3 s of polling for nothing
	ticks0=$(server_ticks)
	bgp_wait_table 1e18 3 >/dev/null
	idle=$(awk -v t=$(($(server_ticks) - ticks0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz / 3 }')
	ticks0=$(server_ticks) rss0=$(rss_kb) bird0=$(bird_ticks)
	local m0 c0 others profile_pid=""
	m0=$(machine_ticks) c0=$(children_ticks)
	if ((profile && n == bgp_profile_routes)); then
		bgp_profile_routes=0 # once
		log "bgp load $n: CPU profile of the first 10 s after the enable"
		ip netns exec "$bgp_ns_dns" curl -s --max-time 30 -o "$RESULTS/bgp-load-$n.cpu.pprof" \
			"http://$BGP_PPROF/debug/pprof/profile?seconds=10" &
		profile_pid=$!
	fi
	bird_waker_start
	t_enable=$EPOCHREALTIME
	bgp_birdc enable speaker >/dev/null || die "birdc enable speaker"
	bgp_wait_table_bg "$n" "$BGP_LOAD_TIMEOUT"
	out=$(cat "$OUT/bgp-wait.out")
	if [[ -n $profile_pid ]]; then
		wait "$profile_pid" || log "WARNING: the CPU profile failed"
		go tool pprof -top -nodecount 40 "$OUT/bin/coredns" "$RESULTS/bgp-load-$n.cpu.pprof" \
			>"$RESULTS/bgp-load-$n.cpu.top.txt" 2>/dev/null || true
	fi
	complete=$(awk '$1 == "complete" { print $2, $3, $4 }' <<<"$out")
	ready=$(awk '$1 == "ready" { print $2, $3, $4 }' <<<"$out")
	[[ $complete != "- - -" ]] || die "bgp load: the table did not reach $n within ${BGP_LOAD_TIMEOUT}s (sources $(bgp_metric coredns_amtrelay_sources); see $OUT/logs/$name.log)"
	stop_pid "$waker_pid" 5
	waker_pid=""
	local bird_cpu
	bird_cpu=$(($(bird_ticks) - bird0))
	# other processes, as a share of a core, from the enable to the end of the polling
	others=$(awk -v m=$(($(machine_ticks) - m0)) -v s=$(($(server_ticks) - ticks0)) -v b="$bird_cpu" \
		-v c=$(($(children_ticks) - c0)) -v t0="$t_enable" -v t1="$EPOCHREALTIME" -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%.3f", (m - s - b - c) / hz / (t1 - t0) }')
	est=$(awk '/bgp: neighbor .*: established$/ { print $1; exit }' "$OUT/logs/$name.log")
	# the last End-of-RIB: BIRD sends one per family, the empty IPv6 one first
	eor=$(awk '/Sending END-OF-RIB/ { t = $1 } END { print t }' "$GEN/bird.log")
	[[ -n $est ]] || die "bgp load: no \"established\" line in $OUT/logs/$name.log"
	[[ -n $eor ]] || log "WARNING: no End-of-RIB in BIRD's log"
	if grep -q 'not waiting for it' "$OUT/logs/$name.log"; then
		log "WARNING: readiness stopped waiting for the session: the ready time is not the table's"
	fi
	awk -v n="$n" -v en="$t_enable" -v est="$est" -v eor="${eor:-nan}" -v c="$complete" -v r="$ready" \
		-v t0="$ticks0" -v rss0="$rss0" -v bird="$bird_cpu" -v idle="$idle" -v others="$others" -v hz="$(getconf CLK_TCK)" '
		function ms(a, b) { return (a == "-" || b == "-" || a == "nan" || b == "nan") ? "nan" : sprintf("%.0f", (a - b) * 1000) }
		BEGIN {
			split(c, cc, " "); split(r, rr, " ")
			printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%.2f\t%s\t%s\n", n, ms(est, en), ms(eor, est), ms(cc[1], est), ms(rr[1], est),
				ms(cc[1], eor), ms(rr[1], eor), (cc[2] - t0) / hz, rss0, cc[3], (rr[3] == "-" ? "nan" : rr[3]), bird / hz, idle, others
		}' >>"$RESULTS/bgp-load.tsv"
	log "bgp load $n: $(tail -n1 "$RESULTS/bgp-load.tsv" | awk -F'\t' '{ printf "established -> complete %s ms, -> ready %s ms; End-of-RIB -> complete %s ms, -> ready %s ms; server CPU %s s (idle under the pollers %s s/s); RSS %d -> %d MB; BIRD CPU %s s; other processes %.0f%% of a core",
		$4, $5, $6, $7, $8, $13, $9 / 1024, $10 / 1024, $12, $14 * 100 }')"
	bgp_stop_server
	bird_stop "$name"
}

# bird_export: "UPDATES WITHDRAWALS", what BIRD has exported on the speaker's ipv4-mc channel
bird_export() {
	bgp_birdc show protocols all speaker | awk '
		/Channel ipv4-mc/ { in4 = 1; next } /Channel / { in4 = 0 }
		in4 && /Export updates:/ { u = $NF } in4 && /Export withdraws:/ { w = $NF }
		END { print u + 0, w + 0 }'
}

# flapper_start: one perl process on BIRD's control socket toggles protocol flap(i mod 4) every
# 500/BGP_FLAP_RATE seconds, each time 500 withdrawals or 500 announcements. On TERM it says how
# many commands it sent and how many came late.
flapper_start() {
	perl -MIO::Socket::UNIX -MTime::HiRes=time,sleep -e '
		my ($sock, $n, $interval) = @ARGV;
		my $c = IO::Socket::UNIX->new(Peer => $sock) or die "flapper: $sock: $!\n";
		sub reply { my $last; while (defined(my $l = <$c>)) { $last //= $l; return $last if $l =~ /^\d{4} /; } die "flapper: BIRD closed its socket\n" }
		reply();
		my ($ops, $late, $i, @on) = (0, 0, 0, (1) x $n);
		$SIG{TERM} = sub { printf STDERR "flapper: %d commands, %d late\n", $ops, $late; exit 0 };
		my $next = time;
		while (1) {
			my $p = $i++ % $n;
			my $cmd = ($on[$p] ? "disable" : "enable") . " flap$p";
			print $c "$cmd\n";
			my $r = reply();
			$r =~ /^00(09|11)/ or die "flapper: $cmd: $r";
			$on[$p] = !$on[$p];
			$ops++;
			$next += $interval;
			my $d = $next - time;
			if ($d > 0) { sleep $d } else { $late++ }
		}
	' "$OUT/bird.ctl" "$BGP_FLAP_PROTOCOLS" "$(awk -v r="$BGP_FLAP_RATE" 'BEGIN { print 500 / r }')" 2>>"$OUT/logs/flapper.log" &
	flapper_pid=$!
}

# bird_waker_start: one perl process that asks BIRD for its status every 20 ms. BIRD 2.0.12's main
# loop can go to sleep with export work pending, and then sends the tail of a table and its
# End-of-RIB only at its 3 s poll timeout; a command on its control socket wakes it sooner.
bird_waker_start() {
	perl -MIO::Socket::UNIX -MTime::HiRes=sleep -e '
		my $c = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "waker: $ARGV[0]: $!\n";
		while (1) {
			while (defined(my $l = <$c>)) { last if $l =~ /^\d{4} /; }
			sleep 0.02;
			print $c "show status\n";
		}
	' "$OUT/bird.ctl" 2>>"$OUT/logs/waker.log" &
	waker_pid=$!
}

# bgp_wait_idle: as run.sh's wait_idle, for the bgp server and BIRD together (up to 30 s).
bgp_wait_idle() {
	local t0 b0 hz
	hz=$(getconf CLK_TCK)
	for _ in $(seq 1 30); do
		t0=$(server_ticks) b0=$(bird_ticks)
		sleep 1
		((($(server_ticks) - t0) * 100 < 5 * hz && ($(bird_ticks) - b0) * 100 < 5 * hz)) && return 0
	done
	log "WARNING: the bgp server or BIRD did not go idle within 30 s"
}

bgp_flaps() {
	local total want4 out round phase ticks0 ticks1 b0 b1 f1 e0 e1 qps completed noerror m0 m1 c0 c1
	log "bgp flaps: BIRD with the query file's sources, $BGP_FLAP_BASE more routes, $BGP_FLAP_PROTOCOLS x 500 flapping"
	bird_start bird-flap.conf
	want4=$(grep -c '^.route [0-9.]*/' "$GEN/bird-flap.conf")
	total=$(grep -c '^.route ' "$GEN/bird-flap.conf")
	bird_wait_routes mcast4 "$want4"
	bgp_start_server bgp-flap Corefile.bgp-flap
	bgp_birdc enable speaker >/dev/null || die "birdc enable speaker"
	bgp_wait_table_bg "$total" 120
	out=$(cat "$OUT/bgp-wait.out")
	grep -q '^complete [0-9]' <<<"$out" && grep -q '^ready [0-9]' <<<"$out" ||
		die "bgp flaps: the table did not reach $total routes and ready within 120 s (see $OUT/logs/bgp-flap.log)"
	log "bgp flaps: $total routes in the server's table; warming up"
	timeout $((WARMUP_SECONDS + 10)) ip netns exec "$bgp_ns_dns" dnsperf -s 127.0.0.1 -p "$BGP_PORT" \
		-d "$GEN/queries.txt" -e $DNSPERF_ARGS -n 1 >"$RESULTS/bgp-flap.warmup.txt" 2>&1 || true
	printf 'round\tphase\tqps\tcpu_us_per_query\tnoerror_share\tserver_cpu_s\tbird_cpu_s\tflapper_cpu_s\texport_updates\texport_withdraws\tclient_cpu_s\tothers_cpu_s\n' >"$RESULTS/bgp-flap.tsv"
	for ((round = 1; round <= BGP_ROUNDS; round++)); do
		for phase in steady flapping; do
			e0=$(bird_export)
			ticks0=$(server_ticks) b0=$(bird_ticks) m0=$(machine_ticks) c0=$(children_ticks)
			[[ $phase == flapping ]] && flapper_start
			out=$RESULTS/bgp-flap.$round.$phase.txt
			timeout $((BGP_SECONDS + 30)) ip netns exec "$bgp_ns_dns" dnsperf -s 127.0.0.1 -p "$BGP_PORT" \
				-d "$GEN/queries.txt" -e $DNSPERF_ARGS -l "$BGP_SECONDS" >"$out" 2>&1 || die "dnsperf against bgp-flap"
			ticks1=$(server_ticks) b1=$(bird_ticks) m1=$(machine_ticks) c1=$(children_ticks) f1=0
			if [[ $phase == flapping ]]; then
				kill -0 "$flapper_pid" 2>/dev/null || die "the flapper exited early (see $OUT/logs/flapper.log)"
				f1=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$flapper_pid/stat")
				stop_pid "$flapper_pid" 5
				flapper_pid=""
			fi
			e1=$(bird_export)
			qps=$(dnsperf_field "$out" "Queries per second")
			completed=$(dnsperf_field "$out" "Queries completed")
			noerror=$(awk '/NOERROR/ { for (i = 1; i <= NF; i++) if ($i == "NOERROR") { print $(i + 1); exit } }' "$out")
			awk -v r="$round" -v p="$phase" -v q="$qps" -v n="$completed" -v ok="${noerror:-0}" -v t=$((ticks1 - ticks0)) \
				-v b=$((b1 - b0)) -v f="$f1" -v e0="$e0" -v e1="$e1" -v m=$((m1 - m0)) -v c=$((c1 - c0)) \
				-v hz="$(getconf CLK_TCK)" 'BEGIN {
				split(e0, a, " "); split(e1, z, " ")
				printf "%s\t%s\t%s\t%s\t%.3f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%.2f\t%.2f\n", r, p, q,
					(n > 0 ? sprintf("%.2f", t / hz * 1e6 / n) : "nan"), (n > 0 ? ok / n : 0), t / hz, b / hz, f / hz, z[1] - a[1], z[2] - a[2],
					c / hz, (m - t - b - f - c) / hz
			}' >>"$RESULTS/bgp-flap.tsv"
			log "bgp round $round $phase: $(tail -n1 "$RESULTS/bgp-flap.tsv" | awk -F'\t' '{ printf "%s qps, server CPU %s us/query, NOERROR %.1f%%; CPU s: server %s, dnsperf %s, BIRD %s, flapper %s, other processes %s; BIRD exported %d updates, %d withdrawals",
				$3, $4, $5 * 100, $6, $11, $7, $8, $12, $9, $10 }')"
			if [[ $phase == flapping ]]; then
				# back to the whole table for the next steady phase
				bgp_birdc enable '"flap*"' >/dev/null || die "birdc enable flap*"
				bgp_wait_idle
			fi
		done
	done
	if ((profile)); then
		# --profile: where the server's CPU goes under dnsperf load, without and with flaps
		for phase in steady flapping; do
			log "bgp flaps: CPU profile of the server under load, $phase"
			[[ $phase == flapping ]] && flapper_start
			timeout 40 ip netns exec "$bgp_ns_dns" dnsperf -s 127.0.0.1 -p "$BGP_PORT" -d "$GEN/queries.txt" -e \
				$DNSPERF_ARGS -l 12 >"$RESULTS/bgp-flap.$phase.profile-load.txt" 2>&1 &
			local load_pid=$!
			sleep 1
			ip netns exec "$bgp_ns_dns" curl -s --max-time 30 -o "$RESULTS/bgp-flap.$phase.cpu.pprof" \
				"http://$BGP_PPROF/debug/pprof/profile?seconds=10" || log "WARNING: the CPU profile failed"
			wait "$load_pid" || true
			if [[ $phase == flapping ]]; then
				stop_pid "$flapper_pid" 5
				flapper_pid=""
				bgp_birdc enable '"flap*"' >/dev/null || die "birdc enable flap*"
			fi
			go tool pprof -top -nodecount 40 "$OUT/bin/coredns" "$RESULTS/bgp-flap.$phase.cpu.pprof" \
				>"$RESULTS/bgp-flap.$phase.cpu.top.txt" 2>/dev/null || true
		done
	fi
	bgp_stop_server
	bird_stop bgp-flap
}

bgp_section() {
	if (($(id -u) != 0)); then
		log "bgp: skipped, its network namespaces need root"
		return 0
	fi
	bgp_tools
	bgp_netns_up
	log "bgp: namespaces $bgp_ns_bird (BIRD, $BGP_BIRD) and $bgp_ns_dns (server, $BGP_SPEAKER, DNS 127.0.0.1:$BGP_PORT)"
	printf 'routes\tenable_to_est_ms\test_to_eor_ms\test_to_complete_ms\test_to_ready_ms\teor_to_complete_ms\teor_to_ready_ms\tserver_cpu_s\trss_before_kb\trss_complete_kb\trss_ready_kb\tbird_cpu_s\tidle_poll_cpu_per_s\tothers_core_share\n' >"$RESULTS/bgp-load.tsv"
	local n
	# --profile: a CPU profile of the first load of the most routes
	bgp_profile_routes=$(tr ',' '\n' <<<"$BGP_LOADS" | sort -n | tail -n1)
	for n in ${BGP_LOADS//,/ }; do
		bgp_load "$n"
	done
	((BGP_ROUNDS > 0)) && bgp_flaps
	bgp_cleanup
}

# bgp_summary and bgp_ratios: the section's lines in the summary and in the key ratios.
bgp_summary() {
	if [[ -s $RESULTS/bgp-load.tsv ]] && (($(wc -l <"$RESULTS/bgp-load.tsv") > 1)); then
		awk -F'\t' 'NR > 1 { printf "bgp load %7d routes: established -> complete %6.2f s, -> ready %6.2f s (End-of-RIB -> %.2f s, %.2f s; BIRD sent it %.2f s after established); server CPU %.2f s (idle under the pollers %.3f s/s), RSS %d -> %d MB; others %.0f%% of a core\n",
			$1, $4 / 1000, $5 / 1000, $6 / 1000, $7 / 1000, $3 / 1000, $8, $13, $9 / 1024, $11 / 1024, $14 * 100 }' "$RESULTS/bgp-load.tsv"
	fi
	if [[ -s $RESULTS/bgp-flap.tsv ]] && (($(wc -l <"$RESULTS/bgp-flap.tsv") > 1)); then
		local phase
		for phase in steady flapping; do
			awk -F'\t' -v p="$phase" 'NR > 1 && $2 == p' "$RESULTS/bgp-flap.tsv" >"$RESULTS/bgp-flap.$phase.tmp"
			printf 'bgp %-8s (%d rounds of %ss): %6.0f qps, server CPU %6.2f us/query (medians); CPU s per phase: server %.2f, BIRD %.2f, flapper %.2f, others %.2f; BIRD exported %d updates, %d withdrawals per phase\n' \
				"$phase" "$(wc -l <"$RESULTS/bgp-flap.$phase.tmp")" "$BGP_SECONDS" \
				"$(cut -f3 "$RESULTS/bgp-flap.$phase.tmp" | median)" "$(cut -f4 "$RESULTS/bgp-flap.$phase.tmp" | median)" \
				"$(cut -f6 "$RESULTS/bgp-flap.$phase.tmp" | median)" "$(cut -f7 "$RESULTS/bgp-flap.$phase.tmp" | median)" \
				"$(cut -f8 "$RESULTS/bgp-flap.$phase.tmp" | median)" "$(cut -f12 "$RESULTS/bgp-flap.$phase.tmp" | median)" \
				"$(cut -f9 "$RESULTS/bgp-flap.$phase.tmp" | median)" \
				"$(cut -f10 "$RESULTS/bgp-flap.$phase.tmp" | median)"
			rm -f "$RESULTS/bgp-flap.$phase.tmp"
		done
	fi
}

bgp_ratios() {
	if [[ -s $RESULTS/bgp-load.tsv ]] && (($(wc -l <"$RESULTS/bgp-load.tsv") > 1)); then
		local n runs eoc ec
		for n in $(awk -F'\t' 'NR > 1 { print $1 }' "$RESULTS/bgp-load.tsv" | sort -nu); do
			runs=$(awk -F'\t' -v n="$n" 'NR > 1 && $1 == n' "$RESULTS/bgp-load.tsv" | wc -l)
			eoc=$(awk -F'\t' -v n="$n" 'NR > 1 && $1 == n { print $6 / 1000 }' "$RESULTS/bgp-load.tsv" | median)
			ec=$(awk -F'\t' -v n="$n" 'NR > 1 && $1 == n { print $4 / 1000 }' "$RESULTS/bgp-load.tsv" | median)
			if ((n == 100000)); then
				printf 'bgp 100k End-of-RIB->table s %5.2f  (<= 3: %s; median of %d; from established %.2f s)\n' "$eoc" "$(verdict "$eoc" '<=' 3)" "$runs" "$ec"
			else
				printf 'bgp %dk End-of-RIB->table s %5.2f  (median of %d; from established %.2f s)\n' $((n / 1000)) "$eoc" "$runs" "$ec"
			fi
		done
	fi
	if [[ -s $RESULTS/bgp-flap.tsv ]] && (($(wc -l <"$RESULTS/bgp-flap.tsv") > 1)); then
		r=$(per_round_ratio flapping steady 3 "$RESULTS/bgp-flap.tsv")
		printf 'bgp flapping/steady QPS   %6.3f  (>= 0.95, %s routes/s: %s)\n' "$r" "$BGP_FLAP_RATE" "$(verdict "$r" '>=' 0.95)"
		printf 'bgp flapping/steady server CPU/query %6.3f\n' "$(per_round_ratio flapping steady 4 "$RESULTS/bgp-flap.tsv")"
	fi
}
