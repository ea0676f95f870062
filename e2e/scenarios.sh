# shellcheck shell=bash
# The steps of e2e/run.sh. Each step_NAME prints "ok"/"FAIL" lines for its
# assertions (via ok/bad/check from lib.sh) and returns non-zero on failure;
# run.sh prints the PASS/FAIL line. Sourced, not run.

N1_SET="${N1_RELAYS[*]}"          # "203.0.113.11 203.0.113.12"
N2_SET="${N2_RELAYS_V4[*]}"       # "203.0.113.21 203.0.113.22"

# Expected AMTRELAY RDATA (hex) of net2's relays, built from RFC 8777 section 4.
amtrelay_hex() { # PREC D TYPE RELAY
	local prec=$1 d=$2 type=$3 relay=$4 body
	case $type in
	1) body=$(ip4_hex "$relay") ;;
	2) body=20010DB8000200000000000000000021 ;; # only $N2_RELAY_V6 is used
	3) body=$(name_hex "$relay") ;;
	esac
	printf '%02X%02X%s' "$prec" $((d * 128 + type)) "$body"
}
n2_expected_generic() { # n2_expected_generic [R2B_PREC] -> sorted "LEN HEX" lines
	local r2b=${1:-20} h
	{
		for h in "$(amtrelay_hex 10 0 1 "${N2_RELAYS_V4[0]}")" \
			"$(amtrelay_hex "$r2b" 1 1 "${N2_RELAYS_V4[1]}")" \
			"$(amtrelay_hex 10 0 2 "$N2_RELAY_V6")" \
			"$(amtrelay_hex 30 0 3 "$N2_RELAY_NAME")"; do
			echo "$((${#h} / 2)) $h"
		done
	} | sort
}
n2_expected_presentation() {
	local r2b=${1:-20}
	printf '%s\n' "10 0 1 ${N2_RELAYS_V4[0]}" "$r2b 1 1 ${N2_RELAYS_V4[1]}" \
		"10 0 2 $N2_RELAY_V6" "30 0 3 $N2_RELAY_NAME" | sort
}

# The user's view: what net8's Unbound returns for the anycast-style lookup.
user_a() { short_set n8 "$RESOLVER" "$AMT_NAME" A validated; }
# user_amtrelay: net8's Unbound's AMTRELAY records at amt.<rev(S)>, sorted, "|"-joined.
user_amtrelay() {
	dq n8 "@$RESOLVER" +adflag "$AMT_NAME" AMTRELAY
	q_has_flag ad || echo "<not-validated:$(q_status)>"
	q_rdata ANSWER AMTRELAY | tr '\n' '|'
}
# wait_user_amtrelay_n1 DESC TIMEOUT: wait until the user gets net1's AMTRELAY records. Unbound
# caches AMTRELAY apart from A, so this waits out its own TTL even after user_a has turned.
wait_user_amtrelay_n1() {
	wait_for "$1" "$2" 0.2 eval '[ "$(user_amtrelay)" = "10 0 1 ${N1_RELAYS[0]}|10 0 1 ${N1_RELAYS[1]}|" ]'
}

# ---------------------------------------------------------------- baseline states
# Every scenario starts from a known state so that --only works for each.
wait_baseline() { # all relays up, net2 announced and reaching S, the user sees net2's relays
	restore_peer_keys
	bgp_restore || return 1
	if ! grep -q '^198\.51\.100\.0/24 ' "$WORK/conf/n2.sources"; then
		n2_sources with_s >"$WORK/conf/n2.sources.new" && mv "$WORK/conf/n2.sources.new" "$WORK/conf/n2.sources"
	fi
	start_relays n1
	start_relays n2
	running route-control || start_route_control
	wait_for "net1 and net2 ready" 20 0.2 eval 'is_ready n1 && is_ready n2' || { bad "$WAIT_ERR"; return 1; }
	wait_for "ix routing the anycast address to net2" 15 0.2 eval '[ "$(anycast_via)" = n2 ]' || { bad "$WAIT_ERR"; return 1; }
	wait_for "the user seeing net2's relays" 15 0.2 eval '[ "$(user_a)" = "$N2_SET" ]' || { bad "$WAIT_ERR (last: $(user_a))"; return 1; }
}

