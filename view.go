package amtrelay

import (
	"sync"
	"sync/atomic"

	"github.com/amtdns/amtrelay/table"
)

// view is what a query reads, with one atomic load: the connectivity table and the relay health of
// one moment. Both parts are immutable; a change to either publishes a new view.
type view struct {
	sources *table.Table
	health  *healthSnapshot
}

// viewPublisher joins the parts of the view as their owners publish them: the sources provider
// its tables, relayHealth its snapshots.
type viewPublisher struct {
	current atomic.Pointer[view]

	mu      sync.Mutex // orders the stores, so that a part is never replaced by an older one
	sources *table.Table
	health  *healthSnapshot
}

func (p *viewPublisher) load() *view { return p.current.Load() }

func (p *viewPublisher) setSources(t *table.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sources = t
	p.current.Store(&view{sources: t, health: p.health})
}

func (p *viewPublisher) setHealth(h *healthSnapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.health = h
	p.current.Store(&view{sources: p.sources, health: h})
}
