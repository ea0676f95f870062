package amtrelay

import (
	"context"
	"encoding/hex"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// answerBlock serves in-addr.arpa and ip6.arpa with health checks off, so every configured relay
// is up.
const answerBlock = `
	amtrelay in-addr.arpa ip6.arpa {
		relay v4a 192.0.2.1 precedence 10
		relay v4b 192.0.2.2 precedence 10
		relay dual 192.0.2.3 2001:db8::3 precedence 20 discovery_optional
		relay named relays.example.net precedence 30
		relay v6only 2001:db8::6 precedence 5
		source 198.51.100.0/24 v4a v4b dual named
		source 2001:db8:100::/48 v6only
		source 203.0.113.0/24 v6only
		nameserver ns1.example.net ns2.example.net
		ttl 45
		health_check off
	}`

// answerCorefile is answerBlock in a real server; whoami behind amtrelay shows which queries fall
// through.
const answerCorefile = `
in-addr.arpa:0 ip6.arpa:0 example.org:0 {
	bind 127.0.0.1` + answerBlock + `
	whoami
}`

const (
	revS   = "12.100.51.198.in-addr.arpa."
	apexS  = "amt." + revS
	revV6  = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa." // 2001:db8:100::5
	apexV6 = "amt." + revV6
)

// Expected AMTRELAY RDATA per relay address (RFC 8777 §4.2): precedence, D|type, relay.
var (
	rdV4a   = "0a01c0000201"
	rdV4b   = "0a01c0000202"
	rdDual4 = "1481c0000203"
	rdDual6 = "148220010db8000000000000000000000003"
	rdNamed = "1e030672656c617973076578616d706c65036e657400"
	rdV6    = "050220010db8000000000000000000000006"
)

type wantSection struct {
	owner  string   // expected owner of every record ("" = no records)
	rtype  uint16   // expected type of every record
	rdatas []string // expected RDATA hex, in any order unless ordered
	ttl    uint32
}

type answerCase struct {
	name     string
	qname    string
	qtype    uint16
	through  bool // expect the next plugin (whoami) to answer
	rcode    int
	answer   wantSection
	soaOwner string // expected owner of the single SOA in authority ("" = empty authority)
}

// nextMarker stands for the next plugin: it writes nothing and returns a code no path of amtrelay
// returns, so a test can tell a handed-on query from an answer.
var nextMarker = plugin.HandlerFunc(func(context.Context, dns.ResponseWriter, *dns.Msg) (int, error) {
	return dns.RcodeNotImplemented, nil
})

// newTestPlugin builds the instance of one amtrelay block, with nextMarker behind it. It starts
// nothing: with health checks on, every relay counts as up until something observes it.
func newTestPlugin(t testing.TB, block string) *AMTRelay {
	t.Helper()
	cfg, err := parse(caddy.NewTestController("dns", block))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	a, err := newAMTRelay(cfg, new(generation))
	if err != nil {
		t.Fatalf("New instance: %v", err)
	}
	a.Next = nextMarker
	return a
}

// serve runs a query through ServeDNS and returns the reply as packed for the wire, or ok false
// when the plugin handed the query on.
func serve(t *testing.T, h plugin.Handler, q *dns.Msg) (r response, handedOn bool) {
	t.Helper()
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, err := h.ServeDNS(context.Background(), rec, q)
	if err != nil {
		t.Fatalf("ServeDNS: %v", err)
	}
	if rcode == dns.RcodeNotImplemented && rec.Msg == nil {
		return response{}, true
	}
	if rec.Msg == nil {
		t.Fatalf("ServeDNS returned %s and wrote nothing", dns.RcodeToString[rcode])
	}
	raw, err := rec.Msg.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	r = response{raw: raw}
	if m := new(dns.Msg); m.Unpack(raw) == nil {
		r.msg = m
	}
	return r, false
}

func question(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	return q
}

// The answer table of the README, through ServeDNS, checked on the packed bytes (which is where
// miekg/dns's AMTRELAY D-bit bug would show).
func TestAnswers(t *testing.T) {
	a := newTestPlugin(t, answerBlock)
	soaNS := "example.net."
	cases := []answerCase{
		{name: "anycast A", qname: apexS, qtype: dns.TypeA,
			answer: wantSection{apexS, dns.TypeA, []string{"c0000201", "c0000202", "c0000203"}, 45}},
		{name: "anycast AAAA", qname: apexS, qtype: dns.TypeAAAA,
			answer: wantSection{apexS, dns.TypeAAAA, []string{"20010db8000000000000000000000003"}, 45}},
		{name: "anycast AMTRELAY", qname: apexS, qtype: dns.TypeAMTRELAY,
			answer: wantSection{apexS, dns.TypeAMTRELAY, []string{rdV4a, rdV4b, rdDual4, rdDual6, rdNamed}, 45}},
		{name: "RFC 8777 AMTRELAY", qname: revS, qtype: dns.TypeAMTRELAY,
			answer: wantSection{revS, dns.TypeAMTRELAY, []string{rdV4a, rdV4b, rdDual4, rdDual6, rdNamed}, 45}},
		{name: "apex SOA", qname: apexS, qtype: dns.TypeSOA, answer: wantSection{apexS, dns.TypeSOA, nil, 45}},
		{name: "apex NS", qname: apexS, qtype: dns.TypeNS, answer: wantSection{apexS, dns.TypeNS, nil, 45}},
		{name: "other type at apex is NODATA", qname: apexS, qtype: dns.TypeTXT, soaOwner: apexS},
		{name: "ANY at apex is NODATA", qname: apexS, qtype: dns.TypeANY, soaOwner: apexS},
		{name: "below apex is NXDOMAIN", qname: "x." + apexS, qtype: dns.TypeA, rcode: dns.RcodeNameError, soaOwner: apexS},
		{name: "escaped dot below apex is NXDOMAIN", qname: `x\.y.` + apexS, qtype: dns.TypeA, rcode: dns.RcodeNameError, soaOwner: apexS},
		{name: "escaped backslash below apex is NXDOMAIN", qname: `x\\.` + apexS, qtype: dns.TypeTXT, rcode: dns.RcodeNameError, soaOwner: apexS},
		{name: "deep below apex is NXDOMAIN", qname: "a.b." + apexS, qtype: dns.TypeAMTRELAY, rcode: dns.RcodeNameError, soaOwner: apexS},
		{name: "unknown source at apex is NXDOMAIN", qname: "amt.99.2.0.192.in-addr.arpa.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soaOwner: "amt.99.2.0.192.in-addr.arpa."},
		{name: "v4 source, v6-only relays: A is NODATA", qname: "amt.5.113.0.203.in-addr.arpa.", qtype: dns.TypeA,
			soaOwner: "amt.5.113.0.203.in-addr.arpa."},
		{name: "v4 source, v6-only relays: AAAA", qname: "amt.5.113.0.203.in-addr.arpa.", qtype: dns.TypeAAAA,
			answer: wantSection{"amt.5.113.0.203.in-addr.arpa.", dns.TypeAAAA, []string{"20010db8000000000000000000000006"}, 45}},
		{name: "IPv6 source AAAA", qname: apexV6, qtype: dns.TypeAAAA,
			answer: wantSection{apexV6, dns.TypeAAAA, []string{"20010db8000000000000000000000006"}, 45}},
		{name: "IPv6 source AMTRELAY", qname: revV6, qtype: dns.TypeAMTRELAY,
			answer: wantSection{revV6, dns.TypeAMTRELAY, []string{rdV6}, 45}},
		{name: "mixed case is echoed", qname: "AmT.12.100.51.198.In-Addr.ARPA.", qtype: dns.TypeA,
			answer: wantSection{"AmT.12.100.51.198.In-Addr.ARPA.", dns.TypeA, []string{"c0000201", "c0000202", "c0000203"}, 45}},
		{name: "mixed case NXDOMAIN SOA owner", qname: "X.aMt.12.100.51.198.IN-addr.arpa.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soaOwner: "aMt.12.100.51.198.IN-addr.arpa."},
		{name: "A at rev(S) falls through", qname: revS, qtype: dns.TypeA, through: true},
		{name: "PTR at rev(S) falls through", qname: revS, qtype: dns.TypePTR, through: true},
		{name: "unknown source at rev(S) falls through", qname: "99.2.0.192.in-addr.arpa.", qtype: dns.TypeAMTRELAY, through: true},
		{name: "other label falls through", qname: "foo." + revS, qtype: dns.TypeA, through: true},
		{name: "partial reverse name falls through", qname: "100.51.198.in-addr.arpa.", qtype: dns.TypeAMTRELAY, through: true},
		{name: "name outside the zones falls through", qname: "amt.example.org.", qtype: dns.TypeA, through: true},
		{name: "leading zero is not a source", qname: "amt.012.100.51.198.in-addr.arpa.", qtype: dns.TypeA, through: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, handedOn := serve(t, a, question(tc.qname, tc.qtype))
			if handedOn != tc.through {
				t.Fatalf("Handed on %v, want %v", handedOn, tc.through)
			}
			if !tc.through {
				checkAnswer(t, r, tc, soaNS)
			}
		})
	}
}

func checkAnswer(t *testing.T, r response, tc answerCase, soaNS string) {
	t.Helper()
	rcode, aa, question, sec := r.sections(t)
	if rcode != tc.rcode {
		t.Errorf("Rcode %s, want %s", dns.RcodeToString[rcode], dns.RcodeToString[tc.rcode])
	}
	if !aa {
		t.Errorf("Expected the AA bit")
	}
	if question != tc.qname {
		t.Errorf("Question %q, want it echoed as %q", question, tc.qname)
	}
	ans := sec[0]
	switch {
	case tc.answer.owner == "" && len(ans) > 0:
		t.Errorf("Expected an empty answer, got %v", ans)
	case tc.answer.owner != "":
		if len(ans) == 0 {
			t.Fatalf("Expected answers, got none")
		}
		var got []string
		for _, rr := range ans {
			if rr.name != tc.answer.owner || rr.rtype != tc.answer.rtype || rr.ttl != tc.answer.ttl {
				t.Errorf("Record %s %d %d, want %s %d %d", rr.name, rr.rtype, rr.ttl, tc.answer.owner, tc.answer.rtype, tc.answer.ttl)
			}
			got = append(got, rr.rdata)
		}
		if tc.answer.rdatas != nil {
			want := slices.Clone(tc.answer.rdatas)
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("RDATA %v, want %v", got, want)
			}
		}
	}
	if tc.soaOwner == "" {
		if len(sec[1]) > 0 {
			t.Errorf("Expected an empty authority section, got %v", sec[1])
		}
	} else {
		if len(sec[1]) != 1 || sec[1][0].rtype != dns.TypeSOA || sec[1][0].name != tc.soaOwner {
			t.Fatalf("Expected one SOA owned by %s in authority, got %v", tc.soaOwner, sec[1])
		}
		soa := r.msg.Ns[0].(*dns.SOA)
		if soa.Ns != "ns1."+soaNS || soa.Minttl != 45 || soa.Hdr.Ttl != 45 || soa.Serial == 0 {
			t.Errorf("Unexpected SOA %v", soa)
		}
	}
}

func TestApexSOAAndNS(t *testing.T) {
	a := newTestPlugin(t, answerBlock)
	r, _ := serve(t, a, question("AMT."+revS, dns.TypeSOA))
	soa, ok := r.msg.Answer[0].(*dns.SOA)
	if !ok || soa.Hdr.Name != "AMT."+revS || soa.Ns != "ns1.example.net." || soa.Mbox != "hostmaster.AMT."+revS {
		t.Fatalf("Unexpected SOA answer %v", r.msg.Answer)
	}
	r, _ = serve(t, a, question(apexS, dns.TypeNS))
	var ns []string
	for _, rr := range r.msg.Answer {
		ns = append(ns, rr.(*dns.NS).Ns)
	}
	if slices.Sort(ns); strings.Join(ns, " ") != "ns1.example.net. ns2.example.net." {
		t.Fatalf("Unexpected NS answer %v", r.msg.Answer)
	}
}

// The usual `.:53` block makes the root the plugin's zone, so a negative answer at rev(S) carries
// the root's SOA, whose RNAME must still be a name that packs: "hostmaster.", not "hostmaster..".
func TestRootZoneNegativeAnswers(t *testing.T) {
	for _, tc := range []struct {
		admin, allDown string
		soaTTL         uint32
	}{
		{"* down\n", "nodata", 0},
		{"* drain\n", "serve", 30},
	} {
		t.Run(tc.admin[:len(tc.admin)-1], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "admin.txt")
			writeFile(t, path, tc.admin)
			s := startServer(t, `.:0 {
	bind 127.0.0.1
	amtrelay {
		relay a 192.0.2.1
		source 198.51.100.0/24 a
		admin `+path+`
		health_check off
		all_down `+tc.allDown+`
	}
}`)
			for _, proto := range []string{"udp", "tcp"} {
				r := s.query(t, proto, revS, dns.TypeAMTRELAY)
				rcode, aa, _, sec := r.sections(t)
				if rcode != dns.RcodeSuccess || !aa || len(sec[0]) != 0 {
					t.Fatalf("%s: rcode %s, AA %v, %d answers; want NOERROR, AA, none", proto, dns.RcodeToString[rcode], aa, len(sec[0]))
				}
				if len(sec[1]) != 1 || sec[1][0].rtype != dns.TypeSOA || sec[1][0].name != "." || sec[1][0].ttl != tc.soaTTL {
					t.Fatalf("%s: expected the root's SOA with TTL %d in authority, got %v", proto, tc.soaTTL, sec[1])
				}
				if soa := r.msg.Ns[0].(*dns.SOA); soa.Ns != "." || soa.Mbox != "hostmaster." {
					t.Errorf("%s: SOA MNAME %q RNAME %q, want \".\" and \"hostmaster.\"", proto, soa.Ns, soa.Mbox)
				}
			}
		})
	}
}

