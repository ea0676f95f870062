package amtrelay

import (
	"sync"

	"github.com/amtdns/amtrelay/health"
)

// healthSnapshot is relay health at one moment. It is immutable once published: queries read it
// without locks, and a change publishes a new one.
type healthSnapshot struct {
	endpointUp []bool // by endpoint id
	relayUp    []bool // by relay index: some endpoint of the relay is up
	relaysUp   int
	// observed: every endpoint has had a probe outcome, or carried one over from the instance
	// before a Corefile reload.
	observed bool
}

// relayHealth is the one owner of relay health in an instance: the hysteresis state of every
// endpoint, which relays that makes up, and the transitions.
// Probes report to it; after every change it publishes a new healthSnapshot, so that a query
// sees the endpoints and the relays of one moment, never a relay up with none of its endpoints up.
type relayHealth struct {
	cfg     *config
	publish func(*healthSnapshot) // called with mu held, so snapshots arrive in order

	mu     sync.Mutex
	states []health.State // by endpoint id
	snap   *healthSnapshot
}

func newRelayHealth(cfg *config, publish func(*healthSnapshot)) *relayHealth {
	h := &relayHealth{
		cfg:     cfg,
		publish: publish,
		states:  make([]health.State, len(cfg.endpoints)),
	}
	if !cfg.health.enabled() {
		// Nothing will be probed: every endpoint is up and nothing is left to wait for.
		for i := range h.states {
			h.states[i].Restore(true)
		}
	}
	h.snap = h.build()
	publish(h.snap)
	return h
}

// build computes a snapshot from the states; the caller holds mu.
func (h *relayHealth) build() *healthSnapshot {
	s := &healthSnapshot{
		endpointUp: make([]bool, len(h.states)),
		relayUp:    make([]bool, len(h.cfg.relays)),
		observed:   true,
	}
	for _, e := range h.cfg.endpoints {
		st := &h.states[e.id]
		s.endpointUp[e.id] = st.Up()
		s.observed = s.observed && st.Observed()
		if st.Up() && !s.relayUp[e.relay.index] {
			s.relayUp[e.relay.index] = true
			s.relaysUp++
		}
	}
	return s
}

// observe records one probe outcome for the endpoints ids (those a check decides) and publishes
// what changed.
func (h *relayHealth) observe(ids []int, ok bool, result string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := false
	for _, id := range ids {
		st := &h.states[id]
		changed = changed || !st.Observed()
		flipped, streak := st.Observe(ok, h.cfg.health.policy)
		if !flipped {
			continue
		}
		changed = true
		e := h.cfg.endpoints[id]
		if ok {
			log.Infof("relay %s %s up: %s x%d", e.relay.name, e, result, streak)
		} else {
			log.Warningf("relay %s %s down: %s x%d", e.relay.name, e, result, streak)
		}
	}
	if changed {
		h.commit()
	}
}

// commit publishes the states as a new snapshot and counts the relays that changed; the caller
// holds mu.
func (h *relayHealth) commit() {
	prev, next := h.snap, h.build()
	for i, r := range h.cfg.relays {
		switch {
		case next.relayUp[i] && !prev.relayUp[i]:
			relayTransitions.WithLabelValues(r.name, "up").Inc()
		case !next.relayUp[i] && prev.relayUp[i]:
			relayTransitions.WithLabelValues(r.name, "down").Inc()
		}
	}
	h.snap = next
	h.publish(next)
}

// healthKey names an endpoint as it is probed: the same relay name and address probed at another
// target is another observation.
func healthKey(e *endpoint) string {
	target := e.relay.probe.String()
	if e.relay.probe.isZero() {
		target = "default"
	}
	return e.relay.name + " " + e.String() + " " + target
}

// adopt starts every endpoint that prev also probes (same relay name, address and probe target)
// from prev's state, without counting a transition. A Corefile reload builds a new instance whose
// relays would otherwise start up and unprobed: a dead relay would be served, and readiness would
// drop, until the new instance's first round answered.
func (h *relayHealth) adopt(prev *relayHealth) {
	if prev == h || !h.cfg.health.enabled() {
		return
	}
	prev.mu.Lock()
	known := make(map[string]bool, len(prev.states))
	for _, e := range prev.cfg.endpoints {
		if st := prev.states[e.id]; st.Observed() {
			known[healthKey(e)] = st.Up()
		}
	}
	prev.mu.Unlock()

	h.mu.Lock()
	defer h.mu.Unlock()
	adopted := false
	for _, e := range h.cfg.endpoints {
		if up, ok := known[healthKey(e)]; ok && !h.states[e.id].Observed() {
			h.states[e.id].Restore(up)
			adopted = true
		}
	}
	if adopted {
		h.snap = h.build()
		h.publish(h.snap)
	}
}
