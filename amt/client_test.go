package amt_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Short enough to keep the package fast, long enough for a loaded CI box to
// answer on loopback.
const (
	okTimeout     = 5 * time.Second
	silentTimeout = 200 * time.Millisecond
)

func startResponder(t *testing.T, addr string) *amttest.Responder {
	t.Helper()
	r, err := amttest.Start(addr)
	if err != nil {
		if addr[0] == '[' {
			t.Skipf("No IPv6 loopback: %v", err)
		}
		t.Fatalf("Start(%q): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return r
}

// closedPort returns a loopback address nobody listens on. Another process
// could grab the port in between; on loopback with ephemeral ports that is
// rare enough for a test.
func closedPort(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	r, err := amttest.Start(addr)
	if err != nil {
		t.Skipf("Cannot bind %s: %v", addr, err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	return r.Addr()
}

func wantRefused(t *testing.T, rep amt.Reply) {
	t.Helper()
	if runtime.GOOS != "linux" {
		// Unconnected sockets see no ICMP errors there.
		if rep.Result != amt.ResultTimeout {
			t.Errorf("Got %v (%v), want timeout", rep.Result, rep.Err)
		}
		return
	}
	if rep.Result != amt.ResultRefused {
		t.Errorf("Got %v (%v), want refused", rep.Result, rep.Err)
	}
}

// fakeRelay answers the first Discovery it receives with each of msgs (built
// from the received nonce) in order, from conn, then exits. It returns a
// function that waits for it.
func fakeRelay(t *testing.T, msgs func(nonce uint32) [][]byte) (netip.AddrPort, func()) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		nonce, err := amt.ParseDiscovery(buf[:n])
		if err != nil {
			return
		}
		for _, m := range msgs(nonce) {
			_, _ = conn.WriteToUDPAddrPort(m, from)
		}
	}()
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return addr, func() { conn.Close(); <-done }
}

func startRelay(t *testing.T, addr string, cfg amttest.Config) *amttest.Responder {
	t.Helper()
	r, err := amttest.StartConfig(addr, cfg)
	if err != nil {
		if addr[0] == '[' {
			t.Skipf("No IPv6 loopback: %v", err)
		}
		t.Fatalf("StartConfig(%q): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return r
}

// waitUntil polls cond until it holds or 10 s pass: counters are bumped by
// the responder's goroutine, possibly after the client saw the reply.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("Timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// scriptedRelay answers every Discovery with a correct Advertisement naming
// itself, and every Request with each of replies(nonce) in order, until the
// test ends.
func scriptedRelay(t *testing.T, replies func(nonce uint32) [][]byte) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 64)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if nonce, err := amt.ParseDiscovery(buf[:n]); err == nil {
				_, _ = conn.WriteToUDPAddrPort(amt.AppendAdvertisement(nil, nonce, addr.Addr()), from)
			} else if nonce, _, err := amt.ParseRequest(buf[:n]); err == nil {
				for _, m := range replies(nonce) {
					_, _ = conn.WriteToUDPAddrPort(m, from)
				}
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return addr
}

var addr4 = netip.MustParseAddr("127.0.0.1")

// newClient gives each test a Client of its own, so that the tests can run
// in parallel without seeing each other's datagrams.
func newClient(t testing.TB) *amt.Client {
	t.Helper()
	c, err := amt.NewClient()
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantQuiet checks that a client that has finished its probes keeps no
// step registered.
func wantQuiet(t *testing.T, c *amt.Client) {
	t.Helper()
	if s := c.Stats(); s.Pending != 0 {
		t.Errorf("Stats after the probes: %+v, want nothing pending", s)
	}
}

func TestClientProbeOK(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.7:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := startResponder(t, addr)
			rep := c.Probe(context.Background(), r.Addr(), okTimeout)
			if rep.Result != amt.ResultOK {
				t.Fatalf("Result = %v (%v), want ok", rep.Result, rep.Err)
			}
			if rep.RTT <= 0 || rep.RTT > okTimeout {
				t.Errorf("RTT = %v", rep.RTT)
			}
			if rep.Relay != r.Addr().Addr() || rep.From != r.Addr() {
				t.Errorf("Relay = %v, From = %v, want %v", rep.Relay, rep.From, r.Addr())
			}
			if rep.Ignored != 0 || rep.Err != nil {
				t.Errorf("Ignored = %d, Err = %v; want 0, nil", rep.Ignored, rep.Err)
			}
			if d := r.Discoveries(); d != 1 {
				t.Errorf("Responder saw %d Discoveries, want 1", d)
			}
		})
	}
	wantQuiet(t, c)
	if s := c.Stats(); s.Replies == 0 || s.Unmatched != 0 || s.Ignored != 0 {
		t.Errorf("Stats %+v", s)
	}
}

func TestClientProbeAdvertisedOtherRelay(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	for _, a := range []string{"192.0.2.10", "2001:db8::10"} {
		r.SetAdvertised(netip.MustParseAddr(a))
		rep := c.Probe(context.Background(), r.Addr(), okTimeout)
		if rep.Result != amt.ResultOK || rep.Relay.String() != a {
			t.Errorf("Got %v relay %v (%v), want ok relay %s", rep.Result, rep.Relay, rep.Err, a)
		}
	}
}

// An Advertisement naming an address no Request can go to fails a
// discovery-only Probe as it fails a Handshake; the address it named is
// still reported.
func TestClientProbeUnusableAdvertisedAddress(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, adv := range []string{"0.0.0.0", "224.0.0.1", "239.255.255.250", "::", "ff02::1", "::ffff:0.0.0.0"} {
		target, wait := fakeRelay(t, func(nonce uint32) [][]byte {
			return [][]byte{amt.AppendAdvertisement(nil, nonce, netip.MustParseAddr(adv))}
		})
		rep := c.Probe(context.Background(), target, okTimeout)
		wait()
		if rep.Result != amt.ResultBadReply || rep.Relay != netip.MustParseAddr(adv) || rep.From != target || rep.RTT != 0 {
			t.Errorf("Advertised %s: got %v relay %v from %v RTT %v (%v), want bad_reply naming it", adv, rep.Result, rep.Relay, rep.From, rep.RTT, rep.Err)
		}
	}
	wantQuiet(t, c)
}

func TestClientProbeMappedTarget(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(r.Addr().Addr().As16()), r.Addr().Port())
	rep := c.Probe(context.Background(), mapped, okTimeout)
	if rep.Result != amt.ResultOK || rep.From != r.Addr() {
		t.Errorf("Probe(%v) = %v from %v (%v), want ok from %v", mapped, rep.Result, rep.From, rep.Err, r.Addr())
	}
}

