package amt

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// setRecvErr turns on IP_RECVERR / IPV6_RECVERR. Linux reports ICMP errors
// only to connected UDP sockets unless this option is set; the probe socket
// is deliberately unconnected (the answer may come from another address), so
// without it a closed port would look like a silent timeout instead of
// ECONNREFUSED.
//
// A socket that keeps running with the option on must read its error queue
// (errQueue): each ICMP error stays queued there, charged to the socket's
// receive buffer, until read with MSG_ERRQUEUE.
func setRecvErr(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	level, opt := syscall.IPPROTO_IP, syscall.IP_RECVERR
	if v6 {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_RECVERR
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), level, opt, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}

// errQueue reads the error queue of a long-lived socket with IP_RECVERR
// set, where Linux puts every ICMP error its datagrams draw, with the
// destination of the datagram. Reading the queue is what clears the
// socket's pending error (which otherwise fails its next call, a send
// included, and that send does not go out) and what frees the receive
// buffer space the entries are charged to: left unread, a few hundred
// refusals fill the buffer and the kernel drops the datagrams that come
// after them.
//
// Set rc and handle before the first drain.
type errQueue struct {
	rc syscall.RawConn
	// handle takes each entry: the destination of the datagram that drew
	// the error and its errno, or the zero AddrPort and 0 for an entry
	// that does not say.
	handle func(dst netip.AddrPort, errno syscall.Errno)

	read atomic.Uint64 // entries read so far, by anyone

	mu  sync.Mutex // one reader at a time, for the buffers
	buf [64]byte
	oob [256]byte
}

// mark is taken before a call on the socket that can fail with its
// pending error; see drainSince.
func (q *errQueue) mark() uint64 { return q.read.Load() }

// drainSince reads the error queue and reports whether any entry was read
// after mark was taken, by this call or a concurrent one. A call that
// failed after mark with the pending error of an ICMP error did so while
// its entry was queued, so it is true for that call: the entry has been
// read by the time drainSince returns (another goroutine's drain holds mu
// until it is done).
func (q *errQueue) drainSince(mark uint64) bool {
	q.drain()
	return q.read.Load() != mark
}

// drain reads up to maxErrQueueDrain entries of the error queue and hands
// each to handle. Any goroutine may call it: Control takes no read lock,
// so a sender can drain while a reader is blocked.
func (q *errQueue) drain() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for range maxErrQueueDrain {
		var (
			oobn int
			from unix.Sockaddr
			rerr error
		)
		err := q.rc.Control(func(fd uintptr) {
			// The payload (our own datagram, quoted back) is not needed:
			// the destination decides. MSG_TRUNC cuts it to buf.
			_, oobn, _, from, rerr = unix.Recvmsg(int(fd), q.buf[:], q.oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		})
		if err != nil || rerr != nil {
			break // EAGAIN: the queue is empty
		}
		q.read.Add(1)
		errno, ok := extendedErrno(q.oob[:oobn])
		dst, okDst := sockaddrAddrPort(from)
		if !ok || !okDst {
			q.handle(netip.AddrPort{}, 0)
			continue
		}
		q.handle(dst, errno)
	}
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
