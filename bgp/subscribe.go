package bgp

import (
	"context"
	"time"
)

// subscriber is one Subscribe call: the routes changed since its last
// batch, and a wake-up for its goroutine.
type subscriber struct {
	dirty  map[routeKey]struct{}
	signal chan struct{} // capacity 1
}

// Subscribe calls fn with the whole RIB (a Batch with Full set), then with
// a Batch of the routes changed since the one before, until ctx ends (it
// returns nil) or Run returns (ErrStopped). fn runs on the goroutine that
// called Subscribe, one Batch at a time and in order; the speaker goes on
// collecting changes meanwhile, so a slow fn gets bigger batches, never
// stale ones. Batches come at most every 50 ms.
//
// Several subscribers may share a speaker (a Corefile reload has two
// plugin instances for a moment); each gets every change. Subscribe may be
// called before Run: the first batch is then empty.
func (s *Speaker) Subscribe(ctx context.Context, fn func(Batch)) error {
	sub := &subscriber{dirty: make(map[routeKey]struct{}), signal: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return ErrStopped
	}
	full := make([]Route, 0, len(s.rib))
	for k, v := range s.rib {
		full = append(full, Route{Family: k.family, Prefix: k.prefix, Neighbor: v.neighbor, Communities: v.communities})
	}
	synced := s.syncedAllLocked(time.Now())
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()

	fn(Batch{Full: true, Routes: full, Synced: synced})
	full = nil
	last := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	poll := time.NewTicker(syncPoll)
	defer poll.Stop()
	for {
		if synced {
			poll.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return ErrStopped
		case <-sub.signal:
		case <-poll.C:
		}
		if wait := batchInterval - time.Since(last); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-s.done:
				return ErrStopped
			case <-timer.C:
			}
		}
		if b := s.take(sub); len(b.Routes) > 0 || b.Synced != synced {
			synced = b.Synced
			fn(b)
		}
		last = time.Now()
	}
}

// take returns the current state of the routes changed for sub.
func (s *Speaker) take(sub *subscriber) Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	routes := make([]Route, 0, len(sub.dirty))
	for k := range sub.dirty {
		r := Route{Family: k.family, Prefix: k.prefix, Withdrawn: true}
		if v, ok := s.rib[k]; ok {
			r.Withdrawn, r.Neighbor, r.Communities = false, v.neighbor, v.communities
		}
		routes = append(routes, r)
	}
	// A new map rather than clear: after a full table it would keep its
	// buckets for good.
	sub.dirty = make(map[routeKey]struct{})
	return Batch{Routes: routes, Synced: s.syncedAllLocked(time.Now())}
}

func (s *Speaker) dirtyLocked(k routeKey) {
	for sub := range s.subs {
		sub.dirty[k] = struct{}{}
	}
	s.wakeLocked()
}

// wakeLocked has every subscriber take a batch.
func (s *Speaker) wakeLocked() {
	for sub := range s.subs {
		select {
		case sub.signal <- struct{}{}:
		default:
		}
	}
}
