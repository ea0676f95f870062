package amt

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRecvErrNeeded shows why setRecvErr exists: on Linux an unconnected
// UDP socket is told about ICMP port unreachable only with IP_RECVERR /
// IPV6_RECVERR set; without it the same send ends in a timeout.
func TestRecvErrNeeded(t *testing.T) {
	for _, tc := range []struct{ network, loop string }{
		{"udp4", "127.0.0.1:0"},
		{"udp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			// Bind and release to find a port nobody listens on.
			l, err := net.ListenPacket(tc.network, tc.loop)
			if err != nil {
				t.Skipf("No %s loopback: %v", tc.network, err)
			}
			closed := l.LocalAddr().(*net.UDPAddr).AddrPort()
			l.Close()

			for _, withOpt := range []bool{false, true} {
				c, err := net.ListenUDP(tc.network, nil)
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				if withOpt {
					if err := setRecvErr(c, tc.network == "udp6"); err != nil {
						t.Fatalf("SetRecvErr: %v", err)
					}
				}
				if _, err := c.WriteToUDPAddrPort(AppendDiscovery(nil, 1), closed); err != nil {
					t.Fatalf("Send: %v", err)
				}
				// The refusal ends the read early, so only the negative
				// case needs a short wait.
				wait := 300 * time.Millisecond
				if withOpt {
					wait = 5 * time.Second
				}
				_ = c.SetReadDeadline(time.Now().Add(wait))
				_, _, err = c.ReadFromUDPAddrPort(make([]byte, 32))
				c.Close()
				if withOpt && !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("With RECVERR: read error %v, want ECONNREFUSED", err)
				}
				if !withOpt && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Without RECVERR: read error %v, want a timeout", err)
				}
			}
		})
	}
}

// TestSendPastRefusalsInARow: a send that meets the pending error of
// another datagram's ICMP error, time after time, goes out once they stop,
// and a send that fails on its own gives up after sendTries. Every try
// here is preceded by a datagram to a closed port from the same socket,
// whose refusal is queued before the try: under a burst of refusals each
// try of a send can meet a new one.
func TestSendPastRefusalsInARow(t *testing.T) {
	loop := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	sink, err := net.ListenUDP("udp4", loop)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	l, err := net.ListenUDP("udp4", loop)
	if err != nil {
		t.Fatal(err)
	}
	closed := l.LocalAddr().(*net.UDPAddr).AddrPort()
	l.Close()

	c, err := net.ListenUDP("udp4", loop)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := setRecvErr(c, false); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	q := &errQueue{rc: rc, handle: func(dst netip.AddrPort, errno syscall.Errno) {
		if dst == closed && errno == syscall.ECONNREFUSED {
			refusals++
		}
	}}
	msg := AppendDiscovery(nil, 1)
	// refuse sends to the closed port until a refusal is queued. The
	// kernel drops ICMP errors past its rate limit (a burst of 50, then
	// 1,000 a second, shared with other tests), so a lost one is sent
	// for again.
	refuse := func() {
		for range 50 {
			if _, err := c.WriteToUDPAddrPort(msg, closed); err != nil {
				t.Fatalf("Send to the closed port: %v", err)
			}
			queued := false
			_ = rc.Control(func(fd uintptr) {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLERR}}
				n, _ := unix.Poll(fds, 100)
				queued = n == 1 && fds[0].Revents&unix.POLLERR != 0
			})
			if queued {
				return
			}
		}
		t.Fatal("No refusal from the closed port in 50 tries")
	}

	const inARow = 10 // more than sendTries
	tries := 0
	err = q.send(func() error {
		if tries++; tries <= inARow {
			refuse()
		}
		_, err := c.WriteToUDPAddrPort(msg, sink.LocalAddr().(*net.UDPAddr).AddrPort())
		return err
	})
	if err != nil || tries != inARow+1 {
		t.Errorf("Send past %d refusals in a row: %v after %d tries, want success at try %d", inARow, err, tries, inARow+1)
	}
	if refusals < inARow {
		t.Errorf("%d refusals handed on, want at least %d", refusals, inARow)
	}

	local := errors.New("a local error")
	tries = 0
	if err := q.send(func() error { tries++; return local }); err != local || tries != sendTries {
		t.Errorf("Send failing on its own: %v after %d tries, want %v after %d", err, tries, local, sendTries)
	}
}
