package amtrelay

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amtdns/amtrelay/amt/amttest"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// relaySeries lists the relay label values of relay_up, sorted.
func relaySeries(t *testing.T) string {
	t.Helper()
	var names []string
	for k := range series(t, "coredns_amtrelay_relay_up") {
		names = append(names, strings.TrimPrefix(k, "relay="))
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

// runningInstances is the size of the process-wide register.
func runningInstances() int {
	instances.Lock()
	defer instances.Unlock()
	return len(instances.running)
}

// A reload replaces the relay set: answers follow at once, the old instance's probers stop (goleak in
// TestMain checks nothing is left behind) and the removed relay's series disappear.
func TestReload(t *testing.T) {
	old := startResponder(t, "127.0.0.31:0")
	kept := startResponder(t, "127.0.0.32:0")
	// No ready plugin here: after a failed reload it re-arms a listener that no shutdown hook closes.
	readyAddr := ""
	s := startServer(t, healthCorefile(readyAddr, "serve", old, kept))
	expectAddresses(t, s, "127.0.0.31 127.0.0.32")
	if !strings.Contains(relaySeries(t), "h1") {
		t.Fatalf("Expected relay_up{relay=\"h1\"} before the reload, got %q", relaySeries(t))
	}

	// h0 is now the relay that was h1; h1 is gone.
	s.reload(t, healthCorefile(readyAddr, "serve", kept))
	expectAddresses(t, s, "127.0.0.32")
	if got := relaySeries(t); got != "h0" {
		t.Errorf("Expected only relay_up{relay=\"h0\"} after the reload, got %q", got)
	}
	for k := range series(t, "coredns_amtrelay_probes_total") {
		if strings.Contains(k, "relay=h1") {
			t.Errorf("Expected the removed relay's probe series to go, got %s", k)
		}
	}
	if n := testutil.CollectAndCount(probesTotal); n == 0 {
		t.Errorf("Expected probe series for the remaining relay")
	}
	if n := runningInstances(); n != 1 {
		t.Errorf("Expected one running instance after the reload, got %d", n)
	}

	// A broken Corefile leaves the running config in place.
	caddyMu.Lock()
	_, err := s.inst.Restart(corefileInput(strings.Replace(healthCorefile(readyAddr, "serve", kept), "all_down serve", "all_down never", 1)))
	caddyMu.Unlock()
	if err == nil {
		t.Fatalf("Expected the broken Corefile to be rejected")
	}
	if r := s.query(t, "tcp", apexS, dns.TypeA); len(r.msg.Answer) != 1 {
		t.Errorf("Expected the old config to keep answering, got %v", r.msg)
	}
}

// probeRate counts the Discoveries a responder gets in one second.
func probeRate(r *amttest.Responder) uint64 {
	before := r.Discoveries()
	time.Sleep(time.Second)
	return r.Discoveries() - before
}

// A reload that fails after the new instance started (its servers cannot bind) leaves nothing of
// that instance running: caddy drops it without OnShutdown, and the old instance's OnRestartFailed
// stops it. Five failed reloads must not leave five more probe loops per relay.
func TestFailedReloadLeavesNothing(t *testing.T) {
	relay := startResponder(t, "127.0.0.33:0")
	corefile := fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay r1 %s probe %s
		source 198.51.100.0/24 r1
		health_check 100ms timeout 50ms
	}
}
`, relay.Addr().Addr(), relay.Addr())
	s := startServer(t, corefile)
	expectAddresses(t, s, relay.Addr().Addr().String())
	base := probeRate(relay)
	goroutines := runtime.NumGoroutine()

	// A port that is taken: the new Corefile's second server block cannot bind it.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	// A relay only the failing Corefile has: its series must not be left behind.
	failing := corefile + fmt.Sprintf(`ip6.arpa:%s {
	bind 127.0.0.1
	amtrelay {
		relay r1 %s probe %s
		relay only-in-failed 192.0.2.99
		source 2001:db8::/32 r1 only-in-failed
		health_check 100ms timeout 50ms
	}
}
`, port, relay.Addr().Addr(), relay.Addr())
	for i := range 5 {
		caddyMu.Lock()
		_, err := s.inst.Restart(corefileInput(failing))
		caddyMu.Unlock()
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("Reload %d: expected a bind failure, got %v", i, err)
		}
	}

	if n := runningInstances(); n != 1 {
		t.Errorf("Running instances after 5 failed reloads: %d, want 1", n)
	}
	after := probeRate(relay)
	t.Logf("Probes per second at the relay: %d before, %d after 5 failed reloads", base, after)
	if after > base*3/2+2 {
		t.Errorf("Probe rate went from %d/s to %d/s: the discarded instances still probe", base, after)
	}
	if strings.Contains(relaySeries(t), "only-in-failed") {
		t.Errorf("A relay of the failed Corefile left its series: %s", relaySeries(t))
	}
	for k := range series(t, "coredns_amtrelay_probes_total") {
		if strings.Contains(k, "only-in-failed") {
			t.Errorf("A relay of the failed Corefile left its probe series: %s", k)
		}
	}
	eventually(t, "goroutines back to where they were", 5*time.Second, func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= goroutines+2, fmt.Sprintf("%d goroutines, %d before", n, goroutines)
	})
	expectAddresses(t, s, relay.Addr().Addr().String())
}

// The register follows caddy's order of hooks: a restart that fails stops exactly the instances
// started while it ran; one that succeeds keeps them.
func TestRestartBookkeeping(t *testing.T) {
	block := "amtrelay in-addr.arpa {\nrelay r1 192.0.2.1\nsource 198.51.100.0/24 r1\nhealth_check off\n}"
	old := newTestPlugin(t, block)
	old.gen, old.firstStartup = new(generation), true
	old.start()
	defer old.stop()

	beginRestart(old.gen)
	beginRestart(old.gen) // a second block of the same instance
	failed := newTestPlugin(t, block)
	failed.gen = new(generation)
	failed.start()
	for _, a := range restartFailed(old.gen) {
		a.stop()
	}
	if got := restartFailed(old.gen); len(got) != 0 {
		t.Errorf("A second OnRestartFailed hook got %d instances again", len(got))
	}
	if n := runningInstances(); n != 1 {
		t.Fatalf("After a failed restart: %d running, want only the old one", n)
	}

	beginRestart(old.gen)
	next := newTestPlugin(t, block)
	next.gen = new(generation)
	next.start()
	old.stop() // the restart succeeded: the old instance shuts down
	if got := restartFailed(old.gen); len(got) != 0 {
		t.Errorf("A succeeded restart handed out %d instances to stop", len(got))
	}
	if n := runningInstances(); n != 1 {
		t.Errorf("After a good restart: %d running, want the new one", n)
	}
	next.stop()
}

// A reload from a Corefile without amtrelay is seen by no hook of ours. The instances it starts
// wait for the next restart to begin: those of the generation in service then are kept, those of a
// reload that failed are stopped.
func TestRestartOrphans(t *testing.T) {
	block := "amtrelay in-addr.arpa {\nrelay r1 192.0.2.1\nsource 198.51.100.0/24 r1\nhealth_check off\n}"
	failed := newTestPlugin(t, block)
	failed.gen = new(generation)
	failed.start() // a reload that added amtrelay, and failed
	live := newTestPlugin(t, block)
	live.gen = new(generation)
	live.start() // the next reload, which succeeded
	defer live.stop()

	orphans := beginRestart(live.gen)
	if len(orphans) != 1 || orphans[0] != failed {
		t.Fatalf("Orphans %v, want the failed reload's instance only", orphans)
	}
	for _, o := range orphans {
		o.stop()
	}
	if n := runningInstances(); n != 1 {
		t.Errorf("%d running, want the live instance only", n)
	}
	if got := restartFailed(live.gen); len(got) != 0 {
		t.Errorf("The restart handed out %d instances to stop", len(got))
	}
}

// A shutdown with shutdown_grace: not ready at once, answering until the grace period is over, and
// only then do the servers stop. A Corefile reload does not wait.
func TestShutdownGrace(t *testing.T) {
	readyAddr := freePort(t)
	corefile := fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	ready %s {
		monitor continuously
	}
	amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		health_check off
		shutdown_grace 1500ms
	}
}
`, readyAddr)
	s := startServer(t, corefile)
	expectReady(t, readyAddr, http.StatusOK)

	start := time.Now()
	s.reload(t, strings.Replace(corefile, "192.0.2.1", "192.0.2.9", 1))
	if took := time.Since(start); took > time.Second {
		t.Errorf("The reload took %v: it waited for the grace period", took)
	}
	expectAddresses(t, s, "192.0.2.9")
	expectReady(t, readyAddr, http.StatusOK)

	done := make(chan time.Duration, 1)
	start = time.Now()
	inst := s.inst
	go func() {
		inst.ShutdownCallbacks()
		done <- time.Since(start)
	}()
	expectReady(t, readyAddr, http.StatusServiceUnavailable)
	notReadyAfter := time.Since(start)
	answered := 0
	for time.Since(start) < time.Second {
		if got := addresses(t, s); got != "192.0.2.9" {
			t.Fatalf("During the grace period: %s", got)
		}
		answered++
		time.Sleep(50 * time.Millisecond)
	}
	took := <-done
	t.Logf("Not ready after %v, %d answers during the grace period, hooks returned after %v", notReadyAfter, answered, took)
	if took < 1500*time.Millisecond {
		t.Errorf("The shutdown hooks returned after %v, before the grace period", took)
	}
	inst.Stop()
	inst.Wait()
	s.inst = nil
}

