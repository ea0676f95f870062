package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/amtdns/amtrelay/revname"
)

// Bounds on the DNS side: each keeps one misconfigured zone from turning a
// check into a crawl.
const (
	// maxChain is how many CNAMEs one lookup follows, within answers and
	// across re-queries together.
	maxChain = 8
	// maxRelayNames is how many type 3 relay names are looked up.
	maxRelayNames = 8
)

// step is one query of the DNS phase as the report shows it.
type step struct {
	// Purpose is "driad", "anycast" or "relay name".
	Purpose string
	lookup
	// CNAMEOf is the name whose CNAME chain led to this query, empty for
	// the first query of a lookup.
	CNAMEOf string
	// Status is answer, nodata, nxdomain, another rcode, cname (the
	// answer stopped at a CNAME, whose target is asked next), or timeout,
	// refused, error, interrupted, cname_loop, cname_chain_too_long.
	Status string
	// Partial is set when the reply used is a truncated one: the TCP
	// retry failed, so records may be missing.
	Partial bool
}

// resolved is the outcome of resolving one name and type.
type resolved struct {
	Steps []step
	// Records are those of the asked type at the end of the CNAME chain.
	Records []record
	Status  string
}

// resolve asks name/qtype and follows CNAMEs: within one answer (a server
// that chased the chain itself), and by asking again for the chain's end
// when the answer stops at a CNAME (RFC 2317 style delegations, or an
// authoritative server for the first name only).
func resolve(ctx context.Context, rv *resolver, purpose, name string, qtype uint16) resolved {
	var out resolved
	seen := map[string]bool{strings.ToLower(name): true}
	cur, hops, cnameOf := name, 0, ""
	for {
		st := step{Purpose: purpose, lookup: rv.query(ctx, cur, qtype), CNAMEOf: cnameOf}
		rep := st.Reply
		st.Partial = rep != nil && rep.Truncated
		if rep == nil {
			st.Status = lastFailure(st.Exchanges)
			out.Steps = append(out.Steps, st)
			out.Status = st.Status
			return out
		}
		// Walk the chain the answer holds, from the name asked.
		end := cur
		for {
			next, ok := cnameTarget(rep.Answer, end)
			if !ok {
				break
			}
			if hops++; hops > maxChain {
				st.Status = "cname_chain_too_long"
				out.Steps, out.Status = append(out.Steps, st), st.Status
				return out
			}
			if seen[strings.ToLower(next)] {
				st.Status = "cname_loop"
				out.Steps, out.Status = append(out.Steps, st), st.Status
				return out
			}
			seen[strings.ToLower(next)] = true
			end = next
		}
		for _, r := range rep.Answer {
			if r.Type == qtype && strings.EqualFold(r.Name, end) {
				out.Records = append(out.Records, r)
			}
		}
		switch {
		case len(out.Records) > 0:
			st.Status = "answer"
		case rep.Rcode == dns.RcodeNameError:
			st.Status = "nxdomain"
		case rep.Rcode != dns.RcodeSuccess:
			st.Status = rcodeName(rep.Rcode)
		case end != cur:
			// The chain stops at a name this answer says nothing about:
			// ask for it.
			st.Status = "cname"
			out.Steps = append(out.Steps, st)
			cnameOf, cur = cur, end
			continue
		default:
			st.Status = "nodata"
		}
		out.Steps = append(out.Steps, st)
		out.Status = st.Status
		return out
	}
}

func cnameTarget(answer []record, owner string) (string, bool) {
	for _, r := range answer {
		if r.Type != dns.TypeCNAME || !strings.EqualFold(r.Name, owner) {
			continue
		}
		if c, ok := r.RR.(*dns.CNAME); ok {
			return c.Target, true
		}
	}
	return "", false
}

// lastFailure classifies a lookup that got no reply from any server.
func lastFailure(ex []exchange) string {
	if len(ex) == 0 {
		return "interrupted"
	}
	return ex[len(ex)-1].outcome()
}

// candidate is one relay address to race.
type candidate struct {
	Addr netip.Addr
	// Origin is "driad" or "anycast".
	Origin string
	// Via is the type 3 relay name the address was found through.
	Via string
	// Precedence and D come from the AMTRELAY record; anycast results
	// have neither (Precedence -1).
	Precedence int
	D          bool
	// Also lists the other records that named the same address.
	Also []string
	// Group is the candidate's rank among precedence groups, from 1.
	Group int
	// Routable is RFC 6724 rule 1: the host has a route to the address.
	Routable bool
}

func (c candidate) describe() string {
	s := c.Origin
	if c.Precedence >= 0 {
		s += fmt.Sprintf(" precedence %d", c.Precedence)
		if c.D {
			s += " D=1"
		} else {
			s += " D=0"
		}
	}
	if c.Via != "" {
		s += " via " + c.Via
	}
	return s
}

