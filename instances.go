package amtrelay

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// generation is one caddy instance, as its amtrelay blocks know it: a token they share through
// the instance's storage. The instances of one Corefile load are one generation.
type generation struct {
	leavingSince atomic.Int64 // Unix ns when its final shutdown began, 0 before
	// A Corefile reload is replacing g: set when its restart begins, cleared if the restart fails.
	// Every block's OnShutdown asks it: the register's restarting is gone once the first one stopped.
	beingReplaced atomic.Bool
}

// leaving reports whether g's final shutdown has begun.
func (g *generation) leaving() bool { return g.leavingSince.Load() != 0 }

// leave marks the start of g's final shutdown, once, and returns when it began.
func (g *generation) leave() time.Time {
	g.leavingSince.CompareAndSwap(0, time.Now().UnixNano())
	return time.Unix(0, g.leavingSince.Load())
}

// instances is the process-wide register of running instances. Caddy runs a new instance's
// OnStartup before the old instance's OnShutdown, and discards a new instance whose servers fail
// to start without calling its OnShutdown: only the old instance's OnRestartFailed hooks run. So
// the register remembers which instances started while a restart was in progress, and a failed
// restart stops them. It is also what carries relay health over a reload and what metrics read.
//
// When the Corefile being replaced has no amtrelay block, no hook of ours sees the restart: the
// instances it starts are unconfirmed until the next restart begins, and those of them that are
// not of the generation being restarted then (their restart failed) are stopped.
var instances struct {
	sync.Mutex
	running     []*AMTRelay // oldest first
	restarting  *generation // the generation being replaced, until the restart fails or its first block stops
	newcomers   []*AMTRelay // started since restarting was set
	unconfirmed []*AMTRelay // started by a restart that no hook of ours saw
}

// beginRestart is an OnRestart hook of the running generation g. It returns the instances of
// restarts nobody saw fail, which the caller stops.
func beginRestart(g *generation) (orphans []*AMTRelay) {
	g.beingReplaced.Store(true)
	instances.Lock()
	defer instances.Unlock()
	if instances.restarting != g {
		instances.restarting, instances.newcomers = g, nil
	}
	for _, a := range instances.unconfirmed {
		if a.gen != g {
			orphans = append(orphans, a)
		}
	}
	instances.unconfirmed = nil
	return orphans
}

// restartFailed is an OnRestartFailed hook of g. It returns the instances started for the Corefile
// that failed, which caddy discards without their OnShutdown: the caller stops them. The first hook
// of g gets them all.
func restartFailed(g *generation) (discarded []*AMTRelay) {
	g.beingReplaced.Store(false)
	instances.Lock()
	defer instances.Unlock()
	if instances.restarting == g {
		discarded = instances.newcomers
		instances.restarting, instances.newcomers = nil, nil
	}
	return discarded
}

// register records a as running, and returns the other running instances, newest first.
// firstStartup says that a starts with the process, not by a restart.
func register(a *AMTRelay, firstStartup bool) (others []*AMTRelay) {
	instances.Lock()
	defer instances.Unlock()
	others = slices.Clone(instances.running)
	slices.Reverse(others)
	instances.running = append(instances.running, a)
	switch r := instances.restarting; {
	case r != nil && r != a.gen:
		instances.newcomers = append(instances.newcomers, a)
	case r == nil && !firstStartup:
		instances.unconfirmed = append(instances.unconfirmed, a)
	}
	return others
}

// gone lists what a stopped instance had and no running instance has any more: the label values
// whose metric series can go.
type gone struct{ relays, zones, canaries []string }

// unregister removes a, which has stopped, and returns what it alone had.
func unregister(a *AMTRelay) (g gone) {
	instances.Lock()
	instances.running = slices.DeleteFunc(instances.running, func(o *AMTRelay) bool { return o == a })
	instances.newcomers = slices.DeleteFunc(instances.newcomers, func(o *AMTRelay) bool { return o == a })
	instances.unconfirmed = slices.DeleteFunc(instances.unconfirmed, func(o *AMTRelay) bool { return o == a })
	if instances.restarting == a.gen {
		// The old generation shuts down: its restart succeeded.
		instances.restarting, instances.newcomers = nil, nil
	}
	relays, zones, canaries := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, o := range instances.running {
		for _, r := range o.cfg.relays {
			relays[r.name] = true
		}
		for _, z := range o.cfg.zones {
			zones[z] = true
		}
		for _, cn := range o.cfg.canaries {
			canaries[cn.text] = true
		}
	}
	instances.Unlock()
	for _, r := range a.cfg.relays {
		if !relays[r.name] {
			g.relays = append(g.relays, r.name)
		}
	}
	for _, z := range a.cfg.zones {
		if !zones[z] {
			g.zones = append(g.zones, z)
		}
	}
	for _, cn := range a.cfg.canaries {
		if !canaries[cn.text] {
			g.canaries = append(g.canaries, cn.text)
		}
	}
	return g
}

// current returns the running instances of the newest generation: the configuration in service,
// or, during a reload, the one taking over.
func current() []*AMTRelay {
	instances.Lock()
	defer instances.Unlock()
	n := len(instances.running)
	if n == 0 {
		return nil
	}
	newest := instances.running[n-1].gen
	var cur []*AMTRelay
	for _, a := range instances.running {
		if a.gen == newest {
			cur = append(cur, a)
		}
	}
	return cur
}
