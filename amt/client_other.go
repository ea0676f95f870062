//go:build !linux

package amt

import "net/netip"

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