// dnsResult is everything the DNS phase found.
type dnsResult struct {
	Steps      []step
	Candidates []candidate
	// NoRelay is set when DRIAD answered with type 0 records: no relay
	// should be used for traffic from S.
	NoRelay bool
	Notes   []string
}

// discover runs the DNS phase for mode ("driad", "anycast" or "both"):
// the DRIAD AMTRELAY lookup and the anycast A and AAAA lookups in
// parallel, then the A and AAAA lookups of type 3 relay names.
func discover(ctx context.Context, rv *resolver, src netip.Addr, mode, label string) dnsResult {
	rev := revname.Reverse(src)
	var driad, anyA, anyAAAA resolved
	var wg sync.WaitGroup
	if mode != "anycast" {
		wg.Go(func() { driad = resolve(ctx, rv, "driad", rev, typeAMTRELAY) })
	}
	if mode != "driad" {
		name := label + "." + rev
		wg.Go(func() { anyA = resolve(ctx, rv, "anycast", name, dns.TypeA) })
		wg.Go(func() { anyAAAA = resolve(ctx, rv, "anycast", name, dns.TypeAAAA) })
	}
	wg.Wait()

	var res dnsResult
	res.Steps = append(res.Steps, driad.Steps...)
	var cands []candidate

	// DRIAD records, with the names of type 3 records looked up after.
	type named struct {
		name string
		rel  amtRelay
	}
	var names []named
	relays := 0
	for _, r := range driad.Records {
		if r.AMT == nil {
			continue
		}
		a := *r.AMT
		switch {
		case a.noRelay():
			res.NoRelay = true
		case !a.Usable:
		case a.Type == relayName:
			relays++
			if len(names) == maxRelayNames {
				res.Notes = append(res.Notes, fmt.Sprintf("more than %d relay names; %s not looked up", maxRelayNames, a.Name))
				continue
			}
			names = append(names, named{a.Name, a})
		default:
			relays++
			cands = append(cands, candidate{Addr: a.Addr.Unmap(), Origin: "driad", Precedence: int(a.Precedence), D: a.D})
		}
	}
	if res.NoRelay {
		if relays > 0 {
			res.Notes = append(res.Notes, "DRIAD mixes type 0 (no relay for this source) with relays, which RFC 8777 leaves undefined; the relays are tried")
		} else {
			res.Notes = append(res.Notes, "DRIAD: type 0, no AMT relay should be used for this source")
		}
	}

	byName := make([][2]resolved, len(names))
	for i, n := range names {
		wg.Go(func() { byName[i][0] = resolve(ctx, rv, "relay name", n.name, dns.TypeA) })
		wg.Go(func() { byName[i][1] = resolve(ctx, rv, "relay name", n.name, dns.TypeAAAA) })
	}
	wg.Wait()
	for i, n := range names {
		res.Steps = append(res.Steps, byName[i][0].Steps...)
		res.Steps = append(res.Steps, byName[i][1].Steps...)
		for _, rs := range byName[i] {
			for _, r := range rs.Records {
				if a, ok := addrOf(r); ok {
					cands = append(cands, candidate{Addr: a, Origin: "driad", Via: n.name, Precedence: int(n.rel.Precedence), D: n.rel.D})
				}
			}
		}
	}

	res.Steps = append(res.Steps, anyA.Steps...)
	res.Steps = append(res.Steps, anyAAAA.Steps...)
	for _, rs := range []resolved{anyA, anyAAAA} {
		for _, r := range rs.Records {
			if a, ok := addrOf(r); ok {
				cands = append(cands, candidate{Addr: a, Origin: "anycast", Precedence: -1})
			}
		}
	}
	res.Candidates = dedupe(cands)
	return res
}

func addrOf(r record) (netip.Addr, bool) {
	switch rr := r.RR.(type) {
	case *dns.A:
		a, ok := netip.AddrFromSlice(rr.A)
		return a.Unmap(), ok
	case *dns.AAAA:
		a, ok := netip.AddrFromSlice(rr.AAAA)
		return a.Unmap(), ok
	}
	return netip.Addr{}, false
}

// dedupe keeps the first candidate for each address, which is the most
// preferred one once sorted by group; the others are listed in Also. Input
// order is DRIAD first, so an address both designs name keeps DRIAD's
// precedence and D-bit.
func dedupe(cands []candidate) []candidate {
	// Lowest precedence first among DRIAD, anycast (-1) after: sort
	// before deduplicating so the kept entry is the preferred one.
	sortByGroup(cands)
	out := cands[:0:0]
	index := map[netip.Addr]int{}
	for _, c := range cands {
		if i, ok := index[c.Addr]; ok {
			out[i].Also = append(out[i].Also, c.describe())
			continue
		}
		index[c.Addr] = len(out)
		out = append(out, c)
	}
	return out
}
