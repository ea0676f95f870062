package amtrelay

import (
	"sync"
	"time"

	"github.com/amtdns/amtrelay/health"
)

// outcome is the result of one check of an endpoint, as relay health records it.
type outcome struct {
	ok     bool
	result string        // for logs and explanations: "ok", "no_query at request", "12 packets"
	rtt    time.Duration // of a handshake that passed
	at     time.Time
}

// healthSnapshot is relay health at one moment. It is immutable once published: queries read it
// without locks, and a change publishes a new one.
type healthSnapshot struct {
	endpointUp []bool // by endpoint id: the handshake passes
	relayUp    []bool // by relay index: some endpoint of the relay is up
	relaysUp   int
	// canaryUp says, by endpoint id * number of canaries + canary index, whether data of the
	// canary's channel comes through the endpoint.
	canaryUp  []bool
	canaries  int
	canaryAny [][]bool // by relay index, by canary index: some endpoint's canary is up
	// observed: every endpoint has had a probe outcome, or carried one over from the instance
	// before a Corefile reload.
	observed bool
}

// canaryOK reports whether endpoint id passes canary c; -1 is no canary, which every endpoint passes.
func (h *healthSnapshot) canaryOK(id, c int) bool {
	return c < 0 || h.canaryUp[id*h.canaries+c]
}

// relayHealth is the one owner of relay health in an instance: the hysteresis state of every
// endpoint's handshake and canaries, which relays that makes up, and the transitions. Probes and
// canary checks report to it; after every change it publishes a new healthSnapshot, so that a
// query sees the endpoints and the relays of one moment, never a relay up with none of its
// endpoints up.
type relayHealth struct {
	cfg     *config
	publish func(*healthSnapshot) // called with mu held, so snapshots arrive in order

	mu       sync.Mutex
	states   []health.State // by endpoint id
	canaries []health.State // by endpoint id * len(cfg.canaries) + canary index
	// The last outcome of each, for explanations.
	lastProbe  []outcome
	lastCanary []outcome
	snap       *healthSnapshot
}

