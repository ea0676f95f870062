// Package bgp learns which multicast sources are reachable from the
// network's own BGP speaker: it peers with it over MBGP (the multicast RIB,
// AFI 1/2 SAFI 2, RFC 4760; optionally the unicast RIB) and keeps the best
// route of every prefix, with its standard communities and the neighbor it
// came from, for the plugin to map to relays.
//
// The BGP work is GoBGP's (github.com/osrg/gobgp/v4, embedded as a
// library). This package configures it as a pure listener: it exports
// nothing to anyone, and it delivers its routes to consumers in batches,
// on their own goroutines, never on GoBGP's.
//
// A Speaker is made from a Config by New and runs in Run, on a goroutine
// its caller owns; Subscribe delivers the routes and Status tells how the
// sessions are. Acquire shares one running Speaker between the holders of
// equal configs, which is how a Corefile reload keeps its sessions.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/internal/gobgpstart"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Logf logs one line; the plugin passes its logger's Infof. It must be
// safe for concurrent use.
type Logf func(format string, args ...any)

// Route is the best path of one prefix in one family, or its withdrawal.
type Route struct {
	Family    Family
	Prefix    netip.Prefix
	Withdrawn bool // no best path any more; the fields below are zero
	// Neighbor is the peer the best path was learned from.
	Neighbor netip.Addr
	// Communities are the path's standard communities (RFC 1997), each
	// ASN<<16 | VALUE. The slice is shared: read it, never modify it.
	Communities []uint32
}

// Batch is one delivery to a subscriber.
type Batch struct {
	// Full marks the first batch: the whole RIB as it was when the
	// subscription began, to replace whatever the subscriber held.
	Full bool
	// Routes changed since the previous batch, one entry per family and
	// prefix with its latest state, in no particular order. A withdrawal
	// may name a route the subscriber never saw: one announced and
	// withdrawn again between two batches.
	Routes []Route
	// Synced is Status().Synced when the batch was taken: once it is true,
	// every route a neighbor sent before its End-of-RIB is in this batch or
	// an earlier one, so a subscriber that has applied it holds the whole
	// table. A batch also comes, without routes, when it turns true.
	Synced bool
}

// ErrStopped is returned by Subscribe once the speaker's Run has returned.
var ErrStopped = errors.New("bgp: speaker stopped")

// syncPoll is how often a subscriber's Synced is looked at while it is
// false and nothing else happens: a neighbor's hold time passing with its
// session down makes it synced without an event.
const syncPoll = 250 * time.Millisecond

// batchInterval is the shortest time between two batches to one
// subscriber: a full table arriving from a peer, 100k routes or more in a
// few seconds, then costs the subscriber some tens of batches rather than
// one call per UPDATE, while a lone change after a quiet spell is
// delivered at once.
const batchInterval = 50 * time.Millisecond

// GoBGP's timers for a session that is down, in seconds. Its defaults
// (retry every 120 s, 30 s idle after a reset) suit a router among many
// peers; this speaker has one or two, on the network's own routers, and a
// DNS server answering without its BGP routes for two minutes costs more
// than a connection attempt every few seconds.
const (
	connectRetry   = 5
	idleAfterReset = 1
)

type routeKey struct {
	family Family
	prefix netip.Prefix
}

type routeVal struct {
	neighbor    netip.Addr
	communities []uint32
}

// Speaker is an embedded BGP speaker that only listens. Its methods are
// safe for concurrent use.
type Speaker struct {
	cfg  Config // normalized
	logf Logf

	ran  atomic.Bool
	done chan struct{} // closed when Run returns

	// resets carries neighbors whose routes GoBGP keeps after their
	// session went down; see peerEvent.
	resets chan netip.Addr

	mu        sync.Mutex
	srv       *server.BgpServer // while Run is between start and stop
	stopped   bool              // Run has begun stopping: events are ignored
	runStart  time.Time
	rib       map[routeKey]routeVal
	subs      map[*subscriber]struct{}
	neighbors map[netip.Addr]*neighborState
}

