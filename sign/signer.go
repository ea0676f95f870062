// Package sign signs the answers of the amtrelay plugin online, for the one-name zones
// amt.<rev(S)> it serves from many networks at once (an anycast "AMT DNS").
//
// Every apex is signed with the same keys: a key pair of this network, served as the DNSKEY RRset
// of every apex (owner rewritten), every RRSIG with the apex as signer name. Each apex is its own
// zone with its own DS in S's reverse zone (amtrelay-ds writes them; the owner name is hashed into
// the DS, so they differ per apex). Negative answers use the apex's one-name NSEC chain (NSEC).
// Other networks answering for the same names add their public keys to the DNSKEY RRset (RFC 8901
// multi-signer, model 2; DNSKEYSet).
//
// Answers change with relay health, so they cannot be signed ahead of time. A signature costs
// more than answering a query, so signatures are cached: validity windows are fixed per UTC day
// (Window) and the cache key is the RRset in canonical form, so the same RRset in any order, with
// any letter case in its names, signed on the same day, gets the same signatures.
package sign

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

const (
	// DefaultValidity is the signature validity NewSigner uses when given 0.
	DefaultValidity = 8 * 24 * time.Hour
	// MinValidity and MaxValidity bound it; see Window.
	MinValidity = 3 * 24 * time.Hour
	MaxValidity = 30 * 24 * time.Hour
	// InceptionSlack is how long before the start of the UTC day signatures become valid.
	InceptionSlack = 3 * time.Hour
	// DefaultCacheEntries is the cache size NewSigner uses when given 0: the answers of some 20,000
	// sources (A, AAAA, and SOA and NSEC for negative answers), about 27 MB when full
	// (BenchmarkCacheBytesPerEntry: 418 bytes per A set of 3).
	DefaultCacheEntries = 1 << 16
)

// Signer signs RRsets with a fixed set of keys and caches the signatures. It is safe for
// concurrent use.
type Signer struct {
	keys       []*Key
	ksks, zsks []*Key
	validity   time.Duration
	cache      *cache

	signatures atomic.Uint64
	hits       atomic.Uint64
	misses     atomic.Uint64
}

// NewSigner returns a Signer for keys (roles as Roles assigns them). validity is how long after
// its inception a signature expires: 0 means DefaultValidity, otherwise it must lie within
// [MinValidity, MaxValidity]. cacheEntries bounds the signature cache, counted in RRsets (each
// entry holds the signatures of every key that signs the RRset): 0 means DefaultCacheEntries.
func NewSigner(keys []*Key, validity time.Duration, cacheEntries int) (*Signer, error) {
	ksks, zsks, err := Roles(keys)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.priv == nil {
			return nil, fmt.Errorf("%s: no private key", k.file)
		}
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < MinValidity || validity > MaxValidity {
		return nil, fmt.Errorf("signature validity %v: give a duration from %v to %v", validity, MinValidity, MaxValidity)
	}
	if cacheEntries == 0 {
		cacheEntries = DefaultCacheEntries
	}
	if cacheEntries < 0 {
		return nil, fmt.Errorf("signature cache size %d is negative", cacheEntries)
	}
	return &Signer{
		keys:     append([]*Key(nil), keys...),
		ksks:     ksks,
		zsks:     zsks,
		validity: validity,
		cache:    newCache(cacheEntries),
	}, nil
}

// Keys returns the signer's keys, in the order given.
func (s *Signer) Keys() []*Key { return append([]*Key(nil), s.keys...) }

// Window returns the validity period of signatures made at now: from InceptionSlack before the
// start of now's UTC day until the validity after that.
//
// The window moves once a day, not with every signature, so that a signature stays the same all
// day and can be cached here and by resolvers. The 3 hours of slack let validators whose clocks are
// behind accept signatures made just after midnight. At any moment now lies 3 to 27 hours after the
// inception, so a signature has more than validity - 27 h left: with MinValidity that is still 45
// hours, far beyond any TTL the plugin uses (resolvers keep an RRset no longer than its
// signatures are valid, RFC 4035 section 5.3.3) and beyond any plausible clock error; with the
// default, more than 6 days. MaxValidity bounds how long a captured answer that named a relay
// since withdrawn can be replayed.
func (s *Signer) Window(now time.Time) (inception, expiration time.Time) {
	inception = dayStart(now).Add(-InceptionSlack)
	return inception, inception.Add(s.validity)
}

