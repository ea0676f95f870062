package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// maxServers is resolv.conf's MAXNS: the C library ignores more.
const maxServers = 3

// parseResolver reads -resolver: an IP literal, optionally with a port
// (IPv6 in brackets when it has one), port 53 by default.
func parseResolver(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return netip.AddrPortFrom(a, 53), nil
		}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address (names are not looked up)", host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not a port", port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// systemResolvers reads the nameservers of a resolv.conf file. When it
// cannot be read or names none, the C library and Go's resolver both fall
// back to the local host, and so does this; note says so.
func systemResolvers(path string) (servers []netip.AddrPort, note string) {
	local := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")}
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return local, fmt.Sprintf("%v; using the local host as resolvers do", err)
	}
	port := uint16(53)
	if p, err := strconv.ParseUint(cc.Port, 10, 16); err == nil && p != 0 {
		port = uint16(p)
	}
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		servers = append(servers, netip.AddrPortFrom(a.Unmap(), port))
		if len(servers) == maxServers {
			break
		}
	}
	if len(servers) == 0 {
		return local, path + " names no nameserver; using the local host as resolvers do"
	}
	return servers, ""
}

// rateLimiter holds queries to at most n per window: RFC 8777 section 3.2
// asks clients whose DNS library has no limit of its own for 10 per 100 ms.
type rateLimiter struct {
	n      int
	window time.Duration
	mu     sync.Mutex
	sent   []time.Time
}

func newRateLimiter(n int, window time.Duration) *rateLimiter {
	return &rateLimiter{n: n, window: window}
}

