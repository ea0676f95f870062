package amt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Result classifies the outcome of one Probe or Handshake.
type Result uint8

const (
	// ResultOK: a matching Relay Advertisement arrived in time.
	ResultOK Result = iota
	// ResultTimeout: nothing at all was received before the deadline.
	ResultTimeout
	// ResultRefused: the target answered with ICMP port unreachable
	// (nothing listens there). Only detected where the platform reports
	// ICMP errors on unconnected sockets (Linux); elsewhere this shows up
	// as ResultTimeout.
	ResultRefused
	// ResultBadReply: packets arrived but none was a matching Relay
	// Advertisement (wrong nonce, wrong type, bad length...).
	ResultBadReply
	// ResultError: a local failure (socket, send, invalid target) or the
	// context was canceled; see Reply.Err.
	ResultError
	// ResultLimit: a Handshake got a Membership Query with the L flag set:
	// the relay is up but takes no new tunnels. RFC 8777 suggests a hold-
	// down of about 10 minutes before trying such a relay again.
	ResultLimit
	// ResultNoQuery: a Handshake got its Relay Advertisement but no
	// Membership Query, and nothing else either, in the remaining time.
	ResultNoQuery
)

// String returns the name used as a metrics label value.
func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultTimeout:
		return "timeout"
	case ResultRefused:
		return "refused"
	case ResultBadReply:
		return "bad_reply"
	case ResultError:
		return "error"
	case ResultLimit:
		return "limit"
	case ResultNoQuery:
		return "no_query"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// Reply is the outcome of one Probe.
type Reply struct {
	Result Result
	// RTT from sending the Discovery to receiving the matching
	// Advertisement; zero unless Result is ResultOK.
	RTT time.Duration
	// Relay is the address the relay advertised. It may differ from the
	// probed address: anycast discovery addresses advertise a unicast
	// relay, and brokers may name another relay.
	Relay netip.Addr
	// From is the source of the matching Advertisement. It may differ
	// from the target when the relay sits behind anycast or replies from a
	// wildcard-bound socket.
	From netip.AddrPort
	// Ignored counts received packets that were not a matching
	// Advertisement.
	Ignored int
	// Err holds the detail for ResultError and ResultRefused. When the
	// context was canceled, errors.Is(Err, context.Canceled) holds, which
	// lets callers tell shutdown apart from a relay failure.
	Err error
}

// DefaultTimeout is used by Probe when it is given a non-positive timeout,
// so that a probe can never wait forever.
const DefaultTimeout = time.Second

// maxReads bounds how many packets one probe reads. A relay sends exactly
// one Advertisement, so anything beyond a handful is noise or a flood; the
// bound keeps a flood from pinning a worker until the deadline.
const maxReads = 64

// readBufLen is larger than the biggest valid Advertisement so that an
// oversized datagram is seen as oversized (and rejected) instead of being
// silently truncated into something that parses.
const readBufLen = advertisementLen6 + 8

// ErrInvalidTarget is reported in Reply.Err for a target without a usable
// address or port.
var ErrInvalidTarget = errors.New("amt: invalid probe target")

