package amtrelay

import "net"

// Ready implements the ready plugin's Readiness interface. With health checks on, the server is
// ready once the first probe round has finished and at least one relay passes: an AMT DNS whose
// relays are all dead should stop attracting anycast traffic (`ready { monitor continuously }`
// feeding the route announcement), so that routing takes gateways to a network that can serve them.
func (a *AMTRelay) Ready() bool {
	if a.cfg.health.interval == 0 {
		return true
	}
	if !a.prober.firstRoundDone() {
		return false
	}
	for _, r := range a.cfg.relays {
		if r.up() {
			return true
		}
	}
	return false
}

// start is the OnStartup hook: metrics series for the relays and the sources table, then the
// probe loops and the sources file watcher.
func (a *AMTRelay) start() error {
	if !a.running.CompareAndSwap(false, true) {
		return nil
	}
	retainRelayMetrics(a.relayNames())
	a.prober.exportInitialState()
	exportSourcesCount(a.cfg.sources, a.sourcesKeys())
	if a.cfg.sources.file != "" {
		tableLastReload.Set(float64(a.cfg.sources.loadedAt.UnixNano()) / 1e9)
	}
	a.prober.start()
	a.cfg.sources.startWatching()
	return nil
}

// stop is the OnShutdown hook. It returns no error: one from here would stop caddy from running the
// other plugins' shutdown hooks.
func (a *AMTRelay) stop() error {
	if !a.running.CompareAndSwap(true, false) {
		return nil
	}
	a.prober.stop()
	a.cfg.sources.stopWatching()
	releaseRelayMetrics(a.relayNames())
	unexportSourcesCount(a.cfg.sources)
	return nil
}

func (a *AMTRelay) relayNames() []string {
	names := make([]string, len(a.cfg.relays))
	for i, r := range a.cfg.relays {
		names[i] = r.name
	}
	return names
}

// sourcesKeys lists the sources series of this instance: every zone, on every address the server
// block listens on, spelled as CoreDNS names its servers (dnsserver's groupConfigsByListenAddr),
// which is the server label of requests_total (metrics.WithServer).
func (a *AMTRelay) sourcesKeys() []sourcesKey {
	hosts, transport, port := []string{""}, "dns", ""
	if conf := a.serverConfig; conf != nil {
		hosts, transport, port = conf.ListenHosts, conf.Transport, conf.Port
	}
	var keys []sourcesKey
	for _, h := range hosts {
		hostPort := net.JoinHostPort(h, port)
		if addr, err := net.ResolveTCPAddr("tcp", hostPort); err == nil {
			hostPort = addr.String()
		}
		server := transport + "://" + hostPort
		for _, z := range a.cfg.zones {
			keys = append(keys, sourcesKey{server: server, zone: z})
		}
	}
	return keys
}
