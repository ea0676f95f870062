package amt_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

var (
	chS  = netip.MustParseAddr("100.127.1.10")
	chG  = netip.MustParseAddr("232.1.1.1")
	chS2 = netip.MustParseAddr("100.127.1.11")
	chG2 = netip.MustParseAddr("232.1.1.2")
)

// runTunnel makes a tunnel, joins chans (pairs of S and G) before it runs,
// starts Run on its own goroutine and returns the tunnel and a function
// waiting for Run's result (callable many times). Cleanup cancels Run and
// checks that it returned cleanly.
func runTunnel(t *testing.T, target netip.AddrPort, opts amt.TunnelOptions, chans ...netip.Addr) (*amt.Tunnel, func() error) {
	t.Helper()
	tn, err := amt.NewTunnel(target, opts)
	if err != nil {
		t.Fatalf("NewTunnel: %v", err)
	}
	for i := 0; i+1 < len(chans); i += 2 {
		if err := tn.Join(chans[i], chans[i+1]); err != nil {
			t.Fatalf("Join(%v, %v): %v", chans[i], chans[i+1], err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- tn.Run(ctx) }()
	wait := sync.OnceValue(func() error { return <-errc })
	t.Cleanup(func() {
		cancel()
		if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	return tn, wait
}

// bothModes runs f on tunnels that read data as it comes and on tunnels that
// leave it queued until Drain (QueueData; the same as the first where the
// platform does not support it).
func bothModes(t *testing.T, f func(t *testing.T, queue bool)) {
	t.Helper()
	for _, queue := range []bool{false, true} {
		t.Run(map[bool]string{false: "read", true: "queue"}[queue], func(t *testing.T) { f(t, queue) })
	}
}

// packets is tn.Packets, after a Drain for a tunnel that queues data.
func packets(tn *amt.Tunnel, queue bool, s, g netip.Addr) uint64 {
	if queue {
		tn.Drain()
	}
	return tn.Packets(s, g)
}

func waitState(t *testing.T, tn *amt.Tunnel, want amt.TunnelState) {
	t.Helper()
	waitUntil(t, "state "+want.String(), func() bool { return tn.Status().State == want })
}

// tunnelGateway is the tunnel's endpoint as a relay on 127.0.0.1 or ::1
// sees it.
func tunnelGateway(tn *amt.Tunnel, relay netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(relay.Addr(), tn.LocalAddr().Port())
}

func hasMembership(r *amttest.Responder, gw netip.AddrPort, s, g netip.Addr) bool {
	for _, m := range r.Memberships() {
		if m.Gateway == gw && m.Source == s && m.Group == g {
			return true
		}
	}
	return false
}

func TestTunnelJoinCountsData(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "127.0.0.1:0")
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute, QueueData: queue}, chS, chG)
		waitState(t, tn, amt.TunnelEstablished)
		gw := tunnelGateway(tn, r.Addr())
		waitUntil(t, "the first join", func() bool { return hasMembership(r, gw, chS, chG) })

		// Joined while established: sent at once, not at the next refresh a
		// minute away.
		if err := tn.Join(chS2, chG2); err != nil {
			t.Fatalf("Join: %v", err)
		}
		waitUntil(t, "the second join", func() bool { return hasMembership(r, gw, chS2, chG2) })

		for range 3 {
			if n := r.Inject(chS, chG, []byte("a")); n != 1 {
				t.Fatalf("Inject sent to %d gateways", n)
			}
		}
		r.Inject(chS2, chG2, []byte("b"))
		// (S2, G) is not joined: the relay sends nothing for it.
		if n := r.Inject(chS2, chG, []byte("c")); n != 0 {
			t.Errorf("Inject of an unjoined channel sent to %d", n)
		}
		waitUntil(t, "the data", func() bool { return packets(tn, queue, chS, chG) == 3 && packets(tn, queue, chS2, chG2) == 1 })
		if tn.Packets(chS2, chG) != 0 || !tn.LastData(chS2, chG).IsZero() || tn.LastData(chS, chG).IsZero() {
			t.Errorf("Counts leaked across channels: %d, %v", tn.Packets(chS2, chG), tn.LastData(chS2, chG))
		}
		// Mapped addresses name the same channel.
		if n := tn.Packets(netip.AddrFrom16(chS.As16()), chG); n != 3 {
			t.Errorf("Packets with a mapped source = %d", n)
		}
		st := tn.Status()
		if st.Data != 4 || st.Ignored != 0 || st.Bad != 0 || st.Channels != 2 || st.Err != nil || st.Relay != r.Addr() {
			t.Errorf("Status %+v", st)
		}
		if st.Query.QQI != amttest.DefaultQQI || st.Query.MLD {
			t.Errorf("Query %+v", st.Query)
		}
	})
}

