package main

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/amtdns/amtrelay/revname"
	"github.com/amtdns/amtrelay/sign"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The keys in testdata are public halves only, made for these tests: two KSKs of two networks
// and a ZSK.
const (
	ksk13 = "testdata/Kexample.net.+013+41251"
	ksk15 = "testdata/Kexample.org.+015+21381.key"
	zsk13 = "testdata/Kexample.net.+013+04772"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"ipv4.zone", []string{"-ns", "ns1.example.net", "-ns", "NS2.example.org.", "-key", ksk13, "-key", ksk15, "-key", zsk13, "198.51.100.4/30"}},
		{"ipv6.zone", []string{"-label", "relays", "-ns", "ns1.example.net.", "-key", ksk13, "2001:db8:0:1::/126", "-key", ksk15}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			code, out, errs := runCmd(tc.args...)
			if code != exitOK {
				t.Fatalf("Exit %d: %s", code, errs)
			}
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("Output differs from %s:\n%s", path, out)
			}
			checkZone(t, out, []string{ksk13, ksk15})
		})
	}
}

// checkZone parses every line as a zone file record and checks each DS against sign.DS and
// against miekg/dns's ToDS of the key with the record's owner.
func checkZone(t *testing.T, zone string, keyFiles []string) (ns, ds int) {
	t.Helper()
	var keys []*dns.DNSKEY
	for _, f := range keyFiles {
		k, err := sign.ReadDNSKEY(f)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	zp := dns.NewZoneParser(strings.NewReader(zone), "", "")
	zp.SetDefaultTTL(3600)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		switch x := rr.(type) {
		case *dns.NS:
			ns++
		case *dns.DS:
			ds++
			var match bool
			for _, k := range keys {
				if k.KeyTag() != x.KeyTag {
					continue
				}
				match = true
				at := *k
				at.Hdr.Name = x.Hdr.Name
				want := at.ToDS(dns.SHA256)
				if x.Algorithm != want.Algorithm || x.DigestType != want.DigestType || !strings.EqualFold(x.Digest, want.Digest) {
					t.Errorf("DS %v, ToDS %v", x, want)
				}
				if d := sign.DS(k, x.Hdr.Name); !strings.EqualFold(d.Digest, x.Digest) || d.DigestType != dns.SHA256 {
					t.Errorf("DS %v, sign.DS %v", x, d)
				}
			}
			if !match {
				t.Errorf("DS of an unknown key: %v", x)
			}
		default:
			t.Errorf("Unexpected record %v", rr)
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("Output is no zone file: %v", err)
	}
	return ns, ds
}

// TestGeneratedKeys runs on keys made here, given as .key files only, over a /24 and a /120.
func TestGeneratedKeys(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, alg := range []uint8{dns.ECDSAP256SHA256, dns.ED25519} {
		k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: "whatever.example.", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 60},
			Flags: 257, Protocol: 3, Algorithm: alg}
		if _, err := k.Generate(256); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, fmt.Sprintf("Kwhatever.example.+%03d+%05d.key", alg, k.KeyTag()))
		if err := os.WriteFile(f, []byte(k.String()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for _, prefix := range []string{"198.51.100.0/24", "2001:db8::100/120"} {
		code, out, errs := runCmd("-ns", "a.example.net", "-ns", "b.example.net", "-key", files[0], "-key", files[1], prefix)
		if code != exitOK || errs != "" {
			t.Fatalf("%s: exit %d: %s", prefix, code, errs)
		}
		ns, ds := checkZone(t, out, files)
		if ns != 2*256 || ds != 2*256 {
			t.Errorf("%s: %d NS and %d DS records, want 512 each", prefix, ns, ds)
		}
		p := netip.MustParsePrefix(prefix)
		first := "amt." + revname.Reverse(p.Addr())
		last := "amt." + revname.Reverse(netip.MustParseAddr(map[string]string{
			"198.51.100.0/24": "198.51.100.255", "2001:db8::100/120": "2001:db8::1ff"}[prefix]))
		if !strings.Contains(out, "\n"+first+"\t") || !strings.Contains(out, "\n"+last+"\t") {
			t.Errorf("%s: no records for %s or %s", prefix, first, last)
		}
	}
}

func TestOverlaps(t *testing.T) {
	code, out, errs := runCmd("-ns", "a.example.net", "-key", ksk13, "198.51.100.0/31", "198.51.100.1", "198.51.100.0/30")
	if code != exitOK {
		t.Fatalf("Exit %d: %s", code, errs)
	}
	if ns, ds := checkZone(t, out, []string{ksk13}); ns != 4 || ds != 4 {
		t.Errorf("%d NS and %d DS for 4 sources given with overlaps, want 4 each", ns, ds)
	}
}

func TestUsageErrors(t *testing.T) {
	ok := []string{"-ns", "a.example.net", "-key", ksk13}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"-key", ksk13, "198.51.100.0/24"}, "no -ns"},
		{[]string{"-ns", "a.example.net", "198.51.100.0/24"}, "no -key"},
		{ok, "no PREFIX"},
		{append(ok, "198.51.100.0/33"), "not an address or CIDR prefix"},
		{append(ok, "example.net"), "not an address or CIDR prefix"},
		{append(ok, "fe80::1%eth0"), "not an address or CIDR prefix"},
		{append(ok, "198.51.100.1/24"), "host bits set: 198.51.100.0/24?"},
		{append(ok, "10.0.0.0/15"), "more than 65536 sources"},
		{append(ok, "10.0.0.0/16", "10.1.0.0"), "more than 65536 sources"},
		{append(ok, "2001:db8::/64"), "more than 65536 sources"},
		{append(ok, "232.1.1.0/24"), "multicast"},
		{append(ok, "ff3e::/120"), "multicast"},
		{append(ok, "::ffff:198.51.100.0/120"), "IPv4-mapped"},
		{append([]string{"-label", "a.b"}, append(ok, "198.51.100.0/24")...), "not one DNS label"},
		{append([]string{"-label", ""}, append(ok, "198.51.100.0/24")...), "not one DNS label"},
		{[]string{"-ns", "bad name", "-key", ksk13, "198.51.100.0/24"}, "not a host name"},
		{[]string{"-ns", ".", "-key", ksk13, "198.51.100.0/24"}, "not a host name"},
		{append(ok, "-bogus", "198.51.100.0/24"), "flag provided but not defined"},
	} {
		code, out, errs := runCmd(tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.err) || !strings.Contains(errs, usageLine) {
			t.Errorf("%q: exit %d, %d bytes out, stderr %q; want exit 2 and %q", tc.args, code, len(out), errs, tc.err)
		}
	}
	// 65536 sources are fine.
	if code, _, errs := runCmd(append(ok, "10.0.0.0/17", "10.0.128.0/17")...); code != exitOK {
		t.Errorf("Two /17s: exit %d: %s", code, errs)
	}
	if code, out, errs := runCmd("-h"); code != exitOK || out != "" || !strings.Contains(errs, "-key KEYFILE") {
		t.Errorf("-h: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestKeyErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	k, err := sign.ReadDNSKEY(ksk13)
	if err != nil {
		t.Fatal(err)
	}
	revoked := *k
	revoked.Flags |= dns.REVOKE
	for _, tc := range []struct {
		key, err string
	}{
		{filepath.Join(dir, "Kmissing.+013+00001"), "Kmissing.+013+00001.key: no such file"},
		{write("Ka.key", "example.net. IN A 192.0.2.1\n"), "not DNSKEY"},
		{write("Kr.key", revoked.String()+"\n"), "revoked"},
		{write("Kb.key", strings.Replace(k.String(), k.PublicKey, "!!!!", 1)+"\n"), "Kb.key: the public key is not base64"},
		{zsk13, "no key has the SEP flag"},
	} {
		code, out, errs := runCmd("-ns", "a.example.net", "-key", tc.key, "198.51.100.0/30")
		if code != exitKey || out != "" || !strings.Contains(errs, tc.err) {
			t.Errorf("-key %s: exit %d, %d bytes out, stderr %q; want exit 1 and %q", tc.key, code, len(out), errs, tc.err)
		}
	}
	// A ZSK among KSKs is skipped, with a word.
	code, _, errs := runCmd("-ns", "a.example.net", "-key", ksk13, "-key", zsk13, "198.51.100.0/30")
	if code != exitOK || !strings.Contains(errs, "not a KSK") {
		t.Errorf("KSK and ZSK: exit %d, stderr %q", code, errs)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }

func TestWriteError(t *testing.T) {
	var errb bytes.Buffer
	if code := run([]string{"-ns", "a.example.net", "-key", ksk13, "198.51.100.0/24"}, failWriter{}, &errb); code != exitKey || !strings.Contains(errb.String(), "disk full") {
		t.Errorf("Exit %d, stderr %q", code, errb.String())
	}
}
