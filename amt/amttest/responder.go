// Package amttest provides a fake AMT relay for tests. It is not a relay: it
// only answers RFC 7450 Relay Discovery with Relay Advertisement (and can be
// told to misbehave in specific ways), which is all a discovery health probe
// ever exercises.
package amttest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/amtdns/amtrelay/amt"
)

// Mode selects how the Responder answers a valid Relay Discovery.
type Mode int

const (
	// Normal answers with a correct Relay Advertisement.
	Normal Mode = iota
	// Silent receives and drops every Discovery.
	Silent
	// WrongNonce answers with a nonce other than the one received.
	WrongNonce
	// WrongType answers with the right nonce and length but a message
	// type other than Advertisement.
	WrongType
	// Short answers with only the 8-byte Advertisement header (no relay
	// address).
	Short
	// OtherSource answers correctly but from a second socket with its own
	// port, so the reply's source differs from the probed address, as with
	// relays behind anycast or bound to a wildcard address.
	OtherSource
)

var modeNames = [...]string{"normal", "silent", "wrong_nonce", "wrong_type", "short", "other_source"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode is the inverse of Mode.String, for command-line flags.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("amttest: unknown mode %q", s)
}

// Responder is a fake relay bound to one UDP address. Its methods are safe
// for concurrent use.
type Responder struct {
	addr        netip.AddrPort // fixed at Start, port resolved
	mode        atomic.Int64
	advertised  atomic.Pointer[netip.Addr]
	discoveries atomic.Uint64

	mu      sync.Mutex // serialises Stop and Restart
	conn    *net.UDPConn
	other   *net.UDPConn // source for OtherSource replies
	done    chan struct{}
	running bool
}

// Start binds addr (an IP literal with port, e.g. "127.0.0.5:0" or
// "[::1]:0"; port 0 picks a free one) and answers until Stop. The advertised
// address defaults to the bound IP; with a wildcard bind, set it with
// SetAdvertised.
func Start(addr string) (*Responder, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("amttest: %w", err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	r := &Responder{addr: ap}
	own := ap.Addr().WithZone("")
	r.advertised.Store(&own)
	if err := r.listen(); err != nil {
		return nil, err
	}
	// The caller may have asked for port 0; Restart must reuse the port the
	// kernel chose.
	r.addr = r.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	r.addr = netip.AddrPortFrom(r.addr.Addr().Unmap(), r.addr.Port())
	r.serve()
	return r, nil
}

func network(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

// listen opens both sockets; the caller holds mu or owns r exclusively.
func (r *Responder) listen() error {
	nw := network(r.addr.Addr())
	conn, err := net.ListenUDP(nw, net.UDPAddrFromAddrPort(r.addr))
	if err != nil {
		return fmt.Errorf("amttest: %w", err)
	}
	other, err := net.ListenUDP(nw, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.addr.Addr(), 0)))
	if err != nil {
		conn.Close()
		return fmt.Errorf("amttest: second socket: %w", err)
	}
	r.conn, r.other = conn, other
	return nil
}

// serve starts the answering goroutine; the caller holds mu or owns r.
func (r *Responder) serve() {
	r.done = make(chan struct{})
	r.running = true
	go r.loop(r.conn, r.other, r.done)
}

// loop runs until conn is closed by Stop. Other read errors are transient
// for UDP (nothing here can make them permanent), so they are skipped.
func (r *Responder) loop(conn, other *net.UDPConn, done chan<- struct{}) {
	defer close(done)
	var in [64]byte
	var out [32]byte
	for {
		n, from, err := conn.ReadFromUDPAddrPort(in[:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		nonce, err := amt.ParseDiscovery(in[:n])
		if err != nil || nonce == 0 {
			continue // dropped silently, as amtrelayd does
		}
		r.discoveries.Add(1)
		reply := conn
		msg := amt.AppendAdvertisement(out[:0], nonce, *r.advertised.Load())
		switch Mode(r.mode.Load()) {
		case Silent:
			continue
		case WrongNonce:
			msg = amt.AppendAdvertisement(out[:0], nonce^0x5a5a5a5a, *r.advertised.Load())
		case WrongType:
			msg[0] = 4 // Membership Query
		case Short:
			msg = msg[:8]
		case OtherSource:
			reply = other
		}
		// A send failure is what a real relay would suffer silently too.
		_, _ = reply.WriteToUDPAddrPort(msg, from)
	}
}

// Addr returns the bound address with the actual port.
func (r *Responder) Addr() netip.AddrPort { return r.addr }

// SetMode changes how subsequent Discoveries are answered.
func (r *Responder) SetMode(m Mode) { r.mode.Store(int64(m)) }

// SetAdvertised sets the relay address put in Advertisements.
func (r *Responder) SetAdvertised(a netip.Addr) { r.advertised.Store(&a) }

// Discoveries returns how many valid Discoveries (non-zero nonce) have been
// received, across restarts, whatever the mode.
func (r *Responder) Discoveries() uint64 { return r.discoveries.Load() }

// Stop closes the sockets and waits for the answering goroutine. Afterwards
// the port is closed, so probes are refused (or time out). Stopping a stopped
// Responder is a no-op.
func (r *Responder) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopLocked()
}

func (r *Responder) stopLocked() error {
	if !r.running {
		return nil
	}
	r.running = false
	err := errors.Join(r.conn.Close(), r.other.Close())
	<-r.done
	return err
}

// Restart binds the same address and port again and resumes answering,
// stopping first if still running. It fails if another socket took the port
// in the meantime.
func (r *Responder) Restart() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.stopLocked(); err != nil {
		return err
	}
	if err := r.listen(); err != nil {
		return err
	}
	r.serve()
	return nil
}
