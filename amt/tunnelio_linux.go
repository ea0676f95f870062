package amt

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux a Tunnel's socket is not in the runtime's poller. The runtime
// registers every socket it knows edge-triggered for input, and the kernel
// then reports each datagram that arrives, whether or not a goroutine
// waits for it: data a tunnel leaves queued would still wake the process
// for every packet, several thousand times a second for a thousand canary
// tunnels fed four beacon packets a second each. So tunnels open their
// sockets with raw system calls and share an epoll instance of their own
// (tunnelPoller), in which each socket is armed, one shot at a time, for
// what its tunnel wants next: input while it reads (always without
// QueueData, and while it awaits a reply), errors alone otherwise, so that
// an ICMP error is still handled at once while data waits in the socket.
//
// The socket is read in batches: one recvmmsg takes every datagram queued,
// up to batchLen. Like the Client's, the calls are raw system calls on the
// non-blocking socket; they never wait.

// queueDataSupported: Linux can leave data queued without waking anyone.
const queueDataSupported = true

const (
	// batchLen is how many datagrams one recvmmsg takes: a canary tunnel
	// with 4 channels at 1 packet/s drained every 5 s has 20 queued.
	batchLen = 32
	// maxDrainBatches bounds one drain, so that a flood cannot hold it:
	// 256 batches is more than a full receive buffer of small datagrams.
	maxDrainBatches = 256
	// batchOOB holds one SO_RXQ_OVFL control message (24 bytes on 64-bit
	// platforms) with room to spare.
	batchOOB = 64
)

// tsock is a tunnel's UDP socket: unconnected, wildcard address, ephemeral
// port, non-blocking, ICMP errors reported (IP_RECVERR), the kernel's drop
// counter on every datagram (SO_RXQ_OVFL). It implements syscall.RawConn's
// Control, for the error queue; it has nothing to wait with.
type tsock struct {
	mu    sync.RWMutex // held for reading by every use of fd, for writing by close
	fd    int          // -1 once closed
	v6    bool
	local netip.AddrPort
}

func openTunnelSocket(addr netip.Addr, readBuffer int) (*tsock, error) {
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	s := &tsock{fd: fd, v6: addr.Is6()}
	if err := s.setup(readBuffer); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

func (s *tsock) setup(readBuffer int) error {
	var sa unix.Sockaddr = &unix.SockaddrInet4{}
	level, recverr := unix.IPPROTO_IP, unix.IP_RECVERR
	if s.v6 {
		// As net.ListenUDP("udp6", nil) does: IPv6 only.
		if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
		sa = &unix.SockaddrInet6{}
		level, recverr = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	if err := unix.Bind(s.fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	// See setRecvErr: without it an unconnected socket gets no ICMP errors.
	if err := unix.SetsockoptInt(s.fd, level, recverr, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if readBuffer > 0 {
		// Best effort: a smaller buffer only drops more.
		_ = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, readBuffer)
	}
	la, err := unix.Getsockname(s.fd)
	if err != nil {
		return os.NewSyscallError("getsockname", err)
	}
	s.local, _ = sockaddrAddrPort(la)
	return nil
}

// Control runs f on the descriptor, unless the socket is closed.
func (s *tsock) Control(f func(fd uintptr)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	f(uintptr(s.fd))
	return nil
}

// Read and Write are not supported: nothing waits on a tunnel socket.
func (s *tsock) Read(func(fd uintptr) bool) error  { return errors.ErrUnsupported }
func (s *tsock) Write(func(fd uintptr) bool) error { return errors.ErrUnsupported }

func (s *tsock) rawConn() syscall.RawConn  { return s }
func (s *tsock) localAddr() netip.AddrPort { return s.local }

func (s *tsock) network() string {
	if s.v6 {
		return "udp6"
	}
	return "udp4"
}

// sendTo sends msg to dst without waiting: a full send buffer fails the
// send (EAGAIN), which the Tunnel handles as any failed send.
func (s *tsock) sendTo(msg []byte, dst netip.AddrPort) error {
	fail := func(err error) error {
		return &net.OpError{Op: "write", Net: s.network(), Source: net.UDPAddrFromAddrPort(s.local), Addr: net.UDPAddrFromAddrPort(dst), Err: err}
	}
	if len(msg) == 0 {
		return nil
	}
	var sa unix.RawSockaddrInet6 // or a RawSockaddrInet4 in its first bytes
	var salen uintptr
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port[0], port[1] = byte(dst.Port()>>8), byte(dst.Port())
	addr := dst.Addr()
	if s.v6 {
		if !addr.Is6() || addr.Is4In6() {
			return fail(syscall.EAFNOSUPPORT)
		}
		sa.Family, sa.Addr, salen = unix.AF_INET6, addr.As16(), unix.SizeofSockaddrInet6
		if z := addr.Zone(); z != "" {
			sa.Scope_id = zoneIndex(z)
		}
	} else {
		if !addr.Is4() {
			return fail(syscall.EAFNOSUPPORT)
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		sa4.Family, sa4.Addr, salen = unix.AF_INET, addr.As4(), unix.SizeofSockaddrInet4
	}
	var errno syscall.Errno
	err := s.Control(func(fd uintptr) {
		for {
			_, _, errno = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)), 0,
				uintptr(unsafe.Pointer(&sa)), salen)
			if errno != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return fail(err)
	}
	if errno != 0 {
		return fail(os.NewSyscallError("sendto", errno))
	}
	return nil
}

// zoneIndex is the interface index an IPv6 zone names: a number, or an
// interface name; 0 if it names none.
func zoneIndex(zone string) uint32 {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

func (s *tsock) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// batch is the receive state of one recvmmsg. Its buffers are the largest
// datagram each, so nothing is truncated; each datagram's source address
// is kept, since the tunnel counts Data from its relay only. Batches are
// pooled across tunnels and taken only while a read is under way, so that
// a thousand idle tunnels hold no buffers.
type batch struct {
	hdrs  [batchLen]unix.Mmsghdr
	iovs  [batchLen]unix.Iovec
	names [batchLen]unix.RawSockaddrAny
	oob   [batchLen][batchOOB]byte
	bufs  [batchLen][maxDatagram]byte
	n     int           // datagrams read by the last recv
	errno syscall.Errno // the last recv's error, 0 if it read
}

var batchPool = sync.Pool{New: func() any {
	b := new(batch)
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(maxDatagram)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.hdrs[i].Hdr.Control = &b.oob[i][0]
	}
	return b
}}

// recv reads what is queued, up to batchLen datagrams, without waiting. It
// returns false if nothing was queued (EAGAIN); otherwise n or errno says
// what it got.
func (b *batch) recv(fd uintptr) bool {
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrAny
		b.hdrs[i].Hdr.SetControllen(batchOOB)
		b.hdrs[i].Hdr.Flags = 0
	}
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), batchLen,
			unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			b.n, b.errno = int(n), 0
		default:
			b.n, b.errno = 0, errno
		}
		return true
	}
}

