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

// canaryTunnelTo returns the canary tunnel to target, nil if none runs. A health probe of target makes
// its Request through it, so that the relay sees one gateway of this host.
func canaryTunnelTo(target netip.AddrPort) *amt.Tunnel {
	canaryTunnels.Lock()
	defer canaryTunnels.Unlock()
	if st := canaryTunnels.byTarget[target]; st != nil {
		return st.tunnel
	}
	return nil
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

// canaryJoin is one check's canaries once its tunnel carries them.
type canaryJoin struct {
	c       *check
	st      *sharedTunnel
	since   time.Time // when the channels were joined
	last    []uint64  // packets counted at the last check, by canary
	dropped uint64    // the tunnel's drops at the last check
}

// canarySweep checks the canaries of every check every interval: each check's relay address carries
// a tunnel on which every canary channel is joined, and a canary passes an interval in which at least
// one data packet of its channel arrived. One ticker serves all the checks of the instance, so a
// thousand relays wake the process once an interval for their canaries, not a thousand times; each
// check covers about one interval. The first check after a join covers at least nine tenths of one
// (joins made at start come just before the ticker starts, those of looked-up names a little
// after); a join later than that starts its first interval at the next tick instead, or its first
// check would count data from up to two intervals back.
//
// It starts with the checks already joined (active) and joins the others (later) on a goroutine
// each, since a probe name is looked up first.
func (p *prober) canarySweep(ctx context.Context, active []*canaryJoin, later []*check) {
	joined := make(chan *canaryJoin, len(later))
	var joining sync.WaitGroup
	for _, c := range later {
		joining.Go(func() {
			if st := p.canaryTunnel(ctx, c); st != nil {
				if j := p.joinCanaries(c, st); j != nil {
					joined <- j
				}
			}
		})
	}
	defer func() {
		joining.Wait()
		close(joined)
		for j := range joined {
			active = append(active, j)
		}
		// Leaving waits for each tunnel that no other instance holds to finish: in parallel.
		var leaving sync.WaitGroup
		for _, j := range active {
			leaving.Go(func() { p.leaveCanaries(j) })
		}
		leaving.Wait()
	}()

	t := time.NewTicker(p.hc.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-joined:
			active = append(active, j)
		case now := <-t.C:
			for i, j := range active {
				if ctx.Err() != nil {
					return // stopping need not wait for a whole sweep
				}
				p.checkCanaries(j, now.Sub(j.since) >= p.hc.interval*9/10)
				active[i] = p.followName(j)
			}
		}
	}
}

// followName moves the canaries of a check whose target is a name to the tunnel of the name's first
// address, when the last lookup (the probes look it up every interval) found another one: a
// renumbered relay keeps its canaries. Until the new tunnel carries them, they stay where they are.
func (p *prober) followName(j *canaryJoin) *canaryJoin {
	first := j.c.firstAddr.Load()
	if j.c.target.addr.IsValid() || first == nil || *first == j.st.target {
		return j
	}
	st, err := acquireTunnel(*first, p.tunnelOptions())
	if err != nil {
		log.Errorf("relay %s: canaries stay on %s: no tunnel to %s, where %s now points: %v", j.c.relay.name, j.st.target, *first, j.c.target.host, err)
		return j
	}
	moved := p.joinCanaries(j.c, st)
	if moved == nil {
		return j
	}
	log.Infof("relay %s: canaries moved from %s to %s, where %s now points", j.c.relay.name, j.st.target, *first, j.c.target.host)
	p.leaveCanaries(j)
	return moved
}

