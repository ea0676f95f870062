package amttest

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// channel is an (S,G) pair, addresses unmapped.
type channel struct{ s, g netip.Addr }

// gateway is the state of one gateway IP address.
type gateway struct {
	// port is where data goes: the source port of the latest valid
	// Update. A second tunnel from the same address takes the stream, as
	// on amtrelayd.
	port uint16
	// channels maps each joined channel to the time it expires.
	channels map[channel]time.Time
}

// ipTunnel is the tunnel of one gateway IP address with
// Config.OneTunnelPerGatewayIP, as the Linux driver keeps it.
type ipTunnel struct {
	port    uint16 // the source port of the first Request: Queries and data go there
	nonce   uint32 // of the latest Request
	mac     amt.MAC
	expires time.Time
}

// Membership is one gateway's subscription to one channel.
type Membership struct {
	// Gateway is the gateway's address and the port data is sent to.
	Gateway       netip.AddrPort
	Source, Group netip.Addr
	Expires       time.Time
}

// mldQuerier is the source of MLDv2 queries: RFC 3810 section 5.1.14 has
// hosts ignore queries from anything but a link-local address.
var mldQuerier = netip.MustParseAddr("fe80::1")

// mac computes the Response MAC for a gateway endpoint and request nonce;
// the caller holds st (the secret changes on Restart).
func (r *Responder) mac(gw netip.AddrPort, nonce uint32) amt.MAC {
	h := hmac.New(sha256.New, r.secret[:])
	ip := gw.Addr().Unmap().As16()
	var tail [6]byte
	binary.BigEndian.PutUint16(tail[0:2], gw.Port())
	binary.BigEndian.PutUint32(tail[2:6], nonce)
	h.Write(ip[:])
	h.Write(tail[:])
	var m amt.MAC
	copy(m[:], h.Sum(nil))
	return m
}

func (r *Responder) handleRequest(b []byte, from netip.AddrPort, mode Mode) {
	nonce, mld, err := amt.ParseRequest(b)
	if err != nil {
		r.counters.malformed.Add(1)
		return
	}
	if nonce == 0 {
		return // amtrelayd drops these too
	}
	r.counters.requests.Add(1)
	if mode == Silent || mode == RequestSilent {
		return
	}
	q := amt.Query{
		Limit:       mode == Limit,
		Nonce:       nonce,
		MLD:         mld,
		Querier:     r.addr.Addr(),
		MaxResponse: time.Second,
		QRV:         2,
		QQI:         r.cfg.QQI,
	}
	if mld {
		q.Querier = mldQuerier
	} else if !q.Querier.Is4() {
		q.Querier = netip.IPv4Unspecified()
	}
	r.st.Lock()
	defer r.st.Unlock()
	gw := from
	if r.cfg.OneTunnelPerGatewayIP {
		gw = r.requestTunnelLocked(from, nonce)
	}
	if r.cfg.GatewayField {
		q.Gateway = gw
	}
	q.MAC = r.mac(gw, nonce)
	var out [128]byte
	r.sendLocked(amt.AppendQuery(out[:0], q), gw, mode)
}

// requestTunnelLocked makes or takes the tunnel of from's address for a
// Request with nonce, which becomes the only nonce its Updates may carry,
// and returns the gateway endpoint of the tunnel: from's address and the
// port of its first Request.
func (r *Responder) requestTunnelLocked(from netip.AddrPort, nonce uint32) netip.AddrPort {
	tn := r.tunnels[from.Addr()]
	if tn == nil {
		tn = &ipTunnel{port: from.Port(), expires: time.Now().Add(r.cfg.GatewayTimeout)}
		r.tunnels[from.Addr()] = tn
	}
	gw := netip.AddrPortFrom(from.Addr(), tn.port)
	tn.nonce, tn.mac = nonce, r.mac(gw, nonce)
	return gw
}