// drops returns the socket's drop counter that SO_RXQ_OVFL attached to
// datagram i, if any: the kernel attaches it once something was dropped.
func (b *batch) drops(i int) (uint32, bool) {
	oob := b.oob[i][:min(int(b.hdrs[i].Hdr.Controllen), batchOOB)]
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4 {
			return binary.NativeEndian.Uint32(data), true
		}
		oob = rest
	}
	return 0, false
}

// What a socket is armed for in the tunnel poller.
const (
	armNone   uint8 = iota // its one shot fired
	armErrors              // EPOLLERR only (always reported)
	armRead                // EPOLLIN too
)

// tunnelIO is a Tunnel's place in the tunnel poller, under rmu.
type tunnelIO struct {
	id    uint32 // the key of the tunnel in the poller
	epfd  int
	armed uint8
}

// tunnelPoller is the epoll instance of every tunnel socket of the process.
// Its own descriptor is in the runtime's poller, so that one goroutine
// waits on all the tunnels without holding a thread. It exists while any
// tunnel is open: the first NewTunnel starts it and the last tunnel to
// finish stops it and waits for its goroutine.
var tunnelPoller poller

type poller struct {
	mu      sync.Mutex
	tunnels map[uint32]*Tunnel
	nextID  uint32
	epfd    int
	file    *os.File // epfd, wrapped for the runtime's poller; nil when stopped
	done    chan struct{}
}

// initIO has nothing to do: the socket joins the tunnel poller when Run
// starts, so that nothing reads it before.
func (t *Tunnel) initIO() error { return nil }

// startIO registers the tunnel's socket in the tunnel poller, armed for
// errors.
func (t *Tunnel) startIO() error {
	p := &tunnelPoller
	p.mu.Lock()
	if p.file == nil {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			p.mu.Unlock()
			return os.NewSyscallError("epoll_create1", err)
		}
		if err := unix.SetNonblock(epfd, true); err != nil {
			p.mu.Unlock()
			unix.Close(epfd)
			return os.NewSyscallError("fcntl", err)
		}
		// Non-blocking, so the runtime polls it.
		p.file, p.epfd, p.done = os.NewFile(uintptr(epfd), "amt-tunnels"), epfd, make(chan struct{})
		p.tunnels = make(map[uint32]*Tunnel)
		go pollTunnels(p.file, epfd, p.done)
	}
	for p.nextID++; p.nextID == 0 || p.tunnels[p.nextID] != nil; p.nextID++ {
	}
	id := p.nextID
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(id)}
	var cerr error
	if err := t.sock.Control(func(fd uintptr) { cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		var done chan struct{}
		if len(p.tunnels) == 0 {
			done = p.stopLocked()
		}
		p.mu.Unlock()
		if done != nil {
			<-done
		}
		return os.NewSyscallError("epoll_ctl", cerr)
	}
	p.tunnels[id] = t
	t.rio = tunnelIO{id: id, epfd: p.epfd, armed: armErrors}
	p.mu.Unlock()
	return nil
}

