# shellcheck shell=bash
# Topology for e2e/run.sh: namespaces, links, BIRD, the DNS chain, relays.
# Sourced, not run.
#
#                  ix (AS64500, transit; root "." and arpa. servers)
#               /        |         \
#   net1 (AS64501)   net2 (AS64502)   net8 (AS64508, unicast only)
#   source S         relays r2*       Unbound recursive resolver
#   relays r1*       AMT DNS          client (dig/kdig, amtdiscover)
#   AMT DNS          route-control
#   reverse zone
#        \              /
#   n1-mc \            / n2-mc      multicast data links (192.168.250.0/24)
#           src (bridge br0): S's host, sending S's stream and a beacon
#
# The relays' multicast connectivity to S is the src bridge: S's stream
# (S, 232.1.1.2) and a beacon (198.51.100.1, 232.1.1.1) reach every relay of
# net1 on n1-mc and of net2 on n2-mc; cutting n2-mc is net2 losing its path
# to S.
#
# The anycast AMT DNS address is announced by net1 (prepended twice, so it is
# the backup) and by net2 (only while its /ready is 200, by
# contrib/amt-route-control.sh adding/removing the /32 on lo). Addresses live
# only inside the suite's namespaces: 100.64.0.0/16 for links and servers,
# TEST-NET-2 (198.51.100.0/24) for the source, TEST-NET-3 (203.0.113.0/24) and
# 2001:db8::/32 for relays, TEST-NET-1 (192.0.2.0/24) for a prefix net1
# announces as unicast only.
#
# Every BIRD also has a multicast RIB, table mcast4, exchanged on `ipv4
# multicast` (SAFI 2) channels of the same eBGP sessions. net1 originates S's
# prefix there (protocol static mcast_s), and TEST-NET-1 in the unicast table
# only (ucast_only). net2's BIRD exports mcast4 over iBGP to the plugin's
# speaker in net2's CoreDNS (protocol amtdns), which step "bgp" turns on with
# a Corefile variant: the speaker listens on $N2_BGP_SPEAKER:$N2_BGP_PORT and
# BIRD dials it from $N2_BGP_ROUTER, both on net2's lo (the speaker picks no
# source address, and in one namespace a dial to a local address leaves from
# that very address, so BIRD dials, from an address of its own).

NODES=(ix n1 n2 n8)
declare -A ASN=([ix]=64500 [n1]=64501 [n2]=64502 [n8]=64508)
declare -A RID=([ix]=100.64.0.254 [n1]=100.64.1.1 [n2]=100.64.2.1 [n8]=100.64.8.1)

ANYCAST=100.64.53.53
ROOT_NS=100.64.0.1     # a.root-servers.e2e.  (ix)
ARPA_NS=100.64.0.2     # a.ns.arpa.            (ix): arpa., in-addr.arpa. within it
REV_NS=100.64.1.54     # ns1.100.51.198.in-addr.arpa. (net1): S's reverse zone
N1_DNS=100.64.1.53     # net1 AMT DNS unicast
N2_DNS=100.64.2.53     # net2 AMT DNS unicast
RESOLVER=100.64.8.53   # net8 Unbound
CLIENT=100.64.8.1      # net8 client source address (dig -b)

S=198.51.100.12                      # the multicast source
REV_S=$(rev4 "$S")                   # 12.100.51.198.in-addr.arpa.
AMT_NAME="amt.$REV_S"                # amt.12.100.51.198.in-addr.arpa.
AMT_NS_NAME="amt-dns.100.51.198.in-addr.arpa."
S_V6=2001:db8:100::12                # an IPv6 source known to net2 only
REV_S_V6="2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa."
S_NEW=203.0.113.100                  # source added to net2 by the reload scenario
S_UNKNOWN=203.0.113.1                # never in any table
S_UCAST=192.0.2.12                   # in a prefix net1 announces as unicast only (step "bgp")
UCAST_PREFIX=${S_UCAST%.*}.0/24      # 192.0.2.0/24
N2_BGP_ROUTER=100.64.2.179           # net2's BIRD: its end of the iBGP session to CoreDNS
N2_BGP_SPEAKER=100.64.2.180          # net2's CoreDNS BGP speaker: router ID and listen address
N2_BGP_PORT=1179                     # not 179, which BIRD listens on, on every address
BEACON=198.51.100.1                  # sends the canary channel
BEACON_GROUP=232.1.1.1
USER_GROUP=232.1.1.2                 # S's stream, joined by the user's gateway
MC_PORT=5001

