package amt

import (
	"errors"
	"net"
	"net/netip"
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
	if _, err := tn.conn.WriteToUDPAddrPort(AppendDiscovery(nil, 1), closed); err != nil {
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
