package sign

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/miekg/dns"
)

// A cache key must never let two RRsets whose signed data differ share a signature. The signed
// data is what miekg/dns's RRSIG.Sign makes of the RRset, so the key is built from the same
// transformation: owner and the RDATA names canonicalize picks lower-cased the way
// dns.CanonicalName does it, on the presentation form, TTL replaced by the RRSIG's original TTL,
// RDATA sorted and duplicates dropped. Everything else in the RDATA, the names inside an RFC 3597
// record included, is taken as packed. Two RRsets with the same key therefore have the same signed
// data; the converse need not hold (a name spelt "\097" and "a"), which costs a miss, never a bad
// signature.
//
// Layout: inception(4) TTL(4) type(2) class(2) len(2) signer, len(2) owner, then per distinct
// RDATA in canonical order len(2) RDATA.

type span struct{ start, end int }

// scratch holds the buffers of one key computation; pooled, so that a cache hit allocates only
// what Sign returns.
type scratch struct {
	msg   dns.Msg
	wire  []byte
	key   []byte
	spans []span
	rrs   []dns.RR
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{wire: make([]byte, 2048), key: make([]byte, 0, 256)}
}}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(sc *scratch) {
	// Keep no caller records alive in the pool.
	clear(sc.rrs)
	sc.rrs = sc.rrs[:0]
	sc.msg.Answer = nil
	if cap(sc.wire) > 64<<10 || cap(sc.key) > 64<<10 {
		return
	}
	scratchPool.Put(sc)
}

var (
	errEmpty    = errors.New("empty RRset")
	errMixed    = errors.New("not one RRset: owner, type or class differ")
	errTTLs     = errors.New("the records of the RRset have different TTLs")
	errRRSIG    = errors.New("RRSIG RRsets are not signed")
	errWildcard = errors.New("wildcard owner names are not supported")
)

// buildKey checks that rrset is one RRset inside apex and leaves its cache key in sc.key.
func (sc *scratch) buildKey(rrset []dns.RR, apex string, inception uint32) error {
	if len(rrset) == 0 {
		return errEmpty
	}
	h0 := rrset[0].Header()
	if h0.Rrtype == dns.TypeRRSIG {
		return errRRSIG
	}
	if len(h0.Name) > 0 && h0.Name[0] == '*' {
		// miekg/dns's RRSIG.Sign takes any owner starting with "*" for a wildcard.
		return errWildcard
	}
	if !dns.IsFqdn(h0.Name) {
		return fmt.Errorf("owner %q is not fully qualified", h0.Name)
	}
	if !inZoneFold(h0.Name, apex) {
		return fmt.Errorf("owner %q is not in zone %q", h0.Name, apex)
	}
	for _, rr := range rrset[1:] {
		h := rr.Header()
		if h.Rrtype != h0.Rrtype || h.Class != h0.Class || h.Name != h0.Name && !equalFold(h.Name, h0.Name) {
			return errMixed
		}
		if h.Ttl != h0.Ttl {
			return errTTLs
		}
	}

	k := sc.key[:0]
	k = binary.BigEndian.AppendUint32(k, inception)
	k = binary.BigEndian.AppendUint32(k, h0.Ttl)
	k = binary.BigEndian.AppendUint16(k, h0.Rrtype)
	k = binary.BigEndian.AppendUint16(k, h0.Class)
	k = appendLowerFqdn(k, apex)
	k = appendLowerFqdn(k, h0.Name)

	spans, err := sc.rdata(rrset)
	if err != nil {
		return err
	}
	wire := sc.wire
	slices.SortFunc(spans, func(a, b span) int { return bytes.Compare(wire[a.start:a.end], wire[b.start:b.end]) })
	for i, s := range spans {
		rd := wire[s.start:s.end]
		if i > 0 && bytes.Equal(rd, wire[spans[i-1].start:spans[i-1].end]) {
			continue
		}
		k = binary.BigEndian.AppendUint16(k, uint16(len(rd)))
		k = append(k, rd...)
	}
	sc.key = k
	return nil
}

// rdata writes the RDATA of each record of rrset in wire form to sc.wire, as miekg/dns packs it,
// and returns where each one is.
func (sc *scratch) rdata(rrset []dns.RR) ([]span, error) {
	spans := sc.spans[:0]
	if wire, ok := fastRdata(rrset, sc.wire[:0]); ok {
		off := 0
		for _, rr := range rrset {
			n := 4
			switch x := rr.(type) {
			case *dns.AAAA:
				n = 16
			case *dns.RFC3597:
				n = len(x.Rdata) / 2
			}
			spans = append(spans, span{off, off + n})
			off += n
		}
		sc.wire, sc.spans = wire, spans
		return spans, nil
	}
	return sc.packed(rrset)
}

