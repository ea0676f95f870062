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

func TestProbeOK(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.7:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := startResponder(t, addr)
			rep := amt.Probe(context.Background(), r.Addr(), okTimeout)
			if rep.Result != amt.ResultOK {
				t.Fatalf("Result = %v (%v), want ok", rep.Result, rep.Err)
			}
			if rep.RTT <= 0 || rep.RTT > okTimeout {
				t.Errorf("RTT = %v", rep.RTT)
			}
			if rep.Relay != r.Addr().Addr() {
				t.Errorf("Relay = %v, want %v", rep.Relay, r.Addr().Addr())
			}
			if rep.From != r.Addr() {
				t.Errorf("From = %v, want %v", rep.From, r.Addr())
			}
			if rep.Ignored != 0 || rep.Err != nil {
				t.Errorf("Ignored = %d, Err = %v; want 0, nil", rep.Ignored, rep.Err)
			}
			if d := r.Discoveries(); d != 1 {
				t.Errorf("Responder saw %d Discoveries, want 1", d)
			}
		})
	}
}

func TestProbeAdvertisedOtherRelay(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	for _, a := range []string{"192.0.2.10", "2001:db8::10"} {
		r.SetAdvertised(netip.MustParseAddr(a))
		rep := amt.Probe(context.Background(), r.Addr(), okTimeout)
		if rep.Result != amt.ResultOK || rep.Relay.String() != a {
			t.Errorf("Got %v relay %v (%v), want ok relay %s", rep.Result, rep.Relay, rep.Err, a)
		}
	}
}

func TestProbeMappedTarget(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(r.Addr().Addr().As16()), r.Addr().Port())
	rep := amt.Probe(context.Background(), mapped, okTimeout)
	if rep.Result != amt.ResultOK || rep.From != r.Addr() {
		t.Errorf("Probe(%v) = %v from %v (%v), want ok from %v", mapped, rep.Result, rep.From, rep.Err, r.Addr())
	}
}

func TestProbeOtherSource(t *testing.T) {
	for _, addr := range []string{"127.0.0.2:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := startResponder(t, addr)
			r.SetMode(amttest.OtherSource)
			rep := amt.Probe(context.Background(), r.Addr(), okTimeout)
			if rep.Result != amt.ResultOK {
				t.Fatalf("Result = %v (%v), want ok", rep.Result, rep.Err)
			}
			if rep.From == r.Addr() || !rep.From.IsValid() {
				t.Errorf("From = %v, want a source other than %v", rep.From, r.Addr())
			}
			if rep.Relay != r.Addr().Addr() {
				t.Errorf("Relay = %v, want %v", rep.Relay, r.Addr().Addr())
			}
		})
	}
}

func TestProbeSilent(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	start := time.Now()
	rep := amt.Probe(context.Background(), r.Addr(), silentTimeout)
	if rep.Result != amt.ResultTimeout || rep.Ignored != 0 || rep.Err != nil {
		t.Errorf("Got %+v, want timeout with nothing ignored", rep)
	}
	if el := time.Since(start); el < silentTimeout {
		t.Errorf("Returned after %v, before the %v timeout", el, silentTimeout)
	}
}

// probeBadReply probes a target expected to send only junk. Such a probe
// always runs to its deadline, so it starts short and retries with a longer
// timeout only when nothing at all arrived (a loaded machine may not have run
// the responder in time); a timeout cannot hide a misclassified reply.
func probeBadReply(t *testing.T, target netip.AddrPort) amt.Reply {
	t.Helper()
	var rep amt.Reply
	for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
		rep = amt.Probe(context.Background(), target, timeout)
		if rep.Result != amt.ResultTimeout {
			break
		}
	}
	return rep
}

func TestProbeBadReply(t *testing.T) {
	for _, m := range []amttest.Mode{amttest.WrongNonce, amttest.WrongType, amttest.Short} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			r := startResponder(t, "127.0.0.1:0")
			r.SetMode(m)
			rep := probeBadReply(t, r.Addr())
			if rep.Result != amt.ResultBadReply || rep.Ignored != 1 {
				t.Errorf("Got %v with %d ignored (%v), want bad_reply with 1", rep.Result, rep.Ignored, rep.Err)
			}
			if rep.RTT != 0 || rep.Relay.IsValid() || rep.From.IsValid() {
				t.Errorf("Non-ok reply carries RTT %v, Relay %v, From %v", rep.RTT, rep.Relay, rep.From)
			}
		})
	}
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

func TestProbeRefused(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.9:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			rep := amt.Probe(context.Background(), closedPort(t, addr), okTimeout)
			wantRefused(t, rep)
		})
	}
}

