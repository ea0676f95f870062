package main

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestParseResolver(t *testing.T) {
	good := map[string]string{
		"192.0.2.53":          "192.0.2.53:53",
		"192.0.2.53:5353":     "192.0.2.53:5353",
		"::1":                 "[::1]:53",
		"[::1]":               "[::1]:53",
		"[2001:db8::53]:5353": "[2001:db8::53]:5353",
		"::ffff:192.0.2.53":   "192.0.2.53:53",
		"[fe80::1%eth0]:53":   "[fe80::1%eth0]:53",
	}
	for in, want := range good {
		got, err := parseResolver(in)
		if err != nil || got.String() != want {
			t.Errorf("%q: %v %v, want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "dns.example.net", "dns.example.net:53", "192.0.2.53:0", "192.0.2.53:65536", "192.0.2.53:x", "[192.0.2.53]", "2001:db8::53:5353x", "[::1"} {
		if got, err := parseResolver(in); err == nil {
			t.Errorf("%q accepted as %v", in, got)
		}
	}
}

func TestSystemResolvers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	os.WriteFile(conf, []byte("# comment\nsearch example.net\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\noptions timeout:1\n"), 0o644)
	got, note := systemResolvers(conf)
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("[2001:db8::1]:53"), netip.MustParseAddrPort("192.0.2.2:53")}
	if !slices.Equal(got, want) || note != "" {
		t.Errorf("Servers %v (%q), want the first three: %v", got, note, want)
	}

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("search example.net\n"), 0o644)
	for _, path := range []string{empty, filepath.Join(dir, "missing")} {
		got, note := systemResolvers(path)
		if len(got) != 2 || !got[0].Addr().IsLoopback() || note == "" {
			t.Errorf("%s: %v %q, want the local host and a note", path, got, note)
		}
	}
}

// The limiter lets n through at once, then holds the next until the
// window of the oldest has passed; only a lower bound on the wait is
// checked, which a slow machine cannot break.
func TestRateLimiter(t *testing.T) {
	l := newRateLimiter(10, 100*time.Millisecond)
	start := time.Now()
	for range 10 {
		if err := l.wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("The 11th query left after %v, want 100ms or more", d)
	}
	full := newRateLimiter(1, time.Hour)
	full.wait(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- full.wait(ctx) }()
	cancel()
	if err := recv(t, "the cancelled wait", done); err == nil {
		t.Errorf("A cancelled wait returned nil")
	}
}

// A server that never answers is skipped for the next one, and every
// exchange is kept for the report.
func TestResolverNextServer(t *testing.T) {
	l := newLab(t)
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closed, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().(*net.UDPAddr).AddrPort()
	closed.Close()
	rv := &resolver{
		servers: []netip.AddrPort{silent.LocalAddr().(*net.UDPAddr).AddrPort(), closedAddr, netip.MustParseAddrPort(l.dns)},
		// Long enough for a loaded machine's CoreDNS, short for the silent one.
		timeout: time.Second, udpSize: 1232, limit: newRateLimiter(10, 100*time.Millisecond),
	}
	res := resolve(context.Background(), rv, "anycast", "amt."+"16.100.51.198.in-addr.arpa.", dns.TypeA)
	if res.Status != "answer" || len(res.Records) != 1 {
		t.Fatalf("Status %s, %d records", res.Status, len(res.Records))
	}
	ex := res.Steps[0].Exchanges
	if len(ex) != 3 || ex[0].outcome() != "timeout" || ex[1].outcome() != "refused" || ex[2].outcome() != "NOERROR" {
		for _, e := range ex {
			t.Logf("%v %s %v", e.Server, e.outcome(), e.Err)
		}
		t.Fatalf("Exchanges: want timeout, refused, NOERROR")
	}
	if a, _ := addrOf(res.Records[0]); a.String() != rData {
		t.Errorf("Record %v", res.Records[0].Data())
	}
}

// cnameServer answers every query with the CNAME next(qname) gives, and
// nothing else: an authoritative server for the first name only.
func cnameServer(t *testing.T, next func(string) string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		m.Answer = []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: next(q.Name)}}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestResolveCNAMELimits(t *testing.T) {
	cases := []struct {
		name  string
		next  func(string) string
		want  string
		steps int
	}{
		{"loop", func(q string) string {
			if q == "a.example.net." {
				return "b.example.net."
			}
			return "a.example.net."
		}, "cname_loop", 2},
		// a. -> 1.a. -> 1.1.a. ...: a new name every time.
		{"chain too long", func(q string) string { return "1." + q }, "cname_chain_too_long", maxChain + 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rv := &resolver{servers: []netip.AddrPort{cnameServer(t, tc.next)}, timeout: 5 * time.Second,
				udpSize: 1232, limit: newRateLimiter(10, 100*time.Millisecond)}
			res := resolve(context.Background(), rv, "driad", "a.example.net.", typeAMTRELAY)
			if res.Status != tc.want || len(res.Steps) != tc.steps || len(res.Records) != 0 {
				t.Errorf("Status %s after %d queries, want %s after %d", res.Status, len(res.Steps), tc.want, tc.steps)
			}
			for i, st := range res.Steps[:len(res.Steps)-1] {
				if st.Status != "cname" || (i > 0 && st.CNAMEOf != res.Steps[i-1].Name) {
					t.Errorf("Step %d: %s %s (of %q)", i, st.Name, st.Status, st.CNAMEOf)
				}
			}
		})
	}
}
