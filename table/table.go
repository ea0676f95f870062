// Package table holds the per-source connectivity table of the amtrelay
// plugin: which relays can reach a multicast source, by longest-prefix match
// on the source address (RFC 8777 discovery is per source). Relays are
// referred to by their index in the plugin's relay list; the table knows
// nothing else about them.
//
// A Table is made in one of three ways:
//
//   - A Builder collects entries one by one with Add, and Build checks them
//     and makes the table; the plugin does this with the Corefile's inline
//     source lines.
//   - ParseFile reads the text of a sources file into a Builder, checking
//     every line and naming FILE:LINE for each of the first few problems.
//   - A FileLoader turns successive versions of one sources file into
//     tables, with the inline lines laid over each. It compares a version
//     with the one it loaded last and applies the lines that changed to the
//     previous table, copy-on-write, so that a big file regenerated with a
//     few changed routes costs a few trie paths; when many lines changed, it
//     parses the whole file instead.
//
// A Table never changes once made, and a table made from a previous one
// shares nodes with it without touching them, so the plugin can publish
// each new table through an atomic pointer and keep answering queries from
// the old one, without locks, while the next is built. A Table's methods
// are safe for concurrent use, and the relay slices Lookup returns are
// shared and read-only. A Builder and a FileLoader are not safe for
// concurrent use: each belongs to the one goroutine that builds.
//
// A SourceFile gives a FileLoader its versions: it reads only regular files,
// up to a size limit, once a change has settled, so that a path somebody
// else writes can never hang, exhaust or half-load the server.
package table

import (
	"fmt"
	"net/netip"
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
