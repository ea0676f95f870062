package amt

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Client's datagrams go through raw system calls on its non-blocking
// sockets, inside RawConn.Read and Write so that the runtime's poller
// still does the waiting. A plain (non-raw) system call entered while the
// process is idle wakes the runtime's sysmon thread and resets it to
// polling every 20 µs, which at a few hundred handshakes a second costs
// more CPU than the handshakes themselves. sendto and recvfrom on a
// non-blocking socket return at once (EAGAIN at worst), which is what raw
// calls are for.

// rawIO is the reader goroutine's receive state. recv is bound once, so
// that a read allocates nothing.
type rawIO struct {
	buf   []byte
	rsa   unix.RawSockaddrAny
	salen uint32
	n     int
	errno syscall.Errno
	recv  func(fd uintptr) bool
}

func (r *rawIO) init() { r.recv = r.recvOnce }

// recvOnce is the RawConn.Read callback: false asks the poller to wait.
func (r *rawIO) recvOnce(fd uintptr) bool {
	for {
		r.salen = uint32(unsafe.Sizeof(r.rsa))
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)), 0,
			uintptr(unsafe.Pointer(&r.rsa)), uintptr(unsafe.Pointer(&r.salen)))
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = int(n), errno
		return true
	}
}

// recvFrom is for the reader goroutine only. The error is the errno of a
// failed recvfrom (the socket's pending ICMP error) or the RawConn's.
func (e *endpoint) recvFrom(buf []byte) (int, netip.AddrPort, error) {
	r := &e.raw
	r.buf = buf
	if err := e.rc.Read(r.recv); err != nil {
		return 0, netip.AddrPort{}, err
	}
	if r.errno != 0 {
		return 0, netip.AddrPort{}, os.NewSyscallError("recvfrom", r.errno)
	}
	from, _ := rawAddrPort(&r.rsa)
	return r.n, from, nil
}

func rawAddrPort(rsa *unix.RawSockaddrAny) (netip.AddrPort, bool) {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1])), true
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1])), true
	}
	return netip.AddrPort{}, false
}

// rawSend is one send's state, pooled with its bound callback. The
// message is copied in, so that callers' buffers stay on their stacks.
type rawSend struct {
	buf   [64]byte // more than the largest message a Client sends
	n     int
	sa    unix.RawSockaddrInet6 // or a RawSockaddrInet4 in its first bytes
	salen uintptr
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

var rawSendPool = sync.Pool{New: func() any {
	s := new(rawSend)
	s.fn = s.sendOnce
	return s
}}

func (s *rawSend) sendOnce(fd uintptr) bool {
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(s.n), 0,
			uintptr(unsafe.Pointer(&s.sa)), s.salen)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.errno = errno
		return true
	}
}

func (e *endpoint) sendTo(msg []byte, dst netip.AddrPort) error {
	if dst.Addr().Zone() != "" || len(msg) > len(rawSend{}.buf) {
		// The net package knows how to turn a zone into a scope.
		_, err := e.conn.WriteToUDPAddrPort(msg, dst)
		return err
	}
	s := rawSendPool.Get().(*rawSend)
	defer rawSendPool.Put(s)
	s.n, s.errno = copy(s.buf[:], msg), 0
	s.sa = unix.RawSockaddrInet6{}
	port := (*[2]byte)(unsafe.Pointer(&s.sa.Port))
	port[0], port[1] = byte(dst.Port()>>8), byte(dst.Port())
	if e.network == "udp4" {
		if !dst.Addr().Is4() {
			return &net.OpError{Op: "write", Net: e.network, Source: e.conn.LocalAddr(), Addr: net.UDPAddrFromAddrPort(dst), Err: syscall.EAFNOSUPPORT}
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = dst.Addr().As4()
		s.salen = unix.SizeofSockaddrInet4
	} else {
		s.sa.Family = unix.AF_INET6
		s.sa.Addr = dst.Addr().As16()
		s.salen = unix.SizeofSockaddrInet6
	}
	err := e.rc.Write(s.fn)
	if err == nil && s.errno != 0 {
		err = &net.OpError{Op: "write", Net: e.network, Source: e.conn.LocalAddr(), Addr: net.UDPAddrFromAddrPort(dst), Err: os.NewSyscallError("sendto", s.errno)}
	}
	return err
}
