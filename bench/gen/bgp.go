package main

// The inputs of bench/run.sh's bgp section (written when -bgp-loads is given): BIRD 2 feeding
// amtrelay's speaker over MBGP across a veth pair between two network namespaces that the script
// makes, BIRD at -bgp-bird and the speaker at -bgp-speaker.
//
//	Corefile.bgp-load     amtrelay with only bgp lines, every route to two relays, health checks
//	                      off, metrics, ready and pprof: the load of a whole table
//	bird-load-N.conf      BIRD with N IPv4 routes in mcast4 (protocol static bulk), its bgp protocol
//	                      disabled until the script enables it, one for each N of -bgp-loads
//	Corefile.bgp-flap     amtrelay with the relays of Corefile.amtrelay (no probes, health checks
//	                      off) and one bgp_community line per relay
//	bird-flap.conf        BIRD with queries.txt's host sources (/32 and /128, each carrying the
//	                      communities of Corefile.amtrelay's three relays for it), -bgp-flap-base
//	                      more IPv4 routes, and -bgp-flap-protocols static protocols of 500 IPv4
//	                      routes each in 172.16.0.0/12, which the script disables and enables
//
// BIRD logs to bird.log in -out with Unix times to the millisecond, with its bgp protocol's states
// and packets (BIRD rate-limits the UPDATE lines; "Sending END-OF-RIB" is always there).

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	bgpBirdAS    = 64500
	bgpSpeakerAS = 64501
	// FlapRoutes is the size of each flapping protocol.
	bgpFlapRoutes = 500
)

var (
	bgpFlapRange  = netip.MustParsePrefix("172.16.0.0/12")
	bgpHostRange4 = netip.MustParsePrefix("198.18.0.0/15") // sourceAddr's IPv4 sources
	// bgpAvoid: the two above, and what BIRD drops as bogus (0/8, loopback, class D and E).
	bgpAvoid = []netip.Prefix{bgpFlapRange, bgpHostRange4, netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("224.0.0.0/3")}
)

type bgpOptions struct {
	loads         string // comma-separated route counts: one bird-load-N.conf each
	listen        string // ADDR:PORT of the bgp servers' DNS
	metrics       string
	ready         string
	pprof         string
	speaker, bird string // the two ends of the veth pair
	flapBase      int
	flapProtocols int
}

func (b *bgpOptions) register() {
	flag.StringVar(&b.loads, "bgp-loads", "", "comma-separated route counts of the bgp section's whole-table loads; empty: no bgp inputs")
	flag.StringVar(&b.listen, "bgp-listen", "127.0.0.1:10753", "`ADDR:PORT` of the bgp servers' DNS")
	flag.StringVar(&b.metrics, "bgp-metrics", "127.0.0.1:19253", "`ADDR:PORT` of the bgp servers' metrics")
	flag.StringVar(&b.ready, "bgp-ready", "127.0.0.1:18281", "`ADDR:PORT` of the bgp servers' ready endpoint")
	flag.StringVar(&b.pprof, "bgp-pprof", "127.0.0.1:16153", "`ADDR:PORT` of the bgp servers' pprof endpoint")
	flag.StringVar(&b.speaker, "bgp-speaker", "100.64.253.1", "the speaker's address, in its namespace")
	flag.StringVar(&b.bird, "bgp-bird", "100.64.253.2", "BIRD's address, in its namespace")
	flag.IntVar(&b.flapBase, "bgp-flap-base", 100_000, "IPv4 routes besides the host sources in bird-flap.conf")
	flag.IntVar(&b.flapProtocols, "bgp-flap-protocols", 4, "flapping static protocols of 500 routes each (at most 8)")
}

func generateBGP(o options, rs []relay) error {
	b := o.bgp
	if b.loads == "" {
		return nil
	}
	if b.flapProtocols < 1 || b.flapProtocols*bgpFlapRoutes > 1<<12 {
		return fmt.Errorf("-bgp-flap-protocols %d: want 1 to 8", b.flapProtocols)
	}
	for _, a := range []string{b.speaker, b.bird} {
		if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
			return fmt.Errorf("-bgp-speaker and -bgp-bird must be IPv4 addresses, not %q", a)
		}
	}
	var loads []int
	for _, f := range strings.Split(b.loads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-bgp-loads: %q is not a route count", f)
		}
		loads = append(loads, n)
	}
	files := map[string]func(*bufio.Writer) error{
		"Corefile.bgp-load": func(w *bufio.Writer) error { return writeBGPCorefile(w, o, nil) },
		"Corefile.bgp-flap": func(w *bufio.Writer) error { return writeBGPCorefile(w, o, rs) },
		"bird-flap.conf":    func(w *bufio.Writer) error { return writeBirdFlap(w, o, rs) },
	}
	for _, n := range loads { // a count given twice is one file
		files[fmt.Sprintf("bird-load-%d.conf", n)] = func(w *bufio.Writer) error { return writeBirdLoad(w, o, n) }
	}
	for name, write := range files {
		if err := writeFile(filepath.Join(o.out, name), write); err != nil {
			return err
		}
	}
	return nil
}

