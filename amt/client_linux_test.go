package amt

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// quietEndpoint is a Client's IPv4 endpoint without its reader, so that a
// test decides who touches the socket first.
func quietEndpoint(t *testing.T) (*Client, *endpoint) {
	t.Helper()
	c := &Client{closing: make(chan struct{})}
	e, err := c.open(netip.IPv4Unspecified())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	c.v4 = e
	t.Cleanup(func() { e.close(); c.wg.Wait() })
	return c, e
}

func closedPort4(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	a := l.LocalAddr().(*net.UDPAddr).AddrPort()
	l.Close()
	return a
}

// refuseOne registers a step towards a closed port, sends its Discovery and
// waits until the ICMP error is queued on the socket.
func refuseOne(t *testing.T, e *endpoint) *inflight {
	t.Helper()
	p := getInflight(time.Minute)
	t.Cleanup(func() { e.release(p); putInflight(p) })
	if _, err := e.exchange(p, typeAdvertisement, closedPort4(t)); err != nil {
		t.Fatalf("exchange: %v", err)
	}
	waitErrQueued(t, e.rc)
	return p
}

// waitErrQueued waits until an ICMP error is queued on the socket (poll
// reports it without consuming it).
func waitErrQueued(t *testing.T, rc syscall.RawConn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var revents int16
		err := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd)}}
			_, _ = unix.Poll(fds, 10)
			revents = fds[0].Revents
		})
		if err != nil {
			t.Fatalf("Control: %v", err)
		}
		if revents&unix.POLLERR != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("No ICMP error queued within 5 s")
		}
	}
}

func wantRefusedStep(t *testing.T, e *endpoint, p *inflight) {
	t.Helper()
	e.mu.Lock()
	done, o, err := p.done, p.outcome, p.err
	e.mu.Unlock()
	if !done || o != outFailed || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Refused step: done %v, outcome %v, err %v; want failed with ECONNREFUSED", done, o, err)
	}
}

// TestSharedSocketErrorGoesToNextCall shows what the Client is built
// around: with IP_RECVERR, an ICMP error fails the next call on the socket,
// a send as well as a read, and that send does not go out.
func TestSharedSocketErrorGoesToNextCall(t *testing.T) {
	_, e := quietEndpoint(t)
	refuseOne(t, e)
	sink, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer sink.Close()
	_, err = e.conn.WriteToUDPAddrPort([]byte{1}, sink.LocalAddr().(*net.UDPAddr).AddrPort())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Send after an ICMP error: %v, want ECONNREFUSED", err)
	}
	_ = sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := sink.ReadFromUDPAddrPort(make([]byte, 8)); err == nil {
		t.Error("The failed send went out")
	}
}

// TestClientSendRecoversICMPError: a send that picks up another probe's
// ICMP error hands it to that probe and goes out anyway.
func TestClientSendRecoversICMPError(t *testing.T) {
	c, e := quietEndpoint(t)
	refused := refuseOne(t, e)
	sink, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer sink.Close()
	if err := e.send([]byte{1}, sink.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatalf("send: %v", err)
	}
	_ = sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := sink.ReadFromUDPAddrPort(make([]byte, 8)); err != nil {
		t.Errorf("The retried send did not arrive: %v", err)
	}
	wantRefusedStep(t, e, refused)
	if s := c.Stats(); s.ICMPErrors != 1 {
		t.Errorf("Stats %+v, want one ICMP error", s)
	}
}

// TestClientReadRecoversICMPError: with an ICMP error and a reply both
// queued, the reader hands out both instead of failing the read.
func TestClientReadRecoversICMPError(t *testing.T) {
	c, e := quietEndpoint(t)
	refused := refuseOne(t, e)

	relay, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer relay.Close()
	// The Discovery itself goes straight to the relay socket, past the
	// queued error, so that both are waiting when the reader starts.
	p := getInflight(time.Minute)
	defer putInflight(p)
	nonce, err := e.register(p, typeAdvertisement, relay.LocalAddr().(*net.UDPAddr).AddrPort())
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.conn.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	if _, err := relay.WriteToUDPAddrPort(AppendAdvertisement(nil, nonce, netip.MustParseAddr("127.0.0.1")), local); err != nil {
		t.Fatalf("Send: %v", err)
	}

	c.wg.Add(1)
	go e.read()
	select {
	case <-p.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("The reply was not handed out")
	}
	e.release(p)
	if p.outcome != outReply {
		t.Errorf("Reply step outcome %v, want a reply", p.outcome)
	}
	wantRefusedStep(t, e, refused)
	if s := c.Stats(); s.ReadErrors != 0 || s.ICMPErrors != 1 || s.Replies != 1 {
		t.Errorf("Stats %+v", s)
	}
}
