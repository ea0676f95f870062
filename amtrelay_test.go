package amtrelay

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// One real server per transport: the plugin compiled into CoreDNS answers over UDP and TCP with the
// exact AMTRELAY bytes (D-bit set on one relay), and hands on what is not its own.
func TestServeUDPAndTCP(t *testing.T) {
	s := startServer(t, answerCorefile)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			checkAnswer(t, s.query(t, proto, apexS, dns.TypeAMTRELAY), answerCase{
				qname:  apexS,
				answer: wantSection{apexS, dns.TypeAMTRELAY, []string{rdV4a, rdV4b, rdDual4, rdDual6, rdNamed}, 45},
			}, "example.net.")
			checkAnswer(t, s.query(t, proto, "x."+apexS, dns.TypeA), answerCase{
				qname: "x." + apexS, rcode: dns.RcodeNameError, soaOwner: apexS,
			}, "example.net.")
			if r := s.query(t, proto, revS, dns.TypePTR); !r.fellThrough() {
				t.Errorf("Expected whoami to answer PTR at rev(S), got %v", r.msg)
			}
		})
	}
}

// A NOTIFY is no query: it goes to the next plugin (a secondary of S's reverse zone would take it),
// even for a name the plugin answers queries for.
func TestNotifyHandedOn(t *testing.T) {
	s := startServer(t, answerCorefile)
	for _, name := range []string{apexS, revS} {
		n := new(dns.Msg)
		n.SetNotify(name)
		if r := s.exchange(t, "udp", n); !r.fellThrough() || r.msg.Opcode != dns.OpcodeNotify {
			t.Errorf("NOTIFY for %s: expected whoami's reply, got %v", name, r.msg)
		}
	}
}

// startUpstream runs a DNS server on loopback that answers every query with one TXT record saying
// "upstream" in the query's class, and returns its address.
func startUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: q.Qclass, Ttl: 5}, Txt: []string{"upstream"}}}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// With forward after amtrelay, CoreDNS lets classes other than IN reach the plugins; a CH query for
// a name amtrelay serves must go to forward, not get amtrelay's IN records.
func TestOtherClassesGoToForward(t *testing.T) {
	upstream := startUpstream(t)
	s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		health_check off
	}
	forward . %s {
		prefer_udp
	}
}
`, upstream))
	q := question(apexS, dns.TypeTXT)
	q.Question[0].Qclass = dns.ClassCHAOS
	r := s.exchange(t, "udp", q)
	if r.msg == nil || len(r.msg.Answer) != 1 || r.msg.Answer[0].Header().Class != dns.ClassCHAOS ||
		r.msg.Answer[0].(*dns.TXT).Txt[0] != "upstream" || r.msg.Authoritative {
		t.Errorf("CH query: expected forward's upstream answer, got %v", r.msg)
	}
	if got := addressesOf(t, s, "udp", apexS); got != "192.0.2.1" {
		t.Errorf("IN query: expected amtrelay's answer, got %s", got)
	}
}

// bigRelaySet is a block with many relays of both families and names, for answer sizes.
func bigRelaySet(n int) string {
	var b strings.Builder
	var names []string
	for i := range n {
		name := fmt.Sprintf("r%d", i)
		names = append(names, name)
		fmt.Fprintf(&b, "\t\trelay %s 192.0.%d.%d 2001:db8::%x relay-%d.relays.example.net\n", name, i/250, i%250+1, i+1, i)
	}
	fmt.Fprintf(&b, "\t\tsource 0.0.0.0/0 %s\n", strings.Join(names, " "))
	return b.String()
}

// amplification asks the server for AMTRELAY at the shortest source name, with the largest EDNS
// buffer, over UDP, and returns the query and answer sizes and the answer's TC bit.
func amplification(t *testing.T, s *testServer) (query, answer int, truncated bool) {
	t.Helper()
	q := question("amt.0.0.0.0.in-addr.arpa.", dns.TypeAMTRELAY)
	q.SetEdns0(65000, false)
	out, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := s.exchange(t, "udp", q)
	return len(out), len(r.raw), r.msg != nil && r.msg.Truncated
}

// A relay set big enough to fill 64 KB answers would make the server an amplifier for spoofed UDP
// queries; bufsize 1232 in front caps every UDP answer, whatever the query's EDNS buffer. The test
// prints the worst ratio, which the README states.
func TestAmplificationWithBufsize(t *testing.T) {
	const corefile = `in-addr.arpa:0 {
	bind 127.0.0.1
	%s
	amtrelay {
%s		health_check off
	}
}
`
	open := startServer(t, fmt.Sprintf(corefile, "", bigRelaySet(100)))
	capped := startServer(t, fmt.Sprintf(corefile, "bufsize 1232", bigRelaySet(100)))
	q, a, _ := amplification(t, open)
	t.Logf("Without bufsize: %d-byte query, %d-byte answer, %.1fx", q, a, float64(a)/float64(q))
	if a <= 1232 {
		t.Fatalf("The relay set is too small to show anything: %d bytes", a)
	}
	q, a, tc := amplification(t, capped)
	t.Logf("With bufsize 1232: %d-byte query, %d-byte answer (TC %v), %.1fx", q, a, tc, float64(a)/float64(q))
	if a > 1232 || !tc {
		t.Errorf("With bufsize 1232: a %d-byte answer, TC %v; want at most 1232 bytes, truncated", a, tc)
	}
}
