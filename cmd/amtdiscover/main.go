// Command amtdiscover finds the AMT relay a gateway would get for a
// multicast source S, from the gateway's seat: it asks DNS the way RFC 8777
// (DRIAD) and the anycast "AMT DNS" design do, races the relays found the
// way RFC 8777 asks gateways to, and with -group joins (S,G) on the winner
// and waits for data.
//
// Usage:
//
//	amtdiscover [-resolver ADDR[:PORT]] [-mode driad|anycast|both] [-group G]
//	    [-label L] [-timeout D] [-json] SOURCE
//
// SOURCE is an IP address; an IPv4-mapped IPv6 address is taken as the
// IPv4 source. Flags may come before or after it.
//
// # DNS
//
// DRIAD asks for AMTRELAY (type 260) at the reverse name of S, anycast for
// A and AAAA at L.<reverse name of S> (-label, default amt); -mode both (the
// default) does both at once. Queries go to -resolver (an IP literal, port
// 53 unless given, IPv6 as [ADDR]:PORT) or to the nameservers of
// /etc/resolv.conf (at most three, in order; the next one is asked when one
// times out, cannot be reached or answers SERVFAIL, REFUSED, NOTIMP or
// FORMERR). Each exchange waits up to -timeout; a truncated UDP reply is
// asked again once over TCP. CNAME chains are followed inside an answer and,
// when an answer stops at a CNAME, by asking for its target (RFC 2317
// delegations), at most 8 links. The relay names of type 3 records (at most
// 8) are looked up as A and AAAA and take their record's precedence and
// D-bit. Every record is printed with its TTL, with the server, transport
// and time of every exchange. At most 10 queries leave per 100 ms (RFC 8777
// section 3.2), and the DNS phase as a whole ends after 3 x -timeout. The
// lookups run side by side, but unlike a gateway, which RFC 8777 lets start
// connecting as answers come in, amtdiscover waits for all of them before
// the race, so that it reports the whole candidate list in its order.
//
// AMTRELAY replies are decoded here, not by miekg/dns, whose v1.1.73 rejects
// the whole message when a record has the D-bit set. Type 0 ("no relay
// should be used for this source") is reported and contributes no relay;
// anycast results, another discovery method, are still tried. Relay types
// 4-127 and malformed records are shown and not used; a type 3 name missing
// its root label (seen in deployed zones) is read as fully qualified, with
// a note.
//
// # Relays
//
// Candidates are ordered as RFC 8777 section 3.3 asks: DRIAD precedence
// groups first, lowest first. Anycast A/AAAA results form one group after
// all of DRIAD's: they carry no precedence from the source's operator, and
// an address that DRIAD names too (as when a type 3 record names
// L.<reverse name of S>) keeps DRIAD's place, precedence and D-bit. Within a
// group a simplified RFC 6724 destination ordering applies: rule 1
// (addresses the host has no route to go last; checked by connecting a UDP
// socket, which sends nothing) and rule 6 (precedence from the default
// policy table: global IPv6 before IPv4, IPv4 before 6to4, Teredo and ULAs);
// addresses still equal are shuffled, as RFC 8777 asks so that DNS can
// spread load; then address families are interleaved (RFC 8305 section 4).
// At most 32 candidates are kept.
//
// The race follows RFC 8305: the first candidate starts at once, the next
// one 250 ms later or as soon as a running attempt fails, while earlier
// ones keep running. Each attempt is the whole handshake (Relay Discovery,
// Relay Advertisement, Request to the advertised relay, Membership Query),
// bounded by -timeout, to UDP port 2268. The first Membership Query without
// the L flag, RFC 8777's "connection established", wins, and the attempts
// still running are cancelled. A record with D=1 allows a gateway to skip
// Discovery, and the report says so, but amtdiscover runs it anyway: it
// checks the whole handshake, and relays that answer Requests without a
// Discovery first are not thereby broken if they answer Discovery too; a
// D=1 relay that fails Discovery is reported as failing.
//
// With -group G, a tunnel to the winner joins (S,G) and waits up to
// -timeout for the first Multicast Data message; the tunnel leaves (and
// tears down, if the relay asks for it) before the command exits. A winner
// without data is not replaced by the runner-up: the report says no data.
//
// # Output
//
// Text by default; with -json a single JSON object:
//
//	source      string  S as looked up
//	group       string  G, only with -group
//	mode        string  driad, anycast or both
//	label       string  the anycast label
//	resolvers   [string] the DNS servers, in the order asked
//	queries     [object] every query, in order:
//	  purpose   string  driad, anycast or relay name
//	  name, type string  the question
//	  cname_of  string  set when the query follows a CNAME from that name
//	  status    string  answer, nodata, nxdomain, cname (followed), another
//	                    rcode (SERVFAIL, REFUSED...), timeout, refused,
//	                    error, interrupted, cname_loop, cname_chain_too_long
//	  exchanges [object] {server, transport (udp|tcp), time_ms, rcode,
//	                    truncated, error}, one per packet exchange
//	  answer, authority [object] {name, ttl, type, data (presentation
//	                    form), problem, amtrelay: {precedence, d,
//	                    relay_type, relay, usable, note}}
//	stagger_ms  number  delay between starts
//	timeout_ms  number  -timeout
//	relays      [object] the candidates in the order tried:
//	  order     number  1-based
//	  address   string  relay address; target is address:port
//	  origin    string  driad or anycast; via: the type 3 name, if any
//	  precedence number  null for anycast results; d: the D-bit
//	  also      [string] other records that named the same address
//	  group     number  precedence group rank, from 1
//	  routable  bool    the host has a route to it
//	  outcome   string  won, slower (connected after the winner),
//	                    cancelled (pending when the winner connected),
//	                    not_started, timeout (no Advertisement), refused,
//	                    bad_reply, limit (Query with L), no_query
//	                    (Advertisement but no Query), error, interrupted,
//	                    no_data (won, but no data with -group)
//	  step      string  discovery or request: where the handshake ended
//	  start_ms, total_ms, discovery_ms, request_ms  number or null
//	  advertised string  the relay address in the Advertisement
//	  detail    string  the outcome in words
//	winner      object  {address, target, time_ms since the race started}
//	                    or null
//	data        object  with -group and a winner: {outcome (data, no_data,
//	                    interrupted, error), tunnel_ms, first_data_ms
//	                    (both since the tunnel started, null if it did not
//	                    happen), packets, detail}
//	notes       [string] anything worth a remark
//	status      string  ok, none_works, no_data, no_relay_found,
//	                    interrupted
//	exit_code   number  the exit status
//
// Times are milliseconds, to the microsecond.
//
// # Exit status
//
// 0 a relay works (and, with -group, data arrived); 1 relays were found but
// none works (or, with -group, no data came); 2 no relay was found; 3 usage
// error; 130 interrupted (SIGINT or SIGTERM), after printing what was found
// so far.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/internal/cmdline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK          = 0
	exitNoneWorks   = 1
	exitNoRelay     = 2
	exitUsage       = 3
	exitInterrupted = 130
)

