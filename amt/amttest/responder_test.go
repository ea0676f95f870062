package amttest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// exchange sends msg to target from a fresh socket and returns the first
// reply, or ok=false if none arrived within wait.
func exchange(t *testing.T, target netip.AddrPort, msg []byte, wait time.Duration) (reply []byte, from netip.AddrPort, ok bool) {
	t.Helper()
	nw := "udp6"
	if target.Addr().Is4() {
		nw = "udp4"
	}
	c, err := net.ListenUDP(nw, nil)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort(msg, target); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	buf := make([]byte, 128)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, netip.AddrPort{}, false
	}
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return buf[:n], from, true
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("Bad hex %q: %v", s, err)
	}
	return b
}

// waitDiscoveries polls because the count is bumped by the responder's
// goroutine, possibly after the client has given up waiting for a reply.
func waitDiscoveries(t *testing.T, r *Responder, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.Discoveries() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := r.Discoveries(); got != want {
		t.Errorf("Discoveries = %d, want %d", got, want)
	}
}

func start(t *testing.T, addr string) *Responder {
	t.Helper()
	r, err := Start(addr)
	if err != nil {
		if addr[0] == '[' {
			t.Skipf("No IPv6 loopback: %v", err)
		}
		t.Fatalf("Start(%q): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return r
}

// Replies expected from each mode for Discovery 0100000012345678 sent to a
// responder on 127.0.0.1 (advertising itself).
func TestModesWire(t *testing.T) {
	tests := []struct {
		mode       Mode
		want       string // "" = no reply
		sameSource bool
	}{
		{Normal, "02000000123456787f000001", true},
		{Silent, "", false},
		{WrongNonce, "02000000486e0c227f000001", true},
		{WrongType, "04000000123456787f000001", true},
		{Short, "0200000012345678", true},
		{OtherSource, "02000000123456787f000001", false},
		// The new modes leave Discovery alone.
		{RequestSilent, "02000000123456787f000001", true},
		{Limit, "02000000123456787f000001", true},
		{NoData, "02000000123456787f000001", true},
	}
	r := start(t, "127.0.0.1:0")
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			r.SetMode(tc.mode)
			before := r.Discoveries()
			wait := 2 * time.Second
			if tc.want == "" {
				wait = 200 * time.Millisecond
			}
			got, from, ok := exchange(t, r.Addr(), unhex(t, "0100000012345678"), wait)
			if tc.want == "" {
				if ok {
					t.Errorf("Got reply %x, want none", got)
				}
			} else if !ok {
				t.Fatalf("No reply, want %s", tc.want)
			} else {
				if !bytes.Equal(got, unhex(t, tc.want)) {
					t.Errorf("Reply %x, want %s", got, tc.want)
				}
				if (from == r.Addr()) != tc.sameSource {
					t.Errorf("Reply from %v, responder at %v, same source wanted: %v", from, r.Addr(), tc.sameSource)
				}
				if from.Addr() != r.Addr().Addr() {
					t.Errorf("Reply from IP %v, want %v", from.Addr(), r.Addr().Addr())
				}
			}
			// With no reply to wait for (Silent) the count may lag behind.
			waitDiscoveries(t, r, before+1)
		})
	}
}

