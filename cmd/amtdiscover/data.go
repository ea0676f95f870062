package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// dataResult is what joining (S,G) on the winner gave.
type dataResult struct {
	// Outcome is data, no_data, interrupted or error.
	Outcome string
	// Established is when the tunnel got its Query, FirstData when the
	// first Multicast Data was seen, both since the tunnel started; zero
	// if it did not happen.
	Established, FirstData time.Duration
	Packets                uint64
	Detail                 string
}

// defaultPoll is how often the tunnel's counters are read. FirstData is the
// arrival time of the newest packet at the first read that sees any, so it
// is exact unless several arrived within one poll.
const defaultPoll = 5 * time.Millisecond

// waitData runs a tunnel to target, joins (s, g) and waits up to timeout
// for the first Multicast Data. The tunnel repeats the whole handshake
// (its own Discovery and Request): it is what a gateway does next, and its
// Updates must carry the MAC of a Query it got itself. Leaving, and a
// Teardown if the relay asked for them, happen before returning.
func waitData(ctx context.Context, target netip.AddrPort, s, g netip.Addr, timeout, poll time.Duration) dataResult {
	t, err := amt.NewTunnel(target, amt.TunnelOptions{ReplyTimeout: min(timeout, time.Second)})
	if err != nil {
		return dataResult{Outcome: "error", Detail: err.Error()}
	}
	if err := t.Join(s, g); err != nil {
		t.Close()
		return dataResult{Outcome: "error", Detail: err.Error()}
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	runDone := make(chan error, 1)
	go func() { runDone <- t.Run(tctx) }()
	defer func() {
		cancel()
		<-runDone
	}()

	var res dataResult
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		st := t.Status()
		if res.Established == 0 && st.State == amt.TunnelEstablished {
			res.Established = max(st.Since.Sub(start), time.Nanosecond)
		}
		if n := t.Packets(s, g); n > 0 {
			res.Outcome, res.Packets = "data", n
			res.FirstData = max(t.LastData(s, g).Sub(start), time.Nanosecond)
			return res
		}
		select {
		case <-tick.C:
			continue
		case err := <-runDone:
			runDone <- err // for the deferred wait
		case <-tctx.Done():
		}
		// One last look: data may have come with the deadline.
		if n := t.Packets(s, g); n > 0 {
			res.Outcome, res.Packets = "data", n
			res.FirstData = max(t.LastData(s, g).Sub(start), time.Nanosecond)
			return res
		}
		switch {
		case ctx.Err() != nil:
			res.Outcome, res.Detail = "interrupted", "interrupted while waiting for data"
		case st.State == amt.TunnelEstablished || res.Established > 0:
			res.Outcome = "no_data"
			res.Detail = fmt.Sprintf("tunnel established, no data for (%v, %v) within %v", s, g, timeout)
		default:
			res.Outcome = "no_data"
			res.Detail = fmt.Sprintf("tunnel %s after %v", st.State, timeout)
			if st.Err != nil {
				res.Detail += ": " + st.Err.Error()
			}
		}
		return res
	}
}
