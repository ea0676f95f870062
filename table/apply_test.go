package table

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/internal/cputime"
)

// refModel is what a table should hold, as a plain map.
type refModel map[netip.Prefix][]int

func (m refModel) apply(changes []Change) {
	for _, c := range changes {
		p, ok := normalizeRoute(c.Prefix)
		if !ok {
			continue
		}
		rs := slices.DeleteFunc(slices.Clone(c.Relays), func(r int) bool { return r < 0 })
		slices.Sort(rs)
		rs = slices.Compact(rs)
		if c.Delete || len(rs) == 0 {
			delete(m, p)
		} else {
			m[p] = rs
		}
	}
}

func (m refModel) lines() []string {
	var out []string
	for _, p := range slices.SortedFunc(maps.Keys(m), comparePrefix) {
		out = append(out, fmt.Sprint(p, m[p]))
	}
	return out
}

// comparePrefix sorts the way bart's AllSorted does: IPv4 first, then by
// address, then shorter first.
func comparePrefix(a, b netip.Prefix) int {
	if a.Addr().Is4() != b.Addr().Is4() {
		if a.Addr().Is4() {
			return -1
		}
		return 1
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// checkSets verifies the bookkeeping Apply keeps besides the trie: every
// prefix's set exists, and refs counts exactly the prefixes of each set.
func checkSets(t *testing.T, tab *Table) {
	t.Helper()
	if tab.trie == nil {
		return
	}
	count := make([]uint32, len(tab.sets))
	for p, id := range tab.trie.All() {
		if int(id) >= len(tab.sets) {
			t.Fatalf("%s refers to set %d of %d", p, id, len(tab.sets))
		}
		count[id]++
	}
	if !slices.Equal(count, tab.refs) {
		t.Fatalf("Reference counts %v, want %v", tab.refs, count)
	}
	if len(tab.refs) != len(tab.sets) {
		t.Fatalf("%d reference counts for %d sets", len(tab.refs), len(tab.sets))
	}
}

// randomChanges draws changes over a small space of prefixes, so that
// updates and deletes hit existing ones, in every spelling Apply accepts.
func randomChanges(r *rand.Rand, n int) []Change {
	out := make([]Change, n)
	for i := range out {
		var p netip.Prefix
		switch r.IntN(8) {
		case 0:
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4)), byte(r.IntN(4))}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 32+r.IntN(17))
		case 1:
			// IPv4-mapped, filed under IPv4.
			a := netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), 0})
			p = netip.PrefixFrom(netip.AddrFrom16(a.As16()), 96+8+r.IntN(17))
		case 2:
			// Host bits set, masked.
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), 7}), 8+r.IntN(17))
		default:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), 0}), 8+r.IntN(17)).Masked()
		}
		c := Change{Prefix: p}
		switch r.IntN(10) {
		case 0, 1, 2:
			c.Delete = true
		case 3:
			c.Relays = []int{-1} // no relay left: a delete
		default:
			c.Relays = []int{r.IntN(5), r.IntN(5)}
		}
		out[i] = c
	}
	return out
}

func TestApplyRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	// A background of prefixes the changes never touch makes batches of a
	// few changes take the copy-on-write path and big ones the clone.
	var background []Change
	for i := 0; i < 1024; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>8), byte(i), 0}), 24)
		background = append(background, Change{Prefix: p, Relays: []int{i % 7}})
	}
	for round := 0; round < 20; round++ {
		var tab *Table
		model := refModel{}
		if round%2 == 1 {
			tab = tab.Apply(background)
			model.apply(background)
		}
		var history []*Table
		var historyLines [][]string
		for step := 0; step < 30; step++ {
			n := 1 + r.IntN(3)
			if r.IntN(4) == 0 {
				n = 50 + r.IntN(200)
			}
			changes := randomChanges(r, n)
			next := tab.Apply(changes)
			model.apply(changes)
			if got, want := contents(next), model.lines(); !slices.Equal(got, want) {
				t.Fatalf("Round %d step %d: got\n%v\nwant\n%v", round, step, got, want)
			}
			checkSets(t, next)
			n4, n6 := 0, 0
			for p := range model {
				if p.Addr().Is4() {
					n4++
				} else {
					n6++
				}
			}
			if next.Len4() != n4 || next.Len6() != n6 {
				t.Fatalf("Round %d step %d: Len4 %d Len6 %d, want %d %d", round, step, next.Len4(), next.Len6(), n4, n6)
			}
			history = append(history, next)
			historyLines = append(historyLines, contents(next))
			tab = next
		}
		// No Apply changed a table made before it.
		for i, h := range history {
			if !slices.Equal(contents(h), historyLines[i]) {
				t.Fatalf("Round %d: table %d changed after later Applies", round, i)
			}
			checkSets(t, h)
		}
	}
}