type neighborState struct {
	cfg         Neighbor
	established bool
	everUp      bool
	since       time.Time
	negotiated  Families // in the current session: configured and offered by the peer
	eor         Families // End-of-RIB received in the current session
	prefixes    [len(familyIndex)]int
	synced      bool // latched, see syncedLocked
	lastError   string
	// updates is the count of UPDATE messages received in the current session when quietCheck
	// last looked, and quietSince when it last changed; noEoR latches that the neighbor went a
	// hold time without one while End-of-RIB was missing.
	updates    uint64
	quietSince time.Time
	noEoR      bool
}

// familyIndex numbers the families for per-family arrays.
var familyIndex = [...]Family{IPv4Multicast, IPv6Multicast, IPv4Unicast, IPv6Unicast}

func indexOf(f Family) int { return slices.Index(familyIndex[:], f) }

// New checks cfg and returns a Speaker for it; nothing runs until Run.
// logf gets a line for each session that comes up or goes down, and for
// the errors GoBGP logs; nil discards them.
func New(cfg Config, logf Logf) (*Speaker, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Speaker{
		cfg:       cfg,
		logf:      logf,
		done:      make(chan struct{}),
		resets:    make(chan netip.Addr, MaxNeighbors),
		rib:       make(map[routeKey]routeVal),
		subs:      make(map[*subscriber]struct{}),
		neighbors: make(map[netip.Addr]*neighborState),
	}
	for _, n := range cfg.neighbors() {
		s.neighbors[n.Address] = &neighborState{cfg: n}
	}
	return s, nil
}

// Config returns the speaker's config, with the defaults filled in.
func (s *Speaker) Config() Config { return s.cfg }

// Run starts GoBGP, adds the neighbors and keeps the sessions until ctx
// ends, then stops every session (with a Cease NOTIFICATION) and
// everything GoBGP started, and returns nil. It can be called once.
//
// When GoBGP cannot start, most likely because the listen address is still
// held by the speaker this one replaces, Run logs it once and tries again
// every second until it can or ctx ends.
func (s *Speaker) Run(ctx context.Context) error {
	if s.ran.Swap(true) {
		return errors.New("bgp: Run called twice")
	}
	defer close(s.done)

	srv := server.NewBgpServer(server.LoggerOption(slog.New(&logHandler{logf: s.logf}), nil))
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		srv.Serve()
	}()
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	defer func() {
		s.mu.Lock()
		s.stopped = true
		s.srv = nil
		for _, n := range s.neighbors {
			n.established = false
		}
		s.mu.Unlock()
		cancelWatch()
		// StopBgp needs Serve to be running, which the first StartBgp
		// guarantees: a management call returns only once Serve took it.
		srv.Stop()
		<-serveDone
	}()

	if !s.start(ctx, srv) {
		return nil
	}
	// Export nothing, to anyone: with two neighbors GoBGP would otherwise
	// pass the routes of one to the other.
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		return fmt.Errorf("bgp: export policy: %w", err)
	}
	err := gobgpstart.Watch(watchCtx, srv, server.WatchEventMessageCallbacks{
		OnBestPath:   s.bestPaths,
		OnPeerUpdate: s.peerEvent,
		OnPathEor:    s.endOfRIB,
	}, server.WatchBestPath(true), server.WatchPeer(), server.WatchEor(true))
	if err != nil {
		return fmt.Errorf("bgp: watch: %w", err)
	}
	s.mu.Lock()
	s.srv = srv
	s.runStart = time.Now()
	for _, n := range s.neighbors {
		n.since = s.runStart
	}
	s.mu.Unlock()
	for _, n := range s.cfg.neighbors() {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerConfig(n)}); err != nil {
			return fmt.Errorf("bgp: neighbor %v: %w", n.Address, err)
		}
	}

	// At the longest hold time every neighbor is either synced or still
	// down; the ones down are logged then, once.
	var maxHold time.Duration
	for _, n := range s.cfg.neighbors() {
		maxHold = max(maxHold, n.HoldTime)
	}
	holdTimer := time.NewTimer(maxHold)
	defer holdTimer.Stop()
	quiet := time.NewTicker(quietCheckEvery)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-holdTimer.C:
			s.Status()
		case <-quiet.C:
			s.quietCheck(ctx, srv)
		case addr := <-s.resets:
			s.resetNeighbor(ctx, srv, addr)
		}
	}
}

