package amtrelay

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/amtdns/amtrelay/bgp"
	"github.com/amtdns/amtrelay/health"
	"github.com/amtdns/amtrelay/sign"
	"github.com/amtdns/amtrelay/table"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

func init() { plugin.Register(pluginName, setup) }

// setup parses the block, loads its connectivity table and wires the instance's hooks. It starts
// nothing: background work starts in OnStartup.
func setup(c *caddy.Controller) error {
	cfg, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	gen, first := generationOf(c)
	a, err := newAMTRelay(cfg, gen)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	// CoreDNS refuses classes other than IN before any plugin sees them, unless a plugin of the
	// server block is in EnableChaos. The servers of a Corefile are made after every setup has run,
	// so the entry is what the blocks of this Corefile want: reset by its first block, set by any
	// block with explain.
	if first {
		delete(dnsserver.EnableChaos, pluginName)
	}
	if cfg.explain {
		dnsserver.EnableChaos[pluginName] = struct{}{}
	}
	c.OnFirstStartup(func() error {
		a.firstStartup = true
		return nil
	})
	server := dnsserver.GetConfig(c)
	c.OnStartup(func() error {
		// The plugin chain exists once the servers are made, before OnStartup.
		if cfg.dnssec != nil && server.Handler("dnssec") != nil {
			return plugin.Error(pluginName, errDNSSECStacked)
		}
		return a.start()
	})
	c.OnShutdown(a.shutdown)
	// These two run on the instance being replaced by a Corefile reload: a failed reload discards
	// the new instances without their OnShutdown, so this one stops what they started.
	c.OnRestart(func() error {
		for _, orphan := range beginRestart(a.gen) {
			orphan.stop()
		}
		return nil
	})
	c.OnRestartFailed(func() error {
		for _, discarded := range restartFailed(a.gen) {
			discarded.stop()
		}
		return nil
	})
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		a.Next = next
		return a
	})
	return nil
}

type generationKey struct{}

// generationOf returns the generation token of the caddy instance c is setting up, and whether
// this is its first amtrelay block.
func generationOf(c *caddy.Controller) (g *generation, first bool) {
	if g, ok := c.Get(generationKey{}).(*generation); ok {
		return g, false
	}
	g = new(generation)
	c.Set(generationKey{}, g)
	return g, true
}

// Names of relays become Prometheus label values and log words: keep them plain.
var relayNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// lastSerial makes SOA serials strictly increase across config loads, even two in one second.
var lastSerial atomic.Uint32

func nextSerial() uint32 {
	now := uint32(time.Now().Unix())
	for {
		prev := lastSerial.Load()
		next := max(now, prev+1)
		if lastSerial.CompareAndSwap(prev, next) {
			return next
		}
	}
}

// parse reads one server block's amtrelay stanza into a config. Its only I/O is the DNSSEC key
// files, which are part of the configuration.
func parse(c *caddy.Controller) (*config, error) {
	var cfg *config
	for c.Next() {
		if cfg != nil {
			return nil, plugin.ErrOnce
		}
		var err error
		if cfg, err = parseStanza(c); err != nil {
			return nil, err
		}
	}
	if cfg == nil {
		return nil, c.ArgErr()
	}
	return cfg, nil
}

