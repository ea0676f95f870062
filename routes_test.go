package amtrelay

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/bgp"
	"github.com/amtdns/amtrelay/bgp/bgptest"

	"github.com/miekg/dns"
)

// The sessions of these tests: the plugin's speaker (AS 64512) dials the test router (AS 64500)
// on 127.0.0.2 from 127.0.0.1. A GoBGP session takes one to two seconds to come up.
const bgpWait = 15 * time.Second

func TestParseBGP(t *testing.T) {
	const relays = "relay a 192.0.2.1\nrelay b 192.0.2.2\nrelay c 192.0.2.3\n"
	a, err := setupIn(t, t.TempDir(), "amtrelay {\n"+relays+`bgp 64512 192.0.2.100 listen 127.0.0.1:1179
bgp_neighbor 192.0.2.254 64500 port 10179 hold 30 family ipv4-multicast ipv4-unicast
bgp_neighbor 2001:db8::254 64512 passive
bgp_relays b a
bgp_community 64500:1 c
bgp_community 64500:2 a c
}`)
	if err != nil {
		t.Fatal(err)
	}
	rc := a.cfg.routes
	if rc == nil {
		t.Fatal("No routes config")
	}
	sc := rc.speaker
	if sc.LocalAS != 64512 || sc.RouterID != netip.MustParseAddr("192.0.2.100") || sc.Listen != netip.MustParseAddrPort("127.0.0.1:1179") {
		t.Errorf("Speaker %+v", sc)
	}
	n0, n1 := sc.Neighbors[0], sc.Neighbors[1]
	if n0.Address != netip.MustParseAddr("192.0.2.254") || n0.RemoteAS != 64500 || n0.Port != 10179 || n0.HoldTime != 30*time.Second ||
		n0.Families != bgp.Families(bgp.IPv4Multicast)|bgp.Families(bgp.IPv4Unicast) || n0.Passive {
		t.Errorf("First neighbor %+v", n0)
	}
	if n1.Address != netip.MustParseAddr("2001:db8::254") || n1.RemoteAS != 64512 || !n1.Passive || n1.Families != 0 {
		t.Errorf("Second neighbor %+v", n1)
	}
	name := func(ids []int) string {
		var names []string
		for _, i := range ids {
			names = append(names, a.cfg.relays[i].name)
		}
		return strings.Join(names, " ")
	}
	for _, tc := range []struct {
		comms []uint32
		want  string
	}{
		{nil, "a b"},
		{[]uint32{64500<<16 | 9}, "a b"},
		{[]uint32{64500<<16 | 1}, "c"},
		{[]uint32{64500<<16 | 2, 64500<<16 | 1, 7}, "a c"},
	} {
		if got := name(rc.relaysOf(bgp.Route{Communities: tc.comms})); got != tc.want {
			t.Errorf("Communities %v: relays %q, want %q", tc.comms, got, tc.want)
		}
	}
	if !rc.multicastFirst4 || rc.multicastFirst6 {
		t.Errorf("Multicast first: IPv4 %v, IPv6 %v; want true, false", rc.multicastFirst4, rc.multicastFirst6)
	}

	// bgp alone is connectivity enough, and bgp_relays defaults to every relay.
	a, err = setupIn(t, t.TempDir(), "amtrelay {\n"+relays+"bgp 64512 192.0.2.100\nbgp_neighbor 192.0.2.254 64500\n}")
	if err != nil {
		t.Fatal(err)
	}
	if got := name(a.cfg.routes.relays); got != "a b c" {
		t.Errorf("Default bgp_relays %q", got)
	}
}

