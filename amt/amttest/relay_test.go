package amttest

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
)

// Generous waits: a reply on loopback takes microseconds, but a loaded
// 2-core machine can stall a goroutine for a long time. Waits for
// something that must not come are short; they cannot make a test pass
// wrongly, only miss a late stray message.
const (
	replyWait   = 5 * time.Second
	silenceWait = 200 * time.Millisecond
)

var (
	srcS = netip.MustParseAddr("100.127.1.10")
	grpG = netip.MustParseAddr("232.1.1.1")
	srcT = netip.MustParseAddr("100.127.1.11")
)

// gw is a hand-driven gateway: one socket, messages built with package amt.
type gw struct {
	t     *testing.T
	c     *net.UDPConn
	relay netip.AddrPort
}

func newGW(t *testing.T, relay netip.AddrPort) *gw {
	t.Helper()
	c, err := net.ListenUDP(network(relay.Addr()), nil)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &gw{t: t, c: c, relay: relay}
}

func (g *gw) send(b []byte) {
	g.t.Helper()
	if _, err := g.c.WriteToUDPAddrPort(b, g.relay); err != nil {
		g.t.Fatalf("Send: %v", err)
	}
}

// read returns the next datagram, or ok=false after wait.
func (g *gw) read(wait time.Duration) (b []byte, from netip.AddrPort, ok bool) {
	g.t.Helper()
	_ = g.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, from, err := g.c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, netip.AddrPort{}, false
	}
	if err != nil {
		g.t.Fatalf("Read: %v", err)
	}
	return buf[:n], from, true
}

// request sends a Request and returns the parsed Query and its source.
func (g *gw) request(nonce uint32, mld bool) (amt.Query, netip.AddrPort) {
	g.t.Helper()
	g.send(amt.AppendRequest(nil, nonce, mld))
	b, from, ok := g.read(replyWait)
	if !ok {
		g.t.Fatalf("No Query for Request %#x", nonce)
	}
	q, err := amt.ParseQuery(b)
	if err != nil {
		g.t.Fatalf("ParseQuery(%x): %v", b, err)
	}
	return q, from
}

func (g *gw) update(q amt.Query, recs ...amt.GroupRecord) {
	g.t.Helper()
	b, err := amt.AppendUpdate(nil, amt.Update{MAC: q.MAC, Nonce: q.Nonce, Records: recs})
	if err != nil {
		g.t.Fatalf("AppendUpdate: %v", err)
	}
	g.send(b)
}

func (g *gw) local() netip.AddrPort {
	a := g.c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(g.relay.Addr(), a.Port()) // bound to the wildcard; loopback source
}