# ---------------------------------------------------------------- 0. topology
step_topology() {
	setup_topology || return 1
	wait_for "BGP sessions ix-n1, ix-n2, ix-n8 Established" 30 0.2 bgp_established || { bad "$WAIT_ERR"; return 1; }
	ok "BIRD eBGP sessions up (AS64500 transit; AS64501, AS64502, AS64508) after $(fmt_ms "$WAITED_MS")"
	wait_for "net8 route to net1's reverse-zone server" 15 0.2 eval 'nsx n8 ip -4 route show $REV_NS/32 | grep -q via' || { bad "$WAIT_ERR"; return 1; }
	ok "net8 learned the other networks' prefixes"
	wait_for "root, arpa and reverse-zone servers" 20 0.2 eval 'answers_at n8 $ROOT_NS . && answers_at n8 $ARPA_NS arpa. && answers_at n8 $REV_NS 100.51.198.in-addr.arpa.' || { bad "$WAIT_ERR"; return 1; }
	ok "root, arpa. and 100.51.198.in-addr.arpa. authorities answer"
	wait_for "net1 AMT DNS ready" 20 0.2 is_ready n1 || { bad "$WAIT_ERR (code $(ready_code n1))"; return 1; }
	ok "net1 AMT DNS /ready 200 after its first probe round"
	wait_for "net2 AMT DNS ready" 20 0.2 is_ready n2 || { bad "$WAIT_ERR (code $(ready_code n2))"; return 1; }
	ok "net2 AMT DNS /ready 200 after its first probe round"
	wait_for "route-control announcing net2's anycast" 15 0.2 eval '[ "$(anycast_via)" = n2 ]' || { bad "$WAIT_ERR (ix route: $(anycast_via))"; return 1; }
	ok "route-control added $ANYCAST/32 on net2's lo; ix routes it to net2"
	local path
	path=$(birdc_ n8 show route "$ANYCAST/32" all 2>/dev/null | sed -n 's/.*BGP.as_path: *//p' | head -n1)
	if [ "$path" = "64500 64502" ]; then ok "net8's best path to the anycast address: AS $path"; else bad "net8's best path to $ANYCAST is '$path', want '64500 64502'"; fi
	wait_for "Unbound resolving S's PTR" 20 0.3 eval '[ "$(short_set n8 $RESOLVER $REV_S PTR validated)" = source.net1.e2e. ]' || { bad "$WAIT_ERR"; return 1; }
	ok "Unbound resolves $REV_S PTR through root -> arpa -> net1, validated from the root's key down"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 1. direct
# expect_answer DESC RCODE TYPE "sorted rdata" : check $Q: status, AA, answer set.
expect_answer() {
	local desc=$1 rcode=$2 type=$3 want=$4 got st
	st=$(q_status)
	got=$(q_rdata ANSWER "$type")
	if [ "$st" = "$rcode" ] && q_has_flag aa && [ "$got" = "$want" ]; then
		ok "$desc"
	else
		bad "$desc: want $rcode aa [$(tr '\n' '|' <<<"$want")], got ${st:-no reply} flags [$(q_flags)] [$(tr '\n' '|' <<<"$got")]"
	fi
}
# expect_negative DESC RCODE SOA_OWNER: no answer, AA, exactly one SOA owned by SOA_OWNER.
expect_negative() {
	local desc=$1 rcode=$2 owner=$3 st soa nans
	st=$(q_status)
	nans=$(q_section ANSWER | grep -c .)
	soa=$(q_section AUTHORITY | awk '$4 == "SOA" { print tolower($1) }')
	if [ "$st" = "$rcode" ] && q_has_flag aa && [ "$nans" -eq 0 ] && [ "$soa" = "$owner" ]; then
		ok "$desc"
	else
		bad "$desc: want $rcode aa, no answer, SOA owner $owner; got ${st:-no reply} flags [$(q_flags)] answers $nans SOA [$soa]"
	fi
}

step_direct() {
	wait_baseline || return 1
	local srv=$N2_DNS proto tcp want got ttl
	for proto in udp tcp; do
		tcp=""
		[ $proto = tcp ] && tcp=+tcp
		# AMTRELAY in BIND dig's presentation form.
		dq n8 "@$srv" $tcp "$AMT_NAME" AMTRELAY
		expect_answer "dig/$proto AMTRELAY at $AMT_NAME (presentation)" NOERROR AMTRELAY "$(n2_expected_presentation)"
		# ... and as RFC 3597 bytes, which is what is on the wire.
		dq n8 "@$srv" $tcp +unknownformat "$AMT_NAME" TYPE260
		got=$(q_rdata ANSWER AMTRELAY | generic_hex)
		[ -n "$got" ] || got=$(q_rdata ANSWER TYPE260 | generic_hex)
		want=$(n2_expected_generic)
		if [ "$got" = "$want" ]; then ok "dig/$proto +unknownformat AMTRELAY RDATA exact bytes (D-bit record: 6 1481CB007116)"
		else bad "dig/$proto AMTRELAY RDATA: want [$(tr '\n' '|' <<<"$want")], got [$(tr '\n' '|' <<<"$got")]"; fi
		grep -q '^6 1481CB007116$' <<<"$got" || bad "dig/$proto: the discovery_optional relay r2b is not 20 1 1 ${N2_RELAYS_V4[1]} (1481CB007116) on the wire"
		# kdig (Knot) has no AMTRELAY type: it shows the generic form.
		kq n8 "@$srv" $tcp "$AMT_NAME" TYPE260
		got=$(q_rdata ANSWER TYPE260 | generic_hex)
		if [ "$got" = "$want" ] && q_has_flag aa; then ok "kdig/$proto TYPE260 generic form, same bytes, aa"
		else bad "kdig/$proto TYPE260: want aa [$(tr '\n' '|' <<<"$want")], got flags [$(q_flags)] [$(tr '\n' '|' <<<"$got")]"; fi
		# A / AAAA at amt.<rev(S)>: relays' addresses, never the hostname relay.
		dq n8 "@$srv" $tcp "$AMT_NAME" A
		expect_answer "dig/$proto A at $AMT_NAME" NOERROR A "$(printf '%s\n' "${N2_RELAYS_V4[@]}" | sort)"
		ttl=$(q_rrs ANSWER A | awk '{ print $2 }' | sort -u | tr '\n' ' ')
		[ "$ttl" = "$ANSWER_TTL " ] || bad "dig/$proto A TTLs [$ttl], want $ANSWER_TTL (ttl directive)"
		kq n8 "@$srv" $tcp "$AMT_NAME" AAAA
		expect_answer "kdig/$proto AAAA at $AMT_NAME" NOERROR AAAA "$N2_RELAY_V6"
	done

	# RFC 8777 owner <rev(S)> answered by the plugin too.
	dq n8 "@$srv" "$REV_S" AMTRELAY
	expect_answer "AMTRELAY at $REV_S (RFC 8777 owner)" NOERROR AMTRELAY "$(n2_expected_presentation)"
	# Synthesized apex.
	dq n8 "@$srv" "$AMT_NAME" SOA
	got=$(q_rrs ANSWER SOA | awk '{ print tolower($1) }')
	if [ "$(q_status)" = NOERROR ] && q_has_flag aa && [ "$got" = "$AMT_NAME" ]; then ok "SOA at the apex $AMT_NAME"
	else bad "SOA at $AMT_NAME: got $(q_status) [$(q_flags)] owners [$got]"; fi
	dq n8 "@$srv" +tcp "$AMT_NAME" NS
	expect_answer "NS at the apex -> $AMT_NS_NAME" NOERROR NS "$AMT_NS_NAME"
	# Negative answers.
	dq n8 "@$srv" "$AMT_NAME" TXT
	expect_negative "NODATA+SOA for TXT at $AMT_NAME" NOERROR "$AMT_NAME"
	dq n8 "@$srv" "x.$AMT_NAME" A
	expect_negative "NXDOMAIN+SOA below the apex (x.$AMT_NAME)" NXDOMAIN "$AMT_NAME"
	dq n8 "@$srv" 'x\.y.'"$AMT_NAME" A
	expect_negative "NXDOMAIN+SOA below the apex with an escaped dot (x\\.y.$AMT_NAME)" NXDOMAIN "$AMT_NAME"
	dq n8 "@$srv" "amt.$(rev4 $S_UNKNOWN)" A
	# Signed (dnssec): the apex exists, so NODATA; unsigned it is NXDOMAIN (the Go tests check that).
	expect_negative "NODATA+SOA for a source in no table (amt.$(rev4 $S_UNKNOWN)), the signed apex exists" NOERROR "amt.$(rev4 $S_UNKNOWN)"
	# Only class IN is amtrelay's: net2 has forward, so CoreDNS lets CH through, and it goes to
	# net1 (which refuses it), never to an answer of amtrelay's IN records.
	dq n8 "@$srv" "$AMT_NAME" CH A
	if ! q_has_flag aa && [ -z "$(q_rrs ANSWER A)" ]; then ok "CH query at $AMT_NAME handed on, not answered by amtrelay ($(q_status))"
	else bad "CH query at $AMT_NAME: got $(q_status) flags [$(q_flags)] answer [$(q_section ANSWER | tr '\n' '|')]"; fi
	# bufsize 1232 caps UDP answers, whatever the query's EDNS buffer.
	dq n8 "@$srv" +bufsize=65000 "$AMT_NAME" AMTRELAY
	got=$(sed -n 's/.*; udp: \([0-9]*\).*/\1/p' <<<"$Q" | head -n1)
	if [ "$got" = 1232 ]; then ok "EDNS buffer 65000 asked, 1232 advertised back (bufsize)"
	else bad "EDNS buffer in the answer: want 1232, got [$got]"; fi
	# IPv6 source.
	kq n8 "@$srv" "amt.$REV_S_V6" A
	expect_answer "kdig A for the IPv6 source $S_V6 (ip6.arpa name)" NOERROR A "${N2_RELAYS_V4[0]}"
	# Mixed case: question and owners echoed exactly as asked.
	local mixed="AmT.12.100.51.198.In-AddR.ArPa."
	dq n8 "@$srv" "$mixed" A
	local qname owners
	qname=$(q_section QUESTION | awk '{ sub(/^;/, "", $1); print $1 }')
	owners=$(q_rrs ANSWER A | awk '{ print $1 }' | sort -u)
	if [ "$qname" = "$mixed" ] && [ "$owners" = "$mixed" ] && [ "$(q_status)" = NOERROR ]; then ok "mixed-case $mixed echoed in question and answer owners"
	else bad "mixed case: asked $mixed, question [$qname], answer owners [$owners], status $(q_status)"; fi
	# Falls through to the next plugin (whoami): a PTR at <rev(S)>. Asked of net1, because net2
	# forwards in-addr.arpa names it does not answer to net1 (see step "table").
	dq n8 "@$N1_DNS" -b "$CLIENT" "$REV_S" PTR
	got=$(q_section ADDITIONAL | awk '$4 == "A" { print $4 " " $5 }')
	if [ "$(q_status)" = NOERROR ] && [ "$got" = "A $CLIENT" ]; then ok "PTR at $REV_S falls through to whoami (our address $CLIENT in additional)"
	else bad "fallthrough: PTR $REV_S: want whoami's 'A $CLIENT' in additional, got $(q_status) [$got]"; fi
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 2. unbound
step_unbound() {
	wait_baseline || return 1
	# RFC 8777: <rev(S)> AMTRELAY -> type 3 -> A/AAAA of amt.<rev(S)>.
	# Every answer validated (AD): the zones are signed from the root down, see step_dnssec.
	dq n8 "@$RESOLVER" +adflag +unknownformat "$REV_S" TYPE260
	local got
	got=$( { q_rdata ANSWER AMTRELAY; q_rdata ANSWER TYPE260; } | generic_hex)
	if [ "$(q_status)" = NOERROR ] && q_has_flag ad && [ "$got" = "$((${#REV_AMTRELAY_HEX} / 2)) $REV_AMTRELAY_HEX" ]; then
		ok "Unbound: $REV_S AMTRELAY = 10 0 3 $AMT_NAME (net1's zone, exact bytes, validated)"
	else
		bad "Unbound: $REV_S AMTRELAY: want $REV_AMTRELAY_HEX with AD, got $(q_status) [$got] flags [$(q_flags)]"
	fi
	dq n8 "@$RESOLVER" "$REV_S" AMTRELAY
	local target
	target=$(q_rdata ANSWER AMTRELAY | awk '$3 == 3 { print $4 }')
	[ "$target" = "$AMT_NAME" ] || bad "dig presentation of the type-3 record: relay [$target], want $AMT_NAME"
	got=$(short_set n8 "$RESOLVER" "${target:-$AMT_NAME}" A validated)
	if [ "$got" = "$N2_SET" ]; then ok "Unbound: type-3 target $target A -> net2's relays ($got), validated"
	else bad "Unbound: $target A: want net2's $N2_SET, got $got"; fi
	got=$(short_set n8 "$RESOLVER" "$AMT_NAME" AAAA validated)
	if [ "$got" = "$N2_RELAY_V6" ]; then ok "Unbound: $AMT_NAME AAAA -> $got, validated"
	else bad "Unbound: $AMT_NAME AAAA: want $N2_RELAY_V6, got $got"; fi
	# The anycast-style AMTRELAY lookup, bytes untouched by the resolver (D-bit).
	dq n8 "@$RESOLVER" +adflag +unknownformat "$AMT_NAME" TYPE260
	got=$( { q_rdata ANSWER AMTRELAY; q_rdata ANSWER TYPE260; } | generic_hex)
	if [ "$got" = "$(n2_expected_generic)" ] && q_has_flag ad; then ok "Unbound: $AMT_NAME AMTRELAY -> net2's 4 records, exact bytes incl. D-bit, validated"
	else bad "Unbound: $AMT_NAME AMTRELAY: want [$(n2_expected_generic | tr '\n' '|')] with AD, got $(q_status) [$(tr '\n' '|' <<<"$got")] flags [$(q_flags)]"; fi
	# Evidence that the resolver really minimised and randomised case.
	if grep -qiE '"[A-Z0-9]+ IN 198\.in-addr\.arpa\. ' "$WORK/log/dns-ix.log"; then
		ok "qname minimisation seen: the in-addr.arpa server was asked for 198.in-addr.arpa."
	else
		bad "no minimised query (198.in-addr.arpa.) in the in-addr.arpa server's log"
	fi
	# (0x20: CoreDNS's log plugin prints names lower-cased, so the randomised
	# case is not visible there; the direct step checks the echo byte for byte,
	# and Unbound with use-caps-for-id rejects answers that do not echo it.)
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 3. failover
relay_up_value() { metric_value "$1" coredns_amtrelay_relay_up "relay=\"$2\""; }
# per_relay_all NODE METRIC VALUE RELAY...: METRIC{relay=RELAY,...} is VALUE for every RELAY, in
# one read of the metrics.
per_relay_all() {
	local node=$1 metric=$2 want=$3 m r
	shift 3
	m=$(metrics "$node")
	for r in "$@"; do
		[ "$(awk -v m="$metric{" -v r="relay=\"$r\"" 'index($0, m) == 1 && index($0, r) { print $NF; exit }' <<<"$m")" = "$want" ] || return 1
	done
}
# relay_up_all NODE VALUE RELAY...: coredns_amtrelay_relay_up is VALUE for every RELAY.
relay_up_all() { per_relay_all "$1" coredns_amtrelay_relay_up "${@:2}"; }

step_failover() {
	wait_baseline || return 1
	# fails x interval (+ one probe timeout) is the plugin's own bound; the extra second covers the
	# timer lag of shared VMs (CI runners see 10-20% CPU steal, and a sleeping process there can
	# wake several hundred milliseconds late).
	local limit_down=$((HC_FAILS * HC_INTERVAL * 1000 + HC_TIMEOUT_MS + 1000))
	local limit=$(((HC_FAILS * HC_INTERVAL + ANSWER_TTL + 3) * 1000))
	local t0 t t_down t_withdrawn t_route t_user="" i answers="" a last=""
	local r relays_n2=(r2a r2b r2v6 r2name)
	t0=$(now_ms)
	stop_relays n2
	# The user's lookups, until they return net1's relays. The other signals
	# are read from the stamped logs afterwards.
	for ((i = 0; i < 200; i++)); do
		a=$(user_a)
		t=$(($(now_ms) - t0))
		[ "$a" != "$last" ] && answers+=" $(fmt_ms "$t"):[$a]" && last=$a
		if [ "$a" = "$N1_SET" ]; then
			t_user=$t
			break
		fi
		[ "$t" -lt 20000 ] || break
		nap 0.05
	done
	# The plugin is down when its last relay is.
	local per_relay=""
	t_down=0
	for r in "${relays_n2[@]}"; do
		t=$(log_ms dns-n2 "$t0" "plugin/amtrelay: relay $r [^ ]+ down:")
		per_relay+=" $r ${t:+$(fmt_ms "$t")}"
		if [ -z "$t" ]; then t_down=""; elif [ -n "$t_down" ] && [ "$t" -gt "$t_down" ]; then t_down=$t; fi
	done
	t_withdrawn=$(log_ms route-control "$t0" "withdrew $ANYCAST/32")
	t_route=$(log_ms routes-ix "$t0" "^$ANYCAST via 100\\.64\\.101\\.2 ")
	note "relays down at:$per_relay"
	note "relay responders stopped at t=0; user answers (time of reply):$answers"
	note "plugin down ${t_down:+at $(fmt_ms "$t_down")}, route-control withdrew ${t_withdrawn:+at $(fmt_ms "$t_withdrawn")}, ix routes anycast to net1 ${t_route:+at $(fmt_ms "$t_route")}"
	if [ -n "$t_user" ]; then
		say "    failover time (relay stop -> first net1 answer at the user): $(fmt_ms "$t_user") (limit fails*interval+ttl+3s = $(fmt_ms "$limit"))"
	fi
	# The end state, read with retries: one metrics or /ready read can time out on a loaded VM.
	if ! wait_for "relay_up 0 for every net2 relay" 5 0.2 relay_up_all n2 0 "${relays_n2[@]}"; then bad "$WAIT_ERR"
	elif [ -n "$t_down" ] && [ "$t_down" -le "$limit_down" ]; then ok "plugin marked all of net2's relays down in $(fmt_ms "$t_down") (<= fails*interval+timeout)"
	else bad "plugin did not mark all of net2's relays down within $(fmt_ms "$limit_down")"; fi
	wait_for "net2 /ready 503" 5 0.2 eval '[ "$(ready_code n2)" = 503 ]' && ok "net2 /ready is 503" ||
		bad "$WAIT_ERR (code $(ready_code n2))"
	local rc_said="did not withdraw"
	[ -z "$t_withdrawn" ] || rc_said="withdrew at $(fmt_ms "$t_withdrawn")"
	[ -n "$t_withdrawn" ] && [ "$(anycast_via)" = n1 ] && ok "route-control withdrew net2's anycast; ix routes $ANYCAST to net1" ||
		bad "anycast routed to $(anycast_via) (route-control $rc_said)"
	if [ -z "$t_user" ]; then bad "the user never got net1's relays (last answer $last)"
	elif [ "$t_user" -gt "$limit" ]; then bad "failover took $(fmt_ms "$t_user") > $(fmt_ms "$limit")"
	else ok "the user's lookups return net1's relays ($N1_SET)"; fi
	# Signed answers from the other network validate against the DNSKEY RRset cached from this one.
	[[ $answers != *"<SERVFAIL"* && $answers != *"<not-validated"* ]] &&
		ok "every answer on the way validated (AD), none SERVFAIL" || bad "an answer on the way did not validate:$answers"
	FAILOVER_MS=${t_user:-}
	# The AMTRELAY lookup at amt.<rev(S)> through Unbound lands on net1 too.
	wait_user_amtrelay_n1 "Unbound AMTRELAY at $AMT_NAME from net1" $((ANSWER_TTL + 3)) &&
		ok "Unbound: AMTRELAY at $AMT_NAME now net1's (10 0 1 ${N1_RELAYS[0]}, ${N1_RELAYS[1]})" ||
		bad "$WAIT_ERR (got [$(user_amtrelay)])"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 4. recovery
step_recovery() {
	# Start from the failed-over state (also when run with --only recovery).
	if relays_running n2 || [ "$(user_a)" != "$N1_SET" ]; then
		start_relays n1
		stop_relays n2
		wait_for "failed-over state (user sees net1)" 20 0.2 eval '[ "$(user_a)" = "$N1_SET" ]' || { bad "$WAIT_ERR"; return 1; }
	fi
	# No limit is given for recovery; allow the same budget as failover plus
	# route-control's own rises (RC_RISES polls) and 2 s of slack.
	local limit=$(((HC_RISES * HC_INTERVAL + ANSWER_TTL + 3 + 2) * 1000 + $(awk -v r="$RC_RISES" -v i="$RC_INTERVAL" 'BEGIN { printf "%d", r * i * 1000 }')))
	local t0 t t_up t_announced t_route t_user="" i answers="" a last=""
	t0=$(now_ms)
	start_relays n2
	for ((i = 0; i < 200; i++)); do
		a=$(user_a)
		t=$(($(now_ms) - t0))
		[ "$a" != "$last" ] && answers+=" $(fmt_ms "$t"):[$a]" && last=$a
		if [ "$a" = "$N2_SET" ]; then
			t_user=$t
			break
		fi
		[ "$t" -lt 20000 ] || break
		nap 0.05
	done
	t_up=$(log_ms dns-n2 "$t0" "plugin/amtrelay: relay r2a [^ ]+ up:")
	t_announced=$(log_ms route-control "$t0" "announced $ANYCAST/32")
	t_route=$(log_ms routes-ix "$t0" "^$ANYCAST via 100\\.64\\.102\\.2 ")
	note "relay responders restarted at t=0; user answers (time of reply):$answers"
	note "plugin up ${t_up:+at $(fmt_ms "$t_up")}, route-control announced ${t_announced:+at $(fmt_ms "$t_announced")}, ix routes anycast to net2 ${t_route:+at $(fmt_ms "$t_route")}"
	[ -n "$t_user" ] && say "    recovery time (relay start -> first net2 answer at the user): $(fmt_ms "$t_user") (limit $(fmt_ms "$limit"))"
	# rises=2 needs two successful probes, one interval apart.
	local min_up=$(((HC_RISES - 1) * HC_INTERVAL * 1000 - 300))
	if [ -z "$t_up" ]; then bad "plugin never marked r2a up again"
	elif [ "$t_up" -lt "$min_up" ]; then bad "r2a up after $(fmt_ms "$t_up"): sooner than rises=$HC_RISES probes allow"
	else ok "plugin marked net2's relays up after $(fmt_ms "$t_up") (rises $HC_RISES x ${HC_INTERVAL}s)"; fi
	wait_for "net2 /ready 200" 5 0.2 is_ready n2 && ok "net2 /ready back to 200" || bad "$WAIT_ERR (code $(ready_code n2))"
	local rc_said="did not announce"
	[ -z "$t_announced" ] || rc_said="announced at $(fmt_ms "$t_announced")"
	[ -n "$t_announced" ] && [ "$(anycast_via)" = n2 ] && ok "route-control re-announced net2's anycast" ||
		bad "anycast routed to $(anycast_via), not net2 (route-control $rc_said)"
	if [ -z "$t_user" ]; then bad "the user never got net2's relays back (last $last)"
	elif [ "$t_user" -gt "$limit" ]; then bad "recovery took $(fmt_ms "$t_user") > $(fmt_ms "$limit")"
	else ok "the user's lookups return net2's relays again ($N2_SET)"; fi
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 5. reload
# query_loop NAME NODE SERVER [TRIES]: ask SERVER for $AMT_NAME A in batches of
# five (one dig process per batch: dig's start-up costs more than the query)
# until $WORK/run/loop-stop appears, for at most 30 s, each query sent up to
# TRIES times (default 1) 2 s apart. Writes "ok N" / "fail N" lines per batch
# to $WORK/run/loop-NAME: N queries that got (or did not get) a NOERROR answer
# with A records.
query_loop() {
	local name=$1 node=$2 server=$3 tries=${4:-1} i end batch=$WORK/run/batch-$1
	printf '%s A\n' "$AMT_NAME" "$AMT_NAME" "$AMT_NAME" "$AMT_NAME" "$AMT_NAME" >"$batch"
	end=$(($(now_ms) + 30000))
	for ((i = 0; i < 300; i++)); do
		[ ! -e "$WORK/run/loop-stop" ] && [ "$(now_ms)" -lt "$end" ] || break
		nsx "$node" dig +tries="$tries" +timeout=2 "@$server" -f "$batch" 2>&1 | awk -v n=5 -v t="$(now_ms)" '
			/->>HEADER<<-/ { st = $6; sub(",", "", st); replies++ }
			/^;; flags:/ { empty = 1; for (i = 1; i <= NF; i++) if ($i == "ANSWER:" && $(i + 1) + 0 > 0) empty = 0
				if (st == "NOERROR" && !empty) good++; else why = why " " st (empty ? "/empty" : "") }
			END { print "ok " good + 0 " " t
				if (n - good > 0) print "fail " n - good " at " t ":" why (n > replies ? " " n - replies "x no-reply" : "") }'
		nap 0.05
	done >"$WORK/run/loop-$name"
}
# loops_past T: both query loops have a batch that started after T (ms).
loops_past() {
	local f
	for f in direct resolver; do
		awk -v t="$1" '$1 == "ok" && $3 > t { f = 1 } END { exit !f }' "$WORK/run/loop-$f" || return 1
	done
}
loop_count() { awk -v k="$1" '$1 == k { s += $2 } END { print s + 0 }' "$WORK/run/loop-$2"; }

step_reload() {
	wait_baseline || return 1
	local new_name="amt.$(rev4 $S_NEW)"
	dq n8 "@$N2_DNS" "$new_name" A
	[ "$(q_status)" = NOERROR ] && [ -z "$(q_rrs ANSWER A)" ] || bad "before reload: $new_name A should be NODATA (a source in no table, signed), got $(q_status) [$(q_rrs ANSWER A)]"
	# Two bounded query loops (direct and through Unbound) run across the reload.
	rm -f "$WORK/run/loop-stop"
	query_loop direct n8 "$N2_DNS" &
	local p1=$!
	query_loop resolver n8 "$RESOLVER" &
	local p2=$!
	LOOP_PIDS=("$p1" "$p2")
	sleep 1
	local t0
	t0=$(now_ms)
	n2_corefile reloaded >"$WORK/conf/Corefile.n2.new" && mv "$WORK/conf/Corefile.n2.new" "$WORK/conf/Corefile.n2"
	local t_applied
	if wait_for "net2 to answer for the new source $S_NEW" 15 0.2 eval '[ "$(short_set n8 $N2_DNS $new_name A)" = "${N2_RELAYS_V4[1]}" ]'; then
		t_applied=$(now_ms)
		ok "reload applied after $(fmt_ms "$WAITED_MS"): new source $S_NEW -> ${N2_RELAYS_V4[1]}"
	else
		bad "$WAIT_ERR (got $(short_set n8 "$N2_DNS" "$new_name" A))"
	fi
	# Keep querying until both loops have finished a batch asked after the new config answered.
	wait_for "query loops to run past the reload" 15 0.2 loops_past "${t_applied:-0}" || note "$WAIT_ERR"
	touch "$WORK/run/loop-stop"
	wait "$p1" "$p2"
	LOOP_PIDS=()
	local f n nf before after
	for f in direct resolver; do
		n=$(loop_count ok "$f") nf=$(loop_count fail "$f")
		# The loop must have spanned the reload: answers asked before the new Corefile was written
		# and after the new config was seen answering.
		before=$(awk -v t="$t0" '$1 == "ok" && $2 > 0 && $3 < t' "$WORK/run/loop-$f" | wc -l)
		after=$(awk -v t="${t_applied:-0}" '$1 == "ok" && $2 > 0 && $3 > t' "$WORK/run/loop-$f" | wc -l)
		if [ "$nf" -eq 0 ] && [ "$before" -gt 0 ] && [ "$after" -gt 0 ] && [ -n "${t_applied:-}" ]; then
			ok "$f query loop: $n queries across the reload, 0 failed"
		else
			bad "$f query loop: $nf failed, $n answered ($before batches before the reload, $after after it):$(grep '^fail' "$WORK/run/loop-$f" | cut -d' ' -f3- | head -n3 | tr '\n' ';')"
		fi
	done
	# Precedence change visible: r2b moved 20 -> 5, so it leads the A answer.
	dq n8 "@$N2_DNS" "$AMT_NAME" AMTRELAY
	expect_answer "AMTRELAY after reload shows r2b at precedence 5" NOERROR AMTRELAY "$(n2_expected_presentation 5)"
	dq n8 "@$N2_DNS" +unknownformat "$AMT_NAME" TYPE260
	local got
	got=$( { q_rdata ANSWER AMTRELAY; q_rdata ANSWER TYPE260; } | generic_hex)
	[ "$got" = "$(n2_expected_generic 5)" ] && ok "wire bytes after reload (r2b: 0581CB007116)" || bad "bytes after reload: [$(tr '\n' '|' <<<"$got")]"
	dq n8 "@$N2_DNS" "$AMT_NAME" A
	local first
	first=$(q_rrs ANSWER A | awk 'NR == 1 { print $3 }')
	[ "$first" = "${N2_RELAYS_V4[1]}" ] && ok "A answer ordered by precedence: ${N2_RELAYS_V4[1]} (5) first" || bad "A order after reload: first is [$first], want ${N2_RELAYS_V4[1]}"
	wait_for "Unbound to show the new precedence" $((ANSWER_TTL + 5)) 0.3 eval 'dq n8 @$RESOLVER +adflag $AMT_NAME AMTRELAY; q_has_flag ad && [ "$(q_rdata ANSWER AMTRELAY)" = "$(n2_expected_presentation 5)" ]' &&
		ok "through Unbound: new precedence visible after $(fmt_ms "$WAITED_MS"), validated" || bad "$WAIT_ERR"
	[ "$(ready_code n2)" = 200 ] || bad "net2 not ready after reload ($(ready_code n2))"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 6. table
# net2 loses its path to S: its sources file drops S's prefix. The anycast
# address still leads the user to net2, which hands S's names on (fallthrough,
# then forward to net1's unicast AMT DNS) without a Corefile change.
step_table() {
	wait_baseline || return 1
	local before_ok before_n
	before_ok=$(metric_sum n2 coredns_amtrelay_table_reloads_total 'result="success"')
	n2_sources without_s >"$WORK/conf/n2.sources.new" && mv "$WORK/conf/n2.sources.new" "$WORK/conf/n2.sources"
	wait_for "net2 to forward S's name to net1" 10 0.2 eval '[ "$(short_set n8 $N2_DNS $AMT_NAME A)" = "$N1_SET" ]' &&
		ok "net2 without S in its table: amt.<rev(S)> A forwarded to net1 -> $N1_SET (after $(fmt_ms "$WAITED_MS"))" ||
		bad "$WAIT_ERR (got $(short_set n8 "$N2_DNS" "$AMT_NAME" A))"
	local after_ok
	after_ok=$(metric_sum n2 coredns_amtrelay_table_reloads_total 'result="success"')
	awk -v a="$after_ok" -v b="$before_ok" 'BEGIN { exit !(a > b) }' && ok "net2 counted the table reload (table_reloads_total{result=\"success\"} $before_ok -> $after_ok)" ||
		bad "net2 table_reloads_total{result=\"success\"} did not grow ($before_ok -> $after_ok)"
	[ "$(anycast_via)" = n2 ] && ok "the anycast address still leads to net2" || bad "anycast routed to $(anycast_via), want n2"
	wait_for "the user getting net1's relays through net2" $((ANSWER_TTL + 5)) 0.2 eval '[ "$(user_a)" = "$N1_SET" ]' &&
		ok "user, through Unbound and net2: net1's relays ($N1_SET)" || bad "$WAIT_ERR (got $(user_a))"
	wait_user_amtrelay_n1 "net1's AMTRELAY through Unbound and net2's forward" $((ANSWER_TTL + 5)) &&
		ok "user, AMTRELAY through Unbound and net2's forward: net1's records (after $(fmt_ms "$WAITED_MS"))" ||
		bad "$WAIT_ERR (got [$(user_amtrelay)])"
	# S's prefix back: net2 answers for S again.
	n2_sources with_s >"$WORK/conf/n2.sources.new" && mv "$WORK/conf/n2.sources.new" "$WORK/conf/n2.sources"
	wait_for "net2 answering for S again" 10 0.2 eval '[ "$(short_set n8 $N2_DNS $AMT_NAME A)" = "$N2_SET" ]' &&
		ok "S's prefix restored: net2 answers with its own relays again" || bad "$WAIT_ERR"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 7. all relays down
step_all_down() {
	wait_baseline || return 1
	local before after
	before=$(metric_sum n1 coredns_amtrelay_requests_total 'result="all_down"')
	stop_relays n1
	stop_relays n2
	wait_for "net1 and net2 to mark every relay down" 15 0.2 eval '[ "$(relay_up_value n1 r1a)" = 0 ] && [ "$(relay_up_value n1 r1b)" = 0 ] && [ "$(relay_up_value n2 r2a)" = 0 ]' || { bad "$WAIT_ERR"; return 1; }
	ok "every relay down in net1 and net2 after $(fmt_ms "$WAITED_MS")"
	wait_for "net1 /ready 503" 5 0.2 eval '[ "$(ready_code n1)" = 503 ]' && ok "net1 /ready 503 (no route-control in net1: it stays announced as the last resort)" || bad "$WAIT_ERR"
	wait_for "net2 withdrawn" 10 0.2 eval '[ "$(anycast_via)" = n1 ]' && ok "net2 withdrew its anycast" || bad "$WAIT_ERR"
	# net1: all_down serve (fail open) -> the user still gets net1's relays.
	wait_for "the user getting net1's relays (all_down serve)" $((ANSWER_TTL + 5)) 0.2 eval '[ "$(user_a)" = "$N1_SET" ]' &&
		ok "user, through Unbound: all_down serve -> net1's configured relays ($N1_SET)" || bad "$WAIT_ERR (got $(user_a))"
	wait_user_amtrelay_n1 "net1's AMTRELAY through Unbound under all_down serve" $((ANSWER_TTL + 5)) &&
		ok "user, AMTRELAY through Unbound under all_down serve" ||
		bad "$WAIT_ERR (got [$(user_amtrelay)])"
	after=$(metric_sum n1 coredns_amtrelay_requests_total 'result="all_down"')
	awk -v a="$after" -v b="$before" 'BEGIN { exit !(a > b) }' && ok "net1 counted all_down answers (requests_total{result=\"all_down\"} $before -> $after)" ||
		bad "net1 requests_total{result=\"all_down\"} did not grow ($before -> $after)"
	# net2: all_down nodata -> the user asking net2 directly gets NODATA + SOA.
	dq n8 "@$N2_DNS" "$AMT_NAME" A
	expect_negative "user asking net2 directly: all_down nodata -> NODATA+SOA" NOERROR "$AMT_NAME"
	dq n8 "@$N2_DNS" "$AMT_NAME" AMTRELAY
	expect_negative "net2 AMTRELAY under all_down nodata -> NODATA+SOA" NOERROR "$AMT_NAME"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- helpers of the data-plane steps
# n2_serial: the SOA serial net2 answers at the apex; it changes with every configuration load.
n2_serial() { dq n8 "@$N2_DNS" "$AMT_NAME" SOA && q_rrs ANSWER SOA | awk '{ print $5; exit }'; }

# n2_apply_corefile VARIANT: write net2's Corefile and wait until net2 serves it (the reload plugin
# checks every 2 s).
n2_apply_corefile() {
	local before
	grep -q "^# net2 ($1):" "$WORK/conf/Corefile.n2" && return 0
	before=$(n2_serial)
	n2_corefile "$1" >"$WORK/conf/Corefile.n2.new" && mv "$WORK/conf/Corefile.n2.new" "$WORK/conf/Corefile.n2"
	wait_for "net2 to load its $1 Corefile" 15 0.2 eval '[ -n "$(n2_serial)" ] && [ "$(n2_serial)" != "$before" ]'
}

# set_relay_mode NAME MODE: restart the responder of relay NAME in MODE.
set_relay_mode() {
	local node listen
	read -r node listen <<<"$(relay_listen "$1")"
	stop_proc "relay-$1"
	start_relay "$node" "$1" "$listen" "$2"
}

# canary_up_all NODE VALUE RELAY...: coredns_amtrelay_canary_up is VALUE for every RELAY.
canary_up_all() { per_relay_all "$1" coredns_amtrelay_canary_up "${@:2}"; }

# ---------------------------------------------------------------- 9. handshake
# A relay that answers Relay Discovery but no Request, then one whose Queries
# carry the L flag: the default `handshake request` check leaves each out,
# and the log names the step that failed.
step_handshake() {
	wait_baseline || return 1
	# handshake_down_logged: net2's log has r2b down at the request step since t0 (step_handshake's).
	handshake_down_logged() { [ -n "$(log_ms dns-n2 "$t0" "plugin/amtrelay: relay r2b $addr down: $result at request")" ]; }
	local limit=$((HC_FAILS * HC_INTERVAL * 1000 + HC_TIMEOUT_MS + 1000))
	local spec mode result t0 t addr=${N2_RELAYS_V4[1]}
	for spec in request_silent:no_query limit:limit; do
		mode=${spec%%:*} result=${spec#*:}
		t0=$(now_ms)
		set_relay_mode r2b "$mode"
		if wait_for "net2 to leave r2b out" 10 0.1 eval '[ "$(short_set n8 $N2_DNS $AMT_NAME A)" = "${N2_RELAYS_V4[0]}" ]'; then
			# r2b's canary can take it out first (a relay that answers no Request stops carrying
			# the canary's tunnel too): the handshake's own verdict may follow a little later.
			wait_for "net2's log to say r2b down: $result at request" $((limit / 1000 + 2)) 0.1 handshake_down_logged
			t=$(log_ms dns-n2 "$t0" "plugin/amtrelay: relay r2b $addr down: $result at request")
			if [ -z "$t" ]; then
				bad "r2b in mode $mode left the answers, but no 'down: $result at request' in net2's log"
			elif [ "$t" -le "$limit" ]; then
				ok "r2b answering Discovery, mode $mode: down ($result at request) after $(fmt_ms "$t") (limit fails*interval+timeout+1s = $(fmt_ms "$limit"))"
			else
				bad "r2b in mode $mode marked down after $(fmt_ms "$t") > $(fmt_ms "$limit")"
			fi
		else
			bad "$WAIT_ERR (got $(short_set n8 "$N2_DNS" "$AMT_NAME" A))"
		fi
		[ "$(ready_code n2)" = 200 ] || bad "net2 not ready with one relay refusing tunnels ($(ready_code n2))"
		set_relay_mode r2b normal
		wait_for "r2b back in net2's answers" 10 0.2 eval '[ "$(short_set n8 $N2_DNS $AMT_NAME A)" = "$N2_SET" ]' ||
			bad "$WAIT_ERR (got $(short_set n8 "$N2_DNS" "$AMT_NAME" A))"
	done
	local m
	m=$(metrics n2)
	for result in no_query limit; do
		grep -q "^coredns_amtrelay_probes_total{relay=\"r2b\",result=\"$result\"}" <<<"$m" &&
			ok "probes_total{relay=\"r2b\",result=\"$result\"} counted" || bad "no probes_total{result=\"$result\"} for r2b"
	done
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 10. canary
# net2's relays reach S's network through their data link; the beacon's canary
# channel shows it. Cut the link: net2 stops handing out its relays for sources
# under the canary (other sources keep them), and with all_down fallthrough it
# hands S's names to net1, so the user gets net1's relays while net2 stays
# announced. Restore the link: back.
step_canary() {
	wait_baseline || return 1
	local relays_n2=(r2a r2b r2v6 r2name)
	n2_apply_corefile fallthrough || { bad "$WAIT_ERR"; return 1; }
	ok "net2 serves all_down fallthrough"
	wait_for "every net2 relay's canary up" 10 0.2 canary_up_all n2 1 "${relays_n2[@]}" ||
		{ bad "$WAIT_ERR"; return 1; }
	ok "canary_up 1 for every net2 relay: the beacon's data comes through each"
	# A canary passes an interval in which its data came; the interval that straddles the cut
	# still has data, so detection takes between fails and fails+1 intervals.
	local limit=$(((HC_FAILS + 1) * HC_INTERVAL * 1000 + HC_TIMEOUT_MS + 1000))
	local t0 t t_left="" r per_relay="" t_last=0
	t0=$(now_ms)
	data_link n2 down
	if wait_for "net2 to hand S on to net1" 15 0.1 eval '[ "$(short_set n8 $N2_DNS $AMT_NAME A)" = "$N1_SET" ]'; then
		t_left=$(($(now_ms) - t0))
	fi
	for r in "${relays_n2[@]}"; do
		t=$(log_ms dns-n2 "$t0" "plugin/amtrelay: relay $r [^ ]+ canary 198\\.51\\.100\\.0/24 down:")
		per_relay+=" $r ${t:+$(fmt_ms "$t")}"
		[ -n "$t" ] && [ "$t" -gt "$t_last" ] && t_last=$t
	done
	note "data link cut at t=0; canaries down at:$per_relay"
	if [ -z "$t_left" ]; then
		bad "net2 still answers $(short_set n8 "$N2_DNS" "$AMT_NAME" A) for S"
	else
		say "    canary detection (link cut -> net2 hands S on): $(fmt_ms "$t_left") (limit (fails+1)*interval+timeout+1s = $(fmt_ms "$limit"))"
		[ "$t_left" -le "$limit" ] && ok "net2 stopped handing out its relays for S after $(fmt_ms "$t_left"); S's name goes to net1 ($N1_SET)" ||
			bad "net2 handed S on after $(fmt_ms "$t_left") > $(fmt_ms "$limit")"
	fi
	local got
	got=$(short_set n8 "$N2_DNS" "amt.$REV_S_V6" A)
	[ "$got" = "${N2_RELAYS_V4[0]}" ] && ok "a source under no canary ($S_V6) still gets net2's relay ($got)" ||
		bad "source $S_V6 at net2: want ${N2_RELAYS_V4[0]}, got [$got]"
	[ "$(ready_code n2)" = 200 ] && [ "$(anycast_via)" = n2 ] && ok "net2 stays ready and announced: losing S is no reason to withdraw every source" ||
		bad "net2 ready $(ready_code n2), anycast via $(anycast_via)"
	wait_for "the user seeing net1's relays through Unbound and net2" $((ANSWER_TTL + 5)) 0.2 eval '[ "$(user_a)" = "$N1_SET" ]' &&
		ok "user, through Unbound: net1's relays ($N1_SET) after $(fmt_ms "$WAITED_MS")" || bad "$WAIT_ERR (last: $(user_a))"
	wait_for "canary_up 0 for every net2 relay" 5 0.2 canary_up_all n2 0 "${relays_n2[@]}" && ok "canary_up 0 for every net2 relay" || bad "$WAIT_ERR"

	t0=$(now_ms)
	data_link n2 up
	if wait_for "net2's relays back for S" 15 0.1 eval '[ "$(short_set n8 $N2_DNS $AMT_NAME A)" = "$N2_SET" ]'; then
		ok "link restored: net2 answers its own relays for S again after $(fmt_ms "$WAITED_MS") (rises $HC_RISES x ${HC_INTERVAL}s)"
	else
		bad "$WAIT_ERR (got $(short_set n8 "$N2_DNS" "$AMT_NAME" A))"
	fi
	wait_for "the user seeing net2's relays" $((ANSWER_TTL + 5)) 0.2 eval '[ "$(user_a)" = "$N2_SET" ]' &&
		ok "user, through Unbound: net2's relays again" || bad "$WAIT_ERR (last: $(user_a))"
	n2_apply_corefile base || bad "$WAIT_ERR"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 12. restart
# net2's CoreDNS is restarted under query load, with shutdown_grace: on
# SIGTERM it turns unready at once and keeps answering while route-control
# withdraws the anycast route; only then does it stop. No user query fails.
step_restart() {
	wait_baseline || return 1
	rm -f "$WORK/run/loop-stop"
	# Sent to the anycast address while its route moves, a datagram can be lost in the network
	# (one of 65 in one CI run, at the withdrawal, with net2 still answering): the direct loop
	# retries once, as stub resolvers do. That the route moves before the server stops is checked
	# on its own below, from the logs.
	query_loop direct n8 "$ANYCAST" 2 &
	local p1=$!
	query_loop resolver n8 "$RESOLVER" &
	local p2=$!
	LOOP_PIDS=("$p1" "$p2")
	nap 1
	local t0 pid i t_exit="" t_withdrawn t_route t_notready t_back=""
	pid=${PIDS[dns-n2]}
	t0=$(now_ms)
	kill -TERM "$pid"
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		nap 0.05
	done
	kill -0 "$pid" 2>/dev/null || t_exit=$(($(now_ms) - t0))
	wait "$pid" 2>/dev/null
	unset "PIDS[dns-n2]"
	t_notready=$(log_ms dns-n2 "$t0" "Shutting down: not ready")
	t_withdrawn=$(log_ms route-control "$t0" "withdrew $ANYCAST/32")
	t_route=$(log_ms routes-ix "$t0" "^$ANYCAST via 100\\.64\\.101\\.2 ")
	start_proc dns-n2 n2 "$BIN/coredns" -conf "$WORK/conf/Corefile.n2"
	if wait_for "net2 announced again" 20 0.2 eval '[ "$(anycast_via)" = n2 ]'; then
		t_back=$(($(now_ms) - t0))
	fi
	wait_for "query loops to run past the restart" 15 0.2 loops_past "$(now_ms)" || note "$WAIT_ERR"
	touch "$WORK/run/loop-stop"
	wait "$p1" "$p2"
	LOOP_PIDS=()
	note "SIGTERM at t=0: not ready ${t_notready:+at $(fmt_ms "$t_notready")}, route-control withdrew ${t_withdrawn:+at $(fmt_ms "$t_withdrawn")}, ix routes the anycast to net1 ${t_route:+at $(fmt_ms "$t_route")}, server stopped ${t_exit:+at $(fmt_ms "$t_exit")}, announced again ${t_back:+at $(fmt_ms "$t_back")}"
	if [ -n "$t_route" ] && [ -n "$t_exit" ] && [ "$t_route" -lt "$t_exit" ]; then
		say "    route withdrawn $(fmt_ms "$t_route") after SIGTERM, server stopped answering $(fmt_ms "$t_exit") after (shutdown_grace ${SHUTDOWN_GRACE}s)"
		ok "the route was withdrawn before the server stopped answering"
	else
		bad "route withdrawn at ${t_route:-never}, server stopped at ${t_exit:-never} (ms after SIGTERM)"
	fi
	local f n nf
	for f in direct resolver; do
		n=$(loop_count ok "$f") nf=$(loop_count fail "$f")
		[ "$nf" -eq 0 ] && [ "$n" -gt 0 ] && ok "$f query loop ($([ $f = direct ] && echo "to the anycast address" || echo "through Unbound")): $n queries across the restart, 0 failed" ||
			bad "$f query loop: $nf failed of $((n + nf)):$(grep '^fail' "$WORK/run/loop-$f" | cut -d' ' -f3- | head -n3 | tr '\n' ';')"
	done
	wait_for "net2 ready" 20 0.2 is_ready n2 || bad "$WAIT_ERR"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 11. gateway
# The whole path of the design, DNS to data: a gateway in the user's network
# asks Unbound as RFC 8777 and the anycast design do (amtdiscover), races the
# relays it is given through the whole AMT handshake, joins S's stream on the
# winner, a net2 relay, and receives S's multicast through the tunnel.
step_gateway() {
	wait_baseline || return 1
	local out rc t0 t winner first limit=10000
	t0=$(now_ms)
	out=$(nsx n8 "$BIN/amtdiscover" -resolver "$RESOLVER" -group "$USER_GROUP" -timeout 5s "$S" 2>&1)
	rc=$?
	t=$(($(now_ms) - t0))
	winner=$(sed -n 's/^winner: \([^,]*\),.*/\1/p' <<<"$out")
	first=$(sed -n 's/.*first data \([0-9.]* [mµ]*s\) after the tunnel started.*/\1/p' <<<"$out")
	note "amtdiscover: $(grep -E '^(winner:|group |result:)' <<<"$out" | tr '\n' ' ')"
	if [ "$rc" -ne 0 ]; then
		bad "amtdiscover exited $rc:$(tail -n 5 <<<"$out" | tr '\n' ' ')"
	elif [[ " ${N2_RELAYS_V4[*]} " != *" ${winner%:*} "* ]]; then
		bad "the gateway's relay is $winner, not one of net2's (${N2_RELAYS_V4[*]})"
	else
		say "    DNS to data at the user's gateway: $(fmt_ms "$t") (limit $(fmt_ms "$limit")), first packet $first after the tunnel came up"
		[ "$t" -le "$limit" ] && ok "the user's gateway got net2's relay $winner through Unbound, joined ($S, $USER_GROUP) and received S's stream" ||
			bad "DNS to data took $(fmt_ms "$t") > $(fmt_ms "$limit")"
	fi
	# RFC 8777 alone (AMTRELAY at rev(S), the type 3 name through Unbound) reaches the same relays.
	out=$(nsx n8 "$BIN/amtdiscover" -resolver "$RESOLVER" -mode driad -timeout 5s "$S" 2>&1)
	rc=$?
	winner=$(sed -n 's/^winner: \([^,]*\),.*/\1/p' <<<"$out")
	[ "$rc" -eq 0 ] && [[ " ${N2_RELAYS_V4[*]} " == *" ${winner%:*} "* ]] &&
		ok "RFC 8777 discovery (-mode driad): the type 3 relay name leads to net2's relay $winner" ||
		bad "amtdiscover -mode driad exited $rc, winner [$winner]:$(tail -n 3 <<<"$out" | tr '\n' ' ')"
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 13. dnssec
# delv_via_resolver NAME TYPE: BIND's validator, delv, looks NAME TYPE up
# through net8's Unbound with the root's DS as its only trust anchor: a second
# validator, independent of Unbound's, judging the same answers.
delv_via_resolver() { nsx n8 delv -a "$WORK/conf/delv-anchor.conf" "@$RESOLVER" "$1" "$2" 2>&1; }
# dnskey_count SERVER: how many keys SERVER's DNSKEY RRset at amt.<rev(S)> holds.
dnskey_count() { dq n8 "@$1" +norec "$AMT_NAME" DNSKEY && q_rdata ANSWER DNSKEY | wc -l; }
# user_answers_until DESC TIMEOUT WANT: poll user_a until it returns WANT;
# ANSWERS gets what the user saw, with the time each first appeared.
user_answers_until() {
	local t0 t a last="" i
	ANSWERS="" t0=$(now_ms)
	for ((i = 0; i < 400; i++)); do
		a=$(user_a)
		t=$(($(now_ms) - t0))
		[ "$a" != "$last" ] && ANSWERS+=" $(fmt_ms "$t"):[$a]" && last=$a
		[ "$a" = "$3" ] && return 0
		[ "$t" -lt $(($2 * 1000)) ] || break
		nap 0.1
	done
	WAIT_ERR="timed out after $(fmt_ms "$t") waiting for $1"
	return 1
}

# Each network signs amt.<rev(S)> with its own key, and S's operator publishes
# one DS per network. What delv and Unbound must agree on: every answer the
# design gives (positive, NODATA, NXDOMAIN, the RFC 8777 record in S's zone)
# validates from the root down. Then why dnssec_peer_keys exists: a resolver
# caches the DNSKEY RRset of whichever network anycast led it to (an hour),
# and when anycast moves, the next network's signatures must verify against
# that cached RRset. With each network's peer keys in its RRset they do;
# without them the user gets SERVFAIL until the cached RRset expires.
step_dnssec() {
	wait_baseline || return 1
	local c name type want out validated negative
	for c in "$AMT_NAME A positive" "$AMT_NAME AAAA positive" "$AMT_NAME AMTRELAY positive" \
		"$AMT_NAME DNSKEY positive" "$AMT_NAME TXT NODATA" "x.$AMT_NAME A NXDOMAIN" "$REV_S AMTRELAY positive"; do
		read -r name type want <<<"$c"
		out=$(delv_via_resolver "$name" "$type")
		case $want in
		positive) validated='; fully validated' negative="" ;;
		NODATA) validated='; negative response, fully validated' negative=';; resolution failed: ncache nxrrset' ;;
		NXDOMAIN) validated='; negative response, fully validated' negative=';; resolution failed: ncache nxdomain' ;;
		esac
		grep -q -x -F "$validated" <<<"$out" && { [ -z "$negative" ] || grep -q -x -F "$negative" <<<"$out"; } &&
			ok "delv via Unbound: $name $type: $want, fully validated" ||
			bad "delv via Unbound: $name $type: want $want, fully validated; got: $(grep -v '^$' <<<"$out" | head -n 4 | tr '\n' ' ')"
	done
	out=$(dnskey_count "$N2_DNS")
	[ "$out" = 2 ] && ok "net2's DNSKEY RRset at $AMT_NAME: its own key and net1's (dnssec_peer_keys)" ||
		bad "net2's DNSKEY RRset at $AMT_NAME holds $out keys, want 2"

	# With peer keys: Unbound holds net2's RRset when anycast moves to net1.
	unbound_ctl flush_zone "$AMT_NAME" >/dev/null
	[ "$(user_a)" = "$N2_SET" ] || bad "after the cache flush, the user does not get net2's relays validated"
	stop_relays n2
	if user_answers_until "net1's relays, validated" $((HC_FAILS * HC_INTERVAL + ANSWER_TTL + 10)) "$N1_SET" &&
		[[ $ANSWERS != *"<SERVFAIL"* && $ANSWERS != *"<not-validated"* ]]; then
		ok "with peer keys: net2's cached DNSKEY RRset validates net1's answers after anycast moves (user saw:$ANSWERS)"
	else
		bad "with peer keys: $WAIT_ERR (user saw:$ANSWERS)"
	fi

	# Without: net1's RRset holds only net1's key when Unbound caches it, and
	# anycast moves back to net2.
	: >"$WORK/conf/peers-n1.keys"
	wait_for "net1's DNSKEY RRset down to its own key" 5 0.2 eval '[ "$(dnskey_count $N1_DNS)" = 1 ]' || bad "$WAIT_ERR"
	unbound_ctl flush_zone "$AMT_NAME" >/dev/null
	[ "$(user_a)" = "$N1_SET" ] || bad "after the cache flush, the user does not get net1's relays validated"
	start_relays n2
	wait_for "ix routing the anycast address to net2" 20 0.2 eval '[ "$(anycast_via)" = n2 ]' || bad "$WAIT_ERR"
	# The user's A record from net1 expires within ANSWER_TTL; what comes next is net2's.
	user_answers_until "SERVFAIL" $((ANSWER_TTL + 5)) "<SERVFAIL/empty>"
	if [[ $ANSWERS == *"[<SERVFAIL/empty>]"* && $ANSWERS != *"[$N2_SET]"* ]]; then
		ok "without peer keys: net2's answers fail validation against net1's cached RRset: SERVFAIL (user saw:$ANSWERS)"
	else
		bad "without peer keys: want SERVFAIL once anycast is at net2, user saw:$ANSWERS"
	fi
	restore_peer_keys
	wait_for "net1's DNSKEY RRset with net2's key again" 5 0.2 eval '[ "$(dnskey_count $N1_DNS)" = 2 ]' || bad "$WAIT_ERR"
	unbound_ctl flush_zone "$AMT_NAME" >/dev/null
	unbound_ctl flush_bogus >/dev/null
	[ -z "$STEP_FAILED" ]
}

# ---------------------------------------------------------------- 14. bgp
# Connectivity learned over BGP, with BIRD: net1 originates S's prefix in its
# multicast RIB (mcast4), MBGP (ipv4 multicast channels) carries it through ix
# to net2, and net2's BIRD gives it over iBGP to the plugin's speaker. In the
# "bgp" Corefile variant net2's sources file does not list S: only BGP can put
# S in net2's table, and without it S's names are handed on to net1.

# bgp_session: coredns_amtrelay_bgp_session_up of net2's neighbor (empty if no such series).
bgp_session() { metric_value n2 coredns_amtrelay_bgp_session_up "neighbor=\"$N2_BGP_ROUTER\""; }
# bgp_prefixes FAMILY: coredns_amtrelay_bgp_prefixes of net2's neighbor in FAMILY (empty if none).
bgp_prefixes() { metric_value n2 coredns_amtrelay_bgp_prefixes "neighbor=\"$N2_BGP_ROUTER\"" "family=\"$1\""; }
# amtdns_proto: "STATE SINCE INFO" of net2's BIRD protocol towards CoreDNS, as birdc shows it.
amtdns_proto() { birdc_ n2 show protocols amtdns 2>/dev/null | awk '$1 == "amtdns" { print $4, $5, $6 }'; }
# explain_n2 NAME: the plugin's explanation for NAME (net2 has explain in the bgp variants, from 127.0.0.1).
explain_n2() { nsx n2 dig +tries=1 +timeout=2 +short @127.0.0.1 -c CH -t TXT -q "$1" 2>&1; }
# n2_s_local: net2's A answer for S, asked inside net2 (needs no route, so also while net2's BIRD is down).
n2_s_local() { short_set n2 "$N2_DNS" "$AMT_NAME" A; }

# bgp_restore: the state every other step expects, whatever state a failed bgp step left: net2's
# BIRD running with its sessions up, S in net1's multicast RIB, net2's Corefile without bgp.
bgp_restore() {
	if ! running bird-n2; then
		start_bird_on n2
		wait_for "BGP sessions at ix after restarting net2's BIRD" 20 0.2 bgp_established || { bad "$WAIT_ERR"; return 1; }
	fi
	if [ "${BGP_S_WITHDRAWN:-0}" = 1 ]; then
		birdc_ n1 enable mcast_s >/dev/null || { bad "birdc enable mcast_s in net1 failed"; return 1; }
		BGP_S_WITHDRAWN=0
	fi
	if grep -q '^# net2 (bgp' "$WORK/conf/Corefile.n2"; then
		n2_apply_corefile base || { bad "$WAIT_ERR"; return 1; }
	fi
	return 0
}

# bgp_watch WANT LIMIT_S: from T0 (ms), ask net2's unicast address (from net8) and the user's
# resolver in turn for S's A records until both answer WANT. T_DIRECT and T_USER get the times of
# the first such replies (ms after T0, empty if none within LIMIT_S), SEEN_D and SEEN_U what each
# answered on the way, with the time each answer first came. The resolver's cache of the name is
# flushed before each of its lookups: what is measured is when the answers that reach the user
# change; how long a resolver keeps an old one is the ttl's business (and Unbound's clock, which
# counts TTLs in whole seconds, can keep a 2 s record for up to 3 s).
bgp_watch() {
	local want=$1 limit=$(($2 * 1000)) i t a last_d="" last_u=""
	T_DIRECT="" T_USER="" SEEN_D="" SEEN_U=""
	for ((i = 0; i < 600; i++)); do
		if [ -z "$T_DIRECT" ]; then
			a=$(short_set n8 "$N2_DNS" "$AMT_NAME" A)
			t=$(($(now_ms) - T0))
			[ "$a" != "$last_d" ] && SEEN_D+=" $(fmt_ms "$t"):[$a]" && last_d=$a
			[ "$a" = "$want" ] && T_DIRECT=$t
		fi
		if [ -z "$T_USER" ]; then
			unbound_ctl flush "$AMT_NAME" >/dev/null
			a=$(user_a)
			t=$(($(now_ms) - T0))
			[ "$a" != "$last_u" ] && SEEN_U+=" $(fmt_ms "$t"):[$a]" && last_u=$a
			[ "$a" = "$want" ] && T_USER=$t
		fi
		[ -n "$T_DIRECT" ] && [ -n "$T_USER" ] && return 0
		[ "$t" -lt "$limit" ] || return 1
		nap 0.05
	done
	return 1
}

# bgp_judge WHAT: ok/bad for the times bgp_watch measured, against 1 s at net2 and at the user.
bgp_judge() {
	note "$1 at t=0; net2 answered (from net8):$SEEN_D"
	note "the user through Unbound (its cache of the name flushed before each lookup):$SEEN_U"
	if [ -z "$T_DIRECT" ]; then bad "$1: net2's answer for S did not change (last:${SEEN_D##* })"
	else
		say "    $1 -> net2's answer for S changes: $(fmt_ms "$T_DIRECT") (limit 1 s)"
		[ "$T_DIRECT" -le 1000 ] && ok "$1: net2's answer followed within 1 s" || bad "$1: net2's answer changed after $(fmt_ms "$T_DIRECT") > 1 s"
	fi
	if [ -z "$T_USER" ]; then bad "$1: the user's answer for S did not change (last:${SEEN_U##* })"
	else
		say "    $1 -> the user's answer through Unbound changes: $(fmt_ms "$T_USER") (limit 1 s, cache flushed)"
		[ "$T_USER" -le 1000 ] && ok "$1: the user's answer followed within 1 s, validated" || bad "$1: the user's answer changed after $(fmt_ms "$T_USER") > 1 s"
	fi
	[[ $SEEN_U != *"<SERVFAIL"* && $SEEN_U != *"<not-validated"* ]] || bad "$1: an answer on the way did not validate:$SEEN_U"
}

step_bgp() {
	bgp_scenario
	local rc=$?
	bgp_restore || rc=1
	[ "$rc" = 0 ] && ok "net2 back on its base Corefile (sources file with S, no bgp)"
	return $rc
}

bgp_scenario() {
	wait_baseline || return 1
	local out t t0 since since2 u
	# The multicast RIB along the chain, as BIRD sees it at net2.
	out=$(birdc_ n2 show route 198.51.100.0/24 table mcast4 all 2>/dev/null)
	[[ $out == *"BGP.as_path: 64500 64501"* ]] && ok "net2's BIRD: 198.51.100.0/24 in mcast4, from net1 over MBGP through ix (AS path 64500 64501)" ||
		bad "net2's BIRD has no 198.51.100.0/24 in mcast4 from AS 64501: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
	out=$(birdc_ n2 show route "$UCAST_PREFIX" table master4 2>/dev/null)
	[[ $out == *"$UCAST_PREFIX"* ]] && ok "net2's BIRD: $UCAST_PREFIX in the unicast table (net1's unicast-only prefix)" || bad "net2's BIRD has no $UCAST_PREFIX in master4"
	out=$(birdc_ n2 show route "$UCAST_PREFIX" table mcast4 2>/dev/null)
	[[ $out != *"$UCAST_PREFIX"* ]] && ok "... and not in mcast4" || bad "$UCAST_PREFIX is in net2's mcast4: $out"

	# The bgp variant: the new speaker, passive, is dialled by BIRD within a second.
	t0=$(now_ms)
	n2_apply_corefile bgp || { bad "$WAIT_ERR"; return 1; }
	wait_for "net2's speaker and BIRD established" 15 0.2 eval '[ "$(bgp_session)" = 1 ] && [[ "$(amtdns_proto)" == *Established* ]]' ||
		{ bad "$WAIT_ERR (session_up [$(bgp_session)], BIRD: $(amtdns_proto))"; return 1; }
	t=$(log_ms dns-n2 "$t0" "plugin/amtrelay: bgp: neighbor $N2_BGP_ROUTER AS ${ASN[n2]}: established")
	ok "net2 on the bgp variant: session with its BIRD established ${t:+$(fmt_ms "$t") after the Corefile was written}; bgp_session_up 1"
	wait_for "net2 ready and announced" 15 0.2 eval 'is_ready n2 && [ "$(anycast_via)" = n2 ]' || { bad "$WAIT_ERR"; return 1; }
	t=$(log_ms route-control "$t0" "withdrew $ANYCAST/32")
	[ -z "$t" ] || note "route-control withdrew net2's anycast $(fmt_ms "$t") after the Corefile was written (not ready until End-of-RIB), and announced it again"
	wait_for "the user seeing net2's relays, S from BGP" 15 0.2 eval '[ "$(user_a)" = "$N2_SET" ]' || { bad "$WAIT_ERR (last: $(user_a))"; return 1; }
	ok "the user gets net2's relays for S ($N2_SET), validated: S is in no file of net2's"
	out=$(explain_n2 "$AMT_NAME")
	grep -qF "\"table: 198.51.100.0/24 from BGP neighbor $N2_BGP_ROUTER, ipv4-multicast\"" <<<"$out" &&
		ok "explain: \"table: 198.51.100.0/24 from BGP neighbor $N2_BGP_ROUTER, ipv4-multicast\"" ||
		bad "explain for $AMT_NAME does not name the BGP route: $(tr '\n' ' ' <<<"$out")"

	# The unicast-only prefix: BIRD offers the unicast family, the plugin does not take it.
	t=$(bgp_prefixes ipv4-multicast) u=$(bgp_prefixes ipv4-unicast)
	if { [ -z "$u" ] || [ "$u" = 0 ]; } && [ -n "$t" ] && awk -v v="$t" 'BEGIN { exit !(v > 0) }'; then
		ok "bgp_prefixes{family=\"ipv4-multicast\"} $t, {family=\"ipv4-unicast\"} ${u:-absent}"
	else
		bad "bgp_prefixes: ipv4-multicast [$t], want > 0; ipv4-unicast [$u], want absent or 0"
	fi
	out=$(birdc_ n2 show protocols all amtdns 2>/dev/null | awk '/^  Channel ipv4$/ { f = 1; next } /^  Channel / { f = 0 } f && $1 == "State:" { print $2 }')
	[ "$out" = DOWN ] && ok "BIRD offered ipv4 unicast to the speaker; the channel is DOWN (not negotiated)" ||
		bad "BIRD's ipv4 unicast channel towards the speaker is [$out], want DOWN"
	local ucast_name
	ucast_name="amt.$(rev4 "$S_UCAST")"
	out=$(short_set n8 "$N2_DNS" "$ucast_name" A)
	[[ $out == "<"* && $out != *"${N2_RELAYS_V4[0]}"* ]] && ok "net2, $ucast_name A: $out (handed on to net1, which has no entry either)" ||
		bad "net2 answers $ucast_name A with [$out]; want no records"
	out=$(explain_n2 "$ucast_name")
	grep -qF "\"table: no entry holds $S_UCAST: handed to the next plugin\"" <<<"$out" &&
		ok "explain: \"table: no entry holds $S_UCAST: handed to the next plugin\"" ||
		bad "explain for $ucast_name: $(tr '\n' ' ' <<<"$out")"

	# net1 withdraws S's multicast route...
	T0=$(now_ms)
	birdc_ n1 disable mcast_s >/dev/null || { bad "birdc disable mcast_s"; return 1; }
	BGP_S_WITHDRAWN=1
	bgp_watch "$N1_SET" 10
	bgp_judge "net1 withdraws S's multicast route"
	wait_for "bgp_prefixes ipv4-multicast 0" 5 0.2 eval '[ "$(bgp_prefixes ipv4-multicast)" = 0 ]' &&
		ok "bgp_prefixes{family=\"ipv4-multicast\"} 0; S handed on to net1 ($N1_SET); net2 stays ready: $(ready_code n2)" || bad "$WAIT_ERR ([$(bgp_prefixes ipv4-multicast)])"

	# ... and announces it again.
	T0=$(now_ms)
	birdc_ n1 enable mcast_s >/dev/null || { bad "birdc enable mcast_s"; return 1; }
	BGP_S_WITHDRAWN=0
	bgp_watch "$N2_SET" 10
	bgp_judge "net1 announces S's multicast route again"

	# A reload that keeps the bgp lines keeps the session: BIRD's "since" stays, the plugin logs
	# no session change, and S's answer never falters.
	since=$(amtdns_proto)
	local before_serial after="" seen="" a t_applied="" i
	before_serial=$(n2_serial)
	t0=$(now_ms)
	n2_corefile bgp_reloaded >"$WORK/conf/Corefile.n2.new" && mv "$WORK/conf/Corefile.n2.new" "$WORK/conf/Corefile.n2"
	local n=0 off=0
	for ((i = 0; i < 300; i++)); do
		a=$(short_set n8 "$N2_DNS" "$AMT_NAME" A)
		t=$(($(now_ms) - t0))
		n=$((n + 1))
		[ "$a" = "$N2_SET" ] || { off=$((off + 1)); seen+=" $(fmt_ms "$t"):[$a]"; }
		if [ -z "$t_applied" ]; then
			after=$(n2_serial)
			[ -n "$after" ] && [ "$after" != "$before_serial" ] && t_applied=$(($(now_ms) - t0))
		fi
		[ -n "$t_applied" ] && [ "$t" -ge $((t_applied + 1000)) ] && break
		[ "$t" -lt 15000 ] || break
		nap 0.05
	done
	if [ -z "$t_applied" ]; then
		bad "net2 did not load the bgp_reloaded Corefile within 15 s (serial $before_serial)"
	else
		ok "net2 reloaded its Corefile (bgp lines unchanged, r2b precedence 20 -> 5) after $(fmt_ms "$t_applied")"
	fi
	dq n8 "@$N2_DNS" "$AMT_NAME" AMTRELAY
	expect_answer "after the reload, S's AMTRELAY from BGP shows r2b at precedence 5" NOERROR AMTRELAY "$(n2_expected_presentation 5)"
	[ "$off" = 0 ] && ok "$n queries for S across the reload, every one answered $N2_SET" ||
		bad "$off of $n queries for S across the reload were not net2's relays:$seen"
	since2=$(amtdns_proto)
	[ "$since2" = "$since" ] && [[ $since == *Established* ]] && ok "BIRD's session to CoreDNS unchanged by the reload: $since" ||
		bad "BIRD's session to CoreDNS: before the reload [$since], after [$since2]"
	out=$(awk -v t0="$t0" 'int($1 * 1000) >= t0 && /plugin\/amtrelay: bgp: neighbor .*(established|session down)/' "$WORK/log/dns-n2.log")
	[ -z "$out" ] && ok "the plugin logged no session change across the reload" || bad "session change logged across the reload: $(tr '\n' ' ' <<<"$out")"
	[ "$(bgp_session)" = 1 ] && ok "bgp_session_up 1 after the reload" || bad "bgp_session_up [$(bgp_session)] after the reload"

	# net2's BIRD dies: the session drops, its routes go. net2's BIRD also carries net2's
	# announcements, the anycast's included, so ask net2 from inside.
	local pid=${PIDS[bird-n2]} t_down t_answer="" t_up
	[ "$(n2_s_local)" = "$N2_SET" ] || bad "before BIRD's death: net2 answers $(n2_s_local) for S"
	t0=$(now_ms)
	kill -KILL "$pid"
	# Reaped at once, and quietly: bash would otherwise report the killed job.
	{ wait "$pid"; } 2>/dev/null
	unset "PIDS[bird-n2]"
	wait_for "net2's answer for S to change" 5 0.02 eval '[ "$(n2_s_local)" != "$N2_SET" ]' && t_answer=$(($(now_ms) - t0))
	t_down=$(log_ms dns-n2 "$t0" "plugin/amtrelay: bgp: neighbor $N2_BGP_ROUTER AS ${ASN[n2]}: session down")
	a=$(n2_s_local)
	note "SIGKILL to net2's BIRD at t=0: the plugin logged the session down ${t_down:+at $(fmt_ms "$t_down")}, net2's answer for S changed ${t_answer:+at $(fmt_ms "$t_answer")} to [$a]"
	if [ -z "$t_answer" ]; then bad "net2's answer for S still [$(n2_s_local)] 5 s after BIRD died"
	else
		say "    BIRD killed -> net2's answer for S changes: $(fmt_ms "$t_answer") (limit 1 s: routes go with the session, at once)"
		[ "$t_answer" -le 1000 ] && ok "BIRD's routes left net2's table with the session" || bad "net2's answer changed after $(fmt_ms "$t_answer") > 1 s"
	fi
	[ "$a" = "$N1_SET" ] && ok "S handed on to net1 again: $a" || bad "net2's answer for S with BIRD dead: [$a], want net1's $N1_SET"
	wait_for "bgp_session_up 0" 5 0.2 eval '[ "$(bgp_session)" = 0 ]' && ok "bgp_session_up 0, bgp_prefixes{family=\"ipv4-multicast\"} $(bgp_prefixes ipv4-multicast)" || bad "$WAIT_ERR ([$(bgp_session)])"
	[ "$(ready_code n2)" = 200 ] && ok "net2 stays ready: a session lost after the first End-of-RIB does not unready it" || bad "net2 /ready $(ready_code n2) with its BIRD dead"
	t0=$(now_ms)
	start_bird_on n2
	if wait_for "the session back and S in net2's table" 20 0.1 eval '[ "$(n2_s_local)" = "$N2_SET" ]'; then
		t_up=$(log_ms dns-n2 "$t0" "plugin/amtrelay: bgp: neighbor $N2_BGP_ROUTER AS ${ASN[n2]}: established")
		ok "BIRD restarted: session established ${t_up:+after $(fmt_ms "$t_up")}, S answered with net2's relays again after $(fmt_ms "$WAITED_MS")"
	else
		bad "$WAIT_ERR (got $(n2_s_local), BIRD: $(amtdns_proto))"
	fi
	wait_for "bgp_session_up 1" 5 0.2 eval '[ "$(bgp_session)" = 1 ]' && ok "bgp_session_up 1" || bad "$WAIT_ERR"
	wait_for "BGP sessions at ix" 20 0.2 bgp_established || bad "$WAIT_ERR"
	[ -z "$STEP_FAILED" ]
}