func parseStanza(c *caddy.Controller) (*config, error) {
	cfg := &config{
		label: defaultLabel,
		ttl:   defaultTTL,
		health: healthCheck{
			interval: defaultInterval,
			timeout:  defaultTimeout,
			policy:   health.Policy{Fails: defaultFails, Rises: defaultRises},
		},
		serial: nextSerial(),
	}

	zoneArgs := c.RemainingArgs()
	if err := checkZones(c, "", zoneArgs); err != nil {
		return nil, err
	}
	cfg.zones = plugin.OriginsFromArgsOrServerBlock(zoneArgs, c.ServerBlockKeys)

	var (
		sources  []sourceLine
		bgpLines bgpLines
		byName   = map[string]*relay{}
		byAddr   = map[string]string{} // endpoint address -> relay name, to reject an address in two relays
		seenProp = map[string]bool{}
	)
	for c.NextBlock() {
		prop := c.Val()
		if prop != "relay" && prop != "source" && prop != "canary" && prop != "bgp_neighbor" && prop != "bgp_community" {
			if seenProp[prop] {
				return nil, c.Errf("%s given twice", prop)
			}
			seenProp[prop] = true
		}
		switch prop {
		case "relay":
			r, err := parseRelay(c)
			if err != nil {
				return nil, err
			}
			if _, dup := byName[r.name]; dup {
				return nil, c.Errf("relay %q defined twice", r.name)
			}
			for _, e := range r.endpoints {
				if other, dup := byAddr[e.String()]; dup {
					return nil, c.Errf("relay %q: address %s already belongs to relay %q", r.name, e, other)
				}
				byAddr[e.String()] = r.name
			}
			byName[r.name] = r
			cfg.relays = append(cfg.relays, r)
		case "source":
			args := c.RemainingArgs()
			if len(args) < 2 {
				return nil, c.Errf("source needs a prefix and at least one relay name")
			}
			p, err := table.ParsePrefix(args[0])
			if err != nil {
				return nil, c.Errf("source: %v", err)
			}
			sources = append(sources, sourceLine{prefix: p, relays: args[1:], file: c.File(), line: c.Line()})
		case "sources":
			sc, err := parseSources(c)
			if err != nil {
				return nil, err
			}
			cfg.sources = sc
		case "label":
			l, err := singleArg(c)
			if err != nil {
				return nil, err
			}
			if !isLabel(l) {
				return nil, c.Errf("label %q is not a single DNS label", l)
			}
			cfg.label = strings.ToLower(l)
		case "ttl":
			s, err := singleArg(c)
			if err != nil {
				return nil, err
			}
			ttl, err := strconv.ParseUint(s, 10, 32)
			if err != nil || ttl > math.MaxInt32 {
				return nil, c.Errf("ttl %q is not a number of seconds between 0 and %d", s, math.MaxInt32)
			}
			cfg.ttl = uint32(ttl)
		case "nameserver":
			args := c.RemainingArgs()
			if len(args) == 0 {
				return nil, c.ArgErr()
			}
			for _, ns := range args {
				if _, ok := dns.IsDomainName(ns); !ok || ns == "." {
					return nil, c.Errf("nameserver %q is not a domain name", ns)
				}
				fqdn := strings.ToLower(dns.Fqdn(ns))
				// An NS RRset holds each name once (RFC 2181 §5).
				if slices.Contains(cfg.nameservers, fqdn) {
					return nil, c.Errf("nameserver %s listed twice", fqdn)
				}
				cfg.nameservers = append(cfg.nameservers, fqdn)
			}
		case "health_check":
			hc, err := parseHealthCheck(c)
			if err != nil {
				return nil, err
			}
			cfg.health = hc
		case "all_down":
			s, err := singleArg(c)
			if err != nil {
				return nil, err
			}
			p, ok := allDownPolicies[s]
			if !ok {
				return nil, c.Errf("all_down %q: want serve, nodata, servfail or fallthrough", s)
			}
			cfg.allDown = p
		case "fallthrough":
			args := c.RemainingArgs()
			if err := checkZones(c, "fallthrough: ", args); err != nil {
				return nil, err
			}
			cfg.fall.SetZonesFromArgs(args)
		case "canary":
			cn, err := parseCanary(c)
			if err != nil {
				return nil, err
			}
			for _, other := range cfg.canaries {
				if other.prefix == cn.prefix {
					return nil, c.Errf("canary for %s given twice", cn.prefix)
				}
			}
			cfg.canaries = append(cfg.canaries, cn)
		case "dnssec":
			dc, err := parseDNSSEC(c)
			if err != nil {
				return nil, err
			}
			if cfg.dnssec != nil { // dnssec_peer_keys came first
				dc.peers = cfg.dnssec.peers
			}
			cfg.dnssec = dc
		case "dnssec_peer_keys":
			pc, err := parsePeerKeysProperty(c)
			if err != nil {
				return nil, err
			}
			if cfg.dnssec == nil {
				cfg.dnssec = &dnssecConfig{}
			}
			cfg.dnssec.peers = pc
		case "explain":
			cfg.explain, cfg.explainFrom = true, defaultExplainFrom
			if args := c.RemainingArgs(); len(args) > 0 {
				cfg.explainFrom = nil
				for _, arg := range args {
					// Client addresses are unmapped before they are matched: so are the prefixes.
					p, err := table.ParsePrefix(arg)
					if err != nil {
						return nil, c.Errf("explain: %q: %v", arg, err)
					}
					cfg.explainFrom = append(cfg.explainFrom, p)
				}
			}
		case "admin":
			ac, err := parseAdmin(c)
			if err != nil {
				return nil, err
			}
			cfg.admin = ac
		case "bgp", "bgp_neighbor", "bgp_relays", "bgp_community":
			if err := bgpLines.parse(c); err != nil {
				return nil, err
			}
		case "shutdown_grace":
			s, err := singleArg(c)
			if err != nil {
				return nil, err
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 || d > maxShutdownGrace {
				return nil, c.Errf("shutdown_grace %q: want a duration from 0 to %v", s, maxShutdownGrace)
			}
			cfg.shutdownGrace = d
		default:
			return nil, c.Errf("unknown property %q", prop)
		}
	}

	if len(cfg.relays) == 0 {
		return nil, c.Err("no relay defined")
	}
	if err := bgpLines.orphans(); err != nil {
		return nil, err
	}
	if len(sources) == 0 && cfg.sources.path == "" && !bgpLines.speaker {
		return nil, c.Err("no source, sources file or bgp defined: every query would miss")
	}
	if cfg.dnssec != nil && len(cfg.dnssec.keys) == 0 {
		pk := cfg.dnssec.peers
		return nil, lineErr(pk.corefile, pk.line, "dnssec_peer_keys without dnssec: the peers' keys go with this network's own")
	}
	if len(cfg.canaries) > 0 && !cfg.health.enabled() {
		return nil, cfg.canaries[0].at.errorf("canary needs health checks: a canary is checked every health_check interval")
	}
	cfg.index()
	if err := cfg.parseSourceLines(sources); err != nil {
		return nil, err
	}
	if err := cfg.parseBGPLines(&bgpLines); err != nil {
		return nil, err
	}
	return cfg, nil
}

// bgpLines are the bgp properties of a block, kept until every relay is known.
type bgpLines struct {
	speaker   bool // the bgp line was given
	config    bgp.Config
	at        lineRef // the bgp line
	neighbors []lineRef
	relays    []string
	relaysAt  lineRef
	comms     []bgpCommunityLine
}

type bgpCommunityLine struct {
	community uint32
	relays    []string
	at        lineRef
}

// lineRef is where a property is in the Corefile, for errors found after the block is read.
type lineRef struct {
	file string
	line int
}

func (l lineRef) errorf(format string, args ...any) error {
	return lineErr(l.file, l.line, format, args...)
}

// parse reads one of `bgp LOCAL_AS ROUTER_ID [listen ADDRESS:PORT]`, `bgp_neighbor ADDRESS
// REMOTE_AS [port N] [passive] [hold SECONDS] [family FAMILY...]`, `bgp_relays NAME...` and
// `bgp_community ASN:VALUE NAME...`.
func (bl *bgpLines) parse(c *caddy.Controller) error {
	prop, args, at := c.Val(), c.RemainingArgs(), lineRef{c.File(), c.Line()}
	switch prop {
	case "bgp":
		if len(args) != 2 && (len(args) != 4 || args[2] != "listen") {
			return c.Errf("bgp LOCAL_AS ROUTER_ID [listen ADDRESS:PORT]")
		}
		as, err := parseASN(args[0])
		if err != nil {
			return c.Errf("bgp: local AS %v", err)
		}
		id, err := netip.ParseAddr(args[1])
		if err != nil || !id.Is4() || id.IsUnspecified() {
			return c.Errf("bgp: router ID %q is not a non-zero IPv4 address", args[1])
		}
		bl.config.LocalAS, bl.config.RouterID = as, id
		if len(args) == 4 {
			l, err := netip.ParseAddrPort(args[3])
			if err != nil || l.Port() == 0 {
				return c.Errf("bgp: listen %q is not ADDRESS:PORT", args[3])
			}
			bl.config.Listen = netip.AddrPortFrom(l.Addr().Unmap(), l.Port())
		}
		bl.speaker, bl.at = true, at
	case "bgp_neighbor":
		n, err := parseBGPNeighbor(c, args)
		if err != nil {
			return err
		}
		if err := bl.config.AddNeighbor(n); err != nil {
			return c.Errf("bgp_neighbor: %v", err)
		}
		bl.neighbors = append(bl.neighbors, at)
	case "bgp_relays":
		if len(args) == 0 {
			return c.Errf("bgp_relays needs at least one relay name")
		}
		bl.relays, bl.relaysAt = args, at
	case "bgp_community":
		if len(args) < 2 {
			return c.Errf("bgp_community ASN:VALUE NAME...")
		}
		comm, err := parseCommunity(args[0])
		if err != nil {
			return c.Errf("bgp_community: %v", err)
		}
		for _, other := range bl.comms {
			if other.community == comm {
				return c.Errf("bgp_community %s given twice", args[0])
			}
		}
		bl.comms = append(bl.comms, bgpCommunityLine{community: comm, relays: args[1:], at: at})
	}
	return nil
}

func parseBGPNeighbor(c *caddy.Controller, args []string) (bgp.Neighbor, error) {
	var n bgp.Neighbor
	if len(args) < 2 {
		return n, c.Errf("bgp_neighbor ADDRESS REMOTE_AS [port N] [passive] [hold SECONDS] [family FAMILY...]")
	}
	a, err := netip.ParseAddr(args[0])
	if err != nil {
		return n, c.Errf("bgp_neighbor: %q is not an IP address", args[0])
	}
	if n.RemoteAS, err = parseASN(args[1]); err != nil {
		return n, c.Errf("bgp_neighbor %s: remote AS %v", args[0], err)
	}
	n.Address = a.Unmap()
	seen := map[string]bool{}
	for i := 2; i < len(args); i++ {
		opt := args[i]
		if seen[opt] {
			return n, c.Errf("bgp_neighbor %s: %s given twice", args[0], opt)
		}
		seen[opt] = true
		switch opt {
		case "passive":
			n.Passive = true
		case "port", "hold":
			if i+1 >= len(args) {
				return n, c.Errf("bgp_neighbor %s: %s needs a value", args[0], opt)
			}
			i++
			v, err := strconv.ParseUint(args[i], 10, 16)
			if opt == "port" {
				if err != nil || v == 0 {
					return n, c.Errf("bgp_neighbor %s: port %q is not a TCP port", args[0], args[i])
				}
				n.Port = uint16(v)
				continue
			}
			if err != nil || v < 3 {
				return n, c.Errf("bgp_neighbor %s: hold %q: want whole seconds from 3 to 65535", args[0], args[i])
			}
			n.HoldTime = time.Duration(v) * time.Second
		case "family":
			if i+1 >= len(args) {
				return n, c.Errf("bgp_neighbor %s: family needs at least one of ipv4-multicast, ipv6-multicast, ipv4-unicast, ipv6-unicast", args[0])
			}
			for _, name := range args[i+1:] {
				f, err := bgp.ParseFamily(name)
				if err != nil {
					return n, c.Errf("bgp_neighbor %s: family %q: want ipv4-multicast, ipv6-multicast, ipv4-unicast or ipv6-unicast", args[0], name)
				}
				n.Families |= bgp.Families(f)
			}
			i = len(args)
		default:
			return n, c.Errf("bgp_neighbor %s: unknown option %q", args[0], opt)
		}
	}
	return n, nil
}

// parseASN reads an AS number in asplain (RFC 5396).
func parseASN(s string) (uint32, error) {
	as, err := strconv.ParseUint(s, 10, 32)
	if err != nil || as == 0 {
		return 0, fmt.Errorf("%q is not an AS number from 1 to %d", s, uint32(math.MaxUint32))
	}
	return uint32(as), nil
}

// parseCommunity reads a standard community (RFC 1997) as ASN:VALUE.
func parseCommunity(s string) (uint32, error) {
	asn, value, ok := strings.Cut(s, ":")
	a, aerr := strconv.ParseUint(asn, 10, 16)
	v, verr := strconv.ParseUint(value, 10, 16)
	if !ok || aerr != nil || verr != nil {
		return 0, fmt.Errorf("%q is not a community ASN:VALUE, each from 0 to 65535", s)
	}
	return uint32(a)<<16 | uint32(v), nil
}

// orphans reports bgp_* lines without the bgp line that starts the speaker.
func (bl *bgpLines) orphans() error {
	switch {
	case bl.speaker:
	case len(bl.neighbors) > 0:
		return bl.neighbors[0].errorf("bgp_neighbor without bgp LOCAL_AS ROUTER_ID")
	case bl.relays != nil:
		return bl.relaysAt.errorf("bgp_relays without bgp LOCAL_AS ROUTER_ID")
	case len(bl.comms) > 0:
		return bl.comms[0].at.errorf("bgp_community without bgp LOCAL_AS ROUTER_ID")
	}
	return nil
}

// parseBGPLines checks the bgp lines as a whole, once every relay is known, and makes the block's
// routesConfig.
func (cfg *config) parseBGPLines(bl *bgpLines) error {
	if !bl.speaker {
		return nil
	}
	if err := bl.config.Validate(); err != nil {
		return bl.at.errorf("bgp: %v", err)
	}
	rc := &routesConfig{speaker: bl.config, communities: map[uint32][]int{}}
	resolve := func(names []string, at lineRef, prop string) ([]int, error) {
		ids := make([]int, 0, len(names))
		for _, name := range names {
			i, ok := cfg.relayIndex(name)
			if !ok {
				return nil, at.errorf("%s: unknown relay %q", prop, name)
			}
			ids = append(ids, i)
		}
		slices.Sort(ids)
		return slices.Compact(ids), nil
	}
	var err error
	if bl.relays == nil {
		for i := range cfg.relays {
			rc.relays = append(rc.relays, i)
		}
	} else if rc.relays, err = resolve(bl.relays, bl.relaysAt, "bgp_relays"); err != nil {
		return err
	}
	for _, cl := range bl.comms {
		if rc.communities[cl.community], err = resolve(cl.relays, cl.at, "bgp_community"); err != nil {
			return err
		}
	}
	var families bgp.Families
	for _, n := range bl.config.Neighbors {
		if n.Address.IsValid() {
			families |= cmp.Or(n.Families, bgp.DefaultFamilies)
		}
	}
	rc.multicastFirst4 = families.Has(bgp.IPv4Multicast) && families.Has(bgp.IPv4Unicast)
	rc.multicastFirst6 = families.Has(bgp.IPv6Multicast) && families.Has(bgp.IPv6Unicast)
	cfg.routes = rc
	return nil
}

// parseCanary reads `canary PREFIX SOURCE GROUP`.
func parseCanary(c *caddy.Controller) (*canary, error) {
	args := c.RemainingArgs()
	if len(args) != 3 {
		return nil, c.Errf("canary PREFIX SOURCE GROUP")
	}
	p, err := table.ParsePrefix(args[0])
	if err != nil {
		return nil, c.Errf("canary: %v", err)
	}
	src, err := netip.ParseAddr(args[1])
	if err != nil || src.Zone() != "" || src.Is4In6() || !src.IsGlobalUnicast() && !src.IsPrivate() {
		return nil, c.Errf("canary: source %q is not a unicast address", args[1])
	}
	grp, err := netip.ParseAddr(args[2])
	if err != nil || !isSSMGroup(grp) {
		return nil, c.Errf("canary: group %q is not a source-specific multicast group (232.0.0.0/8 or ff3x::/32)", args[2])
	}
	if src.Is4() != grp.Is4() {
		return nil, c.Errf("canary: source %s and group %s are of different families", src, grp)
	}
	return &canary{prefix: p, text: args[0], source: src, group: grp, at: lineRef{c.File(), c.Line()}}, nil
}

// isSSMGroup reports whether g is in the source-specific multicast ranges (RFC 4607): 232.0.0.0/8,
// or ff3x::/32 (the ff3x::/96 group IDs included).
func isSSMGroup(g netip.Addr) bool {
	if g.Is4() {
		return g.As4()[0] == 232
	}
	b := g.As16()
	return g.Is6() && !g.Is4In6() && b[0] == 0xff && b[1]&0xf0 == 0x30 && b[2] == 0 && b[3] == 0
}

// index orders the relays and numbers relays and endpoints. Lower precedence comes first, config
// order within a precedence: relay indices then follow answer order, and so do endpoint ids.
func (cfg *config) index() {
	slices.SortStableFunc(cfg.relays, func(a, b *relay) int { return int(a.precedence) - int(b.precedence) })
	cfg.relayByName = make(map[string]int, len(cfg.relays))
	for i, r := range cfg.relays {
		r.index = i
		cfg.relayByName[r.name] = i
		for _, e := range r.endpoints {
			e.id = len(cfg.endpoints)
			cfg.endpoints = append(cfg.endpoints, e)
		}
	}
	// Longest prefix first: the first canary that holds a source is its canary.
	slices.SortStableFunc(cfg.canaries, func(a, b *canary) int { return b.prefix.Bits() - a.prefix.Bits() })
	for i, cn := range cfg.canaries {
		cn.index = i
	}
}

// sourceLine is a `source` property kept until every relay is known, so relays and sources may
// come in any order; file and line make the error point at the right place.
type sourceLine struct {
	prefix netip.Prefix
	relays []string
	file   string
	line   int
}

// parseSourceLines resolves the source lines' relays and builds their table. The lines are
// checked among themselves (unknown relays, duplicates) in a builder of their own; over a sources
// file's entries they are laid as overrides, as they win there.
func (cfg *config) parseSourceLines(sources []sourceLine) error {
	b := table.NewBuilder()
	for _, s := range sources {
		ids := make([]int, 0, len(s.relays))
		for _, name := range s.relays {
			i, ok := cfg.relayIndex(name)
			if !ok {
				return lineErr(s.file, s.line, "source %s: unknown relay %q", s.prefix, name)
			}
			ids = append(ids, i)
		}
		origin := table.Origin{File: s.file, Line: s.line}
		if err := b.Add(s.prefix, ids, origin); err != nil {
			return lineErr(s.file, s.line, "source %v", err)
		}
		cfg.inline = append(cfg.inline, table.Override{Prefix: s.prefix, Relays: ids, Origin: origin})
	}
	t, err := b.Build()
	if dup := (*table.DuplicateError)(nil); errors.As(err, &dup) {
		return lineErr(dup.Dup.File, dup.Dup.Line, "source %v", err)
	}
	cfg.inlineTable = t
	return err
}

// parseSources reads `sources FILE [reload DURATION] [max_size SIZE]`.
func parseSources(c *caddy.Controller) (sourcesConfig, error) {
	sc := sourcesConfig{reload: defaultSourcesReload, maxSize: table.DefaultMaxSize, corefile: c.File(), line: c.Line()}
	args := c.RemainingArgs()
	if len(args) == 0 {
		return sc, c.ArgErr()
	}
	sc.path = resolvePath(c, args[0])
	seen := map[string]bool{}
	for i := 1; i < len(args); i += 2 {
		opt := args[i]
		if opt != "reload" && opt != "max_size" {
			return sc, c.Errf("sources: unknown option %q", opt)
		}
		if seen[opt] {
			return sc, c.Errf("sources: %s given twice", opt)
		}
		seen[opt] = true
		if i+1 >= len(args) {
			if opt == "reload" {
				return sc, c.Errf("sources: reload needs a duration (0 to read the file once)")
			}
			return sc, c.Errf("sources: max_size needs a size in bytes (K, M or G for KiB, MiB, GiB)")
		}
		val := args[i+1]
		switch opt {
		case "reload":
			d, err := time.ParseDuration(val)
			if err != nil {
				return sc, c.Errf("sources: reload: %v", err)
			}
			if d < 0 {
				return sc, c.Errf("sources: reload %s is negative (0 reads the file once)", val)
			}
			if d > 0 && d < table.SettleTime {
				return sc, c.Errf("sources: reload %s is shorter than %v", val, table.SettleTime)
			}
			sc.reload = d
		case "max_size":
			n, err := parseSize(val)
			if err != nil {
				return sc, c.Errf("sources: max_size %q: %v", val, err)
			}
			sc.maxSize = n
		}
	}
	return sc, nil
}

// parseDNSSEC reads `dnssec KEYFILE... [validity DURATION] [cache ENTRIES]` and loads the keys:
// they are the signer's identity, part of the configuration, and a key that does not load fails
// the Corefile.
func parseDNSSEC(c *caddy.Controller) (*dnssecConfig, error) {
	args := c.RemainingArgs()
	dc := &dnssecConfig{validity: sign.DefaultValidity, cacheEntries: sign.DefaultCacheEntries}
	var files []string
	for len(args) > 0 && args[0] != "validity" && args[0] != "cache" {
		files = append(files, resolvePath(c, args[0]))
		args = args[1:]
	}
	if len(files) == 0 {
		return nil, c.Errf("dnssec needs at least one key file (K<name>.+013+<tag>)")
	}
	seen := map[string]bool{}
	for ; len(args) > 0; args = args[2:] {
		opt := args[0]
		if opt != "validity" && opt != "cache" {
			return nil, c.Errf("dnssec: %q after the options: key files go first, then validity and cache", opt)
		}
		if seen[opt] {
			return nil, c.Errf("dnssec: %s given twice", opt)
		}
		seen[opt] = true
		if len(args) < 2 {
			return nil, c.Errf("dnssec: %s needs a value", opt)
		}
		switch opt {
		case "validity":
			d, err := time.ParseDuration(args[1])
			if err != nil || d < sign.MinValidity || d > sign.MaxValidity {
				return nil, c.Errf("dnssec: validity %q: want a duration from %v to %v", args[1], sign.MinValidity, sign.MaxValidity)
			}
			dc.validity = d
		case "cache":
			n, err := strconv.Atoi(args[1])
			if err != nil || n < 1 || n > maxSignatureCache {
				return nil, c.Errf("dnssec: cache %q: want a number of RRsets from 1 to %d", args[1], maxSignatureCache)
			}
			dc.cacheEntries = n
		}
	}
	keys, err := sign.LoadKeys(files)
	if err != nil {
		return nil, c.Errf("dnssec: %v", err)
	}
	if _, _, err := sign.Roles(keys); err != nil {
		return nil, c.Errf("dnssec: %v", err)
	}
	dc.keys = keys
	return dc, nil
}

// maxSignatureCache bounds the dnssec cache option: 10M cached RRsets are about 4 GB.
const maxSignatureCache = 10_000_000

// parsePeerKeysProperty reads `dnssec_peer_keys FILE [reload DURATION]`.
func parsePeerKeysProperty(c *caddy.Controller) (peerKeysConfig, error) {
	pc := peerKeysConfig{reload: defaultSourcesReload, corefile: c.File(), line: c.Line()}
	args := c.RemainingArgs()
	switch {
	case len(args) != 1 && len(args) != 3:
		return pc, c.ArgErr()
	case len(args) == 3 && args[1] != "reload":
		return pc, c.Errf("dnssec_peer_keys: unknown option %q", args[1])
	case len(args) == 3:
		d, err := durationAtLeast(args[2], table.SettleTime)
		if err != nil {
			return pc, c.Errf("dnssec_peer_keys: reload: %v", err)
		}
		pc.reload = d
	}
	pc.path = resolvePath(c, args[0])
	return pc, nil
}

// parseAdmin reads `admin FILE [reload DURATION]`.
func parseAdmin(c *caddy.Controller) (adminConfig, error) {
	ac := adminConfig{reload: defaultAdminReload, corefile: c.File(), line: c.Line()}
	args := c.RemainingArgs()
	switch {
	case len(args) != 1 && len(args) != 3:
		return ac, c.ArgErr()
	case len(args) == 3 && args[1] != "reload":
		return ac, c.Errf("admin: unknown option %q", args[1])
	case len(args) == 3:
		d, err := durationAtLeast(args[2], table.SettleTime)
		if err != nil {
			return ac, c.Errf("admin: reload: %v", err)
		}
		ac.reload = d
	}
	ac.path = resolvePath(c, args[0])
	return ac, nil
}

// resolvePath takes a relative path relative to the root plugin's directory, as hosts and file do.
func resolvePath(c *caddy.Controller, path string) string {
	if root := dnsserver.GetConfig(c).Root; !filepath.IsAbs(path) && root != "" {
		return filepath.Join(root, path)
	}
	return path
}

// parseSize reads a positive number of bytes with an optional K, M or G suffix (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	digits := s
	if mult > 1 {
		digits = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, errors.New("want a positive number of bytes, with K, M or G for KiB, MiB, GiB")
	}
	return n * mult, nil
}