func TestApplyNormalizes(t *testing.T) {
	tab := (*Table)(nil).Apply([]Change{
		{Prefix: netip.MustParsePrefix("::ffff:198.51.100.0/120"), Relays: []int{1}},
		{Prefix: netip.MustParsePrefix("203.0.113.7/24"), Relays: []int{2, 2, 0}},
		{Prefix: netip.Prefix{}, Relays: []int{3}},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Relays: []int{-4}},
		{Prefix: netip.MustParsePrefix("2001:db8::/32")},
	})
	want := []string{"198.51.100.0/24 [1]", "203.0.113.0/24 [0 2]"}
	if got := contents(tab); !slices.Equal(got, want) {
		t.Errorf("Got %v, want %v", got, want)
	}
	// The same prefix spelled the other way is the same entry.
	tab = tab.Apply([]Change{{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Delete: true}})
	if got := contents(tab); !slices.Equal(got, want[1:]) {
		t.Errorf("After delete: got %v, want %v", got, want[1:])
	}
	if empty := (*Table)(nil).Apply(nil); empty == nil || empty.Len4()+empty.Len6() != 0 {
		t.Errorf("Apply of nothing to nil: %v", empty)
	}
}

func TestApplySharesAndCompacts(t *testing.T) {
	var changes []Change
	for i := 0; i < 4096; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		changes = append(changes, Change{Prefix: p, Relays: []int{i % 3}})
	}
	base := (*Table)(nil).Apply(changes)
	if same := base.Apply(nil); same != base {
		t.Errorf("No change, yet a new table")
	}
	// A change to the same relays is no change to the trie.
	if same := base.Apply(changes[:3]); same.trie != base.trie {
		t.Errorf("Unchanged routes made a new trie")
	}
	// Every prefix to new sets, one after the other, many times: sets of the
	// past are dropped instead of piling up.
	tab := base
	for round := 0; round < 50; round++ {
		for i := range changes {
			changes[i].Relays = []int{100 + round, i % 5}
		}
		tab = tab.Apply(changes)
		checkSets(t, tab)
	}
	if len(tab.sets) > 2*liveSets(tab)+16 {
		t.Errorf("%d sets kept for %d in use", len(tab.sets), liveSets(tab))
	}
	if got, want := len(contents(base)), 4096; got != want {
		t.Errorf("Base table has %d prefixes, want %d", got, want)
	}
}

// TestApplyConcurrentReaders publishes each Apply through an atomic pointer
// while readers look up the previous tables, under -race: readers need no
// lock, and the tables they hold never change under them.
func TestApplyConcurrentReaders(t *testing.T) {
	var cur atomic.Pointer[Table]
	p := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
	}
	var first []Change
	for i := 0; i < 64; i++ {
		first = append(first, Change{Prefix: p(i), Relays: []int{0, i}})
	}
	// Unrelated prefixes, so that one change is applied copy-on-write
	// and 64 on a clone.
	for i := 0; i < 1000; i++ {
		first = append(first, Change{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>8), byte(i), 0}), 24), Relays: []int{1}})
	}
	cur.Store((*Table)(nil).Apply(first))

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
				i := n % 64
				rs, ok := tab.Lookup(netip.AddrFrom4([4]byte{10, byte(i), 1, 1}))
				pfx, rs2, ok2 := tab.LookupPrefix(netip.AddrFrom4([4]byte{10, byte(i), 1, 1}))
				// Every generation g maps every prefix i to {g, g+i}.
				if !ok || !ok2 || pfx != p(i) || !slices.Equal(rs, rs2) || len(rs) == 0 || rs[len(rs)-1] != rs[0]+i {
					t.Errorf("Inconsistent table: %v %v %v", rs, pfx, rs2)
					return
				}
			}
		}()
	}
	for gen := 1; gen <= 200; gen++ {
		var changes []Change
		for i := 0; i < 64; i++ {
			changes = append(changes, Change{Prefix: p(i), Relays: []int{gen, gen + i}})
		}
		// Alternate the in-place and the copy-on-write paths.
		if gen%2 == 0 {
			cur.Store(cur.Load().Apply(changes))
		} else {
			tab := cur.Load()
			for _, c := range changes {
				tab = tab.Apply([]Change{c})
			}
			cur.Store(tab)
		}
	}
	close(stop)
	wg.Wait()
}

