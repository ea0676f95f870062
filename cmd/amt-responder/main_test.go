package main

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amtdns/amtrelay/amt"
	"github.com/amtdns/amtrelay/amt/amttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer lets the test read stderr while run is still writing it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenLine = regexp.MustCompile(`on (\S+), advertising (\S+), mode (\S+)`)

// startRun runs the command until the returned stop function is called and
// returns the addresses it reported listening on.
func startRun(t *testing.T, args ...string) (addrs []netip.AddrPort, advertised []string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	codeCh := make(chan int, 1)
	go func() { codeCh <- run(ctx, args, &out) }()
	stop = func() int { cancel(); return <-codeCh }

	want := strings.Count(strings.Join(args, " "), "-listen")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case code := <-codeCh:
			cancel()
			t.Fatalf("Run exited early with %d: %s", code, out.String())
		default:
		}
		if m := listenLine.FindAllStringSubmatch(out.String(), -1); len(m) == want {
			for _, x := range m {
				addrs = append(addrs, netip.MustParseAddrPort(x[1]))
				advertised = append(advertised, x[2])
			}
			return addrs, advertised, stop
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	t.Fatalf("No start lines after 10s: %q", out.String())
	return nil, nil, nil
}

func TestRunAnswersAndExitsZero(t *testing.T) {
	addrs, adv, stop := startRun(t, "-listen", "127.0.0.1:0", "-listen", "127.0.0.2:0")
	for i, a := range addrs {
		if adv[i] != a.Addr().String() {
			t.Errorf("Listen %v advertises %s, want its own address", a, adv[i])
		}
		rep := newClient(t).Probe(context.Background(), a, 5*time.Second)
		if rep.Result != amt.ResultOK || rep.Relay != a.Addr() {
			t.Errorf("Probe(%v) = %v relay %v (%v)", a, rep.Result, rep.Relay, rep.Err)
		}
	}
	if code := stop(); code != 0 {
		t.Errorf("Exit code %d after signal, want 0", code)
	}
	// The ports are released on exit.
	for _, a := range addrs {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a))
		if err != nil {
			t.Errorf("Port %v still held after exit: %v", a, err)
			continue
		}
		c.Close()
	}
}

func TestRunAdvertiseAndMode(t *testing.T) {
	addrs, adv, stop := startRun(t, "-listen", "127.0.0.1:0", "-advertise", "192.0.2.10", "-mode", "other_source")
	defer stop()
	if adv[0] != "192.0.2.10" {
		t.Errorf("Start line advertises %s, want 192.0.2.10", adv[0])
	}
	rep := newClient(t).Probe(context.Background(), addrs[0], 5*time.Second)
	if rep.Result != amt.ResultOK || rep.Relay != netip.MustParseAddr("192.0.2.10") || rep.From == addrs[0] {
		t.Errorf("Probe = %v relay %v from %v (%v)", rep.Result, rep.Relay, rep.From, rep.Err)
	}
}

func TestRunBindFailure(t *testing.T) {
	taken, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer taken.Close()
	busy := taken.LocalAddr().String()

	var out bytes.Buffer
	code := run(context.Background(), []string{"-listen", "127.0.0.1:0", "-listen", busy}, &out)
	if code != 1 {
		t.Errorf("Exit code %d, want 1", code)
	}
	if !strings.Contains(out.String(), "cannot listen on "+busy) {
		t.Errorf("Message %q does not name %s", out.String(), busy)
	}
}

func TestRunRelayFlags(t *testing.T) {
	addrs, _, stop := startRun(t, "-listen", "127.0.0.1:0", "-qqic", "3s", "-gateway-timeout", "500ms", "-gateway-field")
	defer stop()
	h := newClient(t).Handshake(context.Background(), addrs[0], 5*time.Second)
	if h.Result != amt.ResultOK || h.Query.QQI != 3*time.Second || !h.Query.Gateway.IsValid() {
		t.Errorf("Handshake = %v, query %+v (%v); want ok with QQI 3s and G", h.Result, h.Query, h.Err)
	}
}

