package table

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
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

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		in      string
		want    string // empty: error expected
		errPart string
	}{
		{in: "203.0.113.0/24", want: "203.0.113.0/24"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "::/0", want: "::/0"},
		{in: "203.0.113.7", want: "203.0.113.7/32"},
		{in: "203.0.113.7/32", want: "203.0.113.7/32"},
		{in: "2001:db8::", want: "2001:db8::/128"},
		{in: "2001:DB8::/32", want: "2001:db8::/32"},
		{in: "2001:db8::1/128", want: "2001:db8::1/128"},

		// Mapped prefixes are filed under IPv4.
		{in: "::ffff:0:0/96", want: "0.0.0.0/0"},
		{in: "::ffff:198.51.100.0/120", want: "198.51.100.0/24"},
		{in: "::ffff:198.51.100.7", want: "198.51.100.7/32"},
		{in: "::ffff:198.51.100.7/128", want: "198.51.100.7/32"},
		{in: "::fffe:0:0/95", want: "::fffe:0:0/95"},
		{in: "::/64", want: "::/64"},

		{in: "203.0.113.7/24", errPart: "203.0.113.7/24 has host bits set; did you mean 203.0.113.0/24?"},
		{in: "2001:db8::1/64", errPart: "did you mean 2001:db8::/64?"},
		{in: "::ffff:198.51.100.7/120", errPart: "did you mean ::ffff:198.51.100.0/120?"},
		{in: "fe80::1%eth0", errPart: "zones are not allowed"},
		{in: "fe80::%eth0/64", errPart: "zones cannot be present"},
		{in: "10.0.0.0/33", errPart: "prefix length out of range"},
		{in: "10.0.0.0/", errPart: "bad bits"},
		{in: "10.0.0.0/08", errPart: "bad bits"},
		{in: "/8", errPart: "unable to parse IP"},
		{in: "198.51.10", errPart: "IPv4 address too short"},
		{in: "010.0.0.0/8", errPart: "leading zero"},
		{in: "r1", errPart: "unable to parse IP"},
		{in: "", errPart: "empty prefix"},
	}
	for _, tc := range tests {
		got, err := ParsePrefix(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParsePrefix(%q) = %v, want error containing %q", tc.in, got, tc.errPart)
			} else if !strings.Contains(err.Error(), tc.errPart) {
				t.Errorf("ParsePrefix(%q) error %q, want it to contain %q", tc.in, err, tc.errPart)
			} else if strings.Contains(err.Error(), "netip.") || strings.Contains(err.Error(), "ParseAddr(") {
				t.Errorf("ParsePrefix(%q) error %q still names netip internals", tc.in, err)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
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
		if tab.Len4() != 0 || tab.Len6() != 0 || tab.NumSets() != 0 {
			t.Errorf("Empty table has Len4 %d, Len6 %d, NumSets %d", tab.Len4(), tab.Len6(), tab.NumSets())
		}
	}
}

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
	if tab.NumSets() != 2 {
		t.Errorf("NumSets = %d, want 2", tab.NumSets())
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
		if err := b.Override(tc.p, tc.relays, Origin{}); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("Override(%v, %v) = %v, want error containing %q", tc.p, tc.relays, err, tc.errPart)
		}
	}
	if b.Len() != 2 {
		t.Errorf("Failed calls left %d entries, want 2", b.Len())
	}
}

func TestOverride(t *testing.T) {
	b := NewBuilder()
	p := netip.MustParsePrefix("203.0.113.0/24")
	if err := b.Add(p, []int{1, 2}, Origin{File: "sources.txt", Line: 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Override(netip.MustParsePrefix("::ffff:203.0.113.0/120"), []int{3}, Origin{File: "Corefile", Line: 5}); err != nil {
		t.Fatalf("Override: %v", err)
	}
	if err := b.Override(netip.MustParsePrefix("2001:db8::/32"), []int{4}, Origin{File: "Corefile", Line: 6}); err != nil {
		t.Fatalf("Override of a new prefix: %v", err)
	}
	// An override wins over an entry added after it too, and the last
	// override of a prefix wins.
	if err := b.Add(netip.MustParsePrefix("2001:db8::/32"), []int{9}, Origin{File: "sources.txt", Line: 8}); err != nil {
		t.Fatal(err)
	}
	if err := b.Override(p, []int{5}, Origin{File: "Corefile", Line: 7}); err != nil {
		t.Fatal(err)
	}
	if err := b.Override(p, []int{3}, Origin{File: "Corefile", Line: 9}); err != nil {
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
	if tab.NumSets() != 2 || tab.Len4() != 1 || tab.Len6() != 1 {
		t.Errorf("NumSets %d, Len4 %d, Len6 %d; want 2, 1, 1", tab.NumSets(), tab.Len4(), tab.Len6())
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
	if err := b.Override(netip.MustParsePrefix("10.0.0.0/8"), []int{3}, Origin{}); err != nil {
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
			if err := b.Override(p, rs, Origin{}); err != nil {
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
			t.Fatalf("Round %d: BuildFrom gave\n%v\nwant\n%v", round, contents(got), contents(want))
		}
		viaBuildFrom, err := builder(next, inline).BuildFrom(prev)
		if err != nil || !slices.Equal(contents(viaBuildFrom), contents(want)) {
			t.Fatalf("Round %d: BuildFrom gave %v, %v; want %v", round, contents(viaBuildFrom), err, contents(want))
		}
		if got.Len4() != want.Len4() || got.Len6() != want.Len6() || got.NumSets() != want.NumSets() {
			t.Fatalf("Round %d: Len4 %d, Len6 %d, NumSets %d; want %d, %d, %d", round,
				got.Len4(), got.Len6(), got.NumSets(), want.Len4(), want.Len6(), want.NumSets())
		}
		if !slices.Equal(contents(prev), before) {
			t.Fatalf("Round %d: BuildFrom changed the previous table", round)
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
