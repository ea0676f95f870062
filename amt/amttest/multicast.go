package amttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/amtdns/amtrelay/amt"
)

// dataSockets receive real multicast for the channels gateways joined: one
// UDP socket per family, bound to the wildcard address and the data port,
// with source-specific memberships on one interface. A wildcard socket also
// sees unicast to the port and groups other sockets joined, so every
// datagram is matched against the relay's channels by its destination
// (from a control message), source and arrival interface.
type dataSockets struct {
	ifi  *net.Interface
	port uint16
	c4   net.PacketConn
	p4   *ipv4.PacketConn
	// c6 and p6 are nil where IPv6 is unavailable; joins of IPv6
	// channels then fail and are counted.
	c6 net.PacketConn
	p6 *ipv6.PacketConn
}

func openData(ifname string, port uint16) (*dataSockets, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("amttest: data interface %q: %w", ifname, err)
	}
	// SO_REUSEADDR lets several Responders in one process (one per relay
	// address) each have a data socket on the port; the kernel gives each
	// a copy of every multicast datagram.
	lc := net.ListenConfig{Control: reuseAddr}
	d := &dataSockets{ifi: ifi, port: port}
	if d.c4, err = lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
		return nil, fmt.Errorf("amttest: data socket: %w", err)
	}
	d.p4 = ipv4.NewPacketConn(d.c4)
	if err := d.p4.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		d.c4.Close()
		return nil, fmt.Errorf("amttest: data socket: %w", err)
	}
	if c6, err := lc.ListenPacket(context.Background(), "udp6", fmt.Sprintf("[::]:%d", port)); err == nil {
		p6 := ipv6.NewPacketConn(c6)
		if p6.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true) == nil {
			d.c6, d.p6 = c6, p6
		} else {
			c6.Close()
		}
	}
	return d, nil
}

// serve starts one reader per socket, counted in wg.
func (d *dataSockets) serve(r *Responder, wg *sync.WaitGroup) {
	wg.Add(1)
	go d.read4(r, wg)
	if d.p6 != nil {
		wg.Add(1)
		go d.read6(r, wg)
	}
}

// read4 and read6 forward datagrams until their socket is closed. Other
// errors are transient for UDP and skipped, as in the answering loop.
func (d *dataSockets) read4(r *Responder, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, cm, src, err := d.p4.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil && cm != nil {
			d.forward(r, buf[:n], src, cm.Dst, cm.IfIndex)
		}
	}
}

func (d *dataSockets) read6(r *Responder, wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, cm, src, err := d.p6.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil && cm != nil {
			d.forward(r, buf[:n], src, cm.Dst, cm.IfIndex)
		}
	}
}

// forward sends one received datagram to the gateways joined to its
// channel. Datagrams that are not multicast, or that came in on another
// interface, are not the relay's business.
func (d *dataSockets) forward(r *Responder, payload []byte, src net.Addr, dstIP net.IP, ifIndex int) {
	ua, ok := src.(*net.UDPAddr)
	dst, _ := netip.AddrFromSlice(dstIP)
	dst = dst.Unmap()
	if !ok || !dst.IsMulticast() || ifIndex != d.ifi.Index {
		return
	}
	s := ua.AddrPort().Addr().Unmap()
	r.st.Lock()
	defer r.st.Unlock()
	r.forwardLocked(channel{s, dst}, amt.Data{
		Source:  netip.AddrPortFrom(s, uint16(ua.Port)),
		Group:   netip.AddrPortFrom(dst, d.port),
		Payload: payload,
	})
}

// join adds the source-specific membership for ch; the caller holds r.st.
func (d *dataSockets) join(r *Responder, ch channel) {
	g, s := &net.UDPAddr{IP: ch.g.AsSlice()}, &net.UDPAddr{IP: ch.s.AsSlice()}
	var err error
	switch {
	case ch.g.Is4() && ch.s.Is4():
		err = d.p4.JoinSourceSpecificGroup(d.ifi, g, s)
	case ch.g.Is6() && ch.s.Is6() && d.p6 != nil:
		err = d.p6.JoinSourceSpecificGroup(d.ifi, g, s)
	default:
		err = errors.New("no data socket of that family")
	}
	r.logMulticast("join", ch, err)
}

// leave drops the membership for ch; the caller holds r.st.
func (d *dataSockets) leave(r *Responder, ch channel) {
	g, s := &net.UDPAddr{IP: ch.g.AsSlice()}, &net.UDPAddr{IP: ch.s.AsSlice()}
	var err error
	switch {
	case ch.g.Is4() && ch.s.Is4():
		err = d.p4.LeaveSourceSpecificGroup(d.ifi, g, s)
	case ch.g.Is6() && ch.s.Is6() && d.p6 != nil:
		err = d.p6.LeaveSourceSpecificGroup(d.ifi, g, s)
	default:
		err = errors.New("no data socket of that family")
	}
	r.logMulticast("leave", ch, err)
}

func (d *dataSockets) close() error {
	err := d.c4.Close()
	if d.c6 != nil {
		err = errors.Join(err, d.c6.Close())
	}
	return err
}

func (r *Responder) logMulticast(op string, ch channel, err error) {
	if err != nil {
		r.counters.mcastErrors.Add(1)
	}
	if r.cfg.Logf == nil {
		return
	}
	if err != nil {
		r.cfg.Logf("%s (%v, %v) on %s failed: %v", op, ch.s, ch.g, r.cfg.DataInterface, err)
		return
	}
	r.cfg.Logf("%s (%v, %v) on %s", op, ch.s, ch.g, r.cfg.DataInterface)
}