# Relays. name:address:node
N1_RELAYS=(203.0.113.11 203.0.113.12)
N2_RELAYS_V4=(203.0.113.21 203.0.113.22)
N2_RELAY_V6=2001:db8:2::21
N2_RELAY_NAME=relay.net2.e2e.
N2_RELAY_NAME_PROBE=203.0.113.23

# Plugin timing used by the test Corefiles; the scenarios' limits derive from these. The probe
# timeout is long because a stopped responder is refused at once anyway, while on a loaded 2-CPU
# VM a running one can take over half a second to be scheduled and reply.
HC_INTERVAL=1 HC_TIMEOUT_MS=900 HC_FAILS=2 HC_RISES=2 ANSWER_TTL=2
# Route-control polling in net2.
RC_INTERVAL=0.25 RC_FAILS=2 RC_RISES=2
SHUTDOWN_GRACE=2

# ---------------------------------------------------------------- namespaces and links
link() { # link NODE_A NODE_B PREFIX(/30 base, e.g. 100.64.101)
	local a=$1 b=$2 p=$3
	ip link add "$a-$b" netns "$P-$a" type veth peer name "$b-$a" netns "$P-$b" || return 1
	nsx "$a" ip addr add "$p.1/30" dev "$a-$b" &&
		nsx "$b" ip addr add "$p.2/30" dev "$b-$a" &&
		nsx "$a" ip link set "$a-$b" up &&
		nsx "$b" ip link set "$b-$a" up
}

make_namespaces() {
	local n
	for n in "${NODES[@]}"; do
		ip netns add "$P-$n" || return 1
		CREATED_NS+=("$P-$n")
		# ip netns exec bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf:
		# keep every system-resolver lookup inside the namespace.
		mkdir -p "/etc/netns/$P-$n" && echo "nameserver 127.0.0.1" >"/etc/netns/$P-$n/resolv.conf"
		nsx "$n" ip link set lo up
		nsx "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
			net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.lo.rp_filter=0 \
			net.ipv6.conf.all.forwarding=1 || return 1
	done
	link ix n1 100.64.101 && link ix n2 100.64.102 && link ix n8 100.64.108 || return 1
	for n in "${NODES[@]}"; do
		local i
		for i in $(nsx "$n" ls /sys/class/net); do
			nsx "$n" sysctl -qw "net.ipv4.conf.$i.rp_filter=0"
		done
		nsx "$n" ip addr add "${RID[$n]}/32" dev lo
	done
	local a
	for a in $ROOT_NS $ARPA_NS; do nsx ix ip addr add "$a/32" dev lo; done
	for a in $N1_DNS $REV_NS $ANYCAST $S "${N1_RELAYS[@]}"; do nsx n1 ip addr add "$a/32" dev lo; done
	# net2's anycast address is added by the route-control script once /ready is 200.
	for a in $N2_DNS "${N2_RELAYS_V4[@]}" $N2_RELAY_NAME_PROBE $N2_BGP_ROUTER $N2_BGP_SPEAKER; do nsx n2 ip addr add "$a/32" dev lo; done
	nsx n2 ip -6 addr add "$N2_RELAY_V6/128" dev lo nodad
	nsx n8 ip addr add "$RESOLVER/32" dev lo
	make_multicast_links
}

