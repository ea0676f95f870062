// Command mcastsend is the end-to-end suite's multicast sender: it sends one UDP datagram from
// SOURCE to each GROUP:PORT every interval, out of one interface, until SIGTERM. It plays a
// beacon for the canaries and the stream a user joins. Only for the suite's own namespaces.
//
// Usage:
//
//	mcastsend -source ADDR -interface IF -every D GROUP:PORT...
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

func main() {
	source := flag.String("source", "", "source `ADDR` of the datagrams, an address of -interface")
	ifname := flag.String("interface", "", "send out of interface `IF`")
	every := flag.Duration("every", 100*time.Millisecond, "one datagram per group every `D`")
	flag.Parse()
	src, err := netip.ParseAddr(*source)
	if err != nil || !src.Is4() || *ifname == "" || *every <= 0 || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: mcastsend -source IPv4 -interface IF [-every D] GROUP:PORT...")
		os.Exit(2)
	}
	var groups []*net.UDPAddr
	for _, g := range flag.Args() {
		ap, err := netip.ParseAddrPort(g)
		if err != nil || !ap.Addr().Is4() || !ap.Addr().IsMulticast() {
			fmt.Fprintf(os.Stderr, "mcastsend: %q is not an IPv4 GROUP:PORT\n", g)
			os.Exit(2)
		}
		groups = append(groups, net.UDPAddrFromAddrPort(ap))
	}
	ifi, err := net.InterfaceByName(*ifname)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcastsend:", err)
		os.Exit(1)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src.AsSlice()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcastsend:", err)
		os.Exit(1)
	}
	defer conn.Close()
	pc := ipv4.NewPacketConn(conn)
	if err := pc.SetMulticastInterface(ifi); err != nil {
		fmt.Fprintln(os.Stderr, "mcastsend: multicast interface:", err)
		os.Exit(1)
	}
	_ = pc.SetMulticastTTL(8)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "mcastsend: from %s on %s every %v to %v\n", src, ifi.Name, *every, flag.Args())
	t := time.NewTicker(*every)
	defer t.Stop()
	for n := 0; ; n++ {
		for _, g := range groups {
			payload := fmt.Appendf(nil, "%s %d", g, n)
			if _, err := conn.WriteToUDP(payload, g); err != nil {
				fmt.Fprintln(os.Stderr, "mcastsend:", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
