package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/template"
	"go.uber.org/goleak"

	"github.com/amtdns/amtrelay"
	"github.com/amtdns/amtrelay/amt/amttest"
)

// The end-to-end tests run a real CoreDNS with the amtrelay plugin, placed in
// the directive list as cmd/coredns places it, plus the in-tree plugins the
// test Corefiles use: template (CNAMEs, NXDOMAIN, a type 0 record) and hosts
// (the addresses of a type 3 relay name).
func TestMain(m *testing.M) {
	directives, err := amtrelay.InsertDirective(dnsserver.Directives)
	if err != nil {
		panic(err)
	}
	if err := dnsserver.SetDirectives(directives); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m,
		// Started once per process by CoreDNS packages and never stopped.
		goleak.IgnoreAnyFunction("github.com/coredns/caddy.TrapSignals.func1"),
		goleak.IgnoreAnyFunction("github.com/coredns/caddy.trapSignalsPosix.func1"),
		goleak.IgnoreAnyFunction("github.com/coredns/coredns/plugin/pkg/log.(*logger).Warningf"),
	)
}

// caddy.Start touches process-wide state; one at a time.
var caddyMu sync.Mutex

type corefileInput string

func (c corefileInput) Body() []byte       { return []byte(c) }
func (c corefileInput) Path() string       { return "Corefile" }
func (c corefileInput) ServerType() string { return "dns" }

// startDNS runs CoreDNS with the Corefile for the test's lifetime and
// returns its UDP and TCP addresses: with port 0 each gets its own port.
func startDNS(t *testing.T, corefile string) (udp, tcp string) {
	t.Helper()
	caddyMu.Lock()
	caddy.Quiet = true
	inst, err := caddy.Start(corefileInput(corefile))
	caddyMu.Unlock()
	if err != nil {
		t.Fatalf("Failed to start CoreDNS: %v\n%s", err, corefile)
	}
	t.Cleanup(func() {
		inst.ShutdownCallbacks()
		inst.Stop()
		inst.Wait()
	})
	srv := inst.Servers()[0]
	return srv.LocalAddr().String(), srv.Addr().String()
}

// Test sources, one per scenario, so that each Corefile line says what it
// is for.
const (
	srcRace    = "198.51.100.12" // pending, D=1 winner, third
	srcLimit   = "198.51.100.13" // L set, then a good one
	srcNoQuery = "198.51.100.14" // no Query, then a good one
	srcNone    = "198.51.100.15" // silent, limit, closed port
	srcData    = "198.51.100.16" // one good relay, for -group
	srcNoData  = "198.51.100.17" // a relay that forwards nothing
	srcNamed   = "198.51.100.18" // a type 3 relay name
	srcCNAME   = "198.51.100.7"  // rev(S) is a CNAME to amt.rev(S)
	srcTypeNo  = "198.51.100.9"  // AMTRELAY type 0
	srcBig     = "198.51.100.20" // more relays than 512 bytes hold
	srcNX      = "192.0.2.99"    // NXDOMAIN from the source's zone
	srcUnknown = "10.9.9.9"      // nothing at all: SERVFAIL at rev(S)
	group      = "232.1.1.1"
)

// The fixture relays' addresses, all on loopback.
const (
	rPending = "127.0.0.21"
	rDBit    = "127.0.0.22"
	rThird   = "127.0.0.23"
	rLimit   = "127.0.0.31"
	rAfterL  = "127.0.0.32"
	rNoQuery = "127.0.0.41"
	rAfterQ  = "127.0.0.42"
	rSilent  = "127.0.0.51"
	rLimit2  = "127.0.0.52"
	rClosed  = "127.0.0.53"
	rData    = "127.0.0.61"
	rNoData  = "127.0.0.62"
	rNamed   = "127.0.0.71"
	rCNAME   = "127.0.0.81"
	rBig     = "127.0.0.91"
)

