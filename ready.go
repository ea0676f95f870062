package amtrelay

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

// start is the OnStartup hook: metrics series for the relays, then the probe loops.
func (a *AMTRelay) start() error {
	if !a.running.CompareAndSwap(false, true) {
		return nil
	}
	retainRelayMetrics(a.relayNames())
	a.prober.exportInitialState()
	a.prober.start()
	return nil
}

// stop is the OnShutdown hook. It returns no error: one from here would stop caddy from running the
// other plugins' shutdown hooks.
func (a *AMTRelay) stop() error {
	if !a.running.CompareAndSwap(true, false) {
		return nil
	}
	a.prober.stop()
	releaseRelayMetrics(a.relayNames())
	return nil
}

func (a *AMTRelay) relayNames() []string {
	names := make([]string, len(a.cfg.relays))
	for i, r := range a.cfg.relays {
		names[i] = r.name
	}
	return names
}