func dayStart(t time.Time) time.Time {
	u := t.Unix()
	d := u % 86400
	if d < 0 {
		d += 86400
	}
	return time.Unix(u-d, 0).UTC()
}

// Sign returns the RRSIGs of rrset for the zone apex, one per signing key: the KSKs (or CSKs)
// for a DNSKEY RRset, the ZSKs (or CSKs) for any other.
//
// rrset must be one RRset (owner names equal but for letter case, one type and class, one TTL)
// at or below apex, not of type RRSIG, with a non-wildcard, fully qualified owner. Each RRSIG has
// the owner name of rrset[0] as given (letter case kept, as the answer needs it), the RRset's TTL
// as TTL and original TTL, labels counted from the owner, the signer name apex in lower case, and
// the validity Window(now). RFC 3597 records (*dns.RFC3597) are signed over their RDATA bytes as
// given, never lower-cased: type 260 (AMTRELAY) is not among the types whose names RFC 4034 lets
// validators lower-case.
//
// The RRSIGs are new structs on every call, even from the cache: plugins above this one (cache)
// rewrite TTLs in place. Their Signature strings are shared, and strings do not change.
func (s *Signer) Sign(rrset []dns.RR, apex string, now time.Time) ([]*dns.RRSIG, error) {
	if apex == "" {
		return nil, errors.New("no zone apex")
	}
	incT, expT := s.Window(now)
	inc, exp := uint32(incT.Unix()), uint32(expT.Unix())

	sc := getScratch()
	err := sc.buildKey(rrset, apex, inc)
	if err != nil {
		putScratch(sc)
		return nil, err
	}
	sigs, ok := s.cache.get(sc.key)
	if ok {
		putScratch(sc)
		s.hits.Add(1)
		return instances(sigs, rrset[0].Header()), nil
	}
	keys := s.zsks
	if rrset[0].Header().Rrtype == dns.TypeDNSKEY {
		keys = s.ksks
	}
	signer := canonicalFqdn(apex)
	ttl := rrset[0].Header().Ttl
	made := make([]dns.RRSIG, len(keys))
	for i, k := range keys {
		sig := &made[i]
		sig.Algorithm = k.dnskey.Algorithm
		sig.KeyTag = k.tag
		sig.SignerName = signer
		sig.Inception = inc
		sig.Expiration = exp
		sig.OrigTtl = ttl
		if err := sig.Sign(k.priv, rrset); err != nil {
			putScratch(sc)
			return nil, fmt.Errorf("signing with %s: %w", k.file, err)
		}
		s.signatures.Add(1)
	}
	s.misses.Add(1)
	// Another goroutine may have signed the same RRset meanwhile: both results are valid, and
	// the first stored is the one everybody gets from now on.
	made = s.cache.put(sc.key, made)
	putScratch(sc)
	return instances(made, rrset[0].Header()), nil
}

// instances copies the cached RRSIGs for one answer, owner and TTL from its RRset.
func instances(sigs []dns.RRSIG, h *dns.RR_Header) []*dns.RRSIG {
	vals := make([]dns.RRSIG, len(sigs))
	out := make([]*dns.RRSIG, len(sigs))
	for i := range sigs {
		vals[i] = sigs[i]
		vals[i].Hdr = dns.RR_Header{Name: h.Name, Rrtype: dns.TypeRRSIG, Class: h.Class, Ttl: h.Ttl}
		out[i] = &vals[i]
	}
	return out
}

// SignaturesMade counts the signatures computed (cache misses times signing keys).
func (s *Signer) SignaturesMade() uint64 { return s.signatures.Load() }

// CacheHits counts Sign calls answered from the cache.
func (s *Signer) CacheHits() uint64 { return s.hits.Load() }

// CacheMisses counts Sign calls that had to sign, failed ones excluded.
func (s *Signer) CacheMisses() uint64 { return s.misses.Load() }

// CacheLen is the number of RRsets whose signatures are cached.
func (s *Signer) CacheLen() int { return s.cache.len() }