// quietCheckEvery is how often quietCheck looks at the neighbors still owing End-of-RIB.
const quietCheckEvery = time.Second

// quietCheck stops waiting for the End-of-RIB of a neighbor that has sent no UPDATE for its hold
// time: routers send End-of-RIB to a peer that advertises Graceful Restart, as the speaker does,
// but one that does not do Graceful Restart itself need not send any (RFC 4724 only recommends
// it), and waiting for it would keep the plugin unready for good. A table that has stopped
// coming for a hold time is taken as complete.
func (s *Speaker) quietCheck(ctx context.Context, srv *server.BgpServer) {
	now := time.Now()
	var owing []netip.Addr
	s.mu.Lock()
	for addr, n := range s.neighbors {
		if n.established && !n.noEoR && !s.syncedLocked(n, now) {
			owing = append(owing, addr)
		}
	}
	s.mu.Unlock()
	for _, addr := range owing {
		var updates uint64
		found := false
		err := srv.ListPeer(ctx, &api.ListPeerRequest{Address: addr.String()}, func(p *api.Peer) {
			updates, found = p.GetState().GetMessages().GetReceived().GetUpdate(), true
		})
		if err != nil || !found {
			continue
		}
		s.mu.Lock()
		n := s.neighbors[addr]
		switch {
		case n == nil || !n.established || s.stopped:
		case updates != n.updates:
			n.updates, n.quietSince = updates, now
		case now.Sub(n.quietSince) >= n.cfg.HoldTime:
			n.noEoR = true
			s.logf("bgp: neighbor %v AS %d: no End-of-RIB for %v, and no UPDATE for its hold time (%v); taking its routes as its whole table",
				n.cfg.Address, n.cfg.RemoteAS, (n.negotiated &^ n.eor).List(), n.cfg.HoldTime)
			if s.syncedLocked(n, now) {
				s.wakeLocked()
			}
		}
		s.mu.Unlock()
	}
}

// start calls StartBgp until it works; false if ctx ended first.
func (s *Speaker) start(ctx context.Context, srv *server.BgpServer) bool {
	g := &api.Global{Asn: s.cfg.LocalAS, RouterId: s.cfg.RouterID.String(), ListenPort: -1}
	if l := s.cfg.Listen; l.IsValid() {
		g.ListenPort = int32(l.Port())
		g.ListenAddresses = []string{l.Addr().String()}
	}
	for attempt := 0; ; attempt++ {
		err := gobgpstart.Start(srv, g)
		if err == nil {
			if attempt > 0 {
				s.logf("bgp: started")
			}
			return true
		}
		if attempt == 0 {
			s.logf("bgp: cannot start, trying again every second: %v", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// peerConfig is GoBGP's configuration of neighbor n.
//
// It advertises the Graceful Restart capability as a helper only (no
// address families, so the peer keeps none of our routes, of which there
// are none): several implementations, GoBGP among them, send End-of-RIB
// only to peers that advertise it, and End-of-RIB is how the speaker knows
// it has a peer's whole table. The price is that GoBGP then keeps the
// routes of a peer that restarts and claims to preserve forwarding, until
// the peer's restart time runs out; resetNeighbor undoes that.
func peerConfig(n Neighbor) *api.Peer {
	hold := uint64(n.HoldTime / time.Second)
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.RemoteAS},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               hold,
			KeepaliveInterval:      max(1, hold/3),
			ConnectRetry:           connectRetry,
			IdleHoldTimeAfterReset: idleAfterReset,
		}},
		Transport:       &api.Transport{PassiveMode: n.Passive, RemotePort: uint32(n.Port)},
		GracefulRestart: &api.GracefulRestart{Enabled: true, HelperOnly: true},
	}
	for _, f := range n.Families.List() {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f.api(), Enabled: true}})
	}
	return p
}