// stopIO takes the socket out of the tunnel poller if Run put it there,
// stopping the poller if it was the last one, and closes it.
func (t *Tunnel) stopIO() {
	p := &tunnelPoller
	p.mu.Lock()
	var done chan struct{}
	if t.rio.id != 0 && p.tunnels[t.rio.id] == t {
		delete(p.tunnels, t.rio.id)
		_ = t.sock.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
		if len(p.tunnels) == 0 {
			done = p.stopLocked()
		}
	}
	p.mu.Unlock()
	_ = t.sock.close()
	if done != nil {
		<-done
	}
}

// stopLocked closes the poller's descriptor, which ends its goroutine, and
// returns the channel closed when it has (the caller holds mu).
func (p *poller) stopLocked() chan struct{} {
	done := p.done
	// Close wakes the goroutine's read and waits for it to let go.
	_ = p.file.Close()
	p.file, p.tunnels, p.done = nil, nil, nil
	return done
}

// pollTunnels is the poller's goroutine: it hands each socket that is ready
// to its tunnel until epfd (f) is closed.
func pollTunnels(f *os.File, epfd int, done chan struct{}) {
	defer close(done)
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	var events [64]unix.EpollEvent
	n := 0
	wait := func(fd uintptr) bool {
		for {
			r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
			switch errno {
			case unix.EINTR:
				continue
			case 0:
				n = int(r)
				return n > 0
			}
			// EBADF once closed: the next Read says so.
			n = 0
			return true
		}
	}
	p := &tunnelPoller
	for {
		if err := rc.Read(wait); err != nil {
			return
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			t := p.tunnels[uint32(ev.Fd)]
			p.mu.Unlock()
			if t != nil {
				t.ready()
			}
		}
	}
}

// ready handles the event of the tunnel's socket: its one shot fired.
func (t *Tunnel) ready() {
	t.rmu.Lock()
	t.rio.armed = armNone
	changed := t.drainLocked(time.Now())
	t.armLocked()
	t.rmu.Unlock()
	if changed {
		t.poke()
	}
}

// armLocked arms the socket for what the tunnel wants next: input while it
// reads, errors alone while data may wait (the caller holds rmu).
func (t *Tunnel) armLocked() {
	if t.rclosed {
		return
	}
	want := armErrors
	if t.reading() {
		want = armRead
	}
	if t.rio.armed == want {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(t.rio.id)}
	if want == armRead {
		ev.Events |= unix.EPOLLIN
	}
	var cerr error
	if err := t.sock.Control(func(fd uintptr) { cerr = unix.EpollCtl(t.rio.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev) }); err != nil {
		return // closed
	}
	if cerr != nil {
		t.readFailed(os.NewSyscallError("epoll_ctl", cerr))
		return
	}
	t.rio.armed = want
}

// drainLocked reads and handles what is queued, without waiting (the
// caller holds rmu). It reports whether Run must look again: the reply it
// awaits changed, the socket failed for good, or a refusal came.
func (t *Tunnel) drainLocked(now time.Time) bool {
	if t.rclosed {
		return false
	}
	awaited, failed, refused := t.run.waiting, t.readErr != nil, false
	b := batchPool.Get().(*batch)
	defer batchPool.Put(b)
	for range maxDrainBatches {
		got, mark := false, t.errq.mark()
		if err := t.sock.Control(func(fd uintptr) { got = b.recv(fd) }); err != nil || !got {
			break // closed, or nothing queued
		}
		if b.errno != 0 {
			// The socket's pending ICMP error, ahead of the data: reading
			// the error queue clears it and hands it to Run.
			if t.errq.drainSince(mark) {
				continue
			}
			err := os.NewSyscallError("recvmmsg", b.errno)
			if b.errno == syscall.ECONNREFUSED {
				// A refusal without its entry (the queue was full): about
				// what was sent last. Run must look at its timers again,
				// since the refusal can move its next send to now.
				t.run.icmpError(t.run.dst, icmpOpError(t.sock.network(), t.LocalAddr(), t.run.dst, b.errno), now)
				t.readErrors = 0
				refused = true
				continue
			}
			t.readFailed(err)
			break
		}
		t.readErrors = 0
		t.handleBatch(b, now)
		if b.n < batchLen {
			break // the queue was empty
		}
	}
	return t.run.waiting != awaited || (t.readErr != nil) != failed || refused
}

// handleBatch hands every datagram of b to Run's state (the caller holds
// rmu) and takes the kernel's drop count.
func (t *Tunnel) handleBatch(b *batch, now time.Time) {
	var dropped uint32
	seen := false
	for i := range b.n {
		if d, ok := b.drops(i); ok {
			dropped, seen = max(dropped, d), true
		}
		from, _ := rawAddrPort(&b.names[i])
		t.run.receive(b.bufs[i][:b.hdrs[i].Len], from.Addr(), now)
	}
	if seen {
		t.mu.Lock()
		t.st.Dropped = max(t.st.Dropped, uint64(dropped))
		t.mu.Unlock()
	}
}
