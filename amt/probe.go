package amt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Result classifies the outcome of one Client.Probe or Client.Handshake.
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
	// Advertisement (wrong nonce, wrong type, bad length...), or the
	// matching one named a relay address no Request can go to (see
	// usableRelay).
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

// Reply is the outcome of one Client.Probe.
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

// DefaultTimeout is used by Client.Probe and Client.Handshake when they are
// given a non-positive timeout, so that a probe can never wait forever.
const DefaultTimeout = time.Second

// maxReads bounds the datagrams charged to one step (Ignored) before it
// gives up: a relay sends exactly one reply, so anything beyond a handful
// is noise or a flood, which must not pin a prober until the deadline.
const maxReads = 64

// ErrInvalidTarget is reported in Reply.Err for a target without a usable
// address or port.
var ErrInvalidTarget = errors.New("amt: invalid probe target")

// openSocket opens an unconnected UDP socket for relays of addr's family
// (a Client's endpoint, a Tunnel): wildcard address, ephemeral port, and
// ICMP errors reported (setRecvErr) so that a closed port reads as refused.
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

// usableRelay reports whether relay, the address an Advertisement named,
// is one a Request can be sent to: the unspecified address names no host
// and a multicast group no relay, so a relay advertising either is broken
// for every gateway.
func usableRelay(relay netip.Addr) bool {
	relay = relay.Unmap()
	return relay.IsValid() && !relay.IsUnspecified() && !relay.IsMulticast()
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