// With several amtrelay blocks, a Corefile reload still does not wait for shutdown_grace: every
// block of the generation being replaced knows it, not only the first to stop. A reload that fails
// leaves the generation in service, whose final shutdown then waits for the grace period, not
// ready from its start.
func TestShutdownGraceSeveralBlocks(t *testing.T) {
	const grace = 4 * time.Second
	corefile := fmt.Sprintf(`in-addr.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay r1 192.0.2.1
		source 198.51.100.0/24 r1
		health_check off
		shutdown_grace %v
	}
}
ip6.arpa:0 {
	bind 127.0.0.1
	amtrelay {
		relay r2 2001:db8::2
		source 2001:db8::/32 r2
		health_check off
		shutdown_grace %v
	}
}
`, grace, grace)
	s := startServer(t, corefile)
	// Caddy returns before its servers serve, and a reload that stops them before they do misses
	// them: wait for an answer over each transport.
	for _, proto := range []string{"udp", "tcp"} {
		if got := addressesOf(t, s, proto, apexS); got != "192.0.2.1" {
			t.Fatalf("Before the reload, %s: %s, want 192.0.2.1", proto, got)
		}
	}
	logs := captureLog(t)

	start := time.Now()
	s.reload(t, strings.Replace(corefile, "192.0.2.1", "192.0.2.9", 1))
	took := time.Since(start)
	t.Logf("The reload took %v (bound %v)", took, grace/2)
	if took > grace/2 {
		t.Errorf("The reload took %v: it waited for the grace period", took)
	}
	if strings.Contains(logs.String(), "Shutting down") {
		t.Errorf("A block shut down as if for good during the reload: %q", logs.String())
	}
	expectAddresses(t, s, "192.0.2.9")

	caddyMu.Lock()
	_, err := s.inst.Restart(corefileInput(strings.Replace(corefile, "health_check off", "health_check bogus", 1)))
	caddyMu.Unlock()
	if err == nil {
		t.Fatal("Expected the reload of a broken Corefile to fail")
	}

	// The ready plugin's listener outlives a failed reload (goleak finds it): ask the blocks.
	blocks := current()
	if len(blocks) != 2 {
		t.Fatalf("%d blocks in service, want 2", len(blocks))
	}
	readiness := func() string {
		var got []string
		for _, a := range blocks {
			got = append(got, fmt.Sprint(a.Ready()))
		}
		return strings.Join(got, " ")
	}
	if got := readiness(); got != "true true" {
		t.Fatalf("Blocks ready before the shutdown: %s, want true true", got)
	}
	done := make(chan time.Duration, 1)
	start = time.Now()
	inst := s.inst
	go func() {
		inst.ShutdownCallbacks()
		done <- time.Since(start)
	}()
	eventually(t, "every block not ready", grace/2, func() (bool, string) {
		got := readiness()
		return got == "false false", got
	})
	took = <-done
	t.Logf("After a failed reload, the shutdown hooks returned after %v (grace %v)", took, grace)
	if took < grace {
		t.Errorf("The shutdown hooks returned after %v, before the grace period", took)
	}
	if !strings.Contains(logs.String(), "Shutting down") {
		t.Errorf("The final shutdown did not say it waits: %q", logs.String())
	}
	inst.Stop()
	inst.Wait()
	s.inst = nil
}
