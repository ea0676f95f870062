package main

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
)

// groupKey ranks precedence groups: DRIAD's by precedence (0-255, lower
// first), then the anycast A/AAAA results as one group of their own. They
// come last because they carry no precedence from the source's operator,
// and because an address that DRIAD names too is DRIAD's to rank.
func groupKey(c candidate) int {
	if c.Precedence < 0 {
		return 256
	}
	return c.Precedence
}

func sortByGroup(c []candidate) {
	slices.SortStableFunc(c, func(a, b candidate) int { return cmp.Compare(groupKey(a), groupKey(b)) })
}

// policy is RFC 6724's default policy table (section 2.1), longest prefix
// first; IPv4 addresses are looked up as ::ffff:a.b.c.d.
var policy = []struct {
	prefix     netip.Prefix
	precedence int
}{
	{netip.MustParsePrefix("::1/128"), 50},
	{netip.MustParsePrefix("::ffff:0:0/96"), 35},
	{netip.MustParsePrefix("::/96"), 1},
	{netip.MustParsePrefix("2001::/32"), 5},
	{netip.MustParsePrefix("2002::/16"), 30},
	{netip.MustParsePrefix("3ffe::/16"), 1},
	{netip.MustParsePrefix("fec0::/10"), 1},
	{netip.MustParsePrefix("fc00::/7"), 3},
	{netip.MustParsePrefix("::/0"), 40},
}

func policyPrecedence(a netip.Addr) int {
	a16 := netip.AddrFrom16(a.As16())
	for _, p := range policy {
		if p.prefix.Contains(a16) {
			return p.precedence
		}
	}
	return 40
}

// hasRoute is RFC 6724 rule 1's "unusable destination" test: connecting a
// UDP socket asks the kernel for a route and sends nothing.
func hasRoute(a netip.Addr) bool {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, amtPort)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// orderer puts candidates in the order RFC 8777 section 3.3 gives a
// gateway: precedence groups first; within a group, a simplified RFC 6724
// destination ordering (rule 1, addresses without a route last; rule 6,
// the default policy table's precedence, which puts global IPv6 before
// IPv4 and IPv4 before ULAs and 6to4); a random order among addresses
// still equal, so that DNS can spread load; then RFC 8305 section 4's
// interleaving of address families, so that one broken family costs one
// stagger delay rather than a whole group's.
type orderer struct {
	routable func(netip.Addr) bool
	shuffle  func(n int, swap func(i, j int))
}

func (o orderer) order(cands []candidate) []candidate {
	out := slices.Clone(cands)
	sortByGroup(out)
	group := 0
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && groupKey(out[j]) == groupKey(out[i]) {
			j++
		}
		group++
		g := out[i:j]
		for k := range g {
			g[k].Group = group
			g[k].Routable = o.routable(g[k].Addr)
		}
		o.shuffle(len(g), func(a, b int) { g[a], g[b] = g[b], g[a] })
		slices.SortStableFunc(g, func(a, b candidate) int {
			if a.Routable != b.Routable {
				if a.Routable {
					return -1
				}
				return 1
			}
			return cmp.Compare(policyPrecedence(b.Addr), policyPrecedence(a.Addr))
		})
		interleave(g)
		i = j
	}
	return out
}

// interleave alternates address families among the routable candidates,
// starting with the family of the first; unroutable ones stay at the end.
func interleave(g []candidate) {
	n := 0
	for n < len(g) && g[n].Routable {
		n++
	}
	if n < 2 {
		return
	}
	first := g[0].Addr.Is4()
	var same, other []candidate
	for _, c := range g[:n] {
		if c.Addr.Is4() == first {
			same = append(same, c)
		} else {
			other = append(other, c)
		}
	}
	k := 0
	for len(same) > 0 || len(other) > 0 {
		if len(same) > 0 {
			g[k], same = same[0], same[1:]
			k++
		}
		if len(other) > 0 {
			g[k], other = other[0], other[1:]
			k++
		}
	}
}
