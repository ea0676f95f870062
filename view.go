package amtrelay

import (
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
	sources *table.Table
	health  *healthSnapshot
	admin   adminModes
	peers   []*dns.DNSKEY // the other networks' keys, with dnssec

	// Derived from health and admin when the view is made.
	serving      []bool // by endpoint id: up (by its probes, or forced) and its relay not drained
	relayServing []bool // by relay index: some endpoint is serving
	relaysUp     int    // relays serving
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
