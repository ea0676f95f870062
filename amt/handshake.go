package amt

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// HandshakeStep names the two exchanges of a Client.Handshake.
type HandshakeStep uint8

const (
	// StepDiscovery: Relay Discovery to the target, Relay Advertisement
	// back.
	StepDiscovery HandshakeStep = iota
	// StepRequest: Request to the advertised relay, Membership Query back.
	StepRequest
)

// String returns the name used as a metrics label value.
func (s HandshakeStep) String() string {
	switch s {
	case StepDiscovery:
		return "discovery"
	case StepRequest:
		return "request"
	}
	return fmt.Sprintf("HandshakeStep(%d)", uint8(s))
}

// HandshakeReply is the outcome of one Client.Handshake.
type HandshakeReply struct {
	Result Result
	// Step is the exchange the handshake ended in: StepDiscovery if no
	// usable Advertisement arrived, StepRequest from then on (including
	// ResultOK and ResultLimit).
	Step HandshakeStep
	// DiscoveryRTT and RequestRTT are the round-trip times of the steps
	// that completed; zero for the others.
	DiscoveryRTT, RequestRTT time.Duration
	// Relay is the advertised relay address; the Request went to it, on
	// the target's port. Valid once the Discovery step completed.
	Relay netip.Addr
	// From and QueryFrom are the sources of the Advertisement and of the
	// Query; either may differ from the address it answered.
	From, QueryFrom netip.AddrPort
	// Query is the Membership Query, for ResultOK and ResultLimit.
	Query Query
	// Ignored counts packets that were not the awaited reply, over both
	// steps.
	Ignored int
	// Err holds the detail for ResultError and ResultRefused, as in Reply.
	Err error
}

// ErrRelayFamily is reported when the relay advertised an address of the
// other family than the target's: the Request must go out of the socket the
// Discovery used, which cannot reach it.
var ErrRelayFamily = errors.New("amt: advertised relay is of another address family")