// packed is rdata for any RRset: packed by miekg/dns, RDATA names lower-cased as in signing.
func (sc *scratch) packed(rrset []dns.RR) ([]span, error) {
	spans := sc.spans[:0]
	pack := sc.rrs[:0]
	for _, rr := range rrset {
		pack = append(pack, canonicalize(rr))
	}
	sc.rrs = pack
	// A whole message instead of dns.PackRR per record, because PackRR writes the record's
	// Rdlength: a data race on records the caller may share between goroutines.
	sc.msg.Compress = false
	sc.msg.Answer = pack
	wire, err := sc.msg.PackBuffer(sc.wire[:cap(sc.wire)])
	sc.msg.Answer = nil
	if err != nil {
		return nil, err
	}
	sc.wire = wire
	off := 12 // the message header
	for range pack {
		off = skipName(wire, off)
		if off < 0 || off+10 > len(wire) {
			return nil, errors.New("cannot read back the packed RRset")
		}
		n := int(binary.BigEndian.Uint16(wire[off+8:]))
		start := off + 10
		off = start + n
		if off > len(wire) {
			return nil, errors.New("cannot read back the packed RRset")
		}
		spans = append(spans, span{start, off})
	}
	sc.spans = spans
	return spans, nil
}

// fastRdata appends the RDATA of the answers the plugin signs most, A, AAAA and RFC 3597 sets,
// to wire without packing the owner name each time (a quarter of a cache hit's cost). It takes
// only records whose packing it knows to be exactly this (packDataA, packDataAAAA and
// packStringHex in miekg/dns v1.1.73) and leaves the rest (ok false) to the packer.
func fastRdata(rrset []dns.RR, wire []byte) (_ []byte, ok bool) {
	for _, rr := range rrset {
		switch x := rr.(type) {
		case *dns.A:
			if len(x.A) != 4 && (len(x.A) != 16 || x.A.To4() == nil) {
				return wire, false
			}
			wire = append(wire, x.A.To4()...)
		case *dns.AAAA:
			if len(x.AAAA) != 16 {
				return wire, false
			}
			wire = append(wire, x.AAAA...)
		case *dns.RFC3597:
			n := len(wire)
			var ok bool
			if wire, ok = appendHex(wire, x.Rdata); !ok || len(wire)-n > 0xFFFF {
				return wire[:n], false
			}
		default:
			return wire, false
		}
	}
	return wire, true
}

// appendHex decodes hex digits of either case, as hex.DecodeString does, without converting s to
// a byte slice first.
func appendHex(b []byte, s string) ([]byte, bool) {
	if len(s)%2 != 0 {
		return b, false
	}
	for i := 0; i < len(s); i += 2 {
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return b, false
		}
		b = append(b, hi<<4|lo)
	}
	return b, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// skipName returns the offset after the uncompressed name at off, or -1.
func skipName(wire []byte, off int) int {
	for off < len(wire) {
		n := int(wire[off])
		if n == 0 {
			return off + 1
		}
		if n&0xC0 != 0 {
			return -1
		}
		off += 1 + n
	}
	return -1
}

