// Package amtrelay is a CoreDNS plugin that serves AMT relay discovery (RFC 7450) by source: it answers
// A/AAAA/AMTRELAY queries at amt.<reverse name of S> (the anycast "AMT DNS" design) and AMTRELAY
// queries at <reverse name of S> (RFC 8777) with the local relays that reach S and pass their health
// checks. Every other query goes to the next plugin.
package amtrelay

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/amtdns/amtrelay/revname"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// AMTRelay is the plugin handler.
type AMTRelay struct {
	Next plugin.Handler

	cfg          *config
	prober       *prober
	metrics      *requestMetrics
	serverConfig *dnsserver.Config // the server block's, for the server label of background metrics
	running      atomic.Bool       // between OnStartup and OnShutdown
}

func newAMTRelay(cfg *config) *AMTRelay {
	return &AMTRelay{cfg: cfg, prober: newProber(cfg), metrics: newRequestMetrics(cfg.zones)}
}

// Name implements plugin.Handler.
func (a *AMTRelay) Name() string { return pluginName }

// nameKind classifies a query name relative to a source's reverse name rev(S).
type nameKind uint8

const (
	nameOther   nameKind = iota // not ours
	nameReverse                 // rev(S): the RFC 8777 owner name
	nameApex                    // L.rev(S): the anycast AMT DNS zone apex
	nameBelow                   // anything.L.rev(S): nothing exists there
)

// ServeDNS implements plugin.Handler.
func (a *AMTRelay) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	q := r.Question[0]
	zone := matchZone(a.cfg.zones, q.Name)
	if zone == "" {
		return plugin.NextOrFailure(a.Name(), a.Next, ctx, w, r)
	}
	count := a.metrics.counters(ctx, zone, q.Qtype)

	kind, apex, src := classify(q.Name, a.cfg.label)
	if kind == nameOther || (kind == nameReverse && q.Qtype != dns.TypeAMTRELAY) {
		count[resultFallthrough].Inc()
		return plugin.NextOrFailure(a.Name(), a.Next, ctx, w, r)
	}
	relays, found := a.cfg.sources.Lookup(src.Unmap())
	if !found {
		// rev(S) may be served by a zone further down the chain; amt.rev(S) was delegated to us, so a
		// miss there is authoritative unless the operator chains another server with fallthrough.
		if kind == nameReverse || a.cfg.fall.Through(q.Name) {
			count[resultFallthrough].Inc()
			return plugin.NextOrFailure(a.Name(), a.Next, ctx, w, r)
		}
		count[resultNXDomain].Inc()
		return a.write(w, r, a.negative(r, dns.RcodeNameError, apex))
	}
	if kind == nameReverse {
		apex = zone
	}

	switch {
	case kind == nameBelow:
		count[resultNXDomain].Inc()
		return a.write(w, r, a.negative(r, dns.RcodeNameError, apex))
	case q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeAMTRELAY:
		m, res := a.relayAnswer(r, relays, apex)
		count[res].Inc()
		if m == nil {
			return dns.RcodeServerFailure, nil
		}
		return a.write(w, r, m)
	case q.Qtype == dns.TypeSOA:
		count[resultAnswer].Inc()
		m := a.reply(r)
		m.Answer = []dns.RR{a.soa(apex)}
		return a.write(w, r, m)
	case q.Qtype == dns.TypeNS && len(a.cfg.nameservers) > 0:
		count[resultAnswer].Inc()
		m := a.reply(r)
		m.Answer = a.ns(apex)
		return a.write(w, r, m)
	default:
		count[resultNoData].Inc()
		return a.write(w, r, a.negative(r, dns.RcodeSuccess, apex))
	}
}

// matchZone returns the longest of zones that qname is in or below, or "" if none; the same as
// plugin.Zones.Matches, which it replaces on the query path because dns.IsSubDomain splits both
// names into label offsets on every call (8 allocations for an in-addr.arpa name, 12 for ip6.arpa).
// zones are lower-case FQDNs, as setup keeps them.
func matchZone(zones []string, qname string) string {
	best := ""
	for _, z := range zones {
		if len(z) > len(best) && revname.InZone(qname, z) {
			best = z
		}
	}
	return best
}

// classify finds where qname sits relative to the source it names. apex is the part of qname that
// is L.rev(S), as asked (letter case included), for nameApex and nameBelow.
func classify(qname, label string) (kind nameKind, apex string, src netip.Addr) {
	prefix, src, ok := revname.Parse(qname)
	if !ok || strings.IndexByte(prefix, '\\') >= 0 {
		return nameOther, "", src
	}
	switch {
	case prefix == "":
		return nameReverse, "", src
	case strings.EqualFold(prefix, label):
		return nameApex, qname, src
	case len(prefix) > len(label) && prefix[len(prefix)-len(label)-1] == '.' &&
		strings.EqualFold(prefix[len(prefix)-len(label):], label):
		return nameBelow, qname[len(prefix)-len(label):], src
	}
	return nameOther, "", src
}