func TestParseBGPErrors(t *testing.T) {
	const relays = "relay a 192.0.2.1\n"
	const bgpLine = "bgp 64512 192.0.2.100\n"
	const neighbor = "bgp_neighbor 192.0.2.254 64500\n"
	for _, tc := range []struct {
		props string
		err   string
	}{
		{"bgp 64512\n" + neighbor, "bgp LOCAL_AS ROUTER_ID [listen ADDRESS:PORT]"},
		{"bgp 0 192.0.2.100\n" + neighbor, `local AS "0" is not an AS number`},
		{"bgp 4294967296 192.0.2.100\n" + neighbor, `local AS "4294967296"`},
		{"bgp 64512 2001:db8::1\n" + neighbor, `router ID "2001:db8::1" is not a non-zero IPv4 address`},
		{"bgp 64512 192.0.2.100 listen 127.0.0.1\n" + neighbor, `listen "127.0.0.1" is not ADDRESS:PORT`},
		{"bgp 64512 192.0.2.100 port 179\n" + neighbor, "bgp LOCAL_AS ROUTER_ID"},
		{bgpLine, "bgp: no neighbors"},
		{bgpLine + bgpLine + neighbor, "bgp given twice"},
		{neighbor, "Testfile:3 - Error during parsing: bgp_neighbor without bgp"},
		{"bgp_relays a\n", "bgp_relays without bgp"},
		{"bgp_community 1:1 a\n", "bgp_community without bgp"},
		{bgpLine + "bgp_neighbor 192.0.2.254\n", "bgp_neighbor ADDRESS REMOTE_AS"},
		{bgpLine + "bgp_neighbor peer 64500\n", `"peer" is not an IP address`},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 hold 2\n", `hold "2": want whole seconds from 3 to 65535`},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 port 0\n", `port "0" is not a TCP port`},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 port\n", "port needs a value"},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 family\n", "family needs at least one"},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 family ipv4-anycast\n", `family "ipv4-anycast"`},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 passive passive\n", "passive given twice"},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 multihop\n", `unknown option "multihop"`},
		{bgpLine + "bgp_neighbor 192.0.2.254 64500 passive\n", "Testfile:3 - Error during parsing: bgp: neighbor 192.0.2.254: passive, but the speaker does not listen"},
		{bgpLine + neighbor + neighbor, "neighbor 192.0.2.254 configured twice"},
		{bgpLine + strings.Repeat(neighbor, 9), "more than 8 neighbors"},
		{bgpLine + neighbor + "bgp_relays\n", "bgp_relays needs at least one relay name"},
		{bgpLine + neighbor + "bgp_relays a z\n", `Testfile:5 - Error during parsing: bgp_relays: unknown relay "z"`},
		{bgpLine + neighbor + "bgp_community 64500:1\n", "bgp_community ASN:VALUE NAME..."},
		{bgpLine + neighbor + "bgp_community 64500 a\n", `"64500" is not a community ASN:VALUE`},
		{bgpLine + neighbor + "bgp_community 65536:1 a\n", `"65536:1"`},
		{bgpLine + neighbor + "bgp_community 1:1 a\nbgp_community 1:1 a\n", "bgp_community 1:1 given twice"},
		{bgpLine + neighbor + "bgp_community 1:1 z\n", `bgp_community: unknown relay "z"`},
	} {
		_, err := setupIn(t, t.TempDir(), "amtrelay {\n"+relays+tc.props+"}")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want one with %q", tc.props, err, tc.err)
		}
	}
	if _, err := setupIn(t, t.TempDir(), "amtrelay {\n"+relays+"}"); err == nil || !strings.Contains(err.Error(), "no source, sources file or bgp") {
		t.Errorf("No connectivity at all: %v", err)
	}
}

