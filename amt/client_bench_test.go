package amt_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
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

// BenchmarkProbeRound measures one health-check round of the prober's
// default check: 1,000 handshakes (50 relays in a child process, each 20
// times) with 64 in flight over one Client, the shape of a prober
// sweeping a large relay list. cpu-ns/round is this process's CPU time
// (user+system, garbage collector included): the prober's alone.
func BenchmarkProbeRound(b *testing.B) {
	const (
		relays    = 50
		perRelay  = 20
		inFlight  = 64
		handshake = 2 * time.Second
	)
	addrs := responderProcess(b, relays)
	targets := make([]netip.AddrPort, 0, perRelay*len(addrs))
	for range perRelay {
		targets = append(targets, addrs...)
	}
	c := newClient(b)
	var failed atomic.Int64
	round := func() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(len(targets)) {
						return
					}
					if h := c.Handshake(context.Background(), targets[i], handshake); h.Result != amt.ResultOK {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
	}
	round() // warm up pools, maps and the relays' first Discoveries
	failed.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cputime.Process()
	for b.Loop() {
		round()
	}
	cpu := cputime.Process() - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/round")
	b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/round")
}

type handshaker func(context.Context, netip.AddrPort, time.Duration) amt.HandshakeReply

// BenchmarkClientProbe and BenchmarkClientHandshake are one call at a time
// against an in-process relay, for allocations per call.
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