func TestRunPrintsConfig(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // run binds, reports and returns at once
	var out bytes.Buffer
	if code := run(ctx, []string{"-listen", "127.0.0.1:0", "-qqic", "7s", "-gateway-timeout", "90s"}, &out); code != 0 {
		t.Fatalf("Exit code %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "qqi 7s, gateway timeout 1m30s, gateway field false, no multicast") {
		t.Errorf("Output %q lacks the relay settings", out.String())
	}
}

func TestRunEveryMode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for m := amttest.Normal; m <= amttest.NoData; m++ {
		var out bytes.Buffer
		if code := run(ctx, []string{"-listen", "127.0.0.1:0", "-mode", m.String()}, &out); code != 0 {
			t.Errorf("-mode %s: exit code %d: %s", m, code, out.String())
		}
		if !strings.Contains(out.String(), "mode "+m.String()+"\n") {
			t.Errorf("-mode %s: output %q", m, out.String())
		}
	}
}

func TestRunLimitMode(t *testing.T) {
	addrs, _, stop := startRun(t, "-listen", "127.0.0.1:0", "-mode", "limit")
	defer stop()
	if h := newClient(t).Handshake(context.Background(), addrs[0], 5*time.Second); h.Result != amt.ResultLimit {
		t.Errorf("Handshake = %v (%v), want limit", h.Result, h.Err)
	}
}

func TestRunUnknownDataInterface(t *testing.T) {
	var out bytes.Buffer
	code := run(context.Background(), []string{"-listen", "127.0.0.1:0", "-data-interface", "amtnone0", "-data-port", "5001"}, &out)
	if code != 1 || !strings.Contains(out.String(), "amtnone0") {
		t.Errorf("Exit code %d, output %q; want 1 naming the interface", code, out.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-listen", "localhost:2268"},
		{"-listen", "127.0.0.1"},
		{"-listen", "0.0.0.0:0"},
		{"-listen", "127.0.0.1:0", "-advertise", "relay.example.net"},
		{"-listen", "127.0.0.1:0", "-mode", "loud"},
		{"-listen", "127.0.0.1:0", "extra"},
		{"-bogus"},
		{"-listen", "127.0.0.1:0", "-data-port", "5001"},
		{"-listen", "127.0.0.1:0", "-data-interface", "lo"},
		{"-listen", "127.0.0.1:0", "-data-interface", "lo", "-data-port", "70000"},
		{"-listen", "127.0.0.1:0", "-qqic", "500ms"},
		{"-listen", "127.0.0.1:0", "-qqic", "1500ms"},
		{"-listen", "127.0.0.1:0", "-qqic", "40000s"},
		{"-listen", "127.0.0.1:0", "-gateway-timeout", "0s"},
		{"-listen", "127.0.0.1:0", "-gateway-timeout", "-1s"},
		{"-listen", "127.0.0.1:0", "-gateway-timeout", "soon"},
		{"-listen", "127.0.0.1:0", "-beacon", "-1s"},
	} {
		var out bytes.Buffer
		if code := run(context.Background(), args, &out); code != 2 {
			t.Errorf("Run(%q) = %d, want 2; output %q", args, code, out.String())
		}
		if out.Len() == 0 {
			t.Errorf("Run(%q) printed no message", args)
		}
	}
}

// -beacon sends a data packet of every joined channel on its own.
func TestRunBeacon(t *testing.T) {
	addrs, _, stop := startRun(t, "-listen", "127.0.0.3:0", "-beacon", "50ms")
	defer stop()
	tun, err := amt.NewTunnel(addrs[0], amt.TunnelOptions{ReplyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, g := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("232.1.1.1")
	if err := tun.Join(s, g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tun.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for tun.Packets(s, g) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d packets after 10s of a 50ms beacon (%+v)", tun.Packets(s, g), tun.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newClient is the gateway side of these tests, closed when the test ends.
func newClient(t *testing.T) *amt.Client {
	t.Helper()
	c, err := amt.NewClient()
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
