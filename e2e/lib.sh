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
# output to $WORK/log/NAME.log, pid recorded in PIDS[NAME].
start_proc() {
	local name=$1 node=$2
	shift 2
	ip netns exec "$P-$node" "$@" >>"$WORK/log/$name.log" 2>&1 </dev/null &
	PIDS[$name]=$!
}

# stop_proc NAME: SIGTERM the recorded pid, SIGKILL after 3 s; bounded.
stop_proc() {
	local name=$1 pid i
	pid=${PIDS[$name]:-}
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	unset "PIDS[$name]"
	return 0
}

running() { local pid=${PIDS[$1]:-}; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# watch_first FILE T0_MS TIMEOUT_S CMD...: in the background, poll CMD every
# 50 ms (bounded by count and by TIMEOUT_S) and write the milliseconds since
# T0_MS at which it first succeeded to FILE. Each signal of a timed scenario
# gets its own watcher, so one slow probe does not delay the reading of another.
watch_first() {
	local file=$1 t0=$2 timeout=$3
	shift 3
	rm -f "$file"
	(
		local i end=$(($(now_ms) + timeout * 1000))
		for ((i = 0; i < timeout * 20; i++)); do
			if "$@"; then
				echo $(($(now_ms) - t0)) >"$file"
				exit 0
			fi
			[ "$(now_ms)" -lt "$end" ] || exit 1
			sleep 0.05
		done
	) &
	LOOP_PIDS+=("$!")
}
# stop_watchers: give the watchers a moment to record a signal that turned
# true together with the last one checked, then end them.
stop_watchers() {
	local pid i
	for ((i = 0; i < 4; i++)); do
		running_any "${LOOP_PIDS[@]}" || break
		sleep 0.05
	done
	for pid in "${LOOP_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	for pid in "${LOOP_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
	LOOP_PIDS=()
}
running_any() {
	local pid
	for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
	return 1
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
		sleep "$step"
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
# user_set NODE SERVER NAME TYPE: sorted addresses, or "<status>" when none.
short_set() {
	local node=$1 server=$2 name=$3 type=$4 out st
	out=$(nsx "$node" dig +tries=1 +timeout=2 "@$server" "$name" "$type" 2>&1)
	st=$(sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$out" | head -n1)
	[ -n "$st" ] || {
		echo "<no-reply>"
		return
	}
	local rr
	rr=$(awk -v t="$type" '/^;; ANSWER SECTION:$/ { f = 1; next } /^$/ { f = 0 } f && $4 == t { print $5 }' <<<"$out" | sort | tr '\n' ' ')
	if [ -n "$rr" ]; then echo "${rr% }"; else echo "<$st/empty>"; fi
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