// relayAnswer builds the answer for A, AAAA or AMTRELAY at a known source. A nil message means
// SERVFAIL (the all_down servfail policy).
func (a *AMTRelay) relayAnswer(r *dns.Msg, relays []int, apex string) (*dns.Msg, result) {
	qtype := r.Question[0].Qtype
	res := resultAnswer
	healthy := false
	for _, i := range relays {
		if a.cfg.relays[i].up() {
			healthy = true
			break
		}
	}
	if !healthy {
		res = resultAllDown
		switch a.cfg.allDown {
		case allDownNoData:
			// TTL 0: this gap lasts until a relay recovers or routing moves the anycast address
			// away, usually seconds; a resolver caching it for the full TTL would keep gateways
			// without a relay after another network has taken over.
			m := a.negative(r, dns.RcodeSuccess, apex)
			m.Ns[0].Header().Ttl = 0
			return m, res
		case allDownServFail:
			return nil, res
		}
	}

	m := a.reply(r)
	var picked [16]*endpoint
	eps := picked[:0]
	for _, i := range relays {
		for _, e := range a.cfg.relays[i].endpoints {
			if healthy && !e.state.Up() {
				continue
			}
			if qtype == dns.TypeA && !e.addr.Is4() || qtype == dns.TypeAAAA && !e.addr.Is6() {
				continue
			}
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		if res == resultAnswer {
			res = resultNoData
		}
		return a.negative(r, dns.RcodeSuccess, apex), res
	}

	hdr := dns.RR_Header{Name: r.Question[0].Name, Rrtype: qtype, Class: dns.ClassINET, Ttl: a.cfg.ttl}
	m.Answer = make([]dns.RR, len(eps))
	if qtype == dns.TypeAMTRELAY {
		for i, e := range eps {
			m.Answer[i] = &dns.RFC3597{Hdr: hdr, Rdata: e.rdata}
		}
		return m, res
	}
	rotateWithinPrecedence(eps)
	for i, e := range eps {
		if qtype == dns.TypeA {
			m.Answer[i] = &dns.A{Hdr: hdr, A: e.ip}
		} else {
			m.Answer[i] = &dns.AAAA{Hdr: hdr, AAAA: e.ip}
		}
	}
	return m, res
}

// rotateWithinPrecedence rotates each run of equal precedence by a random offset, so that resolvers
// and gateways that take the first address spread over equally preferred relays. eps is in
// precedence order already.
func rotateWithinPrecedence(eps []*endpoint) {
	for start := 0; start < len(eps); {
		end := start + 1
		for end < len(eps) && eps[end].relay.precedence == eps[start].relay.precedence {
			end++
		}
		if n := end - start; n > 1 {
			run := eps[start:end]
			k := rand.IntN(n)
			reverse(run[:k])
			reverse(run[k:])
			reverse(run)
		}
		start = end
	}
}

func reverse(s []*endpoint) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

func (a *AMTRelay) reply(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	return m
}

// negative builds NXDOMAIN or NODATA with the apex SOA in the authority section (RFC 2308).
func (a *AMTRelay) negative(r *dns.Msg, rcode int, apex string) *dns.Msg {
	m := a.reply(r)
	m.Rcode = rcode
	m.Ns = []dns.RR{a.soa(apex)}
	return m
}

// soa synthesizes the SOA of apex. Its MINIMUM is the answer TTL, which makes negative answers as
// short-lived as positive ones: a source that gains a relay must not stay hidden behind a cached NXDOMAIN.
func (a *AMTRelay) soa(apex string) dns.RR {
	mname := apex
	if len(a.cfg.nameservers) > 0 {
		mname = a.cfg.nameservers[0]
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: a.cfg.ttl},
		Ns:      mname,
		Mbox:    "hostmaster." + apex,
		Serial:  a.cfg.serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  a.cfg.ttl,
	}
}

func (a *AMTRelay) ns(apex string) []dns.RR {
	rrs := make([]dns.RR, len(a.cfg.nameservers))
	for i, ns := range a.cfg.nameservers {
		rrs[i] = &dns.NS{Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: a.cfg.ttl}, Ns: ns}
	}
	return rrs
}

func (a *AMTRelay) write(w dns.ResponseWriter, r *dns.Msg, m *dns.Msg) (int, error) {
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, plugin.Error(pluginName, err)
	}
	return m.Rcode, nil
}
