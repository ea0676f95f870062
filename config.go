package amtrelay

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/amtdns/amtrelay/health"
	"github.com/amtdns/amtrelay/table"

	"github.com/coredns/coredns/plugin/pkg/fall"
)

// config is everything one amtrelay block says, parsed. It never changes once setup has built it:
// what moves while serving (relay health, canaries, admin modes, the sources table) is state of the
// instance, published in a view.
type config struct {
	zones       []string // lower-case FQDNs
	label       string   // lower case
	ttl         uint32
	nameservers []string
	relays      []*relay         // by precedence, config order within one; relay.index is the position
	endpoints   []*endpoint      // every relay's, in relay order; endpoint.id is the position
	canaries    []*canary        // longest prefix first; canary.index is the position
	relayByName map[string]int   // relay name -> index
	inline      []table.Override // the source lines, to lay over a sources file
	inlineTable *table.Table     // the source lines alone, the table without a sources file
	sources     sourcesConfig
	routes      *routesConfig // nil without bgp: no connectivity learned from routing
	admin       adminConfig
	health      healthCheck
	allDown     allDownPolicy
	fall        fall.F
	dnssec      *dnssecConfig  // nil: answers are not signed
	explain     bool           // CH TXT queries for the plugin's names get explanations
	explainFrom []netip.Prefix // from these clients; others are refused
	// shutdownGrace: how long the plugin keeps answering, not ready, before a shutdown goes on.
	shutdownGrace time.Duration
	serial        uint32 // SOA serial, new on every config load
}

// relayIndex resolves a relay name, for the sources file.
func (cfg *config) relayIndex(name string) (int, bool) {
	i, ok := cfg.relayByName[name]
	return i, ok
}

// relay is one configured relay: a name, its addresses and how gateways should treat it.
type relay struct {
	name              string
	index             int
	precedence        uint8
	discoveryOptional bool
	probe             probeTarget // where probes go; the zero value probes each endpoint on its own
	endpoints         []*endpoint
}

// endpoint is one address of a relay: an IP address (AMTRELAY type 1 or 2, and A/AAAA answers) or a
// domain name (type 3, AMTRELAY answers only). Each endpoint is health-checked and filtered on its
// own.
type endpoint struct {
	id    int
	relay *relay
	addr  netip.Addr // valid for IP endpoints
	host  string     // lower-case FQDN for name endpoints
	ip    net.IP     // addr in the form dns.A and dns.AAAA take, built once
	rdata string     // the AMTRELAY RDATA in RFC 3597 hex (see relayRdata)
}

// String names the endpoint in logs.
func (e *endpoint) String() string {
	if e.host != "" {
		return e.host
	}
	return e.addr.String()
}

// probeTarget is where health probes go: a fixed address and port, or a name resolved before
// every probe (at most maxProbeAddrs of its addresses are probed).
type probeTarget struct {
	addr netip.AddrPort // valid for an IP target
	host string         // lower-case FQDN otherwise
	port uint16
}

func (t probeTarget) isZero() bool { return !t.addr.IsValid() && t.host == "" }

// String is the target as written, HOST:PORT.
func (t probeTarget) String() string {
	if t.addr.IsValid() {
		return t.addr.String()
	}
	return net.JoinHostPort(t.host, strconv.Itoa(int(t.port)))
}

// healthCheck holds the probe settings; interval 0 means health checks are off.
type healthCheck struct {
	interval  time.Duration
	timeout   time.Duration
	policy    health.Policy
	handshake handshakeMode
}

// handshakeMode is how far a probe goes into the AMT handshake.
type handshakeMode uint8

const (
	handshakeRequest   handshakeMode = iota // Discovery, Advertisement, Request, Query without L
	handshakeDiscovery                      // Discovery and Advertisement only
)

// canary is a channel (source, group) that a beacon sends on continuously: for sources in prefix,
// a relay is handed out only while a join of the channel through it delivers data.
type canary struct {
	index         int
	prefix        netip.Prefix
	text          string // the prefix as written, the canary label of the metrics
	source, group netip.Addr
	at            lineRef // the canary line, for errors found after the block is read
}

// canaryFor returns the index of the canary whose prefix is the longest that holds src, or -1.
func (cfg *config) canaryFor(src netip.Addr) int {
	for _, c := range cfg.canaries {
		if c.prefix.Contains(src) {
			return c.index
		}
	}
	return -1
}

func (h healthCheck) enabled() bool { return h.interval > 0 }

// sourcesConfig is what the sources property says, and where it says it.
type sourcesConfig struct {
	path     string // "" when there is no sources file
	reload   time.Duration
	maxSize  int64
	corefile string
	line     int
}

// allDownPolicy says what to answer for a source whose relays are all failing their health checks.
type allDownPolicy uint8

const (
	allDownServe       allDownPolicy = iota // fail open: answer with every relay that reaches the source
	allDownNoData                           // NOERROR, no answer, SOA: gateways fall back to other discovery
	allDownServFail                         // SERVFAIL: resolvers try another server of the delegation
	allDownFallthrough                      // the next plugin, e.g. forward to another network's AMT DNS
)

var allDownPolicies = map[string]allDownPolicy{
	"serve": allDownServe, "nodata": allDownNoData, "servfail": allDownServFail, "fallthrough": allDownFallthrough,
}

// Defaults and bounds of the Corefile properties.
const (
	defaultInterval      = 5 * time.Second
	defaultTimeout       = time.Second
	defaultFails         = 3
	defaultRises         = 2
	defaultTTL           = 30
	defaultLabel         = "amt"
	defaultSourcesReload = 5 * time.Second

	// Longer than any route withdrawal should take; a typo of minutes would hold a shutdown.
	maxShutdownGrace = 5 * time.Minute

	// A relay probed more often than this is being attacked by its own DNS; a shorter timeout
	// would fail on ordinary scheduling delays.
	minInterval = 100 * time.Millisecond
	minTimeout  = 10 * time.Millisecond
)
