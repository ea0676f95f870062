package amt_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

// A health check's handshake beside a canary tunnel, at a relay that keeps
// one tunnel per gateway address and only its latest nonce (the Linux
// driver): the Discovery from the Client, the Request through the tunnel.
// Every handshake passes, and the tunnel keeps its channel: its joins and
// leaves carry the nonce of the handshake's Request, the latest the relay
// knows, and the data keeps coming. A Request from the Client's socket
// would get no Query (the relay sends it to the tunnel's port) and void
// the tunnel's MAC.
func TestTunnelRequestKeepsOneGatewayAtKernelRelay(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, queue bool) {
		const expiry = time.Second
		r := startRelay(t, "127.0.0.1:0", amttest.Config{OneTunnelPerGatewayIP: true, GatewayTimeout: expiry})
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: 300 * time.Millisecond, QueueData: queue}, chS, chG)
		gw := tunnelGateway(tn, r.Addr())
		waitUntil(t, "the join", func() bool { return hasMembership(r, gw, chS, chG) })
		c := newClient(t)
		ctx := context.Background()
		// Past two expiries of the relay's state: only Updates it takes
		// keep the channel.
		deadline := time.Now().Add(2*expiry + 500*time.Millisecond)
		for i := 0; time.Now().Before(deadline); i++ {
			if rep := c.Probe(ctx, r.Addr(), time.Second); rep.Result != amt.ResultOK {
				t.Fatalf("Round %d: Discovery %v", i, rep.Result)
			}
			rep := tn.Request(ctx, time.Second)
			if rep.Result != amt.ResultOK || rep.Relay != r.Addr() || rep.RTT <= 0 {
				t.Fatalf("Round %d: Request %+v (tunnel %+v, relay %+v)", i, rep, tn.Status(), r.Stats())
			}
			if q := tn.Status().Query; q.Nonce != rep.Query.Nonce || q.MAC != rep.Query.MAC {
				t.Fatalf("Round %d: the tunnel kept Query %+v, not the handshake's %+v", i, q, rep.Query)
			}
			// A join or leave now carries the handshake's MAC.
			if i%2 == 0 {
				if err := tn.Join(chS2, chG2); err != nil {
					t.Fatal(err)
				}
				waitUntil(t, "the second channel joined", func() bool { return hasMembership(r, gw, chS2, chG2) })
			} else {
				tn.Leave(chS2, chG2)
				waitUntil(t, "the second channel left", func() bool { return !hasMembership(r, gw, chS2, chG2) })
			}
			before := packets(tn, queue, chS, chG)
			if n := r.Inject(chS, chG, []byte("x")); n != 1 {
				t.Fatalf("Round %d: Inject sent to %d gateways (memberships %v)", i, n, r.Memberships())
			}
			waitUntil(t, "the data", func() bool { return packets(tn, queue, chS, chG) == before+1 })
			time.Sleep(100 * time.Millisecond) // the pace of the rounds
		}
		if s := r.Stats(); s.BadMAC != 0 || r.Joins(chS, chG) != 1 {
			t.Errorf("Relay %+v, %d joins: want no Update dropped and the channel joined once", s, r.Joins(chS, chG))
		}
	})
}

