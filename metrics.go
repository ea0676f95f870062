package amtrelay

import (
	"github.com/amtdns/amtrelay/bgp"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Counters live in package-level vectors, as in every in-tree plugin: they must keep counting
// across Corefile reloads. The series of a relay or zone go when no running instance has it.
var (
	requestsTotal = counter("requests_total",
		"Queries inside the plugin's zones, by query type and what the plugin did with them.",
		"server", "zone", "type", "result")
	relayTransitions = counter("relay_transitions_total",
		"Relay state changes, by the state entered (up or down).",
		"relay", "to")
	probesTotal = counter("probes_total",
		"Probes of relay addresses, by outcome (ok, timeout, refused, bad_reply, limit, no_query, error).",
		"relay", "result")
	probeDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace,
		Subsystem: pluginName,
		Name:      "probe_duration_seconds",
		Help:      "Round-trip time of successful probes: Relay Discovery to Membership Query (or to Relay Advertisement with handshake discovery).",
		Buckets:   plugin.TimeBuckets,
	}, []string{"relay"})
	canaryPackets = counter("canary_packets_total",
		"Multicast Data packets of the canary's channel received through the relay.",
		"relay", "canary")
	relayAnswers = counter("relay_answers_total",
		"Answers that included the relay, by any of its addresses or names.",
		"relay")
	tableReloads = counter("table_reloads_total",
		"Loads of a changed sources file after start-up, by result (success or error); an error is counted once while it repeats.",
		"result")
)

// counter is a counter vector of the plugin, registered where CoreDNS's metrics are.
func counter(name, help string, labels ...string) *prometheus.CounterVec {
	return promauto.NewCounterVec(prometheus.CounterOpts{Namespace: plugin.Namespace, Subsystem: pluginName, Name: name, Help: help}, labels)
}

// typeLabel bounds the type label of requests_total to the types the plugin answers.
func typeLabel(qtype uint16) string {
	switch qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeAMTRELAY, dns.TypeSOA, dns.TypeNS:
		return dns.TypeToString[qtype]
	}
	return "other"
}

func deleteRelaySeries(relay string) {
	labels := prometheus.Labels{"relay": relay}
	relayTransitions.DeletePartialMatch(labels)
	relayAnswers.DeletePartialMatch(labels)
	probesTotal.DeletePartialMatch(labels)
	probeDuration.DeletePartialMatch(labels)
	canaryPackets.DeletePartialMatch(labels)
}

func deleteCanarySeries(canary string) {
	canaryPackets.DeletePartialMatch(prometheus.Labels{"canary": canary})
}

func deleteZoneSeries(zone string) {
	requestsTotal.DeletePartialMatch(prometheus.Labels{"zone": zone})
}

// stateCollector exports what the configuration in service holds now, read at scrape time from the
// running instances of the newest generation: nothing to keep in step, and nothing left behind
// when a reload removes a relay.
type stateCollector struct{}

// stateDescs is what stateCollector exports: each state call adds one.
var stateDescs []*prometheus.Desc

func state(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(prometheus.BuildFQName(plugin.Namespace, pluginName, name), help, labels, nil)
	stateDescs = append(stateDescs, d)
	return d
}

var (
	relayUpDesc = state("relay_up",
		"1 while at least one address of the relay passes its health check, else 0.", "relay")
	sourcesDesc = state("sources",
		"Source prefixes in the connectivity tables in service, inline and from sources files.")
	canaryUpDesc = state("canary_up",
		"1 while data of the canary's channel comes through some address of the relay, else 0.", "relay", "canary")
	adminStateDesc = state("relay_admin_state",
		"1 for the admin state the relay is in: auto (follows its probes), drain, down or up.", "relay", "state")
	signaturesDesc = state("dnssec_signatures_total",
		"Signatures computed for answers (cache misses times signing keys), since the Corefile in service was loaded.")
	signatureHitsDesc = state("dnssec_cache_hits_total",
		"Answers signed from the signature cache, since the Corefile in service was loaded.")
	bgpSessionUpDesc = state("bgp_session_up",
		"1 while the BGP session with the neighbor is established, else 0.", "neighbor")
	bgpPrefixesDesc = state("bgp_prefixes",
		"Best routes learned from the neighbor in the family, in the table.", "neighbor", "family")
	lastReloadDesc = state("table_last_reload_timestamp_seconds",
		"Unix time of the last successful load of a sources file, start-up included.")
)

func init() { prometheus.MustRegister(stateCollector{}) }

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range stateDescs {
		ch <- d
	}
}

func (stateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := current()
	if len(cur) == 0 {
		return
	}
	// Several blocks may name the same relay; the newest says.
	up := map[string]bool{}
	canaryUp := map[[2]string]bool{}
	admin := map[string]adminMode{}
	prefixes, lastLoad := 0, int64(0)
	signatures, hits, signing := uint64(0), uint64(0), false
	speakers := map[*bgp.Speaker]bool{} // blocks with the same bgp lines share one
	for _, a := range cur {
		if a.routes != nil {
			if s := a.routes.speaker.Load(); s != nil {
				speakers[s] = true
			}
		}
		if a.signer != nil {
			signing = true
			signatures += a.signer.SignaturesMade()
			hits += a.signer.CacheHits()
		}
		v := a.view.load()
		for _, r := range a.cfg.relays {
			up[r.name] = v.health.relayUp[r.index]
			admin[r.name] = v.admin.of(r.index)
			for _, cn := range a.cfg.canaries {
				canaryUp[[2]string{r.name, cn.text}] = v.health.canaryAny[r.index][cn.index]
			}
		}
		prefixes += v.prefixes()
		if a.sources != nil {
			lastLoad = max(lastLoad, a.sources.loadedAt.Load())
		}
	}
	for name, isUp := range up {
		ch <- prometheus.MustNewConstMetric(relayUpDesc, prometheus.GaugeValue, gaugeBool(isUp), name)
	}
	for k, isUp := range canaryUp {
		ch <- prometheus.MustNewConstMetric(canaryUpDesc, prometheus.GaugeValue, gaugeBool(isUp), k[0], k[1])
	}
	for name, mode := range admin {
		for m := range numAdminModes {
			ch <- prometheus.MustNewConstMetric(adminStateDesc, prometheus.GaugeValue, gaugeBool(m == mode), name, m.String())
		}
	}
	ch <- prometheus.MustNewConstMetric(sourcesDesc, prometheus.GaugeValue, float64(prefixes))
	if signing {
		ch <- prometheus.MustNewConstMetric(signaturesDesc, prometheus.CounterValue, float64(signatures))
		ch <- prometheus.MustNewConstMetric(signatureHitsDesc, prometheus.CounterValue, float64(hits))
	}
	if lastLoad > 0 {
		ch <- prometheus.MustNewConstMetric(lastReloadDesc, prometheus.GaugeValue, float64(lastLoad)/1e9)
	}
	// Two speakers with a neighbor in common (blocks with different bgp lines): the first says.
	seen := map[string]bool{}
	for s := range speakers {
		for _, n := range s.Status().Neighbors {
			name := n.Address.String()
			if seen[name] {
				continue
			}
			seen[name] = true
			ch <- prometheus.MustNewConstMetric(bgpSessionUpDesc, prometheus.GaugeValue, gaugeBool(n.Established), name)
			for _, f := range n.Families {
				ch <- prometheus.MustNewConstMetric(bgpPrefixesDesc, prometheus.GaugeValue, float64(f.Prefixes), name, f.Family.String())
			}
		}
	}
}

func gaugeBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
