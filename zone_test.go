package amtrelay

import (
	"testing"

	"github.com/coredns/coredns/plugin"
)

var testZones = []string{"in-addr.arpa.", "ip6.arpa.", "100.51.198.in-addr.arpa."}

func TestMatchZone(t *testing.T) {
	for _, tc := range []struct {
		zones []string
		qname string
		want  string
	}{
		{testZones, "amt.12.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa."},
		{testZones, "AmT.12.100.51.198.In-AddR.ArPa.", "100.51.198.in-addr.arpa."},
		{testZones, "12.0.51.198.in-addr.arpa.", "in-addr.arpa."},
		{testZones, "in-addr.arpa.", "in-addr.arpa."},
		{testZones, "IP6.ARPA.", "ip6.arpa."},
		{testZones, "xin-addr.arpa.", ""},                  // not on a label boundary
		{testZones, `x\.in-addr.arpa.`, ""},                // the label is `x\.in-addr`
		{testZones, `x.in-addr\.arpa.`, ""},                // "in-addr.arpa" is one label here
		{testZones, `x\\.in-addr.arpa.`, "in-addr.arpa."},  // escaped backslash, then a real dot
		{testZones, `x\\\.in-addr.arpa.`, ""},              // escaped backslash, then an escaped dot: one label again
		{testZones, "arpa.", ""},                           // above every zone
		{testZones, "www.example.org.", ""},                // elsewhere
		{[]string{"."}, "www.example.org.", "."},           // the root holds everything
		{[]string{".", "arpa."}, "in-addr.arpa.", "arpa."}, // longest wins
		{[]string{"arpa.", "."}, "in-addr.arpa.", "arpa."}, // in any order
		{nil, "in-addr.arpa.", ""},
	} {
		if got := matchZone(tc.zones, tc.qname); got != tc.want {
			t.Errorf("matchZone(%v, %q) = %q, want %q", tc.zones, tc.qname, got, tc.want)
		}
		if got := plugin.Zones(tc.zones).Matches(tc.qname); got != tc.want {
			t.Errorf("plugin.Zones(%v).Matches(%q) = %q; the case expects %q", tc.zones, tc.qname, got, tc.want)
		}
	}
}
