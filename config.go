package amtrelay

import (
	"encoding/hex"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/health"

	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/miekg/dns"
)

// AMTRELAY relay types (RFC 8777 §4.2.3).
const (
	relayTypeIPv4 = 1
	relayTypeIPv6 = 2
	relayTypeName = 3
)

// allDownPolicy says what to answer for a source whose relays are all failing their health checks.
type allDownPolicy uint8

const (
	allDownServe    allDownPolicy = iota // fail open: answer with every relay that reaches the source
	allDownNoData                        // NOERROR, no answer, SOA: gateways fall back to other discovery
	allDownServFail                      // SERVFAIL: resolvers try another server of the delegation
)

var allDownPolicies = map[string]allDownPolicy{"serve": allDownServe, "nodata": allDownNoData, "servfail": allDownServFail}

// healthCheck holds the probe settings; interval 0 means health checks are off.
type healthCheck struct {
	interval time.Duration
	timeout  time.Duration
	policy   health.Policy
}

// Defaults of the health_check property.
const (
	defaultInterval = 5 * time.Second
	defaultTimeout  = time.Second
	defaultFails    = 3
	defaultRises    = 2
	defaultTTL      = 30
	defaultLabel    = "amt"
)

// relay is one configured relay: a name, its addresses and how gateways should treat it.
type relay struct {
	name              string
	precedence        uint8
	discoveryOptional bool
	probe             string // HOST:PORT override for health probes, "" for the default
	endpoints         []*endpoint
	upEndpoints       atomic.Int32 // how many endpoints pass their health check; relay is up while > 0
}

func (r *relay) up() bool { return r.upEndpoints.Load() > 0 }

// endpoint is one address of a relay: an IP address (AMTRELAY type 1 or 2, and A/AAAA answers) or a
// domain name (type 3, AMTRELAY answers only). Each endpoint is health-checked and filtered on its own.
type endpoint struct {
	relay *relay
	addr  netip.Addr // valid for IP endpoints
	host  string     // FQDN for name endpoints
	ip    net.IP     // addr in the form dns.A/dns.AAAA take, built once
	// rdata is the AMTRELAY RDATA in RFC 3597 hex: miekg/dns v1.1.73 drops the relay field of a
	// native AMTRELAY record whose D-bit is set, so answers carry the record as opaque type 260.
	rdata string
	state health.State
}

// String names the endpoint in logs.
func (e *endpoint) String() string {
	if e.host != "" {
		return e.host
	}
	return e.addr.String()
}

func newEndpoint(r *relay, address string) *endpoint {
	e := &endpoint{relay: r}
	if a, err := netip.ParseAddr(address); err == nil {
		e.addr = a
		e.ip = net.IP(a.AsSlice())
	} else {
		e.host = dns.Fqdn(address)
	}
	return e
}

// encodeRdata packs the AMTRELAY RDATA: precedence, D-bit and type, relay (RFC 8777 §4.2). A name is
// written uncompressed and fully qualified, root label included (§4.2.4).
func (e *endpoint) encodeRdata() error {
	b := []byte{e.relay.precedence, 0}
	if e.relay.discoveryOptional {
		b[1] = 0x80
	}
	switch {
	case e.addr.Is4():
		b[1] |= relayTypeIPv4
		b = append(b, e.addr.AsSlice()...)
	case e.addr.Is6():
		b[1] |= relayTypeIPv6
		b = append(b, e.addr.AsSlice()...)
	default:
		b[1] |= relayTypeName
		name := make([]byte, 256)
		n, err := dns.PackDomainName(e.host, name, 0, nil, false)
		if err != nil {
			return err
		}
		b = append(b, name[:n]...)
	}
	e.rdata = hex.EncodeToString(b)
	return nil
}

// config is everything one amtrelay block says. It never changes once parsed; only the endpoints'
// health states (atomics written by the prober) and the sources table (an atomic pointer swapped
// whole when the sources file changes) move while serving.
type config struct {
	zones       []string
	label       string
	ttl         uint32
	nameservers []string
	relays      []*relay // sorted by precedence, so a source's relay list (ascending indices) is in answer order
	sources     *sourceTable
	health      healthCheck
	allDown     allDownPolicy
	fall        fall.F
	serial      uint32 // SOA serial, new on every config load
}