// checkZones rejects zone arguments that would never match: names that are not domain names, and
// text with a '/' that is no CIDR prefix, which plugin.Host would take for a domain name.
func checkZones(c *caddy.Controller, prop string, zones []string) error {
	for _, z := range zones {
		if strings.Contains(z, "/") {
			if _, _, err := net.ParseCIDR(z); err != nil {
				return c.Errf("%sinvalid zone %q: a '/' makes it a CIDR prefix, and it is not one", prop, z)
			}
		}
		if _, ok := dns.IsDomainName(z); !ok || len(plugin.Host(z).NormalizeExact()) == 0 {
			return c.Errf("%sinvalid zone %q", prop, z)
		}
	}
	return nil
}

// lineErr formats an error the way the caddy dispenser does, for errors found after the block was read.
func lineErr(file string, line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d - Error during parsing: %s", file, line, fmt.Sprintf(format, args...))
}

func singleArg(c *caddy.Controller) (string, error) {
	args := c.RemainingArgs()
	if len(args) != 1 {
		return "", c.ArgErr()
	}
	return args[0], nil
}

// isLabel accepts one LDH-style label; underscores are allowed since the name is ours to choose.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}

// parseRelay reads `relay NAME ADDRESS... [precedence N] [discovery_optional] [probe HOST:PORT]`.
func parseRelay(c *caddy.Controller) (*relay, error) {
	args := c.RemainingArgs()
	if len(args) < 2 {
		return nil, c.Errf("relay needs a name and at least one address")
	}
	r := &relay{name: args[0]}
	if !relayNameRE.MatchString(r.name) {
		return nil, c.Errf("relay name %q: use letters, digits, '.', '_' or '-' (at most 63)", r.name)
	}
	var addresses []relayAddress
	seenOpt := map[string]bool{}
	for i := 1; i < len(args); i++ {
		switch arg := args[i]; arg {
		case "precedence", "probe":
			if seenOpt[arg] {
				return nil, c.Errf("relay %q: %s given twice", r.name, arg)
			}
			seenOpt[arg] = true
			if i+1 >= len(args) {
				return nil, c.Errf("relay %q: %s needs a value", r.name, arg)
			}
			i++
			if arg == "precedence" {
				p, err := strconv.ParseUint(args[i], 10, 8)
				if err != nil {
					return nil, c.Errf("relay %q: precedence %q is not a number from 0 to 255", r.name, args[i])
				}
				r.precedence = uint8(p)
			} else {
				t, err := parseProbeTarget(args[i])
				if err != nil {
					return nil, c.Errf("relay %q: probe %q: %v", r.name, args[i], err)
				}
				r.probe = t
			}
		case "discovery_optional":
			r.discoveryOptional = true
		default:
			if len(seenOpt) > 0 || r.discoveryOptional {
				return nil, c.Errf("relay %q: address %q after the options; list addresses first", r.name, arg)
			}
			addr, err := parseRelayAddress(arg)
			if err != nil {
				return nil, c.Errf("relay %q: %v", r.name, err)
			}
			if slices.Contains(addresses, addr) {
				return nil, c.Errf("relay %q: address %s listed twice", r.name, addr)
			}
			addresses = append(addresses, addr)
		}
	}
	if len(addresses) == 0 {
		return nil, c.Errf("relay %q has no address", r.name)
	}
	for _, a := range addresses {
		e := &endpoint{relay: r, addr: a.addr, host: a.host}
		if a.addr.IsValid() {
			e.ip = net.IP(a.addr.AsSlice())
		}
		rdata, err := relayRdata(r.precedence, r.discoveryOptional, a.addr, a.host)
		if err != nil {
			return nil, c.Errf("relay %q: %s: %v", r.name, e, err)
		}
		e.rdata = rdata
		r.endpoints = append(r.endpoints, e)
	}
	return r, nil
}

