package amt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrClientClosed is reported in Reply.Err and HandshakeReply.Err for
// probes that were pending when the Client was closed, or started after.
var ErrClientClosed = errors.New("amt: client closed")

// errNoNonce means no free nonce could be drawn: the generator keeps
// returning zero or nonces already pending, so it is broken.
var errNoNonce = errors.New("amt: no free nonce")

// Client runs Probes and Handshakes over one long-lived UDP socket per
// address family: at hundreds of probes a second, opening, registering and
// closing a socket per call costs more than the exchange itself.
//
// NewClient opens both sockets (unconnected, wildcard address, ephemeral
// port, ICMP errors reported on Linux) and starts one reader goroutine per
// socket. The readers hand each datagram to the pending probe it answers,
// by nonce: Advertisements by discovery nonce, Membership Queries by request
// nonce, from whatever source address and port they come (relays behind
// anycast or bound to a wildcard address do not always answer from the
// address that was probed). Nonces are random and non-zero: they are the
// only protection against an off-path attacker forging replies, and relays
// drop a zero one. Probes wait on a channel and a timer of their own, so a
// call starts no goroutine. Close ends every pending probe, closes the
// sockets and waits for the readers: nothing outlives Close, and a Client
// that is not closed keeps its two goroutines and sockets for good.
//
// Its methods are safe for concurrent use by any number of goroutines.
// What sharing a socket implies:
//
//   - ResultBadReply. A shared socket cannot tell whose junk a datagram is,
//     so a datagram counts against a probe (Ignored) only when it carries
//     the probe's nonce in the nonce field of the message type it awaits
//     but is not its reply (wrong length, bad inner packet, an
//     Advertisement with a request nonce...), or when it comes from the
//     exact address and port the probe is waiting on (every such probe, up
//     to 64 of them, is charged). Anything else is counted in
//     ClientStats.Unmatched and dropped. A probe charged 64 datagrams in
//     one step ends at once. A reply that comes after its probe gave up is
//     junk from that address to any other probe still waiting on it.
//   - ICMP errors. One ends every probe then waiting on the address and
//     port it names, not only the one whose datagram drew it: Linux
//     rate-limits ICMP errors (by default 1000/s with bursts of 50,
//     loopback included), so the others might never get one of their own.
//     Port unreachable is ResultRefused, any other ResultError; where there
//     is no error queue (not Linux) both end as timeouts.
//   - A send that fails ends the probe with ResultError, never refused:
//     Linux hands an ICMP error to whichever call on the socket comes next,
//     sends included, so the send is retried after the error queue is read
//     and a persistent failure is about this host, not the target.
//   - RTTs end when the reader receives the reply rather than when the
//     caller's goroutine wakes up, and Reply.From and QueryFrom carry no
//     IPv6 zone.
type Client struct {
	v4, v6     *endpoint
	err4, err6 error // why a family has no socket

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // the readers

	stats struct {
		replies, ignored, unmatched, icmp, icmpUnmatched, readErrors atomic.Uint64
	}
}

// ClientStats counts what a Client's sockets received, since NewClient.
type ClientStats struct {
	// Pending is the number of probes waiting for a reply right now.
	Pending int
	// Replies: datagrams that completed a probe's step.
	Replies uint64
	// Ignored: datagrams charged to a probe as not its reply (the sum of
	// the probes' Ignored counts).
	Ignored uint64
	// Unmatched: datagrams tied to no pending probe, dropped. Late replies
	// to probes that gave up land here.
	Unmatched uint64
	// ICMPErrors: error-queue entries (ICMP errors) that ended at least one
	// probe; ICMPUnmatched: those for a destination no probe waited on.
	ICMPErrors, ICMPUnmatched uint64
	// ReadErrors: socket read failures the error queue did not explain.
	ReadErrors uint64
}

