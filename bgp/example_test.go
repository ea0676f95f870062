package bgp_test

import (
	"context"
	"log"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/amtdns/amtrelay/bgp"
	"github.com/amtdns/amtrelay/table"
)

// The shape of the plugin's use: Acquire in OnStartup, a subscriber that
// turns batches into tables published for the query path, Synced for
// Ready, release in OnShutdown.
func Example_plugin() {
	cfg := bgp.Config{LocalAS: 64512, RouterID: netip.MustParseAddr("192.0.2.1")}
	if err := cfg.AddNeighbor(bgp.Neighbor{Address: netip.MustParseAddr("192.0.2.254"), RemoteAS: 64500}); err != nil {
		log.Fatal(err)
	}

	// OnStartup
	speaker, release, err := bgp.Acquire(cfg, log.Printf)
	if err != nil {
		log.Fatal(err)
	}
	var current atomic.Pointer[table.Table] // what ServeDNS reads
	relaysOf := func(r bgp.Route) []int { return []int{0} }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = speaker.Subscribe(ctx, func(b bgp.Batch) {
			changes := make([]table.Change, len(b.Routes))
			for i, r := range b.Routes {
				changes[i] = table.Change{Prefix: r.Prefix, Relays: relaysOf(r), Delete: r.Withdrawn}
			}
			prev := current.Load()
			if b.Full {
				prev = nil
			}
			current.Store(prev.Apply(changes))
		})
	}()

	// Ready
	_ = speaker.Synced()

	// OnShutdown
	cancel()
	wg.Wait()
	release()
}
