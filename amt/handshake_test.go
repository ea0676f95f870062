package amt_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

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

func TestHandshakeOK(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.7:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			r := startResponder(t, addr)
			h := amt.Handshake(context.Background(), r.Addr(), okTimeout)
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
}

func TestHandshakeLimit(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Limit)
	h := amt.Handshake(context.Background(), r.Addr(), okTimeout)
	if h.Result != amt.ResultLimit || h.Step != amt.StepRequest || !h.Query.Limit || h.RequestRTT <= 0 {
		t.Errorf("Got %v at %v, query %+v (%v); want limit", h.Result, h.Step, h.Query, h.Err)
	}
}

// handshakeSilentAtRequest runs handshakes expected to time out at the
// Request step, starting short and retrying longer only while the
// Discovery step itself did not finish in time (a loaded machine); an
// outcome at the Request step is final.
func handshakeSilentAtRequest(t *testing.T, target netip.AddrPort) amt.HandshakeReply {
	t.Helper()
	var h amt.HandshakeReply
	for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
		h = amt.Handshake(context.Background(), target, timeout)
		if h.Step == amt.StepRequest {
			break
		}
	}
	return h
}

func TestHandshakeNoQuery(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.RequestSilent)
	h := handshakeSilentAtRequest(t, r.Addr())
	if h.Result != amt.ResultNoQuery || h.Step != amt.StepRequest || h.Err != nil {
		t.Errorf("Got %v at %v (%v), want no_query at request", h.Result, h.Step, h.Err)
	}
	if h.DiscoveryRTT <= 0 || h.RequestRTT != 0 || h.Relay != r.Addr().Addr() {
		t.Errorf("DiscoveryRTT %v, RequestRTT %v, Relay %v", h.DiscoveryRTT, h.RequestRTT, h.Relay)
	}
}

func TestHandshakeSilent(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	h := amt.Handshake(context.Background(), r.Addr(), silentTimeout)
	if h.Result != amt.ResultTimeout || h.Step != amt.StepDiscovery || h.Relay.IsValid() {
		t.Errorf("Got %v at %v relay %v, want timeout at discovery", h.Result, h.Step, h.Relay)
	}
}

func TestHandshakeRefused(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			h := amt.Handshake(context.Background(), closedPort(t, addr), okTimeout)
			wantRefused(t, amt.Reply{Result: h.Result, Err: h.Err})
			if h.Step != amt.StepDiscovery {
				t.Errorf("Step %v, want discovery", h.Step)
			}
		})
	}
}

func TestHandshakeRefusedAtRequest(t *testing.T) {
	// The relay advertises an address where nothing listens on its port.
	r := startResponder(t, "127.0.0.1:0")
	r.SetAdvertised(closedPort(t, "127.0.0.2:0").Addr())
	if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), r.Addr().Port()))); err != nil {
		t.Skipf("127.0.0.2:%d is taken: %v", r.Addr().Port(), err)
	} else {
		c.Close()
	}
	h := amt.Handshake(context.Background(), r.Addr(), okTimeout)
	wantRefused(t, amt.Reply{Result: h.Result, Err: h.Err})
	if h.Step != amt.StepRequest || h.Relay != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("Step %v relay %v, want request to 127.0.0.2", h.Step, h.Relay)
	}
}

func TestHandshakeAdvertisedElsewhere(t *testing.T) {
	// Discovery goes to one address, the Request to the advertised one on
	// the same port (amtrelayd's -a and -r).
	relay := startResponder(t, "127.0.0.2:0")
	disc, err := amttest.Start(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), relay.Addr().Port()).String())
	if err != nil {
		t.Skipf("Port %d taken on 127.0.0.1: %v", relay.Addr().Port(), err)
	}
	defer disc.Stop()
	disc.SetAdvertised(relay.Addr().Addr())
	h := amt.Handshake(context.Background(), disc.Addr(), okTimeout)
	if h.Result != amt.ResultOK || h.Relay != relay.Addr().Addr() || h.From != disc.Addr() || h.QueryFrom != relay.Addr() {
		t.Fatalf("Got %v relay %v from %v, query from %v (%v)", h.Result, h.Relay, h.From, h.QueryFrom, h.Err)
	}
	waitUntil(t, "the Request", func() bool { return relay.Stats().Requests == 1 })
	if d, q := disc.Stats(), relay.Stats(); d.Requests != 0 || q.Discoveries != 0 {
		t.Errorf("Discovery relay %+v, advertised relay %+v", d, q)
	}
}

func TestHandshakeOtherSource(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.OtherSource)
	h := amt.Handshake(context.Background(), r.Addr(), okTimeout)
	if h.Result != amt.ResultOK || h.From == r.Addr() || h.QueryFrom == r.Addr() || h.QueryFrom.Addr() != r.Addr().Addr() {
		t.Errorf("Got %v from %v, query from %v (%v); want ok from another port than %v", h.Result, h.From, h.QueryFrom, h.Err, r.Addr())
	}
}

