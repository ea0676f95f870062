// Command gen writes the inputs of the whole-server benchmark (bench/run.sh) into one directory:
//
//	Corefile.whoami    the ceiling: CoreDNS answering every query with whoami
//	Corefile.amtrelay  amtrelay with -sources host sources and -relays relays, health checks on,
//	                   every relay probed on a loopback fixture responder
//	Corefile.signed    Corefile.amtrelay with dnssec, signing with Kamt.+013+*.{key,private}
//	                   (a P-256 key made at each run: the only input not from a fixed seed)
//	Corefile.file      the file plugin serving the same answers as static records
//	db.in-addr.arpa, db.ip6.arpa   the zones of Corefile.file
//	responders.txt     the ADDR:PORT each fixture responder listens on, one a line
//	queries.txt        the dnsperf input: AMTRELAY at rev(S), A and AAAA at amt.rev(S), and misses
//	sources-memory.txt, Corefile.memory, Corefile.memory-base   a large table for the memory
//	                   figure, and the same server with a one-line table
//	Corefile.reload    the memory table's server reading sources-reload.txt every -reload, with
//	                   metrics, for the reload loop (bench/run.sh makes the file's versions)
//	Corefile.bgp-*, bird-*.conf   with -bgp-loads, the inputs of the bgp section (bgp.go)
//
// Everything is derived from fixed seeds, so two runs query the same names.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/amtdns/amtrelay/revname"

	"github.com/miekg/dns"
)

type options struct {
	out          string
	listen       string // ADDR:PORT every server listens on (one at a time)
	readyAddr    string // ADDR:PORT of amtrelay's ready endpoint
	pprofAddr    string // ADDR:PORT of every server's pprof endpoint
	relays       int
	sources      int
	queries      int
	missShare    float64
	memV4, memV6 int
	memInline    bool // the memory table as source lines in the Corefile instead of a sources file
	interval     string
	reload       string // reload interval of Corefile.reload
	metricsAddr  string // ADDR:PORT of Corefile.reload's metrics endpoint
	bgp          bgpOptions
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "", "output `DIR` (created)")
	flag.StringVar(&o.listen, "listen", "127.0.0.1:10553", "`ADDR:PORT` of the DNS servers")
	flag.StringVar(&o.readyAddr, "ready", "127.0.0.1:18181", "`ADDR:PORT` of amtrelay's ready endpoint")
	flag.StringVar(&o.pprofAddr, "pprof", "127.0.0.1:16053", "`ADDR:PORT` of every server's pprof endpoint")
	flag.IntVar(&o.relays, "relays", 50, "relays, each probed on its own loopback responder (at most 200)")
	flag.IntVar(&o.sources, "sources", 10_000, "host sources, 4 in 5 IPv4")
	flag.IntVar(&o.queries, "queries", 100_000, "lines of queries.txt")
	flag.Float64Var(&o.missShare, "miss", 0.2, "share of queries for sources in no table")
	flag.IntVar(&o.memV4, "memory-v4", 1_000_000, "IPv4 prefixes of the memory table")
	flag.IntVar(&o.memV6, "memory-v6", 200_000, "IPv6 prefixes of the memory table")
	flag.BoolVar(&o.memInline, "memory-inline", false, "write the memory table as Corefile source lines (no sources file support)")
	flag.StringVar(&o.interval, "interval", "5s", "health check interval of Corefile.amtrelay")
	flag.StringVar(&o.reload, "reload", "1s", "reload interval of Corefile.reload")
	flag.StringVar(&o.metricsAddr, "metrics", "127.0.0.1:19153", "`ADDR:PORT` of Corefile.reload's metrics endpoint")
	o.bgp.register()
	flag.Parse()
	if o.out == "" || o.relays < 3 || o.relays > 200 || o.sources < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := generate(o); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

// relay is one benchmark relay. Four in five have an IPv4 and an IPv6 address from the
// documentation ranges, the rest a name (AMTRELAY type 3); every one is probed on its own
// loopback responder, so no packet leaves the machine.
type relay struct {
	name       string
	v4, v6     netip.Addr
	host       string
	precedence int
	probe      netip.AddrPort
}

func makeRelays(n int) []relay {
	named := n / 5
	rs := make([]relay, n)
	for i := range rs {
		r := relay{name: fmt.Sprintf("r%03d", i+1), probe: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)}), 2268)}
		if i < n-named {
			r.v4 = netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i)})
			r.v6 = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))
			r.precedence = 10 * (i % 3)
		} else {
			r.host = r.name + ".relays.example.net."
			r.precedence = 40
		}
		rs[i] = r
	}
	return rs
}