func TestProbeStopRestart(t *testing.T) {
	r := startResponder(t, "127.0.0.4:0")
	if rep := amt.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK {
		t.Fatalf("Before Stop: %v (%v)", rep.Result, rep.Err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantRefused(t, amt.Probe(context.Background(), r.Addr(), okTimeout))
	if err := r.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if rep := amt.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK {
		t.Errorf("After Restart: %v (%v)", rep.Result, rep.Err)
	}
}

func TestProbeCancel(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	rep := amt.Probe(ctx, r.Addr(), time.Minute)
	// Generous bound: a loaded machine may run timers late, but nowhere
	// near the one-minute probe timeout.
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Probe took %v after cancel", el)
	}
	if rep.Result != amt.ResultError || !errors.Is(rep.Err, context.Canceled) {
		t.Errorf("Got %v (%v), want error wrapping context.Canceled", rep.Result, rep.Err)
	}
}

func TestProbeAlreadyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep := amt.Probe(ctx, netip.MustParseAddrPort("127.0.0.1:2268"), time.Minute)
	if rep.Result != amt.ResultError || !errors.Is(rep.Err, context.Canceled) {
		t.Errorf("Got %v (%v), want error wrapping context.Canceled", rep.Result, rep.Err)
	}
}

func TestProbeContextDeadline(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	ctx, cancel := context.WithTimeout(context.Background(), silentTimeout)
	defer cancel()
	start := time.Now()
	rep := amt.Probe(ctx, r.Addr(), time.Minute)
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Probe took %v with a %v context deadline", el, silentTimeout)
	}
	// The context deadline is just a shorter timeout, not a cancellation.
	if rep.Result != amt.ResultTimeout {
		t.Errorf("Got %v (%v), want timeout", rep.Result, rep.Err)
	}
}

func TestProbeInvalidTarget(t *testing.T) {
	for _, tgt := range []netip.AddrPort{
		{},
		netip.MustParseAddrPort("127.0.0.1:0"),
		netip.MustParseAddrPort("[::1]:0"),
	} {
		rep := amt.Probe(context.Background(), tgt, time.Second)
		if rep.Result != amt.ResultError || !errors.Is(rep.Err, amt.ErrInvalidTarget) {
			t.Errorf("Probe(%v) = %v (%v), want ErrInvalidTarget", tgt, rep.Result, rep.Err)
		}
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

func TestProbeSkipsNoiseThenMatches(t *testing.T) {
	relay := netip.MustParseAddr("192.0.2.10")
	addr, wait := fakeRelay(t, func(n uint32) [][]byte {
		good := amt.AppendAdvertisement(nil, n, relay)
		return [][]byte{
			amt.AppendAdvertisement(nil, n+1, relay), // wrong nonce
			append(good[:12:12], 0),                  // 13 bytes
			good[:8],                                 // short
			append([]byte{0x12}, good[1:]...),        // version 1
			amt.AppendDiscovery(nil, n),              // wrong type
			{},                                       // empty datagram
			good,
		}
	})
	defer wait()
	rep := amt.Probe(context.Background(), addr, okTimeout)
	if rep.Result != amt.ResultOK || rep.Relay != relay || rep.Ignored != 6 {
		t.Errorf("Got %v relay %v ignored %d (%v), want ok relay %v ignored 6", rep.Result, rep.Relay, rep.Ignored, rep.Err, relay)
	}
}

func TestProbeOversizedNotTruncated(t *testing.T) {
	// A valid IPv6 Advertisement followed by junk must not be accepted by
	// reading only its first 24 bytes.
	addr, wait := fakeRelay(t, func(n uint32) [][]byte {
		m := amt.AppendAdvertisement(nil, n, netip.MustParseAddr("::1"))
		return [][]byte{append(m, make([]byte, 200)...)}
	})
	defer wait()
	// The fake answers once, so no retry: give it time to be scheduled.
	rep := amt.Probe(context.Background(), addr, time.Second)
	if rep.Result != amt.ResultBadReply || rep.Ignored != 1 {
		t.Errorf("Got %v ignored %d, want bad_reply ignored 1", rep.Result, rep.Ignored)
	}
}

func TestProbeFloodBounded(t *testing.T) {
	// A flood of junk ends the probe early instead of keeping the worker
	// busy until the deadline.
	addr, wait := fakeRelay(t, func(n uint32) [][]byte {
		junk := make([][]byte, 200)
		for i := range junk {
			junk[i] = amt.AppendAdvertisement(nil, n^1, netip.MustParseAddr("10.0.0.1"))
		}
		return junk
	})
	defer wait()
	start := time.Now()
	rep := amt.Probe(context.Background(), addr, time.Minute)
	if rep.Result != amt.ResultBadReply || rep.Ignored != 64 {
		t.Errorf("Got %v ignored %d, want bad_reply ignored 64", rep.Result, rep.Ignored)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Flooded probe took %v", el)
	}
}

func TestProbeConcurrentSameRelay(t *testing.T) {
	// Each probe has its own socket and nonce, so answers never cross.
	r := startResponder(t, "127.0.0.1:0")
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if rep := amt.Probe(context.Background(), r.Addr(), okTimeout); rep.Result != amt.ResultOK || rep.Ignored != 0 {
				t.Errorf("Got %v ignored %d (%v)", rep.Result, rep.Ignored, rep.Err)
			}
		})
	}
	wg.Wait()
}
