package table

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/internal/cputime"
	"github.com/gaissmai/bart"
)

// The benchmarks work at the scale the project targets: a million IPv4
// prefixes, a million IPv6 prefixes, and a 1M + 200k line sources file.
const (
	bigV4   = 1_000_000
	bigV6   = 1_000_000
	fileV4  = 1_000_000
	fileV6  = 200_000
	numSets = 16 // distinct relay sets across a big table
)

// v4Len draws a prefix length shaped like real routing tables: mostly
// /16-/24 with /24 the single most common, a few short and host routes.
func v4Len(r *rand.Rand) int {
	switch x := r.IntN(100); {
	case x < 1:
		return 8 + r.IntN(8) // /8-/15
	case x < 45:
		return 24
	case x < 90:
		return 16 + r.IntN(8) // /16-/23
	default:
		return 25 + r.IntN(8) // /25-/32
	}
}

// v6Len: /19-/64, mostly /32, /48 and the lengths between.
func v6Len(r *rand.Rand) int {
	switch x := r.IntN(100); {
	case x < 5:
		return 19 + r.IntN(13) // /19-/31
	case x < 20:
		return 32
	case x < 60:
		return 48
	case x < 85:
		return 33 + r.IntN(15) // /33-/47
	default:
		return 49 + r.IntN(16) // /49-/64
	}
}

// genEntry is pointer-free (a netip.Prefix is not), so that the millions
// of them the benchmarks keep alive cost the garbage collector nothing and
// do not slow down what is being measured.
type genEntry struct {
	addr [16]byte
	bits uint8
	is4  bool
	set  uint8
}

func (e genEntry) prefix() netip.Prefix {
	a := netip.AddrFrom16(e.addr)
	if e.is4 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, int(e.bits))
}

func entryOf(p netip.Prefix, set int) genEntry {
	return genEntry{addr: p.Addr().As16(), bits: uint8(p.Bits()), is4: p.Addr().Is4(), set: uint8(set)}
}

// genPrefixes returns n distinct random prefixes of one family with a relay
// set number each, reproducibly.
func genPrefixes(n int, v6 bool, seed uint64) []genEntry {
	r := rand.New(rand.NewPCG(seed, 42))
	seen := make(map[netip.Prefix]struct{}, n)
	out := make([]genEntry, 0, n)
	for len(out) < n {
		var p netip.Prefix
		if v6 {
			var a [16]byte
			hi, lo := r.Uint64(), r.Uint64()
			for i := 0; i < 8; i++ {
				a[i], a[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
			}
			a[0] = 0x20 | a[0]&0x1f // global unicast, 2000::/3
			p = netip.PrefixFrom(netip.AddrFrom16(a), v6Len(r)).Masked()
		} else {
			var a [4]byte
			u := r.Uint32()
			a[0], a[1], a[2], a[3] = byte(u>>24), byte(u>>16), byte(u>>8), byte(u)
			p = netip.PrefixFrom(netip.AddrFrom4(a), v4Len(r)).Masked()
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		out = append(out, entryOf(p, r.IntN(numSets)))
	}
	return out
}

// relaySets are numSets small relay lists over 8 relays.
func relaySets() [][]int {
	sets := make([][]int, numSets)
	for i := range sets {
		sets[i] = []int{i % 8, (i + 3) % 8, (i/8 + 5) % 8}
	}
	return sets
}

// hitAddrs returns addresses inside random entries (so lookups go deep)
// and randAddrs addresses drawn uniformly from the same space.
func hitAddrs(entries []genEntry, n int, seed uint64) []netip.Addr {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]netip.Addr, n)
	for i := range out {
		p := entries[r.IntN(len(entries))].prefix()
		a := p.Addr().As16()
		start := 0
		if p.Addr().Is4() {
			start = 12
		}
		// Randomize the host bits.
		for bit := p.Bits(); bit < p.Addr().BitLen(); bit++ {
			if r.IntN(2) == 1 {
				a[start+bit/8] |= 0x80 >> (bit % 8)
			}
		}
		addr := netip.AddrFrom16(a)
		if p.Addr().Is4() {
			addr = addr.Unmap()
		}
		out[i] = addr
	}
	return out
}

