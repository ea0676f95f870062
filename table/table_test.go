package table

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustBuild(t testing.TB, entries map[string][]int) *Table {
	t.Helper()
	b := NewBuilder()
	line := 0
	for p, rs := range entries {
		line++
		pfx, err := ParsePrefix(p)
		if err != nil {
			t.Fatalf("ParsePrefix(%q): %v", p, err)
		}
		if err := b.Add(pfx, rs, Origin{File: "test", Line: line}); err != nil {
			t.Fatalf("Add(%s): %v", p, err)
		}
	}
	return build(t, b)
}

func build(t testing.TB, b *Builder) *Table {
	t.Helper()
	tab, err := b.Build()
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return tab
}

func TestLookup(t *testing.T) {
	tab := mustBuild(t, map[string][]int{
		"0.0.0.0/0":         {0},
		"10.0.0.0/8":        {1},
		"10.1.0.0/16":       {2},
		"10.1.2.0/24":       {3},
		"10.1.2.3/32":       {4},
		"10.1.2.4/31":       {5},
		"::/0":              {10},
		"2001:db8::/32":     {11},
		"2001:db8:1::/48":   {12},
		"2001:db8:1::1/128": {13},
		"2001:db8:2::/47":   {14},
	})
	tests := []struct {
		addr string
		want []int // nil: no match
	}{
		{"192.0.2.1", []int{0}},
		{"0.0.0.0", []int{0}},
		{"255.255.255.255", []int{0}},
		{"10.255.0.1", []int{1}},
		{"10.1.255.1", []int{2}},
		{"10.1.2.2", []int{3}},
		{"10.1.2.3", []int{4}},
		{"10.1.2.4", []int{5}},
		{"10.1.2.5", []int{5}},
		{"10.1.2.6", []int{3}},
		{"2001:db9::1", []int{10}},
		{"::", []int{10}},
		{"2001:db8:ffff::1", []int{11}},
		{"2001:db8:1::2", []int{12}},
		{"2001:db8:1::1", []int{13}},
		{"2001:db8:3::1", []int{14}},
		{"2001:db8:4::1", []int{11}},
		// Zones do not keep an address from matching.
		{"2001:db8:1::1%eth0", []int{13}},
		// Mapped addresses use the IPv4 entries, not ::/0.
		{"::ffff:10.1.2.3", []int{4}},
		{"::ffff:192.0.2.1", []int{0}},
	}
	for _, tc := range tests {
		got, ok := tab.Lookup(netip.MustParseAddr(tc.addr))
		if !ok || !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%s) = %v, %v; want %v", tc.addr, got, ok, tc.want)
		}
	}
	if got, ok := tab.Lookup(netip.Addr{}); ok {
		t.Errorf("Lookup(zero Addr) = %v, true; want no match", got)
	}
	if tab.Len4() != 6 || tab.Len6() != 5 {
		t.Errorf("Len4, Len6 = %d, %d; want 6, 5", tab.Len4(), tab.Len6())
	}
}

func TestLookupFamiliesSeparate(t *testing.T) {
	v4only := mustBuild(t, map[string][]int{"0.0.0.0/0": {1}})
	if _, ok := v4only.Lookup(netip.MustParseAddr("2001:db8::1")); ok {
		t.Errorf("IPv6 address matched an IPv4 default route")
	}
	v6only := mustBuild(t, map[string][]int{"::/0": {1}})
	for _, a := range []string{"192.0.2.1", "::ffff:192.0.2.1"} {
		if _, ok := v6only.Lookup(netip.MustParseAddr(a)); ok {
			t.Errorf("Lookup(%s) matched an IPv6 default route", a)
		}
	}
	// A mapped prefix lands in the IPv4 table.
	mapped := mustBuild(t, map[string][]int{"::ffff:192.0.2.0/120": {7}})
	if mapped.Len4() != 1 || mapped.Len6() != 0 {
		t.Errorf("Mapped prefix counted as Len4 %d, Len6 %d; want 1, 0", mapped.Len4(), mapped.Len6())
	}
	for _, a := range []string{"192.0.2.9", "::ffff:192.0.2.9"} {
		if got, ok := mapped.Lookup(netip.MustParseAddr(a)); !ok || !slices.Equal(got, []int{7}) {
			t.Errorf("Lookup(%s) = %v, %v; want [7]", a, got, ok)
		}
	}
}