// Bounds of the Client's work per datagram and per wakeup.
const (
	// maxChain bounds how many probes one datagram is charged to by
	// source, so that a flood from a popular destination costs a bounded
	// walk per datagram.
	maxChain = 64
	// clientReadBuffer is asked for as SO_RCVBUF (the kernel caps it at
	// net.core.rmem_max): one socket now takes the bursts that a thousand
	// sockets' buffers used to.
	clientReadBuffer = 4 << 20
	// maxReadBackoff caps the pause after read errors nothing explains, so
	// that a broken socket cannot spin a core.
	maxReadBackoff = 100 * time.Millisecond
	// Every readBurst datagrams the reader yields: under a flood its reads
	// never wait, and the probes it woke would otherwise sit behind it
	// until the scheduler preempts it.
	readBurst = 64
)

// NewClient opens the Client's IPv4 and IPv6 sockets and starts their
// readers. A family whose socket cannot be opened (no IPv6 on the host)
// makes probes of that family end with ResultError; NewClient fails only if
// neither can be opened. Close must be called to release them.
func NewClient() (*Client, error) {
	c := &Client{closing: make(chan struct{})}
	c.v4, c.err4 = c.open(netip.IPv4Unspecified())
	c.v6, c.err6 = c.open(netip.IPv6Unspecified())
	if c.v4 == nil && c.v6 == nil {
		return nil, errors.Join(c.err4, c.err6)
	}
	for _, e := range []*endpoint{c.v4, c.v6} {
		if e != nil {
			c.wg.Add(1)
			go e.read()
		}
	}
	return c, nil
}

func (c *Client) open(family netip.Addr) (*endpoint, error) {
	conn, err := openSocket(family)
	if err != nil {
		return nil, err
	}
	// Best effort: a smaller buffer only drops more under bursts.
	_ = conn.SetReadBuffer(clientReadBuffer)
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	network := "udp6"
	if family.Is4() {
		network = "udp4"
	}
	e := &endpoint{
		c:       c,
		conn:    conn,
		rc:      rc,
		network: network,
		byNonce: make(map[uint32]*inflight),
		byDst:   make(map[netip.AddrPort]*inflight),
	}
	e.raw.init()
	e.errq.rc, e.errq.handle = rc, e.queuedError
	return e, nil
}

// Close fails the pending probes with ErrClientClosed, closes the sockets
// and waits for the readers to return. Later calls do nothing.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		for _, e := range []*endpoint{c.v4, c.v6} {
			if e != nil {
				e.close()
			}
		}
		c.wg.Wait()
	})
	return nil
}