// L.<rev(S)> zones are synthesized: a transfer at or below one is refused, as the file plugin
// refuses transfers it is not configured for, and not answered with an empty authoritative NOERROR.
// rev(S) is not the plugin's zone, so a transfer there goes to the next plugin as before.
func TestZoneTransfersRefused(t *testing.T) {
	s := startServer(t, answerCorefile)
	refused := func() (n float64) {
		for k, v := range series(t, "coredns_amtrelay_requests_total") {
			if strings.Contains(k, "result=refused") {
				n += v
			}
		}
		return n
	}
	before := refused()
	names := []string{apexS, "AMT." + revS, "x." + apexS, apexV6, "amt.99.2.0.192.in-addr.arpa."}
	for _, qtype := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
		for _, name := range names {
			r := s.query(t, "tcp", name, qtype)
			rcode, aa, _, sec := r.sections(t)
			if rcode != dns.RcodeRefused || aa || len(sec[0])+len(sec[1]) != 0 {
				t.Errorf("%s %s: rcode %s, AA %v, sections %v; want REFUSED without AA or records",
					dns.TypeToString[qtype], name, dns.RcodeToString[rcode], aa, sec)
			}
		}
		if r := s.query(t, "tcp", revS, qtype); !r.fellThrough() {
			t.Errorf("%s at rev(S): expected whoami to answer, got %v", dns.TypeToString[qtype], r.msg)
		}
	}
	if got, want := refused()-before, float64(2*len(names)); got != want {
		t.Errorf("Expected requests_total{result=\"refused\"} to grow by %v, got %v", want, got)
	}
}