# make_multicast_links: the src namespace, S's host, with a bridge that the
# data links of net1 and net2 hang off. No IGMP snooping: every datagram sent
# on the bridge reaches every relay of both networks, as multicast routing
# would once the relays joined.
make_multicast_links() {
	ip netns add "$P-src" || return 1
	CREATED_NS+=("$P-src")
	mkdir -p "/etc/netns/$P-src" && echo "nameserver 127.0.0.1" >"/etc/netns/$P-src/resolv.conf"
	nsx src ip link set lo up
	nsx src ip link add br0 type bridge mcast_snooping 0 &&
		nsx src ip link set br0 up &&
		nsx src ip addr add 192.168.250.254/24 dev br0 &&
		nsx src ip addr add "$BEACON/32" dev br0 &&
		nsx src ip addr add "$S/32" dev br0 &&
		nsx src ip route add 232.0.0.0/8 dev br0 || return 1
	local n o
	for n in n1 n2; do
		o=${n#n}
		ip link add "mc-$n" netns "$P-src" type veth peer name "$n-mc" netns "$P-$n" &&
			nsx src ip link set "mc-$n" master br0 up &&
			nsx "$n" ip addr add "192.168.250.$o/24" dev "$n-mc" &&
			nsx "$n" ip link set "$n-mc" up &&
			nsx "$n" sysctl -qw "net.ipv4.conf.$n-mc.rp_filter=0" || return 1
	done
}

# data_link NODE up|down: connect or cut NODE's relays from S's multicast.
data_link() { nsx src ip link set "mc-$1" "$2"; }

start_senders() {
	running beacon || start_proc beacon src "$BIN/mcastsend" -source "$BEACON" -interface br0 -every 100ms "$BEACON_GROUP:$MC_PORT"
	running stream || start_proc stream src "$BIN/mcastsend" -source "$S" -interface br0 -every 100ms "$USER_GROUP:$MC_PORT"
}

# ---------------------------------------------------------------- BIRD
bird_conf() { # bird_conf NODE -> config on stdout
	local n=$1
	cat <<EOF
# BIRD 2 config for $n (AS${ASN[$n]}), generated by e2e/run.sh
log stderr all;
router id ${RID[$n]};
define OURS = [ 100.64.0.0/16+, 198.51.100.0/24+, 203.0.113.0/24+, $UCAST_PREFIX+ ];
# The multicast RIB (SAFI 2): what RPF follows, and what net2's AMT DNS learns.
ipv4 table mcast4;

protocol device { scan time 1; }
# Every connected prefix, including the /32s on lo (servers, relays, anycast).
protocol direct { ipv4; }
protocol kernel {
	ipv4 { import none; export where source = RTS_BGP; };
}

template bgp peer {
	hold time 6;
	keepalive time 2;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 4;
	ipv4 {
		import where net ~ OURS;
		export where net ~ OURS;
		next hop self;
	};
	ipv4 multicast {
		table mcast4;
		import where net ~ OURS;
		export where net ~ OURS;
		next hop self;
	};
}
EOF
	case $n in
	ix)
		local peer
		for peer in n1 n2 n8; do
			local o=${peer#n}
			cat <<EOF
protocol bgp $peer from peer {
	local 100.64.10$o.1 as ${ASN[ix]};
	neighbor 100.64.10$o.2 as ${ASN[$peer]};
}
EOF
		done
		;;
	n1)
		cat <<EOF
protocol bgp ix from peer {
	local 100.64.101.2 as ${ASN[n1]};
	neighbor 100.64.101.1 as ${ASN[ix]};
	ipv4 {
		import where net ~ OURS;
		# net1 is the source's network: its anycast AMT DNS is the fallback,
		# so it makes its announcement longer than net2's.
		export filter {
			if !(net ~ OURS) then reject;
			if net = $ANYCAST/32 then { bgp_path.prepend(${ASN[n1]}); bgp_path.prepend(${ASN[n1]}); }
			accept;
		};
		next hop self;
	};
}
# S's network in the multicast RIB; step "bgp" disables this to withdraw it.
protocol static mcast_s {
	ipv4 { table mcast4; };
	route 198.51.100.0/24 unreachable;
}
# A prefix in the unicast RIB only, never in the multicast one.
protocol static ucast_only {
	ipv4;
	route $UCAST_PREFIX unreachable;
}
EOF
		;;
	n2 | n8)
		local o=${n#n}
		cat <<EOF
protocol bgp ix from peer {
	local 100.64.10$o.2 as ${ASN[$n]};
	neighbor 100.64.10$o.1 as ${ASN[ix]};
}
EOF
		if [ "$n" = n2 ]; then
			cat <<EOF
# iBGP to net2's AMT DNS (step "bgp"): the multicast RIB. The unicast channel
# is offered too and stays down, since the plugin does not configure it. Until
# a Corefile with bgp runs the speaker, the dial is refused, and retried every
# second.
protocol bgp amtdns {
	local $N2_BGP_ROUTER as ${ASN[n2]};
	neighbor $N2_BGP_SPEAKER port $N2_BGP_PORT as ${ASN[n2]};
	hold time 6;
	keepalive time 2;
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import none; export where net ~ OURS; };
	ipv4 multicast { table mcast4; import none; export all; };
}
EOF
		fi
		;;
	esac
}

