package amtrelay

import (
	"encoding/hex"
	"strconv"
	"testing"

	"github.com/miekg/dns"
)

// Vectors from the RFC 8777 wire format (protocol.md §1.5), including the D-bit cases that
// miekg/dns v1.1.73 gets wrong.
var rdataVectors = []struct {
	precedence uint8
	dbit       bool
	address    string
	rdata      string
}{
	{10, false, "203.0.113.15", "0a01cb00710f"},
	{10, true, "203.0.113.15", "0a81cb00710f"},
	{10, false, "2001:db8::15", "0a0220010db8000000000000000000000015"},
	{128, true, "amtrelays.example.com.", "808309616d7472656c617973076578616d706c6503636f6d00"},
	{16, false, "amt-relay.m2icast.net.", "100309616d742d72656c6179076d326963617374036e657400"},
	{255, true, "2001:db8::15", "ff8220010db8000000000000000000000015"},
}

func TestEncodeRdataVectors(t *testing.T) {
	for _, v := range rdataVectors {
		r := &relay{name: "r", precedence: v.precedence, discoveryOptional: v.dbit}
		e := newEndpoint(r, v.address)
		if err := e.encodeRdata(); err != nil {
			t.Fatalf("%s: %v", v.address, err)
		}
		if e.rdata != v.rdata {
			t.Errorf("%d %v %s: got %s, want %s", v.precedence, v.dbit, v.address, e.rdata, v.rdata)
		}
	}
}

// With the D-bit clear miekg/dns packs AMTRELAY correctly, so its parser of the RFC presentation
// form is an independent check of the encoder; and the RFC 3597 record we emit must pack to exactly
// the bytes we encoded, whatever the D-bit.
func TestEncodeRdataMatchesPresentationForm(t *testing.T) {
	for _, v := range rdataVectors {
		r := &relay{name: "r", precedence: v.precedence, discoveryOptional: v.dbit}
		e := newEndpoint(r, v.address)
		if err := e.encodeRdata(); err != nil {
			t.Fatal(err)
		}
		generic := &dns.RFC3597{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeAMTRELAY, Class: dns.ClassINET}, Rdata: e.rdata}
		if got := packedRdata(t, generic); got != v.rdata {
			t.Errorf("RFC 3597 record packs to %s, want %s", got, v.rdata)
		}
		if v.dbit {
			continue
		}
		relayType := map[bool]string{true: "3", false: "1"}[e.host != ""]
		if e.addr.Is6() {
			relayType = "2"
		}
		text := "x. 30 IN AMTRELAY " + strconv.Itoa(int(v.precedence)) + " 0 " + relayType + " " + v.address
		rr, err := dns.NewRR(text)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if got := packedRdata(t, rr); got != v.rdata {
			t.Errorf("%q packs to %s, our encoder gives %s", text, got, v.rdata)
		}
	}
}

func packedRdata(t *testing.T, rr dns.RR) string {
	t.Helper()
	buf := make([]byte, 512)
	n, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatalf("PackRR %v: %v", rr, err)
	}
	_, off, _ := dns.UnpackDomainName(buf, 0)
	return hex.EncodeToString(buf[off+10 : n])
}
