// Package amt is a small gateway-side implementation of RFC 7450
// (Automatic Multicast Tunneling), for checking AMT relays:
//
//   - Client.Probe sends a Relay Discovery and waits for the Relay
//     Advertisement. It takes none of the relay's tunnel state, so it can
//     run often.
//   - Client.Handshake goes one step further: a Request to the advertised
//     relay and the Membership Query back, which shows the relay takes
//     tunnels (ResultOK) or refuses new ones (ResultLimit). Some relays
//     (the Linux driver) allocate a tunnel per Request, so it should run
//     less often.
//   - Tunnel is a long-lived gateway tunnel that joins (S,G) channels and
//     counts the Multicast Data that arrives for each: a canary stream, or
//     a troubleshooting tool. The caller runs it (Run) on a goroutine of
//     its own.
//
// A Client shares one socket per address family among all its probes, for
// probers that run hundreds a second (a socket per call costs more than the
// exchange), and owns a reader goroutine per socket from NewClient to
// Close; a Tunnel has a socket of its own. Apart from those readers,
// nothing here starts goroutines that outlive a call. Replies are taken
// from any source address of the relay and tied to their requests by
// random non-zero nonces. On Linux, ICMP port unreachable makes a closed
// port "refused" rather than a timeout.
//
// Underneath are encoders and parsers for every message, gateway and relay
// side (package amttest's fixture relay uses the relay side): Relay
// Discovery and Advertisement, Request, Membership Query (with its IGMPv3 or
// MLDv2 general query), Membership Update (with its IGMPv3 or MLDv2
// report), Multicast Data (decapsulated as far as the UDP datagram) and
// Teardown. Parsers never panic and are fuzzed; encoders produce what the
// parsers accept.
package amt
