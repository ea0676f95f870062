// Command amt-responder is a fixture AMT relay for the end-to-end suite,
// built on package amttest: simple, but correct on the wire (RFC 7450). On
// each -listen address it answers Relay Discovery with a Relay
// Advertisement and Requests with Membership Queries, takes Membership
// Updates (joins and leaves of (S,G) channels, kept per gateway IP address
// and expiring like amtrelayd's) and Teardowns, and forwards multicast it
// receives on -data-interface to the gateways joined to each channel, in
// Multicast Data messages.
//
// Usage:
//
//	amt-responder -listen 100.64.1.10:2268 [-listen ADDR:PORT ...] [-advertise ADDR] [-mode MODE]
//	    [-data-interface IF -data-port N] [-gateway-timeout D] [-qqic D] [-gateway-field] [-beacon D]
//
// -advertise sets the relay address put in every Advertisement (default: the
// listen address itself). -mode selects a misbehaviour of package amttest:
// normal, silent, wrong_nonce, wrong_type, short, other_source,
// request_silent (no Queries), limit (Queries with the L flag) or no_data
// (joins taken, nothing forwarded).
//
// -data-interface and -data-port go together: while at least one gateway is
// joined to (S,G), the responder joins (S,G) on that interface with a
// source-specific membership (IGMPv3 or MLDv2) on UDP port -data-port, and
// sends each datagram that arrives to the joined gateways with its IP and
// UDP headers rebuilt. The sender must reach the interface without the
// datagrams being dropped by reverse-path filtering. Joins, leaves and
// their failures are logged. Joining needs no privileges beyond a socket.
//
// -gateway-timeout is how long a channel stays joined after the last Update
// naming it (default 60s, as amtrelayd); -qqic the Querier's Query Interval
// put in Queries, whole seconds from 1s to 31744s (default 20s, as
// amtrelayd), which gateways use to pace their refreshes; -gateway-field
// sets the G flag in Queries (gateway address and port appended), which
// relays that take Teardowns send and amtrelayd does not.
//
// -beacon D sends, every D, one Multicast Data message of every joined
// channel to the gateways joined to it, as if a beacon sent on each channel
// the relay has a path to: for benchmarks without a multicast sender.
//
// It runs until SIGINT or SIGTERM and then exits 0; a failed bind or an
// unknown data interface exits 1, a usage error 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/amtdns/amtrelay/amt/amttest"
)

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 after ctx is done, 1 if a responder cannot
// start, 2 for bad usage.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("amt-responder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listens listFlag
	fs.Var(&listens, "listen", "`ADDR:PORT` to answer on (repeatable; IP literal, [v6]:port)")
	advertise := fs.String("advertise", "", "relay `ADDR` to advertise (default: each listen address)")
	modeName := fs.String("mode", "normal", "`MODE`: normal, silent, wrong_nonce, wrong_type, short, other_source, request_silent, limit, no_data")
	dataIf := fs.String("data-interface", "", "receive multicast for joined channels on interface `IF` (with -data-port)")
	dataPort := fs.Uint("data-port", 0, "UDP `PORT` of the multicast received on -data-interface")
	gwTimeout := fs.Duration("gateway-timeout", amttest.DefaultGatewayTimeout, "how long a join lasts after the last Update naming it")
	qqi := fs.Duration("qqic", amttest.DefaultQQI, "Querier's Query Interval put in Queries (whole seconds, 1s to 31744s)")
	gwField := fs.Bool("gateway-field", false, "set the G flag in Queries (gateway address and port appended)")
	beaconEvery := fs.Duration("beacon", 0, "send a data packet of every joined channel every `D` (0: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "amt-responder: "+format+"\n", a...)
		return code
	}
	if fs.NArg() > 0 {
		return fail(2, "unexpected argument %q", fs.Arg(0))
	}
	if len(listens) == 0 {
		return fail(2, "at least one -listen ADDR:PORT is required")
	}
	mode, err := amttest.ParseMode(*modeName)
	if err != nil {
		return fail(2, "-mode: %v", err)
	}
	var adv netip.Addr
	if *advertise != "" {
		if adv, err = netip.ParseAddr(*advertise); err != nil {
			return fail(2, "-advertise: %v", err)
		}
	}
	if (*dataIf == "") != (*dataPort == 0) {
		return fail(2, "-data-interface and -data-port go together")
	}
	if *dataPort > 65535 {
		return fail(2, "-data-port %d is not a port", *dataPort)
	}
	if *gwTimeout <= 0 {
		return fail(2, "-gateway-timeout must be positive")
	}
	if *qqi < time.Second || *qqi > 31744*time.Second || *qqi%time.Second != 0 {
		return fail(2, "-qqic %v is not whole seconds from 1s to 31744s", *qqi)
	}
	if *beaconEvery < 0 {
		return fail(2, "-beacon must not be negative")
	}

	// Everything is validated before anything binds, so a usage error never
	// leaves a half-started fixture behind.
	for _, l := range listens {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return fail(2, "-listen %q: %v", l, err)
		}
		// Advertising 0.0.0.0 or :: would be useless to a gateway.
		if ap.Addr().IsUnspecified() && !adv.IsValid() {
			return fail(2, "-listen %s is a wildcard address; set -advertise", l)
		}
	}

	var rs []*amttest.Responder
	defer func() {
		var errs []error
		for _, r := range rs {
			errs = append(errs, r.Stop())
		}
		if err := errors.Join(errs...); err != nil {
			fmt.Fprintf(stderr, "amt-responder: stop: %v\n", err)
		}
	}()
	for _, l := range listens {
		cfg := amttest.Config{
			QQI:            *qqi,
			GatewayTimeout: *gwTimeout,
			GatewayField:   *gwField,
			DataInterface:  *dataIf,
			DataPort:       uint16(*dataPort),
			Logf: func(format string, a ...any) {
				fmt.Fprintf(stderr, "amt-responder: %s: "+format+"\n", append([]any{l}, a...)...)
			},
		}
		r, err := amttest.StartConfig(l, cfg)
		if err != nil {
			return fail(1, "cannot listen on %s: %v", l, err)
		}
		rs = append(rs, r)
		if adv.IsValid() {
			r.SetAdvertised(adv)
		}
		r.SetMode(mode)
		shown := adv
		if !shown.IsValid() {
			shown = r.Addr().Addr()
		}
		fmt.Fprintf(stderr, "amt-responder: answering Relay Discovery on %s, advertising %s, mode %s\n", r.Addr(), shown, mode)
		data := "no multicast"
		if *dataIf != "" {
			data = fmt.Sprintf("multicast from %s port %d", *dataIf, *dataPort)
		}
		fmt.Fprintf(stderr, "amt-responder: %s: qqi %v, gateway timeout %v, gateway field %v, %s\n", r.Addr(), *qqi, *gwTimeout, *gwField, data)
	}
	if *beaconEvery > 0 {
		beacon(ctx, rs, *beaconEvery)
	}
	<-ctx.Done()
	return 0
}

// beacon injects one data packet of every joined channel into each responder every interval, until
// ctx ends.
func beacon(ctx context.Context, rs []*amttest.Responder, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	payload := []byte("beacon")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range rs {
			seen := map[[2]netip.Addr]bool{}
			for _, m := range r.Memberships() {
				k := [2]netip.Addr{m.Source, m.Group}
				if !seen[k] {
					seen[k] = true
					r.Inject(m.Source, m.Group, payload)
				}
			}
		}
	}
}
