package sign

import (
	"encoding/hex"
	"net"
	"testing"

	"github.com/miekg/dns"
)

const (
	apex      = "amt.12.100.51.198.in-addr.arpa."
	apexMixed = "AmT.12.100.51.198.In-Addr.ARPA."
	ttl       = 30
)

func mustSigner(t testing.TB, keys ...*Key) *Signer {
	t.Helper()
	s, err := NewSigner(keys, 0, 0)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	return s
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

func aSet(owner string, ips ...string) []dns.RR {
	rrs := make([]dns.RR, len(ips))
	for i, ip := range ips {
		rrs[i] = &dns.A{Hdr: hdr(owner, dns.TypeA), A: net.ParseIP(ip).To4()}
	}
	return rrs
}

func aaaaSet(owner string, ips ...string) []dns.RR {
	rrs := make([]dns.RR, len(ips))
	for i, ip := range ips {
		rrs[i] = &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA), AAAA: net.ParseIP(ip)}
	}
	return rrs
}

// amtrelay builds the RDATA hex of an AMTRELAY record by hand, as the plugin does.
func amtrelay(prec uint8, d bool, relay string) string {
	b := []byte{prec, 0}
	if d {
		b[1] = 0x80
	}
	if ip := net.ParseIP(relay); ip != nil {
		if ip4 := ip.To4(); ip4 != nil {
			b[1] |= 1
			b = append(b, ip4...)
		} else {
			b[1] |= 2
			b = append(b, ip...)
		}
	} else {
		b[1] |= 3
		buf := make([]byte, 256)
		n, err := dns.PackDomainName(relay, buf, 0, nil, false)
		if err != nil {
			panic(err)
		}
		b = append(b, buf[:n]...)
	}
	return hex.EncodeToString(b)
}

func amtrelaySet(owner string, rdata ...string) []dns.RR {
	rrs := make([]dns.RR, len(rdata))
	for i, rd := range rdata {
		rrs[i] = &dns.RFC3597{Hdr: hdr(owner, dns.TypeAMTRELAY), Rdata: rd}
	}
	return rrs
}

// verify checks each signature with miekg/dns against the key of its tag, served at zone.
func verify(t testing.TB, sigs []*dns.RRSIG, rrset []dns.RR, zone string, keys []*Key) {
	t.Helper()
	if len(sigs) == 0 {
		t.Fatal("No signatures")
	}
	for _, sig := range sigs {
		var key *Key
		for _, k := range keys {
			if k.Tag() == sig.KeyTag && k.Algorithm() == sig.Algorithm {
				key = k
			}
		}
		if key == nil {
			t.Fatalf("Signature by unknown key tag %d", sig.KeyTag)
		}
		pub := key.DNSKEY()
		pub.Hdr.Name = zone
		if err := sig.Verify(pub, rrset); err != nil {
			t.Errorf("Verify %s by tag %d: %v", dns.TypeToString[sig.TypeCovered], sig.KeyTag, err)
		}
	}
}
