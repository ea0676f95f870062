package amtrelay

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// series returns the series of the metric called name in the default registry, as
// "label=value,..." -> value, sorted by label name.
func series(t testing.TB, name string) map[string]float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			out[strings.Join(labels, ",")] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// relayUpValue is relay_up of one relay, -1 when it has no series.
func relayUpValue(t testing.TB, relay string) float64 {
	t.Helper()
	if v, ok := series(t, "coredns_amtrelay_relay_up")["relay="+relay]; ok {
		return v
	}
	return -1
}

// Every metric the plugin exports passes Prometheus's naming lint, as CoreDNS's own
// test/metric_naming_test.go checks for the in-tree plugins.
func TestMetricNames(t *testing.T) {
	a := newTestPlugin(t, answerBlock)
	a.start()
	defer a.stop()
	// One series of each vector, so that there is something to lint.
	requestsTotal.WithLabelValues("dns://:53", "lint.", "A", "answer")
	relayTransitions.WithLabelValues("lint", "up")
	probesTotal.WithLabelValues("lint", "ok")
	probeDuration.WithLabelValues("lint").Observe(0.001)
	tableReloads.WithLabelValues("success")
	relayAnswers.WithLabelValues("lint")
	canaryPackets.WithLabelValues("lint", "10.0.0.0/8")
	defer deleteRelaySeries("lint")
	defer deleteZoneSeries("lint.")
	for _, c := range []prometheus.Collector{requestsTotal, relayTransitions, relayAnswers, probesTotal, probeDuration, canaryPackets, tableReloads, stateCollector{}} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// The gauges describe the configuration in service, read at scrape time: an instance's relays
// appear when it starts, follow its health, and go when it stops.
func TestStateGauges(t *testing.T) {
	dead := startResponder(t, "127.0.0.71:0")
	dead.Stop() // refused: the first probe takes the relay down
	a := newTestPlugin(t, fmt.Sprintf(`amtrelay in-addr.arpa {
		relay gauged %s probe %s
		source 198.51.100.0/24 gauged
		source 203.0.113.0/24 gauged
		health_check 100ms
	}`, dead.Addr().Addr(), dead.Addr()))
	if v := relayUpValue(t, "gauged"); v != -1 {
		t.Fatalf("relay_up{gauged} before start: %v, want no series", v)
	}
	a.start()
	eventually(t, "relay_up{gauged} 0", 5*time.Second, func() (bool, string) {
		v := relayUpValue(t, "gauged")
		return v == 0, fmt.Sprint(v)
	})
	if v := series(t, "coredns_amtrelay_sources")[""]; v != 2 {
		t.Errorf("sources: %v, want 2", v)
	}
	a.stop()
	if v := relayUpValue(t, "gauged"); v != -1 {
		t.Errorf("relay_up{gauged} after stop: %v, want no series", v)
	}
	if v, ok := series(t, "coredns_amtrelay_sources")[""]; ok {
		t.Errorf("sources after stop: %v, want no series", v)
	}
}

// relay_answers_total counts the answers that included each relay, once per answer.
func TestRelayAnswersCounted(t *testing.T) {
	a := newTestPlugin(t, answerBlock)
	count := func(relay string) float64 { return series(t, "coredns_amtrelay_relay_answers_total")["relay="+relay] }
	before := map[string]float64{}
	for _, r := range []string{"v4a", "dual", "named", "v6only"} {
		before[r] = count(r)
	}
	serve(t, a, question(apexS, dns.TypeAMTRELAY)) // v4a v4b dual (2 records) named
	serve(t, a, question(apexS, dns.TypeA))        // v4a v4b dual
	serve(t, a, question(apexS, dns.TypeTXT))      // NODATA: none
	for relay, want := range map[string]float64{"v4a": 2, "dual": 2, "named": 1, "v6only": 0} {
		if got := count(relay) - before[relay]; got != want {
			t.Errorf("relay_answers_total{%s} grew by %v, want %v", relay, got, want)
		}
	}
}

// pluginMetricNames is every metric name the plugin's collectors describe.
func pluginMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc, 64)
	for _, c := range []prometheus.Collector{requestsTotal, relayTransitions, relayAnswers, probesTotal, probeDuration, canaryPackets, tableReloads, stateCollector{}} {
		c.Describe(ch)
	}
	close(ch)
	names := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// The Grafana dashboard queries only metrics the plugin exports, and shows each of them.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("contrib/grafana/amtrelay.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("Dashboard JSON: %v", err)
	}
	exported := pluginMetricNames(t)
	shown := map[string]bool{}
	metric := regexp.MustCompile(`coredns_amtrelay_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			for _, name := range metric.FindAllString(target.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				if !exported[base] {
					t.Errorf("Panel %q queries %s, which the plugin does not export", p.Title, name)
				}
				shown[base] = true
			}
		}
	}
	for name := range exported {
		if !shown[name] {
			t.Errorf("The dashboard shows nothing of %s", name)
		}
	}
	if len(exported) < 10 {
		t.Errorf("Only %d metrics described: %v", len(exported), exported)
	}
}
