package amtrelay

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"

	"github.com/miekg/dns"
)

// The canary of the tests: a beacon (10.0.0.1, 232.1.1.1) that the test sends into chosen fixture
// relays, covering 198.51.100.0/24 (where apexS's source is); 203.0.113.0/24 has no canary.
var (
	beaconSource = netip.MustParseAddr("10.0.0.1")
	beaconGroup  = netip.MustParseAddr("232.1.1.1")
)

const apexNoCanary = "amt.5.113.0.203.in-addr.arpa."

// beacon sends one data packet of the canary channel into each relay in to every 50 ms, as a real
// beacon through a relay with multicast connectivity would, until stopped.
type beacon struct {
	mu   sync.Mutex
	to   map[*amttest.Responder]bool
	stop chan struct{}
	done chan struct{}
}

func startBeacon(t *testing.T, relays ...*amttest.Responder) *beacon {
	b := &beacon{to: map[*amttest.Responder]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	b.set(relays...)
	go func() {
		defer close(b.done)
		for {
			select {
			case <-b.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			b.mu.Lock()
			for r := range b.to {
				r.Inject(beaconSource, beaconGroup, []byte("beacon"))
			}
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(b.stop)
		<-b.done
	})
	return b
}

// set makes the beacon reach exactly relays: the others have lost their path to the source.
func (b *beacon) set(relays ...*amttest.Responder) {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.to)
	for _, r := range relays {
		b.to[r] = true
	}
}

func canaryCorefile(allDown string, r0, r1 *amttest.Responder, extra string) string {
	return fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay c0 %s probe %s
		relay c1 %s probe %s
		source 198.51.100.0/24 c0 c1
		source 203.0.113.0/24 c0 c1
		canary 198.51.100.0/24 %s %s
		health_check 200ms timeout 100ms fails 2 rises 2
		all_down %s
%s	}
	whoami
}
`, r0.Addr().Addr(), r0.Addr(), r1.Addr().Addr(), r1.Addr(), beaconSource, beaconGroup, allDown, extra)
}

// A relay is handed out for sources under a canary only while the canary's data comes through it;
// sources without a canary are not affected; when no relay passes, all_down fallthrough hands the
// query on.
func TestCanaryFiltersRelays(t *testing.T) {
	r0 := startResponder(t, "127.0.0.81:0")
	r1 := startResponder(t, "127.0.0.82:0")
	b := startBeacon(t, r0, r1)
	s := startServer(t, canaryCorefile("fallthrough", r0, r1, ""))
	expectAddresses(t, s, "127.0.0.81 127.0.0.82")

	// c1 loses its path to the beacon's source.
	b.set(r0)
	start := time.Now()
	expectAddresses(t, s, "127.0.0.81")
	t.Logf("c1 left the answers %v after its canary stopped (2 intervals of 200ms)", time.Since(start).Round(time.Millisecond))
	if got := addressesOf(t, s, "udp", apexNoCanary); got != "127.0.0.81 127.0.0.82" {
		t.Errorf("A source without a canary: %s, want both relays", got)
	}
	eventually(t, "canary_up{c1} 0 and canary_up{c0} 1", 5*time.Second, func() (bool, string) {
		up := series(t, "coredns_amtrelay_canary_up")
		return up["canary=198.51.100.0/24,relay=c1"] == 0 && up["canary=198.51.100.0/24,relay=c0"] == 1, fmt.Sprint(up)
	})
	if n := series(t, "coredns_amtrelay_canary_packets_total")["canary=198.51.100.0/24,relay=c0"]; n < 2 {
		t.Errorf("canary_packets_total{c0} %v, want the beacon's packets counted", n)
	}

	// Nobody reaches the source: the query goes to the next plugin.
	b.set()
	eventually(t, "the query handed on", 10*time.Second, func() (bool, string) {
		r := s.query(t, "udp", apexS, dns.TypeA)
		return r.fellThrough(), r.msg.String()
	})
	if got := addressesOf(t, s, "udp", apexNoCanary); got != "127.0.0.81 127.0.0.82" {
		t.Errorf("A source without a canary after the beacon stopped: %s", got)
	}
	b.set(r1)
	expectAddresses(t, s, "127.0.0.82")
}

// A canary that stops getting data is down within (fails+1) x interval + timeout of the cut, and one
// that keeps getting it never fails a check, though the data waits in the tunnel's socket between
// checks and every check of the instance runs on one ticker.
func TestCanaryDetectionBound(t *testing.T) {
	r0 := startResponder(t, "127.0.0.87:0")
	r1 := startResponder(t, "127.0.0.88:0")
	b := startBeacon(t, r0, r1)
	startServer(t, canaryCorefile("serve", r0, r1, ""))
	const c0, c1 = "canary=198.51.100.0/24,relay=c0", "canary=198.51.100.0/24,relay=c1"
	// Up, and checked with data: the first check decides at once, the next ones by fails and rises.
	eventually(t, "both canaries up after a check with data", 5*time.Second, func() (bool, string) {
		up, n := series(t, "coredns_amtrelay_canary_up"), series(t, "coredns_amtrelay_canary_packets_total")
		return up[c0] == 1 && up[c1] == 1 && n[c0] > 0 && n[c1] > 0, fmt.Sprint(up, n)
	})
	passed := series(t, "coredns_amtrelay_canary_packets_total")[c0]

	// health_check 200ms timeout 100ms fails 2: (2+1) x 200ms + 100ms. The check that straddles
	// the cut still has data, so detection takes between two and three intervals; the slack, as
	// e2e's, is for a loaded machine (here running the race detector).
	const bound, slack = 700 * time.Millisecond, time.Second
	b.set(r0)
	cut := time.Now()
	for series(t, "coredns_amtrelay_canary_up")[c1] != 0 {
		if time.Since(cut) > bound+slack {
			t.Fatalf("c1's canary still up %v after its data stopped", time.Since(cut))
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(cut)
	t.Logf("c1's canary down %v after its data stopped (bound %v)", took.Round(time.Millisecond), bound)
	if took < 150*time.Millisecond {
		t.Errorf("c1's canary down after %v: a single check without data took it down", took)
	}
	// c0 kept its data: up throughout, its packets counted.
	time.Sleep(3 * 200 * time.Millisecond)
	if up := series(t, "coredns_amtrelay_canary_up")[c0]; up != 1 {
		t.Errorf("canary_up{c0} %v, want 1: its data never stopped", up)
	}
	if n := series(t, "coredns_amtrelay_canary_packets_total")[c0]; n < passed+10 {
		t.Errorf("canary_packets_total{c0} went from %v to %v in over a second of a 50ms beacon", passed, n)
	}
}

// An instance checks the canaries of all its relays on one goroutine and one ticker, whatever their
// number: the goroutines that join the channels end once joined, and none is left per relay but its
// tunnel's. Stopping leaves every channel and ends every tunnel.
func TestCanarySweepOneGoroutine(t *testing.T) {
	const relays = 20
	r := startResponder(t, "127.0.0.93:0")
	block := "amtrelay in-addr.arpa {\n"
	names := ""
	for i := range relays {
		// One fixture relay, many relay addresses: all but the first refuse, which does not
		// matter here; what matters is how many goroutines check them.
		addr := r.Addr()
		if i > 0 {
			addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 9, byte(i)}), r.Addr().Port())
		}
		block += fmt.Sprintf("relay s%d %s probe %s\n", i, addr.Addr(), addr)
		names += fmt.Sprintf(" s%d", i)
	}
	block += fmt.Sprintf("source 198.51.100.0/24%s\ncanary 198.51.100.0/24 %s %s\nhealth_check 100ms timeout 50ms\n}", names, beaconSource, beaconGroup)
	a := newTestPlugin(t, block)
	a.start()
	count := func(fn string) int {
		buf := make([]byte, 1<<22)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), fn)
	}
	eventually(t, "the channels joined", 5*time.Second, func() (bool, string) {
		canaryTunnels.Lock()
		n := len(canaryTunnels.byTarget)
		canaryTunnels.Unlock()
		joining := count("amtrelay.(*prober).joinCanaries")
		return n == relays && joining == 0, fmt.Sprintf("%d tunnels, %d goroutines joining", n, joining)
	})
	if n := count("amtrelay.(*prober).canarySweep("); n != 1 {
		t.Errorf("%d canary sweepers for %d relays, want 1", n, relays)
	}
	eventually(t, "the canaries checked", 5*time.Second, func() (bool, string) {
		_, first := a.health.last(0)
		_, last := a.health.last(relays - 1)
		return first[0].result != "" && last[0].result != "", fmt.Sprint(first, last)
	})
	a.stop()
	canaryTunnels.Lock()
	n := len(canaryTunnels.byTarget)
	canaryTunnels.Unlock()
	if n != 0 {
		t.Errorf("%d canary tunnels left after the instance stopped", n)
	}
	eventually(t, "the channel left at the relay", 5*time.Second, func() (bool, string) {
		m := r.Memberships()
		return len(m) == 0, fmt.Sprint(m)
	})
}

// A relay whose handshake comes back is handed out for the sources under a canary as soon as for
// the others: its canary failed for want of a tunnel while it was down, and waiting out rises
// checks for data would answer those sources with fewer relays (or none) while the relay serves.
func TestCanaryPresumedWithTheHandshake(t *testing.T) {
	r0 := startResponder(t, "127.0.0.85:0")
	r1 := startResponder(t, "127.0.0.86:0")
	startBeacon(t, r0, r1)
	s := startServer(t, canaryCorefile("nodata", r0, r1, ""))
	expectAddresses(t, s, "127.0.0.85 127.0.0.86")

	r1.Stop()
	eventually(t, "c1's handshake and canary down", 5*time.Second, func() (bool, string) {
		up := series(t, "coredns_amtrelay_canary_up")["canary=198.51.100.0/24,relay=c1"]
		return relayUpValue(t, "c1") == 0 && up == 0, fmt.Sprintf("relay_up %v, canary_up %v", relayUpValue(t, "c1"), up)
	})
	if err := r1.Restart(); err != nil {
		t.Fatal(err)
	}
	// Ask for the source without a canary first: once c1 is there, its handshake is up, and the
	// source under the canary, asked after, must have it too.
	eventually(t, "c1 back for both sources", 5*time.Second, func() (bool, string) {
		plain := addressesOf(t, s, "udp", apexNoCanary)
		underCanary := addressesOf(t, s, "udp", apexS)
		if plain == "127.0.0.85 127.0.0.86" && underCanary != plain {
			t.Fatalf("c1 is back for %s but not yet for %s (%s)", apexNoCanary, apexS, underCanary)
		}
		return underCanary == "127.0.0.85 127.0.0.86", underCanary
	})
	// The data comes through the tunnel again, and keeps the presumed canary up.
	time.Sleep(3 * 200 * time.Millisecond)
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.85 127.0.0.86" {
		t.Errorf("three checks after c1 came back: %s", got)
	}
}

// The canary tunnel is one per relay address and survives a Corefile reload that keeps the canary:
// the relay sees one join, not a leave and a join; a reload that drops the canary leaves it.
func TestCanaryTunnelAcrossReloads(t *testing.T) {
	r0 := startResponder(t, "127.0.0.83:0")
	r1 := startResponder(t, "127.0.0.84:0")
	startBeacon(t, r0, r1)
	s := startServer(t, canaryCorefile("serve", r0, r1, ""))
	eventually(t, "one membership at each relay", 5*time.Second, func() (bool, string) {
		m0, m1 := r0.Memberships(), r1.Memberships()
		return len(m0) == 1 && len(m1) == 1, fmt.Sprint(m0, m1)
	})
	joins := r0.Joins(beaconSource, beaconGroup)

	s.reload(t, canaryCorefile("nodata", r0, r1, ""))
	time.Sleep(time.Second) // several intervals of the new instance
	if got := r0.Joins(beaconSource, beaconGroup); got != joins {
		t.Errorf("Joins at the relay went from %d to %d across a reload that kept the canary", joins, got)
	}
	if m := r0.Memberships(); len(m) != 1 {
		t.Errorf("Memberships after the reload: %v", m)
	}
	expectAddresses(t, s, "127.0.0.83 127.0.0.84")

	// Without the canary line: the channel is left at both relays.
	s.reload(t, strings.Replace(canaryCorefile("nodata", r0, r1, ""), "canary 198.51.100.0/24", "# canary 198.51.100.0/24", 1))
	eventually(t, "the canary channel left", 5*time.Second, func() (bool, string) {
		m0, m1 := r0.Memberships(), r1.Memberships()
		return len(m0) == 0 && len(m1) == 0, fmt.Sprint(m0, m1)
	})
	if got := series(t, "coredns_amtrelay_canary_up"); len(got) != 0 {
		t.Errorf("canary_up series after the canary was dropped: %v", got)
	}
	canaryTunnels.Lock()
	n := len(canaryTunnels.byTarget)
	canaryTunnels.Unlock()
	if n != 0 {
		t.Errorf("%d canary tunnels still running", n)
	}
}

// The handshake modes: request (the default) fails a relay that answers Discoveries but no
// Requests, or sets L; discovery keeps the old check.
func TestHandshakeModes(t *testing.T) {
	for _, tc := range []struct {
		mode    amttest.Mode
		option  string
		want    string // answer for apexS
		outcome string // probes_total result of the bad relay
	}{
		{amttest.RequestSilent, "", "127.0.0.91", "no_query"},
		{amttest.Limit, "handshake request", "127.0.0.91", "limit"},
		{amttest.RequestSilent, "handshake discovery", "127.0.0.91 127.0.0.92", "ok"},
	} {
		t.Run(fmt.Sprint(tc.mode, "/", tc.option), func(t *testing.T) {
			good := startResponder(t, "127.0.0.91:0")
			bad := startResponder(t, "127.0.0.92:0")
			bad.SetMode(tc.mode)
			logs := captureLog(t)
			before := series(t, "coredns_amtrelay_probes_total")["relay=hb,result="+tc.outcome]
			s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay hg %s probe %s
		relay hb %s probe %s
		source 198.51.100.0/24 hg hb
		health_check 200ms timeout 100ms %s
		all_down serve
	}
}
`, good.Addr().Addr(), good.Addr(), bad.Addr().Addr(), bad.Addr(), tc.option))
			expectAddresses(t, s, tc.want)
			eventually(t, "probes_total{hb,"+tc.outcome+"}", 5*time.Second, func() (bool, string) {
				n := series(t, "coredns_amtrelay_probes_total")["relay=hb,result="+tc.outcome] - before
				return n > 0, fmt.Sprint(n)
			})
			if tc.outcome != "ok" && !strings.Contains(logs.String(), "relay hb 127.0.0.92 down: "+tc.outcome+" at request x1") {
				t.Errorf("Expected the transition log to name the step, got %q", logs)
			}
		})
	}
}

