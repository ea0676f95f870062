package amt_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
	"github.com/amtdns/amtrelay/internal/cputime"
)

// BenchmarkProbeRound measures one health-check round over 1,000 targets
// (50 loopback responders, each probed 20 times) with 64 probes in flight,
// the shape of a prober sweeping a large relay list. cpu-ns/round is process
// CPU (user+system), so it includes the in-process responders' share.
func BenchmarkProbeRound(b *testing.B) {
	const (
		responders = 50
		perTarget  = 20
		workers    = 64
	)
	targets := make([]netip.AddrPort, 0, responders*perTarget)
	for i := range responders {
		r, err := amttest.Start(fmt.Sprintf("127.0.0.%d:0", 10+i))
		if err != nil {
			b.Fatalf("Start: %v", err)
		}
		b.Cleanup(func() { r.Stop() })
		for range perTarget {
			targets = append(targets, r.Addr())
		}
	}
	ctx := context.Background()
	var failed atomic.Int64

	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cputime.Process()
	for b.Loop() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(len(targets)) {
						return
					}
					if rep := amt.Probe(ctx, targets[i], 2*time.Second); rep.Result != amt.ResultOK {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
	}
	cpu := cputime.Process() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/round")
	b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/round")
}

// BenchmarkProbe is one sequential probe, for per-probe allocations.
func BenchmarkProbe(b *testing.B) {
	r, err := amttest.Start("127.0.0.1:0")
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	defer r.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if rep := amt.Probe(ctx, r.Addr(), 2*time.Second); rep.Result != amt.ResultOK {
			b.Fatalf("Probe: %v (%v)", rep.Result, rep.Err)
		}
	}
}
