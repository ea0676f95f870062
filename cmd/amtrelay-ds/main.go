// Command amtrelay-ds writes the delegation records of the anycast AMT DNS zones for S's
// reverse zone: for every source S in the PREFIXes, NS records delegating L.<rev(S)> to each
// -ns name, and one DS record per KSK, so that the one-name zone the amtrelay plugin signs at
// that apex is secure.
//
// Usage:
//
//	amtrelay-ds [-label L] -ns NAME [-ns NAME]... -key KEYFILE [-key KEYFILE]... PREFIX...
//
// PREFIX is an address or a CIDR prefix with no host bits set (198.51.100.0/24,
// 2001:db8::/120); every address in it is a source: a /24 is 256 sources, an IPv6 /120 too. At
// most 65536 sources in all (the sum of the prefix sizes), since each needs its own delegation;
// a source in several PREFIXes is written once. Multicast and IPv4-mapped prefixes are refused.
// Flags may come before or after the PREFIXes.
//
// -label L is the leading label of the delegated name (default amt, as the plugin's). -ns NAME
// is a name server of the anycast AMT DNS; names are made fully qualified. -key KEYFILE is a
// BIND .key file, or its basename K<name>+<alg>+<tag>: only the public key is read, so another
// network's key (RFC 8901 multi-signer) is given the same way; the owner name in the file does
// not matter. Each key with the SEP flag (257: a KSK or CSK) gets a DS line; keys without it are
// skipped with a warning, and at least one must have it.
//
// The output is zone file text for S's reverse zone (to $INCLUDE or paste): a comment, then per
// source its NS lines and DS lines, owners fully qualified, one record per line, class IN, and
// no TTL column, so the records take the zone's default TTL ($TTL). The DS digest is SHA-256
// (digest type 2) of the key as the zone key of that owner, so each source's DS differs.
//
// # Exit status
//
// 0 on success (and for -h); 1 when a key file cannot be used or the output cannot be written;
// 2 for usage errors.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/miekg/dns"

	"github.com/amtdns/amtrelay/internal/cmdline"
	"github.com/amtdns/amtrelay/revname"
	"github.com/amtdns/amtrelay/sign"
)

const (
	exitOK    = 0
	exitKey   = 1
	exitUsage = 2
)

// maxSources bounds the output: a delegation per source is a lot of zone file already.
const maxSources = 65536

const usageLine = "usage: amtrelay-ds [-label L] -ns NAME [-ns NAME]... -key KEYFILE [-key KEYFILE]... PREFIX..."

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	label    string
	ns       []string
	keys     []string
	prefixes []netip.Prefix
}

func run(args []string, stdout, stderr io.Writer) int {
	o, help, err := parseArgs(args, stderr)
	if help {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "amtrelay-ds: %v\n%s\n", err, usageLine)
		return exitUsage
	}
	keys, err := readKeys(o.keys, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "amtrelay-ds: %v\n", err)
		return exitKey
	}
	w := bufio.NewWriter(stdout)
	write(w, o, keys)
	if err := w.Flush(); err != nil {
		fmt.Fprintf(stderr, "amtrelay-ds: writing: %v\n", err)
		return exitKey
	}
	return exitOK
}

