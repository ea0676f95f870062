package amtrelay

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// prober runs the periodic AMT Relay Discovery probes of one plugin instance: one goroutine per
// check, started in OnStartup and stopped in OnShutdown.
type prober struct {
	cfg    *config
	checks []*check

	// pending counts checks whose first probe has not finished and that had no state to restore;
	// Ready waits for zero.
	pending atomic.Int32

	mu      sync.Mutex // guards cancel and started against a stop racing a start
	cancel  context.CancelFunc
	started bool
	wg      sync.WaitGroup
}

// lastKnown outlives plugin instances. A Corefile reload builds new instances whose relays would
// otherwise start up and unprobed: a dead relay would be served, and readiness would drop (and an
// anycast route controlled by it could flap), until the new instance's first round answered. Each
// check records its endpoints' published state here, and the next instance with the same relay,
// endpoint and probe target starts from it.
var lastKnown = struct {
	sync.Mutex
	states map[string]knownState
}{states: make(map[string]knownState)}

type knownState struct {
	up bool
	at time.Time
}

// check is one probe target and the endpoints whose health it decides: by default one endpoint per
// check; a relay with a `probe` override has one check for all its endpoints.
type check struct {
	relay     *relay
	endpoints []*endpoint
	target    netip.AddrPort // fixed target, when the address is known
	host      string         // otherwise a name resolved before every probe
	port      uint16
	// restored: every endpoint started from a recent lastKnown state, so the first round has
	// nothing to decide before readiness can be reported.
	restored bool
}

// memoryKey names an endpoint as probed by a check: the same relay name and address probed at
// another target is a different observation.
func (c *check) memoryKey(e *endpoint) string {
	target := c.target.String()
	if c.host != "" {
		target = net.JoinHostPort(c.host, strconv.Itoa(int(c.port)))
	}
	return c.relay.name + " " + e.String() + " " + target
}

func newProber(cfg *config) *prober {
	p := &prober{cfg: cfg}
	if cfg.health.interval == 0 {
		return p
	}
	for _, r := range cfg.relays {
		if r.probe != "" {
			host, port, _ := net.SplitHostPort(r.probe) // validated by parse
			n, _ := strconv.ParseUint(port, 10, 16)
			p.checks = append(p.checks, newCheck(r, r.endpoints, host, uint16(n)))
			continue
		}
		for _, e := range r.endpoints {
			host := e.host
			if e.addr.IsValid() {
				host = e.addr.String()
			}
			p.checks = append(p.checks, newCheck(r, []*endpoint{e}, host, amt.Port))
		}
	}
	p.restore()
	return p
}

// restore starts each check's endpoints from lastKnown when every one of them was observed within
// the last two intervals (plus a timeout, plus a second for a slow reload); older states say too
// little about the relay now.
func (p *prober) restore() {
	hc := p.cfg.health
	now := time.Now()
	lastKnown.Lock()
	defer lastKnown.Unlock()
	for _, c := range p.checks {
		c.restored = true
		for _, e := range c.endpoints {
			k, ok := lastKnown.states[c.memoryKey(e)]
			if !ok || now.Sub(k.at) > 2*hc.interval+hc.timeout+time.Second {
				c.restored = false
				break
			}
		}
		if !c.restored {
			continue
		}
		for _, e := range c.endpoints {
			up := lastKnown.states[c.memoryKey(e)].up
			e.state.Restore(up)
			if !up {
				e.relay.upEndpoints.Add(-1)
			}
		}
	}
}

// remember records the published state of a check's endpoints for the next instance.
func (c *check) remember() {
	now := time.Now()
	lastKnown.Lock()
	defer lastKnown.Unlock()
	for _, e := range c.endpoints {
		lastKnown.states[c.memoryKey(e)] = knownState{up: e.state.Up(), at: now}
	}
}

func newCheck(r *relay, eps []*endpoint, host string, port uint16) *check {
	c := &check{relay: r, endpoints: eps, port: port}
	if a, err := netip.ParseAddr(host); err == nil {
		c.target = netip.AddrPortFrom(a, port)
	} else {
		c.host = host
	}
	return c
}

