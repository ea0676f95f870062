//go:build bird

package bgp

// The BIRD interop suite: `make bgp-interop` (root; it installs bird2 if
// missing). TestBird makes two network namespaces joined by a veth pair,
// runs BIRD 2 in one, and runs itself again inside the other, where the
// speaker peers with BIRD over the veth; nothing of it touches the host's
// network, and the namespaces go away with every process in them when the
// test ends, passed or not.

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/internal/cputime"
	"github.com/amtdns/amtrelay/table"
)

const (
	birdChildEnv = "AMTBGP_BIRD_NS" // set in the child: BIRD's namespace
	birdDirEnv   = "AMTBGP_BIRD_DIR"
	speakerAddr  = "100.64.254.1" // in the speaker's namespace
	birdAddr     = "100.64.254.2" // in BIRD's namespace
	birdAS       = 64500
	birdRoutes   = 100_000
)

func TestBird(t *testing.T) {
	if ns := os.Getenv(birdChildEnv); ns != "" {
		birdChild(t, ns, os.Getenv(birdDirEnv))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "bird", "birdc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (make bgp-interop installs bird2): %v", tool, err)
		}
	}
	base := fmt.Sprintf("amtbgp-%d", os.Getpid())
	nsBird, nsSpeaker := base+"-r", base+"-s"
	t.Cleanup(func() {
		for _, ns := range []string{nsBird, nsSpeaker} {
			killNamespace(t, ns)
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", nsBird)
	run("ip", "netns", "add", nsSpeaker)
	run("ip", "-n", nsBird, "link", "set", "lo", "up")
	run("ip", "-n", nsSpeaker, "link", "set", "lo", "up")
	run("ip", "link", "add", "amtbgp-s", "netns", nsSpeaker, "type", "veth", "peer", "name", "amtbgp-r", "netns", nsBird)
	run("ip", "-n", nsSpeaker, "addr", "add", speakerAddr+"/30", "dev", "amtbgp-s")
	run("ip", "-n", nsBird, "addr", "add", birdAddr+"/30", "dev", "amtbgp-r")
	run("ip", "-n", nsSpeaker, "link", "set", "amtbgp-s", "up")
	run("ip", "-n", nsBird, "link", "set", "amtbgp-r", "up")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nsSpeaker, os.Args[0], "-test.run=^TestBird$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), birdChildEnv+"="+nsBird, birdDirEnv+"="+t.TempDir())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("The suite inside %s failed: %v", nsSpeaker, err)
	}
}

// killNamespace ends every process in ns and deletes it.
func killNamespace(t *testing.T, ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// The kernel frees a namespace's links with its last process; give the
	// killed ones a moment to be reaped.
	for i := 0; i < 50; i++ {
		if out, _ := exec.Command("ip", "netns", "pids", ns).Output(); len(strings.TrimSpace(string(out))) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
		t.Errorf("ip netns del %s: %v %s", ns, err, out)
	}
}

// bird is a BIRD daemon in its namespace, with its control socket.
type bird struct {
	t    *testing.T
	ns   string
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan struct{}
}

// birdConfig is BIRD's config: multicast routes in a table of their own,
// exported over BGP on an `ipv4 multicast` (SAFI 2) channel with a
// community, and one route in the unicast table only, exported on the
// `ipv4` channel. The route in protocol `flap` is the one the test
// withdraws and announces again; extra are more multicast routes.
func birdConfig(extra int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
ipv4 table mcast4;
protocol device {}
protocol static mc {
	ipv4 { table mcast4; };
	route 198.51.100.0/24 unreachable;
`, birdAddr)
	for i := 0; i < extra; i++ {
		// 10.0.0.0/24, 10.0.1.0/24, ... 11.x.y.0/24: table entries, never
		// addresses in use.
		fmt.Fprintf(&b, "\troute %d.%d.%d.0/24 unreachable;\n", 10+i>>16, i>>8&255, i&255)
	}
	fmt.Fprintf(&b, `}
protocol static flap {
	ipv4 { table mcast4; };
	route 203.0.113.0/24 unreachable;
}
protocol static uc {
	ipv4 { table master4; };
	route 192.0.2.0/24 unreachable;
}
protocol bgp speaker {
	local %s as %d;
	neighbor %s as %d;
	hold time 9;
	connect retry time 1;
	ipv4 { table master4; import none; export all; };
	ipv4 multicast { table mcast4; import none; export filter { bgp_community.add((%d, 100)); accept; }; };
}
`, birdAddr, birdAS, speakerAddr, speakerAS, birdAS)
	return b.String()
}

func startBird(t *testing.T, ns, dir string, extra int) *bird {
	t.Helper()
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConfig(extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &bird{t: t, ns: ns, dir: dir, sock: filepath.Join(dir, "bird.ctl"), done: make(chan struct{})}
	b.cmd = exec.Command("ip", "netns", "exec", ns, "bird", "-f", "-c", conf, "-s", b.sock)
	b.cmd.Stdout, b.cmd.Stderr = os.Stderr, os.Stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(b.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := b.birdc("show", "status"); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("BIRD did not answer on %s within 30 s", b.sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bird) birdc(args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err == nil && strings.Contains(string(out), "Unable to connect") {
		err = fmt.Errorf("%s", out)
	}
	return string(out), err
}

func (b *bird) mustBirdc(args ...string) {
	b.t.Helper()
	if out, err := b.birdc(args...); err != nil {
		b.t.Fatalf("birdc %v: %v\n%s", args, err, out)
	}
}

// kill ends BIRD at once (SIGKILL: no NOTIFICATION, the kernel closes its
// sockets) and waits for it.
func (b *bird) kill() {
	_ = b.cmd.Process.Kill()
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		b.t.Errorf("BIRD did not exit within 10 s of SIGKILL")
	}
}

// tableCollector applies every batch to a table.Table the way the plugin
// will, and notes when the table reached a size.
type tableCollector struct {
	mu      sync.Mutex
	tab     *table.Table
	batches int
	applied chan struct{}
}

func (c *tableCollector) take(b Batch) {
	changes := make([]table.Change, 0, len(b.Routes))
	for _, r := range b.Routes {
		// The plugin will map communities to relays; here the value of the
		// first one is the relay.
		relay := 0
		if len(r.Communities) > 0 {
			relay = int(r.Communities[0] & 0xffff)
		}
		changes = append(changes, table.Change{Prefix: r.Prefix, Relays: []int{relay}, Delete: r.Withdrawn})
	}
	c.mu.Lock()
	if b.Full {
		c.tab = nil
	}
	c.tab = c.tab.Apply(changes)
	c.batches++
	c.mu.Unlock()
	select {
	case c.applied <- struct{}{}:
	default:
	}
}

func (c *tableCollector) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tab.Len4() + c.tab.Len6()
}

func birdChild(t *testing.T, ns, dir string) {
	neighbor := Neighbor{Address: netip.MustParseAddr(birdAddr), RemoteAS: birdAS}
	cfg := Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr(speakerAddr)}
	if err := cfg.AddNeighbor(neighbor); err != nil {
		t.Fatal(err)
	}

	t.Run("routes", func(t *testing.T) {
		b := startBird(t, ns, dir, 0)
		var log lines
		s, err := New(cfg, log.logf)
		if err != nil {
			t.Fatal(err)
		}
		runSpeaker(t, s)
		c := subscribe(t, s)
		st := waitStatus(t, s, 20*time.Second, "synced with BIRD", func(st Status) bool { return st.Synced && established(st) })
		mc, flap, uc := key(IPv4Multicast, "198.51.100.0/24"), key(IPv4Multicast, "203.0.113.0/24"), key(IPv4Unicast, "192.0.2.0/24")
		c.waitFor(t, 5*time.Second, "multicast routes", has(mc, flap))
		c.mu.Lock()
		if got := c.routes[mc]; !slices.Equal(got.Communities, []uint32{birdAS<<16 | 100}) || got.Neighbor != neighbor.Address {
			t.Errorf("Route %+v, want community %d:100 from %v", got, birdAS, neighbor.Address)
		}
		if _, ok := c.routes[uc]; ok || len(c.routes) != 2 {
			t.Errorf("Routes %v: want the two multicast ones, not the unicast one", c.routes)
		}
		c.mu.Unlock()
		fs := st.Neighbors[0].Families
		t.Logf("BIRD: End-of-RIB ipv4-multicast %v; ipv6-multicast negotiated %v", fs[0].EndOfRIB, fs[1].Negotiated)
		if !fs[0].EndOfRIB || fs[1].Negotiated {
			t.Errorf("Families %+v: want End-of-RIB for ipv4-multicast, ipv6-multicast not negotiated", fs)
		}

		// Withdraw and announce again, timed from the birdc command to the
		// subscriber; the batch pacing adds nothing to a lone change after
		// a quiet spell.
		// The time of birdc alone (a process start and a round trip on
		// BIRD's socket) is measured with a command that changes nothing.
		var down, up, cmds []time.Duration
		for i := 0; i < 7; i++ {
			start := time.Now()
			b.mustBirdc("show", "protocols", "flap")
			cmds = append(cmds, time.Since(start))
			time.Sleep(100 * time.Millisecond)
			start = time.Now()
			b.mustBirdc("disable", "flap")
			cmd := time.Since(start)
			down = append(down, c.waitFor(t, 2*time.Second, "withdrawal", lacks(flap))+cmd)
			time.Sleep(100 * time.Millisecond)
			start = time.Now()
			b.mustBirdc("enable", "flap")
			cmd = time.Since(start)
			up = append(up, c.waitFor(t, 2*time.Second, "announcement", has(flap))+cmd)
		}
		for _, m := range []struct {
			what string
			d    []time.Duration
		}{{"withdraw, birdc start to subscriber", down}, {"announce, birdc start to subscriber", up}, {"birdc alone", cmds}} {
			slices.Sort(m.d)
			t.Logf("MEASURE %s: min %v median %v max %v", m.what, m.d[0], m.d[3], m.d[6])
		}

		// BIRD killed: the kernel closes the session, the routes go.
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		b.kill()
		c.waitFor(t, 5*time.Second, "withdrawal after BIRD was killed", lacks(mc, flap))
		t.Logf("MEASURE BIRD killed: routes withdrawn after %v", time.Since(start))
		waitFunc(t, 5*time.Second, "down logged", func() bool { return log.count("session down") == 1 })
		if n := log.count("established"); n != 1 {
			t.Errorf("%d \"established\" lines, want 1: %v", n, log.l)
		}
	})

	t.Run("100k", func(t *testing.T) {
		b := startBird(t, ns, dir, birdRoutes)
		out, _ := b.birdc("show", "route", "table", "mcast4", "count")
		t.Logf("BIRD: %s", strings.TrimSpace(lastLine(out)))
		runtime.GC()
		heap0 := heapInUse()
		cpu0 := cputime.Process()
		s, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		tc := &tableCollector{applied: make(chan struct{}, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		subDone := make(chan error, 1)
		go func() { subDone <- s.Subscribe(ctx, tc.take) }()
		defer func() {
			cancel()
			<-subDone
		}()
		runSpeaker(t, s)
		want := birdRoutes + 2
		deadline := time.After(60 * time.Second)
		for tc.size() < want {
			select {
			case <-tc.applied:
			case <-deadline:
				t.Fatalf("Table has %d of %d routes after 60 s; status %+v", tc.size(), want, s.Status())
			}
		}
		full := time.Now()
		st := s.Status()
		up := st.Neighbors[0].Since
		cpu := cputime.Process() - cpu0
		runtime.GC()
		heap := heapInUse() - heap0
		waitStatus(t, s, 10*time.Second, "synced", func(st Status) bool { return st.Synced })
		tc.mu.Lock()
		batches := tc.batches
		tc.mu.Unlock()
		t.Logf("MEASURE %d routes: session up to complete table %v, in %d batches; process CPU %.2f s from New; live heap +%.1f MB (%.0f B/route, RIB + table); RSS %s, peak %s",
			want, full.Sub(up).Round(time.Millisecond), batches, cpu.Seconds(), float64(heap)/1e6, float64(heap)/float64(want), procStatus("VmRSS"), procStatus("VmHWM"))
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// procStatus returns a field of /proc/self/status, such as "VmRSS".
func procStatus(field string) string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
