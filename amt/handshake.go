package amt

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// HandshakeStep names the two exchanges of a Handshake.
type HandshakeStep uint8

const (
	// StepDiscovery: Relay Discovery to the target, Relay Advertisement
	// back.
	StepDiscovery HandshakeStep = iota
	// StepRequest: Request to the advertised relay, Membership Query back.
	StepRequest
)

// String returns the name used as a metrics label value.
func (s HandshakeStep) String() string {
	switch s {
	case StepDiscovery:
		return "discovery"
	case StepRequest:
		return "request"
	}
	return fmt.Sprintf("HandshakeStep(%d)", uint8(s))
}

// HandshakeReply is the outcome of one Handshake.
type HandshakeReply struct {
	Result Result
	// Step is the exchange the handshake ended in: StepDiscovery if no
	// usable Advertisement arrived, StepRequest from then on (including
	// ResultOK and ResultLimit).
	Step HandshakeStep
	// DiscoveryRTT and RequestRTT are the round-trip times of the steps
	// that completed; zero for the others.
	DiscoveryRTT, RequestRTT time.Duration
	// Relay is the advertised relay address; the Request went to it, on
	// the target's port. Valid once the Discovery step completed.
	Relay netip.Addr
	// From and QueryFrom are the sources of the Advertisement and of the
	// Query; either may differ from the address it answered.
	From, QueryFrom netip.AddrPort
	// Query is the Membership Query, for ResultOK and ResultLimit.
	Query Query
	// Ignored counts packets that were not the awaited reply, over both
	// steps.
	Ignored int
	// Err holds the detail for ResultError and ResultRefused, as in Reply.
	Err error
}

// ErrRelayFamily is reported when the relay advertised an address of the
// other family than the target's: the Request must go out of the socket the
// Discovery used, which cannot reach it.
var ErrRelayFamily = errors.New("amt: advertised relay is of another address family")

// handshakeBufLen: the largest reply a Handshake takes is a Query with an
// MLDv2 query and gateway fields, about 110 bytes. A bigger datagram cuts
// short here, but cannot then parse: an Advertisement must be 12 or 24
// bytes, and a Query's inner IP length would exceed what was read.
const handshakeBufLen = 2048

// Handshake checks that target takes tunnels, going one step further than
// Probe: Relay Discovery to target, then a Request (P flag clear: IGMPv3)
// to the advertised relay address on the target's port, which may differ
// from the discovery address, and a Membership Query back with the
// Request's nonce. ResultOK means a Query without the L flag arrived,
// RFC 8777's definition of a connected relay.
//
// timeout covers both steps together; ctx can end the handshake early.
// Both nonces are fresh, random and non-zero. Replies are accepted from any
// source address and port, since relays answer from other local addresses
// or sockets; the nonces tie them to the handshake. One unconnected UDP
// socket carries the whole exchange, so the Query comes back to the
// endpoint the relay computed its MAC for. If the relay set the G flag, a
// Teardown is sent before returning (best effort) so that the handshake
// leaves no tunnel behind; relays without G (amtrelayd) create no state for
// a Request. Relays that do (the Linux driver) keep one until it ages out,
// so handshakes should be rate-limited. No goroutine outlives the call.
func Handshake(ctx context.Context, target netip.AddrPort, timeout time.Duration) HandshakeReply {
	if err := ctx.Err(); err != nil {
		return HandshakeReply{Result: ResultError, Err: err}
	}
	addr := target.Addr().Unmap()
	if !addr.IsValid() || target.Port() == 0 {
		return HandshakeReply{Result: ResultError, Err: fmt.Errorf("%w: %v", ErrInvalidTarget, target)}
	}
	target = netip.AddrPortFrom(addr, target.Port())
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	conn, err := openSocket(addr)
	if err != nil {
		return HandshakeReply{Result: ResultError, Err: err}
	}
	defer conn.Close()
	// Deadline first, then the context watch: see Probe.
	if err := conn.SetReadDeadline(budgetDeadline(ctx, timeout)); err != nil {
		return HandshakeReply{Result: ResultError, Err: err}
	}
	defer wakeOnDone(ctx, conn)()

	var h HandshakeReply
	var buf [handshakeBufLen]byte
	// await reads until match accepts a datagram, the deadline passes or
	// maxReads datagrams were read (a flood must not pin the caller). It
	// reports whether match accepted one, and any read error other than
	// the deadline.
	await := func(match func(b []byte, from netip.AddrPort) bool) (bool, error) {
		for range maxReads {
			n, from, err := conn.ReadFromUDPAddrPort(buf[:])
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return false, nil
				}
				return false, err
			}
			if match(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())) {
				return true, nil
			}
			h.Ignored++
		}
		return false, nil
	}
	// fail ends the handshake at the current step: canceled is an error,
	// a closed port is refused, and otherwise what arrived decides between
	// the bad reply and the silent outcome.
	fail := func(err error, ignoredInStep int, silent Result) HandshakeReply {
		switch {
		case err != nil && errors.Is(err, syscall.ECONNREFUSED):
			h.Result, h.Err = ResultRefused, err
		case err != nil:
			h.Result, h.Err = ResultError, err
		case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			h.Result, h.Err = ResultError, ctx.Err()
		case ignoredInStep > 0:
			h.Result = ResultBadReply
		default:
			h.Result = silent
		}
		return h
	}

	// Step 1: Discovery -> Advertisement, as Probe.
	h.Step = StepDiscovery
	nonce := newNonce()
	start := time.Now()
	if _, err := conn.WriteToUDPAddrPort(AppendDiscovery(buf[:0], nonce), target); err != nil {
		return fail(err, 0, ResultTimeout)
	}
	got, err := await(func(b []byte, from netip.AddrPort) bool {
		n, relay, err := ParseAdvertisement(b)
		if err != nil || n != nonce {
			return false
		}
		h.Relay, h.From = relay.Unmap(), from
		return true
	})
	if !got {
		return fail(err, h.Ignored, ResultTimeout)
	}
	h.DiscoveryRTT = time.Since(start)
	if h.Relay.IsUnspecified() || h.Relay.IsMulticast() {
		// Nothing could answer a Request sent there: the relay is broken.
		h.Result = ResultBadReply
		return h
	}

	// Step 2: Request -> Query, to the advertised relay.
	h.Step = StepRequest
	if h.Relay.Is4() != addr.Is4() {
		h.Result, h.Err = ResultError, fmt.Errorf("%w: %v advertised over %v", ErrRelayFamily, h.Relay, target)
		return h
	}
	relay := netip.AddrPortFrom(h.Relay, target.Port())
	nonce = newNonce()
	ignoredBefore := h.Ignored
	start = time.Now()
	if _, err := conn.WriteToUDPAddrPort(AppendRequest(buf[:0], nonce, false), relay); err != nil {
		return fail(err, 0, ResultNoQuery)
	}
	got, err = await(func(b []byte, from netip.AddrPort) bool {
		q, err := ParseQuery(b)
		if err != nil || q.Nonce != nonce {
			return false
		}
		h.Query, h.QueryFrom = q, from
		return true
	})
	if !got {
		return fail(err, h.Ignored-ignoredBefore, ResultNoQuery)
	}
	h.RequestRTT = time.Since(start)
	if h.Query.Gateway.IsValid() {
		td := Teardown{MAC: h.Query.MAC, Nonce: h.Query.Nonce, Gateway: h.Query.Gateway}
		_, _ = conn.WriteToUDPAddrPort(AppendTeardown(buf[:0], td), relay)
	}
	h.Result = ResultOK
	if h.Query.Limit {
		h.Result = ResultLimit
	}
	return h
}
