package amtrelay

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// explainQuery asks the server why: CH TXT for name.
func explainQuery(t *testing.T, s *testServer, name string) response {
	t.Helper()
	q := question(name, dns.TypeTXT)
	q.Question[0].Qclass = dns.ClassCHAOS
	q.SetEdns0(4096, false)
	return s.exchange(t, "udp", q)
}

func explainLines(r response) string {
	var lines []string
	for _, rr := range r.msg.Answer {
		lines = append(lines, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return strings.Join(lines, "\n")
}

func TestExplain(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "s.txt"), "# net2\n203.0.113.0/24 b\n")
	dead := startResponder(t, "127.0.0.101:0")
	dead.Stop()
	s := startServer(t, fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	root %s
	amtrelay {
		relay a 127.0.0.100 probe 127.0.0.100:9
		relay b %s probe %s precedence 5
		source 198.51.100.0/24 a b
		sources s.txt
		explain
		health_check 1s timeout 200ms
		all_down nodata
	}
	whoami
}
`, dir, dead.Addr().Addr(), dead.Addr()))
	eventually(t, "both relays probed", 5*time.Second, func() (bool, string) {
		r := explainQuery(t, s, apexS)
		got := explainLines(r)
		return strings.Count(got, "last probe refused") == 2, got
	})
	r := explainQuery(t, s, apexS)
	got := explainLines(r)
	t.Logf("Explanation:\n%s", got)
	for _, want := range []string{
		"source 198.51.100.12, anycast AMT DNS apex",
		"table: 198.51.100.0/24 from source line Corefile:7",
		"relay b 127.0.0.101 precedence 5: down, last probe refused at discovery",
		"relay a 127.0.0.100 precedence 0: down, last probe refused at discovery",
		"all_down nodata: applied: no relay serves",
		"IN A now: NOERROR without records (all_down)",
		"IN AAAA now: NOERROR without records (all_down)",
		"IN AMTRELAY now: NOERROR without records (all_down)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Explanation lacks %q", want)
		}
	}
	if r.msg.Authoritative || r.msg.Answer[0].Header().Class != dns.ClassCHAOS || r.msg.Answer[0].Header().Ttl != 0 {
		t.Errorf("Explanation header: %v", r.msg)
	}

	// The sources file's line, and the RFC 8777 name.
	got = explainLines(explainQuery(t, s, "7.113.0.203.in-addr.arpa."))
	for _, want := range []string{"RFC 8777 owner name", "table: 203.0.113.0/24 from " + filepath.Join(dir, "s.txt") + ":2", "IN AMTRELAY now"} {
		if !strings.Contains(got, want) {
			t.Errorf("Explanation of the file's entry lacks %q:\n%s", want, got)
		}
	}
	// A source in no table.
	if got := explainLines(explainQuery(t, s, "amt.1.2.0.192.in-addr.arpa.")); !strings.Contains(got, "table: no entry holds 192.0.2.1: NXDOMAIN") {
		t.Errorf("Explanation of an unknown source:\n%s", got)
	}
	// CH for other names and types is the next plugin's (whoami answers).
	q := question(apexS, dns.TypeA)
	q.Question[0].Qclass = dns.ClassCHAOS
	if r := s.exchange(t, "udp", q); !r.fellThrough() {
		t.Errorf("CH A at the apex: want the next plugin, got %v", r.msg)
	}
	if r := explainQuery(t, s, "foo."+revS); !r.fellThrough() {
		t.Errorf("CH TXT at a name that is not ours: want the next plugin, got %v", r.msg)
	}
}

// Only the clients explain names may ask; without explain, CH is refused by CoreDNS, as before.
func TestExplainRefused(t *testing.T) {
	const block = `in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay a 192.0.2.1
		source 198.51.100.0/24 a
		health_check off
		%s
	}
}
`
	s := startServer(t, fmt.Sprintf(block, "explain 10.0.0.0/8 2001:db8::1"))
	if r := explainQuery(t, s, apexS); r.msg.Rcode != dns.RcodeRefused {
		t.Errorf("From a client explain does not name: %v, want REFUSED", r.msg)
	}
	s.reload(t, fmt.Sprintf(block, "explain 127.0.0.2 127.0.0.1"))
	if r := explainQuery(t, s, apexS); r.msg.Rcode != dns.RcodeSuccess || len(r.msg.Answer) == 0 {
		t.Errorf("From a client explain names: %v", r.msg)
	}
	s.reload(t, fmt.Sprintf(block, "explain ::ffff:127.0.0.0/104"))
	if r := explainQuery(t, s, apexS); r.msg.Rcode != dns.RcodeSuccess || len(r.msg.Answer) == 0 {
		t.Errorf("From a client an IPv4-mapped explain prefix holds: %v", r.msg)
	}
	s.reload(t, fmt.Sprintf(block, ""))
	if r := explainQuery(t, s, apexS); r.msg.Rcode != dns.RcodeRefused || len(r.msg.Answer) != 0 {
		t.Errorf("Without explain: %v, want CoreDNS's REFUSED", r.msg)
	}
	if got := addressesOf(t, s, "udp", apexS); got != "192.0.2.1" {
		t.Errorf("IN A: %s", got)
	}
}