// relayAddress is a parsed relay address: an IP address, or a lower-case FQDN.
type relayAddress struct {
	addr netip.Addr
	host string
}

func (a relayAddress) String() string {
	if a.host != "" {
		return a.host
	}
	return a.addr.String()
}

// parseRelayAddress reads an IP address or the domain name of a relay.
func parseRelayAddress(s string) (relayAddress, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		switch {
		case a.Zone() != "":
			return relayAddress{}, fmt.Errorf("address %q: zones are not allowed in DNS answers", s)
		case a.Is4In6():
			return relayAddress{}, fmt.Errorf("address %q: write the IPv4 form %s", s, a.Unmap())
		case a.IsUnspecified() || a.IsMulticast():
			return relayAddress{}, fmt.Errorf("address %q is not a unicast address", s)
		}
		return relayAddress{addr: a}, nil
	}
	if looksNumeric(s) {
		return relayAddress{}, fmt.Errorf("%q is neither an IP address nor a domain name", s)
	}
	if _, ok := dns.IsDomainName(s); !ok || s == "." || strings.ContainsAny(s, `\ `) {
		return relayAddress{}, fmt.Errorf("%q is neither an IP address nor a domain name", s)
	}
	return relayAddress{host: strings.ToLower(dns.Fqdn(s))}, nil
}

