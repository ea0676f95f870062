package sign

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var now = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// rrsets returns one RRset of every type the plugin signs, owners in mixed case as a
// 0x20-randomizing resolver would ask.
func rrsets(s *Signer) map[string][]dns.RR {
	return map[string][]dns.RR{
		"A":    aSet(apexMixed, "192.0.2.1", "192.0.2.2", "192.0.2.3"),
		"AAAA": aaaaSet(apexMixed, "2001:db8::1", "2001:db8::2"),
		"AMTRELAY D=0": amtrelaySet(apexMixed,
			amtrelay(10, false, "192.0.2.1"), amtrelay(10, false, "2001:db8::1"), amtrelay(20, false, "relay.example.net.")),
		"AMTRELAY D=1": amtrelaySet(apexMixed,
			amtrelay(10, true, "192.0.2.1"), amtrelay(10, true, "2001:db8::1"), amtrelay(20, true, "Relay.EXAMPLE.net.")),
		"SOA": {&dns.SOA{Hdr: hdr(apexMixed, dns.TypeSOA), Ns: "NS1.example.net.", Mbox: "hostmaster." + apexMixed,
			Serial: 7, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}},
		"NS": {&dns.NS{Hdr: hdr(apexMixed, dns.TypeNS), Ns: "ns1.example.net."},
			&dns.NS{Hdr: hdr(apexMixed, dns.TypeNS), Ns: "NS2.Example.NET."}},
		"NSEC":   {NSEC(apexMixed, ttl, []uint16{dns.TypeA, dns.TypeNS, dns.TypeSOA, dns.TypeAAAA, dns.TypeDNSKEY, dns.TypeAMTRELAY})},
		"DNSKEY": DNSKEYSet(s.Keys(), apexMixed, 3600, nil),
	}
}

func TestSignVerify(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(testing.TB) *Key
	}{
		{"ECDSAP256SHA256", func(t testing.TB) *Key { return genKey(t, dns.ECDSAP256SHA256, 257) }},
		{"ED25519", func(t testing.TB) *Key { return genKey(t, dns.ED25519, 257) }},
		{"ECDSAP384SHA384", func(t testing.TB) *Key { return genKey(t, dns.ECDSAP384SHA384, 257) }},
		{"RSASHA256", rsaCSK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.key(t)
			s := mustSigner(t, k)
			inc, exp := s.Window(now)
			for name, rrset := range rrsets(s) {
				sigs, err := s.Sign(rrset, apexMixed, now)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(sigs) != 1 {
					t.Fatalf("%s: %d signatures, want 1", name, len(sigs))
				}
				sig := sigs[0]
				h := rrset[0].Header()
				want := dns.RRSIG{
					Hdr:         dns.RR_Header{Name: apexMixed, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: h.Ttl},
					TypeCovered: h.Rrtype, Algorithm: k.Algorithm(), Labels: 7, OrigTtl: h.Ttl,
					Expiration: uint32(exp.Unix()), Inception: uint32(inc.Unix()), KeyTag: k.Tag(),
					SignerName: apex, Signature: sig.Signature,
				}
				if !reflect.DeepEqual(*sig, want) {
					t.Errorf("%s:\n got %v\nwant %v", name, sig, &want)
				}
				// A validator finds the key by the signer name, in whatever case.
				verify(t, sigs, rrset, apex, s.Keys())
				verify(t, sigs, rrset, apexMixed, s.Keys())
				if !sig.ValidityPeriod(now) {
					t.Errorf("%s: not valid at %v", name, now)
				}
			}
		})
	}
}

