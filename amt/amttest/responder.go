// Package amttest provides a fixture AMT relay for tests. It behaves like a
// relay on the wire (RFC 7450) while staying small:
//
//   - Relay Discovery is answered with a Relay Advertisement naming the
//     bound address, or the one set with SetAdvertised.
//   - A Request is answered with a Membership Query from the socket it
//     arrived on: a MAC over the gateway's address, port and nonce (HMAC-
//     SHA256 with a per-start random secret, cut to 48 bits), an IGMPv3 or
//     MLDv2 general query as the P flag asks (IPv4 with Router Alert, 48
//     bytes like amtrelayd's), the configured QQI, and the gateway fields
//     when Config.GatewayField is set.
//   - A Membership Update with a valid MAC joins or leaves (S,G) channels
//     for the gateway. State is kept per gateway IP address, as amtrelayd
//     does, so data goes to the port of the gateway's latest Update; each
//     channel expires Config.GatewayTimeout after the report that last
//     named it. Updates with a wrong MAC are counted and dropped. With
//     Config.OneTunnelPerGatewayIP the relay keeps the Linux driver's
//     tunnel per gateway IP instead: the first Request's port gets every
//     Query and the data, and Updates must carry the latest Request's
//     nonce and MAC.
//   - A valid Teardown drops the gateway's state.
//   - Multicast Data goes to every gateway joined to the channel: from
//     Inject, for in-process tests, or from real multicast received on
//     Config.DataInterface (source-specific joins made while at least one
//     gateway is joined), with the IP and UDP headers rebuilt.
//
// SetMode makes it misbehave in the ways listed under Mode. Everything runs
// on goroutines the Responder owns: Start begins them, Stop waits for them.
package amttest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// Mode selects how the Responder misbehaves. Modes take effect at once for
// every message received afterwards.
type Mode int

const (
	// Normal behaves like a relay.
	Normal Mode = iota
	// Silent receives and drops every message.
	Silent
	// WrongNonce answers Discovery with a nonce other than the one
	// received. Requests and Updates are handled normally.
	WrongNonce
	// WrongType answers Discovery with the right nonce and length but a
	// message type other than Advertisement.
	WrongType
	// Short answers Discovery with only the 8-byte Advertisement header
	// (no relay address).
	Short
	// OtherSource sends every answer, and Multicast Data, from a second
	// socket with its own port, so replies come from another source than
	// the address a gateway sent to, as with relays behind anycast or
	// bound to a wildcard address.
	OtherSource
	// RequestSilent answers Discovery but never Requests: a relay that is
	// up but does not take tunnels.
	RequestSilent
	// Limit sets the L flag in Queries ("no new tunnels or joins").
	// Updates that still come are handled.
	Limit
	// NoData accepts joins but forwards no Multicast Data.
	NoData
)

var modeNames = [...]string{"normal", "silent", "wrong_nonce", "wrong_type", "short", "other_source", "request_silent", "limit", "no_data"}

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

// Defaults for Config, taken from amtrelayd: its Queries carry QQIC 20 and
// it forgets a gateway 60 s after its last Update.
const (
	DefaultQQI            = 20 * time.Second
	DefaultGatewayTimeout = 60 * time.Second
	// InjectSourcePort and DefaultDataPort are the UDP ports of datagrams
	// built by Inject (the destination is Config.DataPort when set).
	InjectSourcePort = 5000
	DefaultDataPort  = 5001
)

