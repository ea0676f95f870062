// Package table holds the per-source connectivity table of the amtrelay
// plugin: which relays can reach a multicast source, by longest-prefix match
// on the source address (RFC 8777 discovery is per source).
//
// A Table is built once by a Builder and never changes afterwards, so the
// plugin can publish it through an atomic pointer and answer queries from it
// without locks. Relays are referred to by their index in the plugin's relay
// list; the table knows nothing else about them.
package table

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math"
	"net/netip"
	"slices"
	"strconv"

	"github.com/gaissmai/bart"
)

// Table maps source prefixes to relay sets. It is immutable; all methods are
// safe for concurrent use. The zero value and a nil *Table are empty tables.
type Table struct {
	// bart.Table rather than bart.Fast: about 40% less memory per prefix
	// for a lookup that is still well inside the budget; the figures are
	// in BenchmarkBartVariant.
	trie *bart.Table[uint32]
	// Real tables have up to millions of prefixes but only a handful of
	// distinct relay sets, so the trie stores a set number and the sets
	// live here once each.
	sets [][]int
	// refs counts the prefixes that refer to each set. A table built from
	// a previous one keeps that one's set numbers, as it shares its trie
	// nodes, so some sets may have no prefix left.
	refs []uint32
}

// Lookup returns the relays of the longest prefix containing addr. The slice
// is shared by every caller and every prefix with the same set: read it,
// never modify it (appending is safe, its capacity is its length).
//
// An IPv4-mapped IPv6 address is looked up as the IPv4 address it maps, to
// match ParsePrefix, which files mapped prefixes under IPv4. Zones are
// ignored.
func (t *Table) Lookup(addr netip.Addr) (relays []int, ok bool) {
	if t == nil || t.trie == nil {
		return nil, false
	}
	id, ok := t.trie.Lookup(addr.Unmap())
	if !ok {
		return nil, false
	}
	return t.sets[id], true
}

// Len4 returns the number of IPv4 prefixes.
func (t *Table) Len4() int {
	if t == nil || t.trie == nil {
		return 0
	}
	return t.trie.Size4()
}

// Len6 returns the number of IPv6 prefixes.
func (t *Table) Len6() int {
	if t == nil || t.trie == nil {
		return 0
	}
	return t.trie.Size6()
}

// NumSets returns the number of distinct relay sets the prefixes refer to.
func (t *Table) NumSets() int {
	if t == nil {
		return 0
	}
	return setsInUse(t.refs)
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

// tooManyStale reports whether most sets are ones no prefix refers to any
// more, which a fresh build would drop.
func tooManyStale(refs []uint32) bool {
	return len(refs) > 2*setsInUse(refs)+16
}

// Origin says where an entry came from, for error messages.
type Origin struct {
	File string
	Line int
}

// String returns "FILE:LINE", or as much of it as is known.
func (o Origin) String() string {
	switch {
	case o.File == "" && o.Line == 0:
		return "unknown origin"
	case o.File == "":
		return "line " + strconv.Itoa(o.Line)
	case o.Line == 0:
		return o.File
	}
	return o.File + ":" + strconv.Itoa(o.Line)
}

// DuplicateError reports a prefix added twice with Add. Its message leaves
// out where the duplicate itself is, because callers prefix their own
// "FILE:LINE: ".
type DuplicateError struct {
	Prefix netip.Prefix
	First  Origin // the entry added first, the one that counts
	Dup    Origin // a later one, rejected
}

func (e *DuplicateError) Error() string {
	if e.First.File == e.Dup.File && e.First.Line != 0 {
		return fmt.Sprintf("%s: duplicate, first at line %d", e.Prefix, e.First.Line)
	}
	return fmt.Sprintf("%s: duplicate, first at %s", e.Prefix, e.First)
}

// Builder collects entries for a Table. It is not safe for concurrent use.
//
// Entries are kept in a flat, pointer-free list and only sorted and checked
// for duplicates when the table is built: a million of them then cost the
// garbage collector nothing, and the trie is filled in address order, which
// is several times faster than the order of an unsorted file.
type Builder struct {
	entries   []entry // from Add
	overrides []entry // from Override; win over entries with the same prefix
	sorted    bool    // entries is in key order
	seq       uint32  // arrival counter, the tie-break between equal prefixes

	files []string // Origin.File values, stored once each

	sets     [][]int
	setIndex map[string]uint32 // setKey -> position in sets

	scratch []int
	key     []byte
}

// entry is one prefix with its relay set. IPv4 addresses are stored
// IPv4-mapped with is4 set, so that one byte comparison orders all of them
// the way bart iterates: IPv4 before IPv6, then by address, then shorter
// prefix first.
type entry struct {
	addr [16]byte
	seq  uint32
	set  uint32 // position in Builder.sets
	file uint32 // position in Builder.files
	line int32
	bits uint8
	is4  bool
}

func (e *entry) prefix() netip.Prefix {
	a := netip.AddrFrom16(e.addr)
	if e.is4 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, int(e.bits))
}

