package amtrelay

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// maxProbeAddrs bounds the addresses probed for one name: the first ones in sorted order. A name
// that resolves to thousands of addresses would otherwise open thousands of sockets every round.
const maxProbeAddrs = 16

// probeClient is the amt.Client the health probes of every instance share: one socket per address
// family for the process, whatever the number of relays, of server blocks and of instances a
// Corefile reload overlaps. Each running prober holds it; the last one to let go closes it.
var probeClient struct {
	sync.Mutex
	holders int
	client  *amt.Client // nil until opened, and again once the last holder let go
}

// holdProbeClient adds a holder and opens the Client if it is not open.
func holdProbeClient() {
	probeClient.Lock()
	defer probeClient.Unlock()
	probeClient.holders++
	if _, err := openProbeClientLocked(); err != nil {
		log.Errorf("Health probes: %v; every probe fails until the sockets open", err)
	}
}

// releaseProbeClient drops a holder; the last one closes the Client, which has no probe pending
// by then: every holder releases after its probes ended.
func releaseProbeClient() {
	probeClient.Lock()
	defer probeClient.Unlock()
	if probeClient.holders--; probeClient.holders == 0 && probeClient.client != nil {
		probeClient.client.Close()
		probeClient.client = nil
	}
}

// sharedProbeClient returns the open Client of the holders, opening it if an earlier attempt
// failed (no socket could be opened: out of file descriptors).
func sharedProbeClient() (*amt.Client, error) {
	probeClient.Lock()
	defer probeClient.Unlock()
	return openProbeClientLocked()
}

func openProbeClientLocked() (*amt.Client, error) {
	if probeClient.client == nil && probeClient.holders > 0 {
		c, err := amt.NewClient()
		if err != nil {
			return nil, err
		}
		probeClient.client = c
	}
	if probeClient.client == nil {
		return nil, amt.ErrClientClosed
	}
	return probeClient.client, nil
}

// prober runs the periodic probes of one instance, the AMT handshake with each relay address and
// the canary streams through it, and reports their outcomes to the instance's relayHealth.
type prober struct {
	hc       healthCheck
	health   *relayHealth
	checks   []*check
	canaries []*canary
	lookup   func(ctx context.Context, host string) ([]netip.Addr, error) // the system resolver
}

// check is one probe target and the endpoints whose health it decides: one endpoint per check,
// or, for a relay with a `probe` target, every endpoint of the relay.
type check struct {
	relay  *relay
	ids    []int // endpoint ids
	target probeTarget
	// cut is the number of addresses the target's name had when it was last reported as too many,
	// so that the report is made once, not every round (the probe and the canary sweep look up).
	cut atomic.Int64
	// firstAddr is the first address of the target's name at its last lookup: where the check's
	// canary tunnel belongs (nil until a lookup succeeds; unused for an address target).
	firstAddr atomic.Pointer[netip.AddrPort]
}

func newProber(cfg *config, h *relayHealth) *prober {
	p := &prober{hc: cfg.health, health: h, canaries: cfg.canaries, lookup: lookupHost}
	if !cfg.health.enabled() {
		return p
	}
	for _, r := range cfg.relays {
		if !r.probe.isZero() {
			ids := make([]int, len(r.endpoints))
			for i, e := range r.endpoints {
				ids[i] = e.id
			}
			p.checks = append(p.checks, &check{relay: r, ids: ids, target: r.probe})
			continue
		}
		for _, e := range r.endpoints {
			t := probeTarget{host: e.host, port: amt.Port}
			if e.addr.IsValid() {
				t = probeTarget{addr: netip.AddrPortFrom(e.addr, amt.Port)}
			}
			p.checks = append(p.checks, &check{relay: r, ids: []int{e.id}, target: t})
		}
	}
	return p
}

// start launches the sweeper of the probes under ctx and wg, and the canary sweeper when there are
// canaries. The probes hold the shared Client while they run.
func (p *prober) start(ctx context.Context, wg *sync.WaitGroup) {
	if len(p.checks) == 0 {
		return
	}
	// The canary tunnels of address targets run before the first probe, whose Request goes through
	// them (see probeOne).
	var joined []*canaryJoin
	var later []*check
	if len(p.canaries) > 0 {
		joined, later = p.joinCanariesNow()
	}
	holdProbeClient()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer releaseProbeClient()
		p.sweep(ctx, p.probe)
	}()
	if len(p.canaries) > 0 {
		wg.Go(func() { p.canarySweep(ctx, joined, later) })
	}
}