birdc_() { local n=$1; shift; nsx "$n" birdc -s "$WORK/run/bird-$n.ctl" "$@"; }

start_bird() {
	local n
	for n in "${NODES[@]}"; do
		bird_conf "$n" >"$WORK/conf/bird-$n.conf"
		start_bird_on "$n"
	done
}
# start_bird_on NODE: BIRD in NODE on its written config (the bgp step restarts net2's).
start_bird_on() { start_proc "bird-$1" "$1" bird -f -c "$WORK/conf/bird-$1.conf" -s "$WORK/run/bird-$1.ctl" -P "$WORK/run/bird-$1.pid"; }

bgp_established() { # all three sessions at ix
	local out
	out=$(birdc_ ix show protocols 2>/dev/null) || return 1
	[ "$(grep -cE '^n[128] +BGP .* up .*Established' <<<"$out")" -eq 3 ]
}

# anycast_via: which network ix forwards the anycast address to (n1, n2 or none).
anycast_via() {
	local r
	r=$(ip -n "$P-ix" -4 route show "$ANYCAST/32" 2>/dev/null)
	case $r in
	*"via 100.64.101.2"*) echo n1 ;;
	*"via 100.64.102.2"*) echo n2 ;;
	*) echo none ;;
	esac
}

# ---------------------------------------------------------------- DNS chain zone files
write_zones() {
	local z=$WORK/zones
	cat >"$z/root.zone" <<EOF
\$ORIGIN .
\$TTL 300
.                   SOA a.root-servers.e2e. hostmaster.e2e. 1 3600 600 86400 60
.                   NS  a.root-servers.e2e.
a.root-servers.e2e. A   $ROOT_NS
arpa.               NS  a.ns.arpa.
a.ns.arpa.          A   $ARPA_NS
EOF
	# arpa. and in-addr.arpa. as one zone: CoreDNS answers a parent and a
	# child it serves together from the child, DS queries included, which
	# breaks the chain of trust at the cut.
	cat >"$z/arpa.zone" <<EOF
\$ORIGIN arpa.
\$TTL 300
@                          SOA a.ns.arpa. hostmaster.e2e. 1 3600 600 86400 60
@                          NS  a.ns
a.ns                       A   $ARPA_NS
100.51.198.in-addr         NS  ns1.100.51.198.in-addr
ns1.100.51.198.in-addr     A   $REV_NS
EOF
	# net1's reverse zone for S: PTR, the RFC 8777 type-3 AMTRELAY pointing at
	# amt.<rev(S)> (generic RFC 3597 form, see protocol.md on miekg/dns), and
	# the delegation of amt.<rev(S)> to the anycast AMT DNS.
	local target_hex rdata
	target_hex=$(name_hex "$AMT_NAME")
	rdata="0A03$target_hex" # precedence 10, D=0, type 3
	REV_AMTRELAY_HEX=$rdata
	cat >"$z/rev-net1.zone" <<EOF
\$ORIGIN 100.51.198.in-addr.arpa.
\$TTL 60
@        SOA ns1 hostmaster.net1.e2e. 1 3600 600 86400 5
@        NS  ns1
ns1      A   $REV_NS
amt-dns  A   $ANYCAST
12       PTR source.net1.e2e.
12       TYPE260 \\# $((${#rdata} / 2)) $rdata
EOF
	sign_zones
}

