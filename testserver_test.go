package amtrelay

import (
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"
)

// caddy.Start and Restart touch process-wide state (the directive list, signal traps); one at a time.
var caddyMu sync.Mutex

type testServer struct {
	inst     *caddy.Instance
	udp, tcp string
}

type corefileInput string

func (c corefileInput) Body() []byte       { return []byte(c) }
func (c corefileInput) Path() string       { return "Corefile" }
func (c corefileInput) ServerType() string { return "dns" }

// startServer runs a real CoreDNS server for the test's lifetime. The Corefile's first server block
// must listen on 127.0.0.1 port 0.
func startServer(t *testing.T, corefile string) *testServer {
	t.Helper()
	caddyMu.Lock()
	caddy.Quiet = true
	inst, err := caddy.Start(corefileInput(corefile))
	caddyMu.Unlock()
	if err != nil {
		t.Fatalf("Failed to start CoreDNS: %v", err)
	}
	s := &testServer{inst: inst}
	t.Cleanup(func() { s.shutdown() })
	srv := inst.Servers()[0]
	s.udp, s.tcp = srv.LocalAddr().String(), srv.Addr().String()
	s.waitServing(t)
	return s
}

// waitServing returns once the first server answers over UDP and TCP. caddy returns from Start and
// Restart with the listeners open but the serving goroutines maybe not yet running, and a server
// stopped before it runs ignores the stop: the test would then hang in Wait. The query is for a
// name in no zone of the test Corefiles, so no plugin counts it (a "." block hands it on).
func (s *testServer) waitServing(t *testing.T) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("serving.invalid.", dns.TypeTXT)
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 200 * time.Millisecond}
		addr := s.udp
		if proto == "tcp" {
			addr = s.tcp
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, _, err := c.Exchange(q, addr); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("CoreDNS does not answer over %s at %s: %v", proto, addr, err)
			}
		}
	}
}

// shutdown stops the way a SIGTERM does: shutdown callbacks first (they stop the probers), then listeners.
func (s *testServer) shutdown() {
	if s.inst == nil {
		return
	}
	s.inst.ShutdownCallbacks()
	s.inst.Stop()
	s.inst.Wait()
	s.inst = nil
}

// reload swaps in a new Corefile the way the reload plugin and SIGUSR1 do.
func (s *testServer) reload(t *testing.T, corefile string) {
	t.Helper()
	caddyMu.Lock()
	inst, err := s.inst.Restart(corefileInput(corefile))
	caddyMu.Unlock()
	if err != nil {
		t.Fatalf("Reload failed: %v", err)
	}
	s.inst = inst
	srv := inst.Servers()[0]
	s.udp, s.tcp = srv.LocalAddr().String(), srv.Addr().String()
	s.waitServing(t)
}

// response is a reply as it came off the wire. msg is nil when miekg/dns cannot unpack it, which
// is the case for any AMTRELAY with the D-bit set (miekg/dns v1.1.73 bug); raw is always there.
type response struct {
	raw []byte
	msg *dns.Msg
}

func (s *testServer) query(t *testing.T, proto, name string, qtype uint16) response {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(4096, false)
	return s.exchange(t, proto, q)
}

func (s *testServer) exchange(t *testing.T, proto string, q *dns.Msg) response {
	t.Helper()
	out, err := q.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	addr := s.udp
	if proto == "tcp" {
		addr = s.tcp
	}
	conn, err := net.DialTimeout(proto, addr, 2*time.Second)
	if err != nil {
		t.Fatalf("Dial %s %s: %v", proto, addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	var raw []byte
	if proto == "tcp" {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(out)))
		if _, err := conn.Write(append(framed, out...)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		var n [2]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			t.Fatalf("Read length: %v", err)
		}
		raw = make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(conn, raw); err != nil {
			t.Fatalf("Read: %v", err)
		}
	} else {
		if _, err := conn.Write(out); err != nil {
			t.Fatalf("Write: %v", err)
		}
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("Read %s %s: %v", proto, q.Question[0].Name, err)
		}
		raw = buf[:n]
	}
	r := response{raw: raw}
	if m := new(dns.Msg); m.Unpack(raw) == nil {
		r.msg = m
	}
	if binary.BigEndian.Uint16(raw) != q.Id {
		t.Fatalf("Reply ID %d does not match query ID %d", binary.BigEndian.Uint16(raw), q.Id)
	}
	return r
}

// wireRR is one resource record read straight from the wire, bypassing miekg/dns's RDATA decoders.
type wireRR struct {
	name  string
	rtype uint16
	ttl   uint32
	rdata string // hex
}

// sections walks the raw message: header, question, then answer, authority and additional records.
func (r response) sections(t *testing.T) (rcode int, aa bool, question string, sec [3][]wireRR) {
	t.Helper()
	b := r.raw
	if len(b) < 12 {
		t.Fatalf("Short reply: %d bytes", len(b))
	}
	flags := binary.BigEndian.Uint16(b[2:])
	rcode, aa = int(flags&0xf), flags&0x0400 != 0
	counts := [4]int{}
	for i := range counts {
		counts[i] = int(binary.BigEndian.Uint16(b[4+2*i:]))
	}
	off := 12
	for i := 0; i < counts[0]; i++ {
		name, next, err := dns.UnpackDomainName(b, off)
		if err != nil {
			t.Fatalf("Question name: %v", err)
		}
		question, off = name, next+4
	}
	for s := 0; s < 3; s++ {
		for i := 0; i < counts[s+1]; i++ {
			name, next, err := dns.UnpackDomainName(b, off)
			if err != nil || next+10 > len(b) {
				t.Fatalf("Record %d of section %d: %v", i, s, err)
			}
			rr := wireRR{name: name, rtype: binary.BigEndian.Uint16(b[next:]), ttl: binary.BigEndian.Uint32(b[next+4:])}
			rdlen := int(binary.BigEndian.Uint16(b[next+8:]))
			if next+10+rdlen > len(b) {
				t.Fatalf("Record %d of section %d overruns the message", i, s)
			}
			rr.rdata = hex.EncodeToString(b[next+10 : next+10+rdlen])
			sec[s] = append(sec[s], rr)
			off = next + 10 + rdlen
		}
	}
	if off != len(b) {
		t.Fatalf("Trailing %d bytes after the last record", len(b)-off)
	}
	return rcode, aa, question, sec
}

// fellThrough reports whether the whoami plugin behind amtrelay wrote the reply: an empty answer and
// the client's address and port in the additional section.
func (r response) fellThrough() bool {
	if r.msg == nil || len(r.msg.Answer) > 0 || len(r.msg.Ns) > 0 {
		return false
	}
	for _, rr := range r.msg.Extra {
		if srv, ok := rr.(*dns.SRV); ok && strings.HasPrefix(srv.Hdr.Name, "_") {
			return true
		}
	}
	return false
}