func TestClientProbeOtherSource(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, addr := range []string{"127.0.0.2:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := startResponder(t, addr)
			r.SetMode(amttest.OtherSource)
			rep := c.Probe(context.Background(), r.Addr(), okTimeout)
			if rep.Result != amt.ResultOK {
				t.Fatalf("Result = %v (%v), want ok", rep.Result, rep.Err)
			}
			if rep.From == r.Addr() || !rep.From.IsValid() || rep.Relay != r.Addr().Addr() {
				t.Errorf("From = %v, Relay = %v; want another source than %v", rep.From, rep.Relay, r.Addr())
			}
		})
	}
}

func TestClientProbeSilent(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	start := time.Now()
	rep := c.Probe(context.Background(), r.Addr(), silentTimeout)
	if rep.Result != amt.ResultTimeout || rep.Ignored != 0 || rep.Err != nil {
		t.Errorf("Got %+v, want timeout with nothing ignored", rep)
	}
	if el := time.Since(start); el < silentTimeout {
		t.Errorf("Returned after %v, before the %v timeout", el, silentTimeout)
	}
	wantQuiet(t, c)
}

// TestClientProbeBadReply covers both ways junk is pinned on a probe: by
// its nonce in a malformed Advertisement (Short), and by coming from the
// probed address and port (WrongNonce, WrongType).
func TestClientProbeBadReply(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, m := range []amttest.Mode{amttest.WrongNonce, amttest.WrongType, amttest.Short} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			r := startResponder(t, "127.0.0.1:0")
			r.SetMode(m)
			// Junk keeps a probe waiting to its deadline, so the first try
			// is short; a timeout only means the junk came late (a loaded
			// machine), and is tried again longer.
			var rep amt.Reply
			for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
				if rep = c.Probe(context.Background(), r.Addr(), timeout); rep.Result != amt.ResultTimeout {
					break
				}
			}
			if rep.Result != amt.ResultBadReply || rep.Ignored != 1 {
				t.Errorf("Got %v with %d ignored (%v), want bad_reply with 1", rep.Result, rep.Ignored, rep.Err)
			}
			if rep.RTT != 0 || rep.Relay.IsValid() || rep.From.IsValid() {
				t.Errorf("Non-ok reply carries RTT %v, Relay %v, From %v", rep.RTT, rep.Relay, rep.From)
			}
		})
	}
}

