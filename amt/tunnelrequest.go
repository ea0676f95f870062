package amt

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// TunnelReply is the outcome of one Tunnel.Request.
type TunnelReply struct {
	// Result is ResultOK or ResultLimit when the Query came (ResultLimit
	// with the L flag), ResultNoQuery when none came in time,
	// ResultRefused when an ICMP port unreachable came instead, and
	// ResultError when the Request could not be sent, the tunnel closed or
	// ctx was canceled (Err says which).
	Result Result
	// RTT from sending the Request to receiving its Query; zero unless
	// Result is ResultOK or ResultLimit.
	RTT time.Duration
	// Relay is where the Request went; zero if none went out in time.
	Relay netip.AddrPort
	// Query is the Membership Query, for ResultOK and ResultLimit, and
	// QueryFrom its source address.
	Query     Query
	QueryFrom netip.Addr
	// Err holds the detail of every Result but ResultOK and ResultLimit.
	// When ctx was canceled, errors.Is(Err, context.Canceled) holds.
	Err error
}

// requestAsk is one caller of Request waiting for a Query. Its fields are
// under the Tunnel's rmu.
type requestAsk struct {
	ready chan struct{} // capacity 1: Run never blocks on it
	// nonce is that of the Request the ask waits on; it waits for one to
	// go out while it is not the nonce of the Request awaiting its Query.
	nonce uint32
	// prompted: the ask has had the tunnel send out of its schedule once.
	prompted bool
	answered bool
	reply    TunnelReply
}

// Request makes the tunnel send a Request to its relay now, out of its
// refresh cycle, from its own socket, and waits up to timeout
// (DefaultTimeout if not positive), or until ctx is done, for the Query.
// The Query is taken as any Query of the tunnel's own: its MAC and nonce
// are those the joins, sent again at once, and the next Updates carry. So
// a relay that keeps one tunnel per gateway address and only the latest
// nonce (the Linux driver) sees one gateway, and its latest nonce stays
// the tunnel's: a handshake from any other socket of the host would take
// the relay's Queries from the tunnel, or void the MAC of its joins.
//
// A Request of the tunnel's own still awaiting its Query is shared rather
// than followed by a second. A tunnel that has no relay yet (it is
// discovering) sends its Discovery now if it was waiting out a backoff,
// and the Request follows the Advertisement, all within timeout. A missed
// Query, a refusal or a Limit counts for the tunnel as for its own
// Requests (see Run). The work is Run's: Request needs Run running, and
// starts no goroutine.
func (t *Tunnel) Request(ctx context.Context, timeout time.Duration) TunnelReply {
	if err := ctx.Err(); err != nil {
		return TunnelReply{Result: ResultError, Err: err}
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	timer := time.NewTimer(time.Until(budgetDeadline(ctx, timeout)))
	defer timer.Stop()
	a := &requestAsk{ready: make(chan struct{}, 1)}
	t.rmu.Lock()
	if t.rclosed {
		t.rmu.Unlock()
		return TunnelReply{Result: ResultError, Err: ErrTunnelClosed}
	}
	t.run.asks = append(t.run.asks, a)
	t.rmu.Unlock()
	t.poke()

	var err error
	select {
	case <-a.ready:
	case <-timer.C:
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = ctx.Err()
		}
	case <-t.done:
		err = ErrTunnelClosed
	}
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if a.answered {
		return a.reply
	}
	t.run.asks = slices.DeleteFunc(t.run.asks, func(b *requestAsk) bool { return b == a })
	if err != nil {
		return TunnelReply{Result: ResultError, Err: err}
	}
	if !t.run.attached(a) {
		// No Request went out: the tunnel's Discovery got no usable
		// Advertisement in time.
		return TunnelReply{Result: ResultNoQuery, Err: ErrNoAdvertisement}
	}
	return TunnelReply{Result: ResultNoQuery, Relay: t.run.dst, Err: ErrNoQuery}
}

// attached reports whether a waits on the Request awaiting its Query.
func (r *tunnelRun) attached(a *requestAsk) bool {
	return r.waiting == awaitQuery && a.nonce == r.nonce
}

// attachAsks has every waiting ask wait on the Request just sent or
// awaiting its Query (r.nonce).
func (r *tunnelRun) attachAsks() {
	for _, a := range r.asks {
		a.nonce = r.nonce
	}
}

// serveAsks gets a Request out for the asks that wait for one: they share
// the Request awaiting its Query; otherwise one goes out now, or the
// Discovery it needs if the tunnel waits out a backoff. Each ask prompts a
// send once, so that a relay refusing at once cannot make the tunnel send
// in a loop until the caller gives up.
func (r *tunnelRun) serveAsks(now time.Time) {
	prompt := false
	for _, a := range r.asks {
		if !r.attached(a) && !a.prompted {
			prompt = true
		}
	}
	switch {
	case r.waiting == awaitQuery:
		r.attachAsks()
		return
	case !prompt || r.waiting == awaitAdvertisement:
		// The Request follows the Advertisement, or the tunnel's own
		// schedule.
		return
	}
	for _, a := range r.asks {
		a.prompted = true
	}
	if r.state() == TunnelDiscovering {
		r.sendDiscovery(now)
		return
	}
	r.sendRequest(now)
}

// answerQuery answers the asks waiting on the Request q answers, which came
// from from.
func (r *tunnelRun) answerQuery(q Query, from netip.Addr, now time.Time) {
	rep := TunnelReply{Result: ResultOK, RTT: now.Sub(r.sentAt), Relay: r.dst, Query: q, QueryFrom: from.Unmap().WithZone("")}
	if q.Limit {
		rep.Result = ResultLimit
	}
	r.answer(q.Nonce, rep)
}

// answerMissed answers the asks waiting on the Request that got no Query
// (err nil), whose port was refused, or whose send failed (err).
func (r *tunnelRun) answerMissed(err error) {
	rep := TunnelReply{Result: ResultNoQuery, Relay: r.dst, Err: ErrNoQuery}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		rep.Result, rep.Err = ResultRefused, err
	case err != nil:
		rep.Result, rep.Err = ResultError, err
	}
	r.answer(r.nonce, rep)
}

// answer gives rep to the asks waiting on the Request with nonce and wakes
// them.
func (r *tunnelRun) answer(nonce uint32, rep TunnelReply) {
	r.asks = slices.DeleteFunc(r.asks, func(a *requestAsk) bool {
		if a.nonce != nonce {
			return false
		}
		a.answered, a.reply = true, rep
		select {
		case a.ready <- struct{}{}:
		default:
		}
		return true
	})
}