func TestDropsInvalidDiscovery(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer c.Close()
	// One socket, one responder goroutine: datagrams are handled in order,
	// so if the first reply is the one to the final valid Discovery, none
	// of the invalid ones was answered. No waiting for silence needed.
	for _, msg := range []string{
		"0100000000000000",         // nonce 0: relays drop it
		"01000000",                 // short
		"1100000012345678",         // version 1
		"0300000000000000",         // Request with nonce 0: dropped
		"02000000123456787f000001", // Advertisement
		"",                         // empty datagram
		"0100000012345678deadbeef", // trailing bytes: answered, like amtrelayd
		"01ff000011111111",         // reserved bits set: answered
		"01000000000000ff",         // the marker
	} {
		if _, err := c.WriteToUDPAddrPort(unhex(t, msg), r.Addr()); err != nil {
			t.Fatalf("Send %s: %v", msg, err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for _, want := range []string{
		"02000000123456787f000001",
		"02000000111111117f000001",
		"02000000000000ff7f000001",
	} {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("Waiting for %s: %v", want, err)
		}
		if got := hex.EncodeToString(buf[:n]); got != want {
			t.Errorf("Reply %s, want %s", got, want)
		}
	}
	if d := r.Discoveries(); d != 3 {
		t.Errorf("Discoveries = %d, want 3", d)
	}
}

func TestIPv6AndAdvertised(t *testing.T) {
	r := start(t, "[::1]:0")
	got, from, ok := exchange(t, r.Addr(), unhex(t, "01000000a1b2c3d4"), 2*time.Second)
	if want := unhex(t, "02000000a1b2c3d400000000000000000000000000000001"); !ok || !bytes.Equal(got, want) {
		t.Errorf("Got %x (reply: %v), want %x", got, ok, want)
	}
	if from != r.Addr() {
		t.Errorf("Reply from %v, want %v", from, r.Addr())
	}
	// The advertised family need not match the transport family.
	r.SetAdvertised(netip.MustParseAddr("192.0.2.10"))
	got, _, ok = exchange(t, r.Addr(), unhex(t, "0100000012345678"), 2*time.Second)
	if want := unhex(t, "0200000012345678c000020a"); !ok || !bytes.Equal(got, want) {
		t.Errorf("Got %x (reply: %v), want %x", got, ok, want)
	}
}

func TestStopRestart(t *testing.T) {
	r := start(t, "127.0.0.3:0")
	addr := r.Addr()
	if addr.Port() == 0 || addr.Addr() != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("Addr() = %v", addr)
	}
	disc := unhex(t, "0100000000000042")
	if _, _, ok := exchange(t, addr, disc, 2*time.Second); !ok {
		t.Fatalf("No reply before Stop")
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("Second Stop: %v", err)
	}
	if got, _, ok := exchange(t, addr, disc, 100*time.Millisecond); ok {
		t.Errorf("Reply %x after Stop", got)
	}
	for range 2 { // second round: Restart of a running responder
		if err := r.Restart(); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		if r.Addr() != addr {
			t.Errorf("Addr() after Restart = %v, want %v", r.Addr(), addr)
		}
		if _, _, ok := exchange(t, addr, disc, 2*time.Second); !ok {
			t.Errorf("No reply after Restart")
		}
	}
	if d := r.Discoveries(); d != 3 {
		t.Errorf("Discoveries = %d, want 3 (counted across restarts)", d)
	}
}

func TestRestartPortTaken(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	squat, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatalf("Bind freed port: %v", err)
	}
	defer squat.Close()
	if err := r.Restart(); err == nil {
		t.Errorf("Restart succeeded on a taken port")
	}
}

func TestStartErrors(t *testing.T) {
	for _, addr := range []string{"", "localhost:0", "127.0.0.1", "192.0.2.1:0"} {
		if r, err := Start(addr); err == nil {
			r.Stop()
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
}

func TestConcurrentControl(t *testing.T) {
	r := start(t, "127.0.0.1:0")
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			r.SetMode(Mode(i % len(modeNames)))
			r.SetAdvertised(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
			_ = r.Discoveries()
		}
	})
	wg.Go(func() {
		// Replies are not read: the point is traffic racing with the
		// setters and restarts, which the race detector checks.
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			t.Errorf("Listen: %v", err)
			return
		}
		defer c.Close()
		for range 200 {
			_, _ = c.WriteToUDPAddrPort(unhex(t, "0100000012345678"), r.Addr())
		}
	})
	wg.Go(func() {
		for range 3 {
			if err := r.Restart(); err != nil {
				t.Errorf("Restart: %v", err)
				return
			}
		}
	})
	wg.Wait()
}

func TestModeNames(t *testing.T) {
	for m := Normal; m <= NoData; m++ {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("loud"); err == nil {
		t.Errorf("ParseMode accepted an unknown name")
	}
	if s := Mode(99).String(); s != "Mode(99)" {
		t.Errorf("Mode(99).String() = %q", s)
	}
}