func TestClientProbeRefused(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.9:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			wantRefused(t, c.Probe(context.Background(), closedPort(t, addr), okTimeout))
		})
	}
	wantQuiet(t, c)
}

func TestClientProbeStopRestart(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.4:0")
	if rep := c.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK {
		t.Fatalf("Before Stop: %v (%v)", rep.Result, rep.Err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantRefused(t, c.Probe(context.Background(), r.Addr(), okTimeout))
	if err := r.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if rep := c.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK {
		t.Errorf("After Restart: %v (%v)", rep.Result, rep.Err)
	}
}

func TestClientProbeCancel(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	rep := c.Probe(ctx, r.Addr(), time.Minute)
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Probe took %v after cancel", el)
	}
	if rep.Result != amt.ResultError || !errors.Is(rep.Err, context.Canceled) {
		t.Errorf("Got %v (%v), want error wrapping context.Canceled", rep.Result, rep.Err)
	}
	wantQuiet(t, c)
}

func TestClientProbeAlreadyCanceledAndInvalid(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rep := c.Probe(ctx, netip.MustParseAddrPort("127.0.0.1:2268"), time.Minute); rep.Result != amt.ResultError || !errors.Is(rep.Err, context.Canceled) {
		t.Errorf("Canceled: %v (%v), want error wrapping context.Canceled", rep.Result, rep.Err)
	}
	for _, tgt := range []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("[::1]:0")} {
		if rep := c.Probe(context.Background(), tgt, time.Second); rep.Result != amt.ResultError || !errors.Is(rep.Err, amt.ErrInvalidTarget) {
			t.Errorf("Probe(%v) = %v (%v), want ErrInvalidTarget", tgt, rep.Result, rep.Err)
		}
	}
}

func TestClientProbeContextDeadline(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	ctx, cancel := context.WithTimeout(context.Background(), silentTimeout)
	defer cancel()
	start := time.Now()
	rep := c.Probe(ctx, r.Addr(), time.Minute)
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Probe took %v with a %v context deadline", el, silentTimeout)
	}
	if rep.Result != amt.ResultTimeout {
		t.Errorf("Got %v (%v), want timeout", rep.Result, rep.Err)
	}
}

func TestClientProbeSkipsNoiseThenMatches(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	relay := netip.MustParseAddr("192.0.2.10")
	addr, wait := fakeRelay(t, func(n uint32) [][]byte {
		good := amt.AppendAdvertisement(nil, n, relay)
		return [][]byte{
			amt.AppendAdvertisement(nil, n+1, relay), // wrong nonce, from the target
			append(good[:12:12], 0),                  // 13 bytes, our nonce
			good[:8],                                 // short, our nonce
			append([]byte{0x12}, good[1:]...),        // version 1
			amt.AppendDiscovery(nil, n),              // wrong type
			{},                                       // empty datagram
			good,
		}
	})
	defer wait()
	rep := c.Probe(context.Background(), addr, okTimeout)
	if rep.Result != amt.ResultOK || rep.Relay != relay || rep.Ignored != 6 {
		t.Errorf("Got %v relay %v ignored %d (%v), want ok relay %v ignored 6", rep.Result, rep.Relay, rep.Ignored, rep.Err, relay)
	}
}