func TestTunnelRequestOutcomes(t *testing.T) {
	t.Parallel()
	established := func(t *testing.T) (*amttest.Responder, *amt.Tunnel) {
		r := startResponder(t, "127.0.0.1:0")
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute}, chS, chG)
		waitState(t, tn, amt.TunnelEstablished)
		return r, tn
	}
	ctx := context.Background()
	t.Run("ok", func(t *testing.T) {
		r, tn := established(t)
		before := tn.Status()
		rep := tn.Request(ctx, time.Second)
		if rep.Result != amt.ResultOK || rep.Err != nil || rep.QueryFrom != r.Addr().Addr() || rep.RTT <= 0 {
			t.Errorf("Request %+v", rep)
		}
		st := tn.Status()
		if st.Requests != before.Requests+1 || st.Queries != before.Queries+1 || st.Query != rep.Query {
			t.Errorf("Status %+v after %+v: want the Request counted and its Query taken", st, before)
		}
	})
	t.Run("limit", func(t *testing.T) {
		r, tn := established(t)
		r.SetMode(amttest.Limit)
		rep := tn.Request(ctx, time.Second)
		if rep.Result != amt.ResultLimit || !rep.Query.Limit {
			t.Errorf("Request %+v", rep)
		}
		if st := tn.Status(); st.State != amt.TunnelLimited {
			t.Errorf("State %v, want the tunnel limited as by its own Request", st.State)
		}
	})
	t.Run("no_query", func(t *testing.T) {
		r, tn := established(t)
		r.SetMode(amttest.RequestSilent)
		start := time.Now()
		rep := tn.Request(ctx, 200*time.Millisecond)
		if rep.Result != amt.ResultNoQuery || rep.Relay != r.Addr() || !errors.Is(rep.Err, amt.ErrNoQuery) {
			t.Errorf("Request %+v", rep)
		}
		if took := time.Since(start); took < 200*time.Millisecond || took > 5*time.Second {
			t.Errorf("Request gave up after %v, want the 200ms timeout", took)
		}
	})
	t.Run("refused", func(t *testing.T) {
		r, tn := established(t)
		if err := r.Stop(); err != nil {
			t.Fatal(err)
		}
		rep := tn.Request(ctx, 2*time.Second)
		if runtime.GOOS != "linux" {
			// Elsewhere unconnected sockets may see no ICMP errors.
			if rep.Result != amt.ResultRefused && rep.Result != amt.ResultNoQuery {
				t.Errorf("Request %+v", rep)
			}
			return
		}
		if rep.Result != amt.ResultRefused || !errors.Is(rep.Err, syscall.ECONNREFUSED) {
			t.Errorf("Request %+v, want refused", rep)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		r, tn := established(t)
		r.SetMode(amttest.RequestSilent)
		cctx, cancel := context.WithCancel(ctx)
		reply := make(chan amt.TunnelReply, 1)
		go func() { reply <- tn.Request(cctx, 10*time.Second) }()
		waitUntil(t, "the Request", func() bool { _, a := tn.RequestCallers(); return a == 1 })
		cancel()
		if rep := <-reply; rep.Result != amt.ResultError || !errors.Is(rep.Err, context.Canceled) {
			t.Errorf("Request %+v", rep)
		}
		if w, _ := tn.RequestCallers(); w != 0 {
			t.Errorf("%d callers left waiting", w)
		}
	})
	t.Run("closed", func(t *testing.T) {
		r, tn := established(t)
		r.SetMode(amttest.RequestSilent)
		reply := make(chan amt.TunnelReply, 1)
		go func() { reply <- tn.Request(ctx, 10*time.Second) }()
		waitUntil(t, "the Request", func() bool { _, a := tn.RequestCallers(); return a == 1 })
		tn.Close()
		if rep := <-reply; rep.Result != amt.ResultError || !errors.Is(rep.Err, amt.ErrTunnelClosed) {
			t.Errorf("Request while closing %+v", rep)
		}
		if rep := tn.Request(ctx, 10*time.Second); rep.Result != amt.ResultError || !errors.Is(rep.Err, amt.ErrTunnelClosed) {
			t.Errorf("Request after Close %+v", rep)
		}
	})
}

// gatedRelay answers Discoveries and Requests on 127.0.0.1 as a relay
// does, holding the answer to the first message of type gate until release
// is closed.
type gatedRelay struct {
	addr                  netip.AddrPort
	release               chan struct{}
	discoveries, requests atomic.Int32
}

func startGatedRelay(t *testing.T, gate byte) *gatedRelay {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	g := &gatedRelay{addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), release: make(chan struct{})}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		held := false
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if !held && n > 0 && buf[0] == gate {
				held = true
				select {
				case <-g.release:
				case <-stop:
					return
				}
			}
			if nonce, err := amt.ParseDiscovery(buf[:n]); err == nil {
				g.discoveries.Add(1)
				_, _ = conn.WriteToUDPAddrPort(amt.AppendAdvertisement(nil, nonce, g.addr.Addr()), from)
			} else if nonce, _, err := amt.ParseRequest(buf[:n]); err == nil {
				g.requests.Add(1)
				_, _ = conn.WriteToUDPAddrPort(amt.AppendQuery(nil, amt.Query{Nonce: nonce, QRV: 2, QQI: time.Second}), from)
			}
		}
	}()
	t.Cleanup(func() { close(stop); conn.Close(); <-done })
	return g
}

