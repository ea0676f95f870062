# shellcheck shell=bash
# Helpers for e2e/run.sh: processes, namespaces, bounded waits, DNS answer parsing.
# Sourced, not run. Everything here only touches namespaces named "$P-*" and
# processes whose ids are recorded in PIDS.

# ---------------------------------------------------------------- time, output
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
fmt_ms() { printf '%d.%02ds' $(($1 / 1000)) $((($1 % 1000) / 10)); }
say() { printf '%s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
# ok/bad record one assertion of the running step. bad() sets STEP_REASON (the
# first failure is the one reported) and returns 1 so callers can `|| return 1`
# when the rest of the step makes no sense after it.
ok() { printf '    ok   %s\n' "$*"; }
bad() {
	printf '    FAIL %s\n' "$*"
	[ -n "${STEP_REASON:-}" ] || STEP_REASON=$*
	STEP_FAILED=1
	return 1
}
# check DESC CMD...: run CMD, ok/bad by its status.
check() {
	local desc=$1
	shift
	if "$@"; then ok "$desc"; else bad "$desc"; fi
}

# ---------------------------------------------------------------- namespaces
nsx() { # nsx NODE CMD... : run CMD inside namespace $P-NODE
	local n=$1
	shift
	ip netns exec "$P-$n" "$@"
}

# start_proc NAME NODE CMD...: start CMD in the background inside $P-NODE,
# output to $WORK/log/NAME.log with each line stamped with the Unix time it
# was written (see log_ms), pid recorded in PIDS[NAME].
start_proc() {
	local name=$1 node=$2
	shift 2
	ip netns exec "$P-$node" "$@" > >(stamp_lines >>"$WORK/log/$name.log") 2>&1 </dev/null &
	PIDS[$name]=$!
}
stamp_lines() {
	local line
	while IFS= read -r line || [ -n "$line" ]; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}
# log_ms NAME T0_MS ERE: milliseconds from T0_MS to the first line of NAME's
# log written at or after T0_MS whose text (after the stamp) matches ERE;
# empty if there is none. The timed steps read their signals this way, after
# the fact, instead of polling: on a small, busy VM each poll forks curl or
# ip, and pollers would slow down the very failover they measure.
log_ms() {
	RE=$3 awk -v t0="$2" '{
		t = int($1 * 1000) - t0
		line = $0; sub(/^[^ ]* /, "", line)
	} t >= 0 && line ~ ENVIRON["RE"] { print t; exit }' "$WORK/log/$1.log" 2>/dev/null
}

# stop_proc NAME: SIGTERM the recorded pid, SIGKILL after 3 s; bounded.
stop_proc() {
	local name=$1 pid i
	pid=${PIDS[$name]:-}
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		nap 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	unset "PIDS[$name]"
	return 0
}

