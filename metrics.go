package amtrelay

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "requests_total",
		Help:      "Queries inside the plugin's zones, by query type and what the plugin did with them.",
	}, []string{"server", "zone", "type", "result"})

	relayUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "relay_up",
		Help:      "1 while at least one address of the relay passes its health check, else 0.",
	}, []string{"relay"})

	relayTransitions = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "relay_transitions_total",
		Help:      "Relay state changes, by the state entered (up or down).",
	}, []string{"relay", "to"})

	probesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "probes_total",
		Help:      "AMT Relay Discovery probes, by outcome (ok, timeout, refused, bad_reply, error).",
	}, []string{"relay", "result"})

	probeDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "probe_duration_seconds",
		Help:      "Round-trip time of successful probes, Relay Discovery to Relay Advertisement.",
		Buckets:   plugin.TimeBuckets,
	}, []string{"relay"})
)

// result is what the plugin did with a query, the result label of requests_total.
type result uint8

const (
	resultAnswer result = iota
	resultNoData
	resultNXDomain
	resultAllDown
	resultFallthrough
	numResults
)

var resultNames = [numResults]string{"answer", "nodata", "nxdomain", "all_down", "fallthrough"}

// The type label is bounded to the types the plugin answers; everything else is "other".
var typeLabels = []string{"A", "AAAA", "AMTRELAY", "SOA", "NS", "other"}

func typeIndex(qtype uint16) int {
	switch qtype {
	case dns.TypeA:
		return 0
	case dns.TypeAAAA:
		return 1
	case dns.TypeAMTRELAY:
		return 2
	case dns.TypeSOA:
		return 3
	case dns.TypeNS:
		return 4
	}
	return 5
}

type resultCounters [numResults]prometheus.Counter

// serverCounters holds every requests_total child of one server, indexed by zone and type.
type serverCounters map[string][]resultCounters

// requestMetrics resolves the requests_total children once per server and keeps them in a
// copy-on-write map, so the query path increments a counter without the label hashing and the
// lock that CounterVec.WithLabelValues takes.
type requestMetrics struct {
	zones    []string
	byServer atomic.Pointer[map[string]serverCounters]
	mu       sync.Mutex // serialises adding a server
}

func newRequestMetrics(zones []string) *requestMetrics {
	m := &requestMetrics{zones: zones}
	m.byServer.Store(&map[string]serverCounters{})
	return m
}

func (m *requestMetrics) counters(ctx context.Context, zone string, qtype uint16) *resultCounters {
	server := metrics.WithServer(ctx)
	sc, ok := (*m.byServer.Load())[server]
	if !ok {
		sc = m.addServer(server)
	}
	return &sc[zone][typeIndex(qtype)]
}

func (m *requestMetrics) addServer(server string) serverCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.byServer.Load()
	if sc, ok := old[server]; ok {
		return sc
	}
	sc := make(serverCounters, len(m.zones))
	for _, zone := range m.zones {
		perType := make([]resultCounters, len(typeLabels))
		for t, typ := range typeLabels {
			for r, res := range resultNames {
				perType[t][r] = requestsTotal.WithLabelValues(server, zone, typ, res)
			}
		}
		sc[zone] = perType
	}
	next := make(map[string]serverCounters, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[server] = sc
	m.byServer.Store(&next)
	return sc
}

// relayMetricUsers counts, per relay name, the running plugin instances that export series for it.
// During a reload the new instance starts before the old one stops, and several server blocks may
// name the same relay, so a relay's series go only when the last instance that knows it stops.
var relayMetricUsers = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func retainRelayMetrics(names []string) {
	relayMetricUsers.Lock()
	defer relayMetricUsers.Unlock()
	for _, name := range names {
		relayMetricUsers.n[name]++
	}
}

func releaseRelayMetrics(names []string) {
	relayMetricUsers.Lock()
	defer relayMetricUsers.Unlock()
	for _, name := range names {
		relayMetricUsers.n[name]--
		if relayMetricUsers.n[name] > 0 {
			continue
		}
		delete(relayMetricUsers.n, name)
		labels := prometheus.Labels{"relay": name}
		relayUp.DeletePartialMatch(labels)
		relayTransitions.DeletePartialMatch(labels)
		probesTotal.DeletePartialMatch(labels)
		probeDuration.DeletePartialMatch(labels)
	}
}
