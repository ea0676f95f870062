package main

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// amtPort is the IANA port of AMT relays; AMTRELAY records carry no port.
const amtPort = 2268

// defaultStagger is RFC 8305's recommended Connection Attempt Delay.
const defaultStagger = 250 * time.Millisecond

// maxCandidates bounds the race, and with it how long it can take:
// timeout + (maxCandidates-1) staggers at worst.
const maxCandidates = 32

// attempt is one candidate's part in the race.
type attempt struct {
	Cand   candidate
	Target netip.AddrPort
	// Started and Ended are zero for a candidate never started.
	Started, Ended time.Time
	Reply          amt.HandshakeReply
	// Outcome is won, slower, cancelled, not_started, interrupted, or the
	// handshake's result: timeout, refused, bad_reply, error, limit,
	// no_query. The data phase may turn won into no_data.
	Outcome string
}

type handshakeFunc func(ctx context.Context, target netip.AddrPort, timeout time.Duration) amt.HandshakeReply

type racer struct {
	handshake handshakeFunc
	timeout   time.Duration // of each handshake
	stagger   time.Duration
	// after starts the stagger delay; tests replace it to fire by hand.
	after func(time.Duration) <-chan time.Time
}

// race runs the handshakes the way RFC 8305 connects: in order, the next
// one starting when the stagger delay has passed or the previous attempt
// failed, whichever is first, with earlier attempts still running. The
// first handshake that gets a Membership Query without L (RFC 8777's
// "connection established") wins; the others still pending are cancelled,
// as a gateway would simply stop talking to them. It returns every attempt
// and the winner's index, -1 if none won. All handshakes have returned by
// then.
func (rc racer) race(ctx context.Context, cands []candidate, targets []netip.AddrPort) ([]attempt, int) {
	at := make([]attempt, len(cands))
	for i, c := range cands {
		at[i] = attempt{Cand: c, Target: targets[i]}
	}
	winner := -1
	if len(at) == 0 {
		return at, winner
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type done struct {
		i     int
		reply amt.HandshakeReply
		at    time.Time
	}
	// Buffered for every attempt, so no handshake goroutine ever waits.
	doneC := make(chan done, len(at))
	next, running := 0, 0
	var stagger <-chan time.Time
	start := func() {
		i, target := next, at[next].Target
		next++
		running++
		at[i].Started = time.Now()
		go func() {
			r := rc.handshake(rctx, target, rc.timeout)
			doneC <- done{i, r, time.Now()}
		}()
		stagger = nil
		if next < len(at) {
			stagger = rc.after(rc.stagger)
		}
	}
	start()
	ctxDone := ctx.Done()
	for running > 0 {
		select {
		case <-stagger:
			start()
		case <-ctxDone:
			// The running handshakes see rctx end and return.
			stagger, ctxDone = nil, nil
		case d := <-doneC:
			running--
			at[d.i].Ended, at[d.i].Reply = d.at, d.reply
			switch {
			case d.reply.Result == amt.ResultOK && winner < 0:
				winner = d.i
				cancel()
				stagger = nil
			case winner < 0 && ctx.Err() == nil && next < len(at):
				start()
			}
		}
	}
	interrupted := ctx.Err() != nil
	for i := range at {
		a := &at[i]
		switch {
		case i == winner:
			a.Outcome = "won"
		case a.Started.IsZero() && interrupted && winner < 0:
			a.Outcome = "interrupted"
		case a.Started.IsZero():
			a.Outcome = "not_started"
		case a.Reply.Result == amt.ResultOK:
			a.Outcome = "slower"
		case a.Reply.Result == amt.ResultError && errors.Is(a.Reply.Err, context.Canceled):
			if winner >= 0 {
				a.Outcome = "cancelled"
			} else {
				a.Outcome = "interrupted"
			}
		default:
			a.Outcome = a.Reply.Result.String()
		}
	}
	return at, winner
}