// TestSignRFC3597SignedData rebuilds the signed data of an AMTRELAY RRset by hand from RFC 4034
// sections 3.1.8.1 and 6, independently of miekg/dns's canonicalization, and checks the ECDSA
// signature over it: owner lower-cased, RDATA (a type 3 relay name with capitals included) as
// is, records in RDATA order, which here differs from their lengths' order.
func TestSignRFC3597SignedData(t *testing.T) {
	k := genKey(t, dns.ECDSAP256SHA256, 257)
	s := mustSigner(t, k)
	rdatas := []string{
		amtrelay(20, true, "Relay.EXAMPLE.net."), // 14 83 ...: sorts last
		amtrelay(10, true, "192.0.2.1"),          // 0a 81 c0 00 02 01, 6 bytes
		amtrelay(5, true, "2001:db8::1"),         // 05 82 ..., 18 bytes: sorts first
	}
	rrset := amtrelaySet(apexMixed, rdatas...)
	sigs, err := s.Sign(rrset, apexMixed, now)
	if err != nil {
		t.Fatal(err)
	}
	sig := sigs[0]

	signed := func(rdatas []string) []byte {
		var b []byte
		b = binary.BigEndian.AppendUint16(b, dns.TypeAMTRELAY)
		b = append(b, sig.Algorithm, sig.Labels)
		b = binary.BigEndian.AppendUint32(b, sig.OrigTtl)
		b = binary.BigEndian.AppendUint32(b, sig.Expiration)
		b = binary.BigEndian.AppendUint32(b, sig.Inception)
		b = binary.BigEndian.AppendUint16(b, sig.KeyTag)
		b = appendWireName(b, apex)
		for _, rd := range []string{rdatas[2], rdatas[1], rdatas[0]} {
			raw, _ := hex.DecodeString(rd)
			b = appendWireName(b, apex) // the owner, lower case
			b = binary.BigEndian.AppendUint16(b, dns.TypeAMTRELAY)
			b = binary.BigEndian.AppendUint16(b, dns.ClassINET)
			b = binary.BigEndian.AppendUint32(b, ttl)
			b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
			b = append(b, raw...)
		}
		return b
	}
	check := func(data []byte) bool {
		pub := k.Private().Public().(*ecdsa.PublicKey)
		sb, err := base64.StdEncoding.DecodeString(sig.Signature)
		if err != nil || len(sb) != 64 {
			t.Fatalf("Signature %q: %v", sig.Signature, err)
		}
		h := sha256.Sum256(data)
		return ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sb[:32]), new(big.Int).SetBytes(sb[32:]))
	}
	if !check(signed(rdatas)) {
		t.Fatal("The signature does not cover the canonical RRset")
	}
	lowered := append([]string(nil), rdatas...)
	lowered[0] = amtrelay(20, true, "relay.example.net.")
	if check(signed(lowered)) {
		t.Fatal("The signature covers a lower-cased relay name: RFC 3597 RDATA must be signed as is")
	}
}

func appendWireName(b []byte, name string) []byte {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(strings.ToLower(name), buf, 0, nil, false)
	if err != nil {
		panic(err)
	}
	return append(b, buf[:n]...)
}

