package main

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// message builds a reply by hand: one question (qname, qtype) and one
// answer record per rdata, owned by the question name through a
// compression pointer, TTL 300.
func message(t *testing.T, qname string, qtype uint16, rtype uint16, rdatas ...string) []byte {
	t.Helper()
	b := []byte{0x12, 0x34, 0x84, 0x00, 0, 1, 0, byte(len(rdatas)), 0, 0, 0, 0}
	name := make([]byte, 256)
	n, err := dns.PackDomainName(qname, name, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, name[:n]...)
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, dns.ClassINET)
	for _, h := range rdatas {
		rd, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, 0xc0, 12) // the question's name
		b = binary.BigEndian.AppendUint16(b, rtype)
		b = binary.BigEndian.AppendUint16(b, dns.ClassINET)
		b = binary.BigEndian.AppendUint32(b, 300)
		b = binary.BigEndian.AppendUint16(b, uint16(len(rd)))
		b = append(b, rd...)
	}
	return b
}

const owner = "15.113.0.203.in-addr.arpa."

// The RDATA vectors of protocol.md section 1.5, and the defects seen in
// deployed zones.
func TestParseAMTRelay(t *testing.T) {
	cases := []struct {
		name, rdata, text string
		usable            bool
		addr              string
		relayName         string
		d                 bool
		problem           string
	}{
		{"type 1", "0a01cb00710f", "10 0 1 203.0.113.15", true, "203.0.113.15", "", false, ""},
		{"type 1 D=1", "0a81cb00710f", "10 1 1 203.0.113.15", true, "203.0.113.15", "", true, ""},
		{"type 2", "0a0220010db8000000000000000000000015", "10 0 2 2001:db8::15", true, "2001:db8::15", "", false, ""},
		{"type 3 D=1", "808309616d7472656c617973076578616d706c6503636f6d00", "128 1 3 amtrelays.example.com.", true, "", "amtrelays.example.com.", true, ""},
		{"type 3", "100309616d742d72656c6179076d326963617374036e657400", "16 0 3 amt-relay.m2icast.net.", true, "", "amt-relay.m2icast.net.", false, ""},
		{"type 0", "0000", "0 0 0 .", false, "", "", false, "no relay for this source"},
		{"type 0 D=1", "0080", "0 1 0 .", false, "", "", true, "no relay for this source"},
		// Akamai's record as MIP's docstring quotes it: no root label.
		{"type 3 without root label", "1003047235763403616d7406616b61646e73036e6574", "16 0 3 r5v4.amt.akadns.net.", true, "", "r5v4.amt.akadns.net.", false, "without its root label"},
		{"unknown type", "0a05aabbcc", `\# 5 0a05aabbcc`, false, "", "", false, "relay type 5 is not defined"},
		{"unknown type D=1", "0a85aabbcc", `\# 5 0a85aabbcc`, false, "", "", true, "relay type 5 is not defined"},
		{"type 1 too short", "0a01cb0071", `\# 5 0a01cb0071`, false, "", "", false, "3-byte relay field"},
		{"type 2 too long", "0a0220010db800000000000000000000001500", `\# 19 0a0220010db800000000000000000000001500`, false, "", "", false, "17-byte relay field"},
		{"type 0 with a relay", "0000aa", `\# 3 0000aa`, false, "", "", false, "type 0 with a 1-byte"},
		{"type 3 compressed", "1003c00c", `\# 4 1003c00c`, false, "", "", false, "compressed"},
		{"type 3 overrun", "100305616d74", `\# 6 100305616d74`, false, "", "", false, "overruns"},
		{"type 3 trailing bytes", "100303616d7400ff", `\# 8 100303616d7400ff`, false, "", "", false, "after the relay name"},
		{"type 3 empty", "1003", `\# 2 1003`, false, "", "", false, "empty relay name"},
		{"type 3 root", "100300", `\# 3 100300`, false, "", "", false, "empty relay name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := message(t, owner, typeAMTRELAY, typeAMTRELAY, tc.rdata)
			rep, err := parseReply(raw)
			if err != nil {
				t.Fatalf("parseReply: %v", err)
			}
			if len(rep.Answer) != 1 {
				t.Fatalf("%d answers", len(rep.Answer))
			}
			rec := rep.Answer[0]
			a := rec.AMT
			if a == nil || rec.Name != owner || rec.TTL != 300 || rec.TypeString() != "AMTRELAY" {
				t.Fatalf("Record %+v", rec)
			}
			if got := rec.Data(); got != tc.text {
				t.Errorf("Presentation %q, want %q", got, tc.text)
			}
			if a.Usable != tc.usable || a.D != tc.d {
				t.Errorf("Usable %v D %v, want %v %v", a.Usable, a.D, tc.usable, tc.d)
			}
			if tc.addr != "" && a.Addr != netip.MustParseAddr(tc.addr) {
				t.Errorf("Relay %v, want %s", a.Addr, tc.addr)
			}
			if a.Name != tc.relayName {
				t.Errorf("Relay name %q, want %q", a.Name, tc.relayName)
			}
			if (tc.problem == "") != (a.Problem == "") || !strings.Contains(a.Problem, tc.problem) {
				t.Errorf("Problem %q, want %q", a.Problem, tc.problem)
			}
		})
	}
}