# sign_zones: DNSSEC for the whole chain. Each AMT DNS network has its own
# key for the amt.<rev(S)> apexes, which the plugin signs online; S's
# operator delegates amt.<rev(S)> with one DS per network's key, as
# amtrelay-ds writes them; then every zone is signed bottom up, each parent
# carrying its child's DS, and Unbound trusts the root's key.
sign_zones() {
	local k=$WORK/keys z=$WORK/zones n
	mkdir -p "$k/n1" "$k/n2" "$k/zones"
	for n in n1 n2; do
		printf -v "AMT_KEY_$n" '%s' "$k/$n/$(dnssec-keygen -q -a ECDSAP256SHA256 -f KSK -K "$k/$n" amt)" || return 1
	done
	# Each network's DNSKEY RRset lists the other's key (RFC 8901 model 2).
	grep -v '^;' "$AMT_KEY_n2.key" >"$k/peers-n1.keys"
	grep -v '^;' "$AMT_KEY_n1.key" >"$k/peers-n2.keys"
	restore_peer_keys
	"$BIN/amtrelay-ds" -ns "amt-dns.100.51.198.in-addr.arpa." -key "$AMT_KEY_n1" -key "$AMT_KEY_n2" "$S" >>"$z/rev-net1.zone" || return 1
	sign_zone 100.51.198.in-addr.arpa. rev-net1.zone arpa.zone &&
		sign_zone arpa. arpa.zone root.zone &&
		sign_zone . root.zone || return 1
	ROOT_DS=$(dnssec-dsfromkey -2 "$ROOT_KEY" | awk '{ $1 = "."; print }')
}

# restore_peer_keys: each network's file of its peers' keys as sign_zones wrote it.
restore_peer_keys() {
	local n
	for n in n1 n2; do
		cmp -s "$WORK/keys/peers-$n.keys" "$WORK/conf/peers-$n.keys" || cp "$WORK/keys/peers-$n.keys" "$WORK/conf/peers-$n.keys"
	done
}

# sign_zone ORIGIN FILE [PARENT_FILE]: make ORIGIN's key, sign FILE in place
# with it and add its DS to PARENT_FILE.
sign_zone() {
	local k=$WORK/keys/zones z=$WORK/zones key
	key=$k/$(dnssec-keygen -q -a ECDSAP256SHA256 -f KSK -K "$k" "$1") || return 1
	[ "$1" = . ] && ROOT_KEY=$key.key
	dnssec-signzone -q -S -z -K "$k" -d "$k" -o "$1" -f "$z/$2.signed" "$z/$2" >>"$WORK/log/signzone.log" 2>&1 &&
		mv "$z/$2.signed" "$z/$2" || return 1
	[ -z "${3:-}" ] || dnssec-dsfromkey -2 "$key.key" >>"$z/$3"
}