func TestTunnelLeaveStopsData(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{}, chS, chG, chS2, chG)
	gw := tunnelGateway(tn, r.Addr())
	waitUntil(t, "the joins", func() bool { return hasMembership(r, gw, chS, chG) && hasMembership(r, gw, chS2, chG) })
	r.Inject(chS, chG, []byte("x"))
	waitUntil(t, "data", func() bool { return tn.Packets(chS, chG) == 1 })

	tn.Leave(chS, chG)
	waitUntil(t, "the leave", func() bool { return !hasMembership(r, gw, chS, chG) })
	if n := r.Inject(chS, chG, []byte("x")); n != 0 {
		t.Errorf("Relay still sends the left channel to %d gateways", n)
	}
	if !hasMembership(r, gw, chS2, chG) {
		t.Errorf("Leaving (S,G) also left (S2,G)")
	}
	if n := tn.Packets(chS, chG); n != 0 {
		t.Errorf("Packets of a left channel = %d", n)
	}
	tn.Leave(chS, chG) // not joined: nothing happens
}

func TestTunnelRefreshOutlivesRelayExpiry(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, queue bool) {
		// Twenty refreshes per expiry period: only a stall of the whole
		// process for most of two seconds could let the channel expire.
		const expiry = 2 * time.Second
		r := startRelay(t, "127.0.0.1:0", amttest.Config{GatewayTimeout: expiry})
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: 100 * time.Millisecond, QueueData: queue}, chS, chG)
		gw := tunnelGateway(tn, r.Addr())
		waitUntil(t, "the join", func() bool { return hasMembership(r, gw, chS, chG) })
		// Two expiry periods: without refreshes the channel would have
		// expired and been joined anew, counting a second join.
		deadline := time.Now().Add(2 * expiry)
		for time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !hasMembership(r, gw, chS, chG) || r.Joins(chS, chG) != 1 {
			t.Errorf("Membership %v, %d joins; want kept alive by one join", r.Memberships(), r.Joins(chS, chG))
		}
		if s := r.Stats(); s.Updates < 10 || s.BadMAC != 0 {
			t.Errorf("Relay stats %+v: want many refreshes, no bad MAC", s)
		}
	})
}

func TestTunnelRefreshFollowsQQI(t *testing.T) {
	// Without a Refresh option the Query's QQI (here 1 s) sets the pace
	// of Requests and Updates; the default (20 s) would give none here.
	t.Parallel()
	r := startRelay(t, "127.0.0.1:0", amttest.Config{QQI: time.Second})
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{}, chS, chG)
	waitState(t, tn, amt.TunnelEstablished)
	waitUntil(t, "three Request cycles", func() bool { return r.Stats().Requests >= 3 && r.Stats().Updates >= 3 })
	if q := tn.Status().Query; q.QQI != time.Second {
		t.Errorf("Query QQI %v", q.QQI)
	}
}

