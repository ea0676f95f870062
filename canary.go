package amtrelay

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// Canary tunnels are process-wide, one per relay address. Relays track gateways by IP address
// alone: two tunnels from this host to one relay take each other's streams, and one tunnel's leave
// ends the other's join. So the instances of a Corefile reload share the tunnel of each relay, and
// a channel is joined once, while at least one instance wants it.
var canaryTunnels = struct {
	sync.Mutex
	byTarget map[netip.AddrPort]*sharedTunnel
}{byTarget: map[netip.AddrPort]*sharedTunnel{}}

// sharedTunnel is an amt.Tunnel that runs while any instance holds it.
type sharedTunnel struct {
	target   netip.AddrPort
	tunnel   *amt.Tunnel
	refs     int
	channels map[[2]netip.Addr]int // (source, group) -> holders that joined it
	stop     context.CancelFunc
	done     chan struct{}
}

// acquireTunnel returns the tunnel to target, starting it if nobody holds it.
func acquireTunnel(target netip.AddrPort, opts amt.TunnelOptions) (*sharedTunnel, error) {
	canaryTunnels.Lock()
	defer canaryTunnels.Unlock()
	if st := canaryTunnels.byTarget[target]; st != nil {
		st.refs++
		return st, nil
	}
	t, err := amt.NewTunnel(target, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &sharedTunnel{target: target, tunnel: t, refs: 1, channels: map[[2]netip.Addr]int{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(st.done)
		_ = t.Run(ctx)
	}()
	canaryTunnels.byTarget[target] = st
	return st, nil
}

// join joins (s, g) on the tunnel for one more holder.
func (st *sharedTunnel) join(s, g netip.Addr) error {
	canaryTunnels.Lock()
	defer canaryTunnels.Unlock()
	k := [2]netip.Addr{s, g}
	if st.channels[k] == 0 {
		if err := st.tunnel.Join(s, g); err != nil {
			return err
		}
	}
	st.channels[k]++
	return nil
}

// leave drops one holder of (s, g); the last one leaves the channel at the relay.
func (st *sharedTunnel) leave(s, g netip.Addr) {
	canaryTunnels.Lock()
	defer canaryTunnels.Unlock()
	k := [2]netip.Addr{s, g}
	if st.channels[k]--; st.channels[k] <= 0 {
		delete(st.channels, k)
		st.tunnel.Leave(s, g)
	}
}

// release drops one holder of the tunnel; the last one ends it, leaving its channels (and tearing
// it down where the relay supports that), and waits for that.
func (st *sharedTunnel) release() {
	canaryTunnels.Lock()
	st.refs--
	last := st.refs == 0
	if last {
		delete(canaryTunnels.byTarget, st.target)
	}
	canaryTunnels.Unlock()
	if last {
		st.stop()
		<-st.done
	}
}

// canaryLoop checks the canaries of one check every interval: the check's relay address carries a
// tunnel on which every canary channel is joined, and a canary passes an interval in which at least
// one data packet of its channel arrived.
func (p *prober) canaryLoop(ctx context.Context, c *check, canaries []*canary) {
	st := p.canaryTunnel(ctx, c)
	if st == nil {
		return // stopping
	}
	defer st.release()
	for _, cn := range canaries {
		if err := st.join(cn.source, cn.group); err != nil {
			log.Errorf("relay %s canary %s: %v", c.relay.name, cn.text, err)
			return
		}
		defer st.leave(cn.source, cn.group)
	}

	last := make([]uint64, len(canaries))
	for i, cn := range canaries {
		last[i] = st.tunnel.Packets(cn.source, cn.group)
	}
	t := time.NewTicker(p.hc.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i, cn := range canaries {
			n := st.tunnel.Packets(cn.source, cn.group)
			got := n - last[i]
			last[i] = n
			canaryPackets.WithLabelValues(c.relay.name, cn.text).Add(float64(got))
			result := fmt.Sprintf("%d packets", got)
			if got == 0 {
				result = "no data (tunnel " + st.tunnel.Status().State.String() + ")"
			}
			p.health.observeCanary(c.ids, cn.index, outcome{ok: got > 0, result: result})
		}
	}
}

// tunnelOptions paces a canary tunnel by the health checks: it sends a Request and its joins every
// interval, so that a relay that lost its gateway state (a restart) carries the canary again within
// an interval, and it retries a relay that failed or set L after an interval, not after the
// minutes a gateway would wait: whether the relay takes gateways is the handshake probe's business;
// the canary's is whether data comes.
func (p *prober) tunnelOptions() amt.TunnelOptions {
	return amt.TunnelOptions{
		ReplyTimeout:  p.hc.timeout,
		Refresh:       p.hc.interval,
		MaxBackoff:    p.hc.interval,
		LimitHoldDown: p.hc.interval,
	}
}

// canaryTunnel acquires the tunnel to the check's target, looking a name up first; while that
// fails, the canaries fail every interval. It returns nil when ctx ends.
func (p *prober) canaryTunnel(ctx context.Context, c *check) *sharedTunnel {
	for {
		targets, err := p.targets(ctx, c)
		var st *sharedTunnel
		if err == nil {
			// The first address in sorted order: the same one every time the name has not changed.
			st, err = acquireTunnel(targets[0], p.tunnelOptions())
		}
		if err == nil {
			return st
		}
		if ctx.Err() == nil {
			for _, cn := range p.canaries {
				p.health.observeCanary(c.ids, cn.index, outcome{result: "no tunnel: " + err.Error()})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.hc.interval):
		}
	}
}
