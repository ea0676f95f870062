package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"

	"github.com/amtdns/amtrelay/internal/cputime"
	"github.com/amtdns/amtrelay/table"
)

// BenchmarkFullTable is a speaker meeting a router that has n multicast
// routes: from the session coming up to a complete table.Table built
// through Subscribe and Apply, the way the plugin will. Run it alone, once
// per size (-benchtime=1x): the router keeps its routes between
// iterations, and the speaker's figures are what it adds to the process.
//
//	s-to-table  seconds from Established to the last route in the table
//	cpu-s       process CPU for the same, router's sending included
//	B/route     live heap the running speaker and its table add, per route
//	allocs/route  allocations per route, the router's sending included
func BenchmarkFullTable(b *testing.B) {
	for _, nRoutes := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("routes=%d", nRoutes), func(b *testing.B) {
			// GoBGP as the router prepares a new peer's whole table before it
			// sends anything, keepalives included: 1M routes take longer
			// than the default 9 s hold time on this machine, and the
			// session would flap for ever.
			r := startRouter(b, routerOpts{families: Families(IPv4Multicast), hold: 90})
			const chunk = 50_000
			for i := 0; i < nRoutes; i += chunk {
				paths := make([]*apiutil.Path, 0, chunk)
				for j := i; j < min(i+chunk, nRoutes); j++ {
					p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(10 + j>>16), byte(j >> 8), byte(j), 0}), 24)
					paths = append(paths, r.path(IPv4Multicast, p.String(), routerAS<<16|uint32(j%16)))
				}
				r.announce(paths...)
			}
			for b.Loop() {
				b.StopTimer()
				heap0 := heapAlloc()
				var ms0 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				cpu0 := cputime.Process()
				b.StartTimer()

				n := r.neighbor()
				n.HoldTime = 90 * time.Second
				s, err := New(testConfig(n), b.Logf)
				if err != nil {
					b.Fatal(err)
				}
				tc := &benchTable{applied: make(chan struct{}, 1)}
				ctx, cancel := context.WithCancel(context.Background())
				subDone := make(chan error, 1)
				go func() { subDone <- s.Subscribe(ctx, tc.take) }()
				runDone := make(chan error, 1)
				go func() { runDone <- s.Run(ctx) }()
				deadline := time.After(5 * time.Minute)
				progress := time.NewTicker(10 * time.Second)
				for tc.size() < nRoutes {
					select {
					case <-tc.applied:
					case <-progress.C:
						b.Logf("%d of %d routes; %+v", tc.size(), nRoutes, s.Status().Neighbors[0])
					case <-deadline:
						b.Fatalf("%d of %d routes after 5 minutes", tc.size(), nRoutes)
					}
				}
				progress.Stop()
				full := time.Now()

				b.StopTimer()
				cpu := cputime.Process() - cpu0
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heap := heapAlloc() - heap0
				up := s.Status().Neighbors[0].Since
				b.ReportMetric(full.Sub(up).Seconds(), "s-to-table")
				b.ReportMetric(cpu.Seconds(), "cpu-s")
				b.ReportMetric(float64(heap)/float64(nRoutes), "B/route")
				b.ReportMetric(float64(ms.Mallocs-ms0.Mallocs)/float64(nRoutes), "allocs/route")
				cancel()
				<-subDone
				b.Logf("%d routes: %d batches, %.0f MB live heap added", nRoutes, tc.batches, float64(heap)/1e6)
				<-runDone
				b.StartTimer()
			}
		})
	}
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchTable applies batches to a table.Table, as the plugin will.
type benchTable struct {
	tab     atomic.Pointer[table.Table] // published for size, as the plugin will
	batches int                         // take's own
	applied chan struct{}
}

func (c *benchTable) take(b Batch) {
	changes := make([]table.Change, len(b.Routes))
	for i, r := range b.Routes {
		var relays []int
		if len(r.Communities) > 0 {
			relays = []int{int(r.Communities[0] & 0xffff)}
		}
		changes[i] = table.Change{Prefix: r.Prefix, Relays: relays, Delete: r.Withdrawn}
	}
	c.tab.Store(c.tab.Load().Apply(changes))
	c.batches++
	select {
	case c.applied <- struct{}{}:
	default:
	}
}

func (c *benchTable) size() int {
	t := c.tab.Load()
	return t.Len4() + t.Len6()
}
