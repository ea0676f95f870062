package amt_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

// stressKind is how a stress relay behaves, and what a handshake to it
// must end with.
type stressKind int

const (
	stressNormal stressKind = iota
	stressTeardown
	stressSilent
	stressLimit
	stressRequestSilent
	stressStopped
)

// TestClientStress runs 1,000 handshakes at once over one Client against
// 50 relays that answer, stay silent, refuse tunnels, ignore Requests or
// are gone, and checks every result. Only 40 go to closed ports: Linux
// sends at most a burst of 50 ICMP errors at once, loopback included, and
// the Client's result for a port whose ICMP error was rate-limited away is
// a timeout like anyone's.
func TestClientStress(t *testing.T) {
	// In parallel with the slow Tunnel tests: it spends most of its time
	// waiting for silent relays.
	t.Parallel()
	const (
		relays   = 50
		perRelay = 20
		// Replies come back as fast as the machine lets them; only the
		// silent steps wait for their timeout, which is short.
		answerTimeout = 15 * time.Second
		silentBudget  = 300 * time.Millisecond
		// The Discovery must get through before the Request is ignored,
		// on a loaded machine too (3 s was once too short there).
		requestSilentBudget = 6 * time.Second
	)
	kinds := make([]stressKind, relays)
	for i := range kinds {
		switch {
		case i < 27:
			kinds[i] = stressNormal
		case i < 30:
			kinds[i] = stressTeardown
		case i < 35:
			kinds[i] = stressSilent
		case i < 40:
			kinds[i] = stressLimit
		case i < 48:
			kinds[i] = stressRequestSilent
		default:
			kinds[i] = stressStopped
		}
	}
	rs := make([]*amttest.Responder, relays)
	for i, k := range kinds {
		addr := fmt.Sprintf("127.0.1.%d:0", 10+i)
		if i%9 == 0 {
			addr = "[::1]:0" // a few over IPv6, when there is IPv6
		}
		r, err := amttest.StartConfig(addr, amttest.Config{GatewayField: k == stressTeardown})
		if err != nil && addr[0] == '[' {
			r, err = amttest.StartConfig(fmt.Sprintf("127.0.1.%d:0", 10+i), amttest.Config{GatewayField: k == stressTeardown})
		}
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { r.Stop() })
		switch k {
		case stressSilent:
			r.SetMode(amttest.Silent)
		case stressLimit:
			r.SetMode(amttest.Limit)
		case stressRequestSilent:
			r.SetMode(amttest.RequestSilent)
		case stressStopped:
			if err := r.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
		}
		rs[i] = r
	}

	c := newClient(t)
	results := make([]amt.HandshakeReply, relays*perRelay)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			budget := answerTimeout
			switch kinds[i%relays] {
			case stressSilent:
				budget = silentBudget
			case stressRequestSilent:
				budget = requestSilentBudget
			case stressStopped:
				if runtime.GOOS != "linux" {
					budget = silentBudget
				}
			}
			<-start
			results[i] = c.Handshake(context.Background(), rs[i%relays].Addr(), budget)
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d handshakes in %v; client stats %+v", len(results), time.Since(began), c.Stats())

	bad := 0
	for i, h := range results {
		r := rs[i%relays]
		if err := checkStress(kinds[i%relays], h, r.Addr(), c); err != nil {
			if bad++; bad <= 10 {
				t.Errorf("Handshake %d to %v (%v): %v", i, r.Addr(), kinds[i%relays], err)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... and %d more wrong results", bad-10)
	}
	if s := c.Stats(); s.Pending != 0 || s.Ignored != 0 || s.ReadErrors != 0 {
		t.Errorf("Client stats %+v, want nothing pending, ignored or failed", s)
	}
	for i, r := range rs {
		if kinds[i] == stressTeardown {
			waitUntil(t, "the Teardowns", func() bool { return r.Stats().Teardowns == perRelay })
		}
	}
}

func (k stressKind) String() string {
	return [...]string{"normal", "teardown", "silent", "limit", "request_silent", "stopped"}[k]
}

func checkStress(k stressKind, h amt.HandshakeReply, target netip.AddrPort, c *amt.Client) error {
	want, step := amt.ResultOK, amt.StepRequest
	switch k {
	case stressSilent:
		want, step = amt.ResultTimeout, amt.StepDiscovery
	case stressLimit:
		want = amt.ResultLimit
	case stressRequestSilent:
		want = amt.ResultNoQuery
	case stressStopped:
		want, step = amt.ResultRefused, amt.StepDiscovery
		if runtime.GOOS != "linux" {
			want = amt.ResultTimeout
		}
	}
	if h.Result != want || h.Step != step || h.Ignored != 0 {
		return fmt.Errorf("got %v at %v, %d ignored (%v); want %v at %v", h.Result, h.Step, h.Ignored, h.Err, want, step)
	}
	if step == amt.StepRequest && (h.Relay != target.Addr() || h.From != target || h.DiscoveryRTT <= 0) {
		return fmt.Errorf("relay %v from %v after %v", h.Relay, h.From, h.DiscoveryRTT)
	}
	if want == amt.ResultOK || want == amt.ResultLimit {
		if h.QueryFrom != target || h.RequestRTT <= 0 || h.Query.Limit != (want == amt.ResultLimit) {
			return fmt.Errorf("query %+v from %v after %v", h.Query, h.QueryFrom, h.RequestRTT)
		}
		// The kernel picks the source address (127.0.0.1 for all of
		// 127/8); the port must be the shared socket's.
		gw, port := h.Query.Gateway, c.LocalAddr(target.Addr()).Port()
		if (k == stressTeardown) != gw.IsValid() || k == stressTeardown && (gw.Port() != port || !gw.Addr().IsLoopback()) {
			return fmt.Errorf("query gateway %v, want a loopback address with port %d", gw, port)
		}
	}
	return nil
}