const (
	typeDiscovery = 1
	typeRequest   = 3
)

// A caller that comes while the tunnel's own Request awaits its Query
// shares it: the relay keeps only the latest nonce, and a second Request
// would void the first.
func TestTunnelRequestSharesPendingRequest(t *testing.T) {
	t.Parallel()
	g := startGatedRelay(t, typeRequest)
	tn, _ := runTunnel(t, g.addr, amt.TunnelOptions{Refresh: time.Minute, ReplyTimeout: 10 * time.Second}, chS, chG)
	reply := make(chan amt.TunnelReply, 1)
	go func() { reply <- tn.Request(context.Background(), 10*time.Second) }()
	waitUntil(t, "the caller on the tunnel's own Request", func() bool { _, a := tn.RequestCallers(); return a == 1 })
	close(g.release)
	if rep := <-reply; rep.Result != amt.ResultOK {
		t.Errorf("Request %+v", rep)
	}
	if n, st := g.requests.Load(), tn.Status(); n != 1 || st.Requests != 1 || st.State != amt.TunnelEstablished {
		t.Errorf("%d Requests at the relay, tunnel %+v: want one, shared", n, st)
	}
}

// A caller that comes while the tunnel still discovers its relay waits for
// the Advertisement, then for the Query of the Request that follows it.
func TestTunnelRequestWaitsForDiscovery(t *testing.T) {
	t.Parallel()
	g := startGatedRelay(t, typeDiscovery)
	tn, _ := runTunnel(t, g.addr, amt.TunnelOptions{Refresh: time.Minute, ReplyTimeout: 10 * time.Second}, chS, chG)
	reply := make(chan amt.TunnelReply, 1)
	go func() { reply <- tn.Request(context.Background(), 10*time.Second) }()
	waitUntil(t, "the caller", func() bool { w, _ := tn.RequestCallers(); return w == 1 })
	if st := tn.Status(); st.State != amt.TunnelDiscovering {
		t.Fatalf("State %v, want discovering", st.State)
	}
	close(g.release)
	if rep := <-reply; rep.Result != amt.ResultOK || rep.Relay != g.addr {
		t.Errorf("Request %+v", rep)
	}
	if d, r := g.discoveries.Load(), g.requests.Load(); d != 1 || r != 1 {
		t.Errorf("%d Discoveries and %d Requests, want one of each", d, r)
	}
}

// A tunnel waiting out its backoff after failed Discoveries discovers at
// once for a caller: the Client's Discovery has just found the relay up.
func TestTunnelRequestDiscoversOutOfBackoff(t *testing.T) {
	t.Parallel()
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{ReplyTimeout: 100 * time.Millisecond, MaxBackoff: time.Minute}, chS, chG)
	// After five misses the next Discovery is 1.6 s away.
	waitUntil(t, "five Discoveries", func() bool { return r.Discoveries() >= 5 })
	r.SetMode(amttest.Normal)
	start := time.Now()
	if rep := tn.Request(context.Background(), time.Second); rep.Result != amt.ResultOK {
		t.Fatalf("Request %+v after %v (tunnel %+v)", rep, time.Since(start), tn.Status())
	}
	if st := tn.Status(); st.State != amt.TunnelEstablished {
		t.Errorf("State %v", st.State)
	}
}

// A tunnel that never gets an Advertisement in time reports no Query, and
// says why.
func TestTunnelRequestNoRelay(t *testing.T) {
	t.Parallel()
	r := startResponder(t, "127.0.0.1:0")
	r.SetMode(amttest.Silent)
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{ReplyTimeout: 50 * time.Millisecond})
	rep := tn.Request(context.Background(), 300*time.Millisecond)
	if rep.Result != amt.ResultNoQuery || !errors.Is(rep.Err, amt.ErrNoAdvertisement) || rep.Relay.IsValid() {
		t.Errorf("Request %+v", rep)
	}
	if w, _ := tn.RequestCallers(); w != 0 {
		t.Errorf("%d callers left waiting", w)
	}
}