func TestLookupPrefix(t *testing.T) {
	tab := mustBuild(t, map[string][]int{
		"0.0.0.0/0": {0}, "10.0.0.0/8": {1, 2}, "10.1.2.3": {3},
		"2001:db8::/32": {5}, "2001:db8::1": {6},
	})
	for _, tc := range []struct {
		addr, prefix string
	}{
		{"10.1.2.3", "10.1.2.3/32"},
		{"10.9.9.9", "10.0.0.0/8"},
		{"192.0.2.1", "0.0.0.0/0"},
		{"::ffff:10.1.2.3", "10.1.2.3/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::2", "2001:db8::/32"},
		{"fe80::1%eth0", ""},
		{"2001:db8::2%eth0", "2001:db8::/32"},
	} {
		addr := netip.MustParseAddr(tc.addr)
		p, rs, ok := tab.LookupPrefix(addr)
		want, wantOK := tab.Lookup(addr)
		if ok != wantOK || !slices.Equal(rs, want) {
			t.Errorf("LookupPrefix(%s) = %v %v, Lookup = %v %v", tc.addr, rs, ok, want, wantOK)
		}
		if ok && p.String() != tc.prefix || !ok && tc.prefix != "" {
			t.Errorf("LookupPrefix(%s) matched %v (%v), want %q", tc.addr, p, ok, tc.prefix)
		}
		if n := testing.AllocsPerRun(100, func() { _, _, _ = tab.LookupPrefix(addr) }); n != 0 {
			t.Errorf("LookupPrefix(%s) allocated %v times per run", tc.addr, n)
		}
	}
	var nilTab *Table
	if _, _, ok := nilTab.LookupPrefix(netip.MustParseAddr("10.0.0.1")); ok {
		t.Errorf("Nil table matched")
	}
	if _, _, ok := tab.LookupPrefix(netip.Addr{}); ok {
		t.Errorf("Invalid address matched")
	}
}

// BenchmarkLookupPrefix compares LookupPrefix with Lookup on the big tables.
func BenchmarkLookupPrefix(b *testing.B) {
	e4, e6 := bigData()
	t4, t6 := bigTables()
	const n = 1 << 16
	for _, c := range []struct {
		name  string
		tab   *Table
		addrs []netip.Addr
	}{
		{"v4_1M/hit", t4, hitAddrs(e4, n, 3)},
		{"v6_1M/hit", t6, hitAddrs(e6, n, 5)},
	} {
		b.Run(c.name+"/Lookup", func(b *testing.B) {
			loopTimed(b, func(i int) { c.tab.Lookup(c.addrs[i&(n-1)]) })
		})
		b.Run(c.name+"/LookupPrefix", func(b *testing.B) {
			loopTimed(b, func(i int) { c.tab.LookupPrefix(c.addrs[i&(n-1)]) })
		})
	}
}

// BenchmarkApplyCrossover applies k changed routes to a 1M-prefix IPv4
// table both ways, copy-on-write and clone + in place, to place
// freshShare. It reports CPU time per Apply.
func BenchmarkApplyCrossover(b *testing.B) {
	t4, _ := bigTables()
	e4, _ := bigData()
	sets := relaySets()
	for _, k := range []int{1_000, 2_000, 4_000, 8_000, 16_000, 60_000} {
		changes := make([]Change, k)
		for i := range changes {
			e := e4[i*len(e4)/k]
			changes[i] = Change{Prefix: e.prefix(), Relays: sets[(int(e.set)+1)%numSets]}
		}
		for _, mode := range []string{"persist", "clone"} {
			b.Run(fmt.Sprintf("k=%d/%s", k, mode), func(b *testing.B) {
				var cpu time.Duration
				for b.Loop() {
					c0 := cputime.Process()
					a := newApplier(t4)
					trie := t4.trie
					if mode == "clone" {
						trie = trie.Clone()
					}
					for _, c := range changes {
						p, _ := normalizeRoute(c.Prefix)
						if mode == "clone" {
							a.set(trie, p, a.intern(c.Relays), false)
						} else {
							trie = a.set(trie, p, a.intern(c.Relays), true)
						}
					}
					cpu += cputime.Process() - c0
				}
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			})
		}
	}
}

func TestHasAndCommon(t *testing.T) {
	a := (*Table)(nil).Apply([]Change{
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Relays: []int{0}},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Relays: []int{1}},
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Relays: []int{0}},
	})
	b := (*Table)(nil).Apply([]Change{
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Relays: []int{2}},
		{Prefix: netip.MustParsePrefix("198.51.0.0/16"), Relays: []int{2}},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Relays: []int{2}},
	})
	for _, tc := range []struct {
		p    string
		want bool
	}{
		{"198.51.100.0/24", true},
		{"198.51.100.7/24", true}, // masked, as routes are
		{"::ffff:198.51.100.0/120", true},
		{"198.51.100.128/25", false}, // covered, not present
		{"198.51.0.0/16", false},
		{"2001:db8::/32", true},
	} {
		if got := a.Has(netip.MustParsePrefix(tc.p)); got != tc.want {
			t.Errorf("Has(%s) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if (*Table)(nil).Has(netip.MustParsePrefix("0.0.0.0/0")) {
		t.Error("An empty table has a prefix")
	}
	if n := Common(a, b); n != 2 {
		t.Errorf("Common = %d, want 2", n)
	}
	if n := Common(b, a); n != 2 {
		t.Errorf("Common, the other way = %d, want 2", n)
	}
	if n := Common(a, nil); n != 0 {
		t.Errorf("Common with nil = %d", n)
	}
}