// env holds what tests replace; defaultEnv is the real world.
type env struct {
	resolvConf string
	// relayTarget gives the UDP address to handshake with for a relay
	// address: port 2268 in the real world, a fixture's port in tests.
	relayTarget func(netip.Addr) netip.AddrPort
	routable    func(netip.Addr) bool
	shuffle     func(n int, swap func(i, j int))
	stagger     time.Duration
	after       func(time.Duration) <-chan time.Time
	// handshake, if set, replaces the handshakes of an amt.Client.
	handshake handshakeFunc
	// dnsTimeout, if set, replaces -timeout for DNS exchanges.
	dnsTimeout time.Duration
	udpSize    uint16
	// tcpAddr maps a DNS server's address to its TCP address; nil means
	// the same (tests run servers whose TCP port differs).
	tcpAddr func(netip.AddrPort) netip.AddrPort
	poll    time.Duration
}

func defaultEnv() env {
	return env{
		resolvConf:  "/etc/resolv.conf",
		relayTarget: func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, amtPort) },
		routable:    hasRoute,
		shuffle:     rand.Shuffle,
		stagger:     defaultStagger,
		after:       time.After,
		udpSize:     1232, // the DNS flag day 2020 figure: no fragmentation
		poll:        defaultPoll,
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, stdout, stderr, defaultEnv())
}

