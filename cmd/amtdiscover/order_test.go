package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func driadC(addr string, prec int) candidate {
	return candidate{Addr: netip.MustParseAddr(addr), Origin: "driad", Precedence: prec}
}

func anycastC(addr string) candidate {
	return candidate{Addr: netip.MustParseAddr(addr), Origin: "anycast", Precedence: -1}
}

func addrs(cs []candidate) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Addr.String())
	}
	return strings.Join(s, " ")
}

var (
	allRoutable = func(netip.Addr) bool { return true }
	noShuffle   = func(int, func(int, int)) {}
)

// Precedence groups, lowest first; anycast results after every DRIAD
// group, whatever the order they came in.
func TestOrderPrecedence(t *testing.T) {
	o := orderer{routable: allRoutable, shuffle: noShuffle}
	got := o.order([]candidate{
		anycastC("192.0.2.9"),
		driadC("192.0.2.30", 30),
		driadC("192.0.2.10", 10),
		driadC("192.0.2.0", 0),
		driadC("192.0.2.255", 255),
		driadC("192.0.2.11", 10),
	})
	if a := addrs(got); a != "192.0.2.0 192.0.2.10 192.0.2.11 192.0.2.30 192.0.2.255 192.0.2.9" {
		t.Errorf("Order %s", a)
	}
	var groups []int
	for _, c := range got {
		groups = append(groups, c.Group)
	}
	if !slices.Equal(groups, []int{1, 2, 2, 3, 4, 5}) {
		t.Errorf("Groups %v", groups)
	}
}

// Within a group: addresses without a route last (rule 1), IPv6 global
// before IPv4 before ULA (rule 6), families interleaved (RFC 8305), and
// precedence groups are never mixed by any of it.
func TestOrderFamilies(t *testing.T) {
	noV6 := func(a netip.Addr) bool { return a.Is4() }
	cases := []struct {
		name     string
		routable func(netip.Addr) bool
		in       []candidate
		want     string
	}{
		{"IPv6 first, then interleaved", allRoutable,
			[]candidate{driadC("192.0.2.1", 10), driadC("192.0.2.2", 10), driadC("192.0.2.3", 10), driadC("2001:db8::1", 10), driadC("2001:db8::2", 10)},
			// 2001:db8::/32 is not 2001::/32 (Teredo): global IPv6, precedence 40.
			"2001:db8::1 192.0.2.1 2001:db8::2 192.0.2.2 192.0.2.3"},
		{"no IPv6 route: IPv6 last", noV6,
			[]candidate{driadC("2001:db8::1", 10), driadC("192.0.2.1", 10), driadC("2001:db8::2", 10), driadC("192.0.2.2", 10)},
			"192.0.2.1 192.0.2.2 2001:db8::1 2001:db8::2"},
		{"ULA and Teredo after IPv4", allRoutable,
			[]candidate{driadC("fd00::1", 10), driadC("2001:0:1::1", 10), driadC("192.0.2.1", 10)},
			"192.0.2.1 2001:0:1::1 fd00::1"},
		{"groups stay apart", noV6,
			[]candidate{driadC("2001:db8::1", 10), driadC("192.0.2.2", 20), driadC("192.0.2.1", 10)},
			"192.0.2.1 2001:db8::1 192.0.2.2"},
		{"anycast group ordered too", allRoutable,
			[]candidate{anycastC("192.0.2.1"), anycastC("2001:db8::1"), driadC("192.0.2.9", 200)},
			"192.0.2.9 2001:db8::1 192.0.2.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := orderer{routable: tc.routable, shuffle: noShuffle}.order(tc.in)
			if a := addrs(got); a != tc.want {
				t.Errorf("Order %s, want %s", a, tc.want)
			}
			for _, c := range got {
				if c.Routable != tc.routable(c.Addr) {
					t.Errorf("%v routable %v", c.Addr, c.Routable)
				}
			}
		})
	}
}

// The shuffle only reorders candidates that are equal on every rule.
func TestOrderShuffleAmongEquals(t *testing.T) {
	reverse := func(n int, swap func(i, j int)) {
		for i := 0; i < n/2; i++ {
			swap(i, n-1-i)
		}
	}
	in := []candidate{driadC("192.0.2.1", 10), driadC("192.0.2.2", 10), driadC("2001:db8::1", 10), driadC("192.0.2.3", 20)}
	got := orderer{routable: allRoutable, shuffle: reverse}.order(in)
	if a := addrs(got); a != "2001:db8::1 192.0.2.2 192.0.2.1 192.0.2.3" {
		t.Errorf("Order %s", a)
	}
	if a := addrs(in); a != "192.0.2.1 192.0.2.2 2001:db8::1 192.0.2.3" {
		t.Errorf("The input was reordered: %s", a)
	}
}

func TestPolicyPrecedence(t *testing.T) {
	for addr, want := range map[string]int{
		"::1": 50, "2001:db8::1": 40, "192.0.2.1": 35, "127.0.0.1": 35, "2002::1": 30,
		"2001::1": 5, "fd00::1": 3, "fec0::1": 1, "3ffe::1": 1, "::192.0.2.1": 1,
	} {
		if got := policyPrecedence(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %d, want %d", addr, got, want)
		}
	}
}

// An address named by DRIAD and by the anycast answer is raced once, as
// DRIAD's (lowest precedence first), with the others listed.
func TestDedupe(t *testing.T) {
	v := driadC("192.0.2.1", 20)
	v.Via = "relays.example.net."
	got := dedupe([]candidate{anycastC("192.0.2.1"), v, driadC("192.0.2.1", 10), driadC("192.0.2.2", 10)})
	if len(got) != 2 || got[0].Precedence != 10 || got[0].Origin != "driad" || got[1].Addr != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("Deduped %+v", got)
	}
	if want := []string{"driad precedence 20 D=0 via relays.example.net.", "anycast"}; !slices.Equal(got[0].Also, want) {
		t.Errorf("Also %q, want %q", got[0].Also, want)
	}
}
