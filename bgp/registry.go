package bgp

import (
	"context"
	"sync"
)

// registry holds the running speakers of this process by config: the one
// piece of state that must outlive a plugin instance, so that a Corefile
// reload with an unchanged bgp block keeps its sessions and its RIB.
var registry = struct {
	sync.Mutex
	m map[Config]*held
}{m: make(map[Config]*held)}

type held struct {
	s      *Speaker
	refs   int
	cancel context.CancelFunc
	done   chan struct{}
}

// Acquire returns the running Speaker for cfg, starting one if no holder
// has it, and a release func. The speaker runs while anyone holds it; the
// last release stops it and returns once it has stopped. release may be
// called more than once; only the first call counts.
//
// Configs that are equal once their defaults are filled in share a
// speaker, so the plugin can Acquire in OnStartup and release in
// OnShutdown: on a reload the new instance acquires the running speaker
// before the old one releases it, and a reload that fails after acquiring
// releases its hold while the old instance keeps the speaker running. A
// changed config gets a new speaker while the old one runs on until its
// holder releases it; if both listen on one address, the new one binds it
// once the old one has stopped (see Run).
//
// logf is used if this call starts the speaker; the plugin's logger is
// the same for every instance.
func Acquire(cfg Config, logf Logf) (*Speaker, func(), error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, nil, err
	}
	registry.Lock()
	defer registry.Unlock()
	h := registry.m[cfg]
	if h == nil {
		s, err := New(cfg, logf)
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		h = &held{s: s, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(h.done)
			_ = s.Run(ctx) // returns an error only for a second Run
		}()
		registry.m[cfg] = h
	}
	h.refs++
	var once sync.Once
	release := func() {
		once.Do(func() {
			registry.Lock()
			h.refs--
			last := h.refs == 0
			if last {
				delete(registry.m, cfg)
			}
			registry.Unlock()
			if last {
				h.cancel()
				<-h.done
			}
		})
	}
	return h.s, release, nil
}