// LocalAddr returns the local address of the socket that probes of ip go
// out of (the wildcard address and the Client's port for that family), or
// the zero AddrPort if there is none.
func (c *Client) LocalAddr(ip netip.Addr) netip.AddrPort {
	e, err := c.endpointFor(ip.Unmap())
	if err != nil {
		return netip.AddrPort{}
	}
	return e.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Stats returns the Client's counters.
func (c *Client) Stats() ClientStats {
	s := ClientStats{
		Replies:       c.stats.replies.Load(),
		Ignored:       c.stats.ignored.Load(),
		Unmatched:     c.stats.unmatched.Load(),
		ICMPErrors:    c.stats.icmp.Load(),
		ICMPUnmatched: c.stats.icmpUnmatched.Load(),
		ReadErrors:    c.stats.readErrors.Load(),
	}
	for _, e := range []*endpoint{c.v4, c.v6} {
		if e != nil {
			e.mu.Lock()
			s.Pending += len(e.byNonce)
			e.mu.Unlock()
		}
	}
	return s
}

func (c *Client) endpointFor(addr netip.Addr) (*endpoint, error) {
	if addr.Is4() {
		if c.v4 == nil {
			return nil, fmt.Errorf("amt: no IPv4 socket: %w", c.err4)
		}
		return c.v4, nil
	}
	if c.v6 == nil {
		return nil, fmt.Errorf("amt: no IPv6 socket: %w", c.err6)
	}
	return c.v6, nil
}

// prepare validates and normalises target (an IPv4-mapped address is taken
// as IPv4) and picks the endpoint of its family.
func (c *Client) prepare(ctx context.Context, target netip.AddrPort) (*endpoint, netip.AddrPort, error) {
	if err := ctx.Err(); err != nil {
		return nil, target, err
	}
	addr := target.Addr().Unmap()
	if !addr.IsValid() || target.Port() == 0 {
		return nil, target, fmt.Errorf("%w: %v", ErrInvalidTarget, target)
	}
	e, err := c.endpointFor(addr)
	return e, netip.AddrPortFrom(addr, target.Port()), err
}

// Probe sends one Relay Discovery to target and waits up to timeout
// (DefaultTimeout if not positive), or until ctx is done, for the matching
// Relay Advertisement. It takes none of the relay's tunnel state, so it can
// run often. An Advertisement naming an address no Request can go to
// (unspecified, multicast) is ResultBadReply, as in Handshake; one naming
// the other family is ResultOK, since a gateway with both may use it. A
// canceled ctx ends it with ResultError and an Err for which
// errors.Is(Err, context.Canceled) holds: shutdown, not a relay fault.
func (c *Client) Probe(ctx context.Context, target netip.AddrPort, timeout time.Duration) Reply {
	e, target, err := c.prepare(ctx, target)
	if err != nil {
		return Reply{Result: ResultError, Err: err}
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	p := getInflight(time.Until(budgetDeadline(ctx, timeout)))
	defer putInflight(p)

	start, err := e.exchange(p, typeAdvertisement, target)
	if err != nil {
		return Reply{Result: ResultError, Err: err}
	}
	e.wait(ctx, p)
	switch {
	case p.outcome == outReply && !usableRelay(p.relay):
		return Reply{Result: ResultBadReply, Relay: p.relay, From: p.from, Ignored: p.ignored}
	case p.outcome == outReply:
		return Reply{Result: ResultOK, RTT: p.at.Sub(start), Relay: p.relay, From: p.from, Ignored: p.ignored}
	case p.outcome == outFailed:
		return errorReply(p.err, p.ignored)
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return Reply{Result: ResultError, Ignored: p.ignored, Err: err}
	}
	if p.ignored > 0 {
		return Reply{Result: ResultBadReply, Ignored: p.ignored}
	}
	return Reply{Result: ResultTimeout}
}

// Handshake checks that target takes tunnels, going one step further than
// Probe: Relay Discovery to target, then a Request (P flag clear: IGMPv3)
// to the advertised relay address on the target's port, which may differ
// from the discovery address, and a Membership Query back with the
// Request's nonce. ResultOK means a Query without the L flag arrived,
// RFC 8777's definition of a connected relay; with L it is ResultLimit.
//
// timeout (DefaultTimeout if not positive) covers both steps together; ctx
// can end the handshake early. The Request and the Teardown go out of the
// socket the Discovery used, so the Query comes back to the endpoint the
// relay computed its MAC for. If the relay set the G flag, a Teardown is
// sent before returning (best effort) so that the handshake leaves no
// tunnel behind; relays without G (amtrelayd) create no state for a
// Request. Relays that do (the Linux driver) keep one until it ages out,
// so handshakes should be rate-limited.
func (c *Client) Handshake(ctx context.Context, target netip.AddrPort, timeout time.Duration) HandshakeReply {
	e, target, err := c.prepare(ctx, target)
	if err != nil {
		return HandshakeReply{Result: ResultError, Err: err}
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// One timer for both steps: timeout covers them together.
	p := getInflight(time.Until(budgetDeadline(ctx, timeout)))
	defer putInflight(p)

	var h HandshakeReply
	h.Step = StepDiscovery
	start, err := e.exchange(p, typeAdvertisement, target)
	if err != nil {
		h.Result, h.Err = ResultError, err
		return h
	}
	e.wait(ctx, p)
	h.Ignored += p.ignored
	if p.outcome != outReply {
		return h.end(ctx, p, ResultTimeout)
	}
	h.DiscoveryRTT = p.at.Sub(start)
	h.Relay, h.From = p.relay.Unmap(), p.from
	if !usableRelay(h.Relay) {
		h.Result = ResultBadReply
		return h
	}

	h.Step = StepRequest
	if h.Relay.Is4() != target.Addr().Is4() {
		h.Result, h.Err = ResultError, fmt.Errorf("%w: %v advertised over %v", ErrRelayFamily, h.Relay, target)
		return h
	}
	relay := netip.AddrPortFrom(h.Relay, target.Port())
	start, err = e.exchange(p, typeQuery, relay)
	if err != nil {
		h.Result, h.Err = ResultError, err
		return h
	}
	e.wait(ctx, p)
	h.Ignored += p.ignored
	if p.outcome != outReply {
		return h.end(ctx, p, ResultNoQuery)
	}
	h.RequestRTT = p.at.Sub(start)
	h.Query, h.QueryFrom = p.query, p.from
	if h.Query.Gateway.IsValid() {
		var buf [teardownLen]byte
		_ = e.send(AppendTeardown(buf[:0], Teardown{MAC: h.Query.MAC, Nonce: h.Query.Nonce, Gateway: h.Query.Gateway}), relay)
	}
	h.Result = ResultOK
	if h.Query.Limit {
		h.Result = ResultLimit
	}
	return h
}

// end finishes a handshake whose step got no reply, in this order: an ICMP error, then cancellation, then junk, then silence.
func (h HandshakeReply) end(ctx context.Context, p *inflight, silent Result) HandshakeReply {
	switch {
	case p.outcome == outFailed:
		h.Result, h.Err = ResultError, p.err
		if errors.Is(p.err, syscall.ECONNREFUSED) {
			h.Result = ResultRefused
		}
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		h.Result, h.Err = ResultError, ctx.Err()
	case p.ignored > 0:
		h.Result = ResultBadReply
	default:
		h.Result = silent
	}
	return h
}

// outcome is how a pending step ended, if the reader ended it.
type outcome uint8

const (
	outNone    outcome = iota // timer, context or Close before anything else
	outReply                  // the awaited reply
	outFailed                 // an ICMP error or Close; err says which
	outFlooded                // maxReads datagrams charged
)

// inflight is one probe's step in flight. The fields after timer belong to
// the endpoint's mu while the step is registered; the probe reads them once
// wait has taken it out of the maps.
type inflight struct {
	ready chan struct{} // capacity 1: the reader never blocks on it
	timer *time.Timer

	nonce      uint32
	want       byte           // typeAdvertisement or typeQuery
	dst        netip.AddrPort // without zone: replies and ICMP errors carry none
	prev, next *inflight      // other steps awaiting dst

	done    bool
	outcome outcome
	ignored int // in this step
	at      time.Time
	from    netip.AddrPort
	relay   netip.Addr
	query   Query
	err     error
}

// inflightPool recycles the channel and timer, which would otherwise be most
// of a probe's allocations.
var inflightPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &inflight{ready: make(chan struct{}, 1), timer: t}
}}

func getInflight(budget time.Duration) *inflight {
	p := inflightPool.Get().(*inflight)
	p.timer.Reset(budget)
	return p
}

// putInflight recycles p, which wait or exchange has taken out of the maps.
// Since Go 1.23 a stopped timer delivers nothing stale after a Reset.
func putInflight(p *inflight) {
	p.timer.Stop()
	p.query, p.err = Query{}, nil
	inflightPool.Put(p)
}

// endpoint is one shared socket and the steps waiting on it.
type endpoint struct {
	c       *Client
	conn    *net.UDPConn
	rc      syscall.RawConn
	network string

	mu      sync.Mutex
	closed  bool
	byNonce map[uint32]*inflight
	byDst   map[netip.AddrPort]*inflight // head of a list linked by next
	rnd     [256]byte                    // crypto/rand output, drawn 64 nonces at a time
	rndUsed int

	raw  rawIO    // the platform's way to send and receive
	errq errQueue // hands ICMP errors to icmpError
}

// exchange registers p for a reply of type want under a fresh nonce and
// sends the message that asks for it to dst. It returns the time of
// sending; on error p is registered no more.
func (e *endpoint) exchange(p *inflight, want byte, dst netip.AddrPort) (time.Time, error) {
	nonce, err := e.register(p, want, dst)
	if err != nil {
		return time.Time{}, err
	}
	var buf [discoveryLen]byte
	var msg []byte
	if want == typeAdvertisement {
		msg = AppendDiscovery(buf[:0], nonce)
	} else {
		msg = AppendRequest(buf[:0], nonce, false)
	}
	start := time.Now()
	if err := e.send(msg, dst); err != nil {
		e.release(p)
		return start, err
	}
	return start, nil
}

// register enters p into the maps before anything is sent, since the reply
// can come back before the sender runs again.
func (e *endpoint) register(p *inflight, want byte, dst netip.AddrPort) (uint32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, ErrClientClosed
	}
	nonce, err := e.nonceLocked()
	if err != nil {
		return 0, err
	}
	p.nonce, p.want, p.dst = nonce, want, netip.AddrPortFrom(dst.Addr().WithZone(""), dst.Port())
	p.done, p.outcome, p.ignored, p.err = false, outNone, 0, nil
	e.byNonce[nonce] = p
	p.prev, p.next = nil, e.byDst[p.dst]
	if p.next != nil {
		p.next.prev = p
	}
	e.byDst[p.dst] = p
	return nonce, nil
}