// TestAMTRELAYNativeAndRFC3597 shows both forms of a D=0 record sign the same bytes (one cache
// entry, a signature that verifies over either), and that a native D=1 record still does not
// pack (miekg/dns v1.1.73 drops the relay), which is why the plugin sends RFC 3597 records.
func TestAMTRELAYNativeAndRFC3597(t *testing.T) {
	s := mustSigner(t, genKey(t, dns.ECDSAP256SHA256, 257))
	generic := amtrelaySet(apex, amtrelay(10, false, "192.0.2.1"), amtrelay(20, false, "relay.example.net."))
	native := []dns.RR{
		&dns.AMTRELAY{Hdr: hdr(apex, dns.TypeAMTRELAY), Precedence: 10, GatewayType: 1, GatewayAddr: []byte{192, 0, 2, 1}},
		&dns.AMTRELAY{Hdr: hdr(apex, dns.TypeAMTRELAY), Precedence: 20, GatewayType: 3, GatewayHost: "relay.example.net."},
	}
	g, err := s.Sign(generic, apex, now)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Sign(native, apex, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.SignaturesMade() != 1 || s.CacheHits() != 1 || g[0].Signature != n[0].Signature {
		t.Errorf("Native and RFC 3597 D=0 sets: %d signatures, %d hits; want one signature, one hit", s.SignaturesMade(), s.CacheHits())
	}
	verify(t, g, native, apex, s.Keys())
	verify(t, n, generic, apex, s.Keys())

	d1 := &dns.AMTRELAY{Hdr: hdr(apex, dns.TypeAMTRELAY), Precedence: 10, GatewayType: 0x80 | 1, GatewayAddr: []byte{192, 0, 2, 1}}
	if _, err := dns.PackRR(d1, make([]byte, 512), 0, nil, false); err == nil && d1.Hdr.Rdlength != 6 {
		t.Logf("miekg/dns still packs a native D=1 AMTRELAY record to RDLENGTH %d, not 6: keep the RFC 3597 records", d1.Hdr.Rdlength)
	}
}

func TestRoles(t *testing.T) {
	csk := genKey(t, dns.ECDSAP256SHA256, 257)
	csk2 := genKey(t, dns.ECDSAP256SHA256, 257)
	ksk := genKey(t, dns.ECDSAP256SHA256, 257)
	zsk := genKey(t, dns.ECDSAP256SHA256, 256)
	zsk2 := genKey(t, dns.ECDSAP256SHA256, 256)
	edKSK := genKey(t, dns.ED25519, 257)
	edZSK := genKey(t, dns.ED25519, 256)

	a := aSet(apex, "192.0.2.1")
	for _, tc := range []struct {
		name          string
		keys          []*Key
		dnskeyBy, aBy []*Key
		err           string
	}{
		{"CSK", []*Key{csk}, []*Key{csk}, []*Key{csk}, ""},
		{"two CSKs", []*Key{csk, csk2}, []*Key{csk, csk2}, []*Key{csk, csk2}, ""},
		{"KSK+ZSK", []*Key{ksk, zsk}, []*Key{ksk}, []*Key{zsk}, ""},
		{"ZSK first", []*Key{zsk, ksk}, []*Key{ksk}, []*Key{zsk}, ""},
		{"KSK+two ZSKs", []*Key{ksk, zsk, zsk2}, []*Key{ksk}, []*Key{zsk, zsk2}, ""},
		{"two algorithms", []*Key{ksk, zsk, edKSK, edZSK}, []*Key{ksk, edKSK}, []*Key{zsk, edZSK}, ""},
		{"no keys", nil, nil, nil, "no keys"},
		{"ZSK only", []*Key{zsk}, nil, nil, "no key has the SEP flag"},
		{"ZSKs only", []*Key{zsk, zsk2}, nil, nil, "no key has the SEP flag"},
		{"ZSK of another algorithm", []*Key{ksk, edZSK}, nil, nil, "no ZSK of algorithm 13"},
		{"KSK of another algorithm missing", []*Key{ksk, zsk, edZSK}, nil, nil, "no KSK of algorithm 15"},
		{"same key twice", []*Key{csk, csk}, nil, nil, "given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSigner(tc.keys, 0, 0)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			keyset := DNSKEYSet(s.Keys(), apex, 3600, nil)
			for _, c := range []struct {
				rrset []dns.RR
				by    []*Key
			}{{keyset, tc.dnskeyBy}, {a, tc.aBy}} {
				sigs, err := s.Sign(c.rrset, apex, now)
				if err != nil {
					t.Fatal(err)
				}
				var got, want []uint16
				for _, sig := range sigs {
					got = append(got, sig.KeyTag)
				}
				for _, k := range c.by {
					want = append(want, k.Tag())
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s signed by tags %v, want %v", dns.TypeToString[c.rrset[0].Header().Rrtype], got, want)
				}
				verify(t, sigs, c.rrset, apex, tc.keys)
			}
		})
	}
}

func TestWindow(t *testing.T) {
	k := genKey(t, dns.ED25519, 257)
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		now      time.Time
		dayStart time.Time
	}{
		{day, day},
		{day.Add(time.Nanosecond), day},
		{day.Add(-time.Nanosecond), day.AddDate(0, 0, -1)},
		{day.Add(-time.Second), day.AddDate(0, 0, -1)},
		{day.Add(24*time.Hour - time.Second), day},
		{day.Add(24 * time.Hour), day.AddDate(0, 0, 1)},
		// The day is UTC's, whatever zone now is in: 01:30 in UTC+2 is 23:30 UTC the day before.
		{time.Date(2026, 3, 14, 1, 30, 0, 0, time.FixedZone("UTC+2", 7200)), day.AddDate(0, 0, -1)},
		{time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)},
	} {
		for _, validity := range []time.Duration{0, MinValidity, MaxValidity} {
			s, err := NewSigner([]*Key{k}, validity, 0)
			if err != nil {
				t.Fatal(err)
			}
			if validity == 0 {
				validity = DefaultValidity
			}
			inc, exp := s.Window(tc.now)
			if want := tc.dayStart.Add(-3 * time.Hour); !inc.Equal(want) {
				t.Errorf("Window(%v) inception %v, want %v", tc.now, inc, want)
			}
			if want := inc.Add(validity); !exp.Equal(want) {
				t.Errorf("Window(%v) expiration %v, want %v", tc.now, exp, want)
			}
			if left := exp.Sub(tc.now); left <= validity-27*time.Hour || left < 45*time.Hour {
				t.Errorf("Window(%v): only %v left", tc.now, left)
			}
			if ahead := tc.now.Sub(inc); ahead < 3*time.Hour {
				t.Errorf("Window(%v): inception only %v before", tc.now, ahead)
			}
		}
	}
	for _, v := range []time.Duration{-time.Hour, time.Hour, MinValidity - time.Second, MaxValidity + time.Second} {
		if _, err := NewSigner([]*Key{k}, v, 0); err == nil {
			t.Errorf("NewSigner accepts validity %v", v)
		}
	}
	if _, err := NewSigner([]*Key{k}, 0, -1); err == nil {
		t.Error("NewSigner accepts a negative cache size")
	}
}

