package amttest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/amtdns/amtrelay/amt"
)

// inNewNetns moves the calling goroutine's thread into a new network
// namespace for the rest of the test, or skips the test where that is not
// allowed (not root). The thread is never unlocked, so it ends with the
// test's goroutine and takes the namespace with it; sockets made here stay
// in the namespace whichever thread later uses them.
func inNewNetns(t *testing.T, setup ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("Needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("No ip command")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("Unshare: %v", err)
	}
	for _, cmd := range setup {
		// A child forked from this locked thread starts in its namespace.
		if out, err := exec.Command("ip", strings.Fields(cmd)...).CombinedOutput(); err != nil {
			t.Skipf("ip %s: %v: %s", cmd, err, out)
		}
	}
}

// mcfilterHas reports whether the kernel holds a source filter for group
// (as /proc/net/mcfilter prints it, hex) on this thread's namespace.
func mcfilterHas(t *testing.T, file, group string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/" + file)
	if err != nil {
		t.Fatalf("Read %s: %v", file, err)
	}
	return strings.Contains(string(b), group)
}

// TestRealMulticast runs the data path with real source-specific multicast:
// a sender on the data interface, looped back to the Responder's data
// sockets by the kernel, forwarded to a gateway on loopback.
func TestRealMulticast(t *testing.T) {
	inNewNetns(t,
		"link set lo up",
		"link add amtv0 type veth peer name amtv1",
		"link set amtv0 up",
		"link set amtv1 up",
		"addr add 10.9.0.1/24 dev amtv0",
		"-6 addr add 2001:db8:9::1/64 dev amtv0 nodad",
	)
	ifi, err := net.InterfaceByName("amtv0")
	if err != nil {
		t.Fatalf("Interface: %v", err)
	}
	var logs syncLog
	r, err := StartConfig("127.0.0.1:0", Config{DataInterface: "amtv0", DataPort: 5001, Logf: logs.add})
	if err != nil {
		t.Fatalf("StartConfig: %v", err)
	}
	defer r.Stop()

	for _, tc := range []struct {
		name     string
		src, grp netip.Addr
		mld      bool
		mcfilter string // the group as /proc/net/mcfilter(6) prints it
	}{
		{"IPv4", netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("232.1.1.1"), false, "0xe8010101"},
		{"IPv6", netip.MustParseAddr("2001:db8:9::1"), netip.MustParseAddr("ff3e::8000:1"), true, "ff3e0000000000000000000080000001"},
	} {
		// Not t.Run: a subtest's goroutine would run on another thread,
		// outside the namespace.
		func() {
			file := "mcfilter"
			if tc.mld {
				file = "mcfilter6"
			}
			g := newGW(t, r.Addr())
			q, _ := g.request(1, tc.mld)
			up, err := amt.AppendUpdate(nil, amt.Update{MAC: q.MAC, Nonce: q.Nonce, MLD: tc.mld, Records: []amt.GroupRecord{rec(amt.AllowNewSources, tc.grp, tc.src)}})
			if err != nil {
				t.Fatalf("AppendUpdate: %v", err)
			}
			g.send(up)
			waitFor(t, "the join", func() bool { return len(r.Memberships()) == 1 })
			if !mcfilterHas(t, file, tc.mcfilter) {
				t.Errorf("%s: no source filter for %s in %s", tc.name, tc.grp, file)
			}

			sender := multicastSender(t, tc.src, ifi)
			dst := &net.UDPAddr{IP: tc.grp.AsSlice(), Port: 5001}
			var d amt.Data
			for i := 0; ; i++ {
				if _, err := sender.WriteTo([]byte("live"), dst); err != nil {
					t.Fatalf("Send: %v", err)
				}
				if b, _, ok := g.read(50 * time.Millisecond); ok {
					if d, err = amt.ParseData(b); err != nil {
						t.Fatalf("ParseData(%x): %v", b, err)
					}
					break
				}
				if i == 100 {
					t.Fatalf("No data after 100 sends; stats %+v, logs %q", r.Stats(), logs.get())
				}
			}
			if d.Source != netip.AddrPortFrom(tc.src, 6000) || d.Group != netip.AddrPortFrom(tc.grp, 5001) || string(d.Payload) != "live" {
				t.Errorf("%s: data %+v", tc.name, d)
			}

			// The last gateway leaving leaves the group on the interface.
			up, _ = amt.AppendUpdate(nil, amt.Update{MAC: q.MAC, Nonce: q.Nonce, MLD: tc.mld, Records: []amt.GroupRecord{rec(amt.BlockOldSources, tc.grp, tc.src)}})
			g.send(up)
			waitFor(t, "the leave", func() bool { return len(r.Memberships()) == 0 })
			if mcfilterHas(t, file, tc.mcfilter) {
				t.Errorf("%s: source filter for %s left in %s", tc.name, tc.grp, file)
			}
		}()
	}
	if s := r.Stats(); s.MulticastErrors != 0 {
		t.Errorf("Multicast errors %d; logs %q", s.MulticastErrors, logs.get())
	}
}

// multicastSender returns a UDP socket bound to src:6000 that sends
// multicast out of ifi and loops it back to local members.
func multicastSender(t *testing.T, src netip.Addr, ifi *net.Interface) net.PacketConn {
	t.Helper()
	c, err := net.ListenUDP(network(src), net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 6000)))
	if err != nil {
		t.Fatalf("Sender: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if src.Is4() {
		p := ipv4.NewPacketConn(c)
		err = p.SetMulticastInterface(ifi)
		if err == nil {
			err = p.SetMulticastLoopback(true)
		}
	} else {
		p := ipv6.NewPacketConn(c)
		err = p.SetMulticastInterface(ifi)
		if err == nil {
			err = p.SetMulticastLoopback(true)
		}
	}
	if err != nil {
		t.Fatalf("Sender options: %v", err)
	}
	return c
}

// syncLog collects Config.Logf lines from the Responder's goroutines.
type syncLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *syncLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}
