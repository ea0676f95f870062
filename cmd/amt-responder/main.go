// Command amt-responder is a test fixture for the end-to-end suite, not an
// AMT relay: it answers RFC 7450 Relay Discovery with a Relay Advertisement
// on each -listen address and does nothing else (no tunnels, no multicast).
// It lets health probes be exercised inside network namespaces without
// building a real relay.
//
// Usage:
//
//	amt-responder -listen 100.64.1.10:2268 [-listen ADDR:PORT ...] [-advertise ADDR] [-mode MODE]
//
// -advertise sets the relay address put in every Advertisement (default: the
// listen address itself). -mode selects a misbehaviour of package amttest
// (normal, silent, wrong_nonce, wrong_type, short, other_source).
// It runs until SIGINT or SIGTERM and then exits 0; a failed bind exits 1.
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
	modeName := fs.String("mode", "normal", "answer `MODE`: normal, silent, wrong_nonce, wrong_type, short, other_source")
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
		r, err := amttest.Start(l)
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
	}
	<-ctx.Done()
	return 0
}