// sweepWindow is how far ahead of its time a check may go out with the others of a sweep: a
// quarter of the interval, at most maxSweepWindow.
func (p *prober) sweepWindow() time.Duration { return min(p.hc.interval/4, maxSweepWindow) }

// maxSweepWindow keeps sweeps frequent enough to be small: at the default interval of 5 s, 20 a
// round, each with a twentieth of the checks.
const maxSweepWindow = 250 * time.Millisecond

// Where a check's probe is, for the sweeper.
const (
	checkIdle    int32 = iota
	checkRunning       // its probe runs
	checkOverdue       // its probe runs and the next round is due: it goes out when the probe ends
)

// sweep probes every check once per interval with probe until ctx ends, then waits for the probes
// in flight.
//
// The first round runs at once. After that each check has its own time, first spread evenly over
// the interval, then moved on by the interval, give or take a random twentieth of it, every
// round: the random walk keeps the checks of AMT DNS servers that happen to start together from
// staying in step for good. The checks go out in sweeps: when the earliest one is due, every
// check due within the sweep window goes with it, each probe on a goroutine of its own, so that
// a slow or dead relay delays no other. A thousand relays then cost the process a few wakeups a
// second rather than one per message of each handshake. A check whose last probe still runs when
// it is due (a timeout close to the interval, a slow name lookup) goes out as soon as that ends.
func (p *prober) sweep(ctx context.Context, probe func(context.Context, *check)) {
	var probes sync.WaitGroup
	defer probes.Wait()
	n := len(p.checks)
	state := make([]atomic.Int32, n)
	ended := make(chan struct{}, 1) // an overdue check's probe ended
	launch := func(i int) {
		state[i].Store(checkRunning)
		probes.Add(1)
		go func() {
			defer probes.Done()
			probe(ctx, p.checks[i])
			if state[i].Swap(checkIdle) == checkOverdue {
				select {
				case ended <- struct{}{}:
				default:
				}
			}
		}()
	}
	interval, window := p.hc.interval, p.sweepWindow()
	jitter := func() time.Duration {
		j := int64(interval / 20)
		return time.Duration(rand.Int64N(2*j+1) - j)
	}
	now := time.Now()
	due := make([]time.Time, n)
	for i := range n {
		launch(i)
		due[i] = now.Add(interval*time.Duration(i+1)/time.Duration(n) + jitter())
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		var next time.Time
		now = time.Now()
		horizon := now.Add(window)
		for i, d := range due {
			if d.Before(horizon) {
				// Only the probe's goroutine takes a check out of running or overdue.
				if state[i].CompareAndSwap(checkRunning, checkOverdue) || state[i].Load() == checkOverdue {
					continue
				}
				launch(i)
				d = d.Add(interval + jitter())
				// After a stall (a suspended process) the rounds missed are skipped, not made up.
				for !d.After(now) {
					d = d.Add(interval)
				}
				due[i] = d
			}
			if next.IsZero() || d.Before(next) {
				next = d
			}
		}
		var wake <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-ended:
		}
	}
}

// probe runs one round for a check: the target, or every address its name resolves to, passes if
// any address passes.
func (p *prober) probe(ctx context.Context, c *check) {
	targets, err := p.targets(ctx, c)
	if ctx.Err() != nil {
		return // stopping: a cancelled probe says nothing about the relay
	}
	if err != nil {
		probesTotal.WithLabelValues(c.relay.name, amt.ResultError.String()).Inc()
		p.health.observe(c.ids, outcome{result: "error (resolving " + c.target.host + ")"})
		return
	}

	outcomes := make([]probeOutcome, len(targets))
	if len(targets) == 1 {
		outcomes[0] = p.probeOne(ctx, targets[0])
	} else {
		var wg sync.WaitGroup
		for i, t := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outcomes[i] = p.probeOne(ctx, t)
			}()
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return
	}

	decided := outcomes[0]
	for _, o := range outcomes {
		probesTotal.WithLabelValues(c.relay.name, o.result.String()).Inc()
		if o.result == amt.ResultOK {
			probeDuration.WithLabelValues(c.relay.name).Observe(o.rtt.Seconds())
			decided = o
		}
	}
	p.health.observe(c.ids, outcome{ok: decided.result == amt.ResultOK, result: decided.String(), rtt: decided.rtt})
}

// probeOutcome is one probe of one address.
type probeOutcome struct {
	result amt.Result
	step   string // where a handshake ended: "discovery" or "request"; "" for a discovery probe
	rtt    time.Duration
}

