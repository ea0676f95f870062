package main

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt/amttest"
)

func decodeJSON(t *testing.T, r result) report {
	t.Helper()
	var rep report
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("Output is not the documented JSON object: %v\n%s", err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("More than one JSON value in the output")
	}
	return rep
}

func relayByAddr(t *testing.T, rep report, addr string) jsonRly {
	t.Helper()
	for _, r := range rep.Relays {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("Relay %s not in the report: %+v", addr, rep.Relays)
	return jsonRly{}
}

func wantOutcomes(t *testing.T, rep report, want map[string]string) {
	t.Helper()
	for addr, outcome := range want {
		if got := relayByAddr(t, rep, addr).Outcome; got != outcome {
			t.Errorf("Relay %s: outcome %q, want %q", addr, got, outcome)
		}
	}
	if len(rep.Relays) != len(want) {
		t.Errorf("%d relays in the report, want %d", len(rep.Relays), len(want))
	}
}

func wantLine(t *testing.T, out, pattern string) {
	t.Helper()
	if !regexp.MustCompile(pattern).MatchString(out) {
		t.Errorf("Output does not match %q", pattern)
	}
}

// The first relay takes Discovery but sits on the Request; the second
// starts one stagger later, connects and wins; the first is cancelled and
// the third never starts. The winner's record has D=1, which miekg/dns
// could not have unpacked.
func TestRaceWinnerCancelsPending(t *testing.T) {
	l := newLab(t)
	pending := l.relay(rPending, amttest.RequestSilent)
	l.relay(rDBit, amttest.Normal)
	third := l.relay(rThird, amttest.Normal)

	r := l.run(l.env(), srcRace)
	if r.code != exitOK {
		t.Fatalf("Exit %d, want 0", r.code)
	}
	wantLine(t, r.stdout, `(?m)^driad AMTRELAY 12\.100\.51\.198\.in-addr\.arpa\.$`)
	wantLine(t, r.stdout, `(?m)^  127\.0\.0\.1:\d+ udp [0-9.]+ ms: NOERROR$`)
	wantLine(t, r.stdout, `12\.100\.51\.198\.in-addr\.arpa\.\s+30\s+AMTRELAY\s+10 0 1 127\.0\.0\.21`)
	wantLine(t, r.stdout, `12\.100\.51\.198\.in-addr\.arpa\.\s+30\s+AMTRELAY\s+20 1 1 127\.0\.0\.22\s+; D=1: a gateway may skip Discovery`)
	wantLine(t, r.stdout, `amt\.12\.100\.51\.198\.in-addr\.arpa\.\s+30\s+A\s+127\.0\.0\.2[123]`)
	wantLine(t, r.stdout, `(?m)^  1\s+127\.0\.0\.21:\d+\s+driad precedence 10 D=0\s+\+[0-9.]+ ms\s+[0-9.]+ ms\s+-\s+cancelled\s+still waiting at Membership Query`)
	wantLine(t, r.stdout, `(?m)^  2\s+127\.0\.0\.22:\d+\s+driad precedence 20 D=1\s+\+[0-9.]+ ms\s+[0-9.]+ ms\s+[0-9.]+ ms\s+won`)
	wantLine(t, r.stdout, `(?m)^  3\s+127\.0\.0\.23:\d+\s+driad precedence 30 D=0\s+-\s+-\s+-\s+not_started`)
	wantLine(t, r.stdout, `(?m)^winner: 127\.0\.0\.22:\d+, connected [0-9.]+ ms after the race started$`)
	wantLine(t, r.stdout, `(?m)^result: ok: a relay works \(exit 0\)$`)
	if got := pending.Stats().Requests; got != 1 {
		t.Errorf("The pending relay got %d Requests, want 1", got)
	}
	if got := third.Discoveries(); got != 0 {
		t.Errorf("The third relay got %d Discoveries, want none", got)
	}

	// The same run as JSON. The anycast A/AAAA answers name the same
	// addresses, so they are listed under "also", not raced twice.
	l2 := l.env()
	r = l.run(l2, "-json", srcRace)
	rep := decodeJSON(t, r)
	if r.code != exitOK || rep.Status != "ok" || rep.ExitCode != 0 {
		t.Fatalf("Exit %d, status %q, exit_code %d", r.code, rep.Status, rep.ExitCode)
	}
	wantOutcomes(t, rep, map[string]string{rPending: "cancelled", rDBit: "won", rThird: "not_started"})
	w := relayByAddr(t, rep, rDBit)
	if !w.D || w.Precedence == nil || *w.Precedence != 20 || w.Origin != "driad" || w.Group != 2 || w.Order != 2 {
		t.Errorf("Winner entry %+v", w)
	}
	if w.StartMS == nil || *w.StartMS < 100 || w.DiscoveryMS == nil || w.RequestMS == nil || w.Advertised != rDBit {
		t.Errorf("Winner timings %+v: want a start one stagger (100 ms) in, both steps timed", w)
	}
	if len(w.Also) != 1 || w.Also[0] != "anycast" {
		t.Errorf("Winner also %q, want [anycast]", w.Also)
	}
	if rep.Winner == nil || rep.Winner.Address != rDBit || rep.Winner.TimeMS <= 0 {
		t.Errorf("Winner %+v", rep.Winner)
	}
	p := relayByAddr(t, rep, rPending)
	if p.Step != "request" || p.DiscoveryMS == nil || p.RequestMS != nil {
		t.Errorf("Pending relay %+v: want cancelled at the request step", p)
	}
	var sawD bool
	for _, q := range rep.Queries {
		if q.Purpose != "driad" {
			continue
		}
		if q.Status != "answer" || len(q.Exchanges) != 1 || q.Exchanges[0].Transport != "udp" || q.Exchanges[0].Server != l.dns {
			t.Errorf("DRIAD query %+v", q)
		}
		for _, a := range q.Answer {
			if a.AMTRELAY != nil && a.AMTRELAY.D {
				sawD = a.AMTRELAY.Relay == rDBit && a.AMTRELAY.RelayType == 1 && a.AMTRELAY.Precedence == 20 && a.TTL == 30
			}
		}
	}
	if !sawD {
		t.Errorf("No D=1 AMTRELAY record for %s in the JSON queries", rDBit)
	}
	if len(rep.Queries) != 3 {
		t.Errorf("%d queries, want AMTRELAY, A and AAAA", len(rep.Queries))
	}
}

// A relay whose Query has L set loses with "limit"; the failure starts the
// next relay at once, long before the stagger delay.
func TestLimitLoses(t *testing.T) {
	l := newLab(t)
	l.relay(rLimit, amttest.Limit)
	l.relay(rAfterL, amttest.Normal)
	e := l.env()
	e.stagger = time.Hour
	r := l.run(e, "-json", srcLimit)
	rep := decodeJSON(t, r)
	if r.code != exitOK {
		t.Fatalf("Exit %d, want 0", r.code)
	}
	wantOutcomes(t, rep, map[string]string{rLimit: "limit", rAfterL: "won"})
	if d := relayByAddr(t, rep, rLimit).Detail; !strings.Contains(d, "L set") {
		t.Errorf("Limit detail %q", d)
	}

	r = l.run(e, srcLimit)
	wantLine(t, r.stdout, `(?m)^  1\s+127\.0\.0\.31:\d+\s+driad precedence 10 D=0\s+\+[0-9.]+ ms\s+[0-9.]+ ms\s+[0-9.]+ ms\s+limit\s+Membership Query with L set`)
}

// A relay that answers Discovery but never a Request loses with
// "no_query" once its handshake times out, and the next one wins.
func TestNoQueryLoses(t *testing.T) {
	l := newLab(t)
	l.relay(rNoQuery, amttest.RequestSilent)
	l.relay(rAfterQ, amttest.Normal)
	e := l.env()
	e.stagger = time.Hour
	r := l.run(e, "-json", "-timeout", "1s", srcNoQuery)
	rep := decodeJSON(t, r)
	if r.code != exitOK {
		t.Fatalf("Exit %d, want 0", r.code)
	}
	wantOutcomes(t, rep, map[string]string{rNoQuery: "no_query", rAfterQ: "won"})
	nq := relayByAddr(t, rep, rNoQuery)
	if nq.Step != "request" || nq.TotalMS == nil || *nq.TotalMS < 1000 {
		t.Errorf("No-query relay %+v: want the whole second spent at the request step", nq)
	}
	if w := relayByAddr(t, rep, rAfterQ); w.StartMS == nil || *w.StartMS < 1000 {
		t.Errorf("Second relay started at %v, want after the first failed", w.StartMS)
	}
}

// Relays are found but none works: silence, L, and a closed port.
func TestNoneWorks(t *testing.T) {
	l := newLab(t)
	l.relay(rSilent, amttest.Silent)
	l.relay(rLimit2, amttest.Limit)
	r := l.run(l.env(), "-json", "-timeout", "1s", srcNone)
	rep := decodeJSON(t, r)
	if r.code != exitNoneWorks || rep.Status != "none_works" || rep.Winner != nil {
		t.Fatalf("Exit %d status %q winner %+v, want 1, none_works, no winner", r.code, rep.Status, rep.Winner)
	}
	wantOutcomes(t, rep, map[string]string{rSilent: "timeout", rLimit2: "limit", rClosed: "refused"})

	r = l.run(l.env(), "-timeout", "1s", srcNone)
	if r.code != exitNoneWorks {
		t.Fatalf("Exit %d, want 1", r.code)
	}
	wantLine(t, r.stdout, `timeout\s+no Relay Advertisement`)
	wantLine(t, r.stdout, `refused\s+refused \(ICMP port unreachable\)`)
	wantLine(t, r.stdout, `(?m)^result: none_works: relays were found but none works \(exit 1\)$`)
}

// With -group the winner is joined; data injected after the join arrives.
func TestGroupData(t *testing.T) {
	l := newLab(t)
	relay := l.relay(rData, amttest.Normal)
	s, g := netip.MustParseAddr(srcData), netip.MustParseAddr(group)
	done := make(chan result, 1)
	go func() { done <- l.run(l.env(), "-json", "-group", group, "-timeout", "10s", srcData) }()
	waitFor(t, "the join", func() bool { return relay.Joins(s, g) > 0 })
	// Inject until the command has seen a packet: a datagram lost on a
	// loaded machine must not fail the test.
	var r result
	for got := false; !got; {
		relay.Inject(s, g, []byte("hello"))
		select {
		case r = <-done:
			got = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	rep := decodeJSON(t, r)
	if r.code != exitOK || rep.Status != "ok" {
		t.Fatalf("Exit %d status %q, want 0 ok", r.code, rep.Status)
	}
	if d := rep.Data; d == nil || d.Outcome != "data" || d.Packets == 0 || d.FirstDataMS == nil || d.TunnelMS == nil || *d.FirstDataMS < *d.TunnelMS {
		t.Fatalf("Data %+v: want data, both times, first data after the tunnel", rep.Data)
	}
	if rep.Group != group {
		t.Errorf("Group %q", rep.Group)
	}
	waitFor(t, "the leave", func() bool { return len(relay.Memberships()) == 0 })

	// The text form of the same.
	go func() { done <- l.run(l.env(), "-group", group, "-timeout", "10s", srcData) }()
	waitFor(t, "the second join", func() bool { return relay.Joins(s, g) > 1 })
	for got := false; !got; {
		relay.Inject(s, g, []byte("hello"))
		select {
		case r = <-done:
			got = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	if r.code != exitOK {
		t.Fatalf("Exit %d, want 0", r.code)
	}
	wantLine(t, r.stdout, `(?m)^group \(198\.51\.100\.16, 232\.1\.1\.1\): tunnel established in [0-9.]+ ms, first data [0-9.]+ ms after the tunnel started \(packets at the first look: \d+\)$`)
	wantLine(t, r.stdout, `(?m)^result: ok: a relay works and data arrived \(exit 0\)$`)
}

// A winner that takes the join but forwards nothing: exit 1, no data.
func TestGroupNoData(t *testing.T) {
	l := newLab(t)
	relay := l.relay(rNoData, amttest.NoData)
	r := l.run(l.env(), "-group", group, "-timeout", "2s", srcNoData)
	if r.code != exitNoneWorks {
		t.Fatalf("Exit %d, want 1", r.code)
	}
	wantLine(t, r.stdout, `(?m)^group \(198\.51\.100\.17, 232\.1\.1\.1\): tunnel established in [0-9.]+ ms, no data: tunnel established, no data for \(198\.51\.100\.17, 232\.1\.1\.1\) within 2s$`)
	wantLine(t, r.stdout, `no_data\s+won, but no Multicast Data arrived`)
	wantLine(t, r.stdout, `(?m)^result: no_data: the winner took the join, but no data arrived \(exit 1\)$`)
	if relay.Joins(netip.MustParseAddr(srcNoData), netip.MustParseAddr(group)) != 1 {
		t.Errorf("The relay did not see the join")
	}
}

// A type 3 record names pool.relays.test, a CNAME to r71.relays.test: the
// A answer carries the chain (the template plugin chases it), the AAAA
// answer stops at the CNAME and the target is asked for.
func TestRelayName(t *testing.T) {
	l := newLab(t)
	l.relay(rNamed, amttest.Normal)
	r := l.run(l.env(), "-json", "-mode", "driad", srcNamed)
	rep := decodeJSON(t, r)
	if r.code != exitOK {
		t.Fatalf("Exit %d, want 0", r.code)
	}
	wantOutcomes(t, rep, map[string]string{rNamed: "won"})
	if w := relayByAddr(t, rep, rNamed); w.Via != "pool.relays.test." || w.Precedence == nil || *w.Precedence != 5 {
		t.Errorf("Relay %+v: want via pool.relays.test. with precedence 5", w)
	}
	var got []string
	for _, q := range rep.Queries {
		got = append(got, q.Purpose+" "+q.Type+" "+q.Name+" "+q.CNAMEOf+" "+q.Status)
	}
	want := []string{
		"driad AMTRELAY 18.100.51.198.in-addr.arpa.  answer",
		"relay name A pool.relays.test.  answer",
		"relay name AAAA pool.relays.test.  cname",
		"relay name AAAA r71.relays.test. pool.relays.test. nodata",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Queries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if a := rep.Queries[0].Answer; len(a) != 1 || a[0].AMTRELAY == nil || a[0].AMTRELAY.RelayType != 3 || a[0].Data != "5 0 3 pool.relays.test." {
		t.Errorf("AMTRELAY answer %+v", a)
	}
	if a := rep.Queries[1].Answer; len(a) != 2 || a[0].Type != "CNAME" || a[1].Type != "A" || a[1].Data != rNamed {
		t.Errorf("A answer %+v: want the CNAME and the address", a)
	}
}

// rev(S) is a CNAME (as RFC 2317 delegations are) to a name whose AMTRELAY
// the plugin answers.
func TestDRIADThroughCNAME(t *testing.T) {
	l := newLab(t)
	l.relay(rCNAME, amttest.Normal)
	r := l.run(l.env(), "-mode", "driad", srcCNAME)
	if r.code != exitOK {
		t.Fatalf("Exit %d, want 0", r.code)
	}
	wantLine(t, r.stdout, `7\.100\.51\.198\.in-addr\.arpa\.\s+60\s+CNAME\s+amt\.7\.100\.51\.198\.in-addr\.arpa\.`)
	wantLine(t, r.stdout, `(?m)^driad AMTRELAY amt\.7\.100\.51\.198\.in-addr\.arpa\. \(CNAME target of 7\.100\.51\.198\.in-addr\.arpa\.\)$`)
	wantLine(t, r.stdout, `amt\.7\.100\.51\.198\.in-addr\.arpa\.\s+30\s+AMTRELAY\s+0 0 1 127\.0\.0\.81`)
	wantLine(t, r.stdout, `127\.0\.0\.81:\d+\s+driad precedence 0 D=0.*won`)
}

// -mode anycast asks A and AAAA at amt.rev(S) only; the answers form one
// group, whose order the server rotates.
func TestModeAnycast(t *testing.T) {
	l := newLab(t)
	l.relay(rLimit, amttest.Limit)
	l.relay(rAfterL, amttest.Normal)
	r := l.run(l.env(), "-json", "-mode", "anycast", srcLimit)
	rep := decodeJSON(t, r)
	if r.code != exitOK || rep.Winner == nil || rep.Winner.Address != rAfterL {
		t.Fatalf("Exit %d winner %+v, want 0 and %s", r.code, rep.Winner, rAfterL)
	}
	for _, q := range rep.Queries {
		if q.Purpose != "anycast" || q.Name != "amt.13.100.51.198.in-addr.arpa." {
			t.Errorf("Query %s %s %s in anycast mode", q.Purpose, q.Type, q.Name)
		}
	}
	for _, rl := range rep.Relays {
		if rl.Origin != "anycast" || rl.Precedence != nil || rl.Group != 1 {
			t.Errorf("Relay %+v: want anycast, no precedence, group 1", rl)
		}
	}
	if l := relayByAddr(t, rep, rLimit).Outcome; l != "limit" && l != "not_started" {
		t.Errorf("Limited relay: %s", l)
	}

	// Another label finds nothing: the plugin answers only its own.
	r = l.run(l.env(), "-mode", "anycast", "-label", "relays", srcLimit)
	if r.code != exitNoRelay {
		t.Fatalf("Exit %d with another label, want 2", r.code)
	}
}

// NXDOMAIN on both designs: exit 2, the negative answers' SOA shown.
func TestNXDOMAIN(t *testing.T) {
	l := newLab(t)
	r := l.run(l.env(), srcNX)
	if r.code != exitNoRelay {
		t.Fatalf("Exit %d, want 2", r.code)
	}
	wantLine(t, r.stdout, `(?m)^  127\.0\.0\.1:\d+ udp [0-9.]+ ms: NXDOMAIN$`)
	wantLine(t, r.stdout, `2\.0\.192\.in-addr\.arpa\.\s+60\s+SOA\s+ns\.example\.net\. hostmaster\.example\.net\. 1 60 60 60 60\s+; authority`)
	if n := strings.Count(r.stdout, "=> nxdomain"); n != 3 {
		t.Errorf("%d NXDOMAIN lookups, want 3", n)
	}
	wantLine(t, r.stdout, `(?m)^result: no_relay_found: no relay found \(exit 2\)$`)

	rep := decodeJSON(t, l.run(l.env(), "-json", srcNX))
	if rep.Status != "no_relay_found" || rep.ExitCode != exitNoRelay || len(rep.Relays) != 0 || rep.Winner != nil {
		t.Errorf("JSON %+v", rep)
	}
}

// A source nothing answers for: the plugin hands rev(S) on and no plugin
// after it answers, so the server says SERVFAIL.
func TestSERVFAIL(t *testing.T) {
	l := newLab(t)
	r := l.run(l.env(), "-mode", "driad", srcUnknown)
	if r.code != exitNoRelay {
		t.Fatalf("Exit %d, want 2", r.code)
	}
	wantLine(t, r.stdout, `(?m)^  => SERVFAIL$`)
}

// AMTRELAY type 0: no relay for this source.
func TestTypeZero(t *testing.T) {
	l := newLab(t)
	r := l.run(l.env(), srcTypeNo)
	if r.code != exitNoRelay {
		t.Fatalf("Exit %d, want 2", r.code)
	}
	wantLine(t, r.stdout, `9\.100\.51\.198\.in-addr\.arpa\.\s+60\s+AMTRELAY\s+0 0 0 \.\s+; no relay for this source`)
	wantLine(t, r.stdout, `(?m)^note: DRIAD: type 0, no AMT relay should be used for this source$`)
	wantLine(t, r.stdout, `(?m)^result: no_relay_found: no relay found: DRIAD says no relay should be used for this source \(exit 2\)$`)
}

// 25 AMTRELAY records do not fit 512 bytes: the UDP reply is truncated and
// the query is asked again over TCP, which gets them all.
func TestTruncationRetriesOverTCP(t *testing.T) {
	l := newLab(t)
	l.relay(rBig, amttest.Normal)
	e := l.env()
	e.udpSize = 512
	rep := decodeJSON(t, l.run(e, "-json", "-mode", "driad", srcBig))
	if rep.ExitCode != exitOK {
		t.Fatalf("Exit %d, want 0", rep.ExitCode)
	}
	q := rep.Queries[0]
	if len(q.Exchanges) != 2 || q.Exchanges[0].Transport != "udp" || !q.Exchanges[0].Truncated || q.Exchanges[1].Transport != "tcp" || q.Exchanges[1].Truncated {
		t.Fatalf("Exchanges %+v: want a truncated UDP reply, then TCP", q.Exchanges)
	}
	if len(q.Answer) != 25 {
		t.Errorf("%d records over TCP, want 25", len(q.Answer))
	}
	if len(rep.Relays) != 25 || rep.Relays[0].Address != rBig || rep.Relays[0].Outcome != "won" || rep.Relays[1].Outcome != "not_started" {
		t.Errorf("Relays: %d, first %+v", len(rep.Relays), rep.Relays[0])
	}
}

// A resolver that never answers: a timeout, exit 2, and the time it took
// is the timeout, not more.
func TestResolverTimeout(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e := defaultEnv()
	start := time.Now()
	r := runWith(t, context.Background(), e, "-resolver", c.LocalAddr().String(), "-timeout", "200ms", "-json", srcRace)
	elapsed := time.Since(start)
	rep := decodeJSON(t, r)
	if r.code != exitNoRelay || len(rep.Queries) != 3 {
		t.Fatalf("Exit %d, %d queries, want 2 and 3", r.code, len(rep.Queries))
	}
	for _, q := range rep.Queries {
		if q.Status != "timeout" || len(q.Exchanges) != 1 || !strings.HasPrefix(q.Exchanges[0].Error, "timeout") {
			t.Errorf("Query %+v: want one exchange that timed out", q)
		}
	}
	// The three lookups run side by side.
	if elapsed > 5*time.Second {
		t.Errorf("Took %v for a 200ms timeout", elapsed)
	}
}

// Ctrl-C in the middle of the race: the command returns at once with what
// it has, exit 130, and leaves nothing running (TestMain checks for
// goroutines).
func TestInterrupt(t *testing.T) {
	l := newLab(t)
	silent := l.relay(rSilent, amttest.Silent)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- runWith(t, ctx, l.env(), "-resolver", l.dns, "-json", "-timeout", "1m", srcNone)
	}()
	waitFor(t, "the first Discovery", func() bool { return silent.Discoveries() > 0 })
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the interrupt")
	}
	rep := decodeJSON(t, r)
	if r.code != exitInterrupted || rep.Status != "interrupted" {
		t.Fatalf("Exit %d status %q, want 130 interrupted", r.code, rep.Status)
	}
	if o := relayByAddr(t, rep, rSilent).Outcome; o != "interrupted" {
		t.Errorf("Silent relay: %s, want interrupted", o)
	}
}

func TestUsage(t *testing.T) {
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"no source", nil, "SOURCE is missing"},
		{"two sources", []string{"192.0.2.1", "192.0.2.2"}, "one SOURCE only"},
		{"source not an address", []string{"example.net"}, "not an IP address"},
		{"multicast source", []string{"232.1.1.1"}, "not a unicast address"},
		{"unknown flag", []string{"-x", "192.0.2.1"}, "flag provided but not defined"},
		{"bad mode", []string{"-mode", "dns-sd", "192.0.2.1"}, "-mode"},
		{"group not multicast", []string{"-group", "192.0.2.2", "192.0.2.1"}, "not a multicast address"},
		{"group of the other family", []string{"-group", "ff3e::1", "192.0.2.1"}, "different address families"},
		{"label with a dot", []string{"-label", "a.b", "192.0.2.1"}, "not one DNS label"},
		{"empty label", []string{"-label", "", "192.0.2.1"}, "not one DNS label"},
		{"zero timeout", []string{"-timeout", "0s", "192.0.2.1"}, "-timeout"},
		{"resolver by name", []string{"-resolver", "dns.example.net", "192.0.2.1"}, "-resolver"},
		{"resolver port 0", []string{"-resolver", "127.0.0.1:0", "192.0.2.1"}, "-resolver"},
		{"resolver v6 without brackets and port", []string{"-resolver", "::1:53:x", "192.0.2.1"}, "-resolver"},
		{"flag after source missing its value", []string{"192.0.2.1", "-group"}, "flag needs an argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runWith(t, context.Background(), defaultEnv(), tc.args...)
			if r.code != exitUsage {
				t.Fatalf("Exit %d, want 3", r.code)
			}
			if !strings.Contains(r.stderr, tc.msg) || strings.Count(r.stderr, "usage: amtdiscover") != 1 || strings.Count(r.stderr, "\n") != 2 {
				t.Errorf("Stderr %q, want %q and the usage line, nothing more", r.stderr, tc.msg)
			}
			if r.stdout != "" {
				t.Errorf("Stdout %q, want nothing", r.stdout)
			}
		})
	}
	if r := runWith(t, context.Background(), defaultEnv(), "-h"); r.code != exitOK || strings.Count(r.stderr, "usage: amtdiscover") != 1 || !strings.Contains(r.stderr, "-resolver ADDR[:PORT]") {
		t.Errorf("-h: exit %d, stderr %q", r.code, r.stderr)
	}
}

// Flags may follow SOURCE, and an IPv4-mapped source is the IPv4 one.
func TestArgs(t *testing.T) {
	o, _, err := parseArgs([]string{"::ffff:198.51.100.12", "-mode", "driad", "-json", "-resolver", "[::1]:5353"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.source != netip.MustParseAddr(srcRace) || o.mode != "driad" || !o.json || o.resolvers[0] != netip.MustParseAddrPort("[::1]:5353") {
		t.Errorf("Parsed %+v", o)
	}
}

// Ctrl-C while waiting for data: exit 130, the winner stays the winner,
// and the tunnel leaves the channel on its way out.
func TestInterruptWaitingForData(t *testing.T) {
	l := newLab(t)
	relay := l.relay(rData, amttest.Normal)
	s, g := netip.MustParseAddr(srcData), netip.MustParseAddr(group)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- runWith(t, ctx, l.env(), "-resolver", l.dns, "-json", "-group", group, "-timeout", "1m", srcData)
	}()
	waitFor(t, "the join", func() bool { return relay.Joins(s, g) > 0 })
	cancel()
	r := recv(t, "the interrupted run", done)
	rep := decodeJSON(t, r)
	if r.code != exitInterrupted || rep.Status != "interrupted" || rep.Data == nil || rep.Data.Outcome != "interrupted" {
		t.Fatalf("Exit %d status %q data %+v, want 130, interrupted", r.code, rep.Status, rep.Data)
	}
	wantOutcomes(t, rep, map[string]string{rData: "won"})
	waitFor(t, "the leave", func() bool { return len(relay.Memberships()) == 0 })
}
