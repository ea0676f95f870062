//go:build !linux

package amt

import (
	"net"
	"net/netip"
	"syscall"
)

// setRecvErr does nothing here: there is no portable way to receive ICMP
// errors on an unconnected UDP socket, so a closed port ends as a timeout.
func setRecvErr(*net.UDPConn, bool) error { return nil }

// errQueue has nothing to read here: unconnected UDP sockets get no ICMP
// errors, so a closed port ends as a timeout, as with the package
// functions.
type errQueue struct {
	rc     syscall.RawConn
	handle func(dst netip.AddrPort, errno syscall.Errno)
}

func (q *errQueue) mark() uint64 { return 0 }

func (q *errQueue) drainSince(uint64) bool { return false }