// The reason the decoder exists: miekg/dns v1.1.73 cannot unpack a message
// with a D=1 AMTRELAY record. If this starts failing, miekg/dns has been
// fixed and dns.Msg.Unpack could read these replies again.
func TestMiekgRejectsDBit(t *testing.T) {
	raw := message(t, owner, typeAMTRELAY, typeAMTRELAY, "0a01cb00710f", "0a81cb00710f")
	if err := new(dns.Msg).Unpack(raw); err == nil {
		t.Fatalf("miekg/dns unpacked a D=1 AMTRELAY record: the private decoder may no longer be needed")
	}
	rep, err := parseReply(raw)
	if err != nil || len(rep.Answer) != 2 || rep.Answer[1].AMT == nil || !rep.Answer[1].AMT.D || rep.Answer[1].AMT.Addr != netip.MustParseAddr("203.0.113.15") {
		t.Fatalf("Own decoder: %+v, %v", rep, err)
	}
}

// Other types go through miekg/dns, names in RDATA compressed against the
// whole message.
func TestParseReplyOtherTypes(t *testing.T) {
	// CNAME whose target points back into the question name.
	raw := message(t, "a.example.net.", dns.TypeA, dns.TypeCNAME, "0162c00e")
	raw = append(raw, 0xc0, 43) // owner: the CNAME target, in its RDATA
	raw = binary.BigEndian.AppendUint16(raw, dns.TypeA)
	raw = binary.BigEndian.AppendUint16(raw, dns.ClassINET)
	raw = binary.BigEndian.AppendUint32(raw, 60)
	raw = append(raw, 0, 4, 192, 0, 2, 7)
	raw[7] = 2
	rep, err := parseReply(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Answer) != 2 || rep.Answer[0].Data() != "b.example.net." || rep.Answer[1].Name != "b.example.net." || rep.Answer[1].Data() != "192.0.2.7" {
		for _, r := range rep.Answer {
			t.Logf("%s %s %s %s", r.Name, r.TypeString(), r.Data(), r.Problem)
		}
		t.Fatalf("Answers %+v", rep.Answer)
	}
	if target, ok := cnameTarget(rep.Answer, "A.Example.NET."); !ok || target != "b.example.net." {
		t.Errorf("cnameTarget %q %v", target, ok)
	}
	if a, ok := addrOf(rep.Answer[1]); !ok || a != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("addrOf %v %v", a, ok)
	}
}

// Whatever the bytes, parseReply returns; cut messages are errors unless
// TC says they were cut on purpose.
func TestParseReplyTruncatedBytes(t *testing.T) {
	raw := message(t, owner, typeAMTRELAY, typeAMTRELAY, "0a81cb00710f", "808309616d7472656c617973076578616d706c6503636f6d00")
	for n := range len(raw) {
		if _, err := parseReply(raw[:n]); err == nil {
			t.Errorf("A message cut to %d of %d bytes parsed", n, len(raw))
		}
	}
	tc := append([]byte(nil), raw[:len(raw)-3]...)
	tc[2] |= 0x02
	rep, err := parseReply(tc)
	if err != nil || !rep.Truncated || len(rep.Answer) != 1 {
		t.Errorf("TC reply cut inside its second record: %d answers, %v", len(rep.Answer), err)
	}
}

func TestParseReplyHeader(t *testing.T) {
	raw := message(t, owner, typeAMTRELAY, typeAMTRELAY)
	raw[3] = 0x83 // NXDOMAIN, RA
	rep, err := parseReply(raw)
	if err != nil || rep.ID != 0x1234 || !rep.Response || !rep.AA || rep.Rcode != dns.RcodeNameError || rep.QName != owner || rep.QType != typeAMTRELAY {
		t.Errorf("Header %+v, %v", rep, err)
	}
	raw[5] = 2 // two questions
	if _, err := parseReply(raw); err == nil {
		t.Errorf("Two questions accepted")
	}
}

func TestEscapeLabel(t *testing.T) {
	if got := escapeLabel([]byte("a.b\\c d\x00")); got != `a\.b\\c\032d\000` {
		t.Errorf("escapeLabel %q", got)
	}
}
