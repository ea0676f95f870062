package amt_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
	"github.com/amtdns/amtrelay/internal/cputime"
)

// responderProcessEnv makes TestResponderProcess serve that many relays.
const responderProcessEnv = "AMT_TEST_RESPONDER_PROCESS"

// TestResponderProcess is not a test: the benchmarks run the test binary
// again with responderProcessEnv set, so that the relays' CPU time is not
// the prober's. It prints one "relay ADDR" line per relay, then "ready",
// and serves until its stdin is closed (the benchmark ended or died) or
// ten minutes have passed.
func TestResponderProcess(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(responderProcessEnv))
	if err != nil {
		t.Skip("Runs only as the benchmarks' relay process")
	}
	rs := make([]*amttest.Responder, 0, n)
	for i := range n {
		r, err := amttest.Start(fmt.Sprintf("127.0.2.%d:0", 10+i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		rs = append(rs, r)
		fmt.Printf("relay %v\n", r.Addr())
	}
	fmt.Println("ready")
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-time.After(10 * time.Minute):
	}
	for _, r := range rs {
		r.Stop()
	}
	// Exit here: the benchmark binary's TestMain and output are not wanted.
	os.Exit(0)
}

// responderProcess starts n relays in a child process and returns their
// addresses; the child ends with the benchmark.
func responderProcess(b *testing.B, n int) []netip.AddrPort {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Skipf("No executable to re-run: %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^TestResponderProcess$")
	cmd.Env = append(os.Environ(), responderProcessEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatalf("StdinPipe: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatalf("StdoutPipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("Start relay process: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	stop := func() {
		stdin.Close()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}
	b.Cleanup(stop)
	// A child that hangs before "ready" is killed, which ends the scan.
	hang := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	defer hang.Stop()
	var addrs []netip.AddrPort
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			return addrs
		}
		if a, ok := strings.CutPrefix(line, "relay "); ok {
			addrs = append(addrs, netip.MustParseAddrPort(a))
		}
	}
	b.Fatalf("Relay process ended before it was ready (%d relays up)", len(addrs))
	return nil
}

type handshaker func(context.Context, netip.AddrPort, time.Duration) amt.HandshakeReply

// tally is what one round of handshakes cost the process.
type tally struct {
	cpu             time.Duration
	mallocs, bytes  uint64
	wall            time.Duration
	handshakes, bad int64
}

func (t *tally) add(o tally) {
	t.cpu += o.cpu
	t.mallocs += o.mallocs
	t.bytes += o.bytes
	t.wall += o.wall
	t.handshakes += o.handshakes
	t.bad += o.bad
}

func measure(round func() (n, bad int64)) tally {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0, w0 := cputime.Process(), time.Now()
	n, bad := round()
	c1, w1 := cputime.Process(), time.Now()
	runtime.ReadMemStats(&m1)
	return tally{cpu: c1 - c0, wall: w1.Sub(w0), mallocs: m1.Mallocs - m0.Mallocs, bytes: m1.TotalAlloc - m0.TotalAlloc, handshakes: n, bad: bad}
}

// burstRound: every target once, with workers handshakes in flight, the
// shape of a prober sweeping a large relay list.
func burstRound(hs handshaker, targets []netip.AddrPort, workers int) (int64, int64) {
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(targets)) {
					return
				}
				if h := hs(context.Background(), targets[i], 2*time.Second); h.Result != amt.ResultOK {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int64(len(targets)), bad.Load()
}

