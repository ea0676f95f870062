package main

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/amtdns/amtrelay/amt"
)

// TestRunForwardsRealMulticast runs the whole path the end-to-end suite
// uses, in a new network namespace: an amt.Tunnel joins (S,G) through the
// command's relay, a sender multicasts on the data interface, and the
// tunnel counts the data. Needs root; skipped otherwise.
func TestRunForwardsRealMulticast(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("No ip command")
	}
	// The thread stays locked and in the namespace until the test's
	// goroutine ends, and dies with it. Sockets are made here, so they
	// are in the namespace whichever goroutine uses them later.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("Unshare: %v", err)
	}
	for _, cmd := range []string{
		"link set lo up",
		"link add amtv0 type veth peer name amtv1",
		"link set amtv0 up",
		"link set amtv1 up",
		"addr add 10.9.0.1/24 dev amtv0",
	} {
		if out, err := exec.Command("ip", strings.Fields(cmd)...).CombinedOutput(); err != nil {
			t.Skipf("ip %s: %v: %s", cmd, err, out)
		}
	}
	s, g := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("232.1.1.1")
	relay := netip.MustParseAddrPort("127.0.0.1:2268") // free in a new namespace

	tn, err := amt.NewTunnel(relay, amt.TunnelOptions{ReplyTimeout: 200 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatalf("NewTunnel: %v", err)
	}
	if err := tn.Join(s, g); err != nil {
		t.Fatalf("Join: %v", err)
	}
	sender, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s, 6000)))
	if err != nil {
		t.Fatalf("Sender: %v", err)
	}
	defer sender.Close()
	ifi, err := net.InterfaceByName("amtv0")
	if err != nil {
		t.Fatalf("Interface: %v", err)
	}
	p := ipv4.NewPacketConn(sender)
	if err := p.SetMulticastInterface(ifi); err != nil {
		t.Fatalf("SetMulticastInterface: %v", err)
	}
	if err := p.SetMulticastLoopback(true); err != nil {
		t.Fatalf("SetMulticastLoopback: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	checked := make(chan string, 1) // "" when the data arrived
	go func() {
		defer cancel()
		runCtx, stopRun := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		go func() { runDone <- tn.Run(runCtx) }()
		defer func() { stopRun(); <-runDone }()
		deadline := time.Now().Add(10 * time.Second)
		for tn.Packets(s, g) == 0 {
			if time.Now().After(deadline) {
				checked <- "no data counted; tunnel " + tn.Status().State.String()
				return
			}
			if tn.Status().State == amt.TunnelEstablished {
				_, _ = sender.WriteToUDP([]byte("live"), &net.UDPAddr{IP: g.AsSlice(), Port: 5001})
			}
			time.Sleep(20 * time.Millisecond)
		}
		checked <- ""
	}()
	var out syncBuffer
	if code := run(ctx, []string{"-listen", relay.String(), "-data-interface", "amtv0", "-data-port", "5001"}, &out); code != 0 {
		t.Fatalf("Exit code %d: %s", code, out.String())
	}
	if msg := <-checked; msg != "" {
		t.Errorf("%s; output %q", msg, out.String())
	}
	if !strings.Contains(out.String(), "join (10.9.0.1, 232.1.1.1) on amtv0") {
		t.Errorf("Join not logged: %q", out.String())
	}
}
