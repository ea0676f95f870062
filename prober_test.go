package amtrelay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Probe timing for the health tests: fast enough to keep the package quick, slow enough for -race.
const (
	testInterval = 250 * time.Millisecond
	testTimeout  = 200 * time.Millisecond
	testFails    = 2
	testRises    = 2
)

func startResponder(t *testing.T, addr string) *amttest.Responder {
	t.Helper()
	r, err := amttest.Start(addr)
	if err != nil {
		t.Fatalf("Responder on %s: %v", addr, err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

// freePort finds a loopback TCP port for the ready plugin's listener.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// healthCorefile builds a server whose relays are the given fixture responders, each relay named
// after its position (h0, h1, ...) and probed at the responder's port; readyAddr "" leaves out *ready*.
func healthCorefile(readyAddr, allDown string, responders ...*amttest.Responder) string {
	var b strings.Builder
	fmt.Fprintf(&b, "in-addr.arpa:0 {\n\tbind 127.0.0.1\n")
	if readyAddr != "" {
		fmt.Fprintf(&b, "\tready %s {\n\t\tmonitor continuously\n\t}\n", readyAddr)
	}
	fmt.Fprintf(&b, "\tamtrelay {\n\t\thealth_check %v timeout %v fails %d rises %d\n\t\tall_down %s\n",
		testInterval, testTimeout, testFails, testRises, allDown)
	var names []string
	for i, r := range responders {
		name := fmt.Sprintf("h%d", i)
		names = append(names, name)
		fmt.Fprintf(&b, "\t\trelay %s %s probe %s\n", name, r.Addr().Addr(), r.Addr())
	}
	fmt.Fprintf(&b, "\t\tsource 198.51.100.0/24 %s\n\t}\n}\n", strings.Join(names, " "))
	return b.String()
}

// addresses returns the sorted A records of amt.rev(198.51.100.12), or the rcode if there are none.
func addresses(t *testing.T, s *testServer) string {
	t.Helper()
	return addressesOf(t, s, "udp", apexS)
}

// eventually polls cond for up to a bounded time and fails with what it last saw.
func eventually(t *testing.T, what string, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v; last saw %s", what, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readyStatus(addr string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func expectAddresses(t *testing.T, s *testServer, want string) {
	t.Helper()
	// fails (or rises) consecutive probes, each up to an interval apart, plus slack for a loaded machine.
	within := time.Duration(max(testFails, testRises)+1)*testInterval + 5*time.Second
	eventually(t, "answer "+want, within, func() (bool, string) {
		got := addresses(t, s)
		return got == want, got
	})
}

func expectReady(t *testing.T, readyAddr string, want int) {
	t.Helper()
	eventually(t, fmt.Sprintf("ready status %d", want), 5*time.Second, func() (bool, string) {
		got := readyStatus(readyAddr)
		return got == want, fmt.Sprint(got)
	})
}

func TestHealthFailoverAndRecovery(t *testing.T) {
	r0 := startResponder(t, "127.0.0.21:0")
	r1 := startResponder(t, "127.0.0.22:0")
	readyAddr := freePort(t)
	s := startServer(t, healthCorefile(readyAddr, "serve", r0, r1))

	expectReady(t, readyAddr, http.StatusOK)
	expectAddresses(t, s, "127.0.0.21 127.0.0.22")
	if v := relayUpValue(t, "h0"); v != 1 {
		t.Errorf("Expected relay_up{h0} 1, got %v", v)
	}

	// One relay dies: it leaves the answers after `fails` probes, the server stays ready.
	downBefore := testutil.ToFloat64(relayTransitions.WithLabelValues("h0", "down"))
	refusedBefore := testutil.ToFloat64(probesTotal.WithLabelValues("h0", "refused"))
	r0.Stop()
	expectAddresses(t, s, "127.0.0.22")
	// The answers follow the endpoint's state the moment it flips; the relay series a moment later.
	eventually(t, "relay_up{h0} 0", time.Second, func() (bool, string) {
		v := relayUpValue(t, "h0")
		return v == 0, fmt.Sprint(v)
	})
	eventually(t, "one down transition and refused probes for h0", time.Second, func() (bool, string) {
		down := testutil.ToFloat64(relayTransitions.WithLabelValues("h0", "down")) - downBefore
		refused := testutil.ToFloat64(probesTotal.WithLabelValues("h0", "refused")) - refusedBefore
		return down == 1 && refused >= testFails, fmt.Sprintf("%v transitions, %v refused probes", down, refused)
	})
	if got := readyStatus(readyAddr); got != http.StatusOK {
		t.Errorf("Expected ready while one relay is up, got %d", got)
	}

	// Both dead: all_down serve answers with every relay (fail open) and readiness drops.
	r1.Stop()
	expectReady(t, readyAddr, http.StatusServiceUnavailable)
	expectAddresses(t, s, "127.0.0.21 127.0.0.22")

	// One comes back: after `rises` probes it is the only answer and the server is ready again.
	if err := r1.Restart(); err != nil {
		t.Fatal(err)
	}
	expectAddresses(t, s, "127.0.0.22")
	expectReady(t, readyAddr, http.StatusOK)
	eventually(t, "relay_up{h1} 1", time.Second, func() (bool, string) {
		v := relayUpValue(t, "h1")
		return v == 1, fmt.Sprint(v)
	})
}

func TestHealthAllDownPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy string
		rcode  int
		answer bool
	}{
		{"serve", dns.RcodeSuccess, true},
		{"nodata", dns.RcodeSuccess, false},
		{"servfail", dns.RcodeServerFailure, false},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			dead := startResponder(t, "127.0.0.23:0")
			dead.Stop() // nothing listens: the first probe decides the relay is down
			readyAddr := freePort(t)
			s := startServer(t, healthCorefile(readyAddr, tc.policy, dead))
			expectReady(t, readyAddr, http.StatusServiceUnavailable)
			eventually(t, "all_down answer", 3*time.Second, func() (bool, string) {
				r := s.query(t, "udp", apexS, dns.TypeA)
				ok := r.msg.Rcode == tc.rcode && (len(r.msg.Answer) > 0) == tc.answer
				if ok && tc.policy == "nodata" {
					// TTL 0 on the SOA (RFC 2308: the negative TTL is min(SOA TTL, MINIMUM)),
					// so resolvers do not cache a gap that failover closes in seconds.
					ok = len(r.msg.Ns) == 1 && r.msg.Ns[0].Header().Rrtype == dns.TypeSOA && r.msg.Ns[0].Header().Ttl == 0
				}
				return ok, r.msg.String()
			})
			r := s.query(t, "tcp", revS, dns.TypeAMTRELAY)
			if rcode, _, _, sec := r.sections(t); rcode != tc.rcode || (len(sec[0]) > 0) != tc.answer {
				t.Errorf("RFC 8777 query under all_down %s: rcode %d, %d answers", tc.policy, rcode, len(sec[0]))
			}
		})
	}
}