// looksNumeric catches mistyped addresses ("203.0.113", "2001:db8:::1") that would otherwise pass as names.
func looksNumeric(s string) bool {
	if strings.Contains(s, ":") {
		return true
	}
	s = strings.TrimSuffix(s, ".")
	last := s[strings.LastIndexByte(s, '.')+1:]
	_, err := strconv.Atoi(last)
	return err == nil
}

// parseProbeTarget reads HOST:PORT, HOST an address or a name.
func parseProbeTarget(s string) (probeTarget, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return probeTarget{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return probeTarget{}, fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	a, err := parseRelayAddress(host)
	if err != nil {
		return probeTarget{}, err
	}
	if a.addr.IsValid() {
		return probeTarget{addr: netip.AddrPortFrom(a.addr, uint16(p))}, nil
	}
	return probeTarget{host: a.host, port: uint16(p)}, nil
}

// parseHealthCheck reads `health_check INTERVAL [timeout DURATION] [fails N] [rises N]
// [handshake discovery|request]` or `health_check off`.
func parseHealthCheck(c *caddy.Controller) (healthCheck, error) {
	hc := healthCheck{timeout: defaultTimeout, policy: health.Policy{Fails: defaultFails, Rises: defaultRises}}
	args := c.RemainingArgs()
	if len(args) == 0 {
		return hc, c.ArgErr()
	}
	if args[0] == "off" {
		if len(args) > 1 {
			return hc, c.Errf("health_check off takes no options")
		}
		return healthCheck{}, nil
	}
	var err error
	if hc.interval, err = durationAtLeast(args[0], minInterval); err != nil {
		return hc, c.Errf("health_check interval: %v", err)
	}
	timeoutSet := false
	seen := map[string]bool{}
	for i := 1; i < len(args); i += 2 {
		opt := args[i]
		if seen[opt] {
			return hc, c.Errf("health_check: %s given twice", opt)
		}
		seen[opt] = true
		if i+1 >= len(args) {
			return hc, c.Errf("health_check: %s needs a value", opt)
		}
		val := args[i+1]
		switch opt {
		case "timeout":
			if hc.timeout, err = durationAtLeast(val, minTimeout); err != nil {
				return hc, c.Errf("health_check timeout: %v", err)
			}
			timeoutSet = true
		case "handshake":
			switch val {
			case "request":
				hc.handshake = handshakeRequest
			case "discovery":
				hc.handshake = handshakeDiscovery
			default:
				return hc, c.Errf("health_check handshake %q: want request or discovery", val)
			}
		case "fails", "rises":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 100 {
				return hc, c.Errf("health_check %s %q: want a whole number from 1 to 100", opt, val)
			}
			if opt == "fails" {
				hc.policy.Fails = n
			} else {
				hc.policy.Rises = n
			}
		default:
			return hc, c.Errf("health_check: unknown option %q", opt)
		}
	}
	if !timeoutSet {
		hc.timeout = min(defaultTimeout, hc.interval/2)
	}
	if hc.timeout >= hc.interval {
		return hc, c.Errf("health_check timeout %v must be shorter than the interval %v", hc.timeout, hc.interval)
	}
	return hc, nil
}

// durationAtLeast parses a duration of at least least.
func durationAtLeast(s string, least time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < least {
		return 0, fmt.Errorf("%s is shorter than the minimum %v", s, least)
	}
	return d, nil
}