// options are the parsed command line.
type options struct {
	resolvers []netip.AddrPort
	mode      string
	group     netip.Addr
	label     string
	timeout   time.Duration
	json      bool
	source    netip.Addr
}

const usageLine = "usage: amtdiscover [-resolver ADDR[:PORT]] [-mode driad|anycast|both] [-group G] [-label L] [-timeout D] [-json] SOURCE"

// parseArgs reads the command line; flags may follow SOURCE too. A nil
// error with help set means -h was asked for.
func parseArgs(args []string, stderr io.Writer) (o options, help bool, err error) {
	fs := flag.NewFlagSet("amtdiscover", flag.ContinueOnError)
	resolverFlag := fs.String("resolver", "", "DNS server `ADDR[:PORT]` (default: the nameservers of /etc/resolv.conf)")
	fs.StringVar(&o.mode, "mode", "both", "`MODE`: driad (AMTRELAY at rev(S)), anycast (A/AAAA at L.rev(S)) or both")
	groupFlag := fs.String("group", "", "join (SOURCE, `G`) on the winner and wait for data")
	fs.StringVar(&o.label, "label", "amt", "`L`: leading label of the anycast name")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "`D`: bound of each DNS exchange, each relay handshake and the wait for data")
	fs.BoolVar(&o.json, "json", false, "print one JSON object")
	pos, help, err := cmdline.Parse(fs, args, usageLine, stderr)
	if help || err != nil {
		return o, help, err
	}
	switch len(pos) {
	case 0:
		return o, false, errors.New("SOURCE is missing")
	case 1:
	default:
		return o, false, fmt.Errorf("one SOURCE only, got %q", pos)
	}
	src, err := netip.ParseAddr(pos[0])
	if err != nil {
		return o, false, fmt.Errorf("SOURCE %q is not an IP address", pos[0])
	}
	o.source = src.Unmap().WithZone("")
	if o.source.IsMulticast() || o.source.IsUnspecified() {
		return o, false, fmt.Errorf("SOURCE %v is not a unicast address", src)
	}
	switch o.mode {
	case "driad", "anycast", "both":
	default:
		return o, false, fmt.Errorf("-mode %q: driad, anycast or both", o.mode)
	}
	if *groupFlag != "" {
		g, err := netip.ParseAddr(*groupFlag)
		if err != nil {
			return o, false, fmt.Errorf("-group %q is not an IP address", *groupFlag)
		}
		o.group = g.Unmap().WithZone("")
		if !o.group.IsMulticast() {
			return o, false, fmt.Errorf("-group %v is not a multicast address", g)
		}
		if o.group.Is4() != o.source.Is4() {
			return o, false, fmt.Errorf("-group %v and SOURCE %v are of different address families", g, o.source)
		}
	}
	if o.label == "" || len(o.label) > 63 || strings.ContainsAny(o.label, ".\\ ") {
		return o, false, fmt.Errorf("-label %q is not one DNS label", o.label)
	}
	if _, ok := dns.IsDomainName(o.label); !ok {
		return o, false, fmt.Errorf("-label %q is not one DNS label", o.label)
	}
	if o.timeout <= 0 || o.timeout > 5*time.Minute {
		return o, false, fmt.Errorf("-timeout %v: give a duration above 0 and at most 5m", o.timeout)
	}
	if *resolverFlag != "" {
		ap, err := parseResolver(*resolverFlag)
		if err != nil {
			return o, false, fmt.Errorf("-resolver: %w", err)
		}
		o.resolvers = []netip.AddrPort{ap}
	}
	return o, false, nil
}

