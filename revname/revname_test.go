package revname

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// nibbles returns the 32 nibble labels of addr in reverse-name order, joined
// by dots, with no suffix: a test-side spelling independent of Reverse.
func nibbles(addr string) string {
	a := netip.MustParseAddr(addr).As16()
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		if i > 0 {
			b.WriteByte('.')
		}
	}
	return b.String()
}

func TestParse(t *testing.T) {
	v6 := nibbles("2001:db8::a")
	mapped := nibbles("::ffff:198.51.100.12")
	tests := []struct {
		name   string
		qname  string
		prefix string
		src    string // empty: ok must be false
	}{
		// IPv4, the basic shapes.
		{"v4", "12.100.51.198.in-addr.arpa.", "", "198.51.100.12"},
		{"v4 no final dot", "12.100.51.198.in-addr.arpa", "", "198.51.100.12"},
		{"v4 zeros", "0.0.0.0.in-addr.arpa.", "", "0.0.0.0"},
		{"v4 max", "255.255.255.255.in-addr.arpa.", "", "255.255.255.255"},
		{"v4 amt prefix keeps case", "AMT.12.100.51.198.In-Addr.Arpa.", "AMT", "198.51.100.12"},
		{"v4 two prefix labels", "x.amt.12.100.51.198.in-addr.arpa.", "x.amt", "198.51.100.12"},
		{"v4 five numeric labels", "1.12.100.51.198.in-addr.arpa.", "1", "198.51.100.12"},
		{"v4 0x20 suffix", "12.100.51.198.iN-aDdR.ArPa.", "", "198.51.100.12"},
		{"v4 upper suffix", "12.100.51.198.IN-ADDR.ARPA", "", "198.51.100.12"},
		{"v4 numeric prefix too big", "300.12.100.51.198.in-addr.arpa.", "300", "198.51.100.12"},

		// IPv4, not a complete reverse name or not canonical.
		{"v4 partial", "100.51.198.in-addr.arpa.", "", ""},
		{"v4 one label", "198.in-addr.arpa.", "", ""},
		{"v4 zone apex", "in-addr.arpa.", "", ""},
		{"v4 leading zero", "012.100.51.198.in-addr.arpa.", "", ""},
		{"v4 double zero", "00.100.51.198.in-addr.arpa.", "", ""},
		{"v4 plus sign", "+1.100.51.198.in-addr.arpa.", "", ""},
		{"v4 minus sign", "-1.100.51.198.in-addr.arpa.", "", ""},
		{"v4 hex", "0x1.100.51.198.in-addr.arpa.", "", ""},
		{"v4 256", "256.100.51.198.in-addr.arpa.", "", ""},
		{"v4 four digits", "1000.100.51.198.in-addr.arpa.", "", ""},
		{"v4 empty label inside", "12..51.198.in-addr.arpa.", "", ""},
		{"v4 leading dot", ".12.100.51.198.in-addr.arpa.", "", ""},
		{"v4 empty prefix label", "a..12.100.51.198.in-addr.arpa.", "", ""},
		{"v4 prefix ends in dot", "a..12.100.51.198.in-addr.arpa", "", ""},
		{"v4 double final dot", "12.100.51.198.in-addr.arpa..", "", ""},
		{"v4 escaped digit", `\049.100.51.198.in-addr.arpa.`, "", ""},
		{"v4 escaped suffix", `12.100.51.198.in\-addr.arpa.`, "", ""},
		{"v4 escaped final dot", `12.100.51.198.in-addr.arpa\.`, "", ""},
		{"v4 escaped dot before suffix", `12.100.51.198\.in-addr.arpa.`, "", ""},
		{"v4 escaped separator", `x\.12.100.51.198.in-addr.arpa.`, "", ""},
		{"v4 space", "12 .100.51.198.in-addr.arpa.", "", ""},
		{"v4 no dot before suffix", "12.100.51.198in-addr.arpa.", "", ""},
		{"v4 other suffix", "12.100.51.198.in-addr.arpa.example.", "", ""},
		{"v4 longer suffix label", "12.100.51.198.xin-addr.arpa.", "", ""},

		// Escapes in the prefix are fine as long as they do not hide the
		// separator.
		{"escaped dot in prefix", `a\..12.100.51.198.in-addr.arpa.`, `a\.`, "198.51.100.12"},
		{"escaped backslash in prefix", `a\\.12.100.51.198.in-addr.arpa.`, `a\\`, "198.51.100.12"},
		{"decimal escape in prefix", `a\046b.12.100.51.198.in-addr.arpa.`, `a\046b`, "198.51.100.12"},
		{"escaped dot alone as prefix label", `\..12.100.51.198.in-addr.arpa.`, `\.`, "198.51.100.12"},

		// IPv6.
		{"v6", v6 + ".ip6.arpa.", "", "2001:db8::a"},
		{"v6 no final dot", v6 + ".ip6.arpa", "", "2001:db8::a"},
		{"v6 upper", strings.ToUpper(v6) + ".IP6.ARPA.", "", "2001:db8::a"},
		{"v6 prefix", "amt." + v6 + ".ip6.arpa.", "amt", "2001:db8::a"},
		{"v6 nibble prefix", "f." + v6 + ".ip6.arpa.", "f", "2001:db8::a"},
		{"v6 all f", strings.Repeat("f.", 32) + "ip6.arpa.", "", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"v6 all F", strings.Repeat("F.", 32) + "ip6.arpa.", "", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"v6 mapped stays 16 bytes", mapped + ".ip6.arpa.", "", "::ffff:198.51.100.12"},

		{"v6 31 nibbles", v6[2:] + ".ip6.arpa.", "", ""},
		{"v6 two-digit label", "10" + v6[1:] + ".ip6.arpa.", "", ""},
		{"v6 g", "g" + v6[1:] + ".ip6.arpa.", "", ""},
		{"v6 empty label", "." + v6[1:] + ".ip6.arpa.", "", ""},
		{"v6 escaped nibble", `\097` + v6[1:] + ".ip6.arpa.", "", ""},
		{"v6 escaped separator", `x\.` + v6 + ".ip6.arpa.", "", ""},
		// The last four nibbles happen to be valid octets.
		{"v6 under in-addr", v6 + ".in-addr.arpa.", v6[:len(v6)-8], "2.0.0.1"},
		{"v6 hex under in-addr", "a.b.c.d.in-addr.arpa.", "", ""},
		{"v4 under ip6", "12.100.51.198.ip6.arpa.", "", ""},
		{"v6 ip6.int", v6 + ".ip6.int.", "", ""},

		// Garbage.
		{"empty", "", "", ""},
		{"root", ".", "", ""},
		{"arpa", "arpa.", "", ""},
		{"plain", "www.example.org.", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix, src, ok := Parse(tc.qname)
			if tc.src == "" {
				if ok {
					t.Fatalf("Parse(%q) = %q, %v, true; want not ok", tc.qname, prefix, src)
				}
				if prefix != "" || src.IsValid() {
					t.Errorf("Parse(%q) returned %q, %v with ok false; want zero values", tc.qname, prefix, src)
				}
				return
			}
			want := netip.MustParseAddr(tc.src)
			if !ok || prefix != tc.prefix || src != want {
				t.Fatalf("Parse(%q) = %q, %v, %v; want %q, %v, true", tc.qname, prefix, src, ok, tc.prefix, want)
			}
		})
	}
}