// resetNeighbor deletes and re-adds a neighbor, which makes GoBGP drop
// the routes it keeps for it after a graceful-restart session loss.
func (s *Speaker) resetNeighbor(ctx context.Context, srv *server.BgpServer, addr netip.Addr) {
	s.mu.Lock()
	n, ok := s.neighbors[addr]
	s.mu.Unlock()
	if !ok {
		return
	}
	if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		s.logf("bgp: neighbor %v: dropping its routes: %v", addr, err)
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerConfig(n.cfg)}); err != nil && ctx.Err() == nil {
		s.logf("bgp: neighbor %v: adding it back: %v", addr, err)
	}
}

func (f Family) bgp() gobgp.Family {
	switch f {
	case IPv4Multicast:
		return gobgp.RF_IPv4_MC
	case IPv6Multicast:
		return gobgp.RF_IPv6_MC
	case IPv4Unicast:
		return gobgp.RF_IPv4_UC
	case IPv6Unicast:
		return gobgp.RF_IPv6_UC
	}
	return 0
}

func (f Family) api() *api.Family {
	afi, safi := f.bgp().Afi(), f.bgp().Safi()
	return &api.Family{Afi: api.Family_Afi(afi), Safi: api.Family_Safi(safi)}
}

func familyOf(f gobgp.Family) (Family, bool) {
	for _, ours := range familyIndex {
		if ours.bgp() == f {
			return ours, true
		}
	}
	return 0, false
}

// bestPaths runs on GoBGP's watcher goroutine: it updates the RIB and
// marks the changes for the subscribers, whose goroutines deliver them.
func (s *Speaker) bestPaths(paths []*apiutil.Path, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	for _, p := range paths {
		fam, ok := familyOf(p.Family)
		if !ok {
			continue
		}
		nlri, ok := p.Nlri.(*gobgp.IPAddrPrefix)
		if !ok {
			continue
		}
		k := routeKey{fam, nlri.Prefix}
		n := s.neighbors[p.PeerAddress]
		// A family the neighbor was not configured with cannot have been
		// negotiated; this is a second fence.
		if p.Withdrawal || n == nil || !n.cfg.Families.Has(fam) {
			s.withdrawLocked(k)
			continue
		}
		s.announceLocked(k, routeVal{neighbor: p.PeerAddress, communities: communities(p.Attrs)})
	}
}

func communities(attrs []gobgp.PathAttributeInterface) []uint32 {
	for _, a := range attrs {
		if c, ok := a.(*gobgp.PathAttributeCommunities); ok && len(c.Value) > 0 {
			return slices.Clone(c.Value)
		}
	}
	return nil
}

func (s *Speaker) announceLocked(k routeKey, v routeVal) {
	old, had := s.rib[k]
	if had {
		if old.neighbor == v.neighbor && slices.Equal(old.communities, v.communities) {
			return
		}
		s.countLocked(old.neighbor, k.family, -1)
	}
	s.rib[k] = v
	s.countLocked(v.neighbor, k.family, +1)
	s.dirtyLocked(k)
}

func (s *Speaker) withdrawLocked(k routeKey) {
	old, had := s.rib[k]
	if !had {
		return
	}
	delete(s.rib, k)
	s.countLocked(old.neighbor, k.family, -1)
	s.dirtyLocked(k)
}

func (s *Speaker) countLocked(addr netip.Addr, f Family, delta int) {
	if n := s.neighbors[addr]; n != nil {
		n.prefixes[indexOf(f)] += delta
	}
}