func rec(t amt.RecordType, g netip.Addr, srcs ...netip.Addr) amt.GroupRecord {
	return amt.GroupRecord{Type: t, Group: g, Sources: srcs}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("Timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func joined(r *Responder, gwAddr netip.AddrPort, s, g netip.Addr) bool {
	for _, m := range r.Memberships() {
		if m.Gateway == gwAddr && m.Source == s && m.Group == g {
			return true
		}
	}
	return false
}

func TestRequestAnswersQuery(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	g := newGW(t, r.Addr())
	q, from := g.request(0xcafebabe, false)
	if from != r.Addr() {
		t.Errorf("Query from %v, want %v", from, r.Addr())
	}
	want := amt.Query{
		MAC: q.MAC, Nonce: 0xcafebabe, Querier: netip.MustParseAddr("127.0.0.1"),
		MaxResponse: time.Second, QRV: 2, QQI: DefaultQQI,
	}
	if q != want {
		t.Errorf("Query %+v, want %+v", q, want)
	}
	// The wire form is amtrelayd's: 48 bytes, Router Alert, TTL 1, to
	// 224.0.0.1.
	g.send(amt.AppendRequest(nil, 0xcafebabe, false))
	b, _, _ := g.read(replyWait)
	if len(b) != 48 || !bytes.Equal(b[32:36], []byte{0x94, 4, 0, 0}) || b[20] != 1 || !bytes.Equal(b[28:32], []byte{224, 0, 0, 1}) {
		t.Errorf("Query bytes %x", b)
	}
	// Same endpoint and nonce, same MAC; another nonce, another MAC.
	q2, _ := g.request(0xcafebabe, false)
	q3, _ := g.request(0xcafebabf, false)
	if q2.MAC != q.MAC || q3.MAC == q.MAC {
		t.Errorf("MACs %x, %x, %x: want the first two equal, the third different", q.MAC, q2.MAC, q3.MAC)
	}
	// P asks for MLDv2, from a link-local querier.
	q6, _ := g.request(7, true)
	if !q6.MLD || q6.Querier != mldQuerier || q6.Nonce != 7 {
		t.Errorf("P=1 Query %+v, want MLDv2 from %v", q6, mldQuerier)
	}
	if s := r.Stats(); s.Requests != 5 {
		t.Errorf("Requests = %d, want 5", s.Requests)
	}
}

func TestRequestModes(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	g := newGW(t, r.Addr())
	r.SetMode(Limit)
	if q, _ := g.request(1, false); !q.Limit {
		t.Errorf("Limit mode: L not set in %+v", q)
	}
	r.SetMode(OtherSource)
	if q, from := g.request(2, false); from == r.Addr() || from.Addr() != r.Addr().Addr() || q.Limit {
		t.Errorf("OtherSource mode: Query %+v from %v", q, from)
	}
	for _, m := range []Mode{RequestSilent, Silent} {
		r.SetMode(m)
		g.send(amt.AppendRequest(nil, 3, false))
		if b, _, ok := g.read(silenceWait); ok {
			t.Errorf("%v mode answered a Request with %x", m, b)
		}
	}
	// Nonce 0 is dropped and not counted.
	r.SetMode(Normal)
	before := r.Stats().Requests
	g.send(amt.AppendRequest(nil, 0, false))
	if b, _, ok := g.read(silenceWait); ok {
		t.Errorf("Answered nonce 0 with %x", b)
	}
	if n := r.Stats().Requests; n != before {
		t.Errorf("Requests went from %d to %d for nonce 0", before, n)
	}
}

func TestGatewayField(t *testing.T) {
	r, err := StartConfig("127.0.0.1:0", Config{GatewayField: true, QQI: 3 * time.Second})
	if err != nil {
		t.Fatalf("StartConfig: %v", err)
	}
	defer r.Stop()
	g := newGW(t, r.Addr())
	q, _ := g.request(9, false)
	if q.Gateway != g.local() || q.QQI != 3*time.Second {
		t.Errorf("Query gateway %v QQI %v, want %v and 3s", q.Gateway, q.QQI, g.local())
	}
}

func TestJoinDataLeave(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	g := newGW(t, r.Addr())
	q, _ := g.request(11, false)
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join", func() bool { return joined(r, g.local(), srcS, grpG) })
	if n := r.Joins(srcS, grpG); n != 1 {
		t.Errorf("Joins = %d, want 1", n)
	}

	if n := r.Inject(srcS, grpG, []byte("payload")); n != 1 {
		t.Fatalf("Inject sent to %d gateways, want 1", n)
	}
	b, from, ok := g.read(replyWait)
	if !ok {
		t.Fatalf("No Data")
	}
	d, err := amt.ParseData(b)
	if err != nil || from != r.Addr() || d.Source != netip.AddrPortFrom(srcS, InjectSourcePort) ||
		d.Group != netip.AddrPortFrom(grpG, DefaultDataPort) || string(d.Payload) != "payload" {
		t.Errorf("Data %+v from %v (%v)", d, from, err)
	}
	// Other channels are not sent.
	if n := r.Inject(srcT, grpG, []byte("x")); n != 0 {
		t.Errorf("Inject of an unjoined channel sent to %d", n)
	}

	// A refresh is not a new join.
	g.update(q, rec(amt.ModeIsInclude, grpG, srcS))
	waitFor(t, "the refresh", func() bool { return r.Stats().Updates == 2 })
	if n := r.Joins(srcS, grpG); n != 1 {
		t.Errorf("Joins after refresh = %d, want 1", n)
	}

	g.update(q, rec(amt.BlockOldSources, grpG, srcS))
	waitFor(t, "the leave", func() bool { return !joined(r, g.local(), srcS, grpG) })
	if n := r.Inject(srcS, grpG, []byte("x")); n != 0 {
		t.Errorf("Inject after leave sent to %d", n)
	}
	if s := r.Stats(); s.DataSent != 1 || s.BadMAC != 0 {
		t.Errorf("Stats %+v", s)
	}
}

func TestChangeToInclude(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	g := newGW(t, r.Addr())
	q, _ := g.request(12, false)
	g.update(q, rec(amt.AllowNewSources, grpG, srcS, srcT))
	waitFor(t, "two joins", func() bool { return len(r.Memberships()) == 2 })
	g.update(q, rec(amt.ChangeToInclude, grpG, srcT))
	waitFor(t, "S to be dropped", func() bool { return !joined(r, g.local(), srcS, grpG) })
	if !joined(r, g.local(), srcT, grpG) {
		t.Errorf("T was left by TO_IN {T}")
	}
	// TO_IN with no sources leaves the group.
	g.update(q, rec(amt.ChangeToInclude, grpG))
	waitFor(t, "the group to be left", func() bool { return len(r.Memberships()) == 0 })
}

func TestUpdateMACChecked(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	g := newGW(t, r.Addr())
	q, _ := g.request(13, false)

	bad := q
	bad.MAC[0] ^= 1
	g.update(bad, rec(amt.AllowNewSources, grpG, srcS))
	// The nonce is under the MAC too.
	bad = q
	bad.Nonce++
	g.update(bad, rec(amt.AllowNewSources, grpG, srcS))
	// A MAC is only good from the endpoint it was made for.
	other := newGW(t, r.Addr())
	other.update(q, rec(amt.AllowNewSources, grpG, srcS))
	g.send([]byte{5, 0, 1, 2}) // malformed
	waitFor(t, "the drops", func() bool { s := r.Stats(); return s.BadMAC == 3 && s.Malformed == 1 })
	if ms := r.Memberships(); len(ms) != 0 || r.Stats().Updates != 0 {
		t.Errorf("Bad Updates took effect: %+v, %+v", ms, r.Stats())
	}
}

func TestStreamFollowsLatestPort(t *testing.T) {
	// amtrelayd keys gateways by IP only: a second socket of the same host
	// takes the stream. The fixture must show the same, since the gateway
	// design (one tunnel per relay) rests on it.
	r := start(t, "127.0.0.1:0")
	a, b := newGW(t, r.Addr()), newGW(t, r.Addr())
	qa, _ := a.request(21, false)
	qb, _ := b.request(22, false)
	a.update(qa, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "a's join", func() bool { return joined(r, a.local(), srcS, grpG) })
	b.update(qb, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "b's join", func() bool { return joined(r, b.local(), srcS, grpG) })
	if n := r.Inject(srcS, grpG, []byte("x")); n != 1 {
		t.Fatalf("Inject sent to %d, want 1", n)
	}
	if _, _, ok := b.read(replyWait); !ok {
		t.Errorf("Latest socket got no data")
	}
	if d, _, ok := a.read(silenceWait); ok {
		t.Errorf("Earlier socket still got %x", d)
	}
	if n := r.Joins(srcS, grpG); n != 1 {
		t.Errorf("Joins = %d, want 1 (one gateway address)", n)
	}
}

func TestOneTunnelPerGatewayIP(t *testing.T) {
	// The Linux driver: the first Request of an address makes its tunnel,
	// whose port gets every Query and the data; each Request replaces the
	// nonce, and only the latest nonce and MAC are taken.
	r, err := StartConfig("127.0.0.1:0", Config{OneTunnelPerGatewayIP: true, GatewayField: true})
	if err != nil {
		t.Fatalf("StartConfig: %v", err)
	}
	defer r.Stop()
	first, second := newGW(t, r.Addr()), newGW(t, r.Addr())
	q1, from := first.request(41, false)
	if from != r.Addr() || q1.Gateway != first.local() {
		t.Errorf("Query from %v for gateway %v, want from %v for %v", from, q1.Gateway, r.Addr(), first.local())
	}
	// Another port of the same address: its Query goes to the first port.
	second.send(amt.AppendRequest(nil, 42, false))
	if b, _, ok := second.read(silenceWait); ok {
		t.Errorf("The second port got %x", b)
	}
	b, _, ok := first.read(replyWait)
	if !ok {
		t.Fatalf("No Query for the second port's Request at the first port")
	}
	q2, err := amt.ParseQuery(b)
	if err != nil || q2.Nonce != 42 || q2.Gateway != first.local() {
		t.Fatalf("Query %+v (%v), want nonce 42 for %v", q2, err, first.local())
	}
	// The first nonce is void now; the latest is taken from either port,
	// and the data goes to the tunnel's port.
	first.update(q1, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the stale Update dropped", func() bool { return r.Stats().BadMAC == 1 })
	second.update(q2, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join", func() bool { return joined(r, first.local(), srcS, grpG) })
	if n := r.Inject(srcS, grpG, []byte("x")); n != 1 {
		t.Fatalf("Inject sent to %d, want 1", n)
	}
	if b, _, ok := first.read(replyWait); !ok || b[0] != 6 {
		t.Errorf("The tunnel's port got %x, want Data", b)
	}
	if b, _, ok := second.read(silenceWait); ok {
		t.Errorf("The second port got %x", b)
	}
	if s := r.Stats(); s.Updates != 1 || s.BadMAC != 1 {
		t.Errorf("Stats %+v, want one Update taken and one dropped", s)
	}
}

func TestOneTunnelPerGatewayIPExpires(t *testing.T) {
	// A tunnel no Update refreshes is forgotten: the next Request, from
	// any port, makes a new one there.
	r, err := StartConfig("127.0.0.1:0", Config{OneTunnelPerGatewayIP: true, GatewayTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("StartConfig: %v", err)
	}
	defer r.Stop()
	first, second := newGW(t, r.Addr()), newGW(t, r.Addr())
	first.request(51, false)
	waitFor(t, "the tunnel to expire", func() bool {
		r.st.Lock()
		defer r.st.Unlock()
		return len(r.tunnels) == 0
	})
	if _, from := second.request(52, false); from != r.Addr() {
		t.Errorf("Query from %v", from)
	}
}

func TestExpiry(t *testing.T) {
	r, err := StartConfig("127.0.0.1:0", Config{GatewayTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("StartConfig: %v", err)
	}
	defer r.Stop()
	g := newGW(t, r.Addr())
	q, _ := g.request(31, false)
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join", func() bool { return r.Stats().Updates == 1 })
	// The answering loop wakes by itself to drop the state.
	waitFor(t, "the expiry", func() bool {
		r.st.Lock()
		defer r.st.Unlock()
		return len(r.gateways) == 0
	})
	if n := r.Inject(srcS, grpG, []byte("x")); n != 0 {
		t.Errorf("Inject after expiry sent to %d", n)
	}
	// Joining again counts as a new join.
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the second join", func() bool { return r.Joins(srcS, grpG) == 2 })
}

func TestTeardown(t *testing.T) {
	r, err := StartConfig("127.0.0.1:0", Config{GatewayField: true})
	if err != nil {
		t.Fatalf("StartConfig: %v", err)
	}
	defer r.Stop()
	g := newGW(t, r.Addr())
	q, _ := g.request(41, false)
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join", func() bool { return len(r.Memberships()) == 1 })

	// A Teardown with a wrong MAC, or for another port, leaves the state.
	bad := amt.Teardown{MAC: q.MAC, Nonce: q.Nonce, Gateway: q.Gateway}
	bad.MAC[5] ^= 0xff
	g.send(amt.AppendTeardown(nil, bad))
	waitFor(t, "the bad MAC", func() bool { return r.Stats().BadMAC == 1 })

	g.send(amt.AppendTeardown(nil, amt.Teardown{MAC: q.MAC, Nonce: q.Nonce, Gateway: q.Gateway}))
	waitFor(t, "the teardown", func() bool { return r.Stats().Teardowns == 1 })
	if ms := r.Memberships(); len(ms) != 0 {
		t.Errorf("State left after Teardown: %+v", ms)
	}
}

func TestNoDataMode(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	r.SetMode(NoData)
	g := newGW(t, r.Addr())
	q, _ := g.request(51, false)
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join", func() bool { return len(r.Memberships()) == 1 })
	if n := r.Inject(srcS, grpG, []byte("x")); n != 0 {
		t.Errorf("NoData Inject sent to %d", n)
	}
}

func TestRestartForgets(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	g := newGW(t, r.Addr())
	q, _ := g.request(61, false)
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join", func() bool { return len(r.Memberships()) == 1 })
	if err := r.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if ms := r.Memberships(); len(ms) != 0 {
		t.Errorf("State kept across Restart: %+v", ms)
	}
	// A new secret: the old MAC no longer works, a new Query's does.
	g.update(q, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the bad MAC", func() bool { return r.Stats().BadMAC == 1 })
	q2, _ := g.request(61, false)
	if q2.MAC == q.MAC {
		t.Errorf("Same MAC %x after Restart", q.MAC)
	}
	g.update(q2, rec(amt.AllowNewSources, grpG, srcS))
	waitFor(t, "the join after restart", func() bool { return len(r.Memberships()) == 1 })
}

func TestMLDJoinAndIPv6Data(t *testing.T) {
	r := start(t, "[::1]:0")
	g := newGW(t, r.Addr())
	s6, g6 := netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("ff3e::8000:1")
	q, _ := g.request(71, true)
	b, err := amt.AppendUpdate(nil, amt.Update{MAC: q.MAC, Nonce: q.Nonce, MLD: true, Records: []amt.GroupRecord{rec(amt.AllowNewSources, g6, s6)}})
	if err != nil {
		t.Fatalf("AppendUpdate: %v", err)
	}
	g.send(b)
	waitFor(t, "the join", func() bool { return len(r.Memberships()) == 1 })
	if n := r.Inject(s6, g6, []byte("v6")); n != 1 {
		t.Fatalf("Inject sent to %d", n)
	}
	data, _, ok := g.read(replyWait)
	if !ok {
		t.Fatalf("No data")
	}
	if d, err := amt.ParseData(data); err != nil || d.Group.Addr() != g6 || string(d.Payload) != "v6" {
		t.Errorf("Data %+v, %v", d, err)
	}
}

func TestStartConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"QQI below a second": {QQI: 500 * time.Millisecond},
		"QQI not whole":      {QQI: 1500 * time.Millisecond},
		"QQI too long":       {QQI: 40000 * time.Second},
		"negative timeout":   {GatewayTimeout: -time.Second},
		"port without iface": {DataPort: 5001},
		"iface without port": {DataInterface: "lo"},
		"no such interface":  {DataInterface: "amttest-none0", DataPort: 5001},
	} {
		if r, err := StartConfig("127.0.0.1:0", cfg); err == nil {
			r.Stop()
			t.Errorf("%s: StartConfig succeeded", name)
		}
	}
}