// corefile serves every scenario. Health checks are off: the plugin's own
// probing is tested elsewhere, and here the relays' behaviour must reach
// the command unfiltered.
func corefile(t *testing.T) string {
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte(rNamed+" r71.relays.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var big strings.Builder
	var bigNames []string
	for i := 1; i <= 24; i++ {
		fmt.Fprintf(&big, "\t\trelay big%d 2001:db8::%x precedence 50\n", i, i)
		bigNames = append(bigNames, fmt.Sprintf("big%d", i))
	}
	return `
in-addr.arpa:0 ip6.arpa:0 relays.test:0 {
	bind 127.0.0.1
	template IN ANY in-addr.arpa {
		match "^7\.100\.51\.198\.in-addr\.arpa\.$"
		answer "{{ .Name }} 60 IN CNAME amt.7.100.51.198.in-addr.arpa."
		fallthrough
	}
	template IN AMTRELAY in-addr.arpa {
		match "^9\.100\.51\.198\.in-addr\.arpa\.$"
		answer "{{ .Name }} 60 IN AMTRELAY 0 0 0 ."
		fallthrough
	}
	template IN ANY 2.0.192.in-addr.arpa {
		rcode NXDOMAIN
		authority "2.0.192.in-addr.arpa. 60 IN SOA ns.example.net. hostmaster.example.net. 1 60 60 60 60"
	}
	template IN ANY relays.test {
		match "^pool\.relays\.test\.$"
		answer "{{ .Name }} 60 IN CNAME r71.relays.test."
		fallthrough
	}
	amtrelay in-addr.arpa ip6.arpa {
		relay pending ` + rPending + ` precedence 10
		relay dbit ` + rDBit + ` precedence 20 discovery_optional
		relay third ` + rThird + ` precedence 30
		relay limit ` + rLimit + ` precedence 10
		relay afterl ` + rAfterL + ` precedence 20
		relay noquery ` + rNoQuery + ` precedence 10
		relay afterq ` + rAfterQ + ` precedence 20
		relay silent ` + rSilent + ` precedence 10
		relay limit2 ` + rLimit2 + ` precedence 20
		relay closed ` + rClosed + ` precedence 30
		relay data ` + rData + `
		relay nodata ` + rNoData + `
		relay named pool.relays.test precedence 5
		relay cname ` + rCNAME + `
		relay bigwin ` + rBig + ` precedence 1
` + big.String() + `
		source ` + srcRace + ` pending dbit third
		source ` + srcLimit + ` limit afterl
		source ` + srcNoQuery + ` noquery afterq
		source ` + srcNone + ` silent limit2 closed
		source ` + srcData + ` data
		source ` + srcNoData + ` nodata
		source ` + srcNamed + ` named
		source ` + srcCNAME + ` cname
		source ` + srcBig + ` bigwin ` + strings.Join(bigNames, " ") + `
		ttl 30
		health_check off
	}
	hosts ` + hosts + ` relays.test {
		no_reverse
		reload 0
	}
}
`
}

// lab is one test's DNS server and fixture relays.
type lab struct {
	t      *testing.T
	dns    string // UDP
	tcp    string
	relays map[netip.Addr]*amttest.Responder
	closed netip.AddrPort // a UDP port nothing listens on
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, relays: map[netip.Addr]*amttest.Responder{}}
	l.dns, l.tcp = startDNS(t, corefile(t))
	// A port that was just free: probes to it are refused. Nothing in
	// this test binds it again.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(rClosed)})
	if err != nil {
		t.Fatal(err)
	}
	l.closed = c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return l
}

// relay starts a fixture relay on ip (port chosen by the kernel).
func (l *lab) relay(ip string, mode amttest.Mode) *amttest.Responder {
	l.t.Helper()
	r, err := amttest.Start(ip + ":0")
	if err != nil {
		l.t.Fatalf("Fixture relay on %s: %v", ip, err)
	}
	r.SetMode(mode)
	l.t.Cleanup(func() { r.Stop() })
	l.relays[netip.MustParseAddr(ip)] = r
	return r
}

// env points the command at the fixtures: each relay address to its
// fixture's port, any other to the closed port; every address routable;
// no shuffling, so the order is the one the test expects.
func (l *lab) env() env {
	e := defaultEnv()
	e.relayTarget = func(a netip.Addr) netip.AddrPort {
		if r, ok := l.relays[a]; ok {
			return r.Addr()
		}
		return netip.AddrPortFrom(a, l.closed.Port())
	}
	e.tcpAddr = func(a netip.AddrPort) netip.AddrPort {
		if a.String() == l.dns {
			return netip.MustParseAddrPort(l.tcp)
		}
		return a
	}
	e.routable = func(netip.Addr) bool { return true }
	e.shuffle = func(int, func(int, int)) {}
	e.stagger = 100 * time.Millisecond
	// DNS on loopback answers in microseconds; a short -timeout in a test
	// is meant for the relays, and must not make a slow moment on a
	// loaded machine look like a DNS timeout.
	e.dnsTimeout = 5 * time.Second
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

func runWith(t *testing.T, ctx context.Context, e env, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := runEnv(ctx, args, &out, &errb, e)
	r := result{code, out.String(), errb.String()}
	t.Logf("amtdiscover %s -> exit %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

func (l *lab) run(e env, args ...string) result {
	l.t.Helper()
	return runWith(l.t, context.Background(), e, append([]string{"-resolver", l.dns}, args...)...)
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("Timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