func TestSignErrors(t *testing.T) {
	s := mustSigner(t, genKey(t, dns.ED25519, 257))
	other := "amt.13.100.51.198.in-addr.arpa."
	for _, tc := range []struct {
		name  string
		rrset []dns.RR
		apex  string
		err   string
	}{
		{"empty", nil, apex, "empty"},
		{"no apex", aSet(apex, "192.0.2.1"), "", "apex"},
		{"owners differ", append(aSet(apex, "192.0.2.1"), aSet(other, "192.0.2.2")...), apex, "not one RRset"},
		{"types differ", append(aSet(apex, "192.0.2.1"), aaaaSet(apex, "2001:db8::1")...), apex, "not one RRset"},
		{"TTLs differ", []dns.RR{&dns.A{Hdr: hdr(apex, dns.TypeA), A: []byte{192, 0, 2, 1}},
			&dns.A{Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl + 1}, A: []byte{192, 0, 2, 2}}}, apex, "TTLs"},
		{"outside apex", aSet(other, "192.0.2.1"), apex, "not in zone"},
		{"suffix but not below", aSet("xamt.12.100.51.198.in-addr.arpa.", "192.0.2.1"), apex, "not in zone"},
		{"escaped dot", aSet(`x\.amt.12.100.51.198.in-addr.arpa.`, "192.0.2.1"), apex, "not in zone"},
		{"not fully qualified", aSet("amt.12.100.51.198.in-addr.arpa", "192.0.2.1"), apex, "fully qualified"},
		{"wildcard", aSet("*."+apex, "192.0.2.1"), apex, "wildcard"},
		{"RRSIG", []dns.RR{&dns.RRSIG{Hdr: hdr(apex, dns.TypeRRSIG)}}, apex, "RRSIG"},
		{"bad RFC 3597 hex", amtrelaySet(apex, "0a01zz"), apex, ""},
		{"NS target not fully qualified", []dns.RR{&dns.NS{Hdr: hdr(apex, dns.TypeNS), Ns: "ns1.example.net"}}, apex, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sigs, err := s.Sign(tc.rrset, tc.apex, now)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Sign: %v, %v; want error %q", sigs, err, tc.err)
			}
		})
	}
	if s.SignaturesMade() != 0 || s.CacheMisses() != 0 || s.CacheLen() != 0 {
		t.Errorf("Failed signing counted: %d signatures, %d misses, %d entries", s.SignaturesMade(), s.CacheMisses(), s.CacheLen())
	}
	// Below the apex is fine: the signer is the apex.
	if _, err := s.Sign(aSet("x."+apexMixed, "192.0.2.1"), apex, now); err != nil {
		t.Errorf("Name below the apex: %v", err)
	}
}

// TestSignDoesNotModify guards against miekg/dns's PackRR, which writes the Rdlength of the RR it
// packs: the plugin may share records between goroutines.
func TestSignDoesNotModify(t *testing.T) {
	s := mustSigner(t, genKey(t, dns.ECDSAP256SHA256, 257))
	for name, rrset := range rrsets(s) {
		before := make([]dns.RR, len(rrset))
		for i, rr := range rrset {
			before[i] = dns.Copy(rr)
		}
		for range 2 { // a miss, then a hit
			if _, err := s.Sign(rrset, apexMixed, now); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(before, rrset) {
			t.Errorf("%s: Sign modified the RRset", name)
		}
	}
}
