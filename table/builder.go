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
)

// Builder collects entries for a Table. It is not safe for concurrent use.
//
// Entries are kept in a flat, pointer-free list and only sorted and checked
// for duplicates when the table is built: a million of them then cost the
// garbage collector nothing, and the trie is filled in address order, which
// is several times faster than the order of an unsorted file.
type Builder struct {
	entries   []entry // from Add
	overrides []entry // from override; win over entries with the same prefix
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

// Add inserts p -> relays. p goes through the same checks as ParsePrefix
// (no host bits; IPv4-mapped becomes IPv4). relays must be non-empty and
// non-negative; order and repetitions do not matter. A prefix added twice
// makes Build fail with a *DuplicateError.
func (b *Builder) Add(p netip.Prefix, relays []int, origin Origin) error {
	return b.insert(p, relays, origin, false)
}

// override is Add for entries that win over Add's entries for the same
// prefix (inline Corefile lines over file lines); among overrides of one
// prefix the last one wins. It fails only for an invalid prefix or relay
// list.
func (b *Builder) override(p netip.Prefix, relays []int, origin Origin) error {
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

// has reports whether an Add entry has prefix p; the entries must be
// sorted.
func (b *Builder) has(p netip.Prefix) bool {
	var k entry
	k.addr, k.bits, k.is4 = entryKey(p)
	_, found := slices.BinarySearchFunc(b.entries, k, cmpKey2)
	return found
}

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
	return b.buildFrom(nil)
}
