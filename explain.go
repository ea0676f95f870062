package amtrelay

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/amtdns/amtrelay/table"

	"github.com/miekg/dns"
)

// defaultExplainFrom is who may ask for explanations when `explain` names nobody: the host itself.
var defaultExplainFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// explainTTL: an explanation is about this moment; nothing should cache it.
const explainTTL = 0

// explanation says, one TXT string a line, why a query for qname gets what it gets: the source, the
// table entry, each candidate relay with its states, the policy, and what IN queries would get now.
func (a *AMTRelay) explanation(qname, zone string) []string {
	cfg, v := a.cfg, a.view.load()
	kind, _, src := classify(qname, cfg.label)
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	src = src.Unmap()
	switch kind {
	case nameReverse:
		add("source %s, RFC 8777 owner name: AMTRELAY answered here, other types by the next plugin", src)
	case nameApex:
		add("source %s, anycast AMT DNS apex", src)
	case nameBelow:
		add("source %s, below the apex: NXDOMAIN", src)
	}

	m, found := v.match(src)
	if !found {
		if kind == nameReverse || cfg.fall.Through(qname) {
			add("table: no entry holds %s: handed to the next plugin", src)
		} else {
			add("table: no entry holds %s: NXDOMAIN", src)
		}
		return out
	}
	relays := m.relays
	add("table: %s from %s", m.prefix, a.origin(m))
	canary := cfg.canaryFor(src)
	if canary >= 0 {
		cn := cfg.canaries[canary]
		add("canary %s: channel (%s, %s)", cn.text, cn.source, cn.group)
	}

	for _, i := range relays {
		r := cfg.relays[i]
		for _, e := range r.endpoints {
			add("relay %s %s precedence %d: %s", r.name, e, r.precedence, a.endpointState(v, e, canary))
		}
	}

	policy := "not applied: a relay serves"
	if !v.servingAny(relays, canary) {
		policy = "applied: no relay serves"
	}
	names := map[allDownPolicy]string{}
	for n, p := range allDownPolicies {
		names[p] = n
	}
	add("all_down %s: %s", names[cfg.allDown], policy)

	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeAMTRELAY} {
		if kind == nameReverse && qtype != dns.TypeAMTRELAY {
			continue
		}
		q := new(dns.Msg)
		q.SetQuestion(qname, qtype)
		m, res, picked := cfg.answer(q, zone, v, nil)
		add("IN %s now: %s", dns.TypeToString[qtype], describeAnswer(cfg, m, res, picked))
	}
	return out
}

// origin says where the table entry m came from.
func (a *AMTRelay) origin(m tableMatch) string {
	p := m.prefix
	if m.learned {
		r, ok := a.routes.route(p)
		if !ok {
			return "BGP (withdrawn since)"
		}
		var comms []string
		for _, c := range r.Communities {
			comms = append(comms, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
		}
		if len(comms) == 0 {
			return fmt.Sprintf("BGP neighbor %s, %s", r.Neighbor, r.Family)
		}
		return fmt.Sprintf("BGP neighbor %s, %s, communities %s", r.Neighbor, r.Family, strings.Join(comms, " "))
	}
	for _, o := range a.cfg.inline {
		if o.Prefix == p {
			return "source line " + o.Origin.String()
		}
	}
	if a.sources != nil {
		if text := a.sources.text.Load(); text != nil {
			if line, ok := table.FindPrefix(*text, p); ok {
				return fmt.Sprintf("%s:%d", a.cfg.sources.path, line)
			}
		}
		return a.cfg.sources.path
	}
	return "the Corefile"
}

// endpointState says what the plugin knows of endpoint e for a source whose canary is canary.
func (a *AMTRelay) endpointState(v *view, e *endpoint, canary int) string {
	var b strings.Builder
	switch mode := v.admin.of(e.relay.index); mode {
	case adminDrain:
		b.WriteString("drained (admin); ")
	case adminDown, adminUp:
		fmt.Fprintf(&b, "forced %s (admin); ", mode)
	}
	probe, canaries := a.health.last(e.id)
	switch {
	case !a.cfg.health.enabled():
		b.WriteString("health checks off")
	case probe.at.IsZero():
		b.WriteString("not probed yet, counted up")
	default:
		state := "down"
		if v.health.endpointUp[e.id] {
			state = "up"
		}
		fmt.Fprintf(&b, "%s, last probe %s %s ago", state, probe.result, time.Since(probe.at).Round(time.Millisecond))
		if probe.ok {
			fmt.Fprintf(&b, " in %s", probe.rtt.Round(10*time.Microsecond))
		}
	}
	if canary >= 0 {
		state := "down"
		if v.health.canaryOK(e.id, canary) {
			state = "up"
		}
		c := canaries[canary]
		if c.at.IsZero() {
			fmt.Fprintf(&b, "; canary %s, not checked yet", state)
		} else {
			fmt.Fprintf(&b, "; canary %s, last check %s %s ago", state, c.result, time.Since(c.at).Round(time.Millisecond))
		}
	}
	if v.usable(e.id, canary) {
		b.WriteString("; in answers")
	} else {
		b.WriteString("; not in answers")
	}
	return b.String()
}

// describeAnswer sums up what answer returned.
func describeAnswer(cfg *config, m *dns.Msg, res result, picked []*endpoint) string {
	switch {
	case m == nil && cfg.handOn(res):
		return "handed to the next plugin (" + res.String() + ")"
	case m == nil:
		return "SERVFAIL (" + res.String() + ")"
	case len(m.Answer) == 0:
		return dns.RcodeToString[m.Rcode] + " without records (" + res.String() + ")"
	}
	var eps []string
	for _, e := range picked {
		eps = append(eps, e.String())
	}
	return fmt.Sprintf("%d records (%s): %s", len(m.Answer), res, strings.Join(eps, " "))
}

// isExplainQuery reports whether r asks for an explanation: CH TXT for one of the plugin's names,
// with explain on.
func (a *AMTRelay) isExplainQuery(q dns.Question) bool {
	if !a.cfg.explain || q.Qclass != dns.ClassCHAOS || q.Qtype != dns.TypeTXT {
		return false
	}
	kind, _, _ := classify(q.Name, a.cfg.label)
	return kind != nameOther
}

// serveExplain answers an explain query from an allowed client with the explanation, one TXT
// record a line, and refuses others.
func (a *AMTRelay) serveExplain(w dns.ResponseWriter, r *dns.Msg, zone string) (int, error) {
	if !a.explainAllowed(w) {
		return dns.RcodeRefused, nil
	}
	q := r.Question[0]
	m := new(dns.Msg)
	m.SetReply(r)
	for _, line := range a.explanation(q.Name, zone) {
		m.Answer = append(m.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS, Ttl: explainTTL},
			Txt: splitTXT(line),
		})
	}
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	return dns.RcodeSuccess, nil
}

func (a *AMTRelay) explainAllowed(w dns.ResponseWriter) bool {
	var ip netip.Addr
	switch addr := w.RemoteAddr().(type) {
	case interface{ AddrPort() netip.AddrPort }:
		ip = addr.AddrPort().Addr().Unmap()
	default:
		return false
	}
	for _, p := range a.cfg.explainFrom {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// splitTXT cuts s into the 255-byte strings a TXT record holds.
func splitTXT(s string) []string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}
