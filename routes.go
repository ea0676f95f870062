package amtrelay

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/amtdns/amtrelay/bgp"
	"github.com/amtdns/amtrelay/table"
)

// routesConfig is what the bgp lines of a block say: the speaker the plugin peers through and how
// a learned route maps to relays.
type routesConfig struct {
	speaker bgp.Config
	// relays are a route's relays unless it carries a community of a bgp_community line.
	relays      []int
	communities map[uint32][]int // ASN<<16 | VALUE -> relays
	// multicastFirst4 and multicastFirst6: some neighbor takes both the multicast and the unicast
	// family of IPv4 (IPv6), so one prefix can come in both, and the multicast route decides.
	multicastFirst4, multicastFirst6 bool
}

// relaysOf returns the relays a route maps to: the union of the relays of the bgp_community
// lines whose community it carries, or the bgp_relays when it carries none of them.
func (rc *routesConfig) relaysOf(r bgp.Route) []int {
	var matched []int
	n := 0
	for _, c := range r.Communities {
		rs, ok := rc.communities[c]
		if !ok {
			continue
		}
		if n++; n == 1 {
			matched = rs // shared, read-only: Apply copies what it keeps
			continue
		}
		if n == 2 {
			matched = slices.Clone(matched)
		}
		matched = append(matched, rs...)
	}
	if n == 0 {
		return rc.relays
	}
	if n > 1 {
		slices.Sort(matched)
		matched = slices.Compact(matched)
	}
	return matched
}

// learnedRoutes keeps an instance's table of the routes its BGP speaker learns, which the view
// lays under the source lines and the sources file. The speaker is process-wide, shared by the
// instances whose bgp lines are the same, so a Corefile reload that keeps them keeps the sessions
// and the routes: the new instance acquires the speaker before the old one lets it go.
type learnedRoutes struct {
	cfg     *routesConfig
	publish func(t *table.Table, changes []table.Change, full bool)

	speaker atomic.Pointer[bgp.Speaker] // set once started
	// synced: the table holds at least what every neighbor sent before its End-of-RIB (or the
	// neighbor's hold time passed with its session down). It stays true.
	synced atomic.Bool
	// mappedSeen: an IPv4-mapped IPv6 route was dropped and logged; later ones are dropped quietly.
	// Only the subscription goroutine uses it.
	mappedSeen bool
}

// ipv4Mapped holds the IPv4-mapped IPv6 addresses (RFC 4291 section 2.5.5.2).
var ipv4Mapped = netip.MustParsePrefix("::ffff:0:0/96")

// start acquires the speaker and follows its routes under ctx; the speaker is released when ctx
// ends (the last holder's release stops it). It returns once the speaker's routes of the moment
// are in the view: start runs in OnStartup, before the instance's servers answer, and an instance
// that replaces one in a Corefile reload must answer from the routes the speaker kept, not from
// an empty table until its subscription catches up.
func (l *learnedRoutes) start(ctx context.Context, wg *sync.WaitGroup) {
	s, release, err := bgp.Acquire(l.cfg.speaker, log.Infof)
	if err != nil { // the Corefile's bgp lines were checked when it was parsed
		log.Errorf("BGP speaker: %v", err)
		return
	}
	l.speaker.Store(s)
	first := make(chan struct{}) // closed after the first batch, or when Subscribe returns without one
	var firstOnce sync.Once
	firstDone := func() { firstOnce.Do(func() { close(first) }) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer release()
		defer firstDone()
		var t *table.Table
		err := s.Subscribe(ctx, func(b bgp.Batch) {
			changes := l.changes(s, b.Routes)
			if b.Full {
				t = nil
			}
			t = t.Apply(changes)
			l.publish(t, changes, b.Full)
			if b.Synced {
				l.synced.Store(true)
			}
			firstDone()
		})
		if err != nil && ctx.Err() == nil {
			log.Errorf("BGP speaker stopped under a running instance: %v", err)
		}
	}()
	// Subscribe hands over the whole table at once, without waiting for the network.
	<-first
}

// changes turns routes into table changes. Where multicast and unicast routes of one family can
// both come, a prefix takes the relays of its multicast route while there is one: the multicast
// RIB is what RPF follows, the unicast one stands in where it has no route.
func (l *learnedRoutes) changes(s *bgp.Speaker, routes []bgp.Route) []table.Change {
	changes := make([]table.Change, 0, len(routes))
	for _, r := range routes {
		if r.Prefix.Bits() >= ipv4Mapped.Bits() && ipv4Mapped.Contains(r.Prefix.Addr()) {
			// The table keeps IPv4 sources at their IPv4 prefix, where this route would replace,
			// and its withdrawal delete, the route of an IPv4 family that the speaker still has.
			// No IPv6 source is in there: the route is the IPv4 family's to give.
			if !r.Withdrawn && !l.mappedSeen {
				l.mappedSeen = true
				log.Warningf("Ignoring BGP route %s (%s from %s), and any later IPv4-mapped IPv6 route: an IPv4 source's route belongs in an IPv4 family",
					r.Prefix, r.Family, r.Neighbor)
			}
			continue
		}
		if mc, uc, both := l.families(r.Prefix); both {
			// The speaker's routes now, which a later batch catches up with if they moved on.
			if best, ok := s.Route(mc, r.Prefix); ok {
				r = best
			} else if best, ok := s.Route(uc, r.Prefix); ok {
				r = best
			} else {
				r.Withdrawn = true
			}
		}
		if r.Withdrawn {
			changes = append(changes, table.Change{Prefix: r.Prefix, Delete: true})
			continue
		}
		changes = append(changes, table.Change{Prefix: r.Prefix, Relays: l.cfg.relaysOf(r)})
	}
	return changes
}

// families returns the multicast and unicast family of p's address family, and whether routes of
// both may come for it.
func (l *learnedRoutes) families(p netip.Prefix) (multicast, unicast bgp.Family, both bool) {
	if p.Addr().Is4() {
		return bgp.IPv4Multicast, bgp.IPv4Unicast, l.cfg.multicastFirst4
	}
	return bgp.IPv6Multicast, bgp.IPv6Unicast, l.cfg.multicastFirst6
}

// route returns the route behind a prefix of the learned table, for explanations.
func (l *learnedRoutes) route(p netip.Prefix) (bgp.Route, bool) {
	s := l.speaker.Load()
	if s == nil {
		return bgp.Route{}, false
	}
	mc, uc, _ := l.families(p)
	if r, ok := s.Route(mc, p); ok {
		return r, true
	}
	return s.Route(uc, p)
}