func TestTunnelRecoversFromRelayRestart(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "127.0.0.1:0")
		opts := amt.TunnelOptions{ReplyTimeout: 200 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Refresh: 200 * time.Millisecond, QueueData: queue}
		tn, _ := runTunnel(t, r.Addr(), opts, chS, chG)
		gw := tunnelGateway(tn, r.Addr())
		waitUntil(t, "the join", func() bool { return hasMembership(r, gw, chS, chG) })

		// A restart loses the relay's state and secret: the tunnel's next
		// Request cycle gets a new MAC and joins again.
		if err := r.Restart(); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		waitUntil(t, "the join after restart", func() bool { return hasMembership(r, gw, chS, chG) })
		r.Inject(chS, chG, []byte("x"))
		waitUntil(t, "data after restart", func() bool { return packets(tn, queue, chS, chG) == 1 })

		// A relay that stays down is noticed (refused, then back to
		// Discovery), and the tunnel comes back when the relay does.
		if err := r.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		waitState(t, tn, amt.TunnelDiscovering)
		waitRefused(t, tn)
		if st := tn.Status(); st.Restarts == 0 {
			t.Errorf("Status after relay stop %+v", st)
		}
		if err := r.Restart(); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		waitUntil(t, "the join after the relay came back", func() bool { return hasMembership(r, gw, chS, chG) })
		waitState(t, tn, amt.TunnelEstablished)
		r.Inject(chS, chG, []byte("x"))
		waitUntil(t, "data after the relay came back", func() bool { return packets(tn, queue, chS, chG) == 2 })
	})
}

func TestTunnelDataAfterLongRefusal(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, queue bool) {
		// A relay down for a while refuses hundreds of Discoveries. On Linux
		// each refusal is an ICMP error queued on the tunnel's socket
		// (IP_RECVERR) and charged to its receive buffer until read from the
		// error queue: left there, a few hundred fill the buffer, and once the
		// relay is back a burst of Data is mostly dropped by the kernel.
		r := startResponder(t, "127.0.0.1:0")
		if err := r.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		// A refusal comes back at once and the next Discovery goes out a
		// millisecond later: about a thousand refusals a second, what Linux
		// sends at most (net.ipv4.icmp_msgs_per_sec).
		opts := amt.TunnelOptions{ReplyTimeout: time.Second, MaxBackoff: time.Millisecond, Refresh: time.Minute, QueueData: queue}
		tn, _ := runTunnel(t, r.Addr(), opts, chS, chG)
		waitRefused(t, tn)
		time.Sleep(1500 * time.Millisecond)

		if err := r.Restart(); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		waitUntil(t, "the join", func() bool { return hasMembership(r, tunnelGateway(tn, r.Addr()), chS, chG) })
		const burst = 20
		for range burst {
			r.Inject(chS, chG, []byte("x"))
		}
		deadline := time.Now().Add(2 * time.Second)
		for packets(tn, queue, chS, chG) < burst && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := tn.Packets(chS, chG); n != burst {
			t.Errorf("%d of a burst of %d Data messages arrived after the relay came back", n, burst)
		}
	})
}

func TestTunnelCloseLeavesAndTearsDown(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		for _, g := range []bool{false, true} {
			t.Run(map[bool]string{false: "no G", true: "G"}[g], func(t *testing.T) {
				r := startRelay(t, "127.0.0.1:0", amttest.Config{GatewayField: g})
				tn, wait := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute, QueueData: queue}, chS, chG, chS2, chG2)
				gw := tunnelGateway(tn, r.Addr())
				waitUntil(t, "the joins", func() bool { return len(r.Memberships()) == 2 })
				r.Inject(chS, chG, []byte("x"))
				waitUntil(t, "data", func() bool { return packets(tn, queue, chS, chG) == 1 })
				updates := r.Stats().Updates

				if err := tn.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				if err := wait(); err != nil {
					t.Errorf("Run after Close returned %v, want nil", err)
				}
				// The leave is one Update with both records; the Teardown
				// comes only with G.
				waitUntil(t, "the leave", func() bool { return r.Stats().Updates == updates+1 })
				waitUntil(t, "no state", func() bool { return !hasMembership(r, gw, chS, chG) && !hasMembership(r, gw, chS2, chG2) })
				want := uint64(0)
				if g {
					want = 1
					waitUntil(t, "the Teardown", func() bool { return r.Stats().Teardowns == 1 })
				}
				if s := r.Stats(); s.Teardowns != want || s.BadMAC != 0 {
					t.Errorf("Relay stats %+v, want %d Teardowns", s, want)
				}
				if st := tn.Status(); st.State != amt.TunnelClosed {
					t.Errorf("State %v after Close", st.State)
				}
				if n := tn.Packets(chS, chG); n != 1 {
					t.Errorf("Packets after Close = %d, want 1", n)
				}
				if err := tn.Close(); err != nil {
					t.Errorf("Second Close: %v", err)
				}
			})
		}
	})
}