// canonicalize returns rr with the RDATA names lower-cased exactly as miekg/dns does before
// signing (rawSignatureData in dnssec.go, v1.1.73: RFC 4034 section 6.2's list as corrected by
// RFC 6840 section 5.1, so no HINFO, NSEC or RRSIG), or rr itself when nothing would change: a
// copy only for names with upper case letters, which in answers to 0x20-randomizing resolvers is
// the SOA's. Like miekg/dns it goes by the Go type, so an *dns.RFC3597 is opaque whatever its
// type. The key may lower-case nothing that signing does not.
func canonicalize(rr dns.RR) dns.RR {
	switch x := rr.(type) {
	case *dns.NS:
		if hasUpper(x.Ns) {
			c := *x
			c.Ns = dns.CanonicalName(c.Ns)
			return &c
		}
	case *dns.MD:
		if hasUpper(x.Md) {
			c := *x
			c.Md = dns.CanonicalName(c.Md)
			return &c
		}
	case *dns.MF:
		if hasUpper(x.Mf) {
			c := *x
			c.Mf = dns.CanonicalName(c.Mf)
			return &c
		}
	case *dns.CNAME:
		if hasUpper(x.Target) {
			c := *x
			c.Target = dns.CanonicalName(c.Target)
			return &c
		}
	case *dns.SOA:
		if hasUpper(x.Ns) || hasUpper(x.Mbox) {
			c := *x
			c.Ns = dns.CanonicalName(c.Ns)
			c.Mbox = dns.CanonicalName(c.Mbox)
			return &c
		}
	case *dns.MB:
		if hasUpper(x.Mb) {
			c := *x
			c.Mb = dns.CanonicalName(c.Mb)
			return &c
		}
	case *dns.MG:
		if hasUpper(x.Mg) {
			c := *x
			c.Mg = dns.CanonicalName(c.Mg)
			return &c
		}
	case *dns.MR:
		if hasUpper(x.Mr) {
			c := *x
			c.Mr = dns.CanonicalName(c.Mr)
			return &c
		}
	case *dns.PTR:
		if hasUpper(x.Ptr) {
			c := *x
			c.Ptr = dns.CanonicalName(c.Ptr)
			return &c
		}
	case *dns.MINFO:
		if hasUpper(x.Rmail) || hasUpper(x.Email) {
			c := *x
			c.Rmail = dns.CanonicalName(c.Rmail)
			c.Email = dns.CanonicalName(c.Email)
			return &c
		}
	case *dns.MX:
		if hasUpper(x.Mx) {
			c := *x
			c.Mx = dns.CanonicalName(c.Mx)
			return &c
		}
	case *dns.RP:
		if hasUpper(x.Mbox) || hasUpper(x.Txt) {
			c := *x
			c.Mbox = dns.CanonicalName(c.Mbox)
			c.Txt = dns.CanonicalName(c.Txt)
			return &c
		}
	case *dns.AFSDB:
		if hasUpper(x.Hostname) {
			c := *x
			c.Hostname = dns.CanonicalName(c.Hostname)
			return &c
		}
	case *dns.RT:
		if hasUpper(x.Host) {
			c := *x
			c.Host = dns.CanonicalName(c.Host)
			return &c
		}
	case *dns.SIG:
		if hasUpper(x.SignerName) {
			c := *x
			c.SignerName = dns.CanonicalName(c.SignerName)
			return &c
		}
	case *dns.PX:
		if hasUpper(x.Map822) || hasUpper(x.Mapx400) {
			c := *x
			c.Map822 = dns.CanonicalName(c.Map822)
			c.Mapx400 = dns.CanonicalName(c.Mapx400)
			return &c
		}
	case *dns.NAPTR:
		if hasUpper(x.Replacement) {
			c := *x
			c.Replacement = dns.CanonicalName(c.Replacement)
			return &c
		}
	case *dns.KX:
		if hasUpper(x.Exchanger) {
			c := *x
			c.Exchanger = dns.CanonicalName(c.Exchanger)
			return &c
		}
	case *dns.SRV:
		if hasUpper(x.Target) {
			c := *x
			c.Target = dns.CanonicalName(c.Target)
			return &c
		}
	case *dns.DNAME:
		if hasUpper(x.Target) {
			c := *x
			c.Target = dns.CanonicalName(c.Target)
			return &c
		}
	}
	return rr
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// appendLowerFqdn appends len(2) and the name lower-cased as dns.CanonicalName would.
func appendLowerFqdn(b []byte, name string) []byte {
	n := len(name)
	dot := !dns.IsFqdn(name)
	if dot {
		n++
	}
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	for i := 0; i < len(name); i++ {
		b = append(b, lower(name[i]))
	}
	if dot {
		b = append(b, '.')
	}
	return b
}

// canonicalFqdn is dns.CanonicalName without the allocation when name is canonical already.
func canonicalFqdn(name string) string {
	if hasUpper(name) || !dns.IsFqdn(name) {
		return dns.CanonicalName(name)
	}
	return name
}

// equalFold compares names in presentation form, ASCII letters in either case (DNS does not fold
// other bytes; strings.EqualFold would).
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// inZoneFold reports whether name (fully qualified) is zone or below it, both in any case; zone
// may lack the final dot. The byte before zone inside name must be an unescaped dot.
func inZoneFold(name, zone string) bool {
	if !dns.IsFqdn(zone) {
		if len(name) == 0 {
			return false
		}
		name = name[:len(name)-1]
	}
	if zone == "." || zone == "" {
		return true
	}
	if len(name) < len(zone) || !equalFold(name[len(name)-len(zone):], zone) {
		return false
	}
	if len(name) == len(zone) {
		return true
	}
	sep := len(name) - len(zone) - 1
	if name[sep] != '.' {
		return false
	}
	n := 0
	for i := sep; i > 0 && name[i-1] == '\\'; i-- {
		n++
	}
	return n%2 == 0
}
