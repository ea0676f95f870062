package sign

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/miekg/dns"
)

// benchMiss signs a 3-record A set whose TTL changes every time, so every call misses and signs
// (cache insertion and eviction included).
func benchMiss(b *testing.B, alg uint8) {
	s, err := NewSigner([]*Key{genKey(b, alg, 257)}, 0, 1024)
	if err != nil {
		b.Fatal(err)
	}
	rrset := aSet(apex, "192.0.2.1", "192.0.2.2", "192.0.2.3")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for _, rr := range rrset {
			rr.Header().Ttl = uint32(i)
		}
		if _, err := s.Sign(rrset, apex, now); err != nil {
			b.Fatal(err)
		}
	}
	if s.CacheHits() != 0 {
		b.Fatalf("%d cache hits", s.CacheHits())
	}
}

func BenchmarkSignMissP256(b *testing.B)    { benchMiss(b, dns.ECDSAP256SHA256) }
func BenchmarkSignMissEd25519(b *testing.B) { benchMiss(b, dns.ED25519) }

// BenchmarkSignHitRotatedA is the plugin's hot path: the A set in another rotation on every
// answer, owner in the question's letter case.
func BenchmarkSignHitRotatedA(b *testing.B) {
	s := mustSigner(b, genKey(b, dns.ECDSAP256SHA256, 257))
	rot := [][]dns.RR{
		aSet(apexMixed, "192.0.2.1", "192.0.2.2", "192.0.2.3"),
		aSet(apexMixed, "192.0.2.2", "192.0.2.3", "192.0.2.1"),
		aSet(apexMixed, "192.0.2.3", "192.0.2.1", "192.0.2.2"),
	}
	if _, err := s.Sign(rot[0], apexMixed, now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Sign(rot[i%3], apexMixed, now); err != nil {
			b.Fatal(err)
		}
	}
	if s.SignaturesMade() != 1 {
		b.Fatalf("%d signatures made", s.SignaturesMade())
	}
}

// BenchmarkSignHitParallel: the same with every core answering.
func BenchmarkSignHitParallel(b *testing.B) {
	s := mustSigner(b, genKey(b, dns.ECDSAP256SHA256, 257))
	if _, err := s.Sign(aSet(apex, "192.0.2.1", "192.0.2.2", "192.0.2.3"), apex, now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rrset := aSet(apex, "192.0.2.1", "192.0.2.2", "192.0.2.3")
		for pb.Next() {
			rrset[0], rrset[1], rrset[2] = rrset[1], rrset[2], rrset[0]
			if _, err := s.Sign(rrset, apex, now); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSignHitNegative: a NODATA answer's SOA and NSEC, asked in mixed case.
func BenchmarkSignHitNegative(b *testing.B) {
	s := mustSigner(b, genKey(b, dns.ECDSAP256SHA256, 257))
	soa := []dns.RR{&dns.SOA{Hdr: hdr(apexMixed, dns.TypeSOA), Ns: "ns1.example.net.", Mbox: "hostmaster." + apexMixed,
		Serial: 7, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: ttl}}
	nsec := []dns.RR{NSEC(apexMixed, ttl, []uint16{dns.TypeA, dns.TypeNS, dns.TypeSOA, dns.TypeAAAA, dns.TypeDNSKEY, dns.TypeAMTRELAY})}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(soa, apexMixed, now); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Sign(nsec, apexMixed, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheBytesPerEntry fills a cache with the signatures of distinct A sets, one per apex
// as the plugin's answers make them, and reports the live heap each cached RRset costs: what
// the signature cache's size means in memory.
func BenchmarkCacheBytesPerEntry(b *testing.B) {
	const entries = 20000
	key := genKey(b, dns.ED25519, 257)
	for b.Loop() {
		s, err := NewSigner([]*Key{key}, 0, entries)
		if err != nil {
			b.Fatal(err)
		}
		before := liveHeap()
		for i := range entries {
			owner := fmt.Sprintf("amt.%d.%d.18.198.in-addr.arpa.", i%256, i/256)
			if _, err := s.Sign(aSet(owner, "192.0.2.1", "192.0.2.2", "192.0.2.3"), owner, now); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(liveHeap()-before)/entries, "B/entry")
		runtime.KeepAlive(s)
	}
}

func liveHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
