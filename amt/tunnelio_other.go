//go:build !linux

package amt

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// queueDataSupported: elsewhere the tunnel's socket is in the runtime's
// poller and read by a goroutine of its own, as datagrams come, so
// QueueData is ignored and Drain does nothing.
const queueDataSupported = false

// tsock is a tunnel's UDP socket (see openSocket).
type tsock struct {
	conn *net.UDPConn
	rc   syscall.RawConn
}

func openTunnelSocket(addr netip.Addr, _ int) (*tsock, error) {
	conn, err := openSocket(addr)
	if err != nil {
		return nil, err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &tsock{conn: conn, rc: rc}, nil
}

func (s *tsock) rawConn() syscall.RawConn { return s.rc }

func (s *tsock) localAddr() netip.AddrPort {
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (s *tsock) network() string {
	if s.localAddr().Addr().Is4() {
		return "udp4"
	}
	return "udp6"
}

func (s *tsock) sendTo(msg []byte, dst netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(msg, dst)
	return err
}

func (s *tsock) close() error { return s.conn.Close() }

// tunnelIO is the tunnel's reader goroutine, started by Run.
type tunnelIO struct {
	done chan struct{} // closed when the reader returns; nil if none started
}

func (t *Tunnel) initIO() error { return nil }

// startIO starts the reader, which reads and handles every datagram as it
// comes until the socket is closed.
func (t *Tunnel) startIO() error {
	t.rio.done = make(chan struct{})
	go t.read()
	return nil
}

// stopIO closes the socket and waits for the reader, if there is one.
func (t *Tunnel) stopIO() {
	_ = t.sock.close()
	if t.rio.done != nil {
		<-t.rio.done
	}
}

func (t *Tunnel) read() {
	defer close(t.rio.done)
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := t.sock.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		now := time.Now()
		t.rmu.Lock()
		awaited, failed := t.run.waiting, t.readErr != nil
		switch {
		case t.rclosed:
		case err == nil:
			t.readErrors = 0
			t.run.receive(buf[:n], from.Addr(), now)
		case errors.Is(err, syscall.ECONNREFUSED):
			// Where a platform reports refusals on unconnected sockets:
			// about what was sent last.
			t.run.icmpError(t.run.dst, err, now)
		default:
			t.readFailed(err)
		}
		changed := t.run.waiting != awaited || (t.readErr != nil) != failed
		stop := t.readErr != nil
		t.rmu.Unlock()
		if changed {
			t.poke()
		}
		if stop {
			return
		}
	}
}

// armLocked has nothing to do: the reader always reads.
func (t *Tunnel) armLocked() {}

// drainLocked has nothing to do: the reader reads as datagrams come.
func (t *Tunnel) drainLocked(time.Time) bool { return false }