func entryKey(p netip.Prefix) (addr [16]byte, bits uint8, is4 bool) {
	return p.Addr().As16(), uint8(p.Bits()), p.Addr().Is4()
}

// cmpKey orders entries by prefix; equal prefixes compare equal.
func cmpKey(a, b *entry) int {
	if a.is4 != b.is4 {
		if a.is4 {
			return -1
		}
		return 1
	}
	if c := bytes.Compare(a.addr[:], b.addr[:]); c != 0 {
		return c
	}
	return int(a.bits) - int(b.bits)
}

// cmpEntry orders by prefix, then by arrival.
func cmpEntry(a, b entry) int {
	if c := cmpKey(&a, &b); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{setIndex: make(map[string]uint32)}
}

// Len returns the number of entries added so far, duplicates and overrides
// included.
func (b *Builder) Len() int { return len(b.entries) + len(b.overrides) }

// Add inserts p -> relays. p goes through the same checks as ParsePrefix
// (no host bits; IPv4-mapped becomes IPv4). relays must be non-empty and
// non-negative; order and repetitions do not matter. A prefix added twice
// makes Build fail with a *DuplicateError.
func (b *Builder) Add(p netip.Prefix, relays []int, origin Origin) error {
	return b.insert(p, relays, origin, false)
}

// Override is Add for entries that win over Add's entries for the same
// prefix (inline Corefile lines over file lines); among overrides of one
// prefix the last one wins. It fails only for an invalid prefix or relay
// list.
func (b *Builder) Override(p netip.Prefix, relays []int, origin Origin) error {
	return b.insert(p, relays, origin, true)
}

func (b *Builder) insert(p netip.Prefix, relays []int, origin Origin, override bool) error {
	p, err := normalize(p)
	if err != nil {
		return err
	}
	if len(relays) == 0 {
		return fmt.Errorf("no relays for %s", p)
	}
	set, err := b.intern(relays)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return b.put(p, set, origin, override)
}

// put stores an already normalized prefix with an interned set.
func (b *Builder) put(p netip.Prefix, set uint32, origin Origin, override bool) error {
	if b.seq == math.MaxUint32 {
		return errors.New("too many entries")
	}
	e := entry{seq: b.seq, set: set, file: b.fileID(origin.File), line: clampLine(origin.Line)}
	e.addr, e.bits, e.is4 = entryKey(p)
	b.seq++
	if override {
		b.overrides = append(b.overrides, e)
		return nil
	}
	if b.sorted && len(b.entries) > 0 && cmpEntry(b.entries[len(b.entries)-1], e) > 0 {
		b.sorted = false
	}
	b.entries = append(b.entries, e)
	return nil
}

func (b *Builder) origin(e *entry) Origin {
	return Origin{File: b.files[e.file], Line: int(e.line)}
}

// fileID relies on callers using few distinct file names, one after the
// other; a linear scan from the most recent one is enough.
func (b *Builder) fileID(name string) uint32 {
	for i := len(b.files) - 1; i >= 0; i-- {
		if b.files[i] == name {
			return uint32(i)
		}
	}
	b.files = append(b.files, name)
	return uint32(len(b.files) - 1)
}

func clampLine(n int) int32 {
	switch {
	case n < 0:
		return 0
	case n > math.MaxInt32:
		return math.MaxInt32
	}
	return int32(n)
}

// intern returns the number of the set holding relays, sorted and without
// repetitions, adding it if it is new.
func (b *Builder) intern(relays []int) (uint32, error) {
	s := append(b.scratch[:0], relays...)
	slices.Sort(s)
	s = slices.Compact(s)
	b.scratch = s
	if s[0] < 0 {
		return 0, fmt.Errorf("negative relay index %d", s[0])
	}
	if s[len(s)-1] > math.MaxInt32 {
		return 0, fmt.Errorf("relay index %d out of range", s[len(s)-1])
	}
	b.key = setKey(b.key[:0], s)
	if id, ok := b.setIndex[string(b.key)]; ok {
		return id, nil
	}
	if len(b.sets) >= math.MaxUint32 {
		return 0, errors.New("too many distinct relay sets")
	}
	id := uint32(len(b.sets))
	b.sets = append(b.sets, slices.Clone(s))
	b.setIndex[string(b.key)] = id
	return id, nil
}

func setKey(k []byte, set []int) []byte {
	for _, r := range set {
		k = binary.LittleEndian.AppendUint32(k, uint32(r))
	}
	return k
}

func (b *Builder) sortEntries() {
	if !b.sorted {
		// pdqsort finds a file already in address order in one pass.
		slices.SortFunc(b.entries, cmpEntry)
		b.sorted = true
	}
}