// nonceLocked draws a random non-zero nonce that no pending step uses.
// Reading crypto/rand 256 bytes at a time saves a system call per nonce.
func (e *endpoint) nonceLocked() (uint32, error) {
	for range 64 {
		if e.rndUsed == 0 || e.rndUsed == len(e.rnd) {
			_, _ = rand.Read(e.rnd[:]) // never fails since Go 1.24
			e.rndUsed = 0
		}
		n := binary.BigEndian.Uint32(e.rnd[e.rndUsed:])
		e.rndUsed += 4
		if n != 0 && e.byNonce[n] == nil {
			return n, nil
		}
	}
	return 0, errNoNonce
}

// removeLocked takes p out of the maps.
func (e *endpoint) removeLocked(p *inflight) {
	if e.byNonce[p.nonce] == p {
		delete(e.byNonce, p.nonce)
	}
	switch {
	case p.prev != nil:
		p.prev.next = p.next
	case p.next != nil:
		e.byDst[p.dst] = p.next
	default:
		delete(e.byDst, p.dst)
	}
	if p.next != nil {
		p.next.prev = p.prev
	}
	p.prev, p.next = nil, nil
}

// finishLocked ends p's step with o and wakes its probe.
func (e *endpoint) finishLocked(p *inflight, o outcome) {
	e.removeLocked(p)
	p.done, p.outcome = true, o
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// chargeLocked counts a datagram against p; like the per-call functions,
// a step stops listening after maxReads of them.
func (e *endpoint) chargeLocked(p *inflight) {
	p.ignored++
	e.c.stats.ignored.Add(1)
	if p.ignored >= maxReads {
		e.finishLocked(p, outFlooded)
	}
}

// wait blocks until p's step is answered or failed, its timer fires or ctx
// is done, and leaves p out of the maps with no wakeup queued, so that the
// next step or the pool starts clean.
func (e *endpoint) wait(ctx context.Context, p *inflight) {
	select {
	case <-p.ready:
	case <-p.timer.C:
	case <-ctx.Done():
	}
	e.release(p)
}

// release takes p out of the maps unless the reader already did, and
// drops a wakeup that raced with the caller giving up. A reply that came
// in before the lock stays in p and is taken, as a read would have.
func (e *endpoint) release(p *inflight) {
	e.mu.Lock()
	if !p.done {
		e.removeLocked(p)
	}
	e.mu.Unlock()
	select {
	case <-p.ready:
	default:
	}
}

// send writes msg to dst, past ICMP errors meant for other probes (see
// errQueue.send).
func (e *endpoint) send(msg []byte, dst netip.AddrPort) error {
	return e.errq.send(func() error { return e.sendTo(msg, dst) })
}

// read is the endpoint's reader goroutine: it runs until the socket is
// closed.
func (e *endpoint) read() {
	defer e.c.wg.Done()
	buf := make([]byte, maxDatagram) // nothing truncated can then parse
	failures, burst := 0, 0
	for {
		mark := e.errq.mark()
		n, from, err := e.recvFrom(buf)
		if err == nil {
			failures = 0
			e.dispatch(buf[:n], from, time.Now())
			if burst++; burst == readBurst {
				burst = 0
				runtime.Gosched()
			}
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		// Linux fails a read with the socket's pending ICMP error before
		// returning queued data; reading the error queue clears it.
		if e.errq.drainSince(mark) {
			failures = 0
			continue
		}
		e.c.stats.readErrors.Add(1)
		if failures++; failures > 1 {
			pause := min(time.Duration(failures)*time.Millisecond, maxReadBackoff)
			select {
			case <-time.After(pause):
			case <-e.c.closing:
				return
			}
		}
	}
}

// nonceField returns the nonce a datagram carries in the position its
// type puts one: discovery nonce of an Advertisement, request nonce of a
// Query. Other types carry none a probe waits on.
func nonceField(b []byte) (uint32, bool) {
	switch {
	case len(b) >= 8 && b[0] == typeAdvertisement:
		return binary.BigEndian.Uint32(b[4:8]), true
	case len(b) >= macHeaderLen && b[0] == typeQuery:
		return binary.BigEndian.Uint32(b[8:12]), true
	}
	return 0, false
}

// dispatch hands one datagram to the step it answers, or charges it to the
// steps it can be pinned on, or counts it as unmatched. Parsing happens
// before the lock; under it the work is a map lookup and, for junk, a walk
// of at most maxChain steps.
func (e *endpoint) dispatch(b []byte, from netip.AddrPort, at time.Time) {
	nonce, hasNonce := nonceField(b)
	var (
		relay netip.Addr
		q     Query
		perr  error
	)
	if hasNonce {
		if b[0] == typeAdvertisement {
			_, relay, perr = ParseAdvertisement(b)
		} else {
			q, perr = ParseQuery(b)
		}
	}

	e.mu.Lock()
	if p := e.byNonce[nonce]; hasNonce && p != nil {
		if perr != nil || b[0] != p.want {
			e.chargeLocked(p)
		} else {
			p.at, p.from, p.relay, p.query = at, from, relay, q
			e.finishLocked(p, outReply)
			e.c.stats.replies.Add(1)
		}
		e.mu.Unlock()
		return
	}
	charged := 0
	for p := e.byDst[from]; p != nil && charged < maxChain; charged++ {
		next := p.next // chargeLocked may unlink p
		e.chargeLocked(p)
		p = next
	}
	e.mu.Unlock()
	if charged == 0 {
		e.c.stats.unmatched.Add(1)
	}
}

// queuedError takes one entry of the socket's error queue.
func (e *endpoint) queuedError(dst netip.AddrPort, errno syscall.Errno) {
	if !dst.IsValid() || errno == 0 {
		e.c.stats.icmpUnmatched.Add(1)
		return
	}
	e.icmpError(dst, errno)
}

// icmpError ends every step waiting on dst with errno, which an ICMP error
// (or a local one) reported for a datagram sent there.
func (e *endpoint) icmpError(dst netip.AddrPort, errno syscall.Errno) {
	var err error
	failed := 0
	e.mu.Lock()
	for p := e.byDst[dst]; p != nil && failed < maxChain; failed++ {
		if err == nil {
			err = icmpOpError(e.network, e.conn.LocalAddr().(*net.UDPAddr).AddrPort(), dst, errno)
		}
		next := p.next
		p.err = err
		e.finishLocked(p, outFailed)
		p = next
	}
	e.mu.Unlock()
	if failed > 0 {
		e.c.stats.icmp.Add(1)
	} else {
		e.c.stats.icmpUnmatched.Add(1)
	}
}

// close ends every pending step with ErrClientClosed and closes the
// socket, which ends the reader.
func (e *endpoint) close() {
	e.mu.Lock()
	e.closed = true
	for _, p := range e.byNonce {
		p.err = ErrClientClosed
		e.finishLocked(p, outFailed)
	}
	e.mu.Unlock()
	_ = e.conn.Close()
}
