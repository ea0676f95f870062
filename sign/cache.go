package sign

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// cache maps cache keys to signatures. It is split into shards, each evicting by CLOCK (second
// chance): a hit takes only its shard's read lock and sets a flag, so concurrent answers neither
// serialize on an LRU list's move-to-front nor all bounce one read lock's counter between cores.
// Entries of past validity windows are never hit again and go first.
type cache struct {
	seed   maphash.Seed
	shards []*shard
}

type shard struct {
	mu    sync.RWMutex
	index map[string]int
	slots []*slot
	hand  int
	max   int
}

type slot struct {
	key  string
	sigs []dns.RRSIG
	used atomic.Bool
}

// Shards of fewer entries would make eviction noticeably less fair than one CLOCK over all.
const minShardEntries = 256

func newCache(max int) *cache {
	n := 1
	for n < 64 && max/(2*n) >= minShardEntries {
		n *= 2
	}
	c := &cache{seed: maphash.MakeSeed(), shards: make([]*shard, n)}
	for i := range c.shards {
		// The first max%n shards take one more, so that the sizes add up to max.
		m := max / n
		if i < max%n {
			m++
		}
		c.shards[i] = &shard{index: make(map[string]int), max: m}
	}
	return c
}

func (c *cache) shard(key []byte) *shard {
	if len(c.shards) == 1 {
		return c.shards[0]
	}
	return c.shards[maphash.Bytes(c.seed, key)&uint64(len(c.shards)-1)]
}

func (c *cache) get(key []byte) ([]dns.RRSIG, bool) {
	s := c.shard(key)
	s.mu.RLock()
	i, ok := s.index[string(key)]
	var sigs []dns.RRSIG
	if ok {
		sl := s.slots[i]
		if !sl.used.Load() {
			// Only a store on the first hit since the hand passed: hot entries stay read-only
			// and their cache line is not bounced between cores.
			sl.used.Store(true)
		}
		sigs = sl.sigs
	}
	s.mu.RUnlock()
	return sigs, ok
}

// put stores sigs under key unless the key is there already, and returns what is stored.
func (c *cache) put(key []byte, sigs []dns.RRSIG) []dns.RRSIG {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[string(key)]; ok {
		return s.slots[i].sigs
	}
	k := string(key)
	if len(s.slots) < s.max {
		s.index[k] = len(s.slots)
		s.slots = append(s.slots, &slot{key: k, sigs: sigs})
		return sigs
	}
	for {
		sl := s.slots[s.hand]
		if sl.used.Load() {
			sl.used.Store(false)
			s.hand = (s.hand + 1) % len(s.slots)
			continue
		}
		delete(s.index, sl.key)
		// Readers copied the old sigs slice under the read lock and never write to it.
		sl.key, sl.sigs = k, sigs
		s.index[k] = s.hand
		s.hand = (s.hand + 1) % len(s.slots)
		return sigs
	}
}

func (c *cache) len() int {
	n := 0
	for _, s := range c.shards {
		s.mu.RLock()
		n += len(s.slots)
		s.mu.RUnlock()
	}
	return n
}