// String is the outcome as the transition log shows it: "no_query at request".
func (o probeOutcome) String() string {
	if o.step == "" || o.result == amt.ResultOK {
		return o.result.String()
	}
	return o.result.String() + " at " + o.step
}

// probeOne runs one probe of target, the whole handshake or the Discovery alone, on the shared
// Client, and through target's canary tunnel when it has one.
func (p *prober) probeOne(ctx context.Context, target netip.AddrPort) probeOutcome {
	client, err := sharedProbeClient()
	if err != nil {
		return probeOutcome{result: amt.ResultError}
	}
	if p.hc.handshake == handshakeDiscovery {
		rep := client.Probe(ctx, target, p.hc.timeout)
		return probeOutcome{result: rep.Result, rtt: rep.RTT}
	}
	if tunnel := canaryTunnelTo(target); tunnel != nil {
		return p.handshakeThrough(ctx, client, tunnel, target)
	}
	return p.clientHandshake(ctx, client, target, p.hc.timeout)
}

// clientHandshake runs the whole handshake with target on the Client.
func (p *prober) clientHandshake(ctx context.Context, client *amt.Client, target netip.AddrPort, timeout time.Duration) probeOutcome {
	rep := client.Handshake(ctx, target, timeout)
	return probeOutcome{result: rep.Result, step: rep.Step.String(), rtt: rep.DiscoveryRTT + rep.RequestRTT}
}

// handshakeThrough runs the handshake with a target that has a canary tunnel: the Discovery from the
// Client, which takes no relay state, and the Request through the tunnel, within the timeout as
// Client.Handshake. Relays keep one tunnel per gateway IP address: the Linux driver sends every Query
// to the port of the host's first Request and takes Updates only with the latest Request's nonce, so
// a Request from the Client's socket would get no Query, or void the MAC of the canary's joins.
func (p *prober) handshakeThrough(ctx context.Context, client *amt.Client, tunnel *amt.Tunnel, target netip.AddrPort) probeOutcome {
	deadline := time.Now().Add(p.hc.timeout)
	disc := client.Probe(ctx, target, p.hc.timeout)
	if disc.Result != amt.ResultOK {
		return probeOutcome{result: disc.Result, step: amt.StepDiscovery.String()}
	}
	request := amt.StepRequest.String()
	if disc.Relay.Unmap().Is4() != target.Addr().Unmap().Is4() {
		// As Client.Handshake: no Request can reach it from a socket of the target's family.
		return probeOutcome{result: amt.ResultError, step: request}
	}
	left := time.Until(deadline)
	if left <= 0 {
		return probeOutcome{result: amt.ResultNoQuery, step: request}
	}
	rep := tunnel.Request(ctx, left)
	if errors.Is(rep.Err, amt.ErrTunnelClosed) && ctx.Err() == nil {
		// The canaries left the relay under the probe (a reload dropped them, or the name moved):
		// the handshake goes as without canaries, in the time left.
		if left := time.Until(deadline); left > 0 {
			return p.clientHandshake(ctx, client, target, left)
		}
		return probeOutcome{result: amt.ResultNoQuery, step: request}
	}
	return probeOutcome{result: rep.Result, step: request, rtt: disc.RTT + rep.RTT}
}

// targets returns the addresses to probe: the fixed target, or the first maxProbeAddrs addresses of
// its name in sorted order, looked up now.
func (p *prober) targets(ctx context.Context, c *check) ([]netip.AddrPort, error) {
	if c.target.addr.IsValid() {
		return []netip.AddrPort{c.target.addr}, nil
	}
	rctx, cancel := context.WithTimeout(ctx, p.hc.timeout)
	addrs, err := p.lookup(rctx, c.target.host)
	cancel()
	if err != nil {
		return nil, err
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: c.target.host, IsNotFound: true}
	}
	if len(addrs) > maxProbeAddrs {
		if c.cut.Swap(int64(len(addrs))) != int64(len(addrs)) {
			log.Warningf("relay %s: %s has %d addresses, probing the first %d (%s to %s)", c.relay.name,
				c.target.host, len(addrs), maxProbeAddrs, addrs[0], addrs[maxProbeAddrs-1])
		}
		addrs = addrs[:maxProbeAddrs]
	}
	targets := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		targets[i] = netip.AddrPortFrom(a, c.target.port)
	}
	c.firstAddr.Store(&targets[0])
	return targets, nil
}

func lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