func TestClientProbeOversizedNotTruncated(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	addr, wait := fakeRelay(t, func(n uint32) [][]byte {
		m := amt.AppendAdvertisement(nil, n, netip.MustParseAddr("::1"))
		return [][]byte{append(m, make([]byte, 200)...)}
	})
	defer wait()
	rep := c.Probe(context.Background(), addr, time.Second)
	if rep.Result != amt.ResultBadReply || rep.Ignored != 1 {
		t.Errorf("Got %v ignored %d, want bad_reply ignored 1", rep.Result, rep.Ignored)
	}
}

func TestClientProbeFloodBounded(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	addr, wait := fakeRelay(t, func(n uint32) [][]byte {
		junk := make([][]byte, 200)
		for i := range junk {
			junk[i] = amt.AppendAdvertisement(nil, n^1, netip.MustParseAddr("10.0.0.1"))
		}
		return junk
	})
	defer wait()
	start := time.Now()
	rep := c.Probe(context.Background(), addr, time.Minute)
	if rep.Result != amt.ResultBadReply || rep.Ignored != 64 {
		t.Errorf("Got %v ignored %d, want bad_reply ignored 64", rep.Result, rep.Ignored)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Flooded probe took %v", el)
	}
	// The rest of the flood reaches no one; it must not reach the next
	// probe either.
	r := startResponder(t, "127.0.0.1:0")
	if rep := c.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK || rep.Ignored != 0 {
		t.Errorf("After the flood: %v ignored %d (%v)", rep.Result, rep.Ignored, rep.Err)
	}
}

func TestClientProbeConcurrentSameRelay(t *testing.T) {
	t.Parallel()
	// One socket, one relay, fifty probes in flight: only nonces keep
	// the answers apart, and a valid answer is never charged to another.
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if rep := c.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK || rep.Ignored != 0 {
				t.Errorf("Got %v ignored %d (%v)", rep.Result, rep.Ignored, rep.Err)
			}
		})
	}
	wg.Wait()
	wantQuiet(t, c)
}

func TestClientHandshakeOK(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.7:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := startResponder(t, addr)
			h := c.Handshake(context.Background(), r.Addr(), okTimeout)
			if h.Result != amt.ResultOK || h.Step != amt.StepRequest || h.Err != nil {
				t.Fatalf("Got %v at %v (%v), want ok", h.Result, h.Step, h.Err)
			}
			if h.DiscoveryRTT <= 0 || h.RequestRTT <= 0 || h.DiscoveryRTT+h.RequestRTT > okTimeout {
				t.Errorf("RTTs %v, %v", h.DiscoveryRTT, h.RequestRTT)
			}
			if h.Relay != r.Addr().Addr() || h.From != r.Addr() || h.QueryFrom != r.Addr() {
				t.Errorf("Relay %v, From %v, QueryFrom %v; want all %v", h.Relay, h.From, h.QueryFrom, r.Addr())
			}
			q := h.Query
			if q.Nonce == 0 || q.MLD || q.Limit || q.QQI != amttest.DefaultQQI || q.Gateway.IsValid() {
				t.Errorf("Query %+v", q)
			}
			if h.Ignored != 0 {
				t.Errorf("Ignored %d", h.Ignored)
			}
			waitUntil(t, "the Request count", func() bool { return r.Stats().Requests == 1 })
			if s := r.Stats(); s.Discoveries != 1 || s.Teardowns != 0 {
				t.Errorf("Relay stats %+v", s)
			}
		})
	}
	wantQuiet(t, c)
}

func TestClientHandshakeLimit(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Limit)
	h := c.Handshake(context.Background(), r.Addr(), okTimeout)
	if h.Result != amt.ResultLimit || h.Step != amt.StepRequest || !h.Query.Limit || h.RequestRTT <= 0 {
		t.Errorf("Got %v at %v, query %+v (%v); want limit", h.Result, h.Step, h.Query, h.Err)
	}
}

