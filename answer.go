package amtrelay

import (
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/amtdns/amtrelay/revname"
	"github.com/amtdns/amtrelay/sign"

	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/miekg/dns"
)

// result is what the plugin did with a query: the result label of requests_total.
type result uint8

const (
	resultAnswer      result = iota
	resultNoData             // NOERROR without records, SOA in authority
	resultNXDomain           // NXDOMAIN, SOA in authority
	resultAllDown            // every relay of the source is down: the all_down policy answered
	resultFallthrough        // handed to the next plugin
	resultRefused            // a zone transfer: REFUSED, nothing to transfer
	numResults
)

var resultNames = [numResults]string{"answer", "nodata", "nxdomain", "all_down", "fallthrough", "refused"}

func (r result) String() string { return resultNames[r] }

// nameKind classifies a query name relative to a source's reverse name rev(S).
type nameKind uint8

const (
	nameOther   nameKind = iota // not ours
	nameReverse                 // rev(S): the RFC 8777 owner name
	nameApex                    // L.rev(S): the anycast AMT DNS zone apex
	nameBelow                   // anything.L.rev(S): nothing exists there
)

// classify finds where qname sits relative to the source it names. apex is the part of qname that
// is L.rev(S), as asked (letter case included), for nameApex and nameBelow. Labels in front of
// L.rev(S) may hold any escapes: they only make a name below the apex.
func classify(qname, label string) (kind nameKind, apex string, src netip.Addr) {
	prefix, src, ok := revname.Parse(qname)
	if !ok {
		return nameOther, "", src
	}
	if prefix == "" {
		return nameReverse, "", src
	}
	front, last := revname.LastLabel(prefix)
	if strings.IndexByte(last, '\\') >= 0 || !strings.EqualFold(last, label) {
		return nameOther, "", src
	}
	if front == "" {
		return nameApex, qname, src
	}
	return nameBelow, qname[len(front)+1:], src
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

// answer decides what to do with r, a class IN query inside zone, from the table and the relay
// states of v. It returns the reply to write; or nil, when cfg.handOn says so of the result, to
// hand r to the next plugin, with resultRefused for REFUSED, and nil otherwise for SERVFAIL (the
// all_down servfail policy). The endpoints whose records the reply carries are appended to picked,
// which is returned. It only reads its arguments.
func (cfg *config) answer(r *dns.Msg, zone string, v *view, picked []*endpoint) (*dns.Msg, result, []*endpoint) {
	q := r.Question[0]
	kind, apex, src := classify(q.Name, cfg.label)
	if kind == nameOther || (kind == nameReverse && q.Qtype != dns.TypeAMTRELAY) {
		return nil, resultFallthrough, picked
	}
	relays, found := v.relaysFor(src)
	// rev(S) may be served by a zone further down the chain; L.rev(S) was delegated to us, so a
	// miss there is authoritative unless the operator chains another server with fallthrough.
	if !found && (kind == nameReverse || cfg.fall.Through(q.Name)) {
		return nil, resultFallthrough, picked
	}
	// Each L.<rev(S)> is a zone of its own, synthesized from relay health: there is nothing to
	// transfer, and an empty NOERROR would look like a transfer of an empty zone (RFC 5936 §2.2.1).
	if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		return nil, resultRefused, picked
	}
	if !found {
		// A signed apex exists whatever the table says (its DNSKEY, SOA and NSEC prove it): a
		// source this network does not serve has no relays there, not no name.
		if kind != nameApex || cfg.dnssec == nil {
			return cfg.negative(r, dns.RcodeNameError, apex), resultNXDomain, picked
		}
		relays = nil
	}
	if kind == nameReverse {
		apex = zone
	}

	switch {
	case kind == nameBelow:
		return cfg.negative(r, dns.RcodeNameError, apex), resultNXDomain, picked
	case (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeAMTRELAY) && relays != nil:
		return cfg.relayAnswer(r, relays, cfg.canaryFor(src.Unmap()), apex, v, picked)
	case q.Qtype == dns.TypeSOA:
		m := reply(r)
		m.Answer = []dns.RR{cfg.soa(apex)}
		return m, resultAnswer, picked
	case q.Qtype == dns.TypeNS && len(cfg.nameservers) > 0:
		m := reply(r)
		m.Answer = cfg.ns(apex)
		return m, resultAnswer, picked
	case q.Qtype == dns.TypeDNSKEY && cfg.dnssec != nil && kind == nameApex:
		m := reply(r)
		m.Answer = sign.DNSKEYSet(cfg.dnssec.keys, apex, dnskeyTTL, v.peers)
		return m, resultAnswer, picked
	case q.Qtype == dns.TypeNSEC && cfg.dnssec != nil && kind == nameApex:
		m := reply(r)
		m.Answer = []dns.RR{sign.NSEC(apex, cfg.ttl, cfg.apexTypes(relays, cfg.canaryFor(src.Unmap()), v))}
		return m, resultAnswer, picked
	}
	return cfg.negative(r, dns.RcodeSuccess, apex), resultNoData, picked
}

// handOn reports whether a query answer returned no message for goes to the next plugin.
func (cfg *config) handOn(res result) bool {
	return res == resultFallthrough || res == resultAllDown && cfg.allDown == allDownFallthrough
}