func (r *Responder) handleUpdate(b []byte, from netip.AddrPort) {
	u, err := amt.ParseUpdate(b)
	if err != nil {
		r.counters.malformed.Add(1)
		return
	}
	now := time.Now()
	r.st.Lock()
	defer r.st.Unlock()
	port := from.Port()
	if r.cfg.OneTunnelPerGatewayIP {
		// The Linux driver looks the tunnel up by address alone and takes
		// only the latest Request's nonce and MAC.
		tn := r.tunnels[from.Addr()]
		if tn == nil || u.Nonce != tn.nonce || !hmac.Equal(u.MAC[:], tn.mac[:]) {
			r.counters.badMAC.Add(1)
			return
		}
		tn.expires = now.Add(r.cfg.GatewayTimeout)
		port = tn.port
	} else if m := r.mac(from, u.Nonce); !hmac.Equal(u.MAC[:], m[:]) {
		// The MAC covers the nonce, so one comparison checks both: only
		// this relay can produce a MAC for a nonce it answered from this
		// endpoint.
		r.counters.badMAC.Add(1)
		return
	}
	r.counters.updates.Add(1)
	gw := r.gateways[from.Addr()]
	if gw == nil {
		gw = &gateway{channels: make(map[channel]time.Time)}
		r.gateways[from.Addr()] = gw
	}
	gw.port = port
	for _, rec := range u.Records {
		g := rec.Group.Unmap()
		if !g.IsMulticast() {
			continue // amtrelayd counts these as invalid groups
		}
		switch rec.Type {
		case amt.ModeIsInclude, amt.AllowNewSources:
			for _, s := range rec.Sources {
				r.joinLocked(gw, channel{s.Unmap(), g}, now)
			}
		case amt.ChangeToInclude:
			// The include list becomes exactly the sources given.
			keep := make(map[netip.Addr]bool, len(rec.Sources))
			for _, s := range rec.Sources {
				keep[s.Unmap()] = true
				r.joinLocked(gw, channel{s.Unmap(), g}, now)
			}
			for ch := range gw.channels {
				if ch.g == g && !keep[ch.s] {
					r.leaveLocked(gw, ch)
				}
			}
		case amt.BlockOldSources:
			for _, s := range rec.Sources {
				r.leaveLocked(gw, channel{s.Unmap(), g})
			}
		}
		// EXCLUDE-mode records ask for any-source multicast, which a
		// source-specific fixture does not serve.
	}
	if len(gw.channels) == 0 {
		delete(r.gateways, from.Addr())
	}
}

func (r *Responder) handleTeardown(b []byte) {
	td, err := amt.ParseTeardown(b)
	if err != nil {
		r.counters.malformed.Add(1)
		return
	}
	r.st.Lock()
	defer r.st.Unlock()
	if m := r.mac(td.Gateway, td.Nonce); !hmac.Equal(td.MAC[:], m[:]) {
		r.counters.badMAC.Add(1)
		return
	}
	r.counters.teardowns.Add(1)
	ip := td.Gateway.Addr().Unmap()
	// The state belongs to the endpoint that last sent an Update; a
	// Teardown for an older port of the same address must not end it.
	if gw := r.gateways[ip]; gw != nil && gw.port == td.Gateway.Port() {
		for ch := range gw.channels {
			r.leaveLocked(gw, ch)
		}
		delete(r.gateways, ip)
	}
}

// joinLocked joins or refreshes gw on ch, joining ch on the data interface
// when gw is its first gateway.
func (r *Responder) joinLocked(gw *gateway, ch channel, now time.Time) {
	if _, ok := gw.channels[ch]; !ok {
		r.joins[ch]++
		if !r.joinedLocked(ch) && r.data != nil {
			r.data.join(r, ch)
		}
	}
	gw.channels[ch] = now.Add(r.cfg.GatewayTimeout)
}

// leaveLocked removes ch from gw, leaving it on the data interface when no
// gateway is left on it.
func (r *Responder) leaveLocked(gw *gateway, ch channel) {
	if _, ok := gw.channels[ch]; !ok {
		return
	}
	delete(gw.channels, ch)
	if !r.joinedLocked(ch) && r.data != nil {
		r.data.leave(r, ch)
	}
}

