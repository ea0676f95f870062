package amt

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTunnelUpdatePastICMPError: an Update sent while an ICMP error is
// pending on the tunnel's socket still goes out (Linux would fail the send
// with the error instead), and the error is kept for Run.
func TestTunnelUpdatePastICMPError(t *testing.T) {
	relay, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer relay.Close()
	relayAddr := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	tn, err := NewTunnel(relayAddr, TunnelOptions{})
	if err != nil {
		t.Fatalf("NewTunnel: %v", err)
	}
	defer tn.Close()
	// Established, without running: only this test touches the socket.
	tn.mu.Lock()
	tn.st.State, tn.st.Relay = TunnelEstablished, relayAddr
	tn.st.Query, tn.haveQuery = Query{Nonce: 7}, true
	tn.mu.Unlock()

	closed := closedPort4(t)
	if err := tn.sock.sendTo(AppendDiscovery(nil, 1), closed); err != nil {
		t.Fatalf("Send: %v", err)
	}
	waitErrQueued(t, tn.errq.rc)

	if err := tn.Join(netip.MustParseAddr("100.127.1.10"), netip.MustParseAddr("232.1.1.1")); err != nil {
		t.Fatalf("Join: %v", err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := relay.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("No Update arrived: %v", err)
	}
	if u, err := ParseUpdate(buf[:n]); err != nil || u.Nonce != 7 {
		t.Errorf("Got %x (%v), want the Update", buf[:n], err)
	}
	tn.icmpMu.Lock()
	queued := append([]queuedICMP(nil), tn.icmp...)
	tn.icmpMu.Unlock()
	if len(queued) != 1 || queued[0].dst != closed || !errors.Is(queued[0].errno, syscall.ECONNREFUSED) {
		t.Errorf("Errors kept for Run: %+v, want the refusal from %v", queued, closed)
	}
}

// The tunnel poller runs while a tunnel runs, and its goroutine is gone
// once the last one has finished; the next tunnel starts it again.
func TestTunnelPollerStops(t *testing.T) {
	relay, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer relay.Close()
	relayAddr := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	running := func() bool {
		tunnelPoller.mu.Lock()
		defer tunnelPoller.mu.Unlock()
		return tunnelPoller.file != nil
	}
	for round := range 2 {
		tn, err := NewTunnel(relayAddr, TunnelOptions{})
		if err != nil {
			t.Fatalf("NewTunnel: %v", err)
		}
		if running() {
			t.Fatalf("Round %d: the poller runs before any tunnel does (a tunnel of another test left open?)", round)
		}
		errc := make(chan error, 1)
		go func() { errc <- tn.Run(context.Background()) }()
		deadline := time.Now().Add(5 * time.Second)
		for !running() {
			if time.Now().After(deadline) {
				t.Fatalf("Round %d: the poller did not start", round)
			}
			time.Sleep(time.Millisecond)
		}
		tn.Close()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
		if running() {
			t.Errorf("Round %d: the poller still runs after its last tunnel closed", round)
		}
		buf := make([]byte, 1<<20)
		if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "amt.pollTunnels") {
			t.Errorf("Round %d: the poller's goroutine outlived the last tunnel", round)
		}
	}
}