// A relay whose probe name moves to another address (renumbering, the reason relays are named)
// takes its canaries along: they follow the name's lookups to the new address's tunnel.
func TestCanaryFollowsProbeName(t *testing.T) {
	old := startResponder(t, "127.0.0.93:0")
	port := old.Addr().Port()
	renumbered, err := amttest.Start(fmt.Sprintf("127.0.0.94:%d", port))
	if err != nil {
		t.Skipf("No second relay on port %d: %v", port, err)
	}
	t.Cleanup(func() { renumbered.Stop() })
	b := startBeacon(t, old)
	a := newTestPlugin(t, fmt.Sprintf(`amtrelay in-addr.arpa {
	relay r1 192.0.2.1 probe relay.test:%d
	source 198.51.100.0/24 r1
	canary 198.51.100.0/24 %s %s
	health_check 200ms timeout 100ms fails 2 rises 2
}`, port, beaconSource, beaconGroup))
	var points atomic.Pointer[netip.Addr]
	at := old.Addr().Addr()
	points.Store(&at)
	a.prober.lookup = func(context.Context, string) ([]netip.Addr, error) { return []netip.Addr{*points.Load()}, nil }
	a.start()
	t.Cleanup(func() { a.stop() })
	canaryOn := func(r *amttest.Responder) func() (bool, string) {
		return func() (bool, string) {
			_, canaries := a.health.last(0)
			canaryTunnels.Lock()
			_, tunnel := canaryTunnels.byTarget[r.Addr()]
			canaryTunnels.Unlock()
			return canaries[0].ok && tunnel, fmt.Sprintf("canary %+v, tunnel to %v: %v", canaries[0], r.Addr(), tunnel)
		}
	}
	eventually(t, "the canary up through the first address", 5*time.Second, canaryOn(old))

	at = renumbered.Addr().Addr()
	points.Store(&at)
	b.set(renumbered)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the canary up through the name's new address", 5*time.Second, canaryOn(renumbered))
	canaryTunnels.Lock()
	_, stale := canaryTunnels.byTarget[old.Addr()]
	canaryTunnels.Unlock()
	if stale {
		t.Errorf("The tunnel to the old address %v is still held", old.Addr())
	}
}

