package amtrelay

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"
)

// writeKey generates a key pair of owner in BIND's files in dir and returns its basename and
// public key.
func writeKey(t *testing.T, dir, owner string, flags uint16, alg uint8, bits int) (string, *dns.DNSKEY) {
	t.Helper()
	k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
		Flags: flags, Protocol: 3, Algorithm: alg}
	priv, err := k.Generate(bits)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, fmt.Sprintf("K%s+%03d+%05d", owner, alg, k.KeyTag()))
	if err := os.WriteFile(base+".key", []byte(k.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".private", []byte(k.PrivateKeyString(priv)), 0o600); err != nil {
		t.Fatal(err)
	}
	return base, k
}

// peerKeysText returns n distinct Ed25519 DNSKEY records, one a line, each written twice.
func peerKeysText(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for range n {
		k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: "net1.example.", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
			Flags: 257, Protocol: 3, Algorithm: dns.ED25519}
		if _, err := k.Generate(256); err != nil {
			t.Fatal(err)
		}
		b.WriteString(k.String() + "\n" + k.String() + "\n")
	}
	return b.String()
}

// signedQuery asks over TCP with the DO bit.
func signedQuery(t *testing.T, s *testServer, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := question(name, qtype)
	q.SetEdns0(4096, true)
	r := s.exchange(t, "tcp", q)
	if r.msg == nil {
		t.Fatalf("%s %s: reply does not unpack", name, dns.TypeToString[qtype])
	}
	return r.msg
}

// verifySection checks that every RRset of rrs has a valid RRSIG by one of keys, with signer
// apex, and returns the RRsets' types.
func verifySection(t *testing.T, rrs []dns.RR, apex string, keys []*dns.DNSKEY) []uint16 {
	t.Helper()
	sets := map[uint16][]dns.RR{}
	var sigs []*dns.RRSIG
	for _, rr := range rrs {
		if sig, ok := rr.(*dns.RRSIG); ok {
			sigs = append(sigs, sig)
			continue
		}
		sets[rr.Header().Rrtype] = append(sets[rr.Header().Rrtype], rr)
	}
	var types []uint16
	for typ, set := range sets {
		types = append(types, typ)
		ok := false
		for _, sig := range sigs {
			if sig.TypeCovered != typ || !strings.EqualFold(sig.SignerName, apex) {
				continue
			}
			for _, k := range keys {
				key := *k
				key.Hdr.Name = apex
				if key.KeyTag() == sig.KeyTag && sig.Verify(&key, set) == nil && sig.ValidityPeriod(time.Now()) {
					ok = true
				}
			}
		}
		if !ok {
			t.Errorf("%s RRset at %s has no valid signature by the apex's keys (%d RRSIGs)", dns.TypeToString[typ], apex, len(sigs))
		}
	}
	slices.Sort(types)
	return types
}

// nsecTypes returns the type bitmap of the one NSEC in rrs, by name.
func nsecTypes(t *testing.T, rrs []dns.RR) string {
	t.Helper()
	for _, rr := range rrs {
		if n, ok := rr.(*dns.NSEC); ok {
			var names []string
			for _, typ := range n.TypeBitMap {
				names = append(names, dns.TypeToString[typ])
			}
			return strings.Join(names, " ")
		}
	}
	t.Fatalf("No NSEC in %v", rrs)
	return ""
}

