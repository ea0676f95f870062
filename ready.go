package amtrelay

// Ready implements the ready plugin's Readiness interface. The server is ready once every relay
// address has had its first probe (or carried its state over a Corefile reload) and at least one
// relay passes: an AMT DNS whose relays are all dead should stop attracting anycast traffic
// (`ready { monitor continuously }` feeding the route announcement), so that routing takes gateways
// to a network that can serve them. With health checks off every relay counts as up at once.
func (a *AMTRelay) Ready() bool {
	h := a.view.load().health
	return h.observed && h.relaysUp > 0
}