func TestClientHandshakeNoQuery(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.RequestSilent)
	var h amt.HandshakeReply
	for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
		if h = c.Handshake(context.Background(), r.Addr(), timeout); h.Step == amt.StepRequest {
			break
		}
	}
	if h.Result != amt.ResultNoQuery || h.Step != amt.StepRequest || h.Err != nil {
		t.Errorf("Got %v at %v (%v), want no_query at request", h.Result, h.Step, h.Err)
	}
	if h.DiscoveryRTT <= 0 || h.RequestRTT != 0 || h.Relay != r.Addr().Addr() {
		t.Errorf("DiscoveryRTT %v, RequestRTT %v, Relay %v", h.DiscoveryRTT, h.RequestRTT, h.Relay)
	}
	wantQuiet(t, c)
}

func TestClientHandshakeSilent(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	h := c.Handshake(context.Background(), r.Addr(), silentTimeout)
	if h.Result != amt.ResultTimeout || h.Step != amt.StepDiscovery || h.Relay.IsValid() {
		t.Errorf("Got %v at %v relay %v, want timeout at discovery", h.Result, h.Step, h.Relay)
	}
}

func TestClientHandshakeRefused(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			h := c.Handshake(context.Background(), closedPort(t, addr), okTimeout)
			wantRefused(t, amt.Reply{Result: h.Result, Err: h.Err})
			if h.Step != amt.StepDiscovery {
				t.Errorf("Step %v, want discovery", h.Step)
			}
		})
	}
}

func TestClientHandshakeRefusedAtRequest(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetAdvertised(closedPort(t, "127.0.0.2:0").Addr())
	if l, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), r.Addr().Port()))); err != nil {
		t.Skipf("127.0.0.2:%d is taken: %v", r.Addr().Port(), err)
	} else {
		l.Close()
	}
	h := c.Handshake(context.Background(), r.Addr(), okTimeout)
	wantRefused(t, amt.Reply{Result: h.Result, Err: h.Err})
	if h.Step != amt.StepRequest || h.Relay != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("Step %v relay %v, want request to 127.0.0.2", h.Step, h.Relay)
	}
}

func TestClientHandshakeAdvertisedElsewhere(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	relay := startResponder(t, "127.0.0.2:0")
	disc, err := amttest.Start(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), relay.Addr().Port()).String())
	if err != nil {
		t.Skipf("Port %d taken on 127.0.0.1: %v", relay.Addr().Port(), err)
	}
	defer disc.Stop()
	disc.SetAdvertised(relay.Addr().Addr())
	h := c.Handshake(context.Background(), disc.Addr(), okTimeout)
	if h.Result != amt.ResultOK || h.Relay != relay.Addr().Addr() || h.From != disc.Addr() || h.QueryFrom != relay.Addr() {
		t.Fatalf("Got %v relay %v from %v, query from %v (%v)", h.Result, h.Relay, h.From, h.QueryFrom, h.Err)
	}
	waitUntil(t, "the Request", func() bool { return relay.Stats().Requests == 1 })
	if d, q := disc.Stats(), relay.Stats(); d.Requests != 0 || q.Discoveries != 0 {
		t.Errorf("Discovery relay %+v, advertised relay %+v", d, q)
	}
}

func TestClientHandshakeOtherSource(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.OtherSource)
	h := c.Handshake(context.Background(), r.Addr(), okTimeout)
	if h.Result != amt.ResultOK || h.From == r.Addr() || h.QueryFrom == r.Addr() || h.QueryFrom.Addr() != r.Addr().Addr() {
		t.Errorf("Got %v from %v, query from %v (%v); want ok from another port than %v", h.Result, h.From, h.QueryFrom, h.Err, r.Addr())
	}
}

func TestClientHandshakeBadDiscoveryReplies(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	for _, m := range []amttest.Mode{amttest.WrongNonce, amttest.WrongType, amttest.Short} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			r := startResponder(t, "127.0.0.1:0")
			r.SetMode(m)
			var h amt.HandshakeReply
			for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
				if h = c.Handshake(context.Background(), r.Addr(), timeout); h.Result != amt.ResultTimeout {
					break
				}
			}
			if h.Result != amt.ResultBadReply || h.Step != amt.StepDiscovery || h.Ignored != 1 {
				t.Errorf("Got %v at %v ignored %d, want bad_reply at discovery, 1 ignored", h.Result, h.Step, h.Ignored)
			}
		})
	}
}