// Every answer at an apex is signed when asked with DO: positive answers, the DNSKEY RRset (with
// the peers' keys) signed by the KSK, and negative answers with the apex's one-name NSEC, whose
// bitmap lists exactly what the apex answers at that moment.
func TestDNSSECAnswers(t *testing.T) {
	dir := t.TempDir()
	ksk, kskPub := writeKey(t, dir, "example.", 257, dns.ECDSAP256SHA256, 256)
	zsk, zskPub := writeKey(t, dir, "example.", 256, dns.ECDSAP256SHA256, 256)
	_, peer := writeKey(t, t.TempDir(), "example.", 257, dns.ECDSAP256SHA256, 256)
	// The peer's key is listed twice (once under another owner and TTL) and the file has this
	// network's KSK too: the RRset lists each key once.
	otherOwner := *peer
	otherOwner.Hdr.Name, otherOwner.Hdr.Ttl = "net1.example.", 60
	writeFile(t, filepath.Join(dir, "peers.keys"), "; net1's KSK\n"+peer.String()+"\n"+otherOwner.String()+"\n"+
		"; ours\n"+kskPub.String()+"\n"+peer.String()+"\n")
	writeFile(t, filepath.Join(dir, "admin.txt"), "down down\n")
	s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	root %s
	amtrelay {
		relay v4 192.0.2.1
		relay v6 2001:db8::6
		relay down 192.0.2.9
		source 198.51.100.0/24 v4 v6
		source 203.0.113.0/24 v6
		source 192.0.2.0/24 down
		nameserver ns1.example.net
		dnssec %s %s
		dnssec_peer_keys peers.keys
		admin admin.txt
		all_down nodata
		health_check off
	}
}
`, dir, filepath.Base(ksk), filepath.Base(zsk)))
	keys := []*dns.DNSKEY{kskPub, zskPub}

	// The DNSKEY RRset: both keys and the peer's, signed by the KSK.
	m := signedQuery(t, s, apexS, dns.TypeDNSKEY)
	if n := len(m.Answer) - 1; n != 3 || !m.Authoritative {
		t.Fatalf("DNSKEY: %d keys (want 3: KSK, ZSK, peer) in %v", n, m)
	}
	verifySection(t, m.Answer, apexS, keys)
	for _, rr := range m.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok && sig.KeyTag != kskPub.KeyTag() {
			t.Errorf("DNSKEY signed by key %d, want only the KSK %d", sig.KeyTag, kskPub.KeyTag())
		}
	}

	// Positive answers, in the query's letter case.
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeAMTRELAY, dns.TypeSOA, dns.TypeNS} {
		name := "AmT.12.100.51.198.In-Addr.ARPA."
		m := signedQuery(t, s, name, qtype)
		if got := verifySection(t, m.Answer, name, keys); !slices.Equal(got, []uint16{qtype}) {
			t.Errorf("%s: answer types %v", dns.TypeToString[qtype], got)
		}
	}

	// Negative answers: SOA and NSEC, signed; the bitmap is what the apex has now.
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		bitmap string
	}{
		{apexS, dns.TypeTXT, dns.RcodeSuccess, "A NS SOA AAAA RRSIG NSEC DNSKEY AMTRELAY"},
		{apexS, dns.TypeDS, dns.RcodeSuccess, "A NS SOA AAAA RRSIG NSEC DNSKEY AMTRELAY"},
		{"x." + apexS, dns.TypeA, dns.RcodeNameError, "A NS SOA AAAA RRSIG NSEC DNSKEY AMTRELAY"},
		// Only an IPv6 relay: A is NODATA and must not be in the bitmap.
		{"amt.5.113.0.203.in-addr.arpa.", dns.TypeA, dns.RcodeSuccess, "NS SOA AAAA RRSIG NSEC DNSKEY AMTRELAY"},
		// A source in no table: the apex exists, with nothing but the zone's own records.
		{"amt.1.2.3.10.in-addr.arpa.", dns.TypeA, dns.RcodeSuccess, "NS SOA RRSIG NSEC DNSKEY"},
	} {
		m := signedQuery(t, s, tc.name, tc.qtype)
		apex := tc.name[strings.Index(tc.name, "amt."):]
		if m.Rcode != tc.rcode || len(m.Answer) != 0 {
			t.Errorf("%s %s: %s with %d answers", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[m.Rcode], len(m.Answer))
		}
		if got := verifySection(t, m.Ns, apex, keys); !slices.Equal(got, []uint16{dns.TypeSOA, dns.TypeNSEC}) {
			t.Errorf("%s %s: authority types %v, want SOA and NSEC", tc.name, dns.TypeToString[tc.qtype], got)
		}
		if got := nsecTypes(t, m.Ns); got != tc.bitmap {
			t.Errorf("%s %s: NSEC bitmap %q, want %q", tc.name, dns.TypeToString[tc.qtype], got, tc.bitmap)
		}
	}

	// all_down nodata (the only relay of 192.0.2.0/24 is forced down): no relay types, and the
	// NSEC lasts no longer than the SOA, TTL 0.
	m = signedQuery(t, s, "amt.1.2.0.192.in-addr.arpa.", dns.TypeA)
	verifySection(t, m.Ns, "amt.1.2.0.192.in-addr.arpa.", keys)
	if got := nsecTypes(t, m.Ns); got != "NS SOA RRSIG NSEC DNSKEY" {
		t.Errorf("all_down nodata: NSEC bitmap %q", got)
	}
	for _, rr := range m.Ns {
		if ttl := rr.Header().Ttl; ttl != 0 {
			t.Errorf("all_down nodata: %s TTL %d, want 0", dns.TypeToString[rr.Header().Rrtype], ttl)
		}
	}
	// Without DO nothing is signed; the RFC 8777 name is not the plugin's zone and is never signed.
	q := question(apexS, dns.TypeA)
	q.SetEdns0(4096, false)
	if r := s.exchange(t, "tcp", q); len(r.msg.Answer) != 1 {
		t.Errorf("Without DO: %v", r.msg)
	}
	m = signedQuery(t, s, revS, dns.TypeAMTRELAY)
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == dns.TypeRRSIG {
			t.Errorf("The RFC 8777 answer at %s was signed", revS)
		}
	}
}

func TestDNSSECParseErrors(t *testing.T) {
	dir := t.TempDir()
	ksk, _ := writeKey(t, dir, "example.", 257, dns.ECDSAP256SHA256, 256)
	zsk, _ := writeKey(t, dir, "example.", 256, dns.ECDSAP256SHA256, 256)
	writeFile(t, filepath.Join(dir, "bad.keys"), "x. 3600 IN A 192.0.2.1\n")
	// A few bytes of $GENERATE would make thousands of keys.
	_, peer := writeKey(t, t.TempDir(), "example.", 257, dns.ED25519, 256)
	writeFile(t, filepath.Join(dir, "generate.keys"), peer.String()+"\n$GENERATE 0-65535 peer DNSKEY 257 3 15 "+
		strings.Repeat("A", 33)+"${0,5,d}AAAAA=\n")
	writeFile(t, filepath.Join(dir, "ttl.keys"), "; default\n$TTL 60\n"+peer.String()+"\n")
	writeFile(t, filepath.Join(dir, "many.keys"), peerKeysText(t, peerKeysMax+1))
	const relay = "relay r1 192.0.2.1\nsource 198.51.100.0/24 r1\n"
	for _, tc := range []struct {
		props string
		err   string
	}{
		{"dnssec", "dnssec needs at least one key file"},
		{"dnssec " + zsk, "SEP"},
		{"dnssec " + ksk + " validity", "validity needs a value"},
		{"dnssec " + ksk + " validity 1h", `validity "1h": want a duration from 72h0m0s to 720h0m0s`},
		{"dnssec " + ksk + " validity 9d", `validity "9d"`},
		{"dnssec " + ksk + " validity 96h " + zsk, "after the options: key files go first"},
		{"dnssec " + ksk + " cache", "cache needs a value"},
		{"dnssec " + ksk + " cache 0", `cache "0": want a number of RRsets from 1 to 10000000`},
		{"dnssec " + ksk + " cache many", `cache "many"`},
		{"dnssec " + ksk + " cache 10 validity 96h cache 20", "cache given twice"},
		{"dnssec " + filepath.Join(dir, "Kmissing.+013+00001"), "Kmissing.+013+00001"},
		{"dnssec_peer_keys bad.keys", "dnssec_peer_keys without dnssec"},
		{"dnssec " + ksk + "\ndnssec_peer_keys bad.keys", "A record where only DNSKEY records go"},
		{"dnssec " + ksk + "\ndnssec_peer_keys missing.keys", "missing.keys"},
		{"dnssec " + ksk + "\ndnssec_peer_keys bad.keys every 1s", `dnssec_peer_keys: unknown option "every"`},
		{"dnssec " + ksk + "\ndnssec_peer_keys generate.keys", `Testfile:5 - Error during parsing: dnssec_peer_keys: ` + filepath.Join(dir, "generate.keys") +
			`:2: "$GENERATE": directives are not allowed, the file holds DNSKEY records only`},
		{"dnssec " + ksk + "\ndnssec_peer_keys ttl.keys", `ttl.keys:2: "$TTL": directives are not allowed`},
		{"dnssec " + ksk + "\ndnssec_peer_keys many.keys", "many.keys: more than 64 distinct keys"},
		{"dnssec " + ksk + "\ndnssec " + ksk, "dnssec given twice"},
	} {
		_, err := setupIn(t, dir, "amtrelay {\n"+relay+tc.props+"\n}")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: error %v, want one with %q", tc.props, err, tc.err)
		}
	}
	a, err := setupIn(t, dir, "amtrelay {\n"+relay+"dnssec_peer_keys "+filepath.Join(dir, "none.keys")+" reload 2s\ndnssec "+ksk+" "+zsk+" validity 96h\n}")
	if err == nil {
		t.Fatalf("A missing peer keys file loaded: %+v", a.cfg.dnssec)
	}
	writeFile(t, filepath.Join(dir, "none.keys"), "; no peers yet\n")
	a, err = setupIn(t, dir, "amtrelay {\n"+relay+"dnssec_peer_keys none.keys reload 2s\ndnssec "+ksk+" "+zsk+" cache 1000 validity 96h\n}")
	if err != nil {
		t.Fatal(err)
	}
	if d := a.cfg.dnssec; len(d.keys) != 2 || d.validity != 96*time.Hour || d.cacheEntries != 1000 || d.peers.reload != 2*time.Second || d.peers.path != filepath.Join(dir, "none.keys") {
		t.Errorf("Parsed %+v", d)
	}
	// As many distinct keys as allowed, each twice: the duplicates do not count.
	writeFile(t, filepath.Join(dir, "full.keys"), peerKeysText(t, peerKeysMax))
	a, err = setupIn(t, dir, "amtrelay {\n"+relay+"dnssec "+ksk+"\ndnssec_peer_keys full.keys\n}")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.view.load().peers); n != peerKeysMax {
		t.Errorf("%d peer keys from a file of %d distinct keys", n, peerKeysMax)
	}
}

// CoreDNS's dnssec plugin over a block that signs its own answers would sign them again with the
// zone's key: the Corefile is refused.
func TestDNSSECPluginStackedRefused(t *testing.T) {
	dir := t.TempDir()
	ksk, _ := writeKey(t, dir, "in-addr.arpa.", 257, dns.ECDSAP256SHA256, 256)
	caddyMu.Lock()
	inst, err := caddy.Start(corefileInput(fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	dnssec {
		key file %s
	}
	amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		dnssec %s
		health_check off
	}
}
`, ksk, ksk)))
	caddyMu.Unlock()
	if err == nil {
		inst.ShutdownCallbacks()
		inst.Stop()
		t.Fatal("A Corefile with the dnssec plugin over amtrelay's dnssec started")
	}
	if !strings.Contains(err.Error(), "the dnssec plugin in this server block") {
		t.Errorf("Error %v", err)
	}
	if n := runningInstances(); n != 0 {
		t.Errorf("%d instances running after the refused start", n)
	}
}