func repeatAddrs(a []netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = a[i%len(a)]
	}
	return out
}

func randAddrs(v6 bool, n int, seed uint64) []netip.Addr {
	r := rand.New(rand.NewPCG(seed, 9))
	out := make([]netip.Addr, n)
	for i := range out {
		if v6 {
			var a [16]byte
			hi := r.Uint64()
			for j := 0; j < 8; j++ {
				a[j] = byte(hi >> (56 - 8*j))
			}
			a[0] = 0x20 | a[0]&0x1f
			out[i] = netip.AddrFrom16(a)
		} else {
			u := r.Uint32()
			out[i] = netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
		}
	}
	return out
}

var bigData = sync.OnceValues(func() (v4, v6 []genEntry) {
	return genPrefixes(bigV4, false, 1), genPrefixes(bigV6, true, 2)
})

// sortedData is bigData in address order, the order of a routing table
// dump and of most generated sources files. The trie fills much faster in
// this order, because consecutive inserts touch the same nodes.
var sortedData = sync.OnceValues(func() (v4, v6 []genEntry) {
	e4, e6 := bigData()
	return sortEntries(e4), sortEntries(e6)
})

func sortEntries(in []genEntry) []genEntry {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b genEntry) int {
		if c := bytes.Compare(a.addr[:], b.addr[:]); c != 0 {
			return c
		}
		return int(a.bits) - int(b.bits)
	})
	return out
}

func buildGen(tb testing.TB, entries []genEntry) *Table {
	b := NewBuilder()
	sets := relaySets()
	for i, e := range entries {
		if err := b.Add(e.prefix(), sets[e.set], Origin{File: "gen", Line: i + 1}); err != nil {
			tb.Fatal(err)
		}
	}
	t, err := b.Build()
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

var bigTables = sync.OnceValues(func() (v4, v6 *Table) {
	e4, e6 := sortedData()
	return buildGen(nil, e4), buildGen(nil, e6)
})

func BenchmarkLookup(b *testing.B) {
	e4, e6 := bigData()
	t4, t6 := bigTables()
	const n = 1 << 16
	cases := []struct {
		name  string
		tab   *Table
		addrs []netip.Addr
	}{
		// Hot: 256 sources asked again and again, so the trie paths stay
		// in cache; the cost of the code rather than of memory latency.
		{"v4_1M/hot", t4, repeatAddrs(hitAddrs(e4, 256, 8), n)},
		{"v4_1M/hit", t4, hitAddrs(e4, n, 3)},
		{"v4_1M/random", t4, randAddrs(false, n, 4)},
		{"v6_1M/hot", t6, repeatAddrs(hitAddrs(e6, 256, 9), n)},
		{"v6_1M/hit", t6, hitAddrs(e6, n, 5)},
		{"v6_1M/random", t6, randAddrs(true, n, 6)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			hits := 0
			loopTimed(b, func(i int) {
				if _, ok := c.tab.Lookup(c.addrs[i&(n-1)]); ok {
					hits++
				}
			})
			b.ReportMetric(float64(hits)/float64(b.N)*100, "%hit")
		})
	}
}

// loopTimed runs op(i) for i = 0..b.N-1 in batches and reports, besides
// the usual wall-clock ns/op, "cpu-ns/op" (process CPU time) and
// "best-ns/op" (the fastest batch). On a busy machine where the benchmark
// waits for a CPU most of the time, the latter two are the figures that
// describe the code.
func loopTimed(b *testing.B, op func(i int)) {
	const batch = 1024
	best := time.Duration(math.MaxInt64)
	b.ResetTimer()
	cpu0 := cputime.Process()
	for i := 0; i < b.N; i += batch {
		k := min(batch, b.N-i)
		t0 := time.Now()
		for j := 0; j < k; j++ {
			op(i + j)
		}
		if d := time.Since(t0); k == batch && d < best {
			best = d
		}
	}
	cpu := cputime.Process() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	if best != time.Duration(math.MaxInt64) {
		b.ReportMetric(float64(best.Nanoseconds())/batch, "best-ns/op")
	}
}

