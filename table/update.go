package table

import (
	"iter"
	"math"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// buildFrom is Build for a table that replaces prev: when the two differ
// in few prefixes, the new table is prev changed by copy-on-write
// (bart's persistent inserts and deletes), which shares every unchanged
// node with prev. A reload of a million-line file that changed a few lines
// then builds a few trie paths instead of a million, and leaves almost
// nothing for the garbage collector. prev is not modified and may be in
// use by readers.
func (b *Builder) buildFrom(prev *Table) (*Table, error) {
	b.sortEntries()
	if dups, _ := b.duplicates(1); len(dups) > 0 {
		return nil, dups[0]
	}
	eff := b.effective()
	if t := b.update(prev, eff, eff.size()/maxUpdateShare); t != nil {
		return t, nil
	}
	return b.fresh(eff), nil
}

// fresh builds a new trie, in key order. Only the sets some entry refers
// to are kept.
func (b *Builder) fresh(eff overlay) *Table {
	sets := newSetNumbers(&Table{}, b, nil)
	trie := new(bart.Table[uint32])
	for e := range eff.all() {
		trie.Insert(e.prefix(), sets.ref(e.set))
	}
	return sets.table(trie)
}

// maxUpdateShare: buildFrom rebuilds from scratch when more than one entry
// in maxUpdateShare changed. A persistent insert or delete copies a path
// of nodes, about 10 µs at 1.2M prefixes against 0.3 µs per prefix for a
// whole new trie, so past this share a new trie is cheaper; the figures
// are in BenchmarkReload.
const maxUpdateShare = 128

// update returns prev with the changes that turn it into eff, or nil when
// a fresh build is better: no prev, more than limit changes, or too many
// sets that no entry refers to any more.
func (b *Builder) update(prev *Table, eff overlay, limit int) *Table {
	if prev == nil || prev.trie == nil || prev.trie.Size() == 0 {
		return nil
	}
	// idOf is called once for every entry of eff, so the references
	// are counted from zero.
	sets := newSetNumbers(prev, b, make([]uint32, len(prev.refs)))
	idOf := func(e *entry) uint32 { return sets.ref(e.set) }

	type change struct {
		p   netip.Prefix
		id  uint32
		del bool
	}
	var changes []change
	walk := eff
	// diff merges one family of prev, in bart's sort order, with eff.
	diff := func(prevSorted iter.Seq2[netip.Prefix, uint32], is4 bool) bool {
		var k entry
		for p, v := range prevSorted {
			k.addr, k.bits, k.is4 = entryKey(p)
			e := walk.peek()
			for ; e != nil && cmpKey(e, &k) < 0; e = walk.peek() {
				changes = append(changes, change{p: e.prefix(), id: idOf(e)})
				walk.next(e)
			}
			if e != nil && cmpKey(e, &k) == 0 {
				if id := idOf(e); id != v {
					changes = append(changes, change{p: p, id: id})
				}
				walk.next(e)
			} else {
				changes = append(changes, change{p: p, del: true})
			}
			if len(changes) > limit {
				return false
			}
		}
		for e := walk.peek(); e != nil && e.is4 == is4; e = walk.peek() {
			changes = append(changes, change{p: e.prefix(), id: idOf(e)})
			walk.next(e)
		}
		return len(changes) <= limit
	}
	if !diff(prev.trie.AllSorted4(), true) || !diff(prev.trie.AllSorted6(), false) {
		return nil
	}

	if tooManyStale(sets.refs) {
		return nil // mostly sets of the past: a fresh build drops them
	}
	trie := prev.trie
	for _, c := range changes {
		if c.del {
			trie = trie.DeletePersist(c.p)
		} else {
			trie = trie.InsertPersist(c.p, c.id)
		}
	}
	return sets.table(trie)
}

// tooManyStale reports whether most sets are ones no prefix refers to any
// more, which a fresh build would drop.
func tooManyStale(refs []uint32) bool {
	return len(refs) > 2*setsInUse(refs)+16
}

func setsInUse(refs []uint32) int {
	n := 0
	for _, r := range refs {
		if r > 0 {
			n++
		}
	}
	return n
}

// setNumbers gives a Builder's sets the numbers they have in a table
// derived from prev, and counts the references to them: prev's number for
// a set prev has, as the trie nodes shared with prev hold those, and the
// next free one for a set it lacks.
type setNumbers struct {
	sets  [][]int // prev's, then the new ones
	refs  []uint32
	known map[string]uint32
	ids   setMap // Builder set -> number, once looked up
	b     *Builder
	key   []byte
}

// newSetNumbers starts from the reference counts refs.
func newSetNumbers(prev *Table, b *Builder, refs []uint32) *setNumbers {
	n := &setNumbers{
		sets:  slices.Clip(prev.sets),
		refs:  refs,
		known: make(map[string]uint32, len(prev.sets)),
		ids:   newSetMap(len(b.sets)),
		b:     b,
	}
	for i, s := range n.sets {
		n.key = setKey(n.key[:0], s)
		n.known[string(n.key)] = uint32(i)
	}
	return n
}

// ref returns the number of the Builder's set, one more prefix referring
// to it.
func (n *setNumbers) ref(set uint32) uint32 {
	id, ok := n.ids.get(set)
	if !ok {
		n.key = setKey(n.key[:0], n.b.sets[set])
		if id, ok = n.known[string(n.key)]; !ok {
			id = uint32(len(n.sets))
			n.sets = append(n.sets, n.b.sets[set])
			n.known[string(n.key)] = id
		}
		n.ids.set(set, id)
	}
	for int(id) >= len(n.refs) {
		n.refs = append(n.refs, 0)
	}
	n.refs[id]++
	return id
}

// unref counts one prefix fewer referring to set number id.
func (n *setNumbers) unref(id uint32) { n.refs[id]-- }

// table returns the Table of trie with these sets.
func (n *setNumbers) table(trie *bart.Table[uint32]) *Table {
	return newTable(trie, n.sets, n.refs)
}

// setMap maps Builder set numbers to Table set numbers.
type setMap []uint32

const noSet = math.MaxUint32

func newSetMap(n int) setMap {
	m := make(setMap, n)
	for i := range m {
		m[i] = noSet
	}
	return m
}

func (m setMap) get(set uint32) (uint32, bool) { return m[set], m[set] != noSet }
func (m setMap) set(set, id uint32)            { m[set] = id }
