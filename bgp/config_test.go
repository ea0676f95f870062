package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigNormalize(t *testing.T) {
	a := Neighbor{Address: netip.MustParseAddr("192.0.2.10"), RemoteAS: 64500}
	b := Neighbor{Address: netip.MustParseAddr("2001:db8::10"), RemoteAS: 64512}
	base := func(ns ...Neighbor) Config { return testConfig(ns...) }
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"ok", func(*Config) {}, ""},
		{"local AS 0", func(c *Config) { c.LocalAS = 0 }, "local AS 0"},
		{"router ID IPv6", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "router ID"},
		{"router ID missing", func(c *Config) { c.RouterID = netip.Addr{} }, "router ID"},
		{"no neighbors", func(c *Config) { c.Neighbors = [MaxNeighbors]Neighbor{} }, "no neighbors"},
		{"gap", func(c *Config) { c.Neighbors[0] = Neighbor{}; c.Neighbors[2] = a }, "after an empty one"},
		{"remote AS 0", func(c *Config) { c.Neighbors[0].RemoteAS = 0 }, "remote AS 0"},
		{"twice", func(c *Config) { c.Neighbors[1] = a }, "configured twice"},
		{"twice mapped", func(c *Config) { c.Neighbors[1] = a; c.Neighbors[1].Address = netip.AddrFrom16(a.Address.As16()) }, "configured twice"},
		{"hold 2s", func(c *Config) { c.Neighbors[0].HoldTime = 2 * time.Second }, "hold time"},
		{"hold fraction", func(c *Config) { c.Neighbors[0].HoldTime = 3500 * time.Millisecond }, "hold time"},
		{"families", func(c *Config) { c.Neighbors[0].Families = 1 << 6 }, "unknown families"},
		{"passive", func(c *Config) { c.Neighbors[0].Passive = true }, "does not listen"},
		{"passive listening", func(c *Config) {
			c.Neighbors[0].Passive = true
			c.Listen = netip.MustParseAddrPort("192.0.2.1:0")
		}, ""},
		{"multicast neighbor", func(c *Config) { c.Neighbors[0].Address = netip.MustParseAddr("224.0.0.1") }, "not a unicast"},
		{"zone", func(c *Config) { c.Neighbors[0].Address = netip.MustParseAddr("fe80::1%eth0") }, "zones"},
		{"port, no address", func(c *Config) { c.Listen = netip.AddrPortFrom(netip.Addr{}, 179) }, "without an address"},
	} {
		c := base(a, b)
		tc.edit(&c)
		_, err := c.normalize()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
		}
	}

	// Defaults filled in and neighbors sorted: equal configs are equal keys.
	x, err := base(b, a).normalize()
	if err != nil {
		t.Fatal(err)
	}
	explicit := a
	explicit.Port, explicit.HoldTime, explicit.Families = DefaultPort, DefaultHoldTime, DefaultFamilies
	y, err := base(explicit, b).normalize()
	if err != nil {
		t.Fatal(err)
	}
	if x != y {
		t.Errorf("Equal configs normalized apart:\n%+v\n%+v", x, y)
	}
	c := base()
	for i := 0; i < MaxNeighbors; i++ {
		n := a
		n.Address = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		if err := c.AddNeighbor(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AddNeighbor(b); err == nil {
		t.Errorf("AddNeighbor beyond %d succeeded", MaxNeighbors)
	}
}

func TestParseFamily(t *testing.T) {
	for _, f := range familyIndex {
		got, err := ParseFamily(strings.ToUpper(f.String()))
		if err != nil || got != f {
			t.Errorf("ParseFamily(%q) = %v, %v", f, got, err)
		}
	}
	if _, err := ParseFamily("ipv4-flowspec"); err == nil {
		t.Errorf("ParseFamily accepted ipv4-flowspec")
	}
}
