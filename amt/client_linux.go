package amt

import (
	"encoding/binary"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// drainErrQueue reads up to maxErrQueueDrain entries of the socket's error
// queue, where IP_RECVERR puts ICMP errors with the destination of the
// datagram that drew them, and ends the steps waiting on that destination.
// It returns how many entries it read. Any goroutine may call it: Control
// takes no read lock, so a sender can drain while the reader is blocked.
func (e *endpoint) drainErrQueue() int {
	e.drainMu.Lock()
	defer e.drainMu.Unlock()
	drained := 0
	for drained < maxErrQueueDrain {
		var (
			oobn int
			from unix.Sockaddr
			rerr error
		)
		err := e.rc.Control(func(fd uintptr) {
			// The payload (our own datagram, quoted back) is not needed:
			// the destination decides. MSG_TRUNC cuts it to errBuf.
			_, oobn, _, from, rerr = unix.Recvmsg(int(fd), e.errBuf[:], e.oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		})
		if err != nil || rerr != nil {
			break // EAGAIN: the queue is empty
		}
		drained++
		errno, ok := extendedErrno(e.oob[:oobn])
		dst, okDst := sockaddrAddrPort(from)
		if !ok || !okDst {
			e.c.stats.icmpUnmatched.Add(1)
			continue
		}
		e.icmpError(dst, errno)
	}
	return drained
}

// extendedErrno finds the struct sock_extended_err of IP_RECVERR or
// IPV6_RECVERR in oob and returns its ee_errno.
func extendedErrno(oob []byte) (syscall.Errno, bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		oob = rest
		if (h.Level == unix.SOL_IP && h.Type == unix.IP_RECVERR || h.Level == unix.SOL_IPV6 && h.Type == unix.IPV6_RECVERR) && len(data) >= 4 {
			if errno := binary.NativeEndian.Uint32(data[:4]); errno != 0 {
				return syscall.Errno(errno), true
			}
		}
	}
	return 0, false
}

// sockaddrAddrPort converts the msg_name of an error-queue entry: the
// original destination of the datagram.
func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}
