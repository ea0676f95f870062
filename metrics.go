package amtrelay

import (
	"context"
	"slices"
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

	sourcesCount = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "sources",
		Help:      "Source prefixes in the connectivity table in service, inline and from the sources file.",
	}, []string{"server", "zone"})

	tableReloads = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "table_reloads_total",
		Help:      "Loads of a changed sources file after start-up, by result (success or error); an error is counted once while it repeats.",
	}, []string{"result"})

	tableLastReload = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "table_last_reload_timestamp_seconds",
		Help:      "Unix time of the last successful load of a sources file, start-up included.",
	})
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

// sourcesKey is one series of the sources gauge.
type sourcesKey struct{ server, zone string }

// sourcesExporters records, per sources series, the running instances that serve it, in start
// order. During a Corefile reload the new instance starts before the old one stops, and the old
// one's watcher may still reload its file meanwhile; only the newest instance writes the value, so
// an old table's size never overwrites the new one's, and the series goes when the last one stops.
var sourcesExporters = struct {
	sync.Mutex
	byKey  map[sourcesKey][]*sourceTable
	byUser map[*sourceTable][]sourcesKey
}{byKey: map[sourcesKey][]*sourceTable{}, byUser: map[*sourceTable][]sourcesKey{}}

func exportSourcesCount(s *sourceTable, keys []sourcesKey) {
	sourcesExporters.Lock()
	defer sourcesExporters.Unlock()
	sourcesExporters.byUser[s] = keys
	for _, k := range keys {
		sourcesExporters.byKey[k] = append(sourcesExporters.byKey[k], s)
		sourcesCount.WithLabelValues(k.server, k.zone).Set(float64(s.Len()))
	}
}

// updateSourcesCount publishes the size of s's current table in the series it is the newest user of.
func updateSourcesCount(s *sourceTable) {
	sourcesExporters.Lock()
	defer sourcesExporters.Unlock()
	for _, k := range sourcesExporters.byUser[s] {
		if users := sourcesExporters.byKey[k]; users[len(users)-1] == s {
			sourcesCount.WithLabelValues(k.server, k.zone).Set(float64(s.Len()))
		}
	}
}

func unexportSourcesCount(s *sourceTable) {
	sourcesExporters.Lock()
	defer sourcesExporters.Unlock()
	for _, k := range sourcesExporters.byUser[s] {
		users := slices.DeleteFunc(sourcesExporters.byKey[k], func(u *sourceTable) bool { return u == s })
		if len(users) == 0 {
			delete(sourcesExporters.byKey, k)
			sourcesCount.DeleteLabelValues(k.server, k.zone)
			continue
		}
		sourcesExporters.byKey[k] = users
		newest := users[len(users)-1]
		sourcesCount.WithLabelValues(k.server, k.zone).Set(float64(newest.Len()))
	}
	delete(sourcesExporters.byUser, s)
}