func parseArgs(args []string, stderr io.Writer) (o options, help bool, err error) {
	fs := flag.NewFlagSet("amtrelay-ds", flag.ContinueOnError)
	fs.StringVar(&o.label, "label", "amt", "`L`: leading label of the delegated name L.<rev(S)>")
	var ns, keys listFlag
	fs.Var(&ns, "ns", "`NAME` of a name server of the anycast AMT DNS (repeat for more)")
	fs.Var(&keys, "key", "`KEYFILE`: BIND .key file, or its basename; a DS line per SEP key (repeat for more)")
	pos, help, err := cmdline.Parse(fs, args, usageLine, stderr)
	if help || err != nil {
		return o, help, err
	}

	if o.label == "" || len(o.label) > 63 || strings.ContainsAny(o.label, ".\\ ") {
		return o, false, fmt.Errorf("-label %q is not one DNS label", o.label)
	}
	if _, ok := dns.IsDomainName(o.label); !ok {
		return o, false, fmt.Errorf("-label %q is not one DNS label", o.label)
	}
	if len(ns) == 0 {
		return o, false, errors.New("no -ns: give the name servers of the anycast AMT DNS")
	}
	for _, n := range ns {
		if _, ok := dns.IsDomainName(n); !ok || n == "." || strings.ContainsAny(n, " \t") {
			return o, false, fmt.Errorf("-ns %q is not a host name", n)
		}
		n = dns.Fqdn(n)
		if !containsFold(o.ns, n) {
			o.ns = append(o.ns, n)
		}
	}
	if len(keys) == 0 {
		return o, false, errors.New("no -key: give the KSKs of every network that serves the zones")
	}
	o.keys = keys
	if len(pos) == 0 {
		return o, false, errors.New("no PREFIX")
	}
	total := 0
	for _, s := range pos {
		p, err := parsePrefix(s)
		if err != nil {
			return o, false, err
		}
		if hostBits := p.Addr().BitLen() - p.Bits(); hostBits > 16 {
			total = maxSources + 1
		} else {
			total += 1 << hostBits
		}
		if total > maxSources {
			return o, false, fmt.Errorf("more than %d sources in the PREFIXes: give fewer or longer prefixes", maxSources)
		}
		o.prefixes = append(o.prefixes, p)
	}
	return o, false, nil
}

var (
	multicast4 = netip.MustParsePrefix("224.0.0.0/4")
	multicast6 = netip.MustParsePrefix("ff00::/8")
	mapped     = netip.MustParsePrefix("::ffff:0:0/96")
)

func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("PREFIX %q is not an address or CIDR prefix", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, fmt.Errorf("PREFIX %q is not an address or CIDR prefix", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	switch {
	case p != p.Masked():
		return p, fmt.Errorf("PREFIX %s has host bits set: %s?", s, p.Masked())
	case p.Overlaps(multicast4) || p.Overlaps(multicast6):
		return p, fmt.Errorf("PREFIX %s holds multicast groups, not sources", s)
	case p.Overlaps(mapped):
		return p, fmt.Errorf("PREFIX %s is IPv4-mapped: give the IPv4 prefix", s)
	}
	return p, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// readKeys returns the SEP keys among files, each once.
func readKeys(files []string, stderr io.Writer) ([]*dns.DNSKEY, error) {
	var keys []*dns.DNSKEY
	for _, f := range files {
		k, err := sign.ReadDNSKEY(f)
		if err != nil {
			return nil, err
		}
		if err := sign.CheckDNSKEY(k); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if k.Flags&dns.SEP == 0 {
			fmt.Fprintf(stderr, "amtrelay-ds: %s: flags %d, not a KSK: no DS for it\n", f, k.Flags)
			continue
		}
		dup := false
		for _, o := range keys {
			dup = dup || o.Algorithm == k.Algorithm && o.PublicKey == k.PublicKey && o.Flags == k.Flags
		}
		if !dup {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no key has the SEP flag (257): DS records point at KSKs or CSKs")
	}
	return keys, nil
}

func write(w io.Writer, o options, keys []*dns.DNSKEY) {
	var names []string
	for _, p := range o.prefixes {
		names = append(names, p.String())
	}
	fmt.Fprintf(w, "; %s.<rev(S)> delegations for %s, written by amtrelay-ds.\n", o.label, strings.Join(names, " "))
	fmt.Fprintf(w, "; No TTL column: the records take the zone's default TTL.\n")
	var seen map[netip.Addr]bool
	if len(o.prefixes) > 1 {
		seen = make(map[netip.Addr]bool)
	}
	for _, p := range o.prefixes {
		a := p.Addr()
		for range 1 << (a.BitLen() - p.Bits()) {
			if seen != nil {
				if seen[a] {
					a = a.Next()
					continue
				}
				seen[a] = true
			}
			owner := o.label + "." + revname.Reverse(a)
			for _, ns := range o.ns {
				fmt.Fprintf(w, "%s\tIN\tNS\t%s\n", owner, ns)
			}
			for _, k := range keys {
				ds := sign.DS(k, owner)
				fmt.Fprintf(w, "%s\tIN\tDS\t%d %d %d %s\n", owner, ds.KeyTag, ds.Algorithm, ds.DigestType, strings.ToUpper(ds.Digest))
			}
			a = a.Next()
		}
	}
}