func TestTunnelCancelLeaves(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	tn, err := amt.NewTunnel(r.Addr(), amt.TunnelOptions{})
	if err != nil {
		t.Fatalf("NewTunnel: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- tn.Run(ctx) }()
	tn.Join(chS, chG)
	waitUntil(t, "the join", func() bool { return len(r.Memberships()) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	waitUntil(t, "the leave", func() bool { return len(r.Memberships()) == 0 })
	if err := tn.Run(context.Background()); !errors.Is(err, amt.ErrTunnelClosed) {
		t.Errorf("Second Run = %v, want ErrTunnelClosed", err)
	}
	if err := tn.Join(chS2, chG2); !errors.Is(err, amt.ErrTunnelClosed) {
		t.Errorf("Join after the end = %v, want ErrTunnelClosed", err)
	}
}

func TestTunnelLimited(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "127.0.0.1:0")
		r.SetMode(amttest.Limit)
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{LimitHoldDown: 300 * time.Millisecond, QueueData: queue}, chS, chG)
		waitState(t, tn, amt.TunnelLimited)
		if st := tn.Status(); !errors.Is(st.Err, amt.ErrLimited) || !st.Query.Limit {
			t.Errorf("Status %+v", st)
		}
		// After the hold-down the tunnel starts over; no Update ever goes to a
		// relay that said L.
		waitUntil(t, "a second Discovery", func() bool { return r.Stats().Discoveries >= 2 })
		if n := r.Stats().Updates; n != 0 {
			t.Errorf("%d Updates sent to a limited relay", n)
		}
		r.SetMode(amttest.Normal)
		waitState(t, tn, amt.TunnelEstablished)
		waitUntil(t, "the join", func() bool { return len(r.Memberships()) == 1 })
	})
}

func TestTunnelNoQueryRestartsDiscovery(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "127.0.0.1:0")
		r.SetMode(amttest.RequestSilent)
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{ReplyTimeout: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, QueueData: queue})
		waitUntil(t, "a restart", func() bool { return tn.Status().Restarts >= 1 })
		st := tn.Status()
		if !errors.Is(st.Err, amt.ErrNoQuery) || st.Queries != 0 || st.Requests < 3 {
			t.Errorf("Status %+v, want three Requests and no Query before the restart", st)
		}
		// The restart is a new Discovery.
		waitUntil(t, "the Requests", func() bool { return r.Stats().Requests >= 3 })
		waitUntil(t, "the second Discovery", func() bool { return r.Stats().Discoveries >= 2 })
	})
}

func TestTunnelRefused(t *testing.T) {
	tn, _ := runTunnel(t, closedPort(t, "127.0.0.1:0"), amt.TunnelOptions{ReplyTimeout: 100 * time.Millisecond})
	waitRefused(t, tn)
	if st := tn.Status(); st.State != amt.TunnelDiscovering {
		t.Errorf("State %v", st.State)
	}
}