// heapAfterGC returns the live heap, settled.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkBuild1M times NewBuilder + 1M Add + Build from a prepared slice,
// in address order and in random order, and reports the heap the finished
// Table keeps per prefix (the Builder is garbage by then).
func BenchmarkBuild1M(b *testing.B) {
	s4, s6 := sortedData()
	r4, r6 := bigData()
	cases := []struct {
		name    string
		entries []genEntry
	}{
		{"v4/sorted", s4}, {"v4/random", r4}, {"v6/sorted", s6}, {"v6/random", r6},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var perPrefix float64
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				before := heapAfterGC()
				c0 := cputime.Process()
				b.StartTimer()
				t := buildGen(b, c.entries)
				b.StopTimer()
				cpu += cputime.Process() - c0
				perPrefix = float64(heapAfterGC()-before) / float64(len(c.entries))
				runtime.KeepAlive(t)
				b.StartTimer()
			}
			b.ReportMetric(perPrefix, "B/prefix")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// writeSourcesFile writes the 1M IPv4 + 200k IPv6 line file the load
// target refers to, in the shape a generator would produce. changed lines,
// spread evenly over the file, get another relay set: the next version of
// the file, for a reload.
func writeSourcesFile(tb testing.TB, dir string, sorted bool, changed int) (string, map[string]int) {
	e4, e6 := sortedData()
	if !sorted {
		e4, e6 = bigData()
	}
	path := filepath.Join(dir, fmt.Sprintf("sources-%d.txt", changed))
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	names := make([]string, numSets)
	for i, s := range relaySets() {
		names[i] = fmt.Sprintf("relay%d relay%d relay%d", s[0], s[1], s[2])
	}
	fmt.Fprintln(w, "# generated benchmark sources file")
	every := math.MaxInt
	if changed > 0 {
		every = (fileV4 + fileV6) / changed
	}
	for i, e := range slices.Concat(e4[:fileV4], e6[:fileV6]) {
		set := e.set
		if i%every == every-1 {
			set = (set + 1) % numSets
		}
		fmt.Fprintf(w, "%s %s\n", e.prefix(), names[set])
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	relays := make(map[string]int)
	for i := 0; i < 8; i++ {
		relays["relay"+strconv.Itoa(i)] = i
	}
	return path, relays
}

// BenchmarkParseFile loads the generated file, lines in address order and
// in random order: ParseFile alone, and ParseFile + Build, a load without
// a previous table.
func BenchmarkParseFile(b *testing.B) {
	for _, sorted := range []bool{true, false} {
		order := "sorted"
		if !sorted {
			order = "random"
		}
		path, relays := writeSourcesFile(b, b.TempDir(), sorted, 0)
		resolve := func(n string) (int, bool) { i, ok := relays[n]; return i, ok }
		text, _, err := NewSourceFile(path, 0).read(bg)
		if err != nil {
			b.Fatal(err)
		}
		for _, withBuild := range []bool{false, true} {
			name := order + "/parse"
			if withBuild {
				name += "+build"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				heapAfterGC()
				var cpu time.Duration
				for b.Loop() {
					c0 := cputime.Process()
					bld, err := ParseFile(bg, text, path, resolve)
					if err != nil {
						b.Fatal(err)
					}
					if withBuild {
						t, err := bld.Build()
						if err != nil {
							b.Fatal(err)
						}
						if t.Len4() != fileV4 || t.Len6() != fileV6 {
							b.Fatalf("Loaded %d + %d prefixes", t.Len4(), t.Len6())
						}
					}
					cpu += cputime.Process() - c0
				}
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			})
		}
	}
}

// BenchmarkBartVariant compares the bart table types on the same 1M IPv4
// prefixes: lookup time and heap per prefix. Lite carries no value, so it
// cannot hold relay sets; it is here as the floor for memory.
func BenchmarkBartVariant(b *testing.B) {
	e4, _ := sortedData()
	addrs := hitAddrs(e4, 1<<16, 3)
	mask := len(addrs) - 1

	b.Run("Table", func(b *testing.B) {
		before := heapAfterGC()
		t := new(bart.Table[uint32])
		for _, e := range e4 {
			t.Insert(e.prefix(), uint32(e.set))
		}
		perPrefix := float64(heapAfterGC()-before) / float64(len(e4))
		loopTimed(b, func(i int) { t.Lookup(addrs[i&mask]) })
		b.ReportMetric(perPrefix, "B/prefix")
	})
	b.Run("Fast", func(b *testing.B) {
		before := heapAfterGC()
		t := new(bart.Fast[uint32])
		for _, e := range e4 {
			t.Insert(e.prefix(), uint32(e.set))
		}
		perPrefix := float64(heapAfterGC()-before) / float64(len(e4))
		loopTimed(b, func(i int) { t.Lookup(addrs[i&mask]) })
		b.ReportMetric(perPrefix, "B/prefix")
	})
	b.Run("Lite", func(b *testing.B) {
		before := heapAfterGC()
		t := new(bart.Lite)
		for _, e := range e4 {
			t.Insert(e.prefix())
		}
		perPrefix := float64(heapAfterGC()-before) / float64(len(e4))
		loopTimed(b, func(i int) { t.Contains(addrs[i&mask]) })
		b.ReportMetric(perPrefix, "B/prefix")
	})
}

// BenchmarkReload is the reload path of the plugin: a new version of the
// 1.2M-line file, read and hashed, then loaded over the version before,
// which differs from it in `changed` lines. Each iteration loads the other
// of the two versions, so every one is a change:
//
//	patch    FileLoader.Load, which parses only the changed lines
//	parse    ParseFile of every line and buildFrom the previous table
//	rebuild  ParseFile and a whole new trie
func BenchmarkReload(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	base, relays := writeSourcesFile(b, dir, true, 0)
	resolve := func(n string) (int, bool) { i, ok := relays[n]; return i, ok }
	read := func(b *testing.B, path string) string {
		text, _, err := NewSourceFile(path, 0).read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return text
	}
	parse := func(b *testing.B, path string, prev *Table) *Table {
		bld, err := ParseFile(ctx, read(b, path), path, resolve)
		if err != nil {
			b.Fatal(err)
		}
		t, err := bld.buildFrom(prev)
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	for _, changed := range []int{1_000, 5_000, 20_000} {
		other, _ := writeSourcesFile(b, dir, true, changed)
		paths := [2]string{base, other}
		for _, mode := range []string{"patch", "parse", "rebuild"} {
			b.Run(fmt.Sprintf("changed=%d/%s", changed, mode), func(b *testing.B) {
				loader := NewFileLoader(base, resolve, nil)
				prev, err := loader.Load(ctx, read(b, base))
				if err != nil {
					b.Fatal(err)
				}
				heapAfterGC()
				var cpu time.Duration
				i := 0
				for b.Loop() {
					i++
					path := paths[i%2]
					c0 := cputime.Process()
					var t *Table
					switch mode {
					case "patch":
						if t, err = loader.Load(ctx, read(b, path)); err != nil {
							b.Fatal(err)
						}
					case "parse":
						t = parse(b, path, prev)
					case "rebuild":
						t = parse(b, path, nil)
					}
					cpu += cputime.Process() - c0
					if t.Len4() != fileV4 || t.Len6() != fileV6 {
						b.Fatalf("Loaded %d + %d prefixes", t.Len4(), t.Len6())
					}
					prev = t
				}
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			})
		}
	}
}