// Config holds what a Responder is started with. The zero Config is a relay
// with amtrelayd's timers and no real multicast.
type Config struct {
	// QQI is the Querier's Query Interval put in Queries, in whole
	// seconds from 1 s to 31744 s (what the 8-bit code can carry);
	// default DefaultQQI.
	QQI time.Duration
	// GatewayTimeout is how long a gateway's channel stays joined after
	// the last Update naming it; default DefaultGatewayTimeout.
	GatewayTimeout time.Duration
	// OneTunnelPerGatewayIP keeps gateway state as the Linux driver
	// (drivers/net/amt.c) does, rather than as amtrelayd: one tunnel per
	// gateway IP address, made by its first Request, whose source port is
	// where every later Query and all data go, whatever port a Request or
	// Update comes from. Each Request replaces the tunnel's nonce and so
	// its MAC, and an Update is taken only with the latest of both. The
	// tunnel is forgotten GatewayTimeout after it was made or took its
	// last Update.
	OneTunnelPerGatewayIP bool
	// GatewayField sets the G flag in Queries and appends the gateway's
	// address and port, which RFC 7450 relays that take Teardowns send.
	// amtrelayd never does, and VLC rejects such Queries.
	GatewayField bool
	// DataInterface and DataPort turn on real multicast: while a gateway
	// is joined to (S,G), the Responder joins (S,G) on this interface
	// (IGMPv3 or MLDv2 source-specific membership) with UDP sockets bound
	// to DataPort, and forwards what arrives. Both or neither must be set.
	DataInterface string
	DataPort      uint16
	// Logf, if set, is told about multicast joins and leaves and their
	// failures; the end-to-end suite's logs need them.
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() error {
	if c.QQI == 0 {
		c.QQI = DefaultQQI
	}
	if c.GatewayTimeout == 0 {
		c.GatewayTimeout = DefaultGatewayTimeout
	}
	if c.QQI < time.Second || c.QQI > 31744*time.Second || c.QQI%time.Second != 0 {
		return fmt.Errorf("amttest: QQI %v is not whole seconds in [1s, 31744s]", c.QQI)
	}
	if c.GatewayTimeout < 0 {
		return fmt.Errorf("amttest: negative gateway timeout %v", c.GatewayTimeout)
	}
	if (c.DataInterface == "") != (c.DataPort == 0) {
		return errors.New("amttest: DataInterface and DataPort go together")
	}
	return nil
}

// Stats counts what a Responder received and sent, across restarts.
type Stats struct {
	// Discoveries and Requests with a non-zero nonce, whatever the mode.
	Discoveries, Requests uint64
	// Updates with a valid MAC, whatever their records.
	Updates uint64
	// BadMAC counts Updates and Teardowns dropped for their MAC (with
	// OneTunnelPerGatewayIP, also Updates without the latest nonce and MAC
	// of their address's tunnel, or without a tunnel).
	BadMAC uint64
	// Malformed counts Requests, Updates and Teardowns that did not parse.
	Malformed uint64
	// Teardowns that removed a gateway's state.
	Teardowns uint64
	// DataSent counts Multicast Data messages sent, one per gateway.
	DataSent uint64
	// MulticastErrors counts failed joins and leaves on the data
	// interface and unusable datagrams received there.
	MulticastErrors uint64
}

// Responder is a fixture relay bound to one UDP address. Its methods are
// safe for concurrent use.
type Responder struct {
	addr netip.AddrPort // fixed at Start, port resolved
	cfg  Config

	mode       atomic.Int64
	advertised atomic.Pointer[netip.Addr]
	counters   struct {
		discoveries, requests, updates, badMAC, malformed, teardowns, dataSent, mcastErrors atomic.Uint64
	}

	mu      sync.Mutex // serialises Stop and Restart
	running bool
	wg      sync.WaitGroup // the answering and multicast goroutines

	// st guards the relay state below; the sockets are kept here too so
	// that Inject and the multicast readers send on the current ones.
	st       sync.Mutex
	conn     *net.UDPConn
	other    *net.UDPConn // source for OtherSource replies
	data     *dataSockets // nil without Config.DataInterface
	secret   [32]byte
	gateways map[netip.Addr]*gateway
	tunnels  map[netip.Addr]*ipTunnel // with Config.OneTunnelPerGatewayIP
	joins    map[channel]uint64
}

// Start binds addr (an IP literal with port, e.g. "127.0.0.5:0" or
// "[::1]:0"; port 0 picks a free one) with the zero Config and answers until
// Stop. The advertised address defaults to the bound IP; with a wildcard
// bind, set it with SetAdvertised.
func Start(addr string) (*Responder, error) {
	return StartConfig(addr, Config{})
}

// StartConfig is Start with a Config.
func StartConfig(addr string, cfg Config) (*Responder, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("amttest: %w", err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	r := &Responder{addr: ap, cfg: cfg, joins: make(map[channel]uint64)}
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

// listen opens the sockets and starts with a fresh secret and no gateway
// state, as a restarted relay process would; the caller holds mu or owns r
// exclusively.
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
	var data *dataSockets
	if r.cfg.DataInterface != "" {
		if data, err = openData(r.cfg.DataInterface, r.cfg.DataPort); err != nil {
			conn.Close()
			other.Close()
			return err
		}
	}
	r.st.Lock()
	defer r.st.Unlock()
	r.conn, r.other, r.data = conn, other, data
	_, _ = rand.Read(r.secret[:]) // never fails since Go 1.24
	r.gateways = make(map[netip.Addr]*gateway)
	r.tunnels = make(map[netip.Addr]*ipTunnel)
	return nil
}

// serve starts the goroutines; the caller holds mu or owns r.
func (r *Responder) serve() {
	r.running = true
	r.wg.Add(1)
	go r.loop(r.conn)
	if r.data != nil {
		r.data.serve(r, &r.wg)
	}
}

// maxDatagram is the largest UDP payload; Updates can be large, and reading
// into a smaller buffer would silently truncate them.
const maxDatagram = 1<<16 - 1

// loop runs until conn is closed by Stop. Other read errors are transient
// for UDP (nothing here can make them permanent), so they are skipped. The
// read deadline wakes it when a channel membership is due to expire.
func (r *Responder) loop(conn *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		_ = conn.SetReadDeadline(r.nextExpiry())
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				r.expire(time.Now())
			}
			continue
		}
		r.handle(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// handle answers one datagram. Messages of other versions and of types a
// relay does not take are dropped silently, as amtrelayd does.
func (r *Responder) handle(b []byte, from netip.AddrPort) {
	if len(b) == 0 || b[0]>>4 != 0 {
		return
	}
	mode := Mode(r.mode.Load())
	switch b[0] { // version 0, so the byte is the message type
	case 1: // Relay Discovery
		r.handleDiscovery(b, from, mode)
	case 3: // Request
		r.handleRequest(b, from, mode)
	case 5: // Membership Update
		if mode != Silent {
			r.handleUpdate(b, from)
		}
	case 7: // Teardown
		if mode != Silent {
			r.handleTeardown(b)
		}
	}
}

func (r *Responder) handleDiscovery(b []byte, from netip.AddrPort, mode Mode) {
	nonce, err := amt.ParseDiscovery(b)
	if err != nil || nonce == 0 {
		return // dropped silently, as amtrelayd does
	}
	r.counters.discoveries.Add(1)
	var out [32]byte
	msg := amt.AppendAdvertisement(out[:0], nonce, *r.advertised.Load())
	switch mode {
	case Silent:
		return
	case WrongNonce:
		msg = amt.AppendAdvertisement(out[:0], nonce^0x5a5a5a5a, *r.advertised.Load())
	case WrongType:
		msg[0] = 4 // Membership Query
	case Short:
		msg = msg[:8]
	}
	r.send(msg, from, mode)
}

// send writes msg to dst from the socket the mode calls for.
func (r *Responder) send(msg []byte, dst netip.AddrPort, mode Mode) {
	r.st.Lock()
	defer r.st.Unlock()
	r.sendLocked(msg, dst, mode)
}

// sendLocked is send for callers holding st. A send failure is what a real
// relay would suffer silently too.
func (r *Responder) sendLocked(msg []byte, dst netip.AddrPort, mode Mode) bool {
	c := r.conn
	if mode == OtherSource {
		c = r.other
	}
	_, err := c.WriteToUDPAddrPort(msg, dst)
	return err == nil
}

// Addr returns the bound address with the actual port.
func (r *Responder) Addr() netip.AddrPort { return r.addr }

// SetMode changes how subsequent messages are handled.
func (r *Responder) SetMode(m Mode) { r.mode.Store(int64(m)) }

// SetAdvertised sets the relay address put in Advertisements.
func (r *Responder) SetAdvertised(a netip.Addr) { r.advertised.Store(&a) }

// Discoveries returns how many valid Discoveries (non-zero nonce) have been
// received, across restarts, whatever the mode.
func (r *Responder) Discoveries() uint64 { return r.counters.discoveries.Load() }

// Stats returns the counters, across restarts.
func (r *Responder) Stats() Stats {
	c := &r.counters
	return Stats{
		Discoveries:     c.discoveries.Load(),
		Requests:        c.requests.Load(),
		Updates:         c.updates.Load(),
		BadMAC:          c.badMAC.Load(),
		Malformed:       c.malformed.Load(),
		Teardowns:       c.teardowns.Load(),
		DataSent:        c.dataSent.Load(),
		MulticastErrors: c.mcastErrors.Load(),
	}
}

// Stop closes the sockets, waits for the Responder's goroutines and forgets
// all gateway state. Afterwards the port is closed, so probes are refused
// (or time out). Stopping a stopped Responder is a no-op.
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
	r.st.Lock()
	err := errors.Join(r.conn.Close(), r.other.Close())
	if r.data != nil {
		err = errors.Join(err, r.data.close())
	}
	r.st.Unlock()
	// Only once no goroutine can still be handling a message is the state
	// cleared; closing the data sockets has already left every group.
	r.wg.Wait()
	r.st.Lock()
	clear(r.gateways)
	clear(r.tunnels)
	r.st.Unlock()
	return err
}

// Restart binds the same address and port again with a new secret and no
// gateway state, like a restarted relay process, stopping first if still
// running. It fails if another socket took the port in the meantime.
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