func TestHealthIgnoresBadReplies(t *testing.T) {
	bad := startResponder(t, "127.0.0.24:0")
	bad.SetMode(amttest.WrongNonce)
	other := startResponder(t, "127.0.0.25:0")
	other.SetMode(amttest.OtherSource)
	readyAddr := freePort(t)
	before := testutil.ToFloat64(probesTotal.WithLabelValues("h0", "bad_reply"))
	s := startServer(t, healthCorefile(readyAddr, "nodata", bad, other))

	// A relay that answers from another address is up; one that answers with the wrong nonce is not.
	expectAddresses(t, s, "127.0.0.25")
	if d := testutil.ToFloat64(probesTotal.WithLabelValues("h0", "bad_reply")) - before; d < 1 {
		t.Errorf("Expected bad_reply probes for the wrong-nonce relay, got %v", d)
	}
}

// A Corefile reload keeps what the probes know. A silent relay takes a whole probe timeout to fail,
// so an instance that started from scratch would serve it, and report not ready, until then; the
// new instance instead starts from the old one's states.
func TestHealthSurvivesReload(t *testing.T) {
	alive := startResponder(t, "127.0.0.41:0")
	silent := startResponder(t, "127.0.0.42:0")
	silent.SetMode(amttest.Silent)
	readyAddr := freePort(t)
	corefile := healthCorefile(readyAddr, "serve", alive, silent)
	s := startServer(t, corefile)
	expectAddresses(t, s, "127.0.0.41")
	expectReady(t, readyAddr, http.StatusOK)

	s.reload(t, strings.Replace(corefile, "all_down serve", "all_down nodata", 1))
	if got := addresses(t, s); got != "127.0.0.41" {
		t.Errorf("First answer after the reload: %s, want only the live relay 127.0.0.41", got)
	}
	if got := readyStatus(readyAddr); got != http.StatusOK {
		t.Errorf("Ready status right after the reload: %d, want 200", got)
	}
	if v := relayUpValue(t, "h1"); v != 0 {
		t.Errorf("relay_up{h1} after the reload: %v, want 0", v)
	}

	// The carried state is not frozen: the silent relay comes back through the new instance's probes.
	silent.SetMode(amttest.Normal)
	expectAddresses(t, s, "127.0.0.41 127.0.0.42")
}

