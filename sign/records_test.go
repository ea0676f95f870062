package sign

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestDNSKEYSet(t *testing.T) {
	ksk := genKey(t, dns.ECDSAP256SHA256, 257)
	zsk := genKey(t, dns.ECDSAP256SHA256, 256)
	peer := genKey(t, dns.ECDSAP256SHA256, 257)
	s := mustSigner(t, ksk, zsk)

	ours := ksk.DNSKEY()
	ours.Hdr.Name, ours.Hdr.Ttl = "elsewhere.example.", 1
	set := DNSKEYSet(s.Keys(), apexMixed, 3600, []*dns.DNSKEY{peer.DNSKEY(), nil, ours})
	if len(set) != 3 {
		t.Fatalf("DNSKEY set of %d records, want 3 (KSK, ZSK, peer):\n%v", len(set), set)
	}
	for i, want := range []*Key{ksk, zsk, peer} {
		k := set[i].(*dns.DNSKEY)
		if k.Hdr != (dns.RR_Header{Name: apexMixed, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600}) {
			t.Errorf("Record %d header %+v", i, k.Hdr)
		}
		if k.KeyTag() != want.Tag() {
			t.Errorf("Record %d has tag %d, want %d", i, k.KeyTag(), want.Tag())
		}
	}

	sigs, err := s.Sign(set, apexMixed, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || sigs[0].KeyTag != ksk.Tag() {
		t.Fatalf("DNSKEY set signed by %v, want the KSK only", sigs)
	}
	verify(t, sigs, set, apex, []*Key{ksk})

	// Model 2: an answer the peer signed validates with the peer's key from our DNSKEY set.
	a := aSet(apexMixed, "192.0.2.1")
	theirs, err := mustSigner(t, peer).Sign(a, apexMixed, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := theirs[0].Verify(set[2].(*dns.DNSKEY), a); err != nil {
		t.Errorf("The peer's signature with the peer key of our DNSKEY set: %v", err)
	}
}

func TestNSEC(t *testing.T) {
	types := []uint16{dns.TypeAMTRELAY, dns.TypeAAAA, dns.TypeA, dns.TypeSOA, dns.TypeNS, dns.TypeA, dns.TypeDNSKEY, dns.TypeRRSIG}
	orig := append([]uint16(nil), types...)
	n := NSEC(apexMixed, ttl, types)
	if !reflect.DeepEqual(types, orig) {
		t.Errorf("NSEC changed its types argument: %v", types)
	}
	want := &dns.NSEC{
		Hdr:        dns.RR_Header{Name: apexMixed, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: ttl},
		NextDomain: apex,
		TypeBitMap: []uint16{dns.TypeA, dns.TypeNS, dns.TypeSOA, dns.TypeAAAA, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeDNSKEY, dns.TypeAMTRELAY},
	}
	if !reflect.DeepEqual(n, want) {
		t.Errorf("NSEC\n got %v\nwant %v", n, want)
	}
	// The text the experiment validated.
	if got := strings.Fields(n.String()); strings.Join(got[4:], " ") != apex+" A NS SOA AAAA RRSIG NSEC DNSKEY AMTRELAY" {
		t.Errorf("NSEC text %q", n.String())
	}
	buf := make([]byte, 512)
	off, err := dns.PackRR(n, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := dns.UnpackRR(buf[:off], 0)
	if err != nil || !dns.IsDuplicate(back, n) {
		t.Errorf("NSEC round trip: %v, %v", back, err)
	}

	if got := NSEC(apex, 0, nil).TypeBitMap; !reflect.DeepEqual(got, []uint16{dns.TypeRRSIG, dns.TypeNSEC}) {
		t.Errorf("Empty NSEC bitmap %v, want RRSIG NSEC", got)
	}
}

func TestDS(t *testing.T) {
	other := "amt.13.100.51.198.in-addr.arpa."
	for _, k := range []*Key{genKey(t, dns.ECDSAP256SHA256, 257), genKey(t, dns.ED25519, 257), rsaCSK(t)} {
		pub := k.DNSKEY() // owner example.net.: DS must not care
		ds := DS(pub, apexMixed)
		if ds == nil {
			t.Fatal("DS returned nil")
		}

		// RFC 4034 section 5.1.4: SHA-256 of the owner in canonical wire form and the DNSKEY RDATA.
		rdata := binary.BigEndian.AppendUint16(nil, pub.Flags)
		rdata = append(rdata, pub.Protocol, pub.Algorithm)
		key, _ := base64.StdEncoding.DecodeString(pub.PublicKey)
		sum := sha256.Sum256(append(appendWireName(nil, apex), append(rdata, key...)...))

		want := &dns.DS{
			Hdr:    dns.RR_Header{Name: apexMixed, Rrtype: dns.TypeDS, Class: dns.ClassINET},
			KeyTag: k.Tag(), Algorithm: k.Algorithm(), DigestType: dns.SHA256,
			Digest: hex.EncodeToString(sum[:]),
		}
		if !reflect.DeepEqual(ds, want) {
			t.Errorf("DS\n got %v\nwant %v", ds, want)
		}
		atApex := k.DNSKEY()
		atApex.Hdr.Name = apex
		if miekg := atApex.ToDS(dns.SHA256); miekg.Digest != ds.Digest {
			t.Errorf("DS digest %s, ToDS %s", ds.Digest, miekg.Digest)
		}
		if DS(pub, other).Digest == ds.Digest {
			t.Error("Two apexes have the same DS")
		}
		if d := DS(pub, strings.TrimSuffix(apex, ".")); d.Digest != ds.Digest || d.Hdr.Name != apex {
			t.Errorf("DS of an owner without the final dot: %v", d)
		}
	}
}
