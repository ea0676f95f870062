package amtrelay

import (
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// relaySeries lists the relay label values of relay_up, sorted.
func relaySeries(t *testing.T) string {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var names []string
	for _, mf := range mfs {
		if mf.GetName() != "coredns_amtrelay_relay_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "relay" {
					names = append(names, l.GetValue())
				}
			}
		}
	}
	slices.Sort(names)
	return strings.Join(names, " ")
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
	if n := testutil.CollectAndCount(probesTotal); n == 0 {
		t.Errorf("Expected probe series for the remaining relay")
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
