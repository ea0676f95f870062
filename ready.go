package amtrelay

// Ready implements the ready plugin's Readiness interface. The server is ready once every relay
// address has had its first probe (or carried its state over a Corefile reload) and at least one
// relay serves, neither failing its probes nor drained or forced down: an AMT DNS that cannot serve
// should stop attracting anycast traffic (`ready { monitor continuously }` feeding the route
// announcement), so that routing takes gateways to a network that can. With health checks off
// every relay counts as up at once. With bgp, the learned routes must be in the table as well:
// every neighbor's up to its End-of-RIB, or its hold time passed since start-up with the session
// down (then the other sources of connectivity must do). From the start of a shutdown with a grace
// period on, it is not ready.
func (a *AMTRelay) Ready() bool {
	v := a.view.load()
	return v.health.observed && v.relaysUp > 0 && !a.gen.leaving() && (a.routes == nil || a.routes.synced.Load())
}