// peerEvent runs on GoBGP's watcher goroutine.
func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE && ev.Type != apiutil.PEER_EVENT_INIT {
		return
	}
	st := ev.Peer.State
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.neighbors[st.NeighborAddress]
	if s.stopped || n == nil {
		return
	}
	up := st.SessionState == gobgp.BGP_FSM_ESTABLISHED
	if up == n.established {
		return
	}
	now := time.Now()
	n.established, n.since, n.eor, n.negotiated = up, now, 0, 0
	n.updates, n.quietSince, n.noEoR = 0, now, false
	if up {
		n.everUp = true
		n.negotiated = n.cfg.Families & offered(st.RemoteCap)
		s.logf("bgp: neighbor %v AS %d: established", n.cfg.Address, n.cfg.RemoteAS)
		if missing := n.cfg.Families &^ n.negotiated; missing != 0 {
			s.logf("bgp: neighbor %v AS %d: does not offer %v", n.cfg.Address, n.cfg.RemoteAS, missing.List())
		}
		return
	}
	n.lastError = st.DisconnectReason.String()
	if st.DisconnectMessage != "" {
		n.lastError = st.DisconnectMessage
	}
	s.logf("bgp: neighbor %v AS %d: session down: %s", n.cfg.Address, n.cfg.RemoteAS, n.lastError)
	if st.DisconnectReason == api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART {
		select {
		case s.resets <- n.cfg.Address:
		default: // one is pending already
		}
	}
}

// offered returns the families of the peer's Multiprotocol capabilities;
// a peer without any speaks IPv4 unicast only (RFC 4760 section 8).
func offered(caps []gobgp.ParameterCapabilityInterface) Families {
	var fs Families
	mp := false
	for _, c := range caps {
		if m, ok := c.(*gobgp.CapMultiProtocol); ok {
			mp = true
			if f, ok := familyOf(m.CapValue); ok {
				fs |= Families(f)
			}
		}
	}
	if !mp {
		return Families(IPv4Unicast)
	}
	return fs
}

// endOfRIB runs on GoBGP's watcher goroutine. GoBGP reports End-of-RIB
// through this watch event and, per family, in the neighbor's
// MpGracefulRestart.State.EndOfRibReceived; it clears the latter when the
// session goes down, as peerEvent clears n.eor.
func (s *Speaker) endOfRIB(p *apiutil.Path, _ time.Time) {
	fam, ok := familyOf(p.Family)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.neighbors[p.PeerAddress]; n != nil && !s.stopped && n.established {
		n.eor |= Families(fam)
		if s.syncedLocked(n, time.Now()) {
			s.wakeLocked()
		}
	}
}

// Route returns the best path of prefix p in family f, if there is one:
// where a route in a subscriber's table came from.
func (s *Speaker) Route(f Family, p netip.Prefix) (Route, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.rib[routeKey{family: f, prefix: p}]
	if !ok {
		return Route{}, false
	}
	return Route{Family: f, Prefix: p, Neighbor: v.neighbor, Communities: v.communities}, true
}

// syncedLocked reports whether n has given its whole table once: it sent
// End-of-RIB for each family negotiated in one session (or, sending none,
// went quiet: see quietCheck), or its hold time has passed since Run
// started and its session is down. It latches, so that readiness does not
// flap with the session.
func (s *Speaker) syncedLocked(n *neighborState, now time.Time) bool {
	switch {
	case n.synced:
	case n.established && (n.eor&n.negotiated == n.negotiated || n.noEoR):
		n.synced = true
	case !n.established && !s.runStart.IsZero() && now.Sub(s.runStart) >= n.cfg.HoldTime:
		n.synced = true
		if !n.everUp {
			s.logf("bgp: neighbor %v AS %d: not established within its hold time (%v); not waiting for it", n.cfg.Address, n.cfg.RemoteAS, n.cfg.HoldTime)
		}
	}
	return n.synced
}