// writeBGPCorefile writes the speaker's server: passive, so that BIRD's enable starts the session
// at a known moment; hold 30, so that readiness waits for the session while the script starts
// BIRD's side. With relays (the flap server), each relay has a community, 64500:k for the k-th
// (from 1); without, two relays take every route.
func writeBGPCorefile(w *bufio.Writer, o options, rs []relay) error {
	b := o.bgp
	ap, err := netip.ParseAddrPort(b.listen)
	if err != nil {
		return fmt.Errorf("-bgp-listen: %w", err)
	}
	fmt.Fprintf(w, ".:%d {\n\tbind %s\n\tprometheus %s\n\tready %s\n\tpprof %s\n\tamtrelay in-addr.arpa ip6.arpa {\n",
		ap.Port(), ap.Addr(), b.metrics, b.ready, b.pprof)
	if rs == nil {
		fmt.Fprintln(w, "\t\trelay r1 192.0.2.1 2001:db8::1\n\t\trelay r2 192.0.2.2 2001:db8::2\n\t\tbgp_relays r1 r2")
	} else {
		for _, r := range rs {
			fmt.Fprintf(w, "\t\trelay %s", r.name)
			if r.host != "" {
				fmt.Fprintf(w, " %s", r.host)
			} else {
				fmt.Fprintf(w, " %s %s", r.v4, r.v6)
			}
			fmt.Fprintf(w, " precedence %d\n", r.precedence)
		}
		// Routes without a relay's community (the bulk and flapping ones) go to the first two.
		fmt.Fprintf(w, "\t\tbgp_relays %s %s\n", rs[0].name, rs[1].name)
		for k, r := range rs {
			fmt.Fprintf(w, "\t\tbgp_community %d:%d %s\n", bgpBirdAS, k+1, r.name)
		}
	}
	fmt.Fprintf(w, "\t\tbgp %d %s listen %s:179\n\t\tbgp_neighbor %s %d passive hold 30\n",
		bgpSpeakerAS, b.speaker, b.speaker, b.bird, bgpBirdAS)
	fmt.Fprintln(w, "\t\thealth_check off\n\t}\n}")
	return nil
}

func writeBirdHead(w *bufio.Writer, o options) {
	fmt.Fprintf(w, `log "%s" all;
timeformat log "%%s.%%3f";
router id %s;
ipv4 table mcast4;
ipv6 table mcast6;
protocol device {}
`, filepath.Join(o.out, "bird.log"), o.bgp.bird)
}

// writeBirdSession writes the bgp protocol, disabled: the script enables it once the speaker's
// server runs. The IPv6 family rides the IPv4 session, so BIRD needs an IPv6 next hop to give.
func writeBirdSession(w *bufio.Writer, o options) {
	fmt.Fprintf(w, `protocol bgp speaker {
	disabled;
	local %s as %d;
	neighbor %s as %d;
	connect delay time 1;
	connect retry time 1;
	hold time 30;
	debug { states, packets };
	ipv4 multicast { table mcast4; import none; export all; };
	ipv6 multicast { table mcast6; import none; export all; next hop address 2001:db8:ffff::2; };
}
`, o.bgp.bird, bgpBirdAS, o.bgp.speaker, bgpSpeakerAS)
}

func writeBirdLoad(w *bufio.Writer, o options, n int) error {
	writeBirdHead(w, o)
	fmt.Fprintln(w, "protocol static bulk {\n\tipv4 { table mcast4; };")
	for _, p := range bgpPrefixes(rand.New(rand.NewPCG(5, uint64(n))), n) {
		fmt.Fprintf(w, "\troute %s unreachable;\n", p)
	}
	fmt.Fprintln(w, "}")
	writeBirdSession(w, o)
	return nil
}

func writeBirdFlap(w *bufio.Writer, o options, rs []relay) error {
	writeBirdHead(w, o)
	for _, v6 := range []bool{false, true} {
		name, family, table := "hosts4", "ipv4", "mcast4"
		if v6 {
			name, family, table = "hosts6", "ipv6", "mcast6"
		}
		fmt.Fprintf(w, "protocol static %s {\n\t%s { table %s; };\n", name, family, table)
		for i := 0; i < o.sources; i++ {
			s := sourceAddr(i, o.sources, true)
			if s.Is6() != v6 {
				continue
			}
			fmt.Fprintf(w, "\troute %s unreachable {", netip.PrefixFrom(s, s.BitLen()))
			for _, k := range relaysOf(i, rs) {
				fmt.Fprintf(w, " bgp_community.add((%d, %d));", bgpBirdAS, k+1)
			}
			fmt.Fprintln(w, " };")
		}
		fmt.Fprintln(w, "}")
	}
	fmt.Fprintln(w, "protocol static bulk {\n\tipv4 { table mcast4; };")
	for _, p := range bgpPrefixes(rand.New(rand.NewPCG(6, 7)), o.bgp.flapBase) {
		fmt.Fprintf(w, "\troute %s unreachable;\n", p)
	}
	fmt.Fprintln(w, "}")
	// flap0 holds 172.16.0.0/24 to 172.17.243.0/24, flap1 the next 500, and so on.
	base := bgpFlapRange.Addr().As4()
	for f := 0; f < o.bgp.flapProtocols; f++ {
		fmt.Fprintf(w, "protocol static flap%d {\n\tipv4 { table mcast4; };\n", f)
		for j := f * bgpFlapRoutes; j < (f+1)*bgpFlapRoutes; j++ {
			fmt.Fprintf(w, "\troute %d.%d.%d.0/24 unreachable;\n", base[0], int(base[1])+j>>8, j&255)
		}
		fmt.Fprintln(w, "}")
	}
	writeBirdSession(w, o)
	return nil
}

// bgpPrefixes returns n distinct IPv4 prefixes with the lengths of the memory table, in address
// order, none of them overlapping the host sources or the flapping routes (a covering route would
// turn the query file's misses into hits) or in ranges BIRD ignores.
func bgpPrefixes(r *rand.Rand, n int) []netip.Prefix {
	seen := make(map[netip.Prefix]struct{}, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		u := r.Uint32()
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}), v4Len(r)).Masked()
		if slices.ContainsFunc(bgpAvoid, p.Overlaps) {
			continue
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}
