package table

import (
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func TestBuildFrom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	randomEntries := func(n int) map[netip.Prefix][]int {
		m := make(map[netip.Prefix][]int)
		for len(m) < n {
			var p netip.Prefix
			if r.IntN(3) == 0 {
				a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4)), byte(r.IntN(4))}
				p = netip.PrefixFrom(netip.AddrFrom16(a), 32+r.IntN(17)).Masked()
			} else {
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), 0}), 8+r.IntN(17)).Masked()
			}
			m[p] = []int{r.IntN(4), r.IntN(4)}
		}
		return m
	}
	builder := func(m map[netip.Prefix][]int, inline map[netip.Prefix][]int) *Builder {
		b := NewBuilder()
		for p, rs := range m {
			if err := b.Add(p, rs, Origin{}); err != nil {
				t.Fatal(err)
			}
		}
		for p, rs := range inline {
			if err := b.override(p, rs, Origin{}); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	for round := 0; round < 200; round++ {
		prevEntries := randomEntries(1 + r.IntN(60))
		next := maps.Clone(prevEntries)
		// Change a few: drop, add, give other relays.
		for p := range next {
			switch r.IntN(10) {
			case 0:
				delete(next, p)
			case 1:
				next[p] = []int{4 + r.IntN(3)}
			}
		}
		maps.Copy(next, randomEntries(r.IntN(4)))
		inline := randomEntries(r.IntN(3))

		prev := build(t, builder(prevEntries, inline))
		before := contents(prev)
		// Every change through the update path, however many.
		b := builder(next, inline)
		b.sortEntries()
		got := b.update(prev, b.effective(), math.MaxInt)
		if got == nil {
			t.Fatalf("Round %d: update refused", round)
		}
		want := build(t, builder(next, inline))
		wantEntries := maps.Clone(next)
		maps.Copy(wantEntries, inline)
		if n := want.Len4() + want.Len6(); n != len(wantEntries) {
			t.Fatalf("Round %d: Build gave %d prefixes, want %d", round, n, len(wantEntries))
		}
		for p, rs := range wantEntries {
			id, ok := want.trie.Get(p)
			if rs = slices.Compact(slices.Sorted(slices.Values(rs))); !ok || !slices.Equal(want.sets[id], rs) {
				t.Fatalf("Round %d: Build has %v -> %v (%v), want %v", round, p, want.sets[id], ok, rs)
			}
		}
		if !slices.Equal(contents(got), contents(want)) {
			t.Fatalf("Round %d: buildFrom gave\n%v\nwant\n%v", round, contents(got), contents(want))
		}
		viaBuildFrom, err := builder(next, inline).buildFrom(prev)
		if err != nil || !slices.Equal(contents(viaBuildFrom), contents(want)) {
			t.Fatalf("Round %d: buildFrom gave %v, %v; want %v", round, contents(viaBuildFrom), err, contents(want))
		}
		if got.Len4() != want.Len4() || got.Len6() != want.Len6() || liveSets(got) != liveSets(want) {
			t.Fatalf("Round %d: Len4 %d, Len6 %d, liveSets %d; want %d, %d, %d", round,
				got.Len4(), got.Len6(), liveSets(got), want.Len4(), want.Len6(), liveSets(want))
		}
		if !slices.Equal(contents(prev), before) {
			t.Fatalf("Round %d: buildFrom changed the previous table", round)
		}
	}
}

func TestBuildFromShares(t *testing.T) {
	// A big table with a few changes is updated in place of being rebuilt;
	// one with many is rebuilt.
	const n = 4096
	entries := func(change int) *Builder {
		b := NewBuilder()
		for i := 0; i < n; i++ {
			rs := []int{i % 3}
			if i < change {
				rs = []int{7}
			}
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
			if err := b.Add(p, rs, Origin{}); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	prev := build(t, entries(0))
	for _, tc := range []struct {
		change int
		update bool
	}{{0, true}, {5, true}, {n / maxUpdateShare, true}, {n/maxUpdateShare + 1, false}, {n, false}} {
		b := entries(tc.change)
		b.sortEntries()
		got := b.update(prev, b.effective(), n/maxUpdateShare)
		if (got != nil) != tc.update {
			t.Errorf("%d of %d changed: updated %v, want %v", tc.change, n, got != nil, tc.update)
		}
		if got != nil && tc.change == 0 && got.trie != prev.trie {
			t.Errorf("No change, yet a new trie")
		}
	}
}