// pacedRound: n handshakes started every interval, each on a goroutine of
// its own, the shape of the plugin's health checks (200/s for 1,000
// relays every 5 s).
func pacedRound(hs handshaker, targets []netip.AddrPort, n int, interval time.Duration) (int64, int64) {
	var bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			if h := hs(context.Background(), targets[i%len(targets)], 2*time.Second); h.Result != amt.ResultOK {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	return int64(n), bad.Load()
}

// BenchmarkHandshakePerCallVsClient runs the package function Handshake
// (a socket per call) and Client.Handshake (shared sockets) side by side,
// alternating rounds, against 50 relays in a child process, so that the
// CPU time (user+system, garbage collector included) is the prober's
// alone. It reports CPU time, allocations and bytes per handshake for both
// and their ratios, with and without what the benchmark's own goroutines
// and timers cost (a round of handshakes that do nothing), and the share
// of one core over the rounds: at the plugin's rate for "paced".
//
//	go test -run '^$' -bench HandshakePerCallVsClient -benchtime 3x ./amt/
func BenchmarkHandshakePerCallVsClient(b *testing.B) {
	relays := responderProcess(b, 50)
	targets := make([]netip.AddrPort, 0, 20*len(relays))
	for range 20 {
		targets = append(targets, relays...)
	}
	c := newClient(b)
	b.Run("burst", func(b *testing.B) {
		compareRounds(b, c, func(hs handshaker) func() (int64, int64) {
			return func() (int64, int64) { return burstRound(hs, targets, 64) }
		})
	})
	b.Run("paced", func(b *testing.B) {
		compareRounds(b, c, func(hs handshaker) func() (int64, int64) {
			return func() (int64, int64) { return pacedRound(hs, targets, 200, 5*time.Millisecond) }
		})
	})
}

// noopHandshake stands for a handshake that costs nothing, to measure what
// the benchmark's own scheduling (goroutines, pacing timer) costs.
func noopHandshake(context.Context, netip.AddrPort, time.Duration) amt.HandshakeReply {
	return amt.HandshakeReply{Result: amt.ResultOK}
}

func compareRounds(b *testing.B, c *amt.Client, round func(handshaker) func() (int64, int64)) {
	perCall, shared, driver := round(amt.Handshake), round(c.Handshake), round(noopHandshake)
	// Warm both up: pools, maps and the relays' first Discoveries.
	perCall()
	shared()
	var old, cur, base tally
	i := 0
	for b.Loop() {
		// Alternate the order so that neither always runs after a GC
		// the other left behind.
		if i%2 == 0 {
			old.add(measure(perCall))
			cur.add(measure(shared))
		} else {
			cur.add(measure(shared))
			old.add(measure(perCall))
		}
		base.add(measure(driver))
		i++
	}
	if old.bad+cur.bad > 0 {
		b.Errorf("Handshakes not ok: %d per call, %d shared", old.bad, cur.bad)
	}
	per := func(v float64, t tally) float64 { return v / float64(t.handshakes) }
	cpu := func(t tally) float64 { return per(float64(t.cpu.Nanoseconds()), t) }
	allocs := func(t tally) float64 { return per(float64(t.mallocs), t) }
	bytes := func(t tally) float64 { return per(float64(t.bytes), t) }
	share := func(t tally) float64 { return 100 * float64(t.cpu) / float64(t.wall) }
	b.ReportMetric(cpu(old), "percall-cpu-ns/hs")
	b.ReportMetric(cpu(cur), "client-cpu-ns/hs")
	b.ReportMetric(cpu(base), "driver-cpu-ns/hs")
	b.ReportMetric(cpu(old)/cpu(cur), "cpu-ratio")
	b.ReportMetric(allocs(old), "percall-allocs/hs")
	b.ReportMetric(allocs(cur), "client-allocs/hs")
	b.ReportMetric(bytes(old), "percall-B/hs")
	b.ReportMetric(bytes(cur), "client-B/hs")
	b.Logf("%d handshakes each. Per call: %.1f µs CPU, %.2f allocs, %.0f B, %.2f%% of a core. Client: %.1f µs CPU, %.2f allocs, %.0f B, %.2f%% of a core. "+
		"Driver alone: %.1f µs, %.2f allocs. CPU ratio %.2fx (%.2fx without the driver), alloc ratio %.1fx (%.1fx without the driver).",
		old.handshakes, cpu(old)/1e3, allocs(old), bytes(old), share(old), cpu(cur)/1e3, allocs(cur), bytes(cur), share(cur),
		cpu(base)/1e3, allocs(base), cpu(old)/cpu(cur), (cpu(old)-cpu(base))/(cpu(cur)-cpu(base)),
		allocs(old)/allocs(cur), (allocs(old)-allocs(base))/(allocs(cur)-allocs(base)))
}

// BenchmarkClientProbe and BenchmarkClientHandshake are one call at a time
// against an in-process relay, for allocations per call; BenchmarkProbe and
// BenchmarkHandshake are the package functions' counterparts.
func BenchmarkClientProbe(b *testing.B) {
	benchmarkSequential(b, func(c *amt.Client) handshaker {
		return func(ctx context.Context, t netip.AddrPort, d time.Duration) amt.HandshakeReply {
			rep := c.Probe(ctx, t, d)
			return amt.HandshakeReply{Result: rep.Result, Err: rep.Err}
		}
	})
}

func BenchmarkClientHandshake(b *testing.B) {
	benchmarkSequential(b, func(c *amt.Client) handshaker { return c.Handshake })
}

func BenchmarkHandshake(b *testing.B) {
	benchmarkSequential(b, func(*amt.Client) handshaker { return amt.Handshake })
}

func benchmarkSequential(b *testing.B, hs func(*amt.Client) handshaker) {
	r, err := amttest.Start("127.0.0.1:0")
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	defer r.Stop()
	f := hs(newClient(b))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if h := f(ctx, r.Addr(), 2*time.Second); h.Result != amt.ResultOK {
			b.Fatalf("Got %v (%v)", h.Result, h.Err)
		}
	}
}