func TestClientHandshakeBadQueries(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	addr := scriptedRelay(t, func(n uint32) [][]byte {
		q := amt.Query{MAC: amt.MAC{1}, Nonce: n, QRV: 2, QQI: time.Second}
		broken := amt.AppendQuery(nil, q)
		broken[len(broken)-1] ^= 1 // IGMP checksum
		q.Nonce++
		data, _ := amt.AppendData(nil, amt.Data{Source: netip.MustParseAddrPort("10.0.0.1:1"), Group: netip.MustParseAddrPort("232.1.1.1:1")})
		// Pinned on the handshake by source (the first and third) and by
		// nonce (the second and fourth).
		return [][]byte{amt.AppendQuery(nil, q), broken, data, amt.AppendAdvertisement(nil, n, addr4)}
	})
	var h amt.HandshakeReply
	for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
		if h = c.Handshake(context.Background(), addr, timeout); h.Step == amt.StepRequest && h.Ignored == 4 {
			break
		}
	}
	if h.Result != amt.ResultBadReply || h.Step != amt.StepRequest || h.Ignored != 4 {
		t.Errorf("Got %v at %v ignored %d (%v), want bad_reply at request, 4 ignored", h.Result, h.Step, h.Ignored, h.Err)
	}
}

func TestClientHandshakeAcceptsMLDQueryAndSkipsNoise(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	addr := scriptedRelay(t, func(n uint32) [][]byte {
		q := amt.Query{MAC: amt.MAC{1}, Nonce: n, MLD: true, Querier: netip.MustParseAddr("fe80::1"), QRV: 2, QQI: 125 * time.Second}
		return [][]byte{{0x04}, amt.AppendQuery(nil, q)}
	})
	h := c.Handshake(context.Background(), addr, okTimeout)
	if h.Result != amt.ResultOK || !h.Query.MLD || h.Query.QQI != 125*time.Second || h.Ignored != 1 {
		t.Errorf("Got %v query %+v ignored %d (%v)", h.Result, h.Query, h.Ignored, h.Err)
	}
}

func TestClientHandshakeTeardownWhenG(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startRelay(t, "127.0.0.1:0", amttest.Config{GatewayField: true})
	h := c.Handshake(context.Background(), r.Addr(), okTimeout)
	// The relay saw the shared socket, and the Teardown must come from it
	// for the MAC to check out.
	want := netip.AddrPortFrom(addr4, c.LocalAddr(addr4).Port())
	if h.Result != amt.ResultOK || h.Query.Gateway != want {
		t.Fatalf("Got %v, query gateway %v (%v), want ok, gateway %v", h.Result, h.Query.Gateway, h.Err, want)
	}
	waitUntil(t, "the Teardown", func() bool { return r.Stats().Teardowns == 1 })
	if s := r.Stats(); s.BadMAC != 0 {
		t.Errorf("Teardown had a bad MAC: %+v", s)
	}
}

func TestClientHandshakeBadAdvertisedAddress(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	for _, tc := range []struct {
		adv    string
		result amt.Result
		step   amt.HandshakeStep
		err    error
	}{
		{"0.0.0.0", amt.ResultBadReply, amt.StepDiscovery, nil},
		{"224.0.0.1", amt.ResultBadReply, amt.StepDiscovery, nil},
		{"::1", amt.ResultError, amt.StepRequest, amt.ErrRelayFamily},
	} {
		r.SetAdvertised(netip.MustParseAddr(tc.adv))
		h := c.Handshake(context.Background(), r.Addr(), okTimeout)
		if h.Result != tc.result || h.Step != tc.step || !errors.Is(h.Err, tc.err) && tc.err != nil {
			t.Errorf("Advertised %s: got %v at %v (%v), want %v at %v", tc.adv, h.Result, h.Step, h.Err, tc.result, tc.step)
		}
	}
	if n := r.Stats().Requests; n != 0 {
		t.Errorf("%d Requests sent to unusable relays", n)
	}
}