// bgpCorefile is a server whose connectivity comes from the router and the extra lines.
func bgpCorefile(readyAddr string, r *bgptest.Router, extra string) string {
	return fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	ready %s
	amtrelay {
		relay a 127.0.0.120
		relay b 127.0.0.121
		relay c 127.0.0.122
		bgp 64512 192.0.2.1
		bgp_neighbor %s %d port %d family ipv4-multicast ipv4-unicast
		bgp_relays a
		bgp_community 64500:7 b
		health_check off
		explain
%s	}
	whoami
}
`, readyAddr, r.Addr().Addr(), r.ASN(), r.Addr().Port(), extra)
}

// The plugin's table follows the router's multicast RIB: a route announced maps S to the
// bgp_relays or to the relays of its community, a withdrawal takes it out, a unicast route fills
// in only where no multicast route is, the longest prefix wins across the Corefile's lines and
// BGP and the lines win a tie; readiness waits for End-of-RIB; the metrics and the explanation
// say where a route came from.
func TestBGPRoutes(t *testing.T) {
	r := bgptest.Start(t, bgptest.Options{})
	// Before the session: the first table comes whole, ahead of End-of-RIB.
	r.Announce(r.Path(bgptest.IPv4Multicast, "198.51.100.0/24"), r.Path(bgptest.IPv4Multicast, "203.0.113.0/24", 64500<<16|7))
	readyAddr := freePort(t)
	s := startServer(t, bgpCorefile(readyAddr, r, "\t\tsource 203.0.113.0/24 c\n"))
	start := time.Now()
	expectReady(t, readyAddr, 200)
	t.Logf("Ready %v after start-up", time.Since(start).Round(time.Millisecond))
	// Ready means the table was complete: no waiting here.
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
		t.Errorf("Ready, and %s gets %s; want relay a (bgp_relays)", apexS, got)
	}
	// The source line wins the tie with BGP's 203.0.113.0/24 (whose community says b).
	if got := addressesOf(t, s, "udp", apexNoCanary); got != "127.0.0.122" {
		t.Errorf("%s: %s, want relay c of the source line", apexNoCanary, got)
	}

	// A longer BGP prefix wins over the source line.
	r.Announce(r.Path(bgptest.IPv4Multicast, "203.0.113.0/29", 64500<<16|7))
	eventually(t, "the /29 from BGP", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexNoCanary)
		return got == "127.0.0.121", got
	})
	if got := series(t, "coredns_amtrelay_sources")[""]; got != 3 {
		t.Errorf("sources gauge %v, want 3 (203.0.113.0/24 in both counts once)", got)
	}
	if got := series(t, "coredns_amtrelay_bgp_session_up"); got["neighbor=127.0.0.2"] != 1 {
		t.Errorf("bgp_session_up %v", got)
	}
	if got := series(t, "coredns_amtrelay_bgp_prefixes"); got["family=ipv4-multicast,neighbor=127.0.0.2"] != 3 || got["family=ipv4-unicast,neighbor=127.0.0.2"] != 0 {
		t.Errorf("bgp_prefixes %v", got)
	}
	if got := explainLines(explainQuery(t, s, apexNoCanary)); !strings.Contains(got, "table: 203.0.113.0/29 from BGP neighbor 127.0.0.2, ipv4-multicast, communities 64500:7") {
		t.Errorf("Explanation:\n%s", got)
	}

	// A unicast route stands in only where there is no multicast route.
	uc := r.Path(bgptest.IPv4Unicast, "198.51.100.0/24", 64500<<16|7)
	r.Announce(uc, r.Path(bgptest.IPv4Unicast, "192.0.2.0/24", 64500<<16|7))
	const apexUnicastOnly = "amt.9.2.0.192.in-addr.arpa."
	eventually(t, "the unicast-only prefix", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexUnicastOnly)
		return got == "127.0.0.121", got
	})
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
		t.Errorf("With a unicast route beside the multicast one, %s gets %s; want the multicast route's relay a", apexS, got)
	}
	r.Withdraw(r.Path(bgptest.IPv4Multicast, "198.51.100.0/24"))
	eventually(t, "the unicast route in the multicast route's place", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexS)
		return got == "127.0.0.121", got
	})
	r.Withdraw(uc)
	eventually(t, "no route for S", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexS)
		return got == "NXDOMAIN", got
	})

	// The router goes away: its routes go with the session, the source line stays.
	r.Stop()
	eventually(t, "the session's routes gone", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexNoCanary)
		return got == "127.0.0.122", got
	})
	if got := series(t, "coredns_amtrelay_bgp_session_up"); got["neighbor=127.0.0.2"] != 0 {
		t.Errorf("bgp_session_up after the router stopped: %v", got)
	}
	if got := readyStatus(readyAddr); got != 200 {
		t.Errorf("Ready %d after the session went down: readiness latches once synced", got)
	}
}

// A Corefile reload with the same bgp lines keeps the speaker, its session and its routes; a
// changed one makes a new speaker.
func TestBGPSurvivesReload(t *testing.T) {
	r := bgptest.Start(t, bgptest.Options{})
	r.Announce(r.Path(bgptest.IPv4Multicast, "198.51.100.0/24"))
	readyAddr := freePort(t)
	s := startServer(t, bgpCorefile(readyAddr, r, ""))
	expectReady(t, readyAddr, 200)
	first := currentSpeaker(t)
	since := first.Status().Neighbors[0].Since

	s.reload(t, bgpCorefile(readyAddr, r, "\t\tttl 60\n"))
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
		t.Errorf("Right after the reload: %s", got)
	}
	if sp := currentSpeaker(t); sp != first {
		t.Errorf("The reload made a new speaker")
	}
	if st := first.Status().Neighbors[0]; !st.Established || !st.Since.Equal(since) {
		t.Errorf("After the reload the session is %+v; want established since %v", st, since)
	}

	if raceEnabled {
		// The new speaker's StartBgp writes GoBGP's package-wide route selection options while
		// the old one, stopping, reads them: the same defaults, but a data race all the same.
		t.Skip("a changed bgp line under the race detector: GoBGP v4.8.0 races with itself")
	}
	s.reload(t, strings.Replace(bgpCorefile(readyAddr, r, ""), "bgp 64512 192.0.2.1", "bgp 64512 192.0.2.2", 1))
	eventually(t, "a new speaker with the new router ID", bgpWait, func() (bool, string) {
		sp := currentSpeaker(t)
		return sp != first && sp.Config().RouterID == netip.MustParseAddr("192.0.2.2"), ""
	})
	eventually(t, "S answered from the new speaker's routes", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexS)
		return got == "127.0.0.120", got
	})
}

// A reload that keeps the bgp lines answers from the routes the speaker kept from its first query
// on: however soon after the reload a learned source is asked for, it is in the table. (The new
// instance once started with an empty table and answered NXDOMAIN until its subscription caught
// up, a few milliseconds.)
func TestBGPReloadAnswersAtOnce(t *testing.T) {
	r := bgptest.Start(t, bgptest.Options{})
	r.Announce(r.Path(bgptest.IPv4Multicast, "198.51.100.0/24"))
	readyAddr := freePort(t)
	s := startServer(t, bgpCorefile(readyAddr, r, ""))
	expectReady(t, readyAddr, 200)

	var (
		mu     sync.Mutex
		misses []string
		stop   atomic.Bool
		wg     sync.WaitGroup
		asked  atomic.Int64
	)
	miss := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		if len(misses) < 10 {
			misses = append(misses, what)
		}
	}
	// Queriers that reach each new server as soon as it reads the socket it takes over.
	addr := s.udp
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Timeout: 2 * time.Second}
			for !stop.Load() {
				q := new(dns.Msg)
				q.SetQuestion(apexS, dns.TypeA)
				m, _, err := c.Exchange(q, addr)
				asked.Add(1)
				switch {
				case err != nil:
					miss("a querier: " + err.Error())
				case len(m.Answer) != 1:
					miss(fmt.Sprintf("a querier: %s with %d answers", dns.RcodeToString[m.Rcode], len(m.Answer)))
				}
			}
		}()
	}
	const reloads = 40
	for i := range reloads {
		s.reload(t, bgpCorefile(readyAddr, r, fmt.Sprintf("\t\tttl %d\n", 60+i%2)))
		if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
			miss(fmt.Sprintf("right after reload %d: %s", i+1, got))
		}
		time.Sleep(10 * time.Millisecond) // paced, as reloads are
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reloads, %d queries from the queriers", reloads, asked.Load())
	if len(misses) > 0 {
		t.Errorf("S missed across reloads that kept the bgp lines (first %d): %s", len(misses), strings.Join(misses, "; "))
	}
}

// currentSpeaker is the speaker of the one running instance.
func currentSpeaker(t *testing.T) *bgp.Speaker {
	t.Helper()
	cur := current()
	if len(cur) != 1 || cur[0].routes == nil {
		t.Fatalf("%d running instances", len(cur))
	}
	return cur[0].routes.speaker.Load()
}

// A reload that fails after the new instance acquired a speaker for changed bgp lines releases
// it: the running instance keeps its speaker and session, and the discarded one's is gone.
func TestBGPFailedReload(t *testing.T) {
	r := bgptest.Start(t, bgptest.Options{})
	// Without ready: CoreDNS's ready plugin leaves its listener of a failed reload running.
	corefile := strings.Replace(bgpCorefile("", r, ""), "\tready \n", "", 1)
	s := startServer(t, corefile)
	eventually(t, "synced", bgpWait, func() (bool, string) { return current()[0].Ready(), "" })
	running := currentSpeaker(t)
	since := running.Status().Neighbors[0].Since
	goroutines := runtime.NumGoroutine()

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	failing := strings.Replace(corefile, "bgp 64512 192.0.2.1", "bgp 64512 192.0.2.3", 1) +
		fmt.Sprintf("ip6.arpa:%s {\n\tbind 127.0.0.1\n\twhoami\n}\n", port)
	caddyMu.Lock()
	_, err = s.inst.Restart(corefileInput(failing))
	caddyMu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Expected a bind failure, got %v", err)
	}
	if sp := currentSpeaker(t); sp != running {
		t.Errorf("The failed reload replaced the speaker")
	}
	eventually(t, "the discarded speaker gone", 5*time.Second, func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= goroutines+2, fmt.Sprintf("%d goroutines, %d before", n, goroutines)
	})
	if st := running.Status().Neighbors[0]; !st.Established || !st.Since.Equal(since) {
		t.Errorf("After the failed reload the session is %+v; want established since %v", st, since)
	}
}

// An ipv6-multicast route for an IPv4-mapped prefix is no IPv6 source's route: it is ignored,
// with one warning, so that it neither replaces the IPv4 family's route for the same addresses
// nor, withdrawn, takes that route out of the table while the speaker still has it. A route of
// another IPv6 prefix, announced after it, marks when the router's updates have been read.
func TestBGPIgnoresIPv4MappedRoutes(t *testing.T) {
	logs := captureLog(t)
	r := bgptest.Start(t, bgptest.Options{})
	r.Announce(r.Path(bgptest.IPv4Multicast, "198.51.100.0/24"))
	readyAddr := freePort(t)
	s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 ip6.arpa:0 {
	bind 127.0.0.1
	ready %s
	amtrelay {
		relay a 127.0.0.120
		relay b 127.0.0.121
		bgp 64512 192.0.2.1
		bgp_neighbor %s %d port %d family ipv4-multicast ipv6-multicast
		bgp_relays a
		bgp_community 64500:7 b
		health_check off
	}
	whoami
}
`, readyAddr, r.Addr().Addr(), r.ASN(), r.Addr().Port()))
	expectReady(t, readyAddr, 200)
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
		t.Fatalf("%s: %s, want relay a of the ipv4-multicast route", apexS, got)
	}

	mapped := r.Path(bgptest.IPv6Multicast, "::ffff:198.51.100.0/120", 64500<<16|7)
	marker := r.Path(bgptest.IPv6Multicast, "2001:db8:100::/48", 64500<<16|7)
	r.Announce(mapped)
	r.Announce(marker)
	eventually(t, "the marker route", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexV6)
		return got == "127.0.0.121", got
	})
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
		t.Errorf("With the mapped route announced, %s gets %s; want relay a of the ipv4-multicast route", apexS, got)
	}

	r.Withdraw(mapped)
	r.Withdraw(marker)
	eventually(t, "the marker route withdrawn", bgpWait, func() (bool, string) {
		got := addressesOf(t, s, "udp", apexV6)
		return got == "NXDOMAIN", got
	})
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.120" {
		t.Errorf("With the mapped route withdrawn, %s gets %s; want relay a of the ipv4-multicast route", apexS, got)
	}
	const warning = "Ignoring BGP route ::ffff:198.51.100.0/120 (ipv6-multicast from 127.0.0.2)"
	if got := logs.String(); strings.Count(got, warning) != 1 || strings.Count(got, "Ignoring BGP route") != 1 {
		t.Errorf("Want one warning %q, logged:\n%s", warning, got)
	}
}