write_corefiles() {
	cat >"$WORK/conf/Corefile.ix" <<EOF
. {
    bind $ROOT_NS
    errors
    log
    file $WORK/zones/root.zone .
}
arpa {
    bind $ARPA_NS
    errors
    log
    file $WORK/zones/arpa.zone arpa
}
EOF
	cat >"$WORK/conf/Corefile.rev" <<EOF
100.51.198.in-addr.arpa {
    bind $REV_NS
    errors
    log
    file $WORK/zones/rev-net1.zone
}
EOF
	cat >"$WORK/conf/Corefile.n1" <<EOF
# net1: the source's network. Its anycast announcement is permanent (the
# fallback) and fails open when every relay is down.
. {
    bind $N1_DNS $ANYCAST
    bufsize 1232
    errors
    log
    prometheus 127.0.0.1:9153
    ready 127.0.0.1:8181 {
        monitor continuously
    }
    reload 2s 0s
    amtrelay in-addr.arpa ip6.arpa {
        relay r1a ${N1_RELAYS[0]} precedence 10
        relay r1b ${N1_RELAYS[1]} precedence 10
        source 198.51.100.0/24 r1a r1b
        ttl $ANSWER_TTL
        nameserver $AMT_NS_NAME
        health_check ${HC_INTERVAL}s timeout ${HC_TIMEOUT_MS}ms fails $HC_FAILS rises $HC_RISES
        all_down serve
        dnssec $AMT_KEY_n1
        dnssec_peer_keys $WORK/conf/peers-n1.keys reload 1s
    }
    whoami
}
EOF
	n2_sources with_s >"$WORK/conf/n2.sources"
	# The bgp variants' file: never S, which only BGP gives them.
	n2_sources without_s >"$WORK/conf/n2-bgp.sources"
	n2_corefile base >"$WORK/conf/Corefile.n2"
}

# n2_sources with_s|without_s: net2's connectivity table file. "without_s"
# is net2 after losing its path to S's network: the prefix is gone.
n2_sources() {
	echo "# net2's per-source connectivity table, generated by e2e/run.sh"
	[ "$1" = without_s ] || echo "198.51.100.0/24 r2a r2b r2v6 r2name"
	echo "2001:db8:100::/48 r2a"
}

# n2_corefile base|reloaded|fallthrough|bgp|bgp_reloaded: net2's Corefile.
# "reloaded" adds the source $S_NEW and moves r2b from precedence 20 to 5;
# "fallthrough" hands the query on (to net1 through forward) when no relay of
# net2 is left for a source, instead of NODATA. "bgp" learns the multicast RIB
# from net2's BIRD and reads a sources file without S, so that S's entry comes
# from BGP alone (a source missing from the table is handed on to net1, as in
# every variant); "bgp_reloaded" is "bgp" with r2b at precedence 5 and the same
# bgp lines.
n2_corefile() {
	local r2b_prec=20 extra="" all_down=nodata sources=$WORK/conf/n2.sources
	case $1 in
	reloaded)
		r2b_prec=5
		extra="        source $S_NEW/32 r2b"
		;;
	fallthrough) all_down=fallthrough ;;
	bgp | bgp_reloaded)
		[ "$1" = bgp ] || r2b_prec=5
		sources=$WORK/conf/n2-bgp.sources
		# Only the multicast family: the unicast routes BIRD offers never enter the table.
		extra="        bgp ${ASN[n2]} $N2_BGP_SPEAKER listen $N2_BGP_SPEAKER:$N2_BGP_PORT
        bgp_neighbor $N2_BGP_ROUTER ${ASN[n2]} passive family ipv4-multicast
        bgp_relays r2a r2b r2v6 r2name
        # From 127.0.0.1 in net2: where each answer's table entry comes from.
        explain"
		;;
	esac
	cat <<EOF