func TestClientHandshakeCancelAtRequest(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.RequestSilent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r.Stats().Requests == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	h := c.Handshake(ctx, r.Addr(), time.Minute)
	<-done
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Handshake took %v after cancel", el)
	}
	if h.Result != amt.ResultError || !errors.Is(h.Err, context.Canceled) || h.Step != amt.StepRequest {
		t.Errorf("Got %v at %v (%v), want error wrapping context.Canceled at request", h.Result, h.Step, h.Err)
	}
	wantQuiet(t, c)
}

func TestClientHandshakeInvalid(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if h := c.Handshake(ctx, netip.MustParseAddrPort("127.0.0.1:2268"), time.Second); h.Result != amt.ResultError || !errors.Is(h.Err, context.Canceled) {
		t.Errorf("Canceled: %v (%v)", h.Result, h.Err)
	}
	if h := c.Handshake(context.Background(), netip.AddrPort{}, time.Second); h.Result != amt.ResultError || !errors.Is(h.Err, amt.ErrInvalidTarget) {
		t.Errorf("Zero target: %v (%v)", h.Result, h.Err)
	}
}

// TestClientCloseEndsPendingAndLeavesNothing is not parallel: the leak
// check would see other tests' goroutines.
func TestClientCloseEndsPendingAndLeavesNothing(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	before := goleak.IgnoreCurrent()
	c, err := amt.NewClient()
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	const n = 20
	results := make(chan amt.HandshakeReply, n)
	for range n {
		go func() { results <- c.Handshake(context.Background(), r.Addr(), time.Minute) }()
	}
	waitUntil(t, "the Discoveries", func() bool { return r.Discoveries() == n })
	start := time.Now()
	c.Close()
	for range n {
		if h := <-results; h.Result != amt.ResultError || !errors.Is(h.Err, amt.ErrClientClosed) {
			t.Errorf("Pending at Close: %v (%v), want ErrClientClosed", h.Result, h.Err)
		}
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Pending handshakes took %v to end after Close", el)
	}
	if rep := c.Probe(context.Background(), r.Addr(), time.Second); rep.Result != amt.ResultError || !errors.Is(rep.Err, amt.ErrClientClosed) {
		t.Errorf("After Close: %v (%v), want ErrClientClosed", rep.Result, rep.Err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Second Close: %v", err)
	}
	goleak.VerifyNone(t, before)
}

func TestClientUnmatchedCounted(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	local := netip.AddrPortFrom(addr4, c.LocalAddr(addr4).Port())
	s, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer s.Close()
	junk := [][]byte{{}, amt.AppendAdvertisement(nil, 7, addr4), amt.AppendQuery(nil, amt.Query{Nonce: 7}), amt.AppendDiscovery(nil, 7)}
	for _, m := range junk {
		if _, err := s.WriteToUDPAddrPort(m, local); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	waitUntil(t, "the junk to be counted", func() bool { return c.Stats().Unmatched == uint64(len(junk)) })
	if st := c.Stats(); st.Replies != 0 || st.Ignored != 0 || st.Pending != 0 {
		t.Errorf("Stats %+v", st)
	}
}

func TestClientProbeZonedTarget(t *testing.T) {
	t.Parallel()
	// Raw sends cannot carry a zone, so zoned targets take another path;
	// the reply comes back without a zone and must still find the probe.
	var zone string
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			zone = ifc.Name
		}
	}
	if zone == "" {
		t.Skip("No loopback interface")
	}
	c := newClient(t)
	r := startResponder(t, "[::1]:0")
	target := netip.AddrPortFrom(r.Addr().Addr().WithZone(zone), r.Addr().Port())
	if h := c.Handshake(context.Background(), target, okTimeout); h.Result != amt.ResultOK || h.Ignored != 0 {
		t.Errorf("Handshake(%v) = %v, %d ignored (%v), want ok", target, h.Result, h.Ignored, h.Err)
	}
}

func TestHandshakeStepString(t *testing.T) {
	for s, want := range map[amt.HandshakeStep]string{amt.StepDiscovery: "discovery", amt.StepRequest: "request", 9: "HandshakeStep(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