// waitRefused waits for the tunnel to record a refusal (Linux) or any
// error (elsewhere, where ICMP errors do not reach unconnected sockets).
// Waiting rather than reading once: a stalled goroutine can see its reply
// timeout pass before the queued refusal, which then shows up next.
func waitRefused(t *testing.T, tn *amt.Tunnel) {
	t.Helper()
	waitUntil(t, "a refusal", func() bool {
		err := tn.Status().Err
		if runtime.GOOS != "linux" {
			return err != nil
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	})
}

func TestTunnelAdvertisedElsewhereOtherSource(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		relay := startResponder(t, "127.0.0.2:0")
		disc, err := amttest.Start(netip.AddrPortFrom(addr4, relay.Addr().Port()).String())
		if err != nil {
			t.Skipf("Port %d taken on 127.0.0.1: %v", relay.Addr().Port(), err)
		}
		defer disc.Stop()
		disc.SetAdvertised(relay.Addr().Addr())
		// Queries and Data come from another port than the Requests went to.
		relay.SetMode(amttest.OtherSource)
		tn, _ := runTunnel(t, disc.Addr(), amt.TunnelOptions{QueueData: queue}, chS, chG)
		waitState(t, tn, amt.TunnelEstablished)
		if st := tn.Status(); st.Relay != relay.Addr() {
			t.Errorf("Relay %v, want %v", st.Relay, relay.Addr())
		}
		waitUntil(t, "the join", func() bool { return len(relay.Memberships()) == 1 })
		relay.Inject(chS, chG, []byte("x"))
		waitUntil(t, "data", func() bool { return packets(tn, queue, chS, chG) == 1 })
		if s := disc.Stats(); s.Requests != 0 || s.Updates != 0 {
			t.Errorf("Discovery address got %+v", s)
		}
	})
}

func TestTunnelIPv6(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "[::1]:0")
		s6, g6 := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("ff3e::8000:1")
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{QueueData: queue}, s6, g6)
		waitState(t, tn, amt.TunnelEstablished)
		// Every channel is IPv6, so the Request asked for MLDv2.
		if q := tn.Status().Query; !q.MLD {
			t.Errorf("Query %+v, want MLDv2", q)
		}
		waitUntil(t, "the join", func() bool { return hasMembership(r, tunnelGateway(tn, r.Addr()), s6, g6) })
		r.Inject(s6, g6, []byte("x"))
		waitUntil(t, "data", func() bool { return packets(tn, queue, s6, g6) == 1 })
	})
}

func TestTunnelManyChannels(t *testing.T) {
	// 150 IPv4 channels do not fit in one reasonably sized Update.
	// Joined before Run, so that they all go out with the first Query.
	r := startResponder(t, "127.0.0.1:0")
	var chans []netip.Addr
	for i := range 150 {
		chans = append(chans, netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}), chG)
	}
	runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute}, chans...)
	waitUntil(t, "150 memberships", func() bool { return len(r.Memberships()) == 150 })
	if s := r.Stats(); s.Updates != 2 {
		t.Errorf("Relay got %d Updates, want 2", s.Updates)
	}
}

func TestTunnelCountsJunk(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "127.0.0.1:0")
		tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{Refresh: time.Minute, QueueData: queue}, chS, chG)
		waitState(t, tn, amt.TunnelEstablished)
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		defer c.Close()
		to := netip.AddrPortFrom(addr4, tn.LocalAddr().Port())
		data, _ := amt.AppendData(nil, amt.Data{Source: netip.AddrPortFrom(chS2, 1), Group: netip.AddrPortFrom(chG, 1)})
		for _, m := range [][]byte{
			{},              // bad
			{0x16, 0},       // version 1: bad
			{0x06, 0, 0x45}, // truncated Data: bad
			data,            // Data for a channel not joined: ignored
			amt.AppendQuery(nil, amt.Query{Nonce: 1}), // stale nonce: ignored
			amt.AppendDiscovery(nil, 1),               // a relay's message type: ignored
		} {
			if _, err := c.WriteToUDPAddrPort(m, to); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		waitUntil(t, "the counts", func() bool {
			if queue {
				tn.Drain()
			}
			st := tn.Status()
			return st.Bad == 3 && st.Ignored == 3
		})
		if n := tn.Packets(chS2, chG); n != 0 {
			t.Errorf("Unjoined channel counted %d packets", n)
		}
	})
}