// sourceAddr returns the i-th configured host source (hit) or an address between two of them
// that no table has (miss): 4 in 5 are IPv4, in 198.18.0.0/15 (RFC 2544), the rest in
// 2001:db8:5::/48.
func sourceAddr(i, n int, hit bool) netip.Addr {
	off := 1
	if !hit {
		off = 2
	}
	v4 := n * 4 / 5
	if i < v4 {
		u := uint32(198)<<24 | 18<<16 + uint32(4*i+off)
		return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
	}
	a := netip.MustParseAddr("2001:db8:5::").As16()
	k := uint32(4*(i-v4) + off)
	a[12], a[13], a[14], a[15] = byte(k>>24), byte(k>>16), byte(k>>8), byte(k)
	return netip.AddrFrom16(a)
}

// relaysOf gives source i two address relays and one named relay, in a pattern that spreads the
// sources over many distinct relay sets.
func relaysOf(i int, rs []relay) []int {
	named := len(rs) / 5
	addr := len(rs) - named
	a := i % addr
	b := (i*7 + 13) % addr
	if b == a {
		b = (b + 1) % addr
	}
	c := addr + i%named
	return []int{a, b, c}
}

func generate(o options) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	rs := makeRelays(o.relays)
	key, err := writeSigningKey(o.out)
	if err != nil {
		return err
	}
	files := map[string]func(*bufio.Writer) error{
		"Corefile.whoami":   func(w *bufio.Writer) error { return writeWhoami(w, o) },
		"Corefile.amtrelay": func(w *bufio.Writer) error { return writeAMTRelay(w, o, rs, "") },
		"Corefile.signed":   func(w *bufio.Writer) error { return writeAMTRelay(w, o, rs, key) },
		"Corefile.file":     func(w *bufio.Writer) error { return writeFileCorefile(w, o) },
		"db.in-addr.arpa":   func(w *bufio.Writer) error { return writeZone(w, o, rs, false) },
		"db.ip6.arpa":       func(w *bufio.Writer) error { return writeZone(w, o, rs, true) },
		"responders.txt":    func(w *bufio.Writer) error { return writeResponders(w, rs) },
		"queries.txt":       func(w *bufio.Writer) error { return writeQueries(w, o) },
		"Corefile.memory":   func(w *bufio.Writer) error { return writeMemoryCorefile(w, o, memoryTable) },
		"Corefile.memory-base": func(w *bufio.Writer) error {
			return writeMemoryCorefile(w, o, memoryBase)
		},
	}
	if !o.memInline {
		files["sources-memory.txt"] = func(w *bufio.Writer) error { return writeMemorySources(w, o, "") }
		files["Corefile.reload"] = func(w *bufio.Writer) error { return writeMemoryCorefile(w, o, memoryReload) }
	}
	for name, write := range files {
		if err := writeFile(filepath.Join(o.out, name), write); err != nil {
			return err
		}
	}
	return generateBGP(o, rs)
}