func (r *Responder) joinedLocked(ch channel) bool {
	for _, gw := range r.gateways {
		if _, ok := gw.channels[ch]; ok {
			return true
		}
	}
	return false
}

// expire drops every membership and tunnel whose time has come.
func (r *Responder) expire(now time.Time) {
	r.st.Lock()
	defer r.st.Unlock()
	for ip, gw := range r.gateways {
		for ch, t := range gw.channels {
			if !t.After(now) {
				r.leaveLocked(gw, ch)
			}
		}
		if len(gw.channels) == 0 {
			delete(r.gateways, ip)
		}
	}
	for ip, tn := range r.tunnels {
		if !tn.expires.After(now) {
			delete(r.tunnels, ip)
		}
	}
}

// nextExpiry returns when the earliest membership or tunnel expires, or the
// zero time (no deadline) when there is none.
func (r *Responder) nextExpiry() time.Time {
	r.st.Lock()
	defer r.st.Unlock()
	var next time.Time
	for _, gw := range r.gateways {
		for _, t := range gw.channels {
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	for _, tn := range r.tunnels {
		if next.IsZero() || tn.expires.Before(next) {
			next = tn.expires
		}
	}
	return next
}

// Memberships lists the current, unexpired memberships, ordered by gateway,
// group and source.
func (r *Responder) Memberships() []Membership {
	now := time.Now()
	r.st.Lock()
	var ms []Membership
	for ip, gw := range r.gateways {
		for ch, t := range gw.channels {
			if t.After(now) {
				ms = append(ms, Membership{netip.AddrPortFrom(ip, gw.port), ch.s, ch.g, t})
			}
		}
	}
	r.st.Unlock()
	slices.SortFunc(ms, func(a, b Membership) int {
		return cmp.Or(a.Gateway.Compare(b.Gateway), a.Group.Compare(b.Group), a.Source.Compare(b.Source))
	})
	return ms
}

// Joins returns how many times a gateway joined (S,G) without already
// being joined to it, across restarts. A refresh is not a join; a join
// after an expiry or a leave is.
func (r *Responder) Joins(s, g netip.Addr) uint64 {
	r.st.Lock()
	defer r.st.Unlock()
	return r.joins[channel{s.Unmap(), g.Unmap()}]
}

// Inject sends payload as one UDP datagram from (s, InjectSourcePort) to
// (g, Config.DataPort or DefaultDataPort), in a Multicast Data message, to
// every gateway joined to (s, g), and returns how many it was sent to. It
// stands in for a multicast sender in tests that run without one. Nothing is
// sent in NoData mode, or if s and g are not of one family.
func (r *Responder) Inject(s, g netip.Addr, payload []byte) int {
	port := r.cfg.DataPort
	if port == 0 {
		port = DefaultDataPort
	}
	s, g = s.Unmap(), g.Unmap()
	d := amt.Data{
		Source:  netip.AddrPortFrom(s, InjectSourcePort),
		Group:   netip.AddrPortFrom(g, port),
		Payload: payload,
	}
	r.st.Lock()
	defer r.st.Unlock()
	return r.forwardLocked(channel{s, g}, d)
}

// forwardLocked sends d to the gateways joined to ch and returns how many
// it went to.
func (r *Responder) forwardLocked(ch channel, d amt.Data) int {
	mode := Mode(r.mode.Load())
	if mode == NoData {
		return 0
	}
	msg, err := amt.AppendData(nil, d)
	if err != nil {
		return 0
	}
	now, sent := time.Now(), 0
	for ip, gw := range r.gateways {
		if t, ok := gw.channels[ch]; ok && t.After(now) {
			if r.sendLocked(msg, netip.AddrPortFrom(ip, gw.port), mode) {
				r.counters.dataSent.Add(1)
				sent++
			}
		}
	}
	return sent
}
