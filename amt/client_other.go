//go:build !linux

package amt

import "net/netip"

// drainErrQueue does nothing here: unconnected UDP sockets get no ICMP
// errors, so a closed port ends as a timeout, as with the package
// functions.
func (e *endpoint) drainErrQueue() int { return 0 }

type rawIO struct{}

func (*rawIO) init() {}

func (e *endpoint) sendTo(msg []byte, dst netip.AddrPort) error {
	_, err := e.conn.WriteToUDPAddrPort(msg, dst)
	return err
}

// recvFrom is for the reader goroutine only.
func (e *endpoint) recvFrom(buf []byte) (int, netip.AddrPort, error) {
	n, from, err := e.conn.ReadFromUDPAddrPort(buf)
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}
