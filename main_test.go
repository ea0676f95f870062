package amtrelay

import (
	"slices"
	"testing"

	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/bufsize"
	_ "github.com/coredns/coredns/plugin/dnssec"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/root"
	_ "github.com/coredns/coredns/plugin/whoami"
	"go.uber.org/goleak"
)

// The tests run real CoreDNS servers: the directive list gets amtrelay exactly as cmd/coredns does it,
// and only the in-tree plugins the test Corefiles use are linked in.
var (
	inTreeDirectives       = slices.Clone(dnsserver.Directives)
	directivesWithAMTRelay []string
)

func TestMain(m *testing.M) {
	var err error
	if directivesWithAMTRelay, err = InsertDirective(inTreeDirectives); err != nil {
		panic(err)
	}
	if err := dnsserver.SetDirectives(directivesWithAMTRelay); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m,
		// Started once per process by CoreDNS packages and never stopped, whatever the test does.
		goleak.IgnoreAnyFunction("github.com/coredns/caddy.TrapSignals.func1"),
		goleak.IgnoreAnyFunction("github.com/coredns/caddy.trapSignalsPosix.func1"),
		goleak.IgnoreAnyFunction("github.com/coredns/coredns/plugin/pkg/log.(*logger).Warningf"),
		// forward's proxies stop their connection managers from a finalizer, not on shutdown
		// (CoreDNS v1.15 plugin/pkg/proxy: Proxy.Stop leaves the transport running).
		goleak.IgnoreTopFunction("github.com/coredns/coredns/plugin/pkg/proxy.(*Transport).connManager"),
		// The dnssec plugin starts its cache cleaner in OnStartup and stops it only in OnShutdown,
		// which a failed start never runs (TestDNSSECPluginStackedRefused fails one on purpose).
		goleak.IgnoreTopFunction("github.com/coredns/coredns/plugin/dnssec.periodicClean"),
		// GoBGP v4.8.0 strands one goroutine of a peer it stops with messages still queued: its
		// channel cleanup drains without blocking (see the bgp package's TestMain). The BGP
		// tests' routers queue routes for speakers that stop.
		goleak.IgnoreTopFunction("github.com/eapache/channels.(*InfiniteChannel).infiniteBuffer"),
	)
}