func (l *rateLimiter) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for {
		l.mu.Lock()
		now := time.Now()
		i := 0
		for i < len(l.sent) && now.Sub(l.sent[i]) >= l.window {
			i++
		}
		l.sent = l.sent[i:]
		if len(l.sent) < l.n {
			l.sent = append(l.sent, now)
			l.mu.Unlock()
			return nil
		}
		wait := l.window - now.Sub(l.sent[0])
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// exchange is one query sent to one server over one transport.
type exchange struct {
	Server    netip.AddrPort
	Transport string // "udp" or "tcp"
	RTT       time.Duration
	// Rcode is -1 when no reply came.
	Rcode     int
	Truncated bool
	Err       error
}

// outcome classifies what an exchange or a lookup ended in, for the report.
func (e exchange) outcome() string {
	switch {
	case e.Err != nil:
		return errorKind(e.Err)
	case e.Rcode == dns.RcodeSuccess:
		return "NOERROR"
	}
	return rcodeName(e.Rcode)
}

func rcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// errorKind names a failure the way the report does.
func errorKind(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return "error"
}

// resolver sends queries to a list of servers, the way a stub resolver
// does: the next server is asked when one times out, cannot be reached or
// answers SERVFAIL, REFUSED, NOTIMP or FORMERR.
type resolver struct {
	servers []netip.AddrPort
	timeout time.Duration // per exchange
	udpSize uint16
	limit   *rateLimiter
	// tcpAddr gives a server's TCP address; the same as UDP's except in
	// tests, where a server on port 0 gets a different port for each.
	tcpAddr func(netip.AddrPort) netip.AddrPort
}

// lookup is one question and how it was answered.
type lookup struct {
	Name      string
	Type      uint16
	Exchanges []exchange
	// Reply is the reply the answer comes from, nil when no server gave a
	// usable one.
	Reply *reply
}

// retryable rcodes: another server may do better.
func retryable(rc int) bool {
	return rc == dns.RcodeServerFailure || rc == dns.RcodeRefused || rc == dns.RcodeNotImplemented || rc == dns.RcodeFormatError
}

func (rv *resolver) query(ctx context.Context, name string, qtype uint16) lookup {
	l := lookup{Name: name, Type: qtype}
	for _, srv := range rv.servers {
		if ctx.Err() != nil {
			break
		}
		ex, rep := rv.exchange(ctx, srv, name, qtype, "udp")
		l.Exchanges = append(l.Exchanges, ex)
		if rep != nil && rep.Truncated {
			// The truncated reply stands in if TCP fails too: its rcode
			// and whatever records came whole are still the server's word.
			l.Reply = rep
			ex, rep = rv.exchange(ctx, srv, name, qtype, "tcp")
			l.Exchanges = append(l.Exchanges, ex)
		}
		if rep == nil {
			continue
		}
		l.Reply = rep
		if !retryable(rep.Rcode) {
			break
		}
	}
	return l
}

// exchange sends one query and waits for its reply.
func (rv *resolver) exchange(ctx context.Context, srv netip.AddrPort, name string, qtype uint16, proto string) (exchange, *reply) {
	if proto == "tcp" && rv.tcpAddr != nil {
		srv = rv.tcpAddr(srv)
	}
	ex := exchange{Server: srv, Transport: proto, Rcode: -1}
	if ex.Err = rv.limit.wait(ctx); ex.Err != nil {
		return ex, nil
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = true
	q.SetEdns0(rv.udpSize, false)
	out, err := q.Pack()
	if err != nil {
		ex.Err = err
		return ex, nil
	}
	deadline := time.Now().Add(rv.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	match := func(r reply) bool {
		return r.ID == q.Id && r.Response && r.QType == qtype && r.QClass == dns.ClassINET && strings.EqualFold(r.QName, name)
	}
	start := time.Now()
	var rep reply
	if proto == "tcp" {
		rep, err = tcpExchange(ctx, srv, out, deadline, match)
	} else {
		rep, err = udpExchange(ctx, srv, out, deadline, match)
	}
	ex.RTT = time.Since(start)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			// The read failed because the watch woke it, not on its own.
			err = ctx.Err()
		}
		ex.Err = err
		return ex, nil
	}
	ex.Rcode, ex.Truncated = rep.Rcode, rep.Truncated
	return ex, &rep
}

// wakeOn moves conn's deadline into the past when ctx ends, so that a
// blocked read returns; the returned function stops the watch.
func wakeOn(ctx context.Context, conn net.Conn) func() bool {
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
}

// udpExchange uses a connected socket, so the kernel drops datagrams from
// other sources and reports ICMP port unreachable as ECONNREFUSED. Replies
// that do not match (stale IDs, other questions) are skipped.
func udpExchange(ctx context.Context, srv netip.AddrPort, q []byte, deadline time.Time, match func(reply) bool) (reply, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv))
	if err != nil {
		return reply{}, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return reply{}, err
	}
	defer wakeOn(ctx, conn)()
	if _, err := conn.Write(q); err != nil {
		return reply{}, err
	}
	buf := make([]byte, dns.MaxMsgSize)
	for range 64 {
		n, err := conn.Read(buf)
		if err != nil {
			return reply{}, err
		}
		raw := append([]byte(nil), buf[:n]...)
		r, err := parseReply(raw)
		if err != nil {
			if len(raw) >= 2 && binary.BigEndian.Uint16(raw) == binary.BigEndian.Uint16(q) {
				return reply{}, fmt.Errorf("malformed reply: %w", err)
			}
			continue
		}
		if match(r) {
			return r, nil
		}
	}
	return reply{}, errors.New("too many unrelated datagrams")
}

func tcpExchange(ctx context.Context, srv netip.AddrPort, q []byte, deadline time.Time, match func(reply) bool) (reply, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", srv.String())
	if err != nil {
		return reply{}, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return reply{}, err
	}
	defer wakeOn(ctx, conn)()
	framed := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(q)), uint16(len(q)))
	if _, err := conn.Write(append(framed, q...)); err != nil {
		return reply{}, err
	}
	var n [2]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return reply{}, err
	}
	raw := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(conn, raw); err != nil {
		return reply{}, err
	}
	r, err := parseReply(raw)
	if err != nil {
		return reply{}, fmt.Errorf("malformed reply: %w", err)
	}
	if !match(r) {
		return reply{}, errors.New("reply does not match the query")
	}
	return r, nil
}