// TestParseEveryOctet checks that each label value round-trips and that
// non-canonical spellings of the same value do not.
func TestParseEveryOctet(t *testing.T) {
	for v := 0; v < 256; v++ {
		addr := netip.AddrFrom4([4]byte{byte(v), 0, byte(255 - v), 1})
		_, got, ok := Parse(Reverse(addr))
		if !ok || got != addr {
			t.Fatalf("Parse(Reverse(%v)) = %v, %v", addr, got, ok)
		}
	}
	for _, bad := range []string{"01", "001", "010", "099", "0255"} {
		if _, _, ok := Parse(bad + ".0.0.10.in-addr.arpa."); ok {
			t.Errorf("Label %q was accepted", bad)
		}
	}
}

func TestReverse(t *testing.T) {
	tests := []struct {
		addr netip.Addr
		want string
	}{
		{netip.MustParseAddr("198.51.100.12"), "12.100.51.198.in-addr.arpa."},
		{netip.MustParseAddr("0.0.0.0"), "0.0.0.0.in-addr.arpa."},
		{netip.MustParseAddr("10.0.100.255"), "255.100.0.10.in-addr.arpa."},
		{netip.MustParseAddr("2001:db8::a"), nibbles("2001:db8::a") + ".ip6.arpa."},
		{netip.MustParseAddr("2001:DB8::ABCD"), nibbles("2001:db8::abcd") + ".ip6.arpa."},
		{netip.MustParseAddr("fe80::1%eth0"), nibbles("fe80::1") + ".ip6.arpa."},
		{netip.MustParseAddr("::ffff:198.51.100.12"), nibbles("::ffff:198.51.100.12") + ".ip6.arpa."},
		{netip.Addr{}, ""},
	}
	for _, tc := range tests {
		if got := Reverse(tc.addr); got != tc.want {
			t.Errorf("Reverse(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	want := "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
	if got := Reverse(netip.MustParseAddr("2001:db8::a")); got != want {
		t.Errorf("Reverse(2001:db8::a) = %q, want %q", got, want)
	}
}

func TestParseAllocs(t *testing.T) {
	names := []string{
		"12.100.51.198.in-addr.arpa.",
		"AMT.12.100.51.198.In-Addr.Arpa.",
		nibbles("2001:db8::a") + ".ip6.arpa.",
		"x." + nibbles("2001:db8::a") + ".IP6.ARPA",
		"100.51.198.in-addr.arpa.",
		"www.example.org.",
	}
	for _, n := range names {
		allocs := testing.AllocsPerRun(100, func() {
			_, _, _ = Parse(n)
		})
		if allocs != 0 {
			t.Errorf("Parse(%q) allocated %v times per run, want 0", n, allocs)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"12.100.51.198.in-addr.arpa.",
		"AMT.12.100.51.198.In-Addr.Arpa.",
		"x.amt.12.100.51.198.in-addr.arpa",
		"1.12.100.51.198.in-addr.arpa.",
		"100.51.198.in-addr.arpa.",
		"012.100.51.198.in-addr.arpa.",
		`a\..12.100.51.198.in-addr.arpa.`,
		`x\.12.100.51.198.in-addr.arpa.`,
		`12.100.51.198.in-addr.arpa\.`,
		nibbles("2001:db8::a") + ".ip6.arpa.",
		"amt." + strings.ToUpper(nibbles("2001:db8::a")) + ".IP6.ARPA",
		nibbles("::ffff:198.51.100.12") + ".ip6.arpa.",
		"", ".", "a..b", "in-addr.arpa.", "ip6.arpa",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, qname string) {
		prefix, src, ok := Parse(qname)
		if !ok {
			if prefix != "" || src.IsValid() {
				t.Fatalf("Parse(%q) = %q, %v with ok false", qname, prefix, src)
			}
			return
		}
		rev := Reverse(src)
		rebuilt := rev
		if prefix != "" {
			rebuilt = prefix + "." + rev
		}
		fqdn := qname
		if !strings.HasSuffix(fqdn, ".") {
			fqdn += "."
		}
		if !strings.EqualFold(rebuilt, fqdn) {
			t.Fatalf("Parse(%q) = %q, %v; rebuilt %q", qname, prefix, src, rebuilt)
		}
		p2, src2, ok2 := Parse(rev)
		if !ok2 || p2 != "" || src2 != src {
			t.Fatalf("Parse(Reverse(%v)) = %q, %v, %v", src, p2, src2, ok2)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	cases := []struct{ name, qname string }{
		{"v4", "12.100.51.198.in-addr.arpa."},
		{"v4prefix", "AMT.12.100.51.198.In-Addr.Arpa."},
		{"v6", nibbles("2001:db8::a") + ".ip6.arpa."},
		{"miss", "100.51.198.in-addr.arpa."},
		{"other", "www.example.org."},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = Parse(c.qname)
			}
		})
	}
}

func BenchmarkReverse(b *testing.B) {
	for _, a := range []string{"198.51.100.12", "2001:db8::a"} {
		addr := netip.MustParseAddr(a)
		b.Run(a, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Reverse(addr)
			}
		})
	}
}

// FuzzInZone checks InZone against dns.IsSubDomain, which it stands in for on the query path, for
// any name miekg/dns accepts and a few zones, the root included.
func FuzzInZone(f *testing.F) {
	for _, s := range []string{
		"amt.12.100.51.198.in-addr.arpa.", "AmT.1.0.0.2.IP6.arpa.", `a\.in-addr.arpa.`, `a\\.in-addr.arpa.`,
		`a\\\.in-addr.arpa.`, `\065.in-addr.arpa.`, "in-addr.arpa.", ".", "xin-addr.arpa.", "x.in-addr\\.arpa.",
	} {
		f.Add(s)
	}
	zones := []string{".", "arpa.", "in-addr.arpa.", "ip6.arpa.", "100.51.198.in-addr.arpa."}
	f.Fuzz(func(t *testing.T, name string) {
		name = dns.Fqdn(name)
		if _, ok := dns.IsDomainName(name); !ok {
			return
		}
		for _, z := range zones {
			if got, want := InZone(name, z), dns.IsSubDomain(z, name); got != want {
				t.Fatalf("InZone(%q, %q) = %v, dns.IsSubDomain says %v", name, z, got, want)
			}
		}
	})
}