running() { local pid=${PIDS[$1]:-}; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# nap SECONDS: sleep without forking (a read that times out on a pipe nobody
# writes to); forks cost tens of milliseconds of CPU on a small VM.
nap() {
	[ -n "${NAP_FD:-}" ] || exec {NAP_FD}<> <(:)
	read -rt "$1" -u "$NAP_FD" || true
}

# wait_for DESC TIMEOUT_S STEP_S CMD...: poll CMD until it succeeds; at most
# TIMEOUT_S/STEP_S+1 tries and never past the deadline. Sets WAITED_MS.
wait_for() {
	local desc=$1 timeout=$2 step=$3
	shift 3
	local start deadline tries max
	start=$(now_ms)
	deadline=$((start + ${timeout%.*} * 1000))
	max=$(awk -v t="$timeout" -v s="$step" 'BEGIN { printf "%d", t / s + 1 }')
	for ((tries = 0; tries < max; tries++)); do
		if "$@"; then
			WAITED_MS=$(($(now_ms) - start))
			return 0
		fi
		[ "$(now_ms)" -lt "$deadline" ] || break
		nap "$step"
	done
	WAITED_MS=$(($(now_ms) - start))
	WAIT_ERR="timed out after $(fmt_ms "$WAITED_MS") waiting for $desc"
	return 1
}

# ---------------------------------------------------------------- HTTP in a namespace
http_code() { # http_code NODE URL
	nsx "$1" curl -s -o /dev/null -m 1 -w '%{http_code}' "$2" 2>/dev/null || true
}
metrics() { nsx "$1" curl -s -m 1 "http://127.0.0.1:9153/metrics" 2>/dev/null; }
# metric_value NODE METRIC 'label="x"' ...: value of the first series of METRIC
# carrying all the given label pairs (empty if none).
metric_value() {
	local node=$1 name=$2
	shift 2
	metrics "$node" | awk -v n="$name" -v want="$*" '
		index($0, n "{") == 1 || $1 == n {
			k = split(want, w, " "); hit = 1
			for (i = 1; i <= k; i++) if (index($0, w[i]) == 0) hit = 0
			if (hit) { print $NF; exit }
		}'
}
# metric_sum NODE METRIC 'label="x"' ...: sum over all matching series (0 if none).
metric_sum() {
	local node=$1 name=$2
	shift 2
	metrics "$node" | awk -v n="$name" -v want="$*" '
		BEGIN { s = 0 }
		index($0, n "{") == 1 || $1 == n {
			k = split(want, w, " "); hit = 1
			for (i = 1; i <= k; i++) if (index($0, w[i]) == 0) hit = 0
			if (hit) s += $NF
		}
		END { printf "%g", s }'
}

# ---------------------------------------------------------------- DNS queries
# dq NODE [dig args...]: run dig inside NODE, output in $Q.
dq() {
	local node=$1
	shift
	Q=$(nsx "$node" dig +tries=1 +timeout=2 "$@" 2>&1)
}
# kq NODE [kdig args...]: same with kdig.
kq() {
	local node=$1
	shift
	Q=$(nsx "$node" kdig +retry=0 +timeout=2 "$@" 2>&1)
}
q_status() { sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$Q" | head -n1; }
q_flags() { sed -n 's/^;; [Ff]lags: \([^;]*\);.*/\1/p' <<<"$Q" | head -n1; }
q_has_flag() { [[ " $(q_flags) " == *" $1 "* ]]; }
# q_section ANSWER|AUTHORITY|ADDITIONAL|QUESTION: the section's lines.
q_section() {
	awk -v s="$1" '
		/^;; [A-Z]+ SECTION:$/ { f = ($2 == s); next }
		/^;; / && f { f = 0 }
		f && NF { print }' <<<"$Q"
}
# q_rrs SECTION TYPE: "owner ttl rdata..." for each record of TYPE in SECTION.
q_rrs() {
	q_section "$1" | awk -v t="$2" '$4 == t {
		out = $1 " " $2; for (i = 5; i <= NF; i++) out = out " " $i; print out }'
}
# q_rdata SECTION TYPE: sorted rdata of the records of TYPE in SECTION.
q_rdata() {
	q_section "$1" | awk -v t="$2" '$4 == t {
		out = ""; for (i = 5; i <= NF; i++) out = out (i > 5 ? " " : "") $i; print out }' | sort
}
# generic_hex: read "\# LEN HEX HEX..." rdata lines, print "LEN HEX" normalised.
generic_hex() {
	awk '{ if ($1 != "\\#") { print "not-generic: " $0; next }
		h = ""; for (i = 3; i <= NF; i++) h = h $i; print $2 " " toupper(h) }' | sort
}
# q_owner_types SECTION: "owner TYPE" per record (owners as printed, case kept).
q_owners() { q_section "$1" | awk '{ print $1 " " $4 }'; }
# short_set NODE SERVER NAME TYPE [validated]: the answer's TYPE records sorted and space-separated,
# "<STATUS/empty>" when there are none, "<no-reply>" when nothing answered; with "validated", asked
# with the AD bit, and "<not-validated:STATUS>" when the answer does not carry it.
short_set() {
	local node=$1 server=$2 name=$3 type=$4 validated=${5:-} out line st="" ad=0 f=0 rr=() sorted=() x i
	# One kdig and no other process: the timed steps call this in a loop, and
	# every fork counts on a small VM (kdig also starts faster than dig).
	out=$(nsx "$node" kdig +retry=0 +timeout=2 ${validated:++adflag} "@$server" "$name" "$type" 2>&1)
	while IFS= read -r line; do
		[[ -z $st && $line =~ status:\ ([A-Z]+) ]] && st=${BASH_REMATCH[1]}
		[[ $line =~ ^\;\;\ Flags:\ ([^\;]*) && " ${BASH_REMATCH[1]} " == *" ad "* ]] && ad=1
		if [[ $line == ";; ANSWER SECTION:" ]]; then f=1; continue; fi
		[[ -z $line ]] && f=0
		# shellcheck disable=SC2206
		[[ $f == 1 ]] && x=($line) && [[ ${x[3]:-} == "$type" ]] && rr+=("${x[4]}")
	done <<<"$out"
	[ -n "$st" ] || {
		echo "<no-reply>"
		return
	}
	# A validating resolver's answer that did not validate is no answer.
	[ -z "$validated" ] || [ "$ad" = 1 ] || [ "$st" = SERVFAIL ] || {
		echo "<not-validated:$st>"
		return
	}
	[ ${#rr[@]} -gt 0 ] || {
		echo "<$st/empty>"
		return
	}
	for x in "${rr[@]}"; do # insertion sort: a handful of addresses
		for ((i = ${#sorted[@]}; i > 0; i--)); do
			[[ ${sorted[i - 1]} > $x ]] || break
			sorted[i]=${sorted[i - 1]}
		done
		sorted[i]=$x
	done
	echo "${sorted[*]}"
}

# ---------------------------------------------------------------- encoding
# ip4_hex A.B.C.D -> CB007115
ip4_hex() {
	local IFS=.
	# shellcheck disable=SC2086
	set -- $1
	printf '%02X%02X%02X%02X' "$1" "$2" "$3" "$4"
}
# name_hex FQDN -> uncompressed wire format in hex (root label included)
name_hex() {
	local name=${1%.} label out="" i
	local IFS=.
	for label in $name; do
		out+=$(printf '%02X' "${#label}")
		for ((i = 0; i < ${#label}; i++)); do
			out+=$(printf '%02X' "'${label:i:1}")
		done
	done
	echo "${out}00"
}
# rev4 A.B.C.D -> D.C.B.A.in-addr.arpa.
rev4() {
	local IFS=.
	# shellcheck disable=SC2086
	set -- $1
	echo "$4.$3.$2.$1.in-addr.arpa."
}