func TestTunnelJoinErrors(t *testing.T) {
	tn, err := amt.NewTunnel(netip.MustParseAddrPort("127.0.0.1:2268"), amt.TunnelOptions{MaxChannels: 2})
	if err != nil {
		t.Fatalf("NewTunnel: %v", err)
	}
	for _, ch := range [][2]string{
		{"100.127.1.10", "10.0.0.1"},     // group not multicast
		{"232.1.1.9", "232.1.1.1"},       // multicast source
		{"0.0.0.0", "232.1.1.1"},         // unspecified source
		{"2001:db8::1", "232.1.1.1"},     // families differ
		{"100.127.1.10", "ff3e::8000:1"}, // families differ
	} {
		if err := tn.Join(netip.MustParseAddr(ch[0]), netip.MustParseAddr(ch[1])); !errors.Is(err, amt.ErrChannel) {
			t.Errorf("Join%v = %v, want ErrChannel", ch, err)
		}
	}
	if err := tn.Join(netip.Addr{}, chG); !errors.Is(err, amt.ErrChannel) {
		t.Errorf("Join with zero source = %v", err)
	}
	tn.Join(chS, chG)
	tn.Join(chS, chG) // again: no-op
	tn.Join(chS2, chG)
	if err := tn.Join(chS2, chG2); !errors.Is(err, amt.ErrTooManyChannels) {
		t.Errorf("Third channel = %v, want ErrTooManyChannels", err)
	}
	if st := tn.Status(); st.Channels != 2 || st.State != amt.TunnelDiscovering {
		t.Errorf("Status %+v", st)
	}
	if err := tn.Close(); err != nil {
		t.Errorf("Close before Run: %v", err)
	}
	if err := tn.Run(context.Background()); !errors.Is(err, amt.ErrTunnelClosed) {
		t.Errorf("Run after Close = %v", err)
	}
	if _, err := amt.NewTunnel(netip.AddrPort{}, amt.TunnelOptions{}); !errors.Is(err, amt.ErrInvalidTarget) {
		t.Errorf("NewTunnel with zero target = %v", err)
	}
}

func TestTunnelRunTwice(t *testing.T) {
	r := startResponder(t, "127.0.0.1:0")
	tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{})
	waitState(t, tn, amt.TunnelEstablished)
	if err := tn.Run(context.Background()); !errors.Is(err, amt.ErrTunnelRunning) {
		t.Errorf("Second Run = %v, want ErrTunnelRunning", err)
	}
}

func TestTunnelStateString(t *testing.T) {
	for s, want := range map[amt.TunnelState]string{
		amt.TunnelDiscovering: "discovering", amt.TunnelRequesting: "requesting", amt.TunnelEstablished: "established",
		amt.TunnelLimited: "limited", amt.TunnelClosed: "closed", 9: "TunnelState(9)",
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

func TestTunnelRefreshWaitsForTheNewQuery(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		// A relay that answers Requests slowly, and keeps only the latest
		// nonce as the Linux driver does: every Update must carry the nonce of
		// the latest Request, so the refresh that falls due with a Request has
		// to wait for its Query.
		conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		var mu sync.Mutex
		var updates, stale int
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 2048)
			var latest uint32
			for {
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if nonce, err := amt.ParseDiscovery(buf[:n]); err == nil {
					conn.WriteToUDPAddrPort(amt.AppendAdvertisement(nil, nonce, addr4), from)
				} else if nonce, _, err := amt.ParseRequest(buf[:n]); err == nil {
					latest = nonce
					time.Sleep(100 * time.Millisecond)
					conn.WriteToUDPAddrPort(amt.AppendQuery(nil, amt.Query{Nonce: nonce, QRV: 2, QQI: time.Second}), from)
				} else if u, err := amt.ParseUpdate(buf[:n]); err == nil {
					mu.Lock()
					updates++
					if u.Nonce != latest {
						stale++
					}
					mu.Unlock()
				}
			}
		}()
		t.Cleanup(func() { conn.Close(); <-done })
		addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
		tn, _ := runTunnel(t, addr, amt.TunnelOptions{Refresh: 150 * time.Millisecond, ReplyTimeout: 5 * time.Second, QueueData: queue}, chS, chG)
		if queue {
			// Drains from another goroutine take Queries from under Run
			// as the canary checks may: they are handled all the same.
			stop := make(chan struct{})
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
						tn.Drain()
					}
				}
			}()
			defer func() { close(stop); <-drained }()
		}
		waitUntil(t, "five Updates", func() bool { mu.Lock(); defer mu.Unlock(); return updates >= 5 })
		mu.Lock()
		defer mu.Unlock()
		if stale != 0 {
			t.Errorf("%d of %d Updates carried a nonce older than the latest Request", stale, updates)
		}
	})
}