// Relays that keep one tunnel per gateway IP address, as the Linux driver does (the first Request's
// port gets every Query; Updates count only with the latest Request's nonce and MAC): the probes'
// handshakes and the canary tunnel are one gateway to them, so both stay up interval after interval.
// From two sockets, whichever Request came first would take every Query (the other side ends
// no_query, or its canary gets no data), and each probe's Request would void the canary's joins.
func TestCanaryAndHandshakeAtKernelRelays(t *testing.T) {
	cfg := amttest.Config{OneTunnelPerGatewayIP: true, GatewayTimeout: time.Second}
	r0 := startRelayConfig(t, "127.0.0.95:0", cfg)
	r1 := startRelayConfig(t, "127.0.0.96:0", cfg)
	startBeacon(t, r0, r1)
	s := startServer(t, canaryCorefile("nodata", r0, r1, ""))
	const c0, c1 = "canary=198.51.100.0/24,relay=c0", "canary=198.51.100.0/24,relay=c1"
	eventually(t, "both relays and canaries up, with data", 5*time.Second, func() (bool, string) {
		up, n := series(t, "coredns_amtrelay_canary_up"), series(t, "coredns_amtrelay_canary_packets_total")
		return relayUpValue(t, "c0") == 1 && relayUpValue(t, "c1") == 1 && up[c0] == 1 && up[c1] == 1 && n[c0] > 0 && n[c1] > 0,
			fmt.Sprintf("relay_up %v %v, canary_up %v, packets %v", relayUpValue(t, "c0"), relayUpValue(t, "c1"), up, n)
	})
	probes := func() map[string]float64 { return series(t, "coredns_amtrelay_probes_total") }
	before, packetsBefore := probes(), series(t, "coredns_amtrelay_canary_packets_total")

	// Ten intervals, twice the relays' expiry of a tunnel whose Updates they drop.
	const watch = 2 * time.Second
	for end := time.Now().Add(watch); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		up := series(t, "coredns_amtrelay_canary_up")
		if relayUpValue(t, "c0") != 1 || relayUpValue(t, "c1") != 1 || up[c0] != 1 || up[c1] != 1 {
			t.Fatalf("relay_up %v %v, canary_up %v; probes %v; relays %+v %+v", relayUpValue(t, "c0"), relayUpValue(t, "c1"),
				up, probes(), r0.Stats(), r1.Stats())
		}
	}
	if got := addressesOf(t, s, "udp", apexS); got != "127.0.0.95 127.0.0.96" {
		t.Errorf("Answer %s, want both relays", got)
	}
	after, packetsAfter := probes(), series(t, "coredns_amtrelay_canary_packets_total")
	for _, relay := range []string{"c0", "c1"} {
		ok := after["relay="+relay+",result=ok"] - before["relay="+relay+",result=ok"]
		if ok < 5 || after["relay="+relay+",result=no_query"] != before["relay="+relay+",result=no_query"] {
			t.Errorf("Relay %s: %v handshakes ok in %v, probes %v", relay, ok, watch, after)
		}
		ch := "canary=198.51.100.0/24,relay=" + relay
		if n := packetsAfter[ch] - packetsBefore[ch]; n < 10 {
			t.Errorf("Canary of %s: %v packets in %v of a 50ms beacon", relay, n, watch)
		}
	}
}