// joinCanariesNow joins the canaries of every check whose target is an address, before the instance
// starts answering, and returns the checks whose target is a name (or whose tunnel could not be
// made) for canarySweep to join. In a Corefile reload the new instance then holds each channel of a
// shared tunnel before the old one lets go of it, and the relay sees neither a leave nor a new join.
func (p *prober) joinCanariesNow() (joined []*canaryJoin, later []*check) {
	for _, c := range p.checks {
		if !c.target.addr.IsValid() {
			later = append(later, c)
			continue
		}
		st, err := acquireTunnel(c.target.addr, p.tunnelOptions())
		if err != nil {
			later = append(later, c) // canaryTunnel reports it and tries again
			continue
		}
		if j := p.joinCanaries(c, st); j != nil {
			joined = append(joined, j)
		}
	}
	return joined, later
}

// joinCanaries joins every canary channel on the check's tunnel. It returns nil when a channel cannot
// be joined (logged; the canaries are not checked, and the tunnel is let go).
func (p *prober) joinCanaries(c *check, st *sharedTunnel) *canaryJoin {
	for i, cn := range p.canaries {
		if err := st.join(cn.source, cn.group); err != nil {
			log.Errorf("relay %s canary %s: %v", c.relay.name, cn.text, err)
			for _, joined := range p.canaries[:i] {
				st.leave(joined.source, joined.group)
			}
			st.release()
			return nil
		}
	}
	// What arrived before the joins is not the first interval's.
	st.tunnel.Drain()
	j := &canaryJoin{c: c, st: st, since: time.Now(), last: make([]uint64, len(p.canaries)), dropped: st.tunnel.Status().Dropped}
	for i, cn := range p.canaries {
		j.last[i] = st.tunnel.Packets(cn.source, cn.group)
	}
	return j
}

// leaveCanaries leaves the check's canary channels and lets go of its tunnel.
func (p *prober) leaveCanaries(j *canaryJoin) {
	for _, cn := range p.canaries {
		j.st.leave(cn.source, cn.group)
	}
	j.st.release()
}

// checkCanaries counts, for each canary of the check, the data of its channel since the last check
// and, when that covered an interval (judge), reports whether any came.
func (p *prober) checkCanaries(j *canaryJoin, judge bool) {
	c, tunnel := j.c, j.st.tunnel
	// The tunnel leaves data in its socket between checks: read it now.
	tunnel.Drain()
	if d := tunnel.Status().Dropped; d > j.dropped {
		if j.dropped == 0 {
			// Once per tunnel and instance: the canaries still pass on what is left, but their
			// packet counts fall short.
			log.Warningf("relay %s: the canary tunnel to %s dropped %d datagrams for want of receive buffer; "+
				"canary_packets_total counts fewer than arrived (net.core.rmem_max)", c.relay.name, j.st.target, d)
		}
		j.dropped = d
	}
	for i, cn := range p.canaries {
		n := tunnel.Packets(cn.source, cn.group)
		got := n - j.last[i]
		j.last[i] = n
		canaryPackets.WithLabelValues(c.relay.name, cn.text).Add(float64(got))
		if !judge {
			continue
		}
		result := fmt.Sprintf("%d packets", got)
		if got == 0 {
			result = "no data (tunnel " + tunnel.Status().State.String() + ")"
		}
		p.health.observeCanary(c.ids, cn.index, outcome{ok: got > 0, result: result})
	}
}

// tunnelOptions paces a canary tunnel by the health checks: it sends a Request and its joins every
// interval, so that a relay that lost its gateway state (a restart) carries the canary again within
// an interval, and it retries a relay that failed or set L after an interval, not after the
// minutes a gateway would wait: whether the relay takes gateways is the handshake probe's business;
// the canary's is whether data comes. Data waits in the tunnel's socket until a check reads it: a
// check needs one packet of each channel per interval, and a thousand tunnels woken for every
// beacon packet cost more than the rest of the health checks together.
func (p *prober) tunnelOptions() amt.TunnelOptions {
	return amt.TunnelOptions{
		ReplyTimeout:  p.hc.timeout,
		Refresh:       p.hc.interval,
		MaxBackoff:    p.hc.interval,
		LimitHoldDown: p.hc.interval,
		QueueData:     true,
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