func newRelayHealth(cfg *config, publish func(*healthSnapshot)) *relayHealth {
	h := &relayHealth{
		cfg:        cfg,
		publish:    publish,
		states:     make([]health.State, len(cfg.endpoints)),
		canaries:   make([]health.State, len(cfg.endpoints)*len(cfg.canaries)),
		lastProbe:  make([]outcome, len(cfg.endpoints)),
		lastCanary: make([]outcome, len(cfg.endpoints)*len(cfg.canaries)),
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
	nc := len(h.cfg.canaries)
	s := &healthSnapshot{
		endpointUp: make([]bool, len(h.states)),
		relayUp:    make([]bool, len(h.cfg.relays)),
		canaryUp:   make([]bool, len(h.canaries)),
		canaries:   nc,
		canaryAny:  make([][]bool, len(h.cfg.relays)),
		observed:   true,
	}
	for i := range h.canaries {
		s.canaryUp[i] = h.canaries[i].Up()
	}
	for _, r := range h.cfg.relays {
		s.canaryAny[r.index] = make([]bool, nc)
		for _, e := range r.endpoints {
			st := &h.states[e.id]
			s.endpointUp[e.id] = st.Up()
			s.observed = s.observed && st.Observed()
			if st.Up() && !s.relayUp[r.index] {
				s.relayUp[r.index] = true
				s.relaysUp++
			}
			for c := range nc {
				s.canaryAny[r.index][c] = s.canaryAny[r.index][c] || s.canaryUp[e.id*nc+c]
			}
		}
	}
	return s
}

// observe records the outcome of one handshake check for the endpoints ids (those the check
// decides) and publishes what changed.
func (h *relayHealth) observe(ids []int, o outcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.at = time.Now()
	changed := false
	for _, id := range ids {
		h.lastProbe[id] = o
		st := &h.states[id]
		wasUp := st.Up()
		changed = h.record(st, id, "", o) || changed
		if st.Up() && !wasUp {
			h.presumeCanaries(id)
		}
	}
	if changed {
		h.commit()
	}
}

// presumeCanaries restores the canaries of endpoint id, whose handshake has just come back, to up.
// Their checks failed while the relay was down, for want of a tunnel rather than of a multicast
// path, and waiting out rises checks for data would keep the relay from the sources under a
// canary, though it serves the others and readiness may already have drawn the anycast traffic
// back. A relay that came back without its path leaves those sources again after fails checks
// without data, as one that loses its path while up does.
func (h *relayHealth) presumeCanaries(id int) {
	nc := len(h.cfg.canaries)
	for c, cn := range h.cfg.canaries {
		st := &h.canaries[id*nc+c]
		if !st.Up() {
			st.Restore(true)
			e := h.cfg.endpoints[id]
			log.Infof("relay %s %s canary %s up: presumed with the handshake", e.relay.name, e, cn.text)
		}
	}
}

// observeCanary records, for the endpoints ids, whether data of canary c came through since the
// last check, and publishes what changed.
func (h *relayHealth) observeCanary(ids []int, c int, o outcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	o.at = time.Now()
	changed := false
	cn := h.cfg.canaries[c]
	for _, id := range ids {
		i := id*len(h.cfg.canaries) + c
		h.lastCanary[i] = o
		changed = h.record(&h.canaries[i], id, " canary "+cn.text, o) || changed
	}
	if changed {
		h.commit()
	}
}

// record feeds one outcome to st, the state of endpoint id named by what, and logs a flip. It
// reports whether a snapshot would change; the caller holds mu.
func (h *relayHealth) record(st *health.State, id int, what string, o outcome) bool {
	first := !st.Observed()
	flipped, streak := st.Observe(o.ok, h.cfg.health.policy)
	if flipped {
		e := h.cfg.endpoints[id]
		if o.ok {
			log.Infof("relay %s %s%s up: %s x%d", e.relay.name, e, what, o.result, streak)
		} else {
			log.Warningf("relay %s %s%s down: %s x%d", e.relay.name, e, what, o.result, streak)
		}
	}
	return first || flipped
}

// last returns the last handshake outcome of endpoint id, and that of each of its canaries.
func (h *relayHealth) last(id int) (probe outcome, canaries []outcome) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nc := len(h.cfg.canaries)
	return h.lastProbe[id], append([]outcome(nil), h.lastCanary[id*nc:id*nc+nc]...)
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

// canaryKey names a canary of an endpoint the same way.
func canaryKey(e *endpoint, cn *canary) string {
	return healthKey(e) + " canary " + cn.prefix.String() + " " + cn.source.String() + " " + cn.group.String()
}

// adopt starts every endpoint and canary that prev also checks (same relay name, address, probe
// target and channel) from prev's state, without counting a transition. A Corefile reload builds a
// new instance whose relays would otherwise start up and unprobed: a dead relay would be served,
// and readiness would drop, until the new instance's first round answered.
func (h *relayHealth) adopt(prev *relayHealth) {
	if prev == h || !h.cfg.health.enabled() {
		return
	}
	prev.mu.Lock()
	known := make(map[string]bool, len(prev.states)+len(prev.canaries))
	for _, e := range prev.cfg.endpoints {
		if st := prev.states[e.id]; st.Observed() {
			known[healthKey(e)] = st.Up()
		}
		for _, cn := range prev.cfg.canaries {
			if st := prev.canaries[e.id*len(prev.cfg.canaries)+cn.index]; st.Observed() {
				known[canaryKey(e, cn)] = st.Up()
			}
		}
	}
	prev.mu.Unlock()

	h.mu.Lock()
	defer h.mu.Unlock()
	adopted := false
	restore := func(st *health.State, key string) {
		if up, ok := known[key]; ok && !st.Observed() {
			st.Restore(up)
			adopted = true
		}
	}
	for _, e := range h.cfg.endpoints {
		restore(&h.states[e.id], healthKey(e))
		for _, cn := range h.cfg.canaries {
			restore(&h.canaries[e.id*len(h.cfg.canaries)+cn.index], canaryKey(e, cn))
		}
	}
	if adopted {
		h.snap = h.build()
		h.publish(h.snap)
	}
}
