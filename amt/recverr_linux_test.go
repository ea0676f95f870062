package amt

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
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