// Probe sends one Relay Discovery with a fresh random non-zero nonce to
// target and waits up to timeout, or until ctx is done, for a matching Relay
// Advertisement. The Advertisement may come from any source address and
// port: relays behind anycast, or bound to a wildcard address, do not always
// answer from the address that was probed. The nonce is what ties the
// answer to the probe.
//
// Each call uses its own unconnected UDP socket, closed before returning,
// and leaves no goroutine behind.
func Probe(ctx context.Context, target netip.AddrPort, timeout time.Duration) Reply {
	if err := ctx.Err(); err != nil {
		return Reply{Result: ResultError, Err: err}
	}
	addr := target.Addr().Unmap()
	if !addr.IsValid() || target.Port() == 0 {
		return Reply{Result: ResultError, Err: fmt.Errorf("%w: %v", ErrInvalidTarget, target)}
	}
	target = netip.AddrPortFrom(addr, target.Port())
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	conn, err := openSocket(addr)
	if err != nil {
		return Reply{Result: ResultError, Err: err}
	}
	defer conn.Close()

	// The deadline must be in place before the context is watched,
	// otherwise this call could overwrite the past deadline set by a
	// cancellation that raced with it.
	if err := conn.SetReadDeadline(budgetDeadline(ctx, timeout)); err != nil {
		return Reply{Result: ResultError, Err: err}
	}
	defer wakeOnDone(ctx, conn)()

	nonce := newNonce()
	var buf [readBufLen]byte
	start := time.Now()
	if _, err := conn.WriteToUDPAddrPort(AppendDiscovery(buf[:0], nonce), target); err != nil {
		return errorReply(err, 0)
	}

	ignored := 0
	for range maxReads {
		n, from, err := conn.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return errorReply(err, ignored)
		}
		got, relay, perr := ParseAdvertisement(buf[:n])
		if perr != nil || got != nonce {
			ignored++
			continue
		}
		return Reply{
			Result:  ResultOK,
			RTT:     time.Since(start),
			Relay:   relay,
			From:    from,
			Ignored: ignored,
		}
	}

	// A canceled context is reported as such rather than as a relay fault:
	// the caller is going away and the relay has not had its full time.
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return Reply{Result: ResultError, Ignored: ignored, Err: err}
	}
	if ignored > 0 {
		return Reply{Result: ResultBadReply, Ignored: ignored}
	}
	return Reply{Result: ResultTimeout}
}

// openSocket opens the unconnected UDP socket of one exchange with a relay
// at addr: wildcard address, ephemeral port, the family of addr, and ICMP
// errors reported (setRecvErr) so that a closed port reads as refused.
func openSocket(addr netip.Addr) (*net.UDPConn, error) {
	network := "udp6"
	if addr.Is4() {
		network = "udp4"
	}
	// A nil local address means wildcard and ephemeral port without going
	// through the resolver, which ListenConfig would do for a string.
	conn, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, err
	}
	if err := setRecvErr(conn, addr.Is6()); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// budgetDeadline is now plus timeout, or the context's deadline if sooner.
func budgetDeadline(ctx context.Context, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return deadline
}

// wakeOnDone makes a read blocked on conn return as soon as ctx is done,
// by moving the read deadline into the past. Callers that set deadlines
// themselves must check ctx.Err() after each SetReadDeadline and before
// reading, or a cancellation between the two would be overwritten. The
// returned function stops watching and waits for a callback that has
// already started, so that no goroutine outlives the caller.
func wakeOnDone(ctx context.Context, conn *net.UDPConn) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	stopWatch := context.AfterFunc(ctx, func() {
		defer wg.Done()
		// A deadline in the past wakes the blocked read at once.
		_ = conn.SetReadDeadline(time.Unix(1, 0))
	})
	return func() {
		if stopWatch() {
			wg.Done()
		}
		wg.Wait()
	}
}

// errorReply maps a socket error to a Reply. ECONNREFUSED can only come from
// an ICMP port unreachable for our own Discovery (the socket has sent nothing
// else), so it is a statement about the target, not about us.
func errorReply(err error, ignored int) Reply {
	r := ResultError
	if errors.Is(err, syscall.ECONNREFUSED) {
		r = ResultRefused
	}
	return Reply{Result: r, Ignored: ignored, Err: err}
}

// newNonce returns a random non-zero nonce. crypto/rand keeps nonces
// unpredictable, which is the only protection against an off-path attacker
// forging Advertisements; zero is skipped because relays drop it.
func newNonce() uint32 {
	var b [4]byte
	for range 16 {
		_, _ = rand.Read(b[:]) // never fails since Go 1.24
		if n := binary.BigEndian.Uint32(b[:]); n != 0 {
			return n
		}
	}
	// 16 zero draws in a row mean the generator is broken; any fixed
	// non-zero value is still a valid (if guessable) nonce.
	return 1
}