// listenLoopback binds addr until the test ends, skipping the test where
// it cannot be bound (only 127.0.0.1 is loopback outside Linux).
func listenLoopback(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Skipf("Cannot bind %v: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendFrom sends msg to to from a socket bound to from.
func sendFrom(t *testing.T, from string, to netip.AddrPort, msg []byte) {
	t.Helper()
	c := listenLoopback(t, netip.MustParseAddrPort(from))
	if _, err := c.WriteToUDPAddrPort(msg, to); err != nil {
		t.Fatalf("Send from %s: %v", from, err)
	}
}

// handled waits until the tunnel has taken n Data or ignored messages.
func handled(t *testing.T, tn *amt.Tunnel, queue bool, n uint64) amt.TunnelStatus {
	t.Helper()
	var st amt.TunnelStatus
	waitUntil(t, "the datagrams handled", func() bool {
		if queue {
			tn.Drain()
		}
		st = tn.Status()
		return st.Data+st.Ignored >= n
	})
	return st
}

// Multicast Data carries no nonce: a datagram from a host other than the
// relay, sent to the tunnel's port, must not count, whether or not the
// tunnel is established.
func TestTunnelDataOnlyFromRelay(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		r := startResponder(t, "127.0.0.1:0")
		r.SetMode(amttest.Silent)
		opts := amt.TunnelOptions{Refresh: time.Minute, ReplyTimeout: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, QueueData: queue}
		tn, _ := runTunnel(t, r.Addr(), opts, chS, chG)
		port := netip.AddrPortFrom(addr4, tn.LocalAddr().Port())
		forged, _ := amt.AppendData(nil, amt.Data{Source: netip.AddrPortFrom(chS, 1), Group: netip.AddrPortFrom(chG, 1), Payload: []byte("forged")})

		sendFrom(t, "127.0.0.7:0", port, forged)
		if st := handled(t, tn, queue, 1); st.Data != 0 || st.Ignored != 1 || tn.Packets(chS, chG) != 0 {
			t.Fatalf("Forged Data before any Advertisement: %d packets counted, Status %+v", tn.Packets(chS, chG), st)
		}

		r.SetMode(amttest.Normal)
		waitState(t, tn, amt.TunnelEstablished)
		waitUntil(t, "the join", func() bool { return hasMembership(r, tunnelGateway(tn, r.Addr()), chS, chG) })
		sendFrom(t, "127.0.0.7:0", port, forged)
		if st := handled(t, tn, queue, 2); st.Data != 0 || st.Ignored != 2 || tn.Packets(chS, chG) != 0 {
			t.Fatalf("Forged Data once established: %d packets counted, Status %+v", tn.Packets(chS, chG), st)
		}

		r.Inject(chS, chG, []byte("real"))
		waitUntil(t, "the relay's data", func() bool { return packets(tn, queue, chS, chG) == 1 })
		if st := tn.Status(); st.Data != 1 || st.Ignored != 2 {
			t.Errorf("Status %+v, want the relay's Data counted and the forged ones ignored", st)
		}
	})
}

