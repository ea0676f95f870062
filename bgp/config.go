package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Family is an address family the speaker can receive routes of.
type Family uint8

// The families a neighbor can be configured with. Multicast (SAFI 2) is
// the multicast RIB, the one that says which sources are reachable for
// multicast (RFC 4760); unicast is there for networks that carry their
// multicast reachability in the unicast RIB.
const (
	IPv4Multicast Family = 1 << iota
	IPv6Multicast
	IPv4Unicast
	IPv6Unicast
)

var familyNames = []struct {
	f    Family
	name string
}{
	{IPv4Multicast, "ipv4-multicast"},
	{IPv6Multicast, "ipv6-multicast"},
	{IPv4Unicast, "ipv4-unicast"},
	{IPv6Unicast, "ipv6-unicast"},
}

// String returns the name the way GoBGP and the Corefile spell it, such
// as "ipv4-multicast".
func (f Family) String() string {
	for _, n := range familyNames {
		if n.f == f {
			return n.name
		}
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// ParseFamily parses a family name such as "ipv6-multicast".
func ParseFamily(s string) (Family, error) {
	for _, n := range familyNames {
		if strings.EqualFold(n.name, s) {
			return n.f, nil
		}
	}
	return 0, fmt.Errorf("unknown address family %q (want ipv4-multicast, ipv6-multicast, ipv4-unicast or ipv6-unicast)", s)
}

// Families is a set of Family values; the zero value means the default,
// both multicast families.
type Families uint8

// DefaultFamilies are a neighbor's families when none are configured.
const DefaultFamilies = Families(IPv4Multicast | IPv6Multicast)

const allFamilies = Families(IPv4Multicast | IPv6Multicast | IPv4Unicast | IPv6Unicast)

// Has reports whether f is in the set.
func (fs Families) Has(f Family) bool { return fs&Families(f) != 0 }

// List returns the families in the set, in a fixed order.
func (fs Families) List() []Family {
	var out []Family
	for _, n := range familyNames {
		if fs.Has(n.f) {
			out = append(out, n.f)
		}
	}
	return out
}

// Defaults for a Neighbor's zero fields.
const (
	DefaultPort     = 179
	DefaultHoldTime = 9 * time.Second
)

// MaxNeighbors bounds the neighbors of one speaker. A Config is a plain
// comparable value, so that it can key the registry of running speakers,
// which rules out a slice; the plugin peers with the network's own router
// or two, never with a whole exchange.
const MaxNeighbors = 8

// Neighbor is one BGP peer. Only Address and RemoteAS are required.
type Neighbor struct {
	Address netip.Addr
	// RemoteAS equal to the Config's LocalAS makes an iBGP session.
	RemoteAS uint32
	// Port is the neighbor's TCP port; 0 means 179.
	Port uint16
	// Passive waits for the neighbor to connect instead of dialling it;
	// it needs Config.Listen.
	Passive bool
	// HoldTime proposed in OPEN, whole seconds, 3 s or more; 0 means 9 s.
	// A peer that sends nothing for this long is dropped with its routes.
	HoldTime time.Duration
	// Families to negotiate; 0 means DefaultFamilies.
	Families Families
}

// Config is what a Speaker is made from. It is comparable, and equal
// configs (after the defaults are filled in, and whatever the order of
// the neighbors) share one speaker through Acquire.
type Config struct {
	LocalAS  uint32
	RouterID netip.Addr // an IPv4 address, the BGP identifier
	// Listen is where to accept connections. The zero value means dialling
	// out only: no socket is listened on. A zero port means 179.
	Listen    netip.AddrPort
	Neighbors [MaxNeighbors]Neighbor // in use up to the first zero Address
}

// AddNeighbor puts n in the first free slot.
func (c *Config) AddNeighbor(n Neighbor) error {
	for i := range c.Neighbors {
		if !c.Neighbors[i].Address.IsValid() {
			c.Neighbors[i] = n
			return nil
		}
	}
	return fmt.Errorf("more than %d neighbors", MaxNeighbors)
}

// neighbors returns the configured neighbors.
func (c *Config) neighbors() []Neighbor {
	for i, n := range c.Neighbors {
		if !n.Address.IsValid() {
			return c.Neighbors[:i]
		}
	}
	return c.Neighbors[:]
}

// Validate reports what is wrong with c, as Acquire and New would.
func (c Config) Validate() error {
	_, err := c.normalize()
	return err
}

// normalize validates c and returns it with defaults filled in and the
// neighbors sorted by address, the form speakers are keyed and built by.
func (c Config) normalize() (Config, error) {
	if c.LocalAS == 0 {
		return c, errors.New("local AS 0 is reserved")
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		return c, fmt.Errorf("router ID %v is not a non-zero IPv4 address", c.RouterID)
	}
	if c.Listen.Addr().IsValid() {
		c.Listen = netip.AddrPortFrom(c.Listen.Addr().Unmap(), cmp.Or(c.Listen.Port(), DefaultPort))
	} else if c.Listen.Port() != 0 {
		return c, errors.New("listen port without an address")
	}
	ns := c.neighbors()
	for i := len(ns); i < MaxNeighbors; i++ {
		if c.Neighbors[i] != (Neighbor{}) {
			return c, fmt.Errorf("neighbor slot %d used after an empty one", i)
		}
	}
	if len(ns) == 0 {
		return c, errors.New("no neighbors")
	}
	for i := range ns {
		n := &ns[i]
		n.Address = n.Address.Unmap()
		if n.Address.Zone() != "" {
			return c, fmt.Errorf("neighbor %v: zones are not supported", n.Address)
		}
		if n.Address.IsUnspecified() || n.Address.IsMulticast() {
			return c, fmt.Errorf("neighbor %v: not a unicast address", n.Address)
		}
		if n.RemoteAS == 0 {
			return c, fmt.Errorf("neighbor %v: remote AS 0 is reserved", n.Address)
		}
		n.Port = cmp.Or(n.Port, DefaultPort)
		n.HoldTime = cmp.Or(n.HoldTime, DefaultHoldTime)
		if n.HoldTime < 3*time.Second || n.HoldTime%time.Second != 0 || n.HoldTime > 65535*time.Second {
			return c, fmt.Errorf("neighbor %v: hold time %v is not whole seconds from 3 s to 65535 s", n.Address, n.HoldTime)
		}
		n.Families = cmp.Or(n.Families, DefaultFamilies)
		if n.Families&^allFamilies != 0 {
			return c, fmt.Errorf("neighbor %v: unknown families %#x", n.Address, uint8(n.Families&^allFamilies))
		}
		if n.Passive && !c.Listen.IsValid() {
			return c, fmt.Errorf("neighbor %v: passive, but the speaker does not listen", n.Address)
		}
	}
	slices.SortFunc(ns, func(a, b Neighbor) int { return a.Address.Compare(b.Address) })
	for i := 1; i < len(ns); i++ {
		if ns[i].Address == ns[i-1].Address {
			return c, fmt.Errorf("neighbor %v configured twice", ns[i].Address)
		}
	}
	return c, nil
}