# net2 ($1): a multicast network nearer the user. Listens on the wildcard address
# because the anycast /32 comes and goes with contrib/amt-route-control.sh.
. {
    bufsize 1232
    errors
    log
    prometheus 127.0.0.1:9153
    ready 127.0.0.1:8181 {
        monitor continuously
    }
    reload 2s 0s
    amtrelay in-addr.arpa ip6.arpa {
        relay r2a ${N2_RELAYS_V4[0]} precedence 10
        relay r2b ${N2_RELAYS_V4[1]} precedence $r2b_prec discovery_optional
        relay r2v6 $N2_RELAY_V6 precedence 10
        relay r2name $N2_RELAY_NAME precedence 30 probe $N2_RELAY_NAME_PROBE:2268
        sources $sources reload 1s
$extra
        ttl $ANSWER_TTL
        nameserver $AMT_NS_NAME
        health_check ${HC_INTERVAL}s timeout ${HC_TIMEOUT_MS}ms fails $HC_FAILS rises $HC_RISES
        # The beacon's data through a relay proves its path to S's network.
        canary 198.51.100.0/24 $BEACON $BEACON_GROUP
        all_down $all_down
        fallthrough in-addr.arpa
        dnssec $AMT_KEY_n2
        dnssec_peer_keys $WORK/conf/peers-n2.keys reload 1s
        # Longer than route-control's withdrawal (-f $RC_FAILS x -i $RC_INTERVAL) plus BGP.
        shutdown_grace ${SHUTDOWN_GRACE}s
    }
    # Sources net2 cannot reach (not in its table) go to net1's unicast AMT DNS.
    forward in-addr.arpa $N1_DNS
    whoami
}
EOF
}

write_unbound_conf() {
	cat >"$WORK/unbound/root.hints" <<EOF
.                   3600000 NS a.root-servers.e2e.
a.root-servers.e2e. 3600000 A  $ROOT_NS
EOF
	cat >"$WORK/conf/unbound.conf" <<EOF
# net8's recursive resolver, generated by e2e/run.sh
server:
    verbosity: 1
    log-queries: yes
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    directory: "$WORK/unbound"
    pidfile: "$WORK/run/unbound.pid"
    num-threads: 1
    interface: $RESOLVER
    # Queries leave from the resolver's own address, so the servers' logs tell
    # them apart from the client's direct queries.
    outgoing-interface: $RESOLVER
    port: 53
    do-ip4: yes
    do-ip6: no
    access-control: 100.64.0.0/16 allow
    root-hints: "$WORK/unbound/root.hints"
    module-config: "validator iterator"
    trust-anchor: "$ROOT_DS"
    val-log-level: 2
    qname-minimisation: yes
    use-caps-for-id: yes
    prefetch: no
    # RFC 6303 / TEST-NET default local zones would answer these locally.
    local-zone: "100.51.198.in-addr.arpa." nodefault
    local-zone: "113.0.203.in-addr.arpa." nodefault
    local-zone: "64.100.in-addr.arpa." nodefault
    local-zone: "8.b.d.0.1.0.0.2.ip6.arpa." nodefault
    # Give up on an unreachable server quickly and retry it soon: the anycast
    # address briefly blackholes while BGP converges.
    infra-host-ttl: 5
remote-control:
    # A local socket only: the dnssec step flushes the cache of amt.<rev(S)>.
    control-enable: yes
    control-interface: "$WORK/run/unbound.ctl"
EOF
	# delv's trust anchor: the same root DS Unbound trusts.
	awk '{ printf "trust-anchors { . static-ds %s %s %s \"%s\"; };\n", $4, $5, $6, $7 }' <<<"$ROOT_DS" >"$WORK/conf/delv-anchor.conf"
}
# unbound_ctl COMMAND...: net8's Unbound's remote control.
unbound_ctl() { nsx n8 unbound-control -c "$WORK/conf/unbound.conf" "$@"; }

# ---------------------------------------------------------------- processes
RELAYS_n1=("r1a ${N1_RELAYS[0]}:2268" "r1b ${N1_RELAYS[1]}:2268")
RELAYS_n2=("r2a ${N2_RELAYS_V4[0]}:2268" "r2b ${N2_RELAYS_V4[1]}:2268"
	"r2v6 [$N2_RELAY_V6]:2268" "r2name $N2_RELAY_NAME_PROBE:2268")

