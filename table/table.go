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
	"encoding/binary"
	"errors"
	"fmt"
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
	// used counts the sets some prefix refers to; Override can leave sets
	// behind that nothing refers to any more.
	used int
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
	return t.used
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

// DuplicateError is returned by Builder.Add for a prefix that is already
// present. Its message leaves out where the duplicate itself is, because
// callers prefix their own "FILE:LINE: ".
type DuplicateError struct {
	Prefix netip.Prefix
	First  Origin // the entry already in the builder
	Dup    Origin // the rejected one
}

func (e *DuplicateError) Error() string {
	if e.First.File == e.Dup.File && e.First.Line != 0 {
		return fmt.Sprintf("%s: duplicate, first at line %d", e.Prefix, e.First.Line)
	}
	return fmt.Sprintf("%s: duplicate, first at %s", e.Prefix, e.First)
}

// Builder collects entries for a Table. It is not safe for concurrent use.
type Builder struct {
	// The trie that Build hands to the Table. It doubles as the
	// duplicate check while building: a Go map beside it cost more time
	// than the trie itself, and input in address order (the usual case
	// for generated files) makes trie inserts cheap.
	trie   *bart.Table[uint32]
	shared bool // trie belongs to a built Table; copy before changing it

	// Where each entry came from, in order of arrival; only the error
	// path needs to find one, through index.
	origins originLog
	index   map[netip.Prefix]int // built on the first duplicate
	files   []string             // Origin.File values, stored once each

	sets     [][]int
	refs     []int             // prefixes per set
	setIndex map[string]uint32 // setKey -> position in sets

	scratch []int
	key     []byte
}

// originRec is kept free of pointers (a netip.Prefix has one, for the
// zone), so that a million of them cost the garbage collector nothing.
type originRec struct {
	addr [16]byte
	file uint32
	line int32
	bits uint8
}

func (r *originRec) prefix() netip.Prefix {
	a := netip.AddrFrom16(r.addr)
	bits := int(r.bits)
	if a.Is4In6() && bits <= 32 {
		// normalize has folded every mapped prefix into IPv4, so a
		// mapped address here stands for an IPv4 prefix.
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, bits)
}

// originLog appends in fixed-size chunks: a growing slice would copy all
// records again at every doubling, which at a million entries cost more
// than the rest of Add.
type originLog struct {
	chunks [][]originRec
	n      int
}

const originChunk = 1 << 14

func (l *originLog) add(r originRec) {
	if l.n%originChunk == 0 {
		l.chunks = append(l.chunks, make([]originRec, 0, originChunk))
	}
	c := &l.chunks[len(l.chunks)-1]
	*c = append(*c, r)
	l.n++
}

func (l *originLog) at(i int) *originRec { return &l.chunks[i/originChunk][i%originChunk] }

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{
		trie:     new(bart.Table[uint32]),
		setIndex: make(map[string]uint32),
	}
}

// Len returns the number of distinct prefixes added so far.
func (b *Builder) Len() int { return b.trie.Size() }

// Add inserts p -> relays. p goes through the same checks as ParsePrefix
// (no host bits; IPv4-mapped becomes IPv4). relays must be non-empty and
// non-negative; order and repetitions do not matter. Adding a prefix twice
// returns a *DuplicateError naming the first origin and leaves the first
// entry in place.
func (b *Builder) Add(p netip.Prefix, relays []int, origin Origin) error {
	return b.insert(p, relays, origin, false)
}

// Override is Add for entries that win over what is already there (inline
// Corefile lines over file lines): an existing entry for the same prefix is
// replaced instead of being an error. It fails only for an invalid prefix
// or relay list.
func (b *Builder) Override(p netip.Prefix, relays []int, origin Origin) error {
	return b.insert(p, relays, origin, true)
}

func (b *Builder) insert(p netip.Prefix, relays []int, origin Origin, replace bool) error {
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
	return b.put(p, set, origin, replace)
}

// put stores an already normalized prefix with an interned set.
func (b *Builder) put(p netip.Prefix, set uint32, origin Origin, replace bool) error {
	if b.shared {
		b.trie = b.trie.Clone()
		b.shared = false
	}
	var (
		old   uint32
		found bool
	)
	// One walk down the trie both checks and inserts.
	b.trie.Modify(p, func(v uint32, ok bool) (uint32, bool) {
		old, found = v, ok
		if ok && !replace {
			return v, false
		}
		return set, false
	})
	if found && !replace {
		return &DuplicateError{Prefix: p, First: b.originOf(p), Dup: origin}
	}
	if found {
		b.refs[old]--
	}
	b.refs[set]++
	b.origins.add(originRec{addr: p.Addr().As16(), bits: uint8(p.Bits()), file: b.fileID(origin.File), line: clampLine(origin.Line)})
	if b.index != nil {
		b.index[p] = b.origins.n - 1
	}
	return nil
}

// originOf finds where p was last stored. Only duplicates need this, so the
// index is built the first time one turns up.
func (b *Builder) originOf(p netip.Prefix) Origin {
	if b.index == nil {
		b.index = make(map[netip.Prefix]int, b.origins.n)
		for i := 0; i < b.origins.n; i++ {
			b.index[b.origins.at(i).prefix()] = i
		}
	}
	r := b.origins.at(b.index[p])
	return Origin{File: b.files[r.file], Line: int(r.line)}
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
	k := b.key[:0]
	for _, r := range s {
		k = binary.LittleEndian.AppendUint32(k, uint32(r))
	}
	b.key = k
	if id, ok := b.setIndex[string(k)]; ok {
		return id, nil
	}
	if len(b.sets) >= math.MaxUint32 {
		return 0, errors.New("too many distinct relay sets")
	}
	id := uint32(len(b.sets))
	b.sets = append(b.sets, slices.Clone(s))
	b.refs = append(b.refs, 0)
	b.setIndex[string(k)] = id
	return id, nil
}

// Build returns a Table with the entries added so far. It hands its trie
// over instead of copying it; the Builder stays usable, and copies the trie
// only if it is changed again, so later changes never reach tables already
// built.
func (b *Builder) Build() *Table {
	t := &Table{trie: b.trie}
	b.shared = true

	// One backing array for all sets; each slice is capped at its length
	// so that a caller appending to a Lookup result gets a copy instead of
	// overwriting the next set. Sets that Override left unused stay (the
	// trie refers to sets by position) but cost only their few ints.
	n := 0
	for _, s := range b.sets {
		n += len(s)
	}
	flat := make([]int, 0, n)
	t.sets = make([][]int, len(b.sets))
	for i, s := range b.sets {
		start := len(flat)
		flat = append(flat, s...)
		t.sets[i] = flat[start:len(flat):len(flat)]
		if b.refs[i] > 0 {
			t.used++
		}
	}
	return t
}