func startRelayConfig(t *testing.T, addr string, cfg amttest.Config) *amttest.Responder {
	t.Helper()
	r, err := amttest.StartConfig(addr, cfg)
	if err != nil {
		t.Fatalf("Responder on %s: %v", addr, err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

// A probe whose canary tunnel ends under it (a reload dropped the canaries, or the name moved) makes
// the handshake as it would without canaries rather than failing the relay.
func TestProbeOutlivesTheCanaryTunnel(t *testing.T) {
	r := startResponder(t, "127.0.0.97:0")
	a := newTestPlugin(t, fmt.Sprintf(`amtrelay in-addr.arpa {
	relay r1 %s probe %s
	source 198.51.100.0/24 r1
	health_check 200ms timeout 100ms
}`, r.Addr().Addr(), r.Addr()))
	holdProbeClient()
	defer releaseProbeClient()
	st, err := acquireTunnel(r.Addr(), amt.TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.release()
	if o := a.prober.probeOne(context.Background(), r.Addr()); o.result != amt.ResultOK || o.rtt <= 0 {
		t.Errorf("Probe through the tunnel: %+v", o)
	}
	st.tunnel.Close()
	if o := a.prober.probeOne(context.Background(), r.Addr()); o.result != amt.ResultOK {
		t.Errorf("Probe once the tunnel ended: %+v", o)
	}
}
