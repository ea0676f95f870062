package sign

import (
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// counts reports the signer's counters as "signatures/hits/misses".
func counts(s *Signer) string {
	return fmt.Sprintf("%d/%d/%d", s.SignaturesMade(), s.CacheHits(), s.CacheMisses())
}

func TestCacheRotatedA(t *testing.T) {
	s := mustSigner(t, genKey(t, dns.ECDSAP256SHA256, 257))
	ips := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
	first, err := s.Sign(aSet(apex, ips...), apex, now)
	if err != nil {
		t.Fatal(err)
	}
	// Every rotation the plugin makes, the owner in the letter case of the question, later the
	// same day: one signature.
	for i, tc := range []struct {
		owner, apex string
		order       []int
		at          time.Time
	}{
		{apex, apex, []int{1, 2, 0}, now},
		{apex, apex, []int{2, 0, 1}, now},
		{apexMixed, apexMixed, []int{2, 1, 0}, now},
		{strings.ToUpper(apex), apex, []int{0, 1, 2}, now.Add(time.Hour)},
		{apex, apex, []int{0, 1, 2, 1}, now}, // a duplicate record is no other RRset
	} {
		var rot []string
		for _, j := range tc.order {
			rot = append(rot, ips[j])
		}
		rrset := aSet(tc.owner, rot...)
		sigs, err := s.Sign(rrset, tc.apex, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if sigs[0].Signature != first[0].Signature {
			t.Errorf("Rotation %d: signed again", i)
		}
		if sigs[0] == first[0] || sigs[0].Hdr.Name != tc.owner {
			t.Errorf("Rotation %d: RRSIG %p owner %q; want a new struct with owner %q", i, sigs[0], sigs[0].Hdr.Name, tc.owner)
		}
		verify(t, sigs, rrset, apex, s.Keys())
	}
	if got := counts(s); got != "1/5/1" {
		t.Errorf("Signatures/hits/misses %s, want 1/5/1", got)
	}

	// What the caller does to an RRSIG does not reach the next answer.
	first[0].Hdr.Ttl = 0
	again, _ := s.Sign(aSet(apex, ips...), apex, now)
	if again[0].Hdr.Ttl != ttl {
		t.Errorf("A cached RRSIG has TTL %d after the caller changed its copy", again[0].Hdr.Ttl)
	}

	// Anything in the signed data makes another entry.
	made := s.SignaturesMade()
	longer := aSet(apex, ips...)
	for _, rr := range longer {
		rr.Header().Ttl = ttl + 1
	}
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		rrset []dns.RR
		apex  string
		at    time.Time
	}{
		{"TTL", longer, apex, now},
		{"set", aSet(apex, ips[:2]...), apex, now},
		{"next UTC day", aSet(apex, ips...), apex, now.Add(24 * time.Hour)},
		{"the second before midnight", aSet(apex, ips...), apex, day.Add(-time.Second)},
		{"another signer", aSet(apex, ips...), "12.100.51.198.in-addr.arpa.", now},
		{"another owner", aSet("x."+apex, ips...), apex, now},
	} {
		sigs, err := s.Sign(tc.rrset, tc.apex, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if s.SignaturesMade() != made+1 {
			t.Errorf("%s: %d signatures made, want %d", tc.name, s.SignaturesMade(), made+1)
		}
		made = s.SignaturesMade()
		verify(t, sigs, tc.rrset, tc.apex, s.Keys())
	}
}

// TestCacheCase: the cache key lower-cases what signing lower-cases (owner, SOA names), and
// nothing else (RFC 3597 RDATA). A hit's signature verifies over the RRset of the hit.
func TestCacheCase(t *testing.T) {
	s := mustSigner(t, genKey(t, dns.ECDSAP256SHA256, 257))
	soa := func(owner, ns string) []dns.RR {
		return []dns.RR{&dns.SOA{Hdr: hdr(owner, dns.TypeSOA), Ns: ns, Mbox: "hostmaster." + owner,
			Serial: 7, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}}
	}
	for _, tc := range []struct {
		name string
		a, b []dns.RR
		hit  bool
	}{
		{"SOA", soa(apex, "ns1.example.net."), soa(apexMixed, "NS1.Example.NET."), true},
		{"NSEC", []dns.RR{NSEC(apex, ttl, []uint16{dns.TypeA})}, []dns.RR{NSEC(apexMixed, ttl, []uint16{dns.TypeA})}, true},
		{"RFC 3597 hex digits", amtrelaySet(apex, "0a01c0000201"), amtrelaySet(apexMixed, "0A01C0000201"), true},
		{"AMTRELAY relay name", amtrelaySet(apex, amtrelay(10, false, "relay.example.net.")),
			amtrelaySet(apex, amtrelay(10, false, "Relay.example.net.")), false},
		{"NSEC next domain", []dns.RR{&dns.NSEC{Hdr: hdr(apex, dns.TypeNSEC), NextDomain: apex, TypeBitMap: []uint16{dns.TypeA}}},
			[]dns.RR{&dns.NSEC{Hdr: hdr(apex, dns.TypeNSEC), NextDomain: apexMixed, TypeBitMap: []uint16{dns.TypeA}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.CacheHits()
			sa, err := s.Sign(tc.a, apex, now)
			if err != nil {
				t.Fatal(err)
			}
			sb, err := s.Sign(tc.b, apexMixed, now)
			if err != nil {
				t.Fatal(err)
			}
			if hit := s.CacheHits() > before; hit != tc.hit {
				t.Errorf("Cache hit %v, want %v", hit, tc.hit)
			}
			verify(t, sa, tc.a, apex, s.Keys())
			verify(t, sb, tc.b, apex, s.Keys())
		})
	}
}

func TestCacheEviction(t *testing.T) {
	s, err := NewSigner([]*Key{genKey(t, dns.ED25519, 257)}, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	sets := map[string][]dns.RR{
		"A": aSet(apex, "192.0.2.1"),
		"B": aSet(apex, "192.0.2.2"),
		"C": aSet(apex, "192.0.2.3"),
	}
	made := uint64(0)
	for i, step := range []struct {
		set    string
		signed bool
	}{
		{"A", true}, {"B", true},
		{"A", false},              // A has had a second chance since
		{"C", true},               // so B goes
		{"A", false}, {"B", true}, // B goes back in, C is evicted
		{"C", true},
	} {
		if _, err := s.Sign(sets[step.set], apex, now); err != nil {
			t.Fatal(err)
		}
		if signed := s.SignaturesMade() > made; signed != step.signed {
			t.Errorf("Step %d (%s): signed %v, want %v", i, step.set, signed, step.signed)
		}
		made = s.SignaturesMade()
		if s.CacheLen() > 2 {
			t.Fatalf("Cache holds %d entries, limit 2", s.CacheLen())
		}
	}
}

// TestConcurrentSign shares RRsets between goroutines, as a plugin sharing records would, with a
// cache small enough to evict all the time, two validity windows and two roles of keys.
func TestConcurrentSign(t *testing.T) {
	ksk := genKey(t, dns.ECDSAP256SHA256, 257)
	zsk := genKey(t, dns.ECDSAP256SHA256, 256)
	s, err := NewSigner([]*Key{ksk, zsk}, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	shared := [][]dns.RR{
		aSet(apex, "192.0.2.1", "192.0.2.2", "192.0.2.3"),
		aaaaSet(apexMixed, "2001:db8::1", "2001:db8::2"),
		amtrelaySet(apex, amtrelay(10, true, "192.0.2.1"), amtrelay(20, true, "Relay.example.net.")),
		DNSKEYSet(s.Keys(), apex, 3600, nil),
		{NSEC(apexMixed, ttl, []uint16{dns.TypeA, dns.TypeAAAA})},
	}
	const workers, rounds = 8, 150
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range rounds {
				set := shared[rng.IntN(len(shared))]
				rot := append([]dns.RR(nil), set...)
				rng.Shuffle(len(rot), func(a, b int) { rot[a], rot[b] = rot[b], rot[a] })
				at := now.Add(time.Duration(rng.IntN(2)) * 24 * time.Hour)
				sigs, err := s.Sign(rot, apex, at)
				if err != nil {
					errs <- err
					return
				}
				sigs[0].Hdr.Ttl = 1 // callers (the cache plugin) change their RRSIGs
				if i%25 == 0 {
					for _, sig := range sigs {
						k := zsk
						if sig.KeyTag == ksk.Tag() {
							k = ksk
						}
						pub := k.DNSKEY()
						pub.Hdr.Name = apex
						if err := sig.Verify(pub, rot); err != nil {
							errs <- fmt.Errorf("%s: %v", dns.TypeToString[sig.TypeCovered], err)
							return
						}
					}
				}
				_ = s.CacheLen() + int(s.CacheHits())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if calls := s.CacheHits() + s.CacheMisses(); calls != workers*rounds {
		t.Errorf("%d hits + misses, want %d calls", calls, workers*rounds)
	}
	if s.SignaturesMade() != s.CacheMisses() {
		t.Errorf("%d signatures for %d misses: one signing key per RRset", s.SignaturesMade(), s.CacheMisses())
	}
}

// TestCacheCanonicalNames goes through every type whose RDATA names miekg/dns lower-cases when
// signing: the RRset with capitals and without must share one signature, and that signature must
// verify over both, which holds only if signing lower-cases the same fields the key does.
// Strings that are not names (HINFO, NAPTR flags) must keep their case apart.
func TestCacheCanonicalNames(t *testing.T) {
	s := mustSigner(t, genKey(t, dns.ED25519, 257))
	const sig = "SIG A 13 2 3600 20260101000000 20250101000000 12345 "
	const b64 = " AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
	for _, tc := range []struct {
		upper, lower string
		hit          bool
	}{
		{"NS NS1.Example.NET.", "", true},
		{"MD Mail.Example.NET.", "", true},
		{"MF Mail.Example.NET.", "", true},
		{"CNAME Target.Example.NET.", "", true},
		{"SOA NS1.Example.NET. Hostmaster.Example.NET. 1 2 3 4 5", "", true},
		{"MB Mail.Example.NET.", "", true},
		{"MG Mail.Example.NET.", "", true},
		{"MR Mail.Example.NET.", "", true},
		{"PTR Host.Example.NET.", "", true},
		{"MINFO RMail.Example.NET. EMail.Example.NET.", "", true},
		{"MX 10 Mail.Example.NET.", "", true},
		{"RP Mbox.Example.NET. Txt.Example.NET.", "", true},
		{"AFSDB 1 Db.Example.NET.", "", true},
		{"RT 10 Host.Example.NET.", "", true},
		{sig + "Example.NET." + b64, sig + "example.net." + b64, true},
		{"PX 10 Map822.Example.NET. MapX400.Example.NET.", "", true},
		{`NAPTR 100 10 "U" "E2U+sip" "" Replace.Example.NET.`, `NAPTR 100 10 "U" "E2U+sip" "" replace.example.net.`, true},
		{"KX 10 Kx.Example.NET.", "", true},
		{"SRV 0 5 5060 Sip.Example.NET.", "", true},
		{"DNAME Target.Example.NET.", "", true},
		{`HINFO "PC" "Linux"`, "", false},
		{`NAPTR 100 20 "U" "E2U+sip" "" replace.example.net.`, `NAPTR 100 20 "u" "e2u+sip" "" replace.example.net.`, false},
		{`TXT "Mail.Example.NET."`, "", false},
	} {
		lowerText := tc.lower
		if lowerText == "" {
			lowerText = strings.ToLower(tc.upper)
		}
		parse := func(text string) []dns.RR {
			rr, err := dns.NewRR("x." + apex + " 30 IN " + text)
			if err != nil {
				t.Fatalf("%s: %v", text, err)
			}
			return []dns.RR{rr}
		}
		upper, lower := parse(tc.upper), parse(lowerText)
		before := s.CacheHits()
		su, err := s.Sign(upper, apex, now)
		if err != nil {
			t.Fatalf("%s: %v", tc.upper, err)
		}
		sl, err := s.Sign(lower, apex, now)
		if err != nil {
			t.Fatalf("%s: %v", lowerText, err)
		}
		if hit := s.CacheHits() > before; hit != tc.hit {
			t.Errorf("%s: cache hit %v, want %v", tc.upper, hit, tc.hit)
		}
		verify(t, su, upper, apex, s.Keys())
		verify(t, sl, lower, apex, s.Keys())
		if tc.hit {
			verify(t, su, lower, apex, s.Keys())
		}
	}
}

// TestFastRdata holds the shortcut for A, AAAA and RFC 3597 RDATA to what miekg/dns packs.
func TestFastRdata(t *testing.T) {
	sc := getScratch()
	defer putScratch(sc)
	mapped := &dns.A{Hdr: hdr(apex, dns.TypeA), A: net.ParseIP("192.0.2.9")} // 16 bytes, v4-mapped
	for _, rrset := range [][]dns.RR{
		aSet(apex, "192.0.2.1", "192.0.2.2"),
		{mapped},
		aaaaSet(apex, "2001:db8::1", "::ffff:192.0.2.1"),
		amtrelaySet(apex, "0A81C0000201", amtrelay(20, true, "Relay.Example.NET."), "0000"),
	} {
		fast, err := sc.rdata(rrset)
		if err != nil {
			t.Fatal(err)
		}
		var a [][]byte
		for _, s := range fast {
			a = append(a, append([]byte(nil), sc.wire[s.start:s.end]...))
		}
		slow, err := sc.packed(rrset)
		if err != nil {
			t.Fatal(err)
		}
		var b [][]byte
		for _, s := range slow {
			b = append(b, sc.wire[s.start:s.end])
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%v: fast RDATA %x, packed %x", rrset, a, b)
		}
	}
	for _, rrset := range [][]dns.RR{
		{&dns.A{Hdr: hdr(apex, dns.TypeA), A: net.ParseIP("2001:db8::1")}},
		{&dns.A{Hdr: hdr(apex, dns.TypeA)}},
		{&dns.AAAA{Hdr: hdr(apex, dns.TypeAAAA), AAAA: net.IP{192, 0, 2, 1}}},
		amtrelaySet(apex, "0a0"),
		amtrelaySet(apex, "0g"),
	} {
		if _, ok := fastRdata(rrset, nil); ok {
			t.Errorf("%v: taken by the shortcut", rrset)
		}
	}
}

func TestCacheShards(t *testing.T) {
	for _, tc := range []struct{ max, shards int }{
		{1, 1}, {2, 1}, {511, 1}, {512, 2}, {1000, 2}, {16384, 64}, {16383, 32}, {DefaultCacheEntries, 64}, {1 << 20, 64},
	} {
		c := newCache(tc.max)
		sum := 0
		for _, s := range c.shards {
			sum += s.max
		}
		if len(c.shards) != tc.shards || sum != tc.max {
			t.Errorf("Cache of %d: %d shards holding %d, want %d shards", tc.max, len(c.shards), sum, tc.shards)
		}
	}
	// Filled far beyond its size, a sharded cache stays within it.
	c := newCache(1000)
	for i := range 5000 {
		key := []byte(fmt.Sprint(i))
		c.put(key, nil)
		if i%3 == 0 {
			c.get(key)
		}
	}
	if n := c.len(); n != 1000 {
		t.Errorf("Cache of 1000 holds %d", n)
	}
}