// A relay may send its Query and Data from another address than the one it
// advertised (bound to a wildcard address, it sends from whichever address
// routes to the gateway): Data counts from the advertised address and from
// the Query's source, at any port, and from nowhere else.
func TestTunnelDataFromQuerySource(t *testing.T) {
	bothModes(t, func(t *testing.T, queue bool) {
		// Runs once the sockets are closed, which ends the readers.
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		// Discovery on 127.0.0.1, Requests on 127.0.0.3 (the same port),
		// Queries from 127.0.0.4.
		disc := listenLoopback(t, netip.AddrPortFrom(addr4, 0))
		port := disc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		advertised := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), port)
		req := listenLoopback(t, advertised)
		queries := listenLoopback(t, netip.MustParseAddrPort("127.0.0.4:0"))
		wg.Go(func() {
			buf := make([]byte, 64)
			for {
				n, from, err := disc.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if nonce, err := amt.ParseDiscovery(buf[:n]); err == nil {
					disc.WriteToUDPAddrPort(amt.AppendAdvertisement(nil, nonce, advertised.Addr()), from)
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := req.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if nonce, _, err := amt.ParseRequest(buf[:n]); err == nil {
					queries.WriteToUDPAddrPort(amt.AppendQuery(nil, amt.Query{Nonce: nonce, QRV: 2, QQI: time.Minute}), from)
				}
			}
		})

		tn, _ := runTunnel(t, netip.AddrPortFrom(addr4, port), amt.TunnelOptions{Refresh: time.Minute, QueueData: queue}, chS, chG)
		waitState(t, tn, amt.TunnelEstablished)
		gw := netip.AddrPortFrom(addr4, tn.LocalAddr().Port())
		data, _ := amt.AppendData(nil, amt.Data{Source: netip.AddrPortFrom(chS, 1), Group: netip.AddrPortFrom(chG, 1)})
		if _, err := queries.WriteToUDPAddrPort(data, gw); err != nil {
			t.Fatalf("Send: %v", err)
		}
		sendFrom(t, "127.0.0.3:0", gw, data)
		sendFrom(t, "127.0.0.7:0", gw, data)
		st := handled(t, tn, queue, 3)
		if n := tn.Packets(chS, chG); n != 2 || st.Data != 2 || st.Ignored != 1 {
			t.Errorf("%d packets counted (Status %+v), want those from the Query's source and the advertised address", n, st)
		}
	})
}

// An Advertisement naming an address no Request can go to, or one of the
// other family, is a failed discovery: no Request goes out.
func TestTunnelUnusableAdvertisedAddress(t *testing.T) {
	for _, tc := range []struct {
		adv  string
		want error
	}{
		{"0.0.0.0", amt.ErrNoAdvertisement},
		{"224.0.0.1", amt.ErrNoAdvertisement},
		{"::", amt.ErrNoAdvertisement},
		{"::1", amt.ErrRelayFamily},
	} {
		t.Run(tc.adv, func(t *testing.T) {
			r := startResponder(t, "127.0.0.1:0")
			r.SetAdvertised(netip.MustParseAddr(tc.adv))
			tn, _ := runTunnel(t, r.Addr(), amt.TunnelOptions{ReplyTimeout: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, chS, chG)
			waitUntil(t, "the failed discovery", func() bool { return errors.Is(tn.Status().Err, tc.want) })
			if st := tn.Status(); st.State != amt.TunnelDiscovering || st.Requests != 0 || st.Relay.IsValid() || r.Stats().Requests != 0 {
				t.Errorf("Status %+v, relay got %d Requests; want discovering, none sent", st, r.Stats().Requests)
			}
		})
	}
}