// start launches the probe loops. The first round runs at once; later rounds are spread over the
// interval so that a thousand relays do not get probed in the same millisecond.
func (p *prober) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return
	}
	p.started = true
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	var pending int32
	for _, c := range p.checks {
		if !c.restored {
			pending++
		}
	}
	p.pending.Store(pending)
	interval := p.cfg.health.interval
	for i, c := range p.checks {
		offset := interval * time.Duration(i) / time.Duration(len(p.checks))
		p.wg.Add(1)
		go p.loop(ctx, c, offset)
	}
}

// stop ends every probe loop and waits for them; safe to call more than once.
func (p *prober) stop() {
	p.mu.Lock()
	cancel := p.cancel
	p.cancel = nil
	p.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	p.wg.Wait()
}

// firstRoundDone reports whether every check has finished its first probe.
func (p *prober) firstRoundDone() bool { return p.pending.Load() <= 0 }

func (p *prober) loop(ctx context.Context, c *check, offset time.Duration) {
	defer p.wg.Done()
	p.probe(ctx, c)
	if !c.restored {
		p.pending.Add(-1)
	}

	select {
	case <-ctx.Done():
		return
	case <-time.After(offset):
	}
	// A ticker keeps each check on its own phase: rounds start every interval however long a probe
	// took, so a relay that dies is marked down within fails x interval (+ one timeout), and checks
	// do not drift into step with each other.
	t := time.NewTicker(p.cfg.health.interval)
	defer t.Stop()
	for {
		p.probe(ctx, c)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe runs one round for a check and feeds the outcome to its endpoints' state machines.
func (p *prober) probe(ctx context.Context, c *check) {
	hc := p.cfg.health
	outcome := p.discover(ctx, c, hc.timeout)
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe says nothing about the relay
	}
	ok := outcome == amt.ResultOK
	defer c.remember()
	for _, e := range c.endpoints {
		changed, streak := e.state.Observe(ok, hc.policy)
		if !changed {
			continue
		}
		r := e.relay
		if ok {
			log.Infof("relay %s %s up: ok x%d", r.name, e, streak)
			if r.upEndpoints.Add(1) == 1 {
				relayUp.WithLabelValues(r.name).Set(1)
				relayTransitions.WithLabelValues(r.name, "up").Inc()
			}
		} else {
			log.Warningf("relay %s %s down: %s x%d", r.name, e, outcome, streak)
			if r.upEndpoints.Add(-1) == 0 {
				relayUp.WithLabelValues(r.name).Set(0)
				relayTransitions.WithLabelValues(r.name, "down").Inc()
			}
		}
	}
}

// discover probes the check's target, or every address its name resolves to, and returns ok if any
// address answered, else the outcome of the first failure.
func (p *prober) discover(ctx context.Context, c *check, timeout time.Duration) amt.Result {
	targets := []netip.AddrPort{c.target}
	if c.host != "" {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", c.host)
		cancel()
		if err != nil || len(addrs) == 0 {
			probesTotal.WithLabelValues(c.relay.name, amt.ResultError.String()).Inc()
			return amt.ResultError
		}
		targets = targets[:0]
		for _, a := range addrs {
			targets = append(targets, netip.AddrPortFrom(a.Unmap(), c.port))
		}
	}

	replies := make([]amt.Reply, len(targets))
	if len(targets) == 1 {
		replies[0] = amt.Probe(ctx, targets[0], timeout)
	} else {
		var wg sync.WaitGroup
		for i, t := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i] = amt.Probe(ctx, t, timeout)
			}()
		}
		wg.Wait()
	}

	if ctx.Err() != nil {
		return amt.ResultError
	}
	for _, rep := range replies {
		probesTotal.WithLabelValues(c.relay.name, rep.Result.String()).Inc()
		if rep.Result == amt.ResultOK {
			probeDuration.WithLabelValues(c.relay.name).Observe(rep.RTT.Seconds())
		}
	}
	for _, rep := range replies {
		if rep.Result == amt.ResultOK {
			return amt.ResultOK
		}
	}
	outcome := replies[0].Result
	return outcome
}

// exportInitialState publishes relay_up for every relay before the first round, so a scrape never
// sees a configured relay without a series.
func (p *prober) exportInitialState() {
	for _, r := range p.cfg.relays {
		v := 0.0
		if r.up() {
			v = 1
		}
		relayUp.WithLabelValues(r.name).Set(v)
	}
}