func TestHandshakeBadDiscoveryReplies(t *testing.T) {
	for _, m := range []amttest.Mode{amttest.WrongNonce, amttest.WrongType, amttest.Short} {
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			r := startResponder(t, "127.0.0.1:0")
			r.SetMode(m)
			var h amt.HandshakeReply
			for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
				if h = amt.Handshake(context.Background(), r.Addr(), timeout); h.Result != amt.ResultTimeout {
					break
				}
			}
			if h.Result != amt.ResultBadReply || h.Step != amt.StepDiscovery || h.Ignored != 1 {
				t.Errorf("Got %v at %v ignored %d, want bad_reply at discovery, 1 ignored", h.Result, h.Step, h.Ignored)
			}
		})
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

func TestHandshakeBadQueries(t *testing.T) {
	addr := scriptedRelay(t, func(n uint32) [][]byte {
		q := amt.Query{MAC: amt.MAC{1}, Nonce: n, QRV: 2, QQI: time.Second}
		broken := amt.AppendQuery(nil, q)
		broken[len(broken)-1] ^= 1 // IGMP checksum
		q.Nonce++
		data, _ := amt.AppendData(nil, amt.Data{Source: netip.MustParseAddrPort("10.0.0.1:1"), Group: netip.MustParseAddrPort("232.1.1.1:1")})
		return [][]byte{amt.AppendQuery(nil, q), broken, data, amt.AppendAdvertisement(nil, n, addr4)}
	})
	// The four replies leave back to back; a short attempt that did not
	// see them all (a loaded machine) is retried with a longer budget.
	var h amt.HandshakeReply
	for _, timeout := range []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second} {
		if h = amt.Handshake(context.Background(), addr, timeout); h.Step == amt.StepRequest && h.Ignored == 4 {
			break
		}
	}
	if h.Result != amt.ResultBadReply || h.Step != amt.StepRequest || h.Ignored != 4 {
		t.Errorf("Got %v at %v ignored %d (%v), want bad_reply at request, 4 ignored", h.Result, h.Step, h.Ignored, h.Err)
	}
}

var addr4 = netip.MustParseAddr("127.0.0.1")

func TestHandshakeAcceptsMLDQueryAndSkipsNoise(t *testing.T) {
	// Relays may answer P=0 with an MLDv2 query (amtrelayd answers with
	// the family of its data); the gateway must take it, after noise.
	addr := scriptedRelay(t, func(n uint32) [][]byte {
		q := amt.Query{MAC: amt.MAC{1}, Nonce: n, MLD: true, Querier: netip.MustParseAddr("fe80::1"), QRV: 2, QQI: 125 * time.Second}
		return [][]byte{{0x04}, amt.AppendQuery(nil, q)}
	})
	h := amt.Handshake(context.Background(), addr, okTimeout)
	if h.Result != amt.ResultOK || !h.Query.MLD || h.Query.QQI != 125*time.Second || h.Ignored != 1 {
		t.Errorf("Got %v query %+v ignored %d (%v)", h.Result, h.Query, h.Ignored, h.Err)
	}
}

func TestHandshakeTeardownWhenG(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", amttest.Config{GatewayField: true})
	h := amt.Handshake(context.Background(), r.Addr(), okTimeout)
	if h.Result != amt.ResultOK || !h.Query.Gateway.IsValid() || h.Query.Gateway.Addr() != addr4 {
		t.Fatalf("Got %v, query gateway %v (%v)", h.Result, h.Query.Gateway, h.Err)
	}
	waitUntil(t, "the Teardown", func() bool { return r.Stats().Teardowns == 1 })
	if s := r.Stats(); s.BadMAC != 0 {
		t.Errorf("Teardown had a bad MAC: %+v", s)
	}
}

func TestHandshakeBadAdvertisedAddress(t *testing.T) {
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
		h := amt.Handshake(context.Background(), r.Addr(), okTimeout)
		if h.Result != tc.result || h.Step != tc.step || !errors.Is(h.Err, tc.err) && tc.err != nil {
			t.Errorf("Advertised %s: got %v at %v (%v), want %v at %v", tc.adv, h.Result, h.Step, h.Err, tc.result, tc.step)
		}
	}
	if n := r.Stats().Requests; n != 0 {
		t.Errorf("%d Requests sent to unusable relays", n)
	}
}

func TestHandshakeCancelAtRequest(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.RequestSilent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancel once the relay has the Request, so the cancellation
		// lands in the second step.
		for r.Stats().Requests == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	h := amt.Handshake(ctx, r.Addr(), time.Minute)
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Handshake took %v after cancel", el)
	}
	if h.Result != amt.ResultError || !errors.Is(h.Err, context.Canceled) || h.Step != amt.StepRequest {
		t.Errorf("Got %v at %v (%v), want error wrapping context.Canceled at request", h.Result, h.Step, h.Err)
	}
}

func TestHandshakeInvalid(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if h := amt.Handshake(ctx, netip.MustParseAddrPort("127.0.0.1:2268"), time.Second); h.Result != amt.ResultError || !errors.Is(h.Err, context.Canceled) {
		t.Errorf("Canceled: %v (%v)", h.Result, h.Err)
	}
	if h := amt.Handshake(context.Background(), netip.AddrPort{}, time.Second); h.Result != amt.ResultError || !errors.Is(h.Err, amt.ErrInvalidTarget) {
		t.Errorf("Zero target: %v (%v)", h.Result, h.Err)
	}
}

func TestHandshakeStepString(t *testing.T) {
	for s, want := range map[amt.HandshakeStep]string{amt.StepDiscovery: "discovery", amt.StepRequest: "request", 9: "HandshakeStep(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
