package bgp

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/bgp/bgptest"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Addresses on loopback: the speaker under test dials from 127.0.0.1, the
// router listens on routerIP, a proxy between them on proxyIP.
const (
	speakerIP = "127.0.0.1"
	routerIP  = "127.0.0.2"
	proxyIP   = "127.0.0.3"
	speakerAS = 64512
	routerAS  = 64500
)

// router is the network's BGP speaker, in the test process: it listens on
// routerIP and announces what the test tells it to.
type router struct{ *bgptest.Router }

type routerOpts struct {
	// fullGR advertises Graceful Restart for every family with the
	// forwarding state kept, as a router that restarts without losing
	// its forwarding does; otherwise helper only.
	fullGR bool
	// noGR advertises no Graceful Restart at all.
	noGR bool
	// peerIP is the address the speaker connects from.
	peerIP string
	// asn is the router's AS; speakerAS makes the session iBGP.
	asn uint32
	// families the router offers; 0 means all four.
	families Families
	// hold is the router's hold time in seconds; 0 means 9.
	hold uint64
}

func startRouter(t testing.TB, o routerOpts) *router {
	t.Helper()
	var fams []gobgp.Family
	for _, f := range familyIndex {
		if o.families == 0 || o.families.Has(f) {
			fams = append(fams, f.bgp())
		}
	}
	return &router{bgptest.Start(t, bgptest.Options{
		IP: routerIP, ASN: cmp.Or(o.asn, routerAS), PeerIP: cmp.Or(o.peerIP, speakerIP), PeerASN: speakerAS,
		Families: fams, Hold: o.hold, FullGR: o.fullGR, NoGR: o.noGR,
	})}
}

func (r *router) stop() { r.Stop() }
func (r *router) path(f Family, prefix string, comms ...uint32) *apiutil.Path {
	return r.Path(f.bgp(), prefix, comms...)
}
func (r *router) announce(paths ...*apiutil.Path) { r.Announce(paths...) }
func (r *router) withdraw(paths ...*apiutil.Path) { r.Withdraw(paths...) }
func (r *router) port() uint16                    { return r.Addr().Port() }

// neighbor is the speaker's view of r.
func (r *router) neighbor() Neighbor {
	return Neighbor{Address: r.Addr().Addr(), RemoteAS: r.ASN(), Port: r.Addr().Port()}
}

func testConfig(ns ...Neighbor) Config {
	c := Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.1")}
	for _, n := range ns {
		if err := c.AddNeighbor(n); err != nil {
			panic(err)
		}
	}
	return c
}

// lines collects log lines for tests that check them.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, fmt.Sprintf(format, args...))
}

func (l *lines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.l {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// runSpeaker runs s until the test ends and checks Run's result.
func runSpeaker(t testing.TB, s *Speaker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10 s of its context's end")
		}
	})
}

// collector is a subscriber that keeps the routes it was given.
type collector struct {
	mu      sync.Mutex
	routes  map[string]Route // by "family prefix"
	batches []Batch
	// syncedWith is the routes held when a batch first said Synced; nil
	// before.
	syncedWith map[string]Route
	changed    chan struct{}
	cancel     context.CancelFunc
	done       chan error
}

func subscribe(t testing.TB, s *Speaker) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{routes: make(map[string]Route), changed: make(chan struct{}, 1), cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- s.Subscribe(ctx, c.take) }()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) stop() {
	c.cancel()
	<-c.done
}

func key(f Family, p string) string { return f.String() + " " + p }

func (c *collector) take(b Batch) {
	c.mu.Lock()
	if b.Full {
		clear(c.routes)
	}
	c.batches = append(c.batches, b)
	for _, r := range b.Routes {
		k := key(r.Family, r.Prefix.String())
		if r.Withdrawn {
			delete(c.routes, k)
		} else {
			c.routes[k] = r
		}
	}
	if b.Synced && c.syncedWith == nil {
		c.syncedWith = maps.Clone(c.routes)
	}
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// waitFor waits up to limit for cond on the routes, and returns how long
// it took.
func (c *collector) waitFor(t testing.TB, limit time.Duration, what string, cond func(map[string]Route) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond(c.routes)
		c.mu.Unlock()
		if ok {
			return time.Since(start)
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("Not within %v: %s; routes %v", limit, what, c.routes)
		}
	}
}

func has(keys ...string) func(map[string]Route) bool {
	return func(m map[string]Route) bool {
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				return false
			}
		}
		return true
	}
}

func lacks(keys ...string) func(map[string]Route) bool {
	return func(m map[string]Route) bool {
		for _, k := range keys {
			if _, ok := m[k]; ok {
				return false
			}
		}
		return true
	}
}

// waitStatus polls s.Status until cond holds, up to limit.
func waitStatus(t testing.TB, s *Speaker, limit time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := s.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("Not within %v: %s; status %+v", limit, what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func established(st Status) bool {
	for _, n := range st.Neighbors {
		if !n.Established {
			return false
		}
	}
	return len(st.Neighbors) > 0
}

// proxy forwards TCP connections from its address to a target, and can
// freeze (stop forwarding, keep the connections: a peer gone silent) or
// cut (close them: a session lost without a NOTIFICATION).
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	frozen bool
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(proxyIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) port() uint16 { return uint16(p.l.Addr().(*net.TCPAddr).Port) }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen {
			continue // swallow: the other side hears nothing more
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) close() {
	p.l.Close()
	p.cut()
	p.wg.Wait()
}

func portString(p uint16) string { return strconv.Itoa(int(p)) }
