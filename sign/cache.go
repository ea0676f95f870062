package sign

import (
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// cache maps cache keys to signatures, evicting by CLOCK (second chance): a hit only sets a flag
// under the read lock, so concurrent answers do not serialize on a lock the way an LRU list's
// move-to-front would. Entries of past validity windows are never hit again and go first.
type cache struct {
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

func newCache(max int) *cache {
	return &cache{index: make(map[string]int), max: max}
}

func (c *cache) get(key []byte) ([]dns.RRSIG, bool) {
	c.mu.RLock()
	i, ok := c.index[string(key)]
	var sigs []dns.RRSIG
	if ok {
		s := c.slots[i]
		if !s.used.Load() {
			// Only a store on the first hit since the hand passed: hot entries stay read-only
			// and their cache line is not bounced between cores.
			s.used.Store(true)
		}
		sigs = s.sigs
	}
	c.mu.RUnlock()
	return sigs, ok
}

// put stores sigs under key unless the key is there already, and returns what is stored.
func (c *cache) put(key []byte, sigs []dns.RRSIG) []dns.RRSIG {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.index[string(key)]; ok {
		return c.slots[i].sigs
	}
	k := string(key)
	if len(c.slots) < c.max {
		c.index[k] = len(c.slots)
		c.slots = append(c.slots, &slot{key: k, sigs: sigs})
		return sigs
	}
	for {
		s := c.slots[c.hand]
		if s.used.Load() {
			s.used.Store(false)
			c.hand = (c.hand + 1) % len(c.slots)
			continue
		}
		delete(c.index, s.key)
		// Readers copied the old sigs slice under the read lock and never write to it.
		s.key, s.sigs = k, sigs
		c.index[k] = c.hand
		c.hand = (c.hand + 1) % len(c.slots)
		return sigs
	}
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.slots)
}
