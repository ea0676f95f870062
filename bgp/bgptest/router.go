// Package bgptest runs a BGP router in the test process: a GoBGP server standing in for the
// network's own BGP speaker, which listens on a loopback address, accepts the session of the
// speaker under test and announces and withdraws what the test tells it to.
package bgptest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/amtdns/amtrelay/internal/gobgpstart"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// The families a Router offers and announces in.
var (
	IPv4Multicast = gobgp.RF_IPv4_MC
	IPv6Multicast = gobgp.RF_IPv6_MC
	IPv4Unicast   = gobgp.RF_IPv4_UC
	IPv6Unicast   = gobgp.RF_IPv6_UC
)

// Options shape a Router; the zero value is an eBGP router of AS 64500 on 127.0.0.2 that offers
// every family and advertises Graceful Restart as a helper.
type Options struct {
	// IP is the loopback address the router listens on; "" means 127.0.0.2.
	IP string
	// ASN is the router's AS; 0 means 64500.
	ASN uint32
	// PeerIP and PeerASN are the speaker under test: where it connects from and its AS ("" and 0
	// mean 127.0.0.1 and 64512). PeerASN equal to ASN makes the session iBGP.
	PeerIP  string
	PeerASN uint32
	// Families the router offers; nil means all four.
	Families []gobgp.Family
	// Hold is the router's hold time in seconds; 0 means 9.
	Hold uint64
	// FullGR advertises Graceful Restart for every family with the forwarding state kept, as a
	// router that restarts without losing its forwarding does; NoGR advertises none.
	FullGR, NoGR bool
}

// Router is a BGP router in the test process.
type Router struct {
	t        testing.TB
	srv      *server.BgpServer
	addr     netip.AddrPort
	asn      uint32
	done     chan struct{}
	stopOnce sync.Once
}

// Start starts a router that waits for the speaker under test to connect; the test's cleanup
// stops it.
func Start(t testing.TB, o Options) *Router {
	t.Helper()
	ip := cmpOr(o.IP, "127.0.0.2")
	r := &Router{t: t, asn: o.ASN, done: make(chan struct{})}
	if r.asn == 0 {
		r.asn = 64500
	}
	port := FreePort(t, ip)
	r.addr = netip.AddrPortFrom(netip.MustParseAddr(ip), port)
	r.srv = server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
	go func() {
		defer close(r.done)
		r.srv.Serve()
	}()
	if err := gobgpstart.Start(r.srv, &api.Global{Asn: r.asn, RouterId: "192.0.2.254", ListenPort: int32(port), ListenAddresses: []string{ip}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	peerASN := o.PeerASN
	if peerASN == 0 {
		peerASN = 64512
	}
	hold := o.Hold
	if hold == 0 {
		hold = 9
	}
	peer := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: cmpOr(o.PeerIP, "127.0.0.1"), PeerAsn: peerASN},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: hold / 3, IdleHoldTimeAfterReset: 1}},
	}
	if !o.NoGR {
		peer.GracefulRestart = &api.GracefulRestart{Enabled: true, HelperOnly: !o.FullGR, RestartTime: 120}
	}
	families := o.Families
	if families == nil {
		families = []gobgp.Family{IPv4Multicast, IPv6Multicast, IPv4Unicast, IPv6Unicast}
	}
	for _, f := range families {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_Afi(f.Afi()), Safi: api.Family_Safi(f.Safi())}, Enabled: true}}
		if o.FullGR {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		peer.AfiSafis = append(peer.AfiSafis, as)
	}
	if err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	return r
}

// Addr is where the router listens: the speaker's neighbor address and port.
func (r *Router) Addr() netip.AddrPort { return r.addr }

// ASN is the router's AS.
func (r *Router) ASN() uint32 { return r.asn }

// Server is the router's GoBGP server, for what the other methods do not cover.
func (r *Router) Server() *server.BgpServer { return r.srv }

// Stop ends the router, with a Cease to the speaker. Only the first call does anything.
func (r *Router) Stop() {
	r.stopOnce.Do(func() {
		r.srv.Stop()
		<-r.done
	})
}

// Path is a route to prefix in family f with the standard communities comms (ASN<<16 | VALUE),
// for Announce and Withdraw.
func (r *Router) Path(f gobgp.Family, prefix string, comms ...uint32) *apiutil.Path {
	p := netip.MustParsePrefix(prefix)
	nlri, err := gobgp.NewIPAddrPrefix(p)
	if err != nil {
		r.t.Fatal(err)
	}
	nh := netip.MustParseAddr("192.0.2.254")
	if p.Addr().Is6() {
		nh = netip.MustParseAddr("2001:db8::254")
	}
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(0)}
	if f == IPv4Unicast {
		a, _ := gobgp.NewPathAttributeNextHop(nh)
		attrs = append(attrs, a)
	} else {
		a, err := gobgp.NewPathAttributeMpReachNLRI(f, []gobgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			r.t.Fatal(err)
		}
		attrs = append(attrs, a)
	}
	if len(comms) > 0 {
		attrs = append(attrs, gobgp.NewPathAttributeCommunities(comms))
	}
	return &apiutil.Path{Family: f, Nlri: nlri, Attrs: attrs}
}

// Announce sends paths to the speaker.
func (r *Router) Announce(paths ...*apiutil.Path) {
	r.t.Helper()
	if _, err := r.srv.AddPath(apiutil.AddPathRequest{Paths: paths}); err != nil {
		r.t.Fatal(err)
	}
}

// Withdraw withdraws paths.
func (r *Router) Withdraw(paths ...*apiutil.Path) {
	r.t.Helper()
	if err := r.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths}); err != nil {
		r.t.Fatal(err)
	}
}

// FreePort returns a TCP port free on ip a moment ago.
func FreePort(t testing.TB, ip string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