// A probe name that resolves to thousands of addresses is probed at the first maxProbeAddrs in
// sorted order, and the cut is logged once, not every round.
func TestProbeTargetsCapped(t *testing.T) {
	a := newTestPlugin(t, "amtrelay in-addr.arpa {\nrelay r1 192.0.2.1 probe relays.example.net:2268\nsource 198.51.100.0/24 r1\n}")
	var answer []netip.Addr
	for i := range 2000 {
		answer = append(answer, netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	rand.Shuffle(len(answer), func(i, j int) { answer[i], answer[j] = answer[j], answer[i] })
	answer = append(answer, netip.MustParseAddr("::ffff:10.0.0.5"), netip.MustParseAddr("2001:db8::1"))
	a.prober.lookup = func(context.Context, string) ([]netip.Addr, error) { return slices.Clone(answer), nil }
	logs := captureLog(t)
	c := a.prober.checks[0]
	for range 3 {
		targets, err := a.prober.targets(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if len(targets) != maxProbeAddrs {
			t.Fatalf("Got %d targets, want %d", len(targets), maxProbeAddrs)
		}
		for i, tg := range targets {
			if want := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 2268); tg != want {
				t.Fatalf("Target %d is %v, want %v (sorted, mapped folded, duplicates gone)", i, tg, want)
			}
		}
	}
	if n := strings.Count(logs.String(), "has 2001 addresses, probing the first 16"); n != 1 {
		t.Errorf("Expected the cut logged once, got %d times in %q", n, logs)
	}
}

// Every instance probes over one amt.Client: a second instance (another server block, or the new
// instance of a reload) shares the first one's, which stays open until the last instance stops.
func TestProbeClientShared(t *testing.T) {
	relay := startResponder(t, "127.0.0.26:0")
	block := fmt.Sprintf("amtrelay in-addr.arpa {\nrelay r1 %s probe %s\nsource 198.51.100.0/24 r1\nhealth_check 100ms timeout 50ms\n}",
		relay.Addr().Addr(), relay.Addr())
	current := func() (*amt.Client, int) {
		probeClient.Lock()
		defer probeClient.Unlock()
		return probeClient.client, probeClient.holders
	}
	if c, n := current(); c != nil || n != 0 {
		t.Fatalf("Before any instance: client %p, %d holders", c, n)
	}
	a := newTestPlugin(t, block)
	a.start()
	first, _ := current()
	b := newTestPlugin(t, block)
	b.start()
	if c, n := current(); c == nil || c != first || n != 2 {
		t.Errorf("Two instances: client %p (first %p), %d holders; want one client, two holders", c, first, n)
	}
	if o := b.prober.probeOne(context.Background(), relay.Addr()); o.result != amt.ResultOK {
		t.Errorf("Probe over the shared client: %v, want ok", o)
	}

	a.stop()
	if c, n := current(); c != first || n != 1 {
		t.Errorf("After the first instance stopped: client %p, %d holders; want the same client, one holder", c, n)
	}
	before := relay.Discoveries()
	eventually(t, "probes of the remaining instance", 5*time.Second, func() (bool, string) {
		n := relay.Discoveries() - before
		return n >= 2, fmt.Sprintf("%d Discoveries", n)
	})
	b.stop()
	if c, n := current(); c != nil || n != 0 {
		t.Errorf("After the last instance stopped: client %p, %d holders; want it closed", c, n)
	}
	if o := b.prober.probeOne(context.Background(), relay.Addr()); o.result != amt.ResultError {
		t.Errorf("Probe with no holder: %v, want error", o)
	}
}

// launches records when a fake probe started for each check.
type launches struct {
	sync.Mutex
	at map[*check][]time.Time
}

func (l *launches) probe(c *check) {
	l.Lock()
	l.at[c] = append(l.at[c], time.Now())
	l.Unlock()
}

// The sweeper probes each check once per interval, within the jitter and the sweep window, in
// sweeps rather than one by one; a check whose probe hangs delays no other, and goes out again as
// soon as its probe ends.
func TestSweep(t *testing.T) {
	const (
		checks   = 200
		interval = 300 * time.Millisecond
		rounds   = 5
		stuck    = 3 // this check's probes take 1.5 intervals
	)
	p := &prober{hc: healthCheck{interval: interval}}
	for range checks {
		p.checks = append(p.checks, &check{})
	}
	window := p.sweepWindow()
	l := &launches{at: map[*check][]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		p.sweep(ctx, func(ctx context.Context, c *check) {
			l.probe(c)
			if c == p.checks[stuck] {
				select {
				case <-ctx.Done():
				case <-time.After(interval * 3 / 2):
				}
			}
		})
	}()
	time.Sleep(rounds*interval + interval/2)
	cancel()
	<-done
	elapsed := time.Since(start)

	l.Lock()
	defer l.Unlock()
	// A loaded machine wakes late, never early.
	const slack = 100 * time.Millisecond
	var all []time.Time
	for i, c := range p.checks {
		at := l.at[c]
		all = append(all, at...)
		if i == stuck {
			// Every 1.5 intervals: each probe as soon as the one before ended.
			if want := 1 + int(elapsed/(interval*3/2)); len(at) < want-1 || len(at) > want+1 {
				t.Errorf("The hanging check went out %d times in %v, want about %d", len(at), elapsed, want)
			}
			continue
		}
		// The first round, then one an interval, the second spread over the first interval.
		if want := 1 + int(elapsed/interval); len(at) < want-1 || len(at) > want+1 {
			t.Errorf("Check %d went out %d times in %v, want about %d", i, len(at), elapsed, want)
		}
		for k := 2; k < len(at); k++ { // the second round is spread over the first interval
			gap := at[k].Sub(at[k-1])
			if gap < interval-interval/10-window || gap > interval+interval/10+window+slack {
				t.Errorf("Check %d: %v between rounds %d and %d, want %v give or take %v", i, gap, k-1, k, interval, interval/10+window)
			}
		}
	}
	// Launches come in sweeps, at least a window apart, however many checks: a sweep is the
	// launches less than a quarter window apart (goroutines start late on a loaded machine).
	slices.SortFunc(all, time.Time.Compare)
	sweeps := 1
	for k := 1; k < len(all); k++ {
		if all[k].Sub(all[k-1]) > window/4 {
			sweeps++
		}
	}
	if most := int(elapsed/window) + rounds + 2; sweeps > most {
		t.Errorf("%d launches in %d sweeps, want at most %d (one per window of %v, and the hanging check's own)", len(all), sweeps, most, window)
	}
	t.Logf("%d launches in %d sweeps over %v", len(all), sweeps, elapsed.Round(time.Millisecond))
}

// The probes and the canary sweep look a check's name up at the same time; a name with too many
// addresses is reported by whichever comes first (run under -race: the report's bookkeeping is
// shared).
func TestTargetsLookedUpConcurrently(t *testing.T) {
	a := newTestPlugin(t, "amtrelay in-addr.arpa {\nrelay r1 192.0.2.1 probe relays.example.net:2268\nsource 198.51.100.0/24 r1\n}")
	a.prober.lookup = func(context.Context, string) ([]netip.Addr, error) {
		addrs := make([]netip.Addr, maxProbeAddrs+4)
		for i := range addrs {
			addrs[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		}
		return addrs, nil
	}
	c := a.prober.checks[0]
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if targets, err := a.prober.targets(context.Background(), c); err != nil || len(targets) != maxProbeAddrs {
				t.Errorf("targets: %d, %v; want the first %d", len(targets), err, maxProbeAddrs)
			}
		})
	}
	wg.Wait()
	if got := c.cut.Load(); got != maxProbeAddrs+4 {
		t.Errorf("cut = %d, want %d", got, maxProbeAddrs+4)
	}
	if first := c.firstAddr.Load(); first == nil || *first != netip.MustParseAddrPort("192.0.2.1:2268") {
		t.Errorf("firstAddr = %v, want 192.0.2.1:2268", first)
	}
}