// duplicates returns the first max duplicates in order of arrival, and how
// many there are in all.
func (b *Builder) duplicates(max int) (first []*DuplicateError, total int) {
	b.sortEntries()
	var dups []*entry // the max earliest, in arrival order
	for i := 1; i < len(b.entries); i++ {
		e := &b.entries[i]
		if cmpKey(e, &b.entries[i-1]) != 0 {
			continue
		}
		total++
		at, _ := slices.BinarySearchFunc(dups, e.seq, func(d *entry, seq uint32) int { return cmp.Compare(d.seq, seq) })
		if at < max {
			dups = slices.Insert(dups, at, e)
			if len(dups) > max {
				dups = dups[:max]
			}
		}
	}
	for _, d := range dups {
		i, _ := slices.BinarySearchFunc(b.entries, *d, cmpKey2)
		first = append(first, &DuplicateError{Prefix: d.prefix(), First: b.origin(&b.entries[i]), Dup: b.origin(d)})
	}
	return first, total
}

// cmpKey2 is cmpKey for slices.BinarySearchFunc: it finds the first entry of
// a prefix.
func cmpKey2(a, b entry) int { return cmpKey(&a, &b) }

// overlay walks the entries of the table in key order: the Add entries
// with the overrides laid over them. It copies neither, as a reload of a
// big file with a few inline lines would otherwise copy the whole file's
// entries. It is a value: a copy starts its own walk.
type overlay struct {
	entries   []entry // sorted, no repeated prefixes
	overrides []entry // sorted, no repeated prefixes
	i, j      int
}

// peek returns the current entry, or nil after the last.
func (o *overlay) peek() *entry {
	if o.j == len(o.overrides) {
		if o.i == len(o.entries) {
			return nil
		}
		return &o.entries[o.i]
	}
	ov := &o.overrides[o.j]
	for ; o.i < len(o.entries); o.i++ {
		switch c := cmpKey(&o.entries[o.i], ov); {
		case c < 0:
			return &o.entries[o.i]
		case c > 0:
			return ov
		}
		// The same prefix as the override: hidden by it.
	}
	return ov
}

// next moves past e, the entry peek returned.
func (o *overlay) next(e *entry) {
	if o.j < len(o.overrides) && e == &o.overrides[o.j] {
		o.j++
	} else {
		o.i++
	}
}

// all yields the entries in key order, from the start each time it is
// ranged over.
func (o overlay) all() iter.Seq[*entry] {
	return func(yield func(*entry) bool) {
		w := o
		for e := w.peek(); e != nil && yield(e); e = w.peek() {
			w.next(e)
		}
	}
}

// size is an upper bound of the number of entries.
func (o *overlay) size() int { return len(o.entries) + len(o.overrides) }

// effective returns the overlay of the entries, which must be sorted and
// free of duplicates, and the overrides, of which the last of each prefix
// wins.
func (b *Builder) effective() overlay {
	ov := b.overrides
	if len(ov) > 0 {
		ov = slices.Clone(ov)
		slices.SortFunc(ov, cmpEntry)
		// Keep the last override of each prefix: pairs of equal keys are
		// in arrival order, so drop any entry the next one repeats.
		n := 0
		for j := range ov {
			if j+1 < len(ov) && cmpKey(&ov[j], &ov[j+1]) == 0 {
				continue
			}
			ov[n] = ov[j]
			n++
		}
		ov = ov[:n]
	}
	return overlay{entries: b.entries, overrides: ov}
}

// Build returns a Table with the entries added so far, or the first
// duplicate as a *DuplicateError. The Builder stays usable, and later
// changes never reach tables already built.
func (b *Builder) Build() (*Table, error) {
	return b.BuildFrom(nil)
}

// BuildFrom is Build for a table that replaces prev: when the two differ
// in few prefixes, the new table is prev changed by copy-on-write
// (bart's persistent inserts and deletes), which shares every unchanged
// node with prev. A reload of a million-line file that changed a few lines
// then builds a few trie paths instead of a million, and leaves almost
// nothing for the garbage collector. prev is not modified and may be in
// use by readers.
func (b *Builder) BuildFrom(prev *Table) (*Table, error) {
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

// maxUpdateShare: BuildFrom rebuilds from scratch when more than one entry
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

// newTable puts the sets in one backing array, each slice capped at its
// length so that a caller appending to a Lookup result gets a copy instead
// of overwriting the next set.
func newTable(trie *bart.Table[uint32], sets [][]int, refs []uint32) *Table {
	n := 0
	for _, s := range sets {
		n += len(s)
	}
	flat := make([]int, 0, n)
	t := &Table{trie: trie, sets: make([][]int, len(sets)), refs: refs}
	for i, s := range sets {
		start := len(flat)
		flat = append(flat, s...)
		t.sets[i] = flat[start:len(flat):len(flat)]
	}
	return t
}
