package table

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestInternedSets(t *testing.T) {
	b := NewBuilder()
	lists := [][]int{{3, 1, 2}, {1, 2, 3}, {2, 3, 1, 1, 3}, {1, 2, 3}}
	for i, rs := range lists {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
		if err := b.Add(p, rs, Origin{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Add(netip.MustParsePrefix("192.0.2.0/24"), []int{5}, Origin{}); err != nil {
		t.Fatal(err)
	}
	// The caller's slice must not be reordered or kept.
	if !slices.Equal(lists[0], []int{3, 1, 2}) {
		t.Errorf("Add modified its argument: %v", lists[0])
	}
	lists[1][0] = 99

	tab := build(t, b)
	if liveSets(tab) != 2 {
		t.Errorf("Sets in use = %d, want 2", liveSets(tab))
	}
	first, _ := tab.Lookup(netip.MustParseAddr("10.0.0.1"))
	for i := range lists {
		got, ok := tab.Lookup(netip.AddrFrom4([4]byte{10, byte(i), 0, 1}))
		if !ok || !slices.Equal(got, []int{1, 2, 3}) {
			t.Errorf("Set %d = %v, %v; want [1 2 3]", i, got, ok)
		}
		if &got[0] != &first[0] {
			t.Errorf("Set %d is not shared", i)
		}
	}
	// Appending to one result must not reach into another set.
	grown := append(first, 42)
	other, _ := tab.Lookup(netip.MustParseAddr("192.0.2.1"))
	if !slices.Equal(other, []int{5}) || !slices.Equal(grown[:3], []int{1, 2, 3}) {
		t.Errorf("Append to a Lookup result changed the table: %v", other)
	}
}

func TestAddErrors(t *testing.T) {
	b := NewBuilder()
	p := netip.MustParsePrefix("203.0.113.0/24")
	for _, o := range []Origin{{"sources.txt", 7}, {"sources.txt", 2}} {
		if err := b.Add(p, []int{o.Line}, o); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.Build()
	var dup *DuplicateError
	if !errors.As(err, &dup) {
		t.Fatalf("Build with a duplicate returned %v, want a *DuplicateError", err)
	}
	// The first one added is the first, whatever its line.
	if got, want := err.Error(), "203.0.113.0/24: duplicate, first at line 7"; got != want {
		t.Errorf("Duplicate error %q, want %q", got, want)
	}
	if dup.First != (Origin{"sources.txt", 7}) || dup.Dup != (Origin{"sources.txt", 2}) {
		t.Errorf("DuplicateError origins %v, %v", dup.First, dup.Dup)
	}

	// The mapped spelling of the same prefix is the same entry.
	b = NewBuilder()
	if err := b.Add(p, []int{1}, Origin{"sources.txt", 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(netip.MustParsePrefix("::ffff:203.0.113.0/120"), []int{2}, Origin{File: "Corefile", Line: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(); err == nil || err.Error() != "203.0.113.0/24: duplicate, first at sources.txt:2" {
		t.Errorf("Duplicate from another file: %v", err)
	}

	bad := []struct {
		p       netip.Prefix
		relays  []int
		errPart string
	}{
		{netip.Prefix{}, []int{1}, "invalid prefix"},
		{netip.PrefixFrom(netip.MustParseAddr("203.0.113.7"), 24), []int{1}, "did you mean 203.0.113.0/24?"},
		{netip.MustParsePrefix("198.51.100.0/24"), nil, "no relays for 198.51.100.0/24"},
		{netip.MustParsePrefix("198.51.100.0/24"), []int{}, "no relays for 198.51.100.0/24"},
		{netip.MustParsePrefix("198.51.100.0/24"), []int{2, -1}, "negative relay index -1"},
	}
	for _, tc := range bad {
		if err := b.Add(tc.p, tc.relays, Origin{}); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("Add(%v, %v) = %v, want error containing %q", tc.p, tc.relays, err, tc.errPart)
		}
		if err := b.override(tc.p, tc.relays, Origin{}); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("Override(%v, %v) = %v, want error containing %q", tc.p, tc.relays, err, tc.errPart)
		}
	}
	if b.len() != 2 {
		t.Errorf("Failed calls left %d entries, want 2", b.len())
	}
}

func TestOverride(t *testing.T) {
	b := NewBuilder()
	p := netip.MustParsePrefix("203.0.113.0/24")
	if err := b.Add(p, []int{1, 2}, Origin{File: "sources.txt", Line: 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.override(netip.MustParsePrefix("::ffff:203.0.113.0/120"), []int{3}, Origin{File: "Corefile", Line: 5}); err != nil {
		t.Fatalf("Override: %v", err)
	}
	if err := b.override(netip.MustParsePrefix("2001:db8::/32"), []int{4}, Origin{File: "Corefile", Line: 6}); err != nil {
		t.Fatalf("Override of a new prefix: %v", err)
	}
	// An override wins over an entry added after it too, and the last
	// override of a prefix wins.
	if err := b.Add(netip.MustParsePrefix("2001:db8::/32"), []int{9}, Origin{File: "sources.txt", Line: 8}); err != nil {
		t.Fatal(err)
	}
	if err := b.override(p, []int{5}, Origin{File: "Corefile", Line: 7}); err != nil {
		t.Fatal(err)
	}
	if err := b.override(p, []int{3}, Origin{File: "Corefile", Line: 9}); err != nil {
		t.Fatal(err)
	}

	tab := build(t, b)
	if got, ok := tab.Lookup(netip.MustParseAddr("203.0.113.9")); !ok || !slices.Equal(got, []int{3}) {
		t.Errorf("Overridden prefix looks up as %v, %v; want [3]", got, ok)
	}
	if got, ok := tab.Lookup(netip.MustParseAddr("2001:db8::9")); !ok || !slices.Equal(got, []int{4}) {
		t.Errorf("New prefix from Override looks up as %v, %v; want [4]", got, ok)
	}
	// The replaced set {1,2} is no longer referenced and must not be kept.
	if liveSets(tab) != 2 || tab.Len4() != 1 || tab.Len6() != 1 {
		t.Errorf("liveSets %d, Len4 %d, Len6 %d; want 2, 1, 1", liveSets(tab), tab.Len4(), tab.Len6())
	}
}

func TestBuildSnapshots(t *testing.T) {
	b := NewBuilder()
	if err := b.Add(netip.MustParsePrefix("10.0.0.0/8"), []int{1}, Origin{}); err != nil {
		t.Fatal(err)
	}
	first := build(t, b)
	if err := b.Add(netip.MustParsePrefix("10.1.0.0/16"), []int{2}, Origin{}); err != nil {
		t.Fatal(err)
	}
	if err := b.override(netip.MustParsePrefix("10.0.0.0/8"), []int{3}, Origin{}); err != nil {
		t.Fatal(err)
	}
	second := build(t, b)
	if got, _ := first.Lookup(netip.MustParseAddr("10.1.0.1")); !slices.Equal(got, []int{1}) || first.Len4() != 1 {
		t.Errorf("Building again changed an earlier table: %v, Len4 %d", got, first.Len4())
	}
	if got, _ := second.Lookup(netip.MustParseAddr("10.2.0.1")); !slices.Equal(got, []int{3}) {
		t.Errorf("Second table: %v, want [3]", got)
	}
}

// len returns the number of entries added so far, duplicates and overrides
// included.
func (b *Builder) len() int { return len(b.entries) + len(b.overrides) }