// A and AAAA answers list lower precedence first and rotate relays of equal precedence, so that a
// gateway taking the first address spreads over equally preferred relays.
func TestAddressOrder(t *testing.T) {
	a := newTestPlugin(t, answerBlock)
	firsts := map[string]int{}
	for i := 0; i < 64; i++ {
		r, _ := serve(t, a, question(apexS, dns.TypeA))
		var addrs []string
		for _, rr := range r.msg.Answer {
			addrs = append(addrs, rr.(*dns.A).A.String())
		}
		if len(addrs) != 3 || addrs[2] != "192.0.2.3" {
			t.Fatalf("Expected the precedence-20 relay last, got %v", addrs)
		}
		firsts[addrs[0]]++
	}
	if firsts["192.0.2.1"] == 0 || firsts["192.0.2.2"] == 0 {
		t.Fatalf("Expected both precedence-10 relays to lead some answers in 64 queries, got %v", firsts)
	}
}

// Only class IN is the plugin's: with forward or chaos in the block CoreDNS lets other classes
// through, and they are theirs.
func TestOtherClassesHandedOn(t *testing.T) {
	a := newTestPlugin(t, answerBlock)
	for _, class := range []uint16{dns.ClassCHAOS, dns.ClassHESIOD, dns.ClassANY, dns.ClassNONE} {
		q := question(apexS, dns.TypeA)
		q.Question[0].Qclass = class
		if _, handedOn := serve(t, a, q); !handedOn {
			t.Errorf("Class %s: answered, want it handed on", dns.ClassToString[class])
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		qname string
		kind  nameKind
		apex  string
		src   string
	}{
		{revS, nameReverse, "", "198.51.100.12"},
		{apexS, nameApex, apexS, "198.51.100.12"},
		{"x." + apexS, nameBelow, apexS, "198.51.100.12"},
		{"x.y.AMT." + revS, nameBelow, "AMT." + revS, "198.51.100.12"},
		// Escapes below the apex are still below the apex.
		{`x\.y.` + apexS, nameBelow, apexS, "198.51.100.12"},
		{`x\\.` + apexS, nameBelow, apexS, "198.51.100.12"},
		{`\000.` + apexS, nameBelow, apexS, "198.51.100.12"},
		{`a\ b.c.` + apexS, nameBelow, apexS, "198.51.100.12"},
		// An escaped dot makes one label with the label's text in it: not the apex.
		{`x\.amt.` + revS, nameOther, "", ""},
		{"xamt." + revS, nameOther, "", ""},
		{"amt\\.x." + revS, nameOther, "", ""},
		{"foo." + revS, nameOther, "", ""},
		{"100.51.198.in-addr.arpa.", nameOther, "", ""},
		{"example.org.", nameOther, "", ""},
	}
	for _, tc := range tests {
		kind, apex, src := classify(tc.qname, "amt")
		if kind != tc.kind || apex != tc.apex || (tc.src != "" && src != netip.MustParseAddr(tc.src)) {
			t.Errorf("classify(%q) = %d %q %v, want %d %q %s", tc.qname, kind, apex, src, tc.kind, tc.apex, tc.src)
		}
	}
}

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

func TestRelayRdataVectors(t *testing.T) {
	for _, v := range rdataVectors {
		addr, err := parseRelayAddress(v.address)
		if err != nil {
			t.Fatal(err)
		}
		rdata, err := relayRdata(v.precedence, v.dbit, addr.addr, addr.host)
		if err != nil {
			t.Fatalf("%s: %v", v.address, err)
		}
		if rdata != v.rdata {
			t.Errorf("%d %v %s: got %s, want %s", v.precedence, v.dbit, v.address, rdata, v.rdata)
		}
	}
}

// With the D-bit clear miekg/dns packs AMTRELAY correctly, so its parser of the RFC presentation
// form is an independent check of the encoder; and the RFC 3597 record we emit must pack to exactly
// the bytes we encoded, whatever the D-bit.
func TestRelayRdataMatchesPresentationForm(t *testing.T) {
	for _, v := range rdataVectors {
		addr, err := parseRelayAddress(v.address)
		if err != nil {
			t.Fatal(err)
		}
		rdata, err := relayRdata(v.precedence, v.dbit, addr.addr, addr.host)
		if err != nil {
			t.Fatal(err)
		}
		generic := &dns.RFC3597{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeAMTRELAY, Class: dns.ClassINET}, Rdata: rdata}
		if got := packedRdata(t, generic); got != v.rdata {
			t.Errorf("RFC 3597 record packs to %s, want %s", got, v.rdata)
		}
		if v.dbit {
			continue
		}
		relayType := map[bool]string{true: "3", false: "1"}[addr.host != ""]
		if addr.addr.Is6() {
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

var testZones = []string{"in-addr.arpa.", "ip6.arpa.", "100.51.198.in-addr.arpa."}

func TestMatchZone(t *testing.T) {
	for _, tc := range []struct {
		zones []string
		qname string
		want  string
	}{
		{testZones, "amt.12.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa."},
		{testZones, "AmT.12.100.51.198.In-AddR.ArPa.", "100.51.198.in-addr.arpa."},
		{testZones, "12.0.51.198.in-addr.arpa.", "in-addr.arpa."},
		{testZones, "in-addr.arpa.", "in-addr.arpa."},
		{testZones, "IP6.ARPA.", "ip6.arpa."},
		{testZones, "xin-addr.arpa.", ""},                  // not on a label boundary
		{testZones, `x\.in-addr.arpa.`, ""},                // the label is `x\.in-addr`
		{testZones, `x.in-addr\.arpa.`, ""},                // "in-addr.arpa" is one label here
		{testZones, `x\\.in-addr.arpa.`, "in-addr.arpa."},  // escaped backslash, then a real dot
		{testZones, `x\\\.in-addr.arpa.`, ""},              // escaped backslash, then an escaped dot: one label again
		{testZones, "arpa.", ""},                           // above every zone
		{testZones, "www.example.org.", ""},                // elsewhere
		{[]string{"."}, "www.example.org.", "."},           // the root holds everything
		{[]string{".", "arpa."}, "in-addr.arpa.", "arpa."}, // longest wins
		{[]string{"arpa.", "."}, "in-addr.arpa.", "arpa."}, // in any order
		{nil, "in-addr.arpa.", ""},
	} {
		if got := matchZone(tc.zones, tc.qname); got != tc.want {
			t.Errorf("matchZone(%v, %q) = %q, want %q", tc.zones, tc.qname, got, tc.want)
		}
		if got := plugin.Zones(tc.zones).Matches(tc.qname); got != tc.want {
			t.Errorf("plugin.Zones(%v).Matches(%q) = %q; the case expects %q", tc.zones, tc.qname, got, tc.want)
		}
	}
}