func writeFile(path string, write func(*bufio.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<16)
	if err := write(w); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// serverBlock opens a server block on o.listen: "ADDR:PORT" becomes the key ".:PORT" plus bind.
// Every server gets pprof, for CPU profiles under load; it serves HTTP only and is not on the
// query path.
func serverBlock(w *bufio.Writer, o options) error {
	ap, err := netip.ParseAddrPort(o.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	fmt.Fprintf(w, ".:%d {\n\tbind %s\n\tpprof %s\n", ap.Port(), ap.Addr(), o.pprofAddr)
	return nil
}

func writeWhoami(w *bufio.Writer, o options) error {
	if err := serverBlock(w, o); err != nil {
		return err
	}
	fmt.Fprintln(w, "\twhoami\n}")
	return nil
}

// writeSigningKey writes a new ECDSA P-256 key pair in BIND's format into dir and returns its
// basename, as a dnssec line names it.
func writeSigningKey(dir string) (string, error) {
	pub := &dns.DNSKEY{
		Hdr:       dns.RR_Header{Name: "amt.", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
		Flags:     dns.ZONE | dns.SEP,
		Protocol:  3,
		Algorithm: dns.ECDSAP256SHA256,
	}
	priv, err := pub.Generate(256)
	if err != nil {
		return "", err
	}
	base := fmt.Sprintf("Kamt.+%03d+%05d", pub.Algorithm, pub.KeyTag())
	if err := os.WriteFile(filepath.Join(dir, base+".key"), []byte(pub.String()+"\n"), 0o644); err != nil {
		return "", err
	}
	return base, os.WriteFile(filepath.Join(dir, base+".private"), []byte(pub.PrivateKeyString(priv.(*ecdsa.PrivateKey))), 0o600)
}

// writeAMTRelay writes the amtrelay server; with a key basename, it signs (dnssec).
func writeAMTRelay(w *bufio.Writer, o options, rs []relay, key string) error {
	if err := serverBlock(w, o); err != nil {
		return err
	}
	fmt.Fprintf(w, "\tready %s\n\tamtrelay in-addr.arpa ip6.arpa {\n", o.readyAddr)
	for _, r := range rs {
		fmt.Fprintf(w, "\t\trelay %s", r.name)
		if r.host != "" {
			fmt.Fprintf(w, " %s", r.host)
		} else {
			fmt.Fprintf(w, " %s %s", r.v4, r.v6)
		}
		fmt.Fprintf(w, " precedence %d probe %s\n", r.precedence, r.probe)
	}
	for i := 0; i < o.sources; i++ {
		fmt.Fprintf(w, "\t\tsource %s", sourceAddr(i, o.sources, true))
		for _, k := range relaysOf(i, rs) {
			fmt.Fprintf(w, " %s", rs[k].name)
		}
		fmt.Fprintln(w)
	}
	if key != "" {
		fmt.Fprintf(w, "\t\tdnssec %s\n", key)
	}
	fmt.Fprintf(w, "\t\thealth_check %s\n\t}\n}\n", o.interval)
	return nil
}

func writeFileCorefile(w *bufio.Writer, o options) error {
	if err := serverBlock(w, o); err != nil {
		return err
	}
	fmt.Fprintln(w, "\tfile db.in-addr.arpa in-addr.arpa\n\tfile db.ip6.arpa ip6.arpa\n}")
	return nil
}

// writeZone writes the records amtrelay would answer with, for the sources of one family, as a
// static zone: the AMTRELAY set at rev(S) and A and AAAA at amt.rev(S), TTL 30 as amtrelay's
// default, under a SOA whose MINIMUM is 30 too. There are no NS records, so that positive answers
// are the same as amtrelay's (file adds the apex NS set to the authority section of each one).
// Records are in relay order; amtrelay rotates equal-precedence A/AAAA records on each answer,
// file does not, which costs nothing measurable either way.
func writeZone(w *bufio.Writer, o options, rs []relay, v6 bool) error {
	origin := "in-addr.arpa."
	if v6 {
		origin = "ip6.arpa."
	}
	fmt.Fprintf(w, "$TTL 30\n%s IN SOA %s hostmaster.%s 1 7200 1800 86400 30\n", origin, origin, origin)
	for i := 0; i < o.sources; i++ {
		s := sourceAddr(i, o.sources, true)
		if s.Is6() != v6 {
			continue
		}
		rev := revname.Reverse(s)
		set := relaysOf(i, rs)
		slices.SortFunc(set, func(a, b int) int { return rs[a].precedence - rs[b].precedence })
		for _, k := range set {
			r := rs[k]
			// D-bit 0 throughout: miekg/dns, which file uses, packs an AMTRELAY with D=1 without
			// its relay field, and the answers would not be the same.
			if r.host != "" {
				fmt.Fprintf(w, "%s AMTRELAY %d 0 3 %s\n", rev, r.precedence, r.host)
			} else {
				fmt.Fprintf(w, "%s AMTRELAY %d 0 1 %s\n%s AMTRELAY %d 0 2 %s\n", rev, r.precedence, r.v4, rev, r.precedence, r.v6)
			}
		}
		for _, k := range set {
			if r := rs[k]; r.host == "" {
				fmt.Fprintf(w, "amt.%s A %s\namt.%s AAAA %s\n", rev, r.v4, rev, r.v6)
			}
		}
	}
	return nil
}

func writeResponders(w *bufio.Writer, rs []relay) error {
	for _, r := range rs {
		fmt.Fprintln(w, r.probe)
	}
	return nil
}

// writeQueries mixes, over sources drawn at random: AMTRELAY at rev(S) 30%, A at amt.rev(S) 25%,
// AAAA at amt.rev(S) 25%, and the miss share (A or AAAA at amt.rev(S) for an S in no table, an
// NXDOMAIN) in place of part of those. Types are written as TYPEnnn where dnsperf has no mnemonic.
func writeQueries(w *bufio.Writer, o options) error {
	r := rand.New(rand.NewPCG(1, 2))
	for q := 0; q < o.queries; q++ {
		i := r.IntN(o.sources)
		if r.Float64() < o.missShare {
			t := "A"
			if r.IntN(2) == 1 {
				t = "AAAA"
			}
			fmt.Fprintf(w, "amt.%s %s\n", revname.Reverse(sourceAddr(i, o.sources, false)), t)
			continue
		}
		rev := revname.Reverse(sourceAddr(i, o.sources, true))
		switch x := r.IntN(80); {
		case x < 30:
			fmt.Fprintf(w, "%s TYPE260\n", rev)
		case x < 55:
			fmt.Fprintf(w, "amt.%s A\n", rev)
		default:
			fmt.Fprintf(w, "amt.%s AAAA\n", rev)
		}
	}
	return nil
}

// memoryVariant says which table a memory Corefile loads.
type memoryVariant int

const (
	memoryTable  memoryVariant = iota // the memory table: sources-memory.txt or inline lines
	memoryBase                        // one inline source, the baseline
	memoryReload                      // sources-reload.txt, reloaded every o.reload, with metrics
)

// writeMemoryCorefile is amtrelay with health checks off and the table of variant. Its pprof
// endpoint gives the live heap: fetching /debug/pprof/heap?gc=1 forces a garbage collection.
func writeMemoryCorefile(w *bufio.Writer, o options, variant memoryVariant) error {
	if err := serverBlock(w, o); err != nil {
		return err
	}
	if variant == memoryReload {
		fmt.Fprintf(w, "\tprometheus %s\n", o.metricsAddr)
	}
	fmt.Fprintln(w, "\tamtrelay in-addr.arpa ip6.arpa {")
	for i := 0; i < 8; i++ {
		fmt.Fprintf(w, "\t\trelay relay%d 192.0.2.%d 2001:db8::%d\n", i, i+1, i+1)
	}
	switch {
	case variant == memoryBase:
		fmt.Fprintln(w, "\t\tsource 192.0.2.0/24 relay0")
	case variant == memoryReload:
		fmt.Fprintf(w, "\t\tsources sources-reload.txt reload %s\n", o.reload)
		// The query file's sources, so that its IPv6 queries are answered (the file's IPv6
		// prefixes do not cover them), and so that every reload lays inline lines over the file.
		fmt.Fprintln(w, "\t\tsource 198.18.0.0/15 relay0 relay1")
		fmt.Fprintln(w, "\t\tsource 2001:db8:5::/48 relay2 relay3")
	case o.memInline:
		if err := writeMemorySources(w, o, "\t\tsource "); err != nil {
			return err
		}
	default:
		fmt.Fprintln(w, "\t\tsources sources-memory.txt")
	}
	fmt.Fprintln(w, "\t\thealth_check off\n\t}\n}")
	return nil
}

// writeMemorySources writes the memory table: o.memV4 IPv4 and o.memV6 IPv6 distinct prefixes
// with lengths shaped like routing tables (IPv4 mostly /16-/24, /24 the commonest; IPv6 mostly
// /32-/48), in address order, each with one of 8 relay sets of three.
func writeMemorySources(w *bufio.Writer, o options, linePrefix string) error {
	sets := make([]string, 8)
	for i := range sets {
		sets[i] = fmt.Sprintf("relay%d relay%d relay%d", i%8, (i+3)%8, (i+5)%8)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, v6 := range []bool{false, true} {
		n := o.memV4
		if v6 {
			n = o.memV6
		}
		ps := randomPrefixes(r, n, v6)
		for _, p := range ps {
			fmt.Fprintf(w, "%s%s %s\n", linePrefix, p, sets[r.IntN(len(sets))])
		}
	}
	return nil
}

func randomPrefixes(r *rand.Rand, n int, v6 bool) []netip.Prefix {
	seen := make(map[netip.Prefix]struct{}, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		var p netip.Prefix
		if v6 {
			var a [16]byte
			u := r.Uint64()
			for i := 0; i < 8; i++ {
				a[i] = byte(u >> (56 - 8*i))
			}
			a[0] = 0x20 | a[0]&0x1f // 2000::/3
			p = netip.PrefixFrom(netip.AddrFrom16(a), v6Len(r)).Masked()
		} else {
			u := r.Uint32()
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}), v4Len(r)).Masked()
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := bytes.Compare(a.Addr().AsSlice(), b.Addr().AsSlice()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

func v4Len(r *rand.Rand) int {
	switch x := r.IntN(100); {
	case x < 1:
		return 8 + r.IntN(8)
	case x < 45:
		return 24
	case x < 90:
		return 16 + r.IntN(8)
	default:
		return 25 + r.IntN(8)
	}
}

func v6Len(r *rand.Rand) int {
	switch x := r.IntN(100); {
	case x < 5:
		return 19 + r.IntN(13)
	case x < 20:
		return 32
	case x < 60:
		return 48
	case x < 85:
		return 33 + r.IntN(15)
	default:
		return 49 + r.IntN(16)
	}
}