# start_relays n1|n2 [MODE]: one amt-responder per relay address (those not
# running), forwarding the multicast of their network's data link.
start_relays() {
	local -n specs=RELAYS_$1
	local spec name listen
	for spec in "${specs[@]}"; do
		read -r name listen <<<"$spec"
		running "relay-$name" || start_relay "$1" "$name" "$listen" "${2:-normal}"
	done
}
# start_relay NODE NAME LISTEN MODE: one relay responder.
start_relay() {
	start_proc "relay-$2" "$1" "$BIN/amt-responder" -listen "$3" -mode "$4" \
		-data-interface "$1-mc" -data-port "$MC_PORT"
}
# relay_listen NAME: the node and listen address of relay NAME.
relay_listen() {
	local spec name listen
	for spec in "${RELAYS_n1[@]}"; do
		read -r name listen <<<"$spec"
		[ "$name" = "$1" ] && { echo "n1 $listen"; return 0; }
	done
	for spec in "${RELAYS_n2[@]}"; do
		read -r name listen <<<"$spec"
		[ "$name" = "$1" ] && { echo "n2 $listen"; return 0; }
	done
	return 1
}

stop_relays() {
	local -n specs=RELAYS_$1
	local spec name listen pid
	# Signal every responder first, so that they all stop at the same moment
	# (the failover clock starts here), then reap them one by one.
	for spec in "${specs[@]}"; do
		read -r name listen <<<"$spec"
		pid=${PIDS[relay-$name]:-}
		[ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null
	done
	for spec in "${specs[@]}"; do
		read -r name listen <<<"$spec"
		stop_proc "relay-$name"
	done
}

relays_running() {
	local -n specs=RELAYS_$1
	local spec name listen
	for spec in "${specs[@]}"; do
		read -r name listen <<<"$spec"
		running "relay-$name" || return 1
	done
}

start_route_control() {
	# Bounded on its own too (-n): at most 20 minutes of polling even if this
	# suite were killed with SIGKILL before its teardown.
	running route-control || start_proc route-control n2 sh "$ROOT/contrib/amt-route-control.sh" \
		-u http://127.0.0.1:8181/ready -a "$ANYCAST/32" -d lo \
		-i "$RC_INTERVAL" -t 1 -f "$RC_FAILS" -r "$RC_RISES" -n 2400
}

start_dns() {
	start_proc dns-ix ix "$BIN/coredns" -conf "$WORK/conf/Corefile.ix"
	start_proc dns-rev n1 "$BIN/coredns" -conf "$WORK/conf/Corefile.rev"
	start_proc dns-n1 n1 "$BIN/coredns" -conf "$WORK/conf/Corefile.n1"
	start_proc dns-n2 n2 "$BIN/coredns" -conf "$WORK/conf/Corefile.n2"
	start_proc unbound n8 unbound -d -c "$WORK/conf/unbound.conf"
}

ready_code() { http_code "$1" http://127.0.0.1:8181/ready; }
is_ready() { [ "$(ready_code "$1")" = 200 ]; }
answers_at() { dq "$1" "@$2" +norec "$3" "${4:-SOA}" && [ -n "$(q_status)" ]; }

setup_topology() {
	make_namespaces || {
		bad "creating namespaces and links"
		return 1
	}
	ok "namespaces ${NODES[*]/#/$P-} with veth links, ip_forward=1, rp_filter=0"
	start_bird
	# Stamped like every log: the timed steps read when ix switched the anycast route.
	start_proc routes-ix ix ip monitor route
	write_zones || {
		bad "writing and signing the zones (log/signzone.log)"
		return 1
	}
	write_corefiles
	write_unbound_conf
	start_relays n1
	start_relays n2
	start_senders
	start_dns
	start_route_control
	return 0
}