func TestEmptyTables(t *testing.T) {
	var nilTable *Table
	for _, tab := range []*Table{nilTable, {}, build(t, NewBuilder())} {
		if _, ok := tab.Lookup(netip.MustParseAddr("192.0.2.1")); ok {
			t.Errorf("Empty table matched")
		}
		if tab.Len4() != 0 || tab.Len6() != 0 || liveSets(tab) != 0 {
			t.Errorf("Empty table has Len4 %d, Len6 %d, liveSets %d", tab.Len4(), tab.Len6(), liveSets(tab))
		}
	}
}

func TestOriginString(t *testing.T) {
	tests := []struct {
		o    Origin
		want string
	}{
		{Origin{"sources.txt", 12}, "sources.txt:12"},
		{Origin{"sources.txt", 0}, "sources.txt"},
		{Origin{"", 3}, "line 3"},
		{Origin{}, "unknown origin"},
	}
	for _, tc := range tests {
		if got := tc.o.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.o, got, tc.want)
		}
	}
}

func TestLookupAllocs(t *testing.T) {
	tab := mustBuild(t, map[string][]int{
		"0.0.0.0/0": {0}, "10.0.0.0/8": {1, 2}, "10.1.2.3": {3},
		"::/0": {4}, "2001:db8::/32": {5}, "2001:db8::1": {6},
	})
	for _, a := range []string{"10.1.2.3", "10.9.9.9", "192.0.2.1", "2001:db8::1", "2001:db8::2", "3fff::1", "::ffff:10.1.2.3", "fe80::1%eth0"} {
		addr := netip.MustParseAddr(a)
		if n := testing.AllocsPerRun(100, func() { _, _ = tab.Lookup(addr) }); n != 0 {
			t.Errorf("Lookup(%s) allocated %v times per run, want 0", a, n)
		}
	}
}

// TestConcurrentLookup runs readers against a table pointer that a writer
// keeps replacing, the way the plugin reloads. Under -race it proves that a
// published Table needs no locking; the check inside proves that a reader
// sees one consistent table per load.
func TestConcurrentLookup(t *testing.T) {
	build := func(gen int) *Table {
		b := NewBuilder()
		for i := 0; i < 64; i++ {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
			if err := b.Add(p, []int{gen, gen + i}, Origin{}); err != nil {
				t.Error(err)
			}
		}
		if err := b.Add(netip.MustParsePrefix("2001:db8::/32"), []int{gen}, Origin{}); err != nil {
			t.Error(err)
		}
		return build(t, b)
	}
	var cur atomic.Pointer[Table]
	cur.Store(build(0))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				tab := cur.Load()
				v6, ok6 := tab.Lookup(netip.MustParseAddr("2001:db8::1"))
				i := n % 64
				v4, ok4 := tab.Lookup(netip.AddrFrom4([4]byte{10, byte(i), 1, 1}))
				if !ok6 || !ok4 || len(v6) != 1 || len(v4) == 0 || v4[0] != v6[0] {
					t.Errorf("Inconsistent table: v6 %v, v4 %v", v6, v4)
					return
				}
			}
		}()
	}
	for gen := 1; gen <= 50; gen++ {
		cur.Store(build(gen))
	}
	close(stop)
	wg.Wait()
}

// contents lists a table as "PREFIX [RELAYS]" lines in bart's order, the
// relay sets spelled out, so that tables with different set numbering
// compare equal when they answer alike.
func contents(tab *Table) []string {
	var out []string
	for p, id := range tab.trie.AllSorted() {
		out = append(out, fmt.Sprint(p, tab.sets[id]))
	}
	return out
}

// liveSets returns the number of distinct relay sets the prefixes refer to:
// tables that answer alike must agree on it, however they were built.
func liveSets(t *Table) int {
	if t == nil {
		return 0
	}
	return setsInUse(t.refs)
}