// choose appends to eps the endpoints of relays (indices, in precedence order) that an answer at a
// source whose canary is canary (-1 for none) may carry, of any family: those that serve and pass
// the canary; or, when none does, those the all_down policy hands out, with result
// resultAllDown. A drained relay is in no answer.
func (cfg *config) choose(relays []int, canary int, v *view, eps []*endpoint) ([]*endpoint, result) {
	res := resultAnswer
	if !v.servingAny(relays, canary) {
		res = resultAllDown
		if cfg.allDown != allDownServe {
			return eps, res
		}
	}
	for _, i := range relays {
		if v.admin.of(i) == adminDrain {
			continue
		}
		for _, e := range cfg.relays[i].endpoints {
			if res == resultAnswer && !v.usable(e.id, canary) {
				continue
			}
			eps = append(eps, e)
		}
	}
	return eps, res
}

// answers reports whether an endpoint is answered for qtype: A and AAAA by family, AMTRELAY all.
func (e *endpoint) answers(qtype uint16) bool {
	switch qtype {
	case dns.TypeA:
		return e.addr.Is4()
	case dns.TypeAAAA:
		return e.addr.Is6()
	}
	return true
}

// relayAnswer builds the answer for A, AAAA or AMTRELAY at a known source whose relays are the
// given indices and whose canary is canary: the chosen endpoints of the query's type, or what the
// all_down policy says.
func (cfg *config) relayAnswer(r *dns.Msg, relays []int, canary int, apex string, v *view, eps []*endpoint) (*dns.Msg, result, []*endpoint) {
	qtype := r.Question[0].Qtype
	first := len(eps)
	eps, res := cfg.choose(relays, canary, v, eps)
	if res == resultAllDown {
		switch cfg.allDown {
		case allDownNoData:
			// TTL 0: this gap lasts until a relay recovers or routing moves the anycast address
			// away, usually seconds; a resolver caching it for the full TTL would keep gateways
			// without a relay after another network has taken over.
			m := cfg.negative(r, dns.RcodeSuccess, apex)
			m.Ns[0].Header().Ttl = 0
			return m, res, eps
		case allDownServFail, allDownFallthrough:
			return nil, res, eps
		}
	}
	mine := eps[first:first]
	for _, e := range eps[first:] {
		if e.answers(qtype) {
			mine = append(mine, e)
		}
	}
	eps = eps[:first+len(mine)]
	if len(mine) == 0 {
		if res == resultAnswer {
			res = resultNoData
		}
		return cfg.negative(r, dns.RcodeSuccess, apex), res, eps
	}

	m := reply(r)
	hdr := dns.RR_Header{Name: r.Question[0].Name, Rrtype: qtype, Class: dns.ClassINET, Ttl: cfg.ttl}
	m.Answer = make([]dns.RR, len(mine))
	if qtype == dns.TypeAMTRELAY {
		for i, e := range mine {
			m.Answer[i] = &dns.RFC3597{Hdr: hdr, Rdata: e.rdata}
		}
		return m, res, eps
	}
	rotateWithinPrecedence(mine)
	for i, e := range mine {
		if qtype == dns.TypeA {
			m.Answer[i] = &dns.A{Hdr: hdr, A: e.ip}
		} else {
			m.Answer[i] = &dns.AAAA{Hdr: hdr, AAAA: e.ip}
		}
	}
	return m, res, eps
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

func reply(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	return m
}

// negative builds NXDOMAIN or NODATA with the apex SOA in the authority section (RFC 2308).
func (cfg *config) negative(r *dns.Msg, rcode int, apex string) *dns.Msg {
	m := reply(r)
	m.Rcode = rcode
	m.Ns = []dns.RR{cfg.soa(apex)}
	return m
}

// soa synthesizes the SOA of apex. Its MINIMUM is the answer TTL, which makes negative answers as
// short-lived as positive ones: a source that gains a relay must not stay hidden behind a cached NXDOMAIN.
func (cfg *config) soa(apex string) dns.RR {
	mname := apex
	if len(cfg.nameservers) > 0 {
		mname = cfg.nameservers[0]
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: cfg.ttl},
		Ns:      mname,
		Mbox:    dnsutil.Join("hostmaster", apex),
		Serial:  cfg.serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  cfg.ttl,
	}
}

func (cfg *config) ns(apex string) []dns.RR {
	rrs := make([]dns.RR, len(cfg.nameservers))
	for i, ns := range cfg.nameservers {
		rrs[i] = &dns.NS{Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: cfg.ttl}, Ns: ns}
	}
	return rrs
}

// AMTRELAY relay types (RFC 8777 §4.2.3).
const (
	relayTypeIPv4 = 1
	relayTypeIPv6 = 2
	relayTypeName = 3
)

// relayRdata packs the AMTRELAY RDATA of an endpoint in RFC 3597 hex: precedence, D-bit and type,
// relay (RFC 8777 §4.2). A name is written uncompressed and fully qualified, root label included
// (§4.2.4). Answers carry the record as opaque type 260 because miekg/dns v1.1.73 drops the relay
// field of a native AMTRELAY record whose D-bit is set.
func relayRdata(precedence uint8, discoveryOptional bool, addr netip.Addr, host string) (string, error) {
	b := []byte{precedence, 0}
	if discoveryOptional {
		b[1] = 0x80
	}
	switch {
	case addr.Is4():
		b[1] |= relayTypeIPv4
		b = append(b, addr.AsSlice()...)
	case addr.Is6():
		b[1] |= relayTypeIPv6
		b = append(b, addr.AsSlice()...)
	default:
		b[1] |= relayTypeName
		name := make([]byte, 256)
		n, err := dns.PackDomainName(host, name, 0, nil, false)
		if err != nil {
			return "", err
		}
		b = append(b, name[:n]...)
	}
	return hex.EncodeToString(b), nil
}
