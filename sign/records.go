package sign

import (
	"slices"

	"github.com/miekg/dns"
)

// DNSKEYSet returns the DNSKEY RRset of apex: keys, this network's, then the peers' (the public keys
// of other networks that answer for the same names, RFC 8901 model 2, so that a resolver that
// got this RRset from us validates their answers too), with owner apex (as given), class IN and TTL
// ttl. A peer that is one of keys (the same RDATA) is left out, and nil peers are skipped. The
// peers must be distinct: the caller deduplicates them once, when it loads them, so that an answer
// costs time linear in their number.
//
// RFC 4035 section 2.2 wants every RRset signed with every algorithm in the DNSKEY RRset, and
// this network signs only with its own: peers should use the algorithms of its keys.
func DNSKEYSet(keys []*Key, apex string, ttl uint32, peers []*dns.DNSKEY) []dns.RR {
	out := make([]dns.RR, 0, len(keys)+len(peers))
	add := func(k *dns.DNSKEY) {
		out = append(out, &dns.DNSKEY{
			Hdr:       dns.RR_Header{Name: apex, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: ttl},
			Flags:     k.Flags,
			Protocol:  k.Protocol,
			Algorithm: k.Algorithm,
			PublicKey: k.PublicKey,
		})
	}
	for _, k := range keys {
		add(&k.dnskey)
	}
	for _, p := range peers {
		if p != nil && !slices.ContainsFunc(keys, func(k *Key) bool {
			o := &k.dnskey
			return o.Flags == p.Flags && o.Protocol == p.Protocol && o.Algorithm == p.Algorithm && o.PublicKey == p.PublicKey
		}) {
			add(p)
		}
	}
	return out
}

// NSEC returns the NSEC record of a one-name zone: owner apex (as given), next domain apex itself
// (lower case), types sorted and deduplicated, NSEC and RRSIG always among them. With next = owner
// the record covers every name below the apex (NXDOMAIN) and lists what the apex has (NODATA).
//
// The next domain is lower-cased because RFC 6840 section 5.1 signs it as written: in the query's
// letter case it would need a signature per 0x20 spelling of the apex.
//
// The caller passes the types the apex answers, and must leave out the type a NODATA answer
// denies: a bitmap that lists the query type turns a NODATA into a bogus answer, and one that
// misses a type the apex has lets resolvers that use NSEC aggressively (RFC 8198) deny that type
// for the NSEC's TTL (TYPE260 is one: the apex answers AMTRELAY too).
func NSEC(apex string, ttl uint32, types []uint16) *dns.NSEC {
	bitmap := make([]uint16, 0, len(types)+2)
	bitmap = append(bitmap, types...)
	bitmap = append(bitmap, dns.TypeNSEC, dns.TypeRRSIG)
	slices.Sort(bitmap)
	bitmap = slices.Compact(bitmap)
	return &dns.NSEC{
		Hdr:        dns.RR_Header{Name: apex, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: ttl},
		NextDomain: canonicalFqdn(apex),
		TypeBitMap: bitmap,
	}
}

// DS returns the SHA-256 (digest type 2) DS record of key as the zone key of owner, whatever
// owner key has: the digest covers the owner name (in lower case), so each apex has its own DS.
// Owner is made fully qualified; the TTL is 0 and class IN. It returns nil for a key miekg/dns
// cannot pack.
func DS(key *dns.DNSKEY, owner string) *dns.DS {
	k := *key
	k.Hdr = dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET}
	return k.ToDS(dns.SHA256)
}
