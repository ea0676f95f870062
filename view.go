package amtrelay

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/amtdns/amtrelay/table"

	"github.com/miekg/dns"
)

// view is what a query reads, with one atomic load: the connectivity table, the relay health and
// the admin modes of one moment, and what they make of each relay. Every part is immutable; a
// change to any publishes a new view.
type view struct {
	cfg     *config
	sources *table.Table // the source lines, laid over the sources file's table if there is one
	routes  *table.Table // learned over BGP; nil without bgp
	// common counts the prefixes in both sources and routes, for the size of the merged table.
	common int
	health *healthSnapshot
	admin  adminModes
	peers  []*dns.DNSKEY // the other networks' keys, with dnssec

	// Derived from health and admin when the view is made.
	serving      []bool // by endpoint id: up (by its probes, or forced) and its relay not drained
	relayServing []bool // by relay index: some endpoint is serving
	relaysUp     int    // relays serving
}

// relaysFor returns the relays of the table entry for source a; see match.
func (v *view) relaysFor(a netip.Addr) ([]int, bool) {
	if v.routes == nil {
		return v.sources.Lookup(a)
	}
	m, ok := v.match(a)
	return m.relays, ok
}

// tableMatch is the table entry that holds a source.
type tableMatch struct {
	prefix  netip.Prefix
	relays  []int
	learned bool // from BGP, not from a source line or the sources file
}

// match finds the entry for source a in the merged table: the longest prefix that holds a, across
// the source lines, the sources file and the routes learned over BGP; for one prefix, the lines
// and the file win over BGP.
func (v *view) match(a netip.Addr) (tableMatch, bool) {
	p, relays, ok := v.sources.LookupPrefix(a)
	rp, rrelays, rok := v.routes.LookupPrefix(a)
	switch {
	case rok && (!ok || rp.Bits() > p.Bits()):
		return tableMatch{prefix: rp, relays: rrelays, learned: true}, true
	case ok:
		return tableMatch{prefix: p, relays: relays}, true
	}
	return tableMatch{}, false
}

// prefixes is the size of the merged table.
func (v *view) prefixes() int {
	return v.sources.Len4() + v.sources.Len6() + v.routes.Len4() + v.routes.Len6() - v.common
}

// usable reports whether endpoint id may be in an answer for a source whose canary is canary (-1
// for none): it serves, and data of the canary's channel comes through it.
func (v *view) usable(id, canary int) bool {
	return v.serving[id] && v.health.canaryOK(id, canary)
}

// servingAny reports whether any of the relays (indices) has an endpoint usable for a source whose
// canary is canary.
func (v *view) servingAny(relays []int, canary int) bool {
	for _, i := range relays {
		if !v.relayServing[i] {
			continue
		}
		if canary < 0 {
			return true
		}
		for _, e := range v.cfg.relays[i].endpoints {
			if v.usable(e.id, canary) {
				return true
			}
		}
	}
	return false
}

// viewPublisher joins the parts of the view as their owners publish them: the sources provider
// its tables, relayHealth its snapshots, the admin file its modes, the peer keys file its keys.
type viewPublisher struct {
	cfg     *config
	current atomic.Pointer[view]

	mu   sync.Mutex // orders the stores, so that a part is never replaced by an older one
	next view
}

func (p *viewPublisher) load() *view { return p.current.Load() }

func (p *viewPublisher) setSources(t *table.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next.sources = t
	if p.next.routes != nil {
		p.next.common = table.Common(t, p.next.routes)
	}
	p.store()
}

// setRoutes publishes the learned routes, t, made by changes from the previous table (or from
// nothing, when full).
func (p *viewPublisher) setRoutes(t *table.Table, changes []table.Change, full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if full {
		p.next.common = table.Common(p.next.sources, t)
	} else {
		var seen map[netip.Prefix]bool // the changes may name a prefix twice: count it once
		for _, c := range changes {
			if seen[c.Prefix] || !p.next.sources.Has(c.Prefix) {
				continue
			}
			if seen == nil {
				seen = map[netip.Prefix]bool{}
			}
			seen[c.Prefix] = true
			was, is := p.next.routes.Has(c.Prefix), t.Has(c.Prefix)
			if was && !is {
				p.next.common--
			} else if is && !was {
				p.next.common++
			}
		}
	}
	p.next.routes = t
	p.store()
}

func (p *viewPublisher) setHealth(h *healthSnapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next.health = h
	p.store()
}

func (p *viewPublisher) setPeers(keys []*dns.DNSKEY) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next.peers = keys
	p.store()
}

func (p *viewPublisher) setAdmin(m adminModes) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next.admin = m
	p.store()
}

// store derives what the parts make of each relay and publishes a copy; the caller holds mu.
func (p *viewPublisher) store() {
	v := p.next // the parts are shared, never written
	v.cfg = p.cfg
	if v.health != nil {
		v.serving = make([]bool, len(p.cfg.endpoints))
		v.relayServing = make([]bool, len(p.cfg.relays))
		for _, e := range p.cfg.endpoints {
			up := false
			switch v.admin.of(e.relay.index) {
			case adminAuto:
				up = v.health.endpointUp[e.id]
			case adminUp:
				up = true
			}
			v.serving[e.id] = up
			if up && !v.relayServing[e.relay.index] {
				v.relayServing[e.relay.index] = true
				v.relaysUp++
			}
		}
	}
	p.current.Store(&v)
}