func runEnv(ctx context.Context, args []string, stdout, stderr io.Writer, e env) int {
	o, help, err := parseArgs(args, stderr)
	if help {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "amtdiscover: %v\n%s\n", err, usageLine)
		return exitUsage
	}

	r := &report{Source: o.source.String(), Mode: o.mode, Label: o.label,
		StaggerMS: ms(e.stagger), TimeoutMS: ms(o.timeout), stagger: e.stagger, timeout: o.timeout}
	if o.group.IsValid() {
		r.Group = o.group.String()
	}
	if o.resolvers == nil {
		var note string
		o.resolvers, note = systemResolvers(e.resolvConf)
		if note != "" {
			r.Notes = append(r.Notes, note)
		}
	}
	for _, s := range o.resolvers {
		r.Resolvers = append(r.Resolvers, s.String())
	}
	finish := func(status string, code int, text string) int {
		r.Status, r.ExitCode, r.exitText = status, code, text
		if o.json {
			if err := r.writeJSON(stdout); err != nil {
				fmt.Fprintf(stderr, "amtdiscover: %v\n", err)
			}
		} else {
			r.writeText(stdout)
		}
		return code
	}
	interrupted := func() int {
		return finish("interrupted", exitInterrupted, "interrupted before a result")
	}

	dnsTimeout := o.timeout
	if e.dnsTimeout > 0 {
		dnsTimeout = e.dnsTimeout
	}
	rv := &resolver{servers: o.resolvers, timeout: dnsTimeout, udpSize: e.udpSize, limit: newRateLimiter(10, 100*time.Millisecond), tcpAddr: e.tcpAddr}
	dctx, cancel := context.WithTimeout(ctx, 3*dnsTimeout)
	found := discover(dctx, rv, o.source, o.mode, o.label)
	cancel()
	r.addSteps(found.Steps)
	r.Notes = append(r.Notes, found.Notes...)
	if ctx.Err() != nil {
		return interrupted()
	}

	cands := orderer{routable: e.routable, shuffle: e.shuffle}.order(found.Candidates)
	if len(cands) > maxCandidates {
		r.Notes = append(r.Notes, fmt.Sprintf("%d relay addresses found; only the first %d are tried", len(cands), maxCandidates))
		cands = cands[:maxCandidates]
	}
	if len(cands) == 0 {
		why := "no relay found"
		if found.NoRelay {
			why = "no relay found: DRIAD says no relay should be used for this source"
		}
		return finish("no_relay_found", exitNoRelay, why)
	}
	targets := make([]netip.AddrPort, len(cands))
	for i, c := range cands {
		targets[i] = e.relayTarget(c.Addr)
	}
	handshake := e.handshake
	if handshake == nil {
		client, err := amt.NewClient()
		if err != nil {
			// No socket at all: every attempt fails with the reason.
			handshake = func(context.Context, netip.AddrPort, time.Duration) amt.HandshakeReply {
				return amt.HandshakeReply{Result: amt.ResultError, Err: err}
			}
		} else {
			defer client.Close()
			handshake = client.Handshake
		}
	}
	rc := racer{handshake: handshake, timeout: o.timeout, stagger: e.stagger, after: e.after}
	r.began = time.Now()
	attempts, winner := rc.race(ctx, cands, targets)

	if winner < 0 {
		r.addAttempts(attempts, winner)
		if ctx.Err() != nil {
			return interrupted()
		}
		return finish("none_works", exitNoneWorks, "relays were found but none works")
	}
	if !o.group.IsValid() {
		r.addAttempts(attempts, winner)
		if ctx.Err() != nil {
			return interrupted()
		}
		return finish("ok", exitOK, "a relay works")
	}

	d := waitData(ctx, attempts[winner].Target, o.source, o.group, o.timeout, e.poll)
	jd := &jsonData{Outcome: d.Outcome, Packets: d.Packets, Detail: d.Detail}
	if d.Established > 0 {
		jd.TunnelMS = msp(d.Established)
	}
	if d.FirstData > 0 {
		jd.FirstDataMS = msp(d.FirstData)
	}
	r.Data = jd
	if d.Outcome == "no_data" {
		attempts[winner].Outcome = "no_data"
	}
	r.addAttempts(attempts, winner)
	switch {
	case d.Outcome == "data":
		return finish("ok", exitOK, "a relay works and data arrived")
	case ctx.Err() != nil:
		return interrupted()
	case d.Outcome == "error":
		return finish("no_data", exitNoneWorks, "could not join on the winner")
	}
	return finish("no_data", exitNoneWorks, "the winner took the join, but no data arrived")
}
