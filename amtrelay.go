// Package amtrelay is a CoreDNS plugin that serves AMT relay discovery (RFC 7450) by source: it answers
// A/AAAA/AMTRELAY queries at amt.<reverse name of S> (the anycast "AMT DNS" design) and AMTRELAY
// queries at <reverse name of S> (RFC 8777) with the local relays that reach S and pass their health
// checks. Every other query goes to the next plugin.
package amtrelay

import (
	"context"

	"github.com/amtdns/amtrelay/sign"
	"github.com/amtdns/amtrelay/table"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// pluginName is the directive, the handler's Name, the log prefix and the metrics subsystem.
const pluginName = "amtrelay"

var log = clog.NewWithPlugin(pluginName)

// AMTRelay is the plugin handler, one per amtrelay block of a loaded Corefile: the block's config,
// the view queries read, and the background parts that keep the view current.
type AMTRelay struct {
	Next plugin.Handler

	cfg  *config
	gen  *generation
	view viewPublisher

	health  *relayHealth
	prober  *prober
	sources *sourcesFile   // nil without a sources file
	admin   *adminFile     // nil without an admin file
	peers   *peerKeysFile  // nil without dnssec_peer_keys
	routes  *learnedRoutes // nil without bgp
	signer  *sign.Signer   // nil without dnssec
	life    lifecycle
	// answered counts, by relay index, the answers that included the relay.
	answered []prometheus.Counter
	// firstStartup: the instance starts with the process (caddy ran OnFirstStartup), not by a
	// Corefile reload.
	firstStartup bool
}

// newAMTRelay builds the instance of cfg and loads its connectivity table, reading the sources file
// if there is one: a file that does not load fails the Corefile before anything has started.
func newAMTRelay(cfg *config, gen *generation) (*AMTRelay, error) {
	a := &AMTRelay{cfg: cfg, gen: gen, view: viewPublisher{cfg: cfg}}
	a.health = newRelayHealth(cfg, a.view.setHealth)
	a.prober = newProber(cfg, a.health)
	a.answered = make([]prometheus.Counter, len(cfg.relays))
	for i, r := range cfg.relays {
		a.answered[i] = relayAnswers.WithLabelValues(r.name)
	}
	if cfg.admin.path != "" {
		a.admin = newAdminFile(cfg.admin, cfg, a.view.setAdmin)
		if err := a.admin.load(context.Background()); err != nil {
			return nil, err
		}
	}
	if cfg.dnssec != nil {
		var err error
		if a.signer, err = sign.NewSigner(cfg.dnssec.keys, cfg.dnssec.validity, cfg.dnssec.cacheEntries); err != nil {
			return nil, err
		}
		if pc := cfg.dnssec.peers; pc.path != "" {
			a.peers = newPeerKeysFile(pc, a.view.setPeers)
			if err := a.peers.load(context.Background()); err != nil {
				return nil, err
			}
		}
	}
	if cfg.routes != nil {
		a.routes = &learnedRoutes{cfg: cfg.routes, publish: a.view.setRoutes}
	}
	if cfg.sources.path == "" {
		a.view.setSources(cfg.inlineTable)
		return a, nil
	}
	loader := table.NewFileLoader(cfg.sources.path, cfg.relayIndex, cfg.inline)
	a.sources = newSourcesFile(cfg.sources, loader, a.view.setSources)
	if err := a.sources.load(context.Background()); err != nil {
		return nil, err
	}
	return a, nil
}

// Name implements plugin.Handler.
func (a *AMTRelay) Name() string { return pluginName }

// ServeDNS implements plugin.Handler.
func (a *AMTRelay) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	q := r.Question[0]
	zone := matchZone(a.cfg.zones, q.Name)
	// Only queries are the plugin's: a NOTIFY (the one other opcode the server lets through) may
	// be for a zone that a secondary further down the chain serves, such as S's reverse zone.
	if zone == "" || r.Opcode != dns.OpcodeQuery {
		return plugin.NextOrFailure(a.Name(), a.Next, ctx, w, r)
	}
	// Only class IN is answered; a CH or ANY query reaches a plugin only when the server enables
	// other classes (explain, forward or chaos in the block), and then it is the next plugin's,
	// unless it asks for an explanation.
	if q.Qclass != dns.ClassINET {
		if a.isExplainQuery(q) {
			return a.serveExplain(w, r, zone)
		}
		return plugin.NextOrFailure(a.Name(), a.Next, ctx, w, r)
	}
	var buf [16]*endpoint
	v := a.view.load()
	m, res, picked := a.cfg.answer(r, zone, v, buf[:0])
	requestsTotal.WithLabelValues(metrics.WithServer(ctx), zone, typeLabel(q.Qtype), res.String()).Inc()
	switch {
	case m != nil:
		if a.signer != nil {
			if opt := r.IsEdns0(); opt != nil && opt.Do() {
				if err := a.signReply(m, v); err != nil {
					return dns.RcodeServerFailure, plugin.Error(pluginName, err)
				}
			}
		}
		if err := w.WriteMsg(m); err != nil {
			return dns.RcodeServerFailure, plugin.Error(pluginName, err)
		}
		// picked holds each relay's endpoints together: one count per relay.
		for i, e := range picked {
			if i == 0 || picked[i-1].relay != e.relay {
				a.answered[e.relay.index].Inc()
			}
		}
		return m.Rcode, nil
	case a.cfg.handOn(res):
		return plugin.NextOrFailure(a.Name(), a.Next, ctx, w, r)
	case res == resultRefused:
		return dns.RcodeRefused, nil
	}
	return dns.RcodeServerFailure, nil
}
